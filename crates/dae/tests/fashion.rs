//! End-to-end quality on real data: Fashion-MNIST from Debian's `dataset-fashion-mnist`
//! (directory DAE_FASHION_MNIST, else /usr/share/datasets/fashion-mnist). Skipped with a message
//! when the data is absent, unless DAE_REQUIRE_DATA is set (as in CI).

use dae::infer::{score_all, EvalNoise};
use dae::rng::stream;
use dae::{read_data, train_dae, Corruption, Cpu, Dae, DaeConfig, Dataset, Scaler, Silent, Split, TrainConfig};
use std::path::PathBuf;

fn fashion(file: &str) -> Option<Dataset> {
    let dir = std::env::var_os("DAE_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    let path = dir.join(file);
    if !path.exists() {
        assert!(
            std::env::var_os("DAE_REQUIRE_DATA").is_none(),
            "DAE_REQUIRE_DATA is set but {} is missing (apt-get install dataset-fashion-mnist)",
            path.display()
        );
        eprintln!("SKIPPED: {} not found (apt-get install dataset-fashion-mnist)", path.display());
        return None;
    }
    Some(read_data(&path, &Default::default()).unwrap())
}

#[test]
fn denoising_autoencoder_learns_fashion_mnist() {
    let (Some(train), Some(test)) = (fashion("train-images-idx3-ubyte.gz"), fashion("t10k-images-idx3-ubyte.gz")) else {
        return;
    };
    assert_eq!((train.rows, train.cols, train.image_shape), (60000, 784, Some((28, 28))));
    assert_eq!(test.rows, 10000);
    let scaler = Scaler::identity(784);
    let cfg = DaeConfig::new(784, 100);
    let tc = TrainConfig { epochs: 2, batch: 20, lr: 0.1, ..Default::default() };
    let cpu = Cpu::new(None).unwrap();
    let split = Split { data: &train, rows: (0..6000).collect() };
    let init = Dae::init(&cfg, 1);
    let noise = EvalNoise { noise: Corruption::Masking { level: 0.3 }, seed: 1 };
    let mean = |v: Vec<f32>| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let test_small = Dataset { rows: 2000, ..test };
    let before = mean(score_all(&cpu, &init, &test_small, &scaler, noise, false).unwrap());
    let t = train_dae(&cpu, init, &scaler, &split, None, &tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap();
    let after = mean(score_all(&cpu, &t.model, &test_small, &scaler, noise, false).unwrap());
    eprintln!("test cross-entropy under masking 0.3: {before:.2} before, {after:.2} after training");
    // Measured: 252.5 after 2 epochs on 6,000 images (the full recipe reaches 212).
    assert!(after < 262.0, "test loss {after} (was {before} before training)");
    assert!(after < 0.6 * before);
    assert!(t.history[1].train_loss < t.history[0].train_loss);
}

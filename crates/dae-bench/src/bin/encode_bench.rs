//! The computation of `dae encode` on every Fashion-MNIST image (60,000 + 10,000 rows): the
//! hidden code of a 784→500 sigmoid autoencoder, timed without reading or writing files (as the
//! PyTorch peer, bench/peers/torch_encode.py, is). Prints {"seconds": …, "rows": …}.
//!
//!     cargo run --release -p dae-bench --bin encode_bench -- DATA_DIR [THREADS | cuda] [--score]
//!
//! With `--score` (the CPU only) it times `dae score` instead: each row's loss (cross-entropy
//! summed over the inputs) between the image and its reconstruction, two products per row.
//!
//! On the CPU the codes go into one buffer kept across the warm-up and the timed pass, as the
//! peer's go into one tensor. With `cuda`, "seconds" is `encode_all` on the GPU, copies of the
//! data and the codes included (into a new vector: its memory is written for the first time),
//! "streamed_seconds" the same handing the codes on chunk by chunk (`encode_each`, as `dae
//! encode` writes them), and "gpu_seconds" the computation alone (the images already on the GPU,
//! the codes left there: gathering, the product and the activation of every chunk, until the
//! GPU is done).

use dae::data::{read_idx, Values};
use dae::infer::{encode_all, encode_each, encode_into, score_all, EvalNoise};
use dae::{Cpu, Dae, DaeConfig, Dataset, Scaler};
use std::path::Path;
use std::time::Instant;

fn main() {
    let score = std::env::args().any(|a| a == "--score");
    let mut args = std::env::args().skip(1).filter(|a| a != "--score");
    let dir = args.next().unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    let which = args.next();
    let threads: Option<usize> = which.as_deref().and_then(|s| s.parse().ok());
    let read = |name: &str| read_idx(&Path::new(&dir).join(name)).unwrap_or_else(|e| panic!("{e}"));
    let (train, test) = (read("train-images-idx3-ubyte.gz"), read("t10k-images-idx3-ubyte.gz"));
    let (Values::U8(mut a), Values::U8(b)) = (train.values, test.values) else { panic!("u8 images expected") };
    a.extend_from_slice(&b);
    let rows = train.rows + test.rows;
    let ds = Dataset { rows, cols: 784, values: Values::U8(a), image_shape: Some((28, 28)), column_names: None, source: dir.into() };
    let model = Dae::init(&DaeConfig::new(784, 500), 1);
    let scaler = Scaler::identity(784);
    if which.as_deref() == Some("cuda") {
        assert!(!score, "--score is for the CPU");
        return gpu(&model, &ds, &scaler);
    }
    let cpu = Cpu::new(threads).expect("threads");
    if score {
        let mut seconds = 0.0;
        for _ in 0..2 {
            let t = Instant::now();
            let scores = score_all(&cpu, &model, &ds, &scaler, EvalNoise::none(), false).expect("score");
            seconds = t.elapsed().as_secs_f64();
            assert_eq!(scores.len(), rows);
        }
        println!("{{\"seconds\": {seconds}, \"rows\": {rows}}}");
        return;
    }
    let mut seconds = 0.0;
    // The codes go into one buffer, as the PyTorch peer's go into one tensor allocated before
    // its passes: the timed pass writes memory the warm-up has already touched.
    let mut codes = vec![0f32; rows * 500];
    for _ in 0..2 {
        // A warm-up pass, then the timed one.
        let t = Instant::now();
        encode_into(&cpu, &model, &ds, &scaler, &mut codes).expect("encode");
        seconds = t.elapsed().as_secs_f64();
    }
    println!("{{\"seconds\": {seconds}, \"rows\": {rows}}}");
}

fn gpu(model: &Dae, ds: &Dataset, scaler: &Scaler) {
    use dae::backend::Backend;
    use dae::dae::{encode, DaeParams, DaeWorkspace};
    let gpu = dae::Cuda::new(0, dae::Precision::Fp32).unwrap_or_else(|e| panic!("{e}"));
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut full = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let codes = encode_all(&gpu, model, ds, scaler).expect("encode");
        full.push(t.elapsed().as_secs_f64());
        assert_eq!(codes.len(), ds.rows * 500);
    }
    // As `dae encode` runs: the codes handed on a chunk at a time (here dropped), never all in
    // memory, so no fresh memory is written.
    let mut streamed = Vec::new();
    for _ in 0..5 {
        let mut seen = 0;
        let t = Instant::now();
        encode_each(&gpu, model, ds, scaler, |b| {
            seen += b.len();
            Ok(())
        })
        .expect("encode");
        streamed.push(t.elapsed().as_secs_f64());
        assert_eq!(seen, ds.rows * 500);
    }
    let p = DaeParams::upload(&gpu, model).unwrap();
    let cap = gpu.chunk_rows().min(ds.rows);
    let mut ws = DaeWorkspace::new(&gpu, &model.config, cap).unwrap();
    let data = gpu.data(ds, scaler).unwrap();
    let chunks: Vec<Vec<u32>> = (0..ds.rows as u32).collect::<Vec<_>>().chunks(cap).map(|c| c.to_vec()).collect();
    let mut compute = Vec::new();
    for _ in 0..20 {
        gpu.synchronize().unwrap();
        let t = Instant::now();
        for rows in &chunks {
            gpu.gather(&mut ws.xt, &data, rows);
            encode(&gpu, &model.config, &p, &ws.xt, &mut ws.h, rows.len());
        }
        gpu.synchronize().unwrap();
        compute.push(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"seconds\": {}, \"streamed_seconds\": {}, \"gpu_seconds\": {}, \"rows\": {}, \"device\": \"{}\"}}",
        median(full),
        median(streamed),
        median(compute),
        ds.rows,
        gpu.name()
    );
}

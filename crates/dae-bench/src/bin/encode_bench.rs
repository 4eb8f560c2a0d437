//! The computation of `dae encode` on every Fashion-MNIST image (60,000 + 10,000 rows): the
//! hidden code of a 784→500 sigmoid autoencoder, timed without reading or writing files (as the
//! PyTorch peer, bench/peers/torch_encode.py, is). Prints {"seconds": …, "rows": …}.
//!
//!     cargo run --release -p dae-bench --bin encode_bench -- DATA_DIR [THREADS]

use dae::data::{read_idx, Values};
use dae::infer::encode_all;
use dae::{Cpu, Dae, DaeConfig, Dataset, Scaler};
use std::path::Path;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    let threads: Option<usize> = args.next().and_then(|s| s.parse().ok());
    let read = |name: &str| read_idx(&Path::new(&dir).join(name)).unwrap_or_else(|e| panic!("{e}"));
    let (train, test) = (read("train-images-idx3-ubyte.gz"), read("t10k-images-idx3-ubyte.gz"));
    let (Values::U8(mut a), Values::U8(b)) = (train.values, test.values) else { panic!("u8 images expected") };
    a.extend_from_slice(&b);
    let rows = train.rows + test.rows;
    let ds = Dataset { rows, cols: 784, values: Values::U8(a), image_shape: Some((28, 28)), column_names: None, source: dir.into() };
    let model = Dae::init(&DaeConfig::new(784, 500), 1);
    let cpu = Cpu::new(threads).expect("threads");
    let scaler = Scaler::identity(784);
    let mut seconds = 0.0;
    for _ in 0..2 {
        // A warm-up pass, then the timed one.
        let t = Instant::now();
        let codes = encode_all(&cpu, &model, &ds, &scaler).expect("encode");
        seconds = t.elapsed().as_secs_f64();
        assert_eq!(codes.len(), rows * 500);
    }
    println!("{{\"seconds\": {seconds}, \"rows\": {rows}}}");
}

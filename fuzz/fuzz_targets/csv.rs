//! The CSV reader on arbitrary bytes, with the header detected and forced.
#![no_main]
use dae::data::{read_csv_bytes, ReadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for header in [None, Some(true)] {
        if let Ok(ds) = read_csv_bytes("fuzz.csv", data, &ReadOptions { header }) {
            assert_eq!(ds.memory_bytes(), ds.rows * ds.cols * 4);
        }
    }
});

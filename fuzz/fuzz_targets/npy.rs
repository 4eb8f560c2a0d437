//! The NPY reader on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ds) = dae::data::read_npy_bytes("fuzz.npy", data) {
        assert_eq!(ds.memory_bytes() % ds.cols.max(1), 0);
    }
});

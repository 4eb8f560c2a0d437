//! The IDX reader on arbitrary bytes (raw or gzipped): an error or a dataset, never a crash,
//! a hang or a runaway allocation (libFuzzer's -rss_limit_mb and -malloc_limit_mb catch those).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dae::data::read_idx_bytes("fuzz.idx", data);
});

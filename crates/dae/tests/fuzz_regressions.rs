//! Replays, through every byte-level reader, each input the fuzzers ever crashed on
//! (fuzz/regressions/TARGET/) and every malformed file of the CLI's tests: none may panic.

use dae::data::{read_csv_bytes, read_idx_bytes, read_npy_bytes, ReadOptions};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn feed_all(name: &str, bytes: &[u8]) {
    let _ = read_idx_bytes(name, bytes);
    let _ = read_npy_bytes(name, bytes);
    for header in [None, Some(true)] {
        let _ = read_csv_bytes(name, bytes, &ReadOptions { header });
    }
    let _ = dae::AnyModel::parse(name, bytes);
}

#[test]
fn known_bad_inputs_never_panic_any_reader() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut inputs = files(&root.join("crates/dae-cli/tests/malformed"));
    for t in ["idx", "npy", "csv", "model"] {
        inputs.extend(files(&root.join("fuzz/regressions").join(t)));
    }
    assert!(inputs.len() > 25, "the malformed files are missing");
    for p in &inputs {
        let bytes = std::fs::read(p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy();
        feed_all(&name, &bytes);
        // Every prefix of a short input too: truncation anywhere.
        if bytes.len() <= 512 {
            for cut in 0..bytes.len() {
                feed_all(&name, &bytes[..cut]);
            }
        }
    }
}

/// Found by the idx fuzzer: zero rows of a width whose product overflows (the total is 0 however
/// wide the rows are) must be refused, not wrap into a bogus width that later sizes buffers.
#[test]
fn idx_with_zero_rows_and_an_overflowing_width_is_refused() {
    let mut bytes = vec![0, 0, 8, 3];
    for d in [0u32, 0xffff_ffff, 0xffff_ffff] {
        bytes.extend(d.to_be_bytes());
    }
    let err = read_idx_bytes("wide.idx", &bytes).unwrap_err().to_string();
    assert!(err.contains("wide.idx") && err.contains("too large"), "{err}");
}

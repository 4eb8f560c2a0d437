//! The folder of malformed files (tests/malformed, made by its make.py): each must give exit
//! code 2, no panic, the file's name and the error text cases.txt gives for it.

mod common;

use common::*;
use std::path::PathBuf;

#[test]
fn every_malformed_file_gives_its_error() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/malformed");
    let cases = std::fs::read_to_string(dir.join("cases.txt")).unwrap();
    let s = Scratch::new("malformed");
    let out = s.path("out.safetensors");
    let mut checked = 0;
    for line in cases.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let parts: Vec<&str> = line.split(" | ").collect();
        let [file, command, expected] = parts[..] else { panic!("bad line in cases.txt: {line}") };
        let path = dir.join(file);
        assert!(path.exists(), "{file} is missing: run python3 make.py in tests/malformed");
        let o = match command {
            "train" => dae(["train", path.to_str().unwrap(), "-o", out.to_str().unwrap(), "--hidden", "2"]),
            "inspect" => dae(["inspect", path.to_str().unwrap()]),
            other => panic!("unknown command {other}"),
        };
        assert_fails(&o, 2, &[file, expected]);
        checked += 1;
    }
    assert!(!out.exists(), "no model was written");
    assert!(checked >= 25, "only {checked} cases");
}

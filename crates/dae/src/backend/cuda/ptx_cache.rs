//! The compiled kernels kept on disk, so that a GPU command does not spend NVRTC's time
//! (about 0.4 s) compiling the same source again.
//!
//! The PTX for one architecture lies in `kernels-ARCH-KEY.ptx` in the cache folder, where KEY
//! hashes the kernels' source, the architecture, NVRTC's version and dae's version: any change
//! to one of them names another file (old files are not removed). The folder is
//! `DAE_CACHE_DIR`, else `$XDG_CACHE_HOME/dae` (when that is an absolute path), else
//! `$HOME/.cache/dae`; `DAE_CACHE_DIR=` (empty) turns the cache off. Files are written
//! atomically; a file that is unreadable or lacks a kernel is compiled again and replaced, and
//! a cache that cannot be written is simply not used.

use crate::atomic::{write_atomic, write_err};
use crate::error::Result;
use std::path::{Path, PathBuf};

/// The cache folder, or None when it is turned off or no home is known.
pub fn dir() -> Option<PathBuf> {
    dir_from(|k| std::env::var_os(k))
}

fn dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    if let Some(d) = var("DAE_CACHE_DIR") {
        return (!d.is_empty()).then(|| PathBuf::from(d));
    }
    // A relative XDG_CACHE_HOME is to be ignored (the XDG base directory specification).
    if let Some(x) = var("XDG_CACHE_HOME").map(PathBuf::from).filter(|x| x.is_absolute()) {
        return Some(x.join("dae"));
    }
    var("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache").join("dae"))
}

/// 64-bit FNV-1a over the parts, each followed by a 0 byte.
fn key(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.as_bytes().iter().chain(&[0u8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The file for `source` compiled for `arch` by NVRTC `nvrtc`.
pub fn path(dir: &Path, source: &str, arch: &str, nvrtc: &str) -> PathBuf {
    let k = key(&[source, arch, nvrtc, env!("CARGO_PKG_VERSION")]);
    let safe: String = arch.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    dir.join(format!("kernels-{safe}-{k:016x}.ptx"))
}

/// Whether `text` can be PTX of every kernel in `names`: no NUL byte, every entry present.
pub fn complete(text: &str, names: &[&str]) -> bool {
    !text.contains('\0') && names.iter().all(|n| text.contains(&format!(".entry {n}(")))
}

/// The PTX at `file` when it is there and complete; otherwise `compile`'s, written to `file`
/// (when given) for the next time. The flag says whether it came from the file.
pub fn load_or_compile(file: Option<&Path>, names: &[&str], compile: impl FnOnce() -> Result<String>) -> Result<(String, bool)> {
    if let Some(f) = file {
        if let Ok(text) = std::fs::read_to_string(f) {
            if complete(&text, names) {
                return Ok((text, true));
            }
        }
    }
    let text = compile()?;
    if let Some(f) = file {
        store(f, &text);
    }
    Ok((text, false))
}

/// Writes `text` to `file` atomically, creating its folder; a failure only means no cache.
pub fn store(file: &Path, text: &str) {
    if let Some(parent) = file.parent() {
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
    }
    let _ = write_atomic(file, |w| w.write_all(text.as_bytes()).map_err(write_err(file)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::cell::Cell;
    use std::ffi::OsString;

    #[test]
    fn the_folder_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v));
        assert_eq!(dir_from(env(&[("DAE_CACHE_DIR", "/c"), ("HOME", "/h")])), Some(PathBuf::from("/c")));
        assert_eq!(dir_from(env(&[("DAE_CACHE_DIR", ""), ("HOME", "/h")])), None);
        assert_eq!(dir_from(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])), Some(PathBuf::from("/x/dae")));
        assert_eq!(dir_from(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])), Some(PathBuf::from("/h/.cache/dae")));
        assert_eq!(dir_from(env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")])), Some(PathBuf::from("/h/.cache/dae")));
        assert_eq!(dir_from(env(&[])), None);
    }

    #[test]
    fn every_input_names_its_own_file() {
        let d = Path::new("/c");
        let base = path(d, "src", "compute_90", "13.0");
        assert_eq!(base, path(d, "src", "compute_90", "13.0"));
        for other in [path(d, "src2", "compute_90", "13.0"), path(d, "src", "compute_80", "13.0"), path(d, "src", "compute_90", "13.1")] {
            assert_ne!(base, other);
        }
        // Parts are separated: moving a character from one to the next is another key.
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert!(base.file_name().unwrap().to_str().unwrap().starts_with("kernels-compute_90-"));
    }

    #[test]
    fn compiles_once_then_reads_and_recovers_from_a_bad_file() {
        let dir = std::env::temp_dir().join(format!("dae-ptx-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = path(&dir.join("sub"), "src", "compute_90", "13.0");
        let names = ["a", "b"];
        let ptx = ".entry a(\n.entry b(\n";
        let compiles = Cell::new(0);
        let compile = || {
            compiles.set(compiles.get() + 1);
            Ok(ptx.to_string())
        };
        assert_eq!(load_or_compile(Some(&file), &names, compile).unwrap(), (ptx.to_string(), false));
        assert_eq!(load_or_compile(Some(&file), &names, compile).unwrap(), (ptx.to_string(), true));
        assert_eq!(compiles.get(), 1);
        // A truncated file (a kernel missing) or one with a NUL is compiled again and replaced.
        for bad in [".entry a(\n", ".entry a(\n.entry b(\n\0"] {
            std::fs::write(&file, bad).unwrap();
            assert_eq!(load_or_compile(Some(&file), &names, compile).unwrap(), (ptx.to_string(), false));
            assert_eq!(std::fs::read_to_string(&file).unwrap(), ptx);
        }
        assert_eq!(compiles.get(), 3);
        // No folder: compiled every time. A compile error is the caller's.
        assert!(!load_or_compile(None, &names, compile).unwrap().1);
        let failed = load_or_compile(Some(&dir.join("x.ptx")), &names, || Err(Error::Runtime("nvrtc failed".into())));
        assert!(failed.unwrap_err().to_string().contains("nvrtc failed"));
        assert!(!dir.join("x.ptx").exists());
        // A folder that cannot be made (a file in the way): compiled, not cached, no error.
        let blocked = dir.join("blocked");
        std::fs::write(&blocked, "").unwrap();
        let inside = path(&blocked, "src", "compute_90", "13.0");
        assert_eq!(load_or_compile(Some(&inside), &names, compile).unwrap(), (ptx.to_string(), false));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completeness_needs_every_entry() {
        assert!(complete(".visible .entry k1(\n.entry k2(", &["k1", "k2"]));
        assert!(!complete(".entry k1(", &["k1", "k2"]));
        assert!(!complete(".entry k10(", &["k1"]));
    }
}

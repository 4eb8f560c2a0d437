//! Atomic file output: write a temporary file beside the target, flush it to disk, then rename it
//! over the target. A reader sees the old file or the new one, never half of one, and a failed
//! write leaves the old file in place.

use crate::error::{Error, Result};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary path beside `path`, unique to this process and call.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Writes `path` atomically with the bytes `write` produces. On any error the target is
/// untouched and the temporary file removed.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(Error::usage("output", "the output path is empty"));
    }
    if path.is_dir() {
        return Err(Error::usage(
            "output",
            format!("{} is a directory, not a file name", path.display()),
        ));
    }
    let tmp = temp_path(path);
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(path, "writing", e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(path, "writing", e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(path, "writing", e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "writing", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Maps an I/O error while writing `path` into an [`Error`].
pub fn write_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, "writing", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = std::env::temp_dir().join(format!("dae-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("out.bin");
        write_atomic(&p, |w| w.write_all(b"good").map_err(write_err(&p))).unwrap();
        let r = write_atomic(&p, |w| {
            w.write_all(b"half").map_err(write_err(&p))?;
            Err(Error::Runtime("interrupted".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"good");
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "the temporary file must be removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

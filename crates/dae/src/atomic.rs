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

/// A file being written atomically: its bytes go to a temporary file beside the target, which
/// [`AtomicFile::commit`] flushes to disk and renames over the target. Dropped uncommitted (on
/// an error, or a panic), the temporary file is removed and the target left as it was.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    w: Option<BufWriter<std::fs::File>>,
}

impl AtomicFile {
    /// Starts writing `path`: fails at once when it cannot be written (an empty path, a
    /// directory, a folder that does not exist or is read-only).
    pub fn create(path: &Path) -> Result<AtomicFile> {
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
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(path, "writing", e))?;
        Ok(AtomicFile { path: path.to_path_buf(), tmp, w: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// The file's writer (buffered).
    pub fn writer(&mut self) -> &mut (dyn Write + Send) {
        self.w.as_mut().expect("an uncommitted file has its writer")
    }

    /// Writes `bytes`; an error names the target.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let path = &self.path;
        self.w.as_mut().expect("an uncommitted file has its writer").write_all(bytes).map_err(|e| Error::io(path, "writing", e))
    }

    /// Flushes the file to disk and puts it in place of the target.
    pub fn commit(mut self) -> Result<()> {
        let w = self.w.take().expect("committed once");
        let file = w.into_inner().map_err(|e| Error::io(&self.path, "writing", e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, "writing", e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, "writing", e))?;
        // Renamed: nothing is left for Drop to remove.
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            drop(self.w.take());
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `path` atomically with the bytes `write` produces. On any error the target is
/// untouched and the temporary file removed.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    write(f.writer())?;
    f.commit()
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

//! Writing results: NPY (float32, C order) or CSV, chosen by the output's extension, atomically.

use crate::atomic::{write_atomic, write_err};
use crate::error::{Error, Result};
use std::path::Path;

/// An output format, chosen by the file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Npy,
    Csv,
}

impl OutputFormat {
    /// `.npy` or `.csv` (any case); anything else is a usage error.
    pub fn from_path(path: &Path) -> Result<OutputFormat> {
        match path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .as_deref()
        {
            Some("npy") => Ok(OutputFormat::Npy),
            Some("csv") => Ok(OutputFormat::Csv),
            _ => Err(Error::usage(
                "output",
                format!(
                    "{}: unknown output format; name the file .npy or .csv",
                    path.display()
                ),
            )),
        }
    }
}

fn npy_header(shape: &[usize]) -> Vec<u8> {
    npy_header_of("<f4", shape)
}

fn npy_header_of(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad so that the data starts on a 64-byte boundary; the header ends with a newline.
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - total % 64) % 64));
    dict.push('\n');
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h
}

fn write_values(
    path: &Path,
    shape: &[usize],
    cols: usize,
    data: &[f32],
) -> Result<()> {
    let fmt = OutputFormat::from_path(path)?;
    write_atomic(path, |w| {
        let e = write_err(path);
        match fmt {
            OutputFormat::Npy => {
                w.write_all(&npy_header(shape)).map_err(&e)?;
                let mut buf = Vec::with_capacity(1 << 16);
                for chunk in data.chunks(1 << 14) {
                    buf.clear();
                    for v in chunk {
                        buf.extend_from_slice(&v.to_le_bytes());
                    }
                    w.write_all(&buf).map_err(&e)?;
                }
            }
            OutputFormat::Csv => {
                let mut line = String::new();
                for row in data.chunks(cols.max(1)) {
                    line.clear();
                    for (j, v) in row.iter().enumerate() {
                        if j > 0 {
                            line.push(',');
                        }
                        use std::fmt::Write as _;
                        let _ = write!(line, "{v}");
                    }
                    line.push('\n');
                    w.write_all(line.as_bytes()).map_err(&e)?;
                }
            }
        }
        Ok(())
    })
}

/// Writes a `rows × cols` matrix (row-major) to `path` as `.npy` or `.csv`.
pub fn write_matrix(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    assert_eq!(data.len(), rows * cols);
    write_values(path, &[rows, cols], cols, data)
}

/// Writes a 1-D array to `path` as `.npy` (shape `(n,)`) or `.csv` (one value per line).
pub fn write_vector(path: &Path, data: &[f32]) -> Result<()> {
    write_values(path, &[data.len()], 1, data)
}

/// Writes class indices to `path`: `.npy` as int64 (numpy's default integer), `.csv` one per
/// line.
pub fn write_classes(path: &Path, classes: &[u32]) -> Result<()> {
    let fmt = OutputFormat::from_path(path)?;
    write_atomic(path, |w| {
        let e = write_err(path);
        match fmt {
            OutputFormat::Npy => {
                w.write_all(&npy_header_of("<i8", &[classes.len()])).map_err(&e)?;
                let bytes: Vec<u8> = classes.iter().flat_map(|&c| (c as i64).to_le_bytes()).collect();
                w.write_all(&bytes).map_err(&e)
            }
            OutputFormat::Csv => {
                let text: String = classes.iter().map(|c| format!("{c}\n")).collect();
                w.write_all(text.as_bytes()).map_err(&e)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned() {
        for shape in [&[3usize][..], &[60000, 784], &[1, 2, 3]] {
            let h = npy_header(shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
        }
    }

    #[test]
    fn round_trip_through_readers() {
        let dir = std::env::temp_dir().join(format!("dae-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = [1.5f32, -2.0, 0.1, 3.25, 1e-7, 42.0];
        for name in ["m.npy", "m.csv"] {
            let p = dir.join(name);
            write_matrix(&p, 2, 3, &data).unwrap();
            let ds = crate::data::read_data(&p, &Default::default()).unwrap();
            assert_eq!((ds.rows, ds.cols), (2, 3));
            match ds.values {
                crate::data::Values::F32(v) => assert_eq!(v, data),
                _ => panic!("expected f32"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

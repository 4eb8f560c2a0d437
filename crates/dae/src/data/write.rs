//! Writing results: NPY (float32, C order) or CSV, chosen by the output's extension, atomically.

use crate::atomic::{write_atomic, write_err, AtomicFile};
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

/// A matrix of `rows × cols` float32 values written to a file (`.npy` or `.csv`, by its
/// extension) a block of whole rows at a time, atomically: the file appears, complete, at
/// [`MatrixWriter::finish`]; dropped before (on an error), it never appears and an old file of
/// that name stays as it was. So a result can go to disk as it is computed, without holding
/// all of it in memory.
pub struct MatrixWriter {
    file: AtomicFile,
    fmt: OutputFormat,
    cols: usize,
    /// Values still to come.
    left: usize,
    threads: usize,
    /// CSV text, a buffer for each formatting thread.
    text: Vec<Vec<u8>>,
}

/// Values formatted as CSV text between writes (per thread).
const CSV_ROUND: usize = 1 << 18;

impl MatrixWriter {
    /// Starts writing a `rows × cols` matrix (row-major) to `path`, formatting CSV text on
    /// `threads` threads.
    pub fn create(path: &Path, rows: usize, cols: usize, threads: usize) -> Result<MatrixWriter> {
        Self::with_shape(path, &[rows, cols], cols, threads)
    }

    /// Starts writing a vector of `len` values: `.npy` of shape `(len,)`, or `.csv` with one
    /// value a line.
    pub fn vector(path: &Path, len: usize, threads: usize) -> Result<MatrixWriter> {
        Self::with_shape(path, &[len], 1, threads)
    }

    fn with_shape(path: &Path, shape: &[usize], cols: usize, threads: usize) -> Result<MatrixWriter> {
        let fmt = OutputFormat::from_path(path)?;
        let mut file = AtomicFile::create(path)?;
        if fmt == OutputFormat::Npy {
            file.write_all(&npy_header(shape))?;
        }
        let left = shape.iter().product();
        Ok(MatrixWriter { file, fmt, cols: cols.max(1), left, threads: threads.max(1), text: Vec::new() })
    }

    /// Writes the next rows: `block` holds whole rows, and no more than are left.
    pub fn write_rows(&mut self, block: &[f32]) -> Result<()> {
        assert!(block.len() % self.cols == 0, "a block of whole rows");
        assert!(block.len() <= self.left, "more values than the matrix holds");
        self.left -= block.len();
        match self.fmt {
            OutputFormat::Npy => {
                let mut buf = std::mem::take(&mut self.text);
                buf.resize(1, Vec::new());
                for chunk in block.chunks(1 << 14) {
                    buf[0].clear();
                    for v in chunk {
                        buf[0].extend_from_slice(&v.to_le_bytes());
                    }
                    self.file.write_all(&buf[0])?;
                }
                self.text = buf;
            }
            OutputFormat::Csv => {
                let per_round = (CSV_ROUND / self.cols).max(1) * self.threads;
                let mut text = std::mem::take(&mut self.text);
                for round in block.chunks(per_round * self.cols) {
                    csv_text(&mut text, round, self.cols, self.threads);
                    for t in &text {
                        self.file.write_all(t)?;
                    }
                }
                self.text = text;
            }
        }
        Ok(())
    }

    /// Puts the file in place; every value must have been written.
    pub fn finish(self) -> Result<()> {
        assert_eq!(self.left, 0, "values left unwritten");
        self.file.commit()
    }
}

/// The CSV text of `data` (whole rows of `cols` values) in `out`, split into as many parts as
/// there are threads (rows in order): each value is the shortest decimal that reads back as
/// exactly it, an integral value without a trailing ".0" (so integers stay integers).
fn csv_text(out: &mut Vec<Vec<u8>>, data: &[f32], cols: usize, threads: usize) {
    let rows = data.len() / cols;
    // A thread is worth starting for some thousands of values.
    let want = threads.min(data.len() / 4096).clamp(1, rows.max(1));
    let per = rows.div_ceil(want).max(1);
    // Exactly one buffer per part: a buffer left from a larger block must not be written.
    let parts = rows.div_ceil(per).max(1);
    out.resize(parts, Vec::new());
    let format = |text: &mut Vec<u8>, rows: &[f32]| {
        text.clear();
        let mut num = zmij::Buffer::new();
        for row in rows.chunks(cols) {
            for (j, v) in row.iter().enumerate() {
                if j > 0 {
                    text.push(b',');
                }
                let s = num.format(*v).as_bytes();
                text.extend_from_slice(s.strip_suffix(b".0").unwrap_or(s));
            }
            text.push(b'\n');
        }
    };
    if parts == 1 {
        return format(&mut out[0], data);
    }
    std::thread::scope(|scope| {
        for (text, rows) in out.iter_mut().zip(data.chunks(per * cols)) {
            scope.spawn(move || format(text, rows));
        }
    });
}

fn write_values(path: &Path, shape: &[usize], cols: usize, data: &[f32]) -> Result<()> {
    let mut w = MatrixWriter::with_shape(path, shape, cols, super::io_threads())?;
    w.write_rows(data)?;
    w.finish()
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

    #[test]
    fn csv_values_read_back_exactly_whatever_the_threads() {
        let mut x = 7u64;
        let mut data = vec![0.0, -0.0, 1.0, -3.0, 255.0, 1e-45, f32::MAX, f32::MIN_POSITIVE, 0.1, 16777216.0];
        data.extend((0..50_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                f32::from_bits((x >> 32) as u32)
            })
            .filter(|v| v.is_finite()));
        let cols = 7;
        data.truncate(data.len() / cols * cols);
        let rows = data.len() / cols;
        let dir = std::env::temp_dir().join(format!("dae-write-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut texts = Vec::new();
        for threads in [1, 2, 5] {
            let p = dir.join(format!("t{threads}.csv"));
            // Blocks of uneven sizes, a large one before small ones: no text of an earlier block
            // may be written again.
            let mut w = MatrixWriter::create(&p, rows, cols, threads).unwrap();
            let split = [rows * 2 / 3, rows * 2 / 3 + 1, rows];
            let mut at = 0;
            for end in split {
                w.write_rows(&data[at * cols..end * cols]).unwrap();
                at = end;
            }
            w.finish().unwrap();
            let text = std::fs::read_to_string(&p).unwrap();
            let back: Vec<f32> = text.lines().flat_map(|l| l.split(',')).map(|f| f.parse().unwrap()).collect();
            assert_eq!(text.lines().count(), rows);
            assert!(back.iter().zip(&data).all(|(a, b)| a.to_bits() == b.to_bits()), "threads {threads}: values differ");
            texts.push(text);
        }
        assert!(texts.iter().all(|t| *t == texts[0]), "the text depends on the threads");
        let fields: Vec<&str> = texts[0].split([',', '\n']).collect();
        let of = |v: f32| fields[data.iter().position(|d| d.to_bits() == v.to_bits()).unwrap()];
        assert_eq!([of(1.0), of(-3.0), of(255.0), of(-0.0), of(1e-45), of(0.1)], ["1", "-3", "255", "-0", "1e-45", "0.1"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unfinished_matrix_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("dae-write-unfinished-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.npy");
        write_matrix(&p, 1, 2, &[1.0, 2.0]).unwrap();
        let before = std::fs::read(&p).unwrap();
        let mut w = MatrixWriter::create(&p, 2, 2, 1).unwrap();
        w.write_rows(&[5.0, 6.0]).unwrap();
        drop(w);
        assert_eq!(std::fs::read(&p).unwrap(), before);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "the temporary file must be removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

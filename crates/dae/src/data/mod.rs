//! Data in and out: IDX, NPY and CSV readers, the fitted input scaling, and NPY/CSV writers.
//!
//! A [`Dataset`] keeps values as compact as they came: u8 pixels stay u8 (a quarter of the memory
//! of f32) and are converted a batch at a time by [`Dataset::gather`], which also applies the
//! fitted [`Scaler`].

mod csv;
mod idx;
mod labels;
mod npy;
mod scale;
mod write;

pub use self::csv::{read_csv, read_csv_bytes};
pub use idx::{read_idx, read_idx_bytes};
pub use labels::{class_dataset, column_index, read_targets, take_column, Targets};
pub use npy::{read_npy, read_npy_bytes};
pub use scale::Scaler;
pub use write::{write_classes, write_matrix, write_vector, MatrixWriter, OutputFormat};

use crate::augment::Augment;
use crate::config::ScaleKind;
use crate::corrupt::NoiseKey;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The values of a dataset, row-major.
#[derive(Clone, Debug)]
pub enum Values {
    /// Pixel intensities 0..=255, read as v / 255.
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// A table of `rows` examples × `cols` features, as read from a file.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub rows: usize,
    pub cols: usize,
    pub values: Values,
    /// Height × width when the rows are images (IDX files and 3-D NPY arrays carry it).
    pub image_shape: Option<(usize, usize)>,
    /// Column names from a CSV header.
    pub column_names: Option<Vec<String>>,
    /// The file it came from, for error messages.
    pub source: PathBuf,
}

/// u8 → f32 in [0, 1], computed as v / 255 (not v · (1/255)) to match `x.astype(f32) / 255`.
fn u8_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| i as f32 / 255.0))
}

/// Options for reading data files.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// CSV only: `Some(true)` treats the first line as a header, `Some(false)` as data, `None`
    /// decides from its content (a header has a field that is not a number).
    pub header: Option<bool>,
}

/// Threads that parse and format CSV text; 0 for every core.
static IO_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sets the threads that read and write CSV text (`None`: every core, the default).
pub fn set_io_threads(threads: Option<usize>) {
    IO_THREADS.store(threads.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
}

/// The threads that read and write CSV text.
pub fn io_threads() -> usize {
    match IO_THREADS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The file formats this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    Idx,
    Npy,
    Csv,
}

impl InputFormat {
    /// The format of `path`, from its name when that is clear, else from its first bytes.
    pub fn detect(path: &Path) -> Result<InputFormat> {
        if let Some(f) = Self::from_name(path) {
            return Ok(f);
        }
        let mut head = [0u8; 6];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "reading", e))?;
            f.read(&mut head).map_err(|e| Error::io(path, "reading", e))?
        };
        Ok(Self::from_head(&head[..n]))
    }

    /// The format a name tells (`.npy`, `.csv`, `.txt`, `.idx`, `-ubyte`, each maybe `.gz`), if
    /// it tells one.
    fn from_name(path: &Path) -> Option<InputFormat> {
        let name = path.file_name()?.to_string_lossy().to_lowercase();
        let stem = name.strip_suffix(".gz").unwrap_or(&name);
        if stem.ends_with(".npy") {
            Some(InputFormat::Npy)
        } else if stem.ends_with(".csv") || stem.ends_with(".txt") {
            Some(InputFormat::Csv)
        } else if stem.ends_with(".idx") || stem.contains("-ubyte") || stem.contains(".idx") {
            Some(InputFormat::Idx)
        } else {
            None
        }
    }

    /// The format the first bytes tell: NPY's magic, else IDX (or gzip, as IDX files are
    /// usually shipped), else CSV.
    fn from_head(head: &[u8]) -> InputFormat {
        match head {
            [0x93, b'N', b'U', b'M', b'P', b'Y', ..] => InputFormat::Npy,
            [0x1f, 0x8b, ..] | [0, 0, _, _, ..] => InputFormat::Idx,
            _ => InputFormat::Csv,
        }
    }
}

/// Reads a data file in any supported format (see [`InputFormat::detect`]) and checks that it
/// holds at least one row and only finite values.
pub fn read_data(path: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let (ds, format) = if is_stream(path) {
        read_stream(path, opts)?
    } else {
        let format = InputFormat::detect(path)?;
        let ds = match format {
            InputFormat::Idx => read_idx(path)?,
            InputFormat::Npy => read_npy(path)?,
            InputFormat::Csv => read_csv(path, opts)?,
        };
        (ds, format)
    };
    // Errors name the file, or "standard input".
    let path = ds.source.as_path();
    if format == InputFormat::Idx && ds.cols == 1 && ds.rows > 0 {
        return Err(Error::input(
            path,
            "one value per row: this IDX file holds labels, not examples (give it with --labels)",
        ));
    }
    if ds.rows == 0 || ds.cols == 0 {
        return Err(Error::input(
            path,
            format!("the data is empty ({} rows × {} columns)", ds.rows, ds.cols),
        ));
    }
    if let Values::F32(v) = &ds.values {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::input_at(
                path,
                format!("row {}, column {}", i / ds.cols + 1, i % ds.cols + 1),
                format!("value {} is not finite: remove or impute it", v[i]),
            ));
        }
    }
    Ok(ds)
}

/// Whether `path` can be read only once: `-` (standard input), a pipe, a terminal.
pub(crate) fn is_stream(path: &Path) -> bool {
    path.as_os_str() == "-" || std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Reads a stream (see [`is_stream`]) whole, unpacking gzip: its name for errors ("standard
/// input" for `-`), its bytes, and their format, told by the name, else by the first bytes.
pub(crate) fn read_whole(path: &Path) -> Result<(String, Vec<u8>, InputFormat)> {
    use std::io::Read;
    let stdin = path.as_os_str() == "-";
    let name = if stdin { "standard input".to_string() } else { path.display().to_string() };
    let mut bytes = Vec::new();
    let read = if stdin {
        std::io::stdin().lock().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    read.map_err(|e| Error::io(&name, "reading", e))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut plain)
            .map_err(|e| Error::input(&name, format!("corrupt gzip data: {e}")))?;
        bytes = plain;
    }
    let format = InputFormat::from_name(path).unwrap_or_else(|| InputFormat::from_head(&bytes));
    Ok((name, bytes, format))
}

/// Reads data from a stream (see [`is_stream`]) whole, then as the file it holds.
fn read_stream(path: &Path, opts: &ReadOptions) -> Result<(Dataset, InputFormat)> {
    let (name, bytes, format) = read_whole(path)?;
    let ds = match format {
        InputFormat::Idx => read_idx_bytes(&name, &bytes)?,
        InputFormat::Npy => read_npy_bytes(&name, &bytes)?,
        InputFormat::Csv => read_csv_bytes(&name, &bytes, opts)?,
    };
    Ok((ds, format))
}

impl Dataset {
    /// Where row `r` (from 0) is in the file, for an error message: "line L" for a CSV file,
    /// else "row r + 1".
    pub fn locate(&self, r: usize) -> String {
        // Only a file can be read again (not a pipe, nor standard input).
        if self.source.is_file() && InputFormat::detect(&self.source).is_ok_and(|f| f == InputFormat::Csv) {
            if let Some(line) = csv::line_of_row(&self.source, self.column_names.is_some(), r) {
                return format!("line {line}");
            }
        }
        format!("row {}", r + 1)
    }

    /// A dataset over values already in memory.
    pub fn from_f32(rows: usize, cols: usize, values: Vec<f32>) -> Dataset {
        assert_eq!(values.len(), rows * cols, "values must hold rows × cols");
        Dataset {
            rows,
            cols,
            values: Values::F32(values),
            image_shape: None,
            column_names: None,
            source: PathBuf::from("<memory>"),
        }
    }

    /// The value at (`row`, `col`) as the model sees it before fitted scaling.
    #[inline]
    pub fn raw(&self, row: usize, col: usize) -> f32 {
        let i = row * self.cols + col;
        match &self.values {
            Values::U8(v) => u8_table()[v[i] as usize],
            Values::F32(v) => v[i],
        }
    }

    /// Bytes held by the values.
    pub fn memory_bytes(&self) -> usize {
        match &self.values {
            Values::U8(v) => v.len(),
            Values::F32(v) => v.len() * 4,
        }
    }

    /// Writes rows `rows` (in that order), scaled by `scaler`, into `out` (`rows.len() × cols`).
    pub fn gather(&self, rows: &[u32], scaler: &Scaler, out: &mut [f32]) {
        let d = self.cols;
        debug_assert!(out.len() >= rows.len() * d);
        for (dst, &r) in out.chunks_exact_mut(d).zip(rows) {
            let r = r as usize;
            match &self.values {
                Values::U8(v) => {
                    let t = u8_table();
                    for (o, &b) in dst.iter_mut().zip(&v[r * d..(r + 1) * d]) {
                        *o = t[b as usize];
                    }
                }
                Values::F32(v) => dst.copy_from_slice(&v[r * d..(r + 1) * d]),
            }
            scaler.apply_row(dst);
        }
    }

    /// Like [`Dataset::gather`], each row first transformed by `aug` in its raw values: row i
    /// by its draw for position `key.row0 + first + i`. Needs the image shape.
    pub fn gather_augmented(&self, rows: &[u32], scaler: &Scaler, out: &mut [f32], aug: &Augment, key: &NoiseKey, first: u32) {
        let d = self.cols;
        let (h, w) = self.image_shape.expect("augmentation needs the image shape");
        debug_assert!(out.len() >= rows.len() * d && h * w == d);
        for (i, (dst, &r)) in out.chunks_exact_mut(d).zip(rows).enumerate() {
            let draw = aug.draw(key, key.row0 + first + i as u32);
            let r = r as usize;
            match &self.values {
                Values::U8(v) => {
                    let (t, raw) = (u8_table(), &v[r * d..(r + 1) * d]);
                    draw.apply(h, w, |s| t[raw[s] as usize], 0.0, dst);
                }
                Values::F32(v) => {
                    let raw = &v[r * d..(r + 1) * d];
                    draw.apply(h, w, |s| raw[s], 0.0, dst);
                }
            }
            scaler.apply_row(dst);
        }
    }

    /// Like [`Dataset::gather`] for the contiguous rows `start..start + n`.
    pub fn gather_range(&self, start: usize, n: usize, scaler: &Scaler, out: &mut [f32]) {
        let d = self.cols;
        let out = &mut out[..n * d];
        match &self.values {
            Values::U8(v) => {
                let t = u8_table();
                for (o, &b) in out.iter_mut().zip(&v[start * d..(start + n) * d]) {
                    *o = t[b as usize];
                }
            }
            Values::F32(v) => out.copy_from_slice(&v[start * d..(start + n) * d]),
        }
        for row in out.chunks_exact_mut(d) {
            scaler.apply_row(row);
        }
    }

    /// A 64-bit fingerprint of the shape and every value, to tell whether a checkpoint was made
    /// on these data.
    pub fn fingerprint(&self) -> u64 {
        // FNV-1a over 8-byte words, then a final mix; exact bits, so any change shows.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ ((self.rows as u64) << 32 | self.cols as u64);
        let mut eat = |w: u64| {
            h ^= w;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        match &self.values {
            Values::U8(v) => v.chunks(8).for_each(|c| eat(c.iter().fold(0u64, |a, &b| a << 8 | b as u64))),
            Values::F32(v) => v.chunks(2).for_each(|c| eat(c.iter().fold(0u64, |a, x| a << 32 | x.to_bits() as u64))),
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }

    /// Fails unless the data has `expected` columns.
    pub fn check_width(&self, expected: usize, what: &str) -> Result<()> {
        if self.cols != expected {
            return Err(Error::input(
                &self.source,
                format!(
                    "the data has {} column{} but {what} expects {expected}",
                    self.cols,
                    if self.cols == 1 { "" } else { "s" }
                ),
            ));
        }
        Ok(())
    }

    /// Fails unless every value, after `scaler`, lies in [0, 1]: what cross-entropy needs.
    /// Minmax-scaled data passes: the training rows lie in [0, 1] by construction, and later
    /// data beyond their range is what minmax is expected to meet (cross-entropy clips its
    /// target to [0, 1]). Raw or standardized values outside [0, 1] are a mistake.
    pub fn check_unit_interval(&self, scaler: &Scaler) -> Result<()> {
        if scaler.kind == ScaleKind::Minmax {
            return Ok(());
        }
        let scaled = match scaler.kind {
            ScaleKind::Standardize => " (after --scale standardize)",
            _ => "",
        };
        let mut row = vec![0f32; self.cols];
        for r in 0..self.rows {
            self.gather_range(r, 1, scaler, &mut row);
            if let Some(c) = row.iter().position(|v| !(0.0..=1.0).contains(v)) {
                return Err(Error::input_at(
                    &self.source,
                    format!("{}, column {}", self.locate(r), c + 1),
                    format!(
                        "value {}{scaled} is outside [0, 1], which cross-entropy needs; \
                         use --scale minmax or --loss squared-error",
                        row[c]
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_scales_u8_and_applies_scaler() {
        let ds = Dataset {
            rows: 2,
            cols: 2,
            values: Values::U8(vec![0, 255, 51, 102]),
            image_shape: None,
            column_names: None,
            source: "t".into(),
        };
        let mut out = [0f32; 4];
        ds.gather(&[1, 0], &Scaler::identity(2), &mut out);
        assert_eq!(out, [0.2, 0.4, 0.0, 1.0]);
        assert_eq!(out[0], 51u8 as f32 / 255.0);
    }
}

//! IDX files (the MNIST / Fashion-MNIST format), raw or gzipped.
//!
//! Layout: two zero bytes, a type code, the number of dimensions n, then n big-endian u32 sizes,
//! then the values, big-endian, row-major. u8 images become [`Values::U8`] (read as v / 255).

use super::{Dataset, Values};
use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// An IDX array of any element type, converted to f32 unless it is u8.
pub(crate) struct IdxArray {
    pub dims: Vec<usize>,
    pub values: Values,
}

fn type_name(code: u8) -> Option<(&'static str, usize)> {
    Some(match code {
        0x08 => ("u8", 1),
        0x09 => ("i8", 1),
        0x0B => ("i16", 2),
        0x0C => ("i32", 4),
        0x0D => ("f32", 4),
        0x0E => ("f64", 8),
        _ => return None,
    })
}

/// Opens `path`, transparently decompressing gzip.
pub(crate) fn open_maybe_gz(path: &Path) -> Result<(Box<dyn Read>, Option<u64>)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "reading", e))?;
    let len = f.metadata().map(|m| m.len()).ok();
    let mut magic = [0u8; 2];
    let n = read_full(&mut f, &mut magic).map_err(|e| Error::io(path, "reading", e))?;
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Error::io(path, "reading", e))?;
    let f = std::io::BufReader::with_capacity(1 << 16, f);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok((Box::new(flate2::read::MultiGzDecoder::new(f)), None))
    } else {
        Ok((Box::new(f), len))
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads exactly `bytes` bytes of payload, refusing sizes the machine could not hold before
/// allocating anything, and reporting a short file as truncated. `available` is what is left
/// of the input when known (raw files, bytes in memory): a header that claims more than the
/// file holds is refused without reading.
pub(crate) fn read_payload(
    path: &Path,
    r: &mut dyn Read,
    bytes: usize,
    available: Option<u64>,
    what: &str,
) -> Result<Vec<u8>> {
    crate::memory::check_fits(path, bytes as u64, what)?;
    if let Some(avail) = available {
        if avail < bytes as u64 {
            return Err(Error::input(
                path,
                format!("truncated: {what} needs {bytes} bytes of data but the file holds {avail}"),
            ));
        }
    }
    // Compressed input may hold less than its header claims: grow as the data arrives.
    let mut buf = Vec::new();
    buf.try_reserve_exact(bytes.min(1 << 26)).map_err(|_| {
        Error::input(path, format!("cannot allocate {bytes} bytes for {what}"))
    })?;
    let got = r
        .take(bytes as u64)
        .read_to_end(&mut buf)
        .map_err(|e| gz_error(path, e))?;
    if got < bytes {
        return Err(Error::input(
            path,
            format!("truncated: {what} needs {bytes} bytes of data but the file holds {got}"),
        ));
    }
    Ok(buf)
}

fn gz_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidInput || e.kind() == std::io::ErrorKind::InvalidData
    {
        Error::input(path, format!("corrupt gzip data: {e}"))
    } else {
        Error::io(path, "reading", e)
    }
}

pub(crate) fn read_idx_array(path: &Path) -> Result<IdxArray> {
    let (mut r, len) = open_maybe_gz(path)?;
    read_idx_from(path, &mut r, len)
}

/// An IDX array from plain bytes in memory; `name` stands for the file in errors.
pub(crate) fn read_idx_array_bytes(name: &str, bytes: &[u8]) -> Result<IdxArray> {
    read_idx_from(Path::new(name), &mut &bytes[..], Some(bytes.len() as u64))
}

/// Reads an IDX array from `r`, which holds `len` bytes when known; `path` names it in errors.
fn read_idx_from(path: &Path, r: &mut dyn Read, len: Option<u64>) -> Result<IdxArray> {
    let mut r = r;
    let mut head = [0u8; 4];
    let n = read_full(&mut r, &mut head).map_err(|e| gz_error(path, e))?;
    if n < 4 {
        return Err(Error::input(
            path,
            format!("truncated: an IDX file starts with a 4-byte magic number, the file has {n} bytes"),
        ));
    }
    let type_info = type_name(head[2]);
    if head[0] != 0 || head[1] != 0 || type_info.is_none() || head[3] == 0 || head[3] > 8 {
        return Err(Error::input_at(
            path,
            "magic number",
            format!(
                "0x{:02x}{:02x}{:02x}{:02x} is not an IDX magic number (expected 0x000008NN for u8 \
                 data with NN dimensions, as in 0x00000803 for images)",
                head[0], head[1], head[2], head[3]
            ),
        ));
    }
    let (tname, esize) = type_info.unwrap();
    let ndim = head[3] as usize;
    let mut dbytes = vec![0u8; 4 * ndim];
    let n = read_full(&mut r, &mut dbytes).map_err(|e| gz_error(path, e))?;
    if n < dbytes.len() {
        return Err(Error::input(
            path,
            format!("truncated: the header announces {ndim} dimensions but ends after {} bytes", 4 + n),
        ));
    }
    let dims: Vec<usize> = dbytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    // The width (every dimension after the first) must fit on its own: with zero rows the
    // total would be 0 whatever the width, and the width sizes later buffers (at most 2^32 − 1
    // columns).
    let count = dims[1..]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&w| w <= u32::MAX as usize)
        .and_then(|w| w.checked_mul(dims[0]))
        .and_then(|c| c.checked_mul(esize))
        .ok_or_else(|| Error::input(path, format!("the dimensions {dims:?} are too large")))?;
    let shape = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×");
    let header = 4 + 4 * ndim as u64;
    let available = len.map(|l| l.saturating_sub(header));
    let payload = read_payload(path, &mut r, count, available, &format!("a {shape} {tname} array"))?;
    let values = match head[2] {
        0x08 => Values::U8(payload),
        code => Values::F32(
            payload
                .chunks_exact(esize)
                .map(|c| match code {
                    0x09 => c[0] as i8 as f32,
                    0x0B => i16::from_be_bytes([c[0], c[1]]) as f32,
                    0x0C => i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f32,
                    0x0D => f32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    _ => f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32,
                })
                .collect(),
        ),
    };
    Ok(IdxArray { dims, values })
}

/// Reads an IDX data file: the first dimension is the rows, the rest are flattened into columns.
/// A 3-D file (n × h × w) records its image shape.
pub fn read_idx(path: &Path) -> Result<Dataset> {
    let a = read_idx_array(path)?;
    Ok(dataset_of(path, a))
}

/// Reads IDX data held in memory (raw or gzipped), such as a file embedded in a program;
/// `name` stands for the file in errors.
pub fn read_idx_bytes(name: &str, bytes: &[u8]) -> Result<Dataset> {
    let path = Path::new(name);
    let a = if bytes.starts_with(&[0x1f, 0x8b]) {
        read_idx_from(path, &mut flate2::read::MultiGzDecoder::new(bytes), None)?
    } else {
        read_idx_from(path, &mut &bytes[..], Some(bytes.len() as u64))?
    };
    Ok(dataset_of(path, a))
}

fn dataset_of(path: &Path, a: IdxArray) -> Dataset {
    let rows = a.dims[0];
    let cols = a.dims[1..].iter().product::<usize>();
    let cols = if a.dims.len() == 1 { 1 } else { cols };
    Dataset {
        rows,
        cols,
        values: a.values,
        image_shape: (a.dims.len() == 3).then(|| (a.dims[1], a.dims[2])),
        column_names: None,
        source: path.to_path_buf(),
    }
}

//! NPY files (numpy's `np.save` format, versions 1–3), C order.
//!
//! Layout: `\x93NUMPY`, a version, a header length, a Python dict literal with `descr`,
//! `fortran_order` and `shape`, then the raw values.

use super::idx::{open_maybe_gz, read_full, read_payload};
use super::{Dataset, Values};
use crate::error::{Error, Result};
use std::path::Path;

/// Element types this reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    U8,
    /// numpy's bool: 0 or 1, never scaled as pixels are.
    Bool,
    F32,
    F64,
    /// Signed or unsigned integers of 1, 2, 4 or 8 bytes (labels).
    Int { signed: bool, bytes: usize },
}

pub(crate) struct NpyArray {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub big_endian: bool,
    pub payload: Vec<u8>,
}

impl NpyArray {
    /// The values as f64, whatever the stored type.
    pub fn to_f64(&self) -> Vec<f64> {
        let w = self.elem_size();
        self.payload
            .chunks_exact(w)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..w].copy_from_slice(c);
                if self.big_endian {
                    b[..w].reverse();
                }
                match self.dtype {
                    Dtype::U8 => b[0] as f64,
                    Dtype::Bool => (b[0] != 0) as u8 as f64,
                    Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                    Dtype::F64 => f64::from_le_bytes(b),
                    Dtype::Int { signed, bytes } => {
                        let u = u64::from_le_bytes(b);
                        if signed {
                            let shift = 64 - 8 * bytes as u32;
                            (((u << shift) as i64) >> shift) as f64
                        } else {
                            u as f64
                        }
                    }
                }
            })
            .collect()
    }

    fn elem_size(&self) -> usize {
        match self.dtype {
            Dtype::U8 | Dtype::Bool => 1,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Int { bytes, .. } => bytes,
        }
    }
}

fn parse_descr(path: &Path, descr: &str) -> Result<(Dtype, bool)> {
    let bad = || {
        Error::input_at(
            path,
            "header field 'descr'",
            format!(
                "unsupported dtype '{descr}': use float32 ('<f4'), float64 ('<f8'), uint8 ('|u1') or \
                 bool ('|b1'); for labels also integer types"
            ),
        )
    };
    let (order, code) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('|', descr),
    };
    let big = order == '>';
    let dtype = match code {
        "u1" => Dtype::U8,
        "b1" => Dtype::Bool,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        "i1" => Dtype::Int { signed: true, bytes: 1 },
        "i2" => Dtype::Int { signed: true, bytes: 2 },
        "i4" => Dtype::Int { signed: true, bytes: 4 },
        "i8" => Dtype::Int { signed: true, bytes: 8 },
        "u2" => Dtype::Int { signed: false, bytes: 2 },
        "u4" => Dtype::Int { signed: false, bytes: 4 },
        "u8" => Dtype::Int { signed: false, bytes: 8 },
        _ => return Err(bad()),
    };
    Ok((dtype, big))
}

/// The value of `key` in the header dict, as the raw text up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[start + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

pub(crate) fn read_npy_array(path: &Path) -> Result<NpyArray> {
    let (mut r, len) = open_maybe_gz(path)?;
    read_npy_from(path, &mut r, len)
}

/// An NPY array from plain bytes in memory; `name` stands for the file in errors.
pub(crate) fn read_npy_array_bytes(name: &str, bytes: &[u8]) -> Result<NpyArray> {
    read_npy_from(Path::new(name), &mut &bytes[..], Some(bytes.len() as u64))
}

/// Reads an NPY array from `r`, which holds `len` bytes when known; `path` names it in errors.
fn read_npy_from(path: &Path, r: &mut dyn std::io::Read, len: Option<u64>) -> Result<NpyArray> {
    let mut r = r;
    let mut pre = [0u8; 10];
    let n = read_full(&mut r, &mut pre).map_err(|e| Error::io(path, "reading", e))?;
    if n < 8 || &pre[..6] != b"\x93NUMPY" {
        return Err(Error::input_at(
            path,
            "magic string",
            "not an NPY file: it does not start with \\x93NUMPY (write it with numpy.save)",
        ));
    }
    let major = pre[6];
    let header_len = match major {
        1 => u16::from_le_bytes([pre[8], pre[9]]) as usize,
        2 | 3 => {
            let mut more = [0u8; 2];
            read_full(&mut r, &mut more).map_err(|e| Error::io(path, "reading", e))?;
            u32::from_le_bytes([pre[8], pre[9], more[0], more[1]]) as usize
        }
        v => {
            return Err(Error::input_at(
                path,
                "version",
                format!("NPY format version {v} is not supported (1, 2 and 3 are)"),
            ))
        }
    };
    if header_len > 1 << 20 {
        return Err(Error::input_at(
            path,
            "header",
            format!("header length {header_len} is implausible"),
        ));
    }
    let mut hbytes = vec![0u8; header_len];
    let got = read_full(&mut r, &mut hbytes).map_err(|e| Error::io(path, "reading", e))?;
    if got < header_len {
        return Err(Error::input(path, "truncated: the NPY header is cut short"));
    }
    let header = String::from_utf8_lossy(&hbytes).into_owned();
    let field = |k: &str| {
        dict_value(&header, k).ok_or_else(|| {
            Error::input_at(path, format!("header field '{k}'"), "missing from the header")
        })
    };
    let descr = field("descr")?.trim_matches(|c| c == '\'' || c == '"');
    let (dtype, big_endian) = parse_descr(path, descr)?;
    match field("fortran_order")? {
        "False" => {}
        "True" => {
            return Err(Error::input_at(
                path,
                "header field 'fortran_order'",
                "Fortran-order arrays are not supported: save with np.ascontiguousarray(a)",
            ))
        }
        v => {
            return Err(Error::input_at(
                path,
                "header field 'fortran_order'",
                format!("'{v}' is not True or False"),
            ))
        }
    }
    let shape_text = field("shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| {
            Error::input_at(path, "header field 'shape'", format!("'{shape_text}' is not a tuple"))
        })?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L').parse::<usize>().map_err(|_| {
                Error::input_at(path, "header field 'shape'", format!("'{s}' is not a size"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let elem = match dtype {
        Dtype::U8 | Dtype::Bool => 1,
        Dtype::F32 => 4,
        Dtype::F64 => 8,
        Dtype::Int { bytes, .. } => bytes,
    };
    let bytes = shape
        .iter()
        .try_fold(elem, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::input_at(path, "header field 'shape'", "the shape is too large"))?;
    let header = if major == 1 { 10 } else { 12 } + header_len as u64;
    let available = len.map(|l| l.saturating_sub(header));
    let payload = read_payload(path, &mut r, bytes, available, &format!("an array of shape {shape:?} ('{descr}')"))?;
    Ok(NpyArray {
        shape,
        dtype,
        big_endian,
        payload,
    })
}

/// Reads an NPY data file: f32, f64 or u8 (u8 is read as pixels, v / 255). A 2-D array is
/// rows × columns; a 3-D array n × h × w holds images; a 1-D array is one column.
pub fn read_npy(path: &Path) -> Result<Dataset> {
    npy_dataset(path, read_npy_array(path)?)
}

/// Reads NPY data held in memory; `name` stands for the file in errors.
pub fn read_npy_bytes(name: &str, bytes: &[u8]) -> Result<Dataset> {
    let path = Path::new(name);
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return npy_dataset(path, read_npy_from(path, &mut flate2::read::MultiGzDecoder::new(bytes), None)?);
    }
    npy_dataset(path, read_npy_from(path, &mut &bytes[..], Some(bytes.len() as u64))?)
}

fn npy_dataset(path: &Path, a: NpyArray) -> Result<Dataset> {
    if matches!(a.dtype, Dtype::Int { .. }) {
        return Err(Error::input_at(
            path,
            "header field 'descr'",
            "integer arrays are read as labels, not data: convert with a.astype(np.float32)",
        ));
    }
    let rows = a.shape.first().copied().unwrap_or(0);
    let cols = if a.shape.len() <= 1 {
        1
    } else {
        a.shape[1..].iter().product()
    };
    let values = match (a.dtype, a.big_endian) {
        (Dtype::U8, _) => Values::U8(a.payload),
        (Dtype::Bool, _) => Values::F32(a.payload.iter().map(|&b| (b != 0) as u8 as f32).collect()),
        (Dtype::F32, false) => Values::F32(
            a.payload
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        _ => Values::F32(a.to_f64().into_iter().map(|v| v as f32).collect()),
    };
    Ok(Dataset {
        rows,
        cols,
        values,
        image_shape: (a.shape.len() == 3).then(|| (a.shape[1], a.shape[2])),
        column_names: None,
        source: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_found() {
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
        assert_eq!(dict_value(h, "descr"), Some("'<f4'"));
        assert_eq!(dict_value(h, "fortran_order"), Some("False"));
        assert_eq!(dict_value(h, "shape"), Some("(3, 4)"));
        assert_eq!(dict_value("{'shape': (5,), 'descr': '|u1'}", "shape"), Some("(5,)"));
    }

    #[test]
    fn bool_arrays_are_zeros_and_ones() {
        let dict = "{'descr': '|b1', 'fortran_order': False, 'shape': (2, 3), }";
        let mut h = b"\x93NUMPY\x01\x00".to_vec();
        let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
        let text = format!("{dict}{}\n", " ".repeat(pad));
        h.extend_from_slice(&(text.len() as u16).to_le_bytes());
        h.extend_from_slice(text.as_bytes());
        h.extend_from_slice(&[1, 0, 1, 0, 0, 1]);
        let ds = read_npy_bytes("b.npy", &h).unwrap();
        assert_eq!((ds.rows, ds.cols), (2, 3));
        match ds.values {
            Values::F32(v) => assert_eq!(v, [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
            Values::U8(_) => panic!("bool read as pixels (1 would become 1/255)"),
        }
    }
}


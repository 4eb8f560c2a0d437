//! Numeric CSV: one example per line, comma-separated (tab-separated when the first line has tabs
//! and no commas), an optional header line of column names.

use super::idx::open_maybe_gz;
use super::{Dataset, ReadOptions, Values};
use crate::error::{Error, Result};
use std::io::BufRead;
use std::path::Path;

fn split_fields(line: &str, delim: char) -> impl Iterator<Item = &str> {
    line.split(delim)
        .map(|f| f.trim().trim_matches('"').trim())
}

/// Reads a numeric CSV file. Every row must have the header's (or the first row's) number of
/// fields, and every field must be a finite number.
pub fn read_csv(path: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let (r, len) = open_maybe_gz(path)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, r);
    // Before reading it all, estimate the memory the values will take from the first lines,
    // and refuse a file the machine cannot hold.
    let mut values: Vec<f32> = Vec::new();
    if let Some(len) = len {
        let head = reader.fill_buf().map_err(|e| Error::io(path, "reading", e))?;
        let fields = head.iter().filter(|&&b| b == b',' || b == b'\n' || b == b'\t').count().max(1);
        let estimate = len / (head.len().max(1) as u64 / fields as u64).max(1) * 4;
        crate::memory::check_fits(path, estimate, "the values of this CSV file")?;
        values.reserve(estimate as usize / 4);
    }
    read_csv_from(path, reader, opts, values)
}

/// Reads CSV text held in memory; `name` stands for the file in errors.
pub fn read_csv_bytes(name: &str, bytes: &[u8], opts: &ReadOptions) -> Result<Dataset> {
    read_csv_from(Path::new(name), bytes, opts, Vec::new())
}

fn read_csv_from(path: &Path, reader: impl BufRead, opts: &ReadOptions, mut values: Vec<f32>) -> Result<Dataset> {
    let mut cols: Option<usize> = None;
    let mut first_line_no = 0;
    let mut names: Option<Vec<String>> = None;
    let mut delim = ',';
    let mut rows = 0usize;
    let mut seen_first = false;
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                Error::input_at(path, format!("line {line_no}"), "not valid UTF-8 text")
            } else {
                Error::io(path, "reading", e)
            }
        })?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if !seen_first {
            seen_first = true;
            if line.contains('\t') && !line.contains(',') {
                delim = '\t';
            }
            let is_header = match opts.header {
                Some(h) => h,
                None => split_fields(line, delim).any(|f| f.parse::<f32>().is_err()),
            };
            if is_header {
                let n: Vec<String> = split_fields(line, delim).map(String::from).collect();
                cols = Some(n.len());
                first_line_no = line_no;
                names = Some(n);
                continue;
            }
        }
        let start = values.len();
        for (j, field) in split_fields(line, delim).enumerate() {
            let loc = || format!("line {line_no}, column {}", j + 1);
            if field.is_empty() {
                return Err(Error::input_at(path, loc(), "empty field (a missing value)"));
            }
            let v: f32 = field.parse().map_err(|_| {
                Error::input_at(path, loc(), format!("'{field}' is not a number"))
            })?;
            if !v.is_finite() {
                return Err(Error::input_at(
                    path,
                    loc(),
                    format!("'{field}' is not finite: remove or impute it"),
                ));
            }
            values.push(v);
        }
        let n = values.len() - start;
        match cols {
            None => {
                cols = Some(n);
                first_line_no = line_no;
            }
            Some(c) if c != n => {
                return Err(Error::input_at(
                    path,
                    format!("line {line_no}"),
                    format!("{n} fields, but line {first_line_no} has {c}"),
                ))
            }
            _ => {}
        }
        rows += 1;
    }
    let cols = cols.unwrap_or(0);
    Ok(Dataset {
        rows,
        cols,
        values: Values::F32(values),
        image_shape: None,
        column_names: names,
        source: path.to_path_buf(),
    })
}

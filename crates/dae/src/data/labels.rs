//! Labels and targets for fine-tuning: IDX label files, NPY arrays, or a CSV column.

use super::idx::{read_idx_array, read_idx_array_bytes};
use super::npy::{read_npy_array, read_npy_array_bytes};
use super::{is_stream, read_csv, read_csv_bytes, read_whole, Dataset, InputFormat, ReadOptions, Values};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Targets read from a file: one row per example, `cols` values each.
#[derive(Clone, Debug)]
pub struct Targets {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
    pub source: PathBuf,
    /// How a row is named in errors ("row", or "line" for CSV with its line offset).
    line_offset: Option<usize>,
}

impl Targets {
    /// One target per row, from a column of the data file `source`.
    pub fn column(values: Vec<f32>, source: &Path) -> Targets {
        Targets { rows: values.len(), cols: 1, values, source: source.to_path_buf(), line_offset: None }
    }

    fn locate(&self, r: usize) -> String {
        match self.line_offset {
            Some(off) => format!("line {}", super::csv::line_of_row(&self.source, off == 2, r).unwrap_or(r + off)),
            None => format!("row {}", r + 1),
        }
    }

    /// Fails unless there is one target per data row.
    pub fn check_rows(&self, data_rows: usize, data: &Path) -> Result<()> {
        if self.rows != data_rows {
            return Err(Error::input(
                &self.source,
                format!("{} labels for {data_rows} rows of {}: give one label per row", self.rows, data.display()),
            ));
        }
        Ok(())
    }

    /// The class index of every row, checking that each is a whole number in [0, `classes`)
    /// (any size when `classes` is None). Needs a single column.
    pub fn classes(&self, classes: Option<usize>, what: &str) -> Result<Vec<u32>> {
        if self.cols != 1 {
            return Err(Error::input(
                &self.source,
                format!("{} columns of labels: class labels are one column (use --label-column NAME, or --regression for real-valued targets)", self.cols),
            ));
        }
        self.values
            .iter()
            .enumerate()
            .map(|(r, &v)| {
                let bad = |m: String| Error::input_at(&self.source, self.locate(r), m);
                if v < 0.0 {
                    return Err(bad(format!("label {v} is negative; classes are numbered 0, 1, 2, …")));
                }
                if v.fract() != 0.0 {
                    return Err(bad(format!("label {v} is not a whole number; for real-valued targets use --regression")));
                }
                if v >= 16_777_216.0 {
                    return Err(bad(format!("label {v} is too large")));
                }
                if let Some(c) = classes {
                    if v as usize >= c {
                        return Err(bad(format!("label {v} is beyond the {c} classes of {what} (0 to {})", c.saturating_sub(1))));
                    }
                }
                Ok(v as u32)
            })
            .collect()
    }

    /// As a dataset (for gathering batches of targets).
    pub fn to_dataset(&self) -> Dataset {
        Dataset { source: self.source.clone(), ..Dataset::from_f32(self.rows, self.cols, self.values.clone()) }
    }
}

/// A dataset of class indices, one column.
pub fn class_dataset(classes: &[u32], source: &Path) -> Dataset {
    Dataset {
        source: source.to_path_buf(),
        ..Dataset::from_f32(classes.len(), 1, classes.iter().map(|&c| c as f32).collect())
    }
}

/// Reads targets from `path`: an IDX file (values as stored, not scaled), an NPY array, or a CSV
/// file; for CSV `column` picks a column by header name or 1-based number.
pub fn read_targets(path: &Path, opts: &ReadOptions, column: Option<&str>) -> Result<Targets> {
    // A pipe or standard input is read whole first, and its rows are named by number in errors
    // (it cannot be read again to find a line).
    let stream = if is_stream(path) { Some(read_whole(path)?) } else { None };
    let format = match &stream {
        Some((_, _, f)) => *f,
        None => InputFormat::detect(path)?,
    };
    let source = match &stream {
        Some((name, _, _)) => PathBuf::from(name),
        None => path.to_path_buf(),
    };
    let path = source.as_path();
    let (rows, cols, values, line_offset) = match format {
        InputFormat::Idx => {
            let a = match &stream {
                Some((name, bytes, _)) => read_idx_array_bytes(name, bytes)?,
                None => read_idx_array(path)?,
            };
            let rows = a.dims[0];
            let cols = a.dims[1..].iter().product::<usize>().max(1);
            let values = match a.values {
                Values::U8(v) => v.into_iter().map(|b| b as f32).collect(),
                Values::F32(v) => v,
            };
            (rows, cols, values, None)
        }
        InputFormat::Npy => {
            let a = match &stream {
                Some((name, bytes, _)) => read_npy_array_bytes(name, bytes)?,
                None => read_npy_array(path)?,
            };
            let rows = a.shape.first().copied().unwrap_or(0);
            let cols = if a.shape.len() <= 1 { 1 } else { a.shape[1..].iter().product() };
            (rows, cols, a.to_f64().into_iter().map(|v| v as f32).collect(), None)
        }
        InputFormat::Csv => {
            let ds = match &stream {
                Some((name, bytes, _)) => read_csv_bytes(name, bytes, opts)?,
                None => read_csv(path, opts)?,
            };
            let offset = if ds.column_names.is_some() { 2 } else { 1 };
            match column {
                Some(name) => {
                    let (col, _) = take_column(&ds, name)?;
                    (ds.rows, 1, col, Some(offset))
                }
                None => match ds.values {
                    Values::F32(v) => (ds.rows, ds.cols, v, Some(offset)),
                    Values::U8(_) => unreachable!("CSV values are f32"),
                },
            }
        }
    };
    let line_offset = line_offset.filter(|_| stream.is_none());
    if column.is_some() && format != InputFormat::Csv {
        return Err(Error::usage("--label-column", format!("{} is not a CSV file with named columns", path.display())));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::input_at(path, format!("row {}", i / cols.max(1) + 1), "label is not finite"));
    }
    if rows == 0 {
        return Err(Error::input(path, "there are no labels"));
    }
    Ok(Targets { rows, cols, values, source: path.to_path_buf(), line_offset })
}

/// The index of column `name` (a header name, or a 1-based number) of a CSV dataset.
pub fn column_index(ds: &Dataset, name: &str) -> Result<usize> {
    if let Some(names) = &ds.column_names {
        if let Some(i) = names.iter().position(|n| n == name) {
            return Ok(i);
        }
    }
    match name.parse::<usize>() {
        Ok(i) if i >= 1 && i <= ds.cols => Ok(i - 1),
        _ => Err(Error::input_at(
            &ds.source,
            "header",
            match (&ds.column_names, name.parse::<usize>()) {
                (_, Ok(i)) => format!("there is no column {i}: the columns are numbered 1 to {}", ds.cols),
                (Some(names), _) => format!("no column named '{name}' (columns: {})", names.join(", ")),
                (None, _) => format!("no header, so give the column as a number from 1 to {}", ds.cols),
            },
        )),
    }
}

/// Column `name` of `ds` and `ds` without it.
pub fn take_column(ds: &Dataset, name: &str) -> Result<(Vec<f32>, Dataset)> {
    let j = column_index(ds, name)?;
    let Values::F32(v) = &ds.values else {
        return Err(Error::input(&ds.source, "a label column needs CSV data"));
    };
    let d = ds.cols;
    let column: Vec<f32> = (0..ds.rows).map(|r| v[r * d + j]).collect();
    let rest: Vec<f32> = v.chunks_exact(d).flat_map(|row| row.iter().enumerate().filter(|(c, _)| *c != j).map(|(_, &x)| x)).collect();
    let names = ds.column_names.as_ref().map(|n| n.iter().enumerate().filter(|(c, _)| *c != j).map(|(_, s)| s.clone()).collect());
    Ok((
        column,
        Dataset {
            rows: ds.rows,
            cols: d - 1,
            values: Values::F32(rest),
            image_shape: None,
            column_names: names,
            source: ds.source.clone(),
        },
    ))
}

//! Input scaling fitted on the training rows: x' = (x − offset_j) · factor_j per column j.

use super::Dataset;
use crate::config::ScaleKind;
use serde::{Deserialize, Serialize};

/// A fitted per-column affine transform, stored in the model file and applied by every command
/// that reads data for that model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    pub kind: ScaleKind,
    /// Subtracted from column j (empty for `none`).
    pub offset: Vec<f32>,
    /// Then multiplied into column j (empty for `none`).
    pub factor: Vec<f32>,
}

impl Scaler {
    /// No scaling.
    pub fn identity(_cols: usize) -> Scaler {
        Scaler {
            kind: ScaleKind::None,
            offset: Vec::new(),
            factor: Vec::new(),
        }
    }

    /// Fits `kind` on the rows `rows` of `ds` (every row when `None`). Constant columns map to 0.
    pub fn fit(kind: ScaleKind, ds: &Dataset, rows: Option<&[u32]>) -> Scaler {
        let d = ds.cols;
        let all: Vec<u32>;
        let rows = match rows {
            Some(r) => r,
            None => {
                all = (0..ds.rows as u32).collect();
                &all
            }
        };
        let identity = Scaler::identity(d);
        let mut buf = vec![0f32; d];
        match kind {
            ScaleKind::None => identity,
            ScaleKind::Minmax => {
                let mut lo = vec![f32::INFINITY; d];
                let mut hi = vec![f32::NEG_INFINITY; d];
                for &r in rows {
                    ds.gather(&[r], &identity, &mut buf);
                    for j in 0..d {
                        lo[j] = lo[j].min(buf[j]);
                        hi[j] = hi[j].max(buf[j]);
                    }
                }
                let factor = lo
                    .iter()
                    .zip(&hi)
                    .map(|(&l, &h)| if h > l { 1.0 / (h - l) } else { 0.0 })
                    .collect();
                Scaler {
                    kind,
                    offset: lo,
                    factor,
                }
            }
            ScaleKind::Standardize => {
                let n = rows.len().max(1) as f64;
                let mut sum = vec![0f64; d];
                let mut sq = vec![0f64; d];
                for &r in rows {
                    ds.gather(&[r], &identity, &mut buf);
                    for j in 0..d {
                        sum[j] += buf[j] as f64;
                    }
                }
                let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
                for &r in rows {
                    ds.gather(&[r], &identity, &mut buf);
                    for j in 0..d {
                        let e = buf[j] as f64 - mean[j];
                        sq[j] += e * e;
                    }
                }
                let factor = sq
                    .iter()
                    .map(|s| {
                        let sd = (s / n).sqrt();
                        if sd > 0.0 {
                            (1.0 / sd) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Scaler {
                    kind,
                    offset: mean.iter().map(|&m| m as f32).collect(),
                    factor,
                }
            }
        }
    }

    /// Applies the transform to one row in place.
    #[inline]
    pub fn apply_row(&self, row: &mut [f32]) {
        if self.kind == ScaleKind::None {
            return;
        }
        for ((x, &o), &f) in row.iter_mut().zip(&self.offset).zip(&self.factor) {
            *x = (*x - o) * f;
        }
    }

    /// Undoes the transform on one row in place (a constant column returns to its value).
    #[inline]
    pub fn invert_row(&self, row: &mut [f32]) {
        if self.kind == ScaleKind::None {
            return;
        }
        for ((x, &o), &f) in row.iter_mut().zip(&self.offset).zip(&self.factor) {
            *x = if f != 0.0 { *x / f + o } else { o };
        }
    }

    /// The number of columns the scaler was fitted on (None for the identity).
    pub fn width(&self) -> Option<usize> {
        (self.kind != ScaleKind::None).then_some(self.offset.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_maps_training_range_to_unit_interval() {
        let ds = Dataset::from_f32(3, 2, vec![1.0, 5.0, 3.0, 5.0, 2.0, 5.0]);
        let s = Scaler::fit(ScaleKind::Minmax, &ds, None);
        let mut row = [3.0, 5.0];
        s.apply_row(&mut row);
        assert_eq!(row, [1.0, 0.0]);
    }

    #[test]
    fn standardize_gives_zero_mean_unit_variance() {
        let ds = Dataset::from_f32(4, 1, vec![1.0, 2.0, 3.0, 4.0]);
        let s = Scaler::fit(ScaleKind::Standardize, &ds, None);
        let mut v: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0];
        for x in v.iter_mut() {
            s.apply_row(std::slice::from_mut(x));
        }
        let mean: f32 = v.iter().sum::<f32>() / 4.0;
        let var: f32 = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
    }

    #[test]
    fn fit_uses_only_the_given_rows() {
        let ds = Dataset::from_f32(3, 1, vec![0.0, 10.0, 100.0]);
        let s = Scaler::fit(ScaleKind::Minmax, &ds, Some(&[0, 1]));
        let mut x = [100.0];
        s.apply_row(&mut x);
        assert_eq!(x, [10.0]);
    }
}

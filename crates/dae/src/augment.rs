//! Data augmentation for fine-tuning on images (`--shift`, `--flip`): each training example is
//! translated by a random whole number of pixels and, when asked, mirrored left to right, afresh
//! in every epoch. Vacated pixels hold the raw value 0; the scaler applies afterwards, so the
//! network sees what it would see had the shifted image been in the file.
//!
//! The draws are a pure function of (seed, epoch, position in the epoch's order), like the
//! corruption's, so a run is reproducible whatever the thread count and a GPU draws the same.

use serde::{Deserialize, Serialize};

use crate::corrupt::NoiseKey;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::rng::{philox4x32, seed_key};

/// Random translations (up to `shift` pixels in each direction, uniform over the
/// (2·shift + 1)² offsets) and mirror images (probability 1/2 when `flip`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    pub shift: u32,
    pub flip: bool,
}

/// One example's transformation: output pixel (y, x) is input pixel
/// (y − dy, x − dx), mirrored (column w − 1 − (x − dx)) when `flip`; 0 when outside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draw {
    pub dy: i32,
    pub dx: i32,
    pub flip: bool,
}

impl Augment {
    /// Whether it changes anything.
    pub fn is_active(&self) -> bool {
        self.shift > 0 || self.flip
    }

    /// Checks that `ds` holds images (an image shape that covers its columns) and that the
    /// shift is smaller than them.
    pub fn check(&self, ds: &Dataset) -> Result<()> {
        if !self.is_active() {
            return Ok(());
        }
        let Some((h, w)) = ds.image_shape else {
            return Err(Error::input(
                &ds.source,
                "--shift and --flip need images: an IDX image file or a 3-D NPY array (n × height × width); this file's rows have no image shape",
            ));
        };
        if h * w != ds.cols {
            return Err(Error::input(&ds.source, format!("the image shape {h}×{w} does not match the {} columns", ds.cols)));
        }
        if self.shift as usize >= h.min(w) {
            return Err(Error::usage("--shift", format!("{} pixels is not smaller than the {h}×{w} images", self.shift)));
        }
        Ok(())
    }

    /// The transformation of the example at position `row` of the epoch's order
    /// (`key.stream` names the purpose: [`crate::rng::stream::AUGMENT`]).
    pub fn draw(&self, key: &NoiseKey, row: u32) -> Draw {
        let r = philox4x32(seed_key(key.seed), [row, key.epoch, key.stream, 0]);
        let span = 2 * self.shift + 1;
        Draw {
            dy: (r[0] % span) as i32 - self.shift as i32,
            dx: (r[1] % span) as i32 - self.shift as i32,
            flip: self.flip && r[2] & 1 == 1,
        }
    }

    /// ", images moved up to 2 pixels and mirrored" for a summary line, or "" when inactive.
    pub fn summary(&self) -> String {
        if self.is_active() {
            format!(", images {self}")
        } else {
            String::new()
        }
    }
}

/// "moved up to 2 pixels and mirrored", "mirrored", "none".
impl std::fmt::Display for Augment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = if self.shift == 1 { "pixel" } else { "pixels" };
        match (self.shift, self.flip) {
            (0, false) => write!(f, "none"),
            (0, true) => write!(f, "mirrored"),
            (n, false) => write!(f, "moved up to {n} {unit}"),
            (n, true) => write!(f, "moved up to {n} {unit} and mirrored"),
        }
    }
}

impl Draw {
    /// The input index that output pixel (y, x) of an h × w image takes, or `None` (a 0).
    #[inline]
    pub fn source(&self, h: usize, w: usize, y: usize, x: usize) -> Option<usize> {
        let sy = y as i32 - self.dy;
        let sx = x as i32 - self.dx;
        if sy < 0 || sx < 0 || sy >= h as i32 || sx >= w as i32 {
            return None;
        }
        let sx = if self.flip { w - 1 - sx as usize } else { sx as usize };
        Some(sy as usize * w + sx)
    }

    /// `out` = the transformed h × w image (row-major) whose pixel s is `pixel(s)`; vacated
    /// pixels `zero`.
    #[inline]
    pub fn apply<T: Copy>(&self, h: usize, w: usize, pixel: impl Fn(usize) -> T, zero: T, out: &mut [T]) {
        for y in 0..h {
            for x in 0..w {
                out[y * w + x] = self.source(h, w, y, x).map_or(zero, &pixel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(epoch: u32) -> NoiseKey {
        NoiseKey { seed: 7, stream: crate::rng::stream::AUGMENT, epoch, row0: 0 }
    }

    #[test]
    fn transforms_by_hand() {
        // 2 × 3 image 1 2 3 / 4 5 6.
        let img = [1, 2, 3, 4, 5, 6];
        let mut out = [0; 6];
        Draw { dy: 0, dx: 1, flip: false }.apply(2, 3, |s| img[s], 0, &mut out);
        assert_eq!(out, [0, 1, 2, 0, 4, 5]);
        Draw { dy: -1, dx: 0, flip: false }.apply(2, 3, |s| img[s], 0, &mut out);
        assert_eq!(out, [4, 5, 6, 0, 0, 0]);
        Draw { dy: 0, dx: 0, flip: true }.apply(2, 3, |s| img[s], 0, &mut out);
        assert_eq!(out, [3, 2, 1, 6, 5, 4]);
        // Mirrored, then moved right by one.
        Draw { dy: 1, dx: 1, flip: true }.apply(2, 3, |s| img[s], 0, &mut out);
        assert_eq!(out, [0, 0, 0, 0, 3, 2]);
    }

    #[test]
    fn draws_are_uniform() {
        // 10^5 draws of shift 2: each of the 5 offsets (per axis) and each flip within 4
        // standard errors of its probability; the two axes independent of each other.
        let aug = Augment { shift: 2, flip: true };
        let n = 100_000u32;
        let (mut dy, mut dx, mut both, mut flips) = ([0u32; 5], [0u32; 5], 0u32, 0u32);
        for row in 0..n {
            let d = aug.draw(&key(row % 3), row / 3);
            dy[(d.dy + 2) as usize] += 1;
            dx[(d.dx + 2) as usize] += 1;
            both += (d.dy == 2 && d.dx == -2) as u32;
            flips += d.flip as u32;
        }
        let within = |count: u32, p: f64| {
            let se = (n as f64 * p * (1.0 - p)).sqrt();
            (count as f64 - n as f64 * p).abs() < 4.0 * se
        };
        for c in dy.iter().chain(&dx) {
            assert!(within(*c, 0.2), "{dy:?} {dx:?}");
        }
        assert!(within(both, 0.04), "{both}");
        assert!(within(flips, 0.5), "{flips}");
        // No flips unless asked, and none of it without a shift.
        let plain = Augment { shift: 0, flip: false };
        assert!((0..100).all(|r| plain.draw(&key(0), r) == Draw { dy: 0, dx: 0, flip: false }));
    }

    #[test]
    fn draws_depend_on_seed_epoch_and_row() {
        let aug = Augment { shift: 3, flip: true };
        let a: Vec<Draw> = (0..64).map(|r| aug.draw(&key(0), r)).collect();
        let b: Vec<Draw> = (0..64).map(|r| aug.draw(&key(1), r)).collect();
        let c: Vec<Draw> = (0..64).map(|r| aug.draw(&NoiseKey { seed: 8, ..key(0) }, r)).collect();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, (0..64).map(|r| aug.draw(&key(0), r)).collect::<Vec<_>>());
    }

    #[test]
    fn the_backend_gathers_each_row_by_its_own_draw() {
        // 9 images of 4 × 5 (u8), standardised, 2 threads: row i of the batch is image rows[i]
        // moved by the draw for position row0 + i, then scaled, whichever thread writes it.
        use crate::backend::Backend;
        use crate::data::{Dataset, Scaler, Values};
        let (h, w, n) = (4usize, 5usize, 9usize);
        let ds = Dataset {
            rows: n,
            cols: h * w,
            values: Values::U8((0..n * h * w).map(|i| (i * 29 % 251) as u8).collect()),
            image_shape: Some((h, w)),
            column_names: None,
            source: "t".into(),
        };
        let scaler = Scaler::fit(crate::ScaleKind::Standardize, &ds, None);
        let aug = Augment { shift: 1, flip: true };
        let key = NoiseKey { row0: 40, ..key(2) };
        let rows: Vec<u32> = vec![3, 8, 0, 3, 5, 1, 7];
        let cpu = crate::Cpu::new(Some(2)).unwrap();
        let mut out = vec![0f32; rows.len() * h * w];
        cpu.gather_augmented(&mut out, &cpu.data(&ds, &scaler).unwrap(), &rows, &aug, &key);
        let mut moved = 0;
        for (i, &r) in rows.iter().enumerate() {
            let d = aug.draw(&key, 40 + i as u32);
            moved += (d != Draw { dy: 0, dx: 0, flip: false }) as usize;
            let Values::U8(v) = &ds.values else { unreachable!() };
            let raw = &v[r as usize * h * w..][..h * w];
            let mut want = vec![0f32; h * w];
            d.apply(h, w, |s| raw[s] as f32 / 255.0, 0.0, &mut want);
            scaler.apply_row(&mut want);
            assert_eq!(&out[i * h * w..(i + 1) * h * w], &want[..], "row {i}");
        }
        assert!(moved >= 4, "only {moved} of 7 rows changed");
    }

    #[test]
    fn checks_the_shape() {
        let mut ds = Dataset::from_f32(2, 784, vec![0.0; 2 * 784]);
        ds.source = "x.csv".into();
        let aug = Augment { shift: 2, flip: false };
        assert!(aug.check(&ds).unwrap_err().to_string().contains("x.csv"));
        assert!(Augment::default().check(&ds).is_ok());
        ds.image_shape = Some((28, 28));
        assert!(aug.check(&ds).is_ok());
        assert!(Augment { shift: 28, flip: false }.check(&ds).is_err());
        ds.image_shape = Some((28, 27));
        assert!(aug.check(&ds).unwrap_err().to_string().contains("does not match the 784 columns"));
        assert_eq!(Augment::default().summary(), "");
        assert_eq!(Augment { shift: 0, flip: true }.summary(), ", images mirrored");
        assert_eq!(Augment { shift: 2, flip: true }.to_string(), "moved up to 2 pixels and mirrored");
        assert_eq!(Augment { shift: 1, flip: false }.to_string(), "moved up to 1 pixel");
    }
}

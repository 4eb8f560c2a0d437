//! The corruption processes q_D, drawn from counter-based random numbers.
//!
//! Element (r, j) of a batch whose first row sits at position `row0` of the epoch's order draws
//! its random bits from Philox4x32-10 under the key `seed` and the counter
//! `[j / per_block, row0 + r, epoch, stream]`, so the noise an example receives depends only on
//! the seed, the epoch and its position in that epoch: never on the batch size, the thread count
//! or the backend.
//!
//! - masking ν: one 32-bit word per element (4 per block); the input is zeroed when the word's
//!   uniform u ∈ [0, 1) satisfies u < ν.
//! - gaussian σ: Box–Muller on word pairs (4 normals per block); x̃ = x + σ·n.
//! - salt-and-pepper ν: two words per element (2 per block): hit when u₀ < ν, then 1 when the top
//!   bit of the second word is set, else 0.

use crate::config::Corruption;
use crate::rng::{box_muller, philox4x32, seed_key, unit_f32};

/// Where a batch's noise comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseKey {
    pub seed: u64,
    /// The purpose (see [`crate::rng::stream`]).
    pub stream: u32,
    pub epoch: u32,
    /// Position of the batch's first row in the epoch's order.
    pub row0: u32,
}

/// Corrupts one row: `xt` = q_D(`x`), and `mask[j]` = 1 where input j was corrupted, else 0.
/// `row` is the row's position in the epoch's order.
#[inline]
pub fn corrupt_row(
    noise: Corruption,
    key: &NoiseKey,
    row: u32,
    x: &[f32],
    xt: &mut [f32],
    mut mask: Option<&mut [f32]>,
) {
    let k = seed_key(key.seed);
    let ctr = |blk: usize| [blk as u32, row, key.epoch, key.stream];
    match noise {
        Corruption::None => {
            xt.copy_from_slice(x);
            if let Some(m) = mask {
                m.fill(0.0);
            }
        }
        Corruption::Masking { level } => {
            for (blk, (xs, ts)) in x.chunks(4).zip(xt.chunks_mut(4)).enumerate() {
                let bits = philox4x32(k, ctr(blk));
                for t in 0..xs.len() {
                    let hit = unit_f32(bits[t]) < level;
                    ts[t] = if hit { 0.0 } else { xs[t] };
                    if let Some(m) = mask.as_deref_mut() {
                        m[blk * 4 + t] = hit as u32 as f32;
                    }
                }
            }
        }
        Corruption::Gaussian { sigma } => {
            for (blk, (xs, ts)) in x.chunks(4).zip(xt.chunks_mut(4)).enumerate() {
                let bits = philox4x32(k, ctr(blk));
                let (n0, n1) = box_muller(bits[0], bits[1]);
                let (n2, n3) = box_muller(bits[2], bits[3]);
                let n = [n0, n1, n2, n3];
                for t in 0..xs.len() {
                    ts[t] = xs[t] + sigma * n[t];
                }
            }
            if let Some(m) = mask {
                m.fill(1.0);
            }
        }
        Corruption::SaltAndPepper { level } => {
            for (blk, (xs, ts)) in x.chunks(2).zip(xt.chunks_mut(2)).enumerate() {
                let bits = philox4x32(k, ctr(blk));
                for t in 0..xs.len() {
                    let hit = unit_f32(bits[2 * t]) < level;
                    let salt = (bits[2 * t + 1] >> 31) as f32;
                    ts[t] = if hit { salt } else { xs[t] };
                    if let Some(m) = mask.as_deref_mut() {
                        m[blk * 2 + t] = hit as u32 as f32;
                    }
                }
            }
        }
    }
}

/// Inverted-dropout mask of one row: 1/(1−`p`) where the unit is kept, 0 where it is dropped
/// (uniform u < p, one word per element as for masking noise).
#[inline]
pub fn dropout_mask_row(p: f32, key: &NoiseKey, row: u32, mask: &mut [f32]) {
    let k = seed_key(key.seed);
    let keep = 1.0 / (1.0 - p);
    for (blk, ms) in mask.chunks_mut(4).enumerate() {
        let bits = philox4x32(k, [blk as u32, row, key.epoch, key.stream]);
        for (t, m) in ms.iter_mut().enumerate() {
            *m = if unit_f32(bits[t]) < p { 0.0 } else { keep };
        }
    }
}

#[cfg(test)]
mod tests {
    //! Statistical tests of the samplers: each statistic over at least 10^5 draws must lie
    //! within 4 standard errors of its exact value.
    use super::*;

    const ROWS: usize = 400;
    const COLS: usize = 300; // 120,000 draws

    fn draw(noise: Corruption, x: f32, epoch: u32) -> (Vec<f32>, Vec<f32>) {
        let key = NoiseKey {
            seed: 12345,
            stream: 16,
            epoch,
            row0: 0,
        };
        let xs = vec![x; COLS];
        let mut out = vec![0f32; ROWS * COLS];
        let mut mask = vec![0f32; ROWS * COLS];
        for r in 0..ROWS {
            corrupt_row(
                noise,
                &key,
                r as u32,
                &xs,
                &mut out[r * COLS..(r + 1) * COLS],
                Some(&mut mask[r * COLS..(r + 1) * COLS]),
            );
        }
        (out, mask)
    }

    fn within_4se(observed: f64, expected: f64, se: f64, what: &str) {
        assert!(
            (observed - expected).abs() < 4.0 * se,
            "{what}: observed {observed}, expected {expected} ± 4×{se}"
        );
    }

    #[test]
    fn masking_zeroes_the_stated_fraction() {
        for level in [0.1f32, 0.3, 0.5] {
            let (out, mask) = draw(Corruption::Masking { level }, 0.7, 0);
            let n = out.len() as f64;
            let zeros = out.iter().filter(|&&v| v == 0.0).count() as f64;
            let p = level as f64;
            within_4se(zeros / n, p, (p * (1.0 - p) / n).sqrt(), "fraction masked");
            assert!(out.iter().all(|&v| v == 0.0 || v == 0.7), "kept inputs are unchanged");
            let masked = mask.iter().sum::<f32>() as f64;
            assert_eq!(masked, zeros, "mask marks exactly the zeroed inputs");
        }
    }

    #[test]
    fn masking_is_independent_across_columns_and_rows() {
        // Pairs of neighbouring entries: P(both masked) = ν².
        let level = 0.3f32;
        let (_, mask) = draw(Corruption::Masking { level }, 1.0, 1);
        let pairs = mask.chunks(2).count() as f64;
        let both = mask.chunks(2).filter(|p| p[0] == 1.0 && p[1] == 1.0).count() as f64;
        let p = (level * level) as f64;
        within_4se(both / pairs, p, (p * (1.0 - p) / pairs).sqrt(), "both of a pair masked");
        // Row r and row r+1 at the same column.
        let mut both = 0.0;
        let mut n = 0.0;
        for r in (0..ROWS).step_by(2) {
            for j in 0..COLS {
                n += 1.0;
                if mask[r * COLS + j] == 1.0 && mask[(r + 1) * COLS + j] == 1.0 {
                    both += 1.0;
                }
            }
        }
        within_4se(both / n, p, (p * (1.0 - p) / n).sqrt(), "same column, adjacent rows");
    }

    #[test]
    fn gaussian_noise_has_the_stated_mean_and_variance() {
        let sigma = 0.2f32;
        let (out, mask) = draw(Corruption::Gaussian { sigma }, 0.5, 0);
        let n = out.len() as f64;
        let e: Vec<f64> = out.iter().map(|&v| (v - 0.5) as f64).collect();
        let mean = e.iter().sum::<f64>() / n;
        let var = e.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
        let s2 = (sigma * sigma) as f64;
        within_4se(mean, 0.0, (s2 / n).sqrt(), "gaussian mean");
        // Var of the sample variance of a normal: 2σ⁴/(n−1).
        within_4se(var, s2, (2.0 * s2 * s2 / (n - 1.0)).sqrt(), "gaussian variance");
        // Fourth moment: 3σ⁴ for a normal (checks the shape, not only the spread).
        let m4 = e.iter().map(|v| v.powi(4)).sum::<f64>() / n;
        let se4 = ((105.0 - 9.0) * s2.powi(4) / n).sqrt();
        within_4se(m4, 3.0 * s2 * s2, se4, "gaussian fourth moment");
        assert!(mask.iter().all(|&m| m == 1.0));
    }

    #[test]
    fn salt_and_pepper_hits_the_fraction_with_a_fair_coin() {
        let level = 0.25f32;
        let (out, mask) = draw(Corruption::SaltAndPepper { level }, 0.5, 0);
        let n = out.len() as f64;
        let hits = mask.iter().filter(|&&m| m == 1.0).count() as f64;
        let p = level as f64;
        within_4se(hits / n, p, (p * (1.0 - p) / n).sqrt(), "fraction hit");
        let salt = out.iter().filter(|&&v| v == 1.0).count() as f64;
        let pepper = out.iter().filter(|&&v| v == 0.0).count() as f64;
        assert_eq!(salt + pepper, hits);
        within_4se(salt / hits, 0.5, (0.25 / hits).sqrt(), "salt among hits");
        let untouched = out.iter().filter(|&&v| v == 0.5).count() as f64;
        assert_eq!(untouched + hits, n);
    }

    #[test]
    fn dropout_keeps_the_stated_fraction_scaled() {
        let p = 0.5f32;
        let key = NoiseKey { seed: 9, stream: 0x3000, epoch: 1, row0: 0 };
        let mut m = vec![0f32; ROWS * COLS];
        for (r, row) in m.chunks_mut(COLS).enumerate() {
            dropout_mask_row(p, &key, r as u32, row);
        }
        let n = m.len() as f64;
        let kept = m.iter().filter(|&&v| v == 2.0).count() as f64;
        assert_eq!(kept + m.iter().filter(|&&v| v == 0.0).count() as f64, n);
        within_4se(kept / n, 0.5, (0.25 / n).sqrt(), "fraction kept");
        // Inverted dropout preserves the expectation: the mean mask is 1.
        let mean = m.iter().map(|&v| v as f64).sum::<f64>() / n;
        within_4se(mean, 1.0, (1.0 / n).sqrt(), "mean mask");
    }

    #[test]
    fn noise_is_fresh_each_epoch_and_reproducible() {
        let m = Corruption::Masking { level: 0.5 };
        let (a, _) = draw(m, 1.0, 3);
        let (b, _) = draw(m, 1.0, 3);
        let (c, _) = draw(m, 1.0, 4);
        assert_eq!(a, b);
        let same = a.iter().zip(&c).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
        // Independent epochs agree on about half the entries.
        within_4se(same, 0.5, (0.25 / a.len() as f64).sqrt(), "agreement across epochs");
    }
}

//! The corruption processes q_D, drawn from counter-based random numbers.
//!
//! A row's random words come from Philox4x32-10 under the key `seed`, in groups of 32 words:
//! group g of row position r is the 8 blocks with counters `[8g + l, r, epoch, stream]`,
//! l = 0..8, and its word `(w, l)` (word w of block 8g + l) is the row's word `32g + 8w + l`.
//! So the noise an example receives depends only on the seed, the epoch and its position in that
//! epoch (`row0` + its index in the batch): never on the batch size, the thread count or the
//! backend. (The interleaving puts 8 consecutive words in the 8 lanes of one vector.)
//!
//! - masking ν, dropout p: element j uses word j; it is hit when the word's uniform u ∈ [0, 1)
//!   satisfies u < ν.
//! - gaussian σ: element j uses word j and its partner j ^ 8 (the same lane of the neighbouring
//!   word of the group): x̃ = x + σ·n with n = √(−2 ln u₁)·cos(2πu₂) for the even word of the pair
//!   and ·sin for the odd one (Box–Muller), u₁ from the even word, u₂ from the odd one.
//! - salt-and-pepper ν: element j uses words 2j − (j mod 8) and that + 8: hit when the first's
//!   uniform is below ν, then 1 when the top bit of the second is set, else 0.

use crate::config::Corruption;
use crate::rng::{philox4x32_x8, seed_key, unit_f32, unit_open_f32};

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

/// The 32 words of group `g` of row position `row`: `out[w][l]` is the row's word 32g + 8w + l.
#[inline(always)]
fn group(key: &NoiseKey, row: u32, g: usize) -> [[u32; 8]; 4] {
    philox4x32_x8(seed_key(key.seed), (8 * g) as u32, row, key.epoch, key.stream)
}

/// Masking (or dropout) of one row: `out[j]` = 0 where hit, else `x[j]` (or `kept` without x),
/// and `mask[j]` = 1 where hit. Whole groups of 32 are straight-line code that vectorises.
#[inline(always)]
fn masking_row_generic(level: f32, key: &NoiseKey, row: u32, x: Option<&[f32]>, out: &mut [f32], mut mask: Option<&mut [f32]>, kept: f32) {
    let n = out.len();
    let whole = n / 32;
    for g in 0..n.div_ceil(32) {
        let bits = group(key, row, g);
        let base = 32 * g;
        if g < whole {
            // Keep (1) or drop (0) for the 32 elements, in element order.
            let mut keep = [0f32; 32];
            for (w, word) in bits.iter().enumerate() {
                for (l, &b) in word.iter().enumerate() {
                    keep[8 * w + l] = if unit_f32(b) < level { 0.0 } else { 1.0 };
                }
            }
            let o: &mut [f32; 32] = (&mut out[base..base + 32]).try_into().expect("32 values");
            match x {
                Some(x) => {
                    let xs: &[f32; 32] = x[base..base + 32].try_into().expect("32 values");
                    for j in 0..32 {
                        o[j] = xs[j] * keep[j];
                    }
                }
                None => {
                    for j in 0..32 {
                        o[j] = kept * keep[j];
                    }
                }
            }
            if let Some(m) = mask.as_deref_mut() {
                let ms: &mut [f32; 32] = (&mut m[base..base + 32]).try_into().expect("32 values");
                for j in 0..32 {
                    ms[j] = 1.0 - keep[j];
                }
            }
        } else {
            for (w, word) in bits.iter().enumerate() {
                for (l, &b) in word.iter().enumerate() {
                    let j = base + 8 * w + l;
                    if j < n {
                        let hit = unit_f32(b) < level;
                        out[j] = if hit { 0.0 } else { x.map_or(kept, |x| x[j]) };
                        if let Some(m) = mask.as_deref_mut() {
                            m[j] = hit as u32 as f32;
                        }
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn corrupt_row_generic(noise: Corruption, key: &NoiseKey, row: u32, x: &[f32], xt: &mut [f32], mask: Option<&mut [f32]>) {
    let n = x.len();
    match noise {
        Corruption::None => {
            xt.copy_from_slice(x);
            if let Some(m) = mask {
                m.fill(0.0);
            }
        }
        Corruption::Masking { level } => masking_row_generic(level, key, row, Some(x), xt, mask, 0.0),
        Corruption::Gaussian { sigma } => {
            for g in 0..n.div_ceil(32) {
                let bits = group(key, row, g);
                for w in [0, 2] {
                    for l in 0..8 {
                        let r = (-2.0 * unit_open_f32(bits[w][l]).ln()).sqrt();
                        let (s, c) = (std::f32::consts::TAU * unit_f32(bits[w + 1][l])).sin_cos();
                        for (ww, z) in [(w, r * c), (w + 1, r * s)] {
                            let j = 32 * g + 8 * ww + l;
                            if j < n {
                                xt[j] = x[j] + sigma * z;
                            }
                        }
                    }
                }
            }
            if let Some(m) = mask {
                m.fill(1.0);
            }
        }
        Corruption::SaltAndPepper { level } => {
            let mut mask = mask;
            // 16 elements per group: element 16g + 8h + l uses words (2h, 2h + 1) of lane l.
            for g in 0..n.div_ceil(16) {
                let bits = group(key, row, g);
                for h in 0..2 {
                    for l in 0..8 {
                        let j = 16 * g + 8 * h + l;
                        if j < n {
                            let hit = unit_f32(bits[2 * h][l]) < level;
                            let salt = (bits[2 * h + 1][l] >> 31) as f32;
                            xt[j] = if hit { salt } else { x[j] };
                            if let Some(m) = mask.as_deref_mut() {
                                m[j] = hit as u32 as f32;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn corrupt_row_avx2(noise: Corruption, key: &NoiseKey, row: u32, x: &[f32], xt: &mut [f32], mask: Option<&mut [f32]>) {
    corrupt_row_generic(noise, key, row, x, xt, mask)
}

/// Corrupts one row: `xt` = q_D(`x`), and `mask[j]` = 1 where input j was corrupted, else 0.
/// `row` is the row's position in the epoch's order.
#[inline]
pub fn corrupt_row(noise: Corruption, key: &NoiseKey, row: u32, x: &[f32], xt: &mut [f32], mask: Option<&mut [f32]>) {
    #[cfg(target_arch = "x86_64")]
    if crate::backend::cpu::has_avx2_fma() {
        // SAFETY: the processor supports AVX2 and FMA (checked just now).
        return unsafe { corrupt_row_avx2(noise, key, row, x, xt, mask) };
    }
    corrupt_row_generic(noise, key, row, x, xt, mask)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dropout_mask_avx2(p: f32, key: &NoiseKey, row: u32, mask: &mut [f32]) {
    masking_row_generic(p, key, row, None, mask, None, 1.0 / (1.0 - p))
}

/// Inverted-dropout mask of one row: 1/(1−`p`) where the unit is kept, 0 where it is dropped
/// (drawn as masking noise of level `p`).
#[inline]
pub fn dropout_mask_row(p: f32, key: &NoiseKey, row: u32, mask: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::backend::cpu::has_avx2_fma() {
        // SAFETY: the processor supports AVX2 and FMA (checked just now).
        return unsafe { dropout_mask_avx2(p, key, row, mask) };
    }
    masking_row_generic(p, key, row, None, mask, None, 1.0 / (1.0 - p))
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

    /// The layout of the module documentation, drawn one block at a time.
    #[test]
    fn noise_follows_the_documented_counters() {
        use crate::rng::philox4x32;
        let key = NoiseKey { seed: 77, stream: 16, epoch: 3, row0: 0 };
        // Word i of the row: word (i / 8) mod 4 of block 8·(i / 32) + i mod 8.
        let word = |i: usize| philox4x32(seed_key(77), [(8 * (i / 32) + i % 8) as u32, 11, 3, 16])[(i / 8) % 4];
        let x = vec![0.5f32; 77];
        let (mut xt, mut mask) = (vec![0f32; 77], vec![0f32; 77]);
        corrupt_row(Corruption::Masking { level: 0.4 }, &key, 11, &x, &mut xt, Some(&mut mask));
        for j in 0..77 {
            let hit = unit_f32(word(j)) < 0.4;
            assert_eq!(mask[j], hit as u8 as f32, "element {j}");
            assert_eq!(xt[j], if hit { 0.0 } else { 0.5 });
        }
        corrupt_row(Corruption::SaltAndPepper { level: 0.5 }, &key, 11, &x, &mut xt, Some(&mut mask));
        for j in 0..77 {
            let first = 2 * j - j % 8;
            let hit = unit_f32(word(first)) < 0.5;
            let want = if hit { (word(first + 8) >> 31) as f32 } else { 0.5 };
            assert_eq!(xt[j], want, "element {j}");
        }
        corrupt_row(Corruption::Gaussian { sigma: 1.0 }, &key, 11, &x, &mut xt, None);
        for j in 0..77 {
            let (even, odd) = (j & !8, j | 8);
            let r = (-2.0 * unit_open_f32(word(even)).ln()).sqrt();
            let theta = std::f32::consts::TAU * unit_f32(word(odd));
            let z = if j & 8 == 0 { r * theta.cos() } else { r * theta.sin() };
            assert!((xt[j] - (0.5 + z)).abs() < 1e-5, "element {j}: {} vs {}", xt[j], 0.5 + z);
        }
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

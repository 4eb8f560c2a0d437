//! Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
//! as 1, 2, 3", SC 2011).
//!
//! A counter-based generator maps (key, counter) to random bits with no hidden state, so the noise
//! of a given example in a given epoch is a pure function of the seed and its position. That makes
//! training reproducible whatever the number of threads, and lets another backend (a GPU) draw
//! exactly the same noise.

/// The key schedule and multipliers of Philox4x32.
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block: 128 random bits for `counter` under `key`.
#[inline(always)]
pub fn philox4x32(key: [u32; 2], counter: [u32; 4]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Eight Philox4x32-10 blocks at once, for the counters `[first + l, c1, c2, c3]`, l = 0..8:
/// `out[w][l]` is word w of block l. The same numbers as [`philox4x32`], written lane by lane so
/// that the compiler vectorises it.
#[inline(always)]
pub fn philox4x32_x8(key: [u32; 2], first: u32, c1: u32, c2: u32, c3: u32) -> [[u32; 8]; 4] {
    let mut x0: [u32; 8] = std::array::from_fn(|l| first.wrapping_add(l as u32));
    let mut x1 = [c1; 8];
    let mut x2 = [c2; 8];
    let mut x3 = [c3; 8];
    let (mut k0, mut k1) = (key[0], key[1]);
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        for l in 0..8 {
            let p0 = (M0 as u64) * (x0[l] as u64);
            let p1 = (M1 as u64) * (x2[l] as u64);
            let n0 = ((p1 >> 32) as u32) ^ x1[l] ^ k0;
            let n2 = ((p0 >> 32) as u32) ^ x3[l] ^ k1;
            x1[l] = p1 as u32;
            x3[l] = p0 as u32;
            x0[l] = n0;
            x2[l] = n2;
        }
    }
    [x0, x1, x2, x3]
}

/// The key for a 64-bit seed.
#[inline]
pub fn seed_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// A uniform in [0, 1) with 24 random bits: exact in f32.
#[inline(always)]
pub fn unit_f32(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A uniform in (0, 1] with 24 random bits: safe to take the logarithm of.
#[inline(always)]
pub fn unit_open_f32(bits: u32) -> f32 {
    ((bits >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// Streams: independent sequences drawn from one seed, one per purpose.
pub mod stream {
    /// Weight initialisation.
    pub const INIT: u32 = 1;
    /// The order of the examples in each epoch.
    pub const SHUFFLE: u32 = 2;
    /// The held-out validation rows of `--val-fraction`.
    pub const SPLIT: u32 = 3;
    /// Corruption of training examples (layer index added for stacks).
    pub const TRAIN_NOISE: u32 = 16;
    /// Corruption of validation examples: fixed across epochs so losses compare.
    pub const VAL_NOISE: u32 = 0x1000;
    /// Corruption applied by `score` and `reconstruct`.
    pub const EVAL_NOISE: u32 = 0x2000;
    /// Dropout masks during fine-tuning.
    pub const DROPOUT: u32 = 0x3000;
    /// Translations and mirror images of fine-tuning examples (`--shift`, `--flip`).
    pub const AUGMENT: u32 = 0x4000;
}

/// A sequential generator over Philox: (seed, stream, substream) name an independent sequence.
#[derive(Clone, Debug)]
pub struct Rng {
    key: [u32; 2],
    stream: u32,
    substream: u32,
    counter: u64,
    buf: [u32; 4],
    used: usize,
}

impl Rng {
    /// The sequence `stream` of `seed`.
    pub fn new(seed: u64, stream: u32) -> Self {
        Rng::with_substream(seed, stream, 0)
    }

    /// The sequence (`stream`, `substream`) of `seed`: for example the shuffle of one epoch, so
    /// that each epoch's order depends on nothing but the seed and the epoch.
    pub fn with_substream(seed: u64, stream: u32, substream: u32) -> Self {
        Rng {
            key: seed_key(seed),
            stream,
            substream,
            counter: 0,
            buf: [0; 4],
            used: 4,
        }
    }

    /// The next 32 random bits.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            let c = self.counter;
            // The top bit of the last word keeps these counters apart from those of the
            // per-element noise, whose last word is a stream number below 2^31.
            self.buf = philox4x32(
                self.key,
                [c as u32, (c >> 32) as u32, self.stream, self.substream | 0x8000_0000],
            );
            self.counter += 1;
            self.used = 0;
        }
        let v = self.buf[self.used];
        self.used += 1;
        v
    }

    /// A uniform in [0, 1).
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        unit_f32(self.next_u32())
    }

    /// A uniform integer in [0, n), without bias (Lemire's method). `n` must be positive.
    pub fn below(&mut self, n: u32) -> u32 {
        debug_assert!(n > 0);
        let mut m = (self.next_u32() as u64) * (n as u64);
        if (m as u32) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u32) < threshold {
                m = (self.next_u32() as u64) * (n as u64);
            }
        }
        (m >> 32) as u32
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u32 + 1) as usize;
            items.swap(i, j);
        }
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32_10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32([0, 0], [0, 0, 0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32([u32::MAX, u32::MAX], [u32::MAX; 4]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32(
                [0xa409_3822, 0x299f_31d0],
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn eight_lanes_match_one_block_at_a_time() {
        let key = seed_key(0x1234_5678_9abc_def0);
        let bits = philox4x32_x8(key, u32::MAX - 3, 7, 8, 9);
        for l in 0..8u32 {
            let one = philox4x32(key, [(u32::MAX - 3).wrapping_add(l), 7, 8, 9]);
            for w in 0..4 {
                assert_eq!(bits[w][l as usize], one[w]);
            }
        }
    }

    #[test]
    fn below_is_uniform() {
        let mut rng = Rng::new(7, 0);
        let mut counts = [0u32; 6];
        let n = 600_000;
        for _ in 0..n {
            counts[rng.below(6) as usize] += 1;
        }
        // Each count is Binomial(n, 1/6): within 4 standard errors of n/6.
        let p = 1.0 / 6.0;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        for c in counts {
            assert!((c as f64 - n as f64 * p).abs() < 4.0 * sd, "{counts:?}");
        }
    }

    #[test]
    fn shuffle_is_a_permutation_and_depends_on_seed() {
        let mut a: Vec<u32> = (0..1000).collect();
        let mut b = a.clone();
        Rng::new(1, stream::SHUFFLE).shuffle(&mut a);
        Rng::new(2, stream::SHUFFLE).shuffle(&mut b);
        assert_ne!(a, b);
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
    }
}

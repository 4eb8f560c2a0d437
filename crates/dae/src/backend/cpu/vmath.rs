//! Vectorised elementwise kernels: the row kernels of [`crate::kernels`] with exp and log1p
//! replaced by branch-free polynomial approximations that the compiler turns into 8-wide AVX2
//! code (compiled twice: for AVX2/FMA, chosen at run time, and for any x86-64 or other target).
//!
//! Accuracy: `exp` and `log1p` are within a few units in the last place of f32 (tested against
//! f64 over their whole useful range), far inside the 1e-4 the golden vectors ask for.

use crate::backend::{LossOutput, LossSpec};
use crate::config::{Activation, Loss};

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two for an exact range reduction (Cody & Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding and subtracting it rounds an f32 below 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// e^x for x in any range (clamped to about ±87, where e^x under- or overflows anyway).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // e^r on [−ln2/2, ln2/2] (Cephes expf).
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits((((n as i32) + 127) as u32) << 23);
    y * scale
}

/// log(1 + e) for e in [0, 1], as 2·atanh(e / (2 + e)): accurate for tiny e too.
#[inline(always)]
pub fn log1p_unit(e: f32) -> f32 {
    let t = e / (2.0 + e);
    let t2 = t * t;
    let mut s = 1.0f32 / 13.0;
    s = s * t2 + 1.0 / 11.0;
    s = s * t2 + 1.0 / 9.0;
    s = s * t2 + 1.0 / 7.0;
    s = s * t2 + 1.0 / 5.0;
    s = s * t2 + 1.0 / 3.0;
    2.0 * t * (1.0 + t2 * s)
}

/// The logistic function through [`exp`].
#[inline(always)]
pub fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + exp(-a))
}

#[inline(always)]
fn bias_act_generic(row: &mut [f32], bias: &[f32], act: Activation) {
    match act {
        Activation::Sigmoid => {
            for (x, &b) in row.iter_mut().zip(bias) {
                *x = sigmoid(*x + b);
            }
        }
        Activation::Tanh => crate::kernels::bias_act_row(row, bias, act),
        Activation::Relu => {
            for (x, &b) in row.iter_mut().zip(bias) {
                *x = (*x + b).max(0.0);
            }
        }
        Activation::Identity => {
            for (x, &b) in row.iter_mut().zip(bias) {
                *x += b;
            }
        }
    }
}

/// Output modes of [`cross_entropy_lanes`] as constants, so that each is its own loop.
const GRAD: u8 = 0;
const ELEMENTS: u8 = 1;
const ROWS: u8 = 2;

/// Cross-entropy from the logits for 8 elements: (weighted loss, value to store).
#[inline(always)]
fn cross_entropy_one<const OUT: u8>(a: f32, x: f32, w: f32, scale: f32) -> (f32, f32) {
    let x = x.clamp(0.0, 1.0);
    let e = exp(-a.abs());
    let loss = a.max(0.0) - a * x + log1p_unit(e);
    let r = 1.0 / (1.0 + e);
    let s = if a >= 0.0 { r } else { e * r };
    let out = match OUT {
        GRAD => scale * w * (s - x),
        ELEMENTS => w * loss,
        _ => a,
    };
    (w * loss, out)
}

/// The row's weighted cross-entropy, 8 lanes at a time (vectorisable), lanes summed in a fixed
/// order. `weight(j)` gives element j's emphasis weight.
#[inline(always)]
fn cross_entropy_lanes<const OUT: u8>(pre: &mut [f32], c: &[f32], target: &[f32], weight: impl Fn(usize) -> f32, scale: f32) -> f32 {
    let n = pre.len();
    let full = n / 8 * 8;
    let mut acc = [0f32; 8];
    for j in (0..full).step_by(8) {
        let (p, cc, t) = (&mut pre[j..j + 8], &c[j..j + 8], &target[j..j + 8]);
        for l in 0..8 {
            let (loss, out) = cross_entropy_one::<OUT>(p[l] + cc[l], t[l], weight(j + l), scale);
            acc[l] += loss;
            if OUT != ROWS {
                p[l] = out;
            }
        }
    }
    let mut total = 0f64;
    for j in full..n {
        let (loss, out) = cross_entropy_one::<OUT>(pre[j] + c[j], target[j], weight(j), scale);
        total += loss as f64;
        if OUT != ROWS {
            pre[j] = out;
        }
    }
    for v in acc {
        total += v as f64;
    }
    total as f32
}

/// Cross-entropy from the logits: the row's weighted loss, and the output asked for.
#[inline(always)]
fn cross_entropy_generic(pre: &mut [f32], c: &[f32], target: &[f32], mask: Option<&[f32]>, spec: &LossSpec) -> f32 {
    let scale = spec.grad_scale;
    match (spec.emphasis, mask) {
        (Some(e), Some(m)) => {
            let (wc, wk) = (e.corrupted, e.clean);
            // Branch-free: the mask is 0 or 1.
            let w = |j: usize| wk + (wc - wk) * m[j];
            match spec.output {
                LossOutput::Grad => cross_entropy_lanes::<GRAD>(pre, c, target, w, scale),
                LossOutput::Elements => cross_entropy_lanes::<ELEMENTS>(pre, c, target, w, scale),
                LossOutput::Rows => cross_entropy_lanes::<ROWS>(pre, c, target, w, scale),
            }
        }
        (e, _) => {
            let wk = e.map_or(1.0, |e| e.clean);
            let w = |_: usize| wk;
            match spec.output {
                LossOutput::Grad => cross_entropy_lanes::<GRAD>(pre, c, target, w, scale),
                LossOutput::Elements => cross_entropy_lanes::<ELEMENTS>(pre, c, target, w, scale),
                LossOutput::Rows => cross_entropy_lanes::<ROWS>(pre, c, target, w, scale),
            }
        }
    }
}

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $avx:ident, $generic:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx($($arg: $ty),*) -> $ret {
            $generic($($arg),*)
        }

        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if super::has_avx2_fma() {
                // SAFETY: the processor supports AVX2 and FMA (checked just now).
                return unsafe { $avx($($arg),*) };
            }
            $generic($($arg),*)
        }
    };
}

dispatch!(
    /// `row[j]` = act(`row[j]` + `bias[j]`).
    bias_act_row, bias_act_avx2, bias_act_generic, (row: &mut [f32], bias: &[f32], act: Activation) -> ()
);

#[inline(always)]
fn loss_row_generic(pre: &mut [f32], c: &[f32], target: &[f32], mask: Option<&[f32]>, spec: &LossSpec) -> f32 {
    match spec.loss {
        Loss::CrossEntropy => cross_entropy_generic(pre, c, target, mask, spec),
        Loss::SquaredError => crate::kernels::loss_grad_row(pre, c, target, mask, spec),
    }
}

dispatch!(
    /// [`crate::kernels::loss_grad_row`], vectorised.
    loss_grad_row, loss_row_avx2, loss_row_generic,
    (pre: &mut [f32], c: &[f32], target: &[f32], mask: Option<&[f32]>, spec: &LossSpec) -> f32
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Emphasis;
    use crate::rng::Rng;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp(-1000.0) < 1e-37, true);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn log1p_is_accurate() {
        let mut worst = 0f64;
        for i in 0..=100_000 {
            let e = i as f32 / 100_000.0;
            let e = e * e * e; // dense near 0, where log1p matters
            let want = (e as f64).ln_1p();
            let got = log1p_unit(e) as f64;
            if want > 0.0 {
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(log1p_unit(0.0), 0.0);
    }

    #[test]
    fn cross_entropy_clips_its_target_to_the_unit_interval() {
        // Targets beyond [0, 1] (minmax-scaled data past the training range) count as 0 or 1,
        // in the vectorised and the reference loops alike; 11 values: full lanes and a tail.
        let spec = LossSpec { loss: Loss::CrossEntropy, decoder: Activation::Sigmoid, emphasis: None, grad_scale: 1.0, output: LossOutput::Grad };
        let pre: Vec<f32> = (0..11).map(|i| i as f32 - 5.0).collect();
        let c = vec![0.25f32; 11];
        let beyond: Vec<f32> = (0..11).map(|i| if i % 2 == 0 { 1.5 + i as f32 } else { -0.5 * i as f32 }).collect();
        let clipped: Vec<f32> = beyond.iter().map(|&x| if x > 1.0 { 1.0 } else { 0.0 }).collect();
        for f in [loss_grad_row as fn(&mut [f32], &[f32], &[f32], Option<&[f32]>, &LossSpec) -> f32, crate::kernels::loss_grad_row] {
            let (mut a, mut b) = (pre.clone(), pre.clone());
            let (la, lb) = (f(&mut a, &c, &beyond, None, &spec), f(&mut b, &c, &clipped, None, &spec));
            assert_eq!(la, lb, "loss");
            assert_eq!(a, b, "gradient");
            assert!(la > 0.0 && la.is_finite());
        }
    }

    #[test]
    fn vector_kernels_match_the_reference_kernels() {
        let mut rng = Rng::new(5, 0);
        let n = 203;
        for act in Activation::ALL {
            let pre: Vec<f32> = (0..n).map(|_| (rng.next_f32() - 0.5) * 30.0).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng.next_f32() - 0.5).collect();
            let (mut a, mut b) = (pre.clone(), pre.clone());
            bias_act_row(&mut a, &bias, act);
            crate::kernels::bias_act_row(&mut b, &bias, act);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{act}: {x} vs {y}");
            }
        }
        for emphasis in [None, Some(Emphasis { corrupted: 1.0, clean: 0.25 })] {
            for output in [LossOutput::Grad, LossOutput::Elements, LossOutput::Rows] {
                let spec = LossSpec { loss: Loss::CrossEntropy, decoder: Activation::Sigmoid, emphasis, grad_scale: 0.05, output };
                let pre: Vec<f32> = (0..n).map(|_| (rng.next_f32() - 0.5) * 40.0).collect();
                let c: Vec<f32> = (0..n).map(|_| rng.next_f32() - 0.5).collect();
                let t: Vec<f32> = (0..n).map(|_| rng.next_f32()).collect();
                let m: Vec<f32> = (0..n).map(|_| (rng.next_f32() < 0.3) as u8 as f32).collect();
                let (mut a, mut b) = (pre.clone(), pre.clone());
                let la = loss_grad_row(&mut a, &c, &t, Some(&m), &spec);
                let lb = crate::kernels::loss_grad_row(&mut b, &c, &t, Some(&m), &spec);
                assert!((la - lb).abs() <= 1e-5 * lb.abs(), "loss {la} vs {lb}");
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 2e-6 * (1.0 + y.abs()), "{output:?}: {x} vs {y}");
                }
            }
        }
    }
}

//! The elementwise mathematics of the model, one row or slice at a time: plain, readable loops
//! that the CPU backend runs on its threads and that every faster kernel is tested against.

use crate::backend::{LossOutput, LossSpec, StepSpec, Trans};
use crate::config::{sigmoid, Activation, Loss, Optimizer};

/// `row[j]` = act(`row[j]` + `bias[j]`).
#[inline]
pub fn bias_act_row(row: &mut [f32], bias: &[f32], act: Activation) {
    match act {
        Activation::Sigmoid => {
            for (x, &b) in row.iter_mut().zip(bias) {
                *x = sigmoid(*x + b);
            }
        }
        Activation::Tanh => {
            for (x, &b) in row.iter_mut().zip(bias) {
                *x = (*x + b).tanh();
            }
        }
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

/// `delta[i]` ·= act′ expressed through the activation's output `y[i]`.
#[inline]
pub fn act_grad(delta: &mut [f32], y: &[f32], act: Activation) {
    match act {
        Activation::Sigmoid => {
            for (d, &y) in delta.iter_mut().zip(y) {
                *d *= y * (1.0 - y);
            }
        }
        Activation::Tanh => {
            for (d, &y) in delta.iter_mut().zip(y) {
                *d *= 1.0 - y * y;
            }
        }
        Activation::Relu => {
            for (d, &y) in delta.iter_mut().zip(y) {
                if y <= 0.0 {
                    *d = 0.0;
                }
            }
        }
        Activation::Identity => {}
    }
}

/// One row of the reconstruction loss. `pre` holds the decoder pre-activation without the bias
/// `c`; `target` the clean input x; `mask` marks corrupted inputs (for emphasis). Returns the
/// row's loss Σ_j w_j ℓ(z_j, x_j), and overwrites `pre` as `spec.output` says: with
/// `spec.grad_scale` · w_j · ∂ℓ/∂a_j at the pre-activation a_j, or with w_j ℓ_j.
///
/// Cross-entropy is computed from the logits a: ℓ = max(a, 0) − a·x + log(1 + e^−|a|), whose
/// gradient is sigmoid(a) − x, with x clipped to [0, 1] (it is a probability; minmax-scaled data
/// beyond the training rows' range comes out beyond [0, 1]); squared error is (z − x)² with
/// z = dec(a), gradient 2(z − x)·dec′(a).
#[inline]
pub fn loss_grad_row(
    pre: &mut [f32],
    c: &[f32],
    target: &[f32],
    mask: Option<&[f32]>,
    spec: &LossSpec,
) -> f32 {
    let mut total = 0f64;
    let weight = |j: usize| -> f32 {
        match (spec.emphasis, mask) {
            (Some(e), Some(m)) => {
                if m[j] != 0.0 {
                    e.corrupted
                } else {
                    e.clean
                }
            }
            (Some(e), None) => e.clean,
            (None, _) => 1.0,
        }
    };
    for j in 0..pre.len() {
        let a = pre[j] + c[j];
        let x = target[j];
        let w = weight(j);
        let (l, g) = match spec.loss {
            Loss::CrossEntropy => {
                let x = x.clamp(0.0, 1.0);
                let e = (-a.abs()).exp();
                let l = a.max(0.0) - a * x + e.ln_1p();
                let s = if a >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
                (l, s - x)
            }
            Loss::SquaredError => {
                let z = spec.decoder.apply(a);
                let d = z - x;
                (d * d, 2.0 * d * spec.decoder.grad_from_output(z))
            }
        };
        total += (w * l) as f64;
        match spec.output {
            LossOutput::Grad => pre[j] = spec.grad_scale * w * g,
            LossOutput::Elements => pre[j] = w * l,
            LossOutput::Rows => {}
        }
    }
    total as f32
}

/// One row of softmax cross-entropy: `z` holds logits without the bias `bias`, `label` the
/// class. Returns (−log p(label), whether the first arg-max is the label) and overwrites `z`
/// with `grad_scale`·(p − onehot) (`Grad`), with p (`Elements`), or not at all (`Rows`).
#[inline]
pub fn softmax_xent_row(z: &mut [f32], bias: &[f32], label: usize, output: LossOutput, grad_scale: f32) -> (f32, bool) {
    let mut max = f32::NEG_INFINITY;
    let mut arg = 0;
    for (j, (v, &b)) in z.iter_mut().zip(bias).enumerate() {
        *v += b;
        if *v > max {
            max = *v;
            arg = j;
        }
    }
    let mut sum = 0f64;
    for &v in z.iter() {
        sum += ((v - max) as f64).exp();
    }
    let lse = max as f64 + sum.ln();
    let loss = (lse - z[label] as f64) as f32;
    match output {
        LossOutput::Grad => {
            for (j, v) in z.iter_mut().enumerate() {
                let p = ((*v as f64) - lse).exp() as f32;
                *v = grad_scale * (p - (j == label) as u8 as f32);
            }
        }
        LossOutput::Elements => {
            for v in z.iter_mut() {
                *v = ((*v as f64) - lse).exp() as f32;
            }
        }
        LossOutput::Rows => {}
    }
    (loss, arg == label)
}

/// `out[jj]` = β·`out[jj]` + α·Σ_r `x[r, col0 + jj]` for the columns `col0..col0 + out.len()`
/// of a `rows` × `cols` matrix, summed in row order (β = 0: `out` is not read).
#[inline]
pub fn col_sums(out: &mut [f32], x: &[f32], rows: usize, cols: usize, col0: usize, alpha: f32, beta: f32) {
    const W: usize = 64;
    let w = out.len();
    debug_assert!(w <= W);
    let mut acc = [0f32; W];
    for r in 0..rows {
        let row = &x[r * cols + col0..r * cols + col0 + w];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
    for (o, &s) in out.iter_mut().zip(&acc) {
        *o = if beta == 0.0 { alpha * s } else { beta * *o + alpha * s };
    }
}

/// The constants of one optimiser step, computed once per tensor.
#[derive(Clone, Copy, Debug)]
pub struct StepConsts {
    optimizer: Optimizer,
    lr: f32,
    /// Adam: lr / (1 − β₁ᵗ).
    step_size: f32,
    /// Adam: sqrt(1 − β₂ᵗ).
    bc2_sqrt: f32,
}

impl StepConsts {
    /// Adam's lr / (1 − β₁ᵗ).
    pub fn step_size(&self) -> f32 {
        self.step_size
    }

    /// Adam's sqrt(1 − β₂ᵗ).
    pub fn bc2_sqrt(&self) -> f32 {
        self.bc2_sqrt
    }

    pub fn new(step: &StepSpec) -> StepConsts {
        let (step_size, bc2_sqrt) = match step.optimizer {
            Optimizer::Adam { beta1, beta2, .. } | Optimizer::AdamW { beta1, beta2, .. } => {
                let t = step.t as i32;
                let bc1 = 1.0 - (beta1 as f64).powi(t);
                let bc2 = 1.0 - (beta2 as f64).powi(t);
                ((step.lr as f64 / bc1) as f32, bc2.sqrt() as f32)
            }
            Optimizer::Sgd { .. } => (0.0, 1.0),
        };
        StepConsts {
            optimizer: step.optimizer,
            lr: step.lr,
            step_size,
            bc2_sqrt,
        }
    }
}

/// One optimiser step with PyTorch's semantics (`torch.optim.SGD`, `Adam`, `AdamW`, single-tensor
/// form). `m` is SGD's momentum buffer or Adam's first moment, `v` Adam's second moment.
pub fn update(
    p: &mut [f32],
    g: &[f32],
    m: Option<&mut [f32]>,
    v: Option<&mut [f32]>,
    k: &StepConsts,
) {
    let lr = k.lr;
    match k.optimizer {
        Optimizer::Sgd {
            momentum,
            nesterov,
            weight_decay: wd,
        } => match m {
            None => {
                for (p, &g) in p.iter_mut().zip(g) {
                    let d = g + wd * *p;
                    *p -= lr * d;
                }
            }
            Some(buf) => {
                // The buffer starts at zero, so its first value is the first gradient, as in
                // PyTorch's clone on the first step.
                for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
                    let d = g + wd * *p;
                    *b = momentum * *b + d;
                    let step = if nesterov { d + momentum * *b } else { *b };
                    *p -= lr * step;
                }
            }
        },
        Optimizer::Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
        }
        | Optimizer::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
        } => {
            let decoupled = matches!(k.optimizer, Optimizer::AdamW { .. });
            let (m, v) = (m.expect("Adam keeps a first moment"), v.expect("and a second"));
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = if decoupled {
                    *p *= 1.0 - lr * weight_decay;
                    g
                } else {
                    g + weight_decay * *p
                };
                *m += (1.0 - beta1) * (g - *m);
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                let denom = v.sqrt() / k.bc2_sqrt + eps;
                *p -= k.step_size * *m / denom;
            }
        }
    }
}

/// `c[m×n]` = op(`a`)·op(`b`) (+ `c` when `accumulate`), row-major: the plain triple loop that
/// every fast matrix product is tested against.
#[allow(clippy::too_many_arguments)]
pub fn matmul_ref(
    c: &mut [f32],
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    let at = |i: usize, p: usize| match ta {
        Trans::N => a[i * k + p],
        Trans::T => a[p * m + i],
    };
    let bt = |p: usize, j: usize| match tb {
        Trans::N => b[p * n + j],
        Trans::T => b[j * k + p],
    };
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for p in 0..k {
                s += at(i, p) * bt(p, j);
            }
            let o = &mut c[i * n + j];
            *o = if accumulate { *o + s } else { s };
        }
    }
}

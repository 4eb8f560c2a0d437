//! The array operations every model is written against, and their implementations.
//!
//! A model's forward and backward pass are written once, generic over [`Backend`]: a small set of
//! operations on row-major f32 matrices held in the backend's own buffers. The CPU
//! ([`cpu::Cpu`]) is the first implementation; another device adds an implementation of these
//! operations, not another copy of the model.
//!
//! Conventions: every matrix is row-major; an operation on "the first `rows` rows" lets a buffer
//! sized for the largest batch serve a shorter last batch.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::augment::Augment;
use crate::config::{Activation, Corruption, Emphasis, Loss, Optimizer};
use crate::corrupt::NoiseKey;
use crate::data::{Dataset, Scaler};
use crate::error::Result;

/// How the matrix products are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// IEEE fp32 throughout (the default).
    #[default]
    Fp32,
    /// Products on the tensor cores in TF32 (10-bit mantissa inputs, fp32 accumulation): GPU
    /// only.
    Tf32,
    /// Products in bf16 with fp32 accumulation and fp32 master weights (not implemented yet).
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision '{s}' (expected fp32, tf32 or bf16)")),
        }
    }
}

/// [`Backend::act_grad_col_sums`] as its separate operations (the default, and a device's
/// unfused path).
#[allow(clippy::too_many_arguments)]
pub fn act_grad_then_col_sums<B: Backend + ?Sized>(
    be: &B,
    delta: &mut B::Buf,
    y: &B::Buf,
    act: Activation,
    rows: usize,
    cols: usize,
    out: &mut B::Buf,
    alpha: f32,
    beta: f32,
    also: Option<(&mut B::Buf, &B::Buf, usize)>,
) {
    be.act_grad(delta, y, act, rows * cols);
    be.col_sums_scaled(out, delta, rows, cols, alpha, beta);
    if let Some((out2, x2, cols2)) = also {
        be.col_sums_scaled(out2, x2, rows, cols2, alpha, beta);
    }
}

/// Whether a matmul operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    N,
    T,
}

/// One product op(a)·op(b) of a [`Backend::gemm`] sum; op(a) is m×k and op(b) k×n.
pub struct Product<'a, B: Backend + ?Sized> {
    pub a: &'a B::Buf,
    pub ta: Trans,
    pub b: &'a B::Buf,
    pub tb: Trans,
    pub k: usize,
}

/// What [`Backend::loss_grad`] computes.
#[derive(Clone, Copy, Debug)]
pub struct LossSpec {
    pub loss: Loss,
    pub decoder: Activation,
    pub emphasis: Option<Emphasis>,
    /// Multiplies the gradient: 1 / (rows in the batch), as the loss is a batch mean.
    pub grad_scale: f32,
    /// What replaces the pre-activation besides the per-row losses.
    pub output: LossOutput,
}

/// What [`Backend::loss_grad`] leaves in its pre-activation buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossOutput {
    /// Nothing: only the per-row losses are wanted (scoring, validation).
    Rows,
    /// The gradient of the batch-mean loss (training).
    Grad,
    /// Each element's weighted loss term (per-feature scores).
    Elements,
}

/// The state an optimiser keeps per parameter tensor (momentum, Adam's moments).
pub struct OptState<B: Backend + ?Sized> {
    /// SGD's momentum buffer, or Adam's first moment.
    pub m: Option<B::Buf>,
    /// Adam's second moment.
    pub v: Option<B::Buf>,
}

impl<B: Backend + ?Sized> OptState<B> {
    /// The buffers on the host: m, then v, where kept.
    pub fn download(&self, be: &B) -> Vec<Vec<f32>> {
        [&self.m, &self.v]
            .into_iter()
            .flatten()
            .map(|buf| {
                let mut host = vec![0f32; be.buf_len(buf)];
                be.download(buf, &mut host);
                host
            })
            .collect()
    }

    /// Restores m, then v, where kept, from the next host buffers.
    pub fn upload<'a>(&mut self, be: &B, host: &mut impl Iterator<Item = &'a Vec<f32>>) {
        for buf in [&mut self.m, &mut self.v].into_iter().flatten() {
            if let Some(h) = host.next() {
                be.upload(buf, h);
            }
        }
    }
}

/// The hyperparameters of one optimiser step.
#[derive(Clone, Copy, Debug)]
pub struct StepSpec {
    pub optimizer: Optimizer,
    pub lr: f32,
    /// 1 for the first step (Adam's bias correction).
    pub t: u64,
}

/// Rows per chunk of a workspace that evaluates `rows` rows (validation, encoding, prediction)
/// and takes about `row_floats` floats per row: the backend's chunk (not the training batch, so
/// that a GPU works through a validation set in a few products and few waits for their
/// results), fewer where rows are so wide that the workspace would pass 2^28 floats (1 GiB).
/// Each row's results do not depend on the chunk.
pub fn eval_chunk<B: Backend>(be: &B, rows: usize, row_floats: usize) -> usize {
    const BUDGET: usize = 1 << 28;
    be.chunk_rows().min(BUDGET / row_floats.max(1)).min(rows).max(1)
}

/// The operations a model needs from a compute device.
pub trait Backend: Sync {
    /// A vector of f32 on the device.
    type Buf: Send;
    /// A dataset made ready for [`Backend::gather`] (uploaded, on a device that needs it).
    type Data<'a>
    where
        Self: 'a;

    /// A short description ("cpu (2 threads)").
    fn describe(&self) -> String;

    /// Runs `f` in the backend's execution context (the CPU's thread pool): call every training
    /// loop through this so that the operations inside it run without hand-offs.
    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    /// A zeroed buffer of `len` values.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    /// Two zeroed buffers of `len` values each. A device may place the second right after the
    /// first, so that a [`Backend::gemm`] of two terms whose operands are such pairs runs as one
    /// product over the concatenated depth (the two W-gradient terms of a tied autoencoder).
    fn alloc_pair(&self, len: usize) -> Result<(Self::Buf, Self::Buf)> {
        Ok((self.alloc(len)?, self.alloc(len)?))
    }
    /// The number of values in a buffer.
    fn buf_len(&self, buf: &Self::Buf) -> usize;
    /// Copies `src` into the start of `dst`.
    fn upload(&self, dst: &mut Self::Buf, src: &[f32]);
    /// Copies the start of `src` into `dst`.
    fn download(&self, src: &Self::Buf, dst: &mut [f32]) {
        self.download_at(src, 0, dst);
    }
    /// Copies `src[offset..offset + dst.len()]` into `dst`.
    fn download_at(&self, src: &Self::Buf, offset: usize, dst: &mut [f32]);
    /// `dst[offset..offset + len]` = `src[..len]`, on the device.
    fn copy_at(&self, dst: &mut Self::Buf, offset: usize, src: &Self::Buf, len: usize);

    /// Whether operations are queued for a device that runs them later (a GPU): reading a
    /// result back then waits for the queue to drain, so the training loop reads its losses
    /// every few hundred milliseconds instead of after every step.
    fn queued(&self) -> bool {
        false
    }
    /// The first device error since the last check (operations themselves cannot fail on the
    /// CPU; a GPU records a failed launch here).
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// The order of the rows in the coming epoch. Until the next call the training loop's
    /// batches are slices of `order`, which does not change: a device may copy it over once
    /// and gather each batch through it. An empty `order` ends this (the loop is over).
    fn epoch_order(&self, _order: &[u32]) {}
    /// Runs `f`, the operations of one training step. A device may record them and replay
    /// them later as one unit (CUDA graphs); `f` may read results back, at the cost of that.
    fn step<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }
    /// How many consecutive training steps (of full, same-sized batches) the training loop
    /// runs inside one [`Backend::step`]: a device that replays a step as one CUDA graph then
    /// launches that many steps as one graph. The operations and their order are the same as
    /// one step at a time, so the results are too.
    fn steps_per_launch(&self) -> usize {
        1
    }
    /// Rows per chunk when encoding, reconstructing or scoring a whole dataset.
    fn chunk_rows(&self) -> usize {
        1024
    }
    /// The CPU backend itself, which applies a trained model to a dataset in one pass over
    /// each block of rows ([`cpu::eval`]) instead of operation by operation; `None` on other
    /// devices (and for the CPU's reference products, which stay the arbiter).
    fn as_cpu(&self) -> Option<&cpu::Cpu> {
        None
    }

    /// Prepares `ds` (scaled by `scaler`) for gathering batches.
    fn data<'a>(&'a self, ds: &'a Dataset, scaler: &'a Scaler) -> Result<Self::Data<'a>>;
    /// `dst` = the rows `rows` of `data`, in that order (`rows.len()` × cols).
    fn gather(&self, dst: &mut Self::Buf, data: &Self::Data<'_>, rows: &[u32]);
    /// Like [`Backend::gather`], each row translated and mirrored by `aug` in its raw values
    /// before the scaling (see [`crate::augment`]): row i by its draw for position
    /// `key.row0 + i`. `data` must hold images.
    fn gather_augmented(&self, dst: &mut Self::Buf, data: &Self::Data<'_>, rows: &[u32], aug: &Augment, key: &NoiseKey);

    /// `c[m×n]` = β·`c` + α·Σ op(aᵢ)·op(bᵢ) over the `terms`. With β = 0 the old `c` is not
    /// read. A sum of products is one pass over `c`: the two gradient terms of tied weights, or
    /// an SGD step straight into the weights (α = −lr, β = 1).
    fn gemm(&self, c: &mut Self::Buf, m: usize, n: usize, terms: &[Product<'_, Self>], alpha: f32, beta: f32);

    /// `c[m×n]` = op(`a`)·op(`b`), plus the old `c` when `accumulate`. op(a) is m×k, op(b) k×n.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        c: &mut Self::Buf,
        a: &Self::Buf,
        ta: Trans,
        b: &Self::Buf,
        tb: Trans,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) {
        let beta = if accumulate { 1.0 } else { 0.0 };
        self.gemm(c, m, n, &[Product { a, ta, b, tb, k }], 1.0, beta);
    }

    /// `x[r, j]` = act(`x[r, j]` + `bias[j]`) over `rows` × `cols`.
    fn bias_act(&self, x: &mut Self::Buf, bias: &Self::Buf, act: Activation, rows: usize, cols: usize);

    /// `delta[i]` ·= act′ at the activation output `y[i]`, for i < `len`.
    fn act_grad(&self, delta: &mut Self::Buf, y: &Self::Buf, act: Activation, len: usize);

    /// The reconstruction loss and its gradient. On entry `pre` holds the decoder's
    /// pre-activation without its bias (h·W′); the bias `c` is added here. Writes each row's
    /// loss (weighted by emphasis through `mask`) to `row_loss[offset + r]` and replaces `pre` as
    /// `spec.output` says: with ∂L/∂(pre-activation), L the batch mean, when training.
    #[allow(clippy::too_many_arguments)]
    fn loss_grad(
        &self,
        pre: &mut Self::Buf,
        c: &Self::Buf,
        target: &Self::Buf,
        mask: Option<&Self::Buf>,
        spec: &LossSpec,
        rows: usize,
        cols: usize,
        row_loss: &mut Self::Buf,
        offset: usize,
    );

    /// [`Backend::gather`] into `x`, then [`Backend::corrupt`] of `x` into `xt` (and `mask`): a
    /// device may do both in one pass. The results are those of the two calls.
    #[allow(clippy::too_many_arguments)]
    fn gather_corrupt(
        &self,
        x: &mut Self::Buf,
        xt: &mut Self::Buf,
        mask: Option<&mut Self::Buf>,
        data: &Self::Data<'_>,
        rows: &[u32],
        noise: Corruption,
        key: &NoiseKey,
        cols: usize,
    ) {
        self.gather(x, data, rows);
        self.corrupt(x, xt, mask, noise, key, rows.len(), cols);
    }

    /// `xt` = q_D(`x`) over `rows` × `cols` with the noise of `key` (see [`crate::corrupt`]);
    /// `mask` (when given) = 1 where an input was corrupted, else 0.
    #[allow(clippy::too_many_arguments)]
    fn corrupt(
        &self,
        x: &Self::Buf,
        xt: &mut Self::Buf,
        mask: Option<&mut Self::Buf>,
        noise: Corruption,
        key: &NoiseKey,
        rows: usize,
        cols: usize,
    );

    /// Softmax cross-entropy over `classes` logits per row. On entry `logits` holds the output
    /// layer's pre-activation without its bias; `labels` holds each row's class index (as f32).
    /// Writes each row's loss −log p(label) to `row_loss[r]` and 1 or 0 to `row_correct[r]`
    /// (whether the arg-max is the label), and replaces `logits` with ∂L/∂logits
    /// (`LossOutput::Grad`, L the batch mean), with the probabilities (`LossOutput::Elements`),
    /// or leaves them (`LossOutput::Rows`).
    #[allow(clippy::too_many_arguments)]
    fn softmax_xent(
        &self,
        logits: &mut Self::Buf,
        bias: &Self::Buf,
        labels: &Self::Buf,
        output: LossOutput,
        grad_scale: f32,
        rows: usize,
        classes: usize,
        row_loss: &mut Self::Buf,
        row_correct: &mut Self::Buf,
    );

    /// Inverted-dropout masks: `mask` = 1/(1−p) where a unit is kept (probability 1−p), 0 where
    /// it is dropped, over `rows` × `cols`, drawn like masking noise from `key`.
    fn dropout_mask(&self, mask: &mut Self::Buf, p: f32, key: &NoiseKey, rows: usize, cols: usize);

    /// `out[i]` = `a[i]` · `b[i]` for i < `len`.
    fn mul(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, len: usize);

    /// `x[i]` ·= `m[i]` for i < `len`.
    fn mul_assign(&self, x: &mut Self::Buf, m: &Self::Buf, len: usize);

    /// `out[j]` = β·`out[j]` + α·Σ_r `x[r, j]` over `rows` × `cols`, summed in a fixed order (β = 0:
    /// the old `out` is not read). With α = −lr, β = 1 it is an SGD step on a bias.
    #[allow(clippy::too_many_arguments)]
    fn col_sums_scaled(&self, out: &mut Self::Buf, x: &Self::Buf, rows: usize, cols: usize, alpha: f32, beta: f32);

    /// `out[j]` = Σ_r `x[r, j]` over `rows` × `cols`, summed in a fixed order.
    fn col_sums(&self, out: &mut Self::Buf, x: &Self::Buf, rows: usize, cols: usize) {
        self.col_sums_scaled(out, x, rows, cols, 1.0, 0.0);
    }

    /// The bias gradients of a backward pass in one go: `delta` ·= act′ at `y` over `rows` ×
    /// `cols` (as [`Backend::act_grad`]), then `out` = β·`out` + α·Σ_r `delta[r, :]` (as
    /// [`Backend::col_sums_scaled`]); with `also` = (out2, x2, cols2), also out2 = β·out2 +
    /// α·Σ_r x2[r, :] over `rows` × cols2. A device may do it all in one launch.
    #[allow(clippy::too_many_arguments)]
    fn act_grad_col_sums(
        &self,
        delta: &mut Self::Buf,
        y: &Self::Buf,
        act: Activation,
        rows: usize,
        cols: usize,
        out: &mut Self::Buf,
        alpha: f32,
        beta: f32,
        also: Option<(&mut Self::Buf, &Self::Buf, usize)>,
    ) {
        act_grad_then_col_sums(self, delta, y, act, rows, cols, out, alpha, beta, also);
    }

    /// Σ `x[i]`² over i < `len`, summed in a fixed order (for gradient clipping and checks).
    fn sum_squares(&self, x: &Self::Buf, len: usize) -> f64;

    /// `x[i]` ·= `factor` for i < `len`.
    fn scale(&self, x: &mut Self::Buf, factor: f32, len: usize);

    /// One optimiser step on the first `len` values of `param` with gradient `grad`.
    fn update(
        &self,
        param: &mut Self::Buf,
        grad: &Self::Buf,
        state: &mut OptState<Self>,
        step: &StepSpec,
        len: usize,
    );

    /// A fresh optimiser state for a parameter of `len` values.
    fn opt_state(&self, optimizer: &Optimizer, len: usize) -> Result<OptState<Self>> {
        let (m, v) = match optimizer {
            Optimizer::Sgd { momentum, .. } if *momentum > 0.0 => (Some(self.alloc(len)?), None),
            Optimizer::Sgd { .. } => (None, None),
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } => {
                (Some(self.alloc(len)?), Some(self.alloc(len)?))
            }
        };
        Ok(OptState { m, v })
    }
}

//! The denoising autoencoder: its parameters, and its forward and backward pass written once
//! against [`Backend`].
//!
//! Shapes, for a batch of n rows, d inputs and k hidden units (all row-major):
//!
//! ```text
//! x, x̃, mask : n×d      W : d×k   b : k   c : d   V : k×d (untied only)
//! h = enc(x̃·W + b)                          n×k
//! a = h·Wᵀ + c  (tied)   or   h·V + c       n×d   (decoder pre-activation)
//! z = dec(a)                                 n×d   (reconstruction)
//! L = (1/n) Σ_rows Σ_j w_j ℓ(z_j, x_j)       (w_j from emphasis, else 1)
//! ```

use crate::backend::{Backend, LossOutput, LossSpec, OptState, Product, StepSpec, Trans};
use crate::config::{Corruption, DaeConfig};
use crate::corrupt::NoiseKey;
use crate::error::Result;
use crate::rng::{stream, Rng};

/// A trained (or freshly initialised) autoencoder, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Dae {
    pub config: DaeConfig,
    /// Encoder weights, d×k.
    pub w: Vec<f32>,
    /// Encoder bias, k.
    pub b: Vec<f32>,
    /// Decoder bias, d.
    pub c: Vec<f32>,
    /// Decoder weights k×d when untied.
    pub v: Option<Vec<f32>>,
}

impl Dae {
    /// Weights uniform in ±[`DaeConfig::init_range`] from `seed`, biases zero.
    pub fn init(config: &DaeConfig, seed: u64) -> Dae {
        let (d, k) = (config.inputs, config.hidden);
        let r = config.init_range();
        let mut rng = Rng::new(seed, stream::INIT);
        let mut uniform = |n: usize| -> Vec<f32> {
            (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * r).collect()
        };
        let w = uniform(d * k);
        let v = (!config.tied).then(|| uniform(k * d));
        Dae {
            config: config.clone(),
            w,
            b: vec![0.0; k],
            c: vec![0.0; d],
            v,
        }
    }

    /// Number of trainable values.
    pub fn num_params(&self) -> usize {
        self.w.len() + self.b.len() + self.c.len() + self.v.as_ref().map_or(0, Vec::len)
    }
}

/// A [`Dae`]'s parameters (or their gradients) in backend buffers.
pub struct DaeParams<B: Backend> {
    pub w: B::Buf,
    pub b: B::Buf,
    pub c: B::Buf,
    pub v: Option<B::Buf>,
}

impl<B: Backend> DaeParams<B> {
    /// Zeroed buffers shaped for `config`.
    pub fn zeros(be: &B, config: &DaeConfig) -> Result<Self> {
        let (d, k) = (config.inputs, config.hidden);
        Ok(DaeParams {
            w: be.alloc(d * k)?,
            b: be.alloc(k)?,
            c: be.alloc(d)?,
            v: if config.tied {
                None
            } else {
                Some(be.alloc(k * d)?)
            },
        })
    }

    /// The parameters of `dae`, uploaded.
    pub fn upload(be: &B, dae: &Dae) -> Result<Self> {
        let mut p = Self::zeros(be, &dae.config)?;
        p.set(be, dae);
        Ok(p)
    }

    /// Overwrites these buffers with `dae`'s values.
    pub fn set(&mut self, be: &B, dae: &Dae) {
        be.upload(&mut self.w, &dae.w);
        be.upload(&mut self.b, &dae.b);
        be.upload(&mut self.c, &dae.c);
        if let (Some(dst), Some(src)) = (self.v.as_mut(), dae.v.as_ref()) {
            be.upload(dst, src);
        }
    }

    /// Copies the values into `dae` (whose shapes must match).
    pub fn download(&self, be: &B, dae: &mut Dae) {
        be.download(&self.w, &mut dae.w);
        be.download(&self.b, &mut dae.b);
        be.download(&self.c, &mut dae.c);
        if let (Some(src), Some(dst)) = (self.v.as_ref(), dae.v.as_mut()) {
            be.download(src, dst);
        }
    }
}

/// The activations and gradients of one batch, allocated once for at most `capacity` rows.
pub struct DaeWorkspace<B: Backend> {
    pub capacity: usize,
    /// Clean inputs (the targets), n×d.
    pub x: B::Buf,
    /// Corrupted inputs, n×d.
    pub xt: B::Buf,
    /// 1 where an input was corrupted, n×d; only kept when emphasis needs it.
    pub mask: Option<B::Buf>,
    /// Hidden code, n×k.
    pub h: B::Buf,
    /// Decoder pre-activation, then its gradient, n×d.
    pub a: B::Buf,
    /// Gradient at the hidden pre-activation, n×k.
    pub dh: B::Buf,
    /// Per-row losses, n.
    pub row_loss: B::Buf,
    pub grads: DaeParams<B>,
}

impl<B: Backend> DaeWorkspace<B> {
    pub fn new(be: &B, config: &DaeConfig, capacity: usize) -> Result<Self> {
        let (d, k) = (config.inputs, config.hidden);
        // The W gradient sums aᵀ·h + x̃ᵀ·dh: with (a, x̃) and (h, dh) adjacent pairs a device
        // may compute it as one product.
        let (a, xt) = be.alloc_pair(capacity * d)?;
        let (h, dh) = be.alloc_pair(capacity * k)?;
        Ok(DaeWorkspace {
            capacity,
            x: be.alloc(capacity * d)?,
            xt,
            mask: if config.emphasis.is_some() {
                Some(be.alloc(capacity * d)?)
            } else {
                None
            },
            h,
            a,
            dh,
            row_loss: be.alloc(capacity)?,
            grads: DaeParams::zeros(be, config)?,
        })
    }

    /// A workspace for evaluating `rows` rows a chunk at a time
    /// ([`crate::backend::eval_chunk`]: clean and corrupted inputs, mask, reconstruction, code
    /// and its gradient per row).
    pub fn for_eval(be: &B, config: &DaeConfig, rows: usize) -> Result<Self> {
        let row_floats = 4 * config.inputs + 2 * config.hidden;
        Self::new(be, config, crate::backend::eval_chunk(be, rows, row_floats))
    }
}

/// The optimiser state of every parameter tensor.
pub struct DaeOptState<B: Backend> {
    w: OptState<B>,
    b: OptState<B>,
    c: OptState<B>,
    v: Option<OptState<B>>,
}

impl<B: Backend> DaeOptState<B> {
    pub fn new(be: &B, config: &DaeConfig, opt: &crate::config::Optimizer) -> Result<Self> {
        let (d, k) = (config.inputs, config.hidden);
        Ok(DaeOptState {
            w: be.opt_state(opt, d * k)?,
            b: be.opt_state(opt, k)?,
            c: be.opt_state(opt, d)?,
            v: if config.tied {
                None
            } else {
                Some(be.opt_state(opt, k * d)?)
            },
        })
    }
}

impl<B: Backend> DaeOptState<B> {
    fn states(&self) -> Vec<&OptState<B>> {
        let mut s = vec![&self.w, &self.b, &self.c];
        s.extend(self.v.as_ref());
        s
    }

    /// The state's buffers on the host, in checkpoint order: for W, b, c, V in turn, the first
    /// moment (or momentum) and the second moment where the optimiser keeps them.
    pub fn download(&self, be: &B) -> Vec<Vec<f32>> {
        self.states().into_iter().flat_map(|s| s.download(be)).collect()
    }

    /// Restores buffers from [`DaeOptState::download`]'s layout.
    pub fn upload(&mut self, be: &B, host: &[Vec<f32>]) {
        let mut it = host.iter();
        let mut states = vec![&mut self.w, &mut self.b, &mut self.c];
        states.extend(self.v.as_mut());
        for s in states {
            s.upload(be, &mut it);
        }
    }
}

/// h = enc(x̃·W + b) for the first `n` rows.
pub fn encode<B: Backend>(be: &B, cfg: &DaeConfig, p: &DaeParams<B>, xt: &B::Buf, h: &mut B::Buf, n: usize) {
    let (d, k) = (cfg.inputs, cfg.hidden);
    be.matmul(h, xt, Trans::N, &p.w, Trans::N, n, k, d, false);
    be.bias_act(h, &p.b, cfg.encoder, n, k);
}

/// a = h·W′ (without the bias c) for the first `n` rows.
pub fn decode_pre<B: Backend>(be: &B, cfg: &DaeConfig, p: &DaeParams<B>, h: &B::Buf, a: &mut B::Buf, n: usize) {
    let (d, k) = (cfg.inputs, cfg.hidden);
    match &p.v {
        None => be.matmul(a, h, Trans::N, &p.w, Trans::T, n, d, k, false),
        Some(v) => be.matmul(a, h, Trans::N, v, Trans::N, n, d, k, false),
    }
}

/// z = dec(h·W′ + c) for the first `n` rows: the reconstruction.
pub fn decode<B: Backend>(be: &B, cfg: &DaeConfig, p: &DaeParams<B>, h: &B::Buf, z: &mut B::Buf, n: usize) {
    decode_pre(be, cfg, p, h, z, n);
    be.bias_act(z, &p.c, cfg.decoder, n, cfg.inputs);
}

/// The loss specification of `cfg` for a batch of `n` rows.
pub fn loss_spec(cfg: &DaeConfig, n: usize, output: LossOutput) -> LossSpec {
    LossSpec {
        loss: cfg.loss,
        decoder: cfg.decoder,
        emphasis: cfg.emphasis,
        grad_scale: 1.0 / n as f32,
        output,
    }
}

/// Where the gradients of a backward pass go.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GradSink {
    /// Into the workspace's gradient buffers (for any optimiser, and for checking).
    Buffers,
    /// Straight into the parameters as a plain SGD step, θ ← (1 − lr·wd)·θ − lr·∇θ, with no
    /// gradient buffer: the weight gradients are summed into the weights by the matrix product
    /// itself.
    Sgd { lr: f32, weight_decay: f32 },
}

impl GradSink {
    /// The sink for one step of `optimizer` at rate `lr`: fused when it is plain SGD.
    pub fn for_step(optimizer: &crate::config::Optimizer, lr: f32) -> GradSink {
        match *optimizer {
            crate::config::Optimizer::Sgd { momentum, weight_decay, .. } if momentum == 0.0 => GradSink::Sgd { lr, weight_decay },
            _ => GradSink::Buffers,
        }
    }

    /// (α, β) such that the target becomes β·target + α·Σ(gradient terms).
    pub fn scales(&self) -> (f32, f32) {
        match *self {
            GradSink::Buffers => (1.0, 0.0),
            GradSink::Sgd { lr, weight_decay } => (-lr, 1.0 - lr * weight_decay),
        }
    }
}

/// Forward and backward over the first `n` rows of `ws.x` (clean) and `ws.xt` (corrupted, with
/// `ws.mask`): leaves h in `ws.h` and the per-row losses in `ws.row_loss`; every gradient of the
/// batch-mean loss goes to `sink`.
pub fn forward_backward<B: Backend>(be: &B, cfg: &DaeConfig, p: &mut DaeParams<B>, ws: &mut DaeWorkspace<B>, n: usize, sink: GradSink) {
    forward_backward_to(be, cfg, p, ws, n, sink, None);
}

/// [`forward_backward`], with the per-row losses written to `row_loss` = (buffer, first index)
/// instead of `ws.row_loss` when given (a training epoch's buffer of every row's loss).
pub fn forward_backward_to<B: Backend>(
    be: &B,
    cfg: &DaeConfig,
    p: &mut DaeParams<B>,
    ws: &mut DaeWorkspace<B>,
    n: usize,
    sink: GradSink,
    row_loss: Option<(&mut B::Buf, usize)>,
) {
    let (d, k) = (cfg.inputs, cfg.hidden);
    encode(be, cfg, p, &ws.xt, &mut ws.h, n);
    decode_pre(be, cfg, p, &ws.h, &mut ws.a, n);
    // ws.a becomes ∂L/∂a (n×d).
    let spec = loss_spec(cfg, n, LossOutput::Grad);
    match row_loss {
        Some((buf, at)) => be.loss_grad(&mut ws.a, &p.c, &ws.x, ws.mask.as_ref(), &spec, n, d, buf, at),
        None => be.loss_grad(&mut ws.a, &p.c, &ws.x, ws.mask.as_ref(), &spec, n, d, &mut ws.row_loss, 0),
    }
    // ∂L/∂h = ∂L/∂a · W (tied, n×k) or ∂L/∂a · Vᵀ; then through the encoder's activation.
    match &p.v {
        None => be.matmul(&mut ws.dh, &ws.a, Trans::N, &p.w, Trans::N, n, k, d, false),
        Some(v) => be.matmul(&mut ws.dh, &ws.a, Trans::N, v, Trans::T, n, k, d, false),
    }
    // Every product below reads only activations and gradients: the parameters may change.
    let (alpha, beta) = sink.scales();
    let g = &mut ws.grads;
    let (w, b, c, v) = match sink {
        GradSink::Buffers => (&mut g.w, &mut g.b, &mut g.c, g.v.as_mut()),
        GradSink::Sgd { .. } => (&mut p.w, &mut p.b, &mut p.c, p.v.as_mut()),
    };
    // Through the encoder's activation (ws.dh becomes ∂L/∂(hidden pre-activation)); then
    // ∂L/∂b = Σ_rows of it and ∂L/∂c = Σ_rows ∂L/∂a.
    be.act_grad_col_sums(&mut ws.dh, &ws.h, cfg.encoder, n, k, b, alpha, beta, Some((c, &ws.a, d)));
    // Encoder use of W: x̃ᵀ·∂L/∂(hidden pre-activation) (d×k); with tied weights the decoder
    // use (∂L/∂a)ᵀ·h adds to it, in the same pass.
    let encoder = Product { a: &ws.xt, ta: Trans::T, b: &ws.dh, tb: Trans::N, k: n };
    match v {
        None => {
            let decoder = Product { a: &ws.a, ta: Trans::T, b: &ws.h, tb: Trans::N, k: n };
            be.gemm(w, d, k, &[decoder, encoder], alpha, beta);
        }
        Some(v) => {
            // ∂L/∂V = hᵀ·∂L/∂a (k×d).
            be.gemm(v, k, d, &[Product { a: &ws.h, ta: Trans::T, b: &ws.a, tb: Trans::N, k: n }], alpha, beta);
            be.gemm(w, d, k, &[encoder], alpha, beta);
        }
    }
}

/// Applies one optimiser step to every parameter.
pub fn apply_update<B: Backend>(
    be: &B,
    p: &mut DaeParams<B>,
    g: &DaeParams<B>,
    st: &mut DaeOptState<B>,
    step: &StepSpec,
    cfg: &DaeConfig,
) {
    let (d, k) = (cfg.inputs, cfg.hidden);
    be.update(&mut p.w, &g.w, &mut st.w, step, d * k);
    be.update(&mut p.b, &g.b, &mut st.b, step, k);
    be.update(&mut p.c, &g.c, &mut st.c, step, d);
    if let (Some(pv), Some(gv), Some(sv)) = (p.v.as_mut(), g.v.as_ref(), st.v.as_mut()) {
        be.update(pv, gv, sv, step, k * d);
    }
}

/// Fills `ws.xt` (and `ws.mask`) with the corruption of the first `n` rows of `ws.x`.
pub fn corrupt_batch<B: Backend>(be: &B, noise: Corruption, key: &NoiseKey, ws: &mut DaeWorkspace<B>, d: usize, n: usize) {
    be.corrupt(&ws.x, &mut ws.xt, ws.mask.as_mut(), noise, key, n, d);
}

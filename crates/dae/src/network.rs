//! The fine-tuning network: a stack of encoders with an output layer on top, trained with labels
//! by backpropagation, without corruption, with optional inverted dropout.
//!
//! Shapes, for a batch of n rows and layer sizes [s₀, s₁, …, s_L, C]:
//!
//! ```text
//! a₀ = x ⊙ m₀                      n×s₀    (m₀: input-dropout mask, or none)
//! hₗ = act(aₗ₋₁·Wₗ + bₗ)            n×sₗ    Wₗ: sₗ₋₁×sₗ
//! aₗ = hₗ ⊙ mₗ                      n×sₗ    (mₗ ∈ {0, 1/(1−p)}: inverted dropout, or aₗ = hₗ)
//! logits = a_L·W_out + b_out        n×C
//! L = mean over rows of −log softmax(logits)[label]      (classification)
//! L = mean over rows of Σ_j (logits_j − t_j)²             (regression)
//! ```

use crate::augment::Augment;
use crate::backend::cpu::eval::{NetEvaluator, NetOutput};
use crate::backend::{Backend, LossOutput, LossSpec, OptState, Product, StepSpec, Trans};
use crate::dae::GradSink;
use crate::config::{init_range, Activation, Loss, Optimizer, TrainConfig};
use crate::corrupt::NoiseKey;
use crate::data::{Dataset, Scaler};
use crate::error::{Error, Result};
use crate::rng::{stream, Rng};
use crate::train::{run, Checkpoint, EpochRecord, EpochRows, Observer, Split, Trainable};
use serde::{Deserialize, Serialize};

/// What the output layer predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Task {
    /// Softmax over `classes` classes, cross-entropy loss.
    Classification { classes: usize },
    /// A linear output of `outputs` values, squared-error loss.
    Regression { outputs: usize },
}

impl Task {
    /// Width of the output layer.
    pub fn outputs(&self) -> usize {
        match *self {
            Task::Classification { classes } => classes,
            Task::Regression { outputs } => outputs,
        }
    }
}

/// The architecture of a fine-tuning network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// [inputs, hidden sizes…]: the encoder part; the output layer comes from `task`.
    pub sizes: Vec<usize>,
    pub activation: Activation,
    pub task: Task,
    /// Dropout probability on every hidden layer's output while training.
    pub dropout: f32,
    /// Dropout probability on the inputs while training.
    pub input_dropout: f32,
}

impl NetworkConfig {
    /// Number of hidden layers.
    pub fn hidden_layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// Checks sizes and dropout rates.
    pub fn validate(&self) -> Result<()> {
        if self.sizes.len() < 2 || self.sizes.contains(&0) {
            return Err(Error::usage("--layers", "give at least one hidden layer, each of at least one unit"));
        }
        if self.task.outputs() == 0 {
            return Err(Error::usage("labels", "there must be at least one class or output"));
        }
        for (name, p) in [("--dropout", self.dropout), ("--input-dropout", self.input_dropout)] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::usage(name, format!("{p} is outside [0, 1)")));
            }
        }
        Ok(())
    }

    /// (fan-in, fan-out) of weight matrix `l` (the last one is the output layer).
    pub fn layer_shape(&self, l: usize) -> (usize, usize) {
        let out = if l + 1 < self.sizes.len() {
            self.sizes[l + 1]
        } else {
            self.task.outputs()
        };
        (self.sizes[l], out)
    }
}

/// A network's parameters on the host: `weights[l]` is fan-in × fan-out; the last entry is the
/// output layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub config: NetworkConfig,
    pub weights: Vec<Vec<f32>>,
    pub biases: Vec<Vec<f32>>,
}

impl Network {
    /// Hidden layers from the given encoders (W, b), an output layer of zeros.
    pub fn from_encoders(config: NetworkConfig, encoders: Vec<(Vec<f32>, Vec<f32>)>) -> Result<Network> {
        config.validate()?;
        if encoders.len() != config.hidden_layers() {
            return Err(Error::Runtime("one encoder per hidden layer is needed".into()));
        }
        let (fin, fout) = config.layer_shape(config.hidden_layers());
        let (mut weights, mut biases): (Vec<_>, Vec<_>) = encoders.into_iter().unzip();
        weights.push(vec![0.0; fin * fout]);
        biases.push(vec![0.0; fout]);
        Ok(Network { config, weights, biases })
    }

    /// Hidden layers uniform in ±sqrt(6/(fan-in+fan-out)) (times 4 for sigmoid units) from
    /// `seed`, biases zero, output layer zero: the same network as a pretrained one, without
    /// the pretraining.
    pub fn init(config: NetworkConfig, seed: u64) -> Result<Network> {
        let mut rng = Rng::new(seed, stream::INIT);
        let encoders = (0..config.hidden_layers())
            .map(|l| {
                let (fin, fout) = config.layer_shape(l);
                let r = init_range(fin, fout, config.activation);
                let w = (0..fin * fout).map(|_| (rng.next_f32() * 2.0 - 1.0) * r).collect();
                (w, vec![0.0; fout])
            })
            .collect();
        Network::from_encoders(config, encoders)
    }

    pub fn num_params(&self) -> usize {
        self.weights.iter().chain(&self.biases).map(Vec::len).sum()
    }
}

/// Parameters (or gradients) on the device, one buffer per tensor.
pub struct NetParams<B: Backend> {
    pub w: Vec<B::Buf>,
    pub b: Vec<B::Buf>,
}

impl<B: Backend> NetParams<B> {
    pub fn zeros(be: &B, cfg: &NetworkConfig) -> Result<Self> {
        let mut w = Vec::new();
        let mut b = Vec::new();
        for l in 0..=cfg.hidden_layers() {
            let (fin, fout) = cfg.layer_shape(l);
            w.push(be.alloc(fin * fout)?);
            b.push(be.alloc(fout)?);
        }
        Ok(NetParams { w, b })
    }

    pub fn upload(be: &B, net: &Network) -> Result<Self> {
        let mut p = Self::zeros(be, &net.config)?;
        for (dst, src) in p.w.iter_mut().zip(&net.weights) {
            be.upload(dst, src);
        }
        for (dst, src) in p.b.iter_mut().zip(&net.biases) {
            be.upload(dst, src);
        }
        Ok(p)
    }

    pub fn download(&self, be: &B, net: &mut Network) {
        for (src, dst) in self.w.iter().zip(net.weights.iter_mut()) {
            be.download(src, dst);
        }
        for (src, dst) in self.b.iter().zip(net.biases.iter_mut()) {
            be.download(src, dst);
        }
    }
}

/// How dropout is applied in a forward pass.
#[derive(Clone, Copy, Debug)]
pub enum Dropout {
    /// No dropout (evaluation).
    Off,
    /// Fresh masks from this key (training); layer l draws from stream `key.stream + l`.
    Sample(NoiseKey),
    /// Use the masks already in the workspace (tests against given masks).
    Given,
}

/// The activations of one batch: what the backward pass reads.
pub struct Activations<B: Backend> {
    /// Inputs, n×s₀.
    pub x: B::Buf,
    /// Inputs after input dropout (when used).
    pub x_dropped: Option<B::Buf>,
    /// Hidden activations hₗ.
    pub h: Vec<B::Buf>,
    /// Hidden activations after dropout aₗ (when used).
    pub a: Vec<Option<B::Buf>>,
    /// Dropout masks: [inputs, hidden layers…].
    pub masks: Vec<Option<B::Buf>>,
}

impl<B: Backend> Activations<B> {
    /// The input of weight matrix `l`: x (l = 0) or the activation of hidden layer l − 1, after
    /// dropout when `dropped`.
    pub fn input_of(&self, l: usize, dropped: bool) -> &B::Buf {
        if l == 0 {
            match (&self.x_dropped, dropped) {
                (Some(x), true) => x,
                _ => &self.x,
            }
        } else {
            match (&self.a[l - 1], dropped) {
                (Some(a), true) => a,
                _ => &self.h[l - 1],
            }
        }
    }
}

/// Activations and gradients of one batch, allocated once for at most `capacity` rows.
pub struct NetWorkspace<B: Backend> {
    pub capacity: usize,
    pub act: Activations<B>,
    /// Output pre-activations, then their gradient, n×C.
    pub logits: B::Buf,
    /// Targets: class indices (n) or values (n×C).
    pub targets: B::Buf,
    pub row_loss: B::Buf,
    pub row_correct: B::Buf,
    /// Two gradient buffers of the widest hidden layer, used in turn.
    pub delta: [B::Buf; 2],
    pub grads: NetParams<B>,
}

impl<B: Backend> NetWorkspace<B> {
    pub fn new(be: &B, cfg: &NetworkConfig, capacity: usize) -> Result<Self> {
        let n = capacity;
        let hidden = &cfg.sizes[1..];
        let widest = hidden.iter().copied().max().unwrap_or(1);
        let drop_hidden = cfg.dropout > 0.0;
        let drop_in = cfg.input_dropout > 0.0;
        let c = cfg.task.outputs();
        let mut masks = vec![if drop_in { Some(be.alloc(n * cfg.sizes[0])?) } else { None }];
        let mut h = Vec::new();
        let mut a = Vec::new();
        for &s in hidden {
            h.push(be.alloc(n * s)?);
            a.push(if drop_hidden { Some(be.alloc(n * s)?) } else { None });
            masks.push(if drop_hidden { Some(be.alloc(n * s)?) } else { None });
        }
        let target_width = match cfg.task {
            Task::Classification { .. } => 1,
            Task::Regression { outputs } => outputs,
        };
        Ok(NetWorkspace {
            capacity,
            act: Activations {
                x: be.alloc(n * cfg.sizes[0])?,
                x_dropped: if drop_in { Some(be.alloc(n * cfg.sizes[0])?) } else { None },
                h,
                a,
                masks,
            },
            logits: be.alloc(n * c)?,
            targets: be.alloc(n * target_width)?,
            row_loss: be.alloc(n)?,
            row_correct: be.alloc(n)?,
            delta: [be.alloc(n * widest)?, be.alloc(n * widest)?],
            grads: NetParams::zeros(be, cfg)?,
        })
    }

    /// A workspace for evaluating `rows` rows a chunk at a time, without dropout
    /// ([`crate::backend::eval_chunk`]: inputs, every layer's output, the two gradient buffers
    /// and the outputs per row).
    pub fn for_eval(be: &B, cfg: &NetworkConfig, rows: usize) -> Result<Self> {
        let eval = NetworkConfig { dropout: 0.0, input_dropout: 0.0, ..cfg.clone() };
        let widest = cfg.sizes[1..].iter().copied().max().unwrap_or(1);
        let row_floats = cfg.sizes.iter().sum::<usize>() + 2 * widest + cfg.task.outputs() + 3;
        Self::new(be, &eval, crate::backend::eval_chunk(be, rows, row_floats))
    }
}

/// Forward pass over the first `n` rows of `ws.act.x`: leaves the output pre-activation
/// (without its bias) in `ws.logits`.
pub fn forward<B: Backend>(be: &B, cfg: &NetworkConfig, p: &NetParams<B>, ws: &mut NetWorkspace<B>, n: usize, dropout: Dropout) {
    let apply = !matches!(dropout, Dropout::Off);
    let act = &mut ws.act;
    // Layer i's mask (0 = inputs) from stream `key.stream + i`, unless given.
    let sample = |mask: &mut B::Buf, i: usize, p_drop: f32, cols: usize| {
        if let Dropout::Sample(key) = dropout {
            be.dropout_mask(mask, p_drop, &NoiseKey { stream: key.stream + i as u32, ..key }, n, cols);
        }
    };
    let d0 = cfg.sizes[0];
    if apply {
        if let (Some(xd), Some(m)) = (act.x_dropped.as_mut(), act.masks[0].as_mut()) {
            sample(m, 0, cfg.input_dropout, d0);
            be.mul(xd, &act.x, m, n * d0);
        }
    }
    let layers = cfg.hidden_layers();
    for l in 0..layers {
        let (fin, fout) = cfg.layer_shape(l);
        {
            let (before, rest) = act.h.split_at_mut(l);
            let prev: &B::Buf = if l == 0 {
                match (&act.x_dropped, apply) {
                    (Some(x), true) => x,
                    _ => &act.x,
                }
            } else {
                match (&act.a[l - 1], apply) {
                    (Some(a), true) => a,
                    _ => &before[l - 1],
                }
            };
            be.matmul(&mut rest[0], prev, Trans::N, &p.w[l], Trans::N, n, fout, fin, false);
            be.bias_act(&mut rest[0], &p.b[l], cfg.activation, n, fout);
        }
        if apply {
            if let (Some(a), Some(m)) = (act.a[l].as_mut(), act.masks[l + 1].as_mut()) {
                sample(m, l + 1, cfg.dropout, fout);
                be.mul(a, &act.h[l], m, n * fout);
            }
        }
    }
    let (fin, c) = cfg.layer_shape(layers);
    be.matmul(&mut ws.logits, act.input_of(layers, apply), Trans::N, &p.w[layers], Trans::N, n, c, fin, false);
}

/// The loss and, with `output` = Grad, ∂L/∂logits in `ws.logits`; per-row losses in
/// `ws.row_loss` (and correctness in `ws.row_correct` for classification).
pub fn loss<B: Backend>(be: &B, cfg: &NetworkConfig, p: &NetParams<B>, ws: &mut NetWorkspace<B>, n: usize, output: LossOutput) {
    let layers = cfg.hidden_layers();
    match cfg.task {
        Task::Classification { classes } => be.softmax_xent(
            &mut ws.logits,
            &p.b[layers],
            &ws.targets,
            output,
            1.0 / n as f32,
            n,
            classes,
            &mut ws.row_loss,
            &mut ws.row_correct,
        ),
        Task::Regression { outputs } => {
            let spec = LossSpec {
                loss: Loss::SquaredError,
                decoder: Activation::Identity,
                emphasis: None,
                grad_scale: 1.0 / n as f32,
                output,
            };
            be.loss_grad(&mut ws.logits, &p.b[layers], &ws.targets, None, &spec, n, outputs, &mut ws.row_loss, 0);
        }
    }
}

/// Backward pass from ∂L/∂logits in `ws.logits`: every gradient goes to `sink` (the workspace's
/// buffers, or straight into the parameters as an SGD step). Each layer's gradient with respect
/// to its input is computed before that layer's weights may change.
pub fn backward<B: Backend>(be: &B, cfg: &NetworkConfig, p: &mut NetParams<B>, ws: &mut NetWorkspace<B>, n: usize, dropout_applied: bool, sink: GradSink) {
    let layers = cfg.hidden_layers();
    let (fin, c) = cfg.layer_shape(layers);
    let (alpha, beta) = sink.scales();
    let act = &ws.act;
    let grads = &mut ws.grads;
    let [d0, d1] = &mut ws.delta;
    // delta = ∂L/∂a_L = ∂L/∂logits · W_outᵀ (n×s_L), before W_out changes.
    be.matmul(d0, &ws.logits, Trans::N, &p.w[layers], Trans::T, n, fin, c, false);
    {
        let target = match sink {
            GradSink::Buffers => &mut *grads,
            GradSink::Sgd { .. } => &mut *p,
        };
        be.col_sums_scaled(&mut target.b[layers], &ws.logits, n, c, alpha, beta);
        be.gemm(&mut target.w[layers], fin, c, &[Product { a: act.input_of(layers, dropout_applied), ta: Trans::T, b: &ws.logits, tb: Trans::N, k: n }], alpha, beta);
    }
    let (mut cur, mut other) = (d0, d1);
    for l in (0..layers).rev() {
        let (lin, lout) = cfg.layer_shape(l);
        if dropout_applied {
            if let Some(m) = &act.masks[l + 1] {
                be.mul_assign(cur, m, n * lout);
            }
        }
        // Through the activation, and ∂L/∂b_l = Σ_rows of the result (b_l is read by nothing below).
        {
            let target = match sink {
                GradSink::Buffers => &mut *grads,
                GradSink::Sgd { .. } => &mut *p,
            };
            be.act_grad_col_sums(cur, &act.h[l], cfg.activation, n, lout, &mut target.b[l], alpha, beta, None);
        }
        if l > 0 {
            // ∂L/∂(input of layer l), before W_l changes.
            be.matmul(other, cur, Trans::N, &p.w[l], Trans::T, n, lin, lout, false);
        }
        let target = match sink {
            GradSink::Buffers => &mut *grads,
            GradSink::Sgd { .. } => &mut *p,
        };
        be.gemm(&mut target.w[l], lin, lout, &[Product { a: act.input_of(l, dropout_applied), ta: Trans::T, b: cur, tb: Trans::N, k: n }], alpha, beta);
        if l > 0 {
            std::mem::swap(&mut cur, &mut other);
        }
    }
}

/// Optimiser state of every tensor.
pub struct NetOptState<B: Backend> {
    pub w: Vec<OptState<B>>,
    pub b: Vec<OptState<B>>,
}

impl<B: Backend> NetOptState<B> {
    pub fn new(be: &B, cfg: &NetworkConfig, opt: &Optimizer) -> Result<Self> {
        let mut w = Vec::new();
        let mut b = Vec::new();
        for l in 0..=cfg.hidden_layers() {
            let (fin, fout) = cfg.layer_shape(l);
            w.push(be.opt_state(opt, fin * fout)?);
            b.push(be.opt_state(opt, fout)?);
        }
        Ok(NetOptState { w, b })
    }
}

pub fn apply_update<B: Backend>(be: &B, cfg: &NetworkConfig, p: &mut NetParams<B>, g: &NetParams<B>, st: &mut NetOptState<B>, step: &StepSpec) {
    for l in 0..=cfg.hidden_layers() {
        let (fin, fout) = cfg.layer_shape(l);
        be.update(&mut p.w[l], &g.w[l], &mut st.w[l], step, fin * fout);
        be.update(&mut p.b[l], &g.b[l], &mut st.b[l], step, fout);
    }
}

/// Inputs and targets of the rows used for one purpose.
pub struct LabeledSplit<'a> {
    pub split: Split<'a>,
    /// Row r's target: a class index (1 column) or values; rows align with `split.data`.
    pub targets: &'a Dataset,
}

/// The result of fine-tuning.
#[derive(Clone, Debug)]
pub struct TrainedNetwork {
    pub network: Network,
    pub history: Vec<EpochRecord>,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
}

/// A network being fine-tuned, on the device.
struct NetTrainer<'a, B: Backend + 'a> {
    cfg: NetworkConfig,
    params: NetParams<B>,
    ws: NetWorkspace<B>,
    opt: NetOptState<B>,
    data: B::Data<'a>,
    targets: B::Data<'a>,
    val: Option<(B::Data<'a>, B::Data<'a>, &'a [u32])>,
    /// Validation's workspace (with validation data only).
    val_ws: Option<NetWorkspace<B>>,
    seed: u64,
    augment: Augment,
    epoch: EpochRows<B>,
    shape: Network,
}

impl<'a, B: Backend + 'a> Trainable<B> for NetTrainer<'a, B> {
    fn step(&mut self, be: &B, rows: &[u32], key: &NoiseKey, step: &StepSpec, max_grad_norm: Option<f32>, at: usize) -> Result<()> {
        let n = rows.len();
        let cfg = &self.cfg;
        let ws = &mut self.ws;
        if self.augment.is_active() {
            let key = NoiseKey { seed: self.seed, stream: stream::AUGMENT, ..*key };
            be.gather_augmented(&mut ws.act.x, &self.data, rows, &self.augment, &key);
        } else {
            be.gather(&mut ws.act.x, &self.data, rows);
        }
        be.gather(&mut ws.targets, &self.targets, rows);
        let dropping = cfg.dropout > 0.0 || cfg.input_dropout > 0.0;
        let key = NoiseKey { seed: self.seed, stream: stream::DROPOUT, ..*key };
        let dropout = if dropping { Dropout::Sample(key) } else { Dropout::Off };
        forward(be, cfg, &self.params, ws, n, dropout);
        loss(be, cfg, &self.params, ws, n, LossOutput::Grad);
        let sink = if max_grad_norm.is_some() { GradSink::Buffers } else { GradSink::for_step(&step.optimizer, step.lr) };
        backward(be, cfg, &mut self.params, ws, n, dropping, sink);
        if sink == GradSink::Buffers {
            if let Some(max) = max_grad_norm {
                let g = &mut ws.grads;
                let each = |f: &mut dyn FnMut(&mut B::Buf, usize)| {
                    for (l, (w, b)) in g.w.iter_mut().zip(g.b.iter_mut()).enumerate() {
                        let (fin, fout) = cfg.layer_shape(l);
                        f(w, fin * fout);
                        f(b, fout);
                    }
                };
                crate::train::clip(be, each, max, "fine-tuning", &key, step)?;
            }
            apply_update(be, cfg, &mut self.params, &ws.grads, &mut self.opt, step);
        }
        self.epoch.record(be, at, &ws.row_loss, Some(&ws.row_correct), n);
        Ok(())
    }

    fn epoch_rows(&self) -> &EpochRows<B> {
        &self.epoch
    }

    fn validate(&mut self, be: &B) -> Result<(f64, Option<f64>)> {
        let (data, targets, rows) = self.val.as_ref().expect("validation data");
        let ws = self.val_ws.as_mut().expect("validation workspace");
        evaluate_loss(be, &self.cfg, &self.params, ws, data, targets, rows)
    }

    fn param_norm2(&self, be: &B) -> f64 {
        (0..=self.cfg.hidden_layers())
            .map(|l| {
                let (fin, fout) = self.cfg.layer_shape(l);
                be.sum_squares(&self.params.w[l], fin * fout) + be.sum_squares(&self.params.b[l], fout)
            })
            .sum()
    }

    fn classifies(&self) -> bool {
        matches!(self.cfg.task, Task::Classification { .. })
    }

    fn params(&self, be: &B) -> Vec<Vec<f32>> {
        let mut host = self.shape.clone();
        self.params.download(be, &mut host);
        host.weights.into_iter().zip(host.biases).flat_map(|(w, b)| [w, b]).collect()
    }

    fn set_params(&mut self, be: &B, params: &[Vec<f32>]) {
        let mut host = self.shape.clone();
        for (l, pair) in params.chunks(2).enumerate() {
            host.weights[l].clone_from(&pair[0]);
            host.biases[l].clone_from(&pair[1]);
        }
        for (dst, src) in self.params.w.iter_mut().zip(&host.weights) {
            be.upload(dst, src);
        }
        for (dst, src) in self.params.b.iter_mut().zip(&host.biases) {
            be.upload(dst, src);
        }
    }

    fn opt_state(&self, be: &B) -> Vec<Vec<f32>> {
        self.opt.w.iter().zip(&self.opt.b).flat_map(|(w, b)| [w, b]).flat_map(|s| s.download(be)).collect()
    }

    fn set_opt_state(&mut self, be: &B, state: &[Vec<f32>]) {
        let mut it = state.iter();
        for (w, b) in self.opt.w.iter_mut().zip(self.opt.b.iter_mut()) {
            w.upload(be, &mut it);
            b.upload(be, &mut it);
        }
    }
}

/// Fine-tunes `net` on `train` with `tc`; dropout as configured; early stopping on the
/// validation loss (keeping the best weights) when `tc.patience` is set; from `resume` when
/// given.
#[allow(clippy::too_many_arguments)]
pub fn finetune<B: Backend>(
    be: &B,
    net: Network,
    scaler: &Scaler,
    train: &LabeledSplit<'_>,
    val: Option<&LabeledSplit<'_>>,
    tc: &TrainConfig,
    obs: &mut dyn Observer,
    resume: Option<&Checkpoint>,
) -> Result<TrainedNetwork> {
    tc.validate()?;
    net.config.validate()?;
    if train.split.rows.is_empty() {
        return Err(Error::input(&train.split.data.source, "no training rows"));
    }
    if tc.patience.is_some() && val.is_none() {
        return Err(Error::usage("--patience", "early stopping needs validation data: add --val FILE or --val-fraction F"));
    }
    tc.augment.check(train.split.data)?;
    be.install(|| {
        let cfg = net.config.clone();
        let batch = tc.batch.min(train.split.rows.len());
        let identity = Scaler::identity(0);
        let mut trainer = NetTrainer {
            params: NetParams::upload(be, &net)?,
            ws: NetWorkspace::new(be, &cfg, batch)?,
            opt: NetOptState::new(be, &cfg, &tc.optimizer)?,
            data: be.data(train.split.data, scaler)?,
            targets: be.data(train.targets, &identity)?,
            val: match val {
                Some(v) => Some((be.data(v.split.data, scaler)?, be.data(v.targets, &identity)?, &v.split.rows[..])),
                None => None,
            },
            val_ws: match val {
                Some(v) => Some(NetWorkspace::for_eval(be, &cfg, v.split.rows.len())?),
                None => None,
            },
            seed: tc.seed,
            augment: tc.augment,
            epoch: EpochRows::new(be, train.split.rows.len(), matches!(cfg.task, Task::Classification { .. }))?,
            shape: net,
            cfg,
        };
        let out = run(be, &mut trainer, &train.split.rows, val.is_some(), tc, stream::DROPOUT, obs, resume)?;
        let mut network = trainer.shape.clone();
        trainer.params.download(be, &mut network);
        Ok(TrainedNetwork { network, history: out.history, best_epoch: out.best_epoch, stopped_early: out.stopped_early })
    })
}

/// Mean loss (and accuracy, for classification) over validation rows, without dropout.
fn evaluate_loss<B: Backend>(
    be: &B,
    cfg: &NetworkConfig,
    params: &NetParams<B>,
    ws: &mut NetWorkspace<B>,
    data: &B::Data<'_>,
    targets: &B::Data<'_>,
    rows: &[u32],
) -> Result<(f64, Option<f64>)> {
    let cap = ws.capacity;
    let mut losses = vec![0f32; cap];
    let mut correct = vec![0f32; cap];
    let (mut sum, mut hits) = (0f64, 0f64);
    for chunk in rows.chunks(cap) {
        let n = chunk.len();
        be.gather(&mut ws.act.x, data, chunk);
        be.gather(&mut ws.targets, targets, chunk);
        forward(be, cfg, params, ws, n, Dropout::Off);
        loss(be, cfg, params, ws, n, LossOutput::Rows);
        be.download(&ws.row_loss, &mut losses[..n]);
        be.download(&ws.row_correct, &mut correct[..n]);
        sum += losses[..n].iter().map(|&l| l as f64).sum::<f64>();
        hits += correct[..n].iter().map(|&c| c as f64).sum::<f64>();
    }
    let count = rows.len().max(1) as f64;
    let classify = matches!(cfg.task, Task::Classification { .. });
    Ok((sum / count, classify.then(|| hits / count)))
}

/// Runs the forward pass (without dropout) over every row of `ds`, a chunk at a time, and
/// calls `f(be, ws, params, n, first_row)` after each chunk; an error from `f` stops it and is
/// the result.
fn for_each_chunk<B: Backend>(
    be: &B,
    net: &Network,
    ds: &Dataset,
    scaler: &Scaler,
    mut f: impl FnMut(&B, &mut NetWorkspace<B>, &NetParams<B>, usize, usize) -> Result<()> + Send,
) -> Result<()> {
    let cfg = &net.config;
    ds.check_width(cfg.sizes[0], "the network")?;
    be.install(|| {
        let params = NetParams::upload(be, net)?;
        let mut ws = NetWorkspace::for_eval(be, cfg, ds.rows)?;
        let cap = ws.capacity;
        let data = be.data(ds, scaler)?;
        let mut idx = Vec::with_capacity(cap);
        let mut start = 0;
        while start < ds.rows {
            let n = cap.min(ds.rows - start);
            idx.clear();
            idx.extend(start as u32..(start + n) as u32);
            be.gather(&mut ws.act.x, &data, &idx);
            forward(be, cfg, &params, &mut ws, n, Dropout::Off);
            f(be, &mut ws, &params, n, start)?;
            start += n;
        }
        be.check()
    })
}

/// The network's outputs for every row of `ds`: class probabilities (classification) or
/// predicted values (regression), rows × C.
pub fn predict_all<B: Backend>(be: &B, net: &Network, ds: &Dataset, scaler: &Scaler) -> Result<Vec<f32>> {
    let cfg = &net.config;
    let c = cfg.task.outputs();
    let mut out = vec![0f32; ds.rows * c];
    if let Some(cpu) = be.as_cpu() {
        // Every row in one pass, each thread taking its blocks of rows through every layer.
        ds.check_width(cfg.sizes[0], "the network")?;
        NetEvaluator::new(net, NetOutput::Outputs).run(cpu, ds, scaler, 0, ds.rows, &mut out);
        return Ok(out);
    }
    for_each_chunk(be, net, ds, scaler, |be, ws, params, n, start| {
        match cfg.task {
            Task::Classification { .. } => loss(be, cfg, params, ws, n, LossOutput::Elements),
            Task::Regression { outputs } => {
                be.bias_act(&mut ws.logits, &params.b[cfg.hidden_layers()], Activation::Identity, n, outputs);
            }
        }
        be.download(&ws.logits, &mut out[start * c..(start + n) * c]);
        Ok(())
    })?;
    Ok(out)
}

/// The activations of every row of `ds`, a block of whole rows at a time: `out` gets, for the
/// next rows in order, those of hidden layer `upto` (1-based) or, with `all_layers`, those of
/// layers 1..=`upto` side by side, in a buffer it may change. On the CPU a chunk of rows goes
/// through the layers once, and no layer's activations are ever all in memory; elsewhere the
/// device's chunks of rows each go through every layer once, and are handed on chunk by chunk.
/// An error from `out` stops the work.
pub fn hidden_each<B: Backend>(
    be: &B,
    net: &Network,
    ds: &Dataset,
    scaler: &Scaler,
    upto: usize,
    all_layers: bool,
    mut out: impl FnMut(&mut [f32]) -> Result<()> + Send,
) -> Result<()> {
    let sizes = &net.config.sizes;
    if upto == 0 || upto >= sizes.len() {
        return Err(Error::usage("--layer", format!("{upto} is not a layer of this network: it has layers 1 to {}", sizes.len() - 1)));
    }
    let widths: Vec<usize> = if all_layers { sizes[1..=upto].to_vec() } else { vec![sizes[upto]] };
    let width: usize = widths.iter().sum();
    let chunk = crate::backend::eval_chunk(be, ds.rows, width);
    if let Some(cpu) = be.as_cpu() {
        ds.check_width(sizes[0], "the network")?;
        let eval = NetEvaluator::new(net, NetOutput::Hidden { upto, all_layers });
        let mut block = Vec::new();
        for start in (0..ds.rows).step_by(chunk) {
            let n = chunk.min(ds.rows - start);
            block.resize(n * width, 0.0);
            eval.run(cpu, ds, scaler, start, n, &mut block);
            out(&mut block)?;
        }
        return Ok(());
    }
    // Elsewhere the device's chunks of rows, each through every layer once: the layers' codes
    // of a chunk are read back and laid side by side.
    let first = if all_layers { 0 } else { upto - 1 };
    let mut codes: Vec<Vec<f32>> = vec![Vec::new(); upto - first];
    let mut joined = Vec::new();
    for_each_chunk(be, net, ds, scaler, |be, ws, _, n, _| {
        for (l, c) in (first..upto).zip(codes.iter_mut()) {
            c.resize(n * sizes[l + 1], 0.0);
            be.download(&ws.act.h[l], c);
        }
        crate::infer::hand_on(&mut codes, &widths, n, &mut joined, &mut out)
    })
}

/// The activations of hidden layer `layer` (0-based) for every row of `ds`, rows × size.
pub fn hidden_all<B: Backend>(be: &B, net: &Network, ds: &Dataset, scaler: &Scaler, layer: usize) -> Result<Vec<f32>> {
    let width = net.config.sizes[layer + 1];
    let mut out = vec![0f32; ds.rows * width];
    if let Some(cpu) = be.as_cpu() {
        ds.check_width(net.config.sizes[0], "the network")?;
        NetEvaluator::new(net, NetOutput::Hidden { upto: layer + 1, all_layers: false }).run(cpu, ds, scaler, 0, ds.rows, &mut out);
        return Ok(out);
    }
    for_each_chunk(be, net, ds, scaler, |be, ws, _, n, start| {
        be.download(&ws.act.h[layer], &mut out[start * width..(start + n) * width]);
        Ok(())
    })?;
    Ok(out)
}

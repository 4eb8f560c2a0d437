//! The training loop: minibatches in a fresh order each epoch, fresh noise for every example,
//! validation each epoch, early stopping that keeps the best weights, a per-epoch history,
//! checkpoints to resume from, stop requests and divergence checks. Written once
//! (`run`) for every model that implements `Trainable` (both crate-private).

use crate::backend::{Backend, LossOutput, StepSpec};
use crate::config::{DaeConfig, TrainConfig};
use crate::corrupt::NoiseKey;
use crate::dae::{
    apply_update, corrupt_batch, decode_pre, encode, forward_backward_to, loss_spec, Dae,
    DaeOptState, DaeParams, DaeWorkspace, GradSink,
};
use crate::data::{Dataset, Scaler};
use crate::error::{Error, Result};
use crate::rng::{stream, Rng};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One epoch of training, as recorded in the model's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean over the epoch's training rows of the per-row loss (under the training noise).
    pub train_loss: f64,
    /// Mean per-row loss on the validation rows (under the same noise process, with draws
    /// fixed across epochs), when there is validation data.
    pub val_loss: Option<f64>,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    /// The learning rate used in this epoch.
    pub lr: f32,
    /// Fine-tuning a classifier: the fraction of training rows classified right during the
    /// epoch (with dropout, as trained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f64>,
    /// Fine-tuning a classifier: accuracy on the validation rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
}

/// Where training is within an epoch.
#[derive(Clone, Copy, Debug)]
pub struct BatchProgress {
    pub epoch: usize,
    pub epochs: usize,
    /// 1-based index of the batch just finished.
    pub batch: usize,
    pub batches: usize,
    pub rows_done: usize,
    pub rows_total: usize,
    /// Mean per-row loss over the epoch so far.
    pub mean_loss: f64,
    /// Seconds since the epoch began.
    pub seconds: f64,
}

/// Follows a training run: progress (a bar, a log), stop requests (Ctrl-C) and checkpoints.
pub trait Observer: Send {
    /// A new stage of a longer run begins ("layer 2/3").
    fn begin(&mut self, _stage: &str) {}
    fn batch(&mut self, _progress: &BatchProgress) {}
    fn epoch(&mut self, _record: &EpochRecord) {}
    /// Polled after every batch (or group of batches, where the device runs several as one
    /// step: [`Backend::steps_per_launch`]): true stops the run there, with a checkpoint, and
    /// training returns [`Error::Interrupted`].
    fn stop_requested(&self) -> bool {
        false
    }
    /// Epochs between checkpoints (0 for none but the one a stop request writes).
    fn checkpoint_every(&self) -> usize {
        0
    }
    /// Saves `checkpoint`; returns where, for messages.
    fn checkpoint(&mut self, _checkpoint: &Checkpoint) -> Result<String> {
        Err(Error::Runtime("this run does not save checkpoints".into()))
    }
    /// A layer of a stack is trained (pretraining): later checkpoints must carry it.
    fn layer_done(&mut self, _layer: &crate::stack::DoneLayer) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Rows of a dataset used for one purpose (training or validation).
pub struct Split<'a> {
    pub data: &'a Dataset,
    pub rows: Vec<u32>,
}

impl<'a> Split<'a> {
    /// Every row of `data`.
    pub fn all(data: &'a Dataset) -> Split<'a> {
        Split {
            data,
            rows: (0..data.rows as u32).collect(),
        }
    }
}

/// Splits rows `0..n` into (training, validation) with a fraction `fraction` held out, chosen at
/// random from `seed`; both lists are in increasing order.
pub fn holdout(n: usize, fraction: f32, seed: u64) -> Result<(Vec<u32>, Vec<u32>)> {
    let n_val = ((n as f64) * fraction as f64).round() as usize;
    if n_val == 0 || n_val >= n {
        return Err(Error::usage(
            "--val-fraction",
            format!("{fraction} of {n} rows leaves no training or no validation rows"),
        ));
    }
    let mut idx: Vec<u32> = (0..n as u32).collect();
    Rng::new(seed, stream::SPLIT).shuffle(&mut idx);
    let mut val = idx[..n_val].to_vec();
    let mut train = idx[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Ok((train, val))
}

/// Where a run stands: enough, with the tensors of a [`Checkpoint`], to continue it exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Batches completed of the epoch after those (a stop request can come mid-epoch).
    pub batches_done: usize,
    /// Optimiser steps so far (Adam's t).
    pub step: u64,
    /// The current epoch's sum of row losses, rows classified right and seconds so far.
    pub loss_sum: f64,
    pub hits: f64,
    pub seconds: f64,
    /// The best validation loss so far and its epoch (early stopping).
    pub best: Option<(f64, usize)>,
}

/// A snapshot of a training run on the host: parameters and optimiser state (in the model's own
/// order of tensors), the best weights kept by early stopping, the history and the position.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    pub position: Position,
    pub history: Vec<EpochRecord>,
    pub params: Vec<Vec<f32>>,
    pub opt: Vec<Vec<f32>>,
    /// The parameters of the best epoch, when early stopping keeps them.
    pub best: Option<Vec<Vec<f32>>>,
}

/// A model the training loop can train: one optimiser step on a batch, a validation pass, and
/// its state as host tensors for checkpoints and early stopping.
pub(crate) trait Trainable<B: Backend> {
    /// One step on the rows `rows`, whose per-row losses (and, for a classifier, 1 or 0 for
    /// classified right) go to the epoch's buffers ([`Trainable::epoch_rows`]) from row `at` on.
    fn step(&mut self, be: &B, rows: &[u32], key: &NoiseKey, step: &StepSpec, max_grad_norm: Option<f32>, at: usize) -> Result<()>;
    /// The epoch's per-row losses and hits, on the device, in the epoch's order.
    fn epoch_rows(&self) -> &EpochRows<B>;
    /// Mean loss and, for a classifier, accuracy on the validation rows.
    fn validate(&mut self, be: &B) -> Result<(f64, Option<f64>)>;
    /// Σ of the squared parameters: not finite when the weights diverged.
    fn param_norm2(&self, be: &B) -> f64;
    /// Whether it classifies (and its steps count rows classified right).
    fn classifies(&self) -> bool {
        false
    }
    fn params(&self, be: &B) -> Vec<Vec<f32>>;
    fn set_params(&mut self, be: &B, params: &[Vec<f32>]);
    fn opt_state(&self, be: &B) -> Vec<Vec<f32>>;
    fn set_opt_state(&mut self, be: &B, state: &[Vec<f32>]);
}

/// Per-row results of the current epoch, kept on the device until the loop reads them.
pub(crate) struct EpochRows<B: Backend> {
    pub loss: B::Buf,
    /// 1 where a classifier was right (classifiers only).
    pub correct: Option<B::Buf>,
}

impl<B: Backend> EpochRows<B> {
    pub fn new(be: &B, rows: usize, classifies: bool) -> Result<Self> {
        Ok(EpochRows { loss: be.alloc(rows)?, correct: if classifies { Some(be.alloc(rows)?) } else { None } })
    }

    /// Copies a batch's `n` row results to rows `at..at + n`.
    pub fn record(&mut self, be: &B, at: usize, loss: &B::Buf, correct: Option<&B::Buf>, n: usize) {
        be.copy_at(&mut self.loss, at, loss, n);
        if let (Some(dst), Some(src)) = (self.correct.as_mut(), correct) {
            be.copy_at(dst, at, src, n);
        }
    }
}

/// Seconds between reads of the losses when the device queues its work.
const READ_EVERY: f64 = 0.25;

/// What the loop leaves: the history, and the epoch whose weights the model holds now when
/// early stopping chose them.
pub(crate) struct Outcome {
    pub history: Vec<EpochRecord>,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
}

/// The training loop shared by every model: a fresh order each epoch (from the seed and the
/// epoch alone), noise keyed by position, validation, early stopping that keeps the best
/// weights, checkpoints, stop requests, divergence checks, and resuming from a checkpoint.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<B: Backend, M: Trainable<B>>(
    be: &B,
    model: &mut M,
    rows: &[u32],
    has_val: bool,
    tc: &TrainConfig,
    noise_stream: u32,
    obs: &mut dyn Observer,
    resume: Option<&Checkpoint>,
) -> Result<Outcome> {
    let n_rows = rows.len();
    let batch = tc.batch.min(n_rows);
    let batches = n_rows.div_ceil(batch);
    // Batches of `batch` rows (all but a shorter last one), run `group` at a time.
    let full = n_rows / batch;
    let group = be.steps_per_launch().max(1);
    let mut order = rows.to_vec();
    // The device forgets the order when the loop ends, however it ends.
    struct Forget<'b, B: Backend>(&'b B);
    impl<B: Backend> Drop for Forget<'_, B> {
        fn drop(&mut self) {
            self.0.epoch_order(&[]);
        }
    }
    let _forget = Forget(be);
    let mut row_loss = vec![0f32; n_rows];
    let mut row_hit = vec![0f32; n_rows];
    // Not with_capacity(epochs): a run may be told a huge number of epochs and stop early.
    let mut history = Vec::new();
    let mut pos = Position::default();
    let mut best: Option<Vec<Vec<f32>>> = None;
    if let Some(c) = resume {
        if c.params.len() != model.params(be).len() || c.opt.len() != model.opt_state(be).len() {
            return Err(Error::Runtime("the checkpoint's tensors do not fit this model".into()));
        }
        model.set_params(be, &c.params);
        model.set_opt_state(be, &c.opt);
        history = c.history.clone();
        pos = c.position.clone();
        best = c.best.clone();
    }
    let snapshot = |model: &M, pos: &Position, history: &[EpochRecord], best: &Option<Vec<Vec<f32>>>| Checkpoint {
        position: pos.clone(),
        history: history.to_vec(),
        params: model.params(be),
        opt: model.opt_state(be),
        best: best.clone(),
    };
    let mut stopped_early = false;
    for epoch in pos.epochs_done + 1..=tc.epochs {
        let start = Instant::now();
        let lr = tc.lr * tc.lr_decay.powi(epoch as i32 - 1);
        order.copy_from_slice(rows);
        Rng::with_substream(tc.seed, stream::SHUFFLE, epoch as u32).shuffle(&mut order);
        be.epoch_order(&order);
        let skip = pos.batches_done;
        let (mut sum, mut hits, earlier) = if skip > 0 { (pos.loss_sum, pos.hits, pos.seconds) } else { (0.0, 0.0, 0.0) };
        // Batches whose losses are not read yet begin here.
        let mut unread = skip;
        let mut last_read = Instant::now();
        let mut next = skip;
        while next < batches {
            // Up to `group` consecutive full batches as one device step (the same operations in
            // the same order as one at a time; a GPU replays them as one graph). The last,
            // shorter batch goes alone.
            let g = if next < full { group.min(full - next) } else { 1 };
            let first = next;
            let bi = first + g - 1;
            next += g;
            be.step(|| {
                for b in first..=bi {
                    let chunk = &order[b * batch..((b + 1) * batch).min(n_rows)];
                    let key = NoiseKey { seed: tc.seed, stream: noise_stream, epoch: epoch as u32, row0: (b * batch) as u32 };
                    pos.step += 1;
                    let step = StepSpec { optimizer: tc.optimizer, lr, t: pos.step };
                    model.step(be, chunk, &key, &step, tc.max_grad_norm, b * batch)?;
                }
                Ok::<(), Error>(())
            })?;
            let stop = obs.stop_requested();
            let done = ((bi + 1) * batch).min(n_rows);
            if !be.queued() || stop || bi + 1 == batches || last_read.elapsed().as_secs_f64() >= READ_EVERY {
                // Each batch's sum in f64, then the running sums: the same figures whenever
                // they are read.
                let lo = unread * batch;
                let rows_read = model.epoch_rows();
                be.download_at(&rows_read.loss, lo, &mut row_loss[lo..done]);
                if let Some(c) = &rows_read.correct {
                    be.download_at(c, lo, &mut row_hit[lo..done]);
                }
                be.check()?;
                for b in unread..=bi {
                    let span = b * batch..(b * batch + batch).min(done);
                    let s: f64 = row_loss[span.clone()].iter().map(|&l| l as f64).sum();
                    if !s.is_finite() {
                        return Err(divergence(epoch, b + 1, &format!("the loss became {s}"), tc));
                    }
                    sum += s;
                    hits += row_hit[span].iter().map(|&c| c as f64).sum::<f64>();
                }
                unread = bi + 1;
                last_read = Instant::now();
                let seconds = earlier + start.elapsed().as_secs_f64();
                obs.batch(&BatchProgress { epoch, epochs: tc.epochs, batch: bi + 1, batches, rows_done: done, rows_total: n_rows, mean_loss: sum / done as f64, seconds });
            }
            if stop {
                pos = Position { epochs_done: epoch - 1, batches_done: bi + 1, step: pos.step, loss_sum: sum, hits, seconds: earlier + start.elapsed().as_secs_f64(), best: pos.best };
                let at = obs.checkpoint(&snapshot(model, &pos, &history, &best))?;
                return Err(Error::Interrupted(format!(
                    "interrupted in epoch {epoch} after batch {} of {batches}; the state is saved in {at}: run the same command with --resume {at} to continue",
                    bi + 1
                )));
            }
        }
        if !model.param_norm2(be).is_finite() {
            return Err(divergence(epoch, batches, "the weights became NaN or infinite", tc));
        }
        let (val_loss, val_accuracy) = if has_val { model.validate(be).map(|(l, a)| (Some(l), a))? } else { (None, None) };
        let record = EpochRecord {
            epoch,
            train_loss: sum / n_rows as f64,
            val_loss,
            seconds: earlier + start.elapsed().as_secs_f64(),
            lr,
            train_accuracy: model.classifies().then(|| hits / n_rows as f64),
            val_accuracy,
        };
        obs.epoch(&record);
        history.push(record);
        pos = Position { epochs_done: epoch, batches_done: 0, step: pos.step, loss_sum: 0.0, hits: 0.0, seconds: 0.0, best: pos.best };
        let mut stop = false;
        if let (Some(vl), Some(patience)) = (val_loss, tc.patience) {
            if pos.best.is_none_or(|(b, _)| vl < b) {
                pos.best = Some((vl, epoch));
                best = Some(model.params(be));
            } else if epoch - pos.best.map_or(0, |b| b.1) >= patience {
                stopped_early = epoch < tc.epochs;
                stop = true;
            }
        }
        let every = obs.checkpoint_every();
        if every > 0 && (epoch % every == 0 || epoch == tc.epochs || stop) {
            obs.checkpoint(&snapshot(model, &pos, &history, &best))?;
        }
        if stop {
            break;
        }
    }
    let best_epoch = match (best, pos.best) {
        (Some(params), Some((_, e))) => {
            model.set_params(be, &params);
            Some(e)
        }
        _ => None,
    };
    Ok(Outcome { history, best_epoch, stopped_early })
}

fn divergence(epoch: usize, batch: usize, what: &str, tc: &TrainConfig) -> Error {
    Error::Runtime(format!(
        "training diverged at epoch {epoch}, batch {batch}: {what}. Try a smaller learning rate \
         (now --lr {}), --max-grad-norm, or scaled inputs (--scale standardize or minmax); the \
         last checkpoint, if any, holds the last good weights",
        tc.lr
    ))
}

/// The result of training.
#[derive(Clone, Debug)]
pub struct Trained {
    pub model: Dae,
    pub history: Vec<EpochRecord>,
    /// The epoch whose weights were kept, when early stopping chose them.
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
}

/// An autoencoder being trained, on the device.
struct DaeTrainer<'a, B: Backend + 'a> {
    cfg: DaeConfig,
    params: DaeParams<B>,
    ws: DaeWorkspace<B>,
    opt: DaeOptState<B>,
    data: B::Data<'a>,
    val: Option<(B::Data<'a>, &'a [u32])>,
    /// Validation's workspace (with validation data only).
    val_ws: Option<DaeWorkspace<B>>,
    seed: u64,
    epoch: EpochRows<B>,
    shape: Dae,
}

impl<'a, B: Backend + 'a> Trainable<B> for DaeTrainer<'a, B> {
    fn step(&mut self, be: &B, rows: &[u32], key: &NoiseKey, step: &StepSpec, max_grad_norm: Option<f32>, at: usize) -> Result<()> {
        let losses = Some((&mut self.epoch.loss, at));
        train_step(be, &self.cfg, &mut self.params, &mut self.ws, &mut self.opt, &self.data, rows, key, step, max_grad_norm, losses)
    }

    fn epoch_rows(&self) -> &EpochRows<B> {
        &self.epoch
    }

    fn validate(&mut self, be: &B) -> Result<(f64, Option<f64>)> {
        let (data, rows) = self.val.as_ref().expect("validation data");
        let ws = self.val_ws.as_mut().expect("validation workspace");
        Ok((mean_loss(be, &self.cfg, &self.params, ws, data, rows, self.seed, stream::VAL_NOISE)?, None))
    }

    fn param_norm2(&self, be: &B) -> f64 {
        let s = cfg_sizes(&self.cfg);
        let p = &self.params;
        be.sum_squares(&p.w, s[0]) + be.sum_squares(&p.b, s[1]) + be.sum_squares(&p.c, s[2]) + p.v.as_ref().map_or(0.0, |v| be.sum_squares(v, s[3]))
    }

    fn params(&self, be: &B) -> Vec<Vec<f32>> {
        let mut host = self.shape.clone();
        self.params.download(be, &mut host);
        let mut v = vec![host.w, host.b, host.c];
        v.extend(host.v);
        v
    }

    fn set_params(&mut self, be: &B, params: &[Vec<f32>]) {
        let mut host = self.shape.clone();
        host.w.clone_from(&params[0]);
        host.b.clone_from(&params[1]);
        host.c.clone_from(&params[2]);
        if let Some(v) = host.v.as_mut() {
            v.clone_from(&params[3]);
        }
        self.params.set(be, &host);
    }

    fn opt_state(&self, be: &B) -> Vec<Vec<f32>> {
        self.opt.download(be)
    }

    fn set_opt_state(&mut self, be: &B, state: &[Vec<f32>]) {
        self.opt.upload(be, state);
    }
}

/// Trains `init` on `train` (scaled by `scaler`) with `tc`, drawing training noise from stream
/// `noise_stream` (layers of a stack use different ones); from `resume` when given.
#[allow(clippy::too_many_arguments)]
pub fn train_dae<B: Backend>(
    be: &B,
    init: Dae,
    scaler: &Scaler,
    train: &Split<'_>,
    val: Option<&Split<'_>>,
    tc: &TrainConfig,
    noise_stream: u32,
    obs: &mut dyn Observer,
    resume: Option<&Checkpoint>,
) -> Result<Trained> {
    tc.validate()?;
    init.config.validate()?;
    if train.rows.is_empty() {
        return Err(Error::input(&train.data.source, "no training rows"));
    }
    if tc.patience.is_some() && val.is_none() {
        return Err(Error::usage("--patience", "early stopping needs validation data: add --val FILE or --val-fraction F"));
    }
    if tc.augment.is_active() {
        return Err(Error::usage("--shift", "augmentation is for fine-tuning a classifier (dae finetune), not for training an autoencoder"));
    }
    be.install(|| {
        let cfg = init.config.clone();
        let batch = tc.batch.min(train.rows.len());
        let mut trainer = DaeTrainer {
            params: DaeParams::upload(be, &init)?,
            ws: DaeWorkspace::new(be, &cfg, batch)?,
            opt: DaeOptState::new(be, &cfg, &tc.optimizer)?,
            data: be.data(train.data, scaler)?,
            val: match val {
                Some(v) => Some((be.data(v.data, scaler)?, &v.rows[..])),
                None => None,
            },
            val_ws: match val {
                Some(v) => Some(DaeWorkspace::for_eval(be, &cfg, v.rows.len())?),
                None => None,
            },
            seed: tc.seed,
            epoch: EpochRows::new(be, train.rows.len(), false)?,
            shape: init,
            cfg,
        };
        let out = run(be, &mut trainer, &train.rows, val.is_some(), tc, noise_stream, obs, resume)?;
        let mut model = trainer.shape.clone();
        trainer.params.download(be, &mut model);
        Ok(Trained { model, history: out.history, best_epoch: out.best_epoch, stopped_early: out.stopped_early })
    })
}

/// One training step on the examples `rows` of `data`: gather, corrupt with the noise of `key`,
/// forward, backward, update (gradients clipped to `max_grad_norm` first when given). Leaves
/// the rows' losses (before the update) in `ws.row_loss`, or in `row_loss` = (buffer, first
/// index) when given. Allocates nothing: every buffer was sized when the workspace was made.
#[allow(clippy::too_many_arguments)]
pub fn train_step<B: Backend>(
    be: &B,
    cfg: &DaeConfig,
    params: &mut DaeParams<B>,
    ws: &mut DaeWorkspace<B>,
    opt: &mut DaeOptState<B>,
    data: &B::Data<'_>,
    rows: &[u32],
    key: &NoiseKey,
    step: &StepSpec,
    max_grad_norm: Option<f32>,
    row_loss: Option<(&mut B::Buf, usize)>,
) -> Result<()> {
    let n = rows.len();
    be.gather_corrupt(&mut ws.x, &mut ws.xt, ws.mask.as_mut(), data, rows, cfg.noise, key, cfg.inputs);
    let sink = if max_grad_norm.is_some() { GradSink::Buffers } else { GradSink::for_step(&step.optimizer, step.lr) };
    forward_backward_to(be, cfg, params, ws, n, sink, row_loss);
    if sink == GradSink::Buffers {
        if let Some(max) = max_grad_norm {
            let s = cfg_sizes(cfg);
            let g = &mut ws.grads;
            let each = |f: &mut dyn FnMut(&mut B::Buf, usize)| {
                f(&mut g.w, s[0]);
                f(&mut g.b, s[1]);
                f(&mut g.c, s[2]);
                if let Some(v) = g.v.as_mut() {
                    f(v, s[3]);
                }
            };
            clip(be, each, max, "training", key, step)?;
        }
        apply_update(be, params, &ws.grads, opt, step, cfg);
    }
    Ok(())
}

/// The lengths of W, b, c and V for `cfg`.
fn cfg_sizes(cfg: &DaeConfig) -> [usize; 4] {
    let (d, k) = (cfg.inputs, cfg.hidden);
    [d * k, k, d, if cfg.tied { 0 } else { k * d }]
}

/// Scales the gradients together so that their global L2 norm is at most `max`; fails, naming
/// `what` ("training"), if the norm is not finite. `each` calls its argument on every gradient
/// buffer and its length (twice: for the norm, then to scale), so nothing is allocated.
pub(crate) fn clip<B: Backend>(
    be: &B,
    mut each: impl FnMut(&mut dyn FnMut(&mut B::Buf, usize)),
    max: f32,
    what: &str,
    key: &NoiseKey,
    step: &StepSpec,
) -> Result<()> {
    let mut norm2 = 0f64;
    each(&mut |g, n| norm2 += be.sum_squares(g, n));
    let norm = norm2.sqrt();
    if !norm.is_finite() {
        return Err(Error::Runtime(format!(
            "{what} diverged at epoch {}, step {}: the gradient became {norm}. Try a smaller learning rate (now --lr {})",
            key.epoch, step.t, step.lr
        )));
    }
    if norm > max as f64 {
        let f = (max as f64 / norm) as f32;
        each(&mut |g, n| be.scale(g, f, n));
    }
    Ok(())
}

/// The validation loss the trainer reports for `model` on `split`: the mean per-row loss under
/// the model's own noise, drawn as in training's validation for `seed`.
pub fn validation_loss<B: Backend>(be: &B, model: &Dae, scaler: &Scaler, split: &Split<'_>, seed: u64) -> Result<f64> {
    be.install(|| {
        let params = DaeParams::upload(be, model)?;
        let mut ws = DaeWorkspace::for_eval(be, &model.config, split.rows.len())?;
        let data = be.data(split.data, scaler)?;
        mean_loss(be, &model.config, &params, &mut ws, &data, &split.rows, seed, stream::VAL_NOISE)
    })
}

/// Mean per-row loss of the model in `params` over `rows`, under its own noise process drawn
/// from stream `noise_stream` with epoch 0 (so repeated evaluations see the same noise).
#[allow(clippy::too_many_arguments)]
pub(crate) fn mean_loss<B: Backend>(
    be: &B,
    cfg: &DaeConfig,
    params: &DaeParams<B>,
    ws: &mut DaeWorkspace<B>,
    data: &B::Data<'_>,
    rows: &[u32],
    seed: u64,
    noise_stream: u32,
) -> Result<f64> {
    let cap = ws.capacity;
    let mut losses = vec![0f32; cap];
    let mut sum = 0f64;
    for (ci, chunk) in rows.chunks(cap).enumerate() {
        let n = chunk.len();
        be.gather(&mut ws.x, data, chunk);
        let key = NoiseKey {
            seed,
            stream: noise_stream,
            epoch: 0,
            row0: (ci * cap) as u32,
        };
        corrupt_batch(be, cfg.noise, &key, ws, cfg.inputs, n);
        encode(be, cfg, params, &ws.xt, &mut ws.h, n);
        decode_pre(be, cfg, params, &ws.h, &mut ws.a, n);
        be.loss_grad(&mut ws.a, &params.c, &ws.x, ws.mask.as_ref(), &loss_spec(cfg, n, LossOutput::Rows), n, cfg.inputs, &mut ws.row_loss, 0);
        be.download(&ws.row_loss, &mut losses[..n]);
        sum += losses[..n].iter().map(|&l| l as f64).sum::<f64>();
    }
    Ok(sum / rows.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::{Corruption, Cpu, Dataset};

    #[test]
    fn validation_loss_does_not_depend_on_the_chunk() {
        // Validation evaluates in the backend's chunks, not in batches: each row's noise and
        // loss must be the same whatever the chunk it falls in.
        let cpu = Cpu::new(Some(2)).unwrap();
        let mut rng = Rng::new(4, 0);
        let (rows, cols) = (300, 40);
        let ds = Dataset::from_f32(rows, cols, (0..rows * cols).map(|_| rng.next_f32()).collect());
        let cfg = DaeConfig { noise: Corruption::Masking { level: 0.3 }, ..DaeConfig::new(cols, 24) };
        let model = Dae::init(&cfg, 1);
        let scaler = Scaler::identity(cols);
        let order: Vec<u32> = (0..rows as u32).rev().collect();
        let losses: Vec<f64> = cpu.install(|| {
            let params = DaeParams::upload(&cpu, &model).unwrap();
            let data = cpu.data(&ds, &scaler).unwrap();
            [7, 64, 300]
                .iter()
                .map(|&cap| {
                    let mut ws = DaeWorkspace::new(&cpu, &cfg, cap).unwrap();
                    mean_loss(&cpu, &cfg, &params, &mut ws, &data, &order, 9, stream::VAL_NOISE).unwrap()
                })
                .collect()
        });
        let whole = losses[2];
        for l in &losses[..2] {
            assert!(((l - whole) / whole).abs() < 1e-6, "{losses:?}");
        }
        // The noise is there: without it the loss is another.
        let clean = DaeConfig { noise: Corruption::None, ..cfg.clone() };
        let without = cpu.install(|| {
            let params = DaeParams::upload(&cpu, &model).unwrap();
            let data = cpu.data(&ds, &scaler).unwrap();
            let mut ws = DaeWorkspace::new(&cpu, &clean, 300).unwrap();
            mean_loss(&cpu, &clean, &params, &mut ws, &data, &order, 9, stream::VAL_NOISE).unwrap()
        });
        assert!(((without - whole) / whole).abs() > 1e-3, "{without} vs {whole}");
    }
}

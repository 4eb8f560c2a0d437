//! The training loop: minibatches in a fresh order each epoch, fresh noise for every example,
//! validation each epoch, early stopping that keeps the best weights, and a per-epoch history.

use crate::backend::{Backend, LossOutput, StepSpec};
use crate::config::{DaeConfig, TrainConfig};
use crate::corrupt::NoiseKey;
use crate::dae::{
    apply_update, corrupt_batch, decode_pre, encode, forward_backward, loss_spec, Dae,
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

/// Receives progress while training runs (a progress bar, a log).
pub trait Observer: Send {
    /// A new stage of a longer run begins ("layer 2/3").
    fn begin(&mut self, _stage: &str) {}
    fn batch(&mut self, _progress: &BatchProgress) {}
    fn epoch(&mut self, _record: &EpochRecord) {}
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

/// The result of training.
#[derive(Clone, Debug)]
pub struct Trained {
    pub model: Dae,
    pub history: Vec<EpochRecord>,
    /// The epoch whose weights were kept, when early stopping chose them.
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
}

/// Trains `init` on `train` (scaled by `scaler`) with `tc`, drawing training noise from stream
/// `noise_stream` (layers of a stack use different ones).
pub fn train_dae<B: Backend>(
    be: &B,
    init: Dae,
    scaler: &Scaler,
    train: &Split<'_>,
    val: Option<&Split<'_>>,
    tc: &TrainConfig,
    noise_stream: u32,
    obs: &mut dyn Observer,
) -> Result<Trained> {
    tc.validate()?;
    init.config.validate()?;
    if train.rows.is_empty() {
        return Err(Error::input(&train.data.source, "no training rows"));
    }
    if tc.patience.is_some() && val.is_none() {
        return Err(Error::usage(
            "--patience",
            "early stopping needs validation data: add --val FILE or --val-fraction F",
        ));
    }
    be.install(|| train_loop(be, init, scaler, train, val, tc, noise_stream, obs))
}

#[allow(clippy::too_many_arguments)]
fn train_loop<B: Backend>(
    be: &B,
    init: Dae,
    scaler: &Scaler,
    train: &Split<'_>,
    val: Option<&Split<'_>>,
    tc: &TrainConfig,
    noise_stream: u32,
    obs: &mut dyn Observer,
) -> Result<Trained> {
    let cfg = init.config.clone();
    let n_rows = train.rows.len();
    let batch = tc.batch.min(n_rows);
    let data = be.data(train.data, scaler)?;
    let val_data = match val {
        Some(v) => Some(be.data(v.data, scaler)?),
        None => None,
    };
    let mut params = DaeParams::upload(be, &init)?;
    let mut ws = DaeWorkspace::new(be, &cfg, batch)?;
    let mut opt = DaeOptState::new(be, &cfg, &tc.optimizer)?;
    let mut order = train.rows.clone();
    let mut losses = vec![0f32; batch];
    let mut model = init;
    let mut best: Option<(f64, usize, Dae)> = None;
    let mut history = Vec::with_capacity(tc.epochs);
    let batches = n_rows.div_ceil(batch);
    let mut t = 0u64;
    let mut stopped_early = false;

    for epoch in 1..=tc.epochs {
        let start = Instant::now();
        let lr = tc.lr * tc.lr_decay.powi(epoch as i32 - 1);
        order.copy_from_slice(&train.rows);
        Rng::with_substream(tc.seed, stream::SHUFFLE, epoch as u32).shuffle(&mut order);
        let mut sum = 0f64;
        for (bi, rows) in order.chunks(batch).enumerate() {
            let n = rows.len();
            let key = NoiseKey {
                seed: tc.seed,
                stream: noise_stream,
                epoch: epoch as u32,
                row0: (bi * batch) as u32,
            };
            t += 1;
            let step = StepSpec {
                optimizer: tc.optimizer,
                lr,
                t,
            };
            let batch_sum = train_step(be, &cfg, &mut params, &mut ws, &mut opt, &data, rows, &key, &step, &mut losses);
            if !batch_sum.is_finite() {
                return Err(divergence(epoch, bi + 1, batch_sum, tc));
            }
            sum += batch_sum;
            let done = bi * batch + n;
            obs.batch(&BatchProgress {
                epoch,
                epochs: tc.epochs,
                batch: bi + 1,
                batches,
                rows_done: done,
                rows_total: n_rows,
                mean_loss: sum / done as f64,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        let val_loss = match (val, &val_data) {
            (Some(v), Some(vd)) => Some(mean_loss(be, &cfg, &params, &mut ws, vd, &v.rows, tc.seed, stream::VAL_NOISE)?),
            _ => None,
        };
        let record = EpochRecord {
            epoch,
            train_loss: sum / n_rows as f64,
            val_loss,
            seconds: start.elapsed().as_secs_f64(),
            lr,
            train_accuracy: None,
            val_accuracy: None,
        };
        obs.epoch(&record);
        history.push(record);
        if let (Some(vl), Some(patience)) = (val_loss, tc.patience) {
            let improved = best.as_ref().is_none_or(|(b, _, _)| vl < *b);
            if improved {
                let mut snapshot = model.clone();
                params.download(be, &mut snapshot);
                best = Some((vl, epoch, snapshot));
            } else if epoch - best.as_ref().map_or(0, |b| b.1) >= patience {
                stopped_early = epoch < tc.epochs;
                break;
            }
        }
    }
    let best_epoch = match best {
        Some((_, e, snapshot)) => {
            model = snapshot;
            Some(e)
        }
        None => {
            params.download(be, &mut model);
            None
        }
    };
    Ok(Trained {
        model,
        history,
        best_epoch,
        stopped_early,
    })
}

/// One training step on the examples `rows` of `data`: gather, corrupt with the noise of `key`,
/// forward, backward, update. Returns the sum of the rows' losses (before the update).
/// Allocates nothing: every buffer was sized when the workspace was made.
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
    losses: &mut [f32],
) -> f64 {
    let n = rows.len();
    be.gather(&mut ws.x, data, rows);
    corrupt_batch(be, cfg.noise, key, ws, cfg.inputs, n);
    let sink = GradSink::for_step(&step.optimizer, step.lr);
    forward_backward(be, cfg, params, ws, n, sink);
    if sink == GradSink::Buffers {
        apply_update(be, params, &ws.grads, opt, step, cfg);
    }
    be.download(&ws.row_loss, &mut losses[..n]);
    losses[..n].iter().map(|&l| l as f64).sum()
}

fn divergence(epoch: usize, batch: usize, loss: f64, tc: &TrainConfig) -> Error {
    Error::Runtime(format!(
        "training diverged at epoch {epoch}, batch {batch}: the loss became {loss}. \
         Try a smaller learning rate (now --lr {}), or scale the inputs (--scale standardize \
         or minmax)",
        tc.lr
    ))
}

/// The validation loss the trainer reports for `model` on `split`: the mean per-row loss under
/// the model's own noise, drawn as in training's validation for `seed`.
pub fn validation_loss<B: Backend>(
    be: &B,
    model: &Dae,
    scaler: &Scaler,
    split: &Split<'_>,
    seed: u64,
    batch: usize,
) -> Result<f64> {
    be.install(|| {
        let params = DaeParams::upload(be, model)?;
        let mut ws = DaeWorkspace::new(be, &model.config, batch.min(split.rows.len()).max(1))?;
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

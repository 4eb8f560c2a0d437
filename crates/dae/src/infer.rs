//! Applying a trained autoencoder to a whole dataset, a chunk of rows at a time: codes,
//! reconstructions and per-row scores (the model's own loss, an anomaly score).

use crate::backend::{Backend, LossOutput};
use crate::config::Corruption;
use crate::corrupt::NoiseKey;
use crate::dae::{corrupt_batch, decode, decode_pre, encode, loss_spec, Dae, DaeParams, DaeWorkspace};
use crate::data::{Dataset, Scaler};
use crate::error::Result;
use crate::rng::stream;

/// Noise to apply before encoding, drawn reproducibly from `seed` per row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalNoise {
    pub noise: Corruption,
    pub seed: u64,
}

impl EvalNoise {
    /// No corruption.
    pub fn none() -> EvalNoise {
        EvalNoise {
            noise: Corruption::None,
            seed: 0,
        }
    }

    /// The key of the noise for the rows from `row0` of a dataset: each row's noise depends
    /// only on the seed and the row's index.
    pub fn key(&self, row0: usize) -> NoiseKey {
        NoiseKey {
            seed: self.seed,
            stream: stream::EVAL_NOISE,
            epoch: 0,
            row0: row0 as u32,
        }
    }
}

/// The corrupted inputs (rows × cols, after scaling) that [`reconstruct_all`] and [`score_all`]
/// feed the model for the same `noise`.
pub fn corrupt_all(ds: &Dataset, scaler: &Scaler, noise: EvalNoise) -> Vec<f32> {
    let d = ds.cols;
    let mut clean = vec![0f32; d];
    let mut out = vec![0f32; ds.rows * d];
    let key = noise.key(0);
    for (r, row) in out.chunks_exact_mut(d).enumerate() {
        ds.gather_range(r, 1, scaler, &mut clean);
        crate::corrupt::corrupt_row(noise.noise, &key, r as u32, &clean, row, None);
    }
    out
}

/// Runs `f(ws, params, n, first_row)` on every chunk of `ds`, after gathering the chunk's rows
/// into `ws.x` and corrupting them into `ws.xt` with `noise`. Without noise the rows are
/// gathered into `ws.xt` alone (`ws.x` is not filled) unless `need_clean`.
fn for_each_chunk<B: Backend>(
    be: &B,
    model: &Dae,
    ds: &Dataset,
    scaler: &Scaler,
    noise: EvalNoise,
    need_clean: bool,
    mut f: impl FnMut(&B, &mut DaeWorkspace<B>, &DaeParams<B>, usize, usize) + Send,
) -> Result<()> {
    let cfg = &model.config;
    ds.check_width(cfg.inputs, "the model")?;
    // Noise needs the mask only for emphasis; the model's config decides.
    be.install(|| {
        let params = DaeParams::upload(be, model)?;
        let mut ws = DaeWorkspace::for_eval(be, cfg, ds.rows)?;
        let cap = ws.capacity;
        let data = be.data(ds, scaler)?;
        let mut idx: Vec<u32> = Vec::with_capacity(cap);
        let mut start = 0;
        while start < ds.rows {
            let n = cap.min(ds.rows - start);
            idx.clear();
            idx.extend(start as u32..(start + n) as u32);
            if noise.noise.is_none() && !need_clean && ws.mask.is_none() {
                be.gather(&mut ws.xt, &data, &idx);
            } else {
                be.gather(&mut ws.x, &data, &idx);
                corrupt_batch(be, noise.noise, &noise.key(start), &mut ws, cfg.inputs, n);
            }
            f(be, &mut ws, &params, n, start);
            start += n;
        }
        be.check()
    })
}

/// The hidden code h = enc(W·x + b) of every row (rows × k), without corruption.
pub fn encode_all<B: Backend>(be: &B, model: &Dae, ds: &Dataset, scaler: &Scaler) -> Result<Vec<f32>> {
    let k = model.config.hidden;
    let mut out = vec![0f32; ds.rows * k];
    let cfg = &model.config;
    for_each_chunk(be, model, ds, scaler, EvalNoise::none(), false, |be, ws, p, n, start| {
        encode(be, cfg, p, &ws.xt, &mut ws.h, n);
        be.download(&ws.h, &mut out[start * k..(start + n) * k]);
    })?;
    Ok(out)
}

/// The reconstruction z of every row (rows × d), after corrupting it with `noise`.
pub fn reconstruct_all<B: Backend>(
    be: &B,
    model: &Dae,
    ds: &Dataset,
    scaler: &Scaler,
    noise: EvalNoise,
) -> Result<Vec<f32>> {
    let d = model.config.inputs;
    let mut out = vec![0f32; ds.rows * d];
    let cfg = &model.config;
    for_each_chunk(be, model, ds, scaler, noise, false, |be, ws, p, n, start| {
        encode(be, cfg, p, &ws.xt, &mut ws.h, n);
        decode(be, cfg, p, &ws.h, &mut ws.a, n);
        be.download(&ws.a, &mut out[start * d..(start + n) * d]);
    })?;
    Ok(out)
}

/// Each row's value of the model's own loss (with its emphasis) between the clean row and the
/// reconstruction of its corruption by `noise`: a vector of `rows` values, or with
/// `per_feature` a rows × d matrix of the loss's terms.
pub fn score_all<B: Backend>(
    be: &B,
    model: &Dae,
    ds: &Dataset,
    scaler: &Scaler,
    noise: EvalNoise,
    per_feature: bool,
) -> Result<Vec<f32>> {
    let d = model.config.inputs;
    let width = if per_feature { d } else { 1 };
    let mut out = vec![0f32; ds.rows * width];
    let cfg = &model.config;
    let output = if per_feature {
        LossOutput::Elements
    } else {
        LossOutput::Rows
    };
    for_each_chunk(be, model, ds, scaler, noise, true, |be, ws, p, n, start| {
        encode(be, cfg, p, &ws.xt, &mut ws.h, n);
        decode_pre(be, cfg, p, &ws.h, &mut ws.a, n);
        let spec = loss_spec(cfg, n, output);
        be.loss_grad(&mut ws.a, &p.c, &ws.x, ws.mask.as_ref(), &spec, n, d, &mut ws.row_loss, 0);
        if per_feature {
            be.download(&ws.a, &mut out[start * d..(start + n) * d]);
        } else {
            be.download(&ws.row_loss, &mut out[start..start + n]);
        }
    })?;
    Ok(out)
}

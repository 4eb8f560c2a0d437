//! Applying a trained autoencoder to a whole dataset, a chunk of rows at a time: codes,
//! reconstructions and per-row scores (the model's own loss, an anomaly score).

use crate::backend::cpu::eval::{Evaluator, Output};
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
    mut f: impl FnMut(&B, &mut DaeWorkspace<B>, &DaeParams<B>, usize, usize) -> Result<()> + Send,
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
            f(be, &mut ws, &params, n, start)?;
            start += n;
        }
        be.check()
    })
}

/// The hidden code h = enc(W·x + b) of every row (rows × k), without corruption.
pub fn encode_all<B: Backend>(be: &B, model: &Dae, ds: &Dataset, scaler: &Scaler) -> Result<Vec<f32>> {
    let mut out = vec![0f32; ds.rows * model.config.hidden];
    encode_into(be, model, ds, scaler, &mut out)?;
    Ok(out)
}

/// [`encode_all`] into `out` (rows × k values), a buffer the caller keeps: a run that encodes
/// again into the same buffer takes no new memory.
pub fn encode_into<B: Backend>(be: &B, model: &Dae, ds: &Dataset, scaler: &Scaler, out: &mut [f32]) -> Result<()> {
    let cfg = &model.config;
    let k = cfg.hidden;
    assert_eq!(out.len(), ds.rows * k, "encode_into: out must hold rows × hidden values");
    if let Some(cpu) = be.as_cpu() {
        // Every row in one pass, each thread writing its blocks of rows where they go.
        ds.check_width(cfg.inputs, "the model")?;
        Evaluator::new(model, Output::Codes, EvalNoise::none()).run(cpu, ds, scaler, 0, ds.rows, out);
        return Ok(());
    }
    for_each_chunk(be, model, ds, scaler, EvalNoise::none(), false, |be, ws, p, n, start| {
        encode(be, cfg, p, &ws.xt, &mut ws.h, n);
        be.download(&ws.h, &mut out[start * k..(start + n) * k]);
        Ok(())
    })
}

/// [`encode_all`] a block of whole rows at a time: `out` gets the codes of the next rows, in
/// order, in a buffer it may change. The codes need not all be held at once (they can go to a
/// file as they come); an error from `out` stops the work.
pub fn encode_each<B: Backend>(
    be: &B,
    model: &Dae,
    ds: &Dataset,
    scaler: &Scaler,
    out: impl FnMut(&mut [f32]) -> Result<()> + Send,
) -> Result<()> {
    let cfg = &model.config;
    each_block(be, model, ds, scaler, EvalNoise::none(), Output::Codes, out, |be, ws, p, n| {
        encode(be, cfg, p, &ws.xt, &mut ws.h, n);
        &ws.h
    })
}

/// The reconstruction z of every row (rows × d), after corrupting it with `noise`.
pub fn reconstruct_all<B: Backend>(
    be: &B,
    model: &Dae,
    ds: &Dataset,
    scaler: &Scaler,
    noise: EvalNoise,
) -> Result<Vec<f32>> {
    collect(ds.rows * model.config.inputs, |out| reconstruct_each(be, model, ds, scaler, noise, out))
}

/// [`reconstruct_all`] a block of whole rows at a time, as [`encode_each`] hands out codes.
pub fn reconstruct_each<B: Backend>(
    be: &B,
    model: &Dae,
    ds: &Dataset,
    scaler: &Scaler,
    noise: EvalNoise,
    out: impl FnMut(&mut [f32]) -> Result<()> + Send,
) -> Result<()> {
    let cfg = &model.config;
    each_block(be, model, ds, scaler, noise, Output::Reconstruction, out, |be, ws, p, n| {
        encode(be, cfg, p, &ws.xt, &mut ws.h, n);
        decode(be, cfg, p, &ws.h, &mut ws.a, n);
        &ws.a
    })
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
    let width = if per_feature { model.config.inputs } else { 1 };
    collect(ds.rows * width, |out| score_each(be, model, ds, scaler, noise, per_feature, out))
}

/// [`score_all`] a block of whole rows at a time, as [`encode_each`] hands out codes.
pub fn score_each<B: Backend>(
    be: &B,
    model: &Dae,
    ds: &Dataset,
    scaler: &Scaler,
    noise: EvalNoise,
    per_feature: bool,
    out: impl FnMut(&mut [f32]) -> Result<()> + Send,
) -> Result<()> {
    let cfg = &model.config;
    let d = cfg.inputs;
    let output = if per_feature { LossOutput::Elements } else { LossOutput::Rows };
    each_block(be, model, ds, scaler, noise, Output::Loss { per_feature }, out, |be, ws, p, n| {
        encode(be, cfg, p, &ws.xt, &mut ws.h, n);
        decode_pre(be, cfg, p, &ws.h, &mut ws.a, n);
        let spec = loss_spec(cfg, n, output);
        be.loss_grad(&mut ws.a, &p.c, &ws.x, ws.mask.as_ref(), &spec, n, d, &mut ws.row_loss, 0);
        if per_feature {
            &ws.a
        } else {
            &ws.row_loss
        }
    })
}

/// Hands `out` the results `what` of every row, a chunk at a time: on the CPU by
/// [`Evaluator`], in one pass per block of rows; elsewhere by running `compute` on every chunk
/// (see [`for_each_chunk`]) and copying the first n × width values of the buffer it returns to
/// the host. The two compute the same values in the same way (see [`Evaluator`] for where the
/// last bits may differ).
#[allow(clippy::too_many_arguments)]
fn each_block<B: Backend>(
    be: &B,
    model: &Dae,
    ds: &Dataset,
    scaler: &Scaler,
    noise: EvalNoise,
    what: Output,
    mut out: impl FnMut(&mut [f32]) -> Result<()> + Send,
    compute: impl for<'w> Fn(&B, &'w mut DaeWorkspace<B>, &DaeParams<B>, usize) -> &'w B::Buf + Send + Sync,
) -> Result<()> {
    let mut host = Vec::new();
    if let Some(cpu) = be.as_cpu() {
        ds.check_width(model.config.inputs, "the model")?;
        let eval = Evaluator::new(model, what, noise);
        let chunk = crate::backend::eval_chunk(be, ds.rows, eval.width());
        for start in (0..ds.rows).step_by(chunk) {
            let n = chunk.min(ds.rows - start);
            host.resize(n * eval.width(), 0.0);
            eval.run(cpu, ds, scaler, start, n, &mut host);
            out(&mut host)?;
        }
        return Ok(());
    }
    let width = what.width(&model.config);
    let need_clean = matches!(what, Output::Loss { .. });
    for_each_chunk(be, model, ds, scaler, noise, need_clean, |be, ws, p, n, _| {
        let result = compute(be, ws, p, n);
        host.resize(n * width, 0.0);
        be.download(result, &mut host);
        out(&mut host)
    })
}

/// Appends to `dst`, for each of `rows`, its values in every one of `layers` side by side (row
/// r of layer i is `layers[i][r·wᵢ..(r + 1)·wᵢ]`, wᵢ = `widths[i]`).
pub(crate) fn side_by_side(layers: &[&[f32]], widths: &[usize], rows: std::ops::Range<usize>, dst: &mut Vec<f32>) {
    for r in rows {
        for (h, &w) in layers.iter().zip(widths) {
            dst.extend_from_slice(&h[r * w..(r + 1) * w]);
        }
    }
}

/// Hands `out` a chunk of `n` rows of some layers' codes (`codes[i]` is n × `widths[i]`): one
/// layer's as they are, several side by side (through `joined`).
pub(crate) fn hand_on(codes: &mut [Vec<f32>], widths: &[usize], n: usize, joined: &mut Vec<f32>, out: &mut impl FnMut(&mut [f32]) -> Result<()>) -> Result<()> {
    if let [one] = codes {
        return out(one);
    }
    let blocks: Vec<&[f32]> = codes.iter().map(Vec::as_slice).collect();
    joined.clear();
    side_by_side(&blocks, widths, 0..n, joined);
    out(joined)
}

/// The `len` values that `each` hands its argument, block by block, in one vector.
fn collect(len: usize, each: impl FnOnce(&mut (dyn FnMut(&mut [f32]) -> Result<()> + Send)) -> Result<()>) -> Result<Vec<f32>> {
    let mut all = Vec::with_capacity(len);
    each(&mut |block: &mut [f32]| {
        all.extend_from_slice(block);
        Ok(())
    })?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::config::DaeConfig;

    /// The CPU's one-pass evaluation (rows gathered block by block inside the products, the
    /// activation and loss applied in cache) gives exactly what the operations one after
    /// another give, chunk by chunk, where those take the packed product (dense rows, chunks
    /// of more than 32 rows): codes, reconstructions, scores and per-feature scores.
    /// Shapes cut tiles (6 rows, 16 columns), depth blocks (256) and chunks (1024 rows)
    /// part-way; bytes and scaled floats; every activation and both losses; tied and untied;
    /// with and without noise and emphasis; one to three threads. The reference products
    /// agree to rounding.
    #[test]
    fn one_pass_evaluation_equals_the_operations_in_turn() {
        use crate::config::{Activation, Corruption, Emphasis, Loss, ScaleKind};
        use crate::data::Values;
        let (rows, d, k) = (2100, 300, 37);
        let bytes: Vec<u8> = (0..rows * d).map(|i| ((i * 7919 + i / 13) % 256) as u8).collect();
        let floats: Vec<f32> = (0..rows * d).map(|i| ((i * 104_729) % 1999) as f32 / 999.0 - 1.0).collect();
        let u8_ds = Dataset { values: Values::U8(bytes), ..Dataset::from_f32(rows, d, vec![0.0; rows * d]) };
        let f32_ds = Dataset::from_f32(rows, d, floats);
        let cases = [
            (&u8_ds, ScaleKind::None, Activation::Sigmoid, Loss::CrossEntropy, true, None, Corruption::None),
            (&u8_ds, ScaleKind::None, Activation::Tanh, Loss::CrossEntropy, false, Some(Emphasis { corrupted: 1.0, clean: 0.3 }), Corruption::Masking { level: 0.4 }),
            (&f32_ds, ScaleKind::Standardize, Activation::Relu, Loss::SquaredError, true, None, Corruption::Gaussian { sigma: 0.2 }),
            (&f32_ds, ScaleKind::Minmax, Activation::Identity, Loss::SquaredError, false, Some(Emphasis { corrupted: 0.5, clean: 1.0 }), Corruption::SaltAndPepper { level: 0.2 }),
        ];
        for (ds, scaling, act, loss, tied, emphasis, noise) in cases {
            let scaler = Scaler::fit(scaling, ds, None);
            let mut cfg = DaeConfig::new(d, k);
            (cfg.encoder, cfg.loss, cfg.tied, cfg.emphasis) = (act, loss, tied, emphasis);
            if loss == Loss::SquaredError {
                cfg.decoder = Activation::Identity;
            }
            let model = Dae::init(&cfg, 5);
            let noise = EvalNoise { noise, seed: 11 };
            let all = |be: &Cpu| {
                vec![
                    encode_all(be, &model, ds, &scaler).unwrap(),
                    reconstruct_all(be, &model, ds, &scaler, noise).unwrap(),
                    score_all(be, &model, ds, &scaler, noise, false).unwrap(),
                    score_all(be, &model, ds, &scaler, noise, true).unwrap(),
                ]
            };
            let what = ["codes", "reconstructions", "scores", "per-feature scores"];
            let want = all(&Cpu::new(Some(1)).unwrap().operation_by_operation());
            for threads in 1..=3 {
                for ((got, want), what) in all(&Cpu::new(Some(threads)).unwrap()).iter().zip(&want).zip(what) {
                    assert_eq!(got.len(), want.len());
                    let differ = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits());
                    assert_eq!(differ, None, "{what}, {act:?}, {loss:?}, {noise:?}, {threads} threads: value {differ:?} differs");
                }
            }
            for ((got, want), what) in all(&Cpu::reference(Some(2)).unwrap()).iter().zip(&want).zip(what) {
                let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0f32, f32::max);
                assert!(worst < 1e-4, "{what}, {act:?}: the reference differs by {worst}");
            }
        }
    }

    /// Codes come in blocks of whole chunks, in row order, each the sigmoid of x·W + b.
    #[test]
    fn encode_each_hands_out_every_row_in_order() {
        let (rows, d, k) = (2500, 6, 3);
        let model = Dae::init(&DaeConfig::new(d, k), 3);
        let values: Vec<f32> = (0..rows * d).map(|i| ((i * 7919) % 101) as f32 / 100.0).collect();
        let ds = Dataset::from_f32(rows, d, values.clone());
        let cpu = Cpu::new(Some(2)).unwrap();
        let mut blocks = Vec::new();
        let mut codes = Vec::new();
        encode_each(&cpu, &model, &ds, &Scaler::identity(d), |b| {
            blocks.push(b.len() / k);
            codes.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(blocks.iter().sum::<usize>(), rows);
        assert!(blocks.len() > 1, "more than one chunk: {blocks:?}");
        for r in [0, 1023, 1024, rows - 1] {
            for j in 0..k {
                let z: f32 = model.b[j] + (0..d).map(|i| values[r * d + i] * model.w[i * k + j]).sum::<f32>();
                let h = 1.0 / (1.0 + (-z).exp());
                assert!((codes[r * k + j] - h).abs() < 1e-5, "row {r}, unit {j}: {} against {h}", codes[r * k + j]);
            }
        }
        // An error from the receiver stops the work and comes back.
        let mut calls = 0;
        let e = encode_each(&cpu, &model, &ds, &Scaler::identity(d), |_| {
            calls += 1;
            Err(crate::Error::Runtime("disk full".into()))
        });
        assert!(e.unwrap_err().to_string().contains("disk full"));
        assert_eq!(calls, 1);
    }
}

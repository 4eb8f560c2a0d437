//! `dae pretrain`: greedy layer-wise pretraining of a stack of denoising autoencoders.

use super::train::{optimizer, train_config};
use super::{check_output, read_options, validation_split};
use crate::args::PretrainArgs;
use crate::checkpoint::{data_identity, train_identity, value};
use dae::stack::{pretrain, LayerPlan};
use serde_json::json;
use dae::{read_data, Backend, Corruption, DaeConfig, DataInfo, Error, Loss, Result, SavedStack, Scaler, Split};
use std::str::FromStr;

/// A comma-separated list: one value for every layer, or one per layer.
pub fn per_layer<T: FromStr + Clone>(text: &str, layers: usize, option: &str) -> Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    let items = text
        .split(',')
        .map(|s| s.trim().parse::<T>().map_err(|e| Error::usage(option, format!("'{}': {e}", s.trim()))))
        .collect::<Result<Vec<T>>>()?;
    match items.len() {
        1 => Ok(vec![items[0].clone(); layers]),
        n if n == layers => Ok(items),
        n => Err(Error::usage(option, format!("{n} values for {layers} layers: give one for all, or one per layer"))),
    }
}

/// Hidden sizes from `1000,1000,1000`.
pub fn layer_sizes(text: &str, option: &str) -> Result<Vec<usize>> {
    let sizes = text
        .split(',')
        .map(|s| s.trim().parse::<usize>().map_err(|_| Error::usage(option, format!("'{}' is not a number of units", s.trim()))))
        .collect::<Result<Vec<_>>>()?;
    if sizes.is_empty() || sizes.contains(&0) {
        return Err(Error::usage(option, "every layer needs at least one unit"));
    }
    Ok(sizes)
}

/// Noise per layer from `masking:0.1,0.2,0.3` (a bare level takes the kind before it) or
/// `masking:0.3` for all.
pub fn layer_noises(text: &str, layers: usize) -> Result<Vec<Corruption>> {
    let mut kind = String::new();
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim) {
        let spec = match item.split_once(':') {
            Some((k, _)) => {
                kind = k.to_string();
                item.to_string()
            }
            None if item.parse::<f32>().is_ok() && !kind.is_empty() => format!("{kind}:{item}"),
            None => item.to_string(),
        };
        out.push(Corruption::from_str(&spec).map_err(|e| Error::usage("--noise", e))?);
    }
    match out.len() {
        1 => Ok(vec![out[0]; layers]),
        n if n == layers => Ok(out),
        n => Err(Error::usage("--noise", format!("{n} noise levels for {layers} layers: give one for all, or one per layer"))),
    }
}

pub fn run(a: PretrainArgs) -> Result<()> {
    let sizes = layer_sizes(&a.layers, "--layers")?;
    let n = sizes.len();
    let noises = match &a.noise {
        Some(text) => layer_noises(text, n)?,
        None => (0..n).map(|i| Corruption::Masking { level: (0.1 * (i + 1) as f32).min(0.5) }).collect(),
    };
    let epochs: Vec<usize> = per_layer(&a.epochs, n, "--epochs")?;
    let (opt, default_lr) = optimizer(&a.optim, 0.05);
    let lrs: Vec<f32> = match &a.lr {
        Some(s) => per_layer(s, n, "--lr")?,
        None => vec![default_lr; n],
    };
    check_output(&a.output, "--output")?;
    super::outputs_not_inputs(&a.output, &a.extra, &a.checkpoints, &[Some(&a.data), a.val.as_deref()])?;
    let mut plans = Vec::with_capacity(n);
    let mut inputs = 1; // replaced by the real width below; validates the rest first
    for i in 0..n {
        let config = DaeConfig {
            inputs,
            hidden: sizes[i],
            encoder: a.encoder,
            decoder: a.decoder,
            tied: !a.untied,
            loss: a.loss,
            noise: noises[i],
            emphasis: a.emphasis,
        };
        config.validate()?;
        let train = train_config(epochs[i], a.batch, lrs[i], &a.optim, a.seed, a.patience, a.val_fraction, a.run.threads);
        train.validate()?;
        plans.push(LayerPlan { config, train });
        inputs = sizes[i];
    }
    let opts = read_options(&a.data_opts);
    let ds = read_data(&a.data, &opts)?;
    plans[0].config.inputs = ds.cols;
    for p in &plans {
        // Each layer's codes of every row are kept for the next.
        super::check_dae_memory("--layers", &p.config, p.train.batch.min(ds.rows), ds.rows as u128 * p.config.hidden as u128)?;
    }
    let (train_rows, val) = validation_split(&ds, a.val.as_deref(), a.val_fraction, a.seed, &opts)?;
    let scaler = Scaler::fit(a.scale, &ds, Some(&train_rows));
    if a.loss == Loss::CrossEntropy {
        ds.check_unit_interval(&scaler)?;
        if let Some(v) = &val.external {
            v.check_unit_interval(&scaler)?;
        }
    }
    let engine = super::Engine::open(&a.device, &a.run)?;
    if !a.run.quiet {
        let noise: Vec<String> = noises.iter().map(|c| c.to_string()).collect();
        errln!(
            "pretraining {}-{} ({} units, {}, noise {}) on {} rows of {} with {}, batch {}, {}",
            ds.cols,
            sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("-"),
            a.encoder,
            a.loss,
            noise.join(" / "),
            train_rows.len(),
            a.data.display(),
            opt.name(),
            a.batch,
            crate::on_engine!(&engine, |be| be.describe())
        );
    }
    let train = Split { data: &ds, rows: train_rows };
    let val_split = val.split(&ds);
    let identity = json!({
        "layers": plans.iter().map(|p| json!({ "config": value(&p.config), "train": train_identity(&p.train) })).collect::<Vec<_>>(),
        "scaling": value(&scaler),
        "data": data_identity(&ds),
        "val": val.external.as_ref().map(data_identity),
    });
    let (mut progress, resume) = super::progress(&a.run, &a.extra, &a.checkpoints, &a.output, "pretrain", identity)?;
    let per_layer_epochs: Vec<usize> = plans.iter().map(|p| p.train.epochs).collect();
    let patience: Vec<Option<usize>> = plans.iter().map(|p| p.train.patience).collect();
    super::check_resume_epochs(resume.as_ref(), &per_layer_epochs, &patience)?;
    let resume = resume.map(|r| r.pretrain());
    let done = crate::on_engine!(&engine, |be| pretrain(be, &plans, &scaler, &train, val_split.as_ref(), &mut progress, resume.as_ref()))?;
    drop(progress);
    let saved = SavedStack {
        stack: done.stack,
        scaler,
        train: plans.iter().map(|p| p.train.clone()).collect(),
        histories: done.histories,
        best_epochs: done.best_epochs,
        data: DataInfo::of(&ds),
    };
    saved.save(&a.output)?;
    if !a.run.quiet {
        let finals: Vec<String> = saved
            .histories
            .iter()
            .map(|h| crate::progress::loss(h.last().map_or(f64::NAN, |r| r.train_loss)))
            .collect();
        errln!("wrote {}: {} layer{}, final training losses {}", a.output.display(), n, if n == 1 { "" } else { "s" }, finals.join(", "));
    }
    super::write_report(a.run.threads, a.extra.report.as_deref(), &a.output, Some(&ds), None, a.run.quiet)
}

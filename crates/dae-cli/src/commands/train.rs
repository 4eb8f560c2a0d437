//! `dae train`: fit a denoising autoencoder and save it.

use super::{check_output, read_options};
use crate::args::{OptimOpts, OptimizerName, TrainArgs};
use crate::checkpoint::{data_identity, train_identity, value};
use crate::progress::loss;
use dae::rng::stream;
use serde_json::json;
use dae::train::holdout;
use dae::{
    read_data, train_dae, Dae, DaeConfig, DataInfo, Loss, Optimizer, Result, SavedDae,
    Scaler, Split, TrainConfig,
};

/// The training configuration of a command's options.
#[allow(clippy::too_many_arguments)]
pub fn train_config(epochs: usize, batch: usize, lr: f32, optim: &OptimOpts, seed: u64, patience: Option<usize>, val_fraction: Option<f32>, threads: Option<usize>) -> TrainConfig {
    TrainConfig {
        epochs,
        batch,
        optimizer: optimizer(optim, lr).0,
        lr,
        lr_decay: optim.lr_decay,
        seed,
        patience,
        val_fraction,
        threads,
        max_grad_norm: optim.max_grad_norm,
        augment: Default::default(),
    }
}

/// The optimiser the options describe, and its default learning rate (`sgd_lr` for SGD, 0.001
/// for Adam and AdamW).
pub fn optimizer(a: &OptimOpts, sgd_lr: f32) -> (Optimizer, f32) {
    let wd = a.weight_decay;
    match a.optimizer {
        OptimizerName::Sgd => (
            Optimizer::Sgd {
                momentum: a.momentum,
                nesterov: a.nesterov,
                weight_decay: wd.unwrap_or(0.0),
            },
            sgd_lr,
        ),
        OptimizerName::Adam => (
            Optimizer::Adam {
                beta1: a.beta1,
                beta2: a.beta2,
                eps: a.eps,
                weight_decay: wd.unwrap_or(0.0),
            },
            1e-3,
        ),
        OptimizerName::Adamw => (
            Optimizer::AdamW {
                beta1: a.beta1,
                beta2: a.beta2,
                eps: a.eps,
                weight_decay: wd.unwrap_or(0.01),
            },
            1e-3,
        ),
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    let (opt, default_lr) = optimizer(&a.optim, 0.1);
    let tc = train_config(a.epochs, a.batch, a.lr.unwrap_or(default_lr), &a.optim, a.seed, a.patience, a.val_fraction, a.run.threads);
    tc.validate()?;
    a.noise.validate("--noise")?;
    check_output(&a.output, "--output")?;
    super::outputs_not_inputs(&a.output, &a.extra, &a.checkpoints, &[Some(&a.data), a.val.as_deref()])?;
    let opts = read_options(&a.data_opts);
    let ds = read_data(&a.data, &opts)?;
    let config = DaeConfig {
        inputs: ds.cols,
        hidden: a.hidden,
        encoder: a.encoder,
        decoder: a.decoder,
        tied: !a.untied,
        loss: a.loss,
        noise: a.noise,
        emphasis: a.emphasis,
    };
    config.validate()?;
    // Training takes batches of at most the rows there are.
    super::check_dae_memory("--hidden", &config, tc.batch.min(ds.rows), 0)?;

    let val_ds = match &a.val {
        Some(p) => {
            let v = read_data(p, &opts)?;
            v.check_width(ds.cols, &format!("the training data {}", a.data.display()))?;
            Some(v)
        }
        None => None,
    };
    let (train_rows, holdout_rows) = match a.val_fraction {
        Some(f) => {
            let (t, v) = holdout(ds.rows, f, a.seed)?;
            (t, Some(v))
        }
        None => ((0..ds.rows as u32).collect(), None),
    };
    let scaler = Scaler::fit(a.scale, &ds, Some(&train_rows));
    if config.loss == Loss::CrossEntropy {
        ds.check_unit_interval(&scaler)?;
        if let Some(v) = &val_ds {
            v.check_unit_interval(&scaler)?;
        }
    }
    let train = Split { data: &ds, rows: train_rows };
    let val = match (&val_ds, holdout_rows) {
        (Some(v), _) => Some(Split::all(v)),
        (None, Some(rows)) => Some(Split { data: &ds, rows }),
        (None, None) => None,
    };

    let engine = super::Engine::open(&a.device, &a.run)?;
    if !a.run.quiet {
        errln!(
            "training {}→{} ({} encoder, {} decoder, {}, {}, noise {}) on {} rows of {} with {}, {}, batch {}, {}",
            config.inputs,
            config.hidden,
            config.encoder,
            config.decoder,
            if config.tied { "tied" } else { "untied" },
            config.loss,
            config.noise,
            train.rows.len(),
            a.data.display(),
            opt.name(),
            super::epochs(tc.epochs),
            tc.batch,
            crate::on_engine!(&engine, |be| dae::Backend::describe(be)),
        );
    }
    let identity = json!({
        "config": value(&config),
        "train": train_identity(&tc),
        "scaling": value(&scaler),
        "data": data_identity(&ds),
        "val": val_ds.as_ref().map(data_identity),
    });
    let (mut progress, resume) = super::progress(&a.run, &a.extra, &a.checkpoints, &a.output, "train", identity)?;
    let init = Dae::init(&config, tc.seed);
    super::check_resume_epochs(resume.as_ref(), &[tc.epochs], &[tc.patience])?;
    let current = resume.and_then(|r| r.current);
    let trained = crate::on_engine!(&engine, |be| train_dae(be, init, &scaler, &train, val.as_ref(), &tc, stream::TRAIN_NOISE, &mut progress, current.as_ref()))?;
    drop(progress);
    let saved = SavedDae {
        model: trained.model,
        scaler,
        train: tc,
        history: trained.history,
        best_epoch: trained.best_epoch,
        data: DataInfo::of(&ds),
    };
    saved.save(&a.output)?;
    if !a.run.quiet {
        let last = saved.history.last().expect("at least one epoch ran");
        let mut line = format!(
            "wrote {}: {}, final train loss {}",
            a.output.display(),
            super::epochs(saved.history.len()),
            loss(last.train_loss)
        );
        if let Some(v) = last.val_loss {
            line += &format!(", val loss {}", loss(v));
        }
        if let Some(b) = saved.best_epoch {
            line += &format!(" (kept the weights of epoch {b})");
        }
        errln!("{line}");
    }
    super::write_report(a.run.threads, a.extra.report.as_deref(), &a.output, Some(&ds), None, a.run.quiet)
}

//! `dae finetune`: supervised fine-tuning of a pretrained stack (or of the same network from
//! random initialisation) into a classifier or regressor.

use super::pretrain::layer_sizes;
use super::train::{optimizer, train_config};
use super::{check_output, read_options};
use crate::args::FinetuneArgs;
use dae::data::{class_dataset, read_targets, take_column, Targets};
use dae::network::{finetune, LabeledSplit, Network, NetworkConfig, Task};
use crate::checkpoint::{data_identity, train_identity, value};
use dae::train::holdout;
use serde_json::json;
use dae::{read_data, Activation, Backend, DataInfo, Dataset, Error, ReadOptions, Result, SavedNetwork, SavedStack, ScaleKind, Scaler, Split};
use std::path::{Path, PathBuf};

/// Features and targets: labels from `labels` (column `column` of a CSV), or, without
/// `labels`, column `column` of the data itself, which is then dropped from the features.
pub fn features_and_targets(
    ds: Dataset,
    labels: Option<&Path>,
    column: Option<&str>,
    opts: &ReadOptions,
) -> Result<(Dataset, Targets)> {
    match (labels, column) {
        (Some(p), col) => {
            let t = read_targets(p, opts, col)?;
            t.check_rows(ds.rows, &ds.source)?;
            Ok((ds, t))
        }
        (None, Some(col)) => {
            let (values, rest) = take_column(&ds, col)?;
            let t = Targets::column(values, &ds.source);
            Ok((rest, t))
        }
        (None, None) => Err(Error::usage("--labels", "give the labels: --labels FILE, or --label-column NAME of the data")),
    }
}

/// Training targets as a dataset, after checking them against the task.
fn target_data(t: &Targets, task: &Task) -> Result<Dataset> {
    match task {
        Task::Classification { classes } => Ok(class_dataset(&t.classes(Some(*classes), "the classifier")?, &t.source)),
        Task::Regression { .. } => Ok(t.to_dataset()),
    }
}

pub fn run(a: FinetuneArgs) -> Result<()> {
    let (stack_path, data_path): (Option<&PathBuf>, &PathBuf) = match (a.from_scratch, a.inputs.len()) {
        (true, 1) => (None, &a.inputs[0]),
        (false, 2) => (Some(&a.inputs[0]), &a.inputs[1]),
        (true, _) => return Err(Error::usage("--from-scratch", "takes DATA alone: drop the STACK")),
        (false, _) => return Err(Error::usage("arguments", "give STACK DATA, or DATA with --from-scratch --layers …")),
    };
    if !a.from_scratch {
        // A stack brings these: refuse them rather than ignore them.
        for (given, option, what) in [
            (a.layers.is_some(), "--layers", "the layers"),
            (a.activation.is_some(), "--activation", "the activation"),
            (a.scale.is_some(), "--scale", "the input scaling"),
        ] {
            if given {
                return Err(Error::usage(option, format!("sets {what} of --from-scratch; a stack brings its own")));
            }
        }
    }
    if a.from_scratch && a.layers.is_none() {
        return Err(Error::usage("--layers", "--from-scratch needs the hidden sizes, as in --layers 1000,1000,1000"));
    }
    let (opt, default_lr) = optimizer(&a.optim, 0.1);
    let mut tc = train_config(a.epochs, a.batch, a.lr.unwrap_or(default_lr), &a.optim, a.seed, a.patience, a.val_fraction, a.run.threads);
    tc.augment = dae::augment::Augment { shift: a.shift, flip: a.flip };
    tc.validate()?;
    check_output(&a.output, "--output")?;
    let inputs: Vec<Option<&Path>> = a.inputs.iter().map(|p| Some(p.as_path())).chain([a.labels.as_deref(), a.val.as_deref(), a.val_labels.as_deref()]).collect();
    super::outputs_not_inputs(&a.output, &a.extra, &a.checkpoints, &inputs)?;
    super::one_standard_input(&[("DATA", Some(data_path)), ("--labels", a.labels.as_deref()), ("--val", a.val.as_deref()), ("--val-labels", a.val_labels.as_deref())])?;
    let stack = stack_path.map(|p| SavedStack::load(p)).transpose()?;
    let opts = read_options(&a.data_opts);
    let raw = read_data(data_path, &opts)?;
    let (ds, targets) = features_and_targets(raw, a.labels.as_deref(), a.label_column.as_deref(), &opts)?;
    let label_column = if a.labels.is_none() { a.label_column.clone() } else { None };

    if a.regression && a.classes.is_some() {
        return Err(Error::usage("--classes", "is for a classifier, not --regression"));
    }
    if a.classes.is_some_and(|c| c < 2) {
        return Err(Error::usage("--classes", "must be at least 2"));
    }
    let task = if a.regression {
        Task::Regression { outputs: targets.cols }
    } else {
        let seen = targets.classes(a.classes, "--classes")?;
        let classes = a.classes.unwrap_or_else(|| seen.iter().max().map_or(0, |&m| m as usize + 1));
        if classes < 2 {
            return Err(Error::input(&targets.source, "the labels hold a single class: a classifier needs at least two"));
        }
        Task::Classification { classes }
    };
    let train_targets = target_data(&targets, &task)?;

    // The rows to learn from: all, or the first N of each class.
    let usable: Vec<u32> = match (a.per_class, &task) {
        (Some(0), _) => return Err(Error::usage("--per-class", "must be at least 1")),
        (Some(n), Task::Classification { classes }) => {
            let labels = targets.classes(Some(*classes), "the classifier")?;
            // Counted per label seen: --classes may be large.
            let mut taken = std::collections::HashMap::<u32, usize>::new();
            (0..ds.rows as u32)
                .filter(|&r| {
                    let t = taken.entry(labels[r as usize]).or_default();
                    *t += 1;
                    *t <= n
                })
                .collect()
        }
        (Some(_), Task::Regression { .. }) => {
            return Err(Error::usage("--per-class", "needs class labels, not --regression"))
        }
        (None, _) => (0..ds.rows as u32).collect(),
    };
    let (train_rows, holdout_rows) = match a.val_fraction {
        Some(f) => {
            let (t, v) = holdout(usable.len(), f, a.seed)?;
            let pick = |rows: Vec<u32>| rows.into_iter().map(|i| usable[i as usize]).collect::<Vec<u32>>();
            (pick(t), Some(pick(v)))
        }
        None => (usable, None),
    };
    let (network, scaler, init) = match &stack {
        Some(s) => {
            let sizes = s.stack.sizes();
            ds.check_width(sizes[0], &format!("the stack {}", stack_path.unwrap().display()))?;
            let activation = s.stack.layers[0].config.encoder;
            if s.stack.layers.iter().any(|l| l.config.encoder != activation) {
                return Err(Error::input(stack_path.unwrap(), "the stack's layers use different activations; fine-tuning needs one"));
            }
            super::check_network_memory("--classes", &with_outputs(&sizes, &task), tc.batch.min(ds.rows))?;
            let cfg = NetworkConfig { sizes, activation, task, dropout: a.dropout, input_dropout: a.input_dropout };
            let net = Network::from_encoders(cfg, s.stack.encoders())?;
            (net, s.scaler.clone(), format!("pretrained: {}", stack_path.unwrap().display()))
        }
        None => {
            let mut sizes = vec![ds.cols];
            sizes.extend(layer_sizes(a.layers.as_deref().unwrap_or_default(), "--layers")?);
            super::check_network_memory("--layers", &sizes, tc.batch.min(ds.rows))?;
            super::check_network_memory("--classes", &with_outputs(&sizes, &task), tc.batch.min(ds.rows))?;
            let cfg = NetworkConfig { sizes, activation: a.activation.unwrap_or(Activation::Sigmoid), task, dropout: a.dropout, input_dropout: a.input_dropout };
            let scaler = Scaler::fit(a.scale.unwrap_or(ScaleKind::None), &ds, Some(&train_rows));
            (Network::init(cfg, a.seed)?, scaler, "random".to_string())
        }
    };

    // Validation: a separate file with its labels, or rows held out.
    let val_data = match &a.val {
        Some(p) => {
            let raw = read_data(p, &opts)?;
            let col = if a.val_labels.is_none() { label_column.as_deref().or(a.label_column.as_deref()) } else { a.label_column.as_deref() };
            let (vds, vt) = features_and_targets(raw, a.val_labels.as_deref(), col, &opts).map_err(|e| match e {
                Error::Usage { .. } => Error::usage("--val-labels", "give the labels of --val with --val-labels FILE"),
                other => other,
            })?;
            vds.check_width(ds.cols, &format!("the training data {}", data_path.display()))?;
            let vtd = target_data(&vt, &network.config.task)?;
            Some((vds, vtd))
        }
        None => None,
    };
    let train = LabeledSplit { split: Split { data: &ds, rows: train_rows }, targets: &train_targets };
    let val = match (&val_data, holdout_rows) {
        (Some((vds, vtd)), _) => Some(LabeledSplit { split: Split::all(vds), targets: vtd }),
        (None, Some(rows)) => Some(LabeledSplit { split: Split { data: &ds, rows }, targets: &train_targets }),
        (None, None) => None,
    };

    let engine = super::Engine::open(&a.device, &a.run)?;
    if !a.run.quiet {
        let cfg = &network.config;
        errln!(
            "fine-tuning {}-{} ({}, {}{}) from {} on {} rows with {} lr {}, {}, batch {}, {}",
            cfg.sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("-"),
            cfg.task.outputs(),
            cfg.activation,
            match cfg.task { Task::Classification { classes } => format!("{classes} classes"), Task::Regression { outputs } => format!("regression, {outputs} output{}", if outputs == 1 { "" } else { "s" }) },
            if cfg.dropout > 0.0 || cfg.input_dropout > 0.0 { format!(", dropout {} / inputs {}", cfg.dropout, cfg.input_dropout) } else { String::new() }
                + &tc.augment.summary(),
            init,
            train.split.rows.len(),
            opt.name(),
            tc.lr,
            super::epochs(tc.epochs),
            tc.batch,
            crate::on_engine!(&engine, |be| be.describe())
        );
    }
    let initial: Vec<f32> = network.weights.iter().chain(&network.biases).flatten().copied().collect();
    let identity = json!({
        "network": value(&network.config),
        "init": data_identity(&dae::Dataset::from_f32(1, initial.len(), initial)),
        "train": train_identity(&tc),
        "scaling": value(&scaler),
        "data": data_identity(&ds),
        "targets": data_identity(&train_targets),
        "rows": train.split.rows.len(),
        "val": val_data.as_ref().map(|(v, t)| json!([data_identity(v), data_identity(t)])),
    });
    let (mut progress, resume) = super::progress(&a.run, &a.extra, &a.checkpoints, &a.output, "finetune", identity)?;
    super::check_resume_epochs(resume.as_ref(), &[tc.epochs], &[tc.patience])?;
    let current = resume.and_then(|r| r.current);
    let trained = crate::on_engine!(&engine, |be| finetune(be, network, &scaler, &train, val.as_ref(), &tc, &mut progress, current.as_ref()))?;
    drop(progress);
    let saved = SavedNetwork {
        network: trained.network,
        scaler,
        train: tc,
        history: trained.history,
        best_epoch: trained.best_epoch,
        data: DataInfo::of(&ds),
        init,
        label_column,
    };
    saved.save(&a.output)?;
    if !a.run.quiet {
        let last = saved.history.last().expect("at least one epoch ran");
        let mut line = format!("wrote {}: {}, final train loss {}", a.output.display(), super::epochs(saved.history.len()), crate::progress::loss(last.train_loss));
        if let Some(acc) = last.val_accuracy {
            line += &format!(", val accuracy {:.2} %", 100.0 * acc);
        }
        if let Some(b) = saved.best_epoch {
            line += &format!(" (kept the weights of epoch {b})");
        }
        errln!("{line}");
    }
    let classes = match saved.network.config.task {
        Task::Classification { classes } => Some(targets.classes(Some(classes), "the classifier")?),
        Task::Regression { .. } => None,
    };
    super::write_report(a.run.threads, a.extra.report.as_deref(), &a.output, Some(&ds), classes.as_deref(), a.run.quiet)
}

/// `sizes` (inputs and hidden layers) with the task's outputs after them.
fn with_outputs(sizes: &[usize], task: &Task) -> Vec<usize> {
    let outputs = match task {
        Task::Classification { classes } => *classes,
        Task::Regression { outputs } => *outputs,
    };
    sizes.iter().copied().chain([outputs]).collect()
}

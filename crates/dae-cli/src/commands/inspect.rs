//! `dae inspect`: what a model file holds.

use crate::args::InspectArgs;
use dae::model_file::DataInfo;
use dae::network::Task;
use dae::train::EpochRecord;
use dae::{AnyModel, DaeConfig, Result, Scaler, TrainConfig};
use dae::network::NetworkConfig;
use serde::Serialize;

#[derive(Serialize)]
struct AutoencoderJson<'a> {
    file: &'a str,
    kind: &'a str,
    parameters: usize,
    config: &'a DaeConfig,
    train: &'a TrainConfig,
    scaling: &'a Scaler,
    data: &'a DataInfo,
    best_epoch: Option<usize>,
    history: &'a [EpochRecord],
}

#[derive(Serialize)]
struct StackJson<'a> {
    file: &'a str,
    kind: &'a str,
    sizes: Vec<usize>,
    parameters: usize,
    layers: Vec<&'a DaeConfig>,
    train: &'a [TrainConfig],
    scaling: &'a Scaler,
    data: &'a DataInfo,
    best_epoch: &'a [Option<usize>],
    history: &'a [Vec<EpochRecord>],
}

#[derive(Serialize)]
struct NetworkJson<'a> {
    file: &'a str,
    kind: &'a str,
    parameters: usize,
    network: &'a NetworkConfig,
    init: &'a str,
    label_column: &'a Option<String>,
    train: &'a TrainConfig,
    scaling: &'a Scaler,
    data: &'a DataInfo,
    best_epoch: Option<usize>,
    history: &'a [EpochRecord],
}

pub fn run(a: InspectArgs) -> Result<()> {
    let model = AnyModel::load(&a.model)?;
    let file = a.model.display().to_string();
    if a.json {
        // Serialised straight from the model's types (not through serde_json::Value) so that
        // f32 settings print as written (0.05, not 0.05000000074505806).
        let text = match &model {
            AnyModel::Autoencoder(m) => serde_json::to_string(&AutoencoderJson {
                file: &file, kind: "autoencoder", parameters: m.model.num_params(),
                config: &m.model.config, train: &m.train, scaling: &m.scaler, data: &m.data,
                best_epoch: m.best_epoch, history: &m.history,
            }),
            AnyModel::Stack(m) => serde_json::to_string(&StackJson {
                file: &file, kind: "stack", sizes: m.stack.sizes(),
                parameters: m.stack.layers.iter().map(|l| l.num_params()).sum(),
                layers: m.stack.layers.iter().map(|l| &l.config).collect(),
                train: &m.train, scaling: &m.scaler, data: &m.data,
                best_epoch: &m.best_epochs, history: &m.histories,
            }),
            AnyModel::Network(m) => serde_json::to_string(&NetworkJson {
                file: &file, kind: m.kind(), parameters: m.network.num_params(),
                network: &m.network.config, init: &m.init, label_column: &m.label_column,
                train: &m.train, scaling: &m.scaler, data: &m.data,
                best_epoch: m.best_epoch, history: &m.history,
            }),
        };
        outln!("{}", text.expect("model metadata serialises to JSON"));
        return Ok(());
    }
    match &model {
        AnyModel::Autoencoder(m) => {
            outln!("{file}: denoising autoencoder");
            print_dae("  ", &m.model.config, m.model.num_params());
            print_train("  ", &m.train);
            print_common(&m.scaler, &m.data);
            print_history("  ", &m.history, m.best_epoch);
        }
        AnyModel::Stack(m) => {
            let sizes: Vec<String> = m.stack.sizes().iter().map(|s| s.to_string()).collect();
            outln!("{file}: stack of {} denoising autoencoders, {}", m.stack.layers.len(), sizes.join("-"));
            print_common(&m.scaler, &m.data);
            for (i, l) in m.stack.layers.iter().enumerate() {
                outln!("  layer {}", i + 1);
                print_dae("    ", &l.config, l.num_params());
                print_train("    ", &m.train[i]);
                print_history("    ", &m.histories[i], m.best_epochs[i]);
            }
        }
        AnyModel::Network(m) => {
            let cfg = &m.network.config;
            let sizes: Vec<String> = cfg.sizes.iter().map(|s| s.to_string()).collect();
            let task = match cfg.task {
                Task::Classification { classes } => format!("classifier, {classes} classes"),
                Task::Regression { outputs } => format!("regressor, {outputs} output{}", if outputs == 1 { "" } else { "s" }),
            };
            outln!("{file}: {task}");
            outln!(
                "  network       {}-{} ({} hidden units, {} parameters), from {}",
                sizes.join("-"),
                cfg.task.outputs(),
                cfg.activation,
                m.network.num_params(),
                m.init
            );
            outln!("  dropout       {} on hidden layers, {} on inputs", cfg.dropout, cfg.input_dropout);
            if let Some(c) = &m.label_column {
                outln!("  labels        column '{c}' of the data");
            }
            print_train("  ", &m.train);
            print_common(&m.scaler, &m.data);
            print_history("  ", &m.history, m.best_epoch);
        }
    }
    Ok(())
}

fn print_dae(ind: &str, cfg: &DaeConfig, params: usize) {
    outln!(
        "{ind}architecture  {} → {} → {}  ({} encoder, {} decoder, {} weights, {params} parameters)",
        cfg.inputs,
        cfg.hidden,
        cfg.inputs,
        cfg.encoder,
        cfg.decoder,
        if cfg.tied { "tied" } else { "untied" },
    );
    let emphasis = cfg
        .emphasis
        .map(|e| format!(", emphasis {} on corrupted / {} on clean inputs", e.corrupted, e.clean))
        .unwrap_or_default();
    outln!("{ind}objective     {} under noise {}{emphasis}", cfg.loss, cfg.noise);
}

fn print_train(ind: &str, t: &TrainConfig) {
    outln!(
        "{ind}training      {}, batch {}, {} lr {}{}, seed {}{}",
        super::epochs(t.epochs),
        t.batch,
        t.optimizer.name(),
        t.lr,
        if t.lr_decay != 1.0 { format!(" × {} per epoch", t.lr_decay) } else { String::new() },
        t.seed,
        t.augment.summary()
    );
}

fn print_common(scaler: &Scaler, data: &DataInfo) {
    outln!("  scaling       {}", scaler.kind);
    let shape = data.image_shape.map(|(h, w)| format!(", images {h}×{w}")).unwrap_or_default();
    outln!("  data          {} ({} rows × {} columns{shape})", data.source, data.rows, data.cols);
}

fn print_history(ind: &str, history: &[EpochRecord], best: Option<usize>) {
    let acc = history.iter().any(|r| r.val_accuracy.is_some() || r.train_accuracy.is_some());
    outln!("{ind}history");
    if acc {
        outln!("{ind}  epoch  train loss   train acc    val loss     val acc   seconds");
    } else {
        outln!("{ind}  epoch  train loss    val loss   seconds");
    }
    let opt = |v: Option<f64>, pct: bool| match v {
        Some(v) if pct => format!("{:>9.2} %", 100.0 * v),
        Some(v) => format!("{:>10}", crate::progress::loss(v)),
        None => format!("{:>10}", "-"),
    };
    for r in history {
        let kept = if best == Some(r.epoch) { "  (kept)" } else { "" };
        if acc {
            outln!(
                "{ind}  {:>5}  {}  {}  {}  {}  {:>8.2}{kept}",
                r.epoch,
                opt(Some(r.train_loss), false),
                opt(r.train_accuracy, true),
                opt(r.val_loss, false),
                opt(r.val_accuracy, true),
                r.seconds
            );
        } else {
            outln!("{ind}  {:>5}  {}  {}  {:>8.2}{kept}", r.epoch, opt(Some(r.train_loss), false), opt(r.val_loss, false), r.seconds);
        }
    }
}

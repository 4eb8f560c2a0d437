//! Checkpoints: the whole state of a training command, written atomically, so that the same
//! command with `--resume` continues exactly where it stopped (after a crash, a kill or Ctrl-C).
//!
//! A checkpoint is a safetensors file like a model (metadata `kind` = "checkpoint"): the
//! tensors of the run in progress (`current.param.i`, `current.opt.i`, `current.best.i`), the
//! layers a pretraining has finished (`done.L.W` …), and as metadata the command, its
//! *identity* (every setting that shapes the result, and fingerprints of the data), the
//! position in training and the history.

use dae::model_file::{common_metadata, write_model_file, DataInfo, ModelFile, TensorOut};
use dae::stack::{DoneLayer, PretrainResume};
use dae::train::{Checkpoint, EpochRecord, Position};
use dae::{Dae, DaeConfig, Error, Result, Scaler};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where a command saves its checkpoints, and what they must carry.
pub struct Sink {
    pub path: PathBuf,
    /// Epochs between checkpoints; 0 writes one only on Ctrl-C.
    pub every: usize,
    pub command: &'static str,
    pub identity: Value,
    /// Layers a pretraining has finished.
    pub done: Vec<DoneLayer>,
    /// Set by Ctrl-C.
    pub stop: Arc<AtomicBool>,
}

impl Sink {
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Writes `current` (and the finished layers) to the checkpoint path, atomically, with the
    /// length of the run's `--log-json` file at this point, if it has one.
    pub fn save(&self, current: Option<&Checkpoint>, log_bytes: Option<u64>) -> Result<String> {
        write(&self.path, self.command, &self.identity, &self.done, current, log_bytes)?;
        Ok(self.path.display().to_string())
    }
}

/// Stops the run after the current batch on the first Ctrl-C (a second one ends the process at
/// once), by setting the returned flag.
pub fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    // Registration fails only on platforms without signals; Ctrl-C then ends the process as usual.
    let _ = signal_hook::flag::register_conditional_default(signal_hook::consts::SIGINT, Arc::clone(&flag));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&flag));
    flag
}

/// `v` as JSON through its text, so that f32 settings are the same value however they were
/// built (a checkpoint's identity is compared after a round trip through its file).
pub fn value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::from_str(&serde_json::to_string(v).expect("settings serialise")).expect("JSON parses")
}

/// The fingerprint of data for an identity: its shape and a hash of every value.
pub fn data_identity(ds: &dae::Dataset) -> Value {
    json!({ "rows": ds.rows, "cols": ds.cols, "fingerprint": format!("{:016x}", ds.fingerprint()) })
}

/// A training configuration for an identity: everything but the thread count and the number of
/// epochs, which a resumed run may change (more epochs train further).
pub fn train_identity(tc: &dae::TrainConfig) -> Value {
    let mut v = value(tc);
    if let Value::Object(m) = &mut v {
        m.remove("threads");
        m.remove("epochs");
    }
    v
}

fn write(path: &Path, command: &str, identity: &Value, done: &[DoneLayer], current: Option<&Checkpoint>, log_bytes: Option<u64>) -> Result<()> {
    let mut tensors = Vec::new();
    let names: Vec<String>;
    let mut meta = common_metadata("checkpoint", &Scaler::identity(0), &DataInfo::default());
    meta.insert("command".into(), command.to_string());
    meta.insert("identity".into(), identity.to_string());
    if let Some(n) = log_bytes {
        meta.insert("log_bytes".into(), n.to_string());
    }
    let mut counts = json!(null);
    if let Some(c) = current {
        let best = c.best.as_deref().unwrap_or(&[]);
        names = (0..c.params.len())
            .map(|i| format!("current.param.{i}"))
            .chain((0..c.opt.len()).map(|i| format!("current.opt.{i}")))
            .chain((0..best.len()).map(|i| format!("current.best.{i}")))
            .collect();
        for (name, data) in names.iter().zip(c.params.iter().chain(&c.opt).chain(best)) {
            tensors.push(TensorOut { name: name.clone(), shape: vec![data.len()], data });
        }
        counts = json!({ "params": c.params.len(), "opt": c.opt.len(), "best": c.best.as_ref().map(Vec::len) });
        meta.insert("position".into(), serde_json::to_string(&c.position).expect("serialises"));
        meta.insert("history".into(), serde_json::to_string(&c.history).expect("serialises"));
    }
    meta.insert("current".into(), counts.to_string());
    let done_names: Vec<[String; 4]> = (0..done.len()).map(|l| ["W", "b", "c", "V"].map(|t| format!("done.{l}.{t}"))).collect();
    for (d, n) in done.iter().zip(&done_names) {
        let (dd, k) = (d.model.config.inputs, d.model.config.hidden);
        tensors.push(TensorOut { name: n[0].clone(), shape: vec![dd, k], data: &d.model.w });
        tensors.push(TensorOut { name: n[1].clone(), shape: vec![k], data: &d.model.b });
        tensors.push(TensorOut { name: n[2].clone(), shape: vec![dd], data: &d.model.c });
        if let Some(v) = &d.model.v {
            tensors.push(TensorOut { name: n[3].clone(), shape: vec![k, dd], data: v });
        }
    }
    let done_meta: Vec<Value> = done.iter().map(|d| json!({ "config": d.model.config, "history": d.history, "best_epoch": d.best_epoch })).collect();
    meta.insert("done".into(), Value::Array(done_meta).to_string());
    write_model_file(path, &tensors, meta)
}

/// A checkpoint read back.
pub struct Loaded {
    pub done: Vec<DoneLayer>,
    pub current: Option<Checkpoint>,
    /// The length of the run's `--log-json` file when the checkpoint was written.
    pub log_bytes: Option<u64>,
}

impl Loaded {
    /// As a pretraining resume.
    pub fn pretrain(self) -> PretrainResume {
        PretrainResume { done: self.done, current: self.current }
    }
}

/// Reads a checkpoint written by `command`, and checks that it was made with the same settings
/// and data as this command (`identity`).
pub fn read(path: &Path, command: &str, identity: &Value) -> Result<Loaded> {
    let mut f = ModelFile::read(path)?;
    if f.kind != "checkpoint" {
        return Err(Error::input(path, format!("this is {} model, not a checkpoint (written by --checkpoint or on Ctrl-C)", dae::model_file::a_kind(&f.kind))));
    }
    let theirs = f.metadata.get("command").cloned().unwrap_or_default();
    if theirs != command {
        return Err(Error::input(path, format!("this checkpoint was written by `dae {theirs}`, not `dae {command}`")));
    }
    let stored: Value = f.meta("identity")?;
    if let Some(diff) = first_difference("", &stored, &value(identity)) {
        return Err(Error::input(
            path,
            format!("this checkpoint does not match the command: {diff}. Resume with the settings and data it was made with"),
        ));
    }
    let counts: Value = f.meta("current")?;
    let current = if counts.is_null() {
        None
    } else {
        let n = |k: &str| counts[k].as_u64().unwrap_or(0) as usize;
        let mut take = |name: String| -> Result<Vec<f32>> {
            let len = f.tensor_len(&name)?;
            f.take_tensor(&name, &[len])
        };
        let params = (0..n("params")).map(|i| take(format!("current.param.{i}"))).collect::<Result<Vec<_>>>()?;
        let opt = (0..n("opt")).map(|i| take(format!("current.opt.{i}"))).collect::<Result<Vec<_>>>()?;
        let best = match counts["best"].as_u64() {
            Some(b) => Some((0..b).map(|i| take(format!("current.best.{i}"))).collect::<Result<Vec<_>>>()?),
            None => None,
        };
        let position: Position = f.meta("position")?;
        let history: Vec<EpochRecord> = f.meta("history")?;
        Some(Checkpoint { position, history, params, opt, best })
    };
    let done_meta: Vec<Value> = f.meta("done")?;
    let mut done = Vec::new();
    for (l, d) in done_meta.iter().enumerate() {
        let bad = |e: serde_json::Error| Error::input_at(path, "metadata 'done'", e.to_string());
        let config: DaeConfig = serde_json::from_value(d["config"].clone()).map_err(bad)?;
        let (dd, k) = (config.inputs, config.hidden);
        let w = f.take_tensor(&format!("done.{l}.W"), &[dd, k])?;
        let b = f.take_tensor(&format!("done.{l}.b"), &[k])?;
        let c = f.take_tensor(&format!("done.{l}.c"), &[dd])?;
        let v = if config.tied { None } else { Some(f.take_tensor(&format!("done.{l}.V"), &[k, dd])?) };
        done.push(DoneLayer {
            model: Dae { config, w, b, c, v },
            history: serde_json::from_value(d["history"].clone()).map_err(bad)?,
            best_epoch: serde_json::from_value(d["best_epoch"].clone()).map_err(bad)?,
        });
    }
    let log_bytes = f.metadata.get("log_bytes").and_then(|v| v.parse().ok());
    Ok(Loaded { done, current, log_bytes })
}

/// The first setting that differs between two identities, described for a person.
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                first_difference(&p, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(&format!("{path}[{i}]"), p, q)),
        _ if a == b => None,
        _ => Some(format!("{path} was {a} there but is {b} here")),
    }
}

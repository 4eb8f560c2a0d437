//! Model files: safetensors holding the weights, with the configuration, the fitted scaling, the
//! data's description and the per-epoch history as JSON in the metadata. Written atomically.
//!
//! Metadata keys: `format` = "dae", `format_version`, `kind` ("autoencoder", and for other model
//! kinds their own name), `config`, `train`, `scaling`, `data`, `history`, `best_epoch`.
//! Tensors of an autoencoder: `W` (d×k), `b` (k), `c` (d) and, untied, `V` (k×d), all f32.
//!
//! Reading them from Python:
//!
//! ```python
//! from safetensors.numpy import load_file
//! weights = load_file("model.safetensors")      # {"W": (784, 500) float32, "b": ..., "c": ...}
//! ```

use crate::atomic::{write_atomic, write_err};
use crate::config::{DaeConfig, TrainConfig};
use crate::dae::Dae;
use crate::data::{Dataset, Scaler};
use crate::error::{Error, Result};
use crate::network::{Network, NetworkConfig, Task};
use crate::stack::Stack;
use crate::train::EpochRecord;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// "a stack", "an autoencoder": a model kind with its article.
pub fn a_kind(kind: &str) -> String {
    if kind.is_empty() {
        return "an unnamed".into();
    }
    let vowel = kind.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {kind}", if vowel { "an" } else { "a" })
}

/// The version of the metadata layout this crate writes.
pub const FORMAT_VERSION: u32 = 1;

/// What the model was trained on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// The training file's name.
    pub source: String,
    pub rows: usize,
    pub cols: usize,
    /// Height × width of image rows, when known.
    pub image_shape: Option<(usize, usize)>,
}

impl DataInfo {
    pub fn of(ds: &Dataset) -> DataInfo {
        DataInfo {
            source: ds.source.display().to_string(),
            rows: ds.rows,
            cols: ds.cols,
            image_shape: ds.image_shape,
        }
    }
}

/// A single autoencoder with everything needed to use it and to know how it was made.
#[derive(Clone, Debug)]
pub struct SavedDae {
    pub model: Dae,
    pub scaler: Scaler,
    pub train: TrainConfig,
    pub history: Vec<EpochRecord>,
    pub best_epoch: Option<usize>,
    pub data: DataInfo,
}

/// A named f32 tensor to write.
pub struct TensorOut<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// Writes tensors and metadata to `path` atomically.
pub fn write_model_file(
    path: &Path,
    tensors: &[TensorOut<'_>],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            TensorView::new(Dtype::F32, t.shape.clone(), b)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::Runtime(format!("tensor {}: {e}", t.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let buf = safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| Error::Runtime(format!("{}: cannot serialise: {e}", path.display())))?;
    write_atomic(path, |w| w.write_all(&buf).map_err(write_err(path)))
}

/// A model file as read: metadata and f32 tensors.
pub struct ModelFile {
    pub path: PathBuf,
    pub kind: String,
    pub metadata: HashMap<String, String>,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl ModelFile {
    /// Reads and checks a dae model file: safetensors with `format` = "dae" metadata.
    pub fn read(path: &Path) -> Result<ModelFile> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "reading", e))?;
        ModelFile::parse(path, &bytes)
    }

    /// Parses the bytes of a model file; `path` names it in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<ModelFile> {
        let not_ours = |why: String| {
            Error::input(
                path,
                format!("not a dae model file ({why}); models are written by `dae train`"),
            )
        };
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| not_ours(format!("not a valid safetensors file: {}", describe(&e))))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        if metadata.get("format").map(String::as_str) != Some("dae") {
            return Err(not_ours("a safetensors file without dae metadata".into()));
        }
        let version: u32 = metadata
            .get("format_version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if version == 0 || version > FORMAT_VERSION {
            return Err(Error::input_at(
                path,
                "metadata 'format_version'",
                format!("version {version} is not supported by this dae (it reads up to {FORMAT_VERSION}); upgrade dae"),
            ));
        }
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| not_ours(format!("corrupt safetensors data: {}", describe(&e))))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(Error::input_at(
                    path,
                    format!("tensor '{name}'"),
                    format!("dtype {:?} is not f32", view.dtype()),
                ));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<f32>>();
            // A checkpoint may hold a diverging run's state (Adam's moments can overflow while
            // the weights stay finite): resuming it reports the divergence as training does.
            let checked = metadata.get("kind").map(String::as_str) != Some("checkpoint");
            if let Some(i) = values.iter().position(|v| checked && !v.is_finite()) {
                return Err(Error::input_at(
                    path,
                    format!("tensor '{name}'"),
                    format!("value {i} is {}: the file is damaged", values[i]),
                ));
            }
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        let kind = metadata.get("kind").cloned().unwrap_or_default();
        Ok(ModelFile {
            path: path.to_path_buf(),
            kind,
            metadata,
            tensors,
        })
    }

    /// The JSON metadata entry `key`, parsed.
    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let text = self.metadata.get(key).ok_or_else(|| {
            Error::input_at(&self.path, format!("metadata '{key}'"), "missing")
        })?;
        serde_json::from_str(text).map_err(|e| {
            Error::input_at(&self.path, format!("metadata '{key}'"), format!("invalid: {e}"))
        })
    }

    /// The number of values of tensor `name`.
    pub fn tensor_len(&self, name: &str) -> Result<usize> {
        self.tensors
            .get(name)
            .map(|(s, _)| s.iter().product())
            .ok_or_else(|| Error::input_at(&self.path, format!("tensor '{name}'"), "missing"))
    }

    /// Removes and returns tensor `name`, checking its shape.
    pub fn take_tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, v) = self.tensors.remove(name).ok_or_else(|| {
            Error::input_at(&self.path, format!("tensor '{name}'"), "missing")
        })?;
        if s != shape {
            return Err(Error::input_at(
                &self.path,
                format!("tensor '{name}'"),
                format!("shape {s:?} does not match the configuration's {shape:?}"),
            ));
        }
        Ok(v)
    }

    /// Fails unless the file holds a model of `kind`.
    pub fn expect_kind(&self, kind: &str, hint: &str) -> Result<()> {
        if self.kind != kind {
            return Err(Error::input(
                &self.path,
                format!("this is {} model, but {hint}", a_kind(&self.kind)),
            ));
        }
        Ok(())
    }
}

fn describe(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::MetadataIncompleteBuffer => "the file is truncated".into(),
        E::InvalidHeaderLength => "the file is truncated, or its first 8 bytes are not a safetensors header length".into(),
        other => other.to_string(),
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("configuration types serialise to JSON")
}

/// The metadata every model kind shares.
pub fn common_metadata(
    kind: &str,
    scaler: &Scaler,
    data: &DataInfo,
) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), "dae".to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("kind".to_string(), kind.to_string()),
        ("scaling".to_string(), json(scaler)),
        ("data".to_string(), json(data)),
    ])
}

impl SavedDae {
    /// Writes the model to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let (d, k) = (self.model.config.inputs, self.model.config.hidden);
        let mut tensors = vec![
            TensorOut { name: "W".into(), shape: vec![d, k], data: &self.model.w },
            TensorOut { name: "b".into(), shape: vec![k], data: &self.model.b },
            TensorOut { name: "c".into(), shape: vec![d], data: &self.model.c },
        ];
        if let Some(v) = &self.model.v {
            tensors.push(TensorOut { name: "V".into(), shape: vec![k, d], data: v });
        }
        let mut meta = common_metadata("autoencoder", &self.scaler, &self.data);
        meta.insert("config".into(), json(&self.model.config));
        meta.insert("train".into(), json(&self.train));
        meta.insert("history".into(), json(&self.history));
        meta.insert("best_epoch".into(), json(&self.best_epoch));
        write_model_file(path, &tensors, meta)
    }

    /// Reads an autoencoder model file.
    pub fn load(path: &Path) -> Result<SavedDae> {
        let mut f = ModelFile::read(path)?;
        f.expect_kind("autoencoder", "this command needs a single autoencoder from `dae train`")?;
        SavedDae::from_file(&mut f)
    }

    /// The autoencoder in an already-read model file.
    pub fn from_file(f: &mut ModelFile) -> Result<SavedDae> {
        let config: DaeConfig = f.meta("config")?;
        config
            .validate()
            .map_err(|e| Error::input_at(&f.path, "metadata 'config'", e.to_string()))?;
        let (d, k) = (config.inputs, config.hidden);
        let w = f.take_tensor("W", &[d, k])?;
        let b = f.take_tensor("b", &[k])?;
        let c = f.take_tensor("c", &[d])?;
        let v = if config.tied {
            None
        } else {
            Some(f.take_tensor("V", &[k, d])?)
        };
        let scaler: Scaler = f.meta("scaling")?;
        if scaler.width().is_some_and(|w| w != d) {
            return Err(Error::input_at(&f.path, "metadata 'scaling'", "width does not match the model"));
        }
        Ok(SavedDae {
            model: Dae { config, w, b, c, v },
            scaler,
            train: f.meta("train")?,
            history: f.meta("history")?,
            best_epoch: f.meta("best_epoch")?,
            data: f.meta("data")?,
        })
    }
}

/// A pretrained stack of autoencoders.
#[derive(Clone, Debug)]
pub struct SavedStack {
    pub stack: Stack,
    pub scaler: Scaler,
    /// Each layer's training configuration.
    pub train: Vec<TrainConfig>,
    pub histories: Vec<Vec<EpochRecord>>,
    pub best_epochs: Vec<Option<usize>>,
    pub data: DataInfo,
}

fn layer_tensors<'a>(prefix: &str, dae: &'a Dae, out: &mut Vec<TensorOut<'a>>) {
    let (d, k) = (dae.config.inputs, dae.config.hidden);
    out.push(TensorOut { name: format!("{prefix}W"), shape: vec![d, k], data: &dae.w });
    out.push(TensorOut { name: format!("{prefix}b"), shape: vec![k], data: &dae.b });
    out.push(TensorOut { name: format!("{prefix}c"), shape: vec![d], data: &dae.c });
    if let Some(v) = &dae.v {
        out.push(TensorOut { name: format!("{prefix}V"), shape: vec![k, d], data: v });
    }
}

fn read_layer(f: &mut ModelFile, prefix: &str, config: DaeConfig) -> Result<Dae> {
    config
        .validate()
        .map_err(|e| Error::input_at(&f.path, "metadata 'layers'", e.to_string()))?;
    let (d, k) = (config.inputs, config.hidden);
    let w = f.take_tensor(&format!("{prefix}W"), &[d, k])?;
    let b = f.take_tensor(&format!("{prefix}b"), &[k])?;
    let c = f.take_tensor(&format!("{prefix}c"), &[d])?;
    let v = if config.tied { None } else { Some(f.take_tensor(&format!("{prefix}V"), &[k, d])?) };
    Ok(Dae { config, w, b, c, v })
}

impl SavedStack {
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        let prefixes: Vec<String> = (0..self.stack.layers.len()).map(|i| format!("layers.{i}.")).collect();
        for (p, l) in prefixes.iter().zip(&self.stack.layers) {
            layer_tensors(p, l, &mut tensors);
        }
        let configs: Vec<&DaeConfig> = self.stack.layers.iter().map(|l| &l.config).collect();
        let mut meta = common_metadata("stack", &self.scaler, &self.data);
        meta.insert("layers".into(), json(&configs));
        meta.insert("train".into(), json(&self.train));
        meta.insert("history".into(), json(&self.histories));
        meta.insert("best_epoch".into(), json(&self.best_epochs));
        write_model_file(path, &tensors, meta)
    }

    /// Reads a stack model file.
    pub fn load(path: &Path) -> Result<SavedStack> {
        let mut f = ModelFile::read(path)?;
        f.expect_kind("stack", "this command needs a stack from `dae pretrain`")?;
        SavedStack::from_file(&mut f)
    }

    pub fn from_file(f: &mut ModelFile) -> Result<SavedStack> {
        let configs: Vec<DaeConfig> = f.meta("layers")?;
        let layers = configs
            .into_iter()
            .enumerate()
            .map(|(i, c)| read_layer(f, &format!("layers.{i}."), c))
            .collect::<Result<Vec<_>>>()?;
        let stack = Stack { layers };
        stack
            .validate()
            .map_err(|e| Error::input_at(&f.path, "metadata 'layers'", e.to_string()))?;
        Ok(SavedStack {
            stack,
            scaler: f.meta("scaling")?,
            train: f.meta("train")?,
            histories: f.meta("history")?,
            best_epochs: f.meta("best_epoch")?,
            data: f.meta("data")?,
        })
    }
}

/// A fine-tuned network: a classifier, or a regressor with `--regression`.
#[derive(Clone, Debug)]
pub struct SavedNetwork {
    pub network: Network,
    pub scaler: Scaler,
    pub train: TrainConfig,
    pub history: Vec<EpochRecord>,
    pub best_epoch: Option<usize>,
    pub data: DataInfo,
    /// Where the hidden layers came from: "pretrained: FILE" or "random".
    pub init: String,
    /// The CSV column of the data that held the labels, dropped from the features.
    pub label_column: Option<String>,
}

impl SavedNetwork {
    /// The model kind written to the file: "classifier" or "regressor".
    pub fn kind(&self) -> &'static str {
        match self.network.config.task {
            Task::Classification { .. } => "classifier",
            Task::Regression { .. } => "regressor",
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let cfg = &self.network.config;
        let layers = cfg.hidden_layers();
        let mut tensors = Vec::new();
        for l in 0..=layers {
            let (fin, fout) = cfg.layer_shape(l);
            let prefix = if l == layers { "output.".to_string() } else { format!("layers.{l}.") };
            tensors.push(TensorOut { name: format!("{prefix}W"), shape: vec![fin, fout], data: &self.network.weights[l] });
            tensors.push(TensorOut { name: format!("{prefix}b"), shape: vec![fout], data: &self.network.biases[l] });
        }
        let mut meta = common_metadata(self.kind(), &self.scaler, &self.data);
        meta.insert("network".into(), json(cfg));
        meta.insert("train".into(), json(&self.train));
        meta.insert("history".into(), json(&self.history));
        meta.insert("best_epoch".into(), json(&self.best_epoch));
        meta.insert("init".into(), self.init.clone());
        meta.insert("label_column".into(), json(&self.label_column));
        write_model_file(path, &tensors, meta)
    }

    /// Reads a classifier or regressor.
    pub fn load(path: &Path) -> Result<SavedNetwork> {
        let mut f = ModelFile::read(path)?;
        if f.kind != "classifier" && f.kind != "regressor" {
            return Err(Error::input(
                path,
                format!("this is {} model, but this command needs a classifier from `dae finetune`", a_kind(&f.kind)),
            ));
        }
        SavedNetwork::from_file(&mut f)
    }

    pub fn from_file(f: &mut ModelFile) -> Result<SavedNetwork> {
        let config: NetworkConfig = f.meta("network")?;
        config
            .validate()
            .map_err(|e| Error::input_at(&f.path, "metadata 'network'", e.to_string()))?;
        let layers = config.hidden_layers();
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for l in 0..=layers {
            let (fin, fout) = config.layer_shape(l);
            let prefix = if l == layers { "output.".to_string() } else { format!("layers.{l}.") };
            weights.push(f.take_tensor(&format!("{prefix}W"), &[fin, fout])?);
            biases.push(f.take_tensor(&format!("{prefix}b"), &[fout])?);
        }
        Ok(SavedNetwork {
            network: Network { config, weights, biases },
            scaler: f.meta("scaling")?,
            train: f.meta("train")?,
            history: f.meta("history")?,
            best_epoch: f.meta("best_epoch")?,
            data: f.meta("data")?,
            init: f.metadata.get("init").cloned().unwrap_or_default(),
            label_column: f.meta("label_column")?,
        })
    }
}

/// Any model file this crate writes.
#[derive(Clone, Debug)]
pub enum AnyModel {
    Autoencoder(SavedDae),
    Stack(SavedStack),
    Network(SavedNetwork),
}

impl AnyModel {
    /// Reads a model of any kind.
    pub fn load(path: &Path) -> Result<AnyModel> {
        AnyModel::from_file(ModelFile::read(path)?)
    }

    /// Parses a model of any kind held in memory; `name` stands for the file in errors.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<AnyModel> {
        AnyModel::from_file(ModelFile::parse(Path::new(name), bytes)?)
    }

    fn from_file(mut f: ModelFile) -> Result<AnyModel> {
        let path = f.path.clone();
        let path = &path;
        match f.kind.as_str() {
            "autoencoder" => Ok(AnyModel::Autoencoder(SavedDae::from_file(&mut f)?)),
            "stack" => Ok(AnyModel::Stack(SavedStack::from_file(&mut f)?)),
            "classifier" | "regressor" => Ok(AnyModel::Network(SavedNetwork::from_file(&mut f)?)),
            "checkpoint" => Err(Error::input(path, "this is a checkpoint (written by --checkpoint or on Ctrl-C), not a model: continue its training with --resume")),
            other => Err(Error::input_at(path, "metadata 'kind'", format!("unknown model kind '{other}'"))),
        }
    }

    /// The fitted scaling.
    pub fn scaler(&self) -> &Scaler {
        match self {
            AnyModel::Autoencoder(m) => &m.scaler,
            AnyModel::Stack(m) => &m.scaler,
            AnyModel::Network(m) => &m.scaler,
        }
    }

    /// What the model was trained on.
    pub fn data(&self) -> &DataInfo {
        match self {
            AnyModel::Autoencoder(m) => &m.data,
            AnyModel::Stack(m) => &m.data,
            AnyModel::Network(m) => &m.data,
        }
    }
}

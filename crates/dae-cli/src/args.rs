//! Every command, option, default and help text of the `dae` tool.

use clap::{Args, Parser, Subcommand, ValueEnum};
use dae::{Activation, Corruption, Emphasis, Loss, ScaleKind};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "dae",
    version,
    about = "Denoising autoencoders: train, encode, reconstruct, score",
    long_about = "Denoising autoencoders (Vincent et al., 2008): train one on your data, then use \
                  it for features (encode), denoising (reconstruct) and anomaly scores (score).\n\n\
                  Data: IDX (MNIST format, raw or .gz), NPY (f32, f64, u8) or numeric CSV. \
                  Outputs: .npy or .csv, chosen by the extension.\n\n\
                  Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a denoising autoencoder on DATA and save it to MODEL.
    Train(TrainArgs),
    /// Write the hidden code of every row (rows × hidden).
    Encode(EncodeArgs),
    /// Write the reconstruction of every row, optionally after corrupting it (rows × inputs).
    Reconstruct(ReconstructArgs),
    /// Write each row's value of the model's loss: an anomaly score (rows, or rows × inputs).
    Score(ScoreArgs),
    /// Show a model's configuration, sizes, scaling and training history.
    Inspect(InspectArgs),
    /// Train on embedded Fashion-MNIST images and write filters and reconstructions as PNG.
    Demo(DemoArgs),
}

/// Options of every command that computes.
#[derive(Args, Debug, Clone)]
pub struct RunOpts {
    /// Worker threads (default: every core). The same seed and thread count give bit-identical
    /// results.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Options for reading data files.
#[derive(Args, Debug, Clone)]
pub struct DataOpts {
    /// CSV only: treat the first line as a header (default: detected; a header has a field that
    /// is not a number).
    #[arg(long)]
    pub header: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerName {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training data: IDX, NPY or CSV.
    pub data: PathBuf,
    /// Where to write the model (safetensors).
    #[arg(short, long, value_name = "MODEL")]
    pub output: PathBuf,
    /// Hidden units k.
    #[arg(long, default_value_t = 500)]
    pub hidden: usize,
    /// Corruption: none, masking:ν, gaussian:σ or salt-and-pepper:ν.
    #[arg(long, default_value = "masking:0.3", value_name = "PROCESS")]
    pub noise: Corruption,
    /// Reconstruction loss: cross-entropy (inputs in [0, 1], sigmoid decoder) or squared-error.
    #[arg(long, default_value = "cross-entropy")]
    pub loss: Loss,
    /// Encoder activation: sigmoid, tanh, relu or identity.
    #[arg(long, default_value = "sigmoid")]
    pub encoder: Activation,
    /// Decoder activation: sigmoid, tanh, relu or identity.
    #[arg(long, default_value = "sigmoid")]
    pub decoder: Activation,
    /// Separate decoder weights instead of W' = Wᵀ.
    #[arg(long)]
    pub untied: bool,
    /// Emphasized denoising: loss weight ALPHA on corrupted inputs, BETA on the others.
    #[arg(long, value_name = "ALPHA,BETA")]
    pub emphasis: Option<Emphasis>,
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    /// Rows per minibatch.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = OptimizerName::Sgd)]
    pub optimizer: OptimizerName,
    /// Learning rate (default 0.1 for sgd, 0.001 for adam and adamw).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Multiply the learning rate by this after every epoch.
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR", allow_negative_numbers = true)]
    pub lr_decay: f32,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub momentum: f32,
    /// Nesterov momentum (SGD; needs --momentum).
    #[arg(long)]
    pub nesterov: bool,
    /// L2 penalty (sgd, adam) or decoupled decay (adamw; default 0.01 there, else 0).
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Adam's β₁.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub beta1: f32,
    /// Adam's β₂.
    #[arg(long, default_value_t = 0.999, allow_negative_numbers = true)]
    pub beta2: f32,
    /// Adam's ε.
    #[arg(long, default_value_t = 1e-8, allow_negative_numbers = true)]
    pub eps: f32,
    /// Seed of initialisation, shuffling, noise and the validation split.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Validation data (same format and width as DATA); its loss is reported each epoch.
    #[arg(long, value_name = "FILE", conflicts_with = "val_fraction")]
    pub val: Option<PathBuf>,
    /// Hold out this fraction of DATA's rows, at random, for validation.
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f32>,
    /// Stop after N epochs without a better validation loss, keeping the best weights.
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    /// Input scaling fitted on the training rows and stored in the model.
    #[arg(long, default_value = "none", value_name = "none|minmax|standardize")]
    pub scale: ScaleKind,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub run: RunOpts,
}

#[derive(Args, Debug)]
pub struct EncodeArgs {
    pub model: PathBuf,
    pub data: PathBuf,
    /// Output file (.npy or .csv).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub run: RunOpts,
}

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    pub model: PathBuf,
    pub data: PathBuf,
    /// Output file (.npy or .csv), in the units of DATA (the model's scaling is undone).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Corrupt the inputs before reconstructing (default: none).
    #[arg(long, default_value = "none", value_name = "PROCESS")]
    pub noise: Corruption,
    /// Seed of that corruption.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub run: RunOpts,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    pub model: PathBuf,
    pub data: PathBuf,
    /// Output file (.npy or .csv): one score per row.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Corrupt the inputs before scoring (default: none).
    #[arg(long, default_value = "none", value_name = "PROCESS")]
    pub noise: Corruption,
    /// Seed of that corruption.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write each input's term of the loss (rows × inputs) instead of the row sums.
    #[arg(long)]
    pub per_feature: bool,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub run: RunOpts,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Folder for the model and the pictures.
    #[arg(short, long, default_value = "dae-demo", value_name = "DIR")]
    pub output: PathBuf,
    /// Training epochs.
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    #[command(flatten)]
    pub run: RunOpts,
}

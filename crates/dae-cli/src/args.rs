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
    /// Pretrain a stack of denoising autoencoders greedily, layer by layer.
    Pretrain(PretrainArgs),
    /// Fine-tune a pretrained stack (or a fresh network) with labels: a classifier.
    Finetune(FinetuneArgs),
    /// Write a classifier's predicted classes (or probabilities) for every row.
    Predict(PredictArgs),
    /// Accuracy, per-class precision and recall, and the confusion matrix of a classifier.
    Evaluate(EvaluateArgs),
    /// Pictures of a model: its filters, its reconstructions, its learning curves.
    Viz(VizArgs),
    /// Write one self-contained HTML page about a model (works offline).
    Report(ReportArgs),
}

impl Command {
    /// The options of a command that computes.
    pub fn run_opts(&self) -> Option<&RunOpts> {
        match self {
            Command::Train(a) => Some(&a.run),
            Command::Encode(a) => Some(&a.run),
            Command::Reconstruct(a) => Some(&a.run),
            Command::Score(a) => Some(&a.run),
            Command::Demo(a) => Some(&a.run),
            Command::Pretrain(a) => Some(&a.run),
            Command::Finetune(a) => Some(&a.run),
            Command::Predict(a) => Some(&a.run),
            Command::Evaluate(a) => Some(&a.run),
            Command::Viz(VizArgs { what: VizCommand::Reconstructions(a) }) => Some(&a.run),
            Command::Report(a) => Some(&a.run),
            Command::Inspect(_) | Command::Viz(_) => None,
        }
    }
}

/// Checkpoints of a training command.
#[derive(Args, Debug, Clone)]
pub struct CheckpointOpts {
    /// Save the whole training state to PATH (atomically) every --checkpoint-every epochs; Ctrl-C
    /// saves it too (to MODEL.ckpt without this option) and exits with code 130.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Epochs between checkpoints (with --checkpoint).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "checkpoint")]
    pub checkpoint_every: usize,
    /// Continue from a checkpoint of the same command with the same settings and data
    /// (--epochs may be raised to train further); the result is bit-identical to an
    /// uninterrupted run on the same number of threads.
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,
}

/// Files a training command writes besides the model.
#[derive(Args, Debug, Clone)]
pub struct ExtraOutputs {
    /// Append one JSON object per epoch to FILE (stage, epoch, losses, accuracies, seconds, rate).
    #[arg(long, value_name = "FILE")]
    pub log_json: Option<PathBuf>,
    /// Write an HTML report about the trained model (and its training data) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// Height × width of image rows, as `28x28`.
pub fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| format!("'{s}' is not HEIGHTxWIDTH (for example 28x28)"))?;
    let num = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| format!("'{v}' in '{s}' is not a positive size"));
    Ok((num(h)?, num(w)?))
}

#[derive(Args, Debug)]
pub struct VizArgs {
    #[command(subcommand)]
    pub what: VizCommand,
}

#[derive(Subcommand, Debug)]
pub enum VizCommand {
    /// Each first-layer unit's input weights as an image tile, in a grid (PNG).
    Filters(VizFiltersArgs),
    /// Rows of clean, corrupted and reconstructed examples (PNG).
    Reconstructions(VizReconstructionsArgs),
    /// Training and validation loss (and accuracy) per epoch (PNG or SVG, by extension).
    Curves(VizCurvesArgs),
}

#[derive(Args, Debug)]
pub struct VizFiltersArgs {
    /// An autoencoder, a stack (its first layer) or a classifier (its first layer).
    pub model: PathBuf,
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    /// How many units to draw.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub units: usize,
    /// Image shape when the model does not know it (models trained on IDX or 3-D NPY do).
    #[arg(long, value_parser = parse_shape, value_name = "HxW")]
    pub shape: Option<(usize, usize)>,
}

#[derive(Args, Debug)]
pub struct VizReconstructionsArgs {
    /// An autoencoder or a stack (its first layer reconstructs).
    pub model: PathBuf,
    pub data: PathBuf,
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    /// Corruption to show (default: the model's own).
    #[arg(long, value_name = "PROCESS")]
    pub noise: Option<dae::Corruption>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many examples (spread evenly over DATA).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub rows: usize,
    #[arg(long, value_parser = parse_shape, value_name = "HxW")]
    pub shape: Option<(usize, usize)>,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub run: RunOpts,
}

#[derive(Args, Debug)]
pub struct VizCurvesArgs {
    pub model: PathBuf,
    /// Output file: .png or .svg.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Any model: autoencoder, stack or classifier.
    pub model: PathBuf,
    /// Data for reconstructions, the error histogram and anomalies (and, with labels, a
    /// classifier's confusion matrix).
    pub data: Option<PathBuf>,
    #[arg(short, long, value_name = "OUT.html")]
    pub output: PathBuf,
    /// True classes of DATA, for a classifier's confusion matrix.
    #[arg(long, value_name = "LABELS")]
    pub labels: Option<PathBuf>,
    /// The CSV column of LABELS (or of DATA) holding the labels.
    #[arg(long, value_name = "NAME")]
    pub label_column: Option<String>,
    /// Image shape when the model does not know it.
    #[arg(long, value_parser = parse_shape, value_name = "HxW")]
    pub shape: Option<(usize, usize)>,
    /// Rows in the table of anomalies.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub anomalies: usize,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub run: RunOpts,
}

/// Options of every command that computes.
#[derive(Args, Debug, Clone)]
pub struct RunOpts {
    /// Worker threads (default: every core), for the computation and for reading and writing
    /// CSV. The same seed and thread count give bit-identical results.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Where a command computes.
#[derive(Args, Debug, Clone)]
pub struct DeviceOpts {
    /// `auto` (a GPU when one is usable, else the CPU), `cpu`, `cuda` (or `gpu`) or `cuda:N`.
    /// Asked for a GPU where none is usable, the command says why and runs on the CPU.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,
    /// Matrix products in `fp32` (the default), or `tf32` (GPU tensor cores; fp32 where the
    /// command runs on the CPU because no GPU is usable). `bf16` is not implemented yet.
    #[arg(long, default_value = "fp32", value_name = "P")]
    pub precision: dae::Precision,
}

/// The optimiser and its constants (the learning rate is each command's own option).
#[derive(Args, Debug, Clone)]
pub struct OptimOpts {
    #[arg(long, value_enum, default_value_t = OptimizerName::Sgd)]
    pub optimizer: OptimizerName,
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
    /// Scale the gradients down when their global L2 norm exceeds this (before each step).
    #[arg(long, value_name = "NORM", allow_negative_numbers = true)]
    pub max_grad_norm: Option<f32>,
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
    /// Learning rate (default 0.1 for sgd, 0.001 for adam and adamw).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    #[command(flatten)]
    pub optim: OptimOpts,
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
    pub extra: ExtraOutputs,
    #[command(flatten)]
    pub checkpoints: CheckpointOpts,
    #[command(flatten)]
    pub run: RunOpts,
    #[command(flatten)]
    pub device: DeviceOpts,
}

#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// An autoencoder, a stack or a classifier.
    pub model: PathBuf,
    pub data: PathBuf,
    /// Output file (.npy or .csv).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// The (1-based) layer whose codes to write (default: the top one).
    #[arg(long, value_name = "K", conflicts_with = "all_layers")]
    pub layer: Option<usize>,
    /// Write every layer's codes side by side (rows × total units).
    #[arg(long)]
    pub all_layers: bool,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub run: RunOpts,
    #[command(flatten)]
    pub device: DeviceOpts,
}

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    pub model: PathBuf,
    pub data: PathBuf,
    /// Output file (.npy or .csv), in the units of DATA (the model's scaling is undone).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Corrupt the inputs before reconstructing.
    #[arg(long, default_value = "none", value_name = "PROCESS")]
    pub noise: Corruption,
    /// Seed of that corruption.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub run: RunOpts,
    #[command(flatten)]
    pub device: DeviceOpts,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    pub model: PathBuf,
    pub data: PathBuf,
    /// Output file (.npy or .csv): one score per row.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Corrupt the inputs before scoring.
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
    #[command(flatten)]
    pub device: DeviceOpts,
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

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Training data: IDX, NPY or CSV.
    pub data: PathBuf,
    /// Where to write the stack (safetensors).
    #[arg(short, long, value_name = "STACK")]
    pub output: PathBuf,
    /// Hidden units of each layer, bottom first.
    #[arg(long, default_value = "1000,1000,1000", value_name = "K1,K2,…")]
    pub layers: String,
    /// Corruption of each layer: one process for all, or a list (masking:0.1,0.2,0.3 gives the
    /// levels of layers 1, 2, 3). Default: masking at 0.1 for layer 1, 0.1 more per layer up
    /// (at most 0.5).
    #[arg(long, value_name = "PROCESS")]
    pub noise: Option<String>,
    /// Epochs per layer: one number for all, or a list.
    #[arg(long, default_value = "15", value_name = "N[,N…]")]
    pub epochs: String,
    /// Learning rate per layer: one for all, or a list (default 0.05 for sgd, 0.001 for adam
    /// and adamw).
    #[arg(long, value_name = "R[,R…]")]
    pub lr: Option<String>,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[command(flatten)]
    pub optim: OptimOpts,
    #[arg(long, default_value = "cross-entropy")]
    pub loss: Loss,
    #[arg(long, default_value = "sigmoid")]
    pub encoder: Activation,
    #[arg(long, default_value = "sigmoid")]
    pub decoder: Activation,
    #[arg(long)]
    pub untied: bool,
    #[arg(long, value_name = "ALPHA,BETA")]
    pub emphasis: Option<Emphasis>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Validation data, encoded through the layers below; each layer reports its loss on it.
    #[arg(long, value_name = "FILE", conflicts_with = "val_fraction")]
    pub val: Option<PathBuf>,
    /// Hold out this fraction of DATA's rows for validation.
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f32>,
    /// Stop each layer after N epochs without a better validation loss, keeping its best weights.
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    #[arg(long, default_value = "none", value_name = "none|minmax|standardize")]
    pub scale: ScaleKind,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub extra: ExtraOutputs,
    #[command(flatten)]
    pub checkpoints: CheckpointOpts,
    #[command(flatten)]
    pub run: RunOpts,
    #[command(flatten)]
    pub device: DeviceOpts,
}

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// STACK DATA (a stack from `dae pretrain` and the training data), or DATA alone with
    /// --from-scratch.
    #[arg(value_name = "STACK DATA", num_args = 1..=2, required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the classifier (safetensors).
    #[arg(short, long, value_name = "CLASSIFIER")]
    pub output: PathBuf,
    /// Labels: an IDX label file, an NPY array or a CSV file (one per row of DATA).
    #[arg(long, value_name = "LABELS")]
    pub labels: Option<PathBuf>,
    /// The CSV column holding the labels (a header name or a 1-based number): of LABELS, or
    /// without --labels of DATA itself, which is then not used as a feature.
    #[arg(long, value_name = "NAME")]
    pub label_column: Option<String>,
    /// Train the same network from random initialisation instead of a stack.
    #[arg(long)]
    pub from_scratch: bool,
    /// With --from-scratch: hidden units of each layer.
    #[arg(long, value_name = "K1,K2,…")]
    pub layers: Option<String>,
    /// With --from-scratch: the hidden units' activation [default: sigmoid].
    #[arg(long)]
    pub activation: Option<Activation>,
    /// Real-valued targets: a linear output with squared error instead of a softmax.
    #[arg(long)]
    pub regression: bool,
    /// The number of classes (default: the largest label + 1).
    #[arg(long, value_name = "N")]
    pub classes: Option<usize>,
    /// Train on the first N rows of each class only (few-label experiments); the other rows are
    /// not used.
    #[arg(long, value_name = "N")]
    pub per_class: Option<usize>,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Learning rate (default 0.1 for sgd, 0.001 for adam and adamw).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    #[command(flatten)]
    pub optim: OptimOpts,
    /// Inverted dropout on every hidden layer while training.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub dropout: f32,
    /// Inverted dropout on the inputs while training.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub input_dropout: f32,
    /// Images only (IDX, 3-D NPY): move each training image by a random whole number of pixels,
    /// up to this many in each direction, drawn afresh every epoch; vacated pixels are 0.
    #[arg(long, default_value_t = 0, value_name = "PIXELS")]
    pub shift: u32,
    /// Images only: mirror each training image left to right with probability 1/2, drawn afresh
    /// every epoch.
    #[arg(long)]
    pub flip: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Validation data (with --val-labels, or its own --label-column).
    #[arg(long, value_name = "FILE", conflicts_with = "val_fraction")]
    pub val: Option<PathBuf>,
    /// Labels of the validation data.
    #[arg(long, value_name = "LABELS", requires = "val")]
    pub val_labels: Option<PathBuf>,
    /// Hold out this fraction of the rows for validation.
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f32>,
    /// Stop after N epochs without a better validation loss, keeping the best weights.
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    /// With --from-scratch: input scaling (a stack brings its own) [default: none].
    #[arg(long, value_name = "none|minmax|standardize")]
    pub scale: Option<ScaleKind>,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub extra: ExtraOutputs,
    #[command(flatten)]
    pub checkpoints: CheckpointOpts,
    #[command(flatten)]
    pub run: RunOpts,
    #[command(flatten)]
    pub device: DeviceOpts,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    pub classifier: PathBuf,
    pub data: PathBuf,
    /// Output file (.npy or .csv): one class per row (int64 in .npy).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Write the class probabilities instead (rows × classes).
    #[arg(long)]
    pub proba: bool,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub run: RunOpts,
    #[command(flatten)]
    pub device: DeviceOpts,
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    pub classifier: PathBuf,
    pub data: PathBuf,
    /// The true labels (default: the classifier's label column in DATA).
    #[arg(long, value_name = "LABELS")]
    pub labels: Option<PathBuf>,
    /// The CSV column of LABELS holding the labels.
    #[arg(long, value_name = "NAME")]
    pub label_column: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data_opts: DataOpts,
    #[command(flatten)]
    pub run: RunOpts,
    #[command(flatten)]
    pub device: DeviceOpts,
}

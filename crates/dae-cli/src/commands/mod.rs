//! One module per command.

pub mod apply;
pub mod demo;
pub mod finetune;
pub mod inspect;
pub mod predict;
pub mod pretrain;
pub mod train;
pub mod viz;

use crate::args::{CheckpointOpts, DataOpts, DeviceOpts, ExtraOutputs, RunOpts};
use crate::checkpoint;
use crate::progress::Progress;
use crate::report::{render, ReportInput};
use dae::atomic::{write_atomic, write_err};
use dae::{AnyModel, Cpu};
use dae::train::holdout;
use dae::{read_data, Dataset, Error, ReadOptions, Result, Split};
use std::path::Path;

/// The device a command computes on.
pub enum Engine {
    Cpu(Cpu),
    Cuda(dae::Cuda),
}

/// Runs `$body` with `$be` bound to the engine's backend (a `&Cpu` or a `&Cuda`): the body is
/// compiled once per backend.
#[macro_export]
macro_rules! on_engine {
    ($engine:expr, |$be:ident| $body:expr) => {
        match $engine {
            $crate::commands::Engine::Cpu(ref $be) => $body,
            $crate::commands::Engine::Cuda(ref $be) => $body,
        }
    };
}

impl Engine {
    /// The engine `--device` asks for. A GPU that is asked for but not usable falls back to
    /// the CPU with a message saying why; `auto` says which GPU it took.
    pub fn open(dev: &DeviceOpts, run: &RunOpts) -> Result<Engine> {
        let device = dev.device.trim();
        let ordinal = match device {
            "cpu" => None,
            "auto" | "cuda" | "gpu" => Some(0),
            d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Some(n),
                _ => return Err(Error::usage("--device", format!("'{d}' is not a device: use auto, cpu, cuda (or gpu) or cuda:N"))),
            },
        };
        // TF32 asked for with a GPU that is not usable: fp32 on the CPU, saying so.
        let tf32 = dev.precision == dae::Precision::Tf32;
        let cpu = |why: Option<String>| -> Result<Engine> {
            if tf32 && ordinal.is_none() {
                return Err(Error::usage("--precision", "tf32 is for GPU products; on the CPU use fp32"));
            }
            if dev.precision == dae::Precision::Bf16 {
                return Err(Error::usage("--precision", "bf16 is not implemented yet (it needs the AVX-512 BF16 instructions, which this build does not use): use fp32"));
            }
            if let (Some(w), false) = (why, run.quiet) {
                let fp32 = if tf32 { " in fp32 (tf32 is for GPU products)" } else { "" };
                errln!("{w}; running on the CPU{fp32}");
            }
            Ok(Engine::Cpu(Cpu::new(run.threads)?))
        };
        let Some(n) = ordinal else { return cpu(None) };
        if let Some(why) = dae::backend::cuda::unavailable() {
            let say = device != "auto" || tf32;
            return cpu(say.then(|| format!("--device {device}: no usable GPU ({why})")));
        }
        match dae::Cuda::new(n, dev.precision) {
            Ok(g) => {
                if !run.quiet && device == "auto" {
                    errln!("using {} (--device cpu to stay on the CPU)", g.name());
                }
                Ok(Engine::Cuda(g))
            }
            Err(e @ Error::Usage { .. }) => Err(e),
            Err(e) => cpu(Some(format!("--device {device}: {e}"))),
        }
    }
}

/// Validation rows: from a separate file, or held out of the training data.
pub struct Validation {
    /// A separate validation file.
    pub external: Option<Dataset>,
    /// Rows of the training data held out.
    pub holdout: Option<Vec<u32>>,
}

impl Validation {
    /// The validation split, over `train_data` for a holdout.
    pub fn split<'a>(&'a self, train_data: &'a Dataset) -> Option<Split<'a>> {
        match (&self.external, &self.holdout) {
            (Some(v), _) => Some(Split::all(v)),
            (None, Some(rows)) => Some(Split { data: train_data, rows: rows.clone() }),
            (None, None) => None,
        }
    }
}

/// "1 epoch", "N epochs".
pub fn epochs(n: usize) -> String {
    if n == 1 {
        "1 epoch".into()
    } else {
        format!("{n} epochs")
    }
}

/// The training rows of `ds` and the validation data from `--val FILE` or `--val-fraction F`.
pub fn validation_split(
    ds: &Dataset,
    val: Option<&Path>,
    fraction: Option<f32>,
    seed: u64,
    opts: &ReadOptions,
) -> Result<(Vec<u32>, Validation)> {
    if let Some(p) = val {
        let v = read_data(p, opts)?;
        v.check_width(ds.cols, &format!("the training data {}", ds.source.display()))?;
        return Ok(((0..ds.rows as u32).collect(), Validation { external: Some(v), holdout: None }));
    }
    match fraction {
        Some(f) => {
            let (t, v) = holdout(ds.rows, f, seed)?;
            Ok((t, Validation { external: None, holdout: Some(v) }))
        }
        None => Ok(((0..ds.rows as u32).collect(), Validation { external: None, holdout: None })),
    }
}

/// Reading options from the command line.
pub fn read_options(o: &DataOpts) -> ReadOptions {
    ReadOptions {
        header: o.header.then_some(true),
    }
}

/// Refuses, naming `option`, an autoencoder that training could not hold in memory (batches of
/// `batch` rows; `kept` values held besides, such as the codes a stack keeps for its next layer).
pub fn check_dae_memory(option: &str, config: &dae::DaeConfig, batch: usize, kept: u128) -> Result<()> {
    let (d, k) = (config.inputs as u128, config.hidden as u128);
    let weights = if config.tied { d * k } else { 2 * d * k };
    // A batch holds x, x̃, the mask and the reconstruction (d each), the code and its gradient.
    dae::memory::check_model(option, weights + d + k, batch as u128 * (4 * d + 2 * k), kept)
}

/// Refuses, naming `option`, a network of these layer widths (inputs first, outputs last) that
/// training could not hold in memory, at batches of `batch` rows.
pub fn check_network_memory(option: &str, widths: &[usize], batch: usize) -> Result<()> {
    let w: Vec<u128> = widths.iter().map(|&x| x as u128).collect();
    let params = w.windows(2).map(|p| p[0].saturating_mul(p[1]).saturating_add(p[1])).fold(0u128, u128::saturating_add);
    // Each unit of a batch row: its activation, its gradient and a dropout mask.
    dae::memory::check_model(option, params, (batch as u128).saturating_mul(3 * w.iter().sum::<u128>()), 0)
}

/// Refuses an output (of `option`) that is one of the command's input files: writing it would
/// destroy the input (`dae train data.csv -o data.csv`).
pub fn not_an_input(output: &Path, option: &str, inputs: &[Option<&Path>]) -> Result<()> {
    let Ok(out) = std::fs::canonicalize(output) else { return Ok(()) };
    for input in inputs.iter().flatten() {
        if std::fs::canonicalize(input).is_ok_and(|i| i == out) {
            return Err(Error::usage(option, format!("{} is also an input of this command; writing it would destroy it", output.display())));
        }
    }
    Ok(())
}

/// Refuses standard input (`-`) for more than one of `inputs` (each with the option that names
/// it): it can be read only once.
pub fn one_standard_input(inputs: &[(&str, Option<&Path>)]) -> Result<()> {
    let mut stdin = inputs.iter().filter(|(_, p)| p.is_some_and(|p| p.as_os_str() == "-")).map(|(name, _)| *name);
    if let (Some(first), Some(second)) = (stdin.next(), stdin.next()) {
        return Err(Error::usage(second, format!("standard input is already {first}: it can be read only once, so give this as a file or another pipe")));
    }
    Ok(())
}

/// [`not_an_input`] for a training command's output and its extra outputs (`--report`,
/// `--log-json`, `--checkpoint`).
pub fn outputs_not_inputs(output: &Path, extra: &ExtraOutputs, ck: &CheckpointOpts, inputs: &[Option<&Path>]) -> Result<()> {
    not_an_input(output, "--output", inputs)?;
    for (path, option) in [(&extra.report, "--report"), (&extra.log_json, "--log-json"), (&ck.checkpoint, "--checkpoint")] {
        if let Some(p) = path {
            not_an_input(p, option, inputs)?;
        }
    }
    Ok(())
}

/// Fails early, before any long computation, when `path` cannot be written to: its folder is
/// missing or it names a folder.
pub fn check_output(path: &Path, option: &str) -> Result<()> {
    if path.is_dir() {
        return Err(Error::usage(option, format!("{} is a folder, not a file name", path.display())));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::usage(option, format!("{} is a file, not a folder", dir.display())));
        }
        if !dir.is_dir() {
            return Err(Error::usage(
                option,
                format!("the folder {} does not exist", dir.display()),
            ));
        }
    }
    Ok(())
}

/// The progress display of a training command that writes `output`: its `--log-json` file,
/// its checkpoints (every `--checkpoint-every` epochs, and on Ctrl-C), and the checkpoint to
/// resume from, which must have been written by `command` with the same `identity`.
pub fn progress(
    run: &RunOpts,
    extra: &ExtraOutputs,
    ck: &CheckpointOpts,
    output: &Path,
    command: &'static str,
    identity: serde_json::Value,
) -> Result<(Progress, Option<checkpoint::Loaded>)> {
    if let Some(p) = &extra.report {
        check_output(p, "--report")?;
    }
    if let Some(p) = &extra.log_json {
        check_output(p, "--log-json")?;
    }
    if ck.checkpoint_every == 0 {
        return Err(Error::usage("--checkpoint-every", "must be at least 1 epoch"));
    }
    let path = match &ck.checkpoint {
        Some(p) => {
            check_output(p, "--checkpoint")?;
            p.clone()
        }
        None => {
            let mut name = output.as_os_str().to_owned();
            name.push(".ckpt");
            name.into()
        }
    };
    let resume = match &ck.resume {
        Some(p) => Some(checkpoint::read(p, command, &identity)?),
        None => None,
    };
    let sink = checkpoint::Sink {
        path,
        every: if ck.checkpoint.is_some() { ck.checkpoint_every } else { 0 },
        command,
        identity,
        done: Vec::new(),
        stop: checkpoint::stop_on_ctrl_c(),
    };
    // A resumed run drops the epochs its log holds after the checkpoint, as it logs its first.
    let trim = resume.as_ref().and_then(|r| crate::progress::LogTrim::of(r, command == "pretrain"));
    let p = Progress::new(run.quiet, "").with_log(extra.log_json.as_deref())?.with_checkpoints(sink).with_trim(trim);
    Ok((p, resume))
}

/// Refuses a resume that `--epochs` contradicts: a checkpoint's stage cannot be given fewer
/// epochs than it has done, and a finished layer of a stack cannot train further (only layers
/// after it can). `epochs` and `patience` are per stage (one for train and finetune).
pub fn check_resume_epochs(resume: Option<&checkpoint::Loaded>, asked: &[usize], patience: &[Option<usize>]) -> Result<()> {
    let Some(r) = resume else { return Ok(()) };
    let layer = |i: usize| if asked.len() > 1 { format!("layer {}", i + 1) } else { "the run".to_string() };
    for (i, d) in r.done.iter().enumerate() {
        let h = d.history.len();
        if asked[i] < h || (asked[i] > h && patience[i].is_none()) {
            return Err(Error::usage(
                "--epochs",
                format!("{} finished after {} in the checkpoint and cannot train further or be undone: give it {h} (later layers may change)", layer(i), epochs(h)),
            ));
        }
    }
    if let Some(c) = &r.current {
        let i = r.done.len();
        if asked[i] < c.position.epochs_done {
            return Err(Error::usage(
                "--epochs",
                format!("{} has done {} in the checkpoint: give it at least that many", layer(i), epochs(c.position.epochs_done)),
            ));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes).map_err(write_err(path)))
}

/// `--report`: the HTML report of the model just written to `model_path`, on `data`.
pub fn write_report(threads: Option<usize>, report: Option<&Path>, model_path: &Path, data: Option<&Dataset>, labels: Option<&[u32]>, quiet: bool) -> Result<()> {
    let Some(out) = report else { return Ok(()) };
    let model = AnyModel::load(model_path)?;
    let cpu = Cpu::new(threads)?;
    let html = render(&cpu, &ReportInput { model_path, model: &model, data, labels, shape: None, anomalies: 10 })?;
    write_file(out, html.as_bytes())?;
    if !quiet {
        errln!("wrote {}", out.display());
    }
    Ok(())
}

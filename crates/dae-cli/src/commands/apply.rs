//! `dae encode`, `dae reconstruct` and `dae score`: apply a trained autoencoder to data.

use super::{check_output, read_options};
use crate::args::{DataOpts, DeviceOpts, EncodeArgs, ReconstructArgs, RunOpts, ScoreArgs};
use dae::data::{io_threads, write_vector, MatrixWriter, OutputFormat};
use dae::infer::{encode_each, reconstruct_each, score_all, score_each, EvalNoise};
use dae::network::hidden_each;
use dae::{read_data, AnyModel, Dataset, Error, Result, SavedDae};
use crate::progress::loss;
use std::path::Path;

/// Loads the model and the data, checking that they fit together and that the output is
/// writable, before any computation.
fn load(
    model: &Path,
    data: &Path,
    output: &Path,
    data_opts: &DataOpts,
    run: &RunOpts,
    device: &DeviceOpts,
) -> Result<(SavedDae, Dataset, super::Engine)> {
    OutputFormat::from_path(output)?;
    check_output(output, "--output")?;
    super::not_an_input(output, "--output", &[Some(model), Some(data)])?;
    let saved = SavedDae::load(model)?;
    let ds = read_data(data, &read_options(data_opts))?;
    ds.check_width(
        saved.model.config.inputs,
        &format!("the model {}", model.display()),
    )?;
    Ok((saved, ds, super::Engine::open(device, run)?))
}

/// A check, between chunks, for Ctrl-C or SIGTERM: an output written as it is computed is then
/// dropped (its temporary file removed, an older file kept) and the command ends with exit
/// code 130. A second Ctrl-C ends the process at once.
fn interruptible(output: &Path) -> impl Fn() -> Result<()> + Send + Sync + '_ {
    let flag = crate::checkpoint::stop_on_ctrl_c();
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, std::sync::Arc::clone(&flag));
    move || {
        if flag.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Interrupted(format!("interrupted: {} was not written", output.display())));
        }
        Ok(())
    }
}

fn done(run: &RunOpts, output: &Path, rows: usize, cols: usize) {
    if !run.quiet {
        errln!("wrote {}: {rows} × {cols}", output.display());
    }
}

pub fn encode(a: EncodeArgs) -> Result<()> {
    OutputFormat::from_path(&a.output)?;
    check_output(&a.output, "--output")?;
    super::not_an_input(&a.output, "--output", &[Some(&a.model), Some(&a.data)])?;
    let model = AnyModel::load(&a.model)?;
    let mut ds = read_data(&a.data, &read_options(&a.data_opts))?;
    let engine = super::Engine::open(&a.device, &a.run)?;
    // Every model is a stack of encoders: its hidden sizes, and a way to compute layer codes.
    let sizes: Vec<usize> = match &model {
        AnyModel::Autoencoder(m) => vec![m.model.config.inputs, m.model.config.hidden],
        AnyModel::Stack(m) => m.stack.sizes(),
        AnyModel::Network(m) => m.network.config.sizes.clone(),
    };
    if let AnyModel::Network(m) = &model {
        if let (Some(col), Some(names)) = (&m.label_column, &ds.column_names) {
            if names.contains(col) {
                ds = dae::data::take_column(&ds, col)?.1;
            }
        }
    }
    ds.check_width(sizes[0], &format!("the model {}", a.model.display()))?;
    let depth = sizes.len() - 1;
    let layer = a.layer.unwrap_or(depth);
    if layer == 0 || layer > depth {
        return Err(Error::usage("--layer", format!("{layer} is not a layer of this model: it has layers 1 to {depth}")));
    }
    let upto = if a.all_layers { depth } else { layer };
    let scaler = model.scaler();
    if let AnyModel::Autoencoder(m) = &model {
        // The codes go to the file as they are computed, never all in memory.
        let k = m.model.config.hidden;
        let stop = interruptible(&a.output);
        let mut w = MatrixWriter::create(&a.output, ds.rows, k, io_threads())?;
        crate::on_engine!(&engine, |be| encode_each(be, &m.model, &ds, scaler, |block| {
            stop()?;
            w.write_rows(block)
        }))?;
        w.finish()?;
        done(&a.run, &a.output, ds.rows, k);
        return Ok(());
    }
    // As they are computed too: a chunk of rows through every layer at a time.
    let width = if a.all_layers { sizes[1..].iter().sum() } else { sizes[layer] };
    let stop = interruptible(&a.output);
    let mut w = MatrixWriter::create(&a.output, ds.rows, width, io_threads())?;
    let write = |block: &mut [f32]| {
        stop()?;
        w.write_rows(block)
    };
    match &model {
        AnyModel::Autoencoder(_) => unreachable!("written above"),
        AnyModel::Stack(m) => crate::on_engine!(&engine, |be| m.stack.encode_each(be, &ds, scaler, upto, a.all_layers, write))?,
        AnyModel::Network(m) => crate::on_engine!(&engine, |be| hidden_each(be, &m.network, &ds, scaler, upto, a.all_layers, write))?,
    }
    w.finish()?;
    done(&a.run, &a.output, ds.rows, width);
    Ok(())
}

pub fn reconstruct(a: ReconstructArgs) -> Result<()> {
    a.noise.validate("--noise")?;
    let (saved, ds, engine) = load(&a.model, &a.data, &a.output, &a.data_opts, &a.run, &a.device)?;
    let d = saved.model.config.inputs;
    let noise = EvalNoise { noise: a.noise, seed: a.seed };
    let stop = interruptible(&a.output);
    let mut w = MatrixWriter::create(&a.output, ds.rows, d, io_threads())?;
    let scaler = &saved.scaler;
    crate::on_engine!(&engine, |be| reconstruct_each(be, &saved.model, &ds, scaler, noise, |block| {
        stop()?;
        for row in block.chunks_exact_mut(d) {
            scaler.invert_row(row);
        }
        w.write_rows(block)
    }))?;
    w.finish()?;
    done(&a.run, &a.output, ds.rows, d);
    Ok(())
}

pub fn score(a: ScoreArgs) -> Result<()> {
    a.noise.validate("--noise")?;
    let (saved, ds, engine) = load(&a.model, &a.data, &a.output, &a.data_opts, &a.run, &a.device)?;
    if saved.model.config.loss == dae::Loss::CrossEntropy {
        ds.check_unit_interval(&saved.scaler)?;
    }
    let noise = EvalNoise { noise: a.noise, seed: a.seed };
    if a.per_feature {
        let d = saved.model.config.inputs;
        let stop = interruptible(&a.output);
        let mut w = MatrixWriter::create(&a.output, ds.rows, d, io_threads())?;
        crate::on_engine!(&engine, |be| score_each(be, &saved.model, &ds, &saved.scaler, noise, true, |block| {
            stop()?;
            w.write_rows(block)
        }))?;
        w.finish()?;
        done(&a.run, &a.output, ds.rows, d);
    } else {
        let s = crate::on_engine!(&engine, |be| score_all(be, &saved.model, &ds, &saved.scaler, noise, false))?;
        write_vector(&a.output, &s)?;
        if !a.run.quiet {
            let mean = s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64;
            // NaN, should a score be one, shows rather than disappearing into the maximum.
            let max = s.iter().copied().fold(f32::NEG_INFINITY, |m, v| if v.is_nan() || v > m { v } else { m });
            errln!("wrote {}: {} scores, mean {}, max {}", a.output.display(), s.len(), loss(mean), loss(max as f64));
        }
    }
    Ok(())
}

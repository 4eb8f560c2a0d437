//! `dae encode`, `dae reconstruct` and `dae score`: apply a trained autoencoder to data.

use super::{check_output, read_options};
use crate::args::{DataOpts, EncodeArgs, ReconstructArgs, RunOpts, ScoreArgs};
use dae::data::{write_matrix, write_vector, OutputFormat};
use dae::infer::{encode_all, reconstruct_all, score_all, EvalNoise};
use dae::{read_data, Cpu, Dataset, Result, SavedDae};
use std::path::Path;

/// Loads the model and the data, checking that they fit together and that the output is
/// writable, before any computation.
fn load(
    model: &Path,
    data: &Path,
    output: &Path,
    data_opts: &DataOpts,
    run: &RunOpts,
) -> Result<(SavedDae, Dataset, Cpu)> {
    OutputFormat::from_path(output)?;
    check_output(output, "--output")?;
    let saved = SavedDae::load(model)?;
    let ds = read_data(data, &read_options(data_opts))?;
    ds.check_width(
        saved.model.config.inputs,
        &format!("the model {}", model.display()),
    )?;
    Ok((saved, ds, Cpu::new(run.threads)?))
}

fn done(run: &RunOpts, output: &Path, rows: usize, cols: usize) {
    if !run.quiet {
        eprintln!("wrote {}: {rows} × {cols}", output.display());
    }
}

pub fn encode(a: EncodeArgs) -> Result<()> {
    let (saved, ds, cpu) = load(&a.model, &a.data, &a.output, &a.data_opts, &a.run)?;
    let k = saved.model.config.hidden;
    let codes = encode_all(&cpu, &saved.model, &ds, &saved.scaler)?;
    write_matrix(&a.output, ds.rows, k, &codes)?;
    done(&a.run, &a.output, ds.rows, k);
    Ok(())
}

pub fn reconstruct(a: ReconstructArgs) -> Result<()> {
    a.noise.validate("--noise")?;
    let (saved, ds, cpu) = load(&a.model, &a.data, &a.output, &a.data_opts, &a.run)?;
    let d = saved.model.config.inputs;
    let noise = EvalNoise { noise: a.noise, seed: a.seed };
    let mut z = reconstruct_all(&cpu, &saved.model, &ds, &saved.scaler, noise)?;
    for row in z.chunks_exact_mut(d) {
        saved.scaler.invert_row(row);
    }
    write_matrix(&a.output, ds.rows, d, &z)?;
    done(&a.run, &a.output, ds.rows, d);
    Ok(())
}

pub fn score(a: ScoreArgs) -> Result<()> {
    a.noise.validate("--noise")?;
    let (saved, ds, cpu) = load(&a.model, &a.data, &a.output, &a.data_opts, &a.run)?;
    if saved.model.config.loss == dae::Loss::CrossEntropy {
        ds.check_unit_interval(&saved.scaler)?;
    }
    let noise = EvalNoise { noise: a.noise, seed: a.seed };
    let s = score_all(&cpu, &saved.model, &ds, &saved.scaler, noise, a.per_feature)?;
    if a.per_feature {
        let d = saved.model.config.inputs;
        write_matrix(&a.output, ds.rows, d, &s)?;
        done(&a.run, &a.output, ds.rows, d);
    } else {
        write_vector(&a.output, &s)?;
        if !a.run.quiet {
            let mean = s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64;
            let max = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            eprintln!("wrote {}: {} scores, mean {mean:.4}, max {max:.4}", a.output.display(), s.len());
        }
    }
    Ok(())
}

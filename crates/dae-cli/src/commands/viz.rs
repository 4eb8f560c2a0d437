//! `dae viz` (filters, reconstructions, curves) and `dae report`.

use super::{check_output, read_options, write_file};
use crate::args::{ReportArgs, VizArgs, VizCommand};
use crate::images::{curves, filters_png, first_layer, image_shape, reconstructions_png, reconstructor};
use crate::report::{render, ReportInput};
use dae::infer::EvalNoise;
use dae::network::Task;
use dae::{read_data, AnyModel, Cpu, Error, Result};
use dae_viz::chart::Format;

/// Refuses an output name that does not end in `.png`: the picture is a PNG.
fn png_output(output: &std::path::Path) -> Result<()> {
    check_output(output, "--output")?;
    if !output.to_string_lossy().to_lowercase().ends_with(".png") {
        return Err(Error::usage("--output", format!("{}: the picture is a PNG; name the file .png", output.display())));
    }
    Ok(())
}

pub fn run(a: VizArgs) -> Result<()> {
    match a.what {
        VizCommand::Filters(a) => {
            png_output(&a.output)?;
            let model = AnyModel::load(&a.model)?;
            let shape = image_shape(&model, a.shape, &a.model)?;
            if a.units == 0 {
                return Err(Error::usage("--units", "at least one unit"));
            }
            let units = a.units.min(first_layer(&model).2);
            write_file(&a.output, &filters_png(&model, shape, units))?;
            errln!("wrote {}: {units} filters of {}×{}", a.output.display(), shape.0, shape.1);
        }
        VizCommand::Reconstructions(a) => {
            png_output(&a.output)?;
            super::not_an_input(&a.output, "--output", &[Some(&a.model), Some(&a.data)])?;
            let model = AnyModel::load(&a.model)?;
            let dae = reconstructor(&model).ok_or_else(|| {
                Error::input(&a.model, "a classifier does not reconstruct its inputs: give an autoencoder or a stack")
            })?;
            let shape = image_shape(&model, a.shape, &a.model)?;
            let ds = read_data(&a.data, &read_options(&a.data_opts))?;
            ds.check_width(dae.config.inputs, &format!("the model {}", a.model.display()))?;
            if a.rows == 0 {
                return Err(Error::usage("--rows", "at least one row"));
            }
            let count = a.rows.min(ds.rows);
            let rows: Vec<usize> = (0..count).map(|i| i * ds.rows / count).collect();
            let noise = a.noise.unwrap_or(dae.config.noise);
            noise.validate("--noise")?;
            let cpu = Cpu::new(a.run.threads)?;
            let png = reconstructions_png(&cpu, dae, &ds, model.scaler(), &rows, EvalNoise { noise, seed: a.seed }, shape)?;
            write_file(&a.output, &png)?;
            if !a.run.quiet {
                errln!("wrote {}: {count} examples, clean / {noise} / reconstructed", a.output.display());
            }
        }
        VizCommand::Curves(a) => {
            check_output(&a.output, "--output")?;
            let name = a.output.to_string_lossy().to_lowercase();
            if !(name.ends_with(".png") || name.ends_with(".svg")) {
                return Err(Error::usage("--output", format!("{}: name the file .png or .svg", a.output.display())));
            }
            let model = AnyModel::load(&a.model)?;
            write_file(&a.output, &curves(&model, Format::from_name(&name))?)?;
            errln!("wrote {}", a.output.display());
        }
    }
    Ok(())
}

pub fn report(a: ReportArgs) -> Result<()> {
    check_output(&a.output, "--output")?;
    super::not_an_input(&a.output, "--output", &[Some(&a.model), a.data.as_deref(), a.labels.as_deref()])?;
    let model = AnyModel::load(&a.model)?;
    let opts = read_options(&a.data_opts);
    let (data, labels) = match &a.data {
        None => (None, None),
        Some(p) => {
            let raw = read_data(p, &opts)?;
            let classifier = match &model {
                AnyModel::Network(m) => match m.network.config.task {
                    Task::Classification { classes } => Some((classes, m.label_column.clone())),
                    Task::Regression { .. } => None,
                },
                _ => None,
            };
            match classifier {
                Some((classes, own_column)) => {
                    let column = a.label_column.clone().or(if a.labels.is_none() { own_column } else { None });
                    if a.labels.is_some() || column.is_some() {
                        let (ds, t) = super::finetune::features_and_targets(raw, a.labels.as_deref(), column.as_deref(), &opts)?;
                        let truth = t.classes(Some(classes), "the classifier")?;
                        (Some(ds), Some(truth))
                    } else {
                        (Some(raw), None)
                    }
                }
                None => (Some(raw), None),
            }
        }
    };
    if let Some(ds) = &data {
        ds.check_width(first_layer(&model).1, &format!("the model {}", a.model.display()))?;
    }
    let cpu = Cpu::new(a.run.threads)?;
    let html = render(&cpu, &ReportInput { model_path: &a.model, model: &model, data: data.as_ref(), labels: labels.as_deref(), shape: a.shape, anomalies: a.anomalies })?;
    write_file(&a.output, html.as_bytes())?;
    if !a.run.quiet {
        errln!("wrote {}", a.output.display());
    }
    Ok(())
}

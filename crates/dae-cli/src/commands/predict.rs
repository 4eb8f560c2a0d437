//! `dae predict` and `dae evaluate`: apply a fine-tuned classifier.

use super::finetune::features_and_targets;
use super::{check_output, read_options};
use crate::args::{EvaluateArgs, PredictArgs};
use dae::data::{take_column, write_classes, write_matrix, OutputFormat};
use dae::metrics::{argmax_rows, evaluate};
use dae::network::{predict_all, Task};
use dae::{read_data, Dataset, Error, Result, SavedNetwork};
use serde_json::json;

/// Drops the classifier's label column from `ds` when the data has it.
fn without_label_column(ds: Dataset, saved: &SavedNetwork) -> Result<Dataset> {
    match (&saved.label_column, &ds.column_names) {
        (Some(col), Some(names)) if names.contains(col) => Ok(take_column(&ds, col)?.1),
        _ => Ok(ds),
    }
}

pub fn predict(a: PredictArgs) -> Result<()> {
    OutputFormat::from_path(&a.output)?;
    check_output(&a.output, "--output")?;
    super::not_an_input(&a.output, "--output", &[Some(&a.data), Some(&a.classifier)])?;
    let saved = SavedNetwork::load(&a.classifier)?;
    let ds = without_label_column(read_data(&a.data, &read_options(&a.data_opts))?, &saved)?;
    ds.check_width(saved.network.config.sizes[0], &format!("the classifier {}", a.classifier.display()))?;
    let engine = super::Engine::open(&a.device, &a.run)?;
    let out = crate::on_engine!(&engine, |be| predict_all(be, &saved.network, &ds, &saved.scaler))?;
    let c = saved.network.config.task.outputs();
    match saved.network.config.task {
        Task::Classification { .. } if !a.proba => write_classes(&a.output, &argmax_rows(&out, c))?,
        Task::Classification { .. } => write_matrix(&a.output, ds.rows, c, &out)?,
        Task::Regression { .. } if a.proba => {
            return Err(Error::usage("--proba", "a regressor predicts values, not class probabilities"))
        }
        Task::Regression { .. } => write_matrix(&a.output, ds.rows, c, &out)?,
    }
    if !a.run.quiet {
        errln!("wrote {}: {} rows", a.output.display(), ds.rows);
    }
    Ok(())
}

pub fn run_evaluate(a: EvaluateArgs) -> Result<()> {
    let saved = SavedNetwork::load(&a.classifier)?;
    let Task::Classification { classes } = saved.network.config.task else {
        return Err(Error::input(&a.classifier, "this is a regressor; evaluate measures classifiers"));
    };
    let opts = read_options(&a.data_opts);
    super::one_standard_input(&[("DATA", Some(&a.data)), ("--labels", a.labels.as_deref())])?;
    let raw = read_data(&a.data, &opts)?;
    let column = a.label_column.as_deref().or(if a.labels.is_none() { saved.label_column.as_deref() } else { None });
    let (ds, targets) = features_and_targets(raw, a.labels.as_deref(), column, &opts)?;
    let ds = without_label_column(ds, &saved)?;
    ds.check_width(saved.network.config.sizes[0], &format!("the classifier {}", a.classifier.display()))?;
    let truth = targets.classes(Some(classes), "the classifier")?;
    let engine = super::Engine::open(&a.device, &a.run)?;
    let probs = crate::on_engine!(&engine, |be| predict_all(be, &saved.network, &ds, &saved.scaler))?;
    let e = evaluate(&argmax_rows(&probs, classes), &truth, classes);
    if a.json {
        outln!("{}", json!(e));
        return Ok(());
    }
    outln!("accuracy {:.2} % ({} of {} rows)", 100.0 * e.accuracy, (e.accuracy * e.rows as f64).round(), e.rows);
    outln!();
    outln!("class  precision    recall   support");
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2} %", 100.0 * v));
    for c in 0..classes {
        outln!("{c:>5}  {:>9}  {:>8}  {:>8}", pct(e.precision[c]), pct(e.recall[c]), e.support[c]);
    }
    outln!();
    outln!("confusion matrix (rows: true class, columns: predicted)");
    let width = e.confusion.iter().flatten().max().map_or(1, |m| m.to_string().len()).max(3);
    out!("{:>5} ", "");
    for c in 0..classes {
        out!(" {c:>width$}");
    }
    outln!();
    for (t, row) in e.confusion.iter().enumerate() {
        out!("{t:>5} ");
        for v in row {
            out!(" {v:>width$}");
        }
        outln!();
    }
    Ok(())
}

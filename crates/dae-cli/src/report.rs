//! `dae report`: one self-contained HTML page about a model (configuration, data, learning
//! curves, filters, reconstructions, reconstruction errors and anomalies, or a classifier's
//! confusion matrix). Every image is inline (PNG or SVG as data URIs); nothing is fetched.

use crate::images::{curves, filters_png, first_layer, image_shape, pick_rows, reconstructions_png, reconstructor, rows_png};
use base64::Engine;
use dae::infer::{reconstruct_all, score_all, EvalNoise};
use dae::metrics::{argmax_rows, evaluate, Evaluation};
use dae::network::{predict_all, Task};
use dae::{AnyModel, Cpu, Dataset, Result};
use dae_viz::chart::{histogram, Format};
use std::fmt::Write;
use std::path::Path;

/// What the report is about.
pub struct ReportInput<'a> {
    pub model_path: &'a Path,
    pub model: &'a AnyModel,
    /// Data to show reconstructions, errors and (with labels) a confusion matrix on.
    pub data: Option<&'a Dataset>,
    /// The true classes of `data`, for a classifier.
    pub labels: Option<&'a [u32]>,
    /// Image shape when the model does not record one.
    pub shape: Option<(usize, usize)>,
    /// Rows in the table of anomalies.
    pub anomalies: usize,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn img(mime: &str, bytes: &[u8], alt: &str) -> String {
    format!(
        "<img alt=\"{}\" src=\"data:{mime};base64,{}\">",
        esc(alt),
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn section(out: &mut String, id: &str, title: &str, body: &str) {
    let _ = write!(out, "<section id=\"{id}\"><h2>{}</h2>\n{body}\n</section>\n", esc(title));
}

/// Key–value rows of a JSON object, nested keys joined with dots.
fn flatten(prefix: &str, v: &serde_json::Value, rows: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, rows);
            }
        }
        serde_json::Value::Null => rows.push((prefix.to_string(), "—".into())),
        serde_json::Value::String(s) => rows.push((prefix.to_string(), s.clone())),
        other => rows.push((prefix.to_string(), other.to_string())),
    }
}

fn table(rows: &[(String, String)]) -> String {
    let mut t = String::from("<table class=\"kv\">");
    for (k, v) in rows {
        let _ = write!(t, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    t.push_str("</table>");
    t
}

/// `v` as a JSON value, through text so that f32 settings keep their short form (0.1, not
/// 0.10000000149011612).
fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_string(v)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn configuration(model: &AnyModel) -> String {
    let mut rows = Vec::new();
    match model {
        AnyModel::Autoencoder(m) => {
            rows.push(("kind".into(), "denoising autoencoder".into()));
            flatten("model", &json(&m.model.config), &mut rows);
            flatten("training", &json(&m.train), &mut rows);
            rows.push(("parameters".into(), m.model.num_params().to_string()));
        }
        AnyModel::Stack(m) => {
            let sizes: Vec<String> = m.stack.sizes().iter().map(|s| s.to_string()).collect();
            rows.push(("kind".into(), format!("stack of {} denoising autoencoders, {}", m.stack.layers.len(), sizes.join("-"))));
            for (i, l) in m.stack.layers.iter().enumerate() {
                flatten(&format!("layer {}", i + 1), &json(&l.config), &mut rows);
                flatten(&format!("layer {} training", i + 1), &json(&m.train[i]), &mut rows);
            }
        }
        AnyModel::Network(m) => {
            rows.push(("kind".into(), m.kind().into()));
            flatten("network", &json(&m.network.config), &mut rows);
            rows.push(("initialisation".into(), m.init.clone()));
            flatten("training", &json(&m.train), &mut rows);
            rows.push(("parameters".into(), m.network.num_params().to_string()));
        }
    }
    rows.push(("scaling".into(), model.scaler().kind.to_string()));
    table(&rows)
}

fn data_summary(model: &AnyModel, data: Option<&Dataset>) -> String {
    let info = model.data();
    let shape = info.image_shape.map(|(h, w)| format!(", images {h}×{w}")).unwrap_or_default();
    let mut rows = vec![("trained on".to_string(), format!("{} ({} rows × {} columns{shape})", info.source, info.rows, info.cols))];
    if let Some(ds) = data {
        let scaler = model.scaler();
        let mut row = vec![0f32; ds.cols];
        let (mut lo, mut hi, mut sum, mut zeros) = (f32::INFINITY, f32::NEG_INFINITY, 0f64, 0usize);
        for r in 0..ds.rows {
            ds.gather_range(r, 1, scaler, &mut row);
            for &v in &row {
                lo = lo.min(v);
                hi = hi.max(v);
                sum += v as f64;
                zeros += (v == 0.0) as usize;
            }
        }
        let n = (ds.rows * ds.cols).max(1) as f64;
        rows.push(("shown here".into(), format!("{} ({} rows × {} columns)", ds.source.display(), ds.rows, ds.cols)));
        rows.push(("values after scaling".into(), format!("min {lo:.4}, max {hi:.4}, mean {:.4}, {:.1} % zeros", sum / n, 100.0 * zeros as f64 / n)));
    }
    table(&rows)
}

fn confusion_table(e: &Evaluation) -> String {
    let mut t = format!("<p>Accuracy <b>{:.2} %</b> on {} rows.</p>", 100.0 * e.accuracy, e.rows);
    t.push_str("<table class=\"grid\"><tr><th>true \\ predicted</th>");
    for c in 0..e.classes {
        let _ = write!(t, "<th>{c}</th>");
    }
    t.push_str("<th>recall</th></tr>");
    let pct = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{:.1} %", 100.0 * v));
    for (i, row) in e.confusion.iter().enumerate() {
        let _ = write!(t, "<tr><th>{i}</th>");
        for (j, &v) in row.iter().enumerate() {
            let class = if i == j { " class=\"diag\"" } else { "" };
            let _ = write!(t, "<td{class}>{v}</td>");
        }
        let _ = write!(t, "<td>{}</td></tr>", pct(e.recall[i]));
    }
    t.push_str("<tr><th>precision</th>");
    for p in &e.precision {
        let _ = write!(t, "<td>{}</td>", pct(*p));
    }
    t.push_str("<td></td></tr></table>");
    t
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;font-size:.9em}\
table.kv th{background:#f6f6f6;font-weight:normal;color:#555}table.grid td{text-align:right}td.diag{background:#e3f1e3;font-weight:bold}\
img{max-width:100%;border:1px solid #eee;image-rendering:pixelated}.note{color:#666;font-size:.9em}";

/// The whole report as one HTML page.
pub fn render(cpu: &Cpu, r: &ReportInput<'_>) -> Result<String> {
    let file = r.model_path.display().to_string();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dae report: {}</title><style>{STYLE}</style></head><body>\n<h1>dae report: {}</h1>\n",
        esc(&file),
        esc(&file)
    );
    section(&mut out, "configuration", "Configuration", &configuration(r.model));
    section(&mut out, "data", "Data", &data_summary(r.model, r.data));
    section(&mut out, "curves", "Learning curves", &img("image/svg+xml", &curves(r.model, Format::Svg)?, "learning curves"));

    let shape = image_shape(r.model, r.shape, r.model_path).ok();
    match shape {
        Some(shape) => {
            let units = first_layer(r.model).2.min(100);
            let body = format!(
                "<p class=\"note\">The input weights of the first {units} units of the first layer, each scaled to its own range.</p>{}",
                img("image/png", &filters_png(r.model, shape, units), "filters")
            );
            section(&mut out, "filters", "Filters", &body);
        }
        None => section(&mut out, "filters", "Filters", "<p class=\"note\">The data are not images, so there are no filters to show.</p>"),
    }

    if let (Some(ds), Some(dae)) = (r.data, reconstructor(r.model)) {
        // A stack's first layer sees the stack's scaling, as the model does.
        let scaler = r.model.scaler();
        if let Some(shape) = shape {
            let count = 10.min(ds.rows);
            let rows: Vec<usize> = (0..count).map(|i| i * ds.rows / count.max(1)).collect();
            let noise = EvalNoise { noise: dae.config.noise, seed: 1 };
            let png = reconstructions_png(cpu, dae, ds, scaler, &rows, noise, shape)?;
            let body = format!("<p class=\"note\">Rows: clean inputs, corrupted by {}, reconstructed.</p>{}", esc(&dae.config.noise.to_string()), img("image/png", &png, "reconstructions"));
            section(&mut out, "reconstructions", "Reconstructions", &body);
        }
        // Anomaly scores: each row's loss on its clean input.
        let scores = score_all(cpu, dae, ds, scaler, EvalNoise::none(), false)?;
        let hist = histogram(&scores, 40, "reconstruction error per row", &format!("{} (clean input)", dae.config.loss), 720, 320, Format::Svg)
            .map_err(|e| dae::Error::Runtime(format!("drawing the histogram failed: {e}")))?;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let top: Vec<usize> = order.into_iter().take(r.anomalies.min(ds.rows)).collect();
        let mean = scores.iter().map(|&v| v as f64).sum::<f64>() / scores.len().max(1) as f64;
        let mut body = format!(
            "<p class=\"note\">Mean {mean:.4} over {} rows; the highest are the rows the model finds least like its training data.</p>{}",
            scores.len(),
            img("image/svg+xml", &hist, "histogram of reconstruction errors")
        );
        body.push_str("<h3>Top anomalies</h3><table class=\"grid\"><tr><th>rank</th><th>row</th><th>error</th></tr>");
        for (i, &row) in top.iter().enumerate() {
            let _ = write!(body, "<tr><td>{}</td><td>{}</td><td>{:.4}</td></tr>", i + 1, row + 1, scores[row]);
        }
        body.push_str("</table>");
        if let (Some(shape), false) = (shape, top.is_empty()) {
            let picked = pick_rows(ds, &top);
            let d = ds.cols;
            let mut clean = vec![0f32; top.len() * d];
            picked.gather_range(0, top.len(), scaler, &mut clean);
            let recon = reconstruct_all(cpu, dae, &picked, scaler, EvalNoise::none())?;
            let _ = write!(body, "<p class=\"note\">The same rows, clean (top) and reconstructed (bottom).</p>{}", img("image/png", &rows_png(&[&clean, &recon], d, top.len(), shape), "top anomalies"));
        }
        section(&mut out, "errors", "Reconstruction errors and anomalies", &body);
    }

    if let (AnyModel::Network(m), Some(ds)) = (r.model, r.data) {
        if let Task::Classification { classes } = m.network.config.task {
            match r.labels {
                Some(labels) => {
                    let probs = predict_all(cpu, &m.network, ds, &m.scaler)?;
                    let e = evaluate(&argmax_rows(&probs, classes), labels, classes);
                    section(&mut out, "confusion", "Confusion matrix", &confusion_table(&e));
                }
                None => section(&mut out, "confusion", "Confusion matrix", "<p class=\"note\">Give --labels to see the confusion matrix.</p>"),
            }
        }
    }
    out.push_str("<p class=\"note\">Written by dae.</p></body></html>\n");
    Ok(out)
}

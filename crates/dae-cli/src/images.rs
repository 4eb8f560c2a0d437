//! Pictures of a model: its filters, its reconstructions, its learning curves and the
//! distribution of its reconstruction errors. Shared by `dae viz`, `dae report` and `dae demo`.

use dae::infer::{corrupt_all, reconstruct_all, EvalNoise};
use dae::train::EpochRecord;
use dae::{AnyModel, Backend, Dae, Dataset, Error, Result, Scaler};
use dae_viz::chart::{line_charts, Format, LineChart, Series};
use dae_viz::{filter_tiles, tile_grid, Grid, Normalize};

/// The first layer's input weights of any model: (W, inputs, units), W inputs × units.
pub fn first_layer(model: &AnyModel) -> (&[f32], usize, usize) {
    match model {
        AnyModel::Autoencoder(m) => (&m.model.w, m.model.config.inputs, m.model.config.hidden),
        AnyModel::Stack(m) => {
            let l = &m.stack.layers[0];
            (&l.w, l.config.inputs, l.config.hidden)
        }
        AnyModel::Network(m) => {
            let (fin, fout) = m.network.config.layer_shape(0);
            (&m.network.weights[0], fin, fout)
        }
    }
}

/// The autoencoder that reconstructs the data: the model itself, or a stack's first layer.
pub fn reconstructor(model: &AnyModel) -> Option<&Dae> {
    match model {
        AnyModel::Autoencoder(m) => Some(&m.model),
        AnyModel::Stack(m) => Some(&m.stack.layers[0]),
        AnyModel::Network(_) => None,
    }
}

/// The image shape of the model's inputs: `shape` when given (checked against the width),
/// else the one recorded from the training data.
pub fn image_shape(model: &AnyModel, shape: Option<(usize, usize)>, path: &std::path::Path) -> Result<(usize, usize)> {
    let inputs = first_layer(model).1;
    match shape.or(model.data().image_shape) {
        Some((h, w)) if h * w == inputs => Ok((h, w)),
        Some((h, w)) => Err(Error::usage("--shape", format!("{h}×{w} = {} pixels, but the model has {inputs} inputs", h * w))),
        None => Err(Error::input(
            path,
            format!(
                "the model's data ({}) are not images: give their shape with --shape HxW if they are",
                model.data().source
            ),
        )),
    }
}

/// The input weights of the first `units` hidden units, one `shape` tile each, normalised per
/// tile, in a square grid.
pub fn filters_png(model: &AnyModel, shape: (usize, usize), units: usize) -> Vec<u8> {
    let (w, d, k) = first_layer(model);
    let tiles = filter_tiles(w, d, k, units);
    let refs: Vec<Option<&[f32]>> = tiles.iter().map(|t| Some(&t[..])).collect();
    let columns = (refs.len() as f64).sqrt().ceil().max(1.0) as usize;
    tile_grid(&refs, Grid { tile: shape, columns, gap: 1, scale: 2 }, Normalize::PerTile).to_png()
}

/// Three rows of `rows.len()` tiles: the clean inputs, their corruption by `noise`, and the
/// model's reconstructions of the corrupted inputs.
#[allow(clippy::too_many_arguments)]
pub fn reconstructions_png<B: Backend>(
    be: &B,
    model: &Dae,
    ds: &Dataset,
    scaler: &Scaler,
    rows: &[usize],
    noise: EvalNoise,
    shape: (usize, usize),
) -> Result<Vec<u8>> {
    let picked = pick_rows(ds, rows);
    let d = ds.cols;
    let mut clean = vec![0f32; rows.len() * d];
    picked.gather_range(0, rows.len(), scaler, &mut clean);
    let corrupted = corrupt_all(&picked, scaler, noise);
    let recon = reconstruct_all(be, model, &picked, scaler, noise)?;
    let blocks = [&clean[..], &corrupted[..], &recon[..]];
    Ok(rows_png(&blocks, d, rows.len(), shape))
}

/// The rows `rows` of `ds` as a dataset of their own (raw values).
pub fn pick_rows(ds: &Dataset, rows: &[usize]) -> Dataset {
    let d = ds.cols;
    let mut raw = vec![0f32; rows.len() * d];
    let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    ds.gather(&idx, &Scaler::identity(d), &mut raw);
    Dataset { image_shape: ds.image_shape, ..Dataset::from_f32(rows.len(), d, raw) }
}

/// Blocks of `count` rows of `d` values each, one grid row per block.
pub fn rows_png(blocks: &[&[f32]], d: usize, count: usize, shape: (usize, usize)) -> Vec<u8> {
    let mut tiles: Vec<Option<&[f32]>> = Vec::new();
    for block in blocks {
        tiles.extend(block.chunks_exact(d).map(Some));
    }
    // Pixels in [0, 1] are drawn as such; other data per tile.
    let unit = blocks[0].iter().all(|v| (0.0..=1.0).contains(v));
    let norm = if unit { Normalize::Range(0.0, 1.0) } else { Normalize::PerTile };
    tile_grid(&tiles, Grid { tile: shape, columns: count.max(1), gap: 2, scale: 2 }, norm).to_png()
}

fn loss_chart(title: &str, history: &[EpochRecord]) -> LineChart {
    let mut series = vec![Series { name: "training".into(), points: history.iter().map(|r| (r.epoch as f64, r.train_loss)).collect() }];
    if history.iter().any(|r| r.val_loss.is_some()) {
        series.push(Series {
            name: "validation".into(),
            points: history.iter().map(|r| (r.epoch as f64, r.val_loss.unwrap_or(f64::NAN))).collect(),
        });
    }
    LineChart { title: title.into(), x_label: "epoch".into(), y_label: "mean loss per row".into(), series }
}

/// The learning curves of a model: one loss chart (per layer for a stack), and for a classifier
/// an accuracy chart.
pub fn curve_charts(model: &AnyModel) -> Vec<LineChart> {
    match model {
        AnyModel::Autoencoder(m) => vec![loss_chart(&format!("{} under {}", m.model.config.loss, m.model.config.noise), &m.history)],
        AnyModel::Stack(m) => m
            .histories
            .iter()
            .enumerate()
            .map(|(i, h)| loss_chart(&format!("layer {} ({} under {})", i + 1, m.stack.layers[i].config.loss, m.stack.layers[i].config.noise), h))
            .collect(),
        AnyModel::Network(m) => {
            let mut charts = vec![loss_chart("fine-tuning loss", &m.history)];
            if m.history.iter().any(|r| r.train_accuracy.is_some()) {
                let pct = |v: Option<f64>| v.map_or(f64::NAN, |a| 100.0 * a);
                let dropped = m.network.config.dropout > 0.0 || m.network.config.input_dropout > 0.0;
                let name = if dropped { "training (with dropout)" } else { "training" };
                let mut series = vec![Series { name: name.into(), points: m.history.iter().map(|r| (r.epoch as f64, pct(r.train_accuracy))).collect() }];
                if m.history.iter().any(|r| r.val_accuracy.is_some()) {
                    series.push(Series { name: "validation".into(), points: m.history.iter().map(|r| (r.epoch as f64, pct(r.val_accuracy))).collect() });
                }
                charts.push(LineChart { title: "accuracy".into(), x_label: "epoch".into(), y_label: "% of rows".into(), series });
            }
            charts
        }
    }
}

/// The learning curves as PNG or SVG bytes.
pub fn curves(model: &AnyModel, format: Format) -> Result<Vec<u8>> {
    line_charts(&curve_charts(model), 720, 320, format).map_err(|e| Error::Runtime(format!("drawing the curves failed: {e}")))
}

//! PNG pictures of a model: its filters and its reconstructions.

use dae::infer::{corrupt_all, reconstruct_all, EvalNoise};
use dae::{Backend, Dae, Dataset, Result, Scaler};
use dae_viz::{filter_tiles, tile_grid, Grid, Normalize};

/// The input weights of the first `units` hidden units, one `shape` tile each, 10 per row.
pub fn filters_png(model: &Dae, shape: (usize, usize), units: usize) -> Vec<u8> {
    let cfg = &model.config;
    let tiles = filter_tiles(&model.w, cfg.inputs, cfg.hidden, units);
    let refs: Vec<Option<&[f32]>> = tiles.iter().map(|t| Some(&t[..])).collect();
    let columns = (refs.len() as f64).sqrt().ceil() as usize;
    tile_grid(&refs, Grid { tile: shape, columns, gap: 1, scale: 2 }, Normalize::PerTile).to_png()
}

/// Three rows of `rows.len()` tiles: the clean inputs, their corruption by `noise`, and the
/// model's reconstructions of the corrupted inputs.
pub fn reconstructions_png<B: Backend>(
    be: &B,
    model: &Dae,
    ds: &Dataset,
    scaler: &Scaler,
    rows: &[usize],
    noise: EvalNoise,
    shape: (usize, usize),
) -> Result<Vec<u8>> {
    let d = ds.cols;
    let mut raw = vec![0f32; rows.len() * d];
    let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    ds.gather(&idx, &Scaler::identity(d), &mut raw);
    let picked = Dataset { image_shape: ds.image_shape, ..Dataset::from_f32(rows.len(), d, raw) };
    let mut clean = vec![0f32; rows.len() * d];
    picked.gather_range(0, rows.len(), scaler, &mut clean);
    let corrupted = corrupt_all(&picked, scaler, noise);
    let recon = reconstruct_all(be, model, &picked, scaler, noise)?;
    let mut tiles: Vec<Option<&[f32]>> = Vec::new();
    for block in [&clean, &corrupted, &recon] {
        tiles.extend(block.chunks_exact(d).map(Some));
    }
    // Pixels in [0, 1] are drawn as such; other data per tile.
    let unit = clean.iter().all(|v| (0.0..=1.0).contains(v));
    let norm = if unit { Normalize::Range(0.0, 1.0) } else { Normalize::PerTile };
    Ok(tile_grid(&tiles, Grid { tile: shape, columns: rows.len(), gap: 2, scale: 2 }, norm).to_png())
}

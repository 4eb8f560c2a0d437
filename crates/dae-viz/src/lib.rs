//! # dae-viz: pictures of what an autoencoder learned
//!
//! Grids of grey tiles (filters of the first layer, clean / corrupted / reconstructed examples)
//! rendered to PNG bytes. The crate knows nothing of models: callers hand it the values of each
//! tile and decide where the bytes go.

/// How tile values map to grey levels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Normalize {
    /// Each tile's own minimum is black and maximum white (filters, as in the Theano tutorial's
    /// `tile_raster_images`).
    PerTile,
    /// Values in [lo, hi] map to black..white, clipped outside (pixels).
    Range(f32, f32),
}

/// A greyscale image, one byte per pixel, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Gray {
    /// Encodes the image as PNG.
    pub fn to_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().expect("writing PNG to memory cannot fail");
            w.write_image_data(&self.pixels)
                .expect("writing PNG to memory cannot fail");
        }
        out
    }
}

/// Layout of a tile grid.
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    /// Height and width of each tile, in values.
    pub tile: (usize, usize),
    /// Tiles per row of the grid.
    pub columns: usize,
    /// Pixels between tiles (drawn mid-grey).
    pub gap: usize,
    /// Each value becomes a `scale` × `scale` block of pixels.
    pub scale: usize,
}

fn grey(v: f32, lo: f32, hi: f32) -> u8 {
    if !(hi > lo) || !v.is_finite() {
        return 0;
    }
    let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
    (t * 255.0).round() as u8
}

/// Renders `tiles` (each `grid.tile.0 × grid.tile.1` values, row-major) into a grid.
/// A `None` tile leaves its cell blank.
pub fn tile_grid(tiles: &[Option<&[f32]>], grid: Grid, norm: Normalize) -> Gray {
    let (th, tw) = grid.tile;
    let cols = grid.columns.max(1);
    let rows = tiles.len().div_ceil(cols).max(1);
    let s = grid.scale.max(1);
    let cell_w = tw * s + grid.gap;
    let cell_h = th * s + grid.gap;
    let width = cols * cell_w - grid.gap;
    let height = rows * cell_h - grid.gap;
    let mut pixels = vec![128u8; width * height];
    for (i, tile) in tiles.iter().enumerate() {
        let Some(tile) = tile else { continue };
        let (lo, hi) = match norm {
            Normalize::PerTile => tile.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            }),
            Normalize::Range(lo, hi) => (lo, hi),
        };
        let (gy, gx) = ((i / cols) * cell_h, (i % cols) * cell_w);
        for y in 0..th {
            for x in 0..tw {
                let g = tile.get(y * tw + x).map_or(0, |&v| grey(v, lo, hi));
                for dy in 0..s {
                    let row = (gy + y * s + dy) * width;
                    for dx in 0..s {
                        pixels[row + gx + x * s + dx] = g;
                    }
                }
            }
        }
    }
    Gray {
        width,
        height,
        pixels,
    }
}

/// The input weights of each of the first `units` hidden units as tiles: column j of the
/// `inputs` × `hidden` row-major matrix `w`.
pub fn filter_tiles(w: &[f32], inputs: usize, hidden: usize, units: usize) -> Vec<Vec<f32>> {
    (0..units.min(hidden))
        .map(|j| (0..inputs).map(|i| w[i * hidden + j]).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_and_normalises_tiles() {
        let a = [0.0f32, 1.0, 2.0, 3.0];
        let b = [5.0f32; 4];
        let g = tile_grid(
            &[Some(&a), Some(&b), None],
            Grid { tile: (2, 2), columns: 2, gap: 1, scale: 1 },
            Normalize::PerTile,
        );
        assert_eq!((g.width, g.height), (5, 5));
        assert_eq!(&g.pixels[0..2], &[0, 85]);
        assert_eq!(&g.pixels[5..7], &[170, 255]);
        assert_eq!(g.pixels[2], 128, "gap is mid-grey");
        assert_eq!(g.pixels[3], 0, "a constant tile is black");
        let png = g.to_png();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn filters_are_columns() {
        // 3 inputs × 2 hidden: column 1 is [1, 3, 5].
        let w = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(filter_tiles(&w, 3, 2, 5), vec![vec![0.0, 2.0, 4.0], vec![1.0, 3.0, 5.0]]);
    }
}

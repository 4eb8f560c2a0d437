//! # dae-viz: pictures of what an autoencoder learned
//!
//! Grids of grey tiles (filters of the first layer, clean / corrupted / reconstructed examples)
//! as PNG, and charts (learning curves, histograms) as SVG or PNG, drawn by `plotters` with the
//! DejaVu Sans font embedded for PNG text. The crate knows nothing of models: callers hand it the
//! numbers and decide where the bytes go.

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

/// Charts: learning curves and histograms, drawn by `plotters` as SVG or PNG.
pub mod chart {
    use plotters::coord::Shift;
    use plotters::prelude::*;

    /// Output format of a chart.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Format {
        Svg,
        Png,
    }

    impl Format {
        /// From a file name's extension (`.svg`, else PNG).
        pub fn from_name(name: &str) -> Format {
            if name.to_lowercase().ends_with(".svg") {
                Format::Svg
            } else {
                Format::Png
            }
        }
    }

    /// One named line of (x, y) points.
    #[derive(Clone, Debug)]
    pub struct Series {
        pub name: String,
        pub points: Vec<(f64, f64)>,
    }

    /// A line chart.
    #[derive(Clone, Debug)]
    pub struct LineChart {
        pub title: String,
        pub x_label: String,
        pub y_label: String,
        pub series: Vec<Series>,
    }

    const PALETTE: [RGBColor; 4] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

    /// Makes the embedded DejaVu Sans the charts' font: PNG text is drawn with it, and SVG layout
    /// is measured with it (the viewer draws SVG text with its own fonts).
    fn register_font() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // A failure leaves plotters without a font; drawing text would then fail and be
            // reported by the drawing calls below.
            let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        });
    }

    fn draw_lines<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &LineChart) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let points = chart.series.iter().flat_map(|s| s.points.iter()).filter(|p| p.1.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in points {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if !x0.is_finite() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-9 * y1.abs().max(1.0));
        let mut ctx = ChartBuilder::on(area)
            .caption(&chart.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(err)?;
        // Whole-number x values (epochs) get whole-number ticks.
        let whole = chart.series.iter().flat_map(|s| &s.points).all(|p| p.0.fract() == 0.0);
        let ticks = if whole { ((x1 - x0) as usize + 1).clamp(2, 11) } else { 10 };
        let format_x = |x: &f64| if whole { format!("{x:.0}") } else { format!("{x:.2}") };
        ctx.configure_mesh()
            .x_desc(&chart.x_label)
            .y_desc(&chart.y_label)
            .x_labels(ticks)
            .x_label_formatter(&format_x)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, s) in chart.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            ctx.draw_series(LineSeries::new(s.points.iter().copied().filter(|p| p.1.is_finite()), color.stroke_width(2)))
                .map_err(err)?
                .label(&s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        // The legend goes in the corner the curves end away from.
        let last = chart.series.iter().filter_map(|s| s.points.iter().rev().find(|p| p.1.is_finite())).map(|p| p.1).fold(f64::NAN, f64::max);
        let corner = if last > (y0 + y1) / 2.0 { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight };
        ctx.configure_series_labels()
            .position(corner)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        Ok(())
    }

    /// Line charts stacked vertically, each `width` × `height`, as SVG text or PNG bytes.
    pub fn line_charts(charts: &[LineChart], width: u32, height: u32, format: Format) -> Result<Vec<u8>, String> {
        let total = height * charts.len().max(1) as u32;
        match format {
            Format::Svg => {
                register_font();
                let mut svg = String::new();
                {
                    let root = SVGBackend::with_string(&mut svg, (width, total)).into_drawing_area();
                    root.fill(&WHITE).map_err(|e| e.to_string())?;
                    for (area, chart) in root.split_evenly((charts.len().max(1), 1)).iter().zip(charts) {
                        draw_lines(area, chart)?;
                    }
                    root.present().map_err(|e| e.to_string())?;
                }
                Ok(svg.into_bytes())
            }
            Format::Png => {
                register_font();
                let mut rgb = vec![0u8; (width * total * 3) as usize];
                {
                    let root = BitMapBackend::with_buffer(&mut rgb, (width, total)).into_drawing_area();
                    root.fill(&WHITE).map_err(|e| e.to_string())?;
                    for (area, chart) in root.split_evenly((charts.len().max(1), 1)).iter().zip(charts) {
                        draw_lines(area, chart)?;
                    }
                    root.present().map_err(|e| e.to_string())?;
                }
                Ok(rgb_png(&rgb, width, total))
            }
        }
    }

    fn draw_histogram<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, values: &[f32], bins: usize, title: &str, x_label: &str) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let finite: Vec<f64> = values.iter().map(|&v| v as f64).filter(|v| v.is_finite()).collect();
        let lo = finite.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = finite.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = match (lo.is_finite(), hi > lo) {
            (true, true) => (lo, hi),
            (true, false) => (lo - 0.5, lo + 0.5),
            (false, _) => (0.0, 1.0),
        };
        let bins = bins.max(1);
        let width = (hi - lo) / bins as f64;
        let mut counts = vec![0u32; bins];
        for v in &finite {
            counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
        }
        let top = counts.iter().copied().max().unwrap_or(1).max(1);
        let mut ctx = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0u32..(top + top / 10 + 1))
            .map_err(err)?;
        ctx.configure_mesh().x_desc(x_label).y_desc("rows").label_style(("sans-serif", 13)).draw().map_err(err)?;
        ctx.draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x = lo + i as f64 * width;
            Rectangle::new([(x, 0), (x + width, c)], PALETTE[0].mix(0.8).filled())
        }))
        .map_err(err)?;
        Ok(())
    }

    /// A histogram of `values` in `bins` equal bins, as SVG text or PNG bytes.
    pub fn histogram(values: &[f32], bins: usize, title: &str, x_label: &str, width: u32, height: u32, format: Format) -> Result<Vec<u8>, String> {
        match format {
            Format::Svg => {
                register_font();
                let mut svg = String::new();
                {
                    let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
                    root.fill(&WHITE).map_err(|e| e.to_string())?;
                    draw_histogram(&root, values, bins, title, x_label)?;
                    root.present().map_err(|e| e.to_string())?;
                }
                Ok(svg.into_bytes())
            }
            Format::Png => {
                register_font();
                let mut rgb = vec![0u8; (width * height * 3) as usize];
                {
                    let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
                    root.fill(&WHITE).map_err(|e| e.to_string())?;
                    draw_histogram(&root, values, bins, title, x_label)?;
                    root.present().map_err(|e| e.to_string())?;
                }
                Ok(rgb_png(&rgb, width, height))
            }
        }
    }

    /// RGB pixels as PNG.
    fn rgb_png(rgb: &[u8], width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, width, height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().expect("writing PNG to memory cannot fail");
            w.write_image_data(rgb).expect("writing PNG to memory cannot fail");
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn chart() -> LineChart {
            LineChart {
                title: "loss".into(),
                x_label: "epoch".into(),
                y_label: "cross-entropy".into(),
                series: vec![
                    Series { name: "train".into(), points: vec![(1.0, 250.0), (2.0, 230.0), (3.0, 221.0)] },
                    Series { name: "validation".into(), points: vec![(1.0, 255.0), (2.0, 236.0), (3.0, f64::NAN)] },
                ],
            }
        }

        #[test]
        fn curves_render_as_svg_and_png() {
            let svg = String::from_utf8(line_charts(&[chart(), chart()], 600, 300, Format::Svg).unwrap()).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("validation") && svg.contains("epoch"));
            let png = line_charts(&[chart()], 600, 300, Format::Png).unwrap();
            let dec = png::Decoder::new(std::io::Cursor::new(png));
            let r = dec.read_info().unwrap();
            assert_eq!((r.info().width, r.info().height), (600, 300));
        }

        #[test]
        fn histogram_renders() {
            let v: Vec<f32> = (0..1000).map(|i| (i % 37) as f32).collect();
            let svg = String::from_utf8(histogram(&v, 20, "errors", "loss", 500, 300, Format::Svg).unwrap()).unwrap();
            assert!(svg.contains("<rect"));
            assert!(histogram(&[], 10, "empty", "loss", 300, 200, Format::Png).is_ok());
        }
    }
}

//! `dae demo`: the main job on embedded data. Trains the classic denoising autoencoder on the
//! Fashion-MNIST test split (10,000 images, MIT licence; see data/fashion-mnist/README.md) and
//! writes the model, its filters and a grid of clean / corrupted / reconstructed examples.

use super::write_file;
use crate::args::DemoArgs;
use crate::images::{filters_png, reconstructions_png};
use crate::progress::Progress;
use crate::report::{render, ReportInput};
use dae::data::read_idx_bytes;
use dae::infer::EvalNoise;
use dae::rng::stream;
use dae::{train_dae, AnyModel, Backend, Cpu, Dae, DaeConfig, DataInfo, Error, Result, SavedDae, Scaler, Split, TrainConfig};

static IMAGES: &[u8] = include_bytes!("../../../../data/fashion-mnist/t10k-images-idx3-ubyte.gz");

pub fn run(a: DemoArgs) -> Result<()> {
    let tc = TrainConfig {
        epochs: a.epochs,
        batch: 20,
        lr: 0.1,
        threads: a.run.threads,
        ..TrainConfig::default()
    };
    // Bad options are refused before anything is printed or created.
    tc.validate()?;
    let ds = read_idx_bytes("fashion-mnist/t10k-images-idx3-ubyte.gz (embedded)", IMAGES)?;
    let shape = ds.image_shape.expect("the embedded data are images");
    std::fs::create_dir_all(&a.output).map_err(|e| Error::io(&a.output, "creating", e))?;
    let config = DaeConfig::new(ds.cols, 500);
    let cpu = Cpu::new(a.run.threads)?;
    if !a.run.quiet {
        errln!(
            "dae demo: a denoising autoencoder 784→500 (sigmoid, tied, cross-entropy, masking 0.3) \
             on the {} Fashion-MNIST test images, {} of SGD, {}",
            ds.rows,
            super::epochs(tc.epochs),
            cpu.describe()
        );
    }
    let scaler = Scaler::identity(ds.cols);
    let mut progress = Progress::new(a.run.quiet, "");
    let trained = train_dae(&cpu, Dae::init(&config, tc.seed), &scaler, &Split::all(&ds), None, &tc, stream::TRAIN_NOISE, &mut progress, None)?;
    drop(progress);

    let model_path = a.output.join("model.safetensors");
    let saved = SavedDae {
        model: trained.model,
        scaler,
        train: tc,
        history: trained.history,
        best_epoch: trained.best_epoch,
        data: DataInfo::of(&ds),
    };
    saved.save(&model_path)?;
    let model = AnyModel::Autoencoder(saved);
    let filters_path = a.output.join("filters.png");
    write_file(&filters_path, &filters_png(&model, shape, 100))?;
    let recon_path = a.output.join("reconstructions.png");
    let rows: Vec<usize> = (0..10).map(|i| i * 997).collect();
    let noise = EvalNoise { noise: config.noise, seed: 1 };
    let AnyModel::Autoencoder(saved) = &model else { unreachable!("built above") };
    let png = reconstructions_png(&cpu, &saved.model, &ds, &saved.scaler, &rows, noise, shape)?;
    write_file(&recon_path, &png)?;
    let report_path = a.output.join("report.html");
    let html = render(&cpu, &ReportInput { model_path: &model_path, model: &model, data: Some(&ds), labels: None, shape: None, anomalies: 10 })?;
    write_file(&report_path, html.as_bytes())?;

    let last = saved.history.last().expect("at least one epoch ran");
    let total: f64 = saved.history.iter().map(|r| r.seconds).sum();
    if !a.run.quiet {
        errln!("trained in {total:.1} s; final training loss {:.2} (cross-entropy per image)", last.train_loss);
        errln!("wrote {}", model_path.display());
        errln!("wrote {}  (the first 100 filters of W)", filters_path.display());
        errln!("wrote {}  (rows: clean, masked 30%, reconstructed)", recon_path.display());
        errln!("wrote {}  (open it in a browser: curves, filters, reconstructions, anomalies)", report_path.display());
    }
    Ok(())
}

//! `dae inspect`: what a model file holds.

use crate::args::InspectArgs;
use dae::{Result, SavedDae};
use serde_json::json;

pub fn run(a: InspectArgs) -> Result<()> {
    let saved = SavedDae::load(&a.model)?;
    let cfg = &saved.model.config;
    if a.json {
        let v = json!({
            "file": a.model.display().to_string(),
            "kind": "autoencoder",
            "parameters": saved.model.num_params(),
            "config": cfg,
            "train": saved.train,
            "scaling": saved.scaler,
            "data": saved.data,
            "best_epoch": saved.best_epoch,
            "history": saved.history,
        });
        println!("{v}");
        return Ok(());
    }
    println!("{}: denoising autoencoder", a.model.display());
    println!(
        "  architecture  {} → {} → {}  ({} encoder, {} decoder, {} weights, {} parameters)",
        cfg.inputs,
        cfg.hidden,
        cfg.inputs,
        cfg.encoder,
        cfg.decoder,
        if cfg.tied { "tied" } else { "untied" },
        saved.model.num_params()
    );
    let emphasis = cfg
        .emphasis
        .map(|e| format!(", emphasis {} on corrupted / {} on clean inputs", e.corrupted, e.clean))
        .unwrap_or_default();
    println!("  objective     {} under noise {}{emphasis}", cfg.loss, cfg.noise);
    let t = &saved.train;
    println!(
        "  training      {} epochs, batch {}, {} lr {}{}, seed {}",
        t.epochs,
        t.batch,
        t.optimizer.name(),
        t.lr,
        if t.lr_decay != 1.0 { format!(" × {} per epoch", t.lr_decay) } else { String::new() },
        t.seed
    );
    println!("  scaling       {}", saved.scaler.kind);
    let shape = saved
        .data
        .image_shape
        .map(|(h, w)| format!(", images {h}×{w}"))
        .unwrap_or_default();
    println!(
        "  data          {} ({} rows × {} columns{shape})",
        saved.data.source, saved.data.rows, saved.data.cols
    );
    println!("  history");
    println!("    epoch  train loss    val loss   seconds");
    for r in &saved.history {
        let val = r.val_loss.map(|v| format!("{v:>10.4}")).unwrap_or_else(|| format!("{:>10}", "-"));
        let best = if saved.best_epoch == Some(r.epoch) { "  (kept)" } else { "" };
        println!("    {:>5}  {:>10.4}  {val}  {:>8.2}{best}", r.epoch, r.train_loss, r.seconds);
    }
    Ok(())
}

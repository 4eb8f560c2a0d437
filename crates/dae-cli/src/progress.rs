//! Progress on stderr: a live bar (epoch, batch, loss, rows/s, ETA) when stderr is a terminal,
//! and one line per epoch unless `--quiet`.

use dae::train::{BatchProgress, EpochRecord, Observer};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    live: bool,
    lines: bool,
    label: String,
    last_draw: Option<Instant>,
    drawn: bool,
    /// `--log-json`: one JSON object per epoch.
    log: Option<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)>,
    /// Checkpoints and the Ctrl-C flag.
    sink: Option<crate::checkpoint::Sink>,
}

impl Progress {
    /// Progress for a run; `label` prefixes every line (for example "layer 2/3").
    pub fn new(quiet: bool, label: impl Into<String>) -> Progress {
        Progress {
            live: !quiet && std::io::stderr().is_terminal(),
            lines: !quiet,
            label: label.into(),
            last_draw: None,
            drawn: false,
            log: None,
            sink: None,
        }
    }

    /// Saves checkpoints to `sink` and stops on its Ctrl-C flag.
    pub fn with_checkpoints(mut self, sink: crate::checkpoint::Sink) -> Progress {
        self.sink = Some(sink);
        self
    }

    /// Also appends one JSON object per epoch to `path` (created if missing).
    pub fn with_log(mut self, path: Option<&std::path::Path>) -> dae::Result<Progress> {
        if let Some(path) = path {
            // Appended to: a resumed run carries on the log of the run it resumes.
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| dae::Error::io(path, "writing", e))?;
            self.log = Some((path.to_path_buf(), std::io::BufWriter::new(f)));
        }
        Ok(self)
    }

    fn prefix(&self) -> String {
        if self.label.is_empty() {
            String::new()
        } else {
            format!("{}  ", self.label)
        }
    }

    fn clear(&mut self) {
        if self.drawn {
            err!("\r\x1b[2K");
            self.drawn = false;
        }
    }
}

/// On resuming from `resume`, drops from the `--log-json` file at `path` the lines of the
/// epochs after the last one the checkpoint holds. Those epochs ran after the checkpoint was
/// written (a run that crashed between checkpoints of `--checkpoint-every` above 1); the
/// resumed run discards their results, runs them again and logs them again. Lines before that
/// epoch's line, other runs' included, stay. Nothing is dropped unless the lines after it are
/// the run's own next epochs in order (a last, half-written line aside), so a log of another
/// run is left alone. `layers` is true for pretraining, whose lines name their layer.
/// Returns the number of lines dropped.
pub fn trim_log(path: &std::path::Path, layers: bool, resume: &crate::checkpoint::Loaded) -> dae::Result<usize> {
    use serde_json::Value;
    // (layer, epoch) of the checkpoint's last whole epoch.
    let last = match &resume.current {
        Some(c) if c.position.epochs_done > 0 => Some((resume.done.len(), c.position.epochs_done)),
        _ => resume.done.last().map(|d| (resume.done.len() - 1, d.history.len())),
    };
    let Some(last) = last.filter(|&(_, e)| e > 0) else { return Ok(0) };
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(dae::Error::io(path, "reading", e)),
    };
    // The (layer, epoch) a line logs, if it is a line of this kind of run.
    let position = |line: &[u8]| -> Option<(usize, usize)> {
        let v: Value = serde_json::from_slice(line).ok()?;
        let epoch = v.get("epoch")?.as_u64()? as usize;
        let layer = match v.get("stage")? {
            Value::Null if !layers => 0,
            Value::String(s) if layers => s.strip_prefix("layer ")?.split('/').next()?.parse::<usize>().ok()?.checked_sub(1)?,
            _ => return None,
        };
        Some((layer, epoch))
    };
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let Some(keep) = lines.iter().rposition(|l| position(l) == Some(last)) else { return Ok(0) };
    let after = &lines[keep + 1..];
    let mut at = last;
    for (i, line) in after.iter().enumerate() {
        match position(line) {
            Some(p) if p == (at.0, at.1 + 1) || (layers && p == (at.0 + 1, 1)) => at = p,
            // A line cut short by the crash can only be the last.
            None if i + 1 == after.len() && !line.ends_with(b"\n") => {}
            _ => return Ok(0),
        }
    }
    if after.is_empty() {
        return Ok(0);
    }
    dae::atomic::write_atomic(path, |w| {
        for l in &lines[..=keep] {
            w.write_all(l).map_err(|e| dae::Error::io(path, "writing", e))?;
        }
        Ok(())
    })?;
    Ok(after.len())
}

/// 125 → "2:05".
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

impl Observer for Progress {
    fn stop_requested(&self) -> bool {
        self.sink.as_ref().is_some_and(|s| s.stop_requested())
    }

    fn checkpoint_every(&self) -> usize {
        self.sink.as_ref().map_or(0, |s| s.every)
    }

    fn checkpoint(&mut self, checkpoint: &dae::train::Checkpoint) -> dae::Result<String> {
        self.clear();
        match &self.sink {
            Some(s) => s.save(Some(checkpoint)),
            None => Err(dae::Error::Runtime("no checkpoint path".into())),
        }
    }

    fn layer_done(&mut self, layer: &dae::stack::DoneLayer) {
        if let Some(s) = self.sink.as_mut() {
            s.done.push(layer.clone());
        }
    }

    fn begin(&mut self, stage: &str) {
        self.clear();
        self.label = stage.to_string();
    }

    fn batch(&mut self, p: &BatchProgress) {
        if !self.live {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        let rate = p.rows_done as f64 / p.seconds.max(1e-9);
        let left = (p.rows_total - p.rows_done) + (p.epochs - p.epoch) * p.rows_total;
        let width = 20;
        let filled = width * p.batch / p.batches.max(1);
        err!(
            "\r\x1b[2K{}epoch {}/{} [{}{}] batch {}/{}  loss {}  {:.0} rows/s  ETA {}",
            self.prefix(),
            p.epoch,
            p.epochs,
            "#".repeat(filled),
            ".".repeat(width - filled),
            p.batch,
            p.batches,
            loss(p.mean_loss),
            rate,
            clock(left as f64 / rate.max(1e-9))
        );
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    fn epoch(&mut self, r: &EpochRecord) {
        self.clear();
        if let Some((path, log)) = self.log.as_mut() {
            let line = serde_json::json!({
                "stage": if self.label.is_empty() { None } else { Some(&self.label) },
                "epoch": r.epoch,
                "train_loss": r.train_loss,
                "val_loss": r.val_loss,
                "train_accuracy": r.train_accuracy,
                "val_accuracy": r.val_accuracy,
                "seconds": r.seconds,
                // The f32's shortest decimal (0.05, not 0.05000000074505806 as f64 would print).
                "lr": r.lr.to_string().parse::<f64>().unwrap_or(r.lr as f64),
            });
            if writeln!(log, "{line}").and_then(|_| log.flush()).is_err() {
                errln!("warning: cannot write to {}; the JSON log stops here", path.display());
                self.log = None;
            }
        }
        if !self.lines {
            return;
        }
        let val = r
            .val_loss
            .map(|v| format!("  val {}", loss(v)))
            .unwrap_or_default();
        let acc = |name: &str, a: Option<f64>| a.map(|a| format!("  {name} {:.2} %", 100.0 * a)).unwrap_or_default();
        errln!(
            "{}epoch {:>3}  train {}{}{val}{}  {:.1} s",
            self.prefix(),
            r.epoch,
            loss(r.train_loss),
            acc("acc", r.train_accuracy),
            acc("val acc", r.val_accuracy),
            r.seconds
        );
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A loss for people: four decimals, or in exponent form when that would hide it (below 0.001
/// or from 10 million up, as when training starts to diverge).
pub fn loss(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-3..1e7).contains(&v.abs()) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn losses_read_at_any_size() {
        use super::loss;
        assert_eq!(loss(210.3347), "210.3347");
        assert_eq!(loss(0.0), "0.0000");
        assert_eq!(loss(0.00001234), "1.2340e-5");
        assert_eq!(loss(6.68e31), "6.6800e31");
        assert_eq!(loss(f64::NAN), "NaN");
    }
}

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
    /// Lines to drop from the log before the first epoch of a resumed run.
    trim: Option<LogTrim>,
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
            trim: None,
        }
    }

    /// Saves checkpoints to `sink` and stops on its Ctrl-C flag.
    pub fn with_checkpoints(mut self, sink: crate::checkpoint::Sink) -> Progress {
        self.sink = Some(sink);
        self
    }

    /// Before the first epoch it logs, drops the lines `trim` finds stale (a resumed run).
    pub fn with_trim(mut self, trim: Option<LogTrim>) -> Progress {
        self.trim = trim;
        self
    }

    /// Drops the stale lines from the log, in place (the file keeps its name, permissions and
    /// readers), and says so; a log that cannot be read or cut is left as it is, with a
    /// warning.
    fn trim_log(&mut self, trim: &LogTrim) {
        let Some((path, log)) = self.log.as_mut() else { return };
        let dropped = match std::fs::read(&*path) {
            Ok(text) => trim.lines_to_drop(&text),
            Err(_) => None,
        };
        let Some(n) = dropped else { return };
        if let Err(e) = log.flush().and_then(|()| log.get_ref().set_len(trim.bytes)) {
            errln!("warning: cannot drop the stale end of {}: {}", path.display(), dae::Error::io(&*path, "writing", e));
            return;
        }
        if self.lines {
            let (what, again) = if n == 1 { ("the epoch".to_string(), "it runs") } else { (format!("the {n} epochs"), "they run") };
            errln!("{}: dropped {what} logged after the checkpoint was written ({again} again)", path.display());
        }
    }

    /// The length of the log now (every line is flushed as it is written).
    fn log_bytes(&mut self) -> Option<u64> {
        let (_, log) = self.log.as_mut()?;
        log.flush().ok()?;
        log.get_ref().metadata().ok().map(|m| m.len())
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

/// What a resumed run drops from its `--log-json` file before it logs its first epoch: the
/// lines after `bytes`, the length of the log when its checkpoint was written, which log the
/// epochs that ran after the checkpoint (a run that crashed between checkpoints of
/// `--checkpoint-every` above 1); the resumed run runs them again and logs them again.
#[derive(Clone, Copy, Debug)]
pub struct LogTrim {
    pub bytes: u64,
    /// (layer, epoch) of the checkpoint's last whole epoch: the line that must end at `bytes`.
    pub last: (usize, usize),
    /// The lines name their layer (pretraining).
    pub layers: bool,
}

impl LogTrim {
    /// The trim for resuming from `resume`, if its checkpoint recorded the log's length.
    pub fn of(resume: &crate::checkpoint::Loaded, layers: bool) -> Option<LogTrim> {
        let last = match &resume.current {
            Some(c) if c.position.epochs_done > 0 => Some((resume.done.len(), c.position.epochs_done)),
            _ => resume.done.last().map(|d| (resume.done.len() - 1, d.history.len())),
        };
        Some(LogTrim { bytes: resume.log_bytes?, last: last.filter(|&(_, e)| e > 0)?, layers })
    }

    /// The number of whole or half-written lines of `log` after `bytes` to drop. None, and the
    /// log is left alone, unless the line that ends at `bytes` is the checkpoint's last epoch
    /// and every line after it the run's own next epoch (the same stage's next epoch, or the
    /// next layer's first), a last half-written line aside: another run's lines, or a log
    /// that is not the one the checkpoint saw, stay.
    pub fn lines_to_drop(&self, log: &[u8]) -> Option<usize> {
        use serde_json::Value;
        let bytes = usize::try_from(self.bytes).ok()?;
        if bytes > log.len() || (bytes > 0 && log[bytes - 1] != b'\n') {
            return None;
        }
        // The (layer, epoch) a line logs, if it is a line of this kind of run.
        let position = |line: &[u8]| -> Option<(usize, usize)> {
            let v: Value = serde_json::from_slice(line).ok()?;
            let epoch = v.get("epoch")?.as_u64()? as usize;
            let layer = match v.get("stage")? {
                Value::Null if !self.layers => 0,
                Value::String(s) if self.layers => s.strip_prefix("layer ")?.split('/').next()?.parse::<usize>().ok()?.checked_sub(1)?,
                _ => return None,
            };
            Some((layer, epoch))
        };
        let before = &log[..bytes];
        let anchor = before[..bytes.saturating_sub(1)].rsplit(|&b| b == b'\n').next()?;
        if position(anchor) != Some(self.last) {
            return None;
        }
        let after: Vec<&[u8]> = log[bytes..].split_inclusive(|&b| b == b'\n').collect();
        let mut at = self.last;
        for (i, line) in after.iter().enumerate() {
            match position(line) {
                Some(p) if p == (at.0, at.1 + 1) || (self.layers && p == (at.0 + 1, 1)) => at = p,
                None if i + 1 == after.len() && !line.ends_with(b"\n") => {}
                _ => return None,
            }
        }
        (!after.is_empty()).then_some(after.len())
    }
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
        let log_bytes = self.log_bytes();
        match &self.sink {
            Some(s) => s.save(Some(checkpoint), log_bytes),
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
        if let Some(trim) = self.trim.take() {
            self.trim_log(&trim);
        }
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
    /// What a resumed run cuts off its log: only its own epochs after the point its
    /// checkpoint recorded, a half-written last line among them.
    #[test]
    fn a_log_loses_only_the_runs_own_epochs_after_the_checkpoint() {
        use super::LogTrim;
        let line = |stage: Option<&str>, epoch: u64| format!("{}\n", serde_json::json!({"stage": stage, "epoch": epoch, "train_loss": 1.5}));
        let join = |lines: &[String]| lines.concat().into_bytes();
        let head = [line(Some("layer 1/3"), 1), line(None, 1), line(None, 2)];
        let bytes = join(&head).len() as u64;
        let t = LogTrim { bytes, last: (0, 2), layers: false };
        assert_eq!(t.lines_to_drop(&join(&head)), None, "nothing after the checkpoint");
        assert_eq!(t.lines_to_drop(&join(&[&head[..], &[line(None, 3), line(None, 4)]].concat())), Some(2));
        let mut half = join(&[&head[..], &[line(None, 3)]].concat());
        half.extend_from_slice(b"{\"stage\":null,\"ep");
        assert_eq!(t.lines_to_drop(&half), Some(2), "a half-written last line goes too");
        // Another run's epochs after the run's own, a gap, or another kind of line: kept.
        assert_eq!(t.lines_to_drop(&join(&[&head[..], &[line(None, 3), line(None, 1)]].concat())), None);
        assert_eq!(t.lines_to_drop(&join(&[&head[..], &[line(None, 4)]].concat())), None);
        assert_eq!(t.lines_to_drop(&join(&[&head[..], &[line(Some("layer 1/2"), 3)]].concat())), None);
        // The point recorded is not the end of the checkpoint's epoch line: another log.
        for bad in [LogTrim { bytes: bytes - 1, ..t }, LogTrim { bytes: bytes + 1000, ..t }, LogTrim { last: (0, 1), ..t }] {
            assert_eq!(bad.lines_to_drop(&join(&[&head[..], &[line(None, 3)]].concat())), None);
        }
        // Pretraining: on into the next layer's first epoch.
        let stack = [line(Some("layer 1/2"), 1), line(Some("layer 1/2"), 2)];
        let t = LogTrim { bytes: join(&stack).len() as u64, last: (0, 2), layers: true };
        let after = [line(Some("layer 1/2"), 3), line(Some("layer 2/2"), 1), line(Some("layer 2/2"), 2)];
        assert_eq!(t.lines_to_drop(&join(&[&stack[..], &after[..]].concat())), Some(3));
        assert_eq!(t.lines_to_drop(&join(&[&stack[..], &[line(None, 3)]].concat())), None);
    }

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

//! Checking that memory is there before taking it, so that a file whose header claims an
//! absurd size is refused up front instead of aborting the process.

use crate::error::{Error, Result};
use std::path::Path;

/// Bytes of memory available to this process now (MemAvailable on Linux), or `None` when the
/// system does not say.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The memory a request may take: what is available, or without a reading still no more than
/// any machine of today holds (1 TiB).
fn limit() -> u64 {
    available_bytes().unwrap_or(1 << 40)
}

/// Fails with a clear message when holding `bytes` bytes for `what` (read from `path`) would
/// exceed the memory available.
pub fn check_fits(path: &Path, bytes: u64, what: &str) -> Result<()> {
    let limit = limit();
    if bytes > limit {
        return Err(Error::input(
            path,
            format!(
                "{what} would need {} of memory but only {} is available: \
                 the header is wrong or the data must be split",
                human_bytes(bytes),
                human_bytes(limit)
            ),
        ));
    }
    Ok(())
}

/// Fails with a usage error naming `option` when training a model of `params` parameters
/// needs more memory than is available: the parameters four times over (the weights, their
/// gradients, and up to two optimiser moments), `batch_values` values for a batch (its
/// activations, gradients and masks) and `other_values` more (codes kept for the next layer).
/// So an absurd size is refused up front instead of aborting.
pub fn check_model(option: &str, params: u128, batch_values: u128, other_values: u128) -> Result<()> {
    let bytes = 4u128.saturating_mul(params.saturating_mul(4).saturating_add(batch_values).saturating_add(other_values));
    let limit = limit();
    if bytes > limit as u128 {
        return Err(Error::usage(
            option,
            format!(
                "a model this large would need about {} of memory to train, but only {} is available",
                human_bytes(bytes.min(u64::MAX as u128) as u64),
                human_bytes(limit)
            ),
        ));
    }
    Ok(())
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use dae::backend::Backend;
use dae::dae::{DaeParams, DaeWorkspace};
use dae::{Cpu, Dae};
use serde_json::Value;
use std::path::PathBuf;

/// The golden-vector directory: DAE_GOLDEN_DIR, else ../shared/golden beside the project.
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("DAE_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
    }
}

/// The cases of golden file `name` (dae.json, optim.json, mlp.json). Fails loudly when missing:
/// a golden test that finds no vectors must not pass.
pub fn golden_cases(name: &str) -> Vec<Value> {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("golden vectors {} are missing ({e}); set DAE_GOLDEN_DIR", path.display())
    });
    let v: Value = serde_json::from_str(&text).expect("golden file is JSON");
    let cases = v.as_array().expect("golden file is a list of cases").clone();
    assert!(!cases.is_empty(), "{name} has no cases");
    cases
}

/// A nested JSON list flattened to f32, row-major.
pub fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number or list: {other}"),
    }
}

/// Asserts |got − want| ≤ abs + rel·|want| elementwise (the golden README's tolerance).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= abs + rel * w.abs(),
            "{what}[{i}]: got {g}, want {w} (rel {rel}, abs {abs})"
        );
    }
}

/// Runs the forward/backward of `model` on given clean rows `x`, corrupted rows `xt` and mask,
/// returning the workspace (h, row losses, gradients) and the uploaded parameters.
pub fn run_batch<B: Backend>(
    be: &B,
    model: &Dae,
    x: &[f32],
    xt: &[f32],
    mask: &[f32],
    n: usize,
) -> (DaeWorkspace<B>, DaeParams<B>) {
    let mut p = DaeParams::upload(be, model).unwrap();
    let mut ws = DaeWorkspace::new(be, &model.config, n).unwrap();
    be.upload(&mut ws.x, x);
    be.upload(&mut ws.xt, xt);
    if let Some(m) = ws.mask.as_mut() {
        be.upload(m, mask);
    }
    dae::dae::forward_backward(be, &model.config, &mut p, &mut ws, n, dae::dae::GradSink::Buffers);
    (ws, p)
}

/// The first `len` values of a backend buffer, on the host.
pub fn host<B: Backend>(be: &B, buf: &B::Buf, len: usize) -> Vec<f32> {
    let mut v = vec![0f32; len];
    be.download(buf, &mut v);
    v
}

/// Prints why a test skips, past the test harness's capture, so that it shows in every run.
pub fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{why}");
}

/// The GPU backend when one is usable here; otherwise None, after printing why the calling
/// test skips its GPU part.
#[cfg(feature = "cuda")]
pub fn cuda(test: &str) -> Option<dae::Cuda> {
    match dae::Cuda::new(0, dae::Precision::Fp32) {
        Ok(c) => Some(c),
        Err(e) => {
            skip(&format!("{test}: skipping the GPU part: {e}"));
            None
        }
    }
}

/// The batch-mean loss of `model` on (x, xt, mask): forward only.
pub fn batch_loss(cpu: &Cpu, model: &Dae, x: &[f32], xt: &[f32], mask: &[f32], n: usize) -> f64 {
    let cfg = &model.config;
    let p = DaeParams::upload(cpu, model).unwrap();
    let mut ws = DaeWorkspace::new(cpu, cfg, n).unwrap();
    cpu.upload(&mut ws.x, x);
    cpu.upload(&mut ws.xt, xt);
    if let Some(m) = ws.mask.as_mut() {
        cpu.upload(m, mask);
    }
    dae::dae::encode(cpu, cfg, &p, &ws.xt, &mut ws.h, n);
    dae::dae::decode_pre(cpu, cfg, &p, &ws.h, &mut ws.a, n);
    let spec = dae::dae::loss_spec(cfg, n, dae::backend::LossOutput::Rows);
    cpu.loss_grad(&mut ws.a, &p.c, &ws.x, ws.mask.as_ref(), &spec, n, cfg.inputs, &mut ws.row_loss, 0);
    ws.row_loss[..n].iter().map(|&v| v as f64).sum::<f64>() / n as f64
}

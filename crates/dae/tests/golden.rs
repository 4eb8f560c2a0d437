//! The engine against PyTorch autograd: every case of dae.json and optim.json from the golden
//! directory (DAE_GOLDEN_DIR, else ../shared/golden), relative tolerance 1e-4.

mod common;

use common::{assert_close, flat, golden_cases, host, run_batch};
use dae::backend::{Backend, StepSpec};
use dae::dae::{decode, encode, DaeParams};
use dae::{Activation, Corruption, Cpu, Dae, DaeConfig, Emphasis, Loss, Optimizer};
use serde_json::Value;

const REL: f32 = 1e-4;
const ABS: f32 = 1e-5;

fn dae_from_case(c: &Value) -> Dae {
    let s = |k: &str| c[k].as_str().unwrap().replace('_', "-");
    let n = |k: &str| c[k].as_u64().unwrap() as usize;
    let level = c["level"].as_f64().unwrap() as f32;
    let noise = match s("corruption").as_str() {
        "masking" => Corruption::Masking { level },
        "gaussian" => Corruption::Gaussian { sigma: level },
        "salt-and-pepper" => Corruption::SaltAndPepper { level },
        other => panic!("unknown corruption {other}"),
    };
    let emphasis = c["emphasis"].as_array().map(|e| Emphasis {
        corrupted: e[0].as_f64().unwrap() as f32,
        clean: e[1].as_f64().unwrap() as f32,
    });
    let config = DaeConfig {
        inputs: n("d"),
        hidden: n("k"),
        encoder: s("encoder").parse::<Activation>().unwrap(),
        decoder: s("decoder").parse::<Activation>().unwrap(),
        tied: c["tied"].as_bool().unwrap(),
        loss: s("loss").parse::<Loss>().unwrap(),
        noise,
        emphasis,
    };
    config.validate().unwrap();
    Dae {
        config,
        w: flat(&c["W"]),
        b: flat(&c["b"]),
        c: flat(&c["c"]),
        v: (!c["V"].is_null()).then(|| flat(&c["V"])),
    }
}

fn check_dae_case<B: Backend>(be: &B, c: &Value) {
    let model = dae_from_case(c);
    let n = c["n"].as_u64().unwrap() as usize;
    let cfg = &model.config;
    let (d, k) = (cfg.inputs, cfg.hidden);
    let label = format!(
        "case seed {} ({} {} {} {} tied={} {} emphasis={:?}, {})",
        c["seed"], cfg.encoder, cfg.decoder, cfg.loss, cfg.noise, cfg.tied, n, cfg.emphasis, be.describe()
    );
    let (x, xt, mask) = (flat(&c["x"]), flat(&c["x_corrupted"]), flat(&c["corrupted_mask"]));

    // Forward: hidden code and reconstruction.
    let p = DaeParams::upload(be, &model).unwrap();
    let (mut xt_buf, mut h, mut z) = (be.alloc(n * d).unwrap(), be.alloc(n * k).unwrap(), be.alloc(n * d).unwrap());
    be.upload(&mut xt_buf, &xt);
    encode(be, cfg, &p, &xt_buf, &mut h, n);
    decode(be, cfg, &p, &h, &mut z, n);
    assert_close(&format!("{label} hidden"), &host(be, &h, n * k), &flat(&c["hidden"]), REL, ABS);
    assert_close(&format!("{label} reconstruction"), &host(be, &z, n * d), &flat(&c["reconstruction"]), REL, ABS);

    // Loss and every gradient.
    let (ws, _) = run_batch(be, &model, &x, &xt, &mask, n);
    let loss = host(be, &ws.row_loss, n).iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let want = c["loss_value"].as_f64().unwrap();
    assert!(
        (loss - want).abs() <= 1e-5 + 1e-4 * want.abs(),
        "{label} loss: got {loss}, want {want}"
    );
    let g = &ws.grads;
    assert_close(&format!("{label} grad_W"), &host(be, &g.w, d * k), &flat(&c["grad_W"]), REL, ABS);
    assert_close(&format!("{label} grad_b"), &host(be, &g.b, k), &flat(&c["grad_b"]), REL, ABS);
    assert_close(&format!("{label} grad_c"), &host(be, &g.c, d), &flat(&c["grad_c"]), REL, ABS);
    match (&g.v, c["grad_V"].is_null()) {
        (Some(gv), false) => assert_close(&format!("{label} grad_V"), &host(be, gv, k * d), &flat(&c["grad_V"]), REL, ABS),
        (None, true) => {}
        _ => panic!("{label}: tied/untied mismatch"),
    }
}

fn check_dae_cases<B: Backend>(be: &B) {
    let cases = golden_cases("dae.json");
    for c in &cases {
        check_dae_case(be, c);
    }
    // Every combination the file covers was exercised.
    assert!(cases.len() >= 22, "expected the 22 cases of the golden set, got {}", cases.len());
}

#[test]
fn golden_dae_forward_loss_and_gradients() {
    for threads in [1, 2] {
        check_dae_cases(&Cpu::new(Some(threads)).unwrap());
    }
}

#[cfg(feature = "cuda")]
#[test]
fn golden_cuda_dae_forward_loss_and_gradients() {
    if let Some(gpu) = common::cuda("golden_cuda_dae_forward_loss_and_gradients") {
        check_dae_cases(&gpu);
    }
}

fn optimizer_from_case(c: &Value) -> (Optimizer, f32) {
    let h = &c["hyper"];
    let f = |k: &str, default: f64| h.get(k).and_then(Value::as_f64).unwrap_or(default) as f32;
    let betas = h.get("betas").and_then(Value::as_array);
    let beta = |i: usize, d: f64| betas.map_or(d, |b| b[i].as_f64().unwrap()) as f32;
    let opt = match c["optimizer"].as_str().unwrap() {
        "sgd" => Optimizer::Sgd {
            momentum: f("momentum", 0.0),
            nesterov: h.get("nesterov").and_then(Value::as_bool).unwrap_or(false),
            weight_decay: f("weight_decay", 0.0),
        },
        "adam" => Optimizer::Adam {
            beta1: beta(0, 0.9),
            beta2: beta(1, 0.999),
            eps: f("eps", 1e-8),
            weight_decay: f("weight_decay", 0.0),
        },
        "adamw" => Optimizer::AdamW {
            beta1: beta(0, 0.9),
            beta2: beta(1, 0.999),
            eps: f("eps", 1e-8),
            weight_decay: f("weight_decay", 0.01),
        },
        other => panic!("unknown optimizer {other}"),
    };
    (opt, f("lr", f64::NAN))
}

fn check_optimizer_cases<B: Backend>(be: &B) {
    let cases = golden_cases("optim.json");
    for c in &cases {
        let (opt, lr) = optimizer_from_case(c);
        opt.validate().unwrap();
        let p0 = flat(&c["p0"]);
        let len = p0.len();
        let mut p = be.alloc(len).unwrap();
        be.upload(&mut p, &p0);
        let mut g_buf = be.alloc(len).unwrap();
        let mut state = be.opt_state(&opt, len).unwrap();
        let grads = c["grads"].as_array().unwrap();
        let want = c["params_after_each_step"].as_array().unwrap();
        assert_eq!(grads.len(), want.len());
        for (t, (g, w)) in grads.iter().zip(want).enumerate() {
            be.upload(&mut g_buf, &flat(g));
            be.update(&mut p, &g_buf, &mut state, &StepSpec { optimizer: opt, lr, t: t as u64 + 1 }, len);
            let label = format!("{} {:?} step {} ({})", c["optimizer"], c["hyper"], t + 1, be.describe());
            assert_close(&label, &host(be, &p, len), &flat(w), REL, ABS);
        }
    }
    assert!(!cases.is_empty());
}

#[test]
fn golden_optimizer_steps() {
    check_optimizer_cases(&Cpu::new(Some(1)).unwrap());
}

#[cfg(feature = "cuda")]
#[test]
fn golden_cuda_optimizer_steps() {
    if let Some(gpu) = common::cuda("golden_cuda_optimizer_steps") {
        check_optimizer_cases(&gpu);
    }
}

fn check_mlp_cases<B: Backend>(be: &B) {
    use dae::backend::LossOutput;
    use dae::network::{backward, forward, loss, Dropout, NetParams, NetWorkspace, Network, NetworkConfig, Task};
    let cases = golden_cases("mlp.json");
    for c in &cases {
        let sizes: Vec<usize> = c["sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let n = c["n"].as_u64().unwrap() as usize;
        let p = c["dropout"].as_f64().unwrap() as f32;
        let act: Activation = c["activation"].as_str().unwrap().parse().unwrap();
        let classes = *sizes.last().unwrap();
        let config = NetworkConfig {
            sizes: sizes[..sizes.len() - 1].to_vec(),
            activation: act,
            task: Task::Classification { classes },
            dropout: p,
            input_dropout: 0.0,
        };
        let net = Network {
            config: config.clone(),
            weights: c["weights"].as_array().unwrap().iter().map(flat).collect(),
            biases: c["biases"].as_array().unwrap().iter().map(flat).collect(),
        };
        let label = format!("mlp case seed {} ({act}, dropout {p}, {})", c["seed"], be.describe());
        let mut params = NetParams::upload(be, &net).unwrap();
        let mut ws = NetWorkspace::new(be, &config, n).unwrap();
        be.upload(&mut ws.act.x, &flat(&c["x"]));
        let labels: Vec<f32> = c["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as f32).collect();
        be.upload(&mut ws.targets, &labels);
        let dropout = if p > 0.0 {
            // The golden masks are keep indicators; inverted dropout scales kept units.
            for (l, m) in c["dropout_keep_masks"].as_array().unwrap().iter().enumerate() {
                let scaled: Vec<f32> = flat(m).iter().map(|&k| k / (1.0 - p)).collect();
                be.upload(ws.act.masks[l + 1].as_mut().unwrap(), &scaled);
            }
            Dropout::Given
        } else {
            Dropout::Off
        };
        be.install(|| {
            forward(be, &config, &params, &mut ws, n, dropout);
            let bias = net.biases.last().unwrap();
            let logits: Vec<f32> = host(be, &ws.logits, n * classes).iter().enumerate().map(|(i, &v)| v + bias[i % classes]).collect();
            assert_close(&format!("{label} logits"), &logits, &flat(&c["logits"]), REL, ABS);
            loss(be, &config, &params, &mut ws, n, LossOutput::Grad);
            backward(be, &config, &mut params, &mut ws, n, p > 0.0, dae::dae::GradSink::Buffers);
        });
        let l = host(be, &ws.row_loss, n).iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let want = c["loss_value"].as_f64().unwrap();
        assert!((l - want).abs() <= 1e-5 + 1e-4 * want.abs(), "{label} loss: got {l}, want {want}");
        for (i, g) in c["grad_weights"].as_array().unwrap().iter().enumerate() {
            let len = net.weights[i].len();
            assert_close(&format!("{label} grad_weights[{i}]"), &host(be, &ws.grads.w[i], len), &flat(g), REL, ABS);
        }
        for (i, g) in c["grad_biases"].as_array().unwrap().iter().enumerate() {
            let len = net.biases[i].len();
            assert_close(&format!("{label} grad_biases[{i}]"), &host(be, &ws.grads.b[i], len), &flat(g), REL, ABS);
        }
    }
    assert!(cases.len() >= 3);
}

#[test]
fn golden_mlp_forward_loss_and_gradients() {
    for threads in [1, 2] {
        check_mlp_cases(&Cpu::new(Some(threads)).unwrap());
    }
}

#[cfg(feature = "cuda")]
#[test]
fn golden_cuda_mlp_forward_loss_and_gradients() {
    if let Some(gpu) = common::cuda("golden_cuda_mlp_forward_loss_and_gradients") {
        check_mlp_cases(&gpu);
    }
}

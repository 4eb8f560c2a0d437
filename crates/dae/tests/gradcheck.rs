//! Analytic gradients against central finite differences of the engine's own loss, for every
//! encoder activation × decoder activation × loss × tied/untied combination, with and without
//! emphasis.

mod common;

use common::{batch_loss, run_batch};
use dae::dae::{decode_pre, encode, DaeParams};
use dae::rng::Rng;
use dae::{Activation, Corruption, Cpu, Dae, DaeConfig, Emphasis, Loss};

const N: usize = 4;
const D: usize = 6;
const K: usize = 3;

/// Mostly-binary targets in [0, 1], masked inputs, and the mask.
fn batch(seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed, 99);
    let x: Vec<f32> = (0..N * D)
        .map(|_| {
            let u = rng.next_f32();
            if u > 0.5 { 0.9 + 0.1 * u } else { 0.1 * u }
        })
        .collect();
    let mask: Vec<f32> = (0..N * D).map(|_| (rng.next_f32() < 0.3) as u8 as f32).collect();
    let xt = x.iter().zip(&mask).map(|(&v, &m)| if m == 1.0 { 0.0 } else { v }).collect();
    (x, xt, mask)
}

/// Which hidden units and outputs are positive: where a ReLU sits on its kink.
fn active_units(cpu: &Cpu, m: &Dae, xt: &[f32]) -> Vec<bool> {
    let p = DaeParams::upload(cpu, m).unwrap();
    let mut h = vec![0f32; N * K];
    let mut z = vec![0f32; N * D];
    encode(cpu, &m.config, &p, &xt.to_vec(), &mut h, N);
    decode_pre(cpu, &m.config, &p, &h, &mut z, N);
    let mut pattern: Vec<bool> = h.iter().map(|&v| v > 0.0).collect();
    pattern.extend(z.chunks(D).flat_map(|row| row.iter().zip(&m.c).map(|(a, c)| a + c > 0.0)));
    pattern
}

/// Checks every coordinate of every parameter; returns how many were skipped at a kink.
fn check(config: DaeConfig, seed: u64) -> usize {
    let cpu = Cpu::new(Some(1)).unwrap();
    let mut model = Dae::init(&config, seed);
    // Non-zero biases so that every bias gradient is exercised away from symmetric points.
    let mut rng = Rng::new(seed, 7);
    for v in model.b.iter_mut().chain(model.c.iter_mut()) {
        *v = (rng.next_f32() - 0.5) * 0.2;
    }
    let (x, xt, mask) = batch(seed);
    let (ws, _) = run_batch(&cpu, &model, &x, &xt, &mask, N);
    let g = &ws.grads;
    let label = format!(
        "enc {} dec {} {} tied={} emphasis={:?}",
        config.encoder, config.decoder, config.loss, config.tied, config.emphasis
    );
    let analytic: Vec<(&str, &[f32])> = {
        let mut a: Vec<(&str, &[f32])> = vec![("W", &g.w), ("b", &g.b), ("c", &g.c)];
        if let Some(v) = &g.v {
            a.push(("V", v));
        }
        a
    };
    let mut skipped = 0;
    let mut checked = 0;
    for (name, grad) in analytic {
        for i in 0..grad.len() {
            let param = |m: &mut Dae| -> *mut f32 {
                match name {
                    "W" => &mut m.w[i],
                    "b" => &mut m.b[i],
                    "c" => &mut m.c[i],
                    _ => &mut m.v.as_mut().unwrap()[i],
                }
            };
            let moved = |delta: f32| {
                let mut m = model.clone();
                // SAFETY: `param` points into `m`, alive for this block.
                unsafe { *param(&mut m) += delta };
                m
            };
            let h = 1e-2f32;
            let (mp, mm) = (moved(h), moved(-h));
            // A ReLU kink inside [θ−h, θ+h] breaks the finite difference: skip that point.
            if active_units(&cpu, &mp, &xt) != active_units(&cpu, &mm, &xt) {
                skipped += 1;
                continue;
            }
            let central = (batch_loss(&cpu, &mp, &x, &xt, &mask, N)
                - batch_loss(&cpu, &mm, &x, &xt, &mask, N))
                / (2.0 * h as f64);
            checked += 1;
            let a = grad[i] as f64;
            assert!(
                (a - central).abs() <= 2e-3 + 1e-2 * central.abs(),
                "{label}: d/d{name}[{i}] analytic {a}, finite difference {central}"
            );
        }
    }
    assert!(checked > 0);
    skipped
}

#[test]
fn gradients_match_finite_differences_for_every_combination() {
    let mut total_skipped = 0;
    let mut combos = 0;
    for encoder in Activation::ALL {
        for (loss, decoders) in [
            (Loss::CrossEntropy, &[Activation::Sigmoid][..]),
            (Loss::SquaredError, &Activation::ALL[..]),
        ] {
            for &decoder in decoders {
                for tied in [true, false] {
                    for emphasis in [None, Some(Emphasis { corrupted: 1.0, clean: 0.3 })] {
                        let config = DaeConfig {
                            inputs: D,
                            hidden: K,
                            encoder,
                            decoder,
                            tied,
                            loss,
                            noise: Corruption::Masking { level: 0.3 },
                            emphasis,
                        };
                        total_skipped += check(config, combos as u64 + 1);
                        combos += 1;
                    }
                }
            }
        }
    }
    assert_eq!(combos, 4 * 5 * 2 * 2);
    // Kinks are rare: almost every coordinate must have been compared.
    assert!(total_skipped < combos * 3, "skipped {total_skipped} coordinates at kinks");
}

//! The matrix products of one DAE training step (784→500, tied), at batch 20 and 128, by each
//! candidate library, in GFLOP/s: dae's own kernels, the `gemm` crate, and (with
//! `--features openblas`) OpenBLAS through cblas. GFLOP/s count the dense work (2·m·n·k), so a
//! kernel that skips zeros shows its saving as a higher rate.
//!
//!     cargo run --release -p dae-bench --bin gemm_shapes [--features openblas] [-- THREADS]
//!     cargo run --release -p dae-bench --bin gemm_shapes -- 2 sda   # the stacked recipe's fine-tuning products

use dae::backend::cpu::gemm::{gemm as dae_gemm, Operand, Term};
use dae::backend::cpu::team::Team;
use std::time::Instant;

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    /// op(A) is Aᵀ (A stored k×m).
    ta: bool,
    /// op(B) is Bᵀ (B stored n×k).
    tb: bool,
    /// Fraction of A's values that are zero (masked images: about 0.65).
    zeros: f32,
}

fn shapes(batch: usize) -> Vec<Shape> {
    vec![
        Shape { name: "encode  x̃·W, dense x̃", m: batch, n: 500, k: 784, ta: false, tb: false, zeros: 0.0 },
        Shape { name: "encode  x̃·W, 65 % zeros", m: batch, n: 500, k: 784, ta: false, tb: false, zeros: 0.65 },
        Shape { name: "encode  x̃·W, 90 % zeros", m: batch, n: 500, k: 784, ta: false, tb: false, zeros: 0.9 },
        Shape { name: "decode  h·Wᵀ", m: batch, n: 784, k: 500, ta: false, tb: true, zeros: 0.0 },
        Shape { name: "dh      dz·W", m: batch, n: 500, k: 784, ta: false, tb: false, zeros: 0.0 },
        Shape { name: "grad    x̃ᵀ·dh", m: 784, n: 500, k: batch, ta: true, tb: false, zeros: 0.0 },
    ]
}

/// Seconds per call, best of five rounds.
fn time(mut f: impl FnMut(), flops: f64) -> f64 {
    let reps = ((2e9 / flops) as usize).clamp(20, 5000);
    for _ in 0..3 {
        f();
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

#[cfg(feature = "openblas")]
mod cblas {
    extern "C" {
        pub fn cblas_sgemm(order: i32, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: f32, a: *const f32, lda: i32, b: *const f32, ldb: i32, beta: f32, c: *mut f32, ldc: i32);
        pub fn openblas_set_num_threads(n: i32);
    }
}

/// The products of one fine-tuning step of the stacked recipe (784-1000-1000-1000-10, batch 32),
/// each with its share of the step's multiply-adds, by dae's kernels alone.
fn sda(team: &Team) {
    let n = 32;
    // (name, m, n, k, ta, tb, beta, count per step)
    let shapes = [
        ("forward, layer 1", n, 1000, 784, false, false, 0.0, 1),
        ("forward, layers 2-3", n, 1000, 1000, false, false, 0.0, 2),
        ("input gradient, layers 2-3", n, 1000, 1000, false, true, 0.0, 2),
        ("weight step, layer 1", 784, 1000, n, true, false, 1.0, 1),
        ("weight step, layers 2-3", 1000, 1000, n, true, false, 1.0, 2),
    ];
    println!("Fine-tuning products at batch 32, dae's kernels, GFLOP/s\n");
    println!("| product | m×n×k | GFLOP/s | ms per 1,875 steps |");
    println!("|---|---|---|---|");
    let mut total = 0.0;
    for (name, m, nn, k, ta, tb, beta, count) in shapes {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * nn];
        let mut c = vec![0f32; m * nn];
        let flops = 2.0 * (m * nn * k) as f64;
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let (br, bc) = if tb { (nn, k) } else { (k, nn) };
        let t = time(
            || {
                let t = [Term { a: Operand::new(&a, ar, ac, ta), b: Operand::new(&b, br, bc, tb), k }];
                dae_gemm(team, m, nn, &t, -1e-9, beta, &mut c);
            },
            flops,
        );
        let epoch = t * 1875.0 * count as f64;
        total += epoch;
        println!("| {name} | {m}×{nn}×{k} | {:.0} | {:.0} |", flops / t / 1e9, epoch * 1e3);
    }
    println!("\nall products of an epoch: {total:.2} s");
}

fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let team = Team::new(threads).expect("threads");
    if std::env::args().nth(2).as_deref() == Some("sda") {
        return sda(&team);
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    #[cfg(feature = "openblas")]
    unsafe {
        cblas::openblas_set_num_threads(threads as i32)
    };
    let mut header = String::from("| shape | m×n×k | dae | gemm crate |");
    if cfg!(feature = "openblas") {
        header += " OpenBLAS |";
    }
    println!("GFLOP/s on {threads} thread(s)\n");
    println!("{header}");
    println!("|{}", "---|".repeat(header.matches('|').count() - 1));
    for batch in [20, 128] {
        for s in shapes(batch) {
            // Zeros spread evenly (every value whose index hashes below the fraction).
            let a: Vec<f32> = (0..s.m * s.k).map(|i| if ((i * 2_654_435_761) % 1000) as f32 / 1000.0 < s.zeros { 0.0 } else { 0.5 }).collect();
            let b = vec![0.25f32; s.k * s.n];
            let mut c = vec![0f32; s.m * s.n];
            let flops = 2.0 * (s.m * s.n * s.k) as f64;
            let (ar, ac) = if s.ta { (s.k, s.m) } else { (s.m, s.k) };
            let (br, bc) = if s.tb { (s.n, s.k) } else { (s.k, s.n) };
            let ours = time(
                || {
                    let t = [Term { a: Operand::new(&a, ar, ac, s.ta), b: Operand::new(&b, br, bc, s.tb), k: s.k }];
                    dae_gemm(&team, s.m, s.n, &t, 1.0, 0.0, &mut c);
                },
                flops,
            );
            let crate_time = pool.install(|| {
                let (a_rs, a_cs) = if s.ta { (1, s.m as isize) } else { (s.k as isize, 1) };
                let (b_rs, b_cs) = if s.tb { (1, s.k as isize) } else { (s.n as isize, 1) };
                let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
                time(
                    || unsafe {
                        gemm::gemm(s.m, s.n, s.k, c.as_mut_ptr(), 1, s.n as isize, false, a.as_ptr(), a_cs, a_rs, b.as_ptr(), b_cs, b_rs, 1.0, 1.0, false, false, false, par);
                    },
                    flops,
                )
            });
            let line = format!("| {} (batch {batch}) | {}×{}×{} | {:.0} | {:.0} |", s.name, s.m, s.n, s.k, flops / ours / 1e9, flops / crate_time / 1e9);
            #[cfg(feature = "openblas")]
            let line = {
                let t = time(
                    || unsafe {
                        cblas::cblas_sgemm(101, if s.ta { 112 } else { 111 }, if s.tb { 112 } else { 111 }, s.m as i32, s.n as i32, s.k as i32, 1.0, a.as_ptr(), ac as i32, b.as_ptr(), bc as i32, 0.0, c.as_mut_ptr(), s.n as i32);
                    },
                    flops,
                );
                line + &format!(" {:.0} |", flops / t / 1e9)
            };
            println!("{line}");
        }
    }
}

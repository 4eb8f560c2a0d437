//! The CUDA kernels on the CPU: kernels.cu compiled by g++ against tests/emu/cuda_emu.h (each
//! block's threads as host threads, `__syncthreads` a barrier) and run against the CPU
//! engine's operations. This checks the kernels' arithmetic, indexing and block-level
//! synchronisation on every machine, GPU or not; tests/cuda.rs checks the same kernels, and
//! the backend's launches of them, on a GPU.
#![cfg(feature = "cuda")]

mod common;

use common::assert_close;
use dae::backend::cuda::{col_sum_block, KERNELS, KERNEL_NAMES};
use dae::backend::{Backend, LossOutput, LossSpec, Trans};
use dae::corrupt::{corrupt_row, NoiseKey};
use dae::rng::Rng;
use dae::{Activation, Corruption, Cpu, Emphasis, Loss};
use std::ffi::{c_char, CString};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

type Launch = unsafe extern "C" fn(*const c_char, u32, u32, *const u64, i32) -> i32;

/// The kernels built for the CPU; one launch at a time (the emulation's state is global).
struct Emu {
    launch: Mutex<Launch>,
}

impl Emu {
    /// Runs kernel `name` over `grid` blocks of `block` threads with these argument slots
    /// (host pointers stand for device pointers).
    fn run(&self, name: &str, grid: u32, block: u32, slots: &[u64]) {
        let f = self.launch.lock().unwrap_or_else(|p| p.into_inner());
        let c = CString::new(name).unwrap();
        // SAFETY: the slots match the kernel's parameters (checked by count) and every pointer
        // among them covers what the kernel reads and writes.
        let rc = unsafe { (*f)(c.as_ptr(), grid, block, slots.as_ptr(), slots.len() as i32) };
        assert_eq!(rc, 0, "{name}: launch failed (-1: wrong argument count, -2: no such kernel)");
    }
}

/// The emulation, built once; None (after saying why) where no C++20 compiler is found.
fn emu(test: &str) -> Option<&'static Emu> {
    static EMU: OnceLock<Result<Emu, String>> = OnceLock::new();
    match EMU.get_or_init(build) {
        Ok(e) => Some(e),
        Err(why) => {
            common::skip(&format!("{test}: skipping: {why}"));
            if std::env::var_os("DAE_REQUIRE_CXX").is_some() {
                panic!("DAE_REQUIRE_CXX is set but the kernels could not be built for the CPU: {why}");
            }
            None
        }
    }
}

fn build() -> Result<Emu, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_emu");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let header = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/emu/cuda_emu.h");
    let mut src = format!("#include \"{}\"\n", header.display());
    src.push_str(KERNELS);
    src.push_str("\nextern \"C\" __attribute__((visibility(\"default\"))) int emu_launch(const char* name, unsigned grid, unsigned block, const uint64_t* slots, int n) {\n");
    for k in KERNEL_NAMES {
        src.push_str(&format!("    if (!std::strcmp(name, \"{k}\")) return emu_run({k}, grid, block, slots, n);\n"));
    }
    src.push_str("    return -2;\n}\n");
    let cpp = dir.join(format!("kernels_emu_{}.cpp", std::process::id()));
    let lib = dir.join(format!("libkernels_emu_{}.so", std::process::id()));
    std::fs::write(&cpp, src).map_err(|e| e.to_string())?;
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let out = Command::new(&cxx)
        .args(["-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-w", "-fvisibility=hidden"])
        .arg("-o")
        .arg(&lib)
        .arg(&cpp)
        .output()
        .map_err(|e| format!("could not run the C++ compiler '{cxx}' ({e}); set CXX"))?;
    if !out.status.success() {
        return Err(format!("{cxx} failed to build kernels.cu for the CPU:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    // SAFETY: the library is the one just built; its initialisers only set up statics.
    let lib = unsafe { libloading::Library::new(&lib) }.map_err(|e| e.to_string())?;
    // SAFETY: emu_launch has this signature (generated above).
    let launch: Launch = *unsafe { lib.get::<Launch>(b"emu_launch") }.map_err(|e| e.to_string())?;
    // The library stays loaded for the rest of the process.
    std::mem::forget(lib);
    Ok(Emu { launch: Mutex::new(launch) })
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed, 5);
    (0..n).map(|_| rng.next_f32()).collect()
}

/// Values in [−1, 1).
fn signed(n: usize, seed: u64) -> Vec<f32> {
    random(n, seed).into_iter().map(|v| 2.0 * v - 1.0).collect()
}

/// The address of an input.
fn ptr(v: &[f32]) -> u64 {
    v.as_ptr() as u64
}

/// The address of an output (written by the kernel through it).
fn mptr<T>(v: &mut [T]) -> u64 {
    v.as_mut_ptr() as u64
}

fn f(v: f32) -> u64 {
    v.to_bits() as u64
}

fn act_code(a: Activation) -> u64 {
    match a {
        Activation::Sigmoid => 0,
        Activation::Tanh => 1,
        Activation::Relu => 2,
        Activation::Identity => 3,
    }
}

/// The loss arguments of `loss_grad`, in their order: loss (0
/// cross-entropy, 1 squared error), decoder activation, emphasis (0/1), its weights of
/// corrupted and clean inputs, the gradient's scale.
fn loss_args(spec: &LossSpec) -> [u64; 6] {
    let (e, wc, wl) = spec.emphasis.map_or((0, 1.0, 1.0), |e| (1, e.corrupted, e.clean));
    [(spec.loss == Loss::SquaredError) as u64, act_code(spec.decoder), e, f(wc), f(wl), f(spec.grad_scale)]
}

#[test]
fn emulated_loss_and_bias_gradient_kernels_match_the_cpu() {
    let Some(emu) = emu("emulated_loss_and_bias_gradient_kernels_match_the_cpu") else { return };
    let cpu = Cpu::new(Some(1)).unwrap();
    // A row shorter than one round of a block's reads (4 × 256 columns), and one longer.
    for ((rows, cols), (loss, decoder, emphasis)) in [(5, 300), (3, 1100)].into_iter().flat_map(|shape| {
        [
            (Loss::CrossEntropy, Activation::Sigmoid, None),
            (Loss::SquaredError, Activation::Tanh, Some(Emphasis { corrupted: 0.8, clean: 0.2 })),
        ]
        .map(|l| (shape, l))
    }) {
        let pre = signed(rows * cols, 1).into_iter().map(|v| 4.0 * v).collect::<Vec<_>>();
        // Two targets beyond [0, 1], which cross-entropy clips (minmax-scaled new data).
        let mut target = random(rows * cols, 2);
        (target[0], target[cols + 1]) = (1.5, -0.25);
        let c = signed(cols, 3);
        let mask: Vec<f32> = random(rows * cols, 4).into_iter().map(|v| (v < 0.3) as u32 as f32).collect();
        let spec = LossSpec { loss, decoder, emphasis, grad_scale: 1.0 / rows as f32, output: LossOutput::Grad };
        let (mut want, mut want_loss) = (pre.clone(), vec![0f32; rows]);
        cpu.loss_grad(&mut want, &c, &target, Some(&mask), &spec, rows, cols, &mut want_loss, 0);
        let (mut got, mut got_loss) = (pre.clone(), vec![0f32; rows]);
        let [lo, de, e, wc, wl, gs] = loss_args(&spec);
        let slots = [
            mptr(&mut got),
            ptr(&c),
            ptr(&target),
            ptr(&mask),
            lo,
            de,
            e,
            wc,
            wl,
            gs,
            1,
            cols as u64,
            mptr(&mut got_loss),
        ];
        emu.run("loss_grad", rows as u32, 256, &slots);
        let what = format!("loss_grad {loss:?}, {rows}×{cols}");
        assert_close(&format!("{what} gradient"), &got, &want, 1e-5, 1e-6);
        assert_close(&format!("{what} row losses"), &got_loss, &want_loss, 1e-5, 1e-5);
    }

    // The backward pass's two bias gradients in one launch (an SGD step on both biases), with
    // the block the backend picks for these rows and with every other count of row lanes.
    let (rows, cols, cols2) = (40, 70, 45);
    let delta = signed(rows * cols, 5);
    let y = random(rows * cols, 6);
    let x2 = signed(rows * cols2, 7);
    let (b0, c0) = (signed(cols, 8), signed(cols2, 9));
    let (alpha, beta) = (-0.1, 0.99);
    let (mut want_d, mut want_b, mut want_c) = (delta.clone(), b0.clone(), c0.clone());
    cpu.act_grad_col_sums(&mut want_d, &y, Activation::Sigmoid, rows, cols, &mut want_b, alpha, beta, Some((&mut want_c, &x2, cols2)));
    assert_eq!(col_sum_block(rows), 32 * 8, "40 rows: 5 a lane with 8 lanes");
    for block in [col_sum_block(rows), 32, 64, 128, 256, 1024] {
        let (mut got_d, mut got_b, mut got_c) = (delta.clone(), b0.clone(), c0.clone());
        let slots = [mptr(&mut got_b), mptr(&mut got_d), ptr(&y), 0, cols as u64, mptr(&mut got_c), ptr(&x2), cols2 as u64, rows as u64, f(alpha), f(beta)];
        emu.run("act_grad_col_sums", (cols.div_ceil(32) + cols2.div_ceil(32)) as u32, block, &slots);
        let what = format!("act_grad_col_sums, blocks of {block}");
        assert_close(&format!("{what}: delta"), &got_d, &want_d, 1e-6, 0.0);
        assert_close(&format!("{what}: b"), &got_b, &want_b, 1e-5, 1e-6);
        assert_close(&format!("{what}: c"), &got_c, &want_c, 1e-5, 1e-6);
    }
}

#[test]
fn column_sum_blocks_have_at_most_eight_rows_a_lane_where_they_can() {
    for (rows, lanes) in [(0, 1), (1, 1), (8, 1), (9, 2), (20, 4), (128, 16), (129, 32), (1024, 32)] {
        assert_eq!(col_sum_block(rows), 32 * lanes, "{rows} rows");
    }
}

#[test]
fn emulated_masking_noise_is_the_cpus_bit_for_bit() {
    let Some(emu) = emu("emulated_masking_noise_is_the_cpus_bit_for_bit") else { return };
    let (rows, cols) = (3, 77);
    let x = random(rows * cols, 10);
    let key = NoiseKey { seed: 0xfeed_beef_1234, stream: 16, epoch: 2, row0: 40 };
    let noise = Corruption::Masking { level: 0.3 };
    let (mut want, mut want_mask) = (vec![0f32; rows * cols], vec![0f32; rows * cols]);
    for r in 0..rows {
        let span = r * cols..(r + 1) * cols;
        corrupt_row(noise, &key, key.row0 + r as u32, &x[span.clone()], &mut want[span.clone()], Some(&mut want_mask[span]));
    }
    let (mut got, mut got_mask) = (vec![0f32; rows * cols], vec![0f32; rows * cols]);
    let threads = rows * cols.div_ceil(32) * 8;
    let slots = [
        ptr(&x),
        mptr(&mut got),
        mptr(&mut got_mask),
        1,
        f(0.3),
        f(0.0),
        key.seed & 0xffff_ffff,
        key.seed >> 32,
        key.stream as u64,
        key.epoch as u64,
        key.row0 as u64,
        rows as u64,
        cols as u64,
    ];
    emu.run("corrupt", threads.div_ceil(256) as u32, 256, &slots);
    assert_eq!(got, want, "masked rows");
    assert_eq!(got_mask, want_mask, "masks");
    assert!(want_mask.contains(&1.0) && want_mask.contains(&0.0), "the draw masks some inputs, not all");
}

/// A u8 image dataset (h × w) with a fitted standardisation, as the CLI reads Fashion-MNIST.
fn images(rows: usize, h: usize, w: usize) -> (dae::Dataset, dae::Scaler) {
    let mut rng = Rng::new(7, 3);
    let values = (0..rows * h * w).map(|_| (rng.next_f32() * 256.0) as u8).collect();
    let mut ds = dae::Dataset::from_f32(rows, h * w, vec![0.0; rows * h * w]);
    ds.values = dae::data::Values::U8(values);
    ds.image_shape = Some((h, w));
    let scaler = dae::Scaler::fit(dae::ScaleKind::Standardize, &ds, None);
    (ds, scaler)
}

fn u8_values(ds: &dae::Dataset) -> &[u8] {
    match &ds.values {
        dae::data::Values::U8(v) => v,
        _ => unreachable!(),
    }
}

#[test]
fn emulated_gathering_with_noise_and_augmentation_is_the_cpus() {
    let Some(emu) = emu("emulated_gathering_with_noise_and_augmentation_is_the_cpus") else { return };
    let cpu = Cpu::new(Some(1)).unwrap();
    let (h, w) = (5, 7);
    let cols = h * w;
    let (ds, scaler) = images(9, h, w);
    let data = cpu.data(&ds, &scaler).unwrap();
    let rows: Vec<u32> = vec![8, 0, 3, 3, 5];
    let n = rows.len();
    let key = NoiseKey { seed: 0x0123_4567_89ab_cdef, stream: 16, epoch: 4, row0: 11 };
    let values = u8_values(&ds);
    // Gathering with each kind of noise in one pass: x, x̃ and the mask as gathering then
    // corrupting on the CPU (Gaussian noise to within its functions' last bits, the others
    // exactly).
    for (noise, kind, level, per) in [
        (Corruption::None, 0, 0.0, 32),
        (Corruption::Masking { level: 0.4 }, 1, 0.4, 32),
        (Corruption::Gaussian { sigma: 0.5 }, 2, 0.5, 32),
        (Corruption::SaltAndPepper { level: 0.3 }, 3, 0.3, 16),
    ] {
        let (mut x, mut xt, mut mask) = (vec![0f32; n * cols], vec![0f32; n * cols], vec![0f32; n * cols]);
        cpu.gather_corrupt(&mut x, &mut xt, Some(&mut mask), &data, &rows, noise, &key, cols);
        let (mut gx, mut gxt, mut gm) = (vec![f32::NAN; n * cols], vec![f32::NAN; n * cols], vec![f32::NAN; n * cols]);
        let threads = n * cols.div_ceil(per) * 8;
        let slots = [
            mptr(&mut gx),
            mptr(&mut gxt),
            mptr(&mut gm),
            values.as_ptr() as u64,
            rows.as_ptr() as u64,
            ptr(&scaler.offset),
            ptr(&scaler.factor),
            1,
            kind,
            f(level),
            key.seed,
            key.stream as u64,
            key.epoch as u64,
            key.row0 as u64,
            n as u64,
            cols as u64,
        ];
        emu.run("gather_corrupt", threads.div_ceil(256) as u32, 256, &slots);
        assert_eq!(gx, x, "{noise:?}: gathered rows");
        if kind == 2 {
            assert_close(&format!("{noise:?}: corrupted rows"), &gxt, &xt, 1e-5, 1e-6);
            assert!(gxt.iter().zip(&gx).filter(|(t, x)| t != x).count() > n * cols / 2, "Gaussian noise moves the values");
        } else {
            assert_eq!(gxt, xt, "{noise:?}: corrupted rows");
        }
        assert_eq!(gm, mask, "{noise:?}: masks");
    }
    // Moved by up to 2 pixels and mirrored, then scaled.
    let aug = dae::augment::Augment { shift: 2, flip: true };
    let mut want = vec![0f32; n * cols];
    cpu.gather_augmented(&mut want, &data, &rows, &aug, &key);
    let mut got = vec![f32::NAN; n * cols];
    let slots = [
        mptr(&mut got),
        values.as_ptr() as u64,
        rows.as_ptr() as u64,
        ptr(&scaler.offset),
        ptr(&scaler.factor),
        1,
        aug.shift as u64,
        1,
        key.seed,
        key.stream as u64,
        key.epoch as u64,
        key.row0 as u64,
        n as u64,
        h as u64,
        w as u64,
    ];
    emu.run("gather_augment", (n * cols).div_ceil(256) as u32, 256, &slots);
    assert_eq!(got, want, "augmented rows");
    let mut plain = vec![0f32; n * cols];
    cpu.gather(&mut plain, &data, &rows);
    assert_ne!(want, plain, "the draws move or mirror some image");
}

#[test]
fn emulated_softmax_and_optimiser_kernels_match_the_cpu() {
    let Some(emu) = emu("emulated_softmax_and_optimiser_kernels_match_the_cpu") else { return };
    let cpu = Cpu::new(Some(1)).unwrap();
    // Softmax cross-entropy: losses, arg-max hits and the gradient.
    let (rows, classes) = (6, 10);
    let logits: Vec<f32> = signed(rows * classes, 50).into_iter().map(|v| 5.0 * v).collect();
    let bias = signed(classes, 51);
    let labels: Vec<f32> = (0..rows).map(|r| (r * 7 % classes) as f32).collect();
    let (mut want, mut want_loss, mut want_hit) = (logits.clone(), vec![0f32; rows], vec![0f32; rows]);
    cpu.softmax_xent(&mut want, &bias, &labels, LossOutput::Grad, 1.0 / rows as f32, rows, classes, &mut want_loss, &mut want_hit);
    let (mut got, mut got_loss, mut got_hit) = (logits.clone(), vec![0f32; rows], vec![0f32; rows]);
    let slots = [mptr(&mut got), ptr(&bias), ptr(&labels), 1, f(1.0 / rows as f32), rows as u64, classes as u64, mptr(&mut got_loss), mptr(&mut got_hit)];
    emu.run("softmax_xent", 1, 256, &slots);
    assert_close("softmax gradient", &got, &want, 1e-5, 1e-7);
    assert_close("softmax losses", &got_loss, &want_loss, 1e-5, 1e-6);
    assert_eq!(got_hit, want_hit, "arg-max hits");

    // Two optimiser steps each: SGD with Nesterov momentum and weight decay, Adam, AdamW.
    let len = 300;
    let (p0, g) = (signed(len, 52), signed(len, 53));
    for optimizer in [
        dae::Optimizer::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.01 },
        dae::Optimizer::adam(),
        dae::Optimizer::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 },
    ] {
        let mut want = p0.clone();
        let mut st = cpu.opt_state(&optimizer, len).unwrap();
        let (mut got, mut gm, mut gv) = (p0.clone(), vec![0f32; len], vec![0f32; len]);
        for t in 1..=2 {
            let step = dae::backend::StepSpec { optimizer, lr: 0.01, t };
            cpu.update(&mut want, &g, &mut st, &step, len);
            let k = dae::kernels::StepConsts::new(&step);
            let (kind, momentum, nesterov, wd, b1, b2, eps) = match optimizer {
                dae::Optimizer::Sgd { momentum, nesterov, weight_decay } => (0, momentum, nesterov as u64, weight_decay, 0.0, 0.0, 0.0),
                dae::Optimizer::Adam { beta1, beta2, eps, weight_decay } => (1, 0.0, 0, weight_decay, beta1, beta2, eps),
                dae::Optimizer::AdamW { beta1, beta2, eps, weight_decay } => (2, 0.0, 0, weight_decay, beta1, beta2, eps),
            };
            let v_ptr = if kind == 0 { 0 } else { mptr(&mut gv) };
            let slots = [
                mptr(&mut got),
                ptr(&g),
                mptr(&mut gm),
                v_ptr,
                len as u64,
                kind,
                f(step.lr),
                f(momentum),
                nesterov,
                f(wd),
                f(b1),
                f(b2),
                f(eps),
                f(k.step_size()),
                f(k.bc2_sqrt()),
            ];
            emu.run("update", len.div_ceil(256) as u32, 256, &slots);
        }
        assert_close(&format!("{optimizer:?}: parameters after two steps"), &got, &want, 1e-6, 1e-7);
        assert_close(&format!("{optimizer:?}: first moment"), &gm, st.m.as_ref().unwrap(), 1e-6, 1e-8);
    }

    // The sum of squares, in f64 by one block.
    let x = signed(1000, 54);
    let mut out = [f64::NAN];
    emu.run("sum_squares", 1, 256, &[ptr(&x), x.len() as u64, mptr(&mut out)]);
    let want = cpu.sum_squares(&x, x.len());
    assert!((out[0] - want).abs() <= 1e-9 * want, "sum of squares {} vs {want}", out[0]);
}

#[test]
fn emulated_elementwise_kernels_match_the_cpu() {
    let Some(emu) = emu("emulated_elementwise_kernels_match_the_cpu") else { return };
    let cpu = Cpu::new(Some(1)).unwrap();
    let (rows, cols) = (7, 45);
    let n = rows * cols;
    let x = signed(n, 60);
    let blocks = |len: usize| len.div_ceil(256) as u32;
    // Bias and activation; the activation gradient.
    let bias = signed(cols, 61);
    for act in [Activation::Sigmoid, Activation::Tanh, Activation::Relu, Activation::Identity] {
        let mut want = x.clone();
        cpu.bias_act(&mut want, &bias, act, rows, cols);
        let mut got = x.clone();
        emu.run("bias_act", blocks(n), 256, &[mptr(&mut got), ptr(&bias), act_code(act), rows as u64, cols as u64]);
        assert_close(&format!("bias_act {act:?}"), &got, &want, 1e-6, 1e-7);
        let y = want;
        let mut want = x.clone();
        cpu.act_grad(&mut want, &y, act, n);
        let mut got = x.clone();
        emu.run("act_grad", blocks(n), 256, &[mptr(&mut got), ptr(&y), act_code(act), n as u64]);
        assert_close(&format!("act_grad {act:?}"), &got, &want, 1e-6, 1e-7);
    }
    // Column sums with α and β.
    let mut want = bias.clone();
    cpu.col_sums_scaled(&mut want, &x, rows, cols, -0.5, 0.9);
    for block in [col_sum_block(rows), 1024] {
        let mut got = bias.clone();
        emu.run("col_sums", cols.div_ceil(32) as u32, block, &[mptr(&mut got), ptr(&x), rows as u64, cols as u64, f(-0.5), f(0.9)]);
        assert_close(&format!("col_sums, blocks of {block}"), &got, &want, 1e-5, 1e-6);
    }
    // Products, scaling, filling and copying.
    let m = random(n, 62);
    let mut want = vec![0f32; n];
    cpu.mul(&mut want, &x, &m, n);
    let mut got = vec![f32::NAN; n];
    emu.run("mul", blocks(n), 256, &[mptr(&mut got), ptr(&x), ptr(&m), n as u64]);
    assert_eq!(got, want, "mul");
    let mut got = x.clone();
    emu.run("mul_assign", blocks(n), 256, &[mptr(&mut got), ptr(&m), n as u64]);
    assert_eq!(got, want, "mul_assign");
    let mut want = x.clone();
    cpu.scale(&mut want, 0.25, n);
    let mut got = x.clone();
    emu.run("scale", blocks(n), 256, &[mptr(&mut got), f(0.25), n as u64]);
    assert_eq!(got, want, "scale");
    let mut got = x.clone();
    emu.run("fill", blocks(n - 3), 256, &[mptr(&mut got), f(2.5), (n - 3) as u64]);
    assert!(got[..n - 3].iter().all(|&v| v == 2.5) && got[n - 3..] == x[n - 3..], "fill: the first n − 3 values only");
    let mut got = vec![0f32; n];
    emu.run("copy_f32", blocks(n), 256, &[mptr(&mut got), ptr(&x), n as u64]);
    assert_eq!(got, x, "copy_f32");
}

#[test]
fn emulated_plain_gathering_and_dropout_masks_are_the_cpus() {
    let Some(emu) = emu("emulated_plain_gathering_and_dropout_masks_are_the_cpus") else { return };
    let cpu = Cpu::new(Some(1)).unwrap();
    let (ds, scaler) = images(6, 4, 9);
    let cols = ds.cols;
    let rows: Vec<u32> = vec![5, 1, 1, 4];
    let n = rows.len();
    // u8 pixels (standardised), then the same values as f32 without scaling.
    let data = cpu.data(&ds, &scaler).unwrap();
    let mut want = vec![0f32; n * cols];
    cpu.gather(&mut want, &data, &rows);
    let mut got = vec![f32::NAN; n * cols];
    let slots = [mptr(&mut got), u8_values(&ds).as_ptr() as u64, rows.as_ptr() as u64, n as u64, cols as u64, ptr(&scaler.offset), ptr(&scaler.factor)];
    emu.run("gather_u8", (n * cols).div_ceil(256) as u32, 256, &slots);
    assert_eq!(got, want, "gather_u8");
    let plain = dae::Dataset::from_f32(ds.rows, cols, signed(ds.rows * cols, 63));
    let identity = dae::Scaler::identity(cols);
    let data = cpu.data(&plain, &identity).unwrap();
    let mut want = vec![0f32; n * cols];
    cpu.gather(&mut want, &data, &rows);
    let values = match &plain.values {
        dae::data::Values::F32(v) => v.clone(),
        _ => unreachable!(),
    };
    let mut got = vec![f32::NAN; n * cols];
    let slots = [mptr(&mut got), ptr(&values), rows.as_ptr() as u64, n as u64, cols as u64, 0, 0];
    emu.run("gather_f32", (n * cols).div_ceil(256) as u32, 256, &slots);
    assert_eq!(got, want, "gather_f32");
    // Inverted-dropout masks: the corrupt kernel with no input and every kept value 1/(1 − p).
    let (p, key) = (0.25f32, NoiseKey { seed: 99, stream: 20, epoch: 1, row0: 3 });
    let mut want = vec![0f32; n * cols];
    cpu.dropout_mask(&mut want, p, &key, n, cols);
    let mut got = vec![f32::NAN; n * cols];
    let slots = [
        0,
        mptr(&mut got),
        0,
        1,
        f(p),
        f(1.0 / (1.0 - p)),
        key.seed & 0xffff_ffff,
        key.seed >> 32,
        key.stream as u64,
        key.epoch as u64,
        key.row0 as u64,
        n as u64,
        cols as u64,
    ];
    emu.run("corrupt", (n * cols.div_ceil(32) * 8).div_ceil(256) as u32, 256, &slots);
    assert_eq!(got, want, "dropout masks");
    assert!(want.contains(&0.0) && want.contains(&(1.0 / (1.0 - p))), "some units dropped, some kept");
}

/// The weight update from a small batch (C = β·C + α·aᵀ·b, depth at most 64) against the CPU's gemm:
/// tiles cut by both edges, depths of 1 to 64, with and without the old values.
#[test]
fn emulated_weight_update_kernel_matches_the_cpu() {
    let Some(emu) = emu("emulated_weight_update_kernel_matches_the_cpu") else { return };
    let cpu = Cpu::new(Some(1)).unwrap();
    for (m, n, depth, alpha, beta) in [(44, 28, 1, -0.1f32, 0.99f32), (300, 136, 64, 1.0, 0.0), (40, 260, 40, -0.05, 1.0)] {
        let a = signed(depth * m, 21);
        let b = signed(depth * n, 22);
        let c0 = signed(m * n, 23);
        let mut want = c0.clone();
        cpu.gemm(&mut want, m, n, &[dae::backend::Product { a: &a, ta: Trans::T, b: &b, tb: Trans::N, k: depth }], alpha, beta);
        let mut got = if beta == 0.0 { vec![f32::NAN; m * n] } else { c0.clone() };
        let blocks = m.div_ceil(32) * n.div_ceil(128);
        emu.run("rank_update", blocks as u32, 256, &[mptr(&mut got), ptr(&a), ptr(&b), m as u64, n as u64, depth as u64, f(alpha), f(beta)]);
        assert_close(&format!("rank_update {m}×{n}, depth {depth}, β {beta}"), &got, &want, 1e-5, 1e-6);
    }
}

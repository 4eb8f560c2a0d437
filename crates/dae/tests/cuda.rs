//! The CUDA backend against the CPU: every kernel compiles (wherever NVRTC is installed, GPU or
//! not), each operation agrees with the CPU's, and training agrees. Without a GPU the parts that
//! need one print why they skip.
#![cfg(feature = "cuda")]

mod common;

use common::{assert_close, host};
use dae::backend::cuda::{compile_kernels, kernels_ptx, nvrtc_present, KERNEL_NAMES};
use dae::augment::Augment;
use dae::backend::{Backend, LossOutput, LossSpec, StepSpec, Trans};
use dae::corrupt::NoiseKey;
use dae::infer::encode_all;
use dae::rng::{stream, Rng};
use dae::{train_dae, Activation, Corruption, Cpu, Dae, DaeConfig, Dataset, Emphasis, Loss, Optimizer, Scaler, ScaleKind, Silent, Split, TrainConfig};

#[test]
fn cuda_kernels_compile_with_nvrtc() {
    if !nvrtc_present() {
        common::skip("cuda_kernels_compile_with_nvrtc: skipping: libnvrtc not found (pip install nvidia-cuda-nvrtc and put its lib folder on LD_LIBRARY_PATH)");
        if std::env::var_os("DAE_REQUIRE_NVRTC").is_some() {
            panic!("DAE_REQUIRE_NVRTC is set but libnvrtc was not found");
        }
        return;
    }
    // Hopper (H100/H200), Ampere and Turing.
    for arch in ["compute_90", "compute_80", "compute_75"] {
        let text = compile_kernels(Some(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"));
        for name in KERNEL_NAMES {
            assert!(text.contains(&format!(".entry {name}(")), "{arch}: kernel {name} missing from the PTX");
        }
    }
}

#[test]
fn compiled_kernels_are_cached_on_disk() {
    if !nvrtc_present() {
        common::skip("compiled_kernels_are_cached_on_disk: skipping: libnvrtc not found");
        return;
    }
    let dir = std::env::temp_dir().join(format!("dae-kernel-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (first, cached) = kernels_ptx("compute_90", Some(&dir)).unwrap();
    assert!(!cached, "an empty cache cannot hold the kernels");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "one file per architecture: {files:?}");
    let (second, cached) = kernels_ptx("compute_90", Some(&dir)).unwrap();
    assert!(cached && second == first, "the second start must read what the first compiled");
    // Another architecture is another file; no cache compiles every time.
    assert!(!kernels_ptx("compute_80", Some(&dir)).unwrap().1);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    assert!(!kernels_ptx("compute_90", None).unwrap().1);
    // A damaged file is compiled again and replaced.
    std::fs::write(&files[0], &first[..first.len() / 2]).unwrap();
    let (third, cached) = kernels_ptx("compute_90", Some(&dir)).unwrap();
    assert!(!cached && third == first);
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), first);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cuda_kernels_load_from_the_cache() {
    let Some(_gpu) = common::cuda("cuda_kernels_load_from_the_cache") else { return };
    let dir = std::env::temp_dir().join(format!("dae-cuda-kernel-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fresh = dae::Cuda::with_kernel_cache(0, dae::Precision::Fp32, Some(&dir)).unwrap();
    assert!(!fresh.kernels_cached(), "an empty cache cannot hold the kernels");
    drop(fresh);
    let gpu = dae::Cuda::with_kernel_cache(0, dae::Precision::Fp32, Some(&dir)).unwrap();
    assert!(gpu.kernels_cached(), "the second backend must load the kernels the first one kept");
    // The kernels loaded from the file compute.
    let cpu = Cpu::new(Some(1)).unwrap();
    let (rows, cols) = (7, 33);
    let (x, bias) = (random(rows * cols, 3), random(cols, 4));
    let mut c_c = x.clone();
    cpu.bias_act(&mut c_c, &bias, Activation::Sigmoid, rows, cols);
    let mut c_g = buf(&gpu, &x);
    gpu.bias_act(&mut c_g, &buf(&gpu, &bias), Activation::Sigmoid, rows, cols);
    assert_close("bias_act from cached kernels", &host(&gpu, &c_g, rows * cols), &c_c, 1e-5, 1e-6);
    gpu.check().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed, 9);
    (0..n).map(|_| rng.next_f32()).collect()
}

fn buf<B: Backend>(be: &B, v: &[f32]) -> B::Buf {
    let mut b = be.alloc(v.len()).unwrap();
    be.upload(&mut b, v);
    b
}

#[test]
fn cuda_operations_match_the_cpu() {
    let Some(gpu) = common::cuda("cuda_operations_match_the_cpu") else { return };
    let cpu = Cpu::new(Some(2)).unwrap();
    let (rows, cols) = (37, 301);
    let n = rows * cols;
    let x = random(n, 1);
    let key = NoiseKey { seed: 0x1234_5678_9abc, stream: 16, epoch: 3, row0: 70 };

    // Noise: masks and salt-and-pepper bit-identical (same Philox counters), Gaussian to
    // rounding (logf, sincosf).
    for noise in [Corruption::None, Corruption::Masking { level: 0.3 }, Corruption::SaltAndPepper { level: 0.2 }, Corruption::Gaussian { sigma: 0.5 }] {
        let mut outs = Vec::new();
        let (mut xt_c, mut m_c) = (vec![0f32; n], vec![0f32; n]);
        cpu.corrupt(&x, &mut xt_c, Some(&mut m_c), noise, &key, rows, cols);
        let (xg, mut xt_g, mut m_g) = (buf(&gpu, &x), gpu.alloc(n).unwrap(), gpu.alloc(n).unwrap());
        gpu.corrupt(&xg, &mut xt_g, Some(&mut m_g), noise, &key, rows, cols);
        outs.push(host(&gpu, &xt_g, n));
        if matches!(noise, Corruption::Gaussian { .. }) {
            assert_close(&format!("{noise}"), &outs[0], &xt_c, 1e-5, 1e-5);
        } else {
            assert!(outs[0] == xt_c, "{noise}: the GPU's corruption differs from the CPU's");
        }
        assert!(host(&gpu, &m_g, n) == m_c, "{noise}: masks differ");
    }
    let (mut d_c, mut d_g) = (vec![0f32; n], gpu.alloc(n).unwrap());
    cpu.dropout_mask(&mut d_c, 0.4, &key, rows, cols);
    gpu.dropout_mask(&mut d_g, 0.4, &key, rows, cols);
    assert!(host(&gpu, &d_g, n) == d_c, "dropout masks differ");

    // Matrix products in every orientation, with sums of products, α and β.
    let (m, nn, k) = (33, 47, 29);
    for ta in [Trans::N, Trans::T] {
        for tb in [Trans::N, Trans::T] {
            let (a, b, a2, b2, c0) = (random(m * k, 2), random(k * nn, 3), random(m * k, 4), random(k * nn, 5), random(m * nn, 6));
            let mut c_c = c0.clone();
            let mut c_g = buf(&gpu, &c0);
            let (ag, bg, a2g, b2g) = (buf(&gpu, &a), buf(&gpu, &b), buf(&gpu, &a2), buf(&gpu, &b2));
            cpu.gemm(&mut c_c, m, nn, &[dae::backend::Product { a: &a, ta, b: &b, tb, k }, dae::backend::Product { a: &a2, ta, b: &b2, tb, k }], -0.5, 0.9);
            gpu.gemm(&mut c_g, m, nn, &[dae::backend::Product { a: &ag, ta, b: &bg, tb, k }, dae::backend::Product { a: &a2g, ta, b: &b2g, tb, k }], -0.5, 0.9);
            assert_close(&format!("gemm {ta:?}{tb:?}"), &host(&gpu, &c_g, m * nn), &c_c, 1e-5, 1e-5);
        }
    }

    // Elementwise work, losses and reductions.
    let bias = random(cols, 7).iter().map(|v| v - 0.5).collect::<Vec<_>>();
    let pre: Vec<f32> = random(n, 8).iter().map(|v| 6.0 * v - 3.0).collect();
    let mask: Vec<f32> = random(n, 9).iter().map(|&v| (v < 0.3) as u8 as f32).collect();
    for act in Activation::ALL {
        let mut c_c = pre.clone();
        let mut c_g = buf(&gpu, &pre);
        cpu.bias_act(&mut c_c, &bias, act, rows, cols);
        gpu.bias_act(&mut c_g, &buf(&gpu, &bias), act, rows, cols);
        assert_close(&format!("bias_act {act}"), &host(&gpu, &c_g, n), &c_c, 1e-5, 1e-6);
        let (mut dc, mut dg) = (x.clone(), buf(&gpu, &x));
        cpu.act_grad(&mut dc, &c_c, act, n);
        gpu.act_grad(&mut dg, &buf(&gpu, &c_c), act, n);
        assert_close(&format!("act_grad {act}"), &host(&gpu, &dg, n), &dc, 1e-5, 1e-6);
    }
    for (loss, decoder) in [(Loss::CrossEntropy, Activation::Sigmoid), (Loss::SquaredError, Activation::Tanh)] {
        for emphasis in [None, Some(Emphasis { corrupted: 1.0, clean: 0.3 })] {
            for output in [LossOutput::Rows, LossOutput::Grad, LossOutput::Elements] {
                let spec = LossSpec { loss, decoder, emphasis, grad_scale: 1.0 / rows as f32, output };
                let (mut pc, mut lc) = (pre.clone(), vec![0f32; rows + 3]);
                let (mut pg, mut lg) = (buf(&gpu, &pre), gpu.alloc(rows + 3).unwrap());
                cpu.loss_grad(&mut pc, &bias, &x, Some(&mask), &spec, rows, cols, &mut lc, 3);
                gpu.loss_grad(&mut pg, &buf(&gpu, &bias), &buf(&gpu, &x), Some(&buf(&gpu, &mask)), &spec, rows, cols, &mut lg, 3);
                let what = format!("loss_grad {loss} {emphasis:?} {output:?}");
                assert_close(&what, &host(&gpu, &lg, rows + 3), &lc, 1e-5, 1e-5);
                assert_close(&what, &host(&gpu, &pg, n), &pc, 1e-5, 1e-6);
            }
        }
    }
    let classes = 7;
    let logits: Vec<f32> = random(rows * classes, 10).iter().map(|v| 8.0 * v - 4.0).collect();
    let labels: Vec<f32> = (0..rows).map(|r| (r % classes) as f32).collect();
    for output in [LossOutput::Rows, LossOutput::Grad, LossOutput::Elements] {
        let (mut zc, mut lc, mut hc) = (logits.clone(), vec![0f32; rows], vec![0f32; rows]);
        let (mut zg, mut lg, mut hg) = (buf(&gpu, &logits), gpu.alloc(rows).unwrap(), gpu.alloc(rows).unwrap());
        cpu.softmax_xent(&mut zc, &bias[..classes].to_vec(), &labels, output, 0.25, rows, classes, &mut lc, &mut hc);
        gpu.softmax_xent(&mut zg, &buf(&gpu, &bias[..classes]), &buf(&gpu, &labels), output, 0.25, rows, classes, &mut lg, &mut hg);
        assert_close(&format!("softmax {output:?}"), &host(&gpu, &zg, rows * classes), &zc, 1e-5, 1e-6);
        assert_close("softmax loss", &host(&gpu, &lg, rows), &lc, 1e-5, 1e-6);
        assert!(host(&gpu, &hg, rows) == hc, "softmax hits");
    }
    let (mut sc, mut sg) = (bias.clone(), buf(&gpu, &bias));
    cpu.col_sums_scaled(&mut sc, &x, rows, cols, -0.1, 0.99);
    gpu.col_sums_scaled(&mut sg, &buf(&gpu, &x), rows, cols, -0.1, 0.99);
    assert_close("col_sums", &host(&gpu, &sg, cols), &sc, 1e-5, 1e-6);
    // Many rows: the GPU sums 32 row lanes (the most, for 129 rows or more), then the lanes.
    let tall = random(1500 * 45, 11);
    let (mut tc, mut tg) = (vec![0f32; 45], gpu.alloc(45).unwrap());
    cpu.col_sums(&mut tc, &tall, 1500, 45);
    gpu.col_sums(&mut tg, &buf(&gpu, &tall), 1500, 45);
    assert_close("col_sums, 1500 rows", &host(&gpu, &tg, 45), &tc, 1e-5, 1e-4);
    let (ssc, ssg) = (cpu.sum_squares(&x, n), gpu.sum_squares(&buf(&gpu, &x), n));
    assert!((ssc - ssg).abs() <= 1e-9 * ssc, "sum_squares {ssc} vs {ssg}");

    // The optimisers, several steps.
    for opt in [Optimizer::sgd(), Optimizer::Sgd { momentum: 0.9, nesterov: true, weight_decay: 1e-3 }, Optimizer::adam(), Optimizer::adamw()] {
        let (mut pc, mut pg) = (bias.clone(), buf(&gpu, &bias));
        let (mut stc, mut stg) = (cpu.opt_state(&opt, cols).unwrap(), gpu.opt_state(&opt, cols).unwrap());
        for t in 1..=3u64 {
            let g = random(cols, 20 + t);
            let step = StepSpec { optimizer: opt, lr: 0.05, t };
            cpu.update(&mut pc, &g, &mut stc, &step, cols);
            gpu.update(&mut pg, &buf(&gpu, &g), &mut stg, &step, cols);
        }
        assert_close(&format!("{opt:?}"), &host(&gpu, &pg, cols), &pc, 1e-5, 1e-6);
    }

    // Gathering rows of u8 data with fitted scaling.
    let bytes: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
    let ds = Dataset { rows, cols, values: dae::data::Values::U8(bytes), image_shape: None, column_names: None, source: "t".into() };
    let scaler = Scaler::fit(ScaleKind::Standardize, &ds, None);
    let pick: Vec<u32> = vec![5, 0, 36, 5, 17];
    let mut gc = vec![0f32; pick.len() * cols];
    cpu.gather(&mut gc, &cpu.data(&ds, &scaler).unwrap(), &pick);
    let mut gg = gpu.alloc(pick.len() * cols).unwrap();
    gpu.gather(&mut gg, &gpu.data(&ds, &scaler).unwrap(), &pick);
    assert_close("gather", &host(&gpu, &gg, pick.len() * cols), &gc, 1e-6, 1e-6);

    // Gathering and corrupting in one kernel: what gather then corrupt give, on the GPU
    // exactly, and on the CPU (masks exactly, values to the gather's rounding).
    let (dc, dg) = (cpu.data(&ds, &scaler).unwrap(), gpu.data(&ds, &scaler).unwrap());
    let p = pick.len();
    for noise in [Corruption::None, Corruption::Masking { level: 0.3 }, Corruption::SaltAndPepper { level: 0.2 }, Corruption::Gaussian { sigma: 0.5 }] {
        let (mut xc, mut xtc, mut mc) = (vec![0f32; p * cols], vec![0f32; p * cols], vec![0f32; p * cols]);
        cpu.gather_corrupt(&mut xc, &mut xtc, Some(&mut mc), &dc, &pick, noise, &key, cols);
        let run = |fused: bool| {
            gpu.set_fused(fused);
            let (mut x, mut xt, mut m) = (gpu.alloc(p * cols).unwrap(), gpu.alloc(p * cols).unwrap(), gpu.alloc(p * cols).unwrap());
            gpu.gather_corrupt(&mut x, &mut xt, Some(&mut m), &dg, &pick, noise, &key, cols);
            (host(&gpu, &x, p * cols), host(&gpu, &xt, p * cols), host(&gpu, &m, p * cols))
        };
        let (one, two) = (run(true), run(false));
        gpu.set_fused(true);
        assert!(one == two, "{noise}: gather_corrupt differs from gather, then corrupt");
        assert_close(&format!("gather_corrupt {noise} x"), &one.0, &xc, 1e-6, 1e-6);
        assert_close(&format!("gather_corrupt {noise} xt"), &one.1, &xtc, 1e-5, 1e-5);
        assert!(one.2 == mc, "{noise}: gather_corrupt's mask differs from the CPU's");
    }

    // Gathering with translations and mirror images (u8 and f32 images, fitted scaling): the
    // same draws and pixels as the CPU's.
    let aug = Augment { shift: 2, flip: true };
    let (h, w, m) = (6usize, 5usize, 40usize);
    for values in [dae::data::Values::U8((0..m * h * w).map(|i| (i * 53 % 256) as u8).collect()), dae::data::Values::F32(random(m * h * w, 31))] {
        let ds = Dataset { rows: m, cols: h * w, values, image_shape: Some((h, w)), column_names: None, source: "t".into() };
        let scaler = Scaler::fit(ScaleKind::Standardize, &ds, None);
        let pick: Vec<u32> = (0..24).map(|i| (i * 7 % m) as u32).collect();
        let akey = NoiseKey { stream: stream::AUGMENT, ..key };
        let mut ac = vec![0f32; pick.len() * h * w];
        cpu.gather_augmented(&mut ac, &cpu.data(&ds, &scaler).unwrap(), &pick, &aug, &akey);
        let mut ag = gpu.alloc(pick.len() * h * w).unwrap();
        gpu.gather_augmented(&mut ag, &gpu.data(&ds, &scaler).unwrap(), &pick, &aug, &akey);
        assert_close("gather_augmented", &host(&gpu, &ag, pick.len() * h * w), &ac, 1e-6, 1e-6);
    }

    // The activation gradient with the bias gradients in one launch.
    let y: Vec<f32> = random(n, 12);
    let x2 = random(rows * 50, 13);
    for act in Activation::ALL {
        for also in [false, true] {
            let (mut dc, mut oc, mut o2c) = (x.clone(), bias.clone(), random(50, 14));
            let (mut dg, mut og, mut o2g) = (buf(&gpu, &x), buf(&gpu, &bias), buf(&gpu, &o2c));
            let (x2g, yg) = (buf(&gpu, &x2), buf(&gpu, &y));
            cpu.act_grad_col_sums(&mut dc, &y, act, rows, cols, &mut oc, -0.1, 0.99, also.then_some((&mut o2c, &x2, 50)));
            gpu.act_grad_col_sums(&mut dg, &yg, act, rows, cols, &mut og, -0.1, 0.99, also.then_some((&mut o2g, &x2g, 50)));
            let what = format!("act_grad_col_sums {act} {also}");
            assert_close(&what, &host(&gpu, &dg, n), &dc, 1e-5, 1e-6);
            assert_close(&what, &host(&gpu, &og, cols), &oc, 1e-5, 1e-6);
            assert_close(&what, &host(&gpu, &o2g, 50), &o2c, 1e-5, 1e-6);
        }
    }

    // Two products over adjacent pairs of buffers (alloc_pair) run as one: the same sum.
    let (m, nn, k) = (31, 45, 26);
    let (a, a2, b, b2, c0) = (random(k * m, 15), random(k * m, 16), random(k * nn, 17), random(k * nn, 18), random(m * nn, 19));
    let mut c_c = c0.clone();
    cpu.gemm(&mut c_c, m, nn, &[dae::backend::Product { a: &a, ta: Trans::T, b: &b, tb: Trans::N, k }, dae::backend::Product { a: &a2, ta: Trans::T, b: &b2, tb: Trans::N, k }], -0.5, 0.9);
    let ((mut ag, mut a2g), (mut bg, mut b2g)) = (gpu.alloc_pair(k * m).unwrap(), gpu.alloc_pair(k * nn).unwrap());
    gpu.upload(&mut ag, &a);
    gpu.upload(&mut a2g, &a2);
    gpu.upload(&mut bg, &b);
    gpu.upload(&mut b2g, &b2);
    for fused in [true, false] {
        gpu.set_fused(fused);
        let mut c_g = buf(&gpu, &c0);
        gpu.gemm(&mut c_g, m, nn, &[dae::backend::Product { a: &ag, ta: Trans::T, b: &bg, tb: Trans::N, k }, dae::backend::Product { a: &a2g, ta: Trans::T, b: &b2g, tb: Trans::N, k }], -0.5, 0.9);
        assert_close(&format!("gemm over pairs, fused {fused}"), &host(&gpu, &c_g, m * nn), &c_c, 1e-5, 1e-5);
        // The halves of a pair are separate buffers: writing one leaves the other.
        assert!(host(&gpu, &a2g, k * m) == a2, "a pair's second half changed");
    }
    gpu.set_fused(true);
    gpu.check().unwrap();
}

/// Rows from a few binary prototypes with 10 % of the bits flipped.
fn prototypes(rows: usize, cols: usize) -> Dataset {
    let mut rng = Rng::new(4, 5);
    let protos: Vec<Vec<f32>> = (0..6).map(|_| (0..cols).map(|_| (rng.next_f32() < 0.4) as u8 as f32).collect()).collect();
    let mut v = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let p = &protos[rng.below(6) as usize];
        v.extend(p.iter().map(|&b| if rng.next_f32() < 0.1 { 1.0 - b } else { b }));
    }
    Dataset::from_f32(rows, cols, v)
}

#[test]
fn cuda_training_matches_the_cpu_and_repeats_exactly() {
    let Some(gpu) = common::cuda("cuda_training_matches_the_cpu_and_repeats_exactly") else { return };
    let cpu = Cpu::new(Some(2)).unwrap();
    let ds = prototypes(1000, 120);
    let scaler = Scaler::identity(ds.cols);
    for (opt, lr) in [(Optimizer::sgd(), 0.1), (Optimizer::adam(), 1e-3)] {
        let cfg = DaeConfig::new(120, 64);
        let tc = TrainConfig { epochs: 4, batch: 32, optimizer: opt, lr, ..Default::default() };
        // Validation on the GPU too: the same per-epoch validation losses.
        let (fit, held) = dae::train::holdout(ds.rows, 0.2, 5).unwrap();
        let (tr, va) = (Split { data: &ds, rows: fit }, Split { data: &ds, rows: held });
        let vg = train_dae(&gpu, Dae::init(&cfg, 1), &scaler, &tr, Some(&va), &tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap();
        let vc = train_dae(&cpu, Dae::init(&cfg, 1), &scaler, &tr, Some(&va), &tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap();
        for (g, c) in vg.history.iter().zip(&vc.history) {
            let (g, c) = (g.val_loss.unwrap(), c.val_loss.unwrap());
            assert!((g - c).abs() <= 1e-3 * c, "{opt:?}: validation loss {g} on the GPU, {c} on the CPU");
        }
        let on_cpu = train_dae(&cpu, Dae::init(&cfg, 1), &scaler, &Split::all(&ds), None, &tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap();
        let on_gpu = || train_dae(&gpu, Dae::init(&cfg, 1), &scaler, &Split::all(&ds), None, &tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap();
        let (a, b) = (on_gpu(), on_gpu());
        assert!(a.model == b.model, "{opt:?}: two GPU runs with the same seed differ");
        // Steps replayed as CUDA graphs (the default) compute exactly what launching each
        // operation does.
        gpu.set_graphs(false);
        let eager = on_gpu();
        gpu.set_graphs(true);
        assert!(a.model == eager.model, "{opt:?}: graph replay changed the weights");
        // Several steps a graph compute exactly what one step a graph does: 1,000 rows are 31
        // batches of 32 and one of 8, so groups of 4 leave a group of 3, then the short one.
        let k0 = gpu.steps_per_launch();
        gpu.set_steps_per_launch(4);
        let grouped = on_gpu();
        gpu.set_steps_per_launch(k0);
        assert!(a.model == grouped.model, "{opt:?}: 4 steps a graph changed the weights");
        // The fused kernels change only the rounding (one product over both W-gradient terms).
        gpu.set_fused(false);
        let unfused = on_gpu();
        gpu.set_fused(true);
        for (e, (f, u)) in a.history.iter().zip(&unfused.history).enumerate() {
            let rel = (f.train_loss - u.train_loss).abs() / u.train_loss;
            assert!(rel < 1e-4, "{opt:?} epoch {}: fused loss {} vs unfused {}", e + 1, f.train_loss, u.train_loss);
        }
        // After training, the backend gathers the rows it is given (not the last epoch's).
        let (codes_g, codes_c) = (encode_all(&gpu, &a.model, &ds, &scaler).unwrap(), encode_all(&cpu, &a.model, &ds, &scaler).unwrap());
        assert_close("codes after training", &codes_g, &codes_c, 1e-4, 1e-5);
        for (e, (g, c)) in a.history.iter().zip(&on_cpu.history).enumerate() {
            let rel = (g.train_loss - c.train_loss).abs() / c.train_loss;
            assert!(rel < 1e-3, "{opt:?} epoch {}: GPU loss {} vs CPU {}", e + 1, g.train_loss, c.train_loss);
        }
    }
}

#[test]
fn cuda_tuned_products_agree_and_repeat() {
    use dae::backend::cuda::Tuning;
    let Some(gpu) = common::cuda("cuda_tuned_products_agree_and_repeat") else { return };
    let ds = prototypes(1000, 120);
    let scaler = Scaler::identity(ds.cols);
    let cfg = DaeConfig::new(120, 64);
    let tc = TrainConfig { epochs: 3, batch: 32, optimizer: Optimizer::sgd(), lr: 0.1, ..Default::default() };
    let on_gpu = || train_dae(&gpu, Dae::init(&cfg, 1), &scaler, &Split::all(&ds), None, &tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap();
    // cuBLAS's products for every step (W's update from 32 rows would take rank_update).
    gpu.set_rank_update(false);
    // Untuned whatever DAE_CUDA_TUNE says.
    gpu.set_tuning(Tuning::Off).unwrap();
    let plain = on_gpu();
    if let Err(e) = gpu.set_tuning(Tuning::Report) {
        common::skip(&format!("cuda_tuned_products_agree_and_repeat: skipping: {e}"));
        if std::env::var_os("DAE_REQUIRE_TUNING").is_some() {
            panic!("DAE_REQUIRE_TUNING is set but tuning cannot run: {e}");
        }
        return;
    }
    let tuned = on_gpu();
    let (shapes, on_lt) = gpu.tuned().expect("tuning is on");
    eprintln!("tuned {shapes} product shapes, {on_lt} of them on a cuBLASLt algorithm");
    // The step's products (encode, decode, the input-side gradient, the W gradient) and
    // the short last batch's.
    assert!(shapes >= 4, "only {shapes} product shapes were tuned");
    // The plans stay: a second run, and one launching each operation, compute exactly the same.
    assert!(on_gpu().model == tuned.model, "two tuned runs differ");
    gpu.set_graphs(false);
    let eager = on_gpu();
    gpu.set_graphs(true);
    assert!(eager.model == tuned.model, "graph replay changed the tuned weights");
    // Another algorithm sums in another order: the same losses to rounding.
    for (e, (t, p)) in tuned.history.iter().zip(&plain.history).enumerate() {
        let rel = (t.train_loss - p.train_loss).abs() / p.train_loss;
        assert!(rel < 1e-4, "epoch {}: tuned loss {} vs cublasSgemm's {}", e + 1, t.train_loss, p.train_loss);
    }
    let cpu = Cpu::new(Some(2)).unwrap();
    let (codes_g, codes_c) = (encode_all(&gpu, &tuned.model, &ds, &scaler).unwrap(), encode_all(&cpu, &tuned.model, &ds, &scaler).unwrap());
    assert_close("tuned codes", &codes_g, &codes_c, 1e-4, 1e-5);
    // Off again: exactly the untuned run.
    gpu.set_tuning(Tuning::Off).unwrap();
    assert!(gpu.tuned().is_none());
    assert!(on_gpu().model == plain.model, "turning tuning off did not restore cublasSgemm's results");
    gpu.check().unwrap();
}

#[test]
fn cuda_fine_tuning_matches_the_cpu() {
    use dae::network::{finetune, LabeledSplit, Network, NetworkConfig, Task};
    let Some(gpu) = common::cuda("cuda_fine_tuning_matches_the_cpu") else { return };
    let cpu = Cpu::new(Some(2)).unwrap();
    let ds = prototypes(600, 60);
    let labels: Vec<f32> = (0..600).map(|r| (r % 3) as f32).collect();
    let targets = Dataset::from_f32(600, 1, labels);
    let scaler = Scaler::identity(60);
    let config = NetworkConfig { sizes: vec![60, 40, 30], activation: Activation::Sigmoid, task: Task::Classification { classes: 3 }, dropout: 0.3, input_dropout: 0.1 };
    // The same rows as 6 × 10 images, moved and mirrored (--shift 1 --flip).
    let mut images = ds.clone();
    images.image_shape = Some((6, 10));
    for (ds, augment) in [(&ds, Augment::default()), (&images, Augment { shift: 1, flip: true })] {
        let train = LabeledSplit { split: Split::all(ds), targets: &targets };
        let tc = TrainConfig { epochs: 3, batch: 25, lr: 0.1, optimizer: Optimizer::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 }, augment, ..Default::default() };
        let run = |graphs: bool| {
            gpu.set_graphs(graphs);
            finetune(&gpu, Network::init(config.clone(), 3).unwrap(), &scaler, &train, None, &tc, &mut Silent, None).unwrap()
        };
        let (g, e) = (run(true), run(false));
        gpu.set_graphs(true);
        // 600 rows are 24 batches of 25: groups of 5 leave a group of 4.
        let k0 = gpu.steps_per_launch();
        gpu.set_steps_per_launch(5);
        let grouped = run(true);
        gpu.set_steps_per_launch(k0);
        assert!(g.network == grouped.network, "images {augment}: 5 steps a graph changed the fine-tuned weights");
        gpu.set_fused(false);
        let unfused = finetune(&gpu, Network::init(config.clone(), 3).unwrap(), &scaler, &train, None, &tc, &mut Silent, None).unwrap();
        gpu.set_fused(true);
        // Fusing the activation gradient with the bias gradient changes nothing: the same sums.
        assert!(g.network == unfused.network, "images {augment}: the fused kernels changed the fine-tuned weights");
        let c = finetune(&cpu, Network::init(config.clone(), 3).unwrap(), &scaler, &train, None, &tc, &mut Silent, None).unwrap();
        assert!(g.network == e.network, "images {augment}: graph replay changed the fine-tuned weights");
        for (x, y) in g.history.iter().zip(&c.history) {
            let rel = (x.train_loss - y.train_loss).abs() / y.train_loss;
            assert!(rel < 1e-3, "images {augment}, epoch {}: GPU loss {} vs CPU {}", x.epoch, x.train_loss, y.train_loss);
            assert_eq!(x.train_accuracy, y.train_accuracy, "images {augment}, epoch {}: accuracy", x.epoch);
        }
    }
    // Validation: 1,500 rows, one chunk on the GPU and two on the CPU (1,024 rows a chunk),
    // whatever the batch; the same losses and accuracies. Labels the network can learn (from
    // three of each row's bits: about 76 % right after 3 epochs), so that neither figure is
    // chance's, which any wrong computation would also give.
    let dae::data::Values::F32(v) = &ds.values else { panic!("prototypes are f32") };
    let learnable: Vec<f32> = (0..600).map(|r| ((v[r * 60] + 2.0 * v[r * 60 + 1] + v[r * 60 + 2]) as u32 % 3) as f32).collect();
    let learnable = Dataset::from_f32(600, 1, learnable);
    let train = LabeledSplit { split: Split::all(&ds), targets: &learnable };
    let val = LabeledSplit { split: Split { data: &ds, rows: (0..1500).map(|i| (i * 7 % 600) as u32).collect() }, targets: &learnable };
    let tc = TrainConfig { epochs: 3, batch: 25, lr: 0.5, ..Default::default() };
    let vg = finetune(&gpu, Network::init(config.clone(), 3).unwrap(), &scaler, &train, Some(&val), &tc, &mut Silent, None).unwrap();
    let vc = finetune(&cpu, Network::init(config.clone(), 3).unwrap(), &scaler, &train, Some(&val), &tc, &mut Silent, None).unwrap();
    assert_eq!(vg.history.len(), 3);
    assert!(vc.history[2].val_accuracy.unwrap() > 0.6, "the CPU run should learn: {:?}", vc.history);
    for (g, c) in vg.history.iter().zip(&vc.history) {
        let (gl, cl) = (g.val_loss.unwrap(), c.val_loss.unwrap());
        assert!((gl - cl).abs() <= 1e-3 * cl, "epoch {}: validation loss {gl} on the GPU, {cl} on the CPU", g.epoch);
        // A row near a tie may fall either way (each row is 2 or 3 of the 1,500).
        let (ga, ca) = (g.val_accuracy.unwrap(), c.val_accuracy.unwrap());
        assert!((ga - ca).abs() <= 9.0 / 1500.0, "epoch {}: validation accuracy {ga} on the GPU, {ca} on the CPU", g.epoch);
    }
}

/// A tied autoencoder's W update from a batch of at most 32 rows (both terms of its gradient as
/// one product of depth at most 64) takes the kernel rank_update instead of cuBLAS: the same
/// losses and weights, to rounding, as cuBLAS's and the CPU's, with SGD (in place, with weight
/// decay: β ≠ 1) and Adam (gradient buffers, β = 0), at depths 40, 64 and 14; exactly the same
/// on a second run and replayed from graphs. Untied weights, deeper products and a short last
/// batch (whose two terms do not lie one after the other) stay cuBLAS's.
#[test]
fn cuda_weight_update_kernel_matches_cublas() {
    let Some(gpu) = common::cuda("cuda_weight_update_kernel_matches_cublas") else { return };
    // On whatever DAE_CUDA_UPDATE and DAE_CUDA_FUSE say.
    gpu.set_rank_update(true);
    gpu.set_fused(true);
    let cpu = Cpu::new(Some(2)).unwrap();
    let ds = prototypes(600, 120);
    let scaler = Scaler::identity(ds.cols);
    let sgd_decay = Optimizer::Sgd { momentum: 0.0, nesterov: false, weight_decay: 1e-3 };
    let configs = [
        (20, DaeConfig::new(120, 64), sgd_decay, 0.1),
        (32, DaeConfig { encoder: Activation::Relu, loss: Loss::CrossEntropy, ..DaeConfig::new(120, 64) }, Optimizer::sgd(), 0.05),
        (7, DaeConfig { encoder: Activation::Tanh, emphasis: Some(Emphasis { corrupted: 1.0, clean: 0.5 }), ..DaeConfig::new(120, 48) }, Optimizer::adam(), 1e-3),
        (32, DaeConfig { tied: false, encoder: Activation::Relu, decoder: Activation::Identity, loss: Loss::SquaredError, ..DaeConfig::new(120, 64) }, Optimizer::sgd(), 0.02),
    ];
    for (batch, cfg, opt, lr) in configs {
        let what = format!("batch {batch}, {cfg:?}, {opt:?}");
        let tc = TrainConfig { epochs: 3, batch, optimizer: opt, lr, ..Default::default() };
        let run = || train_dae(&gpu, Dae::init(&cfg, 1), &scaler, &Split::all(&ds), None, &tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap();
        let before = gpu.rank_updates();
        let ours = run();
        // Every full batch's update (600 = 85·7 + 5: the short batch's is cuBLAS's); none untied.
        let per_epoch = if cfg.tied { 600 / batch } else { 0 };
        assert_eq!(gpu.rank_updates() - before, 3 * per_epoch, "{what}: the weight updates that take the kernel");
        assert!(run().model == ours.model, "{what}: two runs differ");
        gpu.set_graphs(false);
        let eager = run();
        gpu.set_graphs(true);
        assert!(eager.model == ours.model, "{what}: graph replay changed the weights");
        gpu.set_rank_update(false);
        let before = gpu.rank_updates();
        let cublas = run();
        gpu.set_rank_update(true);
        assert_eq!(gpu.rank_updates(), before, "{what}: turned off, the kernel does not run");
        let on_cpu = train_dae(&cpu, Dae::init(&cfg, 1), &scaler, &Split::all(&ds), None, &tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap();
        for (e, ((s, o), c)) in ours.history.iter().zip(&cublas.history).zip(&on_cpu.history).enumerate() {
            let rel = (s.train_loss - o.train_loss).abs() / o.train_loss;
            assert!(rel < 1e-4, "{what} epoch {}: loss {} vs {} with cuBLAS's update", e + 1, s.train_loss, o.train_loss);
            let rel = (s.train_loss - c.train_loss).abs() / c.train_loss;
            assert!(rel < 1e-3, "{what} epoch {}: loss {} vs the CPU's {}", e + 1, s.train_loss, c.train_loss);
        }
        assert_close(&format!("{what}: W"), &ours.model.w, &cublas.model.w, 1e-3, 1e-4);
        assert_close(&format!("{what}: b"), &ours.model.b, &cublas.model.b, 1e-3, 1e-4);
        assert_close(&format!("{what}: c"), &ours.model.c, &cublas.model.c, 1e-3, 1e-4);
    }
    // Batches of 33 rows: W's gradient has depth 66, and the short last batch (600 = 18·33 + 6)
    // has two products with a gap between their operands: cuBLAS's, both.
    let before = gpu.rank_updates();
    let tc = TrainConfig { epochs: 1, batch: 33, optimizer: Optimizer::sgd(), lr: 0.1, ..Default::default() };
    train_dae(&gpu, Dae::init(&DaeConfig::new(120, 64), 1), &scaler, &Split::all(&ds), None, &tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap();
    assert_eq!(gpu.rank_updates(), before, "W's updates from 33 rows are cuBLAS's");
}

//! Training behaviour: reproducibility, the allocation-free step, early stopping, learning, and
//! the fast matrix product against the reference loops.

mod common;

use dae::backend::{Backend, StepSpec, Trans};
use dae::corrupt::NoiseKey;
use dae::dae::{DaeOptState, DaeParams, DaeWorkspace};
use dae::rng::{stream, Rng};
use dae::train::{train_step, validation_loss};
use dae::{
    train_dae, Corruption, Cpu, Dae, DaeConfig, Dataset, Optimizer, Scaler, Silent, Split,
    TrainConfig,
};

/// Rows drawn from a few binary prototypes with 10 % of the bits flipped: structure an
/// autoencoder can learn.
fn prototypes(rows: usize, cols: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed, 5);
    let protos: Vec<Vec<f32>> = (0..6)
        .map(|_| (0..cols).map(|_| (rng.next_f32() < 0.4) as u8 as f32).collect())
        .collect();
    let mut v = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let p = &protos[rng.below(6) as usize];
        v.extend(p.iter().map(|&b| if rng.next_f32() < 0.1 { 1.0 - b } else { b }));
    }
    Dataset::from_f32(rows, cols, v)
}

fn train(cpu: &Cpu, ds: &Dataset, cfg: &DaeConfig, tc: &TrainConfig) -> dae::Trained {
    let scaler = Scaler::identity(ds.cols);
    train_dae(cpu, Dae::init(cfg, tc.seed), &scaler, &Split::all(ds), None, tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap()
}

#[test]
fn same_seed_and_threads_give_bit_identical_weights() {
    // Shapes large enough that every operation takes its multi-threaded path.
    let ds = prototypes(1200, 200, 1);
    let cfg = DaeConfig::new(200, 180);
    let tc = TrainConfig { epochs: 2, batch: 256, optimizer: Optimizer::adam(), lr: 1e-3, ..Default::default() };
    let cpu = Cpu::new(Some(2)).unwrap();
    let a = train(&cpu, &ds, &cfg, &tc);
    let b = train(&cpu, &ds, &cfg, &tc);
    assert!(a.model == b.model, "two runs with the same seed differ");
    assert_eq!(a.history[1].train_loss, b.history[1].train_loss);
    let c = train(&cpu, &ds, &cfg, &TrainConfig { seed: 2, ..tc });
    assert!(a.model.w != c.model.w, "another seed must give other weights");
}

#[test]
fn steps_handed_over_in_groups_train_exactly_as_one_at_a_time() {
    // 15 full batches of 64 and a last one of 40: groups of 4 leave a group of 3 at the end of
    // each epoch, then the short batch alone. Adam's step count runs across the groups.
    let ds = prototypes(1000, 30, 3);
    let cfg = DaeConfig::new(30, 12);
    let tc = TrainConfig { epochs: 2, batch: 64, optimizer: Optimizer::adam(), lr: 1e-2, ..Default::default() };
    let one = train(&Cpu::new(Some(1)).unwrap(), &ds, &cfg, &tc);
    for k in [4, 16, 40] {
        let grouped = train(&Cpu::new(Some(1)).unwrap().with_steps_per_launch(k), &ds, &cfg, &tc);
        assert!(grouped.model == one.model, "{k} steps a launch: other weights");
        for (g, o) in grouped.history.iter().zip(&one.history) {
            assert_eq!(g.train_loss, o.train_loss, "{k} steps a launch: epoch {}", o.epoch);
        }
    }
    assert!(one.history[1].train_loss < one.history[0].train_loss, "the runs learn something");

    // Interrupted after a number of groups, resumed with another group size (from a batch
    // that is not a multiple of it): the weights of the uninterrupted run.
    struct StopAfter {
        polls: std::cell::Cell<usize>,
        after: usize,
        saved: Option<dae::train::Checkpoint>,
    }
    impl dae::Observer for StopAfter {
        fn stop_requested(&self) -> bool {
            self.polls.set(self.polls.get() + 1);
            self.polls.get() == self.after
        }
        fn checkpoint(&mut self, c: &dae::train::Checkpoint) -> dae::Result<String> {
            self.saved = Some(c.clone());
            Ok("memory".into())
        }
    }
    let scaler = Scaler::identity(ds.cols);
    for (first, then, after) in [(4, 3, 2), (1, 4, 22)] {
        let mut stop = StopAfter { polls: Default::default(), after, saved: None };
        let cpu = Cpu::new(Some(1)).unwrap().with_steps_per_launch(first);
        let r = train_dae(&cpu, Dae::init(&cfg, tc.seed), &scaler, &Split::all(&ds), None, &tc, stream::TRAIN_NOISE, &mut stop, None);
        assert!(matches!(r, Err(dae::Error::Interrupted(_))), "{first} then {then}: the run stops");
        let ck = stop.saved.expect("a checkpoint at the stop");
        let done = ck.position.batches_done;
        assert!(done % then != 0, "{first} then {then}: resumes from batch {done}, a multiple of {then}");
        let cpu = Cpu::new(Some(1)).unwrap().with_steps_per_launch(then);
        let resumed = train_dae(&cpu, Dae::init(&cfg, tc.seed), &scaler, &Split::all(&ds), None, &tc, stream::TRAIN_NOISE, &mut Silent, Some(&ck)).unwrap();
        assert!(resumed.model == one.model, "{first} steps a launch, stopped at batch {done}, resumed with {then}: other weights");
    }
}

#[test]
fn gemm_matches_the_reference_product() {
    let fast = Cpu::new(Some(2)).unwrap();
    let slow = Cpu::reference(Some(1)).unwrap();
    let mut rng = Rng::new(3, 0);
    for &(m, n, k) in &[(1, 1, 1), (5, 7, 3), (20, 500, 784), (784, 500, 20), (130, 33, 257)] {
        for ta in [Trans::N, Trans::T] {
            for tb in [Trans::N, Trans::T] {
                for accumulate in [false, true] {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.next_f32() - 0.5).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.next_f32() - 0.5).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.next_f32()).collect();
                    let (mut c1, mut c2) = (c0.clone(), c0.clone());
                    fast.install(|| fast.matmul(&mut c1, &a, ta, &b, tb, m, n, k, accumulate));
                    slow.matmul(&mut c2, &a, ta, &b, tb, m, n, k, accumulate);
                    let tol = 1e-5 * (k as f32).sqrt() + 1e-6;
                    for (x, y) in c1.iter().zip(&c2) {
                        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{m}×{n}×{k} {ta:?}{tb:?}: {x} vs {y}");
                    }
                }
            }
        }
    }
}

/// Counts the allocations made by the current thread while switched on: other tests run in
/// parallel in this process and must not be counted.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    pub fn start() {
        COUNT.with(|c| c.set(0));
        ON.with(|o| o.set(true));
    }

    pub fn stop() -> usize {
        ON.with(|o| o.set(false));
        COUNT.with(|c| c.get())
    }

    fn note() {
        if ON.with(|o| o.get()) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
    }

    pub struct Counting;
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            note();
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            note();
            unsafe { System.realloc(p, l, n) }
        }
    }
}

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

#[test]
fn the_training_step_allocates_nothing() {
    // One thread, so that every allocation would happen on this thread and be counted. The
    // product's packing buffers grow once, in the first step.
    let cpu = Cpu::new(Some(1)).unwrap();
    let ds = prototypes(64, 30, 2);
    let scaler = Scaler::identity(30);
    for (optimizer, emphasis, untied) in [
        (Optimizer::sgd(), None, false),
        (Optimizer::Sgd { momentum: 0.9, nesterov: true, weight_decay: 1e-4 }, Some("1,0.5"), true),
        (Optimizer::adamw(), None, true),
    ] {
        let mut cfg = DaeConfig::new(30, 12);
        cfg.tied = !untied;
        cfg.emphasis = emphasis.map(|e| e.parse().unwrap());
        cfg.noise = Corruption::SaltAndPepper { level: 0.2 };
        let counted = cpu.install(|| {
            let data = cpu.data(&ds, &scaler).unwrap();
            let mut p = DaeParams::upload(&cpu, &Dae::init(&cfg, 1)).unwrap();
            let mut ws = DaeWorkspace::new(&cpu, &cfg, 16).unwrap();
            let mut opt = DaeOptState::new(&cpu, &cfg, &optimizer).unwrap();
            let rows: Vec<u32> = (0..64).collect();
            let mut count = 0;
            for t in 1..=8u64 {
                let chunk = &rows[((t as usize - 1) % 4) * 16..][..if t == 4 { 9 } else { 16 }];
                let key = NoiseKey { seed: 1, stream: 16, epoch: 1, row0: 0 };
                let step = StepSpec { optimizer, lr: 0.01, t };
                // The one-thread pool runs everything on this thread.
                counting::start();
                // Gradient clipping (on in odd steps) allocates nothing either.
                let max_grad_norm = (t % 2 == 1).then_some(0.5);
                train_step(&cpu, &cfg, &mut p, &mut ws, &mut opt, &data, chunk, &key, &step, max_grad_norm, None).unwrap();
                let n = counting::stop();
                if t > 1 {
                    count += n;
                }
            }
            count
        });
        assert_eq!(counted, 0, "{optimizer:?}: the training step allocated {counted} times");
    }
}

#[test]
fn early_stopping_keeps_the_best_weights() {
    let ds = prototypes(400, 40, 3);
    let (train_rows, val_rows) = dae::train::holdout(ds.rows, 0.25, 7).unwrap();
    assert_eq!(val_rows.len(), 100);
    let cfg = DaeConfig::new(40, 30);
    // A rate high enough that the validation loss stops improving within the run.
    let tc = TrainConfig { epochs: 40, batch: 10, lr: 3.0, patience: Some(3), val_fraction: Some(0.25), ..Default::default() };
    let cpu = Cpu::new(Some(1)).unwrap();
    let scaler = Scaler::identity(40);
    let train = Split { data: &ds, rows: train_rows };
    let val = Split { data: &ds, rows: val_rows };
    let t = train_dae(&cpu, Dae::init(&cfg, 1), &scaler, &train, Some(&val), &tc, stream::TRAIN_NOISE, &mut Silent, None).unwrap();
    let best = t.best_epoch.expect("patience keeps a best epoch");
    let losses: Vec<f64> = t.history.iter().map(|r| r.val_loss.unwrap()).collect();
    let argmin = losses.iter().enumerate().fold(0, |b, (i, &l)| if l < losses[b] { i } else { b }) + 1;
    assert_eq!(best, argmin, "the kept epoch has the lowest validation loss: {losses:?}");
    assert!(t.stopped_early, "the run should stop early: {losses:?}");
    assert_eq!(t.history.len(), best + 3, "stops `patience` epochs after the best");
    // The returned weights are that epoch's: their validation loss is the one recorded.
    let again = validation_loss(&cpu, &t.model, &scaler, &val, tc.seed).unwrap();
    assert_eq!(again, losses[best - 1]);
}

#[test]
fn training_learns_the_structure() {
    let ds = prototypes(600, 50, 4);
    let cfg = DaeConfig::new(50, 20);
    let cpu = Cpu::new(None).unwrap();
    for optimizer in [Optimizer::sgd(), Optimizer::adam(), Optimizer::adamw()] {
        let lr = if optimizer == Optimizer::sgd() { 0.1 } else { 0.01 };
        let tc = TrainConfig { epochs: 8, batch: 20, optimizer, lr, lr_decay: 0.9, ..Default::default() };
        let t = train(&cpu, &ds, &cfg, &tc);
        let (first, last) = (t.history[0].train_loss, t.history.last().unwrap().train_loss);
        assert!(last < 0.75 * first, "{optimizer:?}: loss {first} → {last}");
        assert!((t.history[1].lr - lr * 0.9).abs() < 1e-7, "lr decays per epoch");
    }
}

#[test]
fn fused_sgd_step_equals_gradients_then_update() {
    use dae::dae::{apply_update, forward_backward, GradSink};
    use dae::network::{backward, forward, loss, Dropout, NetOptState, NetParams, NetWorkspace, Network, NetworkConfig, Task};
    let cpu = Cpu::new(Some(2)).unwrap();
    let ds = prototypes(40, 30, 9);
    let scaler = Scaler::identity(30);
    let close = |a: &[f32], b: &[f32], what: &str| {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
        }
    };
    for (tied, wd) in [(true, 0.0), (false, 0.01)] {
        let mut cfg = DaeConfig::new(30, 12);
        cfg.tied = tied;
        let opt = Optimizer::Sgd { momentum: 0.0, nesterov: false, weight_decay: wd };
        let model = Dae::init(&cfg, 3);
        let data = cpu.data(&ds, &scaler).unwrap();
        let rows: Vec<u32> = (0..40).collect();
        let run = |fused: bool| {
            let mut p = DaeParams::upload(&cpu, &model).unwrap();
            let mut ws = DaeWorkspace::new(&cpu, &cfg, 40).unwrap();
            let mut st = DaeOptState::new(&cpu, &cfg, &opt).unwrap();
            cpu.gather(&mut ws.x, &data, &rows);
            let key = NoiseKey { seed: 1, stream: 16, epoch: 1, row0: 0 };
            dae::dae::corrupt_batch(&cpu, cfg.noise, &key, &mut ws, 30, 40);
            let step = StepSpec { optimizer: opt, lr: 0.3, t: 1 };
            if fused {
                forward_backward(&cpu, &cfg, &mut p, &mut ws, 40, GradSink::for_step(&opt, 0.3));
            } else {
                forward_backward(&cpu, &cfg, &mut p, &mut ws, 40, GradSink::Buffers);
                apply_update(&cpu, &mut p, &ws.grads, &mut st, &step, &cfg);
            }
            let mut out = model.clone();
            p.download(&cpu, &mut out);
            out
        };
        let (a, b) = (run(true), run(false));
        assert!(a.w != model.w, "the step changed the weights");
        close(&a.w, &b.w, "W");
        close(&a.b, &b.b, "b");
        close(&a.c, &b.c, "c");
        if !tied {
            close(a.v.as_ref().unwrap(), b.v.as_ref().unwrap(), "V");
        }
    }
    // The fine-tuning network, dropout included.
    let config = NetworkConfig { sizes: vec![30, 16, 8], activation: dae::Activation::Sigmoid, task: Task::Classification { classes: 3 }, dropout: 0.2, input_dropout: 0.1 };
    let mut net = Network::init(config.clone(), 4).unwrap();
    // A non-zero output layer, so that every gradient flows.
    net.weights[2].iter_mut().enumerate().for_each(|(i, w)| *w = ((i % 7) as f32 - 3.0) * 0.1);
    let labels: Vec<f32> = (0..40).map(|i| (i % 3) as f32).collect();
    let opt = Optimizer::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.001 };
    let run = |fused: bool| {
        let mut p = NetParams::upload(&cpu, &net).unwrap();
        let mut ws = NetWorkspace::new(&cpu, &config, 40).unwrap();
        let mut st = NetOptState::new(&cpu, &config, &opt).unwrap();
        let data = cpu.data(&ds, &scaler).unwrap();
        let rows: Vec<u32> = (0..40).collect();
        cpu.gather(&mut ws.act.x, &data, &rows);
        cpu.upload(&mut ws.targets, &labels);
        let key = NoiseKey { seed: 2, stream: 0x3000, epoch: 1, row0: 0 };
        forward(&cpu, &config, &p, &mut ws, 40, Dropout::Sample(key));
        loss(&cpu, &config, &p, &mut ws, 40, dae::backend::LossOutput::Grad);
        if fused {
            backward(&cpu, &config, &mut p, &mut ws, 40, true, GradSink::for_step(&opt, 0.5));
        } else {
            backward(&cpu, &config, &mut p, &mut ws, 40, true, GradSink::Buffers);
            dae::network::apply_update(&cpu, &config, &mut p, &ws.grads, &mut st, &StepSpec { optimizer: opt, lr: 0.5, t: 1 });
        }
        let mut out = net.clone();
        p.download(&cpu, &mut out);
        out
    };
    let (a, b) = (run(true), run(false));
    for l in 0..3 {
        assert!(a.weights[l] != net.weights[l], "layer {l} changed");
        close(&a.weights[l], &b.weights[l], &format!("weights[{l}]"));
        close(&a.biases[l], &b.biases[l], &format!("biases[{l}]"));
    }
}

//! Stacked autoencoders and fine-tuning: layer-wise pretraining on clean codes, and a
//! fine-tuned classifier that learns.

use dae::data::class_dataset;
use dae::network::{finetune, predict_all, LabeledSplit, Network, NetworkConfig, Task};
use dae::rng::Rng;
use dae::stack::{pretrain, LayerPlan};
use dae::train::{holdout, validation_loss};
use dae::{Corruption, Cpu, DaeConfig, Dataset, Scaler, Silent, Split, TrainConfig};

/// Rows from 4 binary prototypes with 10 % of bits flipped; the label is the prototype.
fn labelled(rows: usize, cols: usize, seed: u64) -> (Dataset, Vec<u32>) {
    let mut rng = Rng::new(seed, 5);
    let protos: Vec<Vec<f32>> = (0..4).map(|_| (0..cols).map(|_| (rng.next_f32() < 0.5) as u8 as f32).collect()).collect();
    let mut v = Vec::new();
    let mut y = Vec::new();
    for _ in 0..rows {
        let c = rng.below(4);
        y.push(c);
        v.extend(protos[c as usize].iter().map(|&b| if rng.next_f32() < 0.1 { 1.0 - b } else { b }));
    }
    (Dataset::from_f32(rows, cols, v), y)
}

fn plan(hidden: usize, level: f32, epochs: usize) -> LayerPlan {
    let mut config = DaeConfig::new(0, hidden);
    config.noise = Corruption::Masking { level };
    LayerPlan { config, train: TrainConfig { epochs, batch: 16, lr: 0.1, ..Default::default() } }
}

#[test]
fn each_layer_is_trained_on_the_clean_codes_of_the_layer_below() {
    let (ds, _) = labelled(300, 24, 1);
    let (train_rows, val_rows) = holdout(ds.rows, 0.2, 3).unwrap();
    let cpu = Cpu::new(Some(2)).unwrap();
    let scaler = Scaler::identity(24);
    let plans = [plan(12, 0.1, 3), plan(6, 0.2, 3)];
    let train = Split { data: &ds, rows: train_rows };
    let val = Split { data: &ds, rows: val_rows.clone() };
    let p = pretrain(&cpu, &plans, &scaler, &train, Some(&val), &mut Silent, None).unwrap();
    assert_eq!(p.stack.sizes(), vec![24, 12, 6]);
    assert_eq!(p.stack.layers[1].config.inputs, 12);
    assert_eq!(p.stack.layers[1].config.noise, Corruption::Masking { level: 0.2 });
    // Layer 2's recorded validation loss is its loss on the clean layer-1 codes of the
    // validation rows: recompute it from codes computed here.
    let codes = p.stack.encode(&cpu, &ds, &scaler, 1).unwrap();
    let codes = Dataset::from_f32(ds.rows, 12, codes);
    let again = validation_loss(&cpu, &p.stack.layers[1], &Scaler::identity(12), &Split { data: &codes, rows: val_rows }, 1).unwrap();
    let recorded = p.histories[1].last().unwrap().val_loss.unwrap();
    assert!((again - recorded).abs() <= 1e-9 * recorded.abs(), "{again} vs {recorded}");
    // And it learned.
    assert!(p.histories[1].last().unwrap().train_loss < p.histories[1][0].train_loss);
}

/// A stack's codes handed out a block of rows at a time (each chunk through every layer) are
/// those of the layers encoded whole: the last layer's, or every layer's side by side; on 1 to
/// 3 threads, and operation by operation as other devices do. An error from the writer stops
/// the work.
#[test]
fn stack_codes_streamed_by_chunks_are_the_codes_of_whole_layers() {
    use dae::stack::Stack;
    use dae::Dae;
    let (rows, sizes) = (2500, [30, 17, 40, 9]);
    let (ds, _) = labelled(rows, sizes[0], 4);
    let scaler = Scaler::identity(sizes[0]);
    let layers = (0..3).map(|i| Dae::init(&DaeConfig::new(sizes[i], sizes[i + 1]), i as u64)).collect();
    let stack = Stack { layers };
    let whole = stack.encode_layers(&Cpu::new(Some(1)).unwrap(), &ds, &scaler, 3).unwrap();
    for be in [Cpu::new(Some(1)).unwrap(), Cpu::new(Some(3)).unwrap(), Cpu::new(Some(2)).unwrap().operation_by_operation()] {
        for (upto, all_layers) in [(3, false), (2, false), (3, true), (2, true)] {
            let (mut got, mut blocks) = (Vec::new(), 0);
            stack
                .encode_each(&be, &ds, &scaler, upto, all_layers, |b| {
                    got.extend_from_slice(b);
                    blocks += 1;
                    Ok(())
                })
                .unwrap();
            let want: Vec<f32> = if all_layers {
                (0..rows).flat_map(|r| (0..upto).flat_map(|l| whole[l][r * sizes[l + 1]..(r + 1) * sizes[l + 1]].to_vec()).collect::<Vec<f32>>()).collect()
            } else {
                whole[upto - 1].clone()
            };
            assert!(blocks > 1, "in more than one block");
            assert!(got == want, "{} threads, layer {upto}, all layers {all_layers}", be.threads());
        }
        // An error from `out` stops the work and is the result.
        let mut calls = 0;
        let r = stack.encode_each(&be, &ds, &scaler, 3, true, |_| {
            calls += 1;
            if calls == 2 { Err(dae::Error::Runtime("stop".into())) } else { Ok(()) }
        });
        assert!(matches!(r, Err(dae::Error::Runtime(ref m)) if m == "stop"), "{r:?}");
        assert_eq!(calls, 2, "no block after the error");
    }
}

/// A network applied on the CPU in one pass per block of rows (every layer in cache) gives
/// exactly what its operations in turn give, chunk by chunk: class probabilities, predicted
/// values and each hidden layer's activations; on 1 to 3 threads.
#[test]
fn one_pass_network_outputs_equal_the_operations_in_turn() {
    use dae::network::{hidden_all, hidden_each};
    use dae::Activation;
    let (ds, _) = labelled(2100, 40, 6);
    let scaler = Scaler::fit(dae::ScaleKind::Standardize, &ds, None);
    let cases = [
        (vec![40, 300, 17], Task::Classification { classes: 7 }, Activation::Sigmoid),
        (vec![40, 300, 17], Task::Regression { outputs: 3 }, Activation::Relu),
        (vec![40, 30, 17, 9], Task::Classification { classes: 350 }, Activation::Tanh),
    ];
    for (sizes, task, act) in cases {
        let config = NetworkConfig { sizes: sizes.clone(), activation: act, task, dropout: 0.2, input_dropout: 0.1 };
        let mut net = Network::init(config, 9).unwrap();
        // The output layer and the biases start at zero: give every one of them values.
        let mut rng = Rng::new(3, 1);
        for v in net.weights.iter_mut().chain(net.biases.iter_mut()).flatten() {
            *v += rng.next_f32() - 0.5;
        }
        // Also streamed: layer 2 alone, and layers 1 and 2 side by side.
        let streamed = |be: &Cpu, all_layers: bool| {
            let mut v = Vec::new();
            hidden_each(be, &net, &ds, &scaler, 2, all_layers, |b| {
                v.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            v
        };
        let all = |be: &Cpu| {
            vec![
                predict_all(be, &net, &ds, &scaler).unwrap(),
                hidden_all(be, &net, &ds, &scaler, 0).unwrap(),
                hidden_all(be, &net, &ds, &scaler, 1).unwrap(),
                streamed(be, false),
                streamed(be, true),
            ]
        };
        let want = all(&Cpu::new(Some(1)).unwrap().operation_by_operation());
        assert_eq!(want[3], want[2]);
        let (w1, w2) = (sizes[1], sizes[2]);
        let side_by_side: Vec<f32> = (0..ds.rows).flat_map(|r| [&want[1][r * w1..(r + 1) * w1], &want[2][r * w2..(r + 1) * w2]].concat()).collect();
        assert!(want[4] == side_by_side);
        assert!(hidden_each(&Cpu::new(Some(1)).unwrap(), &net, &ds, &scaler, sizes.len(), false, |_| Ok(())).is_err(), "no such layer");
        // An error from `out` stops the work and is the result, on either path (2,100 rows are
        // three chunks of the operations' 1,024).
        for be in [Cpu::new(Some(1)).unwrap(), Cpu::new(Some(1)).unwrap().operation_by_operation()] {
            let mut calls = 0;
            let r = hidden_each(&be, &net, &ds, &scaler, 2, true, |_| {
                calls += 1;
                if calls == 2 { Err(dae::Error::Runtime("stop".into())) } else { Ok(()) }
            });
            assert!(matches!(r, Err(dae::Error::Runtime(ref m)) if m == "stop"), "{r:?}");
            assert_eq!(calls, 2, "no block after the error");
        }
        for threads in 1..=3 {
            for (what, (got, want)) in ["outputs", "layer 1", "layer 2", "layer 2, streamed", "layers 1 and 2, streamed"].iter().zip(all(&Cpu::new(Some(threads)).unwrap()).iter().zip(&want)) {
                assert_eq!(got.len(), want.len());
                let differ = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits());
                assert_eq!(differ, None, "{what}, {task:?}, {threads} threads: value {differ:?} differs");
            }
        }
    }
}

#[test]
fn finetuned_classifier_learns_and_dropout_is_reproducible() {
    let (ds, y) = labelled(400, 30, 2);
    let targets = class_dataset(&y, std::path::Path::new("labels"));
    let cpu = Cpu::new(Some(2)).unwrap();
    let scaler = Scaler::identity(30);
    let config = NetworkConfig {
        sizes: vec![30, 16, 8],
        activation: dae::Activation::Sigmoid,
        task: Task::Classification { classes: 4 },
        dropout: 0.2,
        input_dropout: 0.1,
    };
    let (train_rows, val_rows) = holdout(ds.rows, 0.25, 1).unwrap();
    let train = LabeledSplit { split: Split { data: &ds, rows: train_rows }, targets: &targets };
    let val = LabeledSplit { split: Split { data: &ds, rows: val_rows }, targets: &targets };
    let tc = TrainConfig { epochs: 12, batch: 16, lr: 0.5, patience: Some(20), ..Default::default() };
    let run = || finetune(&cpu, Network::init(config.clone(), 1).unwrap(), &scaler, &train, Some(&val), &tc, &mut Silent, None).unwrap();
    let a = run();
    let b = run();
    assert!(a.network == b.network, "same seed, same threads: same weights, dropout included");
    let last = a.history.last().unwrap();
    assert!(last.val_accuracy.unwrap() > 0.95, "{:?}", a.history);
    assert!(a.best_epoch.is_some());
    let probs = predict_all(&cpu, &a.network, &ds, &scaler).unwrap();
    for row in probs.chunks(4) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    // The output layer starts at zero, as in the Theano tutorial's logistic layer.
    let fresh = Network::init(config, 1).unwrap();
    assert!(fresh.weights.last().unwrap().iter().all(|&w| w == 0.0));
}

#[test]
fn regression_fits_a_linear_target() {
    let mut rng = Rng::new(4, 1);
    let rows = 300;
    let x: Vec<f32> = (0..rows * 3).map(|_| rng.next_f32()).collect();
    let t: Vec<f32> = x.chunks(3).map(|r| 2.0 * r[0] - r[1] + 0.5 * r[2]).collect();
    let ds = Dataset::from_f32(rows, 3, x);
    let targets = Dataset::from_f32(rows, 1, t.clone());
    let config = NetworkConfig {
        sizes: vec![3, 8],
        activation: dae::Activation::Tanh,
        task: Task::Regression { outputs: 1 },
        dropout: 0.0,
        input_dropout: 0.0,
    };
    let cpu = Cpu::new(Some(1)).unwrap();
    let scaler = Scaler::identity(3);
    let train = LabeledSplit { split: Split::all(&ds), targets: &targets };
    let tc = TrainConfig { epochs: 60, batch: 10, lr: 0.05, ..Default::default() };
    let net = finetune(&cpu, Network::init(config, 2).unwrap(), &scaler, &train, None, &tc, &mut Silent, None).unwrap();
    let pred = predict_all(&cpu, &net.network, &ds, &scaler).unwrap();
    let mse = pred.iter().zip(&t).map(|(p, y)| (p - y) * (p - y)).sum::<f32>() / rows as f32;
    let var = { let m = t.iter().sum::<f32>() / rows as f32; t.iter().map(|y| (y - m) * (y - m)).sum::<f32>() / rows as f32 };
    assert!(mse < 0.05 * var, "mse {mse}, variance {var}");
}

#[test]
fn fine_tuning_clips_gradients_to_max_grad_norm() {
    // One plain SGD step over every row: the parameters move by lr · (clipped gradient), so by
    // at most lr · max in L2 norm, while the unclipped step moves further.
    let (ds, labels) = labelled(200, 20, 4);
    let targets = class_dataset(&labels, std::path::Path::new("labels"));
    let config = NetworkConfig { sizes: vec![20, 16], activation: dae::Activation::Sigmoid, task: Task::Classification { classes: 4 }, dropout: 0.0, input_dropout: 0.0 };
    let cpu = Cpu::new(Some(1)).unwrap();
    let scaler = Scaler::identity(20);
    let train = LabeledSplit { split: Split::all(&ds), targets: &targets };
    let init = Network::init(config.clone(), 2).unwrap();
    let flat = |n: &Network| n.weights.iter().chain(&n.biases).flatten().copied().collect::<Vec<f32>>();
    let moved = |max: Option<f32>| {
        let tc = TrainConfig { epochs: 1, batch: 200, lr: 0.1, max_grad_norm: max, ..Default::default() };
        let net = finetune(&cpu, init.clone(), &scaler, &train, None, &tc, &mut Silent, None).unwrap().network;
        flat(&net).iter().zip(flat(&init)).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt()
    };
    let (free, clipped) = (moved(None), moved(Some(0.05)));
    assert!(free > 0.1 * 0.05 * 1.5, "the unclipped step ({free}) must be longer than the clipped bound");
    assert!((clipped - 0.1 * 0.05).abs() < 1e-4, "the clipped step moved {clipped}, expected lr · max = 0.005");
}

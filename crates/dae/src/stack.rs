//! Stacked denoising autoencoders (Vincent et al., JMLR 2010): greedy layer-wise pretraining,
//! each layer a DAE trained on the clean codes of the layer below.

use crate::backend::Backend;
use crate::config::{Loss, TrainConfig};
use crate::dae::{Dae, DaeParams};
use crate::config::DaeConfig;
use crate::data::{Dataset, Scaler};
use crate::error::{Error, Result};
use crate::infer::encode_all;
use crate::rng::stream;
use crate::train::{train_dae, Checkpoint, EpochRecord, Observer, Split, Trained};

/// A stack of autoencoders; layer i encodes the codes of layer i − 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    pub layers: Vec<Dae>,
}

impl Stack {
    /// [inputs, hidden sizes…].
    pub fn sizes(&self) -> Vec<usize> {
        let mut s = vec![self.layers[0].config.inputs];
        s.extend(self.layers.iter().map(|l| l.config.hidden));
        s
    }

    /// Each layer's encoder (W, b).
    pub fn encoders(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        self.layers.iter().map(|l| (l.w.clone(), l.b.clone())).collect()
    }

    /// Checks that each layer's input is the layer below's code.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::usage("--layers", "a stack needs at least one layer"));
        }
        for (i, pair) in self.layers.windows(2).enumerate() {
            if pair[1].config.inputs != pair[0].config.hidden {
                return Err(Error::Runtime(format!(
                    "layer {} takes {} inputs but layer {} has {} units",
                    i + 2,
                    pair[1].config.inputs,
                    i + 1,
                    pair[0].config.hidden
                )));
            }
        }
        Ok(())
    }

    /// The codes of layer `upto` (1-based) for every row of `ds`, scaled by `scaler` first.
    pub fn encode<B: Backend>(&self, be: &B, ds: &Dataset, scaler: &Scaler, upto: usize) -> Result<Vec<f32>> {
        let mut all = self.encode_layers(be, ds, scaler, upto)?;
        Ok(all.pop().expect("at least one layer"))
    }

    /// The codes of every row of `ds` (scaled by `scaler` first), a block of whole rows at a
    /// time: `out` gets, for the next rows in order, the codes of layer `upto` (1-based) or,
    /// with `all_layers`, those of layers 1..=`upto` side by side (each row: layer 1's codes,
    /// then layer 2's, …), in a buffer it may change. A chunk of rows goes through every layer
    /// before the next (on the CPU in one pass per block of rows), so no layer's codes are ever
    /// all in memory. The values are those of
    /// [`Stack::encode_layers`]. An error from `out` stops the work.
    pub fn encode_each<B: Backend>(
        &self,
        be: &B,
        ds: &Dataset,
        scaler: &Scaler,
        upto: usize,
        all_layers: bool,
        mut out: impl FnMut(&mut [f32]) -> Result<()> + Send,
    ) -> Result<()> {
        let layers = &self.layers[..upto];
        let Some(cpu) = be.as_cpu() else {
            return self.encode_each_on_device(be, ds, scaler, upto, all_layers, out);
        };
        let widths: Vec<usize> = layers.iter().map(|l| l.config.hidden).collect();
        let first = if all_layers { 0 } else { upto - 1 };
        // Each layer's codes of a chunk, and the chunk's rows side by side.
        let chunk = crate::backend::eval_chunk(be, ds.rows, 2 * widths.iter().sum::<usize>());
        use crate::backend::cpu::eval::{Evaluator, Output};
        ds.check_width(layers[0].config.inputs, "the model")?;
        let evals: Vec<Evaluator> = layers.iter().map(|l| Evaluator::new(l, Output::Codes, crate::infer::EvalNoise::none())).collect();
        let mut codes: Vec<Vec<f32>> = vec![Vec::new(); upto];
        let mut joined = Vec::new();
        for start in (0..ds.rows).step_by(chunk) {
            let n = chunk.min(ds.rows - start);
            codes[0].resize(n * widths[0], 0.0);
            evals[0].run(cpu, ds, scaler, start, n, &mut codes[0]);
            for i in 1..upto {
                // The layer below's codes as this layer's data, lent and taken back.
                let input = Dataset::from_f32(n, widths[i - 1], std::mem::take(&mut codes[i - 1]));
                codes[i].resize(n * widths[i], 0.0);
                evals[i].run(cpu, &input, &Scaler::identity(input.cols), 0, n, &mut codes[i]);
                let crate::data::Values::F32(lent) = input.values else { unreachable!("made from floats") };
                codes[i - 1] = lent;
            }
            crate::infer::hand_on(&mut codes[first..], &widths[first..], n, &mut joined, &mut out)?;
        }
        Ok(())
    }

    /// [`Stack::encode_each`] on a device without the CPU's one-pass path (a GPU): chunks of
    /// rows, each through every layer on the device, each layer's codes of the chunk read back.
    /// A chunk is the smallest of those that [`encode_all`] takes for the layers (the same for
    /// every layer of usual sizes, so the products have the shapes they have there), fewer
    /// rows where the inputs and every layer's codes would pass
    /// [`crate::backend::eval_chunk`]'s budget.
    fn encode_each_on_device<B: Backend>(
        &self,
        be: &B,
        ds: &Dataset,
        scaler: &Scaler,
        upto: usize,
        all_layers: bool,
        mut out: impl FnMut(&mut [f32]) -> Result<()> + Send,
    ) -> Result<()> {
        use crate::backend::eval_chunk;
        let layers = &self.layers[..upto];
        let inputs = layers[0].config.inputs;
        ds.check_width(inputs, "the model")?;
        let widths: Vec<usize> = layers.iter().map(|l| l.config.hidden).collect();
        // Each layer's own chunk (as DaeWorkspace::for_eval sizes it for encode_all), so that
        // the products have the shapes they have there.
        let own = layers.iter().map(|l| eval_chunk(be, ds.rows, 4 * l.config.inputs + 2 * l.config.hidden)).min().unwrap_or(1);
        let cap = own.min(eval_chunk(be, ds.rows, inputs + widths.iter().sum::<usize>()));
        let first = if all_layers { 0 } else { upto - 1 };
        be.install(|| {
            let params = layers.iter().map(|l| DaeParams::upload(be, l)).collect::<Result<Vec<_>>>()?;
            // The chunk's rows, then each layer's codes of them.
            let mut x = be.alloc(cap * inputs)?;
            let mut h = widths.iter().map(|&k| be.alloc(cap * k)).collect::<Result<Vec<_>>>()?;
            let data = be.data(ds, scaler)?;
            let mut codes: Vec<Vec<f32>> = vec![Vec::new(); upto - first];
            let (mut idx, mut joined) = (Vec::with_capacity(cap), Vec::new());
            for start in (0..ds.rows).step_by(cap) {
                let n = cap.min(ds.rows - start);
                idx.clear();
                idx.extend(start as u32..(start + n) as u32);
                be.gather(&mut x, &data, &idx);
                for i in 0..upto {
                    // Layer i reads the chunk (i = 0) or the codes of the layer below.
                    let (below, rest) = h.split_at_mut(i);
                    let input = below.last().unwrap_or(&x);
                    crate::dae::encode(be, &layers[i].config, &params[i], input, &mut rest[0], n);
                }
                for (l, c) in (first..upto).zip(codes.iter_mut()) {
                    c.resize(n * widths[l], 0.0);
                    be.download(&h[l], c);
                }
                crate::infer::hand_on(&mut codes, &widths[first..], n, &mut joined, &mut out)?;
            }
            be.check()
        })
    }

    /// The codes of layers 1..=`upto` for every row of `ds`.
    pub fn encode_layers<B: Backend>(&self, be: &B, ds: &Dataset, scaler: &Scaler, upto: usize) -> Result<Vec<Vec<f32>>> {
        let mut out: Vec<Vec<f32>> = Vec::with_capacity(upto);
        for (i, layer) in self.layers[..upto].iter().enumerate() {
            let codes = match out.last() {
                None => encode_all(be, layer, ds, scaler)?,
                Some(prev) => {
                    let input = Dataset::from_f32(ds.rows, self.layers[i - 1].config.hidden, prev.clone());
                    encode_all(be, layer, &input, &Scaler::identity(input.cols))?
                }
            };
            out.push(codes);
        }
        Ok(out)
    }
}

/// One layer's plan: its autoencoder (inputs are filled in from the layer below) and training.
#[derive(Clone, Debug)]
pub struct LayerPlan {
    pub config: DaeConfig,
    pub train: TrainConfig,
}

/// The result of pretraining.
#[derive(Clone, Debug)]
pub struct Pretrained {
    pub stack: Stack,
    pub histories: Vec<Vec<EpochRecord>>,
    pub best_epochs: Vec<Option<usize>>,
}

/// A trained layer of a stack, with its history.
#[derive(Clone, Debug, PartialEq)]
pub struct DoneLayer {
    pub model: Dae,
    pub history: Vec<EpochRecord>,
    pub best_epoch: Option<usize>,
}

/// Where an interrupted pretraining stands: the layers done, and the next layer's checkpoint
/// (if it had begun).
#[derive(Clone, Debug, Default)]
pub struct PretrainResume {
    pub done: Vec<DoneLayer>,
    pub current: Option<Checkpoint>,
}

/// Greedy layer-wise pretraining: layer 1 is a DAE on `train` (scaled by `scaler`), layer i a DAE
/// on the clean codes of layer i − 1, each with its own noise stream. `val` (rows of `val_data`)
/// is encoded alongside and gives each layer's validation loss. `obs.begin` is told
/// "layer i/L" before each layer.
pub fn pretrain<B: Backend>(
    be: &B,
    plans: &[LayerPlan],
    scaler: &Scaler,
    train: &Split<'_>,
    val: Option<&Split<'_>>,
    obs: &mut dyn Observer,
    resume: Option<&PretrainResume>,
) -> Result<Pretrained> {
    if plans.is_empty() {
        return Err(Error::usage("--layers", "a stack needs at least one layer"));
    }
    for (i, p) in plans.iter().enumerate().skip(1) {
        if p.config.loss == Loss::CrossEntropy && plans[i - 1].config.encoder != crate::Activation::Sigmoid {
            return Err(Error::usage(
                "--loss",
                format!(
                    "layer {} would reconstruct the {} codes of layer {i}, which are not in [0, 1] as \
                     cross-entropy needs; use --loss squared-error or --encoder sigmoid",
                    i + 1,
                    plans[i - 1].config.encoder
                ),
            ));
        }
    }
    let mut layers: Vec<Dae> = Vec::new();
    let mut histories = Vec::new();
    let mut best_epochs = Vec::new();
    // The current layer's inputs: the data itself, then the codes of the layer below.
    let mut codes: Option<Dataset> = None;
    let mut val_codes: Option<Dataset> = None;
    let total = plans.len();
    for (i, plan) in plans.iter().enumerate() {
        let input = codes.as_ref().unwrap_or(train.data);
        let mut config = plan.config.clone();
        config.inputs = input.cols;
        config.validate()?;
        let layer_scaler = if i == 0 { scaler.clone() } else { Scaler::identity(input.cols) };
        let tr = Split { data: input, rows: train.rows.clone() };
        // Validation rows held out of the training data share its codes.
        let shared = |v: &Split<'_>| std::ptr::eq(v.data, train.data);
        let va = val.map(|v| Split {
            data: if shared(v) { input } else { val_codes.as_ref().unwrap_or(v.data) },
            rows: v.rows.clone(),
        });
        obs.begin(&format!("layer {}/{total}", i + 1));
        let done = resume.and_then(|r| r.done.get(i));
        let trained = match done {
            // Trained before the interruption: its weights are in the checkpoint.
            Some(d) => {
                if d.model.config != config {
                    return Err(Error::Runtime(format!("the checkpoint's layer {} does not match this command's", i + 1)));
                }
                Trained { model: d.model.clone(), history: d.history.clone(), best_epoch: d.best_epoch, stopped_early: false }
            }
            None => {
                let current = resume.filter(|r| r.done.len() == i).and_then(|r| r.current.as_ref());
                train_dae(
                    be,
                    Dae::init(&config, plan.train.seed.wrapping_add(i as u64)),
                    &layer_scaler,
                    &tr,
                    va.as_ref(),
                    &plan.train,
                    stream::TRAIN_NOISE + i as u32,
                    obs,
                    current,
                )
                .map_err(|e| match e {
                    // Say which layer stopped: "interrupted in layer 2 of 3, epoch 4 …".
                    Error::Interrupted(m) => Error::Interrupted(m.replacen("interrupted in ", &format!("interrupted in layer {} of {total}, ", i + 1), 1)),
                    other => other,
                })?
            }
        };
        obs.layer_done(&DoneLayer { model: trained.model.clone(), history: trained.history.clone(), best_epoch: trained.best_epoch });
        if i + 1 < total {
            let next = encode_all(be, &trained.model, input, &layer_scaler)?;
            let next_val = match val {
                Some(v) if !shared(v) => {
                    let vin = val_codes.as_ref().unwrap_or(v.data);
                    Some(Dataset::from_f32(vin.rows, config.hidden, encode_all(be, &trained.model, vin, &layer_scaler)?))
                }
                _ => None,
            };
            codes = Some(Dataset::from_f32(input.rows, config.hidden, next));
            val_codes = next_val;
        }
        histories.push(trained.history);
        best_epochs.push(trained.best_epoch);
        layers.push(trained.model);
    }
    Ok(Pretrained { stack: Stack { layers }, histories, best_epochs })
}

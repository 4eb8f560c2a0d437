//! A trained autoencoder applied to a dataset on the CPU, a block of rows at a time: each
//! thread takes a block of rows, gathers it (and corrupts it, when asked), computes the code,
//! the reconstruction or the loss while the block is in cache, and writes its rows of the
//! result where they go.
//!
//! These are the operations of the step-by-step path in [`crate::infer`] (gather, corrupt,
//! products, activations, loss) on the same values; what goes is the traffic between them: no
//! full-size intermediate matrix, no separate pass for an activation, B packed once per run
//! rather than once per product, and no thread waiting for another between operations. The
//! products are always those of [`gemm`](super::gemm)'s packed path, so the results are the same
//! to the bit as the step-by-step path's wherever that takes the packed path too (tested
//! there). It does not always: for inputs more than 80 % zeros it takes the sparse path, and
//! for a tied decoder on a chunk of at most 32 rows the dot-product path, which sum in another
//! order, so there the two differ in the last bits. Each row's result here depends on nothing
//! but the row (not on the chunk, the block or the thread).

use super::gemm::{block_product, for_blocks, PackedB, BLOCK_ROWS};
use super::vmath;
use super::Cpu;
use crate::backend::{LossOutput, LossSpec};
use crate::corrupt::corrupt_row;
use crate::dae::Dae;
use crate::data::{Dataset, Scaler};
use crate::infer::EvalNoise;
use crate::network::{Network, Task};
use std::cell::RefCell;

/// What [`Evaluator::run`] writes for each row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The hidden code (k values).
    Codes,
    /// The reconstruction (d values).
    Reconstruction,
    /// The model's loss: one value, or with `per_feature` each input's term (d values).
    Loss { per_feature: bool },
}

impl Output {
    /// Values per row for a model of `cfg`.
    pub fn width(self, cfg: &crate::config::DaeConfig) -> usize {
        match self {
            Output::Codes => cfg.hidden,
            Output::Reconstruction | Output::Loss { per_feature: true } => cfg.inputs,
            Output::Loss { per_feature: false } => 1,
        }
    }
}

/// A model made ready to evaluate: its weights packed for [`block_product`].
pub struct Evaluator<'m> {
    model: &'m Dae,
    output: Output,
    noise: EvalNoise,
    encoder: PackedB,
    decoder: Option<PackedB>,
}

thread_local! {
    /// A thread's buffers for its block of rows.
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl<'m> Evaluator<'m> {
    /// `model` made ready to give `output` for rows corrupted by `noise` (none: the clean rows).
    pub fn new(model: &'m Dae, output: Output, noise: EvalNoise) -> Evaluator<'m> {
        let (d, k) = (model.config.inputs, model.config.hidden);
        let decoder = (output != Output::Codes).then(|| match &model.v {
            Some(v) => PackedB::new(v, k, d, false),
            None => PackedB::new(&model.w, k, d, true),
        });
        Evaluator {
            model,
            output,
            noise,
            encoder: PackedB::new(&model.w, d, k, false),
            decoder,
        }
    }

    /// Values written per row.
    pub fn width(&self) -> usize {
        self.output.width(&self.model.config)
    }

    /// `out` (n × [`Evaluator::width`] values) = the results for rows `start..start + n` of
    /// `ds` (scaled by `scaler`). Each thread keeps its block's buffers (at most 2^24 values)
    /// for the next run.
    pub fn run(&self, cpu: &Cpu, ds: &Dataset, scaler: &Scaler, start: usize, n: usize, out: &mut [f32]) {
        let cfg = &self.model.config;
        let (d, k, width) = (cfg.inputs, cfg.hidden, self.width());
        assert_eq!(ds.cols, d, "Evaluator::run: the data has {} columns, the model {d} inputs", ds.cols);
        assert!(start + n <= ds.rows, "Evaluator::run: rows {start}..{} of {}", start + n, ds.rows);
        let out = &mut out[..n * width];
        let shared = super::Shared::new(out);
        let corrupt = !self.noise.noise.is_none();
        let masked = corrupt && cfg.emphasis.is_some();
        let products = if self.decoder.is_some() { 2 } else { 1 };
        let key = self.noise.key(0);
        // A thread's block (its rows, their packed copy, the code and the decoder's output) in
        // at most 2^24 values (64 MB), for very wide rows.
        let row_values = d * (3 + corrupt as usize + masked as usize) + k;
        let block = BLOCK_ROWS.min((1 << 24) / row_values).max(1);
        for_blocks(&cpu.team, n, block, n * d * k * products, &|rows| {
            let m = rows.len();
            // SAFETY: each block of rows goes to one thread, which writes only its rows.
            let out = unsafe { shared.part(rows.start * width..rows.end * width) };
            BLOCK.with(|b| {
                let mut b = b.borrow_mut();
                // x, then x̃ and its mask where there is noise, then h and the decoder's output
                // where they are not written straight into `out`.
                let own_h = self.output != Output::Codes;
                let own_z = self.output == Output::Loss { per_feature: false };
                let len = m * d * (1 + corrupt as usize + masked as usize) + m * k * own_h as usize + m * d * own_z as usize;
                if b.len() < len {
                    b.resize(len, 0.0);
                }
                let (x, rest) = b.split_at_mut(m * d);
                let (xt, rest) = rest.split_at_mut(if corrupt { m * d } else { 0 });
                let (mask, rest) = rest.split_at_mut(if masked { m * d } else { 0 });
                let (h_own, z_own) = rest.split_at_mut(if own_h { m * k } else { 0 });
                ds.gather_range(start + rows.start, m, scaler, x);
                if corrupt {
                    for i in 0..m {
                        let span = i * d..(i + 1) * d;
                        let mk = masked.then(|| &mut mask[span.clone()]);
                        corrupt_row(self.noise.noise, &key, (start + rows.start + i) as u32, &x[span.clone()], &mut xt[span], mk);
                    }
                }
                let input: &[f32] = if corrupt { xt } else { x };
                let encode = |h: &mut [f32]| {
                    block_product(input, m, &self.encoder, h);
                    for row in h.chunks_exact_mut(k) {
                        vmath::bias_act_row(row, &self.model.b, cfg.encoder);
                    }
                };
                let Some(decoder) = &self.decoder else {
                    // The codes, straight into `out`.
                    return encode(out);
                };
                let h = &mut h_own[..m * k];
                encode(h);
                let spec = |output| LossSpec {
                    loss: cfg.loss,
                    decoder: cfg.decoder,
                    emphasis: cfg.emphasis,
                    grad_scale: 1.0,
                    output,
                };
                let mask_of = |i: usize| masked.then(|| &mask[i * d..(i + 1) * d]);
                match self.output {
                    Output::Codes => unreachable!("codes need no decoder"),
                    Output::Reconstruction => {
                        block_product(h, m, decoder, out);
                        for row in out.chunks_exact_mut(d) {
                            vmath::bias_act_row(row, &self.model.c, cfg.decoder);
                        }
                    }
                    Output::Loss { per_feature: true } => {
                        block_product(h, m, decoder, out);
                        let spec = spec(LossOutput::Elements);
                        for (i, row) in out.chunks_exact_mut(d).enumerate() {
                            vmath::loss_grad_row(row, &self.model.c, &x[i * d..(i + 1) * d], mask_of(i), &spec);
                        }
                    }
                    Output::Loss { per_feature: false } => {
                        let z = &mut z_own[..m * d];
                        block_product(h, m, decoder, z);
                        let spec = spec(LossOutput::Rows);
                        for (i, (row, loss)) in z.chunks_exact_mut(d).zip(out.iter_mut()).enumerate() {
                            *loss = vmath::loss_grad_row(row, &self.model.c, &x[i * d..(i + 1) * d], mask_of(i), &spec);
                        }
                    }
                }
            })
        });
    }
}

/// What [`NetEvaluator::run`] writes for each row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetOutput {
    /// The network's outputs: class probabilities, or predicted values.
    Outputs,
    /// The activations of hidden layer `upto` (1-based) or, with `all_layers`, those of
    /// layers 1..=`upto` side by side (each row: layer 1's, then layer 2's, …).
    Hidden { upto: usize, all_layers: bool },
}

/// A fine-tuning network made ready to apply to a dataset on the CPU a block of rows at a
/// time, as [`Evaluator`] applies an autoencoder: each thread takes its block through every
/// layer while it is in cache (no dropout).
pub struct NetEvaluator<'n> {
    net: &'n Network,
    output: NetOutput,
    layers: Vec<PackedB>,
}

impl<'n> NetEvaluator<'n> {
    /// `net` made ready to give `output`: the weights of the layers it needs, packed.
    pub fn new(net: &'n Network, output: NetOutput) -> NetEvaluator<'n> {
        let cfg = &net.config;
        let needed = match output {
            NetOutput::Outputs => cfg.hidden_layers() + 1,
            NetOutput::Hidden { upto, .. } => upto,
        };
        let layers = (0..needed)
            .map(|l| {
                let (fin, fout) = cfg.layer_shape(l);
                PackedB::new(&net.weights[l], fin, fout, false)
            })
            .collect();
        NetEvaluator { net, output, layers }
    }

    /// Values written per row.
    pub fn width(&self) -> usize {
        match self.output {
            NetOutput::Outputs => self.net.config.task.outputs(),
            NetOutput::Hidden { upto, all_layers: false } => self.net.config.sizes[upto],
            NetOutput::Hidden { upto, all_layers: true } => self.net.config.sizes[1..=upto].iter().sum(),
        }
    }

    /// `out` (n × [`NetEvaluator::width`] values) = the results for rows `start..start + n` of
    /// `ds` (scaled by `scaler`).
    pub fn run(&self, cpu: &Cpu, ds: &Dataset, scaler: &Scaler, start: usize, n: usize, out: &mut [f32]) {
        let cfg = &self.net.config;
        let d = cfg.sizes[0];
        let width = self.width();
        assert_eq!(ds.cols, d, "NetEvaluator::run: the data has {} columns, the network {d} inputs", ds.cols);
        assert!(start + n <= ds.rows, "NetEvaluator::run: rows {start}..{} of {}", start + n, ds.rows);
        let out = &mut out[..n * width];
        let shared = super::Shared::new(out);
        // A thread's block: its rows and two layers' activations, in at most 2^24 values.
        let widest = cfg.sizes.iter().copied().chain([cfg.task.outputs()]).max().unwrap_or(1);
        let block = BLOCK_ROWS.min((1 << 24) / (d + 3 * widest)).max(1);
        let fmas: usize = self.layers.iter().map(|p| p.rows() * p.cols()).sum::<usize>() * n;
        for_blocks(&cpu.team, n, block, fmas, &|rows| {
            let m = rows.len();
            // SAFETY: each block of rows goes to one thread, which writes only its rows.
            let out = unsafe { shared.part(rows.start * width..rows.end * width) };
            BLOCK.with(|b| {
                let mut b = b.borrow_mut();
                let len = m * (d + 2 * widest);
                if b.len() < len {
                    b.resize(len, 0.0);
                }
                let (x, rest) = b.split_at_mut(m * d);
                let (mut prev, mut next) = rest.split_at_mut(m * widest);
                ds.gather_range(start + rows.start, m, scaler, x);
                let mut input: &mut [f32] = x;
                // Every layer's activations go to `out` side by side, from this column.
                let all_layers = matches!(self.output, NetOutput::Hidden { all_layers: true, .. });
                let mut column = 0;
                for (l, packed) in self.layers.iter().enumerate() {
                    let fout = packed.cols();
                    let last = l + 1 == self.layers.len();
                    if last && !all_layers {
                        self.layer(l, input, m, out);
                        break;
                    }
                    self.layer(l, input, m, &mut next[..m * fout]);
                    if all_layers {
                        for (o, h) in out.chunks_exact_mut(width).zip(next.chunks_exact(fout)) {
                            o[column..column + fout].copy_from_slice(h);
                        }
                        column += fout;
                    }
                    if last {
                        break;
                    }
                    std::mem::swap(&mut prev, &mut next);
                    input = &mut prev[..m * fout];
                }
            })
        });
    }

    /// `dst` (m × layer l's width) = layer `l` applied to `input` (m rows): the product, then
    /// the activation, or for the output layer the softmax or the identity, with the bias.
    fn layer(&self, l: usize, input: &[f32], m: usize, dst: &mut [f32]) {
        let cfg = &self.net.config;
        let packed = &self.layers[l];
        let fout = packed.cols();
        let dst = &mut dst[..m * fout];
        block_product(input, m, packed, dst);
        let bias = &self.net.biases[l];
        if l < cfg.hidden_layers() {
            for row in dst.chunks_exact_mut(fout) {
                vmath::bias_act_row(row, bias, cfg.activation);
            }
            return;
        }
        match cfg.task {
            Task::Classification { .. } => {
                for z in dst.chunks_exact_mut(fout) {
                    crate::kernels::softmax_xent_row(z, bias, 0, LossOutput::Elements, 1.0);
                }
            }
            Task::Regression { .. } => {
                for row in dst.chunks_exact_mut(fout) {
                    vmath::bias_act_row(row, bias, crate::config::Activation::Identity);
                }
            }
        }
    }
}

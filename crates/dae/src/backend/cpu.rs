//! The CPU backend: matrix products by the `gemm` crate, elementwise work by the kernels of
//! [`crate::kernels`], all on one rayon thread pool of a fixed size.
//!
//! Work is split over threads by rows (or, for column sums, by columns) in chunks whose bounds
//! depend only on the shapes, and no reduction is split across threads, so results are bit-for-bit
//! the same for a given thread count.

use super::{Backend, LossOutput, LossSpec, OptState, StepSpec, Trans};
use crate::config::{Activation, Corruption};
use crate::corrupt::{corrupt_row, dropout_mask_row, NoiseKey};
use crate::data::{Dataset, Scaler};
use crate::error::{Error, Result};
use crate::kernels;
use rayon::prelude::*;

/// Below this many elements an elementwise operation runs on the calling thread: handing it to
/// the pool costs more than it saves.
const PAR_MIN_ELEMS: usize = 1 << 15;
/// Elements per parallel chunk of an elementwise operation.
const CHUNK_ELEMS: usize = 1 << 14;

/// The CPU backend.
pub struct Cpu {
    threads: usize,
    pool: rayon::ThreadPool,
    /// Products by the plain loops of [`kernels::matmul_ref`] instead of `gemm` (tests).
    reference_matmul: bool,
}

impl Cpu {
    /// A backend on `threads` threads (every core when `None`).
    pub fn new(threads: Option<usize>) -> Result<Cpu> {
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("dae-cpu-{i}"))
            .build()
            .map_err(|e| Error::Runtime(format!("cannot start {threads} threads: {e}")))?;
        Ok(Cpu {
            threads,
            pool,
            reference_matmul: false,
        })
    }

    /// A backend whose matrix products are the plain reference loops: slow, allocation-free,
    /// and the arbiter for the fast path in tests.
    pub fn reference(threads: Option<usize>) -> Result<Cpu> {
        Ok(Cpu {
            reference_matmul: true,
            ..Cpu::new(threads)?
        })
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn par(&self, elems: usize) -> bool {
        self.threads > 1 && elems >= PAR_MIN_ELEMS
    }

    /// Rows per parallel chunk for rows of `cols` values.
    fn rows_per_chunk(cols: usize) -> usize {
        (CHUNK_ELEMS / cols.max(1)).max(1)
    }
}

/// A dataset on the CPU: the host copy itself.
pub struct CpuData<'a> {
    ds: &'a Dataset,
    scaler: &'a Scaler,
}

impl Backend for Cpu {
    type Buf = Vec<f32>;
    type Data<'a> = CpuData<'a>;

    fn describe(&self) -> String {
        format!(
            "cpu ({} thread{})",
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }

    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| {
            Error::Runtime(format!(
                "cannot allocate {} for a buffer of {len} values",
                crate::memory::human_bytes(len as u64 * 4)
            ))
        })?;
        v.resize(len, 0.0);
        Ok(v)
    }

    fn upload(&self, dst: &mut Vec<f32>, src: &[f32]) {
        dst[..src.len()].copy_from_slice(src);
    }

    fn download(&self, src: &Vec<f32>, dst: &mut [f32]) {
        dst.copy_from_slice(&src[..dst.len()]);
    }

    fn data<'a>(&'a self, ds: &'a Dataset, scaler: &'a Scaler) -> Result<CpuData<'a>> {
        Ok(CpuData { ds, scaler })
    }

    fn gather(&self, dst: &mut Vec<f32>, data: &CpuData<'_>, rows: &[u32]) {
        data.ds.gather(rows, data.scaler, dst);
    }

    fn matmul(
        &self,
        c: &mut Vec<f32>,
        a: &Vec<f32>,
        ta: Trans,
        b: &Vec<f32>,
        tb: Trans,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) {
        assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
        if self.reference_matmul {
            return kernels::matmul_ref(c, a, ta, b, tb, m, n, k, accumulate);
        }
        // Strides (row, column) of op(a) (m×k) and op(b) (k×n) in their row-major storage.
        let (a_rs, a_cs) = match ta {
            Trans::N => (k as isize, 1),
            Trans::T => (1, m as isize),
        };
        let (b_rs, b_cs) = match tb {
            Trans::N => (n as isize, 1),
            Trans::T => (1, k as isize),
        };
        let par = if self.threads > 1 {
            gemm::Parallelism::Rayon(self.threads)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: the asserts above keep every access of the (m, n, k) product with these
        // strides inside the three buffers, and `c` does not alias `a` or `b` (&mut vs &).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                accumulate,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }

    fn bias_act(&self, x: &mut Vec<f32>, bias: &Vec<f32>, act: Activation, rows: usize, cols: usize) {
        let x = &mut x[..rows * cols];
        let bias = &bias[..cols];
        let f = |chunk: &mut [f32]| {
            for row in chunk.chunks_exact_mut(cols) {
                kernels::bias_act_row(row, bias, act);
            }
        };
        let chunk = Self::rows_per_chunk(cols) * cols;
        if self.par(x.len()) {
            x.par_chunks_mut(chunk).for_each(f);
        } else {
            x.chunks_mut(chunk).for_each(f);
        }
    }

    fn act_grad(&self, delta: &mut Vec<f32>, y: &Vec<f32>, act: Activation, len: usize) {
        let (delta, y) = (&mut delta[..len], &y[..len]);
        if act == Activation::Identity {
            return;
        }
        if self.par(len) {
            delta
                .par_chunks_mut(CHUNK_ELEMS)
                .zip(y.par_chunks(CHUNK_ELEMS))
                .for_each(|(d, y)| kernels::act_grad(d, y, act));
        } else {
            kernels::act_grad(delta, y, act);
        }
    }

    fn loss_grad(
        &self,
        pre: &mut Vec<f32>,
        c: &Vec<f32>,
        target: &Vec<f32>,
        mask: Option<&Vec<f32>>,
        spec: &LossSpec,
        rows: usize,
        cols: usize,
        row_loss: &mut Vec<f32>,
        offset: usize,
    ) {
        let pre = &mut pre[..rows * cols];
        let target = &target[..rows * cols];
        let c = &c[..cols];
        let row_loss = &mut row_loss[offset..offset + rows];
        let rpc = Self::rows_per_chunk(cols);
        let f = |(i, (p, l)): (usize, (&mut [f32], &mut [f32]))| {
            let r0 = i * rpc;
            for (r, (prow, lr)) in p.chunks_exact_mut(cols).zip(l.iter_mut()).enumerate() {
                let at = (r0 + r) * cols;
                let t = &target[at..at + cols];
                let m = mask.map(|m| &m[at..at + cols]);
                *lr = kernels::loss_grad_row(prow, c, t, m, spec);
            }
        };
        if self.par(pre.len()) {
            pre.par_chunks_mut(rpc * cols)
                .zip(row_loss.par_chunks_mut(rpc))
                .enumerate()
                .for_each(f);
        } else {
            pre.chunks_mut(rpc * cols)
                .zip(row_loss.chunks_mut(rpc))
                .enumerate()
                .for_each(f);
        }
    }

    fn corrupt(
        &self,
        x: &Vec<f32>,
        xt: &mut Vec<f32>,
        mask: Option<&mut Vec<f32>>,
        noise: Corruption,
        key: &NoiseKey,
        rows: usize,
        cols: usize,
    ) {
        let n = rows * cols;
        let (x, xt) = (&x[..n], &mut xt[..n]);
        let rpc = Self::rows_per_chunk(cols);
        let f = |(i, (xt, m)): (usize, (&mut [f32], Option<&mut [f32]>))| {
            let r0 = i * rpc;
            let mut m = m;
            for (r, xtr) in xt.chunks_exact_mut(cols).enumerate() {
                let at = (r0 + r) * cols;
                let mr = m.as_deref_mut().map(|m| &mut m[r * cols..(r + 1) * cols]);
                corrupt_row(noise, key, key.row0 + (r0 + r) as u32, &x[at..at + cols], xtr, mr);
            }
        };
        match mask {
            Some(mask) => {
                let mask = &mut mask[..n];
                if self.par(n) {
                    xt.par_chunks_mut(rpc * cols)
                        .zip(mask.par_chunks_mut(rpc * cols))
                        .enumerate()
                        .for_each(|(i, (a, b))| f((i, (a, Some(b)))));
                } else {
                    xt.chunks_mut(rpc * cols)
                        .zip(mask.chunks_mut(rpc * cols))
                        .enumerate()
                        .for_each(|(i, (a, b))| f((i, (a, Some(b)))));
                }
            }
            None => {
                if self.par(n) {
                    xt.par_chunks_mut(rpc * cols)
                        .enumerate()
                        .for_each(|(i, a)| f((i, (a, None))));
                } else {
                    xt.chunks_mut(rpc * cols)
                        .enumerate()
                        .for_each(|(i, a)| f((i, (a, None))));
                }
            }
        }
    }

    fn softmax_xent(
        &self,
        logits: &mut Vec<f32>,
        bias: &Vec<f32>,
        labels: &Vec<f32>,
        output: LossOutput,
        grad_scale: f32,
        rows: usize,
        classes: usize,
        row_loss: &mut Vec<f32>,
        row_correct: &mut Vec<f32>,
    ) {
        let bias = &bias[..classes];
        for r in 0..rows {
            let z = &mut logits[r * classes..(r + 1) * classes];
            let (loss, correct) = kernels::softmax_xent_row(z, bias, labels[r] as usize, output, grad_scale);
            row_loss[r] = loss;
            row_correct[r] = correct as u8 as f32;
        }
    }

    fn dropout_mask(&self, mask: &mut Vec<f32>, p: f32, key: &NoiseKey, rows: usize, cols: usize) {
        let rpc = Self::rows_per_chunk(cols);
        let f = |(i, chunk): (usize, &mut [f32])| {
            for (r, row) in chunk.chunks_exact_mut(cols).enumerate() {
                dropout_mask_row(p, key, key.row0 + (i * rpc + r) as u32, row);
            }
        };
        let mask = &mut mask[..rows * cols];
        if self.par(mask.len()) {
            mask.par_chunks_mut(rpc * cols).enumerate().for_each(f);
        } else {
            mask.chunks_mut(rpc * cols).enumerate().for_each(f);
        }
    }

    fn mul(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, len: usize) {
        for ((o, &x), &y) in out[..len].iter_mut().zip(&a[..len]).zip(&b[..len]) {
            *o = x * y;
        }
    }

    fn mul_assign(&self, x: &mut Vec<f32>, m: &Vec<f32>, len: usize) {
        for (v, &y) in x[..len].iter_mut().zip(&m[..len]) {
            *v *= y;
        }
    }

    fn col_sums(&self, out: &mut Vec<f32>, x: &Vec<f32>, rows: usize, cols: usize) {
        let out = &mut out[..cols];
        let x = &x[..rows * cols];
        // Each column is summed by one thread, in row order.
        const COLS_PER_TASK: usize = 64;
        let f = |(i, o): (usize, &mut [f32])| kernels::col_sums(o, x, rows, cols, i * COLS_PER_TASK);
        if self.par(rows * cols) {
            out.par_chunks_mut(COLS_PER_TASK).enumerate().for_each(f);
        } else {
            out.chunks_mut(COLS_PER_TASK).enumerate().for_each(f);
        }
    }

    fn update(
        &self,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        state: &mut OptState<Self>,
        step: &StepSpec,
        len: usize,
    ) {
        let p = &mut param[..len];
        let g = &grad[..len];
        let m = state.m.as_mut().map(|m| &mut m[..len]);
        let v = state.v.as_mut().map(|v| &mut v[..len]);
        let hyper = kernels::StepConsts::new(step);
        let f = |(p, g, m, v): (&mut [f32], &[f32], Option<&mut [f32]>, Option<&mut [f32]>)| {
            kernels::update(p, g, m, v, &hyper)
        };
        if !self.par(len) {
            return f((p, g, m, v));
        }
        let c = CHUNK_ELEMS;
        match (m, v) {
            (None, _) => p
                .par_chunks_mut(c)
                .zip(g.par_chunks(c))
                .for_each(|(p, g)| f((p, g, None, None))),
            (Some(m), None) => p
                .par_chunks_mut(c)
                .zip(g.par_chunks(c))
                .zip(m.par_chunks_mut(c))
                .for_each(|((p, g), m)| f((p, g, Some(m), None))),
            (Some(m), Some(v)) => p
                .par_chunks_mut(c)
                .zip(g.par_chunks(c))
                .zip(m.par_chunks_mut(c))
                .zip(v.par_chunks_mut(c))
                .for_each(|(((p, g), m), v)| f((p, g, Some(m), Some(v)))),
        }
    }
}

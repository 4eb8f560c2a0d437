//! The CPU backend: matrix products by the packed, blocked kernels of [`gemm`], elementwise work
//! by the row kernels of [`crate::kernels`], all on one [`team::Team`] of threads.
//!
//! Every operation splits its rows (or, for column sums, its columns) between the team's threads
//! by the thread's index, and no sum is split across threads, so the results depend only on the
//! shapes and the thread count, never on timing.

pub mod eval;
pub mod gemm;
pub mod team;
pub mod vmath;

pub use gemm::has_avx2_fma;

use super::{Backend, LossOutput, LossSpec, OptState, Product, StepSpec, Trans};
use crate::augment::Augment;
use crate::config::{Activation, Corruption};
use crate::corrupt::{corrupt_row, dropout_mask_row, NoiseKey};
use crate::data::{Dataset, Scaler};
use crate::error::{Error, Result};
use crate::kernels;
use std::ops::Range;
use team::{share, Team};

/// Below this many values an elementwise operation runs on the calling thread alone.
const PAR_MIN_ELEMS: usize = 1 << 13;

/// The CPU backend.
pub struct Cpu {
    team: Team,
    /// Products by the plain loops of [`kernels::matmul_ref`] instead of the fast kernels
    /// (tests).
    reference_matmul: bool,
    /// [`Backend::steps_per_launch`] (tests: the training loop's grouping of steps, as a GPU
    /// uses it, on the CPU).
    steps_per_launch: usize,
    /// Models are applied to datasets by [`eval`], a block of rows at a time (false: operation
    /// by operation, as other devices do; tests compare the two).
    one_pass_eval: bool,
}

/// A mutable buffer shared by the team's threads, each of which touches a disjoint part.
#[derive(Clone, Copy)]
struct Shared(*mut f32, usize);
// SAFETY: users only form disjoint sub-slices on different threads (see `Shared::part`).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn new(v: &mut [f32]) -> Shared {
        Shared(v.as_mut_ptr(), v.len())
    }

    /// Values `range` of the buffer.
    ///
    /// # Safety
    /// No two threads may hold overlapping parts at the same time.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, range: Range<usize>) -> &mut [f32] {
        assert!(range.start <= range.end && range.end <= self.1);
        std::slice::from_raw_parts_mut(self.0.add(range.start), range.end - range.start)
    }
}

impl Cpu {
    /// A backend on `threads` threads (every core when `None`).
    pub fn new(threads: Option<usize>) -> Result<Cpu> {
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let team = Team::new(threads)
            .map_err(|e| Error::Runtime(format!("cannot start {threads} threads: {e}")))?;
        Ok(Cpu {
            team,
            reference_matmul: false,
            steps_per_launch: 1,
            one_pass_eval: true,
        })
    }

    /// The same backend with the training loop handing it `k` steps at a time (see
    /// [`Backend::steps_per_launch`]): the results are the same as one at a time, which tests
    /// check on the CPU.
    pub fn with_steps_per_launch(self, k: usize) -> Cpu {
        Cpu { steps_per_launch: k.max(1), ..self }
    }

    /// The same backend applying models to datasets operation by operation (gather, product,
    /// activation, loss, each over a whole chunk), as other devices do, instead of by [`eval`]
    /// (tests: the two give the same values).
    pub fn operation_by_operation(self) -> Cpu {
        Cpu { one_pass_eval: false, ..self }
    }

    /// A backend whose matrix products are the plain reference loops: slow, and the arbiter
    /// for the fast path in tests.
    pub fn reference(threads: Option<usize>) -> Result<Cpu> {
        Ok(Cpu {
            reference_matmul: true,
            ..Cpu::new(threads)?
        })
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.team.size()
    }

    /// Runs `f(rows)` over `0..rows` split between the threads, or on this thread alone when
    /// the work (`rows` × `cols` values) is small.
    fn for_rows(&self, rows: usize, cols: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        let parts = self.team.size();
        if parts == 1 || rows * cols < PAR_MIN_ELEMS || rows < 2 {
            return f(0..rows);
        }
        self.team.run(&|t| {
            let r = share(rows, 1, t, parts);
            if !r.is_empty() {
                f(r);
            }
        });
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
        let t = self.threads();
        let simd = if has_avx2_fma() { "AVX2/FMA" } else { "portable" };
        format!("cpu ({t} thread{}, {simd} kernels)", if t == 1 { "" } else { "s" })
    }

    fn steps_per_launch(&self) -> usize {
        self.steps_per_launch
    }

    fn as_cpu(&self) -> Option<&Cpu> {
        (self.one_pass_eval && !self.reference_matmul).then_some(self)
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

    fn buf_len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn upload(&self, dst: &mut Vec<f32>, src: &[f32]) {
        dst[..src.len()].copy_from_slice(src);
    }

    fn download_at(&self, src: &Vec<f32>, offset: usize, dst: &mut [f32]) {
        dst.copy_from_slice(&src[offset..offset + dst.len()]);
    }

    fn copy_at(&self, dst: &mut Vec<f32>, offset: usize, src: &Vec<f32>, len: usize) {
        dst[offset..offset + len].copy_from_slice(&src[..len]);
    }

    fn data<'a>(&'a self, ds: &'a Dataset, scaler: &'a Scaler) -> Result<CpuData<'a>> {
        Ok(CpuData { ds, scaler })
    }

    fn gather(&self, dst: &mut Vec<f32>, data: &CpuData<'_>, rows: &[u32]) {
        let d = data.ds.cols;
        let out = Shared::new(&mut dst[..rows.len() * d]);
        self.for_rows(rows.len(), d, &|r| {
            // SAFETY: each thread writes only its own rows.
            let o = unsafe { out.part(r.start * d..r.end * d) };
            data.ds.gather(&rows[r], data.scaler, o);
        });
    }

    fn gather_augmented(&self, dst: &mut Vec<f32>, data: &CpuData<'_>, rows: &[u32], aug: &Augment, key: &NoiseKey) {
        let d = data.ds.cols;
        let out = Shared::new(&mut dst[..rows.len() * d]);
        self.for_rows(rows.len(), d, &|r| {
            // SAFETY: each thread writes only its own rows.
            let o = unsafe { out.part(r.start * d..r.end * d) };
            data.ds.gather_augmented(&rows[r.clone()], data.scaler, o, aug, key, r.start as u32);
        });
    }

    fn gemm(&self, c: &mut Vec<f32>, m: usize, n: usize, terms: &[Product<'_, Self>], alpha: f32, beta: f32) {
        if self.reference_matmul {
            // The reference: each product by the plain loops, then combined.
            let mut sum = vec![0f32; m * n];
            for t in terms {
                kernels::matmul_ref(&mut sum, t.a, t.ta, t.b, t.tb, m, n, t.k, true);
            }
            for (o, s) in c[..m * n].iter_mut().zip(&sum) {
                *o = if beta == 0.0 { alpha * s } else { beta * *o + alpha * s };
            }
            return;
        }
        // A fixed array keeps the call allocation-free; this crate sums at most two products.
        const NONE: gemm::Operand<'static> = gemm::Operand { data: &[], offset: 0, rs: 0, cs: 0 };
        let mut list = [gemm::Term { a: NONE, b: NONE, k: 0 }; 4];
        assert!(terms.len() <= list.len(), "at most {} products in one sum", list.len());
        for (dst, t) in list.iter_mut().zip(terms) {
            let a = match t.ta {
                Trans::N => gemm::Operand::new(t.a, m, t.k, false),
                Trans::T => gemm::Operand::new(t.a, t.k, m, true),
            };
            let b = match t.tb {
                Trans::N => gemm::Operand::new(t.b, t.k, n, false),
                Trans::T => gemm::Operand::new(t.b, n, t.k, true),
            };
            *dst = gemm::Term { a, b, k: t.k };
        }
        gemm::gemm(&self.team, m, n, &list[..terms.len()], alpha, beta, c);
    }

    fn bias_act(&self, x: &mut Vec<f32>, bias: &Vec<f32>, act: Activation, rows: usize, cols: usize) {
        let xs = Shared::new(&mut x[..rows * cols]);
        let bias = &bias[..cols];
        self.for_rows(rows, cols, &|r| {
            // SAFETY: each thread writes only its own rows.
            let part = unsafe { xs.part(r.start * cols..r.end * cols) };
            for row in part.chunks_exact_mut(cols) {
                vmath::bias_act_row(row, bias, act);
            }
        });
    }

    fn act_grad(&self, delta: &mut Vec<f32>, y: &Vec<f32>, act: Activation, len: usize) {
        if act == Activation::Identity {
            return;
        }
        let ds = Shared::new(&mut delta[..len]);
        let y = &y[..len];
        // Split as 1-value "rows".
        self.for_rows(len, 1, &|r| {
            // SAFETY: each thread writes only its own range.
            let d = unsafe { ds.part(r.clone()) };
            kernels::act_grad(d, &y[r], act);
        });
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
        let pre = Shared::new(&mut pre[..rows * cols]);
        let losses = Shared::new(&mut row_loss[offset..offset + rows]);
        let (target, c) = (&target[..rows * cols], &c[..cols]);
        self.for_rows(rows, cols, &|r| {
            // SAFETY: each thread writes only its own rows and their losses.
            let (p, l) = unsafe { (pre.part(r.start * cols..r.end * cols), losses.part(r.clone())) };
            for (i, (prow, lr)) in p.chunks_exact_mut(cols).zip(l.iter_mut()).enumerate() {
                let at = (r.start + i) * cols;
                let m = mask.map(|m| &m[at..at + cols]);
                *lr = vmath::loss_grad_row(prow, c, &target[at..at + cols], m, spec);
            }
        });
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
        let x = &x[..n];
        let out = Shared::new(&mut xt[..n]);
        let mask = mask.map(|m| Shared::new(&mut m[..n]));
        self.for_rows(rows, cols, &|r| {
            for row in r {
                let span = row * cols..(row + 1) * cols;
                // SAFETY: each thread writes only its own rows.
                let (o, m) = unsafe { (out.part(span.clone()), mask.as_ref().map(|m| m.part(span.clone()))) };
                corrupt_row(noise, key, key.row0 + row as u32, &x[span], o, m);
            }
        });
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
        let ms = Shared::new(&mut mask[..rows * cols]);
        self.for_rows(rows, cols, &|r| {
            for row in r {
                // SAFETY: each thread writes only its own rows.
                let m = unsafe { ms.part(row * cols..(row + 1) * cols) };
                dropout_mask_row(p, key, key.row0 + row as u32, m);
            }
        });
    }

    fn mul(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, len: usize) {
        let os = Shared::new(&mut out[..len]);
        self.for_rows(len, 1, &|r| {
            // SAFETY: each thread writes only its own range.
            let o = unsafe { os.part(r.clone()) };
            for ((o, &x), &y) in o.iter_mut().zip(&a[r.clone()]).zip(&b[r]) {
                *o = x * y;
            }
        });
    }

    fn mul_assign(&self, x: &mut Vec<f32>, m: &Vec<f32>, len: usize) {
        let xs = Shared::new(&mut x[..len]);
        self.for_rows(len, 1, &|r| {
            // SAFETY: each thread writes only its own range.
            let v = unsafe { xs.part(r.clone()) };
            for (v, &y) in v.iter_mut().zip(&m[r]) {
                *v *= y;
            }
        });
    }

    fn sum_squares(&self, x: &Vec<f32>, len: usize) -> f64 {
        // Blocks of 4096 summed in f64, in order: the same whatever the thread count.
        x[..len].chunks(4096).map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()).sum()
    }

    fn scale(&self, x: &mut Vec<f32>, factor: f32, len: usize) {
        let xs = Shared::new(&mut x[..len]);
        self.for_rows(len, 1, &|r| {
            // SAFETY: each thread writes only its own range.
            for v in unsafe { xs.part(r) } {
                *v *= factor;
            }
        });
    }

    fn col_sums_scaled(&self, out: &mut Vec<f32>, x: &Vec<f32>, rows: usize, cols: usize, alpha: f32, beta: f32) {
        // Each column is summed by one thread, in row order: threads split the columns.
        const W: usize = 64;
        let os = Shared::new(&mut out[..cols]);
        let x = &x[..rows * cols];
        let blocks = cols.div_ceil(W);
        self.for_rows(blocks, rows * W, &|r| {
            for b in r {
                let span = b * W..((b + 1) * W).min(cols);
                // SAFETY: each thread writes only its own columns.
                let o = unsafe { os.part(span.clone()) };
                kernels::col_sums(o, x, rows, cols, span.start, alpha, beta);
            }
        });
    }

    fn update(
        &self,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        state: &mut OptState<Self>,
        step: &StepSpec,
        len: usize,
    ) {
        let p = Shared::new(&mut param[..len]);
        let g = &grad[..len];
        let m = state.m.as_mut().map(|m| Shared::new(&mut m[..len]));
        let v = state.v.as_mut().map(|v| Shared::new(&mut v[..len]));
        let consts = kernels::StepConsts::new(step);
        self.for_rows(len, 1, &|r| {
            // SAFETY: each thread updates only its own range of every buffer.
            unsafe {
                kernels::update(
                    p.part(r.clone()),
                    &g[r.clone()],
                    m.as_ref().map(|m| m.part(r.clone())),
                    v.as_ref().map(|v| v.part(r.clone())),
                    &consts,
                );
            }
        });
    }
}

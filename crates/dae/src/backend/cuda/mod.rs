//! The CUDA backend: the same operations as the CPU's, on an NVIDIA GPU.
//!
//! The driver, cuBLAS and NVRTC are loaded at run time (through `cudarc`), so the crate builds
//! and runs on machines without CUDA; [`Cuda::new`] says why when no GPU is usable. Matrix
//! products go to cuBLAS; every other operation is a kernel of `kernels.cu`, compiled by NVRTC
//! when the backend starts, each the counterpart of a plain loop in [`crate::kernels`] or
//! [`crate::corrupt`]. Everything runs in order on one stream and stays on the device: the
//! host waits only when it reads a result back. Noise is drawn on the device from the same
//! Philox counters as on the CPU, so a seed gives the same masks on both.

use super::{Backend, LossOutput, LossSpec, OptState, Precision, Product, StepSpec, Trans};
use crate::config::{Activation, Corruption, Loss, Optimizer};
use crate::corrupt::NoiseKey;
use crate::data::{Dataset, Scaler, Values};
use crate::error::{Error, Result};
use crate::kernels::StepConsts;
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use std::sync::{Arc, Mutex};

/// The kernels' source.
pub const KERNELS: &str = include_str!("kernels.cu");

/// Every kernel of [`KERNELS`].
pub const KERNEL_NAMES: [&str; 14] = [
    "bias_act", "act_grad", "gather_u8", "gather_f32", "loss_grad", "softmax_xent", "col_sums", "mul",
    "mul_assign", "scale", "sum_squares", "update", "corrupt", "copy_f32",
];

/// A buffer of f32 on the GPU.
pub struct CudaBuf {
    ptr: u64,
    len: usize,
    _mem: CudaSlice<f32>,
}

/// Bytes on the GPU that are not f32 (the dataset's u8 pixels, row indices, a scalar).
struct Raw {
    ptr: u64,
    _mem: CudaSlice<u8>,
}

struct Kernels {
    f: Vec<CudaFunction>,
}

/// The index of kernel `name` in [`KERNEL_NAMES`].
const fn k(name: &str) -> usize {
    let mut i = 0;
    while i < KERNEL_NAMES.len() {
        if const_eq(KERNEL_NAMES[i], name) {
            return i;
        }
        i += 1;
    }
    panic!("no such kernel");
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A kernel argument as the 8-byte slot the driver reads it from: pointers and 64-bit values
/// fill it, 32-bit values sit in its low half (x86-64 and aarch64 are little-endian).
trait Slot {
    fn slot(self) -> u64;
}
impl Slot for u64 {
    fn slot(self) -> u64 {
        self
    }
}
impl Slot for usize {
    fn slot(self) -> u64 {
        self as u64
    }
}
impl Slot for u32 {
    fn slot(self) -> u64 {
        self as u64
    }
}
impl Slot for i32 {
    fn slot(self) -> u64 {
        self as u32 as u64
    }
}
impl Slot for f32 {
    fn slot(self) -> u64 {
        self.to_bits() as u64
    }
}
impl Slot for &CudaBuf {
    fn slot(self) -> u64 {
        self.ptr
    }
}
impl Slot for &mut CudaBuf {
    fn slot(self) -> u64 {
        self.ptr
    }
}
impl Slot for Option<&CudaBuf> {
    fn slot(self) -> u64 {
        self.map_or(0, |b| b.ptr)
    }
}

/// Launches kernel `$name` over `$threads` threads (blocks of 256) with the arguments given.
macro_rules! launch {
    ($be:expr, $name:literal, $threads:expr; $($arg:expr),* $(,)?) => {{
        let slots: &[u64] = &[$(Slot::slot($arg)),*];
        let threads = ($threads) as u64;
        if threads > 0 {
            let cfg = LaunchConfig { grid_dim: (threads.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            $be.launch_with(const { k($name) }, cfg, slots);
        }
    }};
}

/// The CUDA backend on one GPU.
pub struct Cuda {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    precision: Precision,
    name: String,
    /// Row indices for [`Backend::gather`], grown as needed.
    idx: Mutex<Option<(Raw, usize)>>,
    /// One f64 for [`Backend::sum_squares`].
    scalar: Raw,
    /// The first error of an operation since the last [`Backend::check`].
    error: Mutex<Option<String>>,
}

/// Why no GPU can be used here, or None when one can.
pub fn unavailable() -> Option<String> {
    // SAFETY: these only try to open the libraries.
    let missing: Vec<&str> = [
        ("the CUDA driver (libcuda)", unsafe { drv_sys::is_culib_present() }),
        ("cuBLAS (libcublas)", unsafe { blas_sys::is_culib_present() }),
        ("NVRTC (libnvrtc)", unsafe { cudarc::nvrtc::sys::is_culib_present() }),
    ]
    .into_iter()
    .filter(|(_, present)| !present)
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        return Some(format!("{} not found", missing.join(", ")));
    }
    match CudaContext::device_count() {
        Ok(0) => Some("the CUDA driver sees no GPU".into()),
        Ok(_) => None,
        Err(e) => Some(format!("the CUDA driver reports {e}")),
    }
}

/// Whether NVRTC can be loaded (it compiles the kernels; no GPU is needed for that).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles [`KERNELS`] to PTX for `arch` ("compute_90"), or for NVRTC's default target.
pub fn compile_kernels(arch: Option<&str>) -> Result<String> {
    compile(arch).map(|p| p.to_src())
}

fn compile(arch: Option<&str>) -> Result<cudarc::nvrtc::Ptx> {
    let mut opts = cudarc::nvrtc::CompileOptions { name: Some("kernels.cu".into()), ..Default::default() };
    if let Some(a) = arch {
        opts.options.push(format!("--gpu-architecture={a}"));
    }
    cudarc::nvrtc::compile_ptx_with_opts(KERNELS, opts).map_err(|e| Error::Runtime(format!("compiling the CUDA kernels failed: {e:?}")))
}

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Runtime(format!("CUDA: {what} failed: {e:?}"))
}

impl Cuda {
    /// The backend on GPU `ordinal`.
    pub fn new(ordinal: usize, precision: Precision) -> Result<Cuda> {
        if let Some(why) = unavailable() {
            return Err(Error::Runtime(format!("no usable GPU: {why}")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err(&format!("opening GPU {ordinal}"), e))?;
        // One stream orders everything: cudarc's per-buffer events are not needed.
        // SAFETY: no buffer is used on any other stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| cuda_err("creating a stream", e))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| cuda_err("starting cuBLAS", e))?;
        if precision == Precision::Bf16 {
            return Err(Error::usage("--precision", "bf16 is not implemented on the GPU yet: use fp32 or tf32"));
        }
        if precision == Precision::Tf32 {
            // SAFETY: the handle is live.
            unsafe { blas_sys::cublasSetMathMode(*blas.handle(), blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH) }
                .result()
                .map_err(|e| cuda_err("setting TF32", e))?;
        }
        let (major, minor) = ctx.compute_capability().map_err(|e| cuda_err("reading the compute capability", e))?;
        let ptx = compile(Some(&format!("compute_{major}{minor}")))?;
        let module = ctx.load_module(ptx).map_err(|e| cuda_err("loading the kernels", e))?;
        let f = KERNEL_NAMES
            .iter()
            .map(|n| module.load_function(n).map_err(|e| cuda_err(&format!("loading kernel {n}"), e)))
            .collect::<Result<Vec<_>>>()?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let scalar = raw(&stream, 8)?;
        Ok(Cuda {
            stream,
            blas,
            kernels: Kernels { f },
            precision,
            name: format!("cuda:{ordinal} ({name})"),
            idx: Mutex::new(None),
            scalar,
            error: Mutex::new(None),
        })
    }

    /// The GPU's name, as "cuda:0 (NVIDIA H200)".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until every queued operation has finished (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| cuda_err("synchronising", e))?;
        self.check()
    }

    fn record<T, E: std::fmt::Debug>(&self, what: &str, r: std::result::Result<T, E>) {
        if let Err(e) = r {
            let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(format!("CUDA: {what} failed: {e:?}"));
            }
        }
    }

    fn launch_with(&self, kernel: usize, cfg: LaunchConfig, slots: &[u64]) {
        let mut b = self.stream.launch_builder(&self.kernels.f[kernel]);
        for s in slots {
            b.arg(s);
        }
        // SAFETY: each kernel's parameters are the slots given at its call sites below, in
        // order, and every pointer is a live buffer of the length the kernel indexes.
        let r = unsafe { b.launch(cfg) };
        self.record(KERNEL_NAMES[kernel], r);
    }

    /// Launches a one-block-per-row kernel (256 threads each).
    fn launch_rows(&self, kernel: usize, rows: usize, slots: &[u64]) {
        if rows > 0 {
            let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            self.launch_with(kernel, cfg, slots);
        }
    }

    fn alloc_f32(&self, len: usize) -> Result<CudaBuf> {
        let mem = self.stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| oom(len * 4, e))?;
        let (ptr, _) = mem.device_ptr(&self.stream);
        Ok(CudaBuf { ptr, len, _mem: mem })
    }

    fn htod<T>(&self, dst: u64, src: &[T]) {
        if !src.is_empty() {
            // SAFETY: callers pass a destination of at least `src.len()` values.
            let r = unsafe { drv::memcpy_htod_async(dst, src, self.stream.cu_stream()) };
            self.record("copying to the GPU", r);
        }
    }
}

fn oom(bytes: usize, e: impl std::fmt::Debug) -> Error {
    Error::Runtime(format!("cannot allocate {} on the GPU: {e:?}", crate::memory::human_bytes(bytes as u64)))
}

fn raw(stream: &Arc<CudaStream>, bytes: usize) -> Result<Raw> {
    let mem = stream.alloc_zeros::<u8>(bytes.max(1)).map_err(|e| oom(bytes, e))?;
    let (ptr, _) = mem.device_ptr(stream);
    Ok(Raw { ptr, _mem: mem })
}

/// A dataset on the GPU: its values as stored (u8 pixels stay u8) and the scaling.
pub struct CudaData {
    values: Raw,
    u8: bool,
    cols: usize,
    scale: Option<(CudaBuf, CudaBuf)>,
}

fn act_code(a: Activation) -> i32 {
    match a {
        Activation::Sigmoid => 0,
        Activation::Tanh => 1,
        Activation::Relu => 2,
        Activation::Identity => 3,
    }
}

fn output_code(o: LossOutput) -> i32 {
    match o {
        LossOutput::Rows => 0,
        LossOutput::Grad => 1,
        LossOutput::Elements => 2,
    }
}

fn op(t: Trans) -> blas_sys::cublasOperation_t {
    match t {
        Trans::N => blas_sys::cublasOperation_t::CUBLAS_OP_N,
        Trans::T => blas_sys::cublasOperation_t::CUBLAS_OP_T,
    }
}

impl Backend for Cuda {
    type Buf = CudaBuf;
    type Data<'a> = CudaData;

    fn describe(&self) -> String {
        match self.precision {
            Precision::Fp32 => format!("{}, fp32", self.name),
            Precision::Tf32 => format!("{}, TF32 products", self.name),
            Precision::Bf16 => format!("{}, bf16", self.name),
        }
    }

    fn alloc(&self, len: usize) -> Result<CudaBuf> {
        self.alloc_f32(len)
    }

    fn buf_len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }

    fn upload(&self, dst: &mut CudaBuf, src: &[f32]) {
        assert!(src.len() <= dst.len, "upload past the end of a buffer");
        self.htod(dst.ptr, src);
    }

    fn download_at(&self, src: &CudaBuf, offset: usize, dst: &mut [f32]) {
        assert!(offset + dst.len() <= src.len, "download past the end of a buffer");
        if dst.is_empty() {
            return;
        }
        // SAFETY: the source range lies inside `src` (checked above).
        let r = unsafe { drv::memcpy_dtoh_async(dst, src.ptr + 4 * offset as u64, self.stream.cu_stream()) };
        self.record("copying from the GPU", r);
        let r = self.stream.synchronize();
        self.record("waiting for the GPU", r);
    }

    fn copy_at(&self, dst: &mut CudaBuf, offset: usize, src: &CudaBuf, len: usize) {
        assert!(offset + len <= dst.len && len <= src.len, "copy past the end of a buffer");
        launch!(self, "copy_f32", len; dst.ptr + 4 * offset as u64, src, len);
    }

    fn queued(&self) -> bool {
        true
    }

    fn check(&self) -> Result<()> {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(e) => Err(Error::Runtime(e)),
            None => Ok(()),
        }
    }

    fn chunk_rows(&self) -> usize {
        16384
    }

    fn data<'a>(&'a self, ds: &'a Dataset, scaler: &'a Scaler) -> Result<CudaData> {
        let (values, u8) = match &ds.values {
            Values::U8(v) => {
                let r = raw(&self.stream, v.len())?;
                self.htod(r.ptr, v);
                (r, true)
            }
            Values::F32(v) => {
                let r = raw(&self.stream, v.len() * 4)?;
                self.htod(r.ptr, v);
                (r, false)
            }
        };
        let scale = if scaler.offset.is_empty() {
            None
        } else {
            let mut o = self.alloc_f32(ds.cols)?;
            let mut f = self.alloc_f32(ds.cols)?;
            self.upload(&mut o, &scaler.offset);
            self.upload(&mut f, &scaler.factor);
            Some((o, f))
        };
        self.check()?;
        Ok(CudaData { values, u8, cols: ds.cols, scale })
    }

    fn gather(&self, dst: &mut CudaBuf, data: &CudaData, rows: &[u32]) {
        let d = data.cols;
        assert!(rows.len() * d <= dst.len, "gather past the end of a buffer");
        let mut idx = self.idx.lock().unwrap_or_else(|p| p.into_inner());
        if idx.as_ref().is_none_or(|(_, cap)| *cap < rows.len()) {
            match raw(&self.stream, rows.len().max(1024) * 4) {
                Ok(r) => *idx = Some((r, rows.len().max(1024))),
                Err(e) => return self.record("allocating row indices", Err::<(), _>(e)),
            }
        }
        let ip = idx.as_ref().expect("allocated above").0.ptr;
        // The copy is queued before the kernel on the same stream; from pageable memory it
        // has taken `rows` before it returns.
        self.htod(ip, rows);
        let (o, f) = match &data.scale {
            Some((o, f)) => (Some(o), Some(f)),
            None => (None, None),
        };
        let n = (rows.len(), d as u32);
        if data.u8 {
            launch!(self, "gather_u8", n.0 * d; &*dst, data.values.ptr, ip, n.0 as u32, n.1, o, f);
        } else {
            launch!(self, "gather_f32", n.0 * d; &*dst, data.values.ptr, ip, n.0 as u32, n.1, o, f);
        }
    }

    fn gemm(&self, c: &mut CudaBuf, m: usize, n: usize, terms: &[Product<'_, Self>], alpha: f32, beta: f32) {
        // Row-major C (m×n) is column-major Cᵀ: Cᵀ = op(B)ᵀ·op(A)ᵀ, so cuBLAS gets B first.
        for (i, t) in terms.iter().enumerate() {
            let beta = if i == 0 { beta } else { 1.0 };
            let lda_b = if t.tb == Trans::N { n } else { t.k };
            let lda_a = if t.ta == Trans::N { t.k } else { m };
            if m == 0 || n == 0 {
                return;
            }
            if t.k == 0 {
                // No terms to sum: C = βC.
                if beta != 1.0 {
                    launch!(self, "scale", m * n; &*c, beta, (m * n) as u64);
                }
                continue;
            }
            // SAFETY: the shapes fit the buffers (the model sizes them), and the handle is
            // bound to this backend's stream.
            let r = unsafe {
                blas::sgemm(
                    *self.blas.handle(),
                    op(t.tb),
                    op(t.ta),
                    n as i32,
                    m as i32,
                    t.k as i32,
                    &alpha,
                    t.b.ptr as *const f32,
                    lda_b as i32,
                    t.a.ptr as *const f32,
                    lda_a as i32,
                    &beta,
                    c.ptr as *mut f32,
                    n as i32,
                )
            };
            self.record("a cuBLAS matrix product", r);
        }
    }

    fn bias_act(&self, x: &mut CudaBuf, bias: &CudaBuf, act: Activation, rows: usize, cols: usize) {
        launch!(self, "bias_act", rows * cols; &*x, bias, act_code(act), rows as u32, cols as u32);
    }

    fn act_grad(&self, delta: &mut CudaBuf, y: &CudaBuf, act: Activation, len: usize) {
        if act != Activation::Identity {
            launch!(self, "act_grad", len; &*delta, y, act_code(act), len as u64);
        }
    }

    fn loss_grad(
        &self,
        pre: &mut CudaBuf,
        c: &CudaBuf,
        target: &CudaBuf,
        mask: Option<&CudaBuf>,
        spec: &LossSpec,
        rows: usize,
        cols: usize,
        row_loss: &mut CudaBuf,
        offset: usize,
    ) {
        assert!(offset + rows <= row_loss.len);
        let (emph, wc, wl) = match spec.emphasis {
            Some(e) => (1, e.corrupted, e.clean),
            None => (0, 1.0, 1.0),
        };
        let loss = match spec.loss {
            Loss::CrossEntropy => 0,
            Loss::SquaredError => 1,
        };
        let slots = [
            pre.ptr,
            c.ptr,
            target.ptr,
            mask.slot(),
            loss.slot(),
            act_code(spec.decoder).slot(),
            (emph as i32).slot(),
            wc.slot(),
            wl.slot(),
            spec.grad_scale.slot(),
            output_code(spec.output).slot(),
            (cols as u32).slot(),
            row_loss.ptr + 4 * offset as u64,
        ];
        self.launch_rows(const { k("loss_grad") }, rows, &slots);
    }

    fn corrupt(
        &self,
        x: &CudaBuf,
        xt: &mut CudaBuf,
        mask: Option<&mut CudaBuf>,
        noise: Corruption,
        key: &NoiseKey,
        rows: usize,
        cols: usize,
    ) {
        let (kind, level, per) = match noise {
            Corruption::None => (0, 0.0, 32),
            Corruption::Masking { level } => (1, level, 32),
            Corruption::Gaussian { sigma } => (2, sigma, 32),
            Corruption::SaltAndPepper { level } => (3, level, 16),
        };
        let threads = rows * cols.div_ceil(per) * 8;
        let m = mask.map(|m| &*m);
        launch!(self, "corrupt", threads; x, &*xt, m, kind, level, 0f32, key.seed as u32, (key.seed >> 32) as u32,
            key.stream, key.epoch, key.row0, rows as u32, cols as u32);
    }

    fn softmax_xent(
        &self,
        logits: &mut CudaBuf,
        bias: &CudaBuf,
        labels: &CudaBuf,
        output: LossOutput,
        grad_scale: f32,
        rows: usize,
        classes: usize,
        row_loss: &mut CudaBuf,
        row_correct: &mut CudaBuf,
    ) {
        launch!(self, "softmax_xent", rows; &*logits, bias, labels, output_code(output), grad_scale, rows as u32,
            classes as u32, &*row_loss, &*row_correct);
    }

    fn dropout_mask(&self, mask: &mut CudaBuf, p: f32, key: &NoiseKey, rows: usize, cols: usize) {
        let threads = rows * cols.div_ceil(32) * 8;
        launch!(self, "corrupt", threads; 0u64, &*mask, 0u64, 1i32, p, 1.0 / (1.0 - p), key.seed as u32,
            (key.seed >> 32) as u32, key.stream, key.epoch, key.row0, rows as u32, cols as u32);
    }

    fn mul(&self, out: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, len: usize) {
        launch!(self, "mul", len; &*out, a, b, len as u64);
    }

    fn mul_assign(&self, x: &mut CudaBuf, m: &CudaBuf, len: usize) {
        launch!(self, "mul_assign", len; &*x, m, len as u64);
    }

    fn col_sums_scaled(&self, out: &mut CudaBuf, x: &CudaBuf, rows: usize, cols: usize, alpha: f32, beta: f32) {
        launch!(self, "col_sums", cols; &*out, x, rows as u32, cols as u32, alpha, beta);
    }

    fn sum_squares(&self, x: &CudaBuf, len: usize) -> f64 {
        let slots = [x.ptr, len as u64, self.scalar.ptr];
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        self.launch_with(const { k("sum_squares") }, cfg, &slots);
        let mut out = [0f64];
        // SAFETY: the scalar holds one f64.
        let r = unsafe { drv::memcpy_dtoh_async(&mut out[..], self.scalar.ptr, self.stream.cu_stream()) };
        self.record("copying from the GPU", r);
        let r = self.stream.synchronize();
        self.record("waiting for the GPU", r);
        out[0]
    }

    fn scale(&self, x: &mut CudaBuf, factor: f32, len: usize) {
        launch!(self, "scale", len; &*x, factor, len as u64);
    }

    fn update(&self, param: &mut CudaBuf, grad: &CudaBuf, state: &mut OptState<Self>, step: &StepSpec, len: usize) {
        let k = StepConsts::new(step);
        let (kind, momentum, nesterov, wd, b1, b2, eps) = match step.optimizer {
            Optimizer::Sgd { momentum, nesterov, weight_decay } => (0, momentum, nesterov as i32, weight_decay, 0.0, 0.0, 0.0),
            Optimizer::Adam { beta1, beta2, eps, weight_decay } => (1, 0.0, 0, weight_decay, beta1, beta2, eps),
            Optimizer::AdamW { beta1, beta2, eps, weight_decay } => (2, 0.0, 0, weight_decay, beta1, beta2, eps),
        };
        launch!(self, "update", len; &*param, grad, state.m.as_ref(), state.v.as_ref(), len as u64, kind, step.lr,
            momentum, nesterov, wd, b1, b2, eps, k.step_size(), k.bc2_sqrt());
    }
}

impl Drop for Cuda {
    fn drop(&mut self) {
        // Buffers are freed in stream order; wait so that the context outlives their use.
        let _ = self.stream.synchronize();
    }
}

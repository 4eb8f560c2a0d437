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
use crate::augment::Augment;
use crate::config::{Activation, Corruption, Loss, Optimizer};
use crate::corrupt::NoiseKey;
use crate::data::{Dataset, Scaler, Values};
use crate::error::{Error, Result};
use crate::kernels::StepConsts;
use cudarc::cublas::{sys as blas_sys, CudaBlas};
use cudarc::driver::{sys as drv_sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr};
use cudarc::nvrtc::Ptx;
use graph::{Entry, Gemm, Queue, MAX_SLOTS};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

mod graph;
mod ptx_cache;
mod tune;

pub use tune::Tuning;

/// The kernels' source.
pub const KERNELS: &str = include_str!("kernels.cu");

/// Every kernel of [`KERNELS`].
pub const KERNEL_NAMES: [&str; 19] = [
    "bias_act", "act_grad", "gather_u8", "gather_f32", "loss_grad", "softmax_xent", "col_sums", "mul",
    "mul_assign", "scale", "sum_squares", "update", "corrupt", "copy_f32", "fill", "act_grad_col_sums",
    "gather_corrupt", "gather_augment", "rank_update",
];

/// The deepest product that the weight-update kernel takes (kernels.cu's UPDATE_DEPTH): both
/// terms of a tied autoencoder's W gradient at 32 rows; and its threads a block
/// (UPDATE_THREADS).
pub const UPDATE_DEPTH: usize = 64;
const UPDATE_THREADS: u32 = 256;

/// A buffer of f32 on the GPU.
pub struct CudaBuf {
    ptr: u64,
    len: usize,
    /// The allocation this buffer lies in (shared by the two halves of a pair).
    _mem: Arc<CudaSlice<f32>>,
}

/// Bytes on the GPU that are not f32 (the dataset's u8 pixels, row indices, a scalar).
struct Raw {
    ptr: u64,
    _mem: CudaSlice<u8>,
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
            $be.kernel(const { k($name) }, threads.div_ceil(256) as u32, slots);
        }
    }};
}

/// The CUDA backend on one GPU.
pub struct Cuda {
    /// Every submission, and the graphs of training steps.
    queue: Mutex<Queue>,
    precision: Precision,
    name: String,
    /// Row indices for [`Backend::gather`] (grown as needed), and the rows they hold now.
    idx: Mutex<Option<(Raw, usize, Vec<u32>)>>,
    /// The epoch's order on the device, and where it lies on the host: a batch that is a slice
    /// of it is gathered through it, with no copy.
    order: Mutex<Option<(Raw, usize, usize, usize)>>,
    /// One f64 for [`Backend::sum_squares`].
    scalar: Raw,
    /// Whether the fused kernels run (gather with corruption, activation gradient with the bias
    /// gradients, the two W-gradient products as one): the default; DAE_CUDA_FUSE=0 runs the
    /// operations one by one instead, for comparison.
    fused: AtomicBool,
    /// Training steps a graph (see [`Backend::steps_per_launch`]): [`STEPS_PER_GRAPH`] unless
    /// DAE_CUDA_STEPS says otherwise.
    steps: AtomicUsize,
    /// Whether a tied autoencoder's W updates of depth at most [`UPDATE_DEPTH`] take the kernel
    /// `rank_update` instead of cuBLAS: DAE_CUDA_UPDATE, on unless 0.
    rank_update: AtomicBool,
    /// Products that took `rank_update` so far.
    rank_updates: AtomicUsize,
    /// cuBLAS's workspace (cuBLASLt's too, when tuning), set once so that its products can be
    /// captured in graphs.
    workspace: Raw,
    _functions: Vec<CudaFunction>,
    _module: Arc<CudaModule>,
    _blas: CudaBlas,
    stream: Arc<CudaStream>,
    /// Whether the kernels came from the kernel cache (not from NVRTC).
    kernels_cached: bool,
}

/// Training steps a graph by default (DAE_CUDA_STEPS): on an H200, 8 steps a graph took an
/// epoch of 784→500 in 104.6 ms at batch 20 and 25.0 ms at 128, against 109.9 and 26.0 ms with
/// one (each launch of a graph costs the GPU 1.5–1.6 µs besides its kernels).
pub const STEPS_PER_GRAPH: usize = 8;

/// Bytes of cuBLAS's workspace (cuBLASLt's too, when products are tuned).
const WORKSPACE: usize = 64 << 20;

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

/// NVRTC's version, as "13.0".
fn nvrtc_version() -> Option<String> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then(|| format!("{major}.{minor}"))
}

/// The file in `dir` that holds [`KERNELS`] compiled for `arch` by this NVRTC (None when its
/// version is unknown).
fn kernels_file(dir: &std::path::Path, arch: &str) -> Option<std::path::PathBuf> {
    nvrtc_version().map(|v| ptx_cache::path(dir, KERNELS, arch, &v))
}

/// [`KERNELS`] as PTX for `arch`: read from the kernel cache in `cache_dir` when it holds
/// them, else compiled by NVRTC and stored there (see [`ptx_cache`]). The flag says whether
/// they came from the cache.
pub fn kernels_ptx(arch: &str, cache_dir: Option<&std::path::Path>) -> Result<(String, bool)> {
    let file = cache_dir.and_then(|d| kernels_file(d, arch));
    ptx_cache::load_or_compile(file.as_deref(), &KERNEL_NAMES, || compile_kernels(Some(arch)))
}

fn compile(arch: Option<&str>) -> Result<cudarc::nvrtc::Ptx> {
    let mut opts = cudarc::nvrtc::CompileOptions { name: Some("kernels.cu".into()), ..Default::default() };
    if let Some(a) = arch {
        opts.options.push(format!("--gpu-architecture={a}"));
    }
    cudarc::nvrtc::compile_ptx_with_opts(KERNELS, opts).map_err(|e| Error::Runtime(format!("compiling the CUDA kernels failed: {e:?}")))
}

/// The tuner for `tuning` (None when off) with the workspace at `workspace`. Asked for where
/// it cannot run, it is a usage error naming DAE_CUDA_TUNE: not dropped silently, and not a
/// reason to leave the GPU.
fn tuner(tuning: Tuning, precision: Precision, workspace: u64) -> Result<Option<tune::Tuner>> {
    if tuning == Tuning::Off {
        return Ok(None);
    }
    tune::Tuner::new(precision == Precision::Tf32, workspace, WORKSPACE, tuning == Tuning::Report)
        .map(Some)
        .map_err(|why| Error::usage("DAE_CUDA_TUNE", why))
}

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Runtime(format!("CUDA: {what} failed: {e:?}"))
}

impl Cuda {
    /// The backend on GPU `ordinal`, its kernels kept in the kernel cache (see
    /// [`ptx_cache`]'s folder).
    pub fn new(ordinal: usize, precision: Precision) -> Result<Cuda> {
        Cuda::with_kernel_cache(ordinal, precision, ptx_cache::dir().as_deref())
    }

    /// [`Cuda::new`] with the kernel cache in `cache` (None: compiled afresh, not kept).
    pub fn with_kernel_cache(ordinal: usize, precision: Precision, cache: Option<&std::path::Path>) -> Result<Cuda> {
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
        let arch = format!("compute_{major}{minor}");
        let file = cache.and_then(|d| kernels_file(d, &arch));
        let (ptx, mut cached) = ptx_cache::load_or_compile(file.as_deref(), &KERNEL_NAMES, || compile_kernels(Some(&arch)))?;
        let module = match ctx.load_module(Ptx::from_src(ptx)) {
            Ok(m) => m,
            // A cached file the driver refuses: compiled again, and the file replaced.
            Err(_) if cached => {
                cached = false;
                let ptx = compile_kernels(Some(&arch))?;
                if let Some(f) = &file {
                    ptx_cache::store(f, &ptx);
                }
                ctx.load_module(Ptx::from_src(ptx)).map_err(|e| cuda_err("loading the kernels", e))?
            }
            Err(e) => return Err(cuda_err("loading the kernels", e)),
        };
        let f = KERNEL_NAMES
            .iter()
            .map(|n| module.load_function(n).map_err(|e| cuda_err(&format!("loading kernel {n}"), e)))
            .collect::<Result<Vec<_>>>()?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let scalar = raw(&stream, 8)?;
        let workspace = raw(&stream, WORKSPACE)?;
        // SAFETY: the handle is live and the workspace outlives it (both are fields of the backend).
        unsafe { blas_sys::cublasSetWorkspace_v2(*blas.handle(), workspace.ptr as *mut std::ffi::c_void, WORKSPACE) }
            .result()
            .map_err(|e| cuda_err("setting cuBLAS's workspace", e))?;
        let mut queue = Queue::new(stream.cu_stream(), *blas.handle(), f.iter().map(|f| f.cu_function()).collect());
        // Walking a captured graph needs a CUDA 12.3 driver or later.
        let mut version = 0i32;
        // SAFETY: writes one int.
        let new_enough = unsafe { drv_sys::cuDriverGetVersion(&mut version) }.result().is_ok() && version >= 12030;
        queue.graphs = new_enough && std::env::var_os("DAE_CUDA_GRAPHS").is_none_or(|v| v != "0");
        let tuning = match std::env::var_os("DAE_CUDA_TUNE") {
            None => Tuning::Off,
            Some(v) => Tuning::parse(Some(v.to_str().unwrap_or("(not UTF-8)"))).map_err(|why| Error::usage("DAE_CUDA_TUNE", why))?,
        };
        queue.tuner = tuner(tuning, precision, workspace.ptr)?;
        let steps = match std::env::var("DAE_CUDA_STEPS") {
            Err(_) => STEPS_PER_GRAPH,
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(k) if (1..=64).contains(&k) => k,
                _ => return Err(Error::usage("DAE_CUDA_STEPS", format!("'{v}' is not a number of steps from 1 to 64"))),
            },
        };
        Ok(Cuda {
            queue: Mutex::new(queue),
            precision,
            name: format!("cuda:{ordinal} ({name})"),
            idx: Mutex::new(None),
            order: Mutex::new(None),
            scalar,
            fused: AtomicBool::new(std::env::var_os("DAE_CUDA_FUSE").is_none_or(|v| v != "0")),
            steps: AtomicUsize::new(steps),
            rank_update: AtomicBool::new(std::env::var_os("DAE_CUDA_UPDATE").is_none_or(|v| v != "0")),
            rank_updates: AtomicUsize::new(0),
            workspace,
            _functions: f,
            _module: module,
            _blas: blas,
            kernels_cached: cached,
            stream,
        })
    }

    /// Whether this backend's kernels were read from the kernel cache rather than compiled.
    pub fn kernels_cached(&self) -> bool {
        self.kernels_cached
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

    /// Whether training steps are replayed as CUDA graphs (the default; DAE_CUDA_GRAPHS=0
    /// turns it off). Results are the same either way.
    pub fn set_graphs(&self, on: bool) {
        self.queue().graphs = on;
    }

    /// Whether the fused kernels run (the default; DAE_CUDA_FUSE=0 turns them off). Results
    /// are the same to rounding either way.
    pub fn set_fused(&self, on: bool) {
        self.fused.store(on, Ordering::Relaxed);
    }

    /// How many training steps each graph holds (DAE_CUDA_STEPS, [`STEPS_PER_GRAPH`] unless set). The
    /// results are the same for any number.
    pub fn set_steps_per_launch(&self, k: usize) {
        self.steps.store(k.max(1), Ordering::Relaxed);
    }

    /// Whether a tied autoencoder's W update from a small batch (both terms of its gradient
    /// as one product of depth at most [`UPDATE_DEPTH`], that is at most 32 rows, with fp32
    /// products and the fused kernels on) takes the kernel `rank_update` instead of cuBLAS
    /// (the default; DAE_CUDA_UPDATE=0 turns it off). Other products stay cuBLAS's: the kernel
    /// was measured only there (batch 20: 102.6 against 105.0 ms an epoch on an H200; batch
    /// 32: 68.5 against 68.9). Results are the same to rounding either way.
    pub fn set_rank_update(&self, on: bool) {
        self.rank_update.store(on, Ordering::Relaxed);
    }

    /// How many products have taken `rank_update`.
    pub fn rank_updates(&self) -> usize {
        self.rank_updates.load(Ordering::Relaxed)
    }

    /// C (m × n) = β·C + α·aᵀ·b by `rank_update`, a being depth × m and b depth × n, where it
    /// takes the product; false (nothing done) where it does not.
    #[allow(clippy::too_many_arguments)]
    fn rank_update(&self, c: &CudaBuf, m: usize, n: usize, a: u64, b: u64, depth: usize, alpha: f32, beta: f32) -> bool {
        if !self.rank_update.load(Ordering::Relaxed)
            || depth == 0
            || depth > UPDATE_DEPTH
            || m % 4 != 0
            || n % 4 != 0
            || self.precision != Precision::Fp32
            || !self.fused()
            || [c.ptr, a, b].iter().any(|p| p % 16 != 0)
        {
            return false;
        }
        let blocks = m.div_ceil(32) * n.div_ceil(128);
        self.kernel_block(const { k("rank_update") }, blocks as u32, UPDATE_THREADS,
            &[c.ptr, a, b, (m as u32).slot(), (n as u32).slot(), (depth as u32).slot(), alpha.slot(), beta.slot()]);
        self.rank_updates.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Whether products are tuned (DAE_CUDA_TUNE; see the `tune` module): each new product
    /// shape is timed under cublasSgemm and cuBLASLt's algorithms once, and runs on the
    /// fastest. Turning it off forgets what was tuned.
    pub fn set_tuning(&self, t: Tuning) -> Result<()> {
        let mut q = self.queue();
        // Graphs hold the products as they were captured.
        q.flush();
        q.clear();
        q.tuner = tuner(t, self.precision, self.workspace.ptr)?;
        Ok(())
    }

    /// With tuning on: how many product shapes were tuned, and how many of them run on a
    /// cuBLASLt algorithm rather than cublasSgemm.
    pub fn tuned(&self) -> Option<(usize, usize)> {
        self.queue().tuner.as_ref().map(|t| t.counts())
    }

    fn fused(&self) -> bool {
        self.fused.load(Ordering::Relaxed)
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kernel(&self, f: usize, grid: u32, slots: &[u64]) {
        self.kernel_block(f, grid, 256, slots);
    }

    fn kernel_block(&self, f: usize, grid: u32, block: u32, slots: &[u64]) {
        let mut s = [0u64; MAX_SLOTS];
        s[..slots.len()].copy_from_slice(slots);
        self.queue().submit(Entry::Kernel { f, grid, block, slots: s, n: slots.len() as u8 });
    }

    /// Waits for the queue and reads `bytes` bytes at device address `src` into `dst`.
    fn read(&self, src: u64, dst: *mut u8, bytes: usize) {
        let mut q = self.queue();
        q.flush();
        // SAFETY: `dst` holds `bytes` bytes and `src` is inside a live buffer (callers check).
        let r = unsafe { drv_sys::cuMemcpyDtoHAsync_v2(dst as *mut std::ffi::c_void, src, bytes, q.stream) }.result();
        if let Err(e) = r {
            q.error.get_or_insert(format!("CUDA: copying from the GPU failed: {e:?}"));
        }
        // SAFETY: the stream is live.
        if let Err(e) = unsafe { drv_sys::cuStreamSynchronize(q.stream) }.result() {
            q.error.get_or_insert(format!("CUDA: waiting for the GPU failed: {e:?}"));
        }
    }

    /// The device address of `rows` as u32 indices: inside the epoch's order when the batch is
    /// a slice of it, else copied over (only when they changed). None after a failed allocation
    /// (recorded for [`Backend::check`]).
    fn row_index(&self, data: &CudaData, rows: &[u32]) -> Option<u64> {
        assert!(rows.iter().all(|&r| (r as usize) < data.rows), "gather: a row beyond the data");
        if let Some((order, base, len, _)) = self.order.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let at = rows.as_ptr() as usize;
            if !rows.is_empty() && at >= *base && at + 4 * rows.len() <= *base + 4 * *len {
                return Some(order.ptr + (at - *base) as u64);
            }
        }
        let mut idx = self.idx.lock().unwrap_or_else(|p| p.into_inner());
        if idx.as_ref().is_none_or(|(_, cap, _)| *cap < rows.len()) {
            // The old buffer is freed at once: recorded work that reads it must run first.
            self.queue().flush();
            match raw(&self.stream, rows.len().max(1024) * 4) {
                Ok(r) => *idx = Some((r, rows.len().max(1024), Vec::new())),
                Err(e) => {
                    self.queue().error.get_or_insert(e.to_string());
                    return None;
                }
            }
        }
        let (r, _, held) = idx.as_mut().expect("allocated above");
        let ip = r.ptr;
        // The indices go over only when they changed (a network's inputs and targets share
        // them); the copy is queued before the kernel on the one stream.
        if held.as_slice() != rows {
            self.htod(ip, rows);
            held.clear();
            held.extend_from_slice(rows);
        }
        Some(ip)
    }

    fn alloc_f32(&self, len: usize) -> Result<CudaBuf> {
        let mem = self.stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| oom(len * 4, e))?;
        let (ptr, _) = mem.device_ptr(&self.stream);
        Ok(CudaBuf { ptr, len, _mem: Arc::new(mem) })
    }

    fn htod<T: Copy>(&self, dst: u64, src: &[T]) {
        if !src.is_empty() {
            // SAFETY: plain values viewed as their bytes.
            let bytes = unsafe { std::slice::from_raw_parts(src.as_ptr() as *const u8, std::mem::size_of_val(src)) };
            self.queue().submit(Entry::Htod { dst, data: bytes.to_vec() });
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
    rows: usize,
    cols: usize,
    /// Height × width when the rows are images.
    shape: Option<(usize, usize)>,
    scale: Option<(CudaBuf, CudaBuf)>,
}

impl CudaData {
    /// The scaler's (offset, factor) buffers, or none when values are used as they are.
    fn scale_bufs(&self) -> (Option<&CudaBuf>, Option<&CudaBuf>) {
        match &self.scale {
            Some((o, f)) => (Some(o), Some(f)),
            None => (None, None),
        }
    }
}

/// Panics unless `buf` holds at least `len` values: a GPU kernel would not stop at its end.
fn fits(buf: &CudaBuf, len: usize, what: &str) {
    assert!(len <= buf.len, "{what}: {len} values needed, the buffer holds {}", buf.len);
}

/// The threads of a column-sum block over `rows` rows: 32 columns × L row lanes, L a power of
/// two up to 32 with at most 8 rows a lane where that fits (a lane reads 8 rows at once, the
/// kernel's COL_BATCH; fewer lanes, fewer steps in the block's tree of lanes). For 20 rows, 4
/// lanes; for 128, 16; from 129 rows, 32 (at 1024 rows, 4 rounds of 8 reads a lane).
pub fn col_sum_block(rows: usize) -> u32 {
    32 * rows.div_ceil(8).next_power_of_two().clamp(1, 32) as u32
}

/// The corrupt kernels' (kind, level, elements per group of 8 threads) for `noise`.
fn noise_code(noise: Corruption) -> (i32, f32, usize) {
    match noise {
        Corruption::None => (0, 0.0, 32),
        Corruption::Masking { level } => (1, level, 32),
        Corruption::Gaussian { sigma } => (2, sigma, 32),
        Corruption::SaltAndPepper { level } => (3, level, 16),
    }
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

    fn alloc_pair(&self, len: usize) -> Result<(CudaBuf, CudaBuf)> {
        // One allocation, the second buffer right after the first.
        let both = self.alloc_f32(2 * len)?;
        let second = CudaBuf { ptr: both.ptr + 4 * len as u64, len, _mem: both._mem.clone() };
        Ok((CudaBuf { len, ..both }, second))
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
        if !dst.is_empty() {
            self.read(src.ptr + 4 * offset as u64, dst.as_mut_ptr() as *mut u8, dst.len() * 4);
        }
    }

    fn copy_at(&self, dst: &mut CudaBuf, offset: usize, src: &CudaBuf, len: usize) {
        assert!(offset + len <= dst.len && len <= src.len, "copy past the end of a buffer");
        launch!(self, "copy_f32", len; dst.ptr + 4 * offset as u64, src, len);
    }

    fn queued(&self) -> bool {
        true
    }

    fn check(&self) -> Result<()> {
        match self.queue().error.take() {
            Some(e) => Err(Error::Runtime(e)),
            None => Ok(()),
        }
    }

    fn epoch_order(&self, order: &[u32]) {
        let mut slot = self.order.lock().unwrap_or_else(|p| p.into_inner());
        if order.is_empty() {
            if let Some((_, _, len, _)) = slot.as_mut() {
                *len = 0;
            }
            return;
        }
        if slot.as_ref().is_none_or(|(_, _, _, cap)| *cap < order.len()) {
            // Graphs and recorded work may point into the old buffer.
            self.queue().flush();
            self.queue().clear();
            match raw(&self.stream, order.len().max(1) * 4) {
                Ok(r) => *slot = Some((r, 0, 0, order.len())),
                Err(e) => {
                    *slot = None;
                    self.queue().error.get_or_insert(e.to_string());
                    return;
                }
            }
        }
        let (r, base, len, _) = slot.as_mut().expect("allocated above");
        self.htod(r.ptr, order);
        *base = order.as_ptr() as usize;
        *len = order.len();
    }

    fn step<R>(&self, f: impl FnOnce() -> R) -> R {
        // Should `f` panic, what it recorded runs as it stands and recording stops.
        struct Unwind<'a>(&'a Cuda);
        impl Drop for Unwind<'_> {
            fn drop(&mut self) {
                self.0.queue().flush();
            }
        }
        self.queue().begin_step();
        let guard = Unwind(self);
        let r = f();
        std::mem::forget(guard);
        self.queue().end_step();
        r
    }

    fn steps_per_launch(&self) -> usize {
        self.steps.load(Ordering::Relaxed)
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
        Ok(CudaData { values, u8, rows: ds.rows, cols: ds.cols, shape: ds.image_shape, scale })
    }

    fn gather(&self, dst: &mut CudaBuf, data: &CudaData, rows: &[u32]) {
        let d = data.cols;
        fits(dst, rows.len() * d, "gather");
        let Some(ip) = self.row_index(data, rows) else { return };
        let (o, f) = data.scale_bufs();
        let n = (rows.len(), d as u32);
        if data.u8 {
            launch!(self, "gather_u8", n.0 * d; &*dst, data.values.ptr, ip, n.0 as u32, n.1, o, f);
        } else {
            launch!(self, "gather_f32", n.0 * d; &*dst, data.values.ptr, ip, n.0 as u32, n.1, o, f);
        }
    }

    fn gather_augmented(&self, dst: &mut CudaBuf, data: &CudaData, rows: &[u32], aug: &Augment, key: &NoiseKey) {
        let (h, w) = data.shape.expect("augmentation needs the image shape");
        fits(dst, rows.len() * data.cols, "gather");
        let Some(ip) = self.row_index(data, rows) else { return };
        let (o, f) = data.scale_bufs();
        launch!(self, "gather_augment", rows.len() * data.cols; &*dst, data.values.ptr, ip, o, f, data.u8 as i32,
            aug.shift, aug.flip as i32, key.seed, key.stream, key.epoch, key.row0, rows.len() as u32, h as u32, w as u32);
    }

    #[allow(clippy::too_many_arguments)]
    fn gather_corrupt(
        &self,
        x: &mut CudaBuf,
        xt: &mut CudaBuf,
        mask: Option<&mut CudaBuf>,
        data: &CudaData,
        rows: &[u32],
        noise: Corruption,
        key: &NoiseKey,
        cols: usize,
    ) {
        if !self.fused() || cols != data.cols {
            self.gather(x, data, rows);
            return self.corrupt(x, xt, mask, noise, key, rows.len(), cols);
        }
        let n = rows.len();
        fits(x, n * cols, "gather");
        fits(xt, n * cols, "corrupt output");
        let m = mask.map(|m| &*m);
        if let Some(m) = m {
            fits(m, n * cols, "corrupt mask");
        }
        let Some(ip) = self.row_index(data, rows) else { return };
        let (o, f) = data.scale_bufs();
        let (kind, level, per) = noise_code(noise);
        let threads = n * cols.div_ceil(per) * 8;
        launch!(self, "gather_corrupt", threads; &*x, &*xt, m, data.values.ptr, ip, o, f, data.u8 as i32, kind, level,
            key.seed, key.stream, key.epoch, key.row0, n as u32, cols as u32);
    }

    fn gemm(&self, c: &mut CudaBuf, m: usize, n: usize, terms: &[Product<'_, Self>], alpha: f32, beta: f32) {
        // Row-major C (m×n) is column-major Cᵀ: Cᵀ = op(B)ᵀ·op(A)ᵀ, so cuBLAS gets B first.
        fits(c, m * n, "gemm output");
        for t in terms {
            fits(t.a, m * t.k, "gemm operand a");
            fits(t.b, t.k * n, "gemm operand b");
        }
        if terms.iter().all(|t| t.k == 0) {
            // An empty sum: C = βC, and with β = 0 the old C is not read.
            if beta == 0.0 {
                launch!(self, "fill", m * n; &*c, 0f32, (m * n) as u64);
            } else if beta != 1.0 {
                launch!(self, "scale", m * n; &*c, beta, (m * n) as u64);
            }
            return;
        }
        if let [t0, t1] = terms {
            // aᵀ·b + a′ᵀ·b′ where a′ follows a and b′ follows b in memory (buffers from
            // alloc_pair): one product over the concatenated depth.
            let after = |x: &CudaBuf, y: &CudaBuf, len: usize| y.ptr == x.ptr + 4 * len as u64;
            let (tt, nn) = (Trans::T, Trans::N);
            if self.fused()
                && (t0.ta, t0.tb, t1.ta, t1.tb) == (tt, nn, tt, nn)
                && t0.k > 0
                && t1.k > 0
                && m > 0
                && n > 0
                && after(t0.a, t1.a, t0.k * m)
                && after(t0.b, t1.b, t0.k * n)
            {
                if self.rank_update(c, m, n, t0.a.ptr, t0.b.ptr, t0.k + t1.k, alpha, beta) {
                    return;
                }
                self.queue().submit(Entry::Gemm(Gemm {
                    ta: false,
                    tb: true,
                    m: n as i32,
                    n: m as i32,
                    k: (t0.k + t1.k) as i32,
                    alpha,
                    a: t0.b.ptr,
                    lda: n as i32,
                    b: t0.a.ptr,
                    ldb: m as i32,
                    beta,
                    c: c.ptr,
                    ldc: n as i32,
                }));
                return;
            }
        }
        for (i, t) in terms.iter().filter(|t| t.k > 0).enumerate() {
            let beta = if i == 0 { beta } else { 1.0 };
            let lda_b = if t.tb == Trans::N { n } else { t.k };
            let lda_a = if t.ta == Trans::N { t.k } else { m };
            if m == 0 || n == 0 {
                return;
            }
            self.queue().submit(Entry::Gemm(Gemm {
                ta: t.tb == Trans::T,
                tb: t.ta == Trans::T,
                m: n as i32,
                n: m as i32,
                k: t.k as i32,
                alpha,
                a: t.b.ptr,
                lda: lda_b as i32,
                b: t.a.ptr,
                ldb: lda_a as i32,
                beta,
                c: c.ptr,
                ldc: n as i32,
            }));
        }
    }

    fn bias_act(&self, x: &mut CudaBuf, bias: &CudaBuf, act: Activation, rows: usize, cols: usize) {
        fits(x, rows * cols, "bias_act");
        fits(bias, cols, "bias_act bias");
        launch!(self, "bias_act", rows * cols; &*x, bias, act_code(act), rows as u32, cols as u32);
    }

    fn act_grad(&self, delta: &mut CudaBuf, y: &CudaBuf, act: Activation, len: usize) {
        fits(delta, len, "act_grad");
        fits(y, len, "act_grad y");
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
        fits(row_loss, offset + rows, "loss_grad losses");
        for (b, w) in [(&*pre, rows * cols), (target, rows * cols), (c, cols)] {
            fits(b, w, "loss_grad");
        }
        if let Some(m) = mask {
            fits(m, rows * cols, "loss_grad mask");
        }
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
            emph.slot(),
            wc.slot(),
            wl.slot(),
            spec.grad_scale.slot(),
            output_code(spec.output).slot(),
            (cols as u32).slot(),
            row_loss.ptr + 4 * offset as u64,
        ];
        if rows > 0 {
            // One block per row.
            self.kernel(const { k("loss_grad") }, rows as u32, &slots);
        }
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
        let (kind, level, per) = noise_code(noise);
        let threads = rows * cols.div_ceil(per) * 8;
        fits(x, rows * cols, "corrupt");
        fits(xt, rows * cols, "corrupt output");
        let m = mask.map(|m| &*m);
        if let Some(m) = m {
            fits(m, rows * cols, "corrupt mask");
        }
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
        fits(logits, rows * classes, "softmax_xent");
        fits(bias, classes, "softmax_xent bias");
        for b in [labels, &*row_loss, &*row_correct] {
            fits(b, rows, "softmax_xent rows");
        }
        launch!(self, "softmax_xent", rows; &*logits, bias, labels, output_code(output), grad_scale, rows as u32,
            classes as u32, &*row_loss, &*row_correct);
    }

    fn dropout_mask(&self, mask: &mut CudaBuf, p: f32, key: &NoiseKey, rows: usize, cols: usize) {
        let threads = rows * cols.div_ceil(32) * 8;
        fits(mask, rows * cols, "dropout_mask");
        launch!(self, "corrupt", threads; 0u64, &*mask, 0u64, 1i32, p, 1.0 / (1.0 - p), key.seed as u32,
            (key.seed >> 32) as u32, key.stream, key.epoch, key.row0, rows as u32, cols as u32);
    }

    fn mul(&self, out: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, len: usize) {
        for x in [&*out, a, b] {
            fits(x, len, "mul");
        }
        launch!(self, "mul", len; &*out, a, b, len as u64);
    }

    fn mul_assign(&self, x: &mut CudaBuf, m: &CudaBuf, len: usize) {
        fits(x, len, "mul_assign");
        fits(m, len, "mul_assign");
        launch!(self, "mul_assign", len; &*x, m, len as u64);
    }

    fn col_sums_scaled(&self, out: &mut CudaBuf, x: &CudaBuf, rows: usize, cols: usize, alpha: f32, beta: f32) {
        fits(out, cols, "col_sums");
        fits(x, rows * cols, "col_sums");
        if cols > 0 {
            // A block per stripe of 32 columns.
            let slots = [out.ptr, x.ptr, (rows as u32).slot(), (cols as u32).slot(), alpha.slot(), beta.slot()];
            self.kernel_block(const { k("col_sums") }, cols.div_ceil(32) as u32, col_sum_block(rows), &slots);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn act_grad_col_sums(
        &self,
        delta: &mut CudaBuf,
        y: &CudaBuf,
        act: Activation,
        rows: usize,
        cols: usize,
        out: &mut CudaBuf,
        alpha: f32,
        beta: f32,
        also: Option<(&mut CudaBuf, &CudaBuf, usize)>,
    ) {
        if !self.fused() {
            return super::act_grad_then_col_sums(self, delta, y, act, rows, cols, out, alpha, beta, also);
        }
        fits(delta, rows * cols, "act_grad");
        fits(y, rows * cols, "act_grad y");
        fits(out, cols, "col_sums");
        let (out2, x2, cols2) = match also {
            Some((o, x, c)) => {
                fits(o, c, "col_sums");
                fits(x, rows * c, "col_sums");
                (o.ptr, x.ptr, c)
            }
            None => (0, 0, 0),
        };
        let y_ptr = if act == Activation::Identity { 0 } else { y.ptr };
        let blocks = cols.div_ceil(32) + cols2.div_ceil(32);
        if blocks > 0 {
            // A block per stripe of 32 columns, as col_sums.
            let slots = [
                out.ptr,
                delta.ptr,
                y_ptr,
                act_code(act).slot(),
                (cols as u32).slot(),
                out2,
                x2,
                (cols2 as u32).slot(),
                (rows as u32).slot(),
                alpha.slot(),
                beta.slot(),
            ];
            self.kernel_block(const { k("act_grad_col_sums") }, blocks as u32, col_sum_block(rows), &slots);
        }
    }

    fn sum_squares(&self, x: &CudaBuf, len: usize) -> f64 {
        fits(x, len, "sum_squares");
        // One block of 256 threads.
        self.kernel(const { k("sum_squares") }, 1, &[x.ptr, len as u64, self.scalar.ptr]);
        let mut out = 0f64;
        self.read(self.scalar.ptr, &mut out as *mut f64 as *mut u8, 8);
        out
    }

    fn scale(&self, x: &mut CudaBuf, factor: f32, len: usize) {
        fits(x, len, "scale");
        launch!(self, "scale", len; &*x, factor, len as u64);
    }

    fn update(&self, param: &mut CudaBuf, grad: &CudaBuf, state: &mut OptState<Self>, step: &StepSpec, len: usize) {
        fits(param, len, "update");
        fits(grad, len, "update gradient");
        for b in [state.m.as_ref(), state.v.as_ref()].into_iter().flatten() {
            fits(b, len, "update state");
        }
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
        self.queue().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel's arguments fit the slots a launch carries (a launch copies them into
    /// MAX_SLOTS slots and would panic on more).
    #[test]
    fn every_kernel_takes_at_most_max_slots_arguments() {
        let mut seen = 0;
        for decl in KERNELS.split("extern \"C\" __global__ void ").skip(1) {
            let name = &decl[..decl.find('(').unwrap()];
            let params = &decl[decl.find('(').unwrap() + 1..decl.find(')').unwrap()];
            let n = params.split(',').count();
            assert!(n <= MAX_SLOTS, "kernel {name} takes {n} arguments, more than MAX_SLOTS = {MAX_SLOTS}");
            assert!(KERNEL_NAMES.contains(&name), "kernel {name} is not in KERNEL_NAMES");
            seen += 1;
        }
        assert_eq!(seen, KERNEL_NAMES.len(), "every kernel of KERNEL_NAMES is declared in kernels.cu");
    }

    /// The weight-update kernel's depth and block size are the host's.
    #[test]
    fn the_weight_update_kernel_has_the_hosts_depth_and_block() {
        assert!(KERNELS.contains(&format!("#define UPDATE_DEPTH {UPDATE_DEPTH}\n")), "UPDATE_DEPTH differs from kernels.cu's");
        assert!(KERNELS.contains(&format!("#define UPDATE_THREADS {UPDATE_THREADS}\n")), "UPDATE_THREADS differs from kernels.cu's");
    }
}

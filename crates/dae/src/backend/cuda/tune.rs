//! Each shape of matrix product run by whichever of cuBLAS's algorithms is fastest on this GPU.
//!
//! cuBLAS picks an algorithm for a product from a model of the GPU. For the products of a small
//! model's training step (a batch of 20 to 1024 rows by 784 × 500 weights) its pick often
//! leaves most of the GPU idle: a batch of 128 rows by 500 columns is four 128 × 128 tiles on
//! a GPU of 132 multiprocessors. cuBLASLt offers other algorithms for the same product (other
//! tiles, the depth split over several blocks). The first time a product of a new shape runs,
//! outside a graph capture, [`Tuner`] times cuBLAS's own pick and cuBLASLt's candidates on the
//! product's own operands, writing into scratch memory, and keeps the fastest; every later
//! product of that shape (and the graphs captured from them) runs that algorithm.
//!
//! The choice is made per backend, so one backend computes a shape the same way every time;
//! another process may time a different algorithm fastest, which can change results in the
//! last bits. DAE_CUDA_TUNE=0 keeps cuBLAS's own pick (bit-identical runs across processes);
//! DAE_CUDA_TUNE=verbose prints each shape's candidates and times.

use super::graph::Gemm;
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::cublaslt::sys as lt;
use cudarc::driver::{sys as drv, CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

/// Products larger than this (m·n·k) run as cuBLAS picks: they fill the GPU anyway, and timing
/// them would slow the start.
const MAX_TUNED: i64 = 1 << 31;
/// cuBLASLt's candidates asked for per shape.
const HEURISTICS: usize = 24;
/// The depth splits tried for each candidate that can split.
const SPLITS: [u32; 5] = [2, 3, 4, 8, 16];
/// A candidate replaces cuBLAS's pick only when faster by this factor (timing noise must
/// not flip the choice).
const MARGIN: f64 = 0.97;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key {
    ta: bool,
    tb: bool,
    m: i32,
    n: i32,
    k: i32,
    lda: i32,
    ldb: i32,
    ldc: i32,
    accumulate: bool,
}

impl Key {
    fn of(g: &Gemm) -> Key {
        Key { ta: g.ta, tb: g.tb, m: g.m, n: g.n, k: g.k, lda: g.lda, ldb: g.ldb, ldc: g.ldc, accumulate: g.beta != 0.0 }
    }
}

/// A cuBLASLt product, ready to run.
struct Plan {
    desc: lt::cublasLtMatmulDesc_t,
    a: lt::cublasLtMatrixLayout_t,
    b: lt::cublasLtMatrixLayout_t,
    c: lt::cublasLtMatrixLayout_t,
    algo: lt::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: created by `Plan::new`, destroyed once.
        unsafe {
            lt::cublasLtMatrixLayoutDestroy(self.a);
            lt::cublasLtMatrixLayoutDestroy(self.b);
            lt::cublasLtMatrixLayoutDestroy(self.c);
            lt::cublasLtMatmulDescDestroy(self.desc);
        }
    }
}

fn ok(s: lt::cublasStatus_t, what: &str) -> Result<(), String> {
    match s {
        lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS => Ok(()),
        e => Err(format!("cuBLASLt: {what}: {e:?}")),
    }
}

impl Plan {
    /// The descriptors of `g`'s product (its algorithm still to be set).
    fn new(g: &Gemm, tf32: bool) -> Result<Plan, String> {
        let compute = if tf32 { lt::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32 } else { lt::cublasComputeType_t::CUBLAS_COMPUTE_32F };
        let f32t = lt::cudaDataType_t::CUDA_R_32F;
        let mut p = Plan {
            desc: std::ptr::null_mut(),
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            // SAFETY: plain data.
            algo: unsafe { std::mem::zeroed() },
        };
        // SAFETY: each call writes one handle, destroyed by Drop (null ones are skipped by
        // cuBLASLt's destroy functions).
        unsafe {
            ok(lt::cublasLtMatmulDescCreate(&mut p.desc, compute, f32t), "creating a product")?;
            for (attr, t) in [
                (lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, g.ta),
                (lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB, g.tb),
            ] {
                let op: i32 = t as i32; // CUBLAS_OP_N = 0, CUBLAS_OP_T = 1
                ok(lt::cublasLtMatmulDescSetAttribute(p.desc, attr, &op as *const i32 as *const c_void, 4), "setting a transpose")?;
            }
            let (ar, ac) = if g.ta { (g.k, g.m) } else { (g.m, g.k) };
            let (br, bc) = if g.tb { (g.n, g.k) } else { (g.k, g.n) };
            ok(lt::cublasLtMatrixLayoutCreate(&mut p.a, f32t, ar as u64, ac as u64, g.lda as i64), "a layout")?;
            ok(lt::cublasLtMatrixLayoutCreate(&mut p.b, f32t, br as u64, bc as u64, g.ldb as i64), "a layout")?;
            ok(lt::cublasLtMatrixLayoutCreate(&mut p.c, f32t, g.m as u64, g.n as u64, g.ldc as i64), "a layout")?;
        }
        Ok(p)
    }
}

enum Choice {
    /// cuBLAS's own pick (cublasSgemm).
    Cublas,
    Lt(Box<Plan>),
}

/// The chosen algorithm of each shape of product.
pub struct Tuner {
    handle: lt::cublasLtHandle_t,
    tf32: bool,
    verbose: bool,
    /// cuBLAS's workspace, shared (everything runs in order on one stream).
    workspace: u64,
    workspace_size: usize,
    choices: HashMap<Key, Choice>,
    /// The backend's stream.
    stream: Arc<CudaStream>,
    /// Scratch output for timing, and its address.
    scratch: Option<(CudaSlice<u8>, u64)>,
    events: [drv::CUevent; 2],
}

// SAFETY: used only under the backend's mutex, from one thread at a time.
unsafe impl Send for Tuner {}

impl Tuner {
    /// A tuner for the products on `stream`, which use cuBLAS's `workspace`; None when
    /// DAE_CUDA_TUNE=0 or cuBLASLt cannot start; Err for a DAE_CUDA_TUNE it does not know.
    pub fn new(stream: Arc<CudaStream>, tf32: bool, workspace: u64, workspace_size: usize) -> Result<Option<Tuner>, String> {
        let mode = std::env::var("DAE_CUDA_TUNE").unwrap_or_default();
        let verbose = match mode.trim() {
            "0" => return Ok(None),
            "" | "1" => false,
            "verbose" => true,
            other => return Err(format!("expected 0, 1 or verbose, got '{other}'")),
        };
        // SAFETY: only tries to open the library.
        if !unsafe { lt::is_culib_present() } {
            if verbose {
                eprintln!("DAE_CUDA_TUNE: cuBLASLt (libcublasLt) not found: products run as cuBLAS picks");
            }
            return Ok(None);
        }
        let quiet = |why: String| {
            if verbose {
                eprintln!("DAE_CUDA_TUNE: {why}: products run as cuBLAS picks");
            }
            Ok(None)
        };
        if let Err(e) = stream.context().bind_to_thread() {
            return quiet(format!("{e:?}"));
        }
        let mut handle: lt::cublasLtHandle_t = std::ptr::null_mut();
        // SAFETY: writes one handle, destroyed by Drop.
        if let Err(e) = ok(unsafe { lt::cublasLtCreate(&mut handle) }, "starting cuBLASLt") {
            return quiet(e);
        }
        let mut events = [std::ptr::null_mut(); 2];
        for i in 0..2 {
            // SAFETY: writes one event, destroyed by Drop.
            if let Err(c) = unsafe { drv::cuEventCreate(&mut events[i], 0) }.result() {
                // SAFETY: created above.
                unsafe {
                    events[..i].iter().for_each(|e| {
                        drv::cuEventDestroy_v2(*e);
                    });
                    lt::cublasLtDestroy(handle);
                }
                return quiet(format!("creating an event: {c:?}"));
            }
        }
        Ok(Some(Tuner { handle, tf32, verbose, workspace, workspace_size, choices: HashMap::new(), stream, scratch: None, events }))
    }

    /// Whether `g`'s shape still has to be timed (before it can run inside a graph capture).
    pub fn pending(&self, g: &Gemm) -> bool {
        tunable(g) && !self.choices.contains_key(&Key::of(g))
    }

    /// Times `g`'s candidates and keeps the fastest (not inside a capture). A failure leaves
    /// the shape to cuBLAS.
    pub fn tune(&mut self, g: &Gemm, stream: drv::CUstream, blas_handle: blas_sys::cublasHandle_t) {
        if !self.pending(g) {
            return;
        }
        let choice = match self.choose(g, stream, blas_handle) {
            Ok(c) => c,
            Err(e) => {
                if self.verbose {
                    eprintln!("DAE_CUDA_TUNE: {}: {e}; cuBLAS picks", describe(g));
                }
                Choice::Cublas
            }
        };
        self.choices.insert(Key::of(g), choice);
    }

    /// Runs `g` with its shape's chosen algorithm; Ok(false) when cuBLAS is to run it.
    pub fn run(&self, g: &Gemm, stream: drv::CUstream) -> Result<bool, String> {
        match self.choices.get(&Key::of(g)) {
            Some(Choice::Lt(p)) => {
                self.matmul(p, g, g.c, stream)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn matmul(&self, p: &Plan, g: &Gemm, out: u64, stream: drv::CUstream) -> Result<(), String> {
        // SAFETY: the operands are live device buffers of the layouts' sizes (as for
        // cublasSgemm), `out` holds the output's, and the workspace is cuBLAS's own.
        ok(
            unsafe {
                lt::cublasLtMatmul(
                    self.handle,
                    p.desc,
                    &g.alpha as *const f32 as *const c_void,
                    g.a as *const c_void,
                    p.a,
                    g.b as *const c_void,
                    p.b,
                    &g.beta as *const f32 as *const c_void,
                    out as *const c_void,
                    p.c,
                    out as *mut c_void,
                    p.c,
                    &p.algo,
                    self.workspace as *mut c_void,
                    self.workspace_size,
                    stream as lt::cudaStream_t,
                )
            },
            "a product",
        )
    }

    fn choose(&mut self, g: &Gemm, stream: drv::CUstream, blas_handle: blas_sys::cublasHandle_t) -> Result<Choice, String> {
        let candidates = self.candidates(g)?;
        if candidates.is_empty() {
            return Ok(Choice::Cublas);
        }
        self.stream.context().bind_to_thread().map_err(|e| format!("{e:?}"))?;
        // Scratch output, zeroed (the timed products accumulate into it when β ≠ 0).
        let bytes = 4 * g.ldc as usize * g.n as usize;
        let out = self.scratch(bytes)?;
        // SAFETY: the scratch holds `bytes`.
        unsafe { drv::cuMemsetD32Async(out, 0, bytes / 4, stream) }.result().map_err(|e| format!("clearing scratch: {e:?}"))?;
        let op = |t: bool| if t { blas_sys::cublasOperation_t::CUBLAS_OP_T } else { blas_sys::cublasOperation_t::CUBLAS_OP_N };
        let cublas = || -> Result<(), String> {
            // SAFETY: as in the queue's own products, with the scratch output.
            unsafe {
                blas::sgemm(blas_handle, op(g.ta), op(g.tb), g.m, g.n, g.k, &g.alpha, g.a as *const f32, g.lda, g.b as *const f32, g.ldb, &g.beta, out as *mut f32, g.ldc)
            }
            .map_err(|e| format!("cuBLAS: {e:?}"))
        };
        // Warm the GPU up (clocks), and size the repetitions to about 0.2 ms a timing.
        for _ in 0..3 {
            cublas()?;
        }
        let once = self.time(stream, 1, &cublas)?;
        let reps = ((200.0 / once.max(1.0)) as usize).clamp(2, 20);
        for _ in 0..(2000.0 / once.max(1.0)) as usize {
            cublas()?;
        }
        // Candidate 0 is cuBLAS's pick; each round times every candidate once, so that a
        // drift in the GPU's clocks reaches them all alike.
        let mut plans: Vec<Plan> = Vec::new();
        for algo in &candidates {
            let mut p = Plan::new(g, self.tf32)?;
            p.algo = *algo;
            plans.push(p);
        }
        let mut best = vec![f64::INFINITY; plans.len() + 1];
        let mut failed = vec![false; plans.len() + 1];
        for _ in 0..3 {
            best[0] = best[0].min(self.time(stream, reps, &cublas)?);
            for (i, p) in plans.iter().enumerate() {
                if failed[i + 1] {
                    continue;
                }
                match self.time(stream, reps, &|| self.matmul(p, g, out, stream)) {
                    Ok(t) => best[i + 1] = best[i + 1].min(t),
                    Err(_) => failed[i + 1] = true,
                }
            }
        }
        let (i, t) = best.iter().enumerate().skip(1).filter(|(i, _)| !failed[*i]).fold((0, best[0]), |b, (i, &t)| if t < b.1 { (i, t) } else { b });
        let pick = i > 0 && t < MARGIN * best[0];
        if self.verbose {
            let mut times: Vec<(f64, usize)> = best.iter().enumerate().filter(|(i, _)| !failed[*i]).map(|(i, &t)| (t, i)).collect();
            times.sort_by(|a, b| a.0.total_cmp(&b.0));
            let top: Vec<String> = times.iter().take(6).map(|(t, i)| {
                if *i == 0 { format!("cuBLAS {t:.1}") } else { format!("{} {t:.1}", algo_name(&plans[i - 1].algo)) }
            }).collect();
            eprintln!(
                "DAE_CUDA_TUNE: {}: cuBLAS {:.1} µs, {} candidates, picked {} ({:.1} µs); fastest: {}",
                describe(g),
                best[0],
                plans.len(),
                if pick { algo_name(&plans[i - 1].algo) } else { "cuBLAS".into() },
                if pick { t } else { best[0] },
                top.join(", ")
            );
        }
        if !pick {
            return Ok(Choice::Cublas);
        }
        Ok(Choice::Lt(Box::new(plans.swap_remove(i - 1))))
    }

    /// cuBLASLt's candidates for `g`: its heuristic's list, and each with the depth split
    /// `SPLITS` ways where the algorithm can split.
    fn candidates(&self, g: &Gemm) -> Result<Vec<lt::cublasLtMatmulAlgo_t>, String> {
        let p = Plan::new(g, self.tf32)?;
        let mut pref: lt::cublasLtMatmulPreference_t = std::ptr::null_mut();
        // SAFETY: writes one handle, destroyed below.
        ok(unsafe { lt::cublasLtMatmulPreferenceCreate(&mut pref) }, "creating a preference")?;
        let max = self.workspace_size as u64;
        // SAFETY: an 8-byte attribute of a live preference.
        let set = unsafe {
            lt::cublasLtMatmulPreferenceSetAttribute(
                pref,
                lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &max as *const u64 as *const c_void,
                8,
            )
        };
        // SAFETY: plain data, filled by cuBLASLt.
        let mut results: Vec<lt::cublasLtMatmulHeuristicResult_t> = vec![unsafe { std::mem::zeroed() }; HEURISTICS];
        let mut count = 0i32;
        let got = ok(set, "setting the workspace").and_then(|_| {
            // SAFETY: the descriptors are live; `results` holds HEURISTICS entries.
            ok(
                unsafe { lt::cublasLtMatmulAlgoGetHeuristic(self.handle, p.desc, p.a, p.b, p.c, p.c, pref, HEURISTICS as i32, results.as_mut_ptr(), &mut count) },
                "asking for algorithms",
            )
        });
        // SAFETY: created above.
        unsafe { lt::cublasLtMatmulPreferenceDestroy(pref) };
        got?;
        let mut out: Vec<lt::cublasLtMatmulAlgo_t> = Vec::new();
        for r in &results[..count.max(0) as usize] {
            if r.state != lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS || r.workspaceSize > self.workspace_size {
                continue;
            }
            push_new(&mut out, r.algo);
            let mut splits = 0i32;
            let mut written = 0usize;
            // SAFETY: a 4-byte capability of a valid algorithm.
            let cap = unsafe {
                lt::cublasLtMatmulAlgoCapGetAttribute(
                    &r.algo,
                    lt::cublasLtMatmulAlgoCapAttributes_t::CUBLASLT_ALGO_CAP_SPLITK_SUPPORT,
                    &mut splits as *mut i32 as *mut c_void,
                    4,
                    &mut written,
                )
            };
            if cap != lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS || splits == 0 {
                continue;
            }
            for s in SPLITS {
                if s as i32 > g.k / 16 {
                    break;
                }
                if let Some(a) = self.split(&p, r.algo, s) {
                    push_new(&mut out, a);
                }
            }
        }
        Ok(out)
    }

    /// `algo` with the depth split `s` ways (the reduction wherever cuBLASLt accepts it), if
    /// cuBLASLt takes it for this product within the workspace.
    fn split(&self, p: &Plan, algo: lt::cublasLtMatmulAlgo_t, s: u32) -> Option<lt::cublasLtMatmulAlgo_t> {
        for scheme in [1u32, 2, 4] {
            let mut a = algo;
            // SAFETY: 4-byte attributes of a copy of a valid algorithm, then a check of it
            // against live descriptors.
            unsafe {
                let mut set = |attr, v: &u32| lt::cublasLtMatmulAlgoConfigSetAttribute(&mut a as *mut _, attr, v as *const u32 as *const c_void, 4);
                if set(lt::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &s) != lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                    return None;
                }
                if set(lt::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme) != lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                    continue;
                }
                let mut r: lt::cublasLtMatmulHeuristicResult_t = std::mem::zeroed();
                if lt::cublasLtMatmulAlgoCheck(self.handle, p.desc, p.a, p.b, p.c, p.c, &a, &mut r) == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS
                    && r.workspaceSize <= self.workspace_size
                {
                    return Some(a);
                }
            }
        }
        None
    }

    /// Microseconds per run of `f`, over `reps` runs back to back.
    fn time(&self, stream: drv::CUstream, reps: usize, f: &dyn Fn() -> Result<(), String>) -> Result<f64, String> {
        let [a, b] = self.events;
        // SAFETY: live events on this backend's stream.
        unsafe { drv::cuEventRecord(a, stream) }.result().map_err(|e| format!("recording an event: {e:?}"))?;
        let mut r = Ok(());
        for _ in 0..reps {
            r = f();
            if r.is_err() {
                break;
            }
        }
        let mut ms = 0f32;
        // SAFETY: as above; the second event is waited for before it is read.
        unsafe {
            drv::cuEventRecord(b, stream).result().map_err(|e| format!("recording an event: {e:?}"))?;
            drv::cuEventSynchronize(b).result().map_err(|e| format!("waiting for an event: {e:?}"))?;
            drv::cuEventElapsedTime_v2(&mut ms, a, b).result().map_err(|e| format!("reading an event: {e:?}"))?;
        }
        r?;
        Ok(ms as f64 * 1000.0 / reps as f64)
    }

    /// The address of at least `bytes` of scratch (the old scratch, if smaller, is freed in
    /// stream order: only finished timings used it).
    fn scratch(&mut self, bytes: usize) -> Result<u64, String> {
        if self.scratch.as_ref().is_none_or(|(s, _)| s.len() < bytes) {
            self.scratch = None;
            let mem = self.stream.alloc_zeros::<u8>(bytes).map_err(|e| format!("allocating {bytes} bytes of scratch: {e:?}"))?;
            let (ptr, _) = mem.device_ptr(&self.stream);
            self.scratch = Some((mem, ptr));
        }
        Ok(self.scratch.as_ref().expect("allocated above").1)
    }
}

impl Drop for Tuner {
    fn drop(&mut self) {
        self.choices.clear();
        let _ = self.stream.context().bind_to_thread();
        // SAFETY: created in `new`; the backend synchronises its stream before dropping the queue.
        unsafe {
            for e in self.events {
                drv::cuEventDestroy_v2(e);
            }
            lt::cublasLtDestroy(self.handle);
        }
    }
}

fn tunable(g: &Gemm) -> bool {
    (g.m as i64) * (g.n as i64) * (g.k as i64) <= MAX_TUNED
}

fn push_new(v: &mut Vec<lt::cublasLtMatmulAlgo_t>, a: lt::cublasLtMatmulAlgo_t) {
    if !v.iter().any(|b| b.data == a.data) {
        v.push(a);
    }
}

fn describe(g: &Gemm) -> String {
    let t = |t: bool| if t { 'T' } else { 'N' };
    format!("{}{} m={} n={} k={} β={}", t(g.ta), t(g.tb), g.m, g.n, g.k, g.beta)
}

/// An algorithm as "algo 21 tile 15 split 4".
fn algo_name(a: &lt::cublasLtMatmulAlgo_t) -> String {
    let get = |attr| {
        let mut v = 0u32;
        let mut w = 0usize;
        // SAFETY: a 4-byte attribute of a valid algorithm.
        unsafe { lt::cublasLtMatmulAlgoConfigGetAttribute(a, attr, &mut v as *mut u32 as *mut c_void, 4, &mut w) };
        v
    };
    use lt::cublasLtMatmulAlgoConfigAttributes_t as A;
    format!(
        "algo {} tile {} split {}",
        get(A::CUBLASLT_ALGO_CONFIG_ID),
        get(A::CUBLASLT_ALGO_CONFIG_TILE_ID),
        get(A::CUBLASLT_ALGO_CONFIG_SPLITK_NUM).max(1)
    )
}

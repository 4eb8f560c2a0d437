//! Tuned products (`DAE_CUDA_TUNE=1`, off unless asked): the first time a run meets a product
//! of a new shape, it times cuBLAS's own choice (`cublasSgemm`) against every algorithm that
//! cuBLASLt's heuristic offers for that shape, and runs the shape with the fastest from then on.
//!
//! Each candidate is timed on scratch buffers of the product's sizes and alignments (the
//! model's buffers are not touched) as a CUDA graph of [`REPS`] products back to back, which is
//! how a training step runs them: after [`WARM`] launches of every candidate's graph, [`ROUNDS`]
//! rounds launch each once in turn, and a candidate's best round, divided by [`REPS`], is its
//! time. A cuBLASLt algorithm replaces `cublasSgemm` only when it times at most [`MARGIN`] of
//! it. Every algorithm computes the same product, but not in the same order (split-K sums the
//! depth in slices), so a tuned run can differ from an untuned one in the last bits, and two
//! tuned runs can too where timing picks differently. A failure while tuning a shape leaves it
//! on `cublasSgemm`; a tuned product that fails later is an error of the run, as any failed
//! product is. Tuning needs libcublasLt and a CUDA 12.8 driver or later.

use super::graph::{capture, sgemm, Gemm};
use cudarc::cublas::sys as blas_sys;
use cudarc::cublaslt::sys as lt;
use cudarc::driver::sys as drv;
use std::ffi::c_void;

/// A cuBLASLt algorithm must time at most this fraction of `cublasSgemm` to replace it.
pub const MARGIN: f32 = 0.97;
/// The most algorithms asked of cuBLASLt's heuristic for one shape.
const CANDIDATES: usize = 16;
/// Products in each timed graph.
const REPS: usize = 20;
/// Launches of each graph before timing.
const WARM: usize = 3;
/// Timed launches of each graph (the best counts).
const ROUNDS: usize = 5;

/// Whether products are tuned, and whether each tuned shape is reported on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuning {
    Off,
    On,
    Report,
}

impl Tuning {
    /// The setting of `DAE_CUDA_TUNE`: unset, empty, 0, off or false is off; 1, on or true is
    /// on; `report` is on and prints each shape's timings.
    pub fn parse(v: Option<&str>) -> Result<Tuning, String> {
        match v.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "0" | "off" | "false") => Ok(Tuning::Off),
            Some("1" | "on" | "true") => Ok(Tuning::On),
            Some("report") => Ok(Tuning::Report),
            Some(_) => Err(format!("'{}' is not 0, 1 or report", v.unwrap_or_default().trim())),
        }
    }
}

/// The largest power of two (at most 256) that divides `ptr`: what cuBLASLt may assume of a
/// buffer's alignment.
pub fn alignment(ptr: u64) -> u32 {
    1 << ptr.trailing_zeros().min(8)
}

/// Which candidate runs a shape: `None` for `cublasSgemm`, or the index of the fastest
/// cuBLASLt algorithm, given the time of `cublasSgemm` (None if it failed) and of each
/// algorithm (None where it failed).
pub fn choose(sgemm: Option<f32>, algos: &[Option<f32>]) -> Option<usize> {
    let best = algos.iter().enumerate().filter_map(|(i, t)| t.map(|t| (i, t))).min_by(|a, b| a.1.total_cmp(&b.1))?;
    match sgemm {
        Some(s) if best.1 > MARGIN * s => None,
        _ => Some(best.0),
    }
}

/// What decides whether a product can run as another one tuned before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    ta: bool,
    tb: bool,
    m: i32,
    n: i32,
    k: i32,
    lda: i32,
    ldb: i32,
    ldc: i32,
    /// β ≠ 0: the old C is read.
    accumulate: bool,
    align: [u32; 3],
}

impl Key {
    fn of(g: &Gemm) -> Key {
        Key {
            ta: g.ta,
            tb: g.tb,
            m: g.m,
            n: g.n,
            k: g.k,
            lda: g.lda,
            ldb: g.ldb,
            ldc: g.ldc,
            accumulate: g.beta != 0.0,
            align: [alignment(g.a), alignment(g.b), alignment(g.c)],
        }
    }

    /// Elements of A, B and C as column-major matrices with their leading dimensions.
    fn lens(&self) -> [usize; 3] {
        let cols_a = if self.ta { self.m } else { self.k };
        let cols_b = if self.tb { self.k } else { self.n };
        [self.lda as usize * cols_a as usize, self.ldb as usize * cols_b as usize, self.ldc as usize * self.n as usize]
    }
}

/// A product's cuBLASLt description with one algorithm.
#[derive(Clone, Copy)]
struct Call {
    desc: lt::cublasLtMatmulDesc_t,
    layouts: [lt::cublasLtMatrixLayout_t; 3],
    algo: lt::cublasLtMatmulAlgo_t,
    workspace: usize,
}

/// A [`Call`] that owns its descriptors (destroyed on drop): a tuned shape's.
pub struct Plan(Call);

/// The tuned shapes of one backend.
pub struct Tuner {
    handle: lt::cublasLtHandle_t,
    tf32: bool,
    workspace: u64,
    workspace_bytes: usize,
    report: bool,
    shapes: Vec<(Key, Option<Plan>)>,
}

fn lt_ok(what: &str, s: lt::cublasStatus_t) -> Result<(), String> {
    if s == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(format!("cuBLASLt: {what} failed: {s:?}"))
    }
}

fn drv_ok(what: &str, r: drv::CUresult) -> Result<(), String> {
    r.result().map_err(|e| format!("CUDA: {what} failed: {e:?}"))
}

/// Scratch device memory, freed on drop (after the stream has finished with it).
struct Scratch {
    ptrs: Vec<u64>,
    stream: drv::CUstream,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: the stream is live; the allocations are this struct's and unused once it
        // has finished.
        unsafe {
            let _ = drv::cuStreamSynchronize(self.stream);
            for &p in &self.ptrs {
                let _ = drv::cuMemFree_v2(p);
            }
        }
    }
}

impl Scratch {
    /// Memory for `len` f32, each 1.0, whose address has the same remainder modulo 256 as
    /// `like`.
    fn alloc(&mut self, len: usize, like: u64) -> Result<u64, String> {
        let words = len.max(1) + 64;
        let mut p = 0u64;
        // SAFETY: allocates `words` f32 and fills them on this stream.
        unsafe {
            drv_ok("allocating scratch memory", drv::cuMemAlloc_v2(&mut p, 4 * words))?;
            self.ptrs.push(p);
            drv_ok("filling scratch memory", drv::cuMemsetD32Async(p, 1f32.to_bits(), words, self.stream))?;
        }
        Ok(p + like % 256)
    }
}

impl Tuner {
    /// cuBLASLt with the backend's cuBLAS workspace (both run on the one stream, in order).
    pub fn new(tf32: bool, workspace: u64, workspace_bytes: usize, report: bool) -> Result<Tuner, String> {
        // SAFETY: only tries to open the library.
        if !unsafe { lt::is_culib_present() } {
            return Err("cuBLASLt (libcublasLt) not found".into());
        }
        // The timing reads events through cuEventElapsedTime_v2, new in CUDA 12.8's driver.
        let mut version = 0i32;
        // SAFETY: writes one int.
        unsafe { drv::cuDriverGetVersion(&mut version) }.result().map_err(|e| format!("reading the driver's version failed: {e:?}"))?;
        if version < 12080 {
            return Err(format!("needs a CUDA 12.8 driver or later; this one is {}.{}", version / 1000, version % 1000 / 10));
        }
        let mut handle = std::ptr::null_mut();
        // SAFETY: writes a new handle.
        lt_ok("starting", unsafe { lt::cublasLtCreate(&mut handle) })?;
        Ok(Tuner { handle, tf32, workspace, workspace_bytes, report, shapes: Vec::new() })
    }

    /// Whether `g`'s shape has been tuned.
    pub fn knows(&self, g: &Gemm) -> bool {
        let key = Key::of(g);
        self.shapes.iter().any(|(k, _)| *k == key)
    }

    /// The cuBLASLt plan for `g`, or None where `cublasSgemm` runs it.
    pub fn plan(&self, g: &Gemm) -> Option<&Plan> {
        let key = Key::of(g);
        self.shapes.iter().find(|(k, _)| *k == key).and_then(|(_, p)| p.as_ref())
    }

    /// Shapes tuned, and how many of them run on a cuBLASLt algorithm.
    pub fn counts(&self) -> (usize, usize) {
        (self.shapes.len(), self.shapes.iter().filter(|(_, p)| p.is_some()).count())
    }

    /// Runs `g` (whose operands are `a`, `b`, `c`) on `plan`.
    fn matmul(&self, plan: &Call, g: &Gemm, ptrs: [u64; 3], stream: drv::CUstream) -> Result<(), String> {
        let [la, lb, lc] = plan.layouts;
        let [a, b, c] = ptrs;
        // SAFETY: the operands are live device buffers of the plan's sizes; the workspace is
        // the backend's and at least `plan.workspace` bytes.
        let s = unsafe {
            lt::cublasLtMatmul(
                self.handle,
                plan.desc,
                &g.alpha as *const f32 as *const c_void,
                a as *const c_void,
                la,
                b as *const c_void,
                lb,
                &g.beta as *const f32 as *const c_void,
                c as *const c_void,
                lc,
                c as *mut c_void,
                lc,
                &plan.algo,
                self.workspace as *mut c_void,
                plan.workspace,
                stream as lt::cudaStream_t,
            )
        };
        lt_ok("a product", s)
    }

    /// Runs `g` as tuned: returns None where `cublasSgemm` should run it.
    pub fn run(&self, g: &Gemm, stream: drv::CUstream) -> Option<Result<(), String>> {
        self.plan(g).map(|p| self.matmul(&p.0, g, [g.a, g.b, g.c], stream))
    }

    /// Tunes `g`'s shape (once): never fails, a shape that cannot be tuned stays on
    /// `cublasSgemm`. Must not be called while the stream is being captured.
    pub fn tune(&mut self, g: &Gemm, blas: blas_sys::cublasHandle_t, stream: drv::CUstream) {
        if self.knows(g) {
            return;
        }
        let key = Key::of(g);
        let plan = match self.search(g, key, blas, stream) {
            Ok((plan, line)) => {
                if self.report {
                    eprintln!("{line}");
                }
                plan
            }
            Err(why) => {
                if self.report {
                    eprintln!("tuning cuBLAS {}×{}×{}: {why}; it stays on cublasSgemm", g.m, g.n, g.k);
                }
                None
            }
        };
        self.shapes.push((key, plan));
    }

    fn describe(&self, key: &Key) -> Result<(lt::cublasLtMatmulDesc_t, [lt::cublasLtMatrixLayout_t; 3]), String> {
        let compute = if self.tf32 {
            lt::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            lt::cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        let f32t = lt::cudaDataType_t::CUDA_R_32F;
        let mut desc = std::ptr::null_mut();
        // SAFETY: creates descriptors and sets plain attributes from live values.
        unsafe {
            lt_ok("describing a product", lt::cublasLtMatmulDescCreate(&mut desc, compute, f32t))?;
            for (attr, t) in [
                (lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, key.ta),
                (lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB, key.tb),
            ] {
                let op: i32 = t as i32; // CUBLAS_OP_N = 0, CUBLAS_OP_T = 1
                let s = lt::cublasLtMatmulDescSetAttribute(desc, attr, &op as *const i32 as *const c_void, 4);
                if let Err(e) = lt_ok("describing a product", s) {
                    lt::cublasLtMatmulDescDestroy(desc);
                    return Err(e);
                }
            }
            let (ra, ca) = if key.ta { (key.k, key.m) } else { (key.m, key.k) };
            let (rb, cb) = if key.tb { (key.n, key.k) } else { (key.k, key.n) };
            let dims = [(ra, ca, key.lda), (rb, cb, key.ldb), (key.m, key.n, key.ldc)];
            let mut layouts = [std::ptr::null_mut(); 3];
            for (i, (r, c, ld)) in dims.into_iter().enumerate() {
                let s = lt::cublasLtMatrixLayoutCreate(&mut layouts[i], f32t, r as u64, c as u64, ld as i64);
                if let Err(e) = lt_ok("describing a matrix", s) {
                    for l in &layouts[..i] {
                        lt::cublasLtMatrixLayoutDestroy(*l);
                    }
                    lt::cublasLtMatmulDescDestroy(desc);
                    return Err(e);
                }
            }
            Ok((desc, layouts))
        }
    }

    /// cuBLASLt's candidate algorithms for the shape, each with the workspace it needs.
    fn candidates(&self, key: &Key, desc: lt::cublasLtMatmulDesc_t, l: &[lt::cublasLtMatrixLayout_t; 3]) -> Result<Vec<(lt::cublasLtMatmulAlgo_t, usize)>, String> {
        use lt::cublasLtMatmulPreferenceAttributes_t as P;
        let mut pref = std::ptr::null_mut();
        // SAFETY: creates a preference, sets plain attributes, reads up to CANDIDATES results
        // into an array of that size, and destroys the preference.
        unsafe {
            lt_ok("making a preference", lt::cublasLtMatmulPreferenceCreate(&mut pref))?;
            let ws = self.workspace_bytes as u64;
            let mut r = lt_ok(
                "setting the workspace",
                lt::cublasLtMatmulPreferenceSetAttribute(pref, P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws as *const u64 as *const c_void, 8),
            );
            let attrs = [
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
            ];
            let aligns = [key.align[0], key.align[1], key.align[2], key.align[2]];
            for (attr, a) in attrs.into_iter().zip(aligns) {
                if r.is_ok() {
                    r = lt_ok("setting an alignment", lt::cublasLtMatmulPreferenceSetAttribute(pref, attr, &a as *const u32 as *const c_void, 4));
                }
            }
            let mut results: [lt::cublasLtMatmulHeuristicResult_t; CANDIDATES] = std::mem::zeroed();
            let mut found = 0i32;
            if r.is_ok() {
                r = lt_ok(
                    "asking for algorithms",
                    lt::cublasLtMatmulAlgoGetHeuristic(self.handle, desc, l[0], l[1], l[2], l[2], pref, CANDIDATES as i32, results.as_mut_ptr(), &mut found),
                );
            }
            lt::cublasLtMatmulPreferenceDestroy(pref);
            r?;
            Ok(results[..found.clamp(0, CANDIDATES as i32) as usize]
                .iter()
                .filter(|h| h.state == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS && h.workspaceSize <= self.workspace_bytes)
                .map(|h| (h.algo, h.workspaceSize))
                .collect())
        }
    }

    /// Times every candidate for `g`'s shape and returns the plan to use (None:
    /// `cublasSgemm`) with a line for the report.
    fn search(&self, g: &Gemm, key: Key, blas: blas_sys::cublasHandle_t, stream: drv::CUstream) -> Result<(Option<Plan>, String), String> {
        let (desc, layouts) = self.describe(&key)?;
        // From here `plan` owns the descriptors: dropping it destroys them.
        let mut plan = Plan(Call { desc, layouts, algo: lt::cublasLtMatmulAlgo_t { data: [0; 8] }, workspace: 0 });
        let algos = self.candidates(&key, desc, &layouts)?;
        let mut scratch = Scratch { ptrs: Vec::new(), stream };
        let lens = key.lens();
        let ptrs = [scratch.alloc(lens[0], g.a)?, scratch.alloc(lens[1], g.b)?, scratch.alloc(lens[2], g.c)?];
        let on = Gemm { a: ptrs[0], b: ptrs[1], c: ptrs[2], ..*g };
        // The trials: cublasSgemm first, then each algorithm (none: nothing to compare).
        let mut trials = Vec::with_capacity(algos.len() + 1);
        if !algos.is_empty() {
            trials.push(record(stream, &mut || sgemm(blas, &on)).ok());
            for &(algo, ws) in &algos {
                let trial = Call { algo, workspace: ws, ..plan.0 };
                trials.push(record(stream, &mut || self.matmul(&trial, g, ptrs, stream)).ok());
            }
        }
        let mut times = measure(stream, &trials);
        drop(trials);
        drop(scratch);
        let sgemm = if times.is_empty() { None } else { times.remove(0) };
        let choice = choose(sgemm, &times);
        let best = times.iter().flatten().copied().min_by(f32::total_cmp);
        let us = |t: Option<f32>| t.map_or("failed".to_string(), |t| format!("{t:.2} µs"));
        let mut line = format!(
            "tuned cuBLAS {}×{}×{} ({}{}, {}): ",
            g.m,
            g.n,
            g.k,
            if g.ta { "Aᵀ" } else { "A" },
            if g.tb { "·Bᵀ" } else { "·B" },
            if g.beta != 0.0 { "accumulating" } else { "overwriting" },
        );
        if algos.is_empty() {
            line += "cuBLASLt offers no algorithm → cublasSgemm";
            return Ok((None, line));
        }
        let all: Vec<String> = times.iter().map(|t| t.map_or("failed".into(), |t| format!("{t:.2}"))).collect();
        line += &format!("cublasSgemm {}; best of {} cuBLASLt algorithms {} (each, µs: {})", us(sgemm), algos.len(), us(best), all.join(" "));
        match choice {
            Some(i) => {
                (plan.0.algo, plan.0.workspace) = algos[i];
                line += &format!(" ({}) → cuBLASLt", describe_algo(&plan.0.algo));
                Ok((Some(plan), line))
            }
            None => {
                line += " → cublasSgemm";
                Ok((None, line))
            }
        }
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: the descriptors were made for this plan and nothing else uses them.
        unsafe {
            for l in self.0.layouts {
                lt::cublasLtMatrixLayoutDestroy(l);
            }
            lt::cublasLtMatmulDescDestroy(self.0.desc);
        }
    }
}

impl Drop for Tuner {
    fn drop(&mut self) {
        self.shapes.clear();
        // SAFETY: the handle is this tuner's; its plans are gone.
        unsafe { lt::cublasLtDestroy(self.handle) };
    }
}

/// The algorithm's identity as cuBLASLt reports it: id, tile and split-K count.
fn describe_algo(algo: &lt::cublasLtMatmulAlgo_t) -> String {
    use lt::cublasLtMatmulAlgoConfigAttributes_t as A;
    let get = |attr| {
        let mut v = 0i32;
        let mut written = 0usize;
        // SAFETY: reads one 4-byte attribute of a live algorithm.
        let s = unsafe { lt::cublasLtMatmulAlgoConfigGetAttribute(algo, attr, &mut v as *mut i32 as *mut c_void, 4, &mut written) };
        if s == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            v.to_string()
        } else {
            "?".into()
        }
    };
    format!(
        "algorithm {}, tile {}, split-K {}",
        get(A::CUBLASLT_ALGO_CONFIG_ID),
        get(A::CUBLASLT_ALGO_CONFIG_TILE_ID),
        get(A::CUBLASLT_ALGO_CONFIG_SPLITK_NUM)
    )
}

/// One candidate's [`REPS`] calls as an executable graph.
struct Trial(drv::CUgraphExec);

impl Drop for Trial {
    fn drop(&mut self) {
        // SAFETY: the executable is this trial's; the stream has finished with it (see
        // [`Scratch`], whose drop synchronises, and [`measure`]).
        unsafe { drv::cuGraphExecDestroy(self.0) };
    }
}

/// Captures [`REPS`] calls of `f` as a graph. `f` first runs once on its own, which checks
/// that it works (and loads what it needs) outside the capture.
fn record(stream: drv::CUstream, f: &mut dyn FnMut() -> Result<(), String>) -> Result<Trial, String> {
    f()?;
    // SAFETY: waits on the backend's stream; instantiates the captured graph, then destroys
    // it (the executable stands alone).
    unsafe {
        drv_ok("running a trial", drv::cuStreamSynchronize(stream))?;
        let graph = capture(stream, &mut || (0..REPS).try_for_each(|_| f()))?;
        let mut exec: drv::CUgraphExec = std::ptr::null_mut();
        let made = drv_ok("instantiating a graph", drv::cuGraphInstantiateWithFlags(&mut exec, graph, 0));
        drv::cuGraphDestroy(graph);
        made.map(|()| Trial(exec))
    }
}

/// Microseconds per call of each trial (None where it is None or failed). Every trial is
/// launched [`WARM`] times first (the GPU's clocks rise, caches fill); then [`ROUNDS`] rounds
/// launch each trial once, in turn, between events, each round starting at another trial, so
/// that no candidate is favoured by its place in the order; a trial's best round counts.
fn measure(stream: drv::CUstream, trials: &[Option<Trial>]) -> Vec<Option<f32>> {
    let n = trials.len();
    let mut best = vec![f32::INFINITY; n];
    let mut ok = vec![true; n];
    let mut events = vec![std::ptr::null_mut(); n + 1];
    // SAFETY: launches live executables on the backend's stream, records and reads events made
    // here, and destroys them; every launch has finished when this returns.
    unsafe {
        let mut made = 0;
        let mut r = Ok(());
        for e in events.iter_mut() {
            r = drv_ok("making an event", drv::cuEventCreate(e, 0));
            if r.is_err() {
                break;
            }
            made += 1;
        }
        if r.is_ok() {
            for _ in 0..WARM {
                for (t, ok) in trials.iter().zip(ok.iter_mut()) {
                    if let Some(t) = t.as_ref().filter(|_| *ok) {
                        *ok = drv::cuGraphLaunch(t.0, stream).result().is_ok();
                    }
                }
            }
            for r in 0..ROUNDS {
                // Each round starts at another trial, behind an untimed launch that keeps the
                // GPU busy while the host queues the timed ones (the first would otherwise
                // also time the GPU waiting for its launch).
                let order: Vec<usize> = (0..n).map(|j| (j + r) % n).collect();
                if let Some(t) = order.iter().rev().find_map(|&i| trials[i].as_ref().filter(|_| ok[i])) {
                    let _ = drv::cuGraphLaunch(t.0, stream);
                }
                let mut round = drv_ok("recording an event", drv::cuEventRecord(events[0], stream));
                for (j, &i) in order.iter().enumerate() {
                    if let Some(t) = trials[i].as_ref().filter(|_| ok[i]) {
                        ok[i] = drv::cuGraphLaunch(t.0, stream).result().is_ok();
                    }
                    if round.is_ok() {
                        round = drv_ok("recording an event", drv::cuEventRecord(events[j + 1], stream));
                    }
                }
                if round.is_ok() {
                    round = drv_ok("synchronising", drv::cuEventSynchronize(events[n]));
                }
                if round.is_err() {
                    ok.iter_mut().for_each(|o| *o = false);
                    break;
                }
                for (j, &i) in order.iter().enumerate() {
                    let mut ms = 0f32;
                    if drv::cuEventElapsedTime_v2(&mut ms, events[j], events[j + 1]).result().is_ok() {
                        best[i] = best[i].min(ms);
                    } else {
                        ok[i] = false;
                    }
                }
            }
        } else {
            ok.iter_mut().for_each(|o| *o = false);
        }
        let _ = drv::cuStreamSynchronize(stream);
        for e in &events[..made] {
            drv::cuEventDestroy_v2(*e);
        }
    }
    (0..n).map(|i| (trials[i].is_some() && ok[i] && best[i].is_finite()).then(|| best[i] * 1000.0 / REPS as f32)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_setting() {
        assert_eq!(Tuning::parse(None), Ok(Tuning::Off));
        assert_eq!(Tuning::parse(Some("0")), Ok(Tuning::Off));
        assert_eq!(Tuning::parse(Some(" 1 ")), Ok(Tuning::On));
        assert_eq!(Tuning::parse(Some("Off")), Ok(Tuning::Off));
        assert_eq!(Tuning::parse(Some("true")), Ok(Tuning::On));
        assert_eq!(Tuning::parse(Some("report")), Ok(Tuning::Report));
        assert!(Tuning::parse(Some("yes")).unwrap_err().contains("'yes'"));
    }

    #[test]
    fn alignment_is_the_largest_power_of_two_up_to_256() {
        assert_eq!(alignment(0x7f00_0000_0000), 256);
        assert_eq!(alignment(0x7f00_0000_0100 + 4), 4);
        assert_eq!(alignment(0x7f00_0000_0000 + 40000), 64);
        assert_eq!(alignment(0x7f00_0000_0000 + 128), 128);
    }

    #[test]
    fn chooses_cublaslt_only_when_clearly_faster() {
        // No algorithm worked: cublasSgemm.
        assert_eq!(choose(Some(5.0), &[None, None]), None);
        assert_eq!(choose(Some(5.0), &[]), None);
        // The fastest algorithm, when under the margin.
        assert_eq!(choose(Some(5.0), &[Some(4.9), Some(4.0), Some(4.5)]), Some(1));
        // Within the margin of cublasSgemm: cublasSgemm stays.
        assert_eq!(choose(Some(5.0), &[Some(4.9), None]), None);
        assert_eq!(choose(Some(5.0), &[Some(5.0 * MARGIN)]), Some(0));
        // cublasSgemm failed to time: the fastest algorithm that worked.
        assert_eq!(choose(None, &[None, Some(7.0), Some(6.0)]), Some(2));
    }

    #[test]
    fn sizes_follow_the_transposes() {
        let g = Gemm { ta: false, tb: true, m: 784, n: 500, k: 256, alpha: 1.0, a: 0, lda: 784, b: 256, ldb: 500, beta: 0.0, c: 512, ldc: 784 };
        let k = Key::of(&g);
        // A is m×k (784×256), B is n×k stored (500×256), C is m×n.
        assert_eq!(k.lens(), [784 * 256, 500 * 256, 784 * 500]);
        let t = Key::of(&Gemm { ta: true, tb: false, lda: 256, ldb: 256, ..g });
        // Aᵀ: A stored k×m (256×784); B k×n (256×500).
        assert_eq!(t.lens(), [256 * 784, 256 * 500, 784 * 500]);
        assert!(!k.accumulate && Key::of(&Gemm { beta: 1.0, ..g }).accumulate);
        assert_eq!(k.align, [256, 256, 256]);
    }
}

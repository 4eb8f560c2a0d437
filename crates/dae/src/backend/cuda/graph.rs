//! Everything the CUDA backend does to the GPU goes through [`Queue::submit`] as an [`Entry`]:
//! run at once, or, inside a training step, recorded and replayed as a CUDA graph.
//!
//! A step's entries are recorded while the model's code runs ([`Queue::begin_step`] …
//! [`Queue::end_step`]); the training loop may run several training steps as one such step
//! ([`crate::backend::Backend::steps_per_launch`]), which then replay as one graph. Its shape
//! (the kernels with their grids, and every cuBLAS product with
//! all its arguments) is the graph's key: the first step of a shape is captured from the
//! stream, and later steps of the same shape replay that graph after updating the arguments of
//! the kernels whose arguments changed (the noise's row offset, Adam's step size, where the
//! losses go). Copies to the device at the start of a step (the batch's row indices) run just
//! before the replay. A step that reads from the device midway (gradient clipping) or copies
//! after its first kernel simply runs as it is recorded: a graph never changes the results,
//! only how many launches the host makes.

use super::tune::Tuner;
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::sys as drv;
use std::ffi::c_void;

/// The most arguments a kernel takes.
pub const MAX_SLOTS: usize = 16;
/// The most step shapes kept as graphs (full batches and a shorter last batch, per rate; with
/// several steps a graph, also a shorter last group of steps).
const CACHE: usize = 6;

/// One operation for the GPU.
#[derive(Clone, Debug)]
pub enum Entry {
    /// Kernel `f` over `grid` blocks of `block` threads; each argument is an 8-byte slot.
    Kernel { f: usize, grid: u32, block: u32, slots: [u64; MAX_SLOTS], n: u8 },
    /// cuBLAS sgemm, column-major, as cublasSgemm takes it.
    Gemm(Gemm),
    /// Host bytes to device address `dst`.
    Htod { dst: u64, data: Vec<u8> },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub ta: bool,
    pub tb: bool,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub alpha: f32,
    pub a: u64,
    pub lda: i32,
    pub b: u64,
    pub ldb: i32,
    pub beta: f32,
    pub c: u64,
    pub ldc: i32,
}

/// What must match for a step to replay a graph.
#[derive(Clone, Debug, PartialEq)]
enum Shape {
    Kernel { f: usize, grid: u32, block: u32, n: u8 },
    Gemm([u64; 13]),
}

impl Entry {
    fn shape(&self) -> Option<Shape> {
        match self {
            Entry::Kernel { f, grid, block, n, .. } => Some(Shape::Kernel { f: *f, grid: *grid, block: *block, n: *n }),
            Entry::Gemm(g) => Some(Shape::Gemm([
                g.ta as u64, g.tb as u64, g.m as u64, g.n as u64, g.k as u64, g.alpha.to_bits() as u64, g.a, g.lda as u64, g.b,
                g.ldb as u64, g.beta.to_bits() as u64, g.c, g.ldc as u64,
            ])),
            Entry::Htod { .. } => None,
        }
    }
}

struct Cached {
    shape: Vec<Shape>,
    graph: drv::CUgraph,
    exec: drv::CUgraphExec,
    /// The graph node of each kernel entry, in order, and the slots it was last given.
    nodes: Vec<(drv::CUgraphNode, [u64; MAX_SLOTS])>,
}

/// The state of the stream's submissions.
pub struct Queue {
    pub stream: drv::CUstream,
    pub blas: blas_sys::cublasHandle_t,
    pub functions: Vec<drv::CUfunction>,
    /// Whether steps are recorded and replayed as graphs.
    pub graphs: bool,
    recording: bool,
    tape: Vec<Entry>,
    cache: Vec<Cached>,
    /// Shapes whose capture failed: they run as they are recorded.
    uncapturable: Vec<Vec<Shape>>,
    /// The first failure, for [`crate::backend::Backend::check`].
    pub error: Option<String>,
    /// Tuned products (DAE_CUDA_TUNE), when asked for.
    pub tuner: Option<Tuner>,
}

// SAFETY: the handles are used only under the backend's mutex, from one thread at a time.
unsafe impl Send for Queue {}

fn fail(what: &str, code: impl std::fmt::Debug) -> String {
    format!("CUDA: {what} failed: {code:?}")
}

impl Queue {
    pub fn new(stream: drv::CUstream, blas: blas_sys::cublasHandle_t, functions: Vec<drv::CUfunction>) -> Queue {
        Queue { stream, blas, functions, graphs: true, recording: false, tape: Vec::new(), cache: Vec::new(), uncapturable: Vec::new(), error: None, tuner: None }
    }

    fn record_err(&mut self, e: Option<String>) {
        if self.error.is_none() {
            self.error = e;
        }
    }

    /// Runs `e` now, or records it inside a step.
    pub fn submit(&mut self, e: Entry) {
        if self.recording {
            self.tape.push(e);
        } else {
            self.run_all(std::slice::from_ref(&e));
        }
    }

    /// Runs `entries` one by one, now (tuning new product shapes first, with DAE_CUDA_TUNE).
    fn run_all(&mut self, entries: &[Entry]) {
        self.tune(entries);
        for e in entries {
            let r = self.run(e);
            self.record_err(r.err());
        }
    }

    /// Tunes the products among `entries` whose shapes are new (with DAE_CUDA_TUNE): before
    /// they run, never while the stream is captured.
    fn tune(&mut self, entries: &[Entry]) {
        let Some(t) = self.tuner.as_mut() else { return };
        for e in entries {
            if let Entry::Gemm(g) = e {
                t.tune(g, self.blas, self.stream);
            }
        }
    }

    /// Runs every recorded entry now and records no more in this step: the host is about to
    /// read from the device.
    pub fn flush(&mut self) {
        if self.recording {
            self.recording = false;
            let tape = std::mem::take(&mut self.tape);
            self.run_all(&tape);
        }
    }

    fn run(&self, e: &Entry) -> Result<(), String> {
        match e {
            Entry::Kernel { f, grid, block, slots, n } => {
                let mut params = pointers(slots, *n);
                // SAFETY: the function's parameters are these slots (see the kernels' call sites)
                // and every pointer among them is a live device buffer.
                unsafe {
                    drv::cuLaunchKernel(self.functions[*f], *grid, 1, 1, *block, 1, 1, 0, self.stream, params.as_mut_ptr(), std::ptr::null_mut())
                }
                .result()
                .map_err(|c| fail("a kernel launch", c))
            }
            Entry::Gemm(g) => match self.tuner.as_ref().and_then(|t| t.run(g, self.stream)) {
                Some(r) => r,
                None => sgemm(self.blas, g),
            },
            Entry::Htod { dst, data } => {
                // SAFETY: the destination holds at least `data.len()` bytes; from pageable memory
                // the copy has read `data` before it returns.
                unsafe { drv::cuMemcpyHtoDAsync_v2(*dst, data.as_ptr() as *const c_void, data.len(), self.stream) }
                    .result()
                    .map_err(|c| fail("a copy to the GPU", c))
            }
        }
    }

    pub fn begin_step(&mut self) {
        self.tape.clear();
        self.recording = self.graphs && self.error.is_none();
    }

    pub fn end_step(&mut self) {
        if !self.recording {
            return;
        }
        self.recording = false;
        // The tape goes back afterwards, emptied: its capacity serves the next step.
        let mut tape = std::mem::take(&mut self.tape);
        self.play(&tape);
        tape.clear();
        self.tape = tape;
    }

    /// Runs a recorded step: replays its graph, captures one, or runs it entry by entry.
    fn play(&mut self, tape: &[Entry]) {
        let lead = tape.iter().take_while(|e| matches!(e, Entry::Htod { .. })).count();
        let (copies, body) = tape.split_at(lead);
        if body.is_empty() || body.iter().any(|e| matches!(e, Entry::Htod { .. })) {
            return self.run_all(tape);
        }
        self.run_all(copies);
        if self.uncapturable.len() > 64 {
            self.uncapturable.clear();
        }
        if self.uncapturable.iter().any(|s| same_shape(s, body)) {
            return self.run_all(body);
        }
        let hit = self.cache.iter().position(|c| same_shape(&c.shape, body));
        let idx = match hit {
            Some(i) => i,
            None => match self.capture(body, body.iter().filter_map(Entry::shape).collect()) {
                Ok(c) => {
                    if self.cache.len() == CACHE {
                        let old = self.cache.remove(0);
                        destroy(&old);
                    }
                    self.cache.push(c);
                    self.cache.len() - 1
                }
                Err(why) => {
                    // Not capturable (the error is kept only if running it fails too).
                    let _ = why;
                    self.uncapturable.push(body.iter().filter_map(Entry::shape).collect());
                    return self.run_all(body);
                }
            },
        };
        let r = self.replay(idx, body);
        self.record_err(r.err());
    }

    /// Updates the kernels whose arguments changed, then launches the graph.
    fn replay(&mut self, idx: usize, body: &[Entry]) -> Result<(), String> {
        let c = &mut self.cache[idx];
        let kernels = body.iter().filter_map(|e| match e {
            Entry::Kernel { f, grid, block, slots, n } => Some((*f, *grid, *block, slots, *n)),
            _ => None,
        });
        for ((node, last), (f, grid, block, slots, n)) in c.nodes.iter_mut().zip(kernels) {
            if last[..n as usize] != slots[..n as usize] {
                let mut params = pointers(slots, n);
                let p = drv::CUDA_KERNEL_NODE_PARAMS {
                    func: self.functions[f],
                    gridDimX: grid,
                    gridDimY: 1,
                    gridDimZ: 1,
                    blockDimX: block,
                    blockDimY: 1,
                    blockDimZ: 1,
                    sharedMemBytes: 0,
                    kernelParams: params.as_mut_ptr(),
                    extra: std::ptr::null_mut(),
                    kern: std::ptr::null_mut(),
                    ctx: std::ptr::null_mut(),
                };
                // SAFETY: the node belongs to this graph and runs this function; the values are
                // copied before the call returns.
                unsafe { drv::cuGraphExecKernelNodeSetParams_v2(c.exec, *node, &p) }
                    .result()
                    .map_err(|e| fail("updating a graph's kernel", e))?;
                *last = *slots;
            }
        }
        // SAFETY: the executable graph is live.
        unsafe { drv::cuGraphLaunch(c.exec, self.stream) }.result().map_err(|e| fail("launching a graph", e))
    }

    /// Captures `body` from the stream into a graph and finds the node of each of its kernels.
    fn capture(&mut self, body: &[Entry], shape: Vec<Shape>) -> Result<Cached, String> {
        // Tuning times its products on the stream: before the capture, not inside it.
        self.tune(body);
        let graph = capture(self.stream, &mut || body.iter().try_for_each(|e| self.run(e)))?;
        let chain = match chain(graph) {
            Ok(c) => c,
            Err(e) => {
                // SAFETY: as above.
                unsafe { drv::cuGraphDestroy(graph) };
                return Err(e);
            }
        };
        // Match the kernel entries, in order, to the graph's kernel nodes that run our
        // functions (cuBLAS adds kernels of its own between them).
        let mut nodes = Vec::new();
        let mut kernels = body.iter().filter_map(|e| match e {
            Entry::Kernel { f, slots, .. } => Some((*f, *slots)),
            _ => None,
        });
        let mut want = kernels.next();
        for node in chain {
            let Some((f, slots)) = want else { break };
            let mut ty = drv::CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
            // SAFETY: the node belongs to the graph.
            if unsafe { drv::cuGraphNodeGetType(node, &mut ty) }.result().is_err() {
                break;
            }
            if ty != drv::CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL {
                continue;
            }
            // SAFETY: a kernel node; the struct is plain data.
            let mut p: drv::CUDA_KERNEL_NODE_PARAMS = unsafe { std::mem::zeroed() };
            if unsafe { drv::cuGraphKernelNodeGetParams_v2(node, &mut p) }.result().is_err() {
                continue;
            }
            if p.func == self.functions[f] {
                nodes.push((node, slots));
                want = kernels.next();
            }
        }
        let mut exec: drv::CUgraphExec = std::ptr::null_mut();
        let inst = if want.is_none() {
            // SAFETY: instantiating the captured graph.
            unsafe { drv::cuGraphInstantiateWithFlags(&mut exec, graph, 0) }.result().map_err(|e| fail("instantiating a graph", e))
        } else {
            Err("a kernel of the step was not found in its graph".to_string())
        };
        if let Err(e) = inst {
            // SAFETY: as above.
            unsafe { drv::cuGraphDestroy(graph) };
            return Err(e);
        }
        Ok(Cached { shape, graph, exec, nodes })
    }

    /// Drops every graph (before the buffers they use are freed, or when products are to run
    /// otherwise), and forgets which step shapes could not be captured.
    pub fn clear(&mut self) {
        for c in self.cache.drain(..) {
            destroy(&c);
        }
        self.uncapturable.clear();
    }
}

/// The graph of what `f` queues on `stream`. `f` runs to its end (the capture is always ended);
/// its first error, or the capture's, is the result, and then no graph is left.
pub fn capture(stream: drv::CUstream, f: &mut dyn FnMut() -> Result<(), String>) -> Result<drv::CUgraph, String> {
    // SAFETY: capture on the caller's own stream, ended below on every path.
    unsafe { drv::cuStreamBeginCapture_v2(stream, drv::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED) }
        .result()
        .map_err(|e| fail("beginning a capture", e))?;
    let queued = f();
    let mut graph: drv::CUgraph = std::ptr::null_mut();
    // SAFETY: the capture begun above.
    let ended = unsafe { drv::cuStreamEndCapture(stream, &mut graph) }.result().map_err(|e| fail("ending a capture", e));
    match queued.and(ended) {
        Ok(()) => Ok(graph),
        Err(e) => {
            if !graph.is_null() {
                // SAFETY: the graph was made by the capture and is not used.
                unsafe { drv::cuGraphDestroy(graph) };
            }
            Err(e)
        }
    }
}

/// `g` by cublasSgemm.
pub fn sgemm(handle: blas_sys::cublasHandle_t, g: &Gemm) -> Result<(), String> {
    let op = |t: bool| if t { blas_sys::cublasOperation_t::CUBLAS_OP_T } else { blas_sys::cublasOperation_t::CUBLAS_OP_N };
    // SAFETY: the operands are live device buffers of the product's sizes.
    unsafe { blas::sgemm(handle, op(g.ta), op(g.tb), g.m, g.n, g.k, &g.alpha, g.a as *const f32, g.lda, g.b as *const f32, g.ldb, &g.beta, g.c as *mut f32, g.ldc) }
        .map_err(|c| fail("a cuBLAS product", c))
}

/// Whether `body` has the shape `shape` (without building the body's shape).
fn same_shape(shape: &[Shape], body: &[Entry]) -> bool {
    let mut it = body.iter().filter_map(Entry::shape);
    shape.iter().all(|s| it.next().as_ref() == Some(s)) && it.next().is_none()
}

/// The driver's view of a kernel's arguments: a pointer to each slot.
fn pointers(slots: &[u64; MAX_SLOTS], n: u8) -> [*mut c_void; MAX_SLOTS] {
    let mut p = [std::ptr::null_mut(); MAX_SLOTS];
    for (p, s) in p.iter_mut().zip(&slots[..n as usize]) {
        *p = s as *const u64 as *mut c_void;
    }
    p
}

fn destroy(c: &Cached) {
    // SAFETY: the graph and its executable are live and no longer launched.
    unsafe {
        drv::cuGraphExecDestroy(c.exec);
        drv::cuGraphDestroy(c.graph);
    }
}

/// The nodes of a captured graph in order: one stream's capture is a chain.
fn chain(graph: drv::CUgraph) -> Result<Vec<drv::CUgraphNode>, String> {
    let mut n = 0usize;
    // SAFETY: counting, then filling, the root nodes of a live graph.
    unsafe { drv::cuGraphGetRootNodes(graph, std::ptr::null_mut(), &mut n) }.result().map_err(|e| fail("reading a graph", e))?;
    if n != 1 {
        return Err(format!("the captured step has {n} first nodes, not a chain"));
    }
    let mut node: drv::CUgraphNode = std::ptr::null_mut();
    unsafe { drv::cuGraphGetRootNodes(graph, &mut node, &mut n) }.result().map_err(|e| fail("reading a graph", e))?;
    let mut out = vec![node];
    loop {
        let mut m = 0usize;
        // SAFETY: as above, for the node's dependents.
        unsafe { drv::cuGraphNodeGetDependentNodes_v2(node, std::ptr::null_mut(), std::ptr::null_mut(), &mut m) }.result().map_err(|e| fail("reading a graph", e))?;
        match m {
            0 => return Ok(out),
            1 => {
                // With the edge's data: leaving it out fails the query on an edge that is not
                // a plain one (a programmatic launch's, should a library's kernel make one).
                // SAFETY: plain data, written for the one dependent.
                let mut edge: drv::CUgraphEdgeData = unsafe { std::mem::zeroed() };
                unsafe { drv::cuGraphNodeGetDependentNodes_v2(node, &mut node, &mut edge, &mut m) }.result().map_err(|e| fail("reading a graph", e))?;
                out.push(node);
            }
            _ => return Err("the captured step branches".into()),
        }
    }
}

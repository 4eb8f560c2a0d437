//! DAE_CUDA_PROFILE=1: the GPU time of every operation, from CUDA events, for finding where a
//! training step's time goes on a machine without a profiler.
//!
//! Each operation runs on its own (no graphs) between two events. Every training step first
//! queues a kernel that keeps the GPU busy for a while (`spin`), so that the host has queued
//! the whole step behind it before the GPU reaches it: the step's operations then run back to
//! back, as in a graph, and each pair of events times one operation alone, not the host's
//! launches. The totals are printed to stderr when the backend is dropped.

use super::graph::Entry;
use cudarc::driver::sys as drv;
use std::collections::HashMap;

/// Cycles that `spin` keeps the GPU busy before each step (about 0.25 ms at 2 GHz).
const SPIN_CYCLES: u64 = 500_000;
/// Operations timed before their events are read back and reused (between steps, so that no
/// step runs on a GPU emptied by the wait).
const BATCH: usize = 2048;
/// Outside steps, the most operations timed before a read-back all the same.
const MAX_PENDING: usize = 8 * BATCH;

pub struct Profile {
    names: Vec<&'static str>,
    /// The index of the `spin` kernel.
    pub spin: usize,
    free: Vec<drv::CUevent>,
    pending: Vec<(String, drv::CUevent, drv::CUevent)>,
    /// Per operation: calls and total milliseconds.
    totals: HashMap<String, (u64, f64)>,
    /// The event after the current step's spin, and the steps whose spin ended before the host
    /// had queued them (their times may include the host's launches), of all steps.
    spin_end: Option<drv::CUevent>,
    late_steps: u64,
    steps: u64,
    pub error: Option<String>,
}

impl Profile {
    pub fn new(names: Vec<&'static str>, spin: usize) -> Profile {
        Profile {
            names,
            spin,
            free: Vec::new(),
            pending: Vec::new(),
            totals: HashMap::new(),
            spin_end: None,
            late_steps: 0,
            steps: 0,
            error: None,
        }
    }

    /// The `spin` kernel's argument.
    pub fn spin_cycles() -> u64 {
        SPIN_CYCLES
    }

    fn label(&self, e: &Entry) -> String {
        match e {
            Entry::Kernel { f, grid, block, .. } => format!("{} ({grid} × {block} threads)", self.names[*f]),
            Entry::Gemm(g) => {
                let t = |x: bool| if x { 'T' } else { 'N' };
                format!("cuBLAS sgemm {}{} m={} n={} k={} β={}", t(g.ta), t(g.tb), g.m, g.n, g.k, g.beta)
            }
            Entry::Htod { data, .. } => format!("copy to the GPU ({} B)", data.len()),
        }
    }

    fn event(&mut self) -> Option<drv::CUevent> {
        if let Some(e) = self.free.pop() {
            return Some(e);
        }
        let mut e = std::ptr::null_mut();
        // SAFETY: writes one event handle; the context is current on this thread (the backend's).
        match unsafe { drv::cuEventCreate(&mut e, 0) }.result() {
            Ok(()) => Some(e),
            Err(c) => {
                self.error.get_or_insert(format!("creating a CUDA event failed: {c:?}"));
                None
            }
        }
    }

    fn record(&mut self, event: drv::CUevent, stream: drv::CUstream) -> bool {
        // SAFETY: the event and the stream are live.
        match unsafe { drv::cuEventRecord(event, stream) }.result() {
            Ok(()) => true,
            Err(c) => {
                self.error.get_or_insert(format!("recording a CUDA event failed: {c:?}"));
                false
            }
        }
    }

    /// Before a step's spin: reads back the times so far when enough are waiting.
    pub fn before_step(&mut self) {
        if self.pending.len() >= BATCH {
            self.drain();
        }
    }

    /// After a step's spin was queued: an event marks its end.
    pub fn after_spin(&mut self, stream: drv::CUstream) {
        if let Some(e) = self.event() {
            if self.record(e, stream) {
                self.spin_end = Some(e);
            } else {
                self.free.push(e);
            }
        }
    }

    /// At the end of a step (the host has queued it): whether the spin had already ended.
    pub fn end_step(&mut self) {
        let Some(e) = self.spin_end.take() else { return };
        self.steps += 1;
        // SAFETY: the event is live and recorded.
        if unsafe { drv::cuEventQuery(e) } == drv::CUresult::CUDA_SUCCESS {
            self.late_steps += 1;
        }
        self.free.push(e);
    }

    /// Runs `run` between two events recorded on `stream`.
    pub fn time<R>(&mut self, e: &Entry, stream: drv::CUstream, run: impl FnOnce() -> R) -> R {
        let Some(start) = self.event() else { return run() };
        let Some(end) = self.event() else {
            self.free.push(start);
            return run();
        };
        let started = self.record(start, stream);
        let r = run();
        if started && self.record(end, stream) {
            let label = self.label(e);
            self.pending.push((label, start, end));
        } else {
            self.free.extend([start, end]);
        }
        if self.pending.len() >= MAX_PENDING {
            self.drain();
        }
        r
    }

    /// Waits for the timed operations and adds their times to the totals.
    pub fn drain(&mut self) {
        let Some((_, _, last)) = self.pending.last() else { return };
        // SAFETY: the event is live and recorded.
        if let Err(c) = unsafe { drv::cuEventSynchronize(*last) }.result() {
            self.error.get_or_insert(format!("waiting for a CUDA event failed: {c:?}"));
        }
        for (label, start, end) in std::mem::take(&mut self.pending) {
            let mut ms = 0f32;
            // SAFETY: both events are live and complete.
            match unsafe { drv::cuEventElapsedTime_v2(&mut ms, start, end) }.result() {
                Ok(()) => {
                    let t = self.totals.entry(label).or_insert((0, 0.0));
                    t.0 += 1;
                    t.1 += ms as f64;
                }
                Err(c) => {
                    self.error.get_or_insert(format!("reading a CUDA event's time failed: {c:?}"));
                }
            }
            self.free.extend([start, end]);
        }
    }

    /// The totals as a table, the longest first.
    pub fn report(&mut self) -> String {
        self.drain();
        let mut rows: Vec<_> = self.totals.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        let all: f64 = rows.iter().map(|r| r.1 .1).sum();
        let mut out = String::from(
            "GPU time by operation (DAE_CUDA_PROFILE=1: one launch at a time, each step queued behind a spin kernel so that its operations run back to back)\n\n| operation | calls | total ms | µs a call | share |\n|---|---|---|---|---|\n",
        );
        for (label, (calls, ms)) in rows {
            out += &format!("| {label} | {calls} | {ms:.1} | {:.2} | {:.1} % |\n", 1000.0 * ms / *calls as f64, 100.0 * ms / all.max(1e-12));
        }
        if self.late_steps > 0 {
            out += &format!(
                "\n{} of {} steps were still being queued when their spin ended: their times may include the host's launches.\n",
                self.late_steps, self.steps
            );
        }
        if let Some(e) = &self.error {
            out += &format!("\n(profile incomplete: {e})\n");
        }
        out
    }

    /// Frees the events.
    pub fn destroy(&mut self) {
        for (_, s, e) in std::mem::take(&mut self.pending) {
            self.free.extend([s, e]);
        }
        self.free.extend(self.spin_end.take());
        for e in self.free.drain(..) {
            // SAFETY: the event is live and no longer used.
            unsafe { drv::cuEventDestroy_v2(e) };
        }
    }
}

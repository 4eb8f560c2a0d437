//! A team of threads that run each operation together: the caller and `n − 1` helpers.
//!
//! A training step at a small batch is a few dozen short operations; handing each to a
//! general-purpose pool and waking sleeping threads costs more than the work. Here the helpers
//! spin for a while between operations, so starting one costs a cache-line handoff, and sleep
//! only when nothing has come for a while. Every thread gets its own index and splits the work by
//! it, so the split (and therefore the result) depends only on the team's size.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it sleeps.
const SPIN: Duration = Duration::from_millis(2);
/// A spinning thread yields its core once every this many spins.
const YIELD_EVERY: u32 = 256;

/// The job being run, seen by the helpers: a thin pointer to a `&(dyn Fn(usize) + Sync)` on the
/// stack of `Team::run`, which keeps it alive until every helper is done with it.
type JobRef<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Incremented for every job; helpers run a job when they see a new generation.
    generation: AtomicUsize,
    /// Helpers still running the current job.
    pending: AtomicUsize,
    /// Points to the current `JobRef` (valid while `pending` > 0).
    job: AtomicPtr<()>,
    /// Guards sleeping on `wake`.
    sleep: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
    /// A helper's job panicked.
    failed: AtomicBool,
}

/// A fixed team of threads. `run` is not reentrant: an operation run by the team must not run
/// the team again.
pub struct Team {
    size: usize,
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    busy: AtomicBool,
}

impl Team {
    /// A team of `size` threads: the caller of `run` and `size − 1` helpers.
    pub fn new(size: usize) -> std::io::Result<Team> {
        let size = size.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        });
        let mut helpers = Vec::with_capacity(size - 1);
        for index in 1..size {
            let s = Arc::clone(&shared);
            helpers.push(
                std::thread::Builder::new()
                    .name(format!("dae-cpu-{index}"))
                    .spawn(move || helper(index, &s))?,
            );
        }
        Ok(Team {
            size,
            shared,
            helpers,
            busy: AtomicBool::new(false),
        })
    }

    /// The number of threads.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `f(index)` on every thread of the team, index 0 on the caller, and returns when all
    /// are done. Panics if any of them panicked.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.size == 1 {
            return f(0);
        }
        assert!(
            !self.busy.swap(true, Ordering::Acquire),
            "a team operation ran the team again"
        );
        let s = &*self.shared;
        // Helpers dereference `job` only between the generation bump below and their decrement
        // of `pending`, and this function waits for `pending` to reach zero before returning,
        // so `job_ref` (and `f`) outlive every use.
        let job_ref: JobRef<'_> = f;
        s.job.store(&job_ref as *const JobRef<'_> as *mut (), Ordering::Relaxed);
        s.pending.store(self.size - 1, Ordering::Relaxed);
        {
            let _guard = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.generation.fetch_add(1, Ordering::Release);
        }
        s.wake.notify_all();
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            // When the machine has more runnable threads than cores, a helper may not be
            // running at all: let it have this core now and then instead of spinning the whole
            // time slice away.
            if spins % YIELD_EVERY == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        s.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        self.busy.store(false, Ordering::Release);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.failed.swap(false, Ordering::AcqRel) {
            panic!("a thread of the CPU team panicked");
        }
    }
}

fn helper(index: usize, s: &Shared) {
    let mut seen = 0usize;
    loop {
        // Spin for a new generation, then sleep until one comes.
        let start = Instant::now();
        let mut spins = 0u32;
        let mut gen = s.generation.load(Ordering::Acquire);
        while gen == seen && !s.stop.load(Ordering::Relaxed) {
            spins = spins.wrapping_add(1);
            if spins % YIELD_EVERY == 0 {
                std::thread::yield_now();
            }
            // Reading the clock costs more than a spin: look at it now and then.
            if spins % 1024 == 0 && start.elapsed() > SPIN {
                let guard = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
                let guard = s
                    .wake
                    .wait_while(guard, |_| {
                        s.generation.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Relaxed)
                    })
                    .unwrap_or_else(|e| e.into_inner());
                drop(guard);
            } else {
                std::hint::spin_loop();
            }
            gen = s.generation.load(Ordering::Acquire);
        }
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        seen = gen;
        // SAFETY: see `Team::run`: the job is alive until `pending` reaches zero, and the
        // Acquire load of the generation made the Relaxed store of `job` visible.
        let job = s.job.load(Ordering::Relaxed) as *const JobRef<'_>;
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*job)(index) }));
        if ok.is_err() {
            s.failed.store(true, Ordering::Release);
        }
        s.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _guard = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

/// The part of `0..len` that thread `index` of `parts` takes, in whole units of `unit`.
#[inline]
pub fn share(len: usize, unit: usize, index: usize, parts: usize) -> std::ops::Range<usize> {
    let units = len.div_ceil(unit.max(1));
    let lo = (units * index / parts) * unit;
    let hi = ((units * (index + 1) / parts) * unit).min(len);
    lo.min(len)..hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_once_per_job() {
        let team = Team::new(3).unwrap();
        for _ in 0..1000 {
            let hits = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];
            team.run(&|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
        // After the helpers have gone to sleep, they still wake for work.
        std::thread::sleep(Duration::from_millis(20));
        let sum = AtomicUsize::new(0);
        team.run(&|i| {
            sum.fetch_add(i + 1, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn shares_cover_the_range_in_whole_units() {
        for len in [0, 1, 5, 16, 17, 100, 785] {
            for parts in 1..5 {
                let mut next = 0;
                for i in 0..parts {
                    let r = share(len, 6, i, parts);
                    assert_eq!(r.start, next);
                    assert!(r.start % 6 == 0 || r.start == len);
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn a_panicking_helper_is_reported() {
        let team = Team::new(2).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            team.run(&|i| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        // The team still works.
        let n = AtomicUsize::new(0);
        team.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }
}

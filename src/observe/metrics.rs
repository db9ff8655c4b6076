//! Per-worker counters and the `Metrics` snapshot summed from them.
//!
//! # Who writes what (the invariant that keeps the hot path free of locks)
//!
//! Every counter of `WorkerCounters` but two is written only by its
//! worker's thread — the worker loop, or a coroutine running on it — with a
//! `Relaxed` load and a `Relaxed` store (`bump`), which compile to plain
//! `mov`s: no `lock`-prefixed read-modify-write. Other threads only read
//! them. The exceptions: `attention`, which other threads set bits in
//! (`fetch_or`, rare) and the worker reads once per pick in place of the
//! shutdown flag it used to read there; and `longest_hold_ns`, written
//! only by the monitor thread (src/observe/watchdog.rs).
//!
//! What a pick and a park pay: the pick counter (the fairness tick the
//! worker kept anyway, now published), one store of the running task per
//! pick, and per park the reason the park site stores on the task and a
//! coarse-clock stamp. Measured with callgrind (instructions per
//! operation, see BENCHMARKS.md): counting parks by reason at each park
//! and uncounting them at each wake, as a first version did, added 54
//! instructions to a park/unpark round trip of 368 (+15 %), against a
//! target of 5 %; so parks are counted when `metrics()` is called instead.
//!
//! # How the coroutine counts follow
//!
//! - alive = spawned − finished − dropped unrun; not started = spawned −
//!   started − dropped unrun (spawns from threads outside the runtime, and
//!   tasks dropped unrun, are counted in `RuntimeCounters` with an atomic
//!   add: neither is a hot path);
//! - parked, by reason: counted by `metrics()` from each worker's list of
//!   started tasks (under the lock the worker takes only when a task
//!   starts or finishes): a task in state PARKED counts under the reason
//!   its park site recorded (`set_park_reason`). A call thus costs a load
//!   or two per started coroutine;
//! - running = workers whose last resumed task is still running (the slot
//!   is cleared when the task finishes or the worker goes looking for
//!   work);
//! - runnable = started − finished − parked − running.
//!
//! Busy time is measured on the sleep path: the worker reads the clock
//! around `epoll_wait` anyway, and adds the sleep to `idle_ns`; a sleep in
//! progress is added by the reader (`sleeping_since_ns`). Spinning for work
//! counts as busy.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{REASONS, clock};
use crate::blocking::BlockingStats;

/// Adds one to a counter only its owner writes: a plain load and store.
#[inline(always)]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// The counters of one worker (see the module docs for who writes them).
/// Aligned to two cache lines so that the owner's stores do not evict the
/// fields other workers read in `WorkerShared` (its stealer, its flags).
#[repr(align(128))]
pub(crate) struct WorkerCounters {
    /// Picks: one per resume of a task (the worker's fairness tick). The
    /// watchdog's "is it moving".
    pub switches: AtomicU64,
    /// The address of the task resumed last, until it finishes or the
    /// worker goes looking for work; 0 then. Read by other threads under
    /// the worker's `live` lock (see `inspect::probe_stall`).
    pub running: AtomicUsize,
    /// Requests for the worker's attention (`ATTEND_*` bits), set by other
    /// threads, looked at once per pick and cleared by the worker.
    pub attention: AtomicU32,
    pub polls: AtomicU64,
    pub steals: AtomicU64,
    pub started: AtomicU64,
    pub finished: AtomicU64,
    /// Spawns made by coroutines running on this worker.
    pub spawned: AtomicU64,
    pub idle_ns: AtomicU64,
    /// Nanoseconds since the clock's epoch when the current sleep began;
    /// 0 while awake.
    pub sleeping_since_ns: AtomicU64,
    pub longest_hold_ns: AtomicU64,
    pub started_at: Instant,
}

impl WorkerCounters {
    pub fn new() -> WorkerCounters {
        WorkerCounters {
            switches: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            attention: AtomicU32::new(0),
            polls: AtomicU64::new(0),
            steals: AtomicU64::new(0),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            sleeping_since_ns: AtomicU64::new(0),
            longest_hold_ns: AtomicU64::new(0),
            started_at: Instant::now(),
        }
    }

    /// The worker is about to sleep in `epoll_wait`; `now` was just read.
    #[inline]
    pub fn sleep_begins(&self, now: Instant) {
        self.sleeping_since_ns
            .store(clock::nanos_since_epoch(now).max(1), Ordering::Relaxed);
    }

    /// The worker woke at `woke` from a sleep that began at `began`.
    #[inline]
    pub fn sleep_ends(&self, began: Instant, woke: Instant) {
        self.sleeping_since_ns.store(0, Ordering::Relaxed);
        let slept = woke.saturating_duration_since(began).as_nanos() as u64;
        self.idle_ns.store(
            self.idle_ns.load(Ordering::Relaxed).wrapping_add(slept),
            Ordering::Relaxed,
        );
        bump(&self.polls);
        clock::advance(woke);
    }

    fn busy(&self, now: Instant) -> (Duration, Duration) {
        let uptime = now.saturating_duration_since(self.started_at);
        let mut idle = self.idle_ns.load(Ordering::Relaxed);
        let since = self.sleeping_since_ns.load(Ordering::Relaxed);
        if since != 0 {
            idle += clock::nanos_since_epoch(now).saturating_sub(since);
        }
        (uptime, uptime.saturating_sub(Duration::from_nanos(idle)))
    }
}

/// The runtime-wide counters of events that happen off the workers.
#[derive(Default)]
pub(crate) struct RuntimeCounters {
    /// Spawns from threads that are not workers of this runtime.
    pub spawned_outside: AtomicU64,
    /// Tasks dropped without running: at shutdown before they started,
    /// or when no stack could be had for them.
    pub dropped_unrun: AtomicU64,
}

/// Parked coroutines by what they wait for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParkedBy {
    /// On a socket or another fd (`fibra::net`, `fibra::io`).
    pub io: u64,
    /// In `fibra::sleep`.
    pub timer: u64,
    /// In `JoinHandle::join`.
    pub join: u64,
    /// On a `fibra::sync` lock, channel or other primitive.
    pub sync: u64,
    /// In `fibra::park` / `park_timeout`.
    pub park: u64,
    /// On a job of a syscall thread (`fibra::blocking`, `fibra::fs`).
    pub blocking: u64,
}

impl ParkedBy {
    /// All parked coroutines.
    pub fn total(&self) -> u64 {
        self.io + self.timer + self.join + self.sync + self.park + self.blocking
    }
}

/// What one worker has done since it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerMetrics {
    /// Time since the worker started.
    pub uptime: Duration,
    /// Of that, the time it was not asleep in `epoll_wait` (running
    /// coroutines, scheduling, looking for work).
    pub busy: Duration,
    /// Coroutine resumes (one per scheduling pick).
    pub switches: u64,
    /// `epoll_wait` calls, blocking or not.
    pub polls: u64,
    /// Batches of not-yet-started coroutines taken from other workers or
    /// the global queue.
    pub steals: u64,
    /// The longest a coroutine has held this worker without parking or
    /// yielding, as seen by the watchdog (which looks every check interval:
    /// shorter holds show as zero).
    pub longest_hold: Duration,
    /// Whether a coroutine is running on it right now.
    pub running: bool,
}

/// A snapshot of a runtime (`Runtime::metrics()`, `fibra::metrics()`).
///
/// Summed from per-worker counters that keep changing while they are read:
/// each count is exact when the runtime is still, and off by the
/// coroutines that changed state during the read otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Worker threads.
    pub workers: usize,
    /// Coroutines spawned and not finished (started or not).
    pub alive: u64,
    /// Running on a worker right now.
    pub running: u64,
    /// Started, ready to run, waiting for their worker.
    pub runnable: u64,
    /// Parked, all reasons together (`parked_by` splits them).
    pub parked: u64,
    /// Parked, by what they wait for.
    pub parked_by: ParkedBy,
    /// Spawned and not started yet (no stack yet).
    pub not_started: u64,
    /// Coroutines spawned since the runtime started.
    pub spawned: u64,
    /// Coroutines that have run to their end.
    pub finished: u64,
    /// Each worker's own figures.
    pub per_worker: Vec<WorkerMetrics>,
    /// The syscall threads of `fibra::blocking`.
    pub blocking: BlockingStats,
    /// Coroutine stacks mapped right now in this process (all runtimes,
    /// pooled ones included).
    pub stacks_mapped: usize,
    /// Of those, the ones kept in fibra's pools for reuse.
    pub stacks_pooled: usize,
}

/// What `Metrics` is summed from: one runtime's counters and its workers'.
pub(crate) struct Sources<'a> {
    /// Each worker's counters, whether it runs a task, and its parked
    /// tasks by reason.
    pub workers: Vec<(&'a WorkerCounters, bool, [u64; REASONS])>,
    pub runtime: &'a RuntimeCounters,
    pub blocking: BlockingStats,
}

impl Metrics {
    pub(crate) fn sum(sources: Sources<'_>) -> Metrics {
        let now = Instant::now();
        let mut parked = [0u64; REASONS];
        let (mut spawned, mut started, mut finished) = (0u64, 0u64, 0u64);
        let mut running = 0u64;
        let mut per_worker = Vec::with_capacity(sources.workers.len());
        for &(counters, is_running, mine) in &sources.workers {
            for (sum, mine) in parked.iter_mut().zip(mine) {
                *sum += mine;
            }
            spawned += counters.spawned.load(Ordering::Relaxed);
            started += counters.started.load(Ordering::Relaxed);
            finished += counters.finished.load(Ordering::Relaxed);
            running += is_running as u64;
            let (uptime, busy) = counters.busy(now);
            per_worker.push(WorkerMetrics {
                uptime,
                busy,
                switches: counters.switches.load(Ordering::Relaxed),
                polls: counters.polls.load(Ordering::Relaxed),
                steals: counters.steals.load(Ordering::Relaxed),
                longest_hold: Duration::from_nanos(
                    counters.longest_hold_ns.load(Ordering::Relaxed),
                ),
                running: is_running,
            });
        }
        spawned += sources.runtime.spawned_outside.load(Ordering::Relaxed);
        let dropped = sources.runtime.dropped_unrun.load(Ordering::Relaxed);
        let [io, timer, join, sync, park, blocking] = parked;
        let parked_by = ParkedBy {
            io,
            timer,
            join,
            sync,
            park,
            blocking,
        };
        let parked = parked_by.total();
        let started_alive = started.saturating_sub(finished);
        let stacks = crate::stack::stats();
        Metrics {
            workers: sources.workers.len(),
            alive: spawned.saturating_sub(finished + dropped),
            running,
            runnable: started_alive.saturating_sub(parked + running),
            parked,
            parked_by,
            not_started: spawned.saturating_sub(started + dropped),
            spawned,
            finished,
            per_worker,
            blocking: sources.blocking,
            stacks_mapped: stacks
                .mappings_created
                .saturating_sub(stacks.mappings_released),
            stacks_pooled: stacks.pooled,
        }
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.parked_by;
        writeln!(
            f,
            "coroutines: {} alive: {} running, {} runnable, {} parked, {} not started \
             ({} spawned, {} finished)",
            self.alive,
            self.running,
            self.runnable,
            self.parked,
            self.not_started,
            self.spawned,
            self.finished
        )?;
        writeln!(
            f,
            "parked on: io {}, timer {}, join {}, sync {}, park {}, blocking {}",
            p.io, p.timer, p.join, p.sync, p.park, p.blocking
        )?;
        for (index, w) in self.per_worker.iter().enumerate() {
            let busy = if w.uptime.is_zero() {
                0.0
            } else {
                100.0 * w.busy.as_secs_f64() / w.uptime.as_secs_f64()
            };
            writeln!(
                f,
                "worker {index}: {}busy {:.1?} of {:.1?} ({busy:.0}%), {} switches, {} polls, \
                 {} steals, longest hold {:.1?}",
                if w.running { "running, " } else { "" },
                w.busy,
                w.uptime,
                w.switches,
                w.polls,
                w.steals,
                w.longest_hold
            )?;
        }
        writeln!(
            f,
            "syscall threads: {} busy, {} idle, {} jobs queued",
            self.blocking.threads.saturating_sub(self.blocking.idle),
            self.blocking.idle,
            self.blocking.queued
        )?;
        write!(
            f,
            "stacks: {} mapped, {} pooled (process-wide)",
            self.stacks_mapped, self.stacks_pooled
        )
    }
}

//! Observability: metrics, the coroutine dump, the stalled-worker watchdog.
//!
//! What each file owns:
//!
//! - `metrics.rs` — the per-worker counters the scheduler bumps, and
//!   `Metrics`, the snapshot `Runtime::metrics()` sums them into;
//! - `dump.rs` — `Dump`, what `Runtime::dump()` returns: every live
//!   coroutine, grouped by where it is parked (the workers record the
//!   backtraces themselves, see src/runtime/inspect.rs);
//! - `watchdog.rs` — the one monitor thread of the process: it keeps the
//!   coarse clock, notices a worker held by one coroutine for longer than
//!   a threshold and says which and where, and prints a dump when the
//!   opt-in dump signal arrives;
//! - `signals.rs` — the two signal handlers (the dump signal, and the
//!   backtrace of a worker stuck in a system call), each of which only
//!   writes to preallocated memory or an eventfd.
//!
//! # Cost on the hot path
//!
//! Counters are per worker and written only by their worker, with a plain
//! `Relaxed` load and store (no `lock`-prefixed instruction); readers sum
//! them and accept that the sum is not one instant's snapshot. Per pick a
//! worker publishes its pick counter (the fairness tick it kept anyway)
//! and the task it resumes (one store), and looks at its attention word
//! (in place of the shutdown flag it looked at before); per park the park
//! site stores its reason on the task, and the worker stamps the task with
//! the coarse clock. A wake costs nothing more: parked coroutines are
//! counted by reason when `metrics()` is called (metrics.rs says why).
//! Nothing here reads the clock on a pick: the coarse clock is advanced
//! where the worker reads the clock anyway (around its `epoll_wait`, at
//! its timer looks) and by the monitor thread while any worker is busy.

pub(crate) mod dump;
pub(crate) mod metrics;
mod signals;
pub(crate) mod watchdog;

pub use dump::{CoroutineInfo, CoroutineState, Dump, Frame, ParkStack};
pub use metrics::{Metrics, ParkedBy, WorkerMetrics};

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use metrics::WorkerCounters;

/// `WorkerCounters::attention` bit: a dump request is waiting.
pub(crate) const ATTEND_DUMP: u32 = 1;
/// `WorkerCounters::attention` bit: the watchdog reported a stall of this
/// worker; the worker prints its end.
pub(crate) const ATTEND_STALL_END: u32 = 2;
/// `WorkerCounters::attention` bit: the runtime is shutting down (never
/// cleared; the worker's per-pick look at `attention` is its only look at
/// the shutdown flag).
pub(crate) const ATTEND_SHUTDOWN: u32 = 4;

/// What observers see of one worker, beside its queues.
pub(crate) struct WorkerWatch {
    /// Counters, the running task and the attention word (one aligned
    /// block the worker writes).
    pub counters: WorkerCounters,
    /// The worker thread's kernel id (for `/proc/self/task/<tid>` and
    /// `tgkill`), 0 before it starts.
    pub tid: AtomicI32,
    /// Set when the worker loop has ended: it answers no more requests.
    pub exited: AtomicBool,
    /// Dumps waiting for this worker's answer (src/runtime/inspect.rs).
    pub dump_requests: Mutex<Vec<Arc<dump::Request>>>,
    /// The stall the watchdog reported and the worker has not yet seen end.
    pub stall: Mutex<Option<watchdog::StallNote>>,
}

impl WorkerWatch {
    pub fn new() -> WorkerWatch {
        WorkerWatch {
            counters: WorkerCounters::new(),
            tid: AtomicI32::new(0),
            exited: AtomicBool::new(false),
            dump_requests: Mutex::new(Vec::new()),
            stall: Mutex::new(None),
        }
    }

    /// Called on the worker thread when it starts.
    pub fn worker_started(&self) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        self.tid.store(tid, Ordering::Relaxed);
    }

    /// Asks the worker to look at `bits` at its next pick, and wakes it if
    /// it sleeps.
    pub fn ask(&self, bits: u32) {
        self.counters.attention.fetch_or(bits, Ordering::SeqCst);
    }
}

/// Why a coroutine is parked: recorded by the code that parks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ParkReason {
    /// Waiting for a socket or another fd to be ready (`fibra::net`,
    /// `fibra::io::Pollable`).
    Io = 0,
    /// In `fibra::sleep` / `sleep_until`.
    Timer = 1,
    /// In `JoinHandle::join` (or `Runtime::block_on` from a coroutine).
    Join = 2,
    /// Waiting for a lock, a channel or another `fibra::sync` primitive.
    Sync = 3,
    /// In `fibra::park` / `park_timeout`.
    Park = 4,
    /// Waiting for a job on a syscall thread (`fibra::blocking`, `fibra::fs`).
    Blocking = 5,
}

/// Number of `ParkReason`s.
pub(crate) const REASONS: usize = 6;

impl ParkReason {
    /// All reasons, in the order of their numbers.
    pub const ALL: [ParkReason; REASONS] = [
        ParkReason::Io,
        ParkReason::Timer,
        ParkReason::Join,
        ParkReason::Sync,
        ParkReason::Park,
        ParkReason::Blocking,
    ];

    pub(crate) fn from_u8(value: u8) -> ParkReason {
        ParkReason::ALL
            .get(value as usize)
            .copied()
            .unwrap_or(ParkReason::Park)
    }

    /// A short lowercase name: `io`, `timer`, `join`, `sync`, `park`,
    /// `blocking`.
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::Io => "io",
            ParkReason::Timer => "timer",
            ParkReason::Join => "join",
            ParkReason::Sync => "sync",
            ParkReason::Park => "park",
            ParkReason::Blocking => "blocking",
        }
    }
}

impl fmt::Display for ParkReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The coarse clock: milliseconds since the first runtime started, kept
/// up to date by whoever reads the real clock anyway (workers around
/// `epoll_wait` and at their timer looks, the monitor thread at each
/// check), so that a park can be stamped with one load. Stale by at most
/// the monitor's check interval while any worker runs.
pub(crate) mod clock {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    static EPOCH: OnceLock<Instant> = OnceLock::new();
    static COARSE_MS: AtomicU64 = AtomicU64::new(0);

    /// The clock's zero; fixed by the first call.
    pub fn epoch() -> Instant {
        *EPOCH.get_or_init(Instant::now)
    }

    /// Nanoseconds from the epoch to `at` (0 before it).
    pub fn nanos_since_epoch(at: Instant) -> u64 {
        at.saturating_duration_since(epoch()).as_nanos() as u64
    }

    /// Records that the real clock read `now`. A plain store: two threads
    /// racing may move it back by the difference of their reads, which a
    /// millisecond clock does not notice.
    #[inline]
    pub fn advance(now: Instant) {
        let ms = now.saturating_duration_since(epoch()).as_millis() as u64;
        COARSE_MS.store(ms, Ordering::Relaxed);
    }

    /// The coarse time, in milliseconds since the epoch.
    #[inline]
    pub fn now_ms() -> u64 {
        COARSE_MS.load(Ordering::Relaxed)
    }
}

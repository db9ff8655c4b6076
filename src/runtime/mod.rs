//! The N:M scheduler: coroutines multiplexed onto one worker thread per CPU.
//!
//! This module is the public face (mirroring `std::thread`): `spawn`,
//! `Builder`, `JoinHandle`, `yield_now`, `sleep`, `park`, `current`, and
//! `Runtime` to configure one explicitly. The machinery lives in:
//!
//! - `spawn.rs` — `Builder`, `spawn`, and the body each task runs on its
//!   stack (closure, then the epilogue that delivers its result);
//! - `task.rs` — a scheduled coroutine and the park/unpark state word (the
//!   one waiting primitive every other wait is built on);
//! - `worker.rs` — worker threads, their run queues, stealing, idling,
//!   shutdown;
//! - `placement.rs` — choosing the next task, placing and stealing fresh
//!   tasks;
//! - `timer.rs` — per-worker deadlines;
//! - `join.rs` — results and `JoinHandle`;
//! - `inspect.rs` — what the workers tell observers: dumps (each parked
//!   coroutine records its own backtrace), stall ends, metrics
//!   (src/observe has the rest);
//! - `config.rs` — the default runtime's settings from the environment
//!   (`FIBRA_WORKERS`, `FIBRA_STACK_SIZE`, ...).
//! - `fork.rs` — what a `fork(2)` does to runtimes: dead in the child.
//!
//! Every call works on a plain OS thread too, by blocking that thread: `park`
//! is `std::thread::park`, `join` blocks, `sleep` is `std::thread::sleep`.
//!
//! # What a coroutine may assume
//!
//! A coroutine runs its whole life on the worker that first runs it (its
//! "home"), so `thread_local!` values and `!Send` values held across a park
//! behave as on one thread. Note what that means: a `thread_local!` is shared
//! by all coroutines of a worker, and a `std::sync::Mutex` held across a park
//! blocks the whole worker (and can deadlock it); use `fibra::sync` locks for
//! waits that park. Coroutines are never preempted: between two park points
//! (`park`, `sleep`, `yield_now`, `join`, blocking I/O) no other coroutine of
//! the same worker runs.

mod config;
mod fork;
mod handle;
mod idle;
mod inspect;
mod join;
mod live;
mod placement;
mod spawn;
mod task;
mod task_ref;
mod timer;
mod worker;

use std::io;
use std::panic::resume_unwind;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Worker as Deque};

use crate::observe::metrics::RuntimeCounters;
use crate::observe::{Dump, Metrics, ParkReason};
use crate::stack::DEFAULT_STACK_SIZE;
use crate::sync::local::LocalMap;

pub use handle::{Coroutine, current};
pub use join::JoinHandle;
pub use spawn::{Builder, spawn};
pub use task::Cancelled;

pub(crate) use fork::runtimes_running;
pub(crate) use handle::current_id;
pub(crate) use inspect::{StallProbe, dump as dump_of, probe_stall};
pub(crate) use spawn::spawn_unchecked;

pub(crate) use join::{JoinCell, ResultSender};
use task::{NOTIFIED, PARKED, RUNNING, Suspend, Task};
use task_ref::TaskRef;
use worker::{WorkerShared, current_task, current_worker};

/// What all workers of one runtime share.
pub(crate) struct Shared {
    workers: Vec<WorkerShared>,
    injector: Injector<TaskRef>,
    idle: Mutex<Vec<usize>>,
    n_idle: AtomicUsize,
    n_spinning: AtomicUsize,
    shutdown: AtomicBool,
    stack_size: usize,
    /// The syscall threads of `fibra::blocking` (a layer above this one,
    /// owned here so that each runtime has its own pool and knobs).
    blocking: Arc<crate::blocking::Pool>,
    /// Counts kept off the workers (src/observe/metrics.rs).
    counters: RuntimeCounters,
    /// The watchdog's threshold (None: no stall reports).
    stall_threshold: Option<Duration>,
    /// The signal that prints a dump of this runtime, if any.
    dump_signal: Option<i32>,
}

// ---------------------------------------------------------------------------
// Runtime

/// Runtimes built and not yet dropped.
static LIVE_RUNTIMES: AtomicUsize = AtomicUsize::new(0);

/// A set of worker threads running coroutines. Dropping it cancels every
/// coroutine still alive, waits for them to unwind, and joins the workers.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// Configures a `Runtime`.
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    workers: Option<usize>,
    stack_size: usize,
    thread_name: String,
    max_blocking_threads: usize,
    blocking_idle_timeout: Duration,
    stall_threshold: Option<Duration>,
    dump_signal: Option<i32>,
}

/// The default `RuntimeBuilder::stall_threshold`.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_millis(100);

impl RuntimeBuilder {
    /// Number of worker threads (default: `num_cpus::get()`, which respects
    /// cgroup CPU quotas). At least 1.
    pub fn workers(mut self, n: usize) -> RuntimeBuilder {
        self.workers = Some(n.max(1));
        self
    }

    /// Default usable stack bytes of the coroutines this runtime spawns
    /// (rounded up to whole pages; `build` refuses an absurd size).
    pub fn stack_size(mut self, bytes: usize) -> RuntimeBuilder {
        self.stack_size = bytes;
        self
    }

    /// Cap on the syscall threads that run `fibra::blocking::unblock` jobs
    /// (default `blocking::DEFAULT_MAX_BLOCKING_THREADS`); more jobs queue.
    pub fn max_blocking_threads(mut self, n: usize) -> RuntimeBuilder {
        self.max_blocking_threads = n.max(1);
        self
    }

    /// How long an idle syscall thread waits for a job before it exits
    /// (default `blocking::DEFAULT_BLOCKING_IDLE_TIMEOUT`).
    pub fn blocking_idle_timeout(mut self, timeout: Duration) -> RuntimeBuilder {
        self.blocking_idle_timeout = timeout;
        self
    }

    /// How long one coroutine may hold a worker without reaching a park
    /// point before the watchdog reports it on stderr (default
    /// `DEFAULT_STALL_THRESHOLD`, 100 ms; `None` turns the reports off).
    /// The report names the worker, the coroutine and where it is (the
    /// system call it is blocked in, with a backtrace when one can be
    /// taken safely), with a hint; a second line reports when the stall
    /// ends, and how long it lasted. The watchdog looks about every eighth
    /// of the threshold (at most every 25 ms), so a stall is reported
    /// within the threshold plus a quarter of it.
    pub fn stall_threshold(mut self, threshold: Option<Duration>) -> RuntimeBuilder {
        self.stall_threshold = threshold.filter(|t| !t.is_zero());
        self
    }

    /// Prints `Runtime::dump()` to stderr whenever the process receives
    /// `signal` (e.g. `libc::SIGUSR1`), without stopping it. The signal's
    /// handler only records the signal; the watchdog's thread takes and
    /// prints the dump. `build` fails with `InvalidInput` for a signal the
    /// process cannot use this way (one that reports a fault, `SIGKILL`,
    /// `SIGSTOP`, or one that already has a handler not installed by
    /// fibra). For the default runtime: `FIBRA_DUMP_SIGNAL=USR1`.
    pub fn dump_signal(mut self, signal: i32) -> RuntimeBuilder {
        self.dump_signal = Some(signal);
        self
    }

    /// Prefix of the worker threads' names (default `fibra-worker`).
    pub fn thread_name(mut self, prefix: impl Into<String>) -> RuntimeBuilder {
        self.thread_name = prefix.into();
        self
    }

    /// Starts the worker threads.
    pub fn build(self) -> io::Result<Runtime> {
        // Checked once here, so that a spawn with the default size need not.
        let stack_size = crate::stack::checked_usable_size(self.stack_size)?;
        install_panic_hook();
        if let Some(signal) = self.dump_signal {
            crate::observe::watchdog::listen_for_dump_signal(signal)?;
        }
        let n = self.workers.unwrap_or_else(num_cpus::get).max(1);
        let deques: Vec<Deque<TaskRef>> = (0..n).map(|_| Deque::new_fifo()).collect();
        let shared = Arc::new(Shared {
            workers: deques
                .iter()
                .map(|d| WorkerShared::new(d.stealer()))
                .collect::<io::Result<_>>()?,
            injector: Injector::new(),
            idle: Mutex::new(Vec::with_capacity(n)),
            n_idle: AtomicUsize::new(0),
            n_spinning: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            stack_size,
            blocking: Arc::new(crate::blocking::Pool::new(
                self.max_blocking_threads,
                self.blocking_idle_timeout,
                format!("{}-blocking", self.thread_name),
            )),
            counters: RuntimeCounters::default(),
            stall_threshold: self.stall_threshold,
            dump_signal: self.dump_signal,
        });
        LIVE_RUNTIMES.fetch_add(1, Ordering::AcqRel);
        fork::register(&shared);
        let mut runtime = Runtime {
            shared: Arc::clone(&shared),
            threads: Vec::with_capacity(n),
        };
        for (index, deque) in deques.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let thread = thread::Builder::new()
                .name(format!("{}-{index}", self.thread_name))
                .spawn(move || {
                    let worker = worker::Worker::new(index, shared, deque);
                    worker.run();
                })?;
            runtime.threads.push(thread);
        }
        crate::observe::watchdog::watch(&shared);
        Ok(runtime)
    }
}

impl Runtime {
    /// A builder with the defaults.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            workers: None,
            stack_size: DEFAULT_STACK_SIZE,
            thread_name: "fibra-worker".into(),
            max_blocking_threads: crate::blocking::DEFAULT_MAX_BLOCKING_THREADS,
            blocking_idle_timeout: crate::blocking::DEFAULT_BLOCKING_IDLE_TIMEOUT,
            stall_threshold: Some(DEFAULT_STALL_THRESHOLD),
            dump_signal: None,
        }
    }

    /// A runtime with the defaults: one worker per CPU.
    pub fn new() -> io::Result<Runtime> {
        Runtime::builder().build()
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// The state of this runtime's syscall threads (`fibra::blocking`).
    pub fn blocking_stats(&self) -> crate::blocking::BlockingStats {
        self.shared.blocking.stats()
    }

    /// A snapshot of this runtime: how many coroutines are alive, running,
    /// runnable, parked (and on what), not started; per worker its busy
    /// time, switches, polls, steals and longest hold; the syscall threads
    /// and stacks. Cheap: it sums per-worker counters.
    pub fn metrics(&self) -> Metrics {
        inspect::metrics(&self.shared)
    }

    /// Every live coroutine of this runtime — id, name, state, how long it
    /// has been parked and where (a symbolised backtrace) — without
    /// stopping the runtime. `Display` groups coroutines parked at the same
    /// place (`{:#}` lists each one). Safe to call from any thread or
    /// coroutine; a worker held by a coroutine that does not park cannot
    /// answer within a second, and its coroutines are then listed without
    /// backtraces. See src/runtime/inspect.rs for how the backtraces are
    /// taken.
    pub fn dump(&self) -> Dump {
        inspect::dump(&self.shared)
    }

    /// Spawns a coroutine on this runtime.
    ///
    /// # Panics
    /// If the closure cannot fit on a default-sized stack;
    /// `Builder::spawn_on` returns that error instead.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Builder::new()
            .spawn_on(self, f)
            .unwrap_or_else(|e| panic!("fibra: cannot spawn a coroutine: {e}"))
    }

    /// Runs `f` as a coroutine of this runtime and waits for its value,
    /// blocking the calling thread (or parking the calling coroutine). A
    /// panic in `f` continues in the caller.
    ///
    /// `f` may borrow the caller's locals, as with `std::thread::scope`:
    /// this call returns (or unwinds) only once `f` has finished or been
    /// dropped — it waits without a cancellation point even when the
    /// calling coroutine is cancelled, and a runtime that shuts down drops
    /// `f` before it reports.
    ///
    /// ```
    /// let rt = fibra::Runtime::builder().workers(1).build().unwrap();
    /// let words = vec!["a", "bc", "def"];
    /// let total = rt.block_on(|| words.iter().map(|w| w.len()).sum::<usize>());
    /// assert_eq!(total, 6);
    /// ```
    ///
    /// # Panics
    /// If `f` panics (with its payload), is cancelled (a `Cancelled`
    /// payload), or cannot start (its stack cannot be mapped).
    pub fn block_on<'a, F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'a,
        T: Send + 'a,
    {
        // SAFETY: we wait below with `wait(true)`, which returns only once
        // the cell is DONE, i.e. once `f` has been run or dropped, and has
        // no cancellation point; nothing before it can unwind after the spawn.
        let handle = unsafe { spawn_unchecked(Arc::clone(&self.shared), Builder::new(), f) }
            .unwrap_or_else(|e| panic!("fibra: cannot spawn a coroutine: {e}"));
        set_park_reason(ParkReason::Join);
        match handle.join_uncancelled() {
            Ok(value) => value,
            Err(payload) => match payload.downcast::<io::Error>() {
                Ok(error) => panic!("fibra: the coroutine could not start: {error}"),
                Err(payload) => resume_unwind(payload),
            },
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if fork::is_inherited(&self.shared) {
            // A forked child's copy: its threads are the parent's (fork.rs).
            std::mem::forget(std::mem::take(&mut self.threads));
            return;
        }
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for worker in &self.shared.workers {
            worker.watch.ask(crate::observe::ATTEND_SHUTDOWN);
        }
        let me = thread::current().id();
        for (index, handle) in self.threads.drain(..).enumerate() {
            self.shared.workers[index].wake();
            // A runtime dropped by one of its own coroutines cannot wait for
            // the worker it runs on; that worker exits once it is done.
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
        worker::drain_unstarted(&self.shared.injector);
        self.shared.blocking.shut_down();
        if LIVE_RUNTIMES.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last runtime: give back the stacks its workers handed to
            // the shared pool (their own caches went with their threads).
            crate::stack::trim_shared();
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.workers())
            .finish()
    }
}

/// The runtime `fibra::spawn` uses outside any runtime: started on first
/// use with one worker per CPU (or as the environment says, see
/// config.rs), never dropped.
fn default_runtime() -> &'static Runtime {
    static DEFAULT: OnceLock<Runtime> = OnceLock::new();
    let runtime = DEFAULT.get_or_init(|| {
        config::builder_from_env()
            .and_then(RuntimeBuilder::build)
            .unwrap_or_else(|e| panic!("fibra: cannot start the default runtime: {e}"))
    });
    // Never dropped, so shut down only in a forked child (fork.rs).
    if fork::in_forked_child() && runtime.shared.shutdown.load(Ordering::Relaxed) {
        return fork::default_runtime_in_child();
    }
    runtime
}

/// `Runtime::metrics()` of the calling coroutine's runtime, or of the
/// default runtime (started if need be).
pub fn metrics() -> Metrics {
    inspect::metrics(&current_shared())
}

/// `Runtime::dump()` of the calling coroutine's runtime, or of the default
/// runtime (started if need be).
pub fn dump() -> Dump {
    inspect::dump(&current_shared())
}

/// The syscall-thread pool of the calling coroutine's runtime; None on a
/// thread that is not a worker.
pub(crate) fn current_blocking_pool() -> Option<Arc<crate::blocking::Pool>> {
    current_worker().map(|worker| Arc::clone(&worker.shared.blocking))
}

/// The runtime of the calling coroutine, or the default one.
pub(crate) fn current_shared() -> Arc<Shared> {
    match current_worker() {
        Some(worker) => Arc::clone(&worker.shared),
        None => Arc::clone(&default_runtime().shared),
    }
}

// ---------------------------------------------------------------------------
// Parking, yielding, sleeping

/// Switches from the running task back to its worker.
///
/// Inlined into every caller, down to the public `park`/`yield_now`, which
/// are `#[inline]` too: the switch's `ret` is predicted only if the
/// coroutine's calls and returns between being resumed and suspending again
/// balance, i.e. if it suspends from the same frame it was resumed in. A
/// suspend inside a non-inlined `yield_now` would return out of that frame
/// after every resume and call back into it: two mispredictions per switch
/// (measured: 37 ns per yield instead of 13).
#[inline(always)]
fn suspend(task: &Task, why: Suspend) {
    let yielder = task.yielder.get();
    // SAFETY: set by the task's closure on entry, valid while it runs; we are
    // running on that task's stack.
    unsafe { (*yielder).suspend(why) };
}

/// Unwinds the running task if it has been cancelled and has not yet been
/// told so. Raised once per task: its destructors may park while the
/// cancellation unwinds them, and a second unwind from there would abort.
///
/// This cannot ask `thread::panicking()`: std keeps the panic count per OS
/// thread, so while one coroutine is suspended halfway through unwinding,
/// `panicking()` is true in every other coroutine of its worker.
#[inline(always)]
fn check_cancelled(task: &Task) {
    if task.cancelled.load(Ordering::Acquire) {
        unwind_cancelled(task);
    }
}

#[cold]
#[inline(never)]
fn unwind_cancelled(task: &Task) {
    if !task.cancel_raised.replace(true) {
        resume_unwind(Box::new(Cancelled));
    }
}

/// Parks the running task until unparked; the common, inlined case.
#[inline(always)]
fn park_task_untimed(task: &Task) {
    check_cancelled(task);
    park_task_raw(task);
    check_cancelled(task);
}

/// The park itself, with no cancellation point.
#[inline(always)]
fn park_task_raw(task: &Task) {
    if task
        .state
        .compare_exchange(RUNNING, PARKED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        suspend(task, Suspend::Park);
        if task.capture.get() {
            // Resumed by a dump, not by a wake (see inspect.rs).
            inspect::capture_while_parked(task);
        }
    } else {
        // A token (NOTIFIED) was waiting: consume it with a swap, which
        // reads (and synchronizes with) the latest unpark's write; a plain
        // store could let the caller's re-check miss that unpark's condition
        // (task.rs, "Memory ordering").
        task.state.swap(RUNNING, Ordering::Acquire);
    }
}

/// Parks the running task until unparked or `deadline`; true if it timed out.
#[inline(never)]
fn park_task(task: &Task, deadline: Option<Instant>) -> bool {
    check_cancelled(task);
    if task
        .state
        .compare_exchange(NOTIFIED, RUNNING, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        return false;
    }
    let worker = current_worker().expect("a running task is on a worker");
    if let Some(deadline) = deadline {
        if deadline <= Instant::now() {
            return true;
        }
        worker.timers.borrow_mut().insert(deadline, &task.arc());
        worker.watch_clock_soon();
    }
    // Set by the worker if the timer, not an unpark, ends the park.
    task.timed_out.set(false);
    park_task_raw(task);
    let timed_out = task.timed_out.get();
    if deadline.is_some() && !timed_out {
        worker.timers.borrow_mut().cancel(task);
    }
    check_cancelled(task);
    timed_out
}

/// Records why the calling coroutine is about to park, for
/// `Runtime::metrics()` and `Runtime::dump()`. A park site calls it right
/// before it parks through `park_waiting`, `park_waiting_uncancelled` or
/// `park_until`, which keep the reason last set; the public `park`,
/// `park_timeout`, `sleep` and `JoinHandle::join` set their own. One store
/// (plus finding the running task); no effect on a plain thread.
/// `fibra::sync` calls it with `ParkReason::Sync` before each wait.
#[inline]
pub(crate) fn set_park_reason(reason: ParkReason) {
    if let Some(task) = current_task() {
        task.park_reason.store(reason as u8, Ordering::Relaxed);
    }
}

/// Parks until `done()` holds, in a coroutine or on a plain thread. Keeps
/// the park reason last set (`set_park_reason`).
#[inline]
pub(crate) fn park_waiting(done: impl Fn() -> bool) {
    match current_task() {
        Some(task) => {
            while !done() {
                park_task_untimed(task);
            }
        }
        None => {
            while !done() {
                thread::park();
            }
        }
    }
}

/// As `park_waiting`, but with no cancellation point: for waits whose other
/// side must finish first (a job on a syscall thread that may borrow the
/// coroutine's data). The caller takes what it waited for, then calls
/// `cancellation_point`.
pub(crate) fn park_waiting_uncancelled(done: impl Fn() -> bool) {
    match current_task() {
        Some(task) => {
            while !done() {
                park_task_raw(task);
            }
        }
        None => {
            while !done() {
                thread::park();
            }
        }
    }
}

/// Whether the caller runs inside a coroutine (as opposed to a plain thread).
pub(crate) fn in_coroutine() -> bool {
    current_task().is_some()
}

/// A handle to the calling coroutine; None on a plain thread.
pub(crate) fn current_coroutine() -> Option<Coroutine> {
    current_task().map(|task| Coroutine::from_task(task.arc()))
}

/// Parks the calling coroutine until unparked or `deadline`; true if the
/// deadline ended the park. A cancellation point. Must be called in a
/// coroutine (see `in_coroutine`).
pub(crate) fn park_until(deadline: Option<Instant>) -> bool {
    let task = current_task().expect("park_until is called in a coroutine");
    match deadline {
        None => {
            park_task_untimed(task);
            false
        }
        Some(_) => park_task(task, deadline),
    }
}

/// The poller of the calling thread's worker; None on a plain thread.
pub(crate) fn current_poller() -> Option<Arc<crate::io::Poller>> {
    current_worker().map(|worker| Arc::clone(&worker.shared.workers[worker.index].poller))
}

/// Unwinds the calling coroutine here if it has been cancelled.
pub(crate) fn cancellation_point() {
    if let Some(task) = current_task() {
        check_cancelled(task);
    }
}

/// Blocks the calling coroutine until `Coroutine::unpark` is called on it
/// (an unpark that came first makes this return at once). On a plain thread,
/// `std::thread::park`. May return spuriously: wait in a loop on a condition.
#[inline]
pub fn park() {
    match current_task() {
        Some(task) => {
            task.park_reason
                .store(ParkReason::Park as u8, Ordering::Relaxed);
            park_task_untimed(task)
        }
        None => thread::park(),
    }
}

/// As `park`, but returns after `timeout` at the latest.
pub fn park_timeout(timeout: Duration) {
    match current_task() {
        Some(task) => {
            task.park_reason
                .store(ParkReason::Park as u8, Ordering::Relaxed);
            park_task(task, Instant::now().checked_add(timeout));
        }
        None => thread::park_timeout(timeout),
    }
}

/// Lets the other coroutines of this worker run, then continues. On a plain
/// thread, `std::thread::yield_now`.
#[inline]
pub fn yield_now() {
    match current_task() {
        Some(task) => {
            check_cancelled(task);
            suspend(task, Suspend::Yield);
            check_cancelled(task);
        }
        None => thread::yield_now(),
    }
}

/// Puts the calling coroutine to sleep for at least `duration`, without
/// blocking its worker. On a plain thread, `std::thread::sleep`.
pub fn sleep(duration: Duration) {
    match Instant::now().checked_add(duration) {
        Some(deadline) => sleep_until(deadline),
        None => loop {
            park_timeout(Duration::from_secs(u32::MAX as u64));
        },
    }
}

/// Puts the calling coroutine to sleep until `deadline`.
pub fn sleep_until(deadline: Instant) {
    let Some(task) = current_task() else {
        thread::sleep(deadline.saturating_duration_since(Instant::now()));
        return;
    };
    task.park_reason
        .store(ParkReason::Timer as u8, Ordering::Relaxed);
    // Unparks that arrive while sleeping are kept for the next `park`.
    let mut token = false;
    while !park_task(task, Some(deadline)) {
        token = true;
    }
    if token {
        let _ = task
            .state
            .compare_exchange(RUNNING, NOTIFIED, Ordering::AcqRel, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// Panic reports

/// Wraps the process's panic hook once: a panic inside a coroutine is
/// reported with the coroutine's id and name (std would name the worker
/// thread); other panics go to the previous hook unchanged.
fn install_panic_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let Some(task) = current_task() else {
                previous(info);
                return;
            };
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("Box<dyn Any>");
            let location = info
                .location()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            let who = match &task.name {
                Some(name) => format!("coroutine '{name}' (#{})", task.id),
                None => format!("coroutine #{}", task.id),
            };
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                eprintln!("{who} panicked{location}:\n{message}\nstack backtrace:\n{backtrace}");
            } else {
                eprintln!(
                    "{who} panicked{location}:\n{message}\nnote: run with `RUST_BACKTRACE=1` \
                     environment variable to display a backtrace"
                );
            }
        }));
    });
}

// ---------------------------------------------------------------------------
// Non-owning task handles, for fibra::sync's waiter records (src/sync/waiter.rs)

/// The running task as a raw, non-owning pointer; None on a plain thread.
/// It stays valid until the task finishes, which it cannot do while parked.
pub(crate) fn current_task_raw() -> Option<*const ()> {
    current_task().map(|task| task as *const Task as *const ())
}

/// Unparks the task behind a `current_task_raw` pointer.
///
/// # Safety
/// The task has not finished (e.g. it is parked, or queued, waiting for
/// what the caller is handing it).
pub(crate) unsafe fn unpark_raw(task: *const ()) {
    // SAFETY: the caller vouches that the task is alive.
    unsafe { (*(task as *const Task)).unpark() }
}

/// An owning handle to the task behind a `current_task_raw` pointer.
///
/// # Safety
/// As `unpark_raw`.
pub(crate) unsafe fn coroutine_from_raw(task: *const ()) -> Coroutine {
    // SAFETY: the caller vouches that the task is alive.
    Coroutine::from_task(unsafe { (*(task as *const Task)).arc() })
}

/// The running coroutine's `coroutine_local!` values (src/sync/local.rs);
/// None on a plain thread. Only that coroutine may touch them.
pub(crate) fn current_locals() -> Option<&'static std::cell::UnsafeCell<Option<Box<LocalMap>>>> {
    current_task().map(|task| &task.locals)
}

/// Parks the running task once, recording `ParkReason::Sync`: `park` for
/// fibra::sync's waits, inlined down to the switch so that the waiter
/// parks in its caller's frame (see src/sync/waiter.rs, "Where the switch
/// happens"). A cancellation point. On a plain thread, `thread::park`.
#[inline(always)]
pub(crate) fn park_sync() {
    match current_task() {
        Some(task) => {
            task.park_reason
                .store(ParkReason::Sync as u8, Ordering::Relaxed);
            park_task_untimed(task)
        }
        None => thread::park(),
    }
}

//! Syscall threads, Go-style: blocking work runs off the workers.
//!
//! epoll cannot make a regular file, `fsync`, a C library call or a DNS
//! lookup non-blocking: done on a worker, it stalls every coroutine queued
//! there (started coroutines cannot be stolen, see ARCHITECTURE.md). `unblock(f)`
//! instead hands `f` to a pool of dedicated OS threads and parks the calling
//! coroutine until `f` returns; the worker runs other coroutines meanwhile.
//!
//! # The pool
//!
//! Each runtime has one (`RuntimeBuilder::max_blocking_threads`,
//! `blocking_idle_timeout`). Jobs wait in a FIFO queue under a mutex. A
//! submit wakes an idle thread if there is one for the job, else starts a
//! new thread while fewer than the cap exist; beyond the cap, jobs queue (a
//! burst of 1,000 calls with a cap of 8 uses 8 threads). A thread that finds
//! no job for the idle timeout exits. A thread that has just finished a job
//! polls for the next one for 50 µs, yielding the CPU between looks (so
//! back-to-back calls need no futex wake, and a worker sharing its CPU still
//! runs), then sleeps on a condvar: idle threads do not spin.
//!
//! # Results, panics, cancellation
//!
//! The job's result (or the payload of its panic, caught on the syscall
//! thread, which lives on) travels back through the same cell a
//! `JoinHandle` uses, and a panic continues in the caller as the same
//! panic. A coroutine cancelled while it waits unwinds only once `f` has
//! returned (a started system call is not interrupted); the result is then
//! dropped.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::runtime::{JoinCell, ResultSender, current_blocking_pool};

/// Default cap on a runtime's syscall threads (Go and tokio allow hundreds).
pub const DEFAULT_MAX_BLOCKING_THREADS: usize = 512;

/// Default time an idle syscall thread waits for work before it exits.
pub const DEFAULT_BLOCKING_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a syscall thread that has just finished a job polls for the
/// next one before it sleeps on the condvar. Back-to-back calls (a loop of
/// small file reads) then cost no futex wake: ≈ 7.5 µs per round trip
/// without this, see BENCHMARKS.md.
const SPIN_AFTER_JOB: Duration = Duration::from_micros(50);

type Job = Box<dyn FnOnce() + Send>;

/// A snapshot of a runtime's syscall threads (`Runtime::blocking_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockingStats {
    /// Syscall threads alive (running a job or idle).
    pub threads: usize,
    /// Of those, the ones waiting for a job.
    pub idle: usize,
    /// Jobs waiting for a thread.
    pub queued: usize,
}

struct PoolState {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    shutdown: bool,
}

/// One runtime's syscall threads.
pub(crate) struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
    /// Jobs in the queue, readable without the lock (for spinners).
    pending: AtomicUsize,
    /// Threads polling `pending` instead of sleeping on `work`.
    spinning: AtomicUsize,
    /// Jobs submitted and not finished: while there are some, an idle
    /// worker expects a coroutine to be woken soon and polls briefly
    /// instead of sleeping (src/runtime/worker.rs).
    in_flight: AtomicUsize,
    max_threads: usize,
    idle_timeout: Duration,
    thread_name: String,
}

impl Pool {
    pub(crate) fn new(max_threads: usize, idle_timeout: Duration, thread_name: String) -> Pool {
        Pool {
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
                shutdown: false,
            }),
            work: Condvar::new(),
            pending: AtomicUsize::new(0),
            spinning: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_threads: max_threads.max(1),
            idle_timeout,
            thread_name,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self) -> BlockingStats {
        let state = self.lock();
        BlockingStats {
            threads: state.threads,
            idle: state.idle,
            queued: state.queue.len(),
        }
    }

    /// Whether jobs are queued or running.
    pub(crate) fn has_jobs_in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) != 0
    }

    /// Queues a job, waking or starting a thread for it.
    fn submit(self: &Arc<Pool>, job: Job) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        state.queue.push_back(job);
        self.pending.fetch_add(1, Ordering::SeqCst);
        // A spinning thread takes it without a wake (it re-checks the queue
        // under the lock before it sleeps, so the job cannot be missed).
        if self.spinning.load(Ordering::SeqCst) >= state.queue.len() {
            return;
        }
        if state.idle >= state.queue.len() {
            self.work.notify_one();
            return;
        }
        if state.threads < self.max_threads {
            state.threads += 1;
            drop(state);
            let pool = Arc::clone(self);
            let started = thread::Builder::new()
                .name(self.thread_name.clone())
                .spawn(move || pool.run());
            if started.is_err() {
                let mut state = self.lock();
                state.threads -= 1;
                if state.threads == 0 {
                    // No thread at all can run it: run it here rather than
                    // leave the caller parked forever.
                    let job = state.queue.pop_back();
                    if job.is_some() {
                        self.pending.fetch_sub(1, Ordering::SeqCst);
                    }
                    drop(state);
                    if let Some(job) = job {
                        job();
                        self.in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// A syscall thread's body.
    fn run(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                drop(state);
                job();
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                self.spin_for_work();
                state = self.lock();
                continue;
            }
            if state.shutdown {
                break;
            }
            state.idle += 1;
            let (next, wait) = self
                .work
                .wait_timeout(state, self.idle_timeout)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            state.idle -= 1;
            if wait.timed_out() && state.queue.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }

    /// Polls for a next job for a short while, without the lock.
    ///
    /// Between looks it yields the CPU (`sched_yield`): when the worker that
    /// will submit the next job shares this CPU, a pure spin kept it off for
    /// the whole 50 µs (≈ 76 µs per round trip); with a CPU to itself, the
    /// yield returns at once.
    fn spin_for_work(&self) {
        self.spinning.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        while self.pending.load(Ordering::SeqCst) == 0 && start.elapsed() < SPIN_AFTER_JOB {
            thread::yield_now();
        }
        self.spinning.fetch_sub(1, Ordering::SeqCst);
    }

    /// Lets the threads exit once the queue is empty (at runtime drop).
    pub(crate) fn shut_down(&self) {
        self.lock().shutdown = true;
        self.work.notify_all();
    }
}

/// Runs `f` on a syscall thread of the calling coroutine's runtime and
/// returns its value, parking the coroutine meanwhile. Called from a plain
/// OS thread, it simply runs `f`.
///
/// If `f` panics, the panic continues here. If the calling coroutine is
/// cancelled while `f` runs, it unwinds once `f` has returned.
///
/// ```
/// let len = fibra::spawn(|| fibra::blocking::unblock(|| std::fs::read("Cargo.toml").map(|b| b.len())))
///     .join()
///     .unwrap()
///     .unwrap();
/// assert!(len > 0);
/// ```
pub fn unblock<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    unblock_scoped(f)
}

/// A job of `unblock_scoped`: `f` is always gone (run or dropped) before
/// its sender reports, so the waiter cannot return while `f`'s borrows live.
struct ScopedJob<F, T> {
    f: Option<F>,
    sender: Option<ResultSender<T>>,
}

impl<F: FnOnce() -> T, T> ScopedJob<F, T> {
    fn run(mut self) {
        let f = self.f.take().expect("a job runs once");
        let outcome = catch_unwind(AssertUnwindSafe(f));
        if let Some(sender) = self.sender.take() {
            sender.send(outcome);
        }
    }
}

impl<F, T> Drop for ScopedJob<F, T> {
    fn drop(&mut self) {
        // Unrun (its pool gone): drop the closure first, then report.
        drop(self.f.take());
        drop(self.sender.take());
    }
}

/// As `unblock`, but `f` may borrow from the caller (a buffer to read into,
/// a path), as with `std::thread::scope`.
///
/// Sound because this function neither returns nor unwinds before the job
/// has finished or been dropped: the caller waits for the result without a
/// cancellation point (`wait(true)`), a panic in `f` is caught on the
/// syscall thread and carried back, and a job dropped unrun (its pool gone)
/// is dropped before its `ResultSender` reports it (`ScopedJob`). A
/// cancelled caller takes the result before it unwinds, so the result too
/// is dropped in the caller's frame. Every borrow `f` or its result holds
/// thus ends before the caller's frame can.
///
/// ```
/// let mut buf = [0u8; 4];
/// let n = fibra::blocking::unblock_scoped(|| std::io::Read::read(&mut &b"data"[..], &mut buf)).unwrap();
/// assert_eq!(&buf[..n], b"data");
/// ```
pub fn unblock_scoped<'a, F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'a,
    T: Send + 'a,
{
    let Some(pool) = current_blocking_pool() else {
        return f();
    };
    let cell: Arc<JoinCell<T>> = Arc::new(JoinCell::new());
    let scoped = ScopedJob {
        f: Some(f),
        sender: Some(ResultSender::new(Arc::clone(&cell))),
    };
    let job: Box<dyn FnOnce() + Send + 'a> = Box::new(move || scoped.run());
    // SAFETY: only the lifetime changes. The job (and every borrow in it)
    // is finished or dropped before `cell.wait(true)` returns, and nothing
    // here can return or unwind before that (see the function docs).
    let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + 'a>, Job>(job) };
    pool.submit(job);
    crate::runtime::set_park_reason(crate::observe::ParkReason::Blocking);
    match cell.wait(true) {
        Ok(value) => value,
        Err(payload) => resume_unwind(payload),
    }
}

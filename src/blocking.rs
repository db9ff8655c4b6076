//! Syscall threads, Go-style: blocking work runs off the workers.
//!
//! epoll cannot make a regular file, `fsync`, a C library call or a DNS
//! lookup non-blocking: done on a worker, it stalls every coroutine queued
//! there (started coroutines cannot be stolen, see DESIGN). `unblock(f)`
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
//! polls for the next one for 50 µs (so back-to-back calls need no futex
//! wake), then sleeps on a condvar: idle threads do not spin.
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

    /// Queues a job, waking or starting a thread for it.
    fn submit(self: &Arc<Pool>, job: Job) {
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
    fn spin_for_work(&self) {
        self.spinning.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        while self.pending.load(Ordering::SeqCst) == 0 && start.elapsed() < SPIN_AFTER_JOB {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
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
    let Some(pool) = current_blocking_pool() else {
        return f();
    };
    let cell = Arc::new(JoinCell::new());
    let sender = ResultSender::new(Arc::clone(&cell));
    pool.submit(Box::new(move || {
        sender.send(catch_unwind(AssertUnwindSafe(f)))
    }));
    match cell.wait(true) {
        Ok(value) => value,
        Err(payload) => resume_unwind(payload),
    }
}

//! Fork safety: what `fork(2)` does to the runtimes of a process.
//!
//! # What a forked child inherits
//!
//! `fork` copies the whole address space but only the calling thread. In
//! the child, every runtime's worker threads are gone while their queues and
//! coroutines are still there as data; the epoll instances and eventfds of
//! the workers' pollers are the parent's own (an inherited fd refers to the
//! same open file), and so are the sockets. Left alone, three things go
//! wrong (each has a test in tests/fork_safety.rs, seen failing before this
//! file existed):
//!
//! - `fibra::spawn(f).join()` in the child waits for ever: the default
//!   runtime's workers do not exist there.
//! - A fork inside a coroutine: the child's one thread is a copy of that
//!   coroutine's worker. When the coroutine parks, the copy runs the
//!   parent's other coroutines, and its `epoll_wait` takes readiness events
//!   from the epoll instance it shares with the parent: the child's copy of
//!   a coroutine reads the bytes sent to the parent's (20 of 20 bytes).
//! - A socket dropped in the child deletes itself from the shared epoll
//!   instance (`EPOLL_CTL_DEL` acts on the open file, not on the fd number):
//!   the parent's coroutine waiting on it never wakes.
//!
//! # The rule (an invariant)
//!
//! A runtime belongs to the process that built it. In a forked child it is
//! dead: none of its coroutines runs there (not even to unwind), its epoll
//! instances are neither waited on nor changed, using it (`spawn`,
//! `block_on`, `join` on one of its coroutines) fails with a message that
//! says what happened and what to do, and dropping it does nothing (its
//! threads are not there to join). The default runtime starts afresh in the
//! child on first use.
//!
//! # How
//!
//! Every runtime is registered here when it is built (a `Weak`, the pid
//! that built it and the fork generation of that process), and the first
//! one installs `pthread_atfork` handlers:
//!
//! - before the fork, in the parent: take the registry lock, the lock that
//!   builds a child's default runtime and the stack module's locks, so that
//!   the child never inherits one of them held by a thread that does not
//!   exist there (glibc does the same for malloc);
//! - in the child, right after the fork, on its only thread: bump the fork
//!   generation; mark every registered runtime shut down and abandon its
//!   pollers (src/io/poller.rs); make the calling thread a plain thread
//!   again (src/runtime/worker.rs); release the locks. Atomic stores, one
//!   TLS store and unlocks: nothing that allocates;
//! - in the parent: release the locks.
//!
//! Nothing is added to a hot path. The worker loop already reads `shutdown`
//! at every pick, and its cold branch (`next_task_in_shutdown`) first asks
//! `end_if_forked_copy`, which ends the process if the runtime is a copy;
//! `spawn` already reads `shutdown`, and only its cold branch asks here;
//! `join` and the default runtime's lookup read one static that only a
//! forked child ever changes (`in_forked_child`), and the functions behind
//! them are cold and out of line. Measured with callgrind over 120,000
//! spawn + join (BENCHMARKS.md): a first version of the `join` check, which
//! read the runtime's `shutdown` through the task, cost 7.8 instructions
//! per join; this one 3.5, and the whole run no more than before.
//!
//! A coroutine that forks thus goes on in the child as plain code on a plain
//! thread: `fibra::spawn` uses the child's own default runtime, sockets wait
//! in `poll(2)`, `sleep` sleeps the thread. When it returns, its copy of the
//! worker gets control back and ends the process (status 0, with a line on
//! stderr): there is nothing else the copy may run.
//!
//! # Alternatives rejected
//!
//! - A pid check on the slow paths alone: glibc no longer caches the pid, so
//!   each check is a system call, and no slow path stops a worker copy from
//!   polling the shared epoll between two picks.
//! - Closing the inherited epoll fds in the child: the copied `Poller`
//!   still owns the numbers, and would close whatever fd took them later.
//!   Leaving them costs the child a few fds (all close-on-exec).
//! - Unwinding the parent's coroutines in the child, as a runtime drop
//!   does: their destructors would act on sockets that are the parent's
//!   connections too (a `BufWriter` flushing, a `shutdown(2)`).
//!
//! # Limits
//!
//! - A fork on a syscall thread (inside `blocking::unblock`) must exec or
//!   `_exit` in the child, as after any fork of a threaded process: that
//!   thread's loop would go on taking the parent's queued jobs.
//! - A socket that a runtime of the parent has waited on can be used by the
//!   child's own runtime (it registers with the new worker's epoll), but it
//!   is the same socket: both processes read from one queue.

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};

use super::{Runtime, Shared, worker};
use crate::stack;

/// How many forks separate this process from the one that started the
/// program (0 there; bumped in each child by the atfork handler).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// One runtime built in this process or an ancestor.
struct Registered {
    shared: Weak<Shared>,
    /// The process that built it.
    pid: libc::pid_t,
    /// `GENERATION` of that process when it was built.
    generation: u64,
}

static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// Serialises building a child's default runtime (and forks: see `Held`).
static CHILD_DEFAULT_BUILD: Mutex<()> = Mutex::new(());

/// The default runtime of a forked child, with the generation it serves.
struct ChildDefault {
    generation: u64,
    runtime: Runtime,
}

/// Leaked once built; replaced (the old one leaked too) in a grandchild.
static CHILD_DEFAULT: AtomicPtr<ChildDefault> = AtomicPtr::new(std::ptr::null_mut());

/// The locks held across a fork, from the prepare handler to the parent or
/// child handler, all on the forking thread.
struct Held {
    _build: MutexGuard<'static, ()>,
    registry: MutexGuard<'static, Vec<Registered>>,
    _stacks: stack::ForkHold,
}

struct HeldSlot(UnsafeCell<Option<Held>>);

// SAFETY: the slot is written by the prepare handler after it has taken
// `CHILD_DEFAULT_BUILD`, and emptied by the parent or child handler of the
// same fork on the same thread before that lock is released; a second
// forking thread blocks on that lock before it touches the slot.
unsafe impl Sync for HeldSlot {}

static HELD: HeldSlot = HeldSlot(UnsafeCell::new(None));

fn lock<T>(mutex: &'static Mutex<T>) -> MutexGuard<'static, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn getpid() -> libc::pid_t {
    // SAFETY: getpid(2) cannot fail.
    unsafe { libc::getpid() }
}

/// Registers a runtime being built (before its threads start); installs
/// the atfork handlers on first use.
pub(crate) fn register(shared: &Arc<Shared>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions that never
        // unwind (they take poison-tolerant locks and nothing else panics).
        let rc = unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
        // ENOMEM is the only failure: then forks are merely not made safe.
        debug_assert_eq!(rc, 0, "pthread_atfork");
    });
    let mut registry = lock(&REGISTRY);
    registry.retain(|r| r.shared.strong_count() > 0);
    registry.push(Registered {
        shared: Arc::downgrade(shared),
        pid: getpid(),
        generation: GENERATION.load(Ordering::Relaxed),
    });
}

/// Whether this process is a fork of the one that started the program (and
/// one that had built a runtime by then): one load of a static that the
/// original process never writes, for the checks on warm paths.
#[inline(always)]
pub(crate) fn in_forked_child() -> bool {
    GENERATION.load(Ordering::Relaxed) != 0
}

/// If `shared` is a runtime inherited across a fork, the pid that built it.
fn inherited_from(shared: &Shared) -> Option<libc::pid_t> {
    let current = GENERATION.load(Ordering::Acquire);
    if current == 0 || !shared.shutdown.load(Ordering::Acquire) {
        // Not forked, or not marked by the child handler: not inherited.
        return None;
    }
    lock(&REGISTRY)
        .iter()
        .find(|r| std::ptr::eq(r.shared.as_ptr(), shared))
        .filter(|r| r.generation != current)
        .map(|r| r.pid)
}

/// Whether `shared` is a runtime inherited across a fork (dead here).
#[cold]
#[inline(never)]
pub(crate) fn is_inherited(shared: &Shared) -> bool {
    inherited_from(shared).is_some()
}

/// What happened and what to do, for a use of an inherited runtime.
fn inherited_message(builder: libc::pid_t) -> String {
    format!(
        "this runtime was built in process {builder} and this process ({}) is a fork of it: \
         the runtime's worker threads do not exist here, so none of its coroutines can run. \
         In a forked child, build a new fibra::Runtime (fibra::spawn's default runtime starts \
         afresh by itself) or exec; or fork before building any runtime; or let fibra::prefork \
         fork the worker processes",
        getpid()
    )
}

/// Refuses a spawn on an inherited runtime (called only once `shutdown` is
/// seen set).
#[cold]
#[inline(never)]
pub(crate) fn refuse_if_inherited(shared: &Shared) -> io::Result<()> {
    match inherited_from(shared) {
        Some(builder) => Err(io::Error::other(inherited_message(builder))),
        None => Ok(()),
    }
}

/// Panics instead of waiting for ever on a coroutine of an inherited
/// runtime (called only in a forked child, for an unfinished coroutine).
#[cold]
#[inline(never)]
pub(crate) fn refuse_join_if_inherited(shared: &Shared) {
    if let Some(builder) = inherited_from(shared) {
        panic!(
            "fibra: cannot join a coroutine of the parent process: {}",
            inherited_message(builder)
        );
    }
}

/// Called by a worker loop that sees its runtime shut down: if this is a
/// copy of the worker in a forked child (the coroutine that forked has
/// returned to it), there is nothing it may run, so the process ends.
#[cold]
#[inline(never)]
pub(crate) fn end_if_forked_copy(shared: &Shared) {
    let Some(builder) = inherited_from(shared) else {
        return;
    };
    let line = format!(
        "fibra: process {} was forked from process {builder} by a coroutine, which has now \
         returned to its worker; that worker and its other coroutines belong to the parent, \
         so this process exits (status 0). To run coroutines in a forked child, build a \
         Runtime there or use fibra::prefork.\n",
        getpid()
    );
    // SAFETY: write(2) from a live buffer, then _exit(2): nothing of the
    // parent's state is unwound or flushed in this copy.
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(0)
    }
}

/// The default runtime of a forked child (the caller found its inherited
/// one shut down): built on first use in each child generation, then kept.
#[cold]
#[inline(never)]
pub(crate) fn default_runtime_in_child() -> &'static Runtime {
    let generation = GENERATION.load(Ordering::Acquire);
    let current = || {
        // SAFETY: a published ChildDefault is leaked, so it lives for ever.
        unsafe { CHILD_DEFAULT.load(Ordering::Acquire).as_ref() }
            .filter(|d| d.generation == generation)
            .map(|d| &d.runtime)
    };
    if let Some(runtime) = current() {
        return runtime;
    }
    let _build = lock(&CHILD_DEFAULT_BUILD);
    if let Some(runtime) = current() {
        return runtime;
    }
    // Configured as the parent's was: from the environment (config.rs).
    let runtime = super::config::builder_from_env()
        .and_then(super::RuntimeBuilder::build)
        .unwrap_or_else(|e| panic!("fibra: cannot start the default runtime: {e}"));
    let fresh = Box::leak(Box::new(ChildDefault {
        generation,
        runtime,
    }));
    CHILD_DEFAULT.store(fresh, Ordering::Release);
    &fresh.runtime
}

/// How many runtimes built in this process are running (not dropped, not
/// inherited): `fibra::prefork` refuses to fork a master that runs one.
pub(crate) fn runtimes_running() -> usize {
    let current = GENERATION.load(Ordering::Acquire);
    lock(&REGISTRY)
        .iter()
        .filter(|r| r.generation == current)
        .filter_map(|r| r.shared.upgrade())
        .filter(|s| !s.shutdown.load(Ordering::Acquire))
        .count()
}

extern "C" fn before_fork() {
    let held = Held {
        _build: lock(&CHILD_DEFAULT_BUILD),
        registry: lock(&REGISTRY),
        _stacks: stack::hold_for_fork(),
    };
    // SAFETY: see HeldSlot; this thread holds CHILD_DEFAULT_BUILD now.
    unsafe { *HELD.0.get() = Some(held) };
}

extern "C" fn after_fork_in_parent() {
    // SAFETY: see HeldSlot; filled by this thread's `before_fork`.
    drop(unsafe { (*HELD.0.get()).take() });
}

extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    // SAFETY: see HeldSlot; filled by this thread's `before_fork`, and this
    // is the child's only thread.
    if let Some(held) = unsafe { (*HELD.0.get()).take() } {
        for entry in held.registry.iter() {
            if entry.shared.strong_count() == 0 {
                continue;
            }
            // SAFETY: the runtime is alive (strong count above zero) and
            // no other thread exists here that could drop it meanwhile.
            let shared = unsafe { &*entry.shared.as_ptr() };
            shared.shutdown.store(true, Ordering::SeqCst);
            for worker in &shared.workers {
                // A worker loop looks at `shutdown` only when its attention
                // word says so (one load per pick).
                worker.watch.ask(crate::observe::ATTEND_SHUTDOWN);
                worker.poller.abandon_after_fork();
            }
        }
        drop(held);
    }
    worker::forget_worker_thread();
}

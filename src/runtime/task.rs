//! Tasks and the one waiting primitive: park / unpark.
//!
//! A `Task` is a scheduled coroutine: a raw `Coroutine` (src/coroutine.rs)
//! plus the words the scheduler and wakers share. It is reference counted
//! (`Arc<Task>`): run queues, timers, `JoinHandle`s and `fibra::Coroutine`
//! handles each hold one.
//!
//! # The park state word
//!
//! ```text
//!              park() with no token            unpark() / timer / cancel
//!   RUNNING ─────────────────────────► PARKED ─────────────────────────► RUNNING
//!      │  ▲                                        (the winner of this CAS
//!      │  │ park() consumes the token               enqueues the task)
//!      ▼  │
//!   NOTIFIED   ◄── unpark() while RUNNING or NOTIFIED leaves a token
//! ```
//!
//! - RUNNING: running, or queued to run, with no pending unpark.
//! - NOTIFIED: as RUNNING, with one unpark token: the next park returns at
//!   once (as `std::thread::park`), so an unpark that arrives before the
//!   park is never lost.
//! - PARKED: suspended in `park`; not in any run queue. Whoever moves it
//!   PARKED → RUNNING (one CAS, so exactly one waker wins) puts it on a run
//!   queue; a parked task is thus never resumed twice nor lost.
//!
//! The task sets PARKED itself, *before* it switches back to its worker.
//! That is safe only because of the home-worker rule: once started, a task is
//! resumed only by its home worker, which is busy running this very task
//! until the switch completes, so a waker on another thread can at most put
//! it on the home worker's inbox early.
//!
//! # Memory ordering: an unpark is never half-seen
//!
//! An unpark happens-before the return of the park that consumes its token
//! (std promises as much for `thread::park`): a waker writes its condition,
//! then unparks; the parker, back from `park`, re-reads the condition and
//! must see that write. So both ends are read-modify-writes of the state
//! word: `unpark` writes NOTIFIED (Release) even when a token is already
//! there, and `park` consumes a token with a swap (Acquire), which reads the
//! latest write. With a plain load in `unpark` ("a token is there, nothing
//! to do") and a plain store in `park`, an unpark landing while `park`
//! consumes an older token synchronizes with nothing: on x86 the parker's
//! store of RUNNING waits in its store buffer while it re-reads the old
//! condition, and it parks for good (tests/runtime_unpark.rs lost such a
//! wakeup within seconds). std's futex parker makes both ends a swap too.
//!
//! # Who owns a parked task
//!
//! While a task runs, its worker holds one `Arc<Task>`. When the task parks,
//! the worker forgets that reference: it now belongs to the PARKED state, and
//! the waker that wins the PARKED → RUNNING CAS takes it over with
//! `Arc::from_raw` and puts it on a run queue. Park/unpark thus costs no
//! reference-count traffic.
//!
//! # Home-worker-only fields
//!
//! `body`, `coroutine`, `yielder`, `timer_seq`, `timer_armed`, `timed_out`,
//! `cancel_raised`, `live_slot`, `capture` and `locals` are touched only by
//! the task's home worker thread (or, before the task has started, by whoever
//! owns its queue entry exclusively). That is why `Task` may be `Sync`
//! though these are `Cell`s.
//!
//! `park_reason` and `parked_at` are written only by the home worker
//! thread too, but read by other threads (a waker counting the wake, a
//! dump listing a stalled worker's coroutines): they are atomics used with
//! plain `Relaxed` loads and stores, which cost what a `Cell` does.
//!
//! # Unstarted and started
//!
//! A task is spawned with its `body` (the user's closure and result sender)
//! and no stack. The worker that first runs it becomes its home, takes the
//! body, binds a stack from its pool and builds the `coroutine` around it
//! (`Worker::start_task`); from then on `body` is empty. An unstarted task
//! is thus only a record and a boxed closure: stealing it moves no stack.

use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use crate::coroutine::{Coroutine as RawCoroutine, Yielder};
use crate::observe::ParkReason;
use crate::sync::local::LocalMap;

use super::Shared;
use super::spawn::TaskBody;

pub(crate) const RUNNING: u8 = 0;
pub(crate) const NOTIFIED: u8 = 1;
pub(crate) const PARKED: u8 = 2;

/// `home` before the task has run for the first time.
pub(crate) const NO_HOME: usize = usize::MAX;

/// Why a task switches back to its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suspend {
    /// `yield_now`: run me again after the others queued here.
    Yield,
    /// `park`: the task has set its state to PARKED; a waker will requeue it.
    Park,
    /// A parked task resumed only to record its backtrace for a dump has
    /// recorded it and is parked again, its state untouched
    /// (src/runtime/inspect.rs).
    Captured,
}

pub(crate) type TaskCoroutine = RawCoroutine<(), Suspend, ()>;
pub(crate) type TaskYielder = Yielder<(), Suspend>;

/// A scheduled coroutine and the state its wakers share.
pub(crate) struct Task {
    pub id: u64,
    pub name: Option<Arc<str>>,
    pub state: AtomicU8,
    pub cancelled: AtomicBool,
    /// Index of the worker that first ran the task (NO_HOME before).
    pub home: AtomicUsize,
    pub shared: Arc<Shared>,
    /// Usable bytes of the stack the task gets when it starts.
    pub stack_size: usize,
    // Home-worker-only fields (see the module docs).
    pub body: UnsafeCell<Option<Arc<dyn TaskBody>>>,
    pub coroutine: UnsafeCell<Option<TaskCoroutine>>,
    pub yielder: Cell<*const TaskYielder>,
    pub timer_seq: Cell<u64>,
    pub timer_armed: Cell<bool>,
    pub timed_out: Cell<bool>,
    pub cancel_raised: Cell<bool>,
    pub live_slot: Cell<usize>,
    /// Set by the home worker before it resumes a parked task only to
    /// record its backtrace for a dump (src/runtime/inspect.rs).
    pub capture: Cell<bool>,
    /// Why the task parks (a `ParkReason` as u8): set by each park site
    /// before it parks (`set_park_reason`), read when the park is counted
    /// and when the wake is.
    pub park_reason: AtomicU8,
    /// When the task last parked, in coarse milliseconds (`observe::clock`).
    pub parked_at: AtomicU64,
    /// Its `coroutine_local!` values (src/sync/local.rs): None until the
    /// first access; dropped and freed by the task's epilogue.
    pub locals: UnsafeCell<Option<Box<LocalMap>>>,
}

// SAFETY: the atomics are shared; every Cell/UnsafeCell field is touched only
// by the task's home worker thread, or before the first run by the single
// owner of the queue entry (see the module docs). The raw coroutine inside is
// never resumed or dropped anywhere but on the home worker once started.
unsafe impl Send for Task {}
// SAFETY: as above.
unsafe impl Sync for Task {}

impl Task {
    pub fn new(
        id: u64,
        name: Option<Arc<str>>,
        shared: Arc<Shared>,
        stack_size: usize,
        body: Option<Arc<dyn TaskBody>>,
    ) -> Task {
        Task {
            id,
            name,
            state: AtomicU8::new(RUNNING),
            cancelled: AtomicBool::new(false),
            home: AtomicUsize::new(NO_HOME),
            shared,
            stack_size,
            body: UnsafeCell::new(body),
            coroutine: UnsafeCell::new(None),
            yielder: Cell::new(std::ptr::null()),
            timer_seq: Cell::new(0),
            timer_armed: Cell::new(false),
            timed_out: Cell::new(false),
            cancel_raised: Cell::new(false),
            live_slot: Cell::new(usize::MAX),
            capture: Cell::new(false),
            park_reason: AtomicU8::new(ParkReason::Park as u8),
            parked_at: AtomicU64::new(0),
            locals: UnsafeCell::new(None),
        }
    }

    /// One more `Arc` to a task known to be alive: the running one (its
    /// worker holds a reference while it runs).
    pub fn arc(&self) -> Arc<Task> {
        // SAFETY: every Task lives in an Arc; the caller's reference is to a
        // live task, so the count is at least one while we add one.
        unsafe {
            Arc::increment_strong_count(self as *const Task);
            Arc::from_raw(self as *const Task)
        }
    }

    /// Moves the task from PARKED to RUNNING. On success the caller owns the
    /// reference the PARKED state held (see the module docs) and must put it
    /// on a run queue.
    pub fn try_claim_parked(&self) -> Option<Arc<Task>> {
        if self
            .state
            .compare_exchange(PARKED, RUNNING, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: the worker forgot its Arc when the task parked; winning
            // the CAS transfers that reference to us, exactly once.
            Some(unsafe { Arc::from_raw(self as *const Task) })
        } else {
            None
        }
    }

    /// Wakes the task if it is parked, or leaves it a token.
    pub fn unpark(&self) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            match state {
                PARKED => {
                    if let Some(task) = self.try_claim_parked() {
                        super::worker::schedule(task);
                        return;
                    }
                    state = self.state.load(Ordering::Acquire);
                }
                // RUNNING or NOTIFIED: leave a token, written even over one
                // (see "Memory ordering" above).
                _ => match self.state.compare_exchange_weak(
                    state,
                    NOTIFIED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(now) => state = now,
                },
            }
        }
    }

    /// Asks the task to unwind from its current or next park point.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.unpark();
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        // A body never run nor given up on (every queue that drops tasks
        // gives them up first; this is the backstop): its JoinHandle must
        // still hear `Cancelled`.
        if let Some(body) = self.body.get_mut().take() {
            super::spawn::drop_unrun(body, None);
        }
        // The epilogue frees the coroutine-locals; a map still here means
        // the body never reached it, and its values need not be `Send`:
        // they are not dropped on this thread.
        if let Some(locals) = self.locals.get_mut().take() {
            std::mem::forget(locals);
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

/// The payload of a coroutine's unwind after `JoinHandle::cancel` or a
/// runtime shutdown: `join` returns `Err` holding it.
///
/// ```
/// let handle = fibra::spawn(|| loop { fibra::park() });
/// handle.cancel();
/// let payload = handle.join().unwrap_err();
/// assert!(payload.downcast_ref::<fibra::Cancelled>().is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the coroutine was cancelled")
    }
}

impl std::error::Error for Cancelled {}

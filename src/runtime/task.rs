//! Tasks and the one waiting primitive: park / unpark.
//!
//! A `Task` is a scheduled coroutine: a raw `Coroutine` (src/coroutine.rs)
//! plus the words the scheduler and wakers share. It is reference counted
//! (`TaskRef`, task_ref.rs): run queues, timers, `JoinHandle`s and
//! `fibra::Coroutine` handles each hold one.
//!
//! # One allocation per task
//!
//! `Task` is the header of an allocation that goes on with the task's
//! body — the user's closure and the cell its result goes to (`Packet`,
//! spawn.rs) — so a spawn allocates once. A second allocation cost a
//! malloc and a free, about 140 instructions of the ~1,700 of an empty
//! spawn+run+join. The body's type is erased behind `Task::body`, a table
//! of three functions made per closure type, as tokio's task cells do.
//! With a trait object instead (`Arc<TaskCell<dyn Body>>`), every task
//! pointer would be two words and every field access through it would
//! compute the header's offset from the vtable's alignment (measured:
//! +18 % instructions per yield, +25 % per park/unpark). `TaskRef` is one
//! word, counted in the header.
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
//! While a task runs, its worker holds one `TaskRef`. When the task parks,
//! the worker forgets that reference: it now belongs to the PARKED state, and
//! the waker that wins the PARKED → RUNNING CAS takes it over with
//! `TaskRef::from_raw` and puts it on a run queue. Park/unpark thus costs no
//! reference-count traffic.
//!
//! # Home-worker-only fields
//!
//! `body_taken`, `coroutine`, `yielder`, `timer_seq`, `timer_armed`,
//! `timed_out`, `cancel_raised`, `live_slot`, `capture` and `locals` are
//! touched only by the task's home worker thread (or, before the task has
//! started, by whoever owns its queue entry exclusively). That is why `Task`
//! may be `Sync` though these are `Cell`s.
//!
//! `park_reason` and `parked_at` are written only by the home worker
//! thread too, but read by other threads (a waker counting the wake, a
//! dump listing a stalled worker's coroutines): they are atomics used with
//! plain `Relaxed` loads and stores, which cost what a `Cell` does.
//!
//! # Unstarted and started
//!
//! A task is spawned with its `body` (the user's closure and result cell)
//! and no stack. The worker that first runs it becomes its home, takes the
//! body (`body_taken`), binds a stack from its pool and builds the
//! `coroutine` around it (`Worker::start_task`). An unstarted task is thus
//! only a record holding a closure: stealing it moves no stack.

use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use crate::coroutine::{Coroutine as RawCoroutine, Yielder};
use crate::observe::ParkReason;
use crate::sync::local::LocalMap;

use super::Shared;
pub(crate) use super::task_ref::TaskRef;

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

/// A scheduled coroutine and the state its wakers share. It heads the
/// allocation that holds its body (spawn.rs), reached through `body`.
#[repr(C)]
pub(crate) struct Task {
    /// References (`TaskRef`s, and the one a PARKED state holds).
    pub refs: AtomicUsize,
    /// The task's own address, as the allocation's pointer: a pointer
    /// derived from a `&Task` may reach only the header, while this one
    /// reaches the body too (it is what `TaskRef`s and the body's
    /// functions are made from).
    pub this: *const Task,
    /// How to run, give up and free the body behind this header.
    pub body: &'static BodyVTable,
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
    /// Whether the body has been taken: run, or given up on.
    pub body_taken: Cell<bool>,
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

/// The operations on a task's body, for one closure and result type
/// (spawn.rs): a hand-made vtable, so that `Task` and `TaskRef` stay thin.
pub(crate) struct BodyVTable {
    /// Runs the body as the coroutine (`Packet::run` in spawn.rs).
    pub run: unsafe fn(*const Task),
    /// Gives up on a body that never ran: drops the closure and delivers
    /// `Cancelled` (if `cancelled`, or no error is given) or the error.
    pub abandon: unsafe fn(*const Task, bool, Option<std::io::Error>),
    /// Drops the whole allocation (header and body) and frees it.
    pub destroy: unsafe fn(NonNull<Task>),
}

// SAFETY: the atomics are shared; every Cell/UnsafeCell field is touched only
// by the task's home worker thread, or before the first run by the single
// owner of the queue entry (see the module docs). The raw coroutine inside is
// never resumed or dropped anywhere but on the home worker once started. The
// body after the header holds a closure and a result that are `Send`
// (`spawn_unchecked`'s bounds), touched by one holder at a time in the
// same way; its `JoinHandle` touches only the result cell, which is `Sync`
// for `T: Send`.
unsafe impl Send for Task {}
// SAFETY: as above.
unsafe impl Sync for Task {}

impl Task {
    /// The header of a new task with one reference; `spawn` writes it at
    /// `this`, the head of the task's allocation.
    pub fn new(
        this: *const Task,
        body: &'static BodyVTable,
        id: u64,
        name: Option<Arc<str>>,
        shared: Arc<Shared>,
        stack_size: usize,
    ) -> Task {
        Task {
            refs: AtomicUsize::new(1),
            this,
            body,
            id,
            name,
            state: AtomicU8::new(RUNNING),
            cancelled: AtomicBool::new(false),
            home: AtomicUsize::new(NO_HOME),
            shared,
            stack_size,
            body_taken: Cell::new(false),
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

    /// Takes the body to run it or give it up: true the first time only.
    /// Only its holder may call it (its home worker, or before the first
    /// run the owner of its queue entry).
    pub fn take_body(&self) -> bool {
        !self.body_taken.replace(true)
    }

    /// Runs the body, as the coroutine.
    ///
    /// # Safety
    /// The caller took the body (`take_body` returned true) and runs or
    /// gives it up once: a second run would take the closure twice.
    pub unsafe fn run_body(&self) {
        // SAFETY: `body` was made for the allocation this header heads, and
        // the caller holds the body (see above).
        unsafe { (self.body.run)(self.this) }
    }

    /// Gives up on a body that will never run.
    ///
    /// # Safety
    /// As `run_body` (`spawn::drop_unrun` takes the body, then calls it).
    pub unsafe fn abandon_body(&self, error: Option<std::io::Error>) {
        let cancelled = self.cancelled.load(Ordering::Acquire);
        // SAFETY: as in `run_body`.
        unsafe { (self.body.abandon)(self.this, cancelled, error) }
    }

    /// One more reference to a task known to be alive: the running one
    /// (its worker holds a reference while it runs).
    pub fn arc(&self) -> TaskRef {
        TaskRef::clone_from_ref(self)
    }

    /// Moves the task from PARKED to RUNNING. On success the caller owns the
    /// reference the PARKED state held (see the module docs) and must put it
    /// on a run queue.
    pub fn try_claim_parked(&self) -> Option<TaskRef> {
        if self
            .state
            .compare_exchange(PARKED, RUNNING, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: the worker forgot its reference when the task parked;
            // winning the CAS transfers that reference to us, exactly once.
            Some(unsafe { TaskRef::from_raw(self.this) })
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

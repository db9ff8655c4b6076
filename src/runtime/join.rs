//! `JoinHandle`: a coroutine's result, delivered once to whoever joins.
//!
//! The result lives in a `JoinCell` shared by the coroutine and its handle.
//! Its state word goes EMPTY → (WAITING →) DONE, each a bit set in turn:
//!
//! - The coroutine writes the result, then swaps the state to DONE; if it
//!   was WAITING, it wakes the joiner recorded in the cell.
//! - The joiner records who it is (a coroutine or an OS thread, see
//!   `Waiter`), then CASes EMPTY → WAITING and parks until DONE; if the CAS
//!   finds DONE, the result is already there.
//!
//! A task's cell lives in the same allocation as its record and closure
//! (`TaskCell<Packet>`, task.rs and spawn.rs), which outlives both the
//! coroutine and the handle. So whoever of the two comes last drops a
//! result nobody will take, as std does: a dropped handle sets GONE
//! (`JoinHandle::drop`); a delivery that finds GONE drops the result at
//! once — as the coroutine, in its epilogue, where the destructor may park
//! — and a handle dropped after DONE drops it on the dropping thread.
//!
//! If the coroutine never runs (its runtime shut down first, or no stack
//! could be had), the closure is dropped and `Err(Cancelled)` (or the stack
//! error) delivered, so a join never hangs. `ResultSender` is the same
//! guarantee for cells of their own (the syscall threads' jobs): dropped
//! unsent, it delivers `Err(Cancelled)`.

use std::cell::UnsafeCell;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread;

use super::task::Cancelled;
use super::task_ref::TaskRef;
use super::{Coroutine, cancellation_point, park_waiting, park_waiting_uncancelled};

const EMPTY: u8 = 0;
const WAITING: u8 = 1;
const DONE: u8 = 2;
/// The `JoinHandle` is gone: nobody will take the result.
const GONE: u8 = 4;

/// The result of a coroutine, or the payload of its panic.
pub(crate) type Outcome<T> = thread::Result<T>;

/// Where a coroutine's result waits for its joiner.
pub(crate) struct JoinCell<T> {
    state: AtomicU8,
    result: UnsafeCell<Option<Outcome<T>>>,
    joiner: UnsafeCell<Option<Coroutine>>,
}

// SAFETY: `result` is written by the sender before the Release swap to DONE
// and read by the joiner after an Acquire load of DONE; `joiner` is written
// by the joiner before its Release CAS to WAITING and read by the sender after
// its AcqRel swap observed WAITING. T crosses threads, hence T: Send.
unsafe impl<T: Send> Sync for JoinCell<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for JoinCell<T> {}

impl<T> JoinCell<T> {
    pub fn new() -> JoinCell<T> {
        JoinCell {
            state: AtomicU8::new(EMPTY),
            result: UnsafeCell::new(None),
            joiner: UnsafeCell::new(None),
        }
    }

    fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) & DONE != 0
    }

    /// Waits for the result (parking a coroutine, blocking a thread) and
    /// takes it. With `uncancelled`, a cancellation of the waiting coroutine
    /// takes effect only once the result is there and taken: it is then
    /// dropped in the waiter's frame, never on the sender's thread later
    /// (`unblock_scoped` relies on that: the result may borrow the waiter's
    /// data).
    pub fn wait(&self, uncancelled: bool) -> Outcome<T> {
        if !self.is_done() {
            // SAFETY: there is one waiter per cell, and it writes before
            // publishing WAITING; the sender reads it only after seeing WAITING.
            unsafe { *self.joiner.get() = Some(super::current()) };
            if self
                .state
                .compare_exchange(EMPTY, WAITING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if uncancelled {
                    park_waiting_uncancelled(|| self.is_done());
                    let outcome = self.take();
                    cancellation_point();
                    return outcome;
                }
                park_waiting(|| self.is_done());
            }
        }
        self.take()
    }

    /// Takes the result; only after `is_done`.
    fn take(&self) -> Outcome<T> {
        // SAFETY: DONE was observed with Acquire; the sender never touches
        // `result` again, and the single JoinHandle is the only reader.
        unsafe { (*self.result.get()).take() }.expect("fibra: a join result is taken once")
    }

    /// The handle is gone: if the result is there, drop it here; if not,
    /// `deliver` will.
    fn release_handle(&self) {
        if self.state.fetch_or(GONE, Ordering::AcqRel) & DONE != 0 {
            // SAFETY: DONE was observed (Acquire): the sender is finished
            // with `result`, and the handle is its only other reader.
            drop(unsafe { (*self.result.get()).take() });
        }
    }
}

/// The coroutine's end of a `JoinCell`. Dropping it without sending (the
/// coroutine never ran) delivers `Err(Cancelled)`.
pub(crate) struct ResultSender<T> {
    cell: Option<Arc<JoinCell<T>>>,
}

impl<T> ResultSender<T> {
    pub fn new(cell: Arc<JoinCell<T>>) -> ResultSender<T> {
        ResultSender { cell: Some(cell) }
    }

    pub fn send(mut self, outcome: Outcome<T>) {
        if let Some(cell) = self.cell.take() {
            deliver(&cell, outcome);
        }
    }
}

impl<T> Drop for ResultSender<T> {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            deliver(&cell, Err(Box::new(Cancelled)));
        }
    }
}

/// Puts `outcome` in `cell` and wakes its joiner; once per cell. If the
/// handle is gone, drops the outcome here instead (on the caller's thread:
/// a task's epilogue, as the coroutine).
pub(crate) fn deliver<T>(cell: &JoinCell<T>, outcome: Outcome<T>) {
    // SAFETY: only the sender writes `result`, before publishing DONE.
    unsafe { *cell.result.get() = Some(outcome) };
    let before = cell.state.fetch_or(DONE, Ordering::AcqRel);
    if before & GONE != 0 {
        // SAFETY: GONE was set (Acquire) before our DONE: the handle is
        // gone and never reads `result`; it is ours again.
        drop(unsafe { (*cell.result.get()).take() });
    } else if before & WAITING != 0 {
        // SAFETY: WAITING means the joiner wrote `joiner` before its CAS.
        if let Some(joiner) = unsafe { (*cell.joiner.get()).take() } {
            joiner.unpark();
        }
    }
}

/// An owned permission to join a coroutine (mirrors `std::thread::JoinHandle`).
/// Dropping it detaches the coroutine.
pub struct JoinHandle<T> {
    pub(crate) task: TaskRef,
    /// The result cell inside `task`'s body (spawn.rs); `task` keeps it
    /// alive.
    pub(crate) cell: NonNull<JoinCell<T>>,
}

// SAFETY: as std's JoinHandle: the handle only waits on the cell (which is
// `Sync` for the `T: Send` every spawn requires) and moves the result out
// of it; `task` is `Send + Sync`.
unsafe impl<T> Send for JoinHandle<T> {}
// SAFETY: as above; `&JoinHandle` only reads the cell's state.
unsafe impl<T> Sync for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    fn cell(&self) -> &JoinCell<T> {
        // SAFETY: the cell lives in the task's allocation, which `task`
        // keeps alive.
        unsafe { self.cell.as_ref() }
    }

    /// Waits for the coroutine to finish and returns its result; a panic's
    /// payload (or `Cancelled`) comes back as `Err`. Parks the calling
    /// coroutine, or blocks the calling OS thread.
    pub fn join(self) -> thread::Result<T> {
        if super::fork::in_forked_child() && !self.cell().is_done() {
            // It may be the parent's: never to finish here.
            super::fork::refuse_join_if_inherited(&self.task.shared);
        }
        super::set_park_reason(crate::observe::ParkReason::Join);
        self.cell().wait(false)
    }

    /// As `join`, but without a cancellation point: a cancelled caller
    /// waits for the coroutine to finish before it unwinds. For callers of
    /// `spawn_unchecked`, whose closure may borrow from their frame.
    pub(crate) fn join_uncancelled(self) -> thread::Result<T> {
        self.cell().wait(true)
    }

    /// Asks the coroutine to stop: if parked it is woken, and it unwinds from
    /// its current or next park point (running destructors); `join` then
    /// returns `Err` with a `Cancelled` payload. A coroutine that has not
    /// started never runs. No effect once it has finished.
    pub fn cancel(&self) {
        self.task.cancel();
    }

    /// Whether the coroutine has finished (its result is ready).
    pub fn is_finished(&self) -> bool {
        self.cell().is_done()
    }

    /// A handle to the coroutine (id, name, unpark).
    pub fn coroutine(&self) -> Coroutine {
        Coroutine::from_task(self.task.clone())
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        self.cell().release_handle();
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.task.id)
            .field("name", &self.task.name)
            .finish()
    }
}

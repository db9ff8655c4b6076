//! Poisoning, and what "this coroutine is panicking" can mean.
//!
//! std marks a lock poisoned when a guard is dropped by a thread that began
//! panicking after it took the lock: the guard records
//! `thread::panicking()` when created and compares on drop. fibra's locks
//! keep that rule, with one refinement for coroutines.
//!
//! # The caveat: panic state is per OS thread
//!
//! std counts panics in progress per OS thread, and every coroutine of a
//! worker shares its thread. While one coroutine is suspended partway
//! through unwinding (a destructor that parks: it locks a fibra `Mutex`,
//! sends on a channel, sleeps), `std::thread::panicking()` is true in every
//! other coroutine of that worker. A guard taken before that unwinding began
//! and dropped during it cannot tell whether its own coroutine is unwinding
//! or a neighbour is.
//!
//! - `fibra::thread::panicking()` answers true then: it never says false
//!   while its caller unwinds (a `Drop` that checks it to avoid a double
//!   panic stays safe), at the price of a possible true while a neighbour
//!   unwinds.
//! - A fibra lock is not poisoned in that ambiguous case when fibra can see
//!   it: every park inside `fibra::sync` and `fibra::thread` notes, per
//!   worker thread, how many coroutines are parked while unwinding
//!   (`ParkNote`). With one or more of them parked, a guard that began
//!   healthy is dropped without poisoning — a false poison would make every
//!   later `lock()` of healthy code fail, while a missed one only loses
//!   std's advice (parking_lot never poisons). Two coroutines of one worker
//!   panicking at once while one of them holds the lock is the case this
//!   gives up.
//! - Not covered: a neighbour suspended mid-unwind in a park fibra::sync
//!   does not see (socket I/O, `fibra::sleep`, a join at the crate root).
//!   There the lock is poisoned as std would poison it. Knowing for sure
//!   needs the panic count per coroutine, which std does not expose.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Coroutines of this worker thread parked inside fibra while unwinding.
    static PARKED_UNWINDING: Cell<usize> = const { Cell::new(0) };
}

/// Counts a park as "parked while unwinding" for as long as it lasts.
pub(crate) struct ParkNote {
    noted: bool,
}

impl ParkNote {
    /// Call right before parking; `in_coroutine` says whether the caller is
    /// a coroutine (a thread's panic state is its own).
    #[inline]
    pub fn enter(in_coroutine: bool) -> ParkNote {
        let noted = in_coroutine && std::thread::panicking();
        if noted {
            PARKED_UNWINDING.with(|n| n.set(n.get() + 1));
        }
        ParkNote { noted }
    }
}

impl Drop for ParkNote {
    #[inline]
    fn drop(&mut self) {
        if self.noted {
            PARKED_UNWINDING.with(|n| n.set(n.get() - 1));
        }
    }
}

/// Whether another coroutine of this worker is parked inside fibra while
/// unwinding (so `std::thread::panicking()` says nothing about the caller).
fn neighbour_unwinding() -> bool {
    PARKED_UNWINDING.with(Cell::get) > 0
}

/// `fibra::thread::panicking()`: see the module docs.
#[inline]
pub(crate) fn panicking() -> bool {
    std::thread::panicking()
}

/// A lock's poison flag.
pub(crate) struct Flag {
    failed: AtomicBool,
}

/// What a guard remembers to poison its lock on drop.
pub(crate) struct Guard {
    panicking: bool,
}

impl Flag {
    pub const fn new() -> Flag {
        Flag {
            failed: AtomicBool::new(false),
        }
    }

    /// Starts a guard (call when the lock is taken).
    #[inline]
    pub fn guard(&self) -> Guard {
        Guard {
            panicking: std::thread::panicking(),
        }
    }

    /// Ends a guard: poisons the lock if the holder began unwinding since.
    #[inline]
    pub fn done(&self, guard: &Guard) {
        if !guard.panicking && std::thread::panicking() && !neighbour_unwinding() {
            self.failed.store(true, Ordering::Relaxed);
        }
    }

    #[inline]
    pub fn get(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn clear(&self) {
        self.failed.store(false, Ordering::Relaxed);
    }
}

/// `Ok(value)`, or `Err(PoisonError(value))` if the flag is set.
#[inline]
pub(crate) fn map_result<T>(flag: &Flag, value: T) -> std::sync::LockResult<T> {
    result(flag.get(), value)
}

/// `Ok(value)`, or `Err(PoisonError(value))` if `poisoned`.
#[inline]
pub(crate) fn result<T>(poisoned: bool, value: T) -> std::sync::LockResult<T> {
    if poisoned {
        Err(std::sync::PoisonError::new(value))
    } else {
        Ok(value)
    }
}

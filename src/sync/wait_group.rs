//! `WaitGroup`: Go's `sync.WaitGroup` — a counter of unfinished tasks
//! (`add`, `done`) and a `wait` that parks until it reaches zero — plus
//! `WaitGroupToken`, the same count held as values (crossbeam's style:
//! clone one per task, drop it when the task is done).
//!
//! # No lost wakeup
//!
//! The counter is an atomic, so `add` and `done` that do not reach zero
//! touch nothing else. Waiting is a `Gate` (`gate.rs`): a waiter
//! checks the counter under the list lock and, if it is not zero, links
//! its node before releasing the lock; the `done` that takes the counter
//! to zero then takes the same lock and claims every linked waiter. Either
//! the waiter's check comes after the decrement (it sees zero and returns)
//! or its node is linked before the waker takes the lock (the waker finds
//! it): no third order exists.
//!
//! As in Go, a waiter woken by a transition to zero returns even if an
//! `add` has raised the counter again meanwhile (reusing a group needs the
//! new `add`s to happen after the previous `wait`s have returned), and a
//! counter driven below zero is a programming error: it panics.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use super::gate::Gate;

/// Go's `sync.WaitGroup`: `add(n)` before starting `n` tasks, `done()` as
/// each finishes, `wait()` parks the calling coroutine (or blocks a plain
/// thread) until the count is zero.
///
/// ```
/// use fibra::sync::{Arc, Mutex, WaitGroup};
///
/// let wg = Arc::new(WaitGroup::new());
/// let results = Arc::new(Mutex::new(Vec::new()));
/// for i in 0..10 {
///     wg.add(1);
///     let (wg, results) = (Arc::clone(&wg), Arc::clone(&results));
///     fibra::spawn(move || {
///         results.lock().unwrap().push(i * i);
///         wg.done();
///     });
/// }
/// wg.wait();
/// assert_eq!(results.lock().unwrap().len(), 10);
///
/// // The same with tokens: one per task, dropped when it is done.
/// let token = wg.token();
/// for _ in 0..10 {
///     let token = token.clone();
///     fibra::spawn(move || drop(token));
/// }
/// drop(token);
/// wg.wait();
/// ```
pub struct WaitGroup {
    count: AtomicIsize,
    waiters: Gate,
}

impl WaitGroup {
    /// A group with a count of zero.
    pub const fn new() -> WaitGroup {
        WaitGroup {
            count: AtomicIsize::new(0),
            waiters: Gate::new(),
        }
    }

    /// Adds `delta` (which may be negative) to the count; reaching zero
    /// wakes every waiter.
    ///
    /// # Panics
    /// If the count would go below zero ("negative WaitGroup counter", as
    /// Go's).
    pub fn add(&self, delta: isize) {
        if self.try_add(delta).is_err() {
            panic!("fibra::sync::WaitGroup: negative WaitGroup counter");
        }
    }

    /// Marks one task done: `add(-1)`.
    ///
    /// # Panics
    /// If the count is already zero.
    pub fn done(&self) {
        self.add(-1);
    }

    /// The count now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire).max(0) as usize
    }

    /// Parks until the count is zero.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// As `wait`, for at most `timeout`: true if the count reached zero.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// One more task, counted until the token (and every clone of it) is
    /// dropped: `add(1)` now, `done()` on drop.
    pub fn token(self: &Arc<Self>) -> WaitGroupToken {
        self.add(1);
        WaitGroupToken {
            group: Arc::clone(self),
        }
    }

    /// Adds `delta`; `Err` (the count unchanged) if it would go below zero.
    pub(crate) fn try_add(&self, delta: isize) -> Result<(), ()> {
        let mut count = self.count.load(Ordering::Relaxed);
        let new = loop {
            let new = count.checked_add(delta).filter(|&new| new >= 0).ok_or(())?;
            match self
                .count
                .compare_exchange_weak(count, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break new,
                Err(now) => count = now,
            }
        };
        if new == 0 && delta != 0 {
            self.waiters.release_all(|| ());
        }
        Ok(())
    }

    /// The wait; true if the count reached zero before the deadline.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let zero = || self.count.load(Ordering::Acquire) == 0;
        self.waiters.wait_unless(zero, deadline)
    }
}

// A panic inside a method leaves the state consistent (every change is
// one atomic step or made under the list lock): no broken invariant can
// be observed after a caught panic.
impl std::panic::UnwindSafe for WaitGroup {}
impl std::panic::RefUnwindSafe for WaitGroup {}

impl Default for WaitGroup {
    fn default() -> WaitGroup {
        WaitGroup::new()
    }
}

impl fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitGroup")
            .field("count", &self.count())
            .finish()
    }
}

/// One unfinished task of a `WaitGroup` (`WaitGroup::token`): cloning it
/// counts one more, dropping it marks one done.
///
/// ```
/// use fibra::sync::{Arc, WaitGroup};
/// use std::time::Duration;
///
/// let wg = Arc::new(WaitGroup::new());
/// let token = wg.token();
/// let second = token.clone();
/// assert_eq!(wg.count(), 2);
/// drop(token);
/// assert!(!wg.wait_timeout(Duration::from_millis(1)), "one task is left");
/// fibra::spawn(move || drop(second));
/// wg.wait();
/// assert_eq!(wg.count(), 0);
/// ```
pub struct WaitGroupToken {
    group: Arc<WaitGroup>,
}

impl Clone for WaitGroupToken {
    fn clone(&self) -> WaitGroupToken {
        self.group.token()
    }
}

impl Drop for WaitGroupToken {
    fn drop(&mut self) {
        self.group.done();
    }
}

impl fmt::Debug for WaitGroupToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitGroupToken")
            .field("group", &self.group)
            .finish()
    }
}

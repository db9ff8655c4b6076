//! `Event`: Python's `threading.Event` — a flag that `set` raises and
//! `clear` lowers, and a `wait` that parks until it is raised.
//!
//! # No lost wakeup
//!
//! The flag is an atomic, so `is_set` and a `wait` on a raised flag are one
//! load. Waiting is a `Gate` (`gate.rs`): a waiter re-checks the
//! flag under the list lock and links its node before releasing it; `set`
//! raises the flag and claims every linked waiter under the same lock. So
//! a waiter either sees the flag raised or is in the list when `set`
//! looks, and a `set` claims exactly the waiters that queued before it. A
//! waiter woken by `set` returns true even if a
//! `clear` came right after (as Python's: the flag was set after the wait
//! began). A timed wait that races a `set` and loses (its node already
//! claimed when it goes to unlink it) returns true as well.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::gate::Gate;

/// A flag coroutines (and threads) can wait for, as Python's
/// `threading.Event`.
///
/// ```
/// use fibra::sync::{Arc, Event};
/// use std::time::Duration;
///
/// let ready = Arc::new(Event::new());
/// let waiters: Vec<_> = (0..4)
///     .map(|_| {
///         let ready = Arc::clone(&ready);
///         fibra::spawn(move || ready.wait())
///     })
///     .collect();
/// assert!(!ready.wait_timeout(Duration::from_millis(1)));
/// ready.set();
/// for waiter in waiters {
///     assert!(waiter.join().unwrap());
/// }
/// assert!(ready.is_set());
/// ready.clear();
/// assert!(!ready.is_set());
/// ```
pub struct Event {
    flag: AtomicBool,
    waiters: Gate,
}

impl Event {
    /// A lowered flag.
    pub const fn new() -> Event {
        Event {
            flag: AtomicBool::new(false),
            waiters: Gate::new(),
        }
    }

    /// Whether the flag is raised.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Raises the flag and wakes every waiter; later waits return at once
    /// until `clear`.
    pub fn set(&self) {
        self.waiters
            .release_all(|| self.flag.store(true, Ordering::Release));
    }

    /// Lowers the flag: later waits park until the next `set`.
    pub fn clear(&self) {
        self.waiters
            .locked(|| self.flag.store(false, Ordering::Release));
    }

    /// Parks until the flag is raised; returns true (as Python's).
    pub fn wait(&self) -> bool {
        self.wait_until(None)
    }

    /// As `wait`, for at most `timeout`: false if it timed out with the
    /// flag lowered.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        self.waiters.wait_unless(|| self.is_set(), deadline)
    }
}

// A panic inside a method leaves the state consistent (every change is
// one atomic step or made under the list lock): no broken invariant can
// be observed after a caught panic.
impl std::panic::UnwindSafe for Event {}
impl std::panic::RefUnwindSafe for Event {}

impl Default for Event {
    fn default() -> Event {
        Event::new()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

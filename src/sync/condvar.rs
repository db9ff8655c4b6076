//! `Condvar`: std's condition variable over fibra's `Mutex`.
//!
//! # No lost notification
//!
//! A waiter links its node into the condvar's list *before* it releases the
//! mutex, so a notifier that takes the mutex after the waiter's check —
//! the only notifier std promises anything to — finds the node. `notify_one`
//! claims the first waiter that is still waiting (a timed-out or cancelled
//! one abandons its node and is skipped), `notify_all` claims every one;
//! claims are delivered after the list lock is released. A notify with
//! nobody waiting is one relaxed load of `has_waiters`: the flag is set
//! under the list lock before the waiter releases the mutex (Release), and
//! a notifier that holds or held that mutex since reads it after (Acquire),
//! so it cannot miss a waiter it must wake.
//!
//! A woken waiter re-takes the mutex before returning, on every way out —
//! a timeout, or a cancellation unwinding from the park (the guard the
//! caller passed in is then dropped holding the lock, as it expects, and
//! poisons the mutex as any guard dropped while unwinding does). A claim
//! that races a timeout wins: the wait reports that it did not time out.
//!
//! Waiters are woken to compete for the mutex (no requeueing onto the
//! mutex's list): simpler, and the mutex's own handoff keeps it fair.

use std::fmt;
use std::sync::LockResult;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::mutex::{MutexGuard, RawMutex};
use super::poison;
use super::waiter::{FIRST_TOKEN, Node, SpinLock, WaitList, Waiter, Wakeups};

const NOTIFIED: usize = FIRST_TOKEN;

/// A condition variable, as `std::sync::Condvar`: same methods, same
/// results. A wait parks the calling coroutine (or blocks a plain thread)
/// and releases the `fibra::sync::Mutex` meanwhile.
///
/// ```
/// use fibra::sync::{Arc, Condvar, Mutex};
///
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let pair2 = Arc::clone(&pair);
/// fibra::spawn(move || {
///     let (ready, cvar) = &*pair2;
///     *ready.lock().unwrap() = true;
///     cvar.notify_one();
/// });
/// let (ready, cvar) = &*pair;
/// let guard = cvar.wait_while(ready.lock().unwrap(), |ready| !*ready).unwrap();
/// assert!(*guard);
/// ```
pub struct Condvar {
    waiters: SpinLock<WaitList<()>>,
    /// The list may be non-empty (see the module docs).
    has_waiters: AtomicBool,
}

/// Whether a timed wait returned because its time was up (as
/// `std::sync::WaitTimeoutResult`).
#[derive(Debug, PartialEq, Eq, Copy, Clone)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended by timeout rather than a notification.
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

/// Re-takes the mutex when dropped: on every way out of a wait.
struct Relock<'a>(&'a RawMutex);

impl Drop for Relock<'_> {
    fn drop(&mut self) {
        self.0.lock();
    }
}

impl Condvar {
    /// A new condition variable.
    pub const fn new() -> Condvar {
        Condvar {
            waiters: SpinLock::new(WaitList::new()),
            has_waiters: AtomicBool::new(false),
        }
    }

    /// Releases the guard's mutex, parks until notified, re-takes the mutex.
    /// May wake spuriously (as std's): wait in a loop, or use `wait_while`.
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        let guard = self.wait_until(guard, None).0;
        poison::map_result(MutexGuard::mutex(&guard).poison(), guard)
    }

    /// Waits while `condition` holds on the guarded data.
    pub fn wait_while<'a, T: ?Sized, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: F,
    ) -> LockResult<MutexGuard<'a, T>>
    where
        F: FnMut(&mut T) -> bool,
    {
        while condition(&mut *guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// As `wait`, for at most `dur`.
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        dur: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        let deadline = Instant::now().checked_add(dur);
        let (guard, timed_out) = self.wait_until(guard, deadline);
        let poisoned = MutexGuard::mutex(&guard).poison();
        poison::map_result(poisoned, (guard, WaitTimeoutResult(timed_out)))
    }

    /// Waits while `condition` holds, for at most `dur` in all.
    pub fn wait_timeout_while<'a, T: ?Sized, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        dur: Duration,
        mut condition: F,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)>
    where
        F: FnMut(&mut T) -> bool,
    {
        let start = Instant::now();
        loop {
            if !condition(&mut *guard) {
                return Ok((guard, WaitTimeoutResult(false)));
            }
            let Some(left) = dur.checked_sub(start.elapsed()) else {
                return Ok((guard, WaitTimeoutResult(true)));
            };
            guard = self.wait_timeout(guard, left)?.0;
        }
    }

    /// Wakes one waiter, if any.
    #[inline]
    pub fn notify_one(&self) {
        if !self.has_waiters.load(Ordering::Relaxed) {
            return;
        }
        let mut waiters = self.waiters.lock();
        let wakeup = waiters.wake_front(NOTIFIED, |_, _| ());
        if waiters.is_empty() {
            self.has_waiters.store(false, Ordering::Relaxed);
        }
        drop(waiters);
        if let Some(wakeup) = wakeup {
            wakeup.wake();
        }
    }

    /// Wakes every waiter.
    #[inline]
    pub fn notify_all(&self) {
        if !self.has_waiters.load(Ordering::Relaxed) {
            return;
        }
        let mut wakeups = Wakeups::default();
        let mut waiters = self.waiters.lock();
        waiters.wake_all(NOTIFIED, |_| (), &mut wakeups);
        self.has_waiters.store(false, Ordering::Relaxed);
        drop(waiters);
        wakeups.wake();
    }

    /// The wait itself; true if it timed out.
    fn wait_until<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        let raw = MutexGuard::mutex(&guard).raw();
        let waiter = Waiter::new();
        let node = Node::new(&waiter, ());
        {
            let mut waiters = self.waiters.lock();
            // SAFETY: the node stays in this frame until `wait` returns, and
            // `wait` unlinks it (`forget`) unless a claim did.
            unsafe { waiters.push_back(&node) };
            self.has_waiters.store(true, Ordering::Relaxed);
        }
        let relock = Relock(raw);
        // SAFETY: `guard` holds the lock; `relock` takes it back before the
        // guard can be used or dropped again.
        unsafe { raw.unlock() };
        let token = waiter.wait(deadline, || self.forget(&node), |_| ());
        drop(relock);
        (guard, token.is_none())
    }

    /// A timed-out or cancelled waiter leaves the list.
    fn forget(&self, node: &Node<()>) -> bool {
        let mut waiters = self.waiters.lock();
        let removed = waiters.remove(node);
        if waiters.is_empty() {
            self.has_waiters.store(false, Ordering::Relaxed);
        }
        removed
    }
}

impl Default for Condvar {
    fn default() -> Condvar {
        Condvar::new()
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}

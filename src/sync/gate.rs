//! `Gate`: the waiting half of a condition that, once true, releases every
//! waiter at once — `Event`'s flag, `WaitGroup`'s zero count. (Internal;
//! not a broadcast channel.)
//!
//! The condition itself is the caller's (an atomic it reads with
//! `ready`). The protocol: a waiter evaluates `ready` *under the list
//! lock* and, false, links its node before releasing the lock; whoever
//! makes the condition true does so and then claims every linked node
//! under the same lock (`release_all`). Either the waiter's check comes
//! after the change (it returns at once) or its node is linked before the
//! releaser takes the lock (it is claimed): no wakeup is lost. The lock
//! orders the two even when the change itself happens outside it (the
//! releaser takes the lock after changing the condition, and its unlock
//! publishes the change to every later holder).
//!
//! A waiter that gives up (deadline, cancellation) unlinks its node; if a
//! release claimed it first, the wait counts as released (there is
//! nothing to give back).

use std::time::Instant;

use super::waiter::{FIRST_TOKEN, Node, SpinLock, WaitList, Waiter, Wakeups};

const RELEASED: usize = FIRST_TOKEN;

pub(crate) struct Gate {
    waiters: SpinLock<WaitList<()>>,
}

impl Gate {
    pub const fn new() -> Gate {
        Gate {
            waiters: SpinLock::new(WaitList::new()),
        }
    }

    /// Parks until `release_all`, unless `ready()` holds (checked first
    /// without the lock, then under it); until `deadline` at the latest.
    /// True if `ready()` held or a release claimed the caller.
    pub fn wait_unless(&self, ready: impl Fn() -> bool, deadline: Option<Instant>) -> bool {
        if ready() {
            return true;
        }
        let waiter = Waiter::new();
        let node = Node::new(&waiter, ());
        {
            let mut waiters = self.waiters.lock();
            // Checked again under the lock: a release that came after the
            // first look has run (or will run) `release_all` under it.
            if ready() {
                return true;
            }
            // SAFETY: the node stays in this frame until `wait` returns, and
            // `wait` unlinks it unless a release did.
            unsafe { waiters.push_back(&node) };
        }
        waiter
            .wait(deadline, || self.waiters.lock().remove(&node), |_| ())
            .is_some()
    }

    /// Runs `change` under the list lock, then claims every waiter linked
    /// before it and wakes them once the lock is released.
    pub fn release_all(&self, change: impl FnOnce()) {
        let mut wakeups = Wakeups::default();
        let mut waiters = self.waiters.lock();
        change();
        waiters.wake_all(RELEASED, |_| (), &mut wakeups);
        drop(waiters);
        wakeups.wake();
    }

    /// Runs `change` under the list lock, waking nobody.
    pub fn locked(&self, change: impl FnOnce()) {
        let _waiters = self.waiters.lock();
        change();
    }
}

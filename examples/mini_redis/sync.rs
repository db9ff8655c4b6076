//! The shared-state primitives mini-redis uses, in one place: the lock for
//! the key space and the pub/sub registry, [`Wakeup`] (the expiry
//! coroutine's sleep that a SET can cut short) and [`Mailbox`] (a
//! subscriber's queue of outgoing bytes).
//!
//! # Why std's `Mutex`, and what that demands
//!
//! fibra's own locks (`fibra::sync`, whose waits park the coroutine instead
//! of blocking the worker thread) are not in the crate yet, so the locks
//! here are `std::sync::Mutex`. That is sound only because no lock here is
//! ever held across a park point — no socket call, no sleep, no park runs
//! while a guard lives; every critical section is a few map or buffer
//! operations. A std lock held across a park would block the worker thread,
//! and with it every other coroutine of that worker, possibly forever.
//! When `fibra::sync` lands, `Mutex` below becomes `fibra::sync::Mutex`
//! (same API) and `Wakeup` becomes a `fibra::sync::Mutex<bool>` with a
//! `fibra::sync::Condvar` (`wait_timeout` for the deadline, `notify_one`
//! for `notify`); nothing outside this file changes.
//!
//! # Waiting: park/unpark with a flag
//!
//! A `Wakeup` has one waiter at a time. `wait` records the calling coroutine
//! (`fibra::current()`) under the lock unless a notification is already
//! pending, then parks; `notify` sets the pending flag and unparks whoever
//! is recorded. A notification that comes before the wait is kept by the
//! flag, and one that comes between the unlock and the park is kept by
//! fibra's park token, so none is lost. `wait` may return early; callers
//! re-check their own state in a loop.

use std::sync::{MutexGuard, PoisonError};
use std::time::Instant;

pub use std::sync::Mutex;

/// Locks `mutex`, ignoring poisoning: every critical section here leaves
/// its data consistent before anything in it can panic.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A single waiter's wake-up call (see the module docs).
#[derive(Default)]
pub struct Wakeup {
    state: Mutex<WakeupState>,
}

#[derive(Default)]
struct WakeupState {
    pending: bool,
    waiter: Option<fibra::Coroutine>,
}

impl Wakeup {
    /// Waits until `notify` is called (at once if it was called since the
    /// last wait) or `deadline` passes. May return early.
    pub fn wait(&self, deadline: Option<Instant>) {
        {
            let mut state = lock(&self.state);
            if state.pending {
                state.pending = false;
                return;
            }
            state.waiter = Some(fibra::current());
        }
        match deadline {
            Some(deadline) => {
                let now = Instant::now();
                if deadline > now {
                    fibra::park_timeout(deadline - now);
                }
            }
            None => fibra::park(),
        }
        let mut state = lock(&self.state);
        state.waiter = None;
        state.pending = false;
    }

    /// Makes the current or the next `wait` return.
    pub fn notify(&self) {
        let waiter = {
            let mut state = lock(&self.state);
            state.pending = true;
            state.waiter.take()
        };
        if let Some(waiter) = waiter {
            waiter.unpark();
        }
    }
}

/// A subscriber connection's outgoing bytes: replies and published messages
/// go in from any coroutine (`push`), the connection's writer coroutine takes
/// them all at once (`take`) and writes them with one call.
///
/// A mailbox holds at most `limit` bytes. A push that would go past it
/// closes the mailbox as overflowed, drops what is queued and calls
/// `on_overflow` (which shuts the connection's socket down: the writer may be
/// parked in a `write` to a client that does not read, and only that wakes
/// it). So a subscriber that does not keep up is dropped, as Redis drops one
/// past its output-buffer limit, rather than grow without bound or lose
/// messages silently.
pub struct Mailbox {
    queue: Mutex<Queue>,
    ready: Wakeup,
    limit: usize,
    on_overflow: Box<dyn Fn() + Send + Sync>,
}

struct Queue {
    bytes: Vec<u8>,
    state: MailboxState,
}

/// Whether a mailbox still takes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxState {
    /// Taking bytes.
    Open,
    /// Closed by its connection: what is queued is still to be written.
    Closed,
    /// A push went past the limit: the connection is to be dropped.
    Overflowed,
}

impl Mailbox {
    /// An empty, open mailbox that holds at most `limit` bytes and calls
    /// `on_overflow` once if a push would pass that.
    pub fn new(limit: usize, on_overflow: impl Fn() + Send + Sync + 'static) -> Mailbox {
        Mailbox {
            queue: Mutex::new(Queue {
                bytes: Vec::new(),
                state: MailboxState::Open,
            }),
            ready: Wakeup::default(),
            limit,
            on_overflow: Box::new(on_overflow),
        }
    }

    /// Appends `bytes` for the writer. False if the mailbox is closed or
    /// overflowed (this push included): nothing was queued.
    pub fn push(&self, bytes: &[u8]) -> bool {
        let queued = {
            let mut queue = lock(&self.queue);
            if queue.state != MailboxState::Open {
                return false;
            }
            if queue.bytes.len() + bytes.len() > self.limit {
                queue.state = MailboxState::Overflowed;
                queue.bytes = Vec::new();
                false
            } else {
                queue.bytes.extend_from_slice(bytes);
                true
            }
        };
        if !queued {
            (self.on_overflow)();
        }
        self.ready.notify();
        queued
    }

    /// Stops taking bytes; what is queued stays for the writer.
    pub fn close(&self) {
        {
            let mut queue = lock(&self.queue);
            if queue.state == MailboxState::Open {
                queue.state = MailboxState::Closed;
            }
        }
        self.ready.notify();
    }

    /// Waits until bytes are queued or the mailbox is no longer open, then
    /// swaps all queued bytes into `into` (which should be empty). Returns
    /// the state: while it is `Closed`, bytes may still have been taken;
    /// `Overflowed` discards them.
    pub fn take(&self, into: &mut Vec<u8>) -> MailboxState {
        loop {
            {
                let mut queue = lock(&self.queue);
                if !queue.bytes.is_empty() || queue.state != MailboxState::Open {
                    std::mem::swap(&mut queue.bytes, into);
                    return queue.state;
                }
            }
            self.ready.wait(None);
        }
    }
}

//! The shared-state primitives mini-redis uses, in one place: the lock for
//! the key space and the pub/sub registry, [`Wakeup`] (the expiry
//! coroutine's sleep that a SET can cut short) and [`Mailbox`] (a
//! subscriber's queue of outgoing bytes).
//!
//! All of them are `fibra::sync`'s `Mutex` and `Condvar`: the same API as
//! std's, but a wait parks the coroutine instead of blocking the worker
//! thread, so a coroutine that waits on a condition variable (the expiry
//! coroutine, a subscriber's writer) leaves its worker to the others. The
//! critical sections are still a few map or buffer operations: a lock is
//! never held across a socket call.

use std::time::Instant;

use fibra::sync::{Condvar, MutexGuard, PoisonError};

pub use fibra::sync::Mutex;

/// Locks `mutex`, ignoring poisoning: every critical section here leaves
/// its data consistent before anything in it can panic.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A wake-up call for one waiter: a pending flag and a condition variable.
/// A `notify` before the `wait` is kept by the flag.
#[derive(Default)]
pub struct Wakeup {
    pending: Mutex<bool>,
    changed: Condvar,
}

impl Wakeup {
    /// Waits until `notify` is called (at once if it was called since the
    /// last wait) or `deadline` passes. May return early.
    pub fn wait(&self, deadline: Option<Instant>) {
        let mut pending = lock(&self.pending);
        if !*pending {
            pending = match deadline {
                Some(deadline) => {
                    let timeout = deadline.saturating_duration_since(Instant::now());
                    self.changed
                        .wait_timeout(pending, timeout)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .changed
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
        *pending = false;
    }

    /// Makes the current or the next `wait` return.
    pub fn notify(&self) {
        *lock(&self.pending) = true;
        self.changed.notify_one();
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
    ready: Condvar,
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
            ready: Condvar::new(),
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
        self.ready.notify_one();
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
        self.ready.notify_one();
    }

    /// Waits until bytes are queued or the mailbox is no longer open, then
    /// swaps all queued bytes into `into` (which should be empty). Returns
    /// the state: while it is `Closed`, bytes may still have been taken;
    /// `Overflowed` discards them.
    pub fn take(&self, into: &mut Vec<u8>) -> MailboxState {
        let mut queue = self
            .ready
            .wait_while(lock(&self.queue), |q| {
                q.bytes.is_empty() && q.state == MailboxState::Open
            })
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut queue.bytes, into);
        queue.state
    }
}

//! Multi-producer, multi-consumer channels: `mpsc`'s channel whose
//! receivers can be cloned too (as Go's channels, crossbeam's and std's
//! unstable `std::sync::mpmc`). Each value goes to exactly one receiver.
//!
//! The same channel core as `mpsc` (`channel.rs`): one lock per channel,
//! values handed straight to a parked receiver, waiting senders and
//! receivers in FIFO lists on their own stacks. Senders and receivers are
//! each counted; when the last of one side goes, every waiter of the other
//! side is woken with the disconnection error in the same critical
//! section. Receivers still drain what is buffered first; a dropped
//! receiver side drops the buffered values.
//!
//! ```
//! use fibra::sync::mpmc;
//!
//! let (tx, rx) = mpmc::sync_channel::<u64>(16);
//! let workers: Vec<_> = (0..4)
//!     .map(|_| {
//!         let rx = rx.clone();
//!         fibra::spawn(move || rx.iter().sum::<u64>()) // ends when the senders are gone
//!     })
//!     .collect();
//! drop(rx);
//! for i in 1..=100 {
//!     tx.send(i).unwrap();
//! }
//! drop(tx);
//! let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
//! assert_eq!(total, 5050);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};

use super::channel::{Channel, RecvFailure, SendFailure, UNBOUNDED, Wait};
use super::select::__private::{RecvArm, SendArm};
use super::select::{SelectRecv, SelectSend};

/// An unbounded channel: `send` never waits.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Channel::new(UNBOUNDED));
    (
        Sender {
            chan: Arc::clone(&chan),
        },
        Receiver { chan },
    )
}

/// A channel buffering at most `bound` values: `send` parks while it is
/// full. At `bound == 0` each `send` parks until a receiver takes its value
/// (a rendezvous, as Go's unbuffered channel).
pub fn sync_channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Channel::new(bound));
    (
        Sender {
            chan: Arc::clone(&chan),
        },
        Receiver { chan },
    )
}

/// Why a `send_timeout` did not deliver; the value comes back (as
/// crossbeam's and std's unstable `SendTimeoutError`).
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SendTimeoutError<T> {
    /// The buffer stayed full until the deadline.
    Timeout(T),
    /// Every receiver is gone.
    Disconnected(T),
}

impl<T> SendTimeoutError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(t) | SendTimeoutError::Disconnected(t) => t,
        }
    }
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(..) => f.write_str("Timeout(..)"),
            SendTimeoutError::Disconnected(..) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(..) => f.write_str("timed out waiting on send operation"),
            SendTimeoutError::Disconnected(..) => f.write_str("sending on a disconnected channel"),
        }
    }
}

impl<T> std::error::Error for SendTimeoutError<T> {}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(err: SendError<T>) -> SendTimeoutError<T> {
        SendTimeoutError::Disconnected(err.0)
    }
}

/// A deadline `timeout` from now (None: too far to represent, i.e. never).
fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

// ---------------------------------------------------------------------------
// Sender

/// The sending half of an `mpmc` channel: `Clone`, `Send` and `Sync`.
pub struct Sender<T> {
    chan: Arc<Channel<T>>,
}

impl<T> Sender<T> {
    /// Sends `t`, parking while a bounded channel is full (at bound 0,
    /// until a receiver takes it). `Err` (with `t`) if every receiver is
    /// gone.
    pub fn send(&self, t: T) -> Result<(), SendError<T>> {
        self.chan
            .send(t, Wait::Until(None))
            .map_err(|failure| SendError(failure.into_value()))
    }

    /// Sends `t` if that needs no waiting.
    pub fn try_send(&self, t: T) -> Result<(), TrySendError<T>> {
        self.chan
            .send(t, Wait::Never)
            .map_err(SendFailure::into_try_send_error)
    }

    /// As `send`, for at most `timeout`.
    pub fn send_timeout(&self, t: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(t, deadline_after(timeout))
    }

    /// As `send`, until `deadline` at the latest.
    pub fn send_deadline(&self, t: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.send_until(t, Some(deadline))
    }

    fn send_until(&self, t: T, deadline: Option<Instant>) -> Result<(), SendTimeoutError<T>> {
        self.chan
            .send(t, Wait::Until(deadline))
            .map_err(|failure| match failure {
                SendFailure::Disconnected(t) => SendTimeoutError::Disconnected(t),
                SendFailure::Full(t) | SendFailure::Timeout(t) => SendTimeoutError::Timeout(t),
            })
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.chan.add_sender();
        Sender {
            chan: Arc::clone(&self.chan),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> SelectSend for Sender<T> {
    type Item = T;
    fn __send_arm(&self, value: T) -> SendArm<'_, T> {
        SendArm::new(&self.chan, value)
    }
}

// ---------------------------------------------------------------------------
// Receiver

/// The receiving half of an `mpmc` channel: `Clone`, `Send` and `Sync`;
/// each value goes to one receiver.
pub struct Receiver<T> {
    chan: Arc<Channel<T>>,
}

impl<T> Receiver<T> {
    /// A value if one is ready now.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.chan
            .recv(Wait::Never)
            .map_err(RecvFailure::into_try_recv_error)
    }

    /// The next value, parking until one arrives. `Err` once the channel is
    /// empty and every sender is gone.
    #[inline(always)]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.chan.recv(Wait::Until(None)).map_err(|_| RecvError)
    }

    /// As `recv`, for at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(deadline_after(timeout))
    }

    /// As `recv`, until `deadline` at the latest.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.recv_until(Some(deadline))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        self.chan
            .recv(Wait::Until(deadline))
            .map_err(RecvFailure::into_recv_timeout_error)
    }

    /// An iterator of `recv`s, ending when the channel is empty and every
    /// sender is gone.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// An iterator of `try_recv`s, ending at the first empty or
    /// disconnected one.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Receiver<T> {
        self.chan.add_receiver();
        Receiver {
            chan: Arc::clone(&self.chan),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.drop_receiver();
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl<T> SelectRecv for Receiver<T> {
    type Item = T;
    fn __recv_arm(&self) -> RecvArm<'_, T> {
        RecvArm::new(&self.chan)
    }
}

/// What both halves can say about their channel.
macro_rules! channel_queries {
    ($handle:ident) => {
        impl<T> $handle<T> {
            /// Values buffered now.
            pub fn len(&self) -> usize {
                self.chan.len()
            }

            /// Whether no value is buffered now.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Whether a bounded channel's buffer is full now (always false
            /// for an unbounded one; always true at bound 0).
            pub fn is_full(&self) -> bool {
                self.capacity().is_some_and(|cap| self.len() >= cap)
            }

            /// The bound of a `sync_channel`; None for an unbounded channel.
            pub fn capacity(&self) -> Option<usize> {
                Some(self.chan.capacity()).filter(|&cap| cap != UNBOUNDED)
            }

            /// Whether `other` belongs to the same channel.
            pub fn same_channel(&self, other: &$handle<T>) -> bool {
                Arc::ptr_eq(&self.chan, &other.chan)
            }
        }
    };
}

channel_queries!(Sender);
channel_queries!(Receiver);

receiver_iterators!("");

//! `std::sync::mpsc` for coroutines: the same functions, handles, iterators
//! and error types; a `recv` on an empty channel, or a `send` on a full
//! `sync_channel`, parks the calling coroutine (or blocks a plain thread).
//!
//! The machinery is `fibra::sync`'s channel core (`channel.rs`): one lock
//! per channel, values handed straight to a parked receiver, disconnection
//! waking every waiter with std's error.
//!
//! ```
//! use fibra::sync::mpsc;
//!
//! let (tx, rx) = mpsc::channel();
//! for i in 0..10 {
//!     let tx = tx.clone();
//!     fibra::spawn(move || tx.send(i).unwrap());
//! }
//! drop(tx);
//! let mut got: Vec<i32> = rx.iter().collect(); // ends when every sender is gone
//! got.sort();
//! assert_eq!(got, (0..10).collect::<Vec<_>>());
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};

use super::channel::{Channel, RecvFailure, SendFailure, UNBOUNDED, Wait};
use super::select::__private::{RecvArm, SendArm};
use super::select::{SelectRecv, SelectSend};

/// An unbounded channel: `send` never waits (as `std::sync::mpsc::channel`).
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Channel::new(UNBOUNDED));
    (
        Sender {
            chan: Arc::clone(&chan),
        },
        Receiver::new(chan),
    )
}

/// A channel buffering at most `bound` values: `send` parks while it is
/// full. At `bound == 0`, each `send` parks until a receiver takes its
/// value (a rendezvous), as `std::sync::mpsc::sync_channel`.
pub fn sync_channel<T>(bound: usize) -> (SyncSender<T>, Receiver<T>) {
    let chan = Arc::new(Channel::new(bound));
    (
        SyncSender {
            chan: Arc::clone(&chan),
        },
        Receiver::new(chan),
    )
}

// ---------------------------------------------------------------------------
// Senders

/// The sending half of `channel()` (as `std::sync::mpsc::Sender`).
pub struct Sender<T> {
    chan: Arc<Channel<T>>,
}

impl<T> Sender<T> {
    /// Sends `t`; never waits. `Err` (with `t`) if the receiver is gone.
    pub fn send(&self, t: T) -> Result<(), SendError<T>> {
        self.chan
            .send(t, Wait::Never)
            .map_err(|failure| SendError(failure.into_value()))
    }
}

/// `Clone` (one more sender counted), `Drop` (the last one disconnects the
/// receiver) and `Debug` of a sending handle.
macro_rules! sender_handle {
    ($sender:ident) => {
        impl<T> Clone for $sender<T> {
            fn clone(&self) -> $sender<T> {
                self.chan.add_sender();
                $sender {
                    chan: Arc::clone(&self.chan),
                }
            }
        }

        impl<T> Drop for $sender<T> {
            fn drop(&mut self) {
                self.chan.drop_sender();
            }
        }

        impl<T> fmt::Debug for $sender<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($sender)).finish_non_exhaustive()
            }
        }
    };
}

sender_handle!(Sender);
sender_handle!(SyncSender);

/// A `select` arm can send on either sender (see `fibra::sync::select`).
macro_rules! select_send {
    ($sender:ident) => {
        impl<T> SelectSend for $sender<T> {
            type Item = T;
            fn __send_arm(&self, value: T) -> SendArm<'_, T> {
                SendArm::new(&self.chan, value)
            }
        }
    };
}

select_send!(Sender);
select_send!(SyncSender);

/// The sending half of `sync_channel()` (as `std::sync::mpsc::SyncSender`).
pub struct SyncSender<T> {
    chan: Arc<Channel<T>>,
}

impl<T> SyncSender<T> {
    /// Sends `t`, parking while the buffer is full (or, at bound 0, until a
    /// receiver takes it). `Err` (with `t`) if the receiver is gone.
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
}

// ---------------------------------------------------------------------------
// Receiver

/// The receiving half of a channel (as `std::sync::mpsc::Receiver`: `Send`,
/// not `Sync`, not `Clone`; share it as `Arc<Mutex<Receiver<T>>>`).
pub struct Receiver<T> {
    chan: Arc<Channel<T>>,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl<T> Receiver<T> {
    fn new(chan: Arc<Channel<T>>) -> Receiver<T> {
        Receiver {
            chan,
            _not_sync: PhantomData,
        }
    }

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
        // None (too far to represent): no deadline.
        self.recv_until(Instant::now().checked_add(timeout))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        self.chan
            .recv(Wait::Until(deadline))
            .map_err(RecvFailure::into_recv_timeout_error)
    }

    /// An iterator of `recv`s, ending when every sender is gone.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// An iterator of `try_recv`s, ending at the first empty or
    /// disconnected one.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.drop_receiver();
    }
}

impl<T> SelectRecv for Receiver<T> {
    type Item = T;
    fn __recv_arm(&self) -> RecvArm<'_, T> {
        RecvArm::new(&self.chan)
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

receiver_iterators!(" (as std's mpsc has it)");

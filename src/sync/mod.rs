//! `std::sync` for coroutines: change `use std::sync::...` to
//! `use fibra::sync::...` and keep the code.
//!
//! Every type here has std's name, methods, signatures and semantics —
//! poisoning, `LockResult`, `TryLockError`, the mpsc error types — but a
//! wait parks the calling coroutine, so its worker runs other coroutines
//! meanwhile; on a plain OS thread the same call blocks the thread. A
//! `std::thread` and a coroutine may share one `Mutex` or channel.
//! What never blocks (`Arc`, `Weak`, `atomic`, the error types) is std's
//! own, re-exported.
//!
//! Beyond std, with the same waits (park a coroutine, block a thread):
//!
//! | type | what it is |
//! |---|---|
//! | [`mpmc`] | multi-producer, multi-consumer channels (cloneable receivers), bounded or not |
//! | [`select!`], [`Select`] | wait on several channel operations, with a timeout or a default arm |
//! | [`Semaphore`] | counted permits, strict FIFO; RAII [`SemaphorePermit`], and [`OwnedSemaphorePermit`] (holds an `Arc`, moves into a coroutine); `try_acquire`, timeouts |
//! | [`WaitGroup`] | Go's `sync.WaitGroup`: `add`, `done`, `wait` (also as [`WaitGroupToken`] values) |
//! | [`Event`] | Python's `threading.Event`: `set`, `clear`, `wait`, `wait_timeout` |
//! | [`ReentrantLock`] | a lock its owner may take again (Python's `RLock`); the owner is the coroutine, not its worker thread |
//! | [`JoinableQueue`] | Python's `queue.Queue`: `put`, `get`, `task_done`, `join`; bounded or not; timeouts |
//! | [`coroutine_local!`](crate::coroutine_local) | `thread_local!` with a value per coroutine (`fibra::thread::CoroutineLocal`) |
//!
//! ```
//! use fibra::sync::{Arc, Mutex, mpsc};
//!
//! let total = Arc::new(Mutex::new(0));
//! let (tx, rx) = mpsc::channel();
//! for i in 1..=10 {
//!     let (total, tx) = (Arc::clone(&total), tx.clone());
//!     fibra::spawn(move || {
//!         *total.lock().unwrap() += i;
//!         tx.send(()).unwrap();
//!     });
//! }
//! for _ in 0..10 {
//!     rx.recv().unwrap(); // parks this coroutine, or blocks this thread
//! }
//! assert_eq!(*total.lock().unwrap(), 55);
//! ```
//!
//! # How waits work
//!
//! Each primitive keeps a state word whose uncontended paths are a CAS or
//! two — no system call, no allocation — and, behind it, a list of waiter
//! records that live on the waiting coroutines' own stacks (a parked
//! coroutine's stack never moves, so others may point into it). A waker
//! claims a record, hands over the outcome (the lock, a value,
//! "disconnected") and unparks its owner; a waiter that times out or is
//! cancelled withdraws its record first, or, if a claim beat it, takes the
//! outcome and gives it back. `waiter.rs` states the protocol; each
//! primitive's file says what its state word means and why no wakeup is
//! lost.
//!
//! Fairness: `Mutex` lets a running coroutine take a just-released lock
//! ahead of a parked one (cheap), until a waiter has waited 1 ms; from
//! then on the lock is handed over in arrival order (Go's `sync.Mutex`
//! starvation mode). `RwLock` serves waiters in order, so writers never
//! starve. Waiters never spin a worker: a `lock()` spins about 120 pauses
//! for a holder on another worker before parking, and that is all.
//!
//! # Cancellation
//!
//! `JoinHandle::cancel` unwinds a coroutine from the park it is in. A
//! coroutine cancelled inside any wait here leaves its queue cleanly: the
//! lock it was about to be handed goes to the next waiter, a value handed
//! to a cancelled `recv` goes back to the channel, a `Condvar` waiter
//! re-takes its mutex before the guard it owns is dropped.
//!
//! # Poisoning
//!
//! As std's: a guard dropped while its holder unwinds poisons the lock
//! (cancellation unwinds too, so a coroutine cancelled while holding a
//! `Mutex` poisons it). std tracks panics per OS thread, which coroutines
//! share; `poison.rs` says what fibra does where that matters and
//! `fibra::thread::panicking` documents the limit.

/// What `Mutex` and `RwLock` share with std's: the poison flag's methods,
/// `get_mut`, built from a value (`From`, `Default`), consumed into it
/// (`into_inner`), and guards shown as the data they guard.
macro_rules! lock_conversions {
    ($lock:ident, $($guard:ident),+) => {
        impl<T: ?Sized> $lock<T> {
            /// Whether a holder panicked while holding the lock (for a
            /// `RwLock`, a writer).
            #[inline]
            pub fn is_poisoned(&self) -> bool {
                self.poison.get()
            }

            /// Clears the poison flag.
            pub fn clear_poison(&self) {
                self.poison.clear();
            }

            /// The data, through `&mut self` (no locking needed).
            pub fn get_mut(&mut self) -> std::sync::LockResult<&mut T> {
                let data = self.data.get_mut();
                super::poison::map_result(&self.poison, data)
            }
        }

        impl<T> $lock<T> {
            /// Consumes the lock and returns its data (`Err` if poisoned,
            /// with the data inside).
            pub fn into_inner(self) -> std::sync::LockResult<T> {
                let poisoned = self.poison.get();
                super::poison::result(poisoned, self.data.into_inner())
            }
        }

        impl<T: Default> Default for $lock<T> {
            fn default() -> $lock<T> {
                $lock::new(T::default())
            }
        }

        impl<T> From<T> for $lock<T> {
            fn from(value: T) -> $lock<T> {
                $lock::new(value)
            }
        }

        $(
            impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for $guard<'_, T> {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    std::fmt::Debug::fmt(&**self, f)
                }
            }

            impl<T: ?Sized + std::fmt::Display> std::fmt::Display for $guard<'_, T> {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    (**self).fmt(f)
                }
            }
        )+
    };
}

/// The receive iterators of a channel's `Receiver` (`Iter`, `TryIter`,
/// `IntoIter` and the two `IntoIterator` impls), as std's mpsc has them;
/// written once for `mpsc` and `mpmc`. `$doc` names the std type each
/// mirrors.
macro_rules! receiver_iterators {
    ($doc:literal) => {
        #[doc = concat!("`Receiver::iter`", $doc, ".")]
        #[derive(Debug)]
        pub struct Iter<'a, T: 'a> {
            rx: &'a Receiver<T>,
        }

        #[doc = concat!("`Receiver::try_iter`", $doc, ".")]
        #[derive(Debug)]
        pub struct TryIter<'a, T: 'a> {
            rx: &'a Receiver<T>,
        }

        #[doc = concat!("`Receiver::into_iter`", $doc, ".")]
        #[derive(Debug)]
        pub struct IntoIter<T> {
            rx: Receiver<T>,
        }

        impl<T> Iterator for Iter<'_, T> {
            type Item = T;
            // Always inlined, as `recv` is: a coroutine then parks in its
            // caller's frame (see `Channel::recv`).
            #[inline(always)]
            fn next(&mut self) -> Option<T> {
                self.rx.recv().ok()
            }
        }

        impl<T> Iterator for TryIter<'_, T> {
            type Item = T;
            #[inline]
            fn next(&mut self) -> Option<T> {
                self.rx.try_recv().ok()
            }
        }

        impl<T> Iterator for IntoIter<T> {
            type Item = T;
            // Always inlined, as `Iter::next` is.
            #[inline(always)]
            fn next(&mut self) -> Option<T> {
                self.rx.recv().ok()
            }
        }

        impl<'a, T> IntoIterator for &'a Receiver<T> {
            type Item = T;
            type IntoIter = Iter<'a, T>;
            fn into_iter(self) -> Iter<'a, T> {
                self.iter()
            }
        }

        impl<T> IntoIterator for Receiver<T> {
            type Item = T;
            type IntoIter = IntoIter<T>;
            fn into_iter(self) -> IntoIter<T> {
                IntoIter { rx: self }
            }
        }
    };
}

mod barrier;
mod channel;
mod condvar;
mod event;
mod gate;
mod joinable_queue;
pub(crate) mod local;
pub mod mpmc;
pub mod mpsc;
mod mutex;
mod once;
mod once_lock;
pub(crate) mod poison;
mod reentrant;
mod rwlock;
pub mod select;
mod semaphore;
mod wait_group;
mod waiter;

pub use barrier::{Barrier, BarrierWaitResult};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use mutex::{Mutex, MutexGuard};
pub use once::{Once, OnceState};
pub use once_lock::{LazyLock, OnceLock};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use select::Select;

pub use event::Event;
pub use joinable_queue::{Full, JoinableQueue};
pub use reentrant::{ReentrantLock, ReentrantLockGuard};
pub use semaphore::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
pub use wait_group::{WaitGroup, WaitGroupToken};

/// `select!` is also reachable as `fibra::sync::select!`.
#[doc(inline)]
pub use crate::select;

pub use std::sync::{Arc, LockResult, PoisonError, TryLockError, TryLockResult, Weak, atomic};

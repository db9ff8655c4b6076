//! The operations a `select` waits on: a receive or a send on one channel
//! (`RecvArm`, `SendArm`), and the channel handles that make them
//! (`SelectRecv`, `SelectSend`: the receivers and senders of `mpsc` and
//! `mpmc`).
//!
//! An arm owns what its operation needs while the select waits: the value
//! slot a sender fills or a receiver empties, and the node it links into
//! the channel's wait list. The engine (`mod.rs`) keeps every arm in place
//! from `link` until `unlink` has returned, so the node's pointer to the
//! slot stays valid while a waker may follow it. Each step maps onto one
//! channel call (`channel.rs`, "Select"): `poll` is a send or receive that
//! does not wait, `link`/`unlink` put the node in and out of the list,
//! `complete` reads what a claim delivered, `undo` gives a delivered value
//! back when the select is cancelled.

use std::cell::UnsafeCell;

use crate::sync::channel::{Channel, DELIVERED, RecvFailure, Slot};
use crate::sync::mpsc::{RecvError, SendError};
use crate::sync::waiter::{Node, Waiter, Wakeups};

/// One operation of a select, as the engine drives it. Every method but
/// `lock`/`unlock`/`poll`/`link` takes the channel's lock itself if it
/// needs it.
pub(crate) trait Arm {
    /// Identifies the channel's lock (locks are taken in this order).
    fn lock_addr(&self) -> usize;
    /// Takes the channel's lock.
    fn lock(&self);
    /// Releases it.
    ///
    /// # Safety
    /// The caller took it with `lock`.
    unsafe fn unlock(&self);
    /// Completes the operation now if it needs no waiting; true if it did
    /// (the outcome is kept for `take_result`).
    ///
    /// # Safety
    /// The caller holds the channel's lock.
    unsafe fn poll(&mut self, wakeups: &mut Wakeups) -> bool;
    /// Links a node for `waiter` into the channel's list.
    ///
    /// # Safety
    /// The caller holds the channel's lock, and keeps the arm in place and
    /// `waiter` alive until `unlink` has returned.
    unsafe fn link(&mut self, waiter: &Waiter);
    /// Unlinks the node, if linked (takes the lock).
    fn unlink(&mut self);
    /// The linked node's address (`Waiter::winner`), 0 if none.
    fn node_addr(&self) -> usize;
    /// The claim through this arm's node completed with `token`.
    fn complete(&mut self, token: usize);
    /// As `complete`, but the select is being cancelled: give back what
    /// the claim delivered.
    fn undo(&mut self, token: usize);
}

/// A channel handle a `select` can receive from: `mpsc::Receiver` and
/// `mpmc::Receiver` (and references to them).
pub trait SelectRecv {
    /// What the channel carries.
    type Item;
    #[doc(hidden)]
    fn __recv_arm(&self) -> RecvArm<'_, Self::Item>;
}

/// A channel handle a `select` can send on: `mpsc::Sender`,
/// `mpsc::SyncSender` and `mpmc::Sender` (and references to them).
pub trait SelectSend {
    /// What the channel carries.
    type Item;
    #[doc(hidden)]
    fn __send_arm(&self, value: Self::Item) -> SendArm<'_, Self::Item>;
}

impl<C: SelectRecv + ?Sized> SelectRecv for &C {
    type Item = C::Item;
    fn __recv_arm(&self) -> RecvArm<'_, C::Item> {
        (**self).__recv_arm()
    }
}

impl<C: SelectSend + ?Sized> SelectSend for &C {
    type Item = C::Item;
    fn __send_arm(&self, value: C::Item) -> SendArm<'_, C::Item> {
        (**self).__send_arm(value)
    }
}

// ---------------------------------------------------------------------------
// Receive

/// A receive arm of a select (made by `select!` and `Select::recv`).
#[doc(hidden)]
pub struct RecvArm<'a, T> {
    chan: &'a Channel<T>,
    slot: UnsafeCell<Option<T>>,
    node: Option<Node<Slot<T>>>,
    result: Option<Result<T, RecvError>>,
}

impl<'a, T> RecvArm<'a, T> {
    pub(crate) fn new(chan: &'a Channel<T>) -> RecvArm<'a, T> {
        RecvArm {
            chan,
            slot: UnsafeCell::new(None),
            node: None,
            result: None,
        }
    }

    /// The outcome, if this arm was the one chosen.
    pub fn take_result(&mut self) -> Option<Result<T, RecvError>> {
        self.result.take()
    }

    /// The value a claim left in the slot.
    fn take_slot(&mut self) -> Option<T> {
        self.slot.get_mut().take()
    }
}

impl<T> Arm for RecvArm<'_, T> {
    fn lock_addr(&self) -> usize {
        self.chan.lock_addr()
    }

    fn lock(&self) {
        self.chan.lock_raw();
    }

    unsafe fn unlock(&self) {
        // SAFETY: the caller took the lock with `lock`.
        unsafe { self.chan.unlock_raw() }
    }

    unsafe fn poll(&mut self, wakeups: &mut Wakeups) -> bool {
        // SAFETY: the caller holds the lock.
        match unsafe { self.chan.poll_recv(wakeups) } {
            None => false,
            Some(outcome) => {
                self.result = Some(outcome.map_err(|failure| {
                    debug_assert_eq!(failure, RecvFailure::Disconnected);
                    RecvError
                }));
                true
            }
        }
    }

    unsafe fn link(&mut self, waiter: &Waiter) {
        let node = self.node.insert(Node::new(waiter, Slot::new(&self.slot)));
        // SAFETY: the caller holds the lock and keeps the arm (node and
        // slot) in place until `unlink` has returned.
        unsafe { self.chan.link_recv(node) };
    }

    fn unlink(&mut self) {
        if let Some(node) = &self.node {
            self.chan.unlink_recv(node);
        }
    }

    fn node_addr(&self) -> usize {
        self.node.as_ref().map_or(0, Node::addr)
    }

    fn complete(&mut self, token: usize) {
        self.result = Some(if token == DELIVERED {
            Ok(self
                .take_slot()
                .expect("a delivered receiver's slot holds the value"))
        } else {
            Err(RecvError)
        });
    }

    fn undo(&mut self, token: usize) {
        if token == DELIVERED
            && let Some(value) = self.take_slot()
        {
            self.chan.give_back(value);
        }
    }
}

// ---------------------------------------------------------------------------
// Send

/// A send arm of a select (made by `select!` and `Select::send`).
#[doc(hidden)]
pub struct SendArm<'a, T> {
    chan: &'a Channel<T>,
    /// The value until it is offered: in `value` while polled, in `slot`
    /// while linked.
    value: Option<T>,
    slot: UnsafeCell<Option<T>>,
    node: Option<Node<Slot<T>>>,
    result: Option<Result<(), SendError<T>>>,
}

impl<'a, T> SendArm<'a, T> {
    pub(crate) fn new(chan: &'a Channel<T>, value: T) -> SendArm<'a, T> {
        SendArm {
            chan,
            value: Some(value),
            slot: UnsafeCell::new(None),
            node: None,
            result: None,
        }
    }

    /// The outcome, if this arm was the one chosen.
    pub fn take_result(&mut self) -> Option<Result<(), SendError<T>>> {
        self.result.take()
    }
}

impl<T> Arm for SendArm<'_, T> {
    fn lock_addr(&self) -> usize {
        self.chan.lock_addr()
    }

    fn lock(&self) {
        self.chan.lock_raw();
    }

    unsafe fn unlock(&self) {
        // SAFETY: the caller took the lock with `lock`.
        unsafe { self.chan.unlock_raw() }
    }

    unsafe fn poll(&mut self, wakeups: &mut Wakeups) -> bool {
        let value = self.value.take().expect("a send arm is polled once");
        // SAFETY: the caller holds the lock.
        match unsafe { self.chan.poll_send(value, wakeups) } {
            Ok(sent) => {
                self.result = Some(sent.map_err(SendError));
                true
            }
            Err(value) => {
                self.value = Some(value);
                false
            }
        }
    }

    unsafe fn link(&mut self, waiter: &Waiter) {
        *self.slot.get_mut() = self.value.take();
        let node = self.node.insert(Node::new(waiter, Slot::new(&self.slot)));
        // SAFETY: the caller holds the lock and keeps the arm (node and
        // slot) in place until `unlink` has returned.
        unsafe { self.chan.link_send(node) };
    }

    fn unlink(&mut self) {
        if let Some(node) = &self.node {
            self.chan.unlink_send(node);
        }
    }

    fn node_addr(&self) -> usize {
        self.node.as_ref().map_or(0, Node::addr)
    }

    fn complete(&mut self, token: usize) {
        self.result = Some(if token == DELIVERED {
            Ok(())
        } else {
            let value = self.slot.get_mut().take();
            Err(SendError(
                value.expect("an undelivered sender keeps its value"),
            ))
        });
    }

    fn undo(&mut self, _token: usize) {
        // Delivered: the value is the receiver's. Disconnected: it stays
        // in the slot and is dropped with the arm, as a cancelled send's.
    }
}

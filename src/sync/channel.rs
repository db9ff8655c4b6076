//! The channel core under `fibra::sync::mpsc`, `mpmc`, `select` and
//! `JoinableQueue`: a buffer and two wait lists under one lock, with values
//! handed directly to parked receivers (Go's `hchan`, with fibra's waiter
//! records).
//!
//! # State and invariants (all under `state`'s lock)
//!
//! - `buf` holds at most `cap` values (`usize::MAX`: unbounded; 0: a
//!   rendezvous channel, whose buffer stays empty) — one more only for a
//!   moment, when a cancelled receiver gives back a value (below).
//! - Receivers wait only while `buf` is empty, and a sender hands its value
//!   to the first waiting receiver instead of buffering it. So a waiting
//!   receiver implies an empty buffer.
//! - Senders wait only while `buf` is full, with their value in a slot on
//!   their stack; a receiver that takes from a full buffer moves the first
//!   waiting sender's value into the freed place (FIFO is kept) and wakes
//!   it. At capacity 0 the receiver takes the value straight from the
//!   sender's slot: `send` returns once a receiver has the value.
//! - "Waiting" means still waiting: a list may also hold nodes of `select`
//!   waiters that another channel claimed, or that gave up, until they
//!   withdraw them. A waker meets such a node, drops it and tries the next
//!   (`WaitList::wake_front`), so every hand-over below is "to the first
//!   waiter still waiting, if any" and falls back to the buffer.
//! - `senders` and `receivers` count live handles; the last one of a side
//!   to go sets `senders_gone` / `receivers_gone` and claims every waiter
//!   of the other side with `DISCONNECTED` in the same critical section,
//!   so a waiter that queued before is woken, and one that comes after
//!   sees the flag. Receivers still drain what is buffered first; senders
//!   get their value back in the error. A dropped receiver side drops the
//!   buffered values at once (after releasing the lock), as std's does.
//!
//! # Waiting
//!
//! Each wait is a `Waiter` + `Node` pair on the waiting stack (see
//! `waiter.rs`), the node's data pointing at the value slot. The claim
//! protocol makes a value handed to a receiver that is timing out or being
//! cancelled safe: if the claim won, a timed-out `recv` returns the value,
//! and a cancelled one gives it back — to another waiting receiver, or to
//! the front of the buffer — so nothing sent is lost. A sender whose claim
//! completed has delivered; if it was cancelled meanwhile, the value is the
//! receiver's anyway.
//!
//! The uncontended paths — a send that buffers or meets a parked
//! receiver, a receive that finds a value — take the lock once, allocate
//! nothing (a bounded buffer is allocated with the channel; the unbounded
//! one grows by doubling and keeps its capacity) and make no system call.
//!
//! Any number of receivers may wait in `recv_waiters`, each claimed once:
//! `mpmc` counts its cloned receivers in `receivers`, as senders are
//! counted.
//!
//! # Select
//!
//! `select` (select/) waits on several channels at once: it takes all their
//! locks (`lock_raw`, in address order), tries each arm without waiting
//! (`poll_recv`, `poll_send`: the same hand-overs as a plain send or
//! receive), and if none is ready links one node per arm (`link_recv`,
//! `link_send`) before releasing the locks. Its waiter is claimed by CAS
//! (see `waiter.rs`); a value handed to it and then given up goes back
//! through `give_back`, as a cancelled receiver's does.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, TryRecvError, TrySendError};
use std::time::Instant;

use super::waiter::{FIRST_TOKEN, Node, SpinGuard, SpinLock, WaitList, Waiter, Wakeup, Wakeups};

/// A receiver's slot was filled, or a sender's slot was emptied.
pub(crate) const DELIVERED: usize = FIRST_TOKEN;
/// The other side is gone.
pub(crate) const DISCONNECTED: usize = FIRST_TOKEN + 1;

/// Capacity of an unbounded channel.
pub(crate) const UNBOUNDED: usize = usize::MAX;

/// A bounded channel's buffer is allocated at creation up to this many
/// values (so its sends and receives never allocate); beyond, it grows on
/// demand. An unbounded one grows from empty and keeps what it reached.
const PREALLOCATED: usize = 1024;

/// How long an operation may wait.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all (`try_send`, `try_recv`).
    Never,
    /// Until the deadline, or forever (None).
    Until(Option<Instant>),
}

/// Why a send did not deliver; the value comes back.
pub(crate) enum SendFailure<T> {
    Full(T),
    Disconnected(T),
    Timeout(T),
}

/// What `recv_or_queue` did.
enum Queue<T> {
    Done(Result<T, RecvFailure>),
    /// The receiver is queued; it waits until the deadline (or forever).
    Queued(Option<Instant>),
}

impl<T> SendFailure<T> {
    /// The value that was not delivered.
    pub fn into_value(self) -> T {
        match self {
            SendFailure::Full(t) | SendFailure::Disconnected(t) | SendFailure::Timeout(t) => t,
        }
    }

    /// std's error for a `try_send` that failed this way (mpsc and mpmc).
    pub fn into_try_send_error(self) -> TrySendError<T> {
        match self {
            SendFailure::Full(t) | SendFailure::Timeout(t) => TrySendError::Full(t),
            SendFailure::Disconnected(t) => TrySendError::Disconnected(t),
        }
    }
}

impl RecvFailure {
    /// std's error for a `try_recv` that failed this way (mpsc and mpmc).
    pub fn into_try_recv_error(self) -> TryRecvError {
        match self {
            RecvFailure::Disconnected => TryRecvError::Disconnected,
            RecvFailure::Empty | RecvFailure::Timeout => TryRecvError::Empty,
        }
    }

    /// std's error for a timed receive that failed this way.
    pub fn into_recv_timeout_error(self) -> RecvTimeoutError {
        match self {
            RecvFailure::Disconnected => RecvTimeoutError::Disconnected,
            RecvFailure::Empty | RecvFailure::Timeout => RecvTimeoutError::Timeout,
        }
    }
}

/// Why a receive got no value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RecvFailure {
    Empty,
    Disconnected,
    Timeout,
}

/// A waiting side's value slot, on its stack.
pub(crate) struct Slot<T>(*const UnsafeCell<Option<T>>);

impl<T> Slot<T> {
    /// Points at `cell`, which must outlive every use of the slot (it
    /// stays in place while the node holding the slot is linked).
    pub fn new(cell: &UnsafeCell<Option<T>>) -> Slot<T> {
        Slot(cell)
    }

    /// # Safety
    /// Under the channel lock, for a node whose claim is under way (its
    /// waiter cannot leave, so the slot is alive and nobody else uses it).
    unsafe fn put(&self, value: T) {
        // SAFETY: see above.
        unsafe { *(*self.0).get() = Some(value) };
    }

    /// # Safety
    /// As `put`.
    unsafe fn take(&self) -> Option<T> {
        // SAFETY: see `put`.
        unsafe { (*(*self.0).get()).take() }
    }
}

pub(crate) struct Channel<T> {
    state: SpinLock<State<T>>,
    senders: AtomicUsize,
    receivers: AtomicUsize,
}

struct State<T> {
    buf: VecDeque<T>,
    cap: usize,
    recv_waiters: WaitList<Slot<T>>,
    send_waiters: WaitList<Slot<T>>,
    senders_gone: bool,
    receivers_gone: bool,
}

/// Runs a waiting sender's hook if it unwinds (cancelled) with its value
/// still in its slot: no receiver took it (`Channel::send_hooked`).
struct UndeliveredOnUnwind<'a, T> {
    slot: &'a UnsafeCell<Option<T>>,
    hook: Option<&'a dyn Fn()>,
}

impl<T> Drop for UndeliveredOnUnwind<'_, T> {
    fn drop(&mut self) {
        // SAFETY: dropped only as `send_waiting` unwinds out of `wait`,
        // which has unlinked the node (or seen it claimed) first: nobody
        // else reaches the slot any more.
        let undelivered = unsafe { (*self.slot.get()).is_some() };
        if let (true, Some(hook)) = (undelivered, self.hook) {
            hook();
        }
    }
}

impl<T> Channel<T> {
    /// A channel with one sender and one receiver handle counted.
    pub fn new(cap: usize) -> Channel<T> {
        Channel {
            state: SpinLock::new(State {
                buf: if cap == UNBOUNDED {
                    VecDeque::new()
                } else {
                    VecDeque::with_capacity(cap.min(PREALLOCATED))
                },
                cap,
                recv_waiters: WaitList::new(),
                send_waiters: WaitList::new(),
                senders_gone: false,
                receivers_gone: false,
            }),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
        }
    }

    pub fn add_sender(&self) {
        self.senders.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_receiver(&self) {
        self.receivers.fetch_add(1, Ordering::Relaxed);
    }

    /// Values buffered now.
    pub fn len(&self) -> usize {
        self.state.lock().buf.len()
    }

    /// The buffer's capacity (`UNBOUNDED` for an unbounded channel).
    pub fn capacity(&self) -> usize {
        self.state.lock().cap
    }

    /// A sender handle is dropped; the last one disconnects the receivers.
    pub fn drop_sender(&self) {
        if self.senders.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut wakeups = Wakeups::default();
        let mut state = self.state.lock();
        state.senders_gone = true;
        state
            .recv_waiters
            .wake_all(DISCONNECTED, |_| (), &mut wakeups);
        drop(state);
        wakeups.wake();
    }

    /// A receiver handle is dropped; the last one disconnects the senders
    /// and drops what is buffered.
    pub fn drop_receiver(&self) {
        if self.receivers.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut wakeups = Wakeups::default();
        let mut state = self.state.lock();
        state.receivers_gone = true;
        let buffered = mem::take(&mut state.buf);
        state
            .send_waiters
            .wake_all(DISCONNECTED, |_| (), &mut wakeups);
        drop(state);
        wakeups.wake();
        drop(buffered);
    }

    /// Sends `value`, waiting as `wait` allows while the buffer is full.
    #[inline]
    pub fn send(&self, value: T, wait: Wait) -> Result<(), SendFailure<T>> {
        self.send_hooked(value, wait, None)
    }

    /// `send`, and if the sender is cancelled while it waits and its value
    /// was not delivered (the value is dropped as the sender unwinds),
    /// `undelivered_on_unwind` runs (`JoinableQueue` uncounts the item).
    #[inline(always)]
    pub fn send_hooked(
        &self,
        value: T,
        wait: Wait,
        undelivered_on_unwind: Option<&dyn Fn()>,
    ) -> Result<(), SendFailure<T>> {
        let mut state = self.state.lock();
        if state.receivers_gone {
            drop(state);
            return Err(SendFailure::Disconnected(value));
        }
        let mut value = Some(value);
        if !state.recv_waiters.is_empty() {
            let wakeup = state.recv_waiters.wake_front(DELIVERED, |slot, _| {
                // SAFETY: claimed under the lock (see Slot::put).
                unsafe { slot.put(value.take().expect("delivered once")) }
            });
            if let Some(wakeup) = wakeup {
                drop(state);
                wakeup.wake();
                return Ok(());
            }
        }
        let value = value.expect("not delivered");
        if state.buf.len() < state.cap {
            state.buf.push_back(value);
            return Ok(());
        }
        match wait {
            Wait::Never => {
                drop(state);
                Err(SendFailure::Full(value))
            }
            Wait::Until(deadline) => {
                self.send_waiting(state, value, deadline, undelivered_on_unwind)
            }
        }
    }

    /// `send` on a full buffer: queues with the value in a slot on this
    /// stack and parks until a receiver takes it. Out of line, so that the
    /// common path's frame stays small.
    #[cold]
    #[inline(never)]
    fn send_waiting(
        &self,
        mut state: SpinGuard<'_, State<T>>,
        value: T,
        deadline: Option<Instant>,
        undelivered_on_unwind: Option<&dyn Fn()>,
    ) -> Result<(), SendFailure<T>> {
        let slot = UnsafeCell::new(Some(value));
        let waiter = Waiter::new();
        let node = Node::new(&waiter, Slot(&slot));
        // SAFETY: the node and slot stay in this frame until `wait`
        // returns, and `wait` unlinks the node unless a claim did.
        unsafe { state.send_waiters.push_back(&node) };
        drop(state);
        // Declared after `slot`, so dropped (on unwind) while it is alive.
        let on_unwind = UndeliveredOnUnwind {
            slot: &slot,
            hook: undelivered_on_unwind,
        };
        let token = waiter.wait(
            deadline,
            || self.state.lock().send_waiters.remove(&node),
            |_| (),
        );
        mem::forget(on_unwind);
        let value = || {
            slot.into_inner()
                .expect("a sender's value stays until taken")
        };
        match token {
            Some(DELIVERED) => Ok(()),
            Some(_) => Err(SendFailure::Disconnected(value())),
            None => Err(SendFailure::Timeout(value())),
        }
    }

    /// Receives a value, waiting as `wait` allows while the buffer is empty.
    ///
    /// Inlined into the caller down to the park, so that the coroutine
    /// switches out of the frame it resumes in (the switch's `ret` is then
    /// predicted; see `crate::runtime`'s `suspend`); the work under the lock
    /// is out of line (`recv_or_queue`).
    #[inline(always)]
    pub fn recv(&self, wait: Wait) -> Result<T, RecvFailure> {
        let slot = UnsafeCell::new(None);
        let mut waiter = None;
        let mut node = None;
        let deadline = match self.recv_or_queue(wait, &slot, &mut waiter, &mut node) {
            Queue::Done(result) => return result,
            Queue::Queued(deadline) => deadline,
        };
        let (Some(waiter), Some(node)) = (&waiter, &node) else {
            unreachable!("a queued receiver has its records")
        };
        let token = waiter.wait(
            deadline,
            || self.state.lock().recv_waiters.remove(node),
            |token| self.undo_recv(token, &slot),
        );
        match token {
            Some(DELIVERED) => Ok(slot
                .into_inner()
                .expect("a delivered receiver's slot holds the value")),
            Some(_) => Err(RecvFailure::Disconnected),
            None => Err(RecvFailure::Timeout),
        }
    }

    /// `recv` up to the park: a value if one is there, else (if `wait`
    /// allows) the caller's records built in `waiter` and `node` and
    /// linked, its node pointing at `slot`.
    fn recv_or_queue<'a>(
        &self,
        wait: Wait,
        slot: &'a UnsafeCell<Option<T>>,
        waiter: &'a mut Option<Waiter>,
        node: &'a mut Option<Node<Slot<T>>>,
    ) -> Queue<T> {
        let mut state = self.state.lock();
        if !state.send_waiters.is_empty() {
            match Self::recv_from_senders(state) {
                Ok(value) => return Queue::Done(Ok(value)),
                Err(guard) => state = guard,
            }
        }
        if let Some(value) = state.buf.pop_front() {
            return Queue::Done(Ok(value));
        }
        if state.senders_gone {
            return Queue::Done(Err(RecvFailure::Disconnected));
        }
        let deadline = match wait {
            Wait::Never => return Queue::Done(Err(RecvFailure::Empty)),
            Wait::Until(deadline) => deadline,
        };
        let waiter = waiter.insert(Waiter::new());
        let node = node.insert(Node::new(waiter, Slot(slot)));
        // SAFETY: the node and the slot live in `recv`'s frame until its
        // `wait` returns, and that `wait` unlinks the node unless a claim
        // did.
        unsafe { state.recv_waiters.push_back(node) };
        Queue::Queued(deadline)
    }

    /// A receive while senders wait (`State::take_from_senders`): the value,
    /// with the lock released and the sender woken; or the guard back if no
    /// sender was still waiting and the buffer is empty. Out of line: the
    /// common receive finds no sender waiting.
    #[cold]
    #[inline(never)]
    fn recv_from_senders(mut state: SpinGuard<'_, State<T>>) -> Result<T, SpinGuard<'_, State<T>>> {
        match state.take_from_senders() {
            Some((value, wakeup)) => {
                drop(state);
                drop(wakeup);
                Ok(value)
            }
            None => Err(state),
        }
    }

    /// A cancelled receiver gives back what a claim delivered.
    #[cold]
    fn undo_recv(&self, token: usize, slot: &UnsafeCell<Option<T>>) {
        if token == DELIVERED {
            // SAFETY: the claim completed; the slot is ours again.
            if let Some(value) = unsafe { (*slot.get()).take() } {
                self.give_back(value);
            }
        }
    }

    /// A value handed to a receiver that was cancelled before it could
    /// return it goes to another waiting receiver, or back to the front of
    /// the buffer.
    pub fn give_back(&self, value: T) {
        let mut state = self.state.lock();
        let mut value = Some(value);
        let wakeup = state.recv_waiters.wake_front(DELIVERED, |slot, _| {
            // SAFETY: claimed under the lock (see Slot::put).
            unsafe { slot.put(value.take().expect("delivered once")) }
        });
        if let Some(value) = value {
            state.buf.push_front(value);
        }
        drop(state);
        if let Some(wakeup) = wakeup {
            wakeup.wake();
        }
    }

    // -----------------------------------------------------------------------
    // For select (see the module docs, "Select")

    /// Identifies the channel's lock: select takes its locks in this order.
    pub fn lock_addr(&self) -> usize {
        self.state.addr()
    }

    /// Takes the channel's lock without a guard.
    pub fn lock_raw(&self) {
        self.state.lock_raw();
    }

    /// Releases the lock taken with `lock_raw`.
    ///
    /// # Safety
    /// The caller took it with `lock_raw`.
    pub unsafe fn unlock_raw(&self) {
        // SAFETY: the caller's promise.
        unsafe { self.state.unlock_raw() }
    }

    /// A receive that needs no waiting, under the lock taken with
    /// `lock_raw`: a value, or `Disconnected` (empty, every sender gone);
    /// None if a receiver would have to wait. A sender it frees is woken
    /// through `wakeups`, after the caller releases its locks.
    ///
    /// # Safety
    /// The caller holds the lock (`lock_raw`).
    pub unsafe fn poll_recv(&self, wakeups: &mut Wakeups) -> Option<Result<T, RecvFailure>> {
        // SAFETY: the caller holds the lock.
        let state = unsafe { self.state.get_locked() };
        if let Some((value, wakeup)) = state.take() {
            if let Some(wakeup) = wakeup {
                wakeups.push(wakeup);
            }
            return Some(Ok(value));
        }
        state.senders_gone.then_some(Err(RecvFailure::Disconnected))
    }

    /// A send that needs no waiting, under the lock taken with `lock_raw`:
    /// `Ok(Ok(()))` if a receiver or the buffer took `value`,
    /// `Ok(Err(value))` if every receiver is gone, `Err(value)` if a sender
    /// would have to wait.
    ///
    /// # Safety
    /// The caller holds the lock (`lock_raw`).
    pub unsafe fn poll_send(&self, value: T, wakeups: &mut Wakeups) -> Result<Result<(), T>, T> {
        // SAFETY: the caller holds the lock.
        let state = unsafe { self.state.get_locked() };
        if state.receivers_gone {
            return Ok(Err(value));
        }
        let wakeup = state.put(value)?;
        if let Some(wakeup) = wakeup {
            wakeups.push(wakeup);
        }
        Ok(Ok(()))
    }

    /// Links a select waiter's receiving node.
    ///
    /// # Safety
    /// The caller holds the lock (`lock_raw`); the node and its slot stay in
    /// place until `unlink_recv` has returned.
    pub unsafe fn link_recv(&self, node: &Node<Slot<T>>) {
        // SAFETY: the caller holds the lock and keeps the node in place.
        unsafe { self.state.get_locked().recv_waiters.push_back(node) }
    }

    /// Links a select waiter's sending node (its slot holds the value).
    ///
    /// # Safety
    /// As `link_recv`.
    pub unsafe fn link_send(&self, node: &Node<Slot<T>>) {
        // SAFETY: the caller holds the lock and keeps the node in place.
        unsafe { self.state.get_locked().send_waiters.push_back(node) }
    }

    /// Unlinks a node linked with `link_recv`, if it still is.
    pub fn unlink_recv(&self, node: &Node<Slot<T>>) {
        self.state.lock().recv_waiters.remove(node);
    }

    /// Unlinks a node linked with `link_send`, if it still is.
    pub fn unlink_send(&self, node: &Node<Slot<T>>) {
        self.state.lock().send_waiters.remove(node);
    }
}

impl<T> State<T> {
    /// A value for a receiver, if there is one: from the buffer, or from
    /// the first waiting sender (see `take_from_senders`). The sender's
    /// wakeup is due after the lock is released.
    #[inline]
    fn take(&mut self) -> Option<(T, Option<Wakeup>)> {
        if !self.send_waiters.is_empty() {
            return self.take_from_senders();
        }
        self.buf.pop_front().map(|value| (value, None))
    }

    /// A receive while senders wait: the buffer is full (the first waiting
    /// sender's value moves into the freed place) or, at capacity 0, empty
    /// (the value comes straight from the first waiting sender). None if
    /// the buffer is empty and no sender is still waiting.
    #[inline]
    fn take_from_senders(&mut self) -> Option<(T, Option<Wakeup>)> {
        let State {
            buf, send_waiters, ..
        } = self;
        let value = buf.pop_front();
        let mut taken = None;
        let wakeup = send_waiters.wake_front(DELIVERED, |slot, _| {
            // SAFETY: claimed under the lock (see Slot::take).
            let sent = unsafe { slot.take() }.expect("a waiting sender has a value");
            if value.is_some() {
                buf.push_back(sent);
            } else {
                taken = Some(sent);
            }
        });
        value.or(taken).map(|value| (value, wakeup))
    }

    /// Hands `value` to the first waiting receiver, or buffers it if there
    /// is room; gives it back if neither. The receiver's wakeup is due after
    /// the lock is released.
    #[inline]
    fn put(&mut self, value: T) -> Result<Option<Wakeup>, T> {
        let mut value = Some(value);
        if !self.recv_waiters.is_empty() {
            let wakeup = self.recv_waiters.wake_front(DELIVERED, |slot, _| {
                // SAFETY: claimed under the lock (see Slot::put).
                unsafe { slot.put(value.take().expect("delivered once")) }
            });
            if wakeup.is_some() {
                return Ok(wakeup);
            }
        }
        let value = value.expect("not delivered");
        if self.buf.len() < self.cap {
            self.buf.push_back(value);
            return Ok(None);
        }
        Err(value)
    }
}

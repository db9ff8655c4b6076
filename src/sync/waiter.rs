//! The waiter queue every blocking primitive of `fibra::sync` is built on:
//! a record on the waiting coroutine's stack, linked into the primitive's
//! list, claimed by whoever completes the wait.
//!
//! # Records
//!
//! - A `Waiter` is one waiting coroutine (or plain thread): its wake state
//!   word and how to unpark it. It lives on the waiter's own stack for the
//!   duration of one wait (stacks never move, so other threads may hold its
//!   address while it is parked).
//! - A `Node` is that waiter's place in one primitive's `WaitList`, with
//!   what the primitive needs to know about the wait (`data`: a read or a
//!   write lock, the address of a value slot, when the wait began).
//! - A `WaitList` is an intrusive FIFO of nodes, always touched under the
//!   primitive's `SpinLock` — the same lock that guards the primitive's own
//!   state, so "check the state, then queue" is one atomic step.
//!
//! # The claim protocol (no lost wakeup, no dangling record)
//!
//! The waiter's state word goes from `WAITING` to a token (≥
//! `FIRST_TOKEN`, chosen by the primitive: "you own the lock", "a value is
//! in your slot", "disconnected"), exactly once.
//!
//! 1. The waiter builds its records, and under the primitive's lock checks
//!    the condition it waits for and, still false, links its node. It
//!    releases the lock and parks until its state holds a token.
//! 2. A waker, under the same lock, unlinks a node, writes the outcome
//!    into the node's slot if there is one, prepares the unpark, and
//!    stores the token (Release) — all before it releases the lock, and it
//!    touches the record no more after the store. It unparks after
//!    releasing the lock.
//! 3. A waiter whose wait ends without a token — its deadline passed, or
//!    its coroutine was cancelled and unwinds from the park — takes the
//!    lock and unlinks its node. If the node was still linked, no waker
//!    had it and none can now: it leaves empty-handed. If it was gone, a
//!    claim completed in step 2 before we got the lock, and the token is
//!    there: the waiter owns the outcome after all — a timed-out `recv`
//!    returns the value it was handed, a cancelled one gives the value or
//!    the lock back (the primitive's `undo`).
//!
//! So a node in a list always belongs to a waiter that is still waiting,
//! and a record is reached by a waker only under the lock while linked.
//!
//! An unpark that arrives before the park leaves a token in the park state
//! word (`fibra::park` semantics), so a claim between step 1's unlock and
//! the park is never lost; an unpark that arrives after the waiter has
//! already seen its token makes some later park return early, which every
//! wait loop tolerates by re-checking its state.
//!
//! # Unparking without reference counts
//!
//! A coroutine's record holds a non-owning pointer to its task and the
//! identity of its worker thread. A waker on that same thread unparks
//! through the pointer: the waiter cannot run — let alone finish — until
//! the waker's thread switches, so the task is alive. A waker on another
//! thread takes an owning handle (an `Arc` increment) in step 2, while the
//! waiter cannot leave yet, and drops it after the unpark. This keeps the
//! common same-worker handoff (a channel ping-pong, a lock passed between
//! coroutines of one worker) free of reference-count traffic: with an
//! owning handle per wait (an `Arc` increment by the waiter, a decrement by
//! the waker) a channel ping-pong round trip cost 86–100 ns of CPU, against
//! 64–81 ns without (six alternating runs, one worker pinned). A plain
//! thread's record holds an owning handle (threads park in the kernel
//! anyway).
//!
//! # Where the switch happens
//!
//! `Waiter::wait` is inlined down to the coroutine switch, and so is a hot
//! caller's part around it (`Channel::recv`): the coroutine then parks in
//! the frame it resumes in, so the calls and returns between two switches
//! balance and the switch's `ret` is predicted (the runtime's `park` is
//! built the same way). Parking three calls deep instead cost a channel
//! ping-pong round trip 93 ns of CPU against 62–66 ns inlined (and 142–162
//! ns four calls deep); the work under the list lock stays out of line.
//!
//! # One waiter in several lists (`select`)
//!
//! `Waiter` and `Node` are separate so that one waiter can sit in several
//! lists, one node each (`select` waits on every arm's channel at once).
//! Then two wakers holding two different list locks can race for one
//! waiter, and step 3's "unlinked means claimed" no longer holds. Such a
//! waiter is made with `Waiter::new_select`, and its state word takes two
//! more values:
//!
//! - A waker claims it with a CAS `WAITING → CLAIMING` (under its own list
//!   lock, the node already unlinked), records which node won (`winner`),
//!   delivers, and stores the token. A waker whose CAS fails has met a
//!   waiter that another list's waker claimed, or that gave up: it drops
//!   that node and tries the next one (`wake_front_if`, `wake_all`). So
//!   exactly one arm completes.
//! - The waiter gives up (deadline, cancellation) with a CAS `WAITING →
//!   ABANDONED`. Whether that CAS won or lost, it then takes each list's
//!   lock in turn and unlinks its node there (`select.rs`, "withdrawal"):
//!   a claimer holds its list's lock from the CAS to the token, so once
//!   the waiter has taken every lock the state holds a token or
//!   `ABANDONED`, and no waker can reach a node of its any more.
//!
//! A claim never waits (a CAS that fails moves on), and a select waiter is
//! linked into its lists only while it holds all their locks (see
//! `select.rs`): nobody can claim it before it is linked everywhere, and a
//! waiter never completes an operation of its own while it is linked, so
//! it never needs to claim itself. Single-list waits keep the cheaper
//! protocol above: `try_claim` is one predictable branch for them.
//!
//! # The list lock
//!
//! `SpinLock` guards a few pointer writes and the primitive's state; no
//! code parks or runs user code while holding it (values are dropped and
//! waiters unparked after it is released). A contended lock spins briefly
//! and then yields the OS thread, so a holder preempted by the kernel gets
//! its CPU back. A futex-based lock (std's `Mutex`) was the alternative:
//! its unlock is an atomic swap where this one is a plain store, and the
//! channel takes the lock on every send and receive.

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomPinned;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use super::poison;
use crate::observe::ParkReason;
use crate::runtime::{self, Coroutine};

const WAITING: usize = 0;
/// The smallest token a primitive may complete a claim with.
pub(crate) const FIRST_TOKEN: usize = 1;
/// A select waiter being claimed: the claimer is delivering under its list
/// lock (see "One waiter in several lists").
const CLAIMING: usize = usize::MAX;
/// A select waiter that gave up before any claim.
const ABANDONED: usize = usize::MAX - 1;

/// Spins of a contended `SpinLock` before it yields the thread.
const SPINS_BEFORE_YIELD: u32 = 64;

// ---------------------------------------------------------------------------
// SpinLock

/// A lock for a few instructions' worth of shared state (see the module
/// docs, "The list lock").
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a `SpinGuard`, and at most one
// exists at a time (`locked`, taken with Acquire and released with Release).
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above; moving the lock moves the value.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> SpinLock<T> {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock without a guard, for code that holds several at once
    /// (`select`); released with `unlock_raw`, the value reached with
    /// `get_locked` meanwhile.
    #[inline]
    pub fn lock_raw(&self) {
        std::mem::forget(self.lock());
    }

    /// Releases a lock taken with `lock_raw`.
    ///
    /// # Safety
    /// The caller took the lock with `lock_raw` and no longer uses a
    /// reference from `get_locked`.
    #[inline]
    pub unsafe fn unlock_raw(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// The value, while the caller holds the lock taken with `lock_raw`.
    ///
    /// # Safety
    /// The caller holds the lock (`lock_raw`), uses the reference only until
    /// it releases it, and takes no other reference to the value meanwhile.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_locked(&self) -> &mut T {
        // SAFETY: the caller holds the lock (see above).
        unsafe { &mut *self.value.get() }
    }

    /// Identifies the lock (select takes several in address order).
    #[inline]
    pub fn addr(&self) -> usize {
        self as *const SpinLock<T> as usize
    }

    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut spins = 0;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
    }
}

/// Access to a `SpinLock`'s value; unlocks when dropped.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the lock's only holder.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard is the lock's only holder.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------
// Waiter

thread_local! {
    /// Its address identifies the calling thread (see "Unparking without
    /// reference counts").
    static THREAD_MARK: u8 = const { 0 };
}

#[inline]
fn thread_mark() -> *const u8 {
    THREAD_MARK.with(|mark| mark as *const u8)
}

/// How to unpark a waiter.
enum Parker {
    /// A coroutine: its task (non-owning) and the thread it runs on.
    Task { task: *const (), thread: *const u8 },
    /// A plain thread.
    Thread(Coroutine),
}

/// One waiting coroutine or thread (see the module docs).
pub(crate) struct Waiter {
    state: AtomicUsize,
    parker: Parker,
    /// Sits in several lists: claimed by CAS (see the module docs).
    select: bool,
    /// The address of the node whose claim won, for a select waiter;
    /// written by the claimer before it stores the token.
    winner: AtomicUsize,
    _pinned: PhantomPinned,
}

impl Waiter {
    /// A record for the calling coroutine (or thread).
    #[inline]
    pub fn new() -> Waiter {
        Waiter::with_claim(false)
    }

    /// A record that will sit in several lists (`select`): wakers claim it
    /// by CAS, and it leaves with `abandon` (see the module docs).
    pub fn new_select() -> Waiter {
        Waiter::with_claim(true)
    }

    #[inline]
    fn with_claim(select: bool) -> Waiter {
        let parker = match runtime::current_task_raw() {
            Some(task) => Parker::Task {
                task,
                thread: thread_mark(),
            },
            None => Parker::Thread(crate::current()),
        };
        Waiter {
            state: AtomicUsize::new(WAITING),
            parker,
            select,
            winner: AtomicUsize::new(0),
            _pinned: PhantomPinned,
        }
    }

    /// The token of a completed claim, if there is one yet (a select
    /// waiter being claimed has none yet).
    #[inline]
    pub fn token(&self) -> Option<usize> {
        match self.state.load(Ordering::Acquire) {
            WAITING | CLAIMING | ABANDONED => None,
            token => Some(token),
        }
    }

    /// A select waiter gives up: true if no claim had begun (none can now).
    /// False if one had: once the waiter has taken each of its lists' locks,
    /// `token` gives the claim's token.
    pub fn abandon(&self) -> bool {
        debug_assert!(self.select);
        self.state
            .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The address of the node whose claim completed (a select waiter that
    /// holds a token).
    pub fn winner(&self) -> usize {
        self.winner.load(Ordering::Relaxed)
    }

    /// Starts a claim of this waiter through `node`: always true for a
    /// single-list waiter (its node was just unlinked under the lock, which
    /// is the claim); for a select waiter, true if its CAS won.
    ///
    /// # Safety
    /// Under the lock of the list `node` (this waiter's) was just unlinked
    /// from; a true result must be followed by `complete`.
    #[inline]
    unsafe fn try_claim(&self, node: usize) -> bool {
        if !self.select {
            return true;
        }
        self.try_claim_select(node)
    }

    #[cold]
    #[inline(never)]
    fn try_claim_select(&self, node: usize) -> bool {
        if self
            .state
            .compare_exchange(WAITING, CLAIMING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.winner.store(node, Ordering::Relaxed);
        true
    }

    /// Parks until a waker completes a claim (returns its token) or until
    /// `deadline` passes unclaimed (returns None, the node unlinked). If the
    /// coroutine is cancelled while parked, it unwinds from here: the node
    /// is unlinked as on a timeout, or, if a claim won the race,
    /// `undo(token)` gives back what it delivered.
    ///
    /// `unlink` takes the primitive's lock and removes the node, returning
    /// whether it was still linked; `undo` takes the lock itself if needed.
    ///
    /// Always inlined, down to the switch, so that a coroutine parks in the
    /// frame it resumes in when the caller is inlined too (see
    /// `Channel::recv`).
    #[inline(always)]
    pub fn wait(
        &self,
        deadline: Option<Instant>,
        unlink: impl FnOnce() -> bool,
        undo: impl FnOnce(usize),
    ) -> Option<usize> {
        debug_assert!(!self.select, "a select waiter leaves with `abandon`");
        let guard = LeaveOnUnwind {
            waiter: self,
            unlink: ManuallyDrop::new(unlink),
            undo: ManuallyDrop::new(undo),
        };
        loop {
            let state = self.state.load(Ordering::Acquire);
            if state != WAITING {
                guard.disarm();
                return Some(state);
            }
            if self.park_once(deadline) {
                let unlink = guard.disarm();
                if unlink() {
                    return None;
                }
                // Claimed before we took the lock: the token is there.
                return Some(self.state.load(Ordering::Acquire));
            }
        }
    }

    /// One park; true if `deadline` has passed.
    #[inline(always)]
    pub fn park_once(&self, deadline: Option<Instant>) -> bool {
        let in_coroutine = matches!(self.parker, Parker::Task { .. });
        let _note = poison::ParkNote::enter(in_coroutine);
        if in_coroutine {
            // Both record `ParkReason::Sync` for `Runtime::metrics()`/`dump()`.
            return match deadline {
                // Inlined down to the switch (see the module docs, "Where
                // the switch happens").
                None => {
                    runtime::park_sync();
                    false
                }
                Some(_) => {
                    runtime::set_park_reason(ParkReason::Sync);
                    runtime::park_until(deadline)
                }
            };
        }
        match deadline {
            None => {
                thread::park();
                false
            }
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return true;
                }
                thread::park_timeout(deadline - now);
                Instant::now() >= deadline
            }
        }
    }

    /// Completes a claim with `token`: the last touch of the record.
    ///
    /// # Safety
    /// Under the lock of the list the waiter's node was just unlinked from,
    /// once per wait, after a `try_claim` that returned true.
    #[inline]
    unsafe fn complete(&self, token: usize) -> Wakeup {
        debug_assert!(token >= FIRST_TOKEN);
        let target = match &self.parker {
            Parker::Task { task, thread } if *thread == thread_mark() => WakeTarget::Local(*task),
            // SAFETY: the waiter cannot leave before the store below, so
            // its task is alive.
            Parker::Task { task, .. } => {
                WakeTarget::Owned(unsafe { runtime::coroutine_from_raw(*task) })
            }
            Parker::Thread(handle) => WakeTarget::Owned(handle.clone()),
        };
        self.state.store(token, Ordering::Release);
        Wakeup(target)
    }
}

/// Runs the leave path if `Waiter::wait` is left by unwinding.
struct LeaveOnUnwind<'a, U: FnOnce() -> bool, R: FnOnce(usize)> {
    waiter: &'a Waiter,
    unlink: ManuallyDrop<U>,
    undo: ManuallyDrop<R>,
}

impl<U: FnOnce() -> bool, R: FnOnce(usize)> LeaveOnUnwind<'_, U, R> {
    /// Defuses the guard, handing back `unlink`.
    #[inline]
    fn disarm(self) -> U {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so each closure is taken or
        // dropped exactly once, here.
        unsafe {
            ManuallyDrop::drop(&mut this.undo);
            ManuallyDrop::take(&mut this.unlink)
        }
    }
}

impl<U: FnOnce() -> bool, R: FnOnce(usize)> Drop for LeaveOnUnwind<'_, U, R> {
    fn drop(&mut self) {
        // SAFETY: dropped once (disarm forgets the guard instead).
        let (unlink, undo) = unsafe {
            (
                ManuallyDrop::take(&mut self.unlink),
                ManuallyDrop::take(&mut self.undo),
            )
        };
        if !unlink() {
            undo(self.waiter.state.load(Ordering::Acquire));
        }
    }
}

enum WakeTarget {
    /// A task of the waker's own thread (see the module docs).
    Local(*const ()),
    Owned(Coroutine),
}

/// The unpark a completed claim owes its waiter: delivered when dropped
/// (`wake` says so explicitly). Drop it after releasing the list lock, and
/// before the waker's thread can switch coroutines.
pub(crate) struct Wakeup(WakeTarget);

impl Wakeup {
    #[inline]
    pub fn wake(self) {}
}

impl Drop for Wakeup {
    #[inline]
    fn drop(&mut self) {
        match &self.0 {
            // SAFETY: the waiter runs on this thread, which has not switched
            // since the claim, so it has not finished.
            WakeTarget::Local(task) => unsafe { runtime::unpark_raw(*task) },
            WakeTarget::Owned(handle) => handle.unpark(),
        }
    }
}

/// Several wakeups, delivered together after the lock is released. The
/// first is kept inline: most wake-alls find one waiter.
#[derive(Default)]
pub(crate) struct Wakeups {
    first: Option<Wakeup>,
    rest: Vec<Wakeup>,
}

impl Wakeups {
    pub fn push(&mut self, wakeup: Wakeup) {
        if self.first.is_none() {
            self.first = Some(wakeup);
        } else {
            self.rest.push(wakeup);
        }
    }

    pub fn wake(self) {}
}

// ---------------------------------------------------------------------------
// Node and WaitList

/// A waiter's place in one `WaitList` (see the module docs).
pub(crate) struct Node<D> {
    prev: Cell<*const Node<D>>,
    next: Cell<*const Node<D>>,
    linked: Cell<bool>,
    waiter: *const Waiter,
    data: D,
    _pinned: PhantomPinned,
}

impl<D> Node<D> {
    /// Identifies the node (`Waiter::winner`).
    #[inline]
    pub fn addr(&self) -> usize {
        self as *const Node<D> as usize
    }

    pub fn new(waiter: &Waiter, data: D) -> Node<D> {
        Node {
            prev: Cell::new(ptr::null()),
            next: Cell::new(ptr::null()),
            linked: Cell::new(false),
            waiter,
            data,
            _pinned: PhantomPinned,
        }
    }
}

/// An intrusive FIFO of nodes, reached only under its primitive's
/// `SpinLock` (see the module docs).
pub(crate) struct WaitList<D> {
    head: *const Node<D>,
    tail: *const Node<D>,
}

// SAFETY: the list is reached only under its SpinLock; the nodes it points
// to stay alive and in place while linked (their waiters cannot leave
// without unlinking them under that lock). Whatever `D` carries across
// threads (a value slot) is bounded by the primitive that owns the list.
unsafe impl<D> Send for WaitList<D> {}

impl<D> WaitList<D> {
    pub const fn new() -> WaitList<D> {
        WaitList {
            head: ptr::null(),
            tail: ptr::null(),
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// The data of the first node.
    pub fn front(&self) -> Option<&D> {
        // SAFETY: a linked node is alive (see push_back).
        unsafe { self.head.as_ref().map(|node| &node.data) }
    }

    /// Links `node` at the back.
    ///
    /// # Safety
    /// `node` is in no list, and stays where it is, alive, until it has been
    /// unlinked under this list's lock: its waiter waits with `Waiter::wait`
    /// and its `unlink` calls `remove`.
    #[inline]
    pub unsafe fn push_back(&mut self, node: &Node<D>) {
        debug_assert!(!node.linked.get());
        node.prev.set(self.tail);
        node.next.set(ptr::null());
        node.linked.set(true);
        if self.tail.is_null() {
            self.head = node;
        } else {
            // SAFETY: the tail is a linked node (alive, see the invariant).
            unsafe { (*self.tail).next.set(node) };
        }
        self.tail = node;
    }

    /// Links `node` at the front.
    ///
    /// # Safety
    /// As `push_back`.
    pub unsafe fn push_front(&mut self, node: &Node<D>) {
        debug_assert!(!node.linked.get());
        node.prev.set(ptr::null());
        node.next.set(self.head);
        node.linked.set(true);
        if self.head.is_null() {
            self.tail = node;
        } else {
            // SAFETY: the head is a linked node.
            unsafe { (*self.head).prev.set(node) };
        }
        self.head = node;
    }

    /// Unlinks `node` if it is linked (a node is only ever in the list its
    /// owner pushed it to); true if it was.
    #[inline]
    pub fn remove(&mut self, node: &Node<D>) -> bool {
        if !node.linked.replace(false) {
            return false;
        }
        let (prev, next) = (node.prev.get(), node.next.get());
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: neighbours of a linked node are linked nodes.
            unsafe { (*prev).next.set(next) };
        }
        if next.is_null() {
            self.tail = prev;
        } else {
            // SAFETY: as above.
            unsafe { (*next).prev.set(prev) };
        }
        true
    }

    /// Wakes the first waiter with `token`, after `deliver` has handed it
    /// its outcome through the node's data (`deliver` also sees the rest of
    /// the list). None if the list is empty, or holds only select waiters
    /// that another list claimed or that gave up (dropped on the way).
    #[inline(always)]
    pub fn wake_front(&mut self, token: usize, deliver: impl FnOnce(&D, &Self)) -> Option<Wakeup> {
        self.wake_front_if(|_| true, token, deliver)
    }

    /// As `wake_front`, but only if the first waiter's data passes `wanted`.
    #[inline(always)]
    pub fn wake_front_if(
        &mut self,
        wanted: impl Fn(&D) -> bool,
        token: usize,
        deliver: impl FnOnce(&D, &Self),
    ) -> Option<Wakeup> {
        loop {
            // SAFETY: a linked node is alive and stays so until its claim
            // completes below (its waiter cannot unlink it while we hold
            // the lock).
            let node = unsafe { self.head.as_ref()? };
            if !wanted(&node.data) {
                return None;
            }
            self.remove(node);
            // SAFETY: unlinked under the lock just now.
            if unsafe { (*node.waiter).try_claim(node.addr()) } {
                deliver(&node.data, self);
                // SAFETY: claimed just now; completed once.
                return Some(unsafe { (*node.waiter).complete(token) });
            }
            // A select waiter claimed elsewhere or gone: its node is
            // dropped from this list, and the next one is tried.
        }
    }

    /// Wakes every waiter with `token`, calling `deliver` for each first.
    pub fn wake_all(&mut self, token: usize, mut deliver: impl FnMut(&D), wakeups: &mut Wakeups) {
        // SAFETY: as in `wake_front_if`.
        while let Some(node) = unsafe { self.head.as_ref() } {
            self.remove(node);
            // SAFETY: unlinked under the lock just now.
            if unsafe { (*node.waiter).try_claim(node.addr()) } {
                deliver(&node.data);
                // SAFETY: claimed just now; completed once.
                wakeups.push(unsafe { (*node.waiter).complete(token) });
            }
        }
    }
}

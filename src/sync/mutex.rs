//! `Mutex`: std's `Mutex` whose waits park the coroutine (or block a plain
//! thread), with Go's `sync.Mutex` policy — barging while that is cheap,
//! direct handoff to a starving waiter — adapted to coroutines that cannot
//! move between workers.
//!
//! # The state word
//!
//! `LOCKED` (held), `WOKEN` (a waiter has been woken, or a spinner is about
//! to take the lock: unlock need not wake another), `HANDOFF` (a starving
//! waiter is queued: the next unlock hands the lock to the queue's head,
//! and nobody barges meanwhile), `QUEUED` (the wait list may hold waiters).
//! Lock is one CAS `0 → LOCKED`; unlock is one `fetch_sub(LOCKED)` whose
//! result is 0 unless someone waits: no system call, no allocation, no list
//! lock on either fast path.
//!
//! # Normal mode
//!
//! A locker that finds the lock held spins a little (a holder on another
//! worker releases within nanoseconds; four rounds of 30 pauses, Go's
//! numbers), then queues: under the list lock it re-checks the word and
//! sets `QUEUED` with a CAS, so an unlock that came in between is seen
//! (the CAS fails, it retries) and an unlock after it sees `QUEUED`. It
//! parks. Unlock wakes the head only if nobody holds the lock again, no
//! waiter is already woken, and someone is queued; it sets `WOKEN` *before*
//! completing the claim (the woken waiter clears it on its next attempt,
//! and must not run before it is set). The woken waiter competes with new
//! arrivals, which may win ("barging": the lock goes to a running
//! coroutine instead of waiting for a parked one to be scheduled — the
//! cheap case); if it loses it queues again at the *front*.
//!
//! Measured on the 1,000-coroutine benchmark (BENCHMARKS.md): without the
//! spin, more lockers park and each wake of a waiter on the other worker
//! costs a cross-thread unpark; the median CPU time per run was 0.14 s
//! without spinning, 0.095 s with one round and 0.08 s with four.
//!
//! # Starvation
//!
//! A waiter that has waited longer than 1 ms (Go's threshold) sets
//! `HANDOFF` when it queues again; the next unlock then gives the lock
//! straight to the head (sets `LOCKED` on its behalf under the list lock,
//! then completes its claim with `HANDED_OFF`) and clears `HANDOFF`. So no
//! waiter starves under a stream of new lockers.
//!
//! Unlike Go, a handoff is one-shot and happens at most once per 1 ms per
//! mutex. Go stays in starvation mode while its waiters keep starving, and
//! its unlock hands the waiter its own processor, so the waiter runs at
//! once. A fibra coroutine runs only on its home worker: the lock stays
//! reserved for the parked head until that worker gets to it (its inbox, or
//! an eventfd wake), and nobody else may take it meanwhile. Held in that
//! mode, 1,000 contending coroutines on a loaded machine fell into a convoy
//! — one handoff per cross-worker wake — and a run took 12.8 s instead of
//! 0.1 s. Rate-limited, a handoff costs at most one wake latency per
//! millisecond.
//!
//! # Cancellation
//!
//! A coroutine cancelled while queued unlinks its node (clearing `QUEUED`
//! if the list empties). If a claim won the race: with `HANDED_OFF` it
//! owns the lock and unlocks it, passing it on; with `WOKEN` it clears
//! `WOKEN` and wakes the next waiter in its place.
//!
//! A spinning locker never keeps a worker for long: 120 pauses, then it
//! parks like anyone else. Spinning does nothing for a holder on the same
//! worker (it cannot run until we park); that costs one short spin.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LockResult, TryLockError, TryLockResult};
use std::time::{Duration, Instant};

use super::poison;
use super::waiter::{FIRST_TOKEN, Node, SpinLock, WaitList, Waiter};

const LOCKED: u32 = 1;
const WOKEN: u32 = 2;
const HANDOFF: u32 = 4;
const QUEUED: u32 = 8;

/// Wake tokens: compete for the lock again, or own it.
const WOKEN_TOKEN: usize = FIRST_TOKEN;
const HANDED_OFF: usize = FIRST_TOKEN + 1;

/// How long a waiter waits before it asks for handoff (Go's value).
const STARVATION: Duration = Duration::from_millis(1);
/// Spin rounds before queueing, and pauses per round (Go's values).
const SPIN_ROUNDS: u32 = 4;
const SPIN_PAUSES: u32 = 30;

/// The lock without the data: used by `Mutex` and `Condvar`.
pub(crate) struct RawMutex {
    state: AtomicU32,
    queue: SpinLock<Queue>,
}

struct Queue {
    /// Each node holds when its waiter first queued.
    waiters: WaitList<Instant>,
    /// When the lock was last handed over (see "Starvation").
    last_handoff: Option<Instant>,
}

impl RawMutex {
    pub const fn new() -> RawMutex {
        RawMutex {
            state: AtomicU32::new(0),
            queue: SpinLock::new(Queue {
                waiters: WaitList::new(),
                last_handoff: None,
            }),
        }
    }

    #[inline]
    pub fn try_lock(&self) -> bool {
        let state = self.state.load(Ordering::Relaxed);
        state & (LOCKED | HANDOFF) == 0
            && self
                .state
                .compare_exchange(state, state | LOCKED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    #[inline]
    pub fn lock(&self) {
        if self
            .state
            .compare_exchange_weak(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
    }

    /// # Safety
    /// The caller holds the lock.
    #[inline]
    pub unsafe fn unlock(&self) {
        let new = self.state.fetch_sub(LOCKED, Ordering::Release) - LOCKED;
        if new != 0 {
            self.unlock_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_slow(&self) {
        let mut first_queued: Option<Instant> = None;
        let mut starving = false;
        // This locker set WOKEN (as the woken waiter, or as a spinner) and
        // must clear it when it takes the lock or queues again.
        let mut awoke = false;
        let mut spins = 0;
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & (LOCKED | HANDOFF) == LOCKED && spins < SPIN_ROUNDS {
                if !awoke
                    && state & (WOKEN | QUEUED) == QUEUED
                    && self
                        .state
                        .compare_exchange(
                            state,
                            state | WOKEN,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    awoke = true;
                }
                for _ in 0..SPIN_PAUSES {
                    std::hint::spin_loop();
                }
                spins += 1;
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            if state & (LOCKED | HANDOFF) == 0 {
                let new = if awoke { state & !WOKEN } else { state } | LOCKED;
                match self.state.compare_exchange_weak(
                    state,
                    new,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return,
                    Err(now) => state = now,
                }
                continue;
            }
            // Held (or in handoff mode): queue and park.
            let requeue = first_queued.is_some();
            let started = *first_queued.get_or_insert_with(Instant::now);
            starving = starving || started.elapsed() > STARVATION;
            let waiter = Waiter::new();
            let node = Node::new(&waiter, started);
            {
                let mut queue = self.queue.lock();
                // One handoff per STARVATION at most (see "Starvation").
                let hand_off = starving
                    && queue
                        .last_handoff
                        .is_none_or(|last| last.elapsed() >= STARVATION);
                state = self.state.load(Ordering::Relaxed);
                let queued = loop {
                    if state & (LOCKED | HANDOFF) == 0 {
                        break false; // released meanwhile: try again
                    }
                    let mut new = state | QUEUED;
                    if awoke {
                        new &= !WOKEN;
                    }
                    if hand_off && state & LOCKED != 0 {
                        new |= HANDOFF;
                    }
                    match self.state.compare_exchange_weak(
                        state,
                        new,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => break true,
                        Err(now) => state = now,
                    }
                };
                if !queued {
                    continue;
                }
                // SAFETY: the node stays in this frame until `wait` returns,
                // and `wait` unlinks it (`forget`) unless a claim did.
                unsafe {
                    if requeue {
                        queue.waiters.push_front(&node);
                    } else {
                        queue.waiters.push_back(&node);
                    }
                }
            }
            let token = waiter.wait(None, || self.forget(&node), |token| self.undo(token));
            match token {
                Some(HANDED_OFF) => return,
                _ => {
                    // WOKEN_TOKEN: compete again (WOKEN is ours to clear).
                    awoke = true;
                    spins = 0;
                    state = self.state.load(Ordering::Relaxed);
                }
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn unlock_slow(&self) {
        let mut queue = self.queue.lock();
        let state = self.state.load(Ordering::Relaxed);
        if state & HANDOFF != 0 && state & LOCKED == 0 {
            let wakeup = queue.waiters.wake_front(HANDED_OFF, |_, rest| {
                let clear = if rest.is_empty() {
                    QUEUED | HANDOFF
                } else {
                    HANDOFF
                };
                // Nobody else changes the word while HANDOFF is set and we
                // hold the list lock, but a stale CAS may still be in flight.
                let _ = self
                    .state
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                        Some((s | LOCKED) & !clear)
                    });
            });
            queue.last_handoff = Some(Instant::now());
            if wakeup.is_none() {
                self.state.fetch_and(!(QUEUED | HANDOFF), Ordering::Relaxed);
            }
            drop(queue);
            if let Some(wakeup) = wakeup {
                wakeup.wake();
            }
            return;
        }
        if state & QUEUED == 0 || state & (LOCKED | WOKEN | HANDOFF) != 0 {
            return; // nobody waits, or someone else will wake the next
        }
        // WOKEN before the claim completes: the woken waiter clears it.
        self.state.fetch_or(WOKEN, Ordering::Relaxed);
        let wakeup = queue.waiters.wake_front(WOKEN_TOKEN, |_, _| ());
        let mut clear = 0;
        if wakeup.is_none() {
            clear |= WOKEN;
        }
        if queue.waiters.is_empty() {
            clear |= QUEUED;
        }
        if clear != 0 {
            self.state.fetch_and(!clear, Ordering::Relaxed);
        }
        drop(queue);
        if let Some(wakeup) = wakeup {
            wakeup.wake();
        }
    }

    /// A cancelled waiter leaves the queue (false: a claim took it first).
    fn forget(&self, node: &Node<Instant>) -> bool {
        let mut queue = self.queue.lock();
        let removed = queue.waiters.remove(node);
        if removed && queue.waiters.is_empty() {
            self.state.fetch_and(!QUEUED, Ordering::Relaxed);
        }
        removed
    }

    /// A cancelled waiter gives back what a claim handed it.
    fn undo(&self, token: usize) {
        if token == HANDED_OFF {
            // SAFETY: the handoff made us the holder.
            unsafe { self.unlock() };
        } else {
            // We were the woken waiter: let unlock wake someone else.
            self.state.fetch_and(!WOKEN, Ordering::Relaxed);
            self.unlock_slow();
        }
    }
}

// ---------------------------------------------------------------------------
// Mutex

/// A mutual exclusion lock, as `std::sync::Mutex`: same methods, guards and
/// poisoning. A `lock()` that must wait parks the calling coroutine (other
/// coroutines of its worker run meanwhile) or blocks a plain thread; both
/// may share one `Mutex`. Waiters are served in arrival order once one has
/// waited 1 ms (see the module docs).
///
/// A guard may be held across a park (`fibra::sleep`, socket I/O, a channel
/// `recv`): only the coroutines that want this lock wait, unlike a
/// `std::sync::Mutex`, which would block the whole worker.
///
/// ```
/// use fibra::sync::{Arc, Mutex};
///
/// let counter = Arc::new(Mutex::new(0u64));
/// let handles: Vec<_> = (0..100)
///     .map(|_| {
///         let counter = Arc::clone(&counter);
///         fibra::spawn(move || {
///             for _ in 0..100 {
///                 *counter.lock().unwrap() += 1;
///                 fibra::yield_now();
///             }
///         })
///     })
///     .collect();
/// for handle in handles {
///     handle.join().unwrap();
/// }
/// assert_eq!(*counter.lock().unwrap(), 10_000);
/// ```
pub struct Mutex<T: ?Sized> {
    raw: RawMutex,
    poison: poison::Flag,
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only by the lock's single holder.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above; T moves between threads through the guard, hence Send.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

impl<T: ?Sized> UnwindSafe for Mutex<T> {}
impl<T: ?Sized> RefUnwindSafe for Mutex<T> {}

/// Access to a locked `Mutex`'s data; unlocks when dropped (as
/// `std::sync::MutexGuard`, and like it not `Send`).
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized + 'a> {
    lock: &'a Mutex<T>,
    poison: poison::Guard,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing the guard shares `&T` only.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            raw: RawMutex::new(),
            poison: poison::Flag::new(),
            data: UnsafeCell::new(value),
        }
    }
}

lock_conversions!(Mutex, MutexGuard);

impl<T: ?Sized> Mutex<T> {
    /// Acquires the lock, parking the calling coroutine (or blocking the
    /// thread) until it is free. `Err` if a holder panicked; the guard is
    /// inside.
    #[inline]
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.raw.lock();
        // SAFETY: we hold the lock.
        unsafe { MutexGuard::new(self) }
    }

    /// Acquires the lock if it is free now (`WouldBlock` otherwise).
    #[inline]
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        if self.raw.try_lock() {
            // SAFETY: we hold the lock.
            Ok(unsafe { MutexGuard::new(self) }?)
        } else {
            Err(TryLockError::WouldBlock)
        }
    }

    pub(crate) fn raw(&self) -> &RawMutex {
        &self.raw
    }

    pub(crate) fn poison(&self) -> &poison::Flag {
        &self.poison
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Ok(guard) => d.field("data", &&*guard),
            Err(TryLockError::Poisoned(err)) => d.field("data", &&**err.get_ref()),
            // As std prints it (a quoted placeholder).
            Err(TryLockError::WouldBlock) => d.field("data", &"<locked>"),
        };
        d.field("poisoned", &self.poison.get());
        d.finish_non_exhaustive()
    }
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// # Safety
    /// The caller holds `lock`'s lock.
    #[inline]
    unsafe fn new(lock: &'a Mutex<T>) -> LockResult<MutexGuard<'a, T>> {
        let guard = MutexGuard {
            lock,
            poison: lock.poison.guard(),
            _not_send: PhantomData,
        };
        poison::map_result(&lock.poison, guard)
    }

    pub(crate) fn mutex(guard: &Self) -> &'a Mutex<T> {
        guard.lock
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.poison.done(&self.poison);
        // SAFETY: the guard holds the lock.
        unsafe { self.lock.raw.unlock() };
    }
}

//! `RwLock`: std's reader-writer lock; waits park the coroutine (or block a
//! plain thread). Neither writers nor readers starve: once anyone waits,
//! newcomers queue behind them, and the queue is served in order.
//!
//! # The state word
//!
//! `WRITER` (held for writing), `QUEUED` (the wait list may hold waiters),
//! and the number of readers in the bits above (`READER` each). Fast
//! paths: a reader adds `READER` with a CAS if neither `WRITER` nor
//! `QUEUED` is set; a writer CASes `0 → WRITER`; unlocks subtract, and
//! look at the list only when `QUEUED` is set.
//!
//! # Handoff (why no one starves)
//!
//! While `QUEUED` is set no one acquires by the fast path: a reader does
//! not slip past a waiting writer (no writer starvation, as std promises
//! nothing here but Go's `RWMutex` does), and a writer does not slip past
//! waiting readers. Locks are *granted* instead, under the list lock, by
//! whoever releases (the last reader out, a writer, a downgrade, or a
//! cancelled waiter whose departure unblocks the head): from the head,
//! either one writer (if no one holds the lock) or every reader up to the
//! next writer (if no writer holds it). The granter adds the waiter's
//! `READER`/`WRITER` to the word before it completes the claim, so the
//! woken waiter returns owning the lock. A waiter queues only after
//! setting `QUEUED` with a CAS that re-checks the word, under the list
//! lock: a release either happened before (the CAS sees it and the waiter
//! takes the lock instead) or sees `QUEUED` and grants.
//!
//! # Cancellation
//!
//! A coroutine cancelled while queued unlinks its node and runs the grant
//! again (its departure may unblock readers behind it). If a grant won the
//! race, it releases what it was granted.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LockResult, TryLockError, TryLockResult};

use super::poison;
use super::waiter::{FIRST_TOKEN, Node, SpinLock, WaitList, Waiter, Wakeups};

const WRITER: usize = 1;
const QUEUED: usize = 2;
const READER: usize = 4;

const GRANTED: usize = FIRST_TOKEN;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Read,
    Write,
}

struct RawRwLock {
    state: AtomicUsize,
    queue: SpinLock<WaitList<Want>>,
}

impl RawRwLock {
    const fn new() -> RawRwLock {
        RawRwLock {
            state: AtomicUsize::new(0),
            queue: SpinLock::new(WaitList::new()),
        }
    }

    #[inline]
    fn try_read(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        while state & (WRITER | QUEUED) == 0 {
            match self.state.compare_exchange_weak(
                state,
                state + READER,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    #[inline]
    fn try_write(&self) -> bool {
        self.state
            .compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[inline]
    fn read(&self) {
        if !self.try_read() {
            self.wait(Want::Read);
        }
    }

    #[inline]
    fn write(&self) {
        if !self.try_write() {
            self.wait(Want::Write);
        }
    }

    /// # Safety
    /// The caller holds a read lock.
    #[inline]
    unsafe fn read_unlock(&self) {
        let before = self.state.fetch_sub(READER, Ordering::Release);
        if before == READER | QUEUED {
            self.release_slow(0);
        }
    }

    /// # Safety
    /// The caller holds the write lock.
    #[inline]
    unsafe fn write_unlock(&self) {
        if self
            .state
            .compare_exchange(WRITER, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.release_slow(WRITER);
        }
    }

    /// Turns the caller's write lock into a read lock.
    ///
    /// # Safety
    /// The caller holds the write lock.
    unsafe fn downgrade(&self) {
        if self
            .state
            .compare_exchange(WRITER, READER, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            let mut queue = self.queue.lock();
            self.state.fetch_add(READER - WRITER, Ordering::Release);
            let wakeups = self.grant(&mut queue);
            drop(queue);
            wakeups.wake();
        }
    }

    #[cold]
    #[inline(never)]
    fn wait(&self, want: Want) {
        let waiter = Waiter::new();
        let node = Node::new(&waiter, want);
        {
            let mut queue = self.queue.lock();
            let mut state = self.state.load(Ordering::Relaxed);
            loop {
                let (free, taken) = match want {
                    Want::Read => (state & (WRITER | QUEUED) == 0, state + READER),
                    Want::Write => (state == 0, WRITER),
                };
                let new = if free { taken } else { state | QUEUED };
                match self.state.compare_exchange_weak(
                    state,
                    new,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) if free => return,
                    Ok(_) => break,
                    Err(now) => state = now,
                }
            }
            // SAFETY: the node stays in this frame until `wait` returns, and
            // `wait` unlinks it (`forget`) unless a grant did.
            unsafe { queue.push_back(&node) };
        }
        waiter.wait(
            None,
            || {
                let mut queue = self.queue.lock();
                let removed = queue.remove(&node);
                let wakeups = self.grant(&mut queue);
                drop(queue);
                wakeups.wake();
                removed
            },
            |_| match want {
                // SAFETY: the grant made us a holder.
                Want::Read => unsafe { self.read_unlock() },
                // SAFETY: as above.
                Want::Write => unsafe { self.write_unlock() },
            },
        );
    }

    /// Releases `held` (WRITER, or 0 for a last reader already counted
    /// out) while waiters are queued, and grants the lock onward.
    #[cold]
    #[inline(never)]
    fn release_slow(&self, held: usize) {
        let mut queue = self.queue.lock();
        if held != 0 {
            self.state.fetch_sub(held, Ordering::Release);
        }
        let wakeups = self.grant(&mut queue);
        drop(queue);
        wakeups.wake();
    }

    /// Grants the lock to the head of the queue as far as the state allows
    /// (see the module docs); the caller wakes the grantees once it has
    /// released the list lock.
    #[must_use]
    fn grant(&self, queue: &mut WaitList<Want>) -> Wakeups {
        let mut wakeups = Wakeups::default();
        while let Some(&want) = queue.front() {
            let state = self.state.load(Ordering::Relaxed);
            let wakeup = match want {
                Want::Read if state & WRITER == 0 => queue.wake_front_if(
                    |w| *w == Want::Read,
                    GRANTED,
                    |_, _| {
                        self.state.fetch_add(READER, Ordering::Relaxed);
                    },
                ),
                Want::Write if state & !QUEUED == 0 => queue.wake_front_if(
                    |w| *w == Want::Write,
                    GRANTED,
                    |_, _| {
                        self.state.fetch_or(WRITER, Ordering::Relaxed);
                    },
                ),
                _ => break,
            };
            if let Some(wakeup) = wakeup {
                wakeups.push(wakeup);
            }
        }
        if queue.is_empty() {
            self.state.fetch_and(!QUEUED, Ordering::Relaxed);
        }
        wakeups
    }
}

// ---------------------------------------------------------------------------
// RwLock

/// A reader-writer lock, as `std::sync::RwLock`: same methods, guards and
/// poisoning (a writer that panics poisons it). Waits park the calling
/// coroutine or block a plain thread; waiters are served in arrival order,
/// so a stream of readers never starves a writer.
///
/// ```
/// use fibra::sync::{Arc, RwLock};
///
/// let lock = Arc::new(RwLock::new(vec![1, 2, 3]));
/// let reader = {
///     let lock = Arc::clone(&lock);
///     fibra::spawn(move || lock.read().unwrap().len())
/// };
/// lock.write().unwrap().push(4);
/// let seen = reader.join().unwrap();
/// assert!(seen == 3 || seen == 4);
/// assert_eq!(*lock.read().unwrap(), [1, 2, 3, 4]);
/// ```
pub struct RwLock<T: ?Sized> {
    raw: RawRwLock,
    poison: poison::Flag,
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only through the lock's guards.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: readers share `&T` across threads (Sync); a writer may get the
// value on any thread (Send).
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

impl<T: ?Sized> UnwindSafe for RwLock<T> {}
impl<T: ?Sized> RefUnwindSafe for RwLock<T> {}

/// Shared access to a `RwLock`'s data (as `std::sync::RwLockReadGuard`).
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized + 'a> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: the guard gives `&T` only.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}

/// Exclusive access to a `RwLock`'s data (as `std::sync::RwLockWriteGuard`).
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized + 'a> {
    lock: &'a RwLock<T>,
    poison: poison::Guard,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing the guard shares `&T` only.
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

impl<T> RwLock<T> {
    /// A new unlocked lock.
    pub const fn new(value: T) -> RwLock<T> {
        RwLock {
            raw: RawRwLock::new(),
            poison: poison::Flag::new(),
            data: UnsafeCell::new(value),
        }
    }
}

lock_conversions!(RwLock, RwLockReadGuard, RwLockWriteGuard);

impl<T: ?Sized> RwLock<T> {
    /// Shared access, parking while a writer holds or waits for the lock.
    #[inline]
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        self.raw.read();
        poison::map_result(&self.poison, self.read_guard())
    }

    /// Shared access if available now.
    #[inline]
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        if self.raw.try_read() {
            Ok(poison::map_result(&self.poison, self.read_guard())?)
        } else {
            Err(TryLockError::WouldBlock)
        }
    }

    /// Exclusive access, parking until every other holder is gone.
    #[inline]
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        self.raw.write();
        poison::map_result(&self.poison, self.write_guard())
    }

    /// Exclusive access if available now.
    #[inline]
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        if self.raw.try_write() {
            Ok(poison::map_result(&self.poison, self.write_guard())?)
        } else {
            Err(TryLockError::WouldBlock)
        }
    }

    fn read_guard(&self) -> RwLockReadGuard<'_, T> {
        RwLockReadGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, T> {
        RwLockWriteGuard {
            lock: self,
            poison: self.poison.guard(),
            _not_send: PhantomData,
        }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RwLock");
        match self.try_read() {
            Ok(guard) => d.field("data", &&*guard),
            Err(TryLockError::Poisoned(err)) => d.field("data", &&**err.get_ref()),
            // As std prints it (a quoted placeholder).
            Err(TryLockError::WouldBlock) => d.field("data", &"<locked>"),
        };
        d.field("poisoned", &self.poison.get());
        d.finish_non_exhaustive()
    }
}

impl<'a, T: ?Sized> RwLockWriteGuard<'a, T> {
    /// Turns the write lock into a read lock without letting a writer in
    /// between; readers queued at the head are let in too.
    pub fn downgrade(s: Self) -> RwLockReadGuard<'a, T> {
        let lock = s.lock;
        lock.poison.done(&s.poison);
        std::mem::forget(s);
        // SAFETY: the write guard held the lock; it is forgotten, so it will
        // not unlock it again.
        unsafe { lock.raw.downgrade() };
        lock.read_guard()
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds a read lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the write lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the write lock.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard holds a read lock.
        unsafe { self.lock.raw.read_unlock() };
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.poison.done(&self.poison);
        // SAFETY: the guard holds the write lock.
        unsafe { self.lock.raw.write_unlock() };
    }
}

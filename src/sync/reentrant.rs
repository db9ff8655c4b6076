//! `ReentrantLock`: a lock its owner may take again (Python's `RLock`,
//! std's unstable `ReentrantLock`), owned by a coroutine — not by the
//! worker thread it runs on.
//!
//! # Ownership per coroutine
//!
//! The owner is recorded by coroutine id (`fibra::current().id()`: a
//! coroutine's, or a plain thread's; ids are never reused). Coroutines of
//! one worker share its thread, so a lock owned per *thread* — std's
//! `ReentrantLock`, parking_lot's `ReentrantMutex` — would let a second
//! coroutine of the same worker walk in while the first is parked holding
//! it. Here that coroutine waits, parked, like anyone else.
//!
//! # How it works
//!
//! `lock` compares the owner word with the caller's id: equal, it counts
//! one more level (only the owner ever reads or writes the count, and
//! only the owner can find its own id there); otherwise it takes the inner
//! `RawMutex` (fibra's `Mutex` without data: Go's barging-then-handoff
//! policy, parking on contention), then records itself as owner with a
//! count of one. The guard's drop counts down; the last one clears the
//! owner word *before* unlocking the inner mutex, so the next owner never
//! sees a stale id. A non-owner may read the owner word at any time: it
//! can only ever see another id or 0, never its own (its id is written
//! there only by itself), so the Relaxed loads cannot mislead it.
//!
//! There is no poisoning (as std's `ReentrantLock`): the guard gives `&T`
//! only, so a panic cannot leave `T` half-modified through this lock.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::mutex::RawMutex;
use crate::runtime;

/// A lock that the coroutine (or thread) holding it may take again; the
/// guard gives `&T` (use a `Cell`/`RefCell` inside for mutation). Another
/// coroutine — also one of the same worker — parks until the owner has
/// dropped every guard.
///
/// ```
/// use fibra::sync::{Arc, ReentrantLock};
/// use std::cell::RefCell;
///
/// let log = Arc::new(ReentrantLock::new(RefCell::new(Vec::new())));
/// fn record(log: &ReentrantLock<RefCell<Vec<u32>>>, depth: u32) {
///     let guard = log.lock(); // the owner re-enters
///     guard.borrow_mut().push(depth);
///     if depth < 3 {
///         record(log, depth + 1);
///     }
/// }
/// let handles: Vec<_> = (0..4)
///     .map(|_| {
///         let log = Arc::clone(&log);
///         fibra::spawn(move || record(&log, 0))
///     })
///     .collect();
/// for handle in handles {
///     handle.join().unwrap();
/// }
/// // Each coroutine's four entries are contiguous: nobody got in between.
/// let log = log.lock().borrow().clone();
/// assert_eq!(log.len(), 16);
/// assert!(log.chunks(4).all(|run| run == [0, 1, 2, 3]));
/// ```
pub struct ReentrantLock<T: ?Sized> {
    raw: RawMutex,
    /// The owner's id, 0 when free.
    owner: AtomicU64,
    /// Levels held by the owner (touched by the owner only).
    count: AtomicUsize,
    data: T,
}

// SAFETY: `&T` is handed only to the owner — one coroutine, hence one
// thread, at a time, ownership passing through `raw` (acquire/release) —
// so `T` needs only to be `Send`, as for std's `ReentrantLock`.
unsafe impl<T: ?Sized + Send> Sync for ReentrantLock<T> {}

/// One level of a held `ReentrantLock`; the lock is released when the
/// owner's last guard is dropped. Not `Send` (as std's).
///
/// ```
/// use fibra::sync::{Arc, ReentrantLock};
///
/// let lock = Arc::new(ReentrantLock::new(5));
/// let outer = lock.lock();
/// let inner = lock.lock(); // the same owner: a second level
/// assert_eq!(*outer + *inner, 10);
/// let other = {
///     let lock = Arc::clone(&lock);
///     fibra::spawn(move || lock.try_lock().is_none())
/// };
/// assert!(other.join().unwrap(), "another coroutine cannot take it");
/// drop(inner);
/// drop(outer); // the last level: released
/// let lock2 = Arc::clone(&lock);
/// assert!(fibra::spawn(move || lock2.try_lock().is_some()).join().unwrap());
/// ```
#[must_use = "if unused the ReentrantLock will immediately unlock"]
pub struct ReentrantLockGuard<'a, T: ?Sized + 'a> {
    lock: &'a ReentrantLock<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing the guard shares `&T` only.
unsafe impl<T: ?Sized + Sync> Sync for ReentrantLockGuard<'_, T> {}

impl<T> ReentrantLock<T> {
    /// A new, free lock.
    pub const fn new(value: T) -> ReentrantLock<T> {
        ReentrantLock {
            raw: RawMutex::new(),
            owner: AtomicU64::new(0),
            count: AtomicUsize::new(0),
            data: value,
        }
    }

    /// Consumes the lock, returning its data.
    pub fn into_inner(self) -> T {
        self.data
    }
}

impl<T: ?Sized> ReentrantLock<T> {
    /// Takes the lock — at once if the caller owns it already, else parking
    /// until it is free.
    ///
    /// # Panics
    /// If the owner's level count would overflow `usize`.
    pub fn lock(&self) -> ReentrantLockGuard<'_, T> {
        let me = runtime::current_id();
        if !self.enter_again(me) {
            self.raw.lock();
            self.become_owner(me);
        }
        self.guard()
    }

    /// Takes the lock if the caller owns it or it is free now.
    pub fn try_lock(&self) -> Option<ReentrantLockGuard<'_, T>> {
        let me = runtime::current_id();
        if !self.enter_again(me) {
            if !self.raw.try_lock() {
                return None;
            }
            self.become_owner(me);
        }
        Some(self.guard())
    }

    /// The data, through `&mut self` (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.data
    }

    /// One more level if `me` owns the lock.
    #[inline]
    fn enter_again(&self, me: u64) -> bool {
        if self.owner.load(Ordering::Relaxed) != me {
            return false;
        }
        let count = self.count.load(Ordering::Relaxed);
        let count = count
            .checked_add(1)
            .expect("ReentrantLock: the lock count overflows usize");
        self.count.store(count, Ordering::Relaxed);
        true
    }

    /// Records `me` as owner, having just taken `raw`.
    #[inline]
    fn become_owner(&self, me: u64) {
        self.owner.store(me, Ordering::Relaxed);
        self.count.store(1, Ordering::Relaxed);
    }

    fn guard(&self) -> ReentrantLockGuard<'_, T> {
        ReentrantLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }
}

impl<T: ?Sized> Drop for ReentrantLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        let lock = self.lock;
        let count = lock.count.load(Ordering::Relaxed) - 1;
        lock.count.store(count, Ordering::Relaxed);
        if count == 0 {
            lock.owner.store(0, Ordering::Relaxed);
            // SAFETY: the owner's last guard: we hold `raw`.
            unsafe { lock.raw.unlock() };
        }
    }
}

impl<T: ?Sized> Deref for ReentrantLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.lock.data
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for ReentrantLockGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Default> Default for ReentrantLock<T> {
    fn default() -> ReentrantLock<T> {
        ReentrantLock::new(T::default())
    }
}

impl<T> From<T> for ReentrantLock<T> {
    fn from(value: T) -> ReentrantLock<T> {
        ReentrantLock::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for ReentrantLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ReentrantLock");
        match self.try_lock() {
            Some(guard) => d.field("data", &&*guard),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

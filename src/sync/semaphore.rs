//! `Semaphore`: a count of permits; `acquire` takes some (parking while
//! there are too few), dropping the `SemaphorePermit` gives them back.
//!
//! # Fairness: strict FIFO
//!
//! Requests are served in arrival order: a request that finds anyone
//! queued queues behind them even if enough permits are free, and a
//! release grants the queue's head first, then the next, while the free
//! permits cover each. So a large request at the head holds back the small
//! ones behind it until enough permits have come back, instead of being
//! starved by a stream of small acquirers (tokio's semaphore does the
//! same; barging, as `Mutex` allows, would starve it). `try_acquire`
//! respects the queue too.
//!
//! # The count word and the queue
//!
//! The free permits live in one atomic word, shifted left by one; its low
//! bit, `QUEUED`, says the queue of waiting requests is not empty. The
//! queue sits under a `SpinLock`, and `QUEUED` changes only under it: set
//! before a request is linked into an empty queue, cleared when the queue
//! empties. So the uncontended paths need no lock: an acquire that sees
//! `QUEUED` clear and enough permits takes them with one CAS, and a release
//! that sees `QUEUED` clear gives them back with one CAS. Either finding
//! `QUEUED` set takes the lock instead.
//!
//! While `QUEUED` is set, nothing changes the word outside the lock: the
//! fast paths refuse to, and a fast CAS that read the word before the bit
//! was set fails, because the word changed. The lock holder then has the
//! count to itself.
//!
//! # No lost wakeup
//!
//! A request that must wait takes the lock, sets `QUEUED` (if the queue was
//! empty) and, in the same critical section, looks at the count the bit
//! froze: a release whose CAS came first is counted there, and one that
//! comes later sees the bit and takes the lock. Every change of the count
//! under the lock (a release, `add_permits`, a queued request leaving) runs
//! `grant`, which takes the permits on the head's behalf and claims it
//! (`waiter.rs`). A request that times out or is cancelled unlinks its
//! node; if a grant beat it, it gives those permits back (a release,
//! granting onward). A head that leaves empty-handed also runs `grant`:
//! the requests behind it may fit now.
//!
//! Uncontended `acquire` and release are one CAS each: no lock, no system
//! call, no allocation.
//!
//! # Owned permits
//!
//! `SemaphorePermit` borrows its semaphore, so it cannot move into a
//! spawned coroutine (`'static`). The `*_owned` methods take an
//! `Arc<Semaphore>` and return an `OwnedSemaphorePermit` that holds it
//! (tokio's names and shape): the usual way to cap how many spawned
//! coroutines run a section at once. Both kinds take and give back
//! permits the same way; only what the permit holds differs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::waiter::{FIRST_TOKEN, Node, SpinLock, WaitList, Waiter, Wakeups};

const GRANTED: usize = FIRST_TOKEN;

/// The count word's low bit: the queue is not empty (see the module docs).
const QUEUED: usize = 1;
/// One permit in the count word.
const ONE: usize = 2;

/// A counting semaphore whose waits park the calling coroutine (or block a
/// plain thread), serving requests in arrival order (see the module docs).
///
/// ```
/// use fibra::sync::{Arc, Semaphore};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// // At most 3 of the 20 coroutines are inside at any time.
/// let slots = Arc::new(Semaphore::new(3));
/// let inside = Arc::new(AtomicUsize::new(0));
/// let handles: Vec<_> = (0..20)
///     .map(|_| {
///         let (slots, inside) = (Arc::clone(&slots), Arc::clone(&inside));
///         fibra::spawn(move || {
///             let _permit = slots.acquire();
///             assert!(inside.fetch_add(1, Ordering::SeqCst) < 3);
///             fibra::yield_now();
///             inside.fetch_sub(1, Ordering::SeqCst);
///         })
///     })
///     .collect();
/// for handle in handles {
///     handle.join().unwrap();
/// }
/// assert_eq!(slots.available_permits(), 3);
/// ```
pub struct Semaphore {
    /// Free permits × `ONE`, plus `QUEUED`.
    count: AtomicUsize,
    /// Each node holds how many permits its request wants.
    queue: SpinLock<WaitList<usize>>,
}

/// Permits taken from a `Semaphore`; dropping it gives them back.
///
/// ```
/// use fibra::sync::Semaphore;
/// use std::time::Duration;
///
/// let semaphore = Semaphore::new(3);
/// let two = semaphore.acquire_many(2);
/// assert_eq!((two.num_permits(), semaphore.available_permits()), (2, 1));
/// assert!(semaphore.try_acquire_many(2).is_none());
/// assert!(semaphore.acquire_many_timeout(2, Duration::from_millis(1)).is_none());
/// drop(two); // back in the semaphore
/// assert_eq!(semaphore.available_permits(), 3);
/// semaphore.acquire().forget(); // kept out for good
/// assert_eq!(semaphore.available_permits(), 2);
/// ```
#[must_use = "the permits go back to the semaphore when this is dropped"]
pub struct SemaphorePermit<'a> {
    semaphore: &'a Semaphore,
    permits: usize,
}

impl Semaphore {
    /// The most permits a semaphore can count (one bit of the count word
    /// says whether anyone is queued).
    pub const MAX_PERMITS: usize = usize::MAX >> 1;

    /// A semaphore with `permits` permits.
    ///
    /// # Panics
    /// If `permits` is more than `Semaphore::MAX_PERMITS`.
    pub const fn new(permits: usize) -> Semaphore {
        assert!(
            permits <= Semaphore::MAX_PERMITS,
            "Semaphore: too many permits"
        );
        Semaphore {
            count: AtomicUsize::new(permits * ONE),
            queue: SpinLock::new(WaitList::new()),
        }
    }

    /// Takes one permit, parking until one is free (and every earlier
    /// request has been served).
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        self.acquire_many(1)
    }

    /// Takes `n` permits at once, parking until they are free (and every
    /// earlier request has been served). A request for more permits than
    /// will ever be free waits forever (use `acquire_many_timeout`).
    pub fn acquire_many(&self, n: usize) -> SemaphorePermit<'_> {
        self.take_untimed(n);
        self.permit(n)
    }

    /// One permit if it is free now and nobody is queued.
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.try_acquire_many(1)
    }

    /// `n` permits if they are free now and nobody is queued.
    pub fn try_acquire_many(&self, n: usize) -> Option<SemaphorePermit<'_>> {
        self.take(n, None).then(|| self.permit(n))
    }

    /// As `acquire`, for at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        self.acquire_many_timeout(1, timeout)
    }

    /// As `acquire_many`, for at most `timeout`. A request that gives up
    /// leaves the queue, and the requests behind it move up.
    pub fn acquire_many_timeout(&self, n: usize, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        self.take(n, Some(Instant::now().checked_add(timeout)))
            .then(|| self.permit(n))
    }

    /// As `acquire`, holding the semaphore by its `Arc`: the permit can
    /// move into a spawned coroutine.
    ///
    /// ```
    /// use fibra::sync::{Arc, Semaphore};
    ///
    /// // At most 2 of the 10 coroutines hold a connection slot at once.
    /// let slots = Arc::new(Semaphore::new(2));
    /// let handles: Vec<_> = (0..10)
    ///     .map(|i| {
    ///         let permit = Arc::clone(&slots).acquire_owned(); // parks the spawner
    ///         fibra::spawn(move || {
    ///             let _permit = permit; // given back when this coroutine ends
    ///             i * 2
    ///         })
    ///     })
    ///     .collect();
    /// let sum: i32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    /// assert_eq!(sum, 90);
    /// assert_eq!(slots.available_permits(), 2);
    /// ```
    pub fn acquire_owned(self: Arc<Self>) -> OwnedSemaphorePermit {
        self.acquire_many_owned(1)
    }

    /// As `acquire_many`, holding the semaphore by its `Arc`.
    pub fn acquire_many_owned(self: Arc<Self>, n: usize) -> OwnedSemaphorePermit {
        self.take_untimed(n);
        OwnedSemaphorePermit::new(self, n)
    }

    /// As `try_acquire`, holding the semaphore by its `Arc`.
    pub fn try_acquire_owned(self: Arc<Self>) -> Option<OwnedSemaphorePermit> {
        self.try_acquire_many_owned(1)
    }

    /// As `try_acquire_many`, holding the semaphore by its `Arc`.
    pub fn try_acquire_many_owned(self: Arc<Self>, n: usize) -> Option<OwnedSemaphorePermit> {
        let taken = self.take(n, None);
        taken.then(|| OwnedSemaphorePermit::new(self, n))
    }

    /// As `acquire_timeout`, holding the semaphore by its `Arc`.
    pub fn acquire_owned_timeout(
        self: Arc<Self>,
        timeout: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        self.acquire_many_owned_timeout(1, timeout)
    }

    /// As `acquire_many_timeout`, holding the semaphore by its `Arc`.
    pub fn acquire_many_owned_timeout(
        self: Arc<Self>,
        n: usize,
        timeout: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let taken = self.take(n, Some(Instant::now().checked_add(timeout)));
        taken.then(|| OwnedSemaphorePermit::new(self, n))
    }

    /// Adds `n` permits (they are granted to queued requests first).
    ///
    /// # Panics
    /// If the count would pass `Semaphore::MAX_PERMITS`.
    pub fn add_permits(&self, n: usize) {
        self.release(n);
    }

    /// Permits free now.
    pub fn available_permits(&self) -> usize {
        self.count.load(Ordering::Acquire) / ONE
    }

    /// Takes `n` permits: without waiting (`wait` None), or waiting until
    /// the deadline (`Some(None)`: forever). True if they were taken; the
    /// caller wraps them in a permit.
    #[inline]
    fn take(&self, n: usize, wait: Option<Option<Instant>>) -> bool {
        let mut count = self.count.load(Ordering::Relaxed);
        while count & QUEUED == 0 && count / ONE >= n {
            match self.count.compare_exchange_weak(
                count,
                count - n * ONE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => count = now,
            }
        }
        n == 0 || self.take_queued(n, wait)
    }

    /// `take` with no deadline: it returns only with the permits.
    #[inline]
    fn take_untimed(&self, n: usize) {
        let taken = self.take(n, Some(None));
        debug_assert!(taken, "an untimed acquire returns only with its permits");
    }

    /// The RAII form of `n` permits the caller has taken.
    fn permit(&self, n: usize) -> SemaphorePermit<'_> {
        SemaphorePermit {
            semaphore: self,
            permits: n,
        }
    }

    /// `take` when someone is queued or too few permits are free: under
    /// the lock, takes them if nobody is queued and they are free now, or
    /// queues and parks. Out of line: the common acquire needs no waiting.
    #[cold]
    #[inline(never)]
    fn take_queued(&self, n: usize, wait: Option<Option<Instant>>) -> bool {
        let mut queue = self.queue.lock();
        if queue.is_empty() {
            // Freeze the count: from here on only lock holders change it.
            let count = self.count.fetch_or(QUEUED, Ordering::Acquire);
            if count / ONE >= n {
                // Released since `take` looked: take them, unfreeze.
                self.count.store(count - n * ONE, Ordering::Relaxed);
                return true;
            }
            if wait.is_none() {
                self.count.store(count, Ordering::Relaxed);
                return false;
            }
        }
        let Some(deadline) = wait else {
            return false;
        };
        let waiter = Waiter::new();
        let node = Node::new(&waiter, n);
        // SAFETY: the node stays in this frame until `wait` returns, and
        // `wait` unlinks it (`leave`) unless a grant did.
        unsafe { queue.push_back(&node) };
        drop(queue);
        let token = waiter.wait(deadline, || self.leave(&node), |_| self.release(n));
        token.is_some()
    }

    /// A request that timed out or was cancelled leaves the queue (false: a
    /// grant took it first); the ones behind it may fit now.
    fn leave(&self, node: &Node<usize>) -> bool {
        let mut queue = self.queue.lock();
        let removed = queue.remove(node);
        let wakeups = if removed {
            self.grant(&mut queue)
        } else {
            Wakeups::default()
        };
        drop(queue);
        wakeups.wake();
        removed
    }

    /// Gives `n` permits back and grants them onward.
    #[inline]
    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut count = self.count.load(Ordering::Relaxed);
        while count & QUEUED == 0 && n <= Semaphore::MAX_PERMITS - count / ONE {
            match self.count.compare_exchange_weak(
                count,
                count + n * ONE,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => count = now,
            }
        }
        self.release_queued(n);
    }

    /// `release` when someone is queued (or the count would overflow).
    #[cold]
    #[inline(never)]
    fn release_queued(&self, n: usize) {
        let mut queue = self.queue.lock();
        // An atomic add: if the queue emptied meanwhile, the fast paths
        // may be changing the count beside us.
        let mut count = self.count.load(Ordering::Relaxed);
        loop {
            let added = (count / ONE)
                .checked_add(n)
                .filter(|&permits| permits <= Semaphore::MAX_PERMITS)
                .expect("Semaphore: the permit count overflows");
            let new = (added * ONE) | (count & QUEUED);
            match self
                .count
                .compare_exchange_weak(count, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => count = now,
            }
        }
        let wakeups = self.grant(&mut queue);
        drop(queue);
        wakeups.wake();
    }

    /// Grants permits to the queue's head, then the next, while the free
    /// permits cover each (see the module docs), and unfreezes the count if
    /// that empties the queue; the caller wakes them once it has released
    /// the lock.
    #[must_use]
    fn grant(&self, queue: &mut WaitList<usize>) -> Wakeups {
        let mut wakeups = Wakeups::default();
        if queue.is_empty() {
            // The last request has left (or none was queued): unfreeze the
            // count. An atomic step: if it was not frozen, the fast paths
            // may be changing it beside us.
            self.count.fetch_and(!QUEUED, Ordering::Release);
            return wakeups;
        }
        // QUEUED is set: only lock holders change the count.
        let mut count = self.count.load(Ordering::Acquire);
        while let Some(&wanted) = queue.front() {
            if wanted > count / ONE {
                break;
            }
            let wakeup = queue.wake_front(GRANTED, |&wanted, _| count -= wanted * ONE);
            if let Some(wakeup) = wakeup {
                wakeups.push(wakeup);
            }
        }
        if queue.is_empty() {
            count &= !QUEUED;
        }
        self.count.store(count, Ordering::Release);
        wakeups
    }
}

// A panic inside a method leaves the state consistent (every change is
// one atomic step or made under the list lock): no broken invariant can
// be observed after a caught panic.
impl std::panic::UnwindSafe for Semaphore {}
impl std::panic::RefUnwindSafe for Semaphore {}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queued = !self.queue.lock().is_empty();
        let permits = self.available_permits();
        f.debug_struct("Semaphore")
            .field("permits", &permits)
            .field("queued", &queued)
            .finish()
    }
}

impl SemaphorePermit<'_> {
    /// How many permits this holds.
    pub fn num_permits(&self) -> usize {
        self.permits
    }

    /// Keeps the permits out of the semaphore for good (its count shrinks).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        self.semaphore.release(self.permits);
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit")
            .field("permits", &self.permits)
            .finish()
    }
}

/// Permits taken with one of `Semaphore`'s `*_owned` methods: it holds the
/// semaphore's `Arc`, so it is `'static` and can move into a coroutine;
/// dropping it gives the permits back.
#[must_use = "the permits go back to the semaphore when this is dropped"]
pub struct OwnedSemaphorePermit {
    semaphore: Arc<Semaphore>,
    permits: usize,
}

impl OwnedSemaphorePermit {
    fn new(semaphore: Arc<Semaphore>, permits: usize) -> OwnedSemaphorePermit {
        OwnedSemaphorePermit { semaphore, permits }
    }

    /// How many permits this holds.
    pub fn num_permits(&self) -> usize {
        self.permits
    }

    /// The semaphore the permits came from.
    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.semaphore
    }

    /// Keeps the permits out of the semaphore for good (its count shrinks);
    /// the `Arc` is dropped.
    pub fn forget(mut self) {
        self.permits = 0;
    }
}

impl Drop for OwnedSemaphorePermit {
    fn drop(&mut self) {
        self.semaphore.release(self.permits);
    }
}

impl fmt::Debug for OwnedSemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedSemaphorePermit")
            .field("permits", &self.permits)
            .finish()
    }
}

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
//! # No lost wakeup
//!
//! The permit count and the queue live under one `SpinLock`: "enough
//! permits and nobody queued, else queue" is one critical section, and
//! every change of the count (a release, `add_permits`, a queued request
//! leaving) runs `grant` in the same critical section, which takes the
//! permits on the head's behalf and claims it (`waiter.rs`). A request that
//! times out or is cancelled unlinks its node; if a grant beat it, it gives
//! those permits back (a release, granting onward). A head that leaves
//! empty-handed also runs `grant`: the requests behind it may fit now.
//!
//! Uncontended `acquire` and release take the lock once each: no system
//! call, no allocation.

use std::fmt;
use std::time::{Duration, Instant};

use super::waiter::{FIRST_TOKEN, Node, SpinLock, WaitList, Waiter, Wakeups};

const GRANTED: usize = FIRST_TOKEN;

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
    state: SpinLock<State>,
}

struct State {
    permits: usize,
    /// Each node holds how many permits its request wants.
    queue: WaitList<usize>,
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
    /// A semaphore with `permits` permits.
    pub const fn new(permits: usize) -> Semaphore {
        Semaphore {
            state: SpinLock::new(State {
                permits,
                queue: WaitList::new(),
            }),
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
        self.take(n, Some(None))
            .expect("an untimed acquire returns only with its permits")
    }

    /// One permit if it is free now and nobody is queued.
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.try_acquire_many(1)
    }

    /// `n` permits if they are free now and nobody is queued.
    pub fn try_acquire_many(&self, n: usize) -> Option<SemaphorePermit<'_>> {
        self.take(n, None)
    }

    /// As `acquire`, for at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        self.acquire_many_timeout(1, timeout)
    }

    /// As `acquire_many`, for at most `timeout`. A request that gives up
    /// leaves the queue, and the requests behind it move up.
    pub fn acquire_many_timeout(&self, n: usize, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        self.take(n, Some(Instant::now().checked_add(timeout)))
    }

    /// Adds `n` permits (they are granted to queued requests first).
    ///
    /// # Panics
    /// If the count would overflow `usize`.
    pub fn add_permits(&self, n: usize) {
        self.release(n);
    }

    /// Permits free now.
    pub fn available_permits(&self) -> usize {
        self.state.lock().permits
    }

    /// Takes `n` permits: without waiting (`wait` None), or waiting until
    /// the deadline (`Some(None)`: forever).
    fn take(&self, n: usize, wait: Option<Option<Instant>>) -> Option<SemaphorePermit<'_>> {
        let mut state = self.state.lock();
        if n == 0 || (state.queue.is_empty() && state.permits >= n) {
            state.permits -= n;
            drop(state);
            return Some(self.permit(n));
        }
        drop(state);
        self.take_waiting(n, wait?)
    }

    /// The RAII form of `n` permits the caller has taken.
    fn permit(&self, n: usize) -> SemaphorePermit<'_> {
        SemaphorePermit {
            semaphore: self,
            permits: n,
        }
    }

    /// `take` that queues and parks. Out of line: the common acquire needs
    /// no waiting.
    #[cold]
    #[inline(never)]
    fn take_waiting(&self, n: usize, deadline: Option<Instant>) -> Option<SemaphorePermit<'_>> {
        let waiter = Waiter::new();
        let node = Node::new(&waiter, n);
        {
            let mut state = self.state.lock();
            if state.queue.is_empty() && state.permits >= n {
                // Released since we looked.
                state.permits -= n;
                drop(state);
                return Some(self.permit(n));
            }
            // SAFETY: the node stays in this frame until `wait` returns, and
            // `wait` unlinks it (`leave`) unless a grant did.
            unsafe { state.queue.push_back(&node) };
        }
        let token = waiter.wait(deadline, || self.leave(&node), |_| self.release(n));
        token.map(|_| self.permit(n))
    }

    /// A request that timed out or was cancelled leaves the queue (false: a
    /// grant took it first); the ones behind it may fit now.
    fn leave(&self, node: &Node<usize>) -> bool {
        let mut state = self.state.lock();
        let removed = state.queue.remove(node);
        let wakeups = if removed {
            grant(&mut state)
        } else {
            Wakeups::default()
        };
        drop(state);
        wakeups.wake();
        removed
    }

    /// Gives `n` permits back and grants them onward.
    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut state = self.state.lock();
        state.permits = state
            .permits
            .checked_add(n)
            .expect("Semaphore: the permit count overflows usize");
        let wakeups = grant(&mut state);
        drop(state);
        wakeups.wake();
    }
}

/// Grants permits to the queue's head, then the next, while the free
/// permits cover each (see the module docs); the caller wakes them once it
/// has released the lock.
#[must_use]
fn grant(state: &mut State) -> Wakeups {
    let mut wakeups = Wakeups::default();
    let State { permits, queue } = state;
    while let Some(&wanted) = queue.front() {
        if wanted > *permits {
            break;
        }
        let wakeup = queue.wake_front(GRANTED, |&wanted, _| *permits -= wanted);
        if let Some(wakeup) = wakeup {
            wakeups.push(wakeup);
        }
    }
    wakeups
}

// A panic inside a method leaves the state consistent (every change is
// one atomic step or made under the list lock): no broken invariant can
// be observed after a caught panic.
impl std::panic::UnwindSafe for Semaphore {}
impl std::panic::RefUnwindSafe for Semaphore {}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        let (permits, queued) = (state.permits, !state.queue.is_empty());
        drop(state);
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

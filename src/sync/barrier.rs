//! `Barrier`: std's barrier; a wait parks the coroutine (or blocks a plain
//! thread) until `n` callers have arrived.
//!
//! The count of arrivals and the list of waiting nodes sit under one list
//! lock. The `n`-th arrival resets the count (the barrier is reusable at
//! once) and claims every waiter of its round in the same critical section,
//! so a waiter of round k can never be released by round k+1 or miss its
//! own release. A coroutine cancelled while waiting unlinks its node and
//! takes back its arrival, so the round still needs `n` live callers; if a
//! release claimed it first, it leaves as a released waiter.

use std::fmt;

use super::waiter::{FIRST_TOKEN, Node, SpinLock, WaitList, Waiter, Wakeups};

const RELEASED: usize = FIRST_TOKEN;

/// Lets `n` coroutines or threads wait until all of them have arrived (as
/// `std::sync::Barrier`).
///
/// ```
/// use fibra::sync::{Arc, Barrier};
///
/// let barrier = Arc::new(Barrier::new(10));
/// let handles: Vec<_> = (0..10)
///     .map(|_| {
///         let barrier = Arc::clone(&barrier);
///         fibra::spawn(move || barrier.wait().is_leader())
///     })
///     .collect();
/// let mut leaders = 0;
/// for handle in handles {
///     if handle.join().unwrap() {
///         leaders += 1;
///     }
/// }
/// assert_eq!(leaders, 1);
/// ```
pub struct Barrier {
    n: usize,
    state: SpinLock<Round>,
}

struct Round {
    arrived: usize,
    waiters: WaitList<()>,
}

/// What `Barrier::wait` returns: exactly one caller per round is the
/// leader (as `std::sync::BarrierWaitResult`).
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// True for exactly one caller of each round: the last to arrive.
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl fmt::Debug for BarrierWaitResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierWaitResult")
            .field("is_leader", &self.0)
            .finish()
    }
}

impl Barrier {
    /// A barrier for `n` callers (0 behaves as 1).
    pub const fn new(n: usize) -> Barrier {
        Barrier {
            n,
            state: SpinLock::new(Round {
                arrived: 0,
                waiters: WaitList::new(),
            }),
        }
    }

    /// Parks until `n` callers have called `wait` in this round.
    pub fn wait(&self) -> BarrierWaitResult {
        let waiter = Waiter::new();
        let node = Node::new(&waiter, ());
        let mut round = self.state.lock();
        round.arrived += 1;
        if round.arrived >= self.n {
            round.arrived = 0;
            let mut wakeups = Wakeups::default();
            round.waiters.wake_all(RELEASED, |_| (), &mut wakeups);
            drop(round);
            wakeups.wake();
            return BarrierWaitResult(true);
        }
        // SAFETY: the node stays in this frame until `wait` returns, and
        // `wait` unlinks it (`leave`) unless the release did.
        unsafe { round.waiters.push_back(&node) };
        drop(round);
        waiter.wait(None, || self.leave(&node), |_| ());
        BarrierWaitResult(false)
    }

    /// A cancelled waiter leaves its round.
    fn leave(&self, node: &Node<()>) -> bool {
        let mut round = self.state.lock();
        let removed = round.waiters.remove(node);
        if removed {
            round.arrived -= 1;
        }
        removed
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier").finish_non_exhaustive()
    }
}

//! `select`: wait on several channel operations at once — receives and
//! sends on `mpsc` and `mpmc` channels — and complete exactly one of them
//! (Go's `select` statement), with an optional timeout or default arm.
//!
//! Two front ends share one engine: the `select!` macro (no allocation)
//! and the `Select` builder (one allocation per arm; for a number of arms
//! known only at run time). Both work in coroutines and on plain threads.
//!
//! ```
//! use fibra::sync::mpsc;
//! use std::time::Duration;
//!
//! let (tx1, rx1) = mpsc::channel::<u32>();
//! let (tx2, rx2) = mpsc::sync_channel::<&str>(0);
//! fibra::spawn(move || tx2.send("two").unwrap());
//! let mut seen = Vec::new();
//! tx1.send(1).unwrap();
//! while seen.len() < 2 {
//!     fibra::select! {
//!         recv(rx1) -> msg => seen.push(msg.unwrap().to_string()),
//!         // Once its sender has finished, `rx2` is disconnected, and a
//!         // disconnected receive is ready too (with `RecvError`).
//!         recv(rx2) -> msg => if let Ok(s) = msg { seen.push(s.to_string()) },
//!         timeout(Duration::from_secs(10)) => panic!("nothing arrived"),
//!     }
//! }
//! seen.sort();
//! assert_eq!(seen, ["1", "two"]);
//! ```
//!
//! # How a select waits (Go's `selectgo`, with fibra's waiter records)
//!
//! 1. **Lock every channel**, in address order (a channel named by two
//!    arms is locked once), so no other select can deadlock against this
//!    one and nothing changes while it looks.
//! 2. **Poll** the arms, starting at a random one (`random_below`) and
//!    going round: the first that can complete without waiting does so —
//!    a value buffered or offered by a waiting sender, room in the buffer
//!    or a waiting receiver, or the other side gone (a disconnected
//!    receive or send is "ready", with the error). The random start is what
//!    keeps an always-ready arm from starving the others.
//! 3. None ready: with a default arm, release the locks and run it.
//!    Otherwise build one waiter record (`Waiter::new_select`) and link one
//!    node per arm — a receive's node points at an empty slot, a send's at
//!    the slot holding its value — then release the locks and park.
//! 4. A waker (a plain send or receive, another select's poll, the last
//!    handle of a side going away) claims the waiter through one node with
//!    a CAS and delivers through that node only; a waker that finds the
//!    waiter claimed already drops that node and moves on (`waiter.rs`,
//!    "One waiter in several lists"). So exactly one arm completes.
//! 5. **Withdrawal.** Woken with a token, the select takes each channel's
//!    lock in turn and unlinks its other nodes, then reads which node won
//!    (`Waiter::winner`) and completes that arm.
//!
//! A deadline that passes, or a cancellation unwinding from the park,
//! first tries `Waiter::abandon` (`WAITING → ABANDONED`). If it wins, no
//! claim can begin: the select withdraws its nodes and reports the
//! timeout (or goes on unwinding). If a claim got there first, the
//! withdrawal waits it out (the claimer holds that list's lock until its
//! token is stored), and the outcome is not lost: a timed-out select
//! completes the arm as if it had been woken, and a cancelled one gives a
//! received value back to the channel (to another waiting receiver, or
//! the front of the buffer) — as a cancelled plain `recv` does. No node
//! is left behind on any path: every linked node is unlinked under its
//! channel's lock before the arms (which hold the nodes) are dropped.
//!
//! A select never completes an operation of its own while linked, so two
//! arms of one select on the same channel (a send and a receive on one
//! rendezvous channel, say) never pair with each other, as in Go.
//!
//! Holding every lock while polling is what makes this simple: the
//! alternative — poll and link one channel at a time — lets a waker claim
//! the select through an arm linked earlier while a later arm finds its
//! channel ready; the select must then claim itself first, and two
//! selects doing that against each other on two channels each wait for the
//! other's claim.

mod arms;
mod builder;
mod macros;

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use super::waiter::{Waiter, Wakeups};
use arms::Arm;

pub use arms::{SelectRecv, SelectSend};
pub use builder::Select;

#[doc(hidden)]
pub mod __private {
    //! What the `select!` macro expands to; not a public API.
    pub use super::arms::{RecvArm, SendArm};
    pub use super::{ArmRef, Otherwise, run};

    impl<'a, T> RecvArm<'a, T> {
        /// The arm as the engine sees it.
        pub fn as_arm(&mut self) -> ArmRef<'_> {
            ArmRef(self)
        }
    }

    impl<'a, T> SendArm<'a, T> {
        /// The arm as the engine sees it.
        pub fn as_arm(&mut self) -> ArmRef<'_> {
            ArmRef(self)
        }
    }
}

/// One arm, as `run` takes it.
#[doc(hidden)]
pub struct ArmRef<'r>(&'r mut (dyn Arm + 'r));

/// What a select does when no arm is ready.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum Otherwise {
    /// Wait as long as it takes.
    Block,
    /// Return at once (the default arm runs).
    Default,
    /// Wait until the deadline (None: it is too far to represent).
    Deadline(Option<Instant>),
}

impl Otherwise {
    /// A timeout arm of `timeout` from now.
    pub fn timeout(timeout: std::time::Duration) -> Otherwise {
        Otherwise::Deadline(Instant::now().checked_add(timeout))
    }
}

/// Runs a select over `arms` (see the module docs): the index of the arm
/// that completed, or None if the default arm or the deadline ended it.
#[doc(hidden)]
pub fn run(arms: &mut [ArmRef<'_>], otherwise: Otherwise) -> Option<usize> {
    let n = arms.len();
    let start = if n > 1 { random_below(n) } else { 0 };
    let order = LockOrder::new(arms);
    let mut wakeups = Wakeups::default();
    order.lock(arms);
    for k in 0..n {
        let i = if start + k < n {
            start + k
        } else {
            start + k - n
        };
        // SAFETY: we hold every arm's lock.
        if unsafe { arms[i].0.poll(&mut wakeups) } {
            // SAFETY: taken by `order.lock` above.
            unsafe { order.unlock(arms) };
            wakeups.wake();
            return Some(i);
        }
    }
    let deadline = match otherwise {
        Otherwise::Default => {
            // SAFETY: taken by `order.lock` above.
            unsafe { order.unlock(arms) };
            return None;
        }
        Otherwise::Block => None,
        Otherwise::Deadline(deadline) => deadline,
    };
    let waiter = Waiter::new_select();
    for arm in arms.iter_mut() {
        // SAFETY: we hold the lock; the arms stay in place (borrowed by
        // this call) and `waiter` alive until `Linked` has unlinked them.
        unsafe { arm.0.link(&waiter) };
    }
    // SAFETY: taken by `order.lock` above.
    unsafe { order.unlock(arms) };
    let linked = Linked {
        arms,
        waiter: &waiter,
    };
    linked.wait(deadline)
}

/// A select's arms while its nodes may be linked; on drop (a cancellation
/// unwinding from the park) it abandons, withdraws and gives back.
struct Linked<'s, 'r> {
    arms: &'s mut [ArmRef<'r>],
    waiter: &'s Waiter,
}

impl Linked<'_, '_> {
    /// Parks until a claim or the deadline; the chosen arm's index.
    #[inline(always)]
    fn wait(mut self, deadline: Option<Instant>) -> Option<usize> {
        let token = loop {
            if let Some(token) = self.waiter.token() {
                self.withdraw();
                break Some(token);
            }
            if self.waiter.park_once(deadline) {
                let abandoned = self.waiter.abandon();
                self.withdraw();
                break if abandoned {
                    None
                } else {
                    Some(self.claimed_token())
                };
            }
        };
        let chosen = token.map(|token| {
            let i = self.winner();
            self.arms[i].0.complete(token);
            i
        });
        std::mem::forget(self);
        chosen
    }

    /// Unlinks every node (each under its channel's lock). Afterwards no
    /// waker can reach the waiter, and any claim that began has completed.
    fn withdraw(&mut self) {
        for arm in self.arms.iter_mut() {
            arm.0.unlink();
        }
    }

    /// The token of a claim that won against `abandon`; call after
    /// `withdraw` (the claim has then completed).
    fn claimed_token(&self) -> usize {
        self.waiter
            .token()
            .expect("a claim completes under a lock the withdrawal took")
    }

    /// The arm whose node the claim went through.
    fn winner(&self) -> usize {
        let node = self.waiter.winner();
        self.arms
            .iter()
            .position(|arm| arm.0.node_addr() == node)
            .expect("the winning node is one of this select's")
    }
}

impl Drop for Linked<'_, '_> {
    fn drop(&mut self) {
        // Unwinding from the park (cancellation).
        let abandoned = self.waiter.abandon();
        self.withdraw();
        if !abandoned {
            let token = self.claimed_token();
            let i = self.winner();
            self.arms[i].0.undo(token);
        }
    }
}

/// The arms whose locks a select takes, one per distinct lock, in address
/// order (so two selects sharing channels cannot deadlock). Up to
/// `INLINE` distinct locks are kept without allocating.
struct LockOrder {
    inline: [usize; LockOrder::INLINE],
    len: usize,
    spilled: Vec<usize>,
}

impl LockOrder {
    const INLINE: usize = 8;

    fn new(arms: &[ArmRef<'_>]) -> LockOrder {
        let mut order = LockOrder {
            inline: [0; LockOrder::INLINE],
            len: 0,
            spilled: Vec::new(),
        };
        if arms.len() > LockOrder::INLINE {
            let mut all: Vec<(usize, usize)> = arms
                .iter()
                .enumerate()
                .map(|(i, arm)| (arm.0.lock_addr(), i))
                .collect();
            all.sort_unstable();
            all.dedup_by_key(|(addr, _)| *addr);
            order.spilled = all.into_iter().map(|(_, i)| i).collect();
            return order;
        }
        // Few arms: insertion into the inline array, skipping a lock
        // already present.
        for (i, arm) in arms.iter().enumerate() {
            let addr = arm.0.lock_addr();
            let held = &order.inline[..order.len];
            let at = held.partition_point(|&j| arms[j].0.lock_addr() < addr);
            if at < order.len && arms[order.inline[at]].0.lock_addr() == addr {
                continue;
            }
            order.inline.copy_within(at..order.len, at + 1);
            order.inline[at] = i;
            order.len += 1;
        }
        order
    }

    fn indices(&self) -> &[usize] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    fn lock(&self, arms: &[ArmRef<'_>]) {
        for &i in self.indices() {
            arms[i].0.lock();
        }
    }

    /// # Safety
    /// The locks were taken with `lock`.
    unsafe fn unlock(&self, arms: &[ArmRef<'_>]) {
        for &i in self.indices() {
            // SAFETY: taken by `lock` (the caller's promise).
            unsafe { arms[i].0.unlock() };
        }
    }
}

/// A pseudo-random number below `n` (xorshift, seeded per thread from
/// std's randomly keyed hasher): where a select starts polling.
fn random_below(n: usize) -> usize {
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            x = RandomState::new().hash_one(state as *const Cell<u64>) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        ((u128::from(x) * n as u128) >> 64) as usize
    })
}

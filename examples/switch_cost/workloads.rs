//! Scheduler workloads measured both by `switch_cost` (`sched.rs`) and by
//! `benches/scheduler.rs`: each runs its operation `n` times inside a
//! coroutine and returns the time taken, so call them inside
//! `Runtime::block_on` on a one-worker runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Two coroutines yielding to each other `n` times each; the time per
/// yield, i.e. per loop turn halved.
pub fn yield_pair(n: u64) -> Duration {
    let partner = fibra::spawn(move || {
        for _ in 0..n {
            fibra::yield_now();
        }
    });
    let start = Instant::now();
    for _ in 0..n {
        fibra::yield_now();
    }
    let elapsed = start.elapsed();
    partner.join().expect("partner");
    // Each loop turn is two yields (ours and the partner's).
    elapsed / 2
}

/// Spawn an empty coroutine and join it, `n` times.
pub fn spawn_join(n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        fibra::spawn(|| ()).join().expect("join");
    }
    start.elapsed()
}

/// `n` park/unpark round trips A -> B -> A between this coroutine and a
/// partner.
pub fn park_unpark(n: u64) -> Duration {
    let turn = Arc::new(AtomicU64::new(0));
    let me = fibra::current();
    let partner_turn = Arc::clone(&turn);
    let partner = fibra::spawn(move || {
        for i in 0..n {
            while partner_turn.load(Ordering::Acquire) != 2 * i + 1 {
                fibra::park();
            }
            partner_turn.store(2 * i + 2, Ordering::Release);
            me.unpark();
        }
    });
    let other = partner.coroutine();
    let start = Instant::now();
    for i in 0..n {
        turn.store(2 * i + 1, Ordering::Release);
        other.unpark();
        while turn.load(Ordering::Acquire) != 2 * i + 2 {
            fibra::park();
        }
    }
    let elapsed = start.elapsed();
    partner.join().expect("partner");
    elapsed
}

/// Runs `measure` with `runnable` coroutines in all (the caller and
/// `runnable - 1` others) yielding in turn on this worker, every one of them
/// already started, so that each `fibra::yield_now` in `measure` is one turn
/// of a full round. Stops and joins the others afterwards.
pub fn with_runnable<T>(runnable: usize, measure: impl FnOnce() -> T) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let others: Vec<_> = (1..runnable)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let started = Arc::clone(&started);
            fibra::spawn(move || {
                started.fetch_add(1, Ordering::Relaxed);
                while !stop.load(Ordering::Relaxed) {
                    fibra::yield_now();
                }
            })
        })
        .collect();
    // Time only full rounds: wait until every coroutine has started (fresh
    // and started coroutines take turns, so this takes a while).
    while started.load(Ordering::Relaxed) < (runnable - 1) as u64 {
        fibra::yield_now();
    }
    let result = measure();
    stop.store(true, Ordering::Relaxed);
    for other in others {
        other.join().expect("join");
    }
    result
}

/// `n` round trips to a syscall thread: `unblock` of an empty job.
pub fn unblock_round_trip(n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        fibra::blocking::unblock(|| ());
    }
    start.elapsed()
}

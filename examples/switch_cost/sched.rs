//! Scheduler rows for `switch_cost`: yield, spawn + join and park/unpark on
//! a one-worker runtime (interleaved with the other cases; the bodies are in
//! `workloads.rs`, shared with `benches/scheduler.rs`), and two one-shot
//! measurements that need many coroutines at once: the yield cost as the
//! number of runnable coroutines grows, and RSS per parked coroutine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fibra::Runtime;

use crate::{Case, workloads};

/// Two coroutines yielding to each other; ns per yield.
pub fn yield_pair(rt: &Arc<Runtime>) -> Case {
    let rt = Arc::clone(rt);
    Case {
        name: "fibra yield",
        note: "2 coroutines, 1 worker; per yield",
        run: Box::new(move |n| rt.block_on(move || workloads::yield_pair(n))),
    }
}

/// `sched_yield` between two OS threads on one CPU; ns per yield.
pub fn os_yield_pair() -> Case {
    Case {
        name: "OS sched_yield",
        note: "2 threads, 1 CPU; per yield",
        run: Box::new(crate::os::sched_yield_pair),
    }
}

/// Spawn an empty coroutine from a coroutine and join it.
pub fn spawn_join(rt: &Arc<Runtime>) -> Case {
    let rt = Arc::clone(rt);
    Case {
        name: "fibra spawn+run+join",
        note: "empty coroutine, from a coroutine",
        run: Box::new(move |n| rt.block_on(move || workloads::spawn_join(n))),
    }
}

/// Park/unpark ping-pong between two coroutines; per round trip.
pub fn park_unpark(rt: &Arc<Runtime>) -> Case {
    let rt = Arc::clone(rt);
    Case {
        name: "fibra park/unpark",
        note: "A->B->A round trip, 1 worker",
        run: Box::new(move |n| rt.block_on(move || workloads::park_unpark(n))),
    }
}

/// `unblock` of an empty job, on a runtime whose threads may use every CPU
/// in `all_cpus` (the rest of the table runs pinned to one CPU, where a
/// syscall thread could only take turns with the worker).
pub fn unblock_round_trip(all_cpus: libc::cpu_set_t) -> Case {
    let rt = std::thread::spawn(move || {
        crate::os::set_affinity(&all_cpus);
        Runtime::builder().workers(1).build().expect("runtime")
    })
    .join()
    .expect("runtime thread");
    Case {
        name: "fibra unblock round trip",
        note: "empty job on a syscall thread; not pinned",
        run: Box::new(move |n| rt.block_on(move || workloads::unblock_round_trip(n))),
    }
}

/// How many coroutines this process can keep alive at once: each stack
/// takes two kernel mappings; leave room for everything else.
pub fn max_live_coroutines() -> usize {
    let max_maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(65_530);
    max_maps.saturating_sub(4_000) / 2
}

/// ns per yield with `runnable` coroutines yielding in turn on one worker
/// (median of `reps` measurements of about `batch` each).
pub fn yield_with_runnable(rt: &Runtime, runnable: usize, reps: usize, batch: Duration) -> f64 {
    rt.block_on(move || {
        let mut samples = workloads::with_runnable(runnable, || {
            // One round: every coroutine yields once. Warm up and calibrate.
            let round = |rounds: u64| {
                let start = Instant::now();
                for _ in 0..rounds {
                    fibra::yield_now();
                }
                start.elapsed().as_nanos() as f64 / (rounds as f64 * runnable as f64)
            };
            round(2);
            let per_round_ns = round(3) * runnable as f64;
            let rounds = ((batch.as_nanos() as f64 / per_round_ns) as u64).max(2);
            (0..reps).map(|_| round(rounds)).collect::<Vec<f64>>()
        });
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    })
}

/// Resident memory added per parked coroutine with `count` of them parked
/// on one worker, in KiB.
pub fn rss_per_parked(rt: &Runtime, count: usize) -> f64 {
    let release = Arc::new(AtomicBool::new(false));
    let parked = Arc::new(AtomicU64::new(0));
    let before = rss_kib();
    let handles: Vec<_> = (0..count)
        .map(|_| {
            let release = Arc::clone(&release);
            let parked = Arc::clone(&parked);
            rt.spawn(move || {
                parked.fetch_add(1, Ordering::Release);
                while !release.load(Ordering::Acquire) {
                    fibra::park();
                }
            })
        })
        .collect();
    // Wait until every coroutine has reached its park.
    let all = count as u64;
    let waiting = Arc::clone(&parked);
    rt.block_on(move || {
        while waiting.load(Ordering::Acquire) < all {
            fibra::yield_now();
        }
    });
    let after = rss_kib();
    release.store(true, Ordering::Release);
    for handle in &handles {
        handle.coroutine().unpark();
    }
    for handle in handles {
        handle.join().expect("join");
    }
    (after.saturating_sub(before)) as f64 / count as f64
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page / 1024
}

/// The same rotation without a scheduler: `count` raw coroutines resumed in
/// turn, in the order they were created; ns per resume + suspend. What is
/// left of the cost at large `count` here is the memory system's (each stack
/// is its own page, so each switch needs another TLB entry), not the
/// scheduler's.
pub fn raw_round_robin(count: usize, reps: usize, batch: Duration) -> f64 {
    use fibra::coroutine::{Coroutine, CoroutineResult};
    let mut coroutines: Vec<Coroutine<(), (), ()>> = (0..count)
        .map(|_| {
            Coroutine::new(|yielder, ()| {
                loop {
                    yielder.suspend(())
                }
            })
        })
        .collect();
    let mut round = |rounds: u64| {
        let start = Instant::now();
        for _ in 0..rounds {
            for coroutine in coroutines.iter_mut() {
                match coroutine.resume(()) {
                    CoroutineResult::Yield(()) => {}
                    CoroutineResult::Return(()) => unreachable!(),
                }
            }
        }
        start.elapsed().as_nanos() as f64 / (rounds as f64 * count as f64)
    };
    round(2);
    let per_round_ns = round(3) * count as f64;
    let rounds = ((batch.as_nanos() as f64 / per_round_ns) as u64).max(2);
    let mut samples: Vec<f64> = (0..reps).map(|_| round(rounds)).collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

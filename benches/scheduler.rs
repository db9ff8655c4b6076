//! Scheduler benchmarks, each beside its OS-thread baseline in the same run:
//!
//! - `yield`: two coroutines yielding to each other on one worker, against
//!   two OS threads calling `sched_yield` on one CPU (ns per yield);
//! - `spawn_join`: spawn + run + join of an empty coroutine from a coroutine,
//!   against `std::thread::spawn` + join;
//! - `park_unpark`: a park/unpark ping-pong round trip between two
//!   coroutines, against two OS threads pinned to one CPU doing the same with
//!   `std::thread::park`/`unpark`;
//! - `yield_flat`: ns per yield with N runnable coroutines on one worker, to
//!   show the cost stays flat as N grows (up to 20,000 here: each guarded
//!   stack takes two of the default 65,530 kernel mappings).
//!
//! Run pinned to one CPU: `taskset -c 1 cargo bench --bench scheduler`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn one_worker() -> fibra::Runtime {
    fibra::Runtime::builder()
        .workers(1)
        .build()
        .expect("runtime")
}

/// Pins the calling thread to the CPU it is running on now.
fn pin_here() {
    // SAFETY: sched_getcpu and sched_setaffinity only read/write the set we pass.
    unsafe {
        let cpu = libc::sched_getcpu().max(0) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Runs `f(iters)` on a fresh OS thread pinned to one CPU, with a partner
/// thread `g(iters)` pinned to the same CPU; returns f's measured time.
fn pinned_pair(
    iters: u64,
    f: impl FnOnce(u64) -> Duration + Send + 'static,
    g: impl FnOnce(u64) + Send + 'static,
) -> Duration {
    thread::spawn(move || {
        pin_here();
        let partner = thread::spawn(move || {
            pin_here();
            g(iters)
        });
        let elapsed = f(iters);
        partner.join().expect("partner thread");
        elapsed
    })
    .join()
    .expect("bench thread")
}

fn bench_yield(c: &mut Criterion) {
    let mut group = c.benchmark_group("yield");
    let rt = one_worker();
    group.bench_function("fibra_2_coroutines_1_worker", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let partner = fibra::spawn(move || {
                    for _ in 0..iters {
                        fibra::yield_now();
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    fibra::yield_now();
                }
                let elapsed = start.elapsed();
                partner.join().expect("partner");
                // Each loop turn is two yields (ours and the partner's).
                elapsed / 2
            })
        })
    });
    group.bench_function("os_threads_sched_yield_1_cpu", |b| {
        b.iter_custom(|iters| {
            pinned_pair(
                iters,
                |n| {
                    let start = Instant::now();
                    for _ in 0..n {
                        // SAFETY: sched_yield has no preconditions.
                        unsafe { libc::sched_yield() };
                    }
                    start.elapsed() / 2
                },
                |n| {
                    for _ in 0..n {
                        // SAFETY: as above.
                        unsafe { libc::sched_yield() };
                    }
                },
            )
        })
    });
    group.finish();
}

fn bench_spawn_join(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join");
    let rt = one_worker();
    group.bench_function("fibra_empty_coroutine", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    fibra::spawn(|| ()).join().expect("join");
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("os_thread", |b| {
        b.iter(|| thread::spawn(|| ()).join().expect("join"))
    });
    group.finish();
}

fn bench_park_unpark(c: &mut Criterion) {
    let mut group = c.benchmark_group("park_unpark");
    let rt = one_worker();
    group.bench_function("fibra_ping_pong_round_trip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let turn = Arc::new(AtomicU64::new(0));
                let me = fibra::current();
                let partner_turn = Arc::clone(&turn);
                let partner = fibra::spawn(move || {
                    for i in 0..iters {
                        while partner_turn.load(Ordering::Acquire) != 2 * i + 1 {
                            fibra::park();
                        }
                        partner_turn.store(2 * i + 2, Ordering::Release);
                        me.unpark();
                    }
                });
                let other = partner.coroutine();
                let start = Instant::now();
                for i in 0..iters {
                    turn.store(2 * i + 1, Ordering::Release);
                    other.unpark();
                    while turn.load(Ordering::Acquire) != 2 * i + 2 {
                        fibra::park();
                    }
                }
                let elapsed = start.elapsed();
                partner.join().expect("partner");
                elapsed
            })
        })
    });
    group.bench_function("os_threads_ping_pong_round_trip_1_cpu", |b| {
        b.iter_custom(|iters| {
            let turn = Arc::new(AtomicU64::new(0));
            let partner_turn = Arc::clone(&turn);
            // Each side sends its thread handle to the other.
            let (to_partner, from_main) = std::sync::mpsc::channel::<thread::Thread>();
            let (to_main, from_partner) = std::sync::mpsc::channel::<thread::Thread>();
            pinned_pair(
                iters,
                move |n| {
                    to_partner.send(thread::current()).expect("send handle");
                    let partner = from_partner.recv().expect("partner handle");
                    let start = Instant::now();
                    for i in 0..n {
                        turn.store(2 * i + 1, Ordering::Release);
                        partner.unpark();
                        while turn.load(Ordering::Acquire) != 2 * i + 2 {
                            thread::park();
                        }
                    }
                    start.elapsed()
                },
                move |n| {
                    let main = from_main.recv().expect("main handle");
                    to_main.send(thread::current()).expect("send handle");
                    for i in 0..n {
                        while partner_turn.load(Ordering::Acquire) != 2 * i + 1 {
                            thread::park();
                        }
                        partner_turn.store(2 * i + 2, Ordering::Release);
                        main.unpark();
                    }
                },
            )
        })
    });
    group.finish();
}

fn bench_yield_flat(c: &mut Criterion) {
    let mut group = c.benchmark_group("yield_flat");
    group.measurement_time(Duration::from_secs(4));
    for runnable in [2usize, 100, 10_000, 20_000] {
        let rt = one_worker();
        group.bench_with_input(BenchmarkId::from_parameter(runnable), &runnable, |b, &n| {
            b.iter_custom(|iters| {
                rt.block_on(move || {
                    let stop = Arc::new(AtomicBool::new(false));
                    let started = Arc::new(AtomicU64::new(0));
                    let others: Vec<_> = (0..n - 1)
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
                    // Time only full rounds: wait until every coroutine has
                    // started (fresh and started ones take turns).
                    while started.load(Ordering::Relaxed) < (n - 1) as u64 {
                        fibra::yield_now();
                    }
                    let rounds = (iters / n as u64).max(1);
                    let start = Instant::now();
                    for _ in 0..rounds {
                        fibra::yield_now();
                    }
                    let elapsed = start.elapsed();
                    stop.store(true, Ordering::Relaxed);
                    for other in others {
                        other.join().expect("join");
                    }
                    // Each round is one yield by each of the n coroutines.
                    elapsed.mul_f64(iters as f64 / (rounds * n as u64) as f64)
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench_yield, bench_spawn_join, bench_park_unpark, bench_yield_flat
}
criterion_main!(benches);

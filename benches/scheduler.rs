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
//!   stack takes two of the default 65,530 kernel mappings);
//! - `blocking`: a `fibra::blocking::unblock` round trip of an empty job
//!   (submit, run on a syscall thread, resume the coroutine), against a job
//!   handed to one other OS thread and back over a std channel pair.
//!
//! Run pinned to one CPU: `taskset -c 1 cargo bench --bench scheduler`; the
//! `blocking` group is meant to have two CPUs: `cargo bench --bench
//! scheduler -- blocking`.

// The fibra workloads are the ones `examples/switch_cost` measures.
#[path = "../examples/switch_cost/workloads.rs"]
mod workloads;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
        b.iter_custom(|iters| rt.block_on(move || workloads::yield_pair(iters)))
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
        b.iter_custom(|iters| rt.block_on(move || workloads::spawn_join(iters)))
    });
    group.bench_function("os_thread", |b| {
        b.iter(|| thread::spawn(|| ()).join().expect("join"))
    });
    group.finish();
}

fn bench_blocking(c: &mut Criterion) {
    let mut group = c.benchmark_group("blocking");
    let rt = one_worker();
    group.bench_function("fibra_unblock_round_trip", |b| {
        b.iter_custom(|iters| rt.block_on(move || workloads::unblock_round_trip(iters)))
    });
    group.bench_function("os_thread_channel_round_trip", |b| {
        let (to_helper, jobs) = std::sync::mpsc::channel::<u64>();
        let (to_caller, done) = std::sync::mpsc::channel::<u64>();
        let helper = thread::spawn(move || {
            for job in jobs {
                to_caller.send(job).expect("caller");
            }
        });
        b.iter(|| {
            to_helper.send(1).expect("helper");
            done.recv().expect("helper")
        });
        drop(to_helper);
        helper.join().expect("helper thread");
    });
    group.finish();
}

fn bench_park_unpark(c: &mut Criterion) {
    let mut group = c.benchmark_group("park_unpark");
    let rt = one_worker();
    group.bench_function("fibra_ping_pong_round_trip", |b| {
        b.iter_custom(|iters| rt.block_on(move || workloads::park_unpark(iters)))
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
                    let rounds = (iters / n as u64).max(1);
                    let elapsed = workloads::with_runnable(n, || {
                        let start = Instant::now();
                        for _ in 0..rounds {
                            fibra::yield_now();
                        }
                        start.elapsed()
                    });
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
    targets = bench_yield, bench_spawn_join, bench_park_unpark, bench_yield_flat, bench_blocking
}
criterion_main!(benches);

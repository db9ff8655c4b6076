//! `fibra::sync` benchmarks, each beside its baseline in the same run:
//!
//! - `channel_ping_pong`: a round trip between two coroutines on one worker
//!   over `mpsc::channel` and over `sync_channel(0)`, against the bare
//!   park/unpark round trip the channel is built on (target: ≤ 80 ns),
//!   and over `mpmc::channel`;
//! - `mutex_uncontended`: lock + increment + unlock on a plain thread,
//!   fibra's `Mutex` against std's (target: ≤ 1.2x std);
//! - `semaphore_uncontended`: a `Semaphore` permit taken and dropped, on a
//!   plain thread and in a coroutine;
//! - `mutex_contended`: 1,000 coroutines x 1,000 increments of one counter
//!   on 2 workers, yielding after every 100th, with fibra's `Mutex` and with
//!   std's (which does not park here: no guard is held across a yield).
//!   Go's `sync.Mutex` on the same workload is `benches/go/sync_compare.sh`.
//!
//! Run the first two pinned to one CPU, the last on two:
//! `taskset -c 1 cargo bench --bench sync -- 'ping_pong|uncontended'` and
//! `cargo bench --bench sync -- contended`.

// The workloads shared with `examples/sync_compare` and `switch_cost`.
#[path = "../examples/sync_compare/workloads.rs"]
mod sync_workloads;
#[allow(dead_code)]
#[path = "../examples/switch_cost/workloads.rs"]
mod workloads;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A runtime for the measurements. Criterion's loop runs inside one
/// coroutine for seconds without parking: the stalled-worker report is off.
fn runtime(workers: usize) -> fibra::Runtime {
    fibra::Runtime::builder()
        .workers(workers)
        .stall_threshold(None)
        .build()
        .expect("runtime")
}

fn bench_ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("channel_ping_pong");
    let rt = runtime(1);
    group.bench_function("fibra_mpsc_channel_1_worker", |b| {
        b.iter_custom(|iters| rt.block_on(move || sync_workloads::channel_ping_pong(iters)))
    });
    group.bench_function("fibra_sync_channel_0_1_worker", |b| {
        b.iter_custom(|iters| rt.block_on(move || sync_workloads::rendezvous_ping_pong(iters)))
    });
    group.bench_function("fibra_mpmc_channel_1_worker", |b| {
        b.iter_custom(|iters| rt.block_on(move || mpmc_ping_pong(iters)))
    });
    group.bench_function("park_unpark_baseline_1_worker", |b| {
        b.iter_custom(|iters| rt.block_on(move || workloads::park_unpark(iters)))
    });
    group.finish();
}

/// `rounds` round trips over two unbounded `mpmc` channels between this
/// coroutine and an echoing one.
fn mpmc_ping_pong(rounds: u64) -> Duration {
    use fibra::sync::mpmc;
    let (there_tx, there_rx) = mpmc::channel::<u64>();
    let (back_tx, back_rx) = mpmc::channel::<u64>();
    let echo = fibra::spawn(move || {
        for value in there_rx.iter() {
            back_tx.send(value + 1).unwrap();
        }
    });
    let started = Instant::now();
    for i in 0..rounds {
        there_tx.send(i).unwrap();
        assert_eq!(back_rx.recv().unwrap(), i + 1);
    }
    let elapsed = started.elapsed();
    drop(there_tx);
    echo.join().unwrap();
    elapsed
}

/// Uncontended `Semaphore` acquire + release (a permit taken and dropped)
/// on a plain thread and in a coroutine.
fn bench_semaphore(c: &mut Criterion) {
    let mut group = c.benchmark_group("semaphore_uncontended");
    let semaphore = fibra::sync::Semaphore::new(4);
    group.bench_function("acquire_release_plain_thread", |b| {
        b.iter(|| drop(black_box(&semaphore).acquire()))
    });
    let rt = runtime(1);
    group.bench_function("acquire_release_coroutine_1_worker", |b| {
        b.iter_custom(|iters| {
            let semaphore = &semaphore;
            rt.block_on(move || {
                let started = Instant::now();
                for _ in 0..iters {
                    drop(black_box(semaphore).acquire());
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

fn bench_uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("mutex_uncontended");
    let fibra_mutex = fibra::sync::Mutex::new(0u64);
    let std_mutex = std::sync::Mutex::new(0u64);
    group.bench_function("fibra_mutex_plain_thread", |b| {
        b.iter(|| *black_box(&fibra_mutex).lock().unwrap() += 1)
    });
    group.bench_function("std_mutex_plain_thread", |b| {
        b.iter(|| *black_box(&std_mutex).lock().unwrap() += 1)
    });
    group.finish();
}

fn bench_contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("mutex_contended");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1_000_000));
    let rt = runtime(2);
    group.bench_function("fibra_mutex_1000_coroutines_2_workers", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let counter = fibra::sync::Mutex::new(0u64);
                    rt.block_on(|| sync_workloads::mutex_contended(counter, 1000, 1000, 100))
                })
                .sum()
        })
    });
    group.bench_function("std_mutex_1000_coroutines_2_workers", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let counter = std::sync::Mutex::new(0u64);
                    rt.block_on(|| sync_workloads::mutex_contended(counter, 1000, 1000, 100))
                })
                .sum()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_ping_pong,
    bench_uncontended,
    bench_semaphore,
    bench_contended
);
criterion_main!(benches);

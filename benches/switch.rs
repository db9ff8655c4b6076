//! Criterion benchmarks of fibra's foundation: the context switch and the
//! cost of a coroutine's life, each next to the baseline it is judged by.
//!
//! - `switch_round_trip/{fibra,corosensei,fibra_u64}`: one `resume` plus the
//!   matching `suspend` of `|y, ()| loop { y.suspend(()) }` (the `u64` case
//!   passes a word each way). Both libraries' results are consumed by the
//!   same `match`, not `black_box`ed: black-boxing fibra's `CoroutineResult`
//!   adds a store that corosensei's layout avoids (≈ 10 %, an artefact).
//! - `thread_ping_pong/futex_pinned`: one round trip A → B → A between two OS
//!   threads pinned to the same CPU, handing over through a futex word.
//! - `create_run_drop/{fibra_pooled,thread_spawn_join}`: a coroutine created
//!   (its stack from the thread's pool), run to completion and dropped, next
//!   to `std::thread::spawn(|| ()).join()`.
//!
//! Run pinned, e.g. `taskset -c 1 cargo bench --bench switch`; the ping-pong
//! pins both of its threads to the first CPU the process may use. Results and
//! how to read them: BENCHMARKS.md.

// The bench shares the example's OS-thread baselines (the futex ping-pong and
// the CPU pinning); it uses only part of that module.
#[allow(dead_code)]
#[path = "../examples/switch_cost/os.rs"]
mod os;

use std::hint::black_box;
use std::thread;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fibra::coroutine::{Coroutine, CoroutineResult};

use os::PingPong;

fn switch_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("switch_round_trip");

    let mut co: Coroutine<(), (), ()> = Coroutine::new(|y, ()| {
        loop {
            y.suspend(())
        }
    });
    group.bench_function("fibra", |b| {
        b.iter(|| match co.resume(()) {
            CoroutineResult::Yield(()) => {}
            CoroutineResult::Return(_) => unreachable!(),
        })
    });

    let mut co: corosensei::Coroutine<(), (), ()> = corosensei::Coroutine::new(|y, ()| {
        loop {
            y.suspend(())
        }
    });
    group.bench_function("corosensei", |b| {
        b.iter(|| match co.resume(()) {
            corosensei::CoroutineResult::Yield(()) => {}
            corosensei::CoroutineResult::Return(_) => unreachable!(),
        })
    });

    let mut co: Coroutine<u64, u64, ()> = Coroutine::new(|y, mut x: u64| {
        loop {
            x = y.suspend(x.wrapping_add(1))
        }
    });
    group.bench_function("fibra_u64", |b| {
        let mut x = 0u64;
        b.iter(|| match co.resume(black_box(x)) {
            CoroutineResult::Yield(v) => x = v,
            CoroutineResult::Return(_) => unreachable!(),
        })
    });

    group.finish();
}

fn thread_ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("thread_ping_pong");
    let pair = PingPong::new();
    group.bench_function("futex_pinned", |b| b.iter(|| pair.round_trip()));
    group.finish();
    // Stops and joins the peer thread, restores this thread's affinity.
    drop(pair);
}

fn create_run_drop(c: &mut Criterion) {
    let mut group = c.benchmark_group("create_run_drop");
    group.bench_function("fibra_pooled", |b| {
        b.iter(|| {
            let mut co: Coroutine<(), (), ()> = Coroutine::new(|_, ()| ());
            match co.resume(()) {
                CoroutineResult::Return(()) => {}
                CoroutineResult::Yield(_) => unreachable!(),
            }
        })
    });
    group.bench_function("thread_spawn_join", |b| {
        b.iter(|| thread::spawn(|| ()).join().unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = switch_round_trip, thread_ping_pong, create_run_drop
}
criterion_main!(benches);

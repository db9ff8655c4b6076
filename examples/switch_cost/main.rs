//! What a fibra context switch costs next to its baselines, in one run.
//!
//! The program pins itself to one CPU, then measures each case below in
//! batches of about 20 ms, the cases interleaved, for `REPS` rounds, and
//! prints the median ns per operation of each case with its ratio to the
//! fibra switch round trip measured in the same run. Absolute figures drift
//! on a shared machine; same-run ratios are the figures to compare. Even so,
//! the fibra/corosensei ratio can differ from one process to the next (where
//! things land in memory), so run it a few times (see BENCHMARKS.md).
//!
//!     cargo run --release --example switch_cost
//!
//! The scheduler rows (`sched.rs`, their workloads in `workloads.rs`, which
//! `benches/scheduler.rs` shares) run on a one-worker runtime on the same
//! CPU. After the table come the measurements that need many coroutines at
//! once: the yield cost as the number of runnable coroutines grows (up to
//! what `vm.max_map_count` allows: each guarded stack takes two mappings),
//! and RSS per parked coroutine.
//!
//! To add a row, write a function returning a `Case` and list it in `cases()`.

mod os;
mod sched;
mod workloads;

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use os::{PingPong, machine_description, pin_process_to_one_cpu};

use fibra::Runtime;
use fibra::coroutine::{Coroutine, CoroutineResult};

/// Measurement rounds; every case is measured once per round.
const REPS: usize = 31;

/// How long one batch of one case should take.
const BATCH: Duration = Duration::from_millis(20);

/// One thing to measure. `run(n)` performs the operation `n` times and
/// returns how long that took.
struct Case {
    name: &'static str,
    note: &'static str,
    run: Box<dyn FnMut(u64) -> Duration>,
}

/// One line of the printed table.
struct Row {
    name: &'static str,
    /// Median ns per operation over the rounds.
    ns: f64,
    /// Lower and upper quartile of the rounds' ns per operation.
    quartiles: (f64, f64),
    note: &'static str,
}

/// The cases, the baseline (the fibra switch round trip) first. `main`
/// refers to rows by these indices.
fn cases(rt: &Arc<Runtime>, all_cpus: libc::cpu_set_t) -> Vec<Case> {
    vec![
        fibra_switch(),                      // 0
        corosensei_switch(),                 // 1
        thread_ping_pong(),                  // 2
        fibra_create_run_drop(),             // 3
        thread_spawn_join(),                 // 4
        sched::yield_pair(rt),               // 5
        sched::os_yield_pair(),              // 6
        sched::spawn_join(rt),               // 7
        sched::park_unpark(rt),              // 8
        sched::unblock_round_trip(all_cpus), // 9
    ]
}

fn fibra_switch() -> Case {
    let mut co: Coroutine<(), (), ()> = Coroutine::new(|y, ()| {
        loop {
            y.suspend(())
        }
    });
    Case {
        name: "fibra switch round trip",
        note: "resume + suspend, ()",
        run: Box::new(move |n| {
            let start = Instant::now();
            for _ in 0..n {
                match co.resume(()) {
                    CoroutineResult::Yield(()) => {}
                    CoroutineResult::Return(_) => unreachable!(),
                }
            }
            start.elapsed()
        }),
    }
}

fn corosensei_switch() -> Case {
    let mut co: corosensei::Coroutine<(), (), ()> = corosensei::Coroutine::new(|y, ()| {
        loop {
            y.suspend(())
        }
    });
    Case {
        name: "corosensei switch round trip",
        note: "resume + suspend, ()",
        run: Box::new(move |n| {
            let start = Instant::now();
            for _ in 0..n {
                match co.resume(()) {
                    corosensei::CoroutineResult::Yield(()) => {}
                    corosensei::CoroutineResult::Return(_) => unreachable!(),
                }
            }
            start.elapsed()
        }),
    }
}

fn thread_ping_pong() -> Case {
    let pair = PingPong::new();
    Case {
        name: "OS thread ping-pong",
        note: "A->B->A, futex, one CPU",
        // The pair lives in the closure: dropping the cases joins B.
        run: Box::new(move |n| {
            let start = Instant::now();
            for _ in 0..n {
                pair.round_trip();
            }
            start.elapsed()
        }),
    }
}

fn fibra_create_run_drop() -> Case {
    Case {
        name: "fibra create+run+drop",
        note: "pooled stack",
        run: Box::new(|n| {
            let start = Instant::now();
            for _ in 0..n {
                let mut co: Coroutine<(), (), ()> = Coroutine::new(|_, ()| ());
                match co.resume(()) {
                    CoroutineResult::Return(()) => {}
                    CoroutineResult::Yield(_) => unreachable!(),
                }
                drop(black_box(co));
            }
            start.elapsed()
        }),
    }
}

fn thread_spawn_join() -> Case {
    Case {
        name: "OS thread spawn+join",
        note: "std::thread::spawn(|| ())",
        run: Box::new(|n| {
            let start = Instant::now();
            for _ in 0..n {
                thread::spawn(|| ()).join().unwrap();
            }
            start.elapsed()
        }),
    }
}

fn main() {
    let machine = machine_description();
    let all_cpus = os::current_affinity();
    let cpu = pin_process_to_one_cpu();
    // Created after pinning, so its worker thread runs on the same CPU.
    let rt = Arc::new(Runtime::builder().workers(1).build().expect("runtime"));
    // First, while no stack has been touched yet: pooled stacks left by the
    // other measurements are already resident and would hide their pages.
    let cap = sched::max_live_coroutines();
    let parked = cap.min(30_000);
    let rss_kib = sched::rss_per_parked(&rt, parked);
    let mut cases = cases(&rt, all_cpus);

    // Calibrate (this also warms up): find n such that a batch takes ~BATCH.
    let iters: Vec<u64> = cases.iter_mut().map(|c| calibrate(&mut c.run)).collect();

    let mut samples = vec![Vec::with_capacity(REPS); cases.len()];
    for _ in 0..REPS {
        for ((case, &n), out) in cases.iter_mut().zip(&iters).zip(&mut samples) {
            let elapsed = (case.run)(n);
            out.push(elapsed.as_nanos() as f64 / n as f64);
        }
    }

    let rows: Vec<Row> = cases
        .iter()
        .zip(&samples)
        .map(|(case, s)| Row {
            name: case.name,
            ns: quantile(s, 0.5),
            quartiles: (quantile(s, 0.25), quantile(s, 0.75)),
            note: case.note,
        })
        .collect();
    // Stop the ping-pong thread before printing.
    drop(cases);

    println!("fibra switch_cost — {machine}");
    println!(
        "pinned to CPU {cpu}; figures are medians of {REPS} interleaved runs (~{} ms batches)",
        BATCH.as_millis()
    );
    println!();
    print_table(&rows);
    println!();

    // The targets. The corosensei ratio is taken per round, then the median,
    // so that drift between rounds cancels.
    let per_round: Vec<f64> = samples[0]
        .iter()
        .zip(&samples[1])
        .map(|(f, c)| f / c)
        .collect();
    let vs_corosensei = quantile(&per_round, 0.5);
    let thread_factor = rows[2].ns / rows[0].ns;
    println!(
        "target: fibra switch <= 1.00x corosensei: {:.2}x (median of per-round ratios; {:.2}x from the medians) -> {}",
        vs_corosensei,
        rows[0].ns / rows[1].ns,
        verdict((vs_corosensei * 100.0).round() <= 100.0)
    );
    println!(
        "target: OS thread round trip >= 100x a fibra switch: {thread_factor:.0}x -> {}",
        verdict(thread_factor >= 100.0)
    );
    println!(
        "target: fibra yield <= 20 ns: {} ns ({} cheaper than sched_yield) -> {}",
        fmt_ns(rows[5].ns),
        fmt_ratio(rows[6].ns / rows[5].ns),
        verdict(rows[5].ns <= 20.0)
    );
    println!(
        "target: fibra spawn+run+join <= 300 ns: {} ns ({} cheaper than a thread) -> {}",
        fmt_ns(rows[7].ns),
        fmt_ratio(rows[4].ns / rows[7].ns),
        verdict(rows[7].ns <= 300.0)
    );
    println!(
        "target: fibra park/unpark round trip <= 60 ns: {} ns ({} cheaper than OS threads) -> {}",
        fmt_ns(rows[8].ns),
        fmt_ratio(rows[2].ns / rows[8].ns),
        verdict(rows[8].ns <= 60.0)
    );
    println!(
        "target: fibra unblock round trip <= 5 us (pool warm): {} ns -> {}",
        fmt_ns(rows[9].ns),
        verdict(rows[9].ns <= 5_000.0)
    );
    println!();
    many_coroutines(&rt, cap);
    println!(
        "  RSS per parked coroutine, {parked} parked: {rss_kib:.2} KiB (measured first, on fresh stacks)"
    );
    println!(
        "target: RSS per parked coroutine <= 4.5 KiB: {rss_kib:.2} KiB -> {}",
        verdict(rss_kib <= 4.5)
    );
}

/// The measurements that need many coroutines alive at once, with Go's
/// `runtime.Gosched()` at the same N beside them when Go is installed.
fn many_coroutines(rt: &Runtime, cap: usize) {
    println!("many coroutines on one worker (vm.max_map_count allows about {cap} live stacks)");
    let mut sizes: Vec<usize> = [2, 100, 10_000, 30_000, 100_000]
        .into_iter()
        .filter(|&n| n <= cap)
        .collect();
    if cap < 100_000 {
        sizes.push(cap.min(30_000));
        sizes.dedup();
    }
    let go = go_yield_costs(&sizes);
    let mut worst: Option<f64> = None;
    for &n in &sizes {
        let ns = sched::yield_with_runnable(rt, n, 9, Duration::from_millis(20));
        let raw = sched::raw_round_robin(n, 9, Duration::from_millis(20));
        let beside_go = match go.as_ref().and_then(|go| go.get(&n)) {
            Some(&go_ns) => {
                let ratio = ns / go_ns;
                worst = Some(worst.map_or(ratio, |w: f64| w.max(ratio)));
                format!(
                    "; Go Gosched {} ns ({} of Go)",
                    fmt_ns(go_ns),
                    fmt_ratio(ratio)
                )
            }
            None => String::new(),
        };
        println!(
            "  yield with {n:>6} runnable: {:>5} ns per yield{beside_go}; raw switch over {n} \
             stacks, no scheduler: {} ns",
            fmt_ns(ns),
            fmt_ns(raw)
        );
    }
    match worst {
        Some(worst) => println!(
            "target: fibra yield <= 0.25x Go's at every N: worst {} -> {}",
            fmt_ratio(worst),
            verdict(worst <= 0.25)
        ),
        None => println!(
            "target: fibra yield <= 0.25x Go's at every N: not checked (Go not installed: \
             apt-get install golang-go)"
        ),
    }
}

/// Go's ns per `runtime.Gosched()` with N runnable goroutines on one P
/// (benches/go/yield.go), by N; None if Go is not installed.
fn go_yield_costs(sizes: &[usize]) -> Option<std::collections::HashMap<usize, f64>> {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/go/yield.go");
    let output = std::process::Command::new("go")
        .arg("run")
        .arg(file)
        .args(sizes.iter().map(|n| n.to_string()))
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&output.stdout);
    Some(
        text.lines()
            .filter_map(|l| {
                let (n, ns) = l.split_once(' ')?;
                Some((n.parse().ok()?, ns.parse().ok()?))
            })
            .collect(),
    )
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// Prints the rows, each with its ratio to the first row.
fn print_table(rows: &[Row]) {
    let base = rows[0].ns;
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    println!(
        "{:<width$}  {:>12}  {:>19}  {:>14}  note",
        "what", "median ns/op", "quartiles", "x fibra switch"
    );
    for row in rows {
        let quartiles = format!("{} .. {}", fmt_ns(row.quartiles.0), fmt_ns(row.quartiles.1));
        let ratio = fmt_ratio(row.ns / base);
        println!(
            "{:<width$}  {:>12}  {:>19}  {:>14}  {}",
            row.name,
            fmt_ns(row.ns),
            quartiles,
            ratio,
            row.note
        );
    }
    println!();
    for row in &rows[1..] {
        println!(
            "{}: {} ns = {} a fibra switch",
            row.name,
            fmt_ns(row.ns),
            fmt_ratio(row.ns / base)
        );
    }
}

/// A ratio to two decimals when small, to whole units when large.
fn fmt_ratio(ratio: f64) -> String {
    if ratio < 10.0 {
        format!("{ratio:.2}x")
    } else {
        format!("{ratio:.0}x")
    }
}

/// Three significant digits, enough for noisy figures.
fn fmt_ns(ns: f64) -> String {
    if ns < 10.0 {
        format!("{ns:.2}")
    } else if ns < 100.0 {
        format!("{ns:.1}")
    } else {
        format!("{ns:.0}")
    }
}

/// The `q` quantile of `values` (linear interpolation).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// An iteration count for which `run` takes about `BATCH`.
fn calibrate(run: &mut dyn FnMut(u64) -> Duration) -> u64 {
    let mut n = 1u64;
    loop {
        let t = run(n);
        if t >= BATCH / 4 {
            let per_op = t.as_secs_f64() / n as f64;
            return ((BATCH.as_secs_f64() / per_op) as u64).max(1);
        }
        n *= 2;
    }
}

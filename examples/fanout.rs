//! CPU-bound fan-out on two workers, against Go's scheduler on the same
//! workload in the same run.
//!
//! 200 coroutines each compute 5 × 1 ms, with `yield_now` between the
//! slices; ideal elapsed time on two CPUs is 500 ms. Two placements:
//!
//! - `fresh`: all 200 spawned at once from a plain thread. Where each
//!   starts depends on how the workers share fresh coroutines, and a
//!   started coroutine never moves (its stack may hold `!Send` values), so
//!   an uneven start shows as elapsed time;
//! - `started-on-one`: all 200 start on one worker while the other is busy
//!   (a blocker holds it), then all turn CPU-bound. They cannot move: one
//!   worker's speed. Go moves goroutines and takes about half the time;
//!   the README says what to do instead (`fibra::blocking`, or spawn the
//!   CPU-heavy part as fresh coroutines).
//!
//!     cargo run --release --example fanout [rounds]
//!
//! With Go installed (`apt-get install golang-go`), `benches/go/fanout.go`
//! runs the same two cases and its figures are printed beside fibra's.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const COROUTINES: usize = 200;
const SLICES: usize = 5;
const SLICE: Duration = Duration::from_millis(1);

/// Spins for `d` of CPU time (wall time, on an otherwise idle CPU).
fn compute(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn work() {
    for _ in 0..SLICES {
        compute(SLICE);
        fibra::yield_now();
    }
}

fn runtime() -> fibra::Runtime {
    fibra::Runtime::builder()
        .workers(2)
        .build()
        .expect("start the runtime")
}

/// All spawned at once from this plain thread.
fn fresh() -> Duration {
    let rt = runtime();
    let start = Instant::now();
    let handles: Vec<_> = (0..COROUTINES).map(|_| rt.spawn(work)).collect();
    for handle in handles {
        handle.join().expect("join");
    }
    start.elapsed()
}

/// All started on one worker (each parks at once) while a blocker keeps
/// the other busy; then released together.
fn started_on_one() -> Duration {
    let rt = runtime();
    let go = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let spawner = {
        let go = Arc::clone(&go);
        let started = Arc::clone(&started);
        rt.spawn(move || {
            let handles: Vec<_> = (0..COROUTINES)
                .map(|_| {
                    let go = Arc::clone(&go);
                    let started = Arc::clone(&started);
                    fibra::spawn(move || {
                        started.fetch_add(1, Ordering::SeqCst);
                        while !go.load(Ordering::SeqCst) {
                            fibra::yield_now();
                        }
                        work();
                    })
                })
                .collect();
            handles
        })
    };
    // Keep the other worker busy until all have started on the spawner's.
    let blocker = {
        let started = Arc::clone(&started);
        rt.spawn(move || {
            while started.load(Ordering::SeqCst) < COROUTINES {
                std::hint::spin_loop();
            }
        })
    };
    let handles = spawner.join().expect("spawner");
    blocker.join().expect("blocker");
    let start = Instant::now();
    go.store(true, Ordering::SeqCst);
    for handle in handles {
        handle.join().expect("join");
    }
    start.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the Go side once; its two figures in ms, if Go is installed.
fn go_round() -> Option<(f64, f64)> {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/go/fanout.go");
    let out = Command::new("go").args(["run", file]).output().ok()?;
    if !out.status.success() {
        eprintln!("go run failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut values = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok());
    Some((values.next()?, values.next()?))
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let (mut f, mut s, mut gf, mut gs) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        f.push(fresh().as_secs_f64() * 1e3);
        s.push(started_on_one().as_secs_f64() * 1e3);
        if let Some((a, b)) = go_round() {
            gf.push(a);
            gs.push(b);
        }
    }
    println!("200 coroutines x 5 x 1 ms on 2 workers, median of {rounds} rounds (ideal 500 ms)");
    println!(
        "{:<16} {:>10} {:>10} {:>8}",
        "case", "fibra ms", "Go ms", "fibra/Go"
    );
    for (name, fibra, go) in [("fresh", f, gf), ("started-on-one", s, gs)] {
        let fibra = median(fibra);
        if go.is_empty() {
            println!("{name:<16} {fibra:>10.0} {:>10} {:>8}", "-", "-");
        } else {
            let go = median(go);
            println!("{name:<16} {fibra:>10.0} {go:>10.0} {:>7.2}x", fibra / go);
        }
    }
}

//! fibra's side of the sync comparison with Go (`benches/go/sync_compare.go`
//! runs the same workloads; `benches/go/sync_compare.sh` runs both,
//! alternating, and prints the ratios):
//!
//! - mutex: 1,000 coroutines x 1,000 increments of one `fibra::sync::Mutex`
//!   counter on a 2-worker runtime, `yield_now()` after every 100th
//!   increment; ns per increment, spawning and joining included;
//! - ping-pong: a value sent to a coroutine over `mpsc::channel` and
//!   answered over another, on a 1-worker runtime; ns per round trip. Also
//!   over `sync_channel(0)` (a rendezvous, like Go's unbuffered channel).
//!
//! ```sh
//! cargo run --release --example sync_compare -- --runs 9
//! ```
//!
//! The workloads are in `workloads.rs`, shared with `benches/sync.rs`.
//!
//! Prints the median of `--runs` runs per workload, one `name value` line
//! each; `--only mutex`, `--only ping-pong` or `--only uncontended` runs
//! one of them. The ping-pong rows also give the worker thread's CPU time
//! per round trip (`_cpu_ns`), which other processes on the machine disturb
//! less than the wall clock. The uncontended rows alternate fibra's and
//! std's `Mutex` in batches on this thread and print their medians.

mod workloads;

use fibra::Runtime;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let mut runs = 9;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--only" => only = Some(args.next().expect("--only mutex|ping-pong|uncontended")),
            other => panic!(
                "unknown argument {other:?} (use --runs N, --only mutex|ping-pong|uncontended)"
            ),
        }
    }
    let wanted = |name: &str| only.as_deref().is_none_or(|only| only == name);

    if wanted("mutex") {
        mutex_row(runs);
    }
    if wanted("ping-pong") {
        ping_pong_row(runs);
    }
    if wanted("uncontended") {
        uncontended_rows();
    }
}

/// Uncontended lock + increment + unlock on this thread, fibra's `Mutex`
/// and std's alternating in batches, 31 rounds; medians and their ratio.
fn uncontended_rows() {
    let fibra_mutex = fibra::sync::Mutex::new(0u64);
    let std_mutex = std::sync::Mutex::new(0u64);
    let batch = 100_000u32;
    let (mut fibra_ns, mut std_ns) = (Vec::new(), Vec::new());
    for _ in 0..31 {
        let started = std::time::Instant::now();
        for _ in 0..batch {
            *std::hint::black_box(&fibra_mutex).lock().unwrap() += 1;
        }
        fibra_ns.push(started.elapsed().as_nanos() as f64 / batch as f64);
        let started = std::time::Instant::now();
        for _ in 0..batch {
            *std::hint::black_box(&std_mutex).lock().unwrap() += 1;
        }
        std_ns.push(started.elapsed().as_nanos() as f64 / batch as f64);
    }
    let (fibra_ns, std_ns) = (median(fibra_ns), median(std_ns));
    println!("mutex_uncontended_fibra_ns {fibra_ns:.2}");
    println!("mutex_uncontended_std_ns {std_ns:.2}");
    println!("mutex_uncontended_fibra_per_std {:.2}", fibra_ns / std_ns);
}

fn mutex_row(runs: usize) {
    let two = Runtime::builder().workers(2).build().expect("runtime");
    let mutex: Vec<f64> = (0..runs)
        .map(|_| {
            let counter = fibra::sync::Mutex::new(0u64);
            let elapsed = two.block_on(|| workloads::mutex_contended(counter, 1000, 1000, 100));
            elapsed.as_nanos() as f64 / 1e6
        })
        .collect();
    println!("mutex_contended_ns_per_increment {:.1}", median(mutex));
}

fn ping_pong_row(runs: usize) {
    let one = Runtime::builder().workers(1).build().expect("runtime");
    let rounds = 200_000;
    type Workload = fn(u64) -> std::time::Duration;
    let kinds: [(&str, Workload); 2] = [
        ("channel_ping_pong", workloads::channel_ping_pong),
        ("rendezvous_ping_pong", workloads::rendezvous_ping_pong),
    ];
    for (name, workload) in kinds {
        let (wall, cpu): (Vec<f64>, Vec<f64>) = (0..runs)
            .map(|_| {
                // Both coroutines run on the one worker: its thread's CPU
                // time is what the round trips cost, whatever else the
                // machine runs meanwhile.
                let (elapsed, cpu) = one.block_on(move || {
                    let cpu_before = thread_cpu_ns();
                    let elapsed = workload(rounds);
                    (elapsed, thread_cpu_ns() - cpu_before)
                });
                (
                    elapsed.as_nanos() as f64 / rounds as f64,
                    cpu / rounds as f64,
                )
            })
            .unzip();
        println!("{name}_ns {:.1}", median(wall));
        println!("{name}_cpu_ns {:.1}", median(cpu));
    }
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec into `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 * 1e9 + now.tv_nsec as f64
}

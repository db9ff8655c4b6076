//! What `Runtime::dump()` costs with many parked coroutines, and what it
//! does to their memory: N coroutines parked at one place (as a server's
//! idle connections are), one dump to warm the symboliser, then timed
//! dumps; RSS before and after.
//!
//! ```text
//! cargo run --release --example dump_cost -- 30000      # fits vm.max_map_count 65,530
//! cargo run --release --example dump_cost -- 100000     # needs vm.max_map_count >= 210,000
//! ```
//!
//! Each started coroutine's stack takes two kernel mappings, so more than
//! about 32,000 parked coroutines need `vm.max_map_count` raised first
//! (`sysctl vm.max_map_count=262144`, as root).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[inline(never)]
fn idle_connection(release: &AtomicBool) {
    while !release.load(Ordering::Acquire) {
        fibra::park();
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("a number of coroutines"))
        .unwrap_or(30_000);
    let workers: usize = std::env::args()
        .nth(2)
        .map(|a| a.parse().expect("a number of workers"))
        .unwrap_or(1);
    let rt = fibra::Runtime::builder()
        .workers(workers)
        .stack_size(16 * 1024)
        .build()
        .expect("runtime");
    let release = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let release = Arc::clone(&release);
            fibra::Builder::new()
                .name(format!("conn-{i}"))
                .spawn_on(&rt, move || idle_connection(&release))
                .expect("spawn")
        })
        .collect();
    while (rt.metrics().parked as usize) < n {
        std::thread::sleep(Duration::from_millis(10));
    }
    let rss_before = rss_kib();
    let warm = Instant::now();
    let first = rt.dump();
    let warm = warm.elapsed();
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let dump = rt.dump();
        times.push(start.elapsed());
        assert_eq!(dump.coroutines().len(), n);
    }
    times.sort();
    let rss_after = rss_kib();
    let text = first.to_string();
    println!("{}", text.lines().take(4).collect::<Vec<_>>().join("\n"));
    println!(
        "\n{n} parked coroutines on {workers} worker(s): first dump {warm:.1?} (loads debug info), \
         then median {:.1?} (min {:.1?}, max {:.1?}) = {:.2} us per coroutine; \
         summary {} lines; RSS {} KiB before the dumps, {} KiB after ({:+.2} KiB per coroutine)",
        times[2],
        times[0],
        times[4],
        times[2].as_secs_f64() * 1e6 / n as f64,
        text.lines().count(),
        rss_before,
        rss_after,
        (rss_after as f64 - rss_before as f64) / n as f64
    );
    release.store(true, Ordering::Release);
    for handle in &handles {
        handle.coroutine().unpark();
    }
    for handle in handles {
        handle.join().expect("join");
    }
}

//! A million coroutines spawned before any of them runs, then joined, on
//! one worker — against Go doing the same with goroutines in the same run.
//!
//! A coroutine gets its stack when it first runs, so the million unstarted
//! ones are only their closures and records, and the default
//! `vm.max_map_count` (65,530: about 32,700 live stacks) is no limit: each
//! runs to its end in one go and hands its stack to the next.
//!
//!     cargo run --release --example million
//!
//! Prints ns per spawn + join and the peak RSS of the process (VmHWM; one
//! fresh process per figure). With Go installed (`apt-get install
//! golang-go`), `benches/go/million.go` is run too and printed beside.

use std::process::Command;
use std::time::Instant;

const N: u64 = 1_000_000;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The measurement itself, in this (child) process.
fn measure() {
    let rt = fibra::Runtime::builder()
        .workers(1)
        .build()
        .expect("start the runtime");
    let (ns, sum) = rt.block_on(|| {
        let start = Instant::now();
        let handles: Vec<_> = (0..N).map(|i| fibra::spawn(move || i)).collect();
        let sum: u64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
        (start.elapsed().as_nanos() as f64 / N as f64, sum)
    });
    assert_eq!(sum, N * (N - 1) / 2);
    println!("ns_per_spawn_join {ns:.0}");
    println!("peak_rss_kib {}", peak_rss_kib());
    let stats = fibra::stack::stats();
    println!("stacks_mapped {}", stats.mappings_created);
}

/// The value after `key` in `text`'s lines.
fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--child") {
        measure();
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let fibra = Command::new(exe)
        .arg("--child")
        .output()
        .expect("run the child");
    let fibra = String::from_utf8_lossy(&fibra.stdout).into_owned();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/go/million.go");
    let go = Command::new("go")
        .args(["run", file])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    println!("1,000,000 spawned before any runs, then joined; one worker / GOMAXPROCS=1");
    println!(
        "{:<8} {:>18} {:>14} {:>14}",
        "", "ns per spawn+join", "peak RSS MiB", "stacks mapped"
    );
    let row = |name: &str, text: &str, stacks: &str| {
        let ns = value(text, "ns_per_spawn_join").unwrap_or("?");
        let rss = value(text, "peak_rss_kib")
            .and_then(|k| k.parse::<f64>().ok())
            .map_or("?".to_string(), |k| format!("{:.0}", k / 1024.0));
        println!("{name:<8} {ns:>18} {rss:>14} {stacks:>14}");
    };
    row(
        "fibra",
        &fibra,
        value(&fibra, "stacks_mapped").unwrap_or("?"),
    );
    match go {
        Some(go) => row("Go", &go, "-"),
        None => println!("Go       (not installed: apt-get install golang-go)"),
    }
}

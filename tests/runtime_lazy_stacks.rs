//! A coroutine gets its stack when it first runs, not when it is spawned:
//! a fan-out far beyond what `vm.max_map_count` allows in stacks (about
//! 32,700 by default) succeeds as long as few of them are started at once,
//! and the records of finished coroutines are freed.
//! Alone in its binary: it reads the process-wide stack counters.

mod common;

use std::time::Duration;

use common::watchdog;
use fibra::Runtime;
use fibra::stack::stats;

#[test]
fn a_fan_out_far_beyond_the_mapping_limit_spawns_and_joins() {
    // Six times what the default mapping limit allows in live stacks.
    const FAN_OUT: u64 = 200_000;
    watchdog(
        "a_fan_out_far_beyond_the_mapping_limit_spawns_and_joins",
        Duration::from_secs(60),
        || {
            let rt = Runtime::builder()
                .workers(1)
                .build()
                .expect("start the runtime");
            let fan_out = || {
                rt.block_on(|| {
                    let start = stats().mappings_created;
                    let handles: Vec<_> = (0..FAN_OUT).map(|i| fibra::spawn(move || i)).collect();
                    // None has run yet: this coroutine has not parked since.
                    let mapped = stats().mappings_created - start;
                    let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
                    (sum, mapped)
                })
            };
            let before = stats();
            let (sum, mapped_while_spawning) = fan_out();
            assert_eq!(sum, FAN_OUT * (FAN_OUT - 1) / 2);
            assert_eq!(mapped_while_spawning, 0, "spawning maps no stack");
            let mapped = stats().mappings_created - before.mappings_created;
            // Each coroutine runs to its end in one go, so the stacks of the
            // finished ones serve the next: a handful in all.
            assert!(
                mapped <= 64,
                "{mapped} stacks mapped for {FAN_OUT} short coroutines"
            );
            // The records of joined coroutines are freed: a second fan-out
            // reuses their memory, so the peak resident set stays where the
            // first put it (a leak would add 200,000 more records of a few
            // hundred bytes each, over 40 MiB). The peak, not the current
            // size: the allocator may hand freed memory back to the system.
            let peak = peak_resident_bytes();
            assert_eq!(fan_out().0, sum);
            let grown = peak_resident_bytes().saturating_sub(peak);
            assert!(
                grown < 16 << 20,
                "a second fan-out of {FAN_OUT} raised the peak resident set by {} KiB",
                grown >> 10
            );
        },
    );
}

/// The process's peak resident set (`VmHWM` in /proc/self/status), bytes.
fn peak_resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM in kB");
    kib << 10
}

//! A coroutine gets its stack when it first runs, not when it is spawned:
//! a fan-out far beyond what `vm.max_map_count` allows in stacks (about
//! 32,700 by default) succeeds as long as few of them are started at once.
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
            let before = stats();
            let (sum, mapped_while_spawning) = rt.block_on(|| {
                let start = stats().mappings_created;
                let handles: Vec<_> = (0..FAN_OUT).map(|i| fibra::spawn(move || i)).collect();
                // None has run yet: this coroutine has not parked since.
                let mapped = stats().mappings_created - start;
                let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
                (sum, mapped)
            });
            assert_eq!(sum, FAN_OUT * (FAN_OUT - 1) / 2);
            assert_eq!(mapped_while_spawning, 0, "spawning maps no stack");
            let mapped = stats().mappings_created - before.mappings_created;
            // Each coroutine runs to its end in one go, so the stacks of the
            // finished ones serve the next: a handful in all.
            assert!(
                mapped <= 64,
                "{mapped} stacks mapped for {FAN_OUT} short coroutines"
            );
        },
    );
}

//! Stack memory of a runtime's coroutines: a stack is mapped when a
//! coroutine first runs, pooled when it finishes, and every pooled stack is
//! unmapped once the (last) runtime is dropped. Alone in its own test binary
//! because it checks the process-wide counters of `fibra::stack::stats()`
//! exactly, which any other test could move.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::watchdog;
use fibra::Runtime;
use fibra::stack::stats;

#[test]
fn dropping_runtime_unmaps_pooled_stacks_of_finished_coroutines() {
    // Fewer than the pools' budget keeps, so none is unmapped early.
    const COROUTINES: usize = 100;
    watchdog(
        "dropping_runtime_unmaps_pooled_stacks_of_finished_coroutines",
        Duration::from_secs(30),
        || {
            let before = stats();
            let rt = Runtime::builder()
                .workers(1)
                .build()
                .expect("start the runtime");
            // All alive at once: each waits until every one has started, so
            // each needs a stack of its own. Spawned from a coroutine of the
            // only worker, so that none runs before the spawning is done.
            let started = Arc::new(AtomicUsize::new(0));
            let mapped_by_spawning = rt.block_on(|| {
                let start = stats().mappings_created;
                let handles: Vec<_> = (0..COROUTINES)
                    .map(|i| {
                        let started = Arc::clone(&started);
                        fibra::spawn(move || {
                            started.fetch_add(1, Ordering::SeqCst);
                            while started.load(Ordering::SeqCst) < COROUTINES {
                                fibra::yield_now();
                            }
                            i + 1
                        })
                    })
                    .collect();
                let mapped = stats().mappings_created - start;
                for (i, handle) in handles.into_iter().enumerate() {
                    assert_eq!(handle.join().unwrap(), i + 1);
                }
                mapped
            });
            assert_eq!(
                mapped_by_spawning, 0,
                "spawning maps no stack: a coroutine gets one when it first runs"
            );
            // block_on returned once its result was delivered; its own
            // coroutine finishes (and gives its stack back) just after.
            common::wait_for(
                "the block_on coroutine's stack is pooled",
                Duration::from_secs(10),
                || stats().pooled == before.pooled + COROUTINES + 1,
            );
            let finished = stats();
            // One per coroutine alive at once, and the block_on coroutine's.
            assert_eq!(
                finished.mappings_created - before.mappings_created,
                COROUTINES + 1,
                "one stack mapped per coroutine alive at once"
            );
            assert_eq!(
                finished.mappings_released, before.mappings_released,
                "finished coroutines' stacks are pooled, not unmapped, while the worker runs"
            );
            assert_eq!(finished.pooled, before.pooled + COROUTINES + 1);
            drop(rt);
            let after = stats();
            assert_eq!(
                after.mappings_released - before.mappings_released,
                COROUTINES + 1,
                "the worker's cache and the shared pool are unmapped when the runtime goes"
            );
            assert_eq!(after.pooled, before.pooled);
            assert_eq!(after.mappings_created, finished.mappings_created);
        },
    );
}

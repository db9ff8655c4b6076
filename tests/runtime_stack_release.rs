//! Stack memory after a runtime is dropped: finished coroutines' stacks stay
//! pooled in their worker while it runs and are unmapped when the worker exits.
//! Alone in its own test binary because it checks the process-wide counters of
//! `fibra::stack::stats()` exactly, which any other test could move.

mod common;

use std::time::Duration;

use common::watchdog;
use fibra::Runtime;
use fibra::stack::stats;

#[test]
fn dropping_runtime_unmaps_pooled_stacks_of_finished_coroutines() {
    // Fewer than a worker's pool keeps (1,024), so none is unmapped early.
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
            // Spawned from this plain thread, whose own pool is empty: each
            // spawn maps a stack; each finish returns it to the worker's pool.
            let handles: Vec<_> = (0..COROUTINES).map(|i| rt.spawn(move || i + 1)).collect();
            for (i, handle) in handles.into_iter().enumerate() {
                assert_eq!(handle.join().unwrap(), i + 1);
            }
            let finished = stats();
            assert_eq!(
                finished.mappings_created - before.mappings_created,
                COROUTINES,
                "one stack mapped per spawn"
            );
            assert_eq!(
                finished.mappings_released, before.mappings_released,
                "finished coroutines' stacks are pooled, not unmapped, while the worker runs"
            );
            drop(rt);
            let after = stats();
            assert_eq!(
                after.mappings_released - before.mappings_released,
                COROUTINES,
                "the worker's pool is unmapped when it exits"
            );
            assert_eq!(after.mappings_created, finished.mappings_created);
        },
    );
}

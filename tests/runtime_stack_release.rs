//! Stack memory after a runtime is dropped: finished coroutines' stacks stay
//! pooled in their worker while it runs and are unmapped when the worker exits.
//! Alone in its own test binary because it checks the process-wide counters of
//! `fibra::stack::stats()` exactly, which any other test could move.

use std::panic::resume_unwind;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use fibra::Runtime;
use fibra::stack::stats;

/// Runs `body` on its own OS thread and returns its value; fails the test with
/// a clear message instead of hanging if it has not finished within `limit`.
fn watchdog<T: Send + 'static>(
    what: &str,
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::Builder::new()
        .name(format!("watchdog-{what}"))
        .spawn(move || {
            let _ = tx.send(body());
        })
        .expect("spawn the watchdog's thread");
    match rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().expect("the body has returned");
            value
        }
        Err(RecvTimeoutError::Timeout) => panic!("{what}: still running after {limit:?}"),
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(payload) => resume_unwind(payload),
            Ok(()) => unreachable!("the body returned without sending its value"),
        },
    }
}

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

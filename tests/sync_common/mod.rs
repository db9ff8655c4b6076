//! Helpers shared by the `fibra::sync` test files.

use std::time::{Duration, Instant};

/// Runs `wait_once` (a wait that must time out after `timeout`) nine times
/// in a coroutine of `rt` and nine times on this thread; each must take at
/// least `timeout` (the lower bound is exact), the median lateness must be
/// under 15 ms and the worst under 1 s (bounds a loaded 2-core machine
/// holds).
pub fn check_timeout_lateness(
    rt: &fibra::Runtime,
    timeout: Duration,
    wait_once: impl Fn() + Clone + Send + 'static,
) {
    let run = move || {
        let mut lates = Vec::new();
        for _ in 0..9 {
            let started = Instant::now();
            wait_once();
            let elapsed = started.elapsed();
            assert!(
                elapsed >= timeout,
                "returned after {elapsed:?} < {timeout:?}"
            );
            lates.push(elapsed - timeout);
        }
        lates.sort();
        lates
    };
    let in_coroutine = rt.block_on(run.clone());
    for (what, lates) in [("coroutine", in_coroutine), ("thread", run())] {
        assert!(
            lates[4] < Duration::from_millis(15),
            "{what}: median lateness {:?}",
            lates[4]
        );
        assert!(
            lates[8] < Duration::from_secs(1),
            "{what}: worst lateness {:?}",
            lates[8]
        );
    }
}

//! Stacks are reused across threads: a coroutine's stack is taken where it
//! is spawned and given back on the worker that ran it, and the shared pool
//! carries the surplus back. One test in its own binary, because it reads
//! the process-wide mapping counters.

use fibra::Runtime;
use fibra::stack::stats;

#[test]
fn spawns_from_a_plain_thread_reuse_stacks_across_workers() {
    const BATCH: usize = 500;
    const BATCHES: usize = 40;
    let rt = Runtime::builder()
        .workers(2)
        .build()
        .expect("start the runtime");
    let before = stats();
    for batch in 0..BATCHES {
        let handles: Vec<_> = (0..BATCH)
            .map(|i| rt.spawn(move || batch * BATCH + i))
            .collect();
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.join().unwrap(), batch * BATCH + i);
        }
    }
    let created = stats().mappings_created - before.mappings_created;
    // Without the shared pool nearly every one of the 20,000 spawns mapped a
    // stack. The first batches must map (every pool starts empty), and the
    // workers' pools fill to half their capacity before handing stacks over.
    let spawned = BATCH * BATCHES;
    eprintln!("{created} of {spawned} spawns mapped a new stack");
    assert!(
        created <= spawned / 4,
        "{created} of {spawned} spawns from a plain thread mapped a new stack"
    );
    drop(rt);
}

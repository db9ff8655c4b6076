//! Stack pooling, measured with the process-wide `stats()` counters: finished,
//! panicked, dropped and unstarted coroutines give their stacks back to the
//! thread's per-size pools, capacity holds, and `StackPool` follows the same
//! rules. A single test, so no other test changes the counters meanwhile.

use std::panic::{AssertUnwindSafe, catch_unwind};

use fibra::coroutine::{Builder, Coroutine, CoroutineResult, Yielder};
use fibra::stack::{self, DEFAULT_STACK_SIZE, Stack, StackPool};

/// Creates a coroutine on a default stack, runs it to completion through one
/// suspend, checks its values and drops it.
fn run_to_completion(i: u64) {
    let mut co = Coroutine::new(move |y: &Yielder<u64, u64>, first: u64| {
        let second = y.suspend(first + i);
        second * 2 + i
    });
    assert_eq!(co.resume(1), CoroutineResult::Yield(1 + i));
    assert_eq!(co.resume(5), CoroutineResult::Return(10 + i));
}

/// The process-wide (mapped, unmapped) stack counters.
fn counters() -> (usize, usize) {
    let stats = stack::stats();
    (stats.mappings_created, stats.mappings_released)
}

/// Counter changes between two readings.
fn delta(before: (usize, usize), after: (usize, usize)) -> (usize, usize) {
    (after.0 - before.0, after.1 - before.1)
}

#[test]
fn released_stacks_are_reused_without_new_mappings() {
    // The first coroutine on this thread maps a stack; finishing returns it
    // to the thread's pool.
    let start = counters();
    run_to_completion(0);
    let warm = counters();
    assert_eq!(delta(start, warm), (1, 0));

    for i in 1..=100 {
        run_to_completion(i);
    }
    assert_eq!(
        counters(),
        warm,
        "100 coroutines run one after another reuse the pooled stack"
    );

    // Coroutine::new gives the usable size of a default stack, and at least
    // DEFAULT_STACK_SIZE bytes.
    let co: Coroutine<(), (), ()> = Coroutine::new(|_, ()| ());
    assert_eq!(counters(), warm, "taken from the pool");
    let reference = Stack::new(DEFAULT_STACK_SIZE).expect("stack can be mapped");
    assert_eq!(co.stack_size(), reference.size());
    assert!(co.stack_size() >= DEFAULT_STACK_SIZE);
    assert!(co.stack_size() < DEFAULT_STACK_SIZE + 4096);
    drop(reference);
    drop(co); // never started: its stack goes back to the pool
    let warm = counters();

    // A coroutine that panicked, one dropped while suspended and one never
    // started all give their stacks back.
    let mut panicking: Coroutine<(), (), ()> = Coroutine::new(|_, ()| panic!("expected panic"));
    assert!(catch_unwind(AssertUnwindSafe(|| panicking.resume(()))).is_err());
    drop(panicking);
    let mut suspended = Coroutine::new(|y: &Yielder<(), u8>, ()| {
        y.suspend(1);
    });
    assert_eq!(suspended.resume(()), CoroutineResult::Yield(1));
    drop(suspended);
    let unstarted: Coroutine<(), (), ()> = Coroutine::new(|_, ()| ());
    drop(unstarted);
    for i in 0..10 {
        run_to_completion(i);
    }
    assert_eq!(
        counters(),
        warm,
        "panicked and dropped coroutines' stacks are reused"
    );

    // Other sizes get a pool of their own: mapped the first time, reused
    // afterwards, also by requests that round to the same usable size.
    let run_small = |request: usize| {
        let mut small: Coroutine<(), (), u32> = Builder::new()
            .stack_size(request)
            .build(|_, ()| 3)
            .expect("stack can be mapped");
        let size = small.stack_size();
        assert_eq!(small.resume(()), CoroutineResult::Return(3));
        size
    };
    let small_size = run_small(30_000);
    assert!((30_000..DEFAULT_STACK_SIZE).contains(&small_size));
    assert_eq!(delta(warm, counters()), (1, 0));
    for _ in 0..10 {
        assert_eq!(run_small(30_000), small_size);
    }
    assert_eq!(run_small(small_size), small_size);
    assert_eq!(delta(warm, counters()), (1, 0), "the small stack is reused");
    run_to_completion(1);
    assert_eq!(
        delta(warm, counters()),
        (1, 0),
        "the default pool is unaffected"
    );
    let warm = counters();

    // The thread's pool keeps at most THREAD_POOL_CAPACITY stacks; a full
    // pool hands half to the process-wide shared pool instead of unmapping.
    let count = stack::THREAD_POOL_CAPACITY + 6;
    let many: Vec<Coroutine<(), (), ()>> = (0..count).map(|_| Coroutine::new(|_, ()| ())).collect();
    let (created, released) = delta(warm, counters());
    assert!(
        (count - 20..=count).contains(&created),
        "{created} new mappings"
    );
    assert_eq!(released, 0);
    drop(many);
    assert_eq!(
        delta(warm, counters()),
        (created, 0),
        "the surplus of a full pool goes to the shared pool, not back to the kernel"
    );
    let warm = counters();
    let again: Vec<Coroutine<(), (), ()>> =
        (0..count).map(|_| Coroutine::new(|_, ()| ())).collect();
    assert_eq!(
        counters(),
        warm,
        "the thread's pool and the shared pool serve all of them again"
    );
    drop(again);
    assert_eq!(counters(), warm);

    // Another thread, whose own pool is empty, is served by the shared pool.
    let shared_served = std::thread::spawn(|| {
        let before = counters();
        let mut co: Coroutine<(), (), u8> = Coroutine::new(|_, ()| 7);
        assert_eq!(co.resume(()), CoroutineResult::Return(7));
        counters().0 - before.0
    })
    .join()
    .expect("the other thread");
    assert_eq!(
        shared_served, 0,
        "no new mapping on a thread with an empty pool"
    );
    let warm = counters();

    // A StackPool of its own: same rules.
    let mut pool = StackPool::new(DEFAULT_STACK_SIZE, 2);
    assert!(pool.is_empty());
    let first = pool.get(DEFAULT_STACK_SIZE).expect("stack can be mapped");
    let first_bottom = first.bottom();
    assert_eq!(delta(warm, counters()), (1, 0));
    pool.put(first);
    assert_eq!(pool.len(), 1);
    assert!(!pool.is_empty(), "the pool keeps a stack");
    let reused = pool.get(DEFAULT_STACK_SIZE).expect("stack from the pool");
    assert_eq!(reused.bottom(), first_bottom, "the pooled stack comes back");
    assert_eq!(delta(warm, counters()), (1, 0));
    assert!(pool.is_empty());

    let other = pool.get(64 * 1024).expect("stack can be mapped");
    assert_eq!(delta(warm, counters()), (2, 0));
    pool.put(other);
    assert!(pool.is_empty(), "a stack of another size is not kept");
    assert_eq!(delta(warm, counters()), (2, 1));

    let second = pool.get(DEFAULT_STACK_SIZE).expect("stack can be mapped");
    let third = pool.get(DEFAULT_STACK_SIZE).expect("stack can be mapped");
    assert_eq!(delta(warm, counters()), (4, 1));
    pool.put(reused);
    pool.put(second);
    pool.put(third);
    assert_eq!(pool.len(), 2, "capacity 2");
    assert_eq!(delta(warm, counters()), (4, 2));
    drop(pool);
    assert_eq!(delta(warm, counters()), (4, 4));
}

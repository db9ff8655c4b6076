//! The uncontended paths of `fibra::sync` allocate nothing: lock/unlock of
//! `Mutex` and `RwLock`, `Condvar` notifies with no waiter, a completed
//! `Once`/`OnceLock`/`LazyLock`, channel send/receive once the buffer
//! has its capacity, and the phase-2 types (`Semaphore`, `Event`,
//! `WaitGroup`, `ReentrantLock`, `JoinableQueue`, a `coroutine_local!`
//! after its first access) — in a coroutine and on a plain thread. Counted by a
//! global allocator that tallies the calling thread's allocations (this
//! file is its own test binary, so the allocator affects nothing else).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use fibra::sync::{
    Condvar, Event, JoinableQueue, LazyLock, Mutex, Once, OnceLock, ReentrantLock, RwLock,
    Semaphore, WaitGroup, mpsc,
};

fibra::coroutine_local! {
    static LOCAL: Cell<u64> = Cell::new(0);
}

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the thread-local counter is
// const-initialised and has no destructor, so touching it never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations made by the calling thread while `f` runs.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Every uncontended operation, many times; returns the allocations made.
fn uncontended_operations() -> Vec<(&'static str, u64)> {
    let mutex = Mutex::new(0u64);
    let rwlock = RwLock::new(0u64);
    let condvar = Condvar::new();
    let once = Once::new();
    once.call_once(|| ());
    let cell = OnceLock::new();
    cell.set(1u32).unwrap();
    let lazy = LazyLock::new(|| 2u32);
    let _ = *lazy;
    let (tx, rx) = mpsc::channel::<u64>();
    let (sync_tx, sync_rx) = mpsc::sync_channel::<u64>(8);
    // Warm-up: the unbounded buffer takes its capacity once.
    for i in 0..64 {
        tx.send(i).unwrap();
    }
    while rx.try_recv().is_ok() {}
    let semaphore = Semaphore::new(2);
    let event = Event::new();
    let wait_group = WaitGroup::new();
    let reentrant = ReentrantLock::new(Cell::new(0u64));
    drop(reentrant.lock()); // warm-up: the thread's id is made once
    let queue = JoinableQueue::with_maxsize(4);
    LOCAL.set(0); // warm-up: the coroutine's (or thread's) value is made once
    let rounds = 10_000u64;
    vec![
        (
            "Mutex lock/unlock",
            allocations_in(|| {
                for _ in 0..rounds {
                    *mutex.lock().unwrap() += 1;
                }
            }),
        ),
        (
            "RwLock read/write",
            allocations_in(|| {
                for _ in 0..rounds {
                    let seen = *rwlock.read().unwrap();
                    *rwlock.write().unwrap() = seen + 1;
                }
            }),
        ),
        (
            "Condvar notify with no waiter",
            allocations_in(|| {
                for _ in 0..rounds {
                    condvar.notify_one();
                    condvar.notify_all();
                }
            }),
        ),
        (
            "completed Once/OnceLock/LazyLock",
            allocations_in(|| {
                for _ in 0..rounds {
                    once.call_once(|| unreachable!());
                    assert_eq!(cell.get(), Some(&1));
                    assert_eq!(*lazy, 2);
                }
            }),
        ),
        (
            "channel send/recv",
            allocations_in(|| {
                for i in 0..rounds {
                    tx.send(i).unwrap();
                    assert_eq!(rx.recv().unwrap(), i);
                    sync_tx.try_send(i).unwrap();
                    assert_eq!(sync_rx.recv().unwrap(), i);
                }
            }),
        ),
        (
            "Semaphore acquire/release",
            allocations_in(|| {
                for _ in 0..rounds {
                    drop(semaphore.acquire());
                    drop(semaphore.try_acquire_many(2).unwrap());
                }
            }),
        ),
        (
            "Event set/wait/clear, WaitGroup add/done/wait",
            allocations_in(|| {
                for _ in 0..rounds {
                    event.set();
                    assert!(event.wait());
                    event.clear();
                    wait_group.add(2);
                    wait_group.done();
                    wait_group.done();
                    wait_group.wait();
                }
            }),
        ),
        (
            "ReentrantLock lock/relock/unlock",
            allocations_in(|| {
                for _ in 0..rounds {
                    let outer = reentrant.lock();
                    let inner = reentrant.lock();
                    inner.set(outer.get() + 1);
                }
            }),
        ),
        (
            "JoinableQueue put/get/task_done",
            allocations_in(|| {
                for i in 0..rounds {
                    queue.put(i);
                    assert_eq!(queue.get(), i);
                    queue.task_done();
                }
                queue.join();
            }),
        ),
        (
            "coroutine_local! access",
            allocations_in(|| {
                for _ in 0..rounds {
                    LOCAL.set(LOCAL.get() + 1);
                }
            }),
        ),
    ]
}

#[test]
fn uncontended_operations_do_not_allocate() {
    let on_thread = uncontended_operations();
    let rt = fibra::Runtime::builder()
        .workers(1)
        .build()
        .expect("runtime");
    let in_coroutine = rt.block_on(uncontended_operations);
    for (where_, counts) in [("plain thread", on_thread), ("coroutine", in_coroutine)] {
        for (what, allocations) in counts {
            assert_eq!(
                allocations, 0,
                "{where_}: {what} allocated {allocations} times"
            );
        }
    }
}

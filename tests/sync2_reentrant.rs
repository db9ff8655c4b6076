//! `fibra::sync::ReentrantLock`: owned per coroutine — the owner re-enters,
//! and every other coroutine waits, also one of the same worker (where a
//! per-thread lock would let it in); per thread on plain threads; exact
//! counts under contention of coroutines on one and two workers and plain
//! threads; a coroutine cancelled while parked in `lock`, or by the drop
//! of its runtime, leaves the lock usable.

mod common;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{WATCHDOG, runtime, watchdog};
use fibra::sync::{Arc, ReentrantLock, mpsc};

/// A counter only the lock's owner touches: a read and a write with a
/// yield between them (and a nested level), so that a second holder
/// inside would lose increments.
fn increment_nested(lock: &ReentrantLock<Cell<u64>>, depth: u32) {
    let guard = lock.lock();
    if depth > 0 {
        increment_nested(lock, depth - 1);
        return;
    }
    let seen = guard.get();
    fibra::yield_now();
    guard.set(seen + 1);
}

#[test]
fn exact_count_under_contention_of_coroutines_and_threads() {
    watchdog("reentrant_contention", WATCHDOG, || {
        for workers in [1, 2] {
            let rt = runtime(workers, "rlock-count");
            let lock = Arc::new(ReentrantLock::new(Cell::new(0u64)));
            let rounds = 200;
            let work = |kind: u32| {
                let lock = Arc::clone(&lock);
                move || {
                    for round in 0..rounds {
                        let depth = (kind + round) % 4;
                        if round % 3 == 0 {
                            // try_lock until it works, then nest with lock.
                            let outer = loop {
                                if let Some(guard) = lock.try_lock() {
                                    break guard;
                                }
                                fibra::yield_now();
                            };
                            increment_nested(&lock, depth);
                            drop(outer);
                        } else {
                            increment_nested(&lock, depth);
                        }
                    }
                }
            };
            let coroutines: Vec<_> = (0..30).map(|k| rt.spawn(work(k))).collect();
            let threads: Vec<_> = (0..2).map(|k| std::thread::spawn(work(k))).collect();
            for coroutine in coroutines {
                coroutine.join().unwrap();
            }
            for thread in threads {
                thread.join().unwrap();
            }
            assert_eq!(
                lock.lock().get(),
                32 * u64::from(rounds),
                "{workers} workers"
            );
        }
    });
}

#[test]
fn a_coroutine_of_the_same_worker_waits_for_the_owner() {
    watchdog("reentrant_same_worker", WATCHDOG, || {
        let rt = runtime(1, "rlock-same");
        let log = rt.block_on(|| {
            let lock = Arc::new(ReentrantLock::new(Cell::new(Vec::new())));
            let outer = lock.lock();
            let inner = lock.try_lock().expect("the owner re-enters with try_lock");
            let other = {
                let lock = Arc::clone(&lock);
                fibra::spawn(move || {
                    // Same worker thread as the owner, another coroutine.
                    assert!(lock.try_lock().is_none());
                    let guard = lock.lock(); // parks
                    let mut log = guard.take();
                    log.push("other");
                    guard.set(log);
                })
            };
            for _ in 0..10 {
                fibra::yield_now(); // `other` runs, and parks in `lock`
            }
            assert!(!other.is_finished());
            let mut log = inner.take();
            log.push("owner");
            inner.set(log);
            drop(inner);
            fibra::yield_now();
            assert!(!other.is_finished(), "one level is still held");
            drop(outer);
            other.join().unwrap();
            lock.lock().take()
        });
        assert_eq!(log, ["owner", "other"]);
    });
}

#[test]
fn plain_threads_own_it_per_thread_beside_coroutines() {
    watchdog("reentrant_threads", WATCHDOG, || {
        let rt = runtime(2, "rlock-thread");
        let lock = Arc::new(ReentrantLock::new(Cell::new(0u32)));
        let outer = lock.lock();
        let inner = lock.lock(); // this thread re-enters
        let coroutine = {
            let lock = Arc::clone(&lock);
            rt.spawn(move || {
                assert!(lock.try_lock().is_none(), "the thread owns it");
                let guard = lock.lock();
                guard.get()
            })
        };
        let thread = {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || {
                assert!(lock.try_lock().is_none(), "another thread owns it");
                let guard = lock.lock();
                guard.set(guard.get() + 10);
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!coroutine.is_finished() && !thread.is_finished());
        inner.set(1);
        drop(inner);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!coroutine.is_finished() && !thread.is_finished());
        drop(outer);
        thread.join().unwrap();
        let seen = coroutine.join().unwrap();
        // Either order: the coroutine sees 1 or 11, the final value is 11.
        assert!(seen == 1 || seen == 11, "{seen}");
        assert_eq!(lock.lock().get(), 11);
    });
}

#[test]
fn a_waiter_cancelled_while_parked_leaves_the_lock_usable() {
    watchdog("reentrant_cancel", WATCHDOG, || {
        let rt = runtime(2, "rlock-cancel");
        let lock = Arc::new(ReentrantLock::new(Cell::new(0u32)));
        let guard = lock.lock();
        let (queued_tx, queued_rx) = mpsc::channel();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (lock, queued_tx) = (Arc::clone(&lock), queued_tx.clone());
                rt.spawn(move || {
                    queued_tx.send(()).unwrap();
                    let guard = lock.lock();
                    guard.set(guard.get() + 1);
                })
            })
            .collect();
        for _ in 0..4 {
            queued_rx.recv().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10)); // they park
        let mut waiters = waiters.into_iter();
        let cancelled = waiters.next().unwrap();
        cancelled.cancel();
        assert!(cancelled.join().is_err());
        drop(guard);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(lock.lock().get(), 3, "the three others each got it once");
        assert!(lock.try_lock().is_some());
    });
}

#[test]
fn a_runtime_dropped_with_coroutines_parked_in_lock_leaves_it_usable() {
    watchdog("reentrant_runtime_drop", WATCHDOG, || {
        let lock = Arc::new(ReentrantLock::new(Cell::new(0u64)));
        let guard = lock.lock();
        let rt = runtime(2, "rlock-rtdrop");
        let entered = Arc::new(AtomicBool::new(false));
        for _ in 0..5 {
            let (lock, entered) = (Arc::clone(&lock), Arc::clone(&entered));
            drop(rt.spawn(move || {
                let _guard = lock.lock();
                entered.store(true, Ordering::SeqCst);
            }));
        }
        std::thread::sleep(Duration::from_millis(20)); // they park
        drop(rt); // cancels them in `lock`
        assert!(!entered.load(Ordering::SeqCst));
        drop(guard);
        // Free, and nobody is left queued: a thread takes it at once.
        let other = {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || lock.try_lock().map(|g| g.get()))
        };
        assert_eq!(other.join().unwrap(), Some(0));
        // And a new runtime's coroutines contend on it as before.
        let rt = runtime(1, "rlock-rtdrop2");
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let lock = Arc::clone(&lock);
                rt.spawn(move || increment_nested(&lock, 2))
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(lock.lock().get(), 10);
    });
}

#[test]
fn into_inner_get_mut_and_debug() {
    let mut lock = ReentrantLock::new(5);
    *lock.get_mut() += 1;
    assert_eq!(format!("{lock:?}"), "ReentrantLock { data: 6, .. }");
    let guard = lock.lock();
    // The owner's own Debug re-enters; another thread sees it locked.
    assert_eq!(format!("{lock:?}"), "ReentrantLock { data: 6, .. }");
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(format!("{lock:?}"), "ReentrantLock { data: <locked>, .. }"));
    });
    drop(guard);
    assert_eq!(lock.into_inner(), 6);
}

//! Edges of the lock types that the other sync tests reach only by chance
//! or not at all (found by cargo-mutants). On one worker, so the order is
//! exact: the mutex's two ways of passing the lock on (an unlock wakes the
//! queue's head to compete; only a starving head is handed the lock, and
//! only once), a starving waiter cancelled in the queue (the lock must not
//! stay reserved for nobody), and a holder's own panic poisoning while a
//! healthy neighbour is parked in `fibra::sync`. Then a `ReentrantLockGuard`
//! printing its value as std's guards do, and a stress of plain threads on
//! a `RwLock` whose slow path finds the lock released (a race: it catches
//! a waiter that queues then only when the race is hit).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{WATCHDOG, assert_cancelled, runtime, watchdog};
use fibra::sync::{Arc, Mutex, ReentrantLock, RwLock, TryLockError, mpsc};

/// Longer than the mutex's starvation threshold (1 ms): a waiter queued
/// this long before it loses a race asks for handoff.
const STARVED: Duration = Duration::from_millis(5);

#[test]
fn only_a_starving_waiter_is_handed_the_lock_and_only_once() {
    watchdog("handoff_once", WATCHDOG, || {
        let rt = runtime(1, "edges-handoff");
        rt.block_on(|| {
            let lock = Arc::new(Mutex::new(Vec::new()));
            let guard = lock.lock().unwrap();
            let waiter = {
                let lock = Arc::clone(&lock);
                fibra::spawn(move || {
                    lock.lock().unwrap().push("waiter");
                    // Its unlock wakes the coroutine queued meanwhile, and
                    // the lock is free for us to take back.
                    lock.try_lock().is_ok()
                })
            };
            fibra::yield_now(); // it finds the lock held and queues
            // A waiter that has not starved is only woken to compete; it
            // cannot run before we park, so we take the lock back.
            drop(guard);
            let guard = lock
                .try_lock()
                .expect("an unlock without a starving waiter leaves the lock free");
            std::thread::sleep(STARVED);
            fibra::yield_now(); // it runs, loses, and queues asking for handoff
            drop(guard);
            assert!(
                matches!(lock.try_lock(), Err(TryLockError::WouldBlock)),
                "the unlock handed the lock to the starving waiter"
            );
            // We queue while it holds the lock; the handoff is over, so its
            // unlock only wakes us.
            let mut guard = lock.lock().unwrap();
            guard.push("us");
            drop(guard);
            assert!(
                waiter.join().unwrap(),
                "after the handoff an unlock leaves the lock free again"
            );
            assert_eq!(*lock.try_lock().unwrap(), ["waiter", "us"]);
        });
    });
}

#[test]
fn a_starving_waiter_cancelled_in_the_queue_leaves_the_lock_free() {
    watchdog("cancelled_starving_waiter", WATCHDOG, || {
        let rt = runtime(1, "edges-cancel");
        rt.block_on(|| {
            let lock = Arc::new(Mutex::new(0));
            let guard = lock.lock().unwrap();
            let waiter = {
                let lock = Arc::clone(&lock);
                fibra::spawn(move || *lock.lock().unwrap() += 1)
            };
            fibra::yield_now(); // it queues
            drop(guard); // and is woken
            let guard = lock.try_lock().expect("we take the lock back");
            std::thread::sleep(STARVED);
            fibra::yield_now(); // it queues again, asking for handoff
            waiter.cancel();
            assert_cancelled("the starving waiter", waiter);
            // Nobody waits any more: this unlock must leave the lock free,
            // not reserved for a handoff to nobody.
            drop(guard);
            *lock.try_lock().expect("the lock is free") += 10;
            *lock.lock().unwrap() += 100;
            assert_eq!(*lock.lock().unwrap(), 110);
            assert!(!lock.is_poisoned());
        });
    });
}

#[test]
fn a_holders_own_panic_poisons_while_a_healthy_neighbour_is_parked() {
    // The poisoning refinement (src/sync/poison.rs) spares a guard only
    // while a neighbour is parked *unwinding*; a neighbour parked in a
    // plain wait says nothing about the holder.
    watchdog("poison_beside_a_parked_neighbour", WATCHDOG, || {
        let rt = runtime(1, "edges-poison");
        rt.block_on(|| {
            let lock = Arc::new(Mutex::new(0));
            let (tx, rx) = mpsc::channel::<()>();
            let neighbour = fibra::spawn(move || rx.recv().is_err());
            fibra::yield_now(); // it parks in recv
            let holder = {
                let lock = Arc::clone(&lock);
                fibra::spawn(move || {
                    let _guard = lock.lock().unwrap();
                    std::panic::resume_unwind(Box::new("the holder panics"));
                })
            };
            assert!(holder.join().is_err());
            assert!(lock.is_poisoned(), "the holder itself panicked");
            drop(tx);
            assert!(neighbour.join().unwrap(), "the neighbour was still parked");
        });
    });
}

#[test]
fn a_reentrant_lock_guard_prints_its_value() {
    let lock = ReentrantLock::new(vec![1, 2]);
    let outer = lock.lock();
    let inner = lock.lock();
    assert_eq!(format!("{outer:?}"), "[1, 2]");
    assert_eq!(format!("{inner:#?}"), format!("{:#?}", vec![1, 2]));
}

#[test]
fn a_rwlock_waiter_that_finds_the_lock_released_takes_it() {
    // Plain threads with empty critical sections: a reader or writer whose
    // fast path failed often finds, once it holds the list lock, that the
    // holder has left. It must take the lock then: queued, it would wait
    // for a release that already happened (and everyone would queue
    // behind it).
    watchdog("rwlock_released_meanwhile", WATCHDOG, || {
        const ROUNDS: usize = 1_000_000;
        let lock = Arc::new(RwLock::new(0usize));
        let inside = Arc::new(AtomicUsize::new(0)); // readers, or 1000 for a writer
        let writer = {
            let (lock, inside) = (Arc::clone(&lock), Arc::clone(&inside));
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let mut guard = lock.write().unwrap();
                    assert_eq!(
                        inside.swap(1000, Ordering::SeqCst),
                        0,
                        "a writer beside others"
                    );
                    *guard += 1;
                    inside.store(0, Ordering::SeqCst);
                }
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (lock, inside) = (Arc::clone(&lock), Arc::clone(&inside));
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        let guard = lock.read().unwrap();
                        assert!(
                            inside.fetch_add(1, Ordering::SeqCst) < 1000,
                            "a reader beside a writer"
                        );
                        assert!(*guard <= ROUNDS);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for reader in readers {
            reader.join().unwrap();
        }
        assert_eq!(*lock.try_write().expect("nobody holds the lock"), ROUNDS);
    });
}

//! `fibra::sync::RwLock`: readers share, writers exclude (exact counts and
//! a two-field invariant under contention, threads mixed in), a writer is
//! not starved by a stream of overlapping readers, poisoning (writers
//! only), `downgrade`, `try_*`, and cancelled waiters.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{WATCHDOG, runtime, watchdog};
use fibra::sync::{Arc, RwLock, TryLockError};

#[test]
fn readers_hold_the_lock_together() {
    watchdog("readers_hold_the_lock_together", WATCHDOG, || {
        let rt = runtime(1, "rwlock-share");
        rt.block_on(|| {
            let lock = Arc::new(RwLock::new(0));
            let inside = Arc::new(AtomicUsize::new(0));
            let most = Arc::new(AtomicUsize::new(0));
            let readers: Vec<_> = (0..20)
                .map(|_| {
                    let (lock, inside, most) =
                        (Arc::clone(&lock), Arc::clone(&inside), Arc::clone(&most));
                    fibra::spawn(move || {
                        let guard = lock.read().unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        // Stay until everyone is in (bounded: a lock that
                        // excluded readers would never get there).
                        for _ in 0..10_000 {
                            if inside.load(Ordering::SeqCst) == 20 {
                                break;
                            }
                            fibra::yield_now();
                        }
                        inside.fetch_sub(1, Ordering::SeqCst);
                        *guard
                    })
                })
                .collect();
            for reader in readers {
                assert_eq!(reader.join().unwrap(), 0);
            }
            assert_eq!(most.load(Ordering::SeqCst), 20);
        });
    });
}

#[test]
fn writers_exclude_everyone_under_contention() {
    watchdog("writers_exclude_everyone", WATCHDOG, || {
        for workers in [1, 2] {
            let rt = runtime(workers, "rwlock-count");
            // Two fields a writer changes together; a reader must never see
            // them apart.
            let lock = Arc::new(RwLock::new((0u64, 0u64)));
            let work = |lock: Arc<RwLock<(u64, u64)>>, id: usize| {
                move || {
                    for i in 0..300 {
                        if (i + id).is_multiple_of(4) {
                            let mut guard = lock.write().unwrap();
                            guard.0 += 1;
                            fibra::yield_now();
                            guard.1 += 1;
                        } else {
                            let guard = lock.read().unwrap();
                            let seen = *guard;
                            fibra::yield_now();
                            assert_eq!(seen.0, seen.1, "a reader saw a half-done write");
                            assert_eq!(*guard, seen, "a write happened under a read lock");
                        }
                    }
                }
            };
            let coroutines: Vec<_> = (0..40)
                .map(|id| rt.spawn(work(Arc::clone(&lock), id)))
                .collect();
            let threads: Vec<_> = (0..2)
                .map(|id| std::thread::spawn(work(Arc::clone(&lock), id)))
                .collect();
            for handle in coroutines {
                handle.join().unwrap();
            }
            for thread in threads {
                thread.join().unwrap();
            }
            assert_eq!(
                *lock.read().unwrap(),
                (42 * 75, 42 * 75),
                "{workers} workers"
            );
        }
    });
}

#[test]
fn a_writer_is_not_starved_by_overlapping_readers() {
    // Readers on the only worker keep the lock read-held at every moment
    // (each takes a read lock before the previous one lets go). A writer
    // that let readers in ahead of it would wait until they stop.
    watchdog("a_writer_is_not_starved", WATCHDOG, || {
        let rt = runtime(1, "rwlock-starve");
        let lock = Arc::new(RwLock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (lock, stop) = (Arc::clone(&lock), Arc::clone(&stop));
                rt.spawn(move || {
                    let started = Instant::now();
                    let mut reads = 0u64;
                    while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(5)
                    {
                        let _guard = lock.read().unwrap();
                        reads += 1;
                        fibra::yield_now();
                    }
                    reads
                })
            })
            .collect();
        let writer = {
            let (lock, stop) = (Arc::clone(&lock), Arc::clone(&stop));
            rt.spawn(move || {
                fibra::sleep(Duration::from_millis(20));
                let asked = Instant::now();
                *lock.write().unwrap() += 1;
                let waited = asked.elapsed();
                let readers_stopped = stop.swap(true, Ordering::SeqCst);
                (waited, readers_stopped)
            })
        };
        let (waited, readers_stopped) = writer.join().unwrap();
        stop.store(true, Ordering::SeqCst);
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(!readers_stopped && reads > 0);
        assert!(
            waited < Duration::from_secs(2),
            "the writer waited {waited:?}"
        );
        assert_eq!(*lock.read().unwrap(), 1);
    });
}

#[test]
fn a_panicking_writer_poisons_and_a_panicking_reader_does_not() {
    watchdog("rwlock_poisoning", WATCHDOG, || {
        let rt = runtime(2, "rwlock-poison");
        let lock = Arc::new(RwLock::new(1));
        let reader = {
            let lock = Arc::clone(&lock);
            rt.spawn(move || {
                let _guard = lock.read().unwrap();
                panic!("reader panics");
            })
        };
        assert!(reader.join().is_err());
        assert!(!lock.is_poisoned());
        let writer = {
            let lock = Arc::clone(&lock);
            rt.spawn(move || {
                let _guard = lock.write().unwrap();
                panic!("writer panics");
            })
        };
        assert!(writer.join().is_err());
        assert!(lock.is_poisoned());
        assert_eq!(**lock.read().unwrap_err().get_ref(), 1);
        assert!(matches!(lock.try_write(), Err(TryLockError::Poisoned(_))));
        lock.clear_poison();
        assert_eq!(*lock.write().unwrap(), 1);
    });
}

#[test]
fn downgrade_lets_readers_in_and_keeps_writers_out() {
    watchdog("downgrade", WATCHDOG, || {
        let rt = runtime(1, "rwlock-downgrade");
        rt.block_on(|| {
            let lock = Arc::new(RwLock::new(Vec::new()));
            let mut guard = lock.write().unwrap();
            guard.push("written");
            let writer = {
                let lock = Arc::clone(&lock);
                fibra::spawn(move || lock.write().unwrap().push("second writer"))
            };
            let reader = {
                let lock = Arc::clone(&lock);
                fibra::spawn(move || lock.read().unwrap().clone())
            };
            fibra::yield_now(); // both queue: writer first, then reader
            let guard = fibra::sync::RwLockWriteGuard::downgrade(guard);
            assert_eq!(*guard, ["written"]);
            assert!(lock.try_write().is_err(), "a read lock is still held");
            drop(guard);
            writer.join().unwrap();
            // Served in order: the writer queued before the reader.
            assert_eq!(reader.join().unwrap(), ["written", "second writer"]);
        });
        let lock = RwLock::new(1);
        let read = lock.try_read().unwrap();
        assert!(matches!(lock.try_write(), Err(TryLockError::WouldBlock)));
        assert_eq!(*lock.try_read().unwrap(), 1);
        drop(read);
        let write = lock.try_write().unwrap();
        assert!(matches!(lock.try_read(), Err(TryLockError::WouldBlock)));
        drop(write);
        assert_eq!(
            format!("{lock:?}"),
            "RwLock { data: 1, poisoned: false, .. }"
        );
        assert_eq!(lock.into_inner().unwrap(), 1);
    });
}

#[test]
fn cancelled_waiters_leave_the_queue_and_unblock_readers_behind_them() {
    watchdog("rwlock_cancelled_waiters", WATCHDOG, || {
        let rt = runtime(1, "rwlock-cancel");
        rt.block_on(|| {
            let lock = Arc::new(RwLock::new(0));
            let read = lock.read().unwrap();
            // A writer queues behind our read lock, a reader behind the writer.
            let writer = {
                let lock = Arc::clone(&lock);
                fibra::spawn(move || *lock.write().unwrap() += 1)
            };
            fibra::yield_now();
            let reader = {
                let lock = Arc::clone(&lock);
                fibra::spawn(move || *lock.read().unwrap())
            };
            fibra::yield_now();
            assert!(!reader.is_finished(), "the reader waits behind the writer");
            // With the writer gone, the reader may share our read lock.
            writer.cancel();
            assert!(writer.join().is_err());
            assert_eq!(reader.join().unwrap(), 0);
            drop(read);
            assert_eq!(*lock.write().unwrap(), 0);
            assert!(!lock.is_poisoned());
        });
    });
}

//! `fibra::sync::Mutex`: exact counts under contention (coroutines on one
//! and two workers, OS threads mixed in), a guard held across a park
//! blocking only the lock's waiters, `try_lock`, poisoning as std,
//! cancellation of waiters and holders, and no starvation under a stream of
//! new lockers.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{WATCHDOG, assert_cancelled, runtime, watchdog};
use fibra::sync::{Arc, Mutex, TryLockError};

/// Increments under the lock, checking that nobody else is inside; yields
/// inside the critical section every `park_every` rounds, so that other
/// coroutines of the worker find the lock held and queue.
fn hammer(lock: &Mutex<u64>, inside: &AtomicUsize, rounds: usize, park_every: usize) {
    for i in 0..rounds {
        let mut guard = lock.lock().unwrap();
        assert_eq!(
            inside.fetch_add(1, Ordering::SeqCst),
            0,
            "two holders at once"
        );
        *guard += 1;
        if i % park_every == 0 {
            fibra::yield_now();
        }
        inside.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        if i % 7 == 0 {
            fibra::yield_now();
        }
    }
}

#[test]
fn counts_are_exact_under_contention_on_one_and_two_workers() {
    watchdog("counts_are_exact_under_contention", WATCHDOG, || {
        for workers in [1, 2] {
            let rt = runtime(workers, "mutex-count");
            let lock = Arc::new(Mutex::new(0u64));
            let inside = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..200)
                .map(|_| {
                    let (lock, inside) = (Arc::clone(&lock), Arc::clone(&inside));
                    rt.spawn(move || hammer(&lock, &inside, 500, 3))
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
            assert_eq!(*lock.lock().unwrap(), 100_000, "{workers} workers");
        }
    });
}

#[test]
fn threads_and_coroutines_share_one_mutex() {
    watchdog("threads_and_coroutines_share_one_mutex", WATCHDOG, || {
        let rt = runtime(2, "mutex-mixed");
        let lock = Arc::new(Mutex::new(0u64));
        let inside = Arc::new(AtomicUsize::new(0));
        let coroutines: Vec<_> = (0..50)
            .map(|_| {
                let (lock, inside) = (Arc::clone(&lock), Arc::clone(&inside));
                rt.spawn(move || hammer(&lock, &inside, 1000, 5))
            })
            .collect();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (lock, inside) = (Arc::clone(&lock), Arc::clone(&inside));
                std::thread::spawn(move || hammer(&lock, &inside, 5000, 11))
            })
            .collect();
        for handle in coroutines {
            handle.join().unwrap();
        }
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(*lock.lock().unwrap(), 50 * 1000 + 4 * 5000);
    });
}

#[test]
fn a_guard_held_across_a_park_blocks_only_the_lock_waiters() {
    watchdog("a_guard_held_across_a_park", WATCHDOG, || {
        let rt = runtime(1, "mutex-park");
        rt.block_on(|| {
            let lock = Arc::new(Mutex::new(Vec::new()));
            let released = Arc::new(AtomicBool::new(false));
            let holder = {
                let (lock, released) = (Arc::clone(&lock), Arc::clone(&released));
                fibra::spawn(move || {
                    let mut guard = lock.lock().unwrap();
                    guard.push("holder");
                    fibra::sleep(Duration::from_millis(100));
                    released.store(true, Ordering::SeqCst);
                })
            };
            fibra::yield_now(); // the holder takes the lock
            let waiter = {
                let lock = Arc::clone(&lock);
                fibra::spawn(move || lock.lock().unwrap().push("waiter"))
            };
            // The only worker keeps running other coroutines meanwhile.
            let bystander = fibra::spawn(|| {
                let mut sum = 0u64;
                for i in 0..1000 {
                    fibra::yield_now();
                    sum += i;
                }
                sum
            });
            assert_eq!(bystander.join().unwrap(), 499_500);
            assert!(
                !released.load(Ordering::SeqCst),
                "the bystander finished only after the holder released the lock"
            );
            holder.join().unwrap();
            waiter.join().unwrap();
            assert_eq!(*lock.lock().unwrap(), ["holder", "waiter"]);
        });
    });
}

#[test]
fn try_lock_would_block_while_held() {
    watchdog("try_lock_would_block_while_held", WATCHDOG, || {
        let lock = Mutex::new(5);
        let guard = lock.lock().unwrap();
        assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
        drop(guard);
        *lock.try_lock().unwrap() += 1;
        assert_eq!(lock.into_inner().unwrap(), 6);
        let mut lock = Mutex::new(String::from("a"));
        lock.get_mut().unwrap().push('b');
        assert_eq!(
            format!("{lock:?}"),
            r#"Mutex { data: "ab", poisoned: false, .. }"#
        );
    });
}

#[test]
fn a_panicking_holder_poisons_as_std() {
    watchdog("a_panicking_holder_poisons_as_std", WATCHDOG, || {
        let rt = runtime(2, "mutex-poison");
        let lock = Arc::new(Mutex::new(1));
        let panicker = {
            let lock = Arc::clone(&lock);
            rt.spawn(move || {
                let _guard = lock.lock().unwrap();
                panic!("holder panics");
            })
        };
        assert!(panicker.join().is_err());
        assert!(lock.is_poisoned());
        let err = lock.lock().unwrap_err();
        assert_eq!(
            **err.get_ref(),
            1,
            "the poisoned guard still gives the data"
        );
        drop(err);
        assert!(matches!(lock.try_lock(), Err(TryLockError::Poisoned(_))));
        // A panic elsewhere, not holding the lock, poisons nothing new.
        lock.clear_poison();
        let bystander = {
            let lock = Arc::clone(&lock);
            rt.spawn(move || {
                drop(lock.lock().unwrap());
                panic!("not holding");
            })
        };
        assert!(bystander.join().is_err());
        assert!(!lock.is_poisoned());
        assert_eq!(*lock.lock().unwrap(), 1);
        // into_inner and get_mut report poison too.
        let poisoned = Mutex::new(7);
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _guard = poisoned.lock().unwrap();
            panic!("plain thread");
        }));
        assert_eq!(**poisoned.lock().unwrap_err().get_ref(), 7);
        let mut poisoned = poisoned;
        assert!(poisoned.get_mut().is_err());
        assert_eq!(poisoned.into_inner().unwrap_err().into_inner(), 7);
    });
}

#[test]
fn a_cancelled_waiter_leaves_and_the_lock_passes_on() {
    watchdog("a_cancelled_waiter_leaves", WATCHDOG, || {
        let rt = runtime(2, "mutex-cancel");
        let lock = Arc::new(Mutex::new(Vec::new()));
        let guard_taken = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let holder = {
            let (lock, taken, release) = (
                Arc::clone(&lock),
                Arc::clone(&guard_taken),
                Arc::clone(&release),
            );
            rt.spawn(move || {
                let mut guard = lock.lock().unwrap();
                taken.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    fibra::sleep(Duration::from_millis(1));
                }
                guard.push(0);
            })
        };
        while !guard_taken.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let waiters: Vec<_> = (1..=6)
            .map(|i| {
                let lock = Arc::clone(&lock);
                rt.spawn(move || lock.lock().unwrap().push(i))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50)); // let them queue
        for (i, waiter) in waiters.iter().enumerate() {
            if i % 2 == 0 {
                waiter.cancel();
            }
        }
        release.store(true, Ordering::SeqCst);
        holder.join().unwrap();
        let mut served = Vec::new();
        for (i, waiter) in waiters.into_iter().enumerate() {
            if i % 2 == 0 {
                // Either it was cancelled in the queue, or it had been handed
                // the lock and pushed before the cancellation landed.
                if waiter.join().is_ok() {
                    served.push(i + 1);
                }
            } else {
                waiter.join().unwrap();
                served.push(i + 1);
            }
        }
        let pushed = lock.lock().unwrap().clone();
        assert_eq!(pushed[0], 0);
        let mut rest = pushed[1..].to_vec();
        rest.sort();
        assert_eq!(
            rest, served,
            "exactly the coroutines that were not cancelled pushed"
        );
        assert!(!lock.is_poisoned(), "cancelled waiters never held the lock");
    });
}

#[test]
fn cancelling_many_waiters_never_strands_the_lock() {
    watchdog("cancelling_many_waiters", WATCHDOG, || {
        let rt = runtime(2, "mutex-cancel-stress");
        let lock = Arc::new(Mutex::new(0u64));
        let done = Arc::new(AtomicUsize::new(0));
        for round in 0..20 {
            let handles: Vec<_> = (0..40)
                .map(|_| {
                    let (lock, done) = (Arc::clone(&lock), Arc::clone(&done));
                    rt.spawn(move || {
                        for _ in 0..50 {
                            let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                            *guard += 1;
                            fibra::yield_now();
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_micros(200 * (round % 5)));
            for handle in handles.iter().step_by(3) {
                handle.cancel();
            }
            for handle in handles {
                let _ = handle.join();
            }
            lock.clear_poison(); // a holder cancelled mid-yield poisons
        }
        // The lock is free and consistent: every finished coroutine added 50.
        let total = *lock.try_lock().expect("nobody holds it");
        assert!(total >= done.load(Ordering::SeqCst) as u64 * 50);
    });
}

#[test]
fn a_coroutine_cancelled_while_holding_poisons_the_lock() {
    watchdog("cancelled_while_holding", WATCHDOG, || {
        let rt = runtime(1, "mutex-cancel-holder");
        let lock = Arc::new(Mutex::new(0));
        let taken = Arc::new(AtomicBool::new(false));
        let holder = {
            let (lock, taken) = (Arc::clone(&lock), Arc::clone(&taken));
            rt.spawn(move || {
                let _guard = lock.lock().unwrap();
                taken.store(true, Ordering::SeqCst);
                loop {
                    fibra::park();
                }
            })
        };
        while !taken.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        holder.cancel();
        assert_cancelled("holder", holder);
        assert!(
            lock.is_poisoned(),
            "the guard was dropped by an unwinding coroutine"
        );
        assert!(
            lock.try_lock()
                .is_err_and(|e| matches!(e, TryLockError::Poisoned(_)))
        );
    });
}

#[test]
fn a_waiter_is_served_under_a_stream_of_new_lockers() {
    // Two coroutines on the only worker keep re-taking the lock, each
    // holding it across a yield: a woken waiter finds the lock re-taken by
    // a running coroutine every time. Only the starvation handoff serves it.
    watchdog("a_waiter_is_served_under_a_stream", WATCHDOG, || {
        let rt = runtime(1, "mutex-starve");
        let lock = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let bargers: Vec<_> = (0..2)
            .map(|_| {
                let (lock, stop) = (Arc::clone(&lock), Arc::clone(&stop));
                rt.spawn(move || {
                    let started = Instant::now();
                    while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(5)
                    {
                        let mut guard = lock.lock().unwrap();
                        *guard += 1;
                        fibra::yield_now();
                    }
                })
            })
            .collect();
        let victim = {
            let (lock, stop) = (Arc::clone(&lock), Arc::clone(&stop));
            rt.spawn(move || {
                fibra::sleep(Duration::from_millis(20)); // the stream is running
                let asked = Instant::now();
                let guard = lock.lock().unwrap();
                let waited = asked.elapsed();
                let bargers_stopped = stop.swap(true, Ordering::SeqCst);
                drop(guard);
                (waited, bargers_stopped)
            })
        };
        let (waited, bargers_stopped) = victim.join().unwrap();
        stop.store(true, Ordering::SeqCst);
        for barger in bargers {
            barger.join().unwrap();
        }
        assert!(!bargers_stopped);
        assert!(
            waited < Duration::from_secs(2),
            "the waiter got the lock only after {waited:?}"
        );
    });
}

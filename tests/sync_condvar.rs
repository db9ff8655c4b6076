//! `fibra::sync::Condvar`: no lost notification under stress (every wait
//! has a timeout, which a lost notification would hit; each wait is checked
//! by itself, as a `*_while` wait that runs out its time may still find its
//! condition met and report no timeout), `notify_all` wakes
//! every waiter (coroutines and threads), timeouts (lower bound exact,
//! median honest), `wait_timeout_while`, a timed-out waiter skipped by
//! `notify_one`, and a cancelled waiter re-taking the mutex.

mod common;
mod sync_common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{WATCHDOG, assert_cancelled, runtime, watchdog};
use fibra::sync::{Arc, Condvar, Mutex};
use sync_common::check_timeout_lateness;

/// A turn-taking ping-pong: `players` take turns by number, each waiting on
/// the condvar for its turn with a timeout a lost notification would hit.
fn take_turns(turn: &(Mutex<usize>, Condvar), me: usize, players: usize, rounds: usize) -> usize {
    let (lock, cvar) = turn;
    let mut timeouts = 0;
    for round in 0..rounds {
        let mine = round * players + me;
        let mut now = lock.lock().unwrap();
        while *now != mine {
            let (guard, result) = cvar.wait_timeout(now, Duration::from_secs(5)).unwrap();
            now = guard;
            if result.timed_out() {
                timeouts += 1;
            }
        }
        *now += 1;
        drop(now);
        cvar.notify_all();
    }
    timeouts
}

#[test]
fn no_notification_is_lost_between_coroutines_and_threads() {
    watchdog("no_notification_is_lost", WATCHDOG, || {
        for workers in [1, 2] {
            let rt = runtime(workers, "condvar-turns");
            let turn = Arc::new((Mutex::new(0usize), Condvar::new()));
            let (players, rounds) = (4, 2000);
            let mut coroutines = Vec::new();
            for me in 0..3 {
                let turn = Arc::clone(&turn);
                coroutines.push(rt.spawn(move || take_turns(&turn, me, players, rounds)));
            }
            let thread = {
                let turn = Arc::clone(&turn);
                std::thread::spawn(move || take_turns(&turn, 3, players, rounds))
            };
            let mut timeouts = thread.join().unwrap();
            for handle in coroutines {
                timeouts += handle.join().unwrap();
            }
            assert_eq!(*turn.0.lock().unwrap(), players * rounds);
            assert_eq!(
                timeouts, 0,
                "{workers} workers: a wait timed out (lost notification)"
            );
        }
    });
}

#[test]
fn notify_one_wakes_one_waiter_per_item() {
    // A counting semaphore built on a condvar: every item posted wakes
    // exactly one consumer, none is lost, and consumers that time out would
    // show a lost wakeup.
    watchdog("notify_one_wakes_one_waiter_per_item", WATCHDOG, || {
        let rt = runtime(2, "condvar-one");
        let state = Arc::new((Mutex::new(0usize), Condvar::new()));
        let consumed = Arc::new(AtomicUsize::new(0));
        let consumers: Vec<_> = (0..20)
            .map(|_| {
                let (state, consumed) = (Arc::clone(&state), Arc::clone(&consumed));
                rt.spawn(move || {
                    let (lock, cvar) = &*state;
                    for _ in 0..500 {
                        let mut items = lock.lock().unwrap();
                        // Each wait by itself: `wait_timeout_while` would
                        // hide a wait that ran out its time and then found
                        // an item posted meanwhile.
                        while *items == 0 {
                            let (again, result) =
                                cvar.wait_timeout(items, Duration::from_secs(5)).unwrap();
                            assert!(!result.timed_out(), "a posted item woke nobody");
                            items = again;
                        }
                        *items -= 1;
                        consumed.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let producer = {
            let state = Arc::clone(&state);
            rt.spawn(move || {
                let (lock, cvar) = &*state;
                for i in 0..10_000 {
                    *lock.lock().unwrap() += 1;
                    cvar.notify_one();
                    if i % 16 == 0 {
                        fibra::yield_now();
                    }
                }
            })
        };
        producer.join().unwrap();
        for consumer in consumers {
            consumer.join().unwrap();
        }
        assert_eq!(consumed.load(Ordering::SeqCst), 10_000);
        assert_eq!(*state.0.lock().unwrap(), 0);
    });
}

#[test]
fn notify_all_wakes_every_coroutine_and_thread() {
    watchdog("notify_all_wakes_every_waiter", WATCHDOG, || {
        let rt = runtime(2, "condvar-all");
        let state = Arc::new((Mutex::new((false, 0usize)), Condvar::new()));
        let wait = |state: Arc<(Mutex<(bool, usize)>, Condvar)>| {
            move || {
                let (lock, cvar) = &*state;
                let mut guard = lock.lock().unwrap();
                guard.1 += 1;
                let guard = cvar.wait_while(guard, |(go, _)| !*go).unwrap();
                assert!(guard.0);
            }
        };
        let coroutines: Vec<_> = (0..100)
            .map(|_| rt.spawn(wait(Arc::clone(&state))))
            .collect();
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(wait(Arc::clone(&state))))
            .collect();
        let (lock, cvar) = &*state;
        while lock.lock().unwrap().1 < 104 {
            std::thread::sleep(Duration::from_millis(1));
        }
        lock.lock().unwrap().0 = true;
        cvar.notify_all();
        for handle in coroutines {
            handle.join().unwrap();
        }
        for thread in threads {
            thread.join().unwrap();
        }
    });
}

#[test]
fn wait_timeout_waits_at_least_the_timeout() {
    watchdog("wait_timeout_waits_at_least", WATCHDOG, || {
        let rt = runtime(1, "condvar-timeout");
        let timeout = Duration::from_millis(20);
        check_timeout_lateness(&rt, timeout, move || {
            let pair = (Mutex::new(()), Condvar::new());
            let (_guard, result) = pair
                .1
                .wait_timeout(pair.0.lock().unwrap(), timeout)
                .unwrap();
            assert!(result.timed_out());
        });
        // A condition already true returns at once, not timed out; one that
        // never becomes true times out after the whole duration.
        let pair = (Mutex::new(3), Condvar::new());
        let (guard, result) = pair
            .1
            .wait_timeout_while(pair.0.lock().unwrap(), Duration::from_secs(10), |n| *n != 3)
            .unwrap();
        assert!(!result.timed_out());
        drop(guard);
        let started = Instant::now();
        let (guard, result) = pair
            .1
            .wait_timeout_while(pair.0.lock().unwrap(), timeout, |n| *n != 4)
            .unwrap();
        assert!(result.timed_out() && started.elapsed() >= timeout);
        assert_eq!(*guard, 3);
    });
}

#[test]
fn notify_one_skips_a_waiter_that_timed_out() {
    watchdog("notify_one_skips_a_timed_out_waiter", WATCHDOG, || {
        let rt = runtime(1, "condvar-skip");
        rt.block_on(|| {
            let state = Arc::new((Mutex::new(false), Condvar::new()));
            let short = {
                let state = Arc::clone(&state);
                fibra::spawn(move || {
                    let (lock, cvar) = &*state;
                    let (_, result) = cvar
                        .wait_timeout(lock.lock().unwrap(), Duration::from_millis(10))
                        .unwrap();
                    result.timed_out()
                })
            };
            let long = {
                let state = Arc::clone(&state);
                fibra::spawn(move || {
                    let (lock, cvar) = &*state;
                    let (guard, result) = cvar
                        .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(20), |n| !*n)
                        .unwrap();
                    (*guard, result.timed_out(), Instant::now())
                })
            };
            assert!(short.join().unwrap(), "the short waiter timed out");
            let (lock, cvar) = &*state;
            *lock.lock().unwrap() = true;
            let notified = Instant::now();
            cvar.notify_one(); // must reach the long waiter, not the gone one
            let (value, timed_out, woke) = long.join().unwrap();
            assert_eq!((value, timed_out), (true, false));
            // Woken by the notification, not by its 20 s deadline (which
            // would also find the flag set and not report a timeout).
            let waited = woke.duration_since(notified);
            assert!(
                waited < Duration::from_secs(10),
                "woken {waited:?} after the notification"
            );
        });
    });
}

#[test]
fn a_waiter_cancelled_in_wait_retakes_the_mutex_before_unwinding() {
    watchdog("a_cancelled_condvar_waiter", WATCHDOG, || {
        let rt = runtime(2, "condvar-cancel");
        let state = Arc::new((Mutex::new(0), Condvar::new()));
        let waiting = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (state, waiting) = (Arc::clone(&state), Arc::clone(&waiting));
            rt.spawn(move || {
                let (lock, cvar) = &*state;
                let guard = lock.lock().unwrap();
                waiting.store(true, Ordering::SeqCst);
                let _guard = cvar.wait_while(guard, |_| true);
            })
        };
        while !waiting.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // Waiting means it released the mutex.
        let (lock, cvar) = &*state;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        waiter.cancel();
        assert_cancelled("condvar waiter", waiter);
        // Its guard was dropped while unwinding: the mutex is free again and
        // poisoned, as std poisons a lock whose holder unwinds.
        assert!(lock.is_poisoned());
        assert_eq!(*lock.try_lock().unwrap_err().into_inner_guard(), 1);
        cvar.notify_all(); // nobody left to wake: nothing happens
    });
}

/// `TryLockError::into_inner` under a name that reads well here.
trait IntoInnerGuard<G> {
    fn into_inner_guard(self) -> G;
}

impl<G> IntoInnerGuard<G> for fibra::sync::TryLockError<G> {
    fn into_inner_guard(self) -> G {
        match self {
            fibra::sync::TryLockError::Poisoned(err) => err.into_inner(),
            fibra::sync::TryLockError::WouldBlock => panic!("the mutex is still held"),
        }
    }
}

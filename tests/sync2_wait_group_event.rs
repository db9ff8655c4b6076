//! `fibra::sync::WaitGroup` and `Event`: waiters (coroutines and threads)
//! are released exactly when the count reaches zero / the flag is set, and
//! never before; tokens; Go's negative-counter panic; `clear`; timeouts
//! (lower bound exact); a stress of waits racing the release; waiters
//! cancelled by their runtime's drop leave both usable.

mod common;
mod sync_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{WATCHDOG, panic_message, runtime, watchdog};
use fibra::sync::{Arc, Event, WaitGroup};
use sync_common::check_timeout_lateness;

#[test]
fn wait_group_waiters_wake_when_every_task_is_done_and_not_before() {
    watchdog("wait_group_tasks", WATCHDOG, || {
        for workers in [1, 2] {
            let rt = runtime(workers, "wg-tasks");
            let wg = Arc::new(WaitGroup::new());
            let finished = Arc::new(AtomicUsize::new(0));
            let tasks = 60;
            wg.add(tasks as isize);
            // Waiters first: three coroutines and a thread.
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let (wg, finished) = (Arc::clone(&wg), Arc::clone(&finished));
                    rt.spawn(move || {
                        wg.wait();
                        finished.load(Ordering::SeqCst)
                    })
                })
                .collect();
            let thread_waiter = {
                let (wg, finished) = (Arc::clone(&wg), Arc::clone(&finished));
                std::thread::spawn(move || {
                    assert!(wg.wait_timeout(Duration::from_secs(60)));
                    finished.load(Ordering::SeqCst)
                })
            };
            let task = |i: usize| {
                let (wg, finished) = (Arc::clone(&wg), Arc::clone(&finished));
                move || {
                    for _ in 0..i % 5 {
                        fibra::yield_now();
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                    wg.done();
                }
            };
            let mut threads = Vec::new();
            for i in 0..tasks {
                if i % 10 == 0 {
                    threads.push(std::thread::spawn(task(i)));
                } else {
                    drop(rt.spawn(task(i)));
                }
            }
            for waiter in waiters {
                assert_eq!(waiter.join().unwrap(), tasks, "woken before the last done");
            }
            assert_eq!(thread_waiter.join().unwrap(), tasks);
            for thread in threads {
                thread.join().unwrap();
            }
            assert_eq!(wg.count(), 0);
            wg.wait(); // zero: returns at once
        }
    });
}

#[test]
fn wait_group_tokens_count_clones_until_dropped() {
    watchdog("wait_group_tokens", WATCHDOG, || {
        let rt = runtime(2, "wg-tokens");
        let wg = Arc::new(WaitGroup::new());
        let finished = Arc::new(AtomicUsize::new(0));
        let token = wg.token();
        for _ in 0..50 {
            let (token, finished) = (token.clone(), Arc::clone(&finished));
            drop(rt.spawn(move || {
                fibra::yield_now();
                finished.fetch_add(1, Ordering::SeqCst);
                drop(token);
            }));
        }
        assert!(wg.count() >= 1);
        drop(token);
        wg.wait();
        assert_eq!(finished.load(Ordering::SeqCst), 50);
        assert_eq!(wg.count(), 0);
    });
}

#[test]
fn a_negative_wait_group_counter_panics_as_go() {
    let wg = WaitGroup::new();
    wg.add(2);
    let payload = std::panic::catch_unwind(|| wg.add(-3)).unwrap_err();
    assert_eq!(
        panic_message(&*payload),
        "fibra::sync::WaitGroup: negative WaitGroup counter"
    );
    assert_eq!(wg.count(), 2, "the count is left as it was");
    wg.done();
    wg.done();
    assert!(std::panic::catch_unwind(|| wg.done()).is_err());
}

#[test]
fn event_set_wakes_every_waiter_and_clear_makes_them_wait_again() {
    watchdog("event_set_clear", WATCHDOG, || {
        for workers in [1, 2] {
            event_set_wakes_every_waiter_on(workers);
        }
    });
}

fn event_set_wakes_every_waiter_on(workers: usize) {
    let rt = runtime(workers, "event");
    let event = Arc::new(Event::new());
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let event = Arc::clone(&event);
            rt.spawn(move || event.wait())
        })
        .collect();
    let thread_waiter = {
        let event = Arc::clone(&event);
        std::thread::spawn(move || event.wait_timeout(Duration::from_secs(60)))
    };
    std::thread::sleep(Duration::from_millis(10));
    assert!(waiters.iter().all(|w| !w.is_finished()), "woken before set");
    assert!(!event.is_set());
    event.set();
    for waiter in waiters {
        assert!(waiter.join().unwrap());
    }
    assert!(thread_waiter.join().unwrap());
    assert!(event.is_set());
    assert!(event.wait_timeout(Duration::ZERO), "set: returns at once");
    event.clear();
    assert!(!event.is_set());
    let waiter = {
        let event = Arc::clone(&event);
        rt.spawn(move || event.wait())
    };
    std::thread::sleep(Duration::from_millis(10));
    assert!(!waiter.is_finished(), "cleared: it waits");
    event.set();
    assert!(waiter.join().unwrap());
}

#[test]
fn waits_racing_the_release_are_never_lost() {
    watchdog("release_races", WATCHDOG, || {
        let rt = runtime(2, "release-race");
        for round in 0..500 {
            let event = Arc::new(Event::new());
            let wg = Arc::new(WaitGroup::new());
            wg.add(1);
            let waiter = {
                let (event, wg) = (Arc::clone(&event), Arc::clone(&wg));
                rt.spawn(move || {
                    event.wait();
                    wg.wait();
                })
            };
            if round % 2 == 0 {
                event.set();
                wg.done();
            } else {
                let (event, wg) = (Arc::clone(&event), Arc::clone(&wg));
                rt.spawn(move || {
                    wg.done();
                    event.set();
                })
                .join()
                .unwrap();
            }
            waiter.join().unwrap();
        }
    });
}

/// Two plain threads released together, again and again: one waits, the
/// other sets the event (or finishes the group) at the same moment. Some
/// of the releases fall between the waiter's first look and its queueing;
/// none may be lost (the waiter would time out).
#[test]
fn a_release_at_the_moment_a_waiter_queues_is_not_lost() {
    watchdog("release_same_moment", WATCHDOG, || {
        let rounds = 20_000;
        let events: Arc<Vec<Event>> = Arc::new((0..rounds).map(|_| Event::new()).collect());
        let groups: Arc<Vec<WaitGroup>> = Arc::new(
            (0..rounds)
                .map(|_| {
                    let wg = WaitGroup::new();
                    wg.add(1);
                    wg
                })
                .collect(),
        );
        let go = Arc::new(AtomicUsize::new(0));
        let releaser = {
            let (events, groups, go) = (Arc::clone(&events), Arc::clone(&groups), Arc::clone(&go));
            std::thread::spawn(move || {
                for i in 0..rounds {
                    while go.load(Ordering::Acquire) < 2 * i + 1 {
                        std::hint::spin_loop();
                    }
                    go.fetch_add(1, Ordering::AcqRel);
                    events[i].set();
                    groups[i].done();
                }
            })
        };
        for i in 0..rounds {
            go.fetch_add(1, Ordering::AcqRel);
            while go.load(Ordering::Acquire) < 2 * i + 2 {
                std::hint::spin_loop();
            }
            assert!(
                events[i].wait_timeout(Duration::from_secs(5)),
                "round {i}: set lost"
            );
            assert!(
                groups[i].wait_timeout(Duration::from_secs(5)),
                "round {i}: done lost"
            );
        }
        releaser.join().unwrap();
    });
}

#[test]
fn timed_waits_end_no_earlier_than_their_timeout() {
    let rt = runtime(1, "wg-event-timeout");
    let event = Arc::new(Event::new());
    check_timeout_lateness(&rt, Duration::from_millis(20), move || {
        assert!(!event.wait_timeout(Duration::from_millis(20)));
    });
    let wg = Arc::new(WaitGroup::new());
    wg.add(1);
    check_timeout_lateness(&rt, Duration::from_millis(20), move || {
        assert!(!wg.wait_timeout(Duration::from_millis(20)));
    });
}

#[test]
fn a_runtime_dropped_with_parked_waiters_leaves_both_usable() {
    watchdog("release_runtime_drop", WATCHDOG, || {
        let event = Arc::new(Event::new());
        let wg = Arc::new(WaitGroup::new());
        wg.add(1);
        let rt = runtime(2, "release-rtdrop");
        let started = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(AtomicUsize::new(0));
        for i in 0..6 {
            let (event, wg, started, released) = (
                Arc::clone(&event),
                Arc::clone(&wg),
                Arc::clone(&started),
                Arc::clone(&released),
            );
            drop(rt.spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                if i % 2 == 0 {
                    event.wait();
                } else {
                    wg.wait();
                }
                released.fetch_add(1, Ordering::SeqCst);
            }));
        }
        while started.load(Ordering::SeqCst) < 6 {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(10)); // they park
        drop(rt); // cancels them in `wait`: their records leave the lists
        assert_eq!(released.load(Ordering::SeqCst), 0);
        // A release now must not reach the cancelled waiters' records
        // (they are gone with their stacks), and new waiters work.
        let thread_waiter = {
            let (event, wg) = (Arc::clone(&event), Arc::clone(&wg));
            std::thread::spawn(move || {
                event.wait_timeout(Duration::from_secs(20))
                    && wg.wait_timeout(Duration::from_secs(20))
            })
        };
        std::thread::sleep(Duration::from_millis(5));
        event.set();
        wg.done();
        assert!(thread_waiter.join().unwrap());
        assert_eq!(wg.count(), 0);
        assert!(event.is_set());
    });
}

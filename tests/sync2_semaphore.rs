//! `fibra::sync::Semaphore`: the permits in use never exceed the count
//! under contention (coroutines on two workers and threads, single and
//! multi-permit, try and timed acquires); strict FIFO, so a large request
//! is served before the small ones behind it; a large request that gives
//! up lets the ones behind it through; a cancelled acquirer gives its
//! permits back, and so do coroutines parked in `acquire` when their
//! runtime is dropped; timeouts end no earlier than asked. Owned permits
//! (`*_owned`, holding the semaphore's `Arc`) move into spawned coroutines
//! and cap them the same way; a failed, forgotten or cancelled owned
//! acquire leaves no `Arc` behind. A count past `Semaphore::MAX_PERMITS`
//! is refused with a panic and leaves the count as it was.

mod common;
mod sync_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{WATCHDOG, runtime, watchdog};
use fibra::sync::{Arc, Semaphore};
use sync_common::check_timeout_lateness;

/// Permits in use now and the most ever in use at once.
#[derive(Default)]
struct InUse {
    now: AtomicUsize,
    max: AtomicUsize,
    entries: AtomicUsize,
}

impl InUse {
    fn enter(&self, n: usize) {
        let now = self.now.fetch_add(n, Ordering::SeqCst) + n;
        self.max.fetch_max(now, Ordering::SeqCst);
        self.entries.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self, n: usize) {
        self.now.fetch_sub(n, Ordering::SeqCst);
    }
}

#[test]
fn permits_in_use_never_exceed_the_count_under_contention() {
    watchdog("semaphore_bound", WATCHDOG, || {
        for workers in [1, 2] {
            permits_in_use_never_exceed_the_count_on(workers);
        }
    });
}

fn permits_in_use_never_exceed_the_count_on(workers: usize) {
    let rt = runtime(workers, "sem-bound");
    let permits = 5;
    let semaphore = Arc::new(Semaphore::new(permits));
    let in_use = Arc::new(InUse::default());
    let rounds = 200;
    let work = |kind: usize| {
        let (semaphore, in_use) = (Arc::clone(&semaphore), Arc::clone(&in_use));
        move || {
            for round in 0..rounds {
                let n = 1 + (kind + round) % 3;
                let permit = match kind % 4 {
                    0 => semaphore.acquire_many(n),
                    1 => loop {
                        if let Some(permit) = semaphore.try_acquire_many(n) {
                            break permit;
                        }
                        fibra::yield_now();
                    },
                    2 => loop {
                        let timeout = Duration::from_micros(200);
                        if let Some(permit) = semaphore.acquire_many_timeout(n, timeout) {
                            break permit;
                        }
                    },
                    _ => semaphore.acquire_many(n),
                };
                assert_eq!(permit.num_permits(), n);
                in_use.enter(n);
                fibra::yield_now();
                in_use.leave(n);
                drop(permit);
            }
        }
    };
    let coroutines: Vec<_> = (0..40).map(|k| rt.spawn(work(k))).collect();
    let threads: Vec<_> = (0..2).map(|k| std::thread::spawn(work(k))).collect();
    for coroutine in coroutines {
        coroutine.join().unwrap();
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let max = in_use.max.load(Ordering::SeqCst);
    assert!(max <= permits, "{max} permits in use at once, of {permits}");
    assert_eq!(in_use.entries.load(Ordering::SeqCst), 42 * rounds);
    assert_eq!(semaphore.available_permits(), permits, "{workers} workers");
}

#[test]
fn a_large_request_is_served_before_the_small_ones_queued_behind_it() {
    watchdog("semaphore_fifo", WATCHDOG, || {
        let rt = runtime(1, "sem-fifo");
        let order = rt.block_on(|| {
            let semaphore = Arc::new(Semaphore::new(4));
            let order = Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut held: Vec<_> = (0..4).map(|_| semaphore.acquire()).collect();
            let big = {
                let (semaphore, order) = (Arc::clone(&semaphore), Arc::clone(&order));
                fibra::spawn(move || {
                    let _all = semaphore.acquire_many(4);
                    order.lock().unwrap().push("big");
                })
            };
            fibra::yield_now(); // `big` queues first
            // One permit comes back: not enough for `big`, enough for each
            // small request that arrives now — which must queue behind it.
            drop(held.pop());
            assert!(
                semaphore.try_acquire().is_none(),
                "the queue is served first"
            );
            let small: Vec<_> = (0..6)
                .map(|_| {
                    let (semaphore, order) = (Arc::clone(&semaphore), Arc::clone(&order));
                    fibra::spawn(move || {
                        let _one = semaphore.acquire();
                        order.lock().unwrap().push("small");
                        fibra::yield_now();
                    })
                })
                .collect();
            fibra::yield_now(); // they arrive
            assert_eq!(semaphore.available_permits(), 1, "nobody barged");
            drop(held);
            big.join().unwrap();
            for handle in small {
                handle.join().unwrap();
            }
            assert_eq!(semaphore.available_permits(), 4);
            order.lock().unwrap().clone()
        });
        assert_eq!(order[0], "big");
        assert_eq!(order.len(), 7);
    });
}

#[test]
fn a_large_request_that_gives_up_lets_the_ones_behind_it_through() {
    watchdog("semaphore_head_leaves", WATCHDOG, || {
        let rt = runtime(1, "sem-head-leaves");
        rt.block_on(|| {
            let semaphore = Arc::new(Semaphore::new(1));
            let big = {
                let semaphore = Arc::clone(&semaphore);
                fibra::spawn(move || {
                    semaphore
                        .acquire_many_timeout(3, Duration::from_millis(20))
                        .is_none()
                })
            };
            fibra::yield_now(); // `big` queues; one permit is free
            let small = {
                let semaphore = Arc::clone(&semaphore);
                fibra::spawn(move || semaphore.acquire().num_permits())
            };
            fibra::yield_now();
            assert!(!small.is_finished(), "FIFO: it waits behind `big`");
            assert!(big.join().unwrap(), "`big` timed out");
            assert_eq!(small.join().unwrap(), 1);
        });
    });
}

#[test]
fn a_cancelled_acquirer_gives_granted_permits_back() {
    watchdog("semaphore_cancel", WATCHDOG, || {
        let rt = runtime(1, "sem-cancel");
        rt.block_on(|| {
            let semaphore = Arc::new(Semaphore::new(2));
            let held = semaphore.acquire_many(2);
            let waiter = {
                let semaphore = Arc::clone(&semaphore);
                fibra::spawn(move || semaphore.acquire_many(2).num_permits())
            };
            fibra::yield_now(); // it queues
            // One worker: the waiter cannot run between these lines, so the
            // permits are granted to it when the cancellation reaches it.
            drop(held);
            assert_eq!(semaphore.available_permits(), 0, "granted to the waiter");
            waiter.cancel();
            assert!(waiter.join().is_err());
            assert_eq!(semaphore.available_permits(), 2);
            // Cancelled while still queued: nothing to give back.
            let held = semaphore.acquire_many(2);
            let waiter = {
                let semaphore = Arc::clone(&semaphore);
                fibra::spawn(move || semaphore.acquire().num_permits())
            };
            fibra::yield_now();
            waiter.cancel();
            assert!(waiter.join().is_err());
            drop(held);
            assert_eq!(semaphore.available_permits(), 2);
        });
    });
}

#[test]
fn add_permits_wakes_waiters_and_forget_keeps_permits_out() {
    watchdog("semaphore_add_forget", WATCHDOG, || {
        let rt = runtime(2, "sem-add");
        let semaphore = Arc::new(Semaphore::new(0));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let semaphore = Arc::clone(&semaphore);
                rt.spawn(move || semaphore.acquire().forget())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(10));
        assert!(waiters.iter().all(|w| !w.is_finished()));
        semaphore.add_permits(3);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(
            semaphore.available_permits(),
            0,
            "forgotten permits stay out"
        );
        assert!(
            semaphore.try_acquire_many(0).is_some(),
            "zero permits are always free"
        );
    });
}

#[test]
fn timed_acquires_end_no_earlier_than_their_timeout() {
    let rt = runtime(1, "sem-timeout");
    let semaphore = Arc::new(Semaphore::new(0));
    check_timeout_lateness(&rt, Duration::from_millis(20), move || {
        assert!(
            semaphore
                .acquire_timeout(Duration::from_millis(20))
                .is_none()
        );
    });
}

#[test]
fn a_runtime_dropped_with_parked_acquirers_leaves_it_consistent() {
    watchdog("semaphore_runtime_drop", WATCHDOG, || {
        let semaphore = Arc::new(Semaphore::new(3));
        let held = semaphore.acquire_many(3);
        let rt = runtime(2, "sem-rtdrop");
        let got_through = Arc::new(AtomicUsize::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        for i in 0..6 {
            let (semaphore, got_through, queued) = (
                Arc::clone(&semaphore),
                Arc::clone(&got_through),
                Arc::clone(&queued),
            );
            drop(rt.spawn(move || {
                queued.fetch_add(1, Ordering::SeqCst);
                let _permits = semaphore.acquire_many(1 + i % 3);
                got_through.fetch_add(1, Ordering::SeqCst);
            }));
        }
        while queued.load(Ordering::SeqCst) < 6 {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(10)); // they park
        drop(rt); // cancels them in `acquire_many`
        assert_eq!(got_through.load(Ordering::SeqCst), 0);
        assert_eq!(semaphore.available_permits(), 0);
        drop(held);
        assert_eq!(
            semaphore.available_permits(),
            3,
            "no stale request took any"
        );
        // Nobody is queued: a request is served at once, and a new
        // runtime's coroutines contend as before.
        drop(semaphore.try_acquire_many(3).expect("nobody queued"));
        let rt = runtime(1, "sem-rtdrop2");
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let semaphore = Arc::clone(&semaphore);
                rt.spawn(move || {
                    let permits = semaphore.acquire_many(2);
                    fibra::yield_now();
                    permits.num_permits()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 20);
        assert_eq!(semaphore.available_permits(), 3);
    });
}

#[test]
fn owned_permits_move_into_coroutines_and_cap_them() {
    watchdog("semaphore_owned", WATCHDOG, || {
        let rt = runtime(2, "sem-owned");
        let permits = 3;
        let semaphore = Arc::new(Semaphore::new(permits));
        let in_use = Arc::new(InUse::default());
        let tasks = 60;
        // The spawner takes the permits; each coroutine it spawns holds its
        // permit for a millisecond and gives it back when it ends.
        let spawner = {
            let (semaphore, in_use) = (Arc::clone(&semaphore), Arc::clone(&in_use));
            rt.spawn(move || {
                (0..tasks)
                    .map(|i| {
                        let n = 1 + i % 2;
                        let take = || Arc::clone(&semaphore);
                        let permit = match i % 3 {
                            0 => take().acquire_many_owned(n),
                            1 => loop {
                                if let Some(permit) = take().try_acquire_many_owned(n) {
                                    break permit;
                                }
                                fibra::yield_now();
                            },
                            _ => loop {
                                let timeout = Duration::from_micros(200);
                                if let Some(permit) = take().acquire_many_owned_timeout(n, timeout)
                                {
                                    break permit;
                                }
                            },
                        };
                        assert_eq!(permit.num_permits(), n);
                        assert!(Arc::ptr_eq(permit.semaphore(), &semaphore));
                        let in_use = Arc::clone(&in_use);
                        fibra::spawn(move || {
                            in_use.enter(n);
                            fibra::sleep(Duration::from_millis(1));
                            in_use.leave(n);
                            drop(permit);
                        })
                    })
                    .collect::<Vec<_>>()
            })
        };
        for handle in spawner.join().unwrap() {
            handle.join().unwrap();
        }
        let max = in_use.max.load(Ordering::SeqCst);
        assert!(max <= permits, "{max} permits in use at once, of {permits}");
        assert!(max >= 2, "the coroutines overlapped: {max} at most at once");
        assert_eq!(in_use.entries.load(Ordering::SeqCst), tasks);
        assert_eq!(semaphore.available_permits(), permits);
        assert_eq!(Arc::strong_count(&semaphore), 1, "every permit let go");
    });
}

#[test]
fn owned_permits_that_fail_or_are_forgotten_leave_no_arc_behind() {
    let semaphore = Arc::new(Semaphore::new(2));
    let one = Arc::clone(&semaphore).acquire_owned();
    let two = Arc::clone(&semaphore)
        .try_acquire_owned()
        .expect("one is free");
    assert_eq!((one.num_permits(), two.num_permits()), (1, 1));
    assert_eq!(Arc::strong_count(&semaphore), 3);
    assert!(Arc::clone(&semaphore).try_acquire_owned().is_none());
    let timeout = Duration::from_millis(1);
    assert!(
        Arc::clone(&semaphore)
            .acquire_owned_timeout(timeout)
            .is_none()
    );
    assert_eq!(
        Arc::strong_count(&semaphore),
        3,
        "a failed acquire drops its Arc"
    );
    assert_eq!(format!("{two:?}"), "OwnedSemaphorePermit { permits: 1 }");
    drop(one);
    assert_eq!(semaphore.available_permits(), 1);
    two.forget();
    assert_eq!(Arc::strong_count(&semaphore), 1, "forget drops the Arc");
    assert_eq!(
        semaphore.available_permits(),
        1,
        "the forgotten permit stays out"
    );
    let zero = Arc::clone(&semaphore).acquire_many_owned(0);
    assert_eq!(zero.num_permits(), 0);
    drop(zero);
    assert_eq!(semaphore.available_permits(), 1);
}

#[test]
fn a_cancelled_owned_acquirer_gives_back_its_permits_and_its_arc() {
    watchdog("semaphore_owned_cancel", WATCHDOG, || {
        let rt = runtime(1, "sem-owned-cancel");
        rt.block_on(|| {
            let semaphore = Arc::new(Semaphore::new(2));
            let held = Arc::clone(&semaphore).acquire_many_owned(2);
            let waiter = {
                let semaphore = Arc::clone(&semaphore);
                fibra::spawn(move || semaphore.acquire_many_owned(2).num_permits())
            };
            fibra::yield_now(); // it queues
            drop(held); // granted to the waiter, which has not run yet
            assert_eq!(semaphore.available_permits(), 0, "granted to the waiter");
            waiter.cancel();
            assert!(waiter.join().is_err());
            assert_eq!(semaphore.available_permits(), 2);
            assert_eq!(Arc::strong_count(&semaphore), 1);
        });
    });
}

#[test]
fn timed_owned_acquires_end_no_earlier_than_their_timeout() {
    let rt = runtime(1, "sem-owned-timeout");
    let semaphore = Arc::new(Semaphore::new(0));
    check_timeout_lateness(&rt, Duration::from_millis(20), move || {
        let timeout = Duration::from_millis(20);
        assert!(
            Arc::clone(&semaphore)
                .acquire_owned_timeout(timeout)
                .is_none()
        );
    });
}

#[test]
fn a_count_past_the_maximum_is_refused_and_left_unchanged() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let max = Semaphore::MAX_PERMITS;
    let semaphore = Semaphore::new(max);
    assert_eq!(semaphore.available_permits(), max);
    let overflow = catch_unwind(AssertUnwindSafe(|| semaphore.add_permits(1)));
    let payload = overflow.expect_err("one more than the maximum");
    let message = common::panic_text(&*payload).unwrap_or_default();
    assert!(message.contains("overflows"), "{message}");
    assert_eq!(semaphore.available_permits(), max, "unchanged");
    let all = semaphore.acquire_many(max);
    assert_eq!(semaphore.available_permits(), 0);
    drop(all);
    assert_eq!(semaphore.available_permits(), max);
    assert!(catch_unwind(|| Semaphore::new(max + 1)).is_err());
}

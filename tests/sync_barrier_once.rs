//! `Barrier`, `Once`, `OnceLock` and `LazyLock` from `fibra::sync`: one
//! leader per round and no round released early (coroutines and threads,
//! many rounds), a cancelled barrier waiter taking back its arrival, an
//! initialiser that runs exactly once while the others park, poisoning and
//! `call_once_force`, recursion reported instead of hanging, and the cells'
//! std behaviour.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{WATCHDOG, panic_message, runtime, watchdog};
use fibra::sync::{Arc, Barrier, LazyLock, Once, OnceLock};

#[test]
fn a_barrier_releases_each_round_together_with_one_leader() {
    watchdog("barrier_rounds", WATCHDOG, || {
        for workers in [1, 2] {
            let rt = runtime(workers, "barrier-rounds");
            let (coroutines, threads, rounds) = (30, 2, 100);
            let barrier = Arc::new(Barrier::new(coroutines + threads));
            let arrived = Arc::new(AtomicUsize::new(0));
            let leaders = Arc::new(AtomicUsize::new(0));
            let party =
                |barrier: Arc<Barrier>, arrived: Arc<AtomicUsize>, leaders: Arc<AtomicUsize>| {
                    move || {
                        for round in 1..=rounds {
                            arrived.fetch_add(1, Ordering::SeqCst);
                            if barrier.wait().is_leader() {
                                leaders.fetch_add(1, Ordering::SeqCst);
                            }
                            // Nobody leaves round k before all of round k arrived.
                            let seen = arrived.load(Ordering::SeqCst);
                            assert!(
                                seen >= round * (coroutines + threads),
                                "released after {seen} arrivals in round {round}"
                            );
                        }
                    }
                };
            let spawned: Vec<_> = (0..coroutines)
                .map(|_| {
                    rt.spawn(party(
                        Arc::clone(&barrier),
                        Arc::clone(&arrived),
                        Arc::clone(&leaders),
                    ))
                })
                .collect();
            let started: Vec<_> = (0..threads)
                .map(|_| {
                    std::thread::spawn(party(
                        Arc::clone(&barrier),
                        Arc::clone(&arrived),
                        Arc::clone(&leaders),
                    ))
                })
                .collect();
            for handle in spawned {
                handle.join().unwrap();
            }
            for thread in started {
                thread.join().unwrap();
            }
            assert_eq!(leaders.load(Ordering::SeqCst), rounds, "{workers} workers");
        }
        // 0 behaves as 1: every wait leads.
        assert!(Barrier::new(0).wait().is_leader());
        let one = Barrier::new(1);
        assert!(one.wait().is_leader() && one.wait().is_leader());
    });
}

#[test]
fn a_cancelled_barrier_waiter_takes_back_its_arrival() {
    watchdog("barrier_cancel", WATCHDOG, || {
        let rt = runtime(1, "barrier-cancel");
        rt.block_on(|| {
            let barrier = Arc::new(Barrier::new(2));
            let quitter = {
                let barrier = Arc::clone(&barrier);
                fibra::spawn(move || barrier.wait().is_leader())
            };
            fibra::yield_now(); // it arrives and parks
            quitter.cancel();
            assert!(quitter.join().is_err());
            // Its arrival is gone: this round still needs two live callers.
            let late = {
                let barrier = Arc::clone(&barrier);
                fibra::spawn(move || barrier.wait().is_leader())
            };
            fibra::yield_now();
            assert!(
                !late.is_finished(),
                "one caller alone passed a barrier of two"
            );
            let me = barrier.wait().is_leader();
            assert!(me ^ late.join().unwrap(), "exactly one leader");
        });
    });
}

#[test]
fn once_runs_its_initialiser_once_while_the_others_park() {
    watchdog("once_runs_once", WATCHDOG, || {
        let rt = runtime(2, "once-once");
        let once = Arc::new(Once::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let (once, runs, done) = (Arc::clone(&once), Arc::clone(&runs), Arc::clone(&done));
                rt.spawn(move || {
                    once.call_once(|| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        fibra::sleep(Duration::from_millis(30)); // the others arrive meanwhile
                        done.store(true, Ordering::SeqCst);
                    });
                    // Whoever returns sees the initialiser's effect.
                    assert!(done.load(Ordering::SeqCst));
                })
            })
            .collect();
        once.wait(); // a plain thread waits too
        assert!(done.load(Ordering::SeqCst));
        for caller in callers {
            caller.join().unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(once.is_completed());
        once.call_once(|| unreachable!("already complete"));
    });
}

#[test]
fn a_panicking_initialiser_poisons_the_once() {
    watchdog("once_poison", WATCHDOG, || {
        let rt = runtime(1, "once-poison");
        rt.block_on(|| {
            static ONCE: Once = Once::new();
            let first = fibra::spawn(|| ONCE.call_once(|| panic!("init fails")));
            assert_eq!(panic_message(&*first.join().unwrap_err()), "init fails");
            assert!(!ONCE.is_completed());
            let again = fibra::spawn(|| ONCE.call_once(|| ()));
            assert_eq!(
                panic_message(&*again.join().unwrap_err()),
                "Once instance has previously been poisoned"
            );
            let waited = fibra::spawn(|| ONCE.wait());
            assert!(waited.join().is_err(), "wait panics on a poisoned Once");
            let mut saw_poison = false;
            ONCE.call_once_force(|state| saw_poison = state.is_poisoned());
            assert!(saw_poison && ONCE.is_completed());
            ONCE.wait();
        });
    });
}

#[test]
fn once_called_from_its_own_initialiser_panics_instead_of_hanging() {
    watchdog("once_recursion", WATCHDOG, || {
        let once = Once::new();
        let payload = catch_unwind(AssertUnwindSafe(|| {
            once.call_once(|| once.call_once(|| ()))
        }))
        .unwrap_err();
        assert!(panic_message(&*payload).contains("its own initialiser"));
        // The outer initialiser unwound: poisoned, and usable again by force.
        once.call_once_force(|state| assert!(state.is_poisoned()));
        assert!(once.is_completed());
    });
}

#[test]
fn once_lock_initialises_once_and_wait_parks_until_set() {
    watchdog("once_lock", WATCHDOG, || {
        let rt = runtime(2, "once-lock");
        let cell = Arc::new(OnceLock::new());
        let inits = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || *cell.wait())
        };
        let racers: Vec<_> = (0..20)
            .map(|i| {
                let (cell, inits) = (Arc::clone(&cell), Arc::clone(&inits));
                rt.spawn(move || {
                    *cell.get_or_init(|| {
                        inits.fetch_add(1, Ordering::SeqCst);
                        fibra::sleep(Duration::from_millis(10));
                        i
                    })
                })
            })
            .collect();
        let values: Vec<usize> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(inits.load(Ordering::SeqCst), 1);
        assert!(values.iter().all(|&v| v == values[0]));
        assert_eq!(waiter.join().unwrap(), values[0]);
        assert_eq!(cell.set(99), Err(99));
        // A panicking initialiser leaves the cell empty for the next one.
        let cell = OnceLock::new();
        assert!(catch_unwind(AssertUnwindSafe(|| cell.get_or_init(|| panic!("no")))).is_err());
        assert_eq!(cell.get(), None);
        assert_eq!(cell.get_or_init(|| 5), &5);
        let mut cell = cell;
        *cell.get_mut().unwrap() += 1;
        assert_eq!(format!("{cell:?}"), "OnceLock(6)");
        assert_eq!(cell.clone().into_inner(), Some(6));
        assert_eq!(cell.take(), Some(6));
        assert_eq!(cell.get(), None);
        assert_eq!(OnceLock::from(3), OnceLock::from(3));
    });
}

#[test]
fn lazy_lock_computes_once_and_stays_poisoned_after_a_panic() {
    watchdog("lazy_lock", WATCHDOG, || {
        let rt = runtime(2, "lazy-lock");
        static COMPUTED: AtomicUsize = AtomicUsize::new(0);
        static TABLE: LazyLock<Vec<u64>> = LazyLock::new(|| {
            COMPUTED.fetch_add(1, Ordering::SeqCst);
            fibra::sleep(Duration::from_millis(10));
            (0..100).collect()
        });
        let readers: Vec<_> = (0..20)
            .map(|_| rt.spawn(|| TABLE.iter().sum::<u64>()))
            .collect();
        for reader in readers {
            assert_eq!(reader.join().unwrap(), 4950);
        }
        assert_eq!(COMPUTED.load(Ordering::SeqCst), 1);
        assert_eq!(LazyLock::get(&TABLE).map(Vec::len), Some(100));

        let failing: LazyLock<u32> = LazyLock::new(|| panic!("lazy init fails"));
        let first = catch_unwind(AssertUnwindSafe(|| *failing)).unwrap_err();
        assert_eq!(panic_message(&*first), "lazy init fails");
        let second = catch_unwind(AssertUnwindSafe(|| *failing)).unwrap_err();
        assert_eq!(
            panic_message(&*second),
            "LazyLock instance has previously been poisoned"
        );
        let mut lazy = LazyLock::new(|| 1);
        *lazy += 1;
        assert_eq!(*LazyLock::force(&lazy), 2);
        assert_eq!(format!("{lazy:?}"), "LazyLock(2)");
    });
}

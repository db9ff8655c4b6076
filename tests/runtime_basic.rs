//! Basic behaviour of the N:M scheduler through the public API: spawn/join and
//! their values, panics and cancellation carried to `join`, `block_on`, names
//! and ids, park/unpark tokens and timeouts, yielding, the same
//! calls made from a plain OS thread, and per-coroutine stack sizes.

mod common;

use std::hint::black_box;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{DropCounter, WATCHDOG, panic_text, runtime, thread_name, watchdog};
use fibra::{Builder, Cancelled, Runtime};

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

// ---------------------------------------------------------------------------
// spawn / join / Builder / Runtime

#[test]
fn join_returns_values_to_plain_thread() {
    watchdog("join_returns_values_to_plain_thread", WATCHDOG, || {
        let rt = runtime(2, "values");
        assert_eq!(rt.workers(), 2);
        let handles: Vec<_> = (0..200u64).map(|i| rt.spawn(move || i * 3)).collect();
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.join().expect("no panic"), i as u64 * 3);
        }
        let built = Builder::new()
            .spawn_on(&rt, || String::from("from Builder::spawn_on"))
            .expect("spawn_on");
        assert_eq!(built.join().unwrap(), "from Builder::spawn_on");
        drop(rt);
    });
}

#[test]
fn join_returns_values_inside_coroutine_on_same_runtime() {
    watchdog(
        "join_returns_values_inside_coroutine_on_same_runtime",
        WATCHDOG,
        || {
            let rt = runtime(2, "inner-join");
            let results = rt.block_on(|| {
                // fibra::spawn inside a coroutine spawns on that coroutine's
                // runtime, not on the default one.
                let handles: Vec<_> = (0..100u64)
                    .map(|i| fibra::spawn(move || (i * i, thread_name())))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("no panic"))
                    .collect::<Vec<_>>()
            });
            assert_eq!(results.len(), 100);
            for (i, (square, name)) in results.into_iter().enumerate() {
                assert_eq!(square, (i * i) as u64);
                assert!(
                    name == "inner-join-0" || name == "inner-join-1",
                    "child ran on thread {name:?}, not a worker of its runtime"
                );
            }
            drop(rt);
        },
    );
}

#[test]
fn workers_count_and_thread_names_follow_builder() {
    watchdog(
        "workers_count_and_thread_names_follow_builder",
        WATCHDOG,
        || {
            let rt = runtime(0, "named-pool");
            assert_eq!(rt.workers(), 1, "workers(0) is raised to 1");
            assert_eq!(rt.block_on(thread_name), "named-pool-0");
            drop(rt);
            let rt = Runtime::builder().workers(1).build().expect("start");
            assert_eq!(rt.block_on(thread_name), "fibra-worker-0");
            drop(rt);
        },
    );
}

#[test]
fn join_returns_panic_payload() {
    watchdog("join_returns_panic_payload", WATCHDOG, || {
        let rt = runtime(2, "payload");
        let literal = rt.spawn(|| -> u32 { panic!("literal payload") });
        // A runtime argument: constant ones are folded into a `&str` payload.
        let formatted = rt.spawn(|| -> u32 { panic!("formatted payload {}", black_box(42)) });
        let custom = rt.spawn(|| -> u32 { panic_any(7u64) });

        let err = literal.join().expect_err("the coroutine panicked");
        assert_eq!(err.downcast_ref::<&str>(), Some(&"literal payload"));

        let err = formatted.join().expect_err("the coroutine panicked");
        assert_eq!(
            err.downcast_ref::<String>().map(String::as_str),
            Some("formatted payload 42")
        );

        let err = custom.join().expect_err("the coroutine panicked");
        assert_eq!(err.downcast_ref::<u64>(), Some(&7));
        drop(rt);
    });
}

#[test]
fn panicking_coroutine_does_not_kill_its_worker() {
    watchdog(
        "panicking_coroutine_does_not_kill_its_worker",
        WATCHDOG,
        || {
            let rt = runtime(1, "survivor");
            let dropped = Arc::new(AtomicUsize::new(0));
            let guard = DropCounter(Arc::clone(&dropped));
            let err = rt
                .spawn(move || {
                    let _guard = guard;
                    fibra::yield_now();
                    panic!("first coroutine dies");
                })
                .join()
                .expect_err("it panicked");
            assert_eq!(panic_text(&*err), Some("first coroutine dies"));
            assert_eq!(dropped.load(Ordering::SeqCst), 1, "its stack unwound");
            // The only worker still runs coroutines afterwards.
            let later: Vec<_> = (0..10u32)
                .map(|i| rt.spawn(move || (i + 1, thread_name())))
                .collect();
            for (i, handle) in later.into_iter().enumerate() {
                let (value, name) = handle.join().expect("later coroutine runs");
                assert_eq!(value, i as u32 + 1);
                assert_eq!(name, "survivor-0");
            }
            drop(rt);
        },
    );
}

#[test]
fn spawn_onto_another_runtime_from_a_coroutine_runs_on_that_runtime() {
    watchdog(
        "spawn_onto_another_runtime_from_a_coroutine_runs_on_that_runtime",
        WATCHDOG,
        || {
            let home = runtime(1, "spawner");
            let other = runtime(2, "target");
            // `Runtime::spawn` called on a worker of `home`: the coroutine
            // belongs to `other` and must start on one of its workers, not
            // on the caller's (whose own spawns take a shortcut).
            let names: Vec<String> = home.block_on(|| {
                let handles: Vec<_> = (0..20).map(|_| other.spawn(thread_name)).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("the coroutine runs"))
                    .collect()
            });
            assert_eq!(names.len(), 20);
            for name in &names {
                assert!(
                    name == "target-0" || name == "target-1",
                    "a coroutine of the other runtime ran on {name}"
                );
            }
            drop(home);
            drop(other);
        },
    );
}

#[test]
fn is_finished_reports_completion() {
    watchdog("is_finished_reports_completion", WATCHDOG, || {
        let rt = runtime(1, "finished");
        let value = rt.block_on(|| {
            let gate = Arc::new(AtomicBool::new(false));
            let open = Arc::clone(&gate);
            let child = fibra::spawn(move || {
                while !open.load(Ordering::SeqCst) {
                    fibra::park();
                }
                5u8
            });
            // One worker, FIFO queue: while we wait for a coroutine spawned
            // after `child`, `child` runs up to its park.
            fibra::spawn(|| ()).join().unwrap();
            assert!(!child.is_finished(), "it waits for the gate");
            gate.store(true, Ordering::SeqCst);
            child.coroutine().unpark();
            // `child` was woken before this helper was spawned: it runs first.
            fibra::spawn(|| ()).join().unwrap();
            assert!(child.is_finished(), "it has returned");
            child.join().unwrap()
        });
        assert_eq!(value, 5);
        drop(rt);
    });
}

// ---------------------------------------------------------------------------
// Cancellation

#[test]
fn cancel_unwinds_parked_coroutine_and_runs_destructors() {
    watchdog(
        "cancel_unwinds_parked_coroutine_and_runs_destructors",
        WATCHDOG,
        || {
            let rt = runtime(2, "cancel-parked");
            let dropped = Arc::new(AtomicUsize::new(0));
            let guard = DropCounter(Arc::clone(&dropped));
            let (parked_tx, parked_rx) = mpsc::channel();
            let handle = rt.spawn(move || {
                let _guard = guard;
                parked_tx.send(()).unwrap();
                loop {
                    fibra::park();
                }
            });
            parked_rx.recv_timeout(WATCHDOG).expect("coroutine started");
            assert_eq!(dropped.load(Ordering::SeqCst), 0);
            handle.cancel();
            let err = handle
                .join()
                .expect_err("a cancelled coroutine has no value");
            assert!(
                err.downcast_ref::<Cancelled>().is_some(),
                "payload is fibra::Cancelled, got {:?}",
                panic_text(&*err)
            );
            // What a caller that reports the payload shows.
            assert_eq!(
                err.downcast_ref::<Cancelled>().unwrap().to_string(),
                "the coroutine was cancelled"
            );
            assert_eq!(dropped.load(Ordering::SeqCst), 1, "destructors ran");
            drop(rt);
        },
    );
}

#[test]
fn cancel_wakes_sleeping_coroutine() {
    watchdog("cancel_wakes_sleeping_coroutine", WATCHDOG, || {
        let rt = runtime(1, "cancel-sleep");
        let dropped = Arc::new(AtomicUsize::new(0));
        let guard = DropCounter(Arc::clone(&dropped));
        let woke_normally = Arc::new(AtomicBool::new(false));
        let woke = Arc::clone(&woke_normally);
        let (sleeping_tx, sleeping_rx) = mpsc::channel();
        let handle = rt.spawn(move || {
            let _guard = guard;
            sleeping_tx.send(()).unwrap();
            fibra::sleep(Duration::from_secs(3600));
            woke.store(true, Ordering::SeqCst);
        });
        sleeping_rx
            .recv_timeout(WATCHDOG)
            .expect("coroutine started");
        let start = Instant::now();
        handle.cancel();
        let err = handle.join().expect_err("cancelled");
        assert!(err.downcast_ref::<Cancelled>().is_some());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "cancel took {:?}",
            start.elapsed()
        );
        assert!(
            !woke_normally.load(Ordering::SeqCst),
            "sleep did not return"
        );
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        drop(rt);
    });
}

#[test]
fn cancel_before_start_never_runs_body() {
    watchdog("cancel_before_start_never_runs_body", WATCHDOG, || {
        let rt = runtime(1, "cancel-fresh");
        let dropped = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicBool::new(false));
        let (dropped2, ran2) = (Arc::clone(&dropped), Arc::clone(&ran));
        let outcome = rt.block_on(move || {
            let guard = DropCounter(dropped2);
            // On a 1-worker runtime the victim cannot start before this
            // coroutine parks (in join): it is cancelled unstarted.
            let victim = fibra::spawn(move || {
                let _guard = guard;
                ran2.store(true, Ordering::SeqCst);
                17u32
            });
            victim.cancel();
            victim.join()
        });
        let err = outcome.expect_err("cancelled before it started");
        assert!(err.downcast_ref::<Cancelled>().is_some());
        assert!(!ran.load(Ordering::SeqCst), "the body never ran");
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the closure's captures were dropped"
        );
        drop(rt);
    });
}

#[test]
fn cancel_after_finish_keeps_the_value() {
    watchdog("cancel_after_finish_keeps_the_value", WATCHDOG, || {
        let rt = runtime(1, "cancel-late");
        let value = rt.block_on(|| {
            let handle = fibra::spawn(|| 99u32);
            // One worker, FIFO queue: `handle` runs to completion while we
            // wait for a coroutine spawned after it.
            fibra::spawn(|| ()).join().unwrap();
            assert!(handle.is_finished());
            handle.cancel();
            handle.join()
        });
        assert_eq!(value.expect("finished before the cancel"), 99);
        drop(rt);
    });
}

// ---------------------------------------------------------------------------
// block_on

#[test]
fn block_on_returns_value() {
    watchdog("block_on_returns_value", WATCHDOG, || {
        let rt = runtime(2, "block-on");
        assert_eq!(rt.block_on(|| 6 * 7), 42);
        let name = rt.block_on(|| {
            fibra::yield_now();
            thread_name()
        });
        assert!(name == "block-on-0" || name == "block-on-1", "{name:?}");
        drop(rt);
    });
}

#[test]
fn block_on_resumes_panic_in_caller() {
    watchdog("block_on_resumes_panic_in_caller", WATCHDOG, || {
        let rt = runtime(1, "block-on-panic");
        let err = catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(|| -> u32 { panic!("raised in block_on") })
        }))
        .expect_err("the panic continues in the caller");
        assert_eq!(err.downcast_ref::<&str>(), Some(&"raised in block_on"));
        let err = catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(|| -> u32 { panic!("raised {}", black_box("with format")) })
        }))
        .expect_err("the panic continues in the caller");
        assert_eq!(
            err.downcast_ref::<String>().map(String::as_str),
            Some("raised with format")
        );
        // The runtime is still usable.
        assert_eq!(rt.block_on(|| 1u32), 1);
        drop(rt);
    });
}

// ---------------------------------------------------------------------------
// Names and ids

#[test]
fn builder_name_visible_inside_and_through_handle() {
    watchdog(
        "builder_name_visible_inside_and_through_handle",
        WATCHDOG,
        || {
            let rt = runtime(1, "names");
            let handle = Builder::new()
                .name("alpha-coroutine".into())
                .spawn_on(&rt, || fibra::current().name().map(str::to_string))
                .expect("spawn");
            assert_eq!(handle.coroutine().name(), Some("alpha-coroutine"));
            assert_eq!(handle.join().unwrap().as_deref(), Some("alpha-coroutine"));

            let unnamed = rt.spawn(|| fibra::current().name().map(str::to_string));
            assert_eq!(unnamed.coroutine().name(), None);
            assert_eq!(unnamed.join().unwrap(), None);
            drop(rt);
        },
    );
}

#[test]
fn current_id_differs_between_coroutines_and_matches_handle() {
    watchdog(
        "current_id_differs_between_coroutines_and_matches_handle",
        WATCHDOG,
        || {
            let rt = runtime(2, "ids");
            let handles: Vec<_> = (0..50)
                .map(|_| {
                    rt.spawn(|| {
                        let before = fibra::current().id();
                        fibra::yield_now();
                        (before, fibra::current().id())
                    })
                })
                .collect();
            let expected: Vec<u64> = handles.iter().map(|h| h.coroutine().id()).collect();
            let mut seen = std::collections::HashSet::new();
            for (handle, expected) in handles.into_iter().zip(expected) {
                let (before, after) = handle.join().unwrap();
                assert_eq!(before, after, "id stable across a yield");
                assert_eq!(
                    before, expected,
                    "current().id() == handle.coroutine().id()"
                );
                assert!(seen.insert(before), "id {before} given twice");
            }
            assert_eq!(seen.len(), 50);
            drop(rt);
        },
    );
}

// ---------------------------------------------------------------------------
// park / unpark

#[test]
fn unpark_before_park_is_not_lost() {
    watchdog("unpark_before_park_is_not_lost", WATCHDOG, || {
        let rt = runtime(2, "token");
        let unparked = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&unparked);
        let (started_tx, started_rx) = mpsc::channel();
        let handle = rt.spawn(move || {
            started_tx.send(()).unwrap();
            // Yielding does not consume a park token; wait for the unpark.
            while !flag.load(Ordering::SeqCst) {
                fibra::yield_now();
            }
            let start = Instant::now();
            fibra::park(); // the token left by the earlier unpark
            start.elapsed()
        });
        started_rx
            .recv_timeout(WATCHDOG)
            .expect("coroutine started");
        handle.coroutine().unpark();
        unparked.store(true, Ordering::SeqCst);
        // Nobody unparks again: a lost token would hang here (watchdog).
        let waited = handle.join().unwrap();
        assert!(
            waited < Duration::from_secs(5),
            "park took {waited:?} despite a pending token"
        );
        drop(rt);
    });
}

#[test]
fn unpark_of_unstarted_coroutine_is_kept_for_its_first_park() {
    watchdog(
        "unpark_of_unstarted_coroutine_is_kept_for_its_first_park",
        WATCHDOG,
        || {
            let rt = runtime(1, "early-token");
            let value = rt.block_on(|| {
                let child = fibra::spawn(|| {
                    fibra::park();
                    "returned from park"
                });
                // Not started yet: the worker is busy running us.
                child.coroutine().unpark();
                child.join().unwrap()
            });
            assert_eq!(value, "returned from park");
            drop(rt);
        },
    );
}

#[test]
fn one_token_covers_many_unparks() {
    watchdog("one_token_covers_many_unparks", WATCHDOG, || {
        let rt = runtime(1, "one-token");
        let timed_out = rt.block_on(|| {
            let me = fibra::current();
            me.unpark();
            me.unpark();
            me.unpark();
            fibra::park(); // consumes the single token
            let start = Instant::now();
            fibra::park_timeout(Duration::from_millis(30));
            start.elapsed()
        });
        assert!(
            timed_out >= Duration::from_millis(30),
            "the second park found a token: returned after {timed_out:?}"
        );
        drop(rt);
    });
}

#[test]
fn park_timeout_returns_after_timeout_without_unpark() {
    watchdog(
        "park_timeout_returns_after_timeout_without_unpark",
        WATCHDOG,
        || {
            let rt = runtime(1, "park-timeout");
            let samples = rt.block_on(|| {
                (0..5)
                    .map(|_| {
                        let start = Instant::now();
                        fibra::park_timeout(Duration::from_millis(20));
                        start.elapsed()
                    })
                    .collect::<Vec<_>>()
            });
            for sample in &samples {
                assert!(
                    *sample >= Duration::from_millis(20),
                    "returned early: {samples:?}"
                );
            }
            let median = median(samples.clone());
            assert!(
                median < Duration::from_millis(30),
                "median {median:?} of {samples:?}"
            );
            drop(rt);
        },
    );
}

#[test]
fn park_timeout_returns_early_when_unparked() {
    watchdog("park_timeout_returns_early_when_unparked", WATCHDOG, || {
        let rt = runtime(2, "park-early");
        let (started_tx, started_rx) = mpsc::channel();
        let woken = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&woken);
        let handle = rt.spawn(move || {
            started_tx.send(()).unwrap();
            let start = Instant::now();
            while !flag.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60) {
                fibra::park_timeout(Duration::from_secs(60));
            }
            start.elapsed()
        });
        started_rx
            .recv_timeout(WATCHDOG)
            .expect("coroutine started");
        woken.store(true, Ordering::SeqCst);
        handle.coroutine().unpark();
        let waited = handle.join().unwrap();
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
        drop(rt);
    });
}

// ---------------------------------------------------------------------------
// yield (sleep is in runtime_timers.rs)

#[test]
fn yield_now_interleaves_coroutines_of_one_worker() {
    watchdog(
        "yield_now_interleaves_coroutines_of_one_worker",
        WATCHDOG,
        || {
            const ROUNDS: usize = 100;
            let rt = runtime(1, "interleave");
            // Never held across a park: locked, pushed to, released, then yield.
            let log = Arc::new(Mutex::new(Vec::new()));
            let started = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = ['a', 'b']
                .into_iter()
                .map(|label| {
                    let log = Arc::clone(&log);
                    let started = Arc::clone(&started);
                    rt.spawn(move || {
                        // Once both have started, both sit in the run queue and
                        // every yield hands the worker to the other one.
                        started.fetch_add(1, Ordering::SeqCst);
                        while started.load(Ordering::SeqCst) < 2 {
                            fibra::yield_now();
                        }
                        for _ in 0..ROUNDS {
                            log.lock().unwrap().push(label);
                            fibra::yield_now();
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
            let log = log.lock().unwrap();
            assert_eq!(log.len(), 2 * ROUNDS);
            assert_eq!(log.iter().filter(|&&c| c == 'a').count(), ROUNDS);
            for (i, pair) in log.windows(2).enumerate() {
                assert_ne!(
                    pair[0],
                    pair[1],
                    "entries {i} and {} come from the same coroutine: {:?}",
                    i + 1,
                    &log[..]
                );
            }
            drop(rt);
        },
    );
}

// ---------------------------------------------------------------------------
// Plain OS threads

#[test]
fn plain_thread_calls_behave_like_std() {
    watchdog("plain_thread_calls_behave_like_std", WATCHDOG, || {
        // We run on the watchdog's thread, which is no worker.
        let me = fibra::current();
        assert_eq!(
            me.name(),
            Some("watchdog-plain_thread_calls_behave_like_std")
        );
        assert_eq!(fibra::current().id(), me.id(), "a thread keeps its id");
        let other_id = thread::spawn(|| fibra::current().id()).join().unwrap();
        assert_ne!(other_id, me.id());

        let start = Instant::now();
        fibra::sleep(Duration::from_millis(10));
        assert!(start.elapsed() >= Duration::from_millis(10));

        let start = Instant::now();
        fibra::sleep_until(start + Duration::from_millis(10));
        assert!(start.elapsed() >= Duration::from_millis(10));

        fibra::yield_now();

        // An unpark that came first makes park return at once.
        me.unpark();
        fibra::park();

        // Unpark from another OS thread wakes fibra::park on this one.
        let flag = Arc::new(AtomicBool::new(false));
        let (handle, flag2) = (me.clone(), Arc::clone(&flag));
        let waker = thread::spawn(move || {
            flag2.store(true, Ordering::SeqCst);
            handle.unpark();
        });
        while !flag.load(Ordering::SeqCst) {
            fibra::park();
        }
        waker.join().unwrap();

        // And from a coroutine.
        let rt = runtime(1, "thread-waker");
        let flag = Arc::new(AtomicBool::new(false));
        let (handle, flag2) = (me.clone(), Arc::clone(&flag));
        let waker = rt.spawn(move || {
            flag2.store(true, Ordering::SeqCst);
            handle.unpark();
        });
        while !flag.load(Ordering::SeqCst) {
            fibra::park();
        }
        waker.join().unwrap();
        drop(rt);
    });
}

#[test]
fn plain_thread_park_timeout_waits_without_unpark() {
    watchdog(
        "plain_thread_park_timeout_waits_without_unpark",
        WATCHDOG,
        || {
            // std's park_timeout may return spuriously; the median of a few
            // is the behaviour to check.
            let samples: Vec<_> = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    fibra::park_timeout(Duration::from_millis(20));
                    start.elapsed()
                })
                .collect();
            let median = median(samples.clone());
            assert!(
                median >= Duration::from_millis(20) && median < Duration::from_millis(40),
                "median {median:?} of {samples:?}"
            );
        },
    );
}

// ---------------------------------------------------------------------------
// Stack sizes

/// Recurses until at least `need` bytes of stack below `top` are in use;
/// returns how many bytes were used.
#[inline(never)]
fn use_stack(top: usize, need: usize) -> usize {
    let frame = black_box([0u8; 1024]);
    let here = frame.as_ptr() as usize;
    let used = top - here;
    let deepest = if used >= need {
        used
    } else {
        use_stack(top, need)
    };
    black_box(&frame);
    deepest
}

fn recurse_512_kib() -> usize {
    let marker = 0u8;
    let top = black_box(&marker) as *const u8 as usize;
    use_stack(top, 512 * 1024)
}

#[test]
fn builder_stack_size_allows_deep_recursion() {
    watchdog("builder_stack_size_allows_deep_recursion", WATCHDOG, || {
        let rt = runtime(1, "deep");
        let used = Builder::new()
            .stack_size(1 << 20)
            .spawn_on(&rt, recurse_512_kib)
            .expect("spawn")
            .join()
            .expect("no overflow");
        assert!(used >= 512 * 1024, "used {used} bytes");
        drop(rt);

        // The runtime-wide default applies when the Builder sets none.
        let rt = Runtime::builder()
            .workers(1)
            .stack_size(1 << 20)
            .build()
            .expect("start");
        let used = rt.block_on(recurse_512_kib);
        assert!(used >= 512 * 1024, "used {used} bytes");
        drop(rt);
    });
}

#[test]
fn a_join_handle_debug_names_its_coroutine() {
    let rt = runtime(1, "debug-handle");
    let handle = Builder::new()
        .name("reporter".into())
        .spawn_on(&rt, || 5)
        .expect("spawn");
    let id = handle.coroutine().id();
    assert_eq!(
        format!("{handle:?}"),
        format!("JoinHandle {{ id: {id}, name: Some(\"reporter\") }}")
    );
    assert_eq!(handle.join().unwrap(), 5);
}

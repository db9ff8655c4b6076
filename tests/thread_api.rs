//! `fibra::thread`, std's names over the scheduler: spawn/join, `Builder`,
//! `current().id()`/`.name()` and `JoinHandle::thread()`, park/unpark,
//! sleep, `panicking`, and `scope` — borrowing, waiting for unjoined
//! coroutines, and finishing them when the scope's closure panics or its
//! coroutine is cancelled.

mod common;

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{WATCHDOG, assert_cancelled, panic_message, runtime, watchdog};
use fibra::sync::{Arc, mpsc};
use fibra::thread;

#[test]
fn spawn_builder_and_ids_follow_std() {
    watchdog("spawn_builder_and_ids", WATCHDOG, || {
        let rt = runtime(2, "thread-api");
        rt.block_on(|| {
            let me = thread::current();
            let handles: Vec<_> = (0..50)
                .map(|i| {
                    thread::Builder::new()
                        .name(format!("worker {i}"))
                        .stack_size(64 * 1024)
                        .spawn(move || {
                            let current = thread::current();
                            (i, current.id(), current.name().map(str::to_owned))
                        })
                        .unwrap()
                })
                .collect();
            let mut ids = HashSet::new();
            for (i, handle) in handles.into_iter().enumerate() {
                let id = handle.thread().id();
                assert_eq!(handle.thread().name(), Some(format!("worker {i}").as_str()));
                let (n, seen_id, name) = handle.join().unwrap();
                assert_eq!(
                    (n, seen_id),
                    (i, id),
                    "thread().id() is the coroutine's own id"
                );
                assert_eq!(name, Some(format!("worker {i}")));
                assert!(ids.insert(id), "ids are unique");
            }
            assert!(!ids.contains(&me.id()));
            assert_eq!(me.id(), thread::current().id(), "an id is stable");
            let unnamed = thread::spawn(|| thread::current().name().map(str::to_owned));
            assert_eq!(unnamed.join().unwrap(), None);
        });
        // On a plain thread: std's name, a fibra id.
        assert_eq!(thread::current().name(), std::thread::current().name());
        assert!(thread::available_parallelism().unwrap().get() >= 1);
    });
}

#[test]
fn a_panic_comes_back_from_join() {
    watchdog("a_panic_comes_back_from_join", WATCHDOG, || {
        let handle = thread::spawn(|| -> u32 { panic!("boom") });
        let payload = handle.join().unwrap_err();
        assert_eq!(panic_message(&*payload), "boom");
    });
}

#[test]
fn park_unpark_and_sleep_park_the_coroutine() {
    watchdog("park_unpark_and_sleep", WATCHDOG, || {
        let rt = runtime(1, "thread-park");
        rt.block_on(|| {
            let woken = Arc::new(AtomicBool::new(false));
            let parked = {
                let woken = Arc::clone(&woken);
                thread::spawn(move || {
                    while !woken.load(Ordering::SeqCst) {
                        thread::park();
                    }
                })
            };
            // The only worker runs us while the other is parked.
            let started = Instant::now();
            thread::sleep(Duration::from_millis(20));
            assert!(started.elapsed() >= Duration::from_millis(20));
            woken.store(true, Ordering::SeqCst);
            parked.thread().unpark();
            parked.join().unwrap();
            let started = Instant::now();
            thread::park_timeout(Duration::from_millis(10));
            assert!(started.elapsed() >= Duration::from_millis(10));
            thread::yield_now();
        });
    });
}

#[test]
fn panicking_is_true_only_while_unwinding() {
    watchdog("panicking", WATCHDOG, || {
        struct Report(mpsc::Sender<bool>);
        impl Drop for Report {
            fn drop(&mut self) {
                let _ = self.0.send(thread::panicking());
            }
        }
        let (tx, rx) = mpsc::channel();
        let calm = {
            let tx = tx.clone();
            thread::spawn(move || drop(Report(tx)))
        };
        calm.join().unwrap();
        let unwinding = thread::spawn(move || {
            let _report = Report(tx);
            panic!("unwinding");
        });
        assert!(unwinding.join().is_err());
        assert_eq!(rx.iter().collect::<Vec<_>>(), [false, true]);
        assert!(!thread::panicking());
    });
}

// ---------------------------------------------------------------------------
// scope

#[test]
fn scoped_coroutines_borrow_and_mutate_the_callers_data() {
    watchdog("scope_borrows", WATCHDOG, || {
        let rt = runtime(2, "scope-borrow");
        let (sum, counts) = rt.block_on(|| {
            let data: Vec<u64> = (1..=10_000).collect();
            let mut counts = vec![0usize; 8];
            let sum = thread::scope(|s| {
                for (i, count) in counts.iter_mut().enumerate() {
                    let data = &data;
                    s.spawn(move || {
                        *count = data.iter().filter(|&&x| x % 8 == i as u64).count();
                    });
                }
                let halves: Vec<_> = data
                    .chunks(5000)
                    .map(|half| s.spawn(move || half.iter().sum::<u64>()))
                    .collect();
                halves.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            });
            (sum, counts)
        });
        assert_eq!(sum, 50_005_000);
        assert_eq!(counts, vec![1250; 8]);
        // From a plain thread too.
        let mut flag = false;
        thread::scope(|s| {
            s.spawn(|| flag = true);
        });
        assert!(flag);
    });
}

#[test]
fn a_scope_waits_for_unjoined_and_nested_coroutines() {
    watchdog("scope_waits", WATCHDOG, || {
        let rt = runtime(2, "scope-wait");
        rt.block_on(|| {
            let finished = AtomicUsize::new(0);
            thread::scope(|s| {
                for i in 0..10 {
                    let finished = &finished;
                    s.spawn(move || {
                        thread::sleep(Duration::from_millis(5 * (i % 3)));
                        // A coroutine of the scope spawns into it too.
                        s.spawn(move || {
                            thread::sleep(Duration::from_millis(5));
                            finished.fetch_add(1, Ordering::SeqCst);
                        });
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
            assert_eq!(finished.load(Ordering::SeqCst), 20);
        });
    });
}

#[test]
fn a_panicking_scope_closure_still_waits_for_its_coroutines() {
    watchdog("scope_closure_panics", WATCHDOG, || {
        let finished = std::sync::Mutex::new(None);
        let payload = catch_unwind(AssertUnwindSafe(|| {
            thread::scope(|s| {
                s.spawn(|| {
                    thread::sleep(Duration::from_millis(30));
                    *finished.lock().unwrap() = Some(Instant::now());
                });
                // No panic hook (it may print a slow backtrace): the
                // unwinding starts at once.
                std::panic::resume_unwind(Box::new("closure panics"));
            })
        }))
        .unwrap_err();
        let returned = Instant::now();
        assert_eq!(panic_message(&*payload), "closure panics");
        let finished = finished
            .lock()
            .unwrap()
            .expect("the coroutine had finished");
        assert!(
            finished <= returned,
            "the scope unwound before its coroutine ended"
        );
    });
}

#[test]
fn an_unjoined_panicking_coroutine_makes_the_scope_panic() {
    watchdog("scope_unjoined_panic", WATCHDOG, || {
        let payload = catch_unwind(|| {
            thread::scope(|s| {
                s.spawn(|| panic!("unjoined"));
            })
        })
        .unwrap_err();
        assert_eq!(panic_message(&*payload), "a scoped coroutine panicked");
        // A panic that was joined is the joiner's business.
        let joined = thread::scope(|s| s.spawn(|| panic!("joined")).join().is_err());
        assert!(joined);
    });
}

#[test]
fn cancelling_the_scope_owner_cancels_and_awaits_its_coroutines() {
    watchdog("scope_owner_cancelled", WATCHDOG, || {
        let rt = runtime(2, "scope-cancel");
        let unwound = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let owner = {
            let (unwound, started) = (Arc::clone(&unwound), Arc::clone(&started));
            rt.spawn(move || {
                // Borrowed by the scoped coroutines from this frame.
                struct Count<'a>(&'a AtomicUsize);
                impl Drop for Count<'_> {
                    fn drop(&mut self) {
                        // Parks while unwinding: the owner must still wait.
                        thread::sleep(Duration::from_millis(5));
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let (unwound, started) = (&*unwound, &*started);
                thread::scope(|s| {
                    for _ in 0..5 {
                        s.spawn(move || {
                            let _count = Count(unwound);
                            started.fetch_add(1, Ordering::SeqCst);
                            loop {
                                thread::park();
                            }
                        });
                    }
                    loop {
                        thread::park();
                    }
                })
            })
        };
        while started.load(Ordering::SeqCst) < 5 {
            std::thread::sleep(Duration::from_millis(1));
        }
        owner.cancel();
        assert_cancelled("scope owner", owner);
        assert_eq!(
            unwound.load(Ordering::SeqCst),
            5,
            "every scoped coroutine unwound before the owner's join returned"
        );
    });
}

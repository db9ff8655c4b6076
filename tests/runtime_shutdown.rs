//! Dropping a `Runtime` with live coroutines: parked, sleeping, never started,
//! looping on `yield_now`, or parking again inside their destructors. Every
//! one must be cancelled and unwound (destructors run, `join` reports
//! `Cancelled`), never-started ones must not run, and the drop must return.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{DropCounter, WATCHDOG, runtime, watchdog};
use fibra::{Cancelled, JoinHandle, Runtime};

/// Asserts that every handle's join reports `Cancelled`.
fn assert_all_cancelled<T>(what: &str, handles: Vec<JoinHandle<T>>) {
    for (i, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(_) => panic!("{what} #{i} returned normally instead of being cancelled"),
            Err(payload) => assert!(
                payload.downcast_ref::<Cancelled>().is_some(),
                "{what} #{i}: the join payload is not fibra::Cancelled"
            ),
        }
    }
}

/// Whether the calling coroutine's runtime has begun to shut down, told by a
/// probe spawn: refused, or (as the library now does) accepted but cancelled
/// at once. Only meaningful while no worker is free to run the probe.
fn shutting_down() -> bool {
    match fibra::Builder::new().spawn(|| ()) {
        Err(_) => true,
        Ok(probe) => probe.is_finished(),
    }
}

/// Coroutines that occupy every worker of a 2-worker runtime, never parking,
/// until the runtime starts shutting down; coroutines spawned meanwhile cannot
/// start. Each first puts `per_worker` victims on its own worker's queue.
struct Pins {
    /// Each pin returns whether it saw the shutdown begin (or gave up).
    handles: Vec<JoinHandle<bool>>,
    /// Set just before the runtime is dropped; the pins then spin until the
    /// runtime is shutting down, and return.
    release: Arc<AtomicBool>,
}

impl Pins {
    fn new<V>(rt: &Runtime, per_worker: usize, victim: V) -> (Pins, Vec<JoinHandle<()>>)
    where
        V: Fn() -> Box<dyn FnOnce() + Send> + Send + Sync + 'static,
    {
        assert_eq!(rt.workers(), 2);
        let release = Arc::new(AtomicBool::new(false));
        let pinned = Arc::new(AtomicUsize::new(0));
        let victims = Arc::new(Mutex::new(Vec::new()));
        let victim = Arc::new(victim);
        let (ready_tx, ready_rx) = mpsc::channel();
        let handles = (0..2)
            .map(|_| {
                let (release, pinned, victims, victim, ready_tx) = (
                    Arc::clone(&release),
                    Arc::clone(&pinned),
                    Arc::clone(&victims),
                    Arc::clone(&victim),
                    ready_tx.clone(),
                );
                rt.spawn(move || {
                    // Neither pin parks, so the two run on different workers.
                    pinned.fetch_add(1, Ordering::SeqCst);
                    let give_up = Instant::now() + Duration::from_secs(10);
                    while pinned.load(Ordering::SeqCst) < 2 && Instant::now() < give_up {
                        std::hint::spin_loop();
                    }
                    if pinned.load(Ordering::SeqCst) < 2 {
                        let _ = ready_tx.send(Err("the second pin never started"));
                        return false;
                    }
                    // Onto this worker's own queue; both workers are busy.
                    for _ in 0..per_worker {
                        let handle = fibra::spawn(victim());
                        victims.lock().unwrap().push(handle);
                    }
                    ready_tx
                        .send(Ok(thread::current().name().map(str::to_string)))
                        .unwrap();
                    while !release.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                    let give_up = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < give_up {
                        if shutting_down() {
                            return true;
                        }
                        std::hint::spin_loop();
                    }
                    false
                })
            })
            .collect();
        let mut workers = Vec::new();
        for _ in 0..2 {
            match ready_rx.recv_timeout(WATCHDOG).expect("pins started") {
                Ok(name) => workers.push(name),
                Err(why) => panic!("{why}"),
            }
        }
        workers.sort();
        assert_ne!(workers[0], workers[1], "one pin per worker");
        let victims = std::mem::take(&mut *victims.lock().unwrap());
        (Pins { handles, release }, victims)
    }

    /// Lets the pins return once the runtime's drop has begun, drops it and
    /// checks that the pins saw the shutdown begin.
    fn drop_runtime(self, rt: Runtime) {
        self.release.store(true, Ordering::SeqCst);
        drop(rt);
        for handle in self.handles {
            assert!(
                handle.join().expect("a pin returns normally"),
                "a pin could not tell that the drop had begun from a probe spawn (neither \
                 refused nor cancelled at once): this test's setup needs updating"
            );
        }
    }
}

#[test]
fn drop_cancels_parked_sleeping_and_unstarted_coroutines() {
    const EACH: usize = 20;
    watchdog(
        "drop_cancels_parked_sleeping_and_unstarted_coroutines",
        WATCHDOG,
        || {
            let rt = runtime(2, "drop-all");
            let dropped = Arc::new(AtomicUsize::new(0));
            let (ready_tx, ready_rx) = mpsc::channel();
            let mut parked = Vec::new();
            let mut sleeping = Vec::new();
            for _ in 0..EACH {
                let (guard, ready) = (DropCounter(Arc::clone(&dropped)), ready_tx.clone());
                parked.push(rt.spawn(move || {
                    let _guard = guard;
                    ready.send(()).unwrap();
                    loop {
                        fibra::park();
                    }
                }));
                let (guard, ready) = (DropCounter(Arc::clone(&dropped)), ready_tx.clone());
                sleeping.push(rt.spawn(move || {
                    let _guard = guard;
                    ready.send(()).unwrap();
                    fibra::sleep(Duration::from_secs(3600));
                }));
            }
            for _ in 0..2 * EACH {
                ready_rx.recv_timeout(WATCHDOG).expect("coroutine started");
            }
            // Never started: on both workers' queues and on the global one.
            let counter = Arc::clone(&dropped);
            let (pins, mut unstarted) = Pins::new(&rt, EACH / 2, move || {
                let guard = DropCounter(Arc::clone(&counter));
                Box::new(move || {
                    let _guard = guard;
                    loop {
                        fibra::park();
                    }
                })
            });
            for _ in 0..EACH {
                let guard = DropCounter(Arc::clone(&dropped));
                unstarted.push(rt.spawn(move || {
                    let _guard = guard;
                    loop {
                        fibra::park();
                    }
                }));
            }
            assert_eq!(dropped.load(Ordering::SeqCst), 0);
            let start = Instant::now();
            pins.drop_runtime(rt);
            let took = start.elapsed();
            assert_eq!(
                dropped.load(Ordering::SeqCst),
                4 * EACH,
                "every destructor ran by the time the drop returned"
            );
            assert_all_cancelled("parked coroutine", parked);
            assert_all_cancelled("sleeping coroutine", sleeping);
            assert_all_cancelled("unstarted coroutine", unstarted);
            assert!(took < Duration::from_secs(10), "the drop took {took:?}");
        },
    );
}

/// Coroutines still queued, unstarted, when the runtime is dropped are
/// dropped, not run (the workers once ran the whole backlog first).
#[test]
fn drop_never_starts_coroutines_that_had_not_started() {
    const EACH: usize = 10;
    watchdog(
        "drop_never_starts_coroutines_that_had_not_started",
        WATCHDOG,
        || {
            let rt = runtime(2, "drop-unstarted");
            let ran = Arc::new(AtomicUsize::new(0));
            let dropped = Arc::new(AtomicUsize::new(0));
            let (ran2, dropped2) = (Arc::clone(&ran), Arc::clone(&dropped));
            let (pins, mut unstarted) = Pins::new(&rt, EACH, move || {
                let (ran, guard) = (Arc::clone(&ran2), DropCounter(Arc::clone(&dropped2)));
                Box::new(move || {
                    let _guard = guard;
                    ran.fetch_add(1, Ordering::SeqCst);
                })
            });
            for _ in 0..EACH {
                let (ran, guard) = (Arc::clone(&ran), DropCounter(Arc::clone(&dropped)));
                unstarted.push(rt.spawn(move || {
                    let _guard = guard;
                    ran.fetch_add(1, Ordering::SeqCst);
                }));
            }
            pins.drop_runtime(rt);
            assert_eq!(dropped.load(Ordering::SeqCst), 3 * EACH, "closures dropped");
            let ran = ran.load(Ordering::SeqCst);
            let outcomes: Vec<bool> = unstarted.into_iter().map(|h| h.join().is_ok()).collect();
            let returned = outcomes.iter().filter(|&&ok| ok).count();
            assert_eq!(
                (ran, returned),
                (0, 0),
                "{ran} of {} coroutines that had not started when the runtime was dropped \
                 ran their bodies during the drop ({returned} joins returned Ok instead of \
                 Err(Cancelled))",
                3 * EACH
            );
        },
    );
}

/// Coroutines that keep yielding are cancelled too (the workers once noticed
/// the shutdown only when their queues ran empty, so the drop waited forever).
#[test]
fn drop_cancels_coroutines_looping_on_yield_now() {
    const LOOPERS: usize = 10;
    let rt = runtime(2, "drop-yield");
    let dropped = Arc::new(AtomicUsize::new(0));
    // Lets the loops end by themselves if the drop does not stop them, so
    // that a failing test still finishes and frees its workers.
    let give_up = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let handles: Vec<_> = (0..LOOPERS)
        .map(|_| {
            let (guard, give_up, ready) = (
                DropCounter(Arc::clone(&dropped)),
                Arc::clone(&give_up),
                ready_tx.clone(),
            );
            rt.spawn(move || {
                let _guard = guard;
                ready.send(()).unwrap();
                let mut yields = 0u64;
                while !give_up.load(Ordering::SeqCst) {
                    fibra::yield_now();
                    yields += 1;
                }
                yields
            })
        })
        .collect();
    for _ in 0..LOOPERS {
        ready_rx.recv_timeout(WATCHDOG).expect("coroutine started");
    }
    let (done_tx, done_rx) = mpsc::channel();
    let start = Instant::now();
    let dropper = thread::spawn(move || {
        drop(rt);
        let _ = done_tx.send(());
    });
    let limit = Duration::from_secs(5);
    let hung = match done_rx.recv_timeout(limit) {
        Ok(()) => false,
        Err(_) => {
            give_up.store(true, Ordering::SeqCst);
            done_rx
                .recv_timeout(WATCHDOG)
                .expect("the drop returns once the loops stop by themselves");
            true
        }
    };
    dropper.join().unwrap();
    assert!(
        !hung,
        "dropping the runtime did not return within {limit:?} while {LOOPERS} coroutines \
         looped on yield_now (it returned only after they stopped by themselves, \
         after {:?}): they were never cancelled",
        start.elapsed()
    );
    assert_eq!(dropped.load(Ordering::SeqCst), LOOPERS);
    assert_all_cancelled("yielding coroutine", handles);
}

/// Parks in its destructor (a sleep), as a coroutine flushing a buffer on the
/// way out would.
struct SleepyGuard(Arc<AtomicUsize>, Arc<Mutex<Vec<Duration>>>);

impl Drop for SleepyGuard {
    fn drop(&mut self) {
        let start = Instant::now();
        fibra::sleep(Duration::from_millis(5));
        self.1.lock().unwrap().push(start.elapsed());
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn drop_lets_destructors_sleep_while_unwinding() {
    const COROUTINES: usize = 8;
    watchdog(
        "drop_lets_destructors_sleep_while_unwinding",
        WATCHDOG,
        || {
            let rt = runtime(2, "drop-sleepy");
            let dropped = Arc::new(AtomicUsize::new(0));
            let slept = Arc::new(Mutex::new(Vec::new()));
            let (ready_tx, ready_rx) = mpsc::channel();
            let handles: Vec<_> = (0..COROUTINES)
                .map(|_| {
                    let guard = SleepyGuard(Arc::clone(&dropped), Arc::clone(&slept));
                    let ready = ready_tx.clone();
                    rt.spawn(move || {
                        let _guard = guard;
                        ready.send(()).unwrap();
                        loop {
                            fibra::park();
                        }
                    })
                })
                .collect();
            for _ in 0..COROUTINES {
                ready_rx.recv_timeout(WATCHDOG).expect("coroutine started");
            }
            drop(rt);
            assert_eq!(dropped.load(Ordering::SeqCst), COROUTINES);
            let slept = slept.lock().unwrap();
            assert_eq!(slept.len(), COROUTINES);
            for took in slept.iter() {
                assert!(
                    *took >= Duration::from_millis(5),
                    "a sleep in a destructor returned after {took:?}"
                );
            }
            assert_all_cancelled("coroutine with a sleepy destructor", handles);
        },
    );
}

#[test]
fn drop_of_idle_runtime_returns_promptly() {
    watchdog("drop_of_idle_runtime_returns_promptly", WATCHDOG, || {
        for workers in [1, 2] {
            let rt = runtime(workers, "drop-idle");
            assert_eq!(rt.block_on(|| 3), 3);
            let start = Instant::now();
            drop(rt);
            let took = start.elapsed();
            assert!(took < Duration::from_secs(5), "drop took {took:?}");
        }
    });
}

/// CPU time the calling OS thread has used (user + system), from
/// /proc/thread-self/stat, in clock ticks of 10 ms.
fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read the thread's stat");
    // Fields after the command name (which may contain spaces): state is
    // field 3, utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .expect("stat has a command name")
        .1
        .split(' ')
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Sleeps in its destructor and records the worker thread's CPU time spent
/// meanwhile.
struct CpuMeasuringGuard(Arc<Mutex<Option<(Duration, Duration)>>>);

impl Drop for CpuMeasuringGuard {
    fn drop(&mut self) {
        let (cpu, wall) = (thread_cpu_time(), Instant::now());
        fibra::sleep(Duration::from_millis(300));
        *self.0.lock().unwrap() = Some((thread_cpu_time() - cpu, wall.elapsed()));
    }
}

/// While a cancelled coroutine sleeps in a destructor, the shutting-down
/// worker parks its thread until the timer is due (it once re-claimed the
/// coroutine on every pass, busy-waiting).
#[test]
fn drop_does_not_busy_wait_while_destructor_sleeps() {
    let (cpu, wall) = watchdog(
        "drop_does_not_busy_wait_while_destructor_sleeps",
        WATCHDOG,
        || {
            let rt = runtime(1, "drop-cpu");
            let measured = Arc::new(Mutex::new(None));
            let guard = CpuMeasuringGuard(Arc::clone(&measured));
            let (ready_tx, ready_rx) = mpsc::channel();
            let handle = rt.spawn(move || {
                let _guard = guard;
                ready_tx.send(()).unwrap();
                loop {
                    fibra::park();
                }
            });
            ready_rx.recv_timeout(WATCHDOG).expect("coroutine started");
            drop(rt);
            assert_all_cancelled("coroutine with a sleeping destructor", vec![handle]);
            let measured = measured.lock().unwrap().take();
            measured.expect("the destructor ran")
        },
    );
    assert!(wall >= Duration::from_millis(300), "slept only {wall:?}");
    assert!(
        cpu < Duration::from_millis(50),
        "the worker used {cpu:?} of CPU while a destructor slept for {wall:?} during \
         shutdown: it busy-waits"
    );
}

//! `fibra::coroutine_local!`: a value per coroutine — isolated between
//! coroutines of one worker, where a `thread_local!` is shared — per thread
//! on plain threads; dropped when the coroutine ends, as the coroutine
//! (a destructor may park) and before `join` returns; also for detached
//! and cancelled coroutines; destructors that reach locals, panic, or
//! initialisers that panic.

mod common;

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{DropCounter, WATCHDOG, runtime, watchdog};
use fibra::sync::{Arc, Mutex, mpsc};
use fibra::thread::LocalAccessError;

fibra::coroutine_local! {
    static ID: Cell<u64> = Cell::new(0);
    static TRAIL: RefCell<Vec<u64>> = RefCell::new(Vec::new());
}

thread_local! {
    static SHARED_BY_THE_WORKER: Cell<u64> = const { Cell::new(0) };
}

#[test]
fn coroutines_of_one_worker_each_have_their_own_value() {
    watchdog("local_isolation", WATCHDOG, || {
        let rt = runtime(1, "local-iso");
        let handles: Vec<_> = (1..=20u64)
            .map(|id| {
                rt.spawn(move || {
                    assert_eq!(ID.get(), 0, "a fresh coroutine starts from the initialiser");
                    ID.set(id);
                    SHARED_BY_THE_WORKER.set(SHARED_BY_THE_WORKER.get() + 1);
                    for step in 0..5 {
                        fibra::yield_now(); // the other 19 run in between
                        TRAIL.with_borrow_mut(|t| t.push(id * 100 + step));
                        assert_eq!(ID.get(), id);
                    }
                    TRAIL.take()
                })
            })
            .collect();
        for (id, handle) in (1..=20u64).zip(handles) {
            let trail = handle.join().unwrap();
            assert_eq!(trail, (0..5).map(|s| id * 100 + s).collect::<Vec<_>>());
        }
        // The thread_local! was one value for all 20 coroutines.
        let shared = rt.block_on(|| SHARED_BY_THE_WORKER.get());
        assert_eq!(shared, 20);
        // Plain threads: one value each.
        ID.set(7);
        let other = std::thread::spawn(|| {
            ID.set(8);
            ID.get()
        });
        assert_eq!((ID.get(), other.join().unwrap()), (7, 8));
    });
}

/// A value whose destructor parks (sleeps, then a rendezvous send) and
/// records when it ran.
struct ParkingDrop {
    events: Arc<std::sync::Mutex<Vec<&'static str>>>,
    done: mpsc::SyncSender<()>,
}

impl Drop for ParkingDrop {
    fn drop(&mut self) {
        self.events.lock().unwrap().push("drop begins");
        fibra::sleep(Duration::from_millis(5));
        self.done.send(()).unwrap(); // parks until the test thread takes it
        self.events.lock().unwrap().push("drop ends");
    }
}

fibra::coroutine_local! {
    static PARKING: RefCell<Option<ParkingDrop>> = RefCell::new(None);
}

#[test]
fn values_are_dropped_as_the_coroutine_ends_before_join_returns_and_may_park() {
    watchdog("local_drop_parks", WATCHDOG, || {
        for workers in [1, 2] {
            let rt = runtime(workers, "local-drop");
            let events = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (done_tx, done_rx) = mpsc::sync_channel(0);
            let handle = {
                let events = Arc::clone(&events);
                rt.spawn(move || {
                    PARKING.set(Some(ParkingDrop {
                        events: Arc::clone(&events),
                        done: done_tx,
                    }));
                    events.lock().unwrap().push("body returns");
                    fibra::current().id()
                })
            };
            // The destructor's send completes only when this thread takes
            // it, 20 ms from now: a join that returned before the
            // destructor had finished would log "joined" first.
            let taker = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                done_rx.recv().unwrap();
            });
            let id = handle.join().unwrap();
            events.lock().unwrap().push("joined");
            taker.join().unwrap();
            assert_ne!(id, 0);
            assert_eq!(
                *events.lock().unwrap(),
                ["body returns", "drop begins", "drop ends", "joined"]
            );
        }
    });
}

fibra::coroutine_local! {
    static COUNTED: RefCell<Option<DropCounter>> = RefCell::new(None);
}

#[test]
fn detached_cancelled_and_panicking_coroutines_drop_their_values() {
    watchdog("local_drop_paths", WATCHDOG, || {
        let rt = runtime(2, "local-paths");
        let drops = Arc::new(AtomicUsize::new(0));
        let counted = |drops: &Arc<AtomicUsize>| {
            let drops = Arc::clone(drops);
            move || COUNTED.set(Some(DropCounter(drops)))
        };
        // Detached: nobody joins; the worker drops the value anyway.
        let (tx, rx) = mpsc::channel();
        for _ in 0..10 {
            let (set, tx) = (counted(&drops), tx.clone());
            drop(rt.spawn(move || {
                set();
                tx.send(()).unwrap();
            }));
        }
        for _ in 0..10 {
            rx.recv().unwrap();
        }
        // Cancelled while parked, and unwinding from a panic.
        let set = counted(&drops);
        let parked = rt.spawn(move || {
            set();
            loop {
                fibra::park();
            }
        });
        let set = counted(&drops);
        let panicking = rt.spawn(move || {
            set();
            panic!("on purpose");
        });
        while drops.load(Ordering::SeqCst) < 11 {
            fibra::yield_now(); // the detached ones end on their own
            std::thread::sleep(Duration::from_millis(1));
        }
        parked.cancel();
        assert!(parked.join().is_err());
        assert!(panicking.join().is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 12);
        drop(rt);
        assert_eq!(drops.load(Ordering::SeqCst), 12);
    });
}

/// A value whose destructor reaches coroutine-locals: its own (gone) and
/// one not created yet (created, then dropped in turn).
struct Reaching(Arc<std::sync::Mutex<Vec<String>>>);

impl Drop for Reaching {
    fn drop(&mut self) {
        let own = REACHING.try_with(|_| ());
        self.0.lock().unwrap().push(format!("own: {own:?}"));
        LATE.with(|late| *late.borrow_mut() = Some(Arc::clone(&self.0)));
    }
}

struct Late(Arc<std::sync::Mutex<Vec<String>>>);

impl Drop for Late {
    fn drop(&mut self) {
        self.0.lock().unwrap().push("late dropped".to_string());
    }
}

fibra::coroutine_local! {
    static REACHING: RefCell<Option<Reaching>> = RefCell::new(None);
    static LATE: RefCell<Option<Arc<std::sync::Mutex<Vec<String>>>>> = RefCell::new(None);
    static LATE_GUARD: RefCell<Option<Late>> = RefCell::new(None);
    static PANICS_ON_DROP: RefCell<Option<PanicOnDrop>> = RefCell::new(None);
    static FAILS_ONCE: u32 = {
        if FAILED.swap(true, Ordering::SeqCst) { 5 } else { panic!("initialiser fails once") }
    };
}

static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a coroutine-local's destructor panics");
    }
}

#[test]
fn destructors_may_reach_locals_and_a_panicking_one_spares_the_rest() {
    watchdog("local_destructors", WATCHDOG, || {
        let rt = runtime(1, "local-dtors");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        rt.spawn(move || {
            REACHING.set(Some(Reaching(Arc::clone(&log2))));
            // Created after REACHING, so dropped before it.
            PANICS_ON_DROP.set(Some(PanicOnDrop));
            LATE_GUARD.set(Some(Late(log2)));
        })
        .join()
        .unwrap();
        let log = log.lock().unwrap().clone();
        // LATE_GUARD first (newest), then PANICS_ON_DROP (its panic is
        // reported), then REACHING, whose destructor finds itself gone and
        // creates LATE, which is dropped last (it holds only an Arc).
        assert_eq!(
            log,
            [
                "late dropped",
                &format!("own: {:?}", Err::<(), _>(LocalAccessError))
            ]
        );
    });
}

#[test]
fn a_panicking_initialiser_leaves_no_value_behind() {
    watchdog("local_init_panics", WATCHDOG, || {
        let rt = runtime(1, "local-init");
        let got = rt.block_on(|| {
            let first = std::panic::catch_unwind(|| FAILS_ONCE.with(|v| *v));
            assert!(first.is_err());
            FAILS_ONCE.with(|v| *v)
        });
        assert_eq!(got, 5);
    });
}

fibra::coroutine_local! {
    static LOCK_IN_DROP: RefCell<Option<LockInDrop>> = RefCell::new(None);
}

/// A destructor that waits on a fibra `Mutex` another coroutine of the
/// same worker holds: it parks, and that coroutine runs.
struct LockInDrop(Arc<Mutex<u32>>);

impl Drop for LockInDrop {
    fn drop(&mut self) {
        *self.0.lock().unwrap() += 1;
    }
}

#[test]
fn a_destructor_waiting_on_a_lock_held_by_a_neighbour_parks() {
    watchdog("local_lock_in_drop", WATCHDOG, || {
        let rt = runtime(1, "local-lock");
        let lock = Arc::new(Mutex::new(0));
        let total = rt.block_on(|| {
            let guard = lock.lock().unwrap();
            let ender = {
                let lock = Arc::clone(&lock);
                fibra::spawn(move || LOCK_IN_DROP.set(Some(LockInDrop(lock))))
            };
            // The ender's epilogue parks on the lock; this coroutine runs
            // meanwhile (one worker), then lets it through.
            for _ in 0..10 {
                fibra::yield_now();
            }
            assert!(!ender.is_finished());
            drop(guard);
            ender.join().unwrap();
            *lock.lock().unwrap()
        });
        assert_eq!(total, 1);
    });
}

/// Records the thread it was created on and the one it is dropped on. It
/// holds an `Rc`: coroutine-local values need not be `Send`.
struct DroppedWhere {
    home: String,
    log: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    _not_send: std::rc::Rc<()>,
}

impl Drop for DroppedWhere {
    fn drop(&mut self) {
        let here = common::thread_name();
        self.log.lock().unwrap().push((self.home.clone(), here));
    }
}

fibra::coroutine_local! {
    static WHERE: RefCell<Option<DroppedWhere>> = RefCell::new(None);
}

#[test]
fn values_are_dropped_on_their_home_worker_also_when_the_runtime_is_dropped() {
    watchdog("local_home_worker", WATCHDOG, || {
        let rt = runtime(2, "local-home");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let parked = Arc::new(AtomicUsize::new(0));
        let mut joined = Vec::new();
        for i in 0..30 {
            let (log, parked) = (Arc::clone(&log), Arc::clone(&parked));
            let handle = rt.spawn(move || {
                WHERE.set(Some(DroppedWhere {
                    home: common::thread_name(),
                    log,
                    _not_send: std::rc::Rc::new(()),
                }));
                match i % 3 {
                    0 => fibra::sleep(Duration::from_millis(1)),
                    1 => fibra::yield_now(),
                    _ => {
                        // Parked until the runtime's drop cancels it.
                        parked.fetch_add(1, Ordering::SeqCst);
                        loop {
                            fibra::park();
                        }
                    }
                }
            });
            if i % 3 == 0 {
                joined.push(handle);
            } else {
                drop(handle); // detached
            }
        }
        for handle in joined {
            handle.join().unwrap();
        }
        while parked.load(Ordering::SeqCst) < 10 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(rt);
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 30, "every value was dropped");
        for (home, dropped_on) in &log {
            assert!(home.starts_with("local-home"), "{home}");
            assert_eq!(home, dropped_on, "dropped on another thread");
        }
    });
}

//! What runs after a coroutine's closure — delivering its result, dropping a
//! detached result, dropping the closure of a coroutine cancelled before it
//! started — runs as the coroutine: it may park, and a panic there never
//! kills a worker. A result nobody takes is dropped once, by whichever of
//! the coroutine and its handle goes last. Also `Runtime::block_on` with a
//! closure that borrows.
//!
//! The crash cases run in child processes (this binary re-run with
//! `FIBRA_TEST_CHILD` set): before the fix they segfaulted, or killed the
//! worker so that the next `block_on` hung until the child's timeout.

mod common;

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ChildSetup, child_mode, report, wait_for};
use fibra::{Cancelled, Runtime};

const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(20),
    env: &[("RUST_BACKTRACE", "0")],
};

fn one_worker() -> Runtime {
    Runtime::builder()
        .workers(1)
        .thread_name("epilogue")
        .build()
        .expect("start the runtime")
}

/// A result whose destructor sleeps (parks) and then says where it ran.
struct SleepsOnDrop(mpsc::Sender<(String, Duration)>);

impl Drop for SleepsOnDrop {
    fn drop(&mut self) {
        let start = Instant::now();
        fibra::sleep(Duration::from_millis(5));
        let thread = std::thread::current().name().unwrap_or("").to_string();
        let _ = self.0.send((thread, start.elapsed()));
    }
}

#[test]
fn a_detached_result_whose_drop_parks_is_dropped_by_its_coroutine() {
    const NAME: &str = "a_detached_result_whose_drop_parks_is_dropped_by_its_coroutine";
    if child_mode().as_deref() == Some("parks") {
        let rt = one_worker();
        let (tx, rx) = mpsc::channel();
        drop(rt.spawn(move || {
            fibra::sleep(Duration::from_millis(20));
            SleepsOnDrop(tx)
        }));
        let (thread, slept) = rx.recv_timeout(Duration::from_secs(10)).expect("dropped");
        report(&format!("thread={thread}"));
        report(&format!("slept_ms={}", slept.as_millis()));
        report(&format!("after={}", rt.block_on(|| 42)));
        return;
    }
    let run = CHILD.run(NAME, "parks");
    assert!(run.status.success(), "{run}");
    assert_eq!(run.reported("thread"), "epilogue-0", "{run}");
    let slept: u64 = run.reported("slept_ms").parse().unwrap();
    assert!(slept >= 5, "the sleep in the destructor slept; {run}");
    assert_eq!(run.reported("after"), "42", "{run}");
}

/// A capture whose destructor calls `fibra::blocking::unblock`. (The job
/// runs; the coroutine, being cancelled, then unwinds from the wait.)
struct UnblocksOnDrop(Arc<AtomicUsize>);

impl Drop for UnblocksOnDrop {
    fn drop(&mut self) {
        let seen = Arc::clone(&self.0);
        fibra::blocking::unblock(move || seen.store(5, Ordering::SeqCst));
    }
}

#[test]
fn a_coroutine_cancelled_before_it_starts_drops_its_closure_as_a_coroutine() {
    const NAME: &str = "a_coroutine_cancelled_before_it_starts_drops_its_closure_as_a_coroutine";
    if child_mode().as_deref() == Some("unblocks") {
        let rt = one_worker();
        let seen = Arc::new(AtomicUsize::new(0));
        let capture = UnblocksOnDrop(Arc::clone(&seen));
        let cancelled = rt.block_on(move || {
            let handle = fibra::spawn(move || {
                let _capture = &capture;
                unreachable!("cancelled before it started");
            });
            // Still on the only worker: the new coroutine has not run.
            handle.cancel();
            handle.join().unwrap_err().is::<Cancelled>()
        });
        report(&format!("cancelled={cancelled}"));
        report(&format!("unblocked={}", seen.load(Ordering::SeqCst)));
        report(&format!("after={}", rt.block_on(|| 42)));
        return;
    }
    let run = CHILD.run(NAME, "unblocks");
    assert!(run.status.success(), "{run}");
    assert_eq!(run.reported("cancelled"), "true", "{run}");
    assert_eq!(run.reported("unblocked"), "5", "{run}");
    assert_eq!(run.reported("after"), "42", "{run}");
}

/// A capture whose destructor sleeps: in a cancelled coroutine the sleep
/// raises `Cancelled` inside the destructor.
struct SleepsInDrop(Arc<AtomicBool>);

impl Drop for SleepsInDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        fibra::sleep(Duration::from_millis(1));
    }
}

#[test]
fn cancelled_raised_in_an_unstarted_closures_drop_leaves_the_worker_running() {
    const NAME: &str = "cancelled_raised_in_an_unstarted_closures_drop_leaves_the_worker_running";
    if child_mode().as_deref() == Some("cancelled-in-drop") {
        let rt = one_worker();
        let dropped = Arc::new(AtomicBool::new(false));
        let capture = SleepsInDrop(Arc::clone(&dropped));
        let payload_is_cancelled = rt.block_on(move || {
            let handle = fibra::spawn(move || drop(capture));
            handle.cancel();
            handle.join().unwrap_err().is::<Cancelled>()
        });
        report(&format!("cancelled={payload_is_cancelled}"));
        report(&format!("dropped={}", dropped.load(Ordering::SeqCst)));
        report(&format!("after={}", rt.block_on(|| 42)));
        return;
    }
    let run = CHILD.run(NAME, "cancelled-in-drop");
    assert!(run.status.success(), "{run}");
    assert_eq!(run.reported("cancelled"), "true", "{run}");
    assert_eq!(run.reported("dropped"), "true", "{run}");
    assert_eq!(run.reported("after"), "42", "{run}");
    assert!(
        !run.stderr.contains("fibra: coroutine"),
        "a Cancelled in the epilogue is not reported as a panic; {run}"
    );
}

struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("result destructor failed");
    }
}

/// Holds an `Rc` (so it is `!Send`) and records the thread its destructor
/// runs on.
struct RecordsDropThread(Rc<mpsc::Sender<String>>);

impl Drop for RecordsDropThread {
    fn drop(&mut self) {
        let name = std::thread::current().name().unwrap_or("").to_string();
        let _ = self.0.send(name);
    }
}

#[test]
fn a_detached_result_that_panics_on_drop_is_reported_and_the_worker_survives() {
    const NAME: &str = "a_detached_result_that_panics_on_drop_is_reported_and_the_worker_survives";
    if child_mode().as_deref() == Some("panics") {
        let rt = one_worker();
        // A started coroutine holding an Rc, parked on the same worker.
        let (drop_tx, drop_rx) = mpsc::channel();
        let holder = rt.spawn(move || {
            let _rc = RecordsDropThread(Rc::new(drop_tx));
            loop {
                fibra::park();
            }
        });
        let detached = fibra::Builder::new()
            .name("dropper".into())
            .spawn_on(&rt, || PanicsOnDrop)
            .expect("spawn");
        drop(detached);
        // The worker still runs coroutines.
        report(&format!("after={}", rt.block_on(|| 42)));
        holder.cancel();
        let _ = holder.join();
        let thread = drop_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("dropped");
        report(&format!("rc_dropped_on={thread}"));
        return;
    }
    let run = CHILD.run(NAME, "panics");
    assert!(run.status.success(), "{run}");
    assert_eq!(run.reported("after"), "42", "{run}");
    assert_eq!(run.reported("rc_dropped_on"), "epilogue-0", "{run}");
    assert!(
        run.stderr.contains("result destructor failed"),
        "the panic is reported; {run}"
    );
    assert!(
        run.stderr.contains("fibra: coroutine #")
            && run
                .stderr
                .contains("'dropper' panicked while its result was dropped"),
        "fibra says whose result panicked and that it carried on; {run}"
    );
}

// ---------------------------------------------------------------------------
// block_on with borrowing closures

#[test]
fn block_on_borrows_the_callers_locals() {
    let rt = one_worker();
    let mut lines = vec!["a".to_string()];
    let words = ["b", "c"];
    rt.block_on(|| {
        for word in &words {
            fibra::yield_now();
            lines.push(word.to_string());
        }
    });
    assert_eq!(lines, ["a", "b", "c"]);
    let total: usize = rt.block_on(|| lines.iter().map(String::len).sum());
    assert_eq!(total, 3);
}

#[test]
fn block_on_panic_continues_in_the_caller_once_the_closure_is_gone() {
    let rt = one_worker();
    let dropped = AtomicBool::new(false);
    struct SetsOnDrop<'a>(&'a AtomicBool);
    impl Drop for SetsOnDrop<'_> {
        fn drop(&mut self) {
            fibra::sleep(Duration::from_millis(10));
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let guard = SetsOnDrop(&dropped);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(move || {
            let _guard = guard;
            panic!("inside block_on");
        })
    }));
    let payload = outcome.expect_err("the panic continues in the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"inside block_on"));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the borrowing guard finished dropping before block_on unwound"
    );
}

#[test]
fn block_on_in_a_cancelled_coroutine_waits_for_the_closure_before_unwinding() {
    let inner = one_worker();
    let outer = Runtime::builder()
        .workers(1)
        .thread_name("outer")
        .build()
        .expect("start the runtime");
    let events = Arc::new(std::sync::Mutex::new(Vec::<&str>::new()));
    let waiting = Arc::new(AtomicBool::new(false));
    let inner = Arc::new(inner);
    let handle = {
        let events = Arc::clone(&events);
        let waiting = Arc::clone(&waiting);
        let inner = Arc::clone(&inner);
        outer.spawn(move || {
            let local = String::from("borrowed");
            let _unwound = OnDrop(Arc::clone(&events), "caller unwound");
            inner.block_on(|| {
                waiting.store(true, Ordering::SeqCst);
                fibra::sleep(Duration::from_millis(100));
                assert_eq!(local, "borrowed");
                events.lock().unwrap().push("closure finished");
            });
            events.lock().unwrap().push("block_on returned");
        })
    };
    wait_for("the closure runs", Duration::from_secs(10), || {
        waiting.load(Ordering::SeqCst)
    });
    handle.cancel();
    let payload = handle.join().expect_err("cancelled");
    assert!(payload.is::<Cancelled>());
    assert_eq!(
        *events.lock().unwrap(),
        ["closure finished", "caller unwound"],
        "the caller unwound only after the borrowing closure finished"
    );
}

struct OnDrop(Arc<std::sync::Mutex<Vec<&'static str>>>, &'static str);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(self.1);
    }
}

/// A result that counts its drops and says on which thread the last ran.
struct CountsDrops {
    drops: Arc<AtomicUsize>,
    on_worker: Arc<AtomicUsize>,
}

impl Drop for CountsDrops {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("epilogue"))
        {
            self.on_worker.fetch_add(1, Ordering::SeqCst);
        }
    }
}

// The result lives in the task's allocation, which outlives both the
// coroutine and its handle; whichever of the two is last drops a result
// nobody takes, once: a handle dropped before the coroutine finishes leaves
// it to the coroutine (on the worker), a handle dropped after drops it on
// its own thread (as std's), and a joined result is the joiner's.
#[test]
fn every_result_is_dropped_once_whichever_of_handle_and_coroutine_goes_first() {
    const EACH: usize = 200;
    let rt = one_worker();
    let drops = Arc::new(AtomicUsize::new(0));
    let on_worker = Arc::new(AtomicUsize::new(0));
    let spawn = |gate: Arc<AtomicBool>| {
        let (drops, on_worker) = (Arc::clone(&drops), Arc::clone(&on_worker));
        rt.spawn(move || {
            while !gate.load(Ordering::SeqCst) {
                fibra::sleep(Duration::from_millis(1));
            }
            CountsDrops { drops, on_worker }
        })
    };
    // Handles dropped while their coroutines wait on the gate.
    let gate = Arc::new(AtomicBool::new(false));
    let early: Vec<_> = (0..EACH).map(|_| spawn(Arc::clone(&gate))).collect();
    drop(early);
    gate.store(true, Ordering::SeqCst);
    wait_for(
        "the detached coroutines' results dropped",
        Duration::from_secs(10),
        || drops.load(Ordering::SeqCst) == EACH,
    );
    assert_eq!(
        on_worker.load(Ordering::SeqCst),
        EACH,
        "dropped by the coroutines"
    );
    // Handles dropped after their coroutines finished.
    let late: Vec<_> = (0..EACH)
        .map(|_| spawn(Arc::new(AtomicBool::new(true))))
        .collect();
    wait_for("the coroutines finish", Duration::from_secs(10), || {
        late.iter().all(|h| h.is_finished())
    });
    // A `Coroutine` handle keeps the task's record alive, not its result.
    let records: Vec<fibra::Coroutine> = late.iter().map(|h| h.coroutine()).collect();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        EACH,
        "nobody dropped a result yet"
    );
    drop(late);
    assert_eq!(drops.load(Ordering::SeqCst), 2 * EACH);
    drop(records);
    assert_eq!(
        on_worker.load(Ordering::SeqCst),
        EACH,
        "dropped on this thread"
    );
    // Joined: the joiner takes the result and drops it.
    for joined in 0..EACH {
        let result = spawn(Arc::new(AtomicBool::new(true)))
            .join()
            .expect("joined");
        let dropped = drops.load(Ordering::SeqCst);
        assert_eq!(dropped, 2 * EACH + joined, "held by the joiner");
        drop(result);
    }
    assert_eq!(drops.load(Ordering::SeqCst), 3 * EACH);
    // Nothing more is dropped once the tasks themselves are gone.
    drop(rt);
    assert_eq!(drops.load(Ordering::SeqCst), 3 * EACH);
}

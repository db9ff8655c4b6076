//! Poisoning where coroutines differ from threads: std's panic state is
//! per OS thread, so while one coroutine is parked partway through its
//! unwinding, `std::thread::panicking()` is true in its worker's other
//! coroutines. A healthy coroutine that drops a guard then poisons a std
//! lock; a fibra lock is not poisoned when the unwinding neighbour is
//! parked inside `fibra::sync`/`fibra::thread`. A holder that panics itself
//! still poisons.

mod common;

use std::time::Duration;

use common::{WATCHDOG, runtime, watchdog};
use fibra::sync::{Arc, Mutex, RwLock, mpsc};

/// Parks (in `fibra::thread::sleep`) while its coroutine unwinds.
struct ParksWhileUnwinding;

impl Drop for ParksWhileUnwinding {
    fn drop(&mut self) {
        fibra::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_healthy_holder_does_not_poison_while_a_neighbour_unwinds() {
    watchdog("healthy_holder", WATCHDOG, || {
        let rt = runtime(1, "poison-neighbour");
        rt.block_on(|| {
            let fibra_lock = Arc::new(Mutex::new(0));
            let fibra_rw = Arc::new(RwLock::new(0));
            let std_lock = Arc::new(std::sync::Mutex::new(0));
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let holder = {
                let (fibra_lock, fibra_rw, std_lock) = (
                    Arc::clone(&fibra_lock),
                    Arc::clone(&fibra_rw),
                    Arc::clone(&std_lock),
                );
                fibra::spawn(move || {
                    let fibra_guard = fibra_lock.lock().unwrap();
                    let rw_guard = fibra_rw.write().unwrap();
                    let std_guard = std_lock.lock().unwrap();
                    go_rx.recv().unwrap(); // parks until the neighbour unwinds
                    // The documented limit: std's answer for the worker.
                    let seen_panicking = fibra::thread::panicking();
                    drop((fibra_guard, rw_guard, std_guard));
                    seen_panicking
                })
            };
            fibra::yield_now(); // the holder takes its locks and parks
            let neighbour = fibra::spawn(move || {
                let _parks = ParksWhileUnwinding;
                go_tx.send(()).unwrap(); // the holder runs once we park
                std::panic::resume_unwind(Box::new("neighbour unwinds"));
            });
            assert!(neighbour.join().is_err());
            let holder_saw_panicking = holder.join().unwrap();
            assert!(
                holder_saw_panicking,
                "panicking() is the worker's answer while a neighbour unwinds"
            );
            assert!(
                std_lock.is_poisoned(),
                "std poisons: its panic state is per thread"
            );
            assert!(!fibra_lock.is_poisoned(), "the holder itself did not panic");
            assert!(!fibra_rw.is_poisoned(), "the holder itself did not panic");
        });
    });
}

#[test]
fn a_coroutine_that_panics_holding_a_lock_still_poisons() {
    watchdog("panicking_holder", WATCHDOG, || {
        let rt = runtime(1, "poison-self");
        let lock = Arc::new(Mutex::new(0));
        let holder = {
            let lock = Arc::clone(&lock);
            rt.spawn(move || {
                let _guard = lock.lock().unwrap();
                let _parks = ParksWhileUnwinding; // parks before the guard drops
                std::panic::resume_unwind(Box::new("holder unwinds"));
            })
        };
        assert!(holder.join().is_err());
        assert!(lock.is_poisoned());
    });
}

//! Coroutines waiting in `fibra::sync` are counted as parked on a sync
//! primitive by `Runtime::metrics()` (the runtime's park reasons), however
//! they wait: a lock, a channel, a condvar, a barrier, with or without a
//! timeout.

mod common;

use std::time::Duration;

use common::{WATCHDOG, runtime, watchdog};
use fibra::sync::{Arc, Barrier, Condvar, Mutex, mpsc};

#[test]
fn waits_in_fibra_sync_are_counted_as_sync_parks() {
    watchdog("sync_parks_counted", WATCHDOG, || {
        let rt = runtime(1, "sync-observe");
        let lock = Arc::new(Mutex::new(()));
        let guard_holder = {
            let lock = Arc::clone(&lock);
            rt.spawn(move || {
                let _guard = lock.lock().unwrap();
                fibra::park(); // counted as a plain park
            })
        };
        let (tx, rx) = mpsc::channel::<()>();
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let barrier = Arc::new(Barrier::new(2));
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let lock = Arc::clone(&lock);
            waiters.push(rt.spawn(move || drop(lock.lock().unwrap())));
        }
        waiters.push(rt.spawn(move || {
            let _ = rx.recv_timeout(Duration::from_secs(60));
        }));
        {
            let pair = Arc::clone(&pair);
            waiters.push(rt.spawn(move || {
                let (lock, cvar) = &*pair;
                drop(cvar.wait_while(lock.lock().unwrap(), |go| !*go).unwrap());
            }));
        }
        {
            let barrier = Arc::clone(&barrier);
            waiters.push(rt.spawn(move || {
                barrier.wait();
            }));
        }
        let mut metrics = rt.metrics();
        for _ in 0..10_000 {
            if metrics.parked_by.sync == 6 && metrics.parked_by.park == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            metrics = rt.metrics();
        }
        assert_eq!(metrics.parked_by.sync, 6, "{metrics}");
        assert_eq!(metrics.parked_by.park, 1, "{metrics}");
        // Release everyone.
        *pair.0.lock().unwrap() = true;
        pair.1.notify_all();
        barrier.wait();
        tx.send(()).unwrap();
        guard_holder.coroutine().unpark();
        guard_holder.join().unwrap();
        for waiter in waiters {
            waiter.join().unwrap();
        }
    });
}

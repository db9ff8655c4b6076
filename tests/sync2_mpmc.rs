//! `fibra::sync::mpmc`: with several receivers (coroutines and threads)
//! every value is received exactly once and each sender's values in order;
//! the last handle of a side going away wakes every waiter of the other
//! side with the right error (senders get their values back); the `try_*`,
//! timeout and deadline variants; the queries; and a value reaching a
//! cancelled receiver going to another one.

mod common;
mod sync_common;

use std::time::{Duration, Instant};

use common::{WATCHDOG, runtime, watchdog};
use fibra::sync::mpmc::{
    self, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use sync_common::check_timeout_lateness;

/// Waits until `n` coroutines of `rt` are parked in `fibra::sync`.
fn wait_parked(rt: &fibra::Runtime, n: u64) {
    for _ in 0..10_000 {
        if rt.metrics().parked_by.sync == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!(
        "{} coroutines parked, expected {n}",
        rt.metrics().parked_by.sync
    );
}

#[test]
fn several_receivers_get_every_value_exactly_once() {
    watchdog("mpmc_exactly_once", WATCHDOG, || {
        for workers in [1, 2] {
            let rt = runtime(workers, "mpmc-once");
            for bound in [None, Some(0), Some(1), Some(16)] {
                let (tx, rx) = match bound {
                    None => mpmc::channel::<u64>(),
                    Some(bound) => mpmc::sync_channel::<u64>(bound),
                };
                let (per_sender, senders) = (3000u64, 5u64);
                let send = |s: u64| {
                    let tx = tx.clone();
                    move || {
                        for i in 0..per_sender {
                            tx.send(s * per_sender + i).unwrap();
                            if i % 64 == 0 {
                                fibra::yield_now();
                            }
                        }
                    }
                };
                let producers: Vec<_> = (0..senders - 1).map(|s| rt.spawn(send(s))).collect();
                let thread_producer = std::thread::spawn(send(senders - 1));
                drop(tx);
                let receive = |rx: mpmc::Receiver<u64>| move || rx.iter().collect::<Vec<u64>>();
                let consumers: Vec<_> = (0..4).map(|_| rt.spawn(receive(rx.clone()))).collect();
                let thread_consumer = std::thread::spawn(receive(rx));
                for producer in producers {
                    producer.join().unwrap();
                }
                thread_producer.join().unwrap();
                let mut all = thread_consumer.join().unwrap();
                let mut per_consumer = vec![all.clone()];
                for consumer in consumers {
                    let got = consumer.join().unwrap();
                    all.extend(&got);
                    per_consumer.push(got);
                }
                let what = format!("{workers} workers, bound {bound:?}");
                // Each consumer sees each sender's values in order.
                for got in &per_consumer {
                    let mut last = vec![None; senders as usize];
                    for &v in got {
                        let s = (v / per_sender) as usize;
                        assert!(last[s] < Some(v), "{what}: sender {s} out of order");
                        last[s] = Some(v);
                    }
                }
                all.sort_unstable();
                assert_eq!(all.len() as u64, senders * per_sender, "{what}: count");
                assert!(
                    all.iter().copied().eq(0..senders * per_sender),
                    "{what}: a value lost or received twice"
                );
            }
        }
    });
}

#[test]
fn the_last_sender_gone_wakes_every_waiting_receiver() {
    watchdog("mpmc_disconnect_receivers", WATCHDOG, || {
        let rt = runtime(2, "mpmc-disc-rx");
        let (tx, rx) = mpmc::channel::<u32>();
        let tx2 = tx.clone();
        let waiters: Vec<_> = (0..6)
            .map(|_| {
                let rx = rx.clone();
                rt.spawn(move || rx.recv())
            })
            .collect();
        let thread_waiter = {
            let rx = rx.clone();
            std::thread::spawn(move || rx.recv_timeout(Duration::from_secs(60)))
        };
        wait_parked(&rt, 6);
        drop(tx);
        std::thread::sleep(Duration::from_millis(5));
        assert!(waiters.iter().all(|w| !w.is_finished()), "a sender is left");
        drop(tx2);
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Err(RecvError));
        }
        assert_eq!(
            thread_waiter.join().unwrap(),
            Err(RecvTimeoutError::Disconnected)
        );
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
}

#[test]
fn the_last_receiver_gone_wakes_every_waiting_sender_with_its_value() {
    watchdog("mpmc_disconnect_senders", WATCHDOG, || {
        let rt = runtime(2, "mpmc-disc-tx");
        let (tx, rx) = mpmc::sync_channel::<String>(1);
        tx.send("buffered".into()).unwrap();
        let waiters: Vec<_> = (0..6)
            .map(|i| {
                let tx = tx.clone();
                rt.spawn(move || tx.send(format!("value {i}")))
            })
            .collect();
        let thread_waiter = {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send_timeout("thread".into(), Duration::from_secs(60)))
        };
        wait_parked(&rt, 6);
        let rx2 = rx.clone();
        drop(rx);
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "a receiver is left"
        );
        drop(rx2);
        for (i, waiter) in waiters.into_iter().enumerate() {
            assert_eq!(waiter.join().unwrap(), Err(SendError(format!("value {i}"))));
        }
        assert_eq!(
            thread_waiter.join().unwrap(),
            Err(SendTimeoutError::Disconnected("thread".into()))
        );
        assert_eq!(
            tx.try_send("late".into()),
            Err(TrySendError::Disconnected("late".into()))
        );
    });
}

#[test]
fn try_timeout_and_deadline_variants() {
    watchdog("mpmc_variants", WATCHDOG, || {
        let (tx, rx) = mpmc::sync_channel::<u32>(2);
        assert_eq!((tx.capacity(), rx.capacity()), (Some(2), Some(2)));
        assert!(rx.is_empty() && !tx.is_full());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.try_send(1).unwrap();
        tx.send_timeout(2, Duration::from_millis(1)).unwrap();
        assert!(tx.is_full() && rx.len() == 2);
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        let started = Instant::now();
        assert_eq!(
            tx.send_deadline(3, started + Duration::from_millis(10)),
            Err(SendTimeoutError::Timeout(3))
        );
        assert!(started.elapsed() >= Duration::from_millis(10));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2]);
        let started = Instant::now();
        assert_eq!(
            rx.recv_deadline(started + Duration::from_millis(10)),
            Err(RecvTimeoutError::Timeout)
        );
        assert!(started.elapsed() >= Duration::from_millis(10));
        let rx2 = rx.clone();
        assert!(rx.same_channel(&rx2) && !rx.same_channel(&mpmc::channel().1));
        let (utx, urx) = mpmc::channel::<u32>();
        assert_eq!((utx.capacity(), urx.is_full()), (None, false));
        let (ztx, zrx) = mpmc::sync_channel::<u32>(0);
        assert_eq!((ztx.capacity(), zrx.is_full()), (Some(0), true));
        assert_eq!(ztx.try_send(1), Err(TrySendError::Full(1)));
        for i in 0..3 {
            utx.send(i).unwrap();
        }
        drop(utx);
        assert_eq!((&urx).into_iter().take(1).collect::<Vec<_>>(), [0]);
        assert_eq!(urx.into_iter().collect::<Vec<_>>(), [1, 2]);
    });
}

#[test]
fn timed_waits_end_no_earlier_than_their_timeout() {
    let rt = runtime(1, "mpmc-timeout");
    let (_tx, rx) = mpmc::channel::<u32>();
    check_timeout_lateness(&rt, Duration::from_millis(20), move || {
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(20)),
            Err(RecvTimeoutError::Timeout)
        );
    });
    let (tx, _rx) = mpmc::sync_channel::<u32>(0);
    check_timeout_lateness(&rt, Duration::from_millis(20), move || {
        assert_eq!(
            tx.send_timeout(1, Duration::from_millis(20)),
            Err(SendTimeoutError::Timeout(1))
        );
    });
}

#[test]
fn a_value_handed_to_a_cancelled_receiver_goes_to_another_waiting_one() {
    watchdog("mpmc_handed_then_cancelled", WATCHDOG, || {
        let rt = runtime(1, "mpmc-handed");
        rt.block_on(|| {
            let (tx, rx) = mpmc::channel::<&str>();
            let first = {
                let rx = rx.clone();
                fibra::spawn(move || rx.recv())
            };
            fibra::yield_now(); // `first` parks
            let second = {
                let rx = rx.clone();
                fibra::spawn(move || rx.recv())
            };
            fibra::yield_now(); // `second` parks behind it
            // One worker: `first` cannot run between these lines, so the
            // value is in its slot when the cancellation reaches it.
            tx.send("handed over").unwrap();
            first.cancel();
            assert!(first.join().is_err(), "cancelled");
            assert_eq!(second.join().unwrap(), Ok("handed over"));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        });
    });
}

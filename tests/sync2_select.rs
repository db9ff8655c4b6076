//! `fibra::sync::select`: exactly one arm completes (counts under
//! contention, selects against selects), no arm starves (two always-ready
//! arms share the wins), the timeout's lower bound, the default arm,
//! disconnection as a ready arm, a select fed from a plain thread, and
//! nothing lost when a select times out or is cancelled as a value reaches
//! it.

mod common;
mod sync_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{WATCHDOG, runtime, watchdog};
use fibra::sync::mpsc::{self, RecvError, SendError};
use fibra::sync::select::Select;
use fibra::sync::{Arc, mpmc};
use sync_common::check_timeout_lateness;

/// Asserts that `wins` (per arm, out of `total`) are each at least 35% of
/// the total: with a fair coin over 2,000 draws, 35% is 13 standard
/// deviations below the mean.
fn check_fair(what: &str, wins: [usize; 2], total: usize) {
    assert_eq!(wins[0] + wins[1], total, "{what}: one arm per select");
    for (arm, &won) in wins.iter().enumerate() {
        assert!(
            won * 100 >= total * 35,
            "{what}: arm {arm} won {won} of {total} ({wins:?}): it starves"
        );
    }
}

#[test]
fn two_always_ready_arms_each_win_a_fair_share() {
    watchdog("select_fairness", WATCHDOG, || {
        let rt = runtime(1, "select-fair");
        let rounds = 2000;
        let run = move || {
            // Receives: both channels always hold a value.
            let (tx_a, rx_a) = mpsc::channel::<u8>();
            let (tx_b, rx_b) = mpmc::channel::<u8>();
            let mut wins = [0; 2];
            for _ in 0..rounds {
                tx_a.send(0).unwrap();
                tx_b.send(1).unwrap();
                fibra::select! {
                    recv(rx_a) -> v => wins[usize::from(v.unwrap())] += 1,
                    recv(rx_b) -> v => wins[usize::from(v.unwrap())] += 1,
                }
                // Put the loser's value away so both are ready once more.
                let _ = rx_a.try_recv();
                let _ = rx_b.try_recv();
            }
            check_fair("select! recv", wins, rounds);
            // Sends: both unbounded channels always take a value.
            let mut wins = [0; 2];
            for _ in 0..rounds {
                fibra::select! {
                    send(tx_a, 0) -> r => { r.unwrap(); wins[0] += 1 }
                    send(tx_b, 1) -> r => { r.unwrap(); wins[1] += 1 }
                }
            }
            check_fair("select! send", wins, rounds);
            assert_eq!(rx_a.try_iter().count() + rx_b.try_iter().count(), rounds);
            // The builder, a receive against a send.
            let mut wins = [0; 2];
            for _ in 0..rounds {
                tx_a.send(0).unwrap();
                let arm = Select::new()
                    .recv(&rx_a, |v| v.map(|_| 0).unwrap())
                    .send(&tx_b, 1, |r| r.map(|_| 1).unwrap())
                    .wait();
                wins[arm] += 1;
                let _ = rx_a.try_recv();
                let _ = rx_b.try_recv();
            }
            check_fair("Select recv/send", wins, rounds);
        };
        rt.block_on(run);
        run(); // on a plain thread
    });
}

#[test]
fn a_select_times_out_no_earlier_than_its_timeout() {
    let rt = runtime(1, "select-timeout");
    let (_tx_a, rx_a) = mpmc::channel::<u32>();
    let (_tx_b, rx_b) = mpmc::sync_channel::<u32>(0);
    let (rx_a, rx_b) = (Arc::new(rx_a), Arc::new(rx_b));
    check_timeout_lateness(&rt, Duration::from_millis(20), move || {
        let timed_out = fibra::select! {
            recv(rx_a) -> _ => false,
            recv(rx_b) -> _ => false,
            timeout(Duration::from_millis(20)) => true,
        };
        assert!(timed_out);
    });
}

#[test]
fn the_default_arm_runs_only_when_no_arm_is_ready() {
    watchdog("select_default", WATCHDOG, || {
        let (tx, rx) = mpmc::sync_channel::<u32>(1);
        let took = |rx: &mpmc::Receiver<u32>| {
            fibra::select! {
                recv(rx) -> v => Some(v.unwrap()),
                default => None,
            }
        };
        assert_eq!(took(&rx), None);
        tx.send(7).unwrap();
        assert_eq!(took(&rx), Some(7));
        // A full channel: the send arm is not ready, the default runs and
        // the value comes back untouched in the channel.
        tx.send(8).unwrap();
        let sent = fibra::select! {
            send(tx, 9) -> _ => true,
            default => false,
        };
        assert!(!sent);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [8]);
        // No arms at all: default at once; a deadline in the past likewise.
        let nothing: Option<u32> = Select::new().default(|| None).wait();
        assert_eq!(nothing, None);
        let at = Instant::now();
        let late = fibra::select! { deadline(at) => "passed" };
        assert_eq!(late, "passed");
    });
}

#[test]
fn a_coroutine_selecting_on_three_channels_gets_the_one_fed_from_a_plain_thread() {
    watchdog("select_thread_fed", WATCHDOG, || {
        for workers in [1, 2] {
            let rt = runtime(workers, "select-thread-fed");
            let (_tx_a, rx_a) = mpsc::channel::<u64>();
            let (tx_b, rx_b) = mpmc::sync_channel::<u64>(0);
            let (_tx_c, rx_c) = mpmc::channel::<u64>();
            let rounds = 200;
            let selector = rt.spawn(move || {
                let mut got = Vec::new();
                loop {
                    fibra::select! {
                        recv(rx_a) -> _ => panic!("nothing is sent on a"),
                        recv(rx_b) -> v => match v {
                            Ok(v) => got.push(v),
                            Err(RecvError) => return got,
                        },
                        recv(rx_c) -> _ => panic!("nothing is sent on c"),
                    }
                }
            });
            let feeder = std::thread::spawn(move || {
                for i in 0..rounds {
                    tx_b.send(i).unwrap(); // a rendezvous: waits for the select
                }
            });
            feeder.join().unwrap();
            assert_eq!(selector.join().unwrap(), (0..rounds).collect::<Vec<_>>());
        }
    });
}

#[test]
fn a_plain_thread_selecting_is_woken_by_a_coroutine() {
    watchdog("select_on_thread", WATCHDOG, || {
        let rt = runtime(1, "select-thread");
        let (tx_a, rx_a) = mpmc::channel::<&str>();
        let (tx_b, rx_b) = mpsc::channel::<&str>();
        let sender = rt.spawn(move || {
            fibra::sleep(Duration::from_millis(10));
            tx_b.send("from a coroutine").unwrap();
            tx_a
        });
        let got = fibra::select! {
            recv(rx_a) -> v => v.unwrap(),
            recv(rx_b) -> v => v.unwrap(),
        };
        assert_eq!(got, "from a coroutine");
        drop(sender.join().unwrap());
    });
}

#[test]
fn a_disconnected_channel_is_a_ready_arm_with_the_error() {
    watchdog("select_disconnected", WATCHDOG, || {
        let rt = runtime(2, "select-disc");
        // Receivers parked in a select are woken by the last sender's drop.
        let (tx, rx) = mpmc::channel::<u32>();
        let (_keep, idle) = mpmc::channel::<u32>();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (rx, idle) = (rx.clone(), idle.clone());
                rt.spawn(move || {
                    fibra::select! {
                        recv(idle) -> _ => "idle",
                        recv(rx) -> v => { assert_eq!(v, Err(RecvError)); "disconnected" }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        drop(tx);
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), "disconnected");
        }
        // A send arm whose receivers are gone gets its value back, and a
        // sender parked in a select on a full channel is woken with it.
        let (tx, rx) = mpmc::sync_channel::<String>(0);
        let parked = rt.spawn(move || {
            fibra::select! {
                send(tx, "kept".to_string()) -> r => r,
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(rx);
        assert_eq!(parked.join().unwrap(), Err(SendError("kept".to_string())));
    });
}

#[test]
fn a_select_never_pairs_with_itself_on_one_rendezvous_channel() {
    watchdog("select_self", WATCHDOG, || {
        let (tx, rx) = mpmc::sync_channel::<u32>(0);
        let outcome = fibra::select! {
            send(tx, 1) -> _ => "sent",
            recv(rx) -> _ => "received",
            timeout(Duration::from_millis(30)) => "timed out",
        };
        assert_eq!(outcome, "timed out");
        // Another party pairs with it.
        let (tx2, rx2) = (tx.clone(), rx.clone());
        let other = std::thread::spawn(move || rx2.recv().unwrap());
        let outcome = fibra::select! {
            send(tx, 1) -> r => { r.unwrap(); "sent" }
            recv(rx) -> _ => "received",
        };
        assert_eq!(outcome, "sent");
        assert_eq!(other.join().unwrap(), 1);
        drop(tx2);
    });
}

/// Selects against plain senders and against selects on the other side,
/// on 2 workers and plain threads: every value is received exactly once.
#[test]
fn under_contention_exactly_one_arm_completes_per_select() {
    watchdog("select_exactly_once", WATCHDOG, || {
        for bound in [0, 1, 8] {
            let rt = runtime(2, "select-once");
            let (tx_a, rx_a) = mpmc::sync_channel::<u64>(bound);
            let (tx_b, rx_b) = mpsc::sync_channel::<u64>(bound);
            let per_producer = 2000u64;
            let producers = 4u64;
            let mut handles = Vec::new();
            for p in 0..producers {
                let (tx_a, tx_b) = (tx_a.clone(), tx_b.clone());
                let produce = move || {
                    for i in 0..per_producer {
                        let value = p * per_producer + i;
                        if p % 2 == 0 {
                            // A selecting producer: whichever side takes it.
                            fibra::select! {
                                send(tx_a, value) -> r => r.unwrap(),
                                send(tx_b, value) -> r => r.unwrap(),
                            }
                        } else if i % 2 == 0 {
                            tx_a.send(value).unwrap();
                        } else {
                            tx_b.send(value).unwrap();
                        }
                    }
                };
                if p == producers - 1 {
                    handles.push(Err(std::thread::spawn(produce)));
                } else {
                    handles.push(Ok(rt.spawn(produce)));
                }
            }
            drop((tx_a, tx_b));
            let received = Arc::new(std::sync::Mutex::new(Vec::new()));
            let push = {
                let received = Arc::clone(&received);
                move |v: u64| received.lock().unwrap().push(v)
            };
            let mut consumers = Vec::new();
            // A plain receiver on `a`.
            let (rx, push0) = (rx_a.clone(), push.clone());
            consumers.push(rt.spawn(move || rx.iter().for_each(push0)));
            // Builder selects on `a` and an idle channel.
            for _ in 0..2 {
                let (rx, push) = (rx_a.clone(), push.clone());
                consumers.push(rt.spawn(move || {
                    let (_idle_tx, idle) = mpmc::channel::<u64>();
                    loop {
                        let got = Select::new()
                            .recv(&rx, |v| v.ok())
                            .recv(&idle, |_| unreachable!())
                            .wait();
                        match got {
                            Some(v) => push(v),
                            None => return,
                        }
                    }
                }));
            }
            // The owner of `b` selects on both until both are closed.
            consumers.push(rt.spawn(move || {
                let (mut a_open, mut b_open) = (true, true);
                while a_open || b_open {
                    if a_open && b_open {
                        fibra::select! {
                            recv(rx_a) -> v => match v {
                                Ok(v) => push(v),
                                Err(_) => a_open = false,
                            },
                            recv(rx_b) -> v => match v {
                                Ok(v) => push(v),
                                Err(_) => b_open = false,
                            },
                        }
                    } else if a_open {
                        a_open = rx_a.recv().map(&push).is_ok();
                    } else {
                        b_open = rx_b.recv().map(&push).is_ok();
                    }
                }
            }));
            for handle in handles {
                match handle {
                    Ok(coroutine) => coroutine.join().unwrap(),
                    Err(thread) => thread.join().unwrap(),
                }
            }
            for consumer in consumers {
                consumer.join().unwrap();
            }
            let mut got = received.lock().unwrap().clone();
            got.sort_unstable();
            let expected: Vec<u64> = (0..producers * per_producer).collect();
            assert_eq!(got.len(), expected.len(), "bound {bound}: count");
            assert!(got == expected, "bound {bound}: a value lost or duplicated");
        }
    });
}

/// Selects with short timeouts race senders: a value that reaches a select
/// as its deadline passes is returned by it, not lost.
#[test]
fn a_select_timing_out_as_a_value_arrives_returns_the_value() {
    watchdog("select_timeout_race", WATCHDOG, || {
        let rt = runtime(2, "select-race");
        let (tx, rx) = mpmc::sync_channel::<u64>(0);
        let (_idle_tx, idle) = mpsc::channel::<u64>();
        let total = 3000u64;
        let producer = std::thread::spawn(move || {
            for i in 0..total {
                tx.send(i).unwrap();
            }
        });
        let timeouts = Arc::new(AtomicUsize::new(0));
        let consumer = {
            let timeouts = Arc::clone(&timeouts);
            rt.spawn(move || {
                let mut got = Vec::new();
                loop {
                    fibra::select! {
                        recv(rx) -> v => match v {
                            Ok(v) => got.push(v),
                            Err(_) => return got,
                        },
                        recv(idle) -> _ => unreachable!(),
                        timeout(Duration::from_micros(20)) => {
                            timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        producer.join().unwrap();
        let got = consumer.join().unwrap();
        assert_eq!(got, (0..total).collect::<Vec<_>>());
        eprintln!(
            "select timeout race: {} timeouts beside {total} values",
            timeouts.load(Ordering::Relaxed)
        );
    });
}

#[test]
fn a_select_whose_deadline_passed_before_a_claim_returns_the_claimed_value() {
    // One worker: the selector's timer fires while another coroutine holds
    // the worker; that coroutine then hands it a value before it runs. Its
    // timeout lost the race: it returns the value (not lost, not left in
    // the channel).
    watchdog("select_deadline_then_claim", WATCHDOG, || {
        let rt = runtime(1, "select-late-claim");
        rt.block_on(|| {
            let (tx, rx) = mpmc::channel::<&str>();
            let (_idle_tx, idle) = mpsc::channel::<&str>();
            let rx2 = rx.clone();
            let timeout = Duration::from_millis(5);
            let selector = fibra::spawn(move || {
                let started = Instant::now();
                let outcome = fibra::select! {
                    recv(rx2) -> v => Some(v.unwrap()),
                    recv(idle) -> _ => unreachable!(),
                    timeout(timeout) => None,
                };
                (outcome, started.elapsed())
            });
            fibra::yield_now(); // the selector parks
            // Hold the worker past the deadline, then yield until its timer
            // has fired (the selector is no longer parked but queued to
            // run, behind us), and send before it runs.
            std::thread::sleep(timeout * 2);
            while fibra::metrics().parked_by.sync != 0 {
                fibra::yield_now();
            }
            tx.send("late").unwrap();
            let (outcome, elapsed) = selector.join().unwrap();
            assert!(elapsed >= timeout, "{elapsed:?}");
            assert_eq!((outcome, rx.try_recv().ok()), (Some("late"), None));
        });
    });
}

#[test]
fn a_select_cancelled_after_a_value_was_handed_to_it_gives_the_value_back() {
    watchdog("select_handed_then_cancelled", WATCHDOG, || {
        let rt = runtime(1, "select-handed");
        rt.block_on(|| {
            let (tx_a, rx_a) = mpmc::channel::<&str>();
            let (_tx_b, rx_b) = mpsc::channel::<&str>();
            let rx = rx_a.clone();
            let selector = fibra::spawn(move || {
                fibra::select! {
                    recv(rx_b) -> _ => "b",
                    recv(rx) -> v => v.unwrap(),
                }
            });
            fibra::yield_now(); // it parks in the select
            // One worker: the selector cannot run between these two lines,
            // so the value is in its slot when the cancellation reaches it.
            tx_a.send("handed over").unwrap();
            selector.cancel();
            assert!(selector.join().is_err(), "cancelled");
            assert_eq!(rx_a.try_recv(), Ok("handed over"));
            // Both channels work, and no node of the select is left in
            // them (a send would go to it and be lost).
            tx_a.send("after").unwrap();
            assert_eq!(rx_a.try_recv(), Ok("after"));
        });
    });
}

#[test]
fn cancelling_coroutines_parked_in_select_loses_no_value() {
    // Selecting receivers are cancelled at random moments, some while a
    // value is being handed to them; every value sent is received exactly
    // once, by a select that returned or from the channels afterwards.
    watchdog("select_cancelled", WATCHDOG, || {
        let rt = runtime(2, "select-cancel");
        let (tx_a, rx_a) = mpmc::channel::<u64>();
        let (tx_b, rx_b) = mpmc::sync_channel::<u64>(4);
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let total = 20_000u64;
        let producer = rt.spawn(move || {
            for i in 0..total {
                if i % 2 == 0 {
                    tx_a.send(i).unwrap();
                } else {
                    tx_b.send(i).unwrap();
                }
                if i % 8 == 0 {
                    fibra::yield_now();
                }
            }
        });
        let mut cancelled = 0;
        let mut live = Vec::new();
        for round in 0..200 {
            let (rx_a, rx_b, received) = (rx_a.clone(), rx_b.clone(), Arc::clone(&received));
            let handle = rt.spawn(move || {
                loop {
                    // Recorded under a std mutex (never a park point, so a
                    // cancellation cannot fall between select and record).
                    let value = fibra::select! {
                        recv(rx_a) -> v => v,
                        recv(rx_b) -> v => v,
                    };
                    match value {
                        Ok(value) => received.lock().unwrap().push(value),
                        Err(_) => return,
                    }
                }
            });
            if round % 2 == 0 {
                std::thread::sleep(Duration::from_micros(50));
                handle.cancel();
                cancelled += 1;
                let _ = handle.join();
            } else {
                live.push(handle);
            }
        }
        producer.join().unwrap();
        for handle in live {
            handle.join().unwrap();
        }
        let mut got = received.lock().unwrap().clone();
        got.extend(rx_a.try_iter());
        got.extend(rx_b.try_iter());
        got.sort_unstable();
        assert_eq!(cancelled, 100);
        let missing: Vec<u64> = (0..total)
            .filter(|v| got.binary_search(v).is_err())
            .collect();
        assert!(missing.is_empty(), "values lost: {missing:?}");
        assert_eq!(got.len() as u64, total, "values received twice");
    });
}

#[test]
fn a_coroutine_parked_in_select_is_counted_as_a_sync_park() {
    watchdog("select_park_reason", WATCHDOG, || {
        let rt = runtime(1, "select-observe");
        let (tx, rx) = mpmc::channel::<()>();
        let (_tx2, rx2) = mpsc::channel::<()>();
        let selector = rt.spawn(move || {
            fibra::select! {
                recv(rx) -> _ => (),
                recv(rx2) -> _ => (),
                timeout(Duration::from_secs(60)) => (),
            }
        });
        let mut metrics = rt.metrics();
        for _ in 0..10_000 {
            if metrics.parked_by.sync == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            metrics = rt.metrics();
        }
        assert_eq!(metrics.parked_by.sync, 1, "{metrics}");
        tx.send(()).unwrap();
        selector.join().unwrap();
    });
}

//! Timers and sockets stay on time beside a coroutine that computes 1 ms
//! between `yield_now` calls on the same worker. Before, due timers and the
//! poller were looked at only every 61st pick: a 5 ms sleep overslept by
//! 55–69 ms on average and a datagram waited 33 ms. The bounds here are
//! loose enough for a loaded 2-core machine and far below those figures.

mod common;

use std::net::UdpSocket as StdUdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use common::watchdog;
use fibra::Runtime;

/// Spins for `d`.
fn compute(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A coroutine on `rt` that computes 1 ms between yields until stopped.
fn start_busy(rt: &Runtime) -> (Arc<AtomicBool>, fibra::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = rt.spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            compute(Duration::from_millis(1));
            fibra::yield_now();
        }
    });
    (stop, handle)
}

/// The two tests take turns: each keeps a worker busy, and on a 2-core
/// machine two at once would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn one_worker() -> Runtime {
    Runtime::builder()
        .workers(1)
        .build()
        .expect("start the runtime")
}

#[test]
fn sleeps_end_on_time_beside_a_coroutine_that_yields_every_millisecond() {
    watchdog(
        "sleeps_end_on_time_beside_a_coroutine_that_yields_every_millisecond",
        Duration::from_secs(30),
        || {
            let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
            let rt = one_worker();
            let (stop, busy) = start_busy(&rt);
            let late = rt.block_on(|| {
                (0..30)
                    .map(|_| {
                        let start = Instant::now();
                        fibra::sleep(Duration::from_millis(5));
                        let slept = start.elapsed();
                        assert!(slept >= Duration::from_millis(5), "woke early: {slept:?}");
                        slept - Duration::from_millis(5)
                    })
                    .collect::<Vec<_>>()
            });
            stop.store(true, Ordering::Relaxed);
            busy.join().expect("busy");
            let max = *late.iter().max().unwrap();
            let median = median(late);
            eprintln!("oversleep beside a 1 ms yielder: median {median:?}, max {max:?}");
            assert!(
                median <= Duration::from_millis(15),
                "a 5 ms sleep overslept by {median:?} (median)"
            );
            assert!(max <= Duration::from_millis(500), "worst oversleep {max:?}");
        },
    );
}

#[test]
fn datagrams_wake_their_reader_on_time_beside_a_coroutine_that_yields_every_millisecond() {
    watchdog(
        "datagrams_wake_their_reader_on_time_beside_a_coroutine_that_yields_every_millisecond",
        Duration::from_secs(30),
        || {
            let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
            let rt = one_worker();
            let socket = fibra::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let address = socket.local_addr().expect("address");
            let (stop, busy) = start_busy(&rt);
            const ROUNDS: usize = 31;
            let (tx, rx) = mpsc::channel();
            let reader = rt.spawn(move || {
                let mut buf = [0u8; 16];
                for _ in 0..ROUNDS {
                    let (n, _) = socket.recv_from(&mut buf).expect("recv");
                    assert_eq!(n, 1);
                    // An unbounded std channel never blocks the sender.
                    tx.send(Instant::now()).expect("the test waits");
                }
            });
            // One datagram at a time, each sent a few ms after the previous
            // one was read, so that each measures one wake (no queue).
            let sender = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
            let mut sent = Vec::with_capacity(ROUNDS);
            let mut received = Vec::with_capacity(ROUNDS);
            for round in 0..ROUNDS {
                std::thread::sleep(Duration::from_millis(3 + (round % 4) as u64));
                sent.push(Instant::now());
                sender.send_to(&[1], address).expect("send");
                let read_at = rx
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap_or_else(|_| panic!("datagram {round} was not read"));
                received.push(read_at);
            }
            reader.join().expect("reader");
            stop.store(true, Ordering::Relaxed);
            busy.join().expect("busy");
            // The first one also waited for the reader to start.
            let (sent, received) = (&sent[1..], &received[1..]);
            let late: Vec<Duration> = sent
                .iter()
                .zip(received)
                .map(|(s, r)| r.saturating_duration_since(*s))
                .collect();
            let max = *late.iter().max().unwrap();
            let median = median(late);
            eprintln!("datagram wake beside a 1 ms yielder: median {median:?}, max {max:?}");
            assert!(
                median <= Duration::from_millis(20),
                "a datagram waited {median:?} (median) for its reader"
            );
            assert!(max <= Duration::from_millis(500), "worst wait {max:?}");
        },
    );
}

/// Which worker each of `n` CPU-bound coroutines started on, spawned all at
/// once from a coroutine of a two-worker runtime.
fn fan_out_placement(n: usize) -> [usize; 2] {
    let rt = Runtime::builder()
        .workers(2)
        .thread_name("fan-out")
        .build()
        .expect("start the runtime");
    let started_on = rt.block_on(move || {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                fibra::spawn(|| {
                    let name = std::thread::current().name().unwrap_or("").to_string();
                    for _ in 0..5 {
                        compute(Duration::from_millis(1));
                        fibra::yield_now();
                    }
                    name
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect::<Vec<_>>()
    });
    let mut counts = [0; 2];
    for name in started_on {
        match name.as_str() {
            "fan-out-0" => counts[0] += 1,
            "fan-out-1" => counts[1] += 1,
            other => panic!("ran on {other:?}"),
        }
    }
    counts
}

#[test]
fn a_cpu_bound_fan_out_spawned_by_a_coroutine_starts_evenly_on_both_workers() {
    watchdog(
        "a_cpu_bound_fan_out_spawned_by_a_coroutine_starts_evenly_on_both_workers",
        Duration::from_secs(30),
        || {
            let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
            // A started coroutine never moves, so where it starts decides
            // where it runs. Before, the spawning worker started about 127 of
            // 200 before the other had stolen the rest.
            let counts = fan_out_placement(200);
            eprintln!("200 CPU-bound coroutines started {counts:?} on two workers");
            assert!(counts.iter().all(|&c| c >= 80), "uneven start: {counts:?}");
        },
    );
}

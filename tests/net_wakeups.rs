//! No lost socket wakeups: an event that the poller handles between a
//! call's failed try (`EAGAIN`) and its park must end the wait
//! (`Source::wait` re-checks the sequence number under the lock).
//!
//! The race only exists when the event is handled on another thread than
//! the waiter's: the fd is registered on the worker of its first waiter,
//! so here one coroutine registers it on one worker and the waiter runs on
//! the other. The tests cannot heal a lost wakeup: one waiter, exactly one
//! event per round (a lost one leaves the waiter parked for good), a bound
//! on every round, and a watchdog.
//!
//! - The deterministic test lands the event inside the window on every
//!   round: `Pollable::read_with` runs the caller's operation between the
//!   sequence snapshot and the park, so the operation itself writes the
//!   byte and waits until the registering worker has woken, handled the
//!   event (with nobody queued yet) and gone back to sleep — read from
//!   /proc, not guessed with a sleep.
//! - The `fibra::net` test runs thousands of rounds of the natural race: a
//!   writer coroutine on the registering worker sends one byte as soon as
//!   the reader on the other worker starts each read.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net as stdunix;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    EPOLL_WAITS, WATCHDOG, asleep_in, gettid, join, pair, runtime, wait_until_workers_sleep,
    watchdog, worker_tids,
};
use fibra::io::Pollable;
use fibra::{JoinHandle, Runtime};

/// A round that makes no progress for this long has lost its wakeup.
const STALL: Duration = Duration::from_secs(5);
/// The longest a round's wait may take on a loaded 2-core machine.
const LONGEST_WAIT: Duration = Duration::from_secs(3);

/// `voluntary_ctxt_switches` of thread `tid`: how many times it has gone
/// to sleep.
fn times_asleep(tid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .expect("read the thread's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches in the thread's status")
}

/// Spins (yielding the CPU) until `condition` holds; fails after `STALL`.
fn spin_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + STALL;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not so after {STALL:?}");
        thread::yield_now();
    }
}

/// Spawns `rounds` on `rt` (two workers) as a coroutine that runs on the
/// worker whose thread id is `tid`: a started coroutine never leaves its
/// worker, so first the other worker is kept busy by a coroutine that spins
/// without parking, and the spawn can only start on `tid`.
fn spawn_on<T: Send + 'static>(
    rt: &Runtime,
    tid: i32,
    rounds: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    // A spinner that lands on `tid` is stopped and another tried, until
    // one keeps the other worker busy.
    let (release, spinner, busy) = loop {
        let release = Arc::new(AtomicBool::new(false));
        let on = Arc::new(AtomicUsize::new(0));
        let handle = {
            let (on, release) = (Arc::clone(&on), Arc::clone(&release));
            rt.spawn(move || {
                on.store(gettid() as usize, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
            })
        };
        spin_until("a spinner has started", || on.load(Ordering::SeqCst) != 0);
        if on.load(Ordering::SeqCst) as i32 != tid {
            break (release, handle, on);
        }
        release.store(true, Ordering::SeqCst);
        join(handle);
    };
    let started = Arc::new(AtomicUsize::new(0));
    let handle = {
        let started = Arc::clone(&started);
        rt.spawn(move || {
            started.store(gettid() as usize, Ordering::SeqCst);
            rounds()
        })
    };
    spin_until("the coroutine has started", || {
        started.load(Ordering::SeqCst) != 0
    });
    release.store(true, Ordering::SeqCst);
    join(spinner);
    assert_eq!(
        started.load(Ordering::SeqCst) as i32,
        tid,
        "the coroutine started beside the spinner on {}",
        busy.load(Ordering::SeqCst)
    );
    handle
}

/// Runs `round(0..rounds)` in a coroutine on worker `tid` of `rt`; each
/// round waits for its one event and returns the byte it read, which must
/// be its own. If the rounds stop progressing for `STALL`, sets `stop`,
/// calls `heal` (one more event, so that the parked waiter and the runtime
/// can finish) and fails, naming the round. Fails too if a round took more
/// than `LONGEST_WAIT`.
fn run_rounds(
    rt: &Runtime,
    tid: i32,
    what: &str,
    rounds: usize,
    stop: &Arc<AtomicBool>,
    mut round: impl FnMut(usize) -> u8 + Send + 'static,
    heal: impl FnOnce(),
) {
    let progress = Arc::new(AtomicUsize::new(0));
    let handle = {
        let (progress, stop) = (Arc::clone(&progress), Arc::clone(stop));
        spawn_on(rt, tid, move || {
            let mut longest = Duration::ZERO;
            for i in 0..rounds {
                let start = Instant::now();
                let byte = round(i);
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
                assert_eq!(byte, i as u8, "round {i} read its own byte");
                longest = longest.max(start.elapsed());
                progress.store(i + 1, Ordering::SeqCst);
            }
            Some(longest)
        })
    };
    let mut last = (0, Instant::now());
    loop {
        let done = progress.load(Ordering::SeqCst);
        if done >= rounds {
            break;
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > STALL {
            stop.store(true, Ordering::SeqCst);
            heal();
            panic!(
                "{what}: round {done} of {rounds} lost its wakeup: its one event came \
                 and the waiter stayed parked for {STALL:?}"
            );
        }
        thread::sleep(Duration::from_millis(1));
    }
    let longest = join(handle).expect("all rounds ran");
    assert!(
        longest <= LONGEST_WAIT,
        "{what}: the longest round took {longest:?}"
    );
}

#[test]
fn an_event_handled_between_the_failed_try_and_the_park_ends_the_wait() {
    const ROUNDS: usize = 300;
    watchdog("event_in_the_window", WATCHDOG, || {
        let rt = runtime(2, "nw-win");
        let tids = worker_tids("nw-win", 2);
        let (reader, writer) = stdunix::UnixStream::pair().unwrap();
        let reader = Arc::new(Pollable::new(reader).unwrap());
        let writer = Arc::new(writer);
        // Register the reader's fd on one worker: a coroutine waits there.
        let registrar = {
            let reader = Arc::clone(&reader);
            rt.spawn(move || {
                reader.readable().unwrap();
                gettid()
            })
        };
        wait_until_workers_sleep("nw-win", 2);
        (&*writer).write_all(b"r").unwrap();
        let home = join(registrar);
        assert_eq!((&*reader).read(&mut [0u8; 4]).unwrap(), 1);
        let other = *tids.iter().find(|&&t| t != home).expect("two workers");

        let stop = Arc::new(AtomicBool::new(false));
        let round = {
            let (reader, writer) = (Arc::clone(&reader), Arc::clone(&writer));
            move |i: usize| {
                let mut byte = [0u8; 1];
                let mut sent = false;
                let n = reader.read_with(|mut stream| match stream.read(&mut byte) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock && !sent => {
                        // Inside the window: the snapshot is taken, the try
                        // failed, the park has not begun.
                        sent = true;
                        spin_until("the registering worker sleeps", || {
                            asleep_in(home, EPOLL_WAITS)
                        });
                        let before = times_asleep(home);
                        (&*writer).write_all(&[i as u8]).unwrap();
                        spin_until("the registering worker handled the event", || {
                            times_asleep(home) > before && asleep_in(home, EPOLL_WAITS)
                        });
                        Err(e)
                    }
                    result => result,
                });
                assert_eq!(n.unwrap(), 1);
                assert!(sent, "round {i}: the first try found the socket empty");
                byte[0]
            }
        };
        run_rounds(
            &rt,
            other,
            "event in the window",
            ROUNDS,
            &stop,
            round,
            || (&*writer).write_all(b"!").unwrap(),
        );
    });
}

#[test]
fn one_byte_per_round_wakes_a_tcp_reader_on_another_worker_every_time() {
    const ROUNDS: usize = 5000;
    watchdog("tcp_rounds", WATCHDOG, || {
        let rt = runtime(2, "nw-tcp");
        let (client, server) = pair();
        let (client, server) = (Arc::new(client), Arc::new(server));
        // The writer's first act is a read that parks: it registers the
        // server socket on the writer's worker.
        let requested = Arc::new(AtomicUsize::new(0)); // round + 1 once the read starts
        let stop = Arc::new(AtomicBool::new(false));
        let writer_started = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (client, server) = (Arc::clone(&client), Arc::clone(&server));
            let (requested, stop, started) = (
                Arc::clone(&requested),
                Arc::clone(&stop),
                Arc::clone(&writer_started),
            );
            rt.spawn(move || {
                started.store(gettid() as usize, Ordering::SeqCst);
                let mut first = [0u8; 1];
                (&*server).read_exact(&mut first).unwrap();
                // Tell the test the first byte is consumed: the rounds must
                // not start before, or round 0 could read it.
                started.store(usize::MAX, Ordering::SeqCst);
                for round in 0..ROUNDS {
                    while requested.load(Ordering::SeqCst) != round + 1 {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        fibra::yield_now();
                    }
                    (&*client).write_all(&[round as u8]).unwrap();
                }
            })
        };
        wait_until_workers_sleep("nw-tcp", 2);
        let home = writer_started.load(Ordering::SeqCst) as i32;
        (&*client).write_all(b"r").unwrap();
        spin_until("the writer consumed the first byte", || {
            writer_started.load(Ordering::SeqCst) == usize::MAX
        });
        let other = *worker_tids("nw-tcp", 2)
            .iter()
            .find(|&&t| t != home)
            .expect("two workers");

        let round = {
            let (server, requested) = (Arc::clone(&server), Arc::clone(&requested));
            move |i: usize| {
                let mut byte = [0u8; 1];
                requested.store(i + 1, Ordering::SeqCst);
                (&*server).read_exact(&mut byte).unwrap();
                byte[0]
            }
        };
        run_rounds(&rt, other, "tcp rounds", ROUNDS, &stop, round, || {
            (&*client).write_all(b"!").unwrap()
        });
        join(writer);
    });
}

//! The edges of `Source` (src/io/source.rs) that the socket tests passed
//! over, each found by a mutant that survived them:
//!
//! - the short-read mark is for reads only and for the read's own sequence
//!   number: a write after a short read sends at once, and data whose event
//!   the worker handled after a short read is read at once;
//! - a waiter that leaves a socket's queue (cancelled, timed out) takes
//!   itself out and nobody else: the others still get the next event, and
//!   the event does not wake the one that left;
//! - an unpark that is not an event makes a read with a timeout try again,
//!   not time out; an operation failing with `Interrupted` is tried again;
//! - a plain thread waits in `poll(2)`: a signal does not end its wait, an
//!   error of `poll` itself does, and it sleeps until the socket is ready
//!   (no 1 ms polls, no spinning).
//!
//! "Parked" and "asleep" are read, not guessed: on a one-worker runtime a
//! coroutine sets a flag right before the call that parks and the test then
//! waits until the worker sleeps in `epoll_wait`; a plain thread is seen
//! asleep in `poll(2)` in /proc. That an event has been handled is known by
//! a second socket: the test writes to it after the first, the epoll ready
//! list keeps that order, and the coroutine reads it. A call left waiting
//! for an event that never comes ends at its timeout (`GIVE_UP`) with the
//! wrong result, or is seen unfinished once the worker sleeps again; all of
//! it under a watchdog or in a child process with a timeout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Once, mpsc};
use std::thread;
use std::time::Duration;

use common::{
    ChildSetup, EPOLL_WAITS, POLLS, WATCHDOG, asleep_in, assert_cancelled, child_mode, gettid,
    join, report, runtime, voluntary_switches, wait_for, wait_until_workers_sleep, watchdog,
    worker_tids,
};
use fibra::io::Pollable;
use fibra::net::UnixStream;

/// The timeout of every call that a bug would leave waiting for an event
/// that never comes (it then fails with `WouldBlock`). The calls never
/// wait for it when all is well; generous, as the test's own steps run
/// while they wait on a loaded machine.
const GIVE_UP: Duration = Duration::from_secs(10);

/// How long a waiting plain thread is watched for wakes.
const WINDOW: Duration = Duration::from_millis(200);

/// How this file's child runs: killed, failing the test, after 15 s.
const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(15),
    env: &[],
};

/// A read's or write's outcome, comparable.
type Outcome = Result<Vec<u8>, ErrorKind>;

/// A connected pair: a fibra end and a blocking std peer.
fn stream_pair() -> (UnixStream, StdUnixStream) {
    let (ours, peer) = StdUnixStream::pair().expect("socketpair");
    (UnixStream::from(ours), peer)
}

/// Reads once into a buffer of `len` bytes.
fn read_once(stream: &UnixStream, len: usize) -> Outcome {
    let mut buf = vec![0; len];
    let mut reader = stream;
    match reader.read(&mut buf) {
        Ok(n) => Ok(buf[..n].to_vec()),
        Err(e) => Err(e.kind()),
    }
}

/// Sets `SO_SNDBUF` (the kernel doubles it).
fn set_send_buffer(fd: RawFd, bytes: libc::c_int) {
    // SAFETY: setsockopt reads one c_int from a live local.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_SNDBUF: {}", std::io::Error::last_os_error());
}

/// Whether `poll(2)` calls `fd` writable right now.
fn writable_now(fd: RawFd) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    pollfd.revents & libc::POLLOUT != 0
}

/// Waits until `flag` is set and then until the one worker of `prefix`
/// sleeps: the coroutine that set the flag has parked in its next call.
fn wait_until_parked(flag: &AtomicBool, prefix: &str) {
    wait_for("the coroutine reached its call", WATCHDOG, || {
        flag.load(Ordering::SeqCst)
    });
    wait_until_workers_sleep(prefix, 1);
}

// ---------------------------------------------------------------------------
// The short-read mark

#[test]
fn a_write_after_a_short_read_is_sent_without_waiting() {
    // After a short read at read sequence number r the mark says "empty
    // since r". Here the write sequence number is r too when the coroutine
    // writes: the socket registered while neither readable nor writable
    // (no event), the peer's data came while it was unwritable (a read
    // event alone: r = 1), and the peer's read of our pending bytes made it
    // writable (a write event alone: w = 1). A write that took the read
    // mark for its own would wait for a write event that never comes.
    const PREFIX: &str = "se-write";
    const PENDING: usize = 3000;
    watchdog(PREFIX, WATCHDOG, || {
        let rt = runtime(1, PREFIX);
        let (s, mut peer) = stream_pair();
        let (b, mut b_peer) = stream_pair();
        let fd = s.as_raw_fd();
        // 8 KiB: one 3000-byte chunk (about 4 KiB of buffer) is more than
        // the quarter below which a Unix socket polls writable.
        set_send_buffer(fd, 4096);
        s.set_write_timeout(Some(GIVE_UP)).unwrap();
        let reading = Arc::new(AtomicBool::new(false));
        let synced = Arc::new(AtomicBool::new(false));
        let coroutine = {
            let (reading, synced) = (Arc::clone(&reading), Arc::clone(&synced));
            rt.spawn(move || {
                let mut writer = &s;
                assert_eq!(writer.write(&[7; PENDING]).unwrap(), PENDING);
                reading.store(true, Ordering::SeqCst);
                let short = read_once(&s, 10);
                synced.store(true, Ordering::SeqCst);
                let sync = read_once(&b, 1);
                let write = match writer.write(b"y") {
                    Ok(n) => Ok(n),
                    Err(e) => Err(e.kind()),
                };
                (short, sync, write)
            })
        };
        wait_until_parked(&reading, PREFIX);
        assert!(
            !writable_now(fd),
            "premise: {PENDING} unread bytes make the socket unwritable"
        );
        peer.write_all(b"hello").unwrap();
        wait_until_parked(&synced, PREFIX);
        let mut pending = [0; PENDING];
        peer.read_exact(&mut pending).unwrap();
        b_peer.write_all(b"x").unwrap();
        let (short, sync, write) = join(coroutine);
        assert_eq!(short, Ok(b"hello".to_vec()));
        assert_eq!(sync, Ok(b"x".to_vec()));
        assert_eq!(write, Ok(1), "the write after the short read");
        let mut sent = [0; 1];
        peer.read_exact(&mut sent).unwrap();
        assert_eq!(&sent, b"y");
    });
}

#[test]
fn data_whose_event_came_after_a_short_read_is_read_at_once() {
    // A short read at r marks the socket empty since r; data that arrives
    // next raises an event (r + 1). The worker handles it before the
    // coroutine reads again, so no event is left to wait for: the read
    // must see that the number moved and call recv.
    const PREFIX: &str = "se-mark";
    watchdog(PREFIX, WATCHDOG, || {
        let rt = runtime(1, PREFIX);
        let (s, mut peer) = stream_pair();
        let (b, mut b_peer) = stream_pair();
        s.set_read_timeout(Some(GIVE_UP)).unwrap();
        let reading = Arc::new(AtomicBool::new(false));
        let synced = Arc::new(AtomicBool::new(false));
        let coroutine = {
            let (reading, synced) = (Arc::clone(&reading), Arc::clone(&synced));
            rt.spawn(move || {
                reading.store(true, Ordering::SeqCst);
                let short = read_once(&s, 10);
                synced.store(true, Ordering::SeqCst);
                let sync = read_once(&b, 1);
                let next = read_once(&s, 10);
                (short, sync, next)
            })
        };
        wait_until_parked(&reading, PREFIX);
        peer.write_all(b"hello").unwrap();
        wait_until_parked(&synced, PREFIX);
        peer.write_all(b"world").unwrap();
        b_peer.write_all(b"x").unwrap();
        let (short, sync, next) = join(coroutine);
        assert_eq!(short, Ok(b"hello".to_vec()));
        assert_eq!(sync, Ok(b"x".to_vec()));
        assert_eq!(next, Ok(b"world".to_vec()), "the read after the short read");
    });
}

// ---------------------------------------------------------------------------
// Leaving the queue

#[test]
fn a_waiter_that_leaves_takes_only_itself_out_of_the_queue() {
    // Three readers queue on one socket (the first in the inline slot, two
    // behind it); the middle one is cancelled. The other two must both be
    // woken by the next event: each reads one of the two bytes.
    const PREFIX: &str = "se-queue";
    watchdog(PREFIX, WATCHDOG, || {
        let rt = runtime(1, PREFIX);
        let (s, mut peer) = stream_pair();
        s.set_read_timeout(Some(GIVE_UP)).unwrap();
        let s = Arc::new(s);
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let reading = Arc::new(AtomicBool::new(false));
                let handle = {
                    let (s, reading) = (Arc::clone(&s), Arc::clone(&reading));
                    rt.spawn(move || {
                        reading.store(true, Ordering::SeqCst);
                        read_once(&s, 1)
                    })
                };
                wait_until_parked(&reading, PREFIX);
                handle
            })
            .collect();
        let [first, middle, last] = <[_; 3]>::try_from(readers).ok().unwrap();
        middle.cancel();
        assert_cancelled("the middle reader", middle);
        peer.write_all(b"ab").unwrap();
        // The event has been handled and everything it woke has run (a
        // reader left out would still get its byte, at its deadline: a
        // wait that timed out after an event counts as woken).
        wait_until_workers_sleep(PREFIX, 1);
        assert_eq!(
            [first.is_finished(), last.is_finished()],
            [true, true],
            "the first and last readers woken by the event"
        );
        let mut got = vec![join(first), join(last)];
        got.sort();
        assert_eq!(got, vec![Ok(b"a".to_vec()), Ok(b"b".to_vec())]);
    });
}

#[test]
fn an_event_after_a_timed_out_read_does_not_wake_that_coroutine() {
    // A read that timed out has left the queue: the next event on the
    // socket wakes its current readers only, not a coroutine that gave up
    // on it and now waits for something else (here a plain `park`, which
    // returns once per unpark).
    const PREFIX: &str = "se-stale";
    watchdog(PREFIX, WATCHDOG, || {
        let rt = runtime(1, PREFIX);
        let (s, mut peer) = stream_pair();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let s = Arc::new(s);
        let gave_up = Arc::new(AtomicBool::new(false));
        let go = Arc::new(AtomicBool::new(false));
        let quitter = {
            let (s, gave_up, go) = (Arc::clone(&s), Arc::clone(&gave_up), Arc::clone(&go));
            rt.spawn(move || {
                let timed_out = read_once(&s, 1);
                gave_up.store(true, Ordering::SeqCst);
                let mut returns = 0;
                while !go.load(Ordering::SeqCst) {
                    fibra::park();
                    returns += 1;
                }
                (timed_out, returns)
            })
        };
        wait_until_parked(&gave_up, PREFIX);
        s.set_read_timeout(Some(GIVE_UP)).unwrap();
        let reading = Arc::new(AtomicBool::new(false));
        let reader = {
            let (s, reading) = (Arc::clone(&s), Arc::clone(&reading));
            rt.spawn(move || {
                reading.store(true, Ordering::SeqCst);
                read_once(&s, 1)
            })
        };
        wait_until_parked(&reading, PREFIX);
        peer.write_all(b"x").unwrap();
        assert_eq!(join(reader), Ok(b"x".to_vec()));
        // Whatever the event woke has run and parked again.
        wait_until_workers_sleep(PREFIX, 1);
        go.store(true, Ordering::SeqCst);
        quitter.coroutine().unpark();
        assert_eq!(
            join(quitter),
            (Err(ErrorKind::WouldBlock), 1),
            "(the read, park returns): only the test's unpark ends a park"
        );
    });
}

// ---------------------------------------------------------------------------
// Wakes that are not events

#[test]
fn an_unpark_that_is_not_an_event_does_not_time_a_read_out() {
    // `Source::wait` may return early (the coroutine was unparked by
    // someone else); the read then tries again and waits on, and only its
    // deadline may make it fail with `WouldBlock`.
    const PREFIX: &str = "se-unpark";
    watchdog(PREFIX, WATCHDOG, || {
        let rt = runtime(1, PREFIX);
        let worker = worker_tids(PREFIX, 1)[0];
        let (s, mut peer) = stream_pair();
        s.set_read_timeout(Some(GIVE_UP)).unwrap();
        // Kept open here too, so that the peer's write succeeds whatever
        // the read did.
        let s = Arc::new(s);
        let reading = Arc::new(AtomicBool::new(false));
        let reader = {
            let (s, reading) = (Arc::clone(&s), Arc::clone(&reading));
            rt.spawn(move || {
                reading.store(true, Ordering::SeqCst);
                read_once(&s, 16)
            })
        };
        wait_until_parked(&reading, PREFIX);
        let slept = voluntary_switches(worker);
        reader.coroutine().unpark();
        // The worker woke for the unpark, ran the reader and slept again.
        wait_for("the worker ran the unparked reader", WATCHDOG, || {
            voluntary_switches(worker) > slept && asleep_in(worker, EPOLL_WAITS)
        });
        peer.write_all(b"hello").unwrap();
        assert_eq!(
            join(reader),
            Ok(b"hello".to_vec()),
            "the read that was unparked"
        );
    });
}

#[test]
fn an_operation_failing_with_interrupted_is_tried_again() {
    let (ours, _peer) = StdUnixStream::pair().expect("socketpair");
    let pollable = Pollable::new(ours).expect("wrap a Unix stream");
    let mut calls = 0;
    let result = pollable.read_with(|_| {
        calls += 1;
        match calls {
            1 => Err(ErrorKind::Interrupted.into()),
            _ => Ok(calls),
        }
    });
    assert_eq!(result.map_err(|e| e.kind()), Ok(2));
}

// ---------------------------------------------------------------------------
// Plain threads in poll(2)

/// How many signals `count_signal` has handled.
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Installs `count_signal` for SIGUSR2, without `SA_RESTART` (which would
/// not restart `poll(2)` anyway).
fn install_signal_counter() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler only touches an
        // atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = count_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            let rc = libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut());
            assert_eq!(rc, 0, "sigaction: {}", std::io::Error::last_os_error());
        }
    });
}

/// `voluntary_switches`, or None once the thread has exited.
fn switches_if_alive(tid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
}

/// A plain thread reading `s` (a fibra socket, so it waits in `poll(2)`),
/// with its thread id. The caller keeps `s` open too, so that its peer's
/// write succeeds whatever the read did.
fn plain_reader(s: &Arc<UnixStream>) -> (thread::JoinHandle<Outcome>, i32) {
    let s = Arc::clone(s);
    let (tid_tx, tid_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        read_once(&s, 16)
    });
    (handle, tid_rx.recv().unwrap())
}

#[test]
fn a_signal_does_not_end_a_plain_threads_wait() {
    // poll(2) fails with EINTR when a handled signal arrives, whatever
    // SA_RESTART says; the wait goes on.
    install_signal_counter();
    watchdog("a_signal_does_not_end", WATCHDOG, || {
        let (s, mut peer) = stream_pair();
        let s = Arc::new(s);
        let (reader, tid) = plain_reader(&s);
        wait_for("the reader asleep in poll(2)", WATCHDOG, || {
            asleep_in(tid, POLLS)
        });
        let slept = voluntary_switches(tid);
        let before = SIGNALS.load(Ordering::SeqCst);
        // SAFETY: the thread is alive (it has not been joined), and SIGUSR2
        // has a handler.
        let rc = unsafe { libc::pthread_kill(reader.as_pthread_t(), libc::SIGUSR2) };
        assert_eq!(rc, 0, "pthread_kill");
        wait_for("the reader handled the signal", WATCHDOG, || {
            SIGNALS.load(Ordering::SeqCst) > before
        });
        // Back in poll(2) (a new sleep), or returned.
        wait_for("the reader waits again or returned", WATCHDOG, || {
            reader.is_finished()
                || (asleep_in(tid, POLLS) && switches_if_alive(tid).is_some_and(|n| n > slept))
        });
        peer.write_all(b"hello").unwrap();
        assert_eq!(
            reader.join().unwrap(),
            Ok(b"hello".to_vec()),
            "the read that a signal interrupted"
        );
    });
}

#[test]
fn a_plain_threads_wait_returns_the_error_poll_fails_with() {
    // poll(2) refuses more fds than RLIMIT_NOFILE allows (EINVAL): with a
    // limit of 0, even the one. In a child process, as every other test
    // would fail to open a socket under that limit.
    const NAME: &str = "a_plain_threads_wait_returns_the_error_poll_fails_with";
    if child_mode().as_deref() == Some("nofile-0") {
        let (s, _peer) = stream_pair();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read or write one rlimit in a local.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            limit.rlim_cur = 0;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
        report(&format!("outcome={:?}", read_once(&s, 16)));
        return;
    }
    let run = CHILD.run(NAME, "nofile-0");
    assert!(run.status.success(), "{run}");
    assert_eq!(run.reported("outcome"), "Err(InvalidInput)", "{run}");
}

/// A plain thread reads `s` (with `timeout`): it must sleep in `poll(2)`
/// and not wake until the peer writes.
fn plain_thread_sleeps_until_ready(what: &'static str, timeout: Option<Duration>) {
    watchdog(what, WATCHDOG, move || {
        let (s, mut peer) = stream_pair();
        s.set_read_timeout(timeout).unwrap();
        let s = Arc::new(s);
        let (reader, tid) = plain_reader(&s);
        // A thread that spins (a zero poll timeout) is never seen asleep.
        wait_for("the reader asleep in poll(2)", GIVE_UP / 2, || {
            asleep_in(tid, POLLS)
        });
        let slept = voluntary_switches(tid);
        thread::sleep(WINDOW);
        let woke = voluntary_switches(tid) - slept;
        assert_eq!(woke, 0, "wakes of the waiting reader in {WINDOW:?}");
        peer.write_all(b"hello").unwrap();
        assert_eq!(reader.join().unwrap(), Ok(b"hello".to_vec()));
    });
}

#[test]
fn a_plain_thread_waiting_without_a_timeout_sleeps_in_poll() {
    plain_thread_sleeps_until_ready("without_a_timeout", None);
}

#[test]
fn a_plain_thread_waiting_with_a_timeout_sleeps_in_poll() {
    plain_thread_sleeps_until_ready("with_a_timeout", Some(GIVE_UP));
}

//! The per-worker epoll poller (src/io/poller.rs) through the public API:
//! idle workers sleep in `epoll_wait` until woken (no periodic wakeups), an
//! fd that epoll refuses gives a clear error instead of a wait that never
//! ends, and the readiness state of fds closed on a thread other than their
//! poller's (kept until no batch of events can name them) is freed, not
//! piled up (checked in a child process, by its resident memory).
//!
//! These are what a mutation run over poller.rs found untested (see
//! TESTING.md).

mod common;

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{
    ChildSetup, EPOLL_WAITS, WATCHDOG, asleep_in, child_mode, report, resident_bytes, runtime,
    voluntary_switches, wait_until_workers_sleep, watchdog, worker_tids,
};
use fibra::io::Pollable;

#[test]
fn idle_workers_sleep_until_woken() {
    const WINDOW: Duration = Duration::from_millis(300);
    let rt = runtime(2, "idle");
    // Give each worker something to do once, then nothing.
    for _ in 0..4 {
        rt.block_on(|| ());
    }
    wait_until_workers_sleep("idle", 2);
    let tids = worker_tids("idle", 2);
    let before: Vec<u64> = tids.iter().map(|&tid| voluntary_switches(tid)).collect();
    thread::sleep(WINDOW);
    let woken: Vec<u64> = tids
        .iter()
        .zip(&before)
        .map(|(&tid, before)| voluntary_switches(tid) - before)
        .collect();
    let asleep = tids.iter().all(|&tid| asleep_in(tid, EPOLL_WAITS));
    drop(rt);
    eprintln!("idle workers went back to sleep {woken:?} times in {WINDOW:?}");
    assert!(asleep, "the idle workers left epoll_wait");
    // Each wake ends in a new sleep (a voluntary switch); an idle runtime
    // has nothing to wake for. One spare for whatever the kernel does.
    for (worker, count) in woken.iter().enumerate() {
        assert!(
            *count <= 1,
            "idle worker {worker} woke {count} times in {WINDOW:?}: {woken:?}"
        );
    }
}

#[test]
fn an_fd_that_epoll_refuses_gives_an_error_not_an_endless_wait() {
    // A character device without poll support: epoll_ctl says EPERM.
    let null = std::fs::File::open("/dev/null").expect("open /dev/null");
    let pollable = Pollable::new(null).expect("wrap /dev/null");
    let error = watchdog(
        "an_fd_that_epoll_refuses_gives_an_error_not_an_endless_wait",
        WATCHDOG,
        move || {
            let rt = runtime(1, "refused");
            // An operation that would block makes the coroutine wait for
            // the fd, which registers it with the worker's epoll.
            let error = rt
                .block_on(move || {
                    pollable
                        .read_with(|_| -> std::io::Result<()> { Err(ErrorKind::WouldBlock.into()) })
                })
                .expect_err("epoll cannot wait on /dev/null");
            drop(rt);
            error
        },
    );
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    assert!(error.to_string().contains("cannot be waited on"), "{error}");
}

/// How this file's child runs: killed, failing the test, after 60 s.
const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(60),
    env: &[],
};

/// Sockets closed off their poller's thread in the child.
const DROPPED: usize = 50_000;
/// The resident memory the child's drops may add (4 KiB were seen). Kept
/// forever, the sockets' readiness states (about 100 bytes each) add 5 MB.
const MAY_GROW: usize = 1 << 20;

/// The child: many times over, a coroutine waits on a fresh socket (which
/// registers it with the worker's poller), a plain thread makes it ready,
/// and the coroutine hands the socket to another plain thread, which closes
/// it. Returns the resident memory `DROPPED` such rounds add after 1,000
/// rounds of warm-up, measured before the runtime (and its pollers) goes.
fn drop_sockets_off_thread() -> usize {
    let rt = runtime(1, "retire");
    let (to_closer, closer_inbox) = mpsc::channel::<(Pollable<UnixStream>, UnixStream)>();
    let (to_waker, waker_inbox) = mpsc::channel::<UnixStream>();
    let closer = thread::spawn(move || {
        for (waited_on, peer) in closer_inbox {
            drop(waited_on);
            drop(peer);
        }
    });
    let waker = thread::spawn(move || {
        for mut peer in waker_inbox {
            peer.write_all(b"x").expect("write to the peer");
        }
    });
    let grown = rt.block_on(move || {
        let round = || {
            let (mine, peer) = UnixStream::pair().expect("socketpair");
            let mine = Pollable::new(mine).expect("wrap the socket");
            to_waker.send(peer.try_clone().unwrap()).unwrap();
            mine.readable().expect("the peer wrote");
            to_closer.send((mine, peer)).unwrap();
        };
        (0..1_000).for_each(|_| round());
        let before = resident_bytes();
        (0..DROPPED).for_each(|_| round());
        resident_bytes().saturating_sub(before)
    });
    closer.join().unwrap();
    waker.join().unwrap();
    drop(rt);
    grown
}

#[test]
fn sockets_closed_off_their_pollers_thread_are_freed() {
    const NAME: &str = "sockets_closed_off_their_pollers_thread_are_freed";
    if child_mode().as_deref() == Some("retire") {
        report(&format!("grown={}", drop_sockets_off_thread()));
        std::process::exit(0);
    }
    let run = CHILD.run(NAME, "retire");
    assert!(run.status.success(), "the child exits 0; {run}");
    let grown: usize = run.reported("grown").parse().expect("a number");
    eprintln!("{DROPPED} sockets closed off their poller's thread: resident memory +{grown} B");
    assert!(
        grown <= MAY_GROW,
        "{DROPPED} sockets closed off their poller's thread grew resident memory by \
         {grown} bytes: their readiness states are never freed; {run}"
    );
}

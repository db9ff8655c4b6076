//! Socket timeouts end when they should: TCP read, write and
//! `connect_timeout`, UDP receive, Unix-stream read and write, Unix-datagram
//! receive and `send_to` a full receiver; each on a plain thread and in a
//! coroutine (while the worker keeps running others). A timed-out call is
//! `WouldBlock` (`TimedOut` for `connect_timeout`), as std's are.
//!
//! Each call is timed several times and the waits are held to three
//! bounds (`assert_waits`): none ends before the timeout (too early is a
//! bug), the median ends within `TIGHT` after it (a timeout that fires
//! late, or is stretched, is caught), and only the longest gets the
//! generous `SLACK` a loaded 2-core machine needs.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    LOCAL, SLACK, TempDir, WATCHDOG, accept_queue, fill_unix_datagram_receiver, full_backlog, join,
    pair, runtime, wait_for, watchdog,
};
use fibra::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};

/// How late the median wait may end.
const TIGHT: Duration = Duration::from_millis(100);
/// Waits timed per call and context.
const SAMPLES: usize = 5;

/// Holds the waits of `what` (a call with `timeout`) to the three bounds.
fn assert_waits(what: &str, timeout: Duration, mut waits: Vec<Duration>) {
    waits.sort();
    let (shortest, median, longest) = (waits[0], waits[waits.len() / 2], waits[waits.len() - 1]);
    assert!(
        shortest >= timeout,
        "{what} with a {timeout:?} timeout gave up early, after {shortest:?} (waits {waits:?})"
    );
    assert!(
        median <= timeout + TIGHT,
        "{what} with a {timeout:?} timeout: median wait {median:?}, more than {TIGHT:?} \
         late (waits {waits:?})"
    );
    assert!(
        longest <= timeout + SLACK,
        "{what} with a {timeout:?} timeout: longest wait {longest:?} (waits {waits:?})"
    );
}

/// Times `SAMPLES` calls of `call`, each of which must fail with `kind`.
fn time_failures(
    what: &str,
    kind: ErrorKind,
    mut call: impl FnMut() -> std::io::Result<()>,
) -> Vec<Duration> {
    (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            let error = call().expect_err(what);
            let waited = start.elapsed();
            assert_eq!(error.kind(), kind, "{what}: {error}");
            waited
        })
        .collect()
}

/// Runs `check` on this thread, then in a coroutine on a one-worker
/// runtime beside one that sleeps 5 ms in a loop: its ticks show the wait
/// parked instead of blocking the worker.
fn on_a_thread_and_in_a_coroutine(prefix: &str, check: impl Fn() + Send + Sync + 'static) {
    let check = Arc::new(check);
    check();
    let rt = runtime(1, prefix);
    let ticks = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (ticks, done) = (Arc::clone(&ticks), Arc::clone(&done));
        rt.spawn(move || {
            while !done.load(Ordering::SeqCst) {
                ticks.fetch_add(1, Ordering::SeqCst);
                fibra::sleep(Duration::from_millis(5));
            }
        })
    };
    rt.block_on(move || check());
    done.store(true, Ordering::SeqCst);
    join(ticker);
    assert!(
        ticks.load(Ordering::SeqCst) >= 2,
        "the other coroutine ran during the waits"
    );
}

// ---------------------------------------------------------------------------
// TCP

#[test]
fn tcp_connect_timeout_to_a_listener_dropping_syns_is_timed_out_on_time() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    watchdog("connect_timeout", WATCHDOG, || {
        let full = full_backlog();
        let addr: SocketAddr = full.addr;
        on_a_thread_and_in_a_coroutine("nto-conn", move || {
            let waits = time_failures("connect_timeout", ErrorKind::TimedOut, || {
                TcpStream::connect_timeout(&addr, TIMEOUT).map(drop)
            });
            assert_waits("connect_timeout", TIMEOUT, waits);
        });
        // Once the queued connection is accepted, there is room again.
        let (_accepted, _) = full.listener.accept().unwrap();
        wait_for("the accept queue empties", SLACK, || {
            accept_queue(&full.listener).0 == 0
        });
        let rt = runtime(1, "nto-conn2");
        let stream = rt.block_on(move || TcpStream::connect_timeout(&addr, SLACK));
        stream.expect("connect once the queue has room");
        assert_eq!(
            TcpStream::connect_timeout(&addr, Duration::ZERO)
                .expect_err("a zero timeout")
                .kind(),
            ErrorKind::InvalidInput
        );
    });
}

#[test]
fn tcp_read_timeout_gives_would_block_on_time_and_the_stream_still_works() {
    const TIMEOUT: Duration = Duration::from_millis(150);
    watchdog("read_timeout", WATCHDOG, || {
        let (client, server) = pair();
        let client = Arc::new(client);
        {
            let client = Arc::clone(&client);
            on_a_thread_and_in_a_coroutine("nto-rd", move || {
                client.set_read_timeout(Some(TIMEOUT)).unwrap();
                assert_eq!(client.read_timeout().unwrap(), Some(TIMEOUT));
                let waits = time_failures("a TCP read", ErrorKind::WouldBlock, || {
                    (&*client).read(&mut [0u8; 16]).map(drop)
                });
                assert_waits("a TCP read", TIMEOUT, waits);
            });
        }
        // Data that arrives within the timeout is read.
        (&server).write_all(b"late but in time").unwrap();
        let mut buf = [0u8; 16];
        (&*client)
            .read_exact(&mut buf)
            .expect("read within the timeout");
        assert_eq!(&buf, b"late but in time");
        assert_eq!(
            server
                .set_read_timeout(Some(Duration::ZERO))
                .expect_err("zero")
                .kind(),
            ErrorKind::InvalidInput
        );
    });
}

/// Times `SAMPLES` writes that time out on `write` (the peer never reads,
/// so once the buffers are full every write waits out its timeout; one
/// that gets some room first is not a sample).
fn time_write_failures(
    what: &str,
    mut write: impl FnMut(&[u8]) -> std::io::Result<usize>,
) -> Vec<Duration> {
    let chunk = vec![0x5a_u8; 256 << 10];
    let mut written = 0usize;
    let mut waits = Vec::new();
    while waits.len() < SAMPLES {
        let start = Instant::now();
        match write(&chunk) {
            Ok(n) => written += n,
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::WouldBlock, "{what}: {error}");
                waits.push(start.elapsed());
            }
        }
        assert!(
            written < 1 << 30,
            "{what}: 1 GiB to a peer that never reads"
        );
    }
    assert!(written > 0, "{what}: the buffers took something first");
    waits
}

#[test]
fn tcp_write_timeout_gives_would_block_on_time_when_the_peer_never_reads() {
    const TIMEOUT: Duration = Duration::from_millis(150);
    watchdog("write_timeout", WATCHDOG, || {
        on_a_thread_and_in_a_coroutine("nto-wr", || {
            let (client, _server) = pair();
            client.set_write_timeout(Some(TIMEOUT)).unwrap();
            assert_eq!(client.write_timeout().unwrap(), Some(TIMEOUT));
            let waits = time_write_failures("a TCP write", |chunk| (&client).write(chunk));
            assert_waits("a TCP write", TIMEOUT, waits);
        });
    });
}

// ---------------------------------------------------------------------------
// UDP

#[test]
fn udp_receive_timeout_gives_would_block_on_time() {
    const TIMEOUT: Duration = Duration::from_millis(100);
    watchdog("udp-timeout", WATCHDOG, || {
        on_a_thread_and_in_a_coroutine("nto-udp", || {
            let socket = UdpSocket::bind(LOCAL).unwrap();
            socket.set_read_timeout(Some(TIMEOUT)).unwrap();
            assert_eq!(socket.read_timeout().unwrap(), Some(TIMEOUT));
            let mut buf = [0u8; 8];
            let waits = time_failures("UdpSocket::recv_from", ErrorKind::WouldBlock, || {
                socket.recv_from(&mut buf).map(drop)
            });
            assert_waits("UdpSocket::recv_from", TIMEOUT, waits);
            let waits = time_failures("UdpSocket::recv", ErrorKind::WouldBlock, || {
                socket.recv(&mut buf).map(drop)
            });
            assert_waits("UdpSocket::recv", TIMEOUT, waits);
        });

        let socket = UdpSocket::bind(LOCAL).unwrap();
        assert_eq!(
            socket
                .set_read_timeout(Some(Duration::ZERO))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        socket.set_write_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(socket.write_timeout().unwrap(), Some(TIMEOUT));
        socket.set_read_timeout(None).unwrap();
        assert_eq!(socket.read_timeout().unwrap(), None);
        // A clone starts with the same timeouts.
        assert_eq!(
            socket.try_clone().unwrap().write_timeout().unwrap(),
            Some(TIMEOUT)
        );
    });
}

// ---------------------------------------------------------------------------
// Unix-domain sockets

#[test]
fn unix_stream_read_and_write_timeouts_give_would_block_on_time() {
    const TIMEOUT: Duration = Duration::from_millis(100);
    watchdog("unix-stream-timeout", WATCHDOG, || {
        on_a_thread_and_in_a_coroutine("nto-ustr", || {
            let (a, _b) = UnixStream::pair().unwrap();
            a.set_read_timeout(Some(TIMEOUT)).unwrap();
            assert_eq!(a.read_timeout().unwrap(), Some(TIMEOUT));
            let waits = time_failures("a Unix-stream read", ErrorKind::WouldBlock, || {
                (&a).read(&mut [0u8; 4]).map(drop)
            });
            assert_waits("a Unix-stream read", TIMEOUT, waits);

            a.set_write_timeout(Some(TIMEOUT)).unwrap();
            assert_eq!(
                a.try_clone().unwrap().write_timeout().unwrap(),
                Some(TIMEOUT)
            );
            let waits = time_write_failures("a Unix-stream write", |chunk| (&a).write(chunk));
            assert_waits("a Unix-stream write", TIMEOUT, waits);

            // Non-blocking mode does not wait at all.
            a.set_nonblocking(true).unwrap();
            let start = Instant::now();
            assert_eq!(
                (&a).read(&mut [0u8; 4]).unwrap_err().kind(),
                ErrorKind::WouldBlock
            );
            assert!(start.elapsed() < TIMEOUT);
        });
    });
}

/// A receive times out on `receiver`, and so does a `send_to` it while
/// another sender keeps it full (a wait fibra sleeps out in steps, as no
/// event tells when the receiver has room).
fn check_datagram_timeouts(receiver: &UnixDatagram, path: &Path) {
    const TIMEOUT: Duration = Duration::from_millis(100);
    receiver.set_read_timeout(Some(TIMEOUT)).unwrap();
    let waits = time_failures("UnixDatagram::recv_from", ErrorKind::WouldBlock, || {
        receiver.recv_from(&mut [0u8; 4]).map(drop)
    });
    assert_waits("UnixDatagram::recv_from", TIMEOUT, waits);

    let filled = fill_unix_datagram_receiver(path);
    let sender = UnixDatagram::unbound().unwrap();
    sender.set_write_timeout(Some(TIMEOUT)).unwrap();
    let waits = time_failures("UnixDatagram::send_to", ErrorKind::WouldBlock, || {
        sender.send_to(b"no room", path).map(drop)
    });
    assert_waits("UnixDatagram::send_to a full receiver", TIMEOUT, waits);
    for expected in &filled {
        let mut buf = [0u8; 32];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &expected[..]);
    }
}

#[test]
fn unix_datagram_receive_and_send_to_timeouts_give_would_block_on_time() {
    let dir = TempDir::new();
    let path = dir.join("timeouts.sock");
    watchdog("unix-dgram-timeout", WATCHDOG, move || {
        let receiver = Arc::new(UnixDatagram::bind(&path).unwrap());
        on_a_thread_and_in_a_coroutine("nto-udg", move || {
            check_datagram_timeouts(&receiver, &path)
        });
    });
}

//! A socket whose open file description was switched back to blocking mode
//! behind fibra's back — a `try_clone` twin converted into a std socket
//! clears `O_NONBLOCK` for both, as std code expects of its socket — must
//! still never block its worker: every call either passes `MSG_DONTWAIT`
//! or, where the kernel offers no such flag (`accept`), checks the mode
//! first.
//!
//! Each test parks one call on a one-worker runtime beside a coroutine that
//! ticks every millisecond, and requires the ticks to go on while the call
//! waits: a call blocked in the kernel stops the whole worker.

mod common;

use std::io::{Read, Write};
use std::net::{self as stdnet};
use std::os::fd::AsRawFd;
use std::os::unix::net as stdunix;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    LOCAL, TempDir, Ticker, WATCHDOG, is_nonblocking, join, listen, pair, runtime, wait_for,
    watchdog,
};
use fibra::net::{UdpSocket, UnixDatagram, UnixListener, UnixStream};

/// Ticks the worker must make while the call waits.
const TICKS: usize = 20;
/// How long the ticks may take on a loaded machine (they take ~20 ms).
const TICK_LIMIT: Duration = Duration::from_secs(5);

/// Runs `call` in a coroutine on a one-worker runtime beside a `Ticker`,
/// and fails unless the ticker makes `TICKS` ticks while `call` waits; then
/// runs `unblock` on this thread (which gives `call` what it waits for)
/// and returns both values. `fd` is the socket `call` waits on: it must be
/// in blocking mode (a twin made it so).
fn worker_keeps_running<T: Send + 'static, U>(
    prefix: &str,
    what: &str,
    fd: i32,
    call: impl FnOnce() -> T + Send + 'static,
    unblock: impl FnOnce() -> U,
) -> (T, U) {
    assert!(
        !is_nonblocking(fd),
        "{what}: the twin's conversion to std left the file non-blocking"
    );
    let rt = runtime(1, prefix);
    let ticker = rt.block_on(Ticker::start);
    let ticks = ticker.counter();
    let started = Arc::new(AtomicBool::new(false));
    let handle = {
        let started = Arc::clone(&started);
        rt.spawn(move || {
            started.store(true, Ordering::SeqCst);
            call()
        })
    };
    wait_for(&format!("{what} has started"), TICK_LIMIT, || {
        started.load(Ordering::SeqCst)
    });
    let before = ticks.load(Ordering::SeqCst);
    let deadline = Instant::now() + TICK_LIMIT;
    let ticked = loop {
        let now = ticks.load(Ordering::SeqCst);
        if now >= before + TICKS || Instant::now() > deadline {
            break now - before;
        }
        thread::sleep(Duration::from_millis(1));
    };
    let was_waiting = !handle.is_finished();
    // Give the call what it waits for either way, so that the runtime can
    // shut down.
    let unblocked = unblock();
    let value = join(handle);
    ticker.stop();
    assert!(was_waiting, "{what} returned without anything to return");
    assert!(
        ticked >= TICKS,
        "{what} blocked its worker: {ticked} ticks in {TICK_LIMIT:?} from the \
         coroutine beside it (wanted {TICKS}); the call waited in the kernel on a \
         file a std twin had switched to blocking mode"
    );
    (value, unblocked)
}

// ---------------------------------------------------------------------------
// The calls that had the gap

#[test]
fn unix_datagram_recv_parks_when_a_std_twin_made_the_file_blocking() {
    watchdog("twin_dgram_recv", WATCHDOG, || {
        let (a, b) = UnixDatagram::pair().unwrap();
        let twin: stdunix::UnixDatagram = b.try_clone().unwrap().into();
        let fd = b.as_raw_fd();
        let (got, sent) = worker_keeps_running(
            "tw-drecv",
            "UnixDatagram::recv",
            fd,
            move || {
                let mut buf = [0u8; 16];
                let n = b.recv(&mut buf).expect("recv");
                buf[..n].to_vec()
            },
            || a.send(b"datagram").unwrap(),
        );
        assert_eq!((got, sent), (b"datagram".to_vec(), 8));
        drop(twin);
    });
}

#[test]
fn unix_datagram_recv_from_parks_when_a_std_twin_made_the_file_blocking() {
    let dir = TempDir::new();
    let (receiver_path, sender_path) = (dir.join("receiver.sock"), dir.join("sender.sock"));
    watchdog("twin_dgram_recv_from", WATCHDOG, move || {
        let receiver = UnixDatagram::bind(&receiver_path).unwrap();
        let sender = UnixDatagram::bind(&sender_path).unwrap();
        let twin: stdunix::UnixDatagram = receiver.try_clone().unwrap().into();
        let fd = receiver.as_raw_fd();
        let ((got, from), _) = worker_keeps_running(
            "tw-dfrom",
            "UnixDatagram::recv_from",
            fd,
            move || {
                let mut buf = [0u8; 16];
                let (n, from) = receiver.recv_from(&mut buf).expect("recv_from");
                (buf[..n].to_vec(), from)
            },
            || sender.send_to(b"named", &receiver_path).unwrap(),
        );
        assert_eq!(got, b"named");
        assert_eq!(from.as_pathname(), Some(sender_path.as_path()));
        drop(twin);
    });
}

#[test]
fn tcp_accept_parks_when_a_std_twin_made_the_listener_blocking() {
    watchdog("twin_tcp_accept", WATCHDOG, || {
        let listener = listen();
        let addr = listener.local_addr().unwrap();
        let twin: stdnet::TcpListener = listener.try_clone().unwrap().into();
        let fd = listener.as_raw_fd();
        let (peer, client) = worker_keeps_running(
            "tw-tacc",
            "TcpListener::accept",
            fd,
            move || {
                let (stream, peer) = listener.accept().expect("accept");
                assert!(is_nonblocking(stream.as_raw_fd()), "accepted non-blocking");
                peer
            },
            || stdnet::TcpStream::connect(addr).unwrap(),
        );
        assert_eq!(peer, client.local_addr().unwrap());
        drop(twin);
    });
}

#[test]
fn unix_accept_parks_when_a_std_twin_made_the_listener_blocking() {
    let dir = TempDir::new();
    let path = dir.join("listener.sock");
    watchdog("twin_unix_accept", WATCHDOG, move || {
        let listener = UnixListener::bind(&path).unwrap();
        let twin: stdunix::UnixListener = listener.try_clone().unwrap().into();
        let fd = listener.as_raw_fd();
        let (mut stream, mut client) = worker_keeps_running(
            "tw-uacc",
            "UnixListener::accept",
            fd,
            move || listener.accept().expect("accept").0,
            || stdunix::UnixStream::connect(&path).unwrap(),
        );
        client.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        drop(twin);
    });
}

// ---------------------------------------------------------------------------
// Calls that pass MSG_DONTWAIT already (guards against a regression)

#[test]
fn stream_reads_peeks_and_udp_receives_park_when_a_std_twin_made_the_file_blocking() {
    watchdog("twin_others", WATCHDOG, || {
        let (client, server) = pair();
        let twin: stdnet::TcpStream = server.try_clone().unwrap().into();
        let fd = server.as_raw_fd();
        let (peeked, ()) = worker_keeps_running(
            "tw-peek",
            "TcpStream::peek",
            fd,
            move || {
                let mut buf = [0u8; 8];
                let n = server.peek(&mut buf).expect("peek");
                buf[..n].to_vec()
            },
            || (&client).write_all(b"peek").unwrap(),
        );
        assert_eq!(peeked, b"peek");
        drop(twin);

        let (a, b) = UnixStream::pair().unwrap();
        let twin: stdunix::UnixStream = b.try_clone().unwrap().into();
        let fd = b.as_raw_fd();
        let (read, ()) = worker_keeps_running(
            "tw-uread",
            "UnixStream::read",
            fd,
            move || {
                let mut buf = [0u8; 8];
                let n = (&b).read(&mut buf).expect("read");
                buf[..n].to_vec()
            },
            || (&a).write_all(b"unix").unwrap(),
        );
        assert_eq!(read, b"unix");
        drop(twin);

        let receiver = UdpSocket::bind(LOCAL).unwrap();
        let addr = receiver.local_addr().unwrap();
        let twin: stdnet::UdpSocket = receiver.try_clone().unwrap().into();
        let fd = receiver.as_raw_fd();
        let sender = UdpSocket::bind(LOCAL).unwrap();
        let ((got, from), ()) = worker_keeps_running(
            "tw-udp",
            "UdpSocket::recv_from",
            fd,
            move || {
                let mut buf = [0u8; 8];
                let (n, from) = receiver.recv_from(&mut buf).expect("recv_from");
                (buf[..n].to_vec(), from)
            },
            || assert_eq!(sender.send_to(b"udp", addr).unwrap(), 3),
        );
        assert_eq!(got, b"udp");
        assert_eq!(from, sender.local_addr().unwrap());
        drop(twin);
    });
}

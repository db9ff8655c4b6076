//! `fibra::net::{UnixListener, UnixStream, UnixDatagram}`, the
//! `std::os::unix::net` mirrors: a stream echoes a megabyte exactly across
//! a socket file, `pair` connects, a half-close gives the peer end of file
//! while the other direction still works, writing to a closed peer is
//! `BrokenPipe` (also with SIGPIPE at its default disposition, in a child
//! process), `connect` waits while the listener's backlog is full,
//! datagrams round-trip with their paths (beyond the receiver's queue
//! length, and while other senders fill it), a read parked while another
//! coroutine shuts the socket down wakes with end of file, and errors are
//! std's. (Timeouts: tests/net_timeouts.rs.)
//!
//! Every test runs under a watchdog, in its own directory under
//! `std::env::temp_dir()`, removed when the test ends.

mod common;

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    ChildSetup, TempDir, WATCHDOG, child_mode, fill_unix_datagram_receiver, pseudo_random, report,
    runtime, watchdog,
};
use fibra::net::{UnixDatagram, UnixListener, UnixStream};

/// How this file's children run.
const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(60),
    env: &[("RUST_BACKTRACE", "0")],
};

const SIGPIPE: i32 = 13;
const SIG_DFL: usize = 0;

const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

// SAFETY: glibc's `int listen(int, int)`, `sighandler_t signal(int,
// sighandler_t)` (a handler is a pointer-sized value; SIG_DFL is 0),
// `ssize_t write(int, const void *, size_t)` and `int clock_gettime(clockid_t,
// struct timespec *)` (a timespec is two 64-bit words on x86_64). libc is
// not a dev-dependency.
unsafe extern "C" {
    fn listen(fd: i32, backlog: i32) -> i32;
    fn signal(signum: i32, handler: usize) -> usize;
    fn write(fd: i32, buf: *const u8, len: usize) -> isize;
    fn clock_gettime(clock: i32, time: *mut [i64; 2]) -> i32;
}

/// How long the busy-waiting checks watch a waiting coroutine.
const IDLE_WAIT: Duration = Duration::from_millis(300);

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut time = [0i64; 2];
    // SAFETY: clock_gettime writes one timespec into `time`.
    assert_eq!(
        unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) },
        0
    );
    Duration::new(time[0] as u64, time[1] as u32)
}

/// Sleeps `IDLE_WAIT` in the calling coroutine, on a one-worker runtime,
/// and fails if the worker (running whoever else waits there) used a
/// quarter of that in CPU time meanwhile: the waiting must not spin.
fn assert_worker_idles_while_waiting(what: &str) {
    let before = thread_cpu_time();
    fibra::sleep(IDLE_WAIT);
    let used = thread_cpu_time() - before;
    assert!(
        used < IDLE_WAIT / 4,
        "{what}: the worker used {used:?} of CPU in {IDLE_WAIT:?} of waiting"
    );
}

/// Datagram `i` of a test sequence: its index, then bytes derived from it,
/// `len` in all.
fn datagram(i: u32, len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = i.to_le_bytes().into_iter().cycle().take(len).collect();
    for (k, b) in bytes.iter_mut().enumerate().skip(4) {
        *b = (i as usize * 31 + k * 7) as u8;
    }
    bytes
}

fn length_of(i: u32) -> usize {
    const LENGTHS: [usize; 7] = [0, 1, 4, 5, 700, 4096, 60_000];
    LENGTHS[i as usize % LENGTHS.len()]
}

fn read_exactly(mut stream: &UnixStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).unwrap();
    buf
}

// ---------------------------------------------------------------------------
// Streams

#[test]
fn a_stream_echoes_a_megabyte_exactly_across_a_socket_file() {
    const LEN: usize = 1024 * 1024 + 4321;
    let dir = TempDir::new();
    let path = dir.join("echo.sock");
    watchdog("unix-echo", WATCHDOG, move || {
        let rt = runtime(2, "unix-echo");
        rt.block_on(move || {
            let listener = UnixListener::bind(&path).unwrap();
            assert_eq!(
                listener.local_addr().unwrap().as_pathname(),
                Some(path.as_path())
            );
            let server = fibra::spawn(move || {
                let (mut stream, peer) = listener.accept().unwrap();
                assert!(peer.is_unnamed(), "{peer:?}");
                let mut buf = vec![0u8; 16 * 1024];
                let mut echoed = 0;
                loop {
                    let n = stream.read(&mut buf).unwrap();
                    if n == 0 {
                        return echoed;
                    }
                    stream.write_all(&buf[..n]).unwrap();
                    echoed += n;
                }
            });
            let client = UnixStream::connect(&path).unwrap();
            assert_eq!(
                client.peer_addr().unwrap().as_pathname(),
                Some(path.as_path())
            );
            assert!(client.local_addr().unwrap().is_unnamed());
            // Write from one coroutine while this one reads: the echo
            // fills both directions' buffers.
            let data = Arc::new(pseudo_random(LEN));
            let writer = fibra::spawn({
                let client = client.try_clone().unwrap();
                let data = Arc::clone(&data);
                move || {
                    (&client).write_all(&data).unwrap();
                    client.shutdown(Shutdown::Write).unwrap();
                }
            });
            let mut back = Vec::new();
            (&client).read_to_end(&mut back).unwrap();
            writer.join().unwrap();
            assert_eq!(server.join().unwrap(), LEN);
            assert_eq!(back.len(), LEN);
            assert!(back == *data, "the echo differs from what was sent");
        });
    });
}

#[test]
fn pair_connects_two_streams_both_ways() {
    watchdog("unix-pair", WATCHDOG, || {
        fibra::spawn(|| {
            let (mut a, mut b) = UnixStream::pair().unwrap();
            assert!(a.peer_addr().unwrap().is_unnamed());
            let peer = fibra::spawn(move || {
                let got = read_exactly(&b, 5);
                b.write_all(b"world").unwrap();
                let mut rest = Vec::new();
                b.read_to_end(&mut rest).unwrap();
                (got, rest)
            });
            a.write_all(b"hello").unwrap();
            assert_eq!(read_exactly(&a, 5), b"world");
            let n = a
                .write_vectored(&[IoSlice::new(b"vec"), IoSlice::new(b"tored")])
                .unwrap();
            assert_eq!(n, 8);
            drop(a);
            let (got, rest) = peer.join().unwrap();
            assert_eq!(got, b"hello");
            assert_eq!(rest, b"vectored");
        })
        .join()
        .unwrap();
    });
}

#[test]
fn shutting_down_writes_gives_the_peer_eof_while_the_other_direction_works() {
    watchdog("unix-half-close", WATCHDOG, || {
        fibra::spawn(|| {
            let (a, b) = UnixStream::pair().unwrap();
            (&a).write_all(b"last words").unwrap();
            a.shutdown(Shutdown::Write).unwrap();
            let peer = fibra::spawn(move || {
                let mut got = Vec::new();
                (&b).read_to_end(&mut got).unwrap(); // ends at a's shutdown
                (&b).write_all(b"still heard").unwrap();
                assert_eq!((&b).read(&mut [0u8; 4]).unwrap(), 0);
                got
            });
            assert_eq!(read_exactly(&a, 11), b"still heard");
            assert_eq!(peer.join().unwrap(), b"last words");
            assert_eq!((&a).write(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
        })
        .join()
        .unwrap();
    });
}

/// Every way of writing to a closed (or shut) peer, in a coroutine and on a
/// plain thread: the error kinds seen.
fn broken_pipe_kinds() -> Vec<String> {
    let kind = |e: std::io::Error| format!("{:?}", e.kind());
    let mut kinds = fibra::spawn(move || {
        let mut kinds = Vec::new();
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        kinds.push(kind((&a).write(b"x").unwrap_err()));
        kinds.push(kind(
            (&a).write_vectored(&[IoSlice::new(b"x")]).unwrap_err(),
        ));

        let (a, _b) = UnixStream::pair().unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        kinds.push(kind((&a).write(b"x").unwrap_err()));

        // A writer parked on a full buffer when the peer goes away.
        let (a, b) = UnixStream::pair().unwrap();
        let writer = fibra::spawn(move || (&a).write_all(&vec![7u8; 8 << 20]).unwrap_err());
        let mut first = [0u8; 1];
        (&b).read_exact(&mut first).unwrap();
        drop(b);
        kinds.push(kind(writer.join().unwrap()));

        let (a, _b) = UnixDatagram::pair().unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        kinds.push(kind(a.send(b"x").unwrap_err()));

        let (a, b) = UnixDatagram::pair().unwrap();
        b.shutdown(Shutdown::Read).unwrap();
        kinds.push(kind(a.send(b"x").unwrap_err()));
        kinds
    })
    .join()
    .unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    kinds.push(kind((&a).write(b"plain thread").unwrap_err()));
    kinds
}

const BROKEN_PIPES: &str =
    "BrokenPipe,BrokenPipe,BrokenPipe,BrokenPipe,BrokenPipe,BrokenPipe,BrokenPipe";

#[test]
fn writing_to_a_closed_peer_is_broken_pipe() {
    let kinds = watchdog("unix-epipe", WATCHDOG, broken_pipe_kinds);
    assert_eq!(kinds.join(","), BROKEN_PIPES);
}

#[test]
fn writing_to_a_closed_peer_raises_no_sigpipe_even_at_its_default_disposition() {
    const NAME: &str = "writing_to_a_closed_peer_raises_no_sigpipe_even_at_its_default_disposition";
    if child_mode().as_deref() == Some("sigpipe-default") {
        // SAFETY: sets SIGPIPE's disposition to SIG_DFL (terminate); no
        // handler code is involved.
        unsafe { signal(SIGPIPE, SIG_DFL) };
        report(&format!("kinds={}", broken_pipe_kinds().join(",")));
        // The control: a plain write(2) to a closed peer raises SIGPIPE;
        // with the default disposition it kills the process here, which
        // proves the disposition took effect.
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        report("control=writing");
        // SAFETY: write(2) reads one byte from a live static buffer.
        let _ = unsafe { write(a.as_raw_fd(), b"x".as_ptr(), 1) };
        report("control=survived");
        return;
    }
    let run = CHILD.run(NAME, "sigpipe-default");
    assert_eq!(run.reported("kinds"), BROKEN_PIPES, "{run}");
    assert_eq!(run.reported("control"), "writing", "{run}");
    assert_eq!(
        run.status.signal(),
        Some(SIGPIPE),
        "the control write, and only it, dies of SIGPIPE; {run}"
    );
}

#[test]
fn connect_waits_while_the_listeners_backlog_is_full() {
    let dir = TempDir::new();
    let path = dir.join("full.sock");
    watchdog("unix-backlog", WATCHDOG, move || {
        // One worker: `second` runs until it parks, so once it has said it
        // is trying, it is parked inside `connect` (or done, if it got in).
        let rt = runtime(1, "unix-backlog");
        rt.block_on(move || {
            let listener = UnixListener::bind(&path).unwrap();
            // SAFETY: listen(2) on our own listening socket: a backlog of 0
            // admits one pending connection.
            assert_eq!(unsafe { listen(listener.as_raw_fd(), 0) }, 0);
            let first = UnixStream::connect(&path).unwrap();
            let trying = Arc::new(AtomicBool::new(false));
            let second = fibra::spawn({
                let (path, trying) = (path.clone(), Arc::clone(&trying));
                move || {
                    trying.store(true, Ordering::SeqCst);
                    let second = UnixStream::connect(&path).unwrap();
                    (&second).write_all(b"second").unwrap();
                    second
                }
            });
            while !trying.load(Ordering::SeqCst) {
                fibra::yield_now();
            }
            assert!(!second.is_finished(), "the second connect did not wait");
            assert_worker_idles_while_waiting("connect to a full backlog");
            assert!(!second.is_finished(), "the second connect got in early");
            (&first).write_all(b"first").unwrap();
            let (a, _) = listener.accept().unwrap();
            assert_eq!(read_exactly(&a, 5), b"first");
            // Room in the backlog now: the second connect gets in.
            let (b, _) = listener.accept().unwrap();
            assert_eq!(read_exactly(&b, 6), b"second");
            let second = second.join().unwrap();
            (&second).write_all(b"both ways").unwrap();
            assert_eq!(read_exactly(&b, 9), b"both ways");
        });
    });
}

#[test]
fn a_read_parked_while_another_coroutine_shuts_the_socket_down_wakes_with_eof() {
    watchdog("unix-shutdown-wakes", WATCHDOG, || {
        // One worker: the closer, spawned just before the read, runs only
        // once the reader has parked.
        let rt = runtime(1, "unix-shutdown");
        let results = rt.block_on(|| {
            let mut results = Vec::new();
            for how in [Shutdown::Both, Shutdown::Read] {
                let (a, _b) = UnixStream::pair().unwrap();
                let a = Arc::new(a);
                let closer = fibra::spawn({
                    let a = Arc::clone(&a);
                    move || a.shutdown(how).unwrap()
                });
                results.push((&*a).read(&mut [0u8; 16]).unwrap());
                closer.join().unwrap();

                // Through a clone (its own fd and registration) as well.
                let (a, _b) = UnixStream::pair().unwrap();
                let clone = a.try_clone().unwrap();
                let closer = fibra::spawn(move || clone.shutdown(how).unwrap());
                results.push((&a).read(&mut [0u8; 16]).unwrap());
                closer.join().unwrap();

                // A datagram socket returns EAGAIN, not 0, once shut down
                // for reads; fibra returns 0 as std's blocking call does.
                let (a, _b) = UnixDatagram::pair().unwrap();
                let a = Arc::new(a);
                let closer = fibra::spawn({
                    let a = Arc::clone(&a);
                    move || a.shutdown(how).unwrap()
                });
                results.push(a.recv(&mut [0u8; 16]).unwrap());
                closer.join().unwrap();
                let (n, from) = a.recv_from(&mut [0u8; 16]).unwrap();
                assert!(from.is_unnamed());
                results.push(n);
            }
            results
        });
        assert_eq!(results, [0; 8]);
    });
}

// ---------------------------------------------------------------------------
// Listeners and addresses

#[test]
fn listeners_accept_through_incoming_and_clones() {
    let dir = TempDir::new();
    let path = dir.join("incoming.sock");
    watchdog("unix-incoming", WATCHDOG, move || {
        let rt = runtime(2, "unix-incoming");
        rt.block_on(move || {
            let listener = UnixListener::bind(&path).unwrap();
            let clone = listener.try_clone().unwrap();
            let server = fibra::spawn(move || {
                let mut greetings = Vec::new();
                for stream in listener.incoming().take(2) {
                    greetings.push(read_exactly(&stream.unwrap(), 2));
                }
                let (stream, _) = clone.accept().unwrap();
                greetings.push(read_exactly(&stream, 2));
                assert!(clone.take_error().unwrap().is_none());
                clone.set_nonblocking(true).unwrap();
                assert_eq!(clone.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
                greetings
            });
            for greeting in [b"g1", b"g2", b"g3"] {
                (&UnixStream::connect(&path).unwrap())
                    .write_all(greeting)
                    .unwrap();
            }
            assert_eq!(server.join().unwrap(), [b"g1", b"g2", b"g3"]);
        });
    });
}

#[test]
fn abstract_addresses_work_for_streams_and_datagrams() {
    watchdog("unix-abstract", WATCHDOG, || {
        fibra::spawn(|| {
            let name = format!("fibra-test-{}-abstract", std::process::id());
            let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let listener = UnixListener::bind_addr(&addr).unwrap();
            assert_eq!(
                listener.local_addr().unwrap().as_abstract_name(),
                Some(name.as_bytes())
            );
            let client = UnixStream::connect_addr(&addr).unwrap();
            (&client).write_all(b"abstract").unwrap();
            let (server, peer) = listener.accept().unwrap();
            assert!(peer.is_unnamed());
            assert_eq!(read_exactly(&server, 8), b"abstract");

            let dname = format!("fibra-test-{}-abstract-dgram", std::process::id());
            let daddr = SocketAddr::from_abstract_name(dname.as_bytes()).unwrap();
            let receiver = UnixDatagram::bind_addr(&daddr).unwrap();
            let sender = UnixDatagram::unbound().unwrap();
            sender.send_to_addr(b"to a name", &daddr).unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"to a name");
            assert!(from.is_unnamed());
            sender.connect_addr(&daddr).unwrap();
            sender.send(b"connected").unwrap();
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"connected");
        })
        .join()
        .unwrap();
    });
}

#[test]
fn errors_are_those_of_std() {
    let dir = TempDir::new();
    let taken = dir.join("taken.sock");
    let stale = dir.join("stale.sock");
    let missing = dir.join("missing.sock");
    let long = dir.join(&"x".repeat(120));
    watchdog("unix-errors", WATCHDOG, move || {
        let kinds = fibra::spawn(move || {
            let _listener = UnixListener::bind(&taken).unwrap();
            drop(UnixListener::bind(&stale).unwrap()); // leaves the file
            let unnamed = UnixDatagram::unbound().unwrap().local_addr().unwrap();
            vec![
                UnixListener::bind(&taken).unwrap_err().kind(),
                UnixDatagram::bind(&taken).unwrap_err().kind(),
                UnixStream::connect(&missing).unwrap_err().kind(),
                UnixStream::connect(&stale).unwrap_err().kind(),
                UnixStream::connect(&long).unwrap_err().kind(),
                UnixListener::bind(Path::new("nul\0inside"))
                    .unwrap_err()
                    .kind(),
                UnixStream::connect_addr(&unnamed).unwrap_err().kind(),
                UnixDatagram::unbound()
                    .unwrap()
                    .send_to(b"x", &missing)
                    .unwrap_err()
                    .kind(),
                UnixDatagram::unbound()
                    .unwrap()
                    .send(b"x")
                    .unwrap_err()
                    .kind(),
            ]
        })
        .join()
        .unwrap();
        assert_eq!(
            kinds,
            [
                ErrorKind::AddrInUse,
                ErrorKind::AddrInUse,
                ErrorKind::NotFound,
                ErrorKind::ConnectionRefused,
                ErrorKind::InvalidInput,
                ErrorKind::InvalidInput,
                ErrorKind::InvalidInput,
                ErrorKind::NotFound,
                ErrorKind::NotConnected,
            ]
        );
    });
}

#[test]
fn std_sockets_are_adopted_and_given_back_in_blocking_mode() {
    watchdog("unix-std", WATCHDOG, || {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a = UnixStream::from(a);
        let reader = fibra::spawn(move || {
            let got = read_exactly(&a, 7); // parks: the fd is non-blocking
            (got, a)
        });
        (&b).write_all(b"adopted").unwrap();
        let (got, a) = reader.join().unwrap();
        assert_eq!(got, b"adopted");
        let back = std::os::unix::net::UnixStream::from(a);
        back.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let start = Instant::now();
        let error = (&back).read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WouldBlock);
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "blocking again"
        );

        let (c, d) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let c = UnixDatagram::from(c);
        d.send(b"dgram").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(c.recv(&mut buf).unwrap(), 5);
        assert!(format!("{c:?}").starts_with("UnixDatagram"));
    });
}

// ---------------------------------------------------------------------------
// Datagrams

#[test]
fn datagrams_round_trip_between_socket_files() {
    let dir = TempDir::new();
    let (a_path, b_path) = (dir.join("a.sock"), dir.join("b.sock"));
    watchdog("unix-dgram", WATCHDOG, move || {
        let rt = runtime(2, "unix-dgram");
        rt.block_on(move || {
            let a = UnixDatagram::bind(&a_path).unwrap();
            let b = UnixDatagram::bind(&b_path).unwrap();
            assert_eq!(
                a.local_addr().unwrap().as_pathname(),
                Some(a_path.as_path())
            );
            let echo = fibra::spawn(move || {
                let mut buf = [0u8; 64];
                let (n, from) = b.recv_from(&mut buf).unwrap();
                b.send_to_addr(&buf[..n], &from).unwrap();
                from
            });
            assert_eq!(a.send_to(b"there", &b_path).unwrap(), 5);
            let mut buf = [0u8; 64];
            let (n, from) = a.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"there");
            assert_eq!(from.as_pathname(), Some(b_path.as_path()));
            assert_eq!(echo.join().unwrap().as_pathname(), Some(a_path.as_path()));

            // Connected, and as a pair.
            let c = UnixDatagram::unbound().unwrap();
            c.connect(&a_path).unwrap();
            assert_eq!(c.peer_addr().unwrap().as_pathname(), Some(a_path.as_path()));
            c.send(b"connected").unwrap();
            let (n, from) = a.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from.is_unnamed()), (&b"connected"[..], true));
            let (p, q) = UnixDatagram::pair().unwrap();
            let q = fibra::spawn(move || {
                let n = q.recv(&mut [0u8; 0]).unwrap();
                (n, q)
            });
            p.send(b"").unwrap();
            assert_eq!(q.join().unwrap().0, 0);
        });
    });
}

#[test]
fn a_burst_beyond_the_receivers_queue_arrives_in_order_and_exactly() {
    const COUNT: u32 = 700;
    let dir = TempDir::new();
    let path = dir.join("burst.sock");
    watchdog("unix-burst", WATCHDOG, move || {
        let rt = runtime(2, "unix-burst");
        rt.block_on(move || {
            let receiver = UnixDatagram::bind(&path).unwrap();
            let reader = fibra::spawn(move || {
                let mut buf = vec![0u8; 70_000];
                for i in 0..COUNT {
                    let (n, _) = receiver.recv_from(&mut buf).unwrap();
                    assert_eq!(buf[..n], datagram(i, length_of(i)), "datagram {i}");
                }
            });
            // Unconnected: the sender waits each time the receiver's queue
            // (10 datagrams) is full, and is woken as it drains.
            let sender = UnixDatagram::unbound().unwrap();
            for i in 0..COUNT {
                let bytes = datagram(i, length_of(i));
                assert_eq!(sender.send_to(&bytes, &path).unwrap(), bytes.len());
            }
            reader.join().unwrap();

            // Connected, the same burst.
            let (tx, rx) = UnixDatagram::pair().unwrap();
            let reader = fibra::spawn(move || {
                let mut buf = vec![0u8; 70_000];
                for i in 0..COUNT {
                    let n = rx.recv(&mut buf).unwrap();
                    assert_eq!(buf[..n], datagram(i, length_of(i)), "datagram {i}");
                }
            });
            for i in 0..COUNT {
                tx.send(&datagram(i, length_of(i))).unwrap();
            }
            reader.join().unwrap();
        });
    });
}

#[test]
fn send_to_a_receiver_full_of_other_senders_datagrams_waits_until_it_drains() {
    let dir = TempDir::new();
    let path = dir.join("full.sock");
    watchdog("unix-full", WATCHDOG, move || {
        // One worker: once `sender` has said it is sending, it is parked in
        // `send_to` (the kernel gives its socket no event for this wait).
        let rt = runtime(1, "unix-full");
        rt.block_on(move || {
            let receiver = UnixDatagram::bind(&path).unwrap();
            let filled = fill_unix_datagram_receiver(&path);
            assert!(filled.len() >= 2, "queue of {}", filled.len());
            let sending = Arc::new(AtomicBool::new(false));
            let sender = fibra::spawn({
                let (path, sending) = (path.clone(), Arc::clone(&sending));
                move || {
                    let socket = UnixDatagram::unbound().unwrap();
                    sending.store(true, Ordering::SeqCst);
                    socket.send_to(b"waited", &path).unwrap()
                }
            });
            while !sending.load(Ordering::SeqCst) {
                fibra::yield_now();
            }
            assert!(!sender.is_finished(), "send_to did not wait");
            assert_worker_idles_while_waiting("send_to a full receiver");
            assert!(!sender.is_finished(), "send_to got in early");
            let mut buf = [0u8; 32];
            for expected in &filled {
                let n = receiver.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &expected[..]);
            }
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"waited");
            assert_eq!(sender.join().unwrap(), 6);
        });
    });
}

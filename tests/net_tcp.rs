//! `fibra::net::{TcpListener, TcpStream}` under load and under bad input.
//!
//! Load: 100 MiB echoed through one connection (checksummed), 1,000 clients
//! doing 100 round trips each, 2,000 clients connecting at once to several
//! acceptors, full-duplex traffic from two coroutines on one socket.
//! Bad input: EOF in the middle of `read_exact`, a peer reset, a closed peer
//! (`BrokenPipe`, no SIGPIPE), a refused connection, EMFILE on accept,
//! connect/read/write timeouts, a socket shut down or a listener clone
//! dropped while another coroutine waits, cancellation and runtime drop while
//! parked on a socket. Also: std conversions, plain-thread callers, `::1`.
//!
//! "Parked" is established without sleeping blindly: on a one-worker runtime a
//! coroutine sets a flag right before the call that parks, and the test
//! yields until it sees the flag (coroutines are not preempted, so the other
//! one has parked by then); from a plain thread, the test waits until every
//! worker sleeps in `epoll_wait` (read from /proc, see tests/common).

mod common;

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{self as stdnet, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::panic::resume_unwind;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    ChildSetup, DropCounter, POLLS, WATCHDOG, asleep_in, child_mode, gettid, is_nonblocking,
    report, runtime, wait_for, wait_until_workers_sleep, watchdog,
};
use fibra::net::{TcpListener, TcpStream};
use fibra::{Cancelled, JoinHandle};

const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(30),
    env: &[],
};

/// 127.0.0.1 with a port of the kernel's choice (a type that resolves
/// without a lookup).
const LOCAL: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 0);

/// How late a timeout may fire on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Helpers

fn listen() -> TcpListener {
    TcpListener::bind(LOCAL).expect("bind 127.0.0.1:0")
}

/// A connected (client, server) pair; works in a coroutine or on a thread.
fn pair() -> (TcpStream, TcpStream) {
    let listener = listen();
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, peer) = listener.accept().expect("accept");
    assert_eq!(
        peer,
        client.local_addr().unwrap(),
        "accept names the client"
    );
    (client, server)
}

/// The value of a coroutine; its panic continues here.
fn join<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|payload| resume_unwind(payload))
}

fn assert_cancelled<T>(what: &str, handle: JoinHandle<T>) {
    match handle.join() {
        Ok(_) => panic!("{what} returned instead of being cancelled"),
        Err(payload) => assert!(
            payload.is::<Cancelled>(),
            "{what}: the join payload is not Cancelled (a panic: {:?})",
            common::panic_text(&*payload)
        ),
    }
}

/// Yields until `flag` is set. On a one-worker runtime, when this returns
/// the coroutine that set the flag has parked in the call it made next.
fn yield_until(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        fibra::yield_now();
    }
}

/// Sets SO_LINGER to {on, 0 s}: closing the socket then sends a RST.
fn set_linger_zero(socket: &impl AsRawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads size_of::<linger>() bytes from `linger`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

// ---------------------------------------------------------------------------
// The byte stream of the bulk tests: a pseudo-random block of prime length,
// repeated, so that a chunk lost, repeated or reordered shows at once.

const PATTERN_LEN: usize = 65_521;

fn pattern_block() -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let block = (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    Arc::new(block)
}

/// The checksum of a byte stream: FNV-1a over its 64-bit words, taken in
/// frames of `FRAME` bytes (so it does not depend on how reads split the
/// stream; and cheap enough in a debug build for 100 MiB).
struct FrameChecksum {
    frame: Vec<u64>,
    filled: usize,
    hash: u64,
}

const FRAME: usize = 64 << 10;

impl FrameChecksum {
    fn new() -> FrameChecksum {
        FrameChecksum {
            frame: vec![0; FRAME / 8],
            filled: 0,
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }

    /// The unfilled rest of the current frame, to read or copy into.
    fn space(&mut self) -> &mut [u8] {
        let filled = self.filled;
        // SAFETY: the bytes of a `[u64]` are initialised and u8 needs no
        // alignment; the view covers exactly the frame, borrowed mutably.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(self.frame.as_mut_ptr().cast::<u8>(), FRAME) };
        &mut bytes[filled..]
    }

    /// Counts `n` bytes just put into `space()`.
    fn advance(&mut self, n: usize) {
        self.filled += n;
        if self.filled == FRAME {
            self.hash_frame();
        }
    }

    fn hash_frame(&mut self) {
        let words = self.filled.div_ceil(8);
        let tail = self.filled % 8;
        if tail != 0 {
            // Zero the unfilled bytes of the last word.
            self.frame[words - 1] &= u64::MAX >> (8 * (8 - tail));
        }
        let mut hash = self.hash;
        for &word in &self.frame[..words] {
            hash = (hash ^ word).wrapping_mul(0x100_0000_01b3);
        }
        self.hash = (hash ^ self.filled as u64).wrapping_mul(0x100_0000_01b3);
        self.filled = 0;
    }

    fn finish(mut self) -> u64 {
        if self.filled != 0 {
            self.hash_frame();
        }
        self.hash
    }
}

/// The checksum the first `total` bytes of the pattern stream must have.
fn pattern_checksum(block: &[u8], total: usize) -> u64 {
    let mut sum = FrameChecksum::new();
    let mut done = 0;
    while done < total {
        let at = done % PATTERN_LEN;
        let space = sum.space();
        let len = space.len().min(PATTERN_LEN - at).min(total - done);
        space[..len].copy_from_slice(&block[at..at + len]);
        sum.advance(len);
        done += len;
    }
    sum.finish()
}

/// Writes `total` bytes of the pattern stream; returns how many it wrote.
fn send_pattern(mut out: impl Write, block: &[u8], total: usize) -> usize {
    let mut sent = 0;
    while sent < total {
        let at = sent % PATTERN_LEN;
        let piece = &block[at..PATTERN_LEN.min(at + total - sent)];
        out.write_all(piece).expect("write the pattern");
        sent += piece.len();
    }
    sent
}

/// Reads the pattern stream until EOF, checking every byte against the
/// pattern as it comes; returns (bytes, checksum).
fn receive_pattern(mut input: impl Read, block: &[u8]) -> (usize, u64) {
    let mut sum = FrameChecksum::new();
    let mut received = 0;
    loop {
        let space = sum.space();
        let n = input.read(space).expect("read the pattern");
        if n == 0 {
            return (received, sum.finish());
        }
        let mut done = 0;
        while done < n {
            let at = (received + done) % PATTERN_LEN;
            let len = (n - done).min(PATTERN_LEN - at);
            let (got, want) = (&space[done..done + len], &block[at..at + len]);
            if got != want {
                let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
                panic!(
                    "stream byte {} is {:#04x}, expected {:#04x}",
                    received + done + first,
                    got[first],
                    want[first]
                );
            }
            done += len;
        }
        sum.advance(n);
        received += n;
    }
}

/// Echoes what it reads until EOF, then shuts down its write side; returns
/// the bytes echoed.
fn echo_until_eof(stream: &TcpStream, buf_size: usize) -> io::Result<u64> {
    let mut buf = vec![0u8; buf_size];
    let mut total = 0;
    loop {
        let n = (&*stream).read(&mut buf)?;
        if n == 0 {
            stream.shutdown(Shutdown::Write)?;
            return Ok(total);
        }
        (&*stream).write_all(&buf[..n])?;
        total += n as u64;
    }
}

// ---------------------------------------------------------------------------
// Bulk echo

const ECHO_BYTES: usize = 100 << 20;

#[test]
fn echo_of_100_mib_through_one_connection_arrives_intact_between_coroutines() {
    watchdog("echo_100_mib_coroutines", WATCHDOG, || {
        let rt = runtime(2, "nt-echo");
        let block = pattern_block();
        let expected = pattern_checksum(&block, ECHO_BYTES);
        let (received, sum, echoed) = rt.block_on(move || {
            let listener = listen();
            let addr = listener.local_addr().unwrap();
            let server = fibra::spawn(move || {
                let (stream, _) = listener.accept().expect("accept");
                echo_until_eof(&stream, 64 << 10).expect("echo")
            });
            let client = TcpStream::connect(addr).expect("connect");
            let write_half = client.try_clone().expect("try_clone");
            let block2 = Arc::clone(&block);
            let writer = fibra::spawn(move || {
                let sent = send_pattern(&write_half, &block2, ECHO_BYTES);
                write_half
                    .shutdown(Shutdown::Write)
                    .expect("shutdown(Write)");
                sent
            });
            let reader = fibra::spawn(move || receive_pattern(&client, &block));
            assert_eq!(join(writer), ECHO_BYTES, "bytes sent");
            let (received, sum) = join(reader);
            (received, sum, join(server))
        });
        assert_eq!(received, ECHO_BYTES);
        assert_eq!(echoed, ECHO_BYTES as u64);
        assert_eq!(sum, expected);
    });
}

#[test]
fn echo_of_100_mib_arrives_intact_when_client_halves_are_plain_threads() {
    watchdog("echo_100_mib_threads", WATCHDOG, || {
        let rt = runtime(2, "nt-echot");
        let block = pattern_block();
        let expected = pattern_checksum(&block, ECHO_BYTES);
        let listener = listen();
        let addr = listener.local_addr().unwrap();
        let server = rt.spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            echo_until_eof(&stream, 64 << 10).expect("echo")
        });
        let client = TcpStream::connect(addr).expect("connect from a plain thread");
        let write_half = client.try_clone().expect("try_clone");
        let block2 = Arc::clone(&block);
        let writer = thread::spawn(move || {
            let sent = send_pattern(&write_half, &block2, ECHO_BYTES);
            write_half
                .shutdown(Shutdown::Write)
                .expect("shutdown(Write)");
            sent
        });
        let (received, sum) = receive_pattern(&client, &block);
        assert_eq!(writer.join().expect("writer thread"), ECHO_BYTES);
        assert_eq!(received, ECHO_BYTES);
        assert_eq!(sum, expected);
        assert_eq!(join(server), ECHO_BYTES as u64);
    });
}

// ---------------------------------------------------------------------------
// Many clients

const CLIENTS: usize = 1000;
const ROUNDS: usize = 100;

fn message_len(client: usize, round: usize) -> usize {
    1 + (client * 31 + round * 17) % 256
}

fn fill_message(buf: &mut [u8], client: usize, round: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte = (client + round * 3 + i) as u8;
    }
}

/// Parks coroutines until `n` of them have arrived.
struct Barrier {
    n: usize,
    waiting: std::sync::Mutex<Vec<fibra::Coroutine>>,
    open: AtomicBool,
}

impl Barrier {
    fn new(n: usize) -> Barrier {
        Barrier {
            n,
            waiting: std::sync::Mutex::new(Vec::new()),
            open: AtomicBool::new(false),
        }
    }

    fn wait(&self) {
        {
            let mut waiting = self.waiting.lock().unwrap();
            if waiting.len() + 1 == self.n {
                self.open.store(true, Ordering::SeqCst);
                waiting.drain(..).for_each(|c| c.unpark());
                return;
            }
            waiting.push(fibra::current());
        }
        while !self.open.load(Ordering::SeqCst) {
            fibra::park();
        }
    }
}

fn thousand_clients_round_trips(workers: usize, prefix: &'static str) {
    watchdog(prefix, WATCHDOG, move || {
        let rt = runtime(workers, prefix);
        let expected: u64 = (0..CLIENTS)
            .flat_map(|c| (0..ROUNDS).map(move |r| message_len(c, r) as u64))
            .sum();
        let (client_bytes, server_bytes) = rt.block_on(|| {
            let listener = listen();
            let addr = listener.local_addr().unwrap();
            // Every client is connected before any round trip begins.
            let all_connected = Arc::new(Barrier::new(CLIENTS));
            let server = fibra::spawn(move || {
                let handlers: Vec<JoinHandle<u64>> = (0..CLIENTS)
                    .map(|_| {
                        let (stream, _) = listener.accept().expect("accept");
                        fibra::spawn(move || echo_until_eof(&stream, 512).expect("echo"))
                    })
                    .collect();
                handlers.into_iter().map(join).sum::<u64>()
            });
            let clients: Vec<JoinHandle<u64>> = (0..CLIENTS)
                .map(|c| {
                    let all_connected = Arc::clone(&all_connected);
                    fibra::spawn(move || {
                        let stream = TcpStream::connect(addr).expect("connect");
                        all_connected.wait();
                        let (mut message, mut reply) = ([0u8; 256], [0u8; 256]);
                        let mut bytes = 0;
                        for r in 0..ROUNDS {
                            let len = message_len(c, r);
                            fill_message(&mut message[..len], c, r);
                            (&stream).write_all(&message[..len]).expect("write");
                            (&stream).read_exact(&mut reply[..len]).expect("read");
                            assert_eq!(reply[..len], message[..len], "client {c} round {r}");
                            bytes += len as u64;
                        }
                        stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
                        assert_eq!((&stream).read(&mut reply).expect("read EOF"), 0);
                        bytes
                    })
                })
                .collect();
            let client_bytes: u64 = clients.into_iter().map(join).sum();
            (client_bytes, join(server))
        });
        assert_eq!(client_bytes, expected, "bytes the clients got back");
        assert_eq!(server_bytes, expected, "bytes the server echoed");
    });
}

#[test]
fn thousand_clients_times_100_round_trips_on_two_workers_echo_every_byte() {
    thousand_clients_round_trips(2, "nt-many2");
}

#[test]
fn thousand_clients_times_100_round_trips_on_one_worker_echo_every_byte() {
    thousand_clients_round_trips(1, "nt-many1");
}

// ---------------------------------------------------------------------------
// Half-close and full duplex

#[test]
fn shutdown_write_gives_peer_eof_and_the_other_direction_still_works() {
    watchdog("half_close", WATCHDOG, || {
        let rt = runtime(2, "nt-half");
        rt.block_on(|| {
            let (client, server) = pair();
            (&client).write_all(b"last words").unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let server = fibra::spawn(move || {
                let mut got = Vec::new();
                (&server).read_to_end(&mut got).expect("read to EOF");
                assert_eq!(got, b"last words");
                // EOF stays EOF.
                assert_eq!((&server).read(&mut [0u8; 8]).unwrap(), 0);
                // The server's direction is still open.
                (&server).write_all(b"reply after your EOF").unwrap();
                server.shutdown(Shutdown::Write).unwrap();
            });
            let mut reply = Vec::new();
            (&client).read_to_end(&mut reply).expect("read the reply");
            assert_eq!(reply, b"reply after your EOF");
            join(server);
            let error = (&client)
                .write(b"x")
                .expect_err("write after shutdown(Write)");
            assert_eq!(error.kind(), ErrorKind::BrokenPipe, "{error}");
        });
    });
}

const DUPLEX_BYTES: usize = 8 << 20;

/// A writer coroutine (bytes sent) and a reader coroutine (bytes, checksum)
/// on one end of a connection.
type Halves = (JoinHandle<usize>, JoinHandle<(usize, u64)>);

/// Both ends send `DUPLEX_BYTES` at once while reading the other's: with a
/// reader and a writer coroutine per end on one worker. If a read or a
/// write blocked the other direction, both send buffers would fill and
/// nothing would move.
fn full_duplex(split: fn(TcpStream) -> Halves) {
    let rt = runtime(1, "nt-duplex");
    let block = pattern_block();
    let expected = pattern_checksum(&block, DUPLEX_BYTES);
    let results = rt.block_on(move || {
        let (client, server) = pair();
        let mut handles = Vec::new();
        for end in [client, server] {
            handles.push(split(end));
        }
        handles
            .into_iter()
            .map(|(writer, reader)| (join(writer), join(reader)))
            .collect::<Vec<_>>()
    });
    for (sent, (received, sum)) in results {
        assert_eq!(sent, DUPLEX_BYTES);
        assert_eq!(received, DUPLEX_BYTES);
        assert_eq!(sum, expected);
    }
}

#[test]
fn read_and_write_from_two_coroutines_at_once_via_try_clone() {
    watchdog("duplex_try_clone", WATCHDOG, || {
        full_duplex(|stream| {
            let write_half = stream.try_clone().expect("try_clone");
            let writer = fibra::spawn(move || {
                let sent = send_pattern(&write_half, &pattern_block(), DUPLEX_BYTES);
                write_half.shutdown(Shutdown::Write).unwrap();
                sent
            });
            let reader = fibra::spawn(move || receive_pattern(&stream, &pattern_block()));
            (writer, reader)
        });
    });
}

#[test]
fn read_and_write_from_two_coroutines_at_once_via_shared_ref_in_arc() {
    watchdog("duplex_arc", WATCHDOG, || {
        full_duplex(|stream| {
            let stream = Arc::new(stream);
            let write_half = Arc::clone(&stream);
            let writer = fibra::spawn(move || {
                let sent = send_pattern(&*write_half, &pattern_block(), DUPLEX_BYTES);
                write_half.shutdown(Shutdown::Write).unwrap();
                sent
            });
            let reader = fibra::spawn(move || receive_pattern(&*stream, &pattern_block()));
            (writer, reader)
        });
    });
}

#[test]
fn many_coroutines_reading_one_socket_get_each_byte_once_and_all_see_eof() {
    const READERS: usize = 16;
    const BYTES: usize = 100_000;
    watchdog("shared_readers", WATCHDOG, || {
        let rt = runtime(2, "nt-shared");
        let (count, sum) = rt.block_on(|| {
            let (client, server) = pair();
            let server = Arc::new(server);
            let readers: Vec<JoinHandle<(usize, u64)>> = (0..READERS)
                .map(|r| {
                    let server = Arc::clone(&server);
                    fibra::spawn(move || {
                        let mut buf = [0u8; 7];
                        let (mut count, mut sum) = (0, 0u64);
                        loop {
                            let want = 1 + r % buf.len();
                            match (&*server).read(&mut buf[..want]).expect("read") {
                                0 => return (count, sum),
                                n => {
                                    count += n;
                                    sum += buf[..n].iter().map(|&b| b as u64).sum::<u64>();
                                }
                            }
                        }
                    })
                })
                .collect();
            let data: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
            for chunk in data.chunks(997) {
                (&client).write_all(chunk).unwrap();
                fibra::yield_now();
            }
            client.shutdown(Shutdown::Write).unwrap();
            readers
                .into_iter()
                .map(join)
                .fold((0, 0), |(c, s), (n, t)| (c + n, s + t))
        });
        assert_eq!(count, BYTES, "bytes read over all readers");
        let expected: u64 = (0..BYTES).map(|i| (i % 251) as u64).sum();
        assert_eq!(sum, expected, "sum of bytes read over all readers");
    });
}

// ---------------------------------------------------------------------------
// Timeouts

/// A listener whose accept queue is full: with `listen(fd, 0)` one
/// connection may queue, and Linux then drops every further SYN (no RST, no
/// SYN-ACK), so a connect to it stays in SYN_SENT until it gives up.
struct FullBacklog {
    listener: stdnet::TcpListener,
    _queued: stdnet::TcpStream,
    addr: SocketAddr,
}

/// (connections in the accept queue, queue limit) of a listening socket.
fn accept_queue(listener: &stdnet::TcpListener) -> (u32, u32) {
    // SAFETY: tcp_info is plain old data; all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    // For a listener, the kernel reports these two as unacked / sacked.
    (info.tcpi_unacked, info.tcpi_sacked)
}

/// Builds a `FullBacklog`; call on a plain thread (it uses std's blocking
/// connect).
fn full_backlog() -> FullBacklog {
    let listener = stdnet::TcpListener::bind(LOCAL).unwrap();
    // SAFETY: listen(2) again on a listening socket only changes its backlog.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(rc, 0, "listen(fd, 0): {}", io::Error::last_os_error());
    let addr = listener.local_addr().unwrap();
    let queued = stdnet::TcpStream::connect(addr).expect("the first connection queues");
    wait_for(
        "the first connection sits in the accept queue",
        Duration::from_secs(10),
        || accept_queue(&listener) == (1, 0),
    );
    FullBacklog {
        listener,
        _queued: queued,
        addr,
    }
}

fn assert_connect_times_out(addr: SocketAddr, timeout: Duration) {
    let start = Instant::now();
    let error = TcpStream::connect_timeout(&addr, timeout).expect_err("a SYN nobody answers");
    let elapsed = start.elapsed();
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    assert!(
        elapsed >= timeout && elapsed <= timeout + SLACK,
        "connect_timeout({timeout:?}) gave up after {elapsed:?}"
    );
}

#[test]
fn connect_timeout_to_a_listener_dropping_syns_is_timed_out() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    watchdog("connect_timeout", WATCHDOG, || {
        let full = full_backlog();
        let addr = full.addr;
        // From a plain thread, then from a coroutine.
        assert_connect_times_out(addr, TIMEOUT);
        let rt = runtime(1, "nt-conn");
        rt.block_on(move || assert_connect_times_out(addr, TIMEOUT));
        // Once the queued connection is accepted, there is room again.
        let (_accepted, _) = full.listener.accept().unwrap();
        wait_for("the accept queue empties", SLACK, || {
            accept_queue(&full.listener).0 == 0
        });
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

fn assert_read_times_out(stream: &TcpStream, timeout: Duration) {
    stream.set_read_timeout(Some(timeout)).unwrap();
    assert_eq!(stream.read_timeout().unwrap(), Some(timeout));
    let start = Instant::now();
    let error = (&*stream)
        .read(&mut [0u8; 16])
        .expect_err("nothing to read");
    let elapsed = start.elapsed();
    assert_eq!(error.kind(), ErrorKind::WouldBlock, "{error}");
    assert!(
        elapsed >= timeout && elapsed <= timeout + SLACK,
        "a read with a {timeout:?} timeout gave up after {elapsed:?}"
    );
}

#[test]
fn read_timeout_gives_would_block_after_the_timeout_and_the_stream_still_works() {
    const TIMEOUT: Duration = Duration::from_millis(150);
    watchdog("read_timeout", WATCHDOG, || {
        let rt = runtime(1, "nt-rdto");
        let (client, server) = pair();
        // A plain thread.
        assert_read_times_out(&client, TIMEOUT);
        // A coroutine, while another coroutine of the same worker keeps
        // running (the wait parks, it does not block the worker).
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
        let client = rt.block_on(move || {
            assert_read_times_out(&client, TIMEOUT);
            client
        });
        done.store(true, Ordering::SeqCst);
        join(ticker);
        assert!(
            ticks.load(Ordering::SeqCst) >= 2,
            "the other coroutine ran during the wait"
        );
        // Data that arrives within the timeout is read.
        (&server).write_all(b"late but in time").unwrap();
        let mut buf = [0u8; 16];
        rt.block_on(move || (&client).read_exact(&mut buf).map(|()| buf))
            .map(|buf| assert_eq!(&buf, b"late but in time"))
            .expect("read within the timeout");
        assert_eq!(
            server
                .set_read_timeout(Some(Duration::ZERO))
                .expect_err("zero")
                .kind(),
            ErrorKind::InvalidInput
        );
    });
}

/// Writes until a write fails; returns the bytes written and how long the
/// failing write took.
fn write_until_timeout(stream: &TcpStream, timeout: Duration) -> (usize, Duration) {
    stream.set_write_timeout(Some(timeout)).unwrap();
    assert_eq!(stream.write_timeout().unwrap(), Some(timeout));
    let chunk = vec![0x5a_u8; 256 << 10];
    let mut written = 0;
    loop {
        let start = Instant::now();
        match (&*stream).write(&chunk) {
            Ok(n) => written += n,
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::WouldBlock, "{error}");
                return (written, start.elapsed());
            }
        }
        assert!(written < 1 << 30, "wrote 1 GiB to a peer that never reads");
    }
}

#[test]
fn write_timeout_gives_would_block_when_the_peer_never_reads() {
    const TIMEOUT: Duration = Duration::from_millis(150);
    watchdog("write_timeout", WATCHDOG, || {
        let rt = runtime(1, "nt-wrto");
        for in_coroutine in [false, true] {
            let (client, _server) = pair();
            let (written, elapsed) = if in_coroutine {
                rt.block_on(move || write_until_timeout(&client, TIMEOUT))
            } else {
                write_until_timeout(&client, TIMEOUT)
            };
            assert!(written > 0, "the buffers took something first");
            assert!(
                elapsed >= TIMEOUT && elapsed <= TIMEOUT + SLACK,
                "a write with a {TIMEOUT:?} timeout gave up after {elapsed:?} \
                 (in a coroutine: {in_coroutine})"
            );
        }
    });
}

// ---------------------------------------------------------------------------
// Bad input

#[test]
fn eof_in_the_middle_of_read_exact_is_unexpected_eof() {
    watchdog("unexpected_eof", WATCHDOG, || {
        let rt = runtime(1, "nt-eof");
        for in_coroutine in [false, true] {
            let (client, server) = pair();
            let reader = move || {
                let mut buf = [0u8; 10];
                let error = (&client).read_exact(&mut buf).expect_err("only 5 bytes");
                (error.kind(), buf)
            };
            let send_five_and_close = move || {
                (&server).write_all(b"12345").unwrap();
                drop(server);
            };
            let (kind, buf) = if in_coroutine {
                let reader = rt.spawn(reader);
                send_five_and_close();
                join(reader)
            } else {
                let reader = thread::spawn(reader);
                send_five_and_close();
                reader.join().unwrap()
            };
            assert_eq!(
                kind,
                ErrorKind::UnexpectedEof,
                "in a coroutine: {in_coroutine}"
            );
            assert_eq!(&buf[..5], b"12345");
        }
    });
}

#[test]
fn peer_reset_wakes_a_parked_reader_with_connection_reset() {
    watchdog("connection_reset", WATCHDOG, || {
        let rt = runtime(1, "nt-reset");
        rt.block_on(|| {
            let (client, server) = pair();
            let parked = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&parked);
            let reader = fibra::spawn(move || {
                flag.store(true, Ordering::SeqCst);
                (&client).read(&mut [0u8; 16])
            });
            yield_until(&parked);
            assert!(!reader.is_finished(), "the reader is parked");
            set_linger_zero(&server);
            drop(server); // sends RST
            let error = join(reader).expect_err("the peer reset the connection");
            assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
        });
        // And on a plain thread, the reset is there before the read.
        let (client, server) = pair();
        set_linger_zero(&server);
        drop(server);
        let error = (&client).read(&mut [0u8; 16]).expect_err("reset");
        assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    });
}

/// Writes until a write fails, yielding between tries so the peer's RST can
/// arrive; returns the first error.
fn first_write_error(mut write: impl FnMut() -> io::Result<usize>) -> io::Error {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Err(error) = write() {
            return error;
        }
        fibra::yield_now();
    }
    panic!("writes to a closed peer kept succeeding for 10 s");
}

/// The error kinds of `write` and `write_vectored` to a peer that closed.
fn write_to_closed_peer_kinds() -> String {
    let mut kinds = Vec::new();
    for vectored in [false, true] {
        let (client, server) = pair();
        drop(server);
        // Read the FIN first: the connection is then in CLOSE_WAIT, and the
        // RST our first write draws makes later writes fail with EPIPE.
        assert_eq!((&client).read(&mut [0u8; 8]).expect("EOF"), 0);
        let error = if vectored {
            first_write_error(|| {
                (&client).write_vectored(&[IoSlice::new(b"a"), IoSlice::new(b"b")])
            })
        } else {
            first_write_error(|| (&client).write(b"x"))
        };
        kinds.push(format!("{:?}", error.kind()));
    }
    kinds.join("/")
}

#[test]
fn write_to_a_closed_peer_is_broken_pipe_and_raises_no_sigpipe() {
    const NAME: &str = "write_to_a_closed_peer_is_broken_pipe_and_raises_no_sigpipe";
    if child_mode().as_deref() == Some("sigpipe") {
        // SAFETY: restores the default action of SIGPIPE (terminate the
        // process), which the Rust runtime set to "ignore" at startup.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let rt = runtime(1, "nt-pipe");
        let coroutine = rt.block_on(write_to_closed_peer_kinds);
        let thread = write_to_closed_peer_kinds();
        report(&format!("coroutine={coroutine} thread={thread} alive=yes"));
        return;
    }
    let run = CHILD.run(NAME, "sigpipe");
    assert!(
        run.status.success(),
        "the child survives (a SIGPIPE would kill it with signal 13); {run}"
    );
    assert_eq!(run.reported("coroutine"), "BrokenPipe/BrokenPipe", "{run}");
    assert_eq!(run.reported("thread"), "BrokenPipe/BrokenPipe", "{run}");
    assert_eq!(run.reported("alive"), "yes", "{run}");
}

#[test]
fn connect_to_a_closed_port_is_connection_refused() {
    watchdog("connection_refused", WATCHDOG, || {
        let addr = {
            let listener = stdnet::TcpListener::bind(LOCAL).unwrap();
            listener.local_addr().unwrap()
        };
        let kinds = |addr: SocketAddr| {
            [
                TcpStream::connect(addr).map(drop),
                TcpStream::connect_timeout(&addr, SLACK).map(drop),
            ]
            .map(|r| r.expect_err("nobody listens").kind())
        };
        assert_eq!(
            kinds(addr),
            [ErrorKind::ConnectionRefused; 2],
            "plain thread"
        );
        let rt = runtime(1, "nt-refuse");
        assert_eq!(
            rt.block_on(move || kinds(addr)),
            [ErrorKind::ConnectionRefused; 2],
            "coroutine"
        );
    });
}

/// The `RLIMIT_NOFILE` under which exactly `free` fd numbers are free (fds
/// open at or above it stay open; a new fd takes the lowest free number).
fn fd_limit_leaving_free(free: usize) -> u64 {
    let open: Vec<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // (The fd that listed the directory is closed by now: one more free.)
    let mut seen = 0;
    (0..)
        .find(|fd| {
            if !open.contains(fd) {
                seen += 1;
            }
            seen > free
        })
        .unwrap()
}

#[test]
fn accept_loop_backing_off_on_emfile_serves_every_client() {
    const NAME: &str = "accept_loop_backing_off_on_emfile_serves_every_client";
    const CLIENTS: usize = 40;
    const FREE_FDS: usize = 4;
    if child_mode().as_deref() == Some("emfile") {
        let rt = runtime(2, "nt-emfile");
        let listener = listen();
        let addr = listener.local_addr().unwrap();
        // Every client connects while fds are plentiful; the kernel completes
        // the handshakes and queues them for accept.
        let clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read or write the one struct passed.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            limit.rlim_cur = fd_limit_leaving_free(FREE_FDS);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
        let (served, emfile) = rt.block_on(move || {
            let server = fibra::spawn(move || {
                let mut handlers = Vec::new();
                let mut emfile = 0;
                while handlers.len() < CLIENTS + 1 {
                    match listener.accept() {
                        Ok((stream, _)) => handlers.push(fibra::spawn(move || {
                            let mut id = [0u8; 4];
                            (&stream).read_exact(&mut id)?;
                            (&stream).write_all(&id)
                        })),
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                            emfile += 1;
                            fibra::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("accept failed with {e} (not EMFILE)"),
                    }
                }
                let served = handlers.len();
                for handler in handlers {
                    join(handler).expect("a handler served its client");
                }
                (served, emfile)
            });
            let exchange = |stream: TcpStream, id: u32| {
                (&stream).write_all(&id.to_le_bytes()).expect("send the id");
                let mut reply = [0u8; 4];
                (&stream).read_exact(&mut reply).expect("read the reply");
                assert_eq!(u32::from_le_bytes(reply), id);
            };
            let clients: Vec<JoinHandle<()>> = clients
                .into_iter()
                .enumerate()
                .map(|(i, stream)| fibra::spawn(move || exchange(stream, i as u32)))
                .collect();
            clients.into_iter().for_each(join);
            // The server is still alive: one more client.
            exchange(TcpStream::connect(addr).expect("connect again"), 999);
            join(server)
        });
        report(&format!("served={served} emfile={emfile}"));
        return;
    }
    let run = CHILD.run(NAME, "emfile");
    assert!(run.status.success(), "{run}");
    assert_eq!(run.reported("served"), (CLIENTS + 1).to_string(), "{run}");
    let emfile: usize = run.reported("emfile").parse().unwrap();
    assert!(emfile > 0, "the accept loop met EMFILE; {run}");
}

// ---------------------------------------------------------------------------
// Closing under a waiter

#[test]
fn shutdown_both_wakes_a_reader_parked_on_a_clone() {
    watchdog("shutdown_wakes_reader", WATCHDOG, || {
        let rt = runtime(1, "nt-shut");
        let (result, client_sees) = rt.block_on(|| {
            let (client, server) = pair();
            let reader_half = server.try_clone().unwrap();
            let parked = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&parked);
            let reader = fibra::spawn(move || {
                flag.store(true, Ordering::SeqCst);
                (&reader_half).read(&mut [0u8; 16]).map_err(|e| e.kind())
            });
            yield_until(&parked);
            assert!(!reader.is_finished(), "the reader is parked");
            server.shutdown(Shutdown::Both).unwrap();
            let result = join(reader);
            let client_sees = (&client).read(&mut [0u8; 16]).map_err(|e| e.kind());
            (result, client_sees)
        });
        // Linux reports a read after SHUT_RD as end of file.
        assert_eq!(result, Ok(0), "the parked reader woke with EOF");
        assert_eq!(client_sees, Ok(0), "the peer sees EOF too");
    });
}

/// A coroutine accepts on the listener; a clone of it, registered by a
/// waiter of its own, is dropped (on a worker or on a plain thread); a new
/// connection still reaches the first acceptor.
fn listener_clone_dropped(drop_on_worker: bool, prefix: &'static str) {
    let rt = runtime(1, prefix);
    let listener = Arc::new(listen());
    let addr = listener.local_addr().unwrap();
    let clone = Arc::new(listener.try_clone().unwrap());
    // Register the clone's fd: a coroutine parks accepting on it, and is
    // cancelled.
    let on_clone = {
        let clone = Arc::clone(&clone);
        rt.spawn(move || clone.accept().map(|(_, peer)| peer))
    };
    let acceptor = {
        let listener = Arc::clone(&listener);
        rt.spawn(move || listener.accept().map(|(_, peer)| peer))
    };
    wait_until_workers_sleep(prefix, 1);
    on_clone.cancel();
    assert_cancelled("accept on the clone", on_clone);
    if drop_on_worker {
        rt.block_on(move || drop(clone));
    } else {
        drop(clone);
    }
    let client = TcpStream::connect(addr).expect("connect");
    let peer = join(acceptor).expect("accept on the original");
    assert_eq!(peer, client.local_addr().unwrap());
}

#[test]
fn dropping_a_listener_clone_on_a_worker_leaves_accept_on_the_original_working() {
    watchdog("listener_clone_worker", WATCHDOG, || {
        listener_clone_dropped(true, "nt-lclw")
    });
}

#[test]
fn dropping_a_listener_clone_on_a_plain_thread_leaves_accept_on_the_original_working() {
    watchdog("listener_clone_thread", WATCHDOG, || {
        listener_clone_dropped(false, "nt-lclt")
    });
}

// ---------------------------------------------------------------------------
// Accept storm

#[test]
fn accept_storm_of_2000_clients_on_8_acceptors_serves_each_exactly_once() {
    const STORM: usize = 2000;
    const ACCEPTORS: usize = 8;
    watchdog("accept_storm", WATCHDOG, || {
        let rt = runtime(2, "nt-storm");
        let served: Arc<Vec<AtomicUsize>> =
            Arc::new((0..STORM).map(|_| AtomicUsize::new(0)).collect());
        let accepted = Arc::new(AtomicUsize::new(0));
        let (served2, accepted2) = (Arc::clone(&served), Arc::clone(&accepted));
        rt.block_on(move || {
            let listener = Arc::new(listen());
            let addr = listener.local_addr().unwrap();
            let acceptors: Vec<JoinHandle<()>> = (0..ACCEPTORS)
                .map(|_| {
                    let (listener, served, accepted) = (
                        Arc::clone(&listener),
                        Arc::clone(&served2),
                        Arc::clone(&accepted2),
                    );
                    fibra::spawn(move || {
                        loop {
                            let (stream, _) = listener.accept().expect("accept");
                            accepted.fetch_add(1, Ordering::SeqCst);
                            let served = Arc::clone(&served);
                            fibra::spawn(move || {
                                let mut id = [0u8; 4];
                                (&stream).read_exact(&mut id).expect("read the id");
                                served[u32::from_le_bytes(id) as usize]
                                    .fetch_add(1, Ordering::SeqCst);
                                (&stream).write_all(&id).expect("reply");
                            });
                        }
                    })
                })
                .collect();
            let clients: Vec<JoinHandle<()>> = (0..STORM as u32)
                .map(|id| {
                    fibra::spawn(move || {
                        let stream = TcpStream::connect(addr).expect("connect");
                        (&stream).write_all(&id.to_le_bytes()).expect("send the id");
                        let mut reply = [0u8; 4];
                        (&stream).read_exact(&mut reply).expect("read the reply");
                        assert_eq!(u32::from_le_bytes(reply), id);
                    })
                })
                .collect();
            clients.into_iter().for_each(join);
            for acceptor in acceptors {
                acceptor.cancel();
                assert_cancelled("an idle acceptor", acceptor);
            }
        });
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            STORM,
            "connections accepted"
        );
        let wrong: Vec<(usize, usize)> = served
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .enumerate()
            .filter(|&(_, n)| n != 1)
            .collect();
        assert!(
            wrong.is_empty(),
            "(client, times served) not once: {wrong:?}"
        );
    });
}

// ---------------------------------------------------------------------------
// std conversions

#[test]
fn adopted_std_sockets_park_and_convert_back_to_blocking() {
    watchdog("std_conversions", WATCHDOG, || {
        let rt = runtime(1, "nt-std");
        let std_listener = stdnet::TcpListener::bind(LOCAL).unwrap();
        let addr = std_listener.local_addr().unwrap();
        assert!(!is_nonblocking(std_listener.as_raw_fd()));
        let listener = TcpListener::from(std_listener);
        assert!(
            is_nonblocking(listener.as_raw_fd()),
            "adopted: non-blocking"
        );
        let std_client = stdnet::TcpStream::connect(addr).unwrap();
        let client = TcpStream::from(std_client);
        let (server, _) = listener.accept().unwrap();
        // FromRawFd, from a blocking std socket.
        let raw_server = server.into_raw_fd();
        // SAFETY: `raw_server` is an open TCP socket that nothing else owns.
        let server = unsafe { TcpStream::from_raw_fd(raw_server) };
        assert!(is_nonblocking(server.as_raw_fd()));
        // Adopted sockets park their coroutine: the reader and the writer
        // share the only worker.
        let parked = Arc::new(AtomicBool::new(false));
        let (client, server) = rt.block_on(move || {
            let flag = Arc::clone(&parked);
            let reader = fibra::spawn(move || {
                flag.store(true, Ordering::SeqCst);
                let mut buf = [0u8; 5];
                (&server).read_exact(&mut buf).unwrap();
                assert_eq!(&buf, b"hello");
                server
            });
            yield_until(&parked);
            (&client).write_all(b"hello").unwrap();
            (client, join(reader))
        });
        // Back to std: blocking again. A std read with a timeout waits for
        // it (a non-blocking fd would fail at once).
        let std_client: stdnet::TcpStream = client.into();
        assert!(
            !is_nonblocking(std_client.as_raw_fd()),
            "back to std: blocking"
        );
        std_client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let start = Instant::now();
        let error = (&std_client).read(&mut [0u8; 4]).expect_err("nothing sent");
        assert_eq!(error.kind(), ErrorKind::WouldBlock);
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "the std read blocked"
        );
        (&server).write_all(b"std!").unwrap();
        let mut buf = [0u8; 4];
        (&std_client).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"std!");
        let std_listener: stdnet::TcpListener = listener.into();
        assert!(!is_nonblocking(std_listener.as_raw_fd()));
        // FromRawFd for a listener.
        // SAFETY: the fd is an open listening socket handed over here.
        let listener = unsafe { TcpListener::from_raw_fd(std_listener.into_raw_fd()) };
        let accepting = rt.spawn(move || listener.accept().map(|(_, peer)| peer));
        let late = TcpStream::connect(addr).unwrap();
        assert_eq!(join(accepting).unwrap(), late.local_addr().unwrap());
    });
}

#[test]
fn converting_one_handle_to_std_leaves_its_fibra_clone_parking_not_blocking() {
    watchdog("std_conversion_clone", WATCHDOG, || {
        let rt = runtime(1, "nt-stdcl");
        let (client, server) = pair();
        let clone = server.try_clone().unwrap();
        let std_server: stdnet::TcpStream = server.into();
        let tid = rt.block_on(gettid);
        let reader = rt.spawn(move || (&clone).read(&mut [0u8; 8]));
        let deadline = Instant::now() + SLACK;
        let parked = loop {
            if asleep_in(tid, common::EPOLL_WAITS) {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            thread::sleep(Duration::from_millis(1));
        };
        // Unblock the reader either way, so that the runtime can shut down.
        (&client).write_all(b"x").unwrap();
        assert_eq!(join(reader).unwrap(), 1);
        drop(std_server);
        assert!(
            parked,
            "the fibra clone's read blocked its worker in the kernel: turning the \
             other handle into a std (blocking) socket cleared O_NONBLOCK on the \
             shared file description"
        );
    });
}

// ---------------------------------------------------------------------------
// Plain threads

#[test]
fn plain_thread_accept_connect_read_write_block_the_thread_in_poll() {
    watchdog("plain_thread", WATCHDOG, || {
        let listener = listen();
        let addr = listener.local_addr().unwrap();
        let (tid_tx, tid_rx) = mpsc::channel();
        let (accepted_tx, accepted_rx) = mpsc::channel();
        let server = thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            let (stream, peer) = listener.accept().expect("accept on a plain thread");
            accepted_tx.send(()).unwrap();
            let mut buf = [0u8; 4];
            (&stream)
                .read_exact(&mut buf)
                .expect("read on a plain thread");
            assert_eq!(&buf, b"ping");
            (&stream)
                .write_all(b"pong")
                .expect("write on a plain thread");
            peer
        });
        let tid = tid_rx.recv().unwrap();
        wait_for("the server thread blocks in poll (accept)", SLACK, || {
            asleep_in(tid, POLLS)
        });
        let client = TcpStream::connect(addr).expect("connect on a plain thread");
        accepted_rx.recv().unwrap();
        wait_for("the server thread blocks in poll (read)", SLACK, || {
            asleep_in(tid, POLLS)
        });
        (&client).write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        (&client).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        assert_eq!(server.join().unwrap(), client.local_addr().unwrap());
    });
}

// ---------------------------------------------------------------------------
// IPv6

#[test]
fn ipv6_loopback_accepts_connects_and_echoes() {
    watchdog("ipv6", WATCHDOG, || {
        let listener = match TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
            Ok(listener) => listener,
            Err(e) if e.kind() == ErrorKind::AddrNotAvailable => {
                println!("note: ipv6_loopback test skipped: ::1 cannot be bound here ({e})");
                return;
            }
            Err(e) => panic!("bind [::1]:0: {e}"),
        };
        let addr = listener.local_addr().unwrap();
        assert_eq!(addr.ip(), Ipv6Addr::LOCALHOST);
        let rt = runtime(2, "nt-ipv6");
        // Two clients: a coroutine, then a plain thread.
        let server = rt.spawn(move || {
            (0..2)
                .map(|_| {
                    let (stream, peer) = listener.accept().expect("accept");
                    (echo_until_eof(&stream, 1024).expect("echo"), peer)
                })
                .collect::<Vec<_>>()
        });
        let exchange = move || {
            let client = TcpStream::connect(addr).expect("connect [::1]");
            assert_eq!(client.peer_addr().unwrap(), addr);
            (&client).write_all(b"over ipv6").unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            (&client).read_to_end(&mut got).unwrap();
            assert_eq!(got, b"over ipv6");
            client.local_addr().unwrap()
        };
        let from_coroutine = rt.block_on(exchange);
        let from_thread = exchange();
        for client in [from_coroutine, from_thread] {
            assert_eq!(client.ip(), Ipv6Addr::LOCALHOST);
        }
        assert_eq!(
            join(server),
            [(9, from_coroutine), (9, from_thread)],
            "accept names each client"
        );
    });
}

// ---------------------------------------------------------------------------
// Cancellation and runtime drop

#[test]
fn cancelled_reader_unwinds_and_the_socket_serves_the_next_reader() {
    watchdog("cancel_reader", WATCHDOG, || {
        let rt = runtime(1, "nt-cancel");
        let drops = Arc::new(AtomicUsize::new(0));
        let drops2 = Arc::clone(&drops);
        rt.block_on(move || {
            let (client, server) = pair();
            let server = Arc::new(server);
            let parked = Arc::new(AtomicBool::new(false));
            let victim = {
                let (server, flag, drops) = (
                    Arc::clone(&server),
                    Arc::clone(&parked),
                    Arc::clone(&drops2),
                );
                fibra::spawn(move || {
                    let _counter = DropCounter(drops);
                    flag.store(true, Ordering::SeqCst);
                    (&*server).read(&mut [0u8; 16])
                })
            };
            yield_until(&parked);
            victim.cancel();
            assert_cancelled("the parked reader", victim);
            assert_eq!(drops2.load(Ordering::SeqCst), 1, "its destructors ran");
            // The next reader parks and gets the data.
            let parked = Arc::new(AtomicBool::new(false));
            let next = {
                let (server, flag) = (Arc::clone(&server), Arc::clone(&parked));
                fibra::spawn(move || {
                    flag.store(true, Ordering::SeqCst);
                    let mut buf = [0u8; 16];
                    let n = (&*server).read(&mut buf).expect("read");
                    buf[..n].to_vec()
                })
            };
            yield_until(&parked);
            (&client).write_all(b"after cancel").unwrap();
            assert_eq!(join(next), b"after cancel");
        });
    });
}

#[test]
fn dropping_the_runtime_cancels_coroutines_parked_on_sockets() {
    const READERS: usize = 20;
    const TIMED_READERS: usize = 2;
    const ACCEPTORS: usize = 4;
    const WRITERS: usize = 4;
    const CONNECTORS: usize = 2;
    watchdog("runtime_drop", WATCHDOG, || {
        let rt = runtime(2, "nt-rtdrop");
        let drops = Arc::new(AtomicUsize::new(0));
        let full = full_backlog();
        let listener = Arc::new(listen());
        let mut peers = Vec::new();
        let mut handles: Vec<JoinHandle<()>> = Vec::new();
        for _ in 0..READERS {
            let (client, server) = pair();
            peers.push(client);
            let drops = Arc::clone(&drops);
            handles.push(rt.spawn(move || {
                let _counter = DropCounter(drops);
                let n = (&server).read(&mut [0u8; 16]);
                panic!("read returned {n:?} to a parked reader");
            }));
        }
        for _ in 0..TIMED_READERS {
            let (client, server) = pair();
            peers.push(client);
            server
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let drops = Arc::clone(&drops);
            handles.push(rt.spawn(move || {
                let _counter = DropCounter(drops);
                let n = (&server).read(&mut [0u8; 16]);
                panic!("read returned {n:?} to a parked reader");
            }));
        }
        for _ in 0..ACCEPTORS {
            let (listener, drops) = (Arc::clone(&listener), Arc::clone(&drops));
            handles.push(rt.spawn(move || {
                let _counter = DropCounter(drops);
                let r = listener.accept();
                panic!("accept returned {:?}", r.map(|(_, peer)| peer));
            }));
        }
        for _ in 0..WRITERS {
            let (client, server) = pair();
            peers.push(server); // never reads
            let drops = Arc::clone(&drops);
            handles.push(rt.spawn(move || {
                let _counter = DropCounter(drops);
                let chunk = vec![1u8; 256 << 10];
                loop {
                    (&client).write_all(&chunk).expect("write");
                }
            }));
        }
        for _ in 0..CONNECTORS {
            let (addr, drops) = (full.addr, Arc::clone(&drops));
            handles.push(rt.spawn(move || {
                let _counter = DropCounter(drops);
                let r = TcpStream::connect(addr);
                panic!("connect returned {:?}", r.map(drop));
            }));
        }
        wait_until_workers_sleep("nt-rtdrop", 2);
        let total = handles.len();
        assert!(handles.iter().all(|h| !h.is_finished()), "all are parked");
        drop(rt);
        for (i, handle) in handles.into_iter().enumerate() {
            assert_cancelled(&format!("coroutine #{i}"), handle);
        }
        assert_eq!(drops.load(Ordering::SeqCst), total, "every destructor ran");
    });
}

#[test]
fn parked_readers_on_one_worker_each_get_only_their_own_bytes() {
    const READERS: usize = 200;
    watchdog("own_bytes", WATCHDOG, || {
        let rt = runtime(1, "nt-own");
        let message = |i: usize| -> Vec<u8> { (0..1 + i % 60).map(|k| (i ^ k) as u8).collect() };
        let mut clients = Vec::new();
        let mut readers: Vec<Option<JoinHandle<Vec<u8>>>> = Vec::new();
        for _ in 0..READERS {
            let (client, server) = pair();
            clients.push(client);
            readers.push(Some(rt.spawn(move || {
                let mut buf = [0u8; 128];
                let n = (&server).read(&mut buf).expect("read");
                buf[..n].to_vec()
            })));
        }
        wait_until_workers_sleep("nt-own", 1);
        // Wake them one at a time, in a scrambled order (7 and 200 are
        // coprime, so this visits every reader once).
        for k in 0..READERS {
            let i = (k * 7) % READERS;
            (&clients[i]).write_all(&message(i)).unwrap();
            let reader = readers[i].take().expect("each reader once");
            assert_eq!(join(reader), message(i), "reader {i} got its own bytes");
            let early: Vec<usize> = readers
                .iter()
                .enumerate()
                .filter(|(_, r)| r.as_ref().is_some_and(JoinHandle::is_finished))
                .map(|(j, _)| j)
                .collect();
            assert!(early.is_empty(), "readers {early:?} finished without data");
        }
    });
}

/// Writes 256 KiB chunks until a write fails (the peer never reads, so the
/// writer parks once the buffers are full); returns the error.
fn write_until_error(stream: &TcpStream, parked: &AtomicBool) -> io::Error {
    let chunk = vec![3u8; 256 << 10];
    parked.store(true, Ordering::SeqCst);
    loop {
        if let Err(error) = (&*stream).write_all(&chunk) {
            return error;
        }
    }
}

#[test]
fn peer_reset_wakes_a_writer_parked_on_a_full_buffer_with_connection_reset() {
    watchdog("reset_wakes_writer", WATCHDOG, || {
        let rt = runtime(1, "nt-rstw");
        let kind = rt.block_on(|| {
            let (client, server) = pair();
            let parked = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&parked);
            let writer = fibra::spawn(move || write_until_error(&client, &flag).kind());
            yield_until(&parked);
            assert!(
                !writer.is_finished(),
                "the writer is parked on a full buffer"
            );
            set_linger_zero(&server);
            drop(server); // sends RST
            join(writer)
        });
        assert_eq!(kind, ErrorKind::ConnectionReset);
    });
}

#[test]
fn own_shutdown_write_wakes_a_writer_parked_on_a_full_buffer_with_broken_pipe() {
    watchdog("shutdown_wakes_writer", WATCHDOG, || {
        let rt = runtime(1, "nt-shutw");
        let kind = rt.block_on(|| {
            let (client, _server) = pair();
            let client = Arc::new(client);
            let parked = Arc::new(AtomicBool::new(false));
            let writer = {
                let (client, parked) = (Arc::clone(&client), Arc::clone(&parked));
                fibra::spawn(move || write_until_error(&client, &parked).kind())
            };
            yield_until(&parked);
            assert!(
                !writer.is_finished(),
                "the writer is parked on a full buffer"
            );
            client.shutdown(Shutdown::Write).unwrap();
            join(writer)
        });
        assert_eq!(kind, ErrorKind::BrokenPipe);
    });
}

#[test]
fn shutting_down_a_listener_wakes_a_parked_acceptor_with_an_error() {
    watchdog("listener_shutdown", WATCHDOG, || {
        let rt = runtime(1, "nt-lshut");
        let result = rt.block_on(|| {
            let listener = Arc::new(listen());
            let parked = Arc::new(AtomicBool::new(false));
            let acceptor = {
                let (listener, parked) = (Arc::clone(&listener), Arc::clone(&parked));
                fibra::spawn(move || {
                    parked.store(true, Ordering::SeqCst);
                    listener
                        .accept()
                        .map(|(_, peer)| peer)
                        .map_err(|e| e.kind())
                })
            };
            yield_until(&parked);
            assert!(!acceptor.is_finished(), "the acceptor is parked");
            // SAFETY: shutdown(2) on an open socket; on a listener it stops
            // listening (Linux), waking whoever waits in accept.
            let rc = unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
            assert_eq!(rc, 0, "shutdown: {}", io::Error::last_os_error());
            join(acceptor)
        });
        assert_eq!(
            result,
            Err(ErrorKind::InvalidInput),
            "accept on a shut-down listener"
        );
    });
}

/// On drop, says goodbye on its socket and waits for the peer's answer:
/// socket I/O (and parking) inside a destructor that runs while a coroutine
/// unwinds from cancellation.
struct Goodbye {
    stream: Arc<TcpStream>,
    answer: Arc<std::sync::Mutex<Option<io::Result<[u8; 3]>>>>,
}

impl Drop for Goodbye {
    fn drop(&mut self) {
        let result = (&*self.stream).write_all(b"bye").and_then(|()| {
            let mut answer = [0u8; 3];
            (&*self.stream).read_exact(&mut answer).map(|()| answer)
        });
        *self.answer.lock().unwrap() = Some(result);
    }
}

#[test]
fn coroutine_cancelled_by_runtime_drop_can_still_use_its_socket_in_destructors() {
    watchdog("io_in_destructor", WATCHDOG, || {
        let rt = runtime(1, "nt-dtor");
        let (client, server) = pair();
        let server = Arc::new(server);
        let answer = Arc::new(std::sync::Mutex::new(None));
        let victim = {
            let goodbye = Goodbye {
                stream: Arc::clone(&server),
                answer: Arc::clone(&answer),
            };
            rt.spawn(move || {
                let r = (&*goodbye.stream).read(&mut [0u8; 8]);
                panic!("read returned {r:?} with nothing sent");
            })
        };
        wait_until_workers_sleep("nt-dtor", 1);
        // The peer answers "ack" once it has read "bye" (a plain thread).
        let peer = thread::spawn(move || {
            let mut bye = [0u8; 3];
            (&client).read_exact(&mut bye).expect("read bye");
            assert_eq!(&bye, b"bye");
            (&client).write_all(b"ack").expect("answer");
            client
        });
        drop(rt);
        assert_cancelled("the reader", victim);
        let answer = answer.lock().unwrap().take().expect("the destructor ran");
        assert_eq!(&answer.expect("I/O in the destructor"), b"ack");
        drop(peer.join().unwrap());
    });
}

// ---------------------------------------------------------------------------
// Registration across runtimes

#[test]
fn socket_used_in_a_dropped_runtime_parks_again_in_the_next_one() {
    watchdog("reregister", WATCHDOG, || {
        let (client, server) = pair();
        let server = Arc::new(server);
        let first = runtime(1, "nt-rr1");
        let s = Arc::clone(&server);
        let kind = first.block_on(move || {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let kind = (&*s).read(&mut [0u8; 4]).expect_err("nothing yet").kind();
            s.set_read_timeout(None).unwrap();
            kind
        });
        assert_eq!(
            kind,
            ErrorKind::WouldBlock,
            "registered by a timed-out wait"
        );
        drop(first);
        let second = runtime(1, "nt-rr2");
        let s = Arc::clone(&server);
        let reader = second.spawn(move || {
            let mut buf = [0u8; 4];
            (&*s).read_exact(&mut buf).map(|()| buf)
        });
        wait_until_workers_sleep("nt-rr2", 1);
        (&client).write_all(b"next").unwrap();
        assert_eq!(&join(reader).unwrap(), b"next");
    });
}

#[test]
fn reader_parked_in_one_runtime_wakes_after_the_runtime_that_registered_the_socket_is_dropped() {
    watchdog("registering_runtime_dropped", WATCHDOG, || {
        let (client, server) = pair();
        let server = Arc::new(server);
        let first = runtime(1, "nt-rd1");
        let s = Arc::clone(&server);
        first.block_on(move || {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let _ = (&*s).read(&mut [0u8; 4]); // registers on `first`
            s.set_read_timeout(None).unwrap();
        });
        let second = runtime(1, "nt-rd2");
        let s = Arc::clone(&server);
        let reader = second.spawn(move || {
            let mut buf = [0u8; 4];
            (&*s).read_exact(&mut buf).map(|()| buf)
        });
        wait_until_workers_sleep("nt-rd2", 1);
        drop(first);
        (&client).write_all(b"wake").unwrap();
        let woke = {
            let deadline = Instant::now() + SLACK;
            while !reader.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            reader.is_finished()
        };
        if !woke {
            reader.cancel();
            drop(second);
            panic!(
                "the reader never woke: its socket's events go to the epoll of a \
                 runtime that was dropped, which nobody polls any more"
            );
        }
        assert_eq!(&join(reader).unwrap(), b"wake");
    });
}

// ---------------------------------------------------------------------------
// Smaller API points

#[test]
fn nonblocking_mode_returns_would_block_instead_of_parking() {
    watchdog("nonblocking", WATCHDOG, || {
        let rt = runtime(1, "nt-nb");
        rt.block_on(|| {
            let listener = listen();
            listener.set_nonblocking(true).unwrap();
            let error = listener.accept().expect_err("no connection yet");
            assert_eq!(error.kind(), ErrorKind::WouldBlock);
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().expect("a queued connection");
            server.set_nonblocking(true).unwrap();
            let clone = server.try_clone().unwrap();
            for mut stream in [&server, &clone] {
                let error = stream.read(&mut [0u8; 4]).expect_err("no data");
                assert_eq!(error.kind(), ErrorKind::WouldBlock, "clone keeps the mode");
            }
            (&client).write_all(b"data").unwrap();
            server.set_nonblocking(false).unwrap();
            let mut buf = [0u8; 4];
            (&server).read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"data");
        });
    });
}

#[test]
fn connect_by_host_name_and_incoming_and_peek_work() {
    watchdog("host_name", WATCHDOG, || {
        let rt = runtime(2, "nt-name");
        rt.block_on(|| {
            let listener = listen();
            let port = listener.local_addr().unwrap().port();
            let server = fibra::spawn(move || {
                let stream = listener.incoming().next().unwrap().expect("incoming");
                let mut buf = [0u8; 5];
                assert_eq!(stream.peek(&mut buf).expect("peek"), 5);
                assert_eq!(&buf, b"named");
                let mut again = [0u8; 5];
                (&stream).read_exact(&mut again).unwrap();
                assert_eq!(again, buf, "peek left the data in place");
            });
            let client = TcpStream::connect(format!("localhost:{port}")).expect("localhost");
            client.set_nodelay(true).unwrap();
            assert!(client.nodelay().unwrap());
            client.set_ttl(42).unwrap();
            assert_eq!(client.ttl().unwrap(), 42);
            (&client).write_all(b"named").unwrap();
            join(server);
            assert!(client.take_error().unwrap().is_none());
        });
    });
}

//! `fibra::net::{TcpListener, TcpStream}` data paths under load: 100 MiB
//! echoed through one connection (checksummed), 1,000 clients doing 100
//! round trips each, half-close, full-duplex traffic from two coroutines on
//! one socket, many readers sharing one socket, 2,000 clients connecting at
//! once to several acceptors, `::1`.
//!
//! Failures are in net_tcp_failures.rs; parked, blocked and cancelled
//! waiters in net_tcp_waiting.rs.

mod common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv6Addr, Shutdown};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use common::{WATCHDOG, assert_cancelled, join, listen, pair, runtime, watchdog};
use fibra::JoinHandle;
use fibra::net::{TcpListener, TcpStream};

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
// IPv6

/// Whether the host has the IPv6 loopback address: `lo` lists `::1` in
/// /proc/net/if_inet6 (missing when IPv6 is disabled, e.g. by
/// `net.ipv6.conf.lo.disable_ipv6` or `ipv6.disable=1`).
fn has_ipv6_loopback() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|table| {
        table
            .lines()
            .any(|l| l.starts_with("00000000000000000000000000000001 "))
    })
}

#[test]
fn ipv6_loopback_accepts_connects_and_echoes() {
    if !has_ipv6_loopback() {
        eprintln!(
            "ipv6_loopback_accepts_connects_and_echoes: NOT CHECKED on this host: it has no \
             ::1 (no line for it in /proc/net/if_inet6)"
        );
        return;
    }
    watchdog("ipv6", WATCHDOG, || {
        let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("bind [::1]:0 on a host that has ::1: {e}"));
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

//! `fibra::net::UdpSocket`, the `std::net::UdpSocket` mirror: datagrams
//! round-trip between coroutines with exact contents and sender addresses
//! (empty and maximum-size ones too), a connected socket talks to its peer
//! only, coroutines receiving on clones of one socket each get a datagram,
//! the socket works on a plain thread, and a std socket is adopted and
//! given back in blocking mode. (Timeouts: tests/net_timeouts.rs.)
//!
//! Every test runs under a watchdog: a lost wakeup fails it instead of
//! hanging the suite.

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{WATCHDOG, runtime, watchdog};
use fibra::net::UdpSocket;

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

fn localhost() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// Datagram `i` of a test sequence: its index, then bytes derived from it,
/// `len` in all (at least the 4-byte index unless `len` is smaller).
fn datagram(i: u32, len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = i.to_le_bytes().into_iter().cycle().take(len).collect();
    for (k, b) in bytes.iter_mut().enumerate().skip(4) {
        *b = (i as usize * 31 + k * 7) as u8;
    }
    bytes
}

/// Lengths the sequence tests cycle through: empty, tiny, around common
/// sizes, large, and the maximum.
fn length_of(i: u32) -> usize {
    const LENGTHS: [usize; 9] = [0, 1, 4, 5, 512, 1472, 1473, 9000, MAX_DATAGRAM];
    LENGTHS[i as usize % LENGTHS.len()]
}

#[test]
fn a_datagram_round_trips_between_two_coroutines_with_both_addresses() {
    watchdog("udp-round-trip", WATCHDOG, || {
        let rt = runtime(2, "udp-rt");
        rt.block_on(|| {
            let server = UdpSocket::bind(localhost()).unwrap();
            let server_addr = server.local_addr().unwrap();
            let client = UdpSocket::bind(localhost()).unwrap();
            let client_addr = client.local_addr().unwrap();
            let echo = fibra::spawn(move || {
                let mut buf = [0u8; 64];
                let (n, from) = server.recv_from(&mut buf).unwrap();
                server.send_to(&buf[..n], from).unwrap();
                (buf[..n].to_vec(), from)
            });
            assert_eq!(client.send_to(b"ping", server_addr).unwrap(), 4);
            let mut buf = [0u8; 64];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"ping");
            assert_eq!(from, server_addr);
            let (seen, seen_from) = echo.join().unwrap();
            assert_eq!(seen, b"ping");
            assert_eq!(seen_from, client_addr);
        });
    });
}

#[test]
fn many_datagrams_of_every_size_arrive_with_exact_contents() {
    const COUNT: u32 = 900;
    watchdog("udp-many", WATCHDOG, || {
        let rt = runtime(2, "udp-many");
        rt.block_on(|| {
            let server = UdpSocket::bind(localhost()).unwrap();
            let server_addr = server.local_addr().unwrap();
            // Echoes each datagram, and checks it on the way.
            let echo = fibra::spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM + 1];
                for i in 0..COUNT {
                    let (n, from) = server.recv_from(&mut buf).unwrap();
                    assert_eq!(buf[..n], datagram(i, length_of(i)), "datagram {i}");
                    assert_eq!(server.send_to(&buf[..n], from).unwrap(), n);
                }
            });
            let client = UdpSocket::bind(localhost()).unwrap();
            client.connect(server_addr).unwrap();
            let mut buf = vec![0u8; MAX_DATAGRAM + 1];
            for i in 0..COUNT {
                // One in flight at a time: loopback does not drop then, so
                // every datagram must come back, exactly.
                let sent = datagram(i, length_of(i));
                assert_eq!(client.send(&sent).unwrap(), sent.len());
                let n = client.recv(&mut buf).unwrap();
                assert_eq!(n, sent.len(), "echo {i}");
                assert_eq!(buf[..n], sent, "echo {i}");
            }
            echo.join().unwrap();
        });
    });
}

#[test]
fn a_datagram_longer_than_the_buffer_is_cut_and_peek_leaves_it_queued() {
    watchdog("udp-cut", WATCHDOG, || {
        fibra::spawn(|| {
            let a = UdpSocket::bind(localhost()).unwrap();
            let b = UdpSocket::bind(localhost()).unwrap();
            a.send_to(b"0123456789", b.local_addr().unwrap()).unwrap();
            let mut small = [0u8; 4];
            let (n, from) = b.peek_from(&mut small).unwrap();
            assert_eq!((n, &small, from), (4, b"0123", a.local_addr().unwrap()));
            let mut whole = [0u8; 16];
            assert_eq!(b.peek_from(&mut whole).unwrap().0, 10);
            let (n, _) = b.recv_from(&mut small).unwrap();
            assert_eq!((n, &small), (4, b"0123"));
            // The rest of the datagram is gone: nothing more is queued.
            b.set_nonblocking(true).unwrap();
            assert_eq!(
                b.recv_from(&mut whole).unwrap_err().kind(),
                ErrorKind::WouldBlock
            );
        })
        .join()
        .unwrap();
    });
}

#[test]
fn a_connected_socket_talks_to_its_peer_only() {
    watchdog("udp-connected", WATCHDOG, || {
        fibra::spawn(|| {
            let a = UdpSocket::bind(localhost()).unwrap();
            let b = UdpSocket::bind(localhost()).unwrap();
            let stranger = UdpSocket::bind(localhost()).unwrap();
            let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
            assert_eq!(a.peer_addr().unwrap_err().kind(), ErrorKind::NotConnected);
            a.connect(b_addr).unwrap();
            b.connect(a_addr).unwrap();
            assert_eq!(a.peer_addr().unwrap(), b_addr);
            assert_eq!(b.peer_addr().unwrap(), a_addr);

            // The kernel drops the stranger's datagram: b is connected to a.
            stranger.send_to(b"from a stranger", b_addr).unwrap();
            a.send(b"from a").unwrap();
            let mut buf = [0u8; 32];
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"from a");

            b.send(b"reply").unwrap();
            assert_eq!(a.peek(&mut buf).unwrap(), 5);
            let n = a.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"reply");
        })
        .join()
        .unwrap();
    });
}

#[test]
fn coroutines_receiving_on_clones_of_one_socket_each_get_a_datagram() {
    watchdog("udp-clones", WATCHDOG, || {
        // One worker: a coroutine runs until it parks, so the chain below
        // orders the steps: A parks receiving, then B does, then C sends.
        let rt = runtime(1, "udp-clones");
        let received = rt.block_on(|| {
            let socket = UdpSocket::bind(localhost()).unwrap();
            let addr = socket.local_addr().unwrap();
            let clone = socket.try_clone().unwrap();
            let a = fibra::spawn(move || {
                let b = fibra::spawn(move || {
                    let c = fibra::spawn(move || {
                        let sender = UdpSocket::bind(localhost()).unwrap();
                        sender.send_to(b"first", addr).unwrap();
                        sender.send_to(b"second", addr).unwrap();
                    });
                    let mut buf = [0u8; 16];
                    let (n, _) = clone.recv_from(&mut buf).unwrap();
                    c.join().unwrap();
                    buf[..n].to_vec()
                });
                let mut buf = [0u8; 16];
                let (n, _) = socket.recv_from(&mut buf).unwrap();
                (buf[..n].to_vec(), b.join().unwrap())
            });
            a.join().unwrap()
        });
        let got: BTreeSet<Vec<u8>> = [received.0, received.1].into();
        assert_eq!(got, [b"first".to_vec(), b"second".to_vec()].into());
    });
}

#[test]
fn several_coroutines_share_one_socket_and_receive_every_datagram_once() {
    const RECEIVERS: u32 = 4;
    const PER_RECEIVER: u32 = 50;
    watchdog("udp-shared", WATCHDOG, || {
        let rt = runtime(2, "udp-shared");
        let mut seen: Vec<u32> = rt.block_on(|| {
            let socket = Arc::new(UdpSocket::bind(localhost()).unwrap());
            let addr = socket.local_addr().unwrap();
            let receivers: Vec<_> = (0..RECEIVERS)
                .map(|_| {
                    let socket = Arc::clone(&socket);
                    fibra::spawn(move || {
                        let mut buf = [0u8; 8];
                        let mut got = Vec::new();
                        for _ in 0..PER_RECEIVER {
                            let (n, from) = socket.recv_from(&mut buf).unwrap();
                            assert_eq!(n, 4);
                            got.push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
                            socket.send_to(b"ack", from).unwrap();
                        }
                        got
                    })
                })
                .collect();
            let sender = UdpSocket::bind(localhost()).unwrap();
            let mut ack = [0u8; 8];
            for i in 0..RECEIVERS * PER_RECEIVER {
                sender.send_to(&i.to_le_bytes(), addr).unwrap();
                assert_eq!(sender.recv(&mut ack).map(|n| &ack[..n]).unwrap(), b"ack");
            }
            receivers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect()
        });
        seen.sort_unstable();
        assert_eq!(seen, (0..RECEIVERS * PER_RECEIVER).collect::<Vec<_>>());
    });
}

#[test]
fn sockets_work_on_plain_threads() {
    watchdog("udp-plain", WATCHDOG, || {
        let server = UdpSocket::bind(localhost()).unwrap();
        let server_addr = server.local_addr().unwrap();
        // The server thread blocks in poll(2) until the datagram arrives.
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 32];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
        });
        let client = UdpSocket::bind(localhost()).unwrap();
        client.send_to(b"plain thread", server_addr).unwrap();
        let mut buf = [0u8; 32];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"plain thread"[..], server_addr));
        echo.join().unwrap();
    });
}

#[test]
fn host_names_resolve_and_an_empty_resolution_is_an_error() {
    watchdog("udp-names", WATCHDOG, || {
        let rt = runtime(1, "udp-names");
        rt.block_on(|| {
            // Strings go through the lookup path (on a syscall thread).
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind(String::from("127.0.0.1:0")).unwrap();
            let b_port = b.local_addr().unwrap().port();
            a.send_to(b"by name", format!("127.0.0.1:{b_port}"))
                .unwrap();
            a.send_to(b"by pair", ("127.0.0.1", b_port)).unwrap();
            let mut buf = [0u8; 16];
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"by name");
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"by pair");

            let none: &[SocketAddr] = &[];
            assert_eq!(
                a.send_to(b"x", none).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert_eq!(
                UdpSocket::bind(none).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert_eq!(
                UdpSocket::bind(b.local_addr().unwrap()).unwrap_err().kind(),
                ErrorKind::AddrInUse
            );
        });
    });
}

#[test]
fn a_std_socket_is_adopted_and_given_back_in_blocking_mode() {
    watchdog("udp-std", WATCHDOG, || {
        let std_socket = std::net::UdpSocket::bind(localhost()).unwrap();
        let addr = std_socket.local_addr().unwrap();
        let socket = UdpSocket::from(std_socket);
        let socket = fibra::spawn(move || {
            let mut buf = [0u8; 16];
            let n = socket.recv(&mut buf).unwrap(); // parks: the fd is non-blocking
            assert_eq!(&buf[..n], b"adopted");
            socket
        });
        let sender = std::net::UdpSocket::bind(localhost()).unwrap();
        sender.send_to(b"adopted", addr).unwrap();
        let socket = socket.join().unwrap();
        let debug = format!("{socket:?}");
        assert!(
            debug.starts_with("UdpSocket") && debug.contains(&addr.to_string()),
            "{debug}"
        );

        let back = std::net::UdpSocket::from(socket);
        assert_eq!(back.local_addr().unwrap(), addr);
        // Blocking again: a std receive waits out its timeout rather than
        // failing at once with WouldBlock.
        back.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let start = Instant::now();
        let error = back.recv(&mut [0u8; 4]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::WouldBlock);
        assert!(start.elapsed() >= Duration::from_millis(50));
    });
}

#[test]
fn options_read_back_as_set() {
    watchdog("udp-options", WATCHDOG, || {
        let socket = UdpSocket::bind(localhost()).unwrap();
        socket.set_broadcast(true).unwrap();
        assert!(socket.broadcast().unwrap());
        socket.set_ttl(17).unwrap();
        assert_eq!(socket.ttl().unwrap(), 17);
        socket.set_multicast_loop_v4(false).unwrap();
        assert!(!socket.multicast_loop_v4().unwrap());
        socket.set_multicast_ttl_v4(3).unwrap();
        assert_eq!(socket.multicast_ttl_v4().unwrap(), 3);
        assert!(socket.take_error().unwrap().is_none());

        socket.set_nonblocking(true).unwrap();
        let start = Instant::now();
        assert_eq!(
            socket.recv(&mut [0u8; 4]).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    });
}

//! Reads that the kernel stops early while more data is queued: a TCP read
//! stops at the urgent mark (`MSG_OOB`), a Unix-stream read after a chunk
//! that carried file descriptors (`SCM_RIGHTS`). fibra skips the `recv`
//! after a short read (it would normally fail with `EAGAIN`; see
//! `Source::read_stream`), so in these two cases the data behind the stop
//! must still be read at once: no new epoll edge will come for it.
//!
//! The deterministic tests make every byte arrive before the worker polls
//! (the sending coroutine does not park between its sends and its check
//! that they have arrived), so one epoll event reports all of them — the
//! case where a wrongly trusted short read strands the rest. The echo-server
//! test is the report's reproduction: 200 clients against the README's
//! echo loop, each sending `abc`, an urgent byte and `def`.

mod common;

use std::io::{self, ErrorKind, IoSliceMut, Read, Write};
use std::net::{self as stdnet, Shutdown};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{WATCHDOG, join, listen, pair, runtime, tcp_info, watchdog, yield_until};
use fibra::net::{TcpStream, UnixStream};

/// How long a read may wait for data that is already queued before the
/// test calls it stranded (the data is there: any wait is the bug).
const STRANDED: Duration = Duration::from_secs(3);

/// `send(2)` with `flags`, for the urgent byte std cannot send.
fn send_raw(fd: RawFd, bytes: &[u8], flags: libc::c_int) {
    // SAFETY: send reads `bytes.len()` bytes from a live slice.
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), flags) };
    assert_eq!(
        n,
        bytes.len() as isize,
        "send: {}",
        io::Error::last_os_error()
    );
}

/// Spins (without parking, so the worker does not poll) until the peer
/// has acknowledged every byte sent on the TCP socket: then all of it
/// sits in the peer's receive queue. (`FIONREAD` cannot tell: with urgent
/// data pending it counts only the bytes before the mark.)
fn spin_until_acked(socket: &TcpStream) {
    let deadline = Instant::now() + STRANDED;
    while tcp_info(socket).tcpi_unacked != 0 {
        assert!(
            Instant::now() < deadline,
            "the sent bytes were never acknowledged"
        );
        std::hint::spin_loop();
    }
}

/// Reads from `stream` until `total` bytes have come, each read with the
/// `STRANDED` timeout; returns what each read returned. `between` runs after
/// the first read.
fn reads_until(
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    total: usize,
    mut between: impl FnMut(),
) -> Result<Vec<Vec<u8>>, String> {
    let mut reads: Vec<Vec<u8>> = Vec::new();
    let mut buf = [0u8; 64];
    while reads.iter().map(Vec::len).sum::<usize>() < total {
        match read(&mut buf) {
            Ok(0) => return Err(format!("end of file after {reads:?}")),
            Ok(n) => reads.push(buf[..n].to_vec()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(format!(
                    "after reads {reads:?} the rest was stranded: no read returned \
                     within {STRANDED:?} though it was queued"
                ));
            }
            Err(e) => return Err(format!("read failed after {reads:?}: {e}")),
        }
        if reads.len() == 1 {
            between();
        }
    }
    Ok(reads)
}

// ---------------------------------------------------------------------------
// TCP: the urgent mark

/// Sends `abc`, the urgent byte `!` and `def` to a coroutine parked reading
/// the other end, all before its worker polls; returns what its reads gave
/// and the urgent byte (taken with `MSG_OOB` between the reads, unless
/// `inline`).
fn urgent_in_the_middle(inline: bool, prefix: &'static str) -> (Vec<Vec<u8>>, Option<u8>) {
    let rt = runtime(1, prefix);
    rt.block_on(move || {
        let (client, server) = pair();
        client.set_nodelay(true).unwrap();
        if inline {
            let on: libc::c_int = 1;
            // SAFETY: setsockopt reads one int from `on`.
            let rc = unsafe {
                libc::setsockopt(
                    server.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_OOBINLINE,
                    (&raw const on).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_OOBINLINE: {}", io::Error::last_os_error());
        }
        server.set_read_timeout(Some(STRANDED)).unwrap();
        let parked = Arc::new(AtomicBool::new(false));
        let reader = {
            let parked = Arc::clone(&parked);
            fibra::spawn(move || {
                let mut urgent = None;
                parked.store(true, Ordering::SeqCst);
                // The first read parks (nothing sent yet): the socket is
                // registered, and the sends below raise one event.
                let reads = reads_until(
                    |buf| (&server).read(buf),
                    if inline { 7 } else { 6 },
                    || {
                        if !inline {
                            let mut byte = 0u8;
                            // SAFETY: recv writes at most one byte into `byte`.
                            let n = unsafe {
                                libc::recv(
                                    server.as_raw_fd(),
                                    (&raw mut byte).cast(),
                                    1,
                                    libc::MSG_OOB | libc::MSG_DONTWAIT,
                                )
                            };
                            urgent = (n == 1).then_some(byte);
                        }
                    },
                );
                (reads, urgent)
            })
        };
        yield_until(&parked);
        send_raw(client.as_raw_fd(), b"abc", 0);
        send_raw(client.as_raw_fd(), b"!", libc::MSG_OOB);
        send_raw(client.as_raw_fd(), b"def", 0);
        spin_until_acked(&client);
        let (reads, urgent) = join(reader);
        drop(client);
        (reads.unwrap_or_else(|e| panic!("{e}")), urgent)
    })
}

#[test]
fn data_behind_the_urgent_mark_is_read_without_the_peer_sending_again() {
    watchdog("urgent_out_of_band", WATCHDOG, || {
        let (reads, urgent) = urgent_in_the_middle(false, "ns-urg");
        // The kernel stops the first read at the mark: that short read is
        // what must not be trusted.
        assert_eq!(reads, [b"abc".to_vec(), b"def".to_vec()]);
        assert_eq!(urgent, Some(b'!'), "the urgent byte, out of band");
    });
}

#[test]
fn data_behind_an_inline_urgent_byte_is_read_without_the_peer_sending_again() {
    watchdog("urgent_inline", WATCHDOG, || {
        let (reads, urgent) = urgent_in_the_middle(true, "ns-urgi");
        assert_eq!(reads, [b"abc".to_vec(), b"!def".to_vec()]);
        assert_eq!(urgent, None);
    });
}

// ---------------------------------------------------------------------------
// Unix streams: a chunk that carries file descriptors

/// Sends `bytes` on `fd` with `passed` attached as `SCM_RIGHTS`.
fn send_with_fd(fd: RawFd, bytes: &[u8], passed: RawFd) {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // A cmsghdr and one int, aligned as the kernel wants (u64 words).
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain old data; all zeroes is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` has room for one cmsghdr with an int (CMSG_SPACE), so
    // CMSG_FIRSTHDR is non-null and CMSG_DATA has room for the fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        libc::CMSG_DATA(cmsg)
            .cast::<RawFd>()
            .write_unaligned(passed);
    }
    // SAFETY: `msg` points to live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    assert_eq!(
        n,
        bytes.len() as isize,
        "sendmsg: {}",
        io::Error::last_os_error()
    );
}

/// Sends `abc`, `X` carrying an fd, and `def` to a coroutine parked reading
/// the other end, all before its worker polls; returns what its reads gave.
fn fd_in_the_middle(vectored: bool, prefix: &'static str) -> Vec<Vec<u8>> {
    let rt = runtime(1, prefix);
    rt.block_on(move || {
        let (sender, receiver) = UnixStream::pair().unwrap();
        receiver.set_read_timeout(Some(STRANDED)).unwrap();
        let parked = Arc::new(AtomicBool::new(false));
        let reader = {
            let parked = Arc::clone(&parked);
            fibra::spawn(move || {
                parked.store(true, Ordering::SeqCst);
                reads_until(
                    |buf| {
                        if vectored {
                            let (a, b) = buf.split_at_mut(5);
                            (&receiver).read_vectored(&mut [IoSliceMut::new(a), IoSliceMut::new(b)])
                        } else {
                            (&receiver).read(buf)
                        }
                    },
                    7,
                    || {},
                )
            })
        };
        yield_until(&parked);
        // Unix-stream sends queue the data at the receiver before they
        // return: one event, once the worker polls.
        (&sender).write_all(b"abc").unwrap();
        let passed = std::fs::File::open("/dev/null").unwrap();
        send_with_fd(sender.as_raw_fd(), b"X", passed.as_raw_fd());
        (&sender).write_all(b"def").unwrap();
        join(reader).unwrap_or_else(|e| panic!("{e}"))
    })
}

#[test]
fn data_behind_a_chunk_carrying_fds_is_read_without_the_peer_sending_again() {
    watchdog("scm_rights", WATCHDOG, || {
        let reads = fd_in_the_middle(false, "ns-scm");
        // The kernel ends a read with the chunk that carried the fds (it
        // drops them, as std's read does): the short read to distrust.
        assert_eq!(reads, [b"abcX".to_vec(), b"def".to_vec()]);
    });
}

#[test]
fn data_behind_a_chunk_carrying_fds_is_read_by_read_vectored_too() {
    watchdog("scm_rights_vectored", WATCHDOG, || {
        let reads = fd_in_the_middle(true, "ns-scmv");
        assert_eq!(reads, [b"abcX".to_vec(), b"def".to_vec()]);
    });
}

// ---------------------------------------------------------------------------
// The report's reproduction: the README's echo server

/// The echo loop of the README and `examples/echo_server.rs`.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = [0; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stream.write_all(&buf[..n])?;
    }
}

#[test]
fn echo_server_answers_200_clients_that_send_an_urgent_byte_in_the_middle() {
    const CLIENTS: usize = 200;
    watchdog("echo_urgent", WATCHDOG, || {
        let rt = runtime(1, "ns-echo");
        let listener = listen();
        let addr = listener.local_addr().unwrap();
        let server = rt.spawn(move || {
            for _ in 0..CLIENTS {
                let (stream, _) = listener.accept().expect("accept");
                fibra::spawn(move || {
                    let _ = echo(stream);
                });
            }
        });
        // Each client first has "hello" echoed (so its server coroutine is
        // parked in a read, the socket registered), then sends the three
        // pieces back to back, as the report's clients did.
        let clients: Vec<stdnet::TcpStream> = (0..CLIENTS)
            .map(|_| {
                let mut client = stdnet::TcpStream::connect(addr).expect("connect");
                client.set_nodelay(true).unwrap();
                client.write_all(b"hello").unwrap();
                let mut hello = [0u8; 5];
                client.read_exact(&mut hello).unwrap();
                assert_eq!(&hello, b"hello");
                client
            })
            .collect();
        for client in &clients {
            send_raw(client.as_raw_fd(), b"abc", 0);
            send_raw(client.as_raw_fd(), b"!", libc::MSG_OOB);
            send_raw(client.as_raw_fd(), b"def", 0);
        }
        // One deadline for all: a stranded `def` shows as a timeout.
        let deadline = Instant::now() + STRANDED;
        let mut stalled = Vec::new();
        for (i, mut client) in clients.into_iter().enumerate() {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while got.len() < 6 {
                let left = deadline.saturating_duration_since(Instant::now());
                client
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .unwrap();
                match client.read(&mut buf) {
                    Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            if got != b"abcdef" {
                stalled.push((i, String::from_utf8_lossy(&got).into_owned()));
            }
            let _ = client.shutdown(Shutdown::Both);
        }
        join(server);
        assert!(
            stalled.is_empty(),
            "{} of {CLIENTS} connections stalled (client, what came back): {:?}",
            stalled.len(),
            &stalled[..stalled.len().min(10)]
        );
    });
}

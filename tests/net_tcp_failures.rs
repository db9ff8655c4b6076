//! `fibra::net::{TcpListener, TcpStream}` under bad input and failures
//! (timeouts are in tests/net_timeouts.rs): EOF in the middle of `read_exact`, a peer
//! reset, a closed peer (`BrokenPipe`, no SIGPIPE; in a child process), a
//! refused connection, EMFILE on accept (in a child process).

mod common;

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{self as stdnet, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    ChildSetup, SLACK, WATCHDOG, child_mode, join, listen, pair, report, runtime, set_linger_zero,
    watchdog, yield_until,
};
use fibra::JoinHandle;
use fibra::net::TcpStream;

const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(30),
    env: &[],
};

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
        // Port 1 (tcpmux): below the ephemeral range, so the connect can
        // never pick it as its own source port and connect to itself, which
        // a just-closed ephemeral port allows (TCP simultaneous open).
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(
            stdnet::TcpStream::connect(addr).is_err(),
            "something listens on 127.0.0.1:1; this test needs it closed"
        );
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

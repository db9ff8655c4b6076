//! Waiting on a `fibra::net::{TcpListener, TcpStream}`: a socket shut down
//! or a listener clone dropped under a parked coroutine, cancellation and
//! runtime drop while parked, sockets outliving the runtime that registered
//! them, std conversions (parking vs blocking), plain-thread callers blocking
//! in `poll`; a read after a short read (data and end of file in one event,
//! data that comes later); and smaller API points (non-blocking mode, host
//! names, `incoming`, `peek`).
//!
//! "Parked" is established without sleeping blindly: on a one-worker runtime a
//! coroutine sets a flag right before the call that parks, and the test
//! yields until it sees the flag (coroutines are not preempted, so the other
//! one has parked by then); from a plain thread, the test waits until every
//! worker sleeps in `epoll_wait` (read from /proc, see tests/common).

mod common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{self as stdnet, Shutdown};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DropCounter, LOCAL, POLLS, SLACK, WATCHDOG, asleep_in, assert_cancelled, full_backlog, gettid,
    is_nonblocking, join, listen, pair, runtime, set_linger_zero, wait_for,
    wait_until_workers_sleep, watchdog, worker_tids, yield_until,
};
use fibra::JoinHandle;
use fibra::net::{TcpListener, TcpStream};

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
        let worker = worker_tids("nt-dtor", 1)[0];
        // The peer (a plain thread) answers "ack" once it has read "bye" and
        // the worker sleeps again: the destructor's read has found nothing
        // and parked (its coroutine is the worker's only one). So the
        // destructor really waits on its socket while it unwinds from
        // `Cancelled`: a second `Cancelled` raised at that park would abort.
        let peer = thread::spawn(move || {
            let mut bye = [0u8; 3];
            (&client).read_exact(&mut bye).expect("read bye");
            assert_eq!(&bye, b"bye");
            wait_for(
                "the destructor parks in its read (the worker sleeps)",
                SLACK,
                || asleep_in(worker, common::EPOLL_WAITS),
            );
            (&client).write_all(b"ack").expect("answer");
            client
        });
        drop(rt);
        assert_cancelled("the reader", victim);
        let answer = answer.lock().unwrap().take().expect("the destructor ran");
        drop(peer.join().expect("the peer saw the destructor park"));
        assert_eq!(&answer.expect("I/O in the destructor"), b"ack");
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

// ---------------------------------------------------------------------------
// A read after a short read (fibra parks without the `recv` it knows would
// fail; see `Source::read_stream`)

#[test]
fn data_and_end_of_file_in_one_event_give_the_data_then_eof() {
    watchdog("short_read_then_eof", WATCHDOG, || {
        let rt = runtime(1, "nt-eof");
        let got = rt.block_on(|| {
            let (mut client, server) = pair();
            let parked = Arc::new(AtomicBool::new(false));
            let reader = {
                let parked = Arc::clone(&parked);
                fibra::spawn(move || {
                    let mut server = server;
                    let mut first = [0u8; 64];
                    parked.store(true, Ordering::SeqCst);
                    // Parks (nothing sent yet): registers the socket.
                    let n = server.read(&mut first).unwrap();
                    let mut rest = Vec::new();
                    server.read_to_end(&mut rest).unwrap();
                    (first[..n].to_vec(), rest)
                })
            };
            yield_until(&parked);
            // The data and the FIN arrive before the reader runs again, so
            // one epoll event reports both; its short read must not make
            // the next read wait for an edge that will never come.
            client.write_all(b"last words").unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            join(reader)
        });
        assert_eq!(got, (b"last words".to_vec(), Vec::new()));
    });
}

#[test]
fn a_short_read_is_followed_by_data_sent_later_in_a_coroutine_and_on_a_thread() {
    watchdog("short_read_then_more", WATCHDOG, || {
        let rt = runtime(1, "nt-short");
        // In a coroutine: the second read parks and is woken by the next edge.
        let got = rt.block_on(|| {
            let (mut client, mut server) = pair();
            client.write_all(b"one").unwrap();
            let mut buf = [0u8; 64];
            let first = server.read(&mut buf).unwrap();
            assert_eq!(&buf[..first], b"one");
            let writer = fibra::spawn(move || {
                fibra::yield_now();
                client.write_all(b"two").unwrap();
                client
            });
            let second = server.read(&mut buf).unwrap();
            drop(join(writer));
            buf[..second].to_vec()
        });
        assert_eq!(got, b"two");
        // On a plain thread no event bumps the sequence: the second read
        // must block in poll(2) and return the new data, not spin or hang.
        // The writer sends only once this thread sleeps in poll.
        let (mut client, mut server) = rt.block_on(pair);
        client.write_all(b"one").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(server.read(&mut buf).unwrap(), 3);
        let reader = gettid();
        let writer = thread::spawn(move || {
            wait_for("the reader blocks in poll", SLACK, || {
                asleep_in(reader, POLLS)
            });
            client.write_all(b"two").unwrap();
            client
        });
        let n = server.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        drop(writer.join().unwrap());
    });
}

//! `fibra::io::Pollable<T>` over fds that are not fibra sockets: a pipe, an
//! eventfd, a `UnixStream` pair, and a regular file (which epoll refuses).
//! Reads and writes park until the other end acts; `readable()` and
//! `writable()` wait without doing I/O; cancellation and drop leave the fd
//! usable; `into_inner` gives the fd back in the blocking mode it had.
//!
//! "Parked" is established as in tests/net_tcp.rs: on a one-worker runtime a
//! coroutine sets a flag right before the call that parks and the test yields
//! until it sees it; a plain thread is seen asleep in `poll(2)` in /proc.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::panic::resume_unwind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{
    DropCounter, POLLS, WATCHDOG, asleep_in, gettid, is_nonblocking, runtime, wait_for, watchdog,
};
use fibra::io::Pollable;
use fibra::{Cancelled, JoinHandle};

// ---------------------------------------------------------------------------
// Helpers

/// A pipe (read end, write end) with close-on-exec and `flags`.
fn pipe(flags: libc::c_int) -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into `fds`.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | flags) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    }
}

/// An eventfd with counter 0 (blocking, close-on-exec).
fn eventfd() -> File {
    // SAFETY: eventfd(2) with constant arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd owned by nobody else.
    unsafe { File::from_raw_fd(fd) }
}

fn join<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|payload| resume_unwind(payload))
}

/// Yields until `flag` is set. On a one-worker runtime, when this returns
/// the coroutine that set the flag has parked in the call it made next.
fn yield_until(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        fibra::yield_now();
    }
}

/// A flag and a clone of it for another coroutine.
fn flags() -> (Arc<AtomicBool>, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(false));
    (Arc::clone(&flag), flag)
}

/// A regular file in the temporary directory holding `content`, removed
/// when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(tag: &str, content: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "fibra-pollable-{tag}-{}-{}",
            std::process::id(),
            gettid()
        ));
        std::fs::write(&path, content).expect("write the temporary file");
        TempFile(path)
    }

    fn open(&self) -> File {
        File::open(&self.0).expect("open the temporary file")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Pipes

#[test]
fn pipe_read_parks_until_the_writer_writes_then_sees_eof() {
    watchdog("pipe_read", WATCHDOG, || {
        let rt = runtime(1, "pl-pipe");
        let (first, rest) = rt.block_on(|| {
            let (r, w) = pipe(0);
            let (parked, flag) = flags();
            let (got_first, flag_first) = flags();
            let reader = fibra::spawn(move || {
                let mut r = Pollable::new(r).expect("wrap the read end");
                flag.store(true, Ordering::SeqCst);
                let mut buf = [0u8; 16];
                let n = r.read(&mut buf).expect("read");
                flag_first.store(true, Ordering::SeqCst);
                let mut rest = Vec::new();
                r.read_to_end(&mut rest).expect("read to EOF");
                (buf[..n].to_vec(), rest)
            });
            yield_until(&parked);
            assert!(!reader.is_finished(), "the reader waits for data");
            let mut w = Pollable::new(w).expect("wrap the write end");
            w.write_all(b"hello").unwrap();
            yield_until(&got_first);
            assert!(!reader.is_finished(), "the reader waits for EOF");
            w.write_all(b", world").unwrap();
            drop(w);
            join(reader)
        });
        assert_eq!(first, b"hello");
        assert_eq!(rest, b", world");
    });
}

#[test]
fn pipe_writer_parks_while_the_pipe_is_full_until_the_reader_drains_it() {
    const BYTES: usize = 1 << 20; // 16 times a pipe's default capacity
    watchdog("pipe_full", WATCHDOG, || {
        let rt = runtime(1, "pl-full");
        let received = rt.block_on(|| {
            let (r, w) = pipe(0);
            let (parked, flag) = flags();
            let writer = fibra::spawn(move || {
                let mut w = Pollable::new(w).expect("wrap the write end");
                let data: Vec<u8> = (0..BYTES).map(|i| (i % 253) as u8).collect();
                flag.store(true, Ordering::SeqCst);
                w.write_all(&data).expect("write");
            });
            yield_until(&parked);
            assert!(!writer.is_finished(), "the writer parked on a full pipe");
            let mut r = Pollable::new(r).expect("wrap the read end");
            let mut received = Vec::new();
            r.read_to_end(&mut received).expect("read to EOF");
            join(writer);
            received
        });
        assert_eq!(received.len(), BYTES);
        assert!(
            received
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 253) as u8),
            "every byte in order"
        );
    });
}

#[test]
fn pipe_writer_parked_on_a_full_pipe_gets_broken_pipe_when_the_reader_closes() {
    // The kernel reports a closed reader to the write end as EPOLLERR alone
    // (a full pipe is not writable): the wait must end on it.
    watchdog("pipe_reader_closes", WATCHDOG, || {
        let rt = runtime(1, "pl-epipe");
        let kind = rt.block_on(|| {
            let (r, w) = pipe(0);
            let (parked, flag) = flags();
            let writer = fibra::spawn(move || {
                let mut w = Pollable::new(w).expect("wrap the write end");
                let data = vec![7u8; 1 << 20]; // 16 times a pipe's capacity
                flag.store(true, Ordering::SeqCst);
                w.write_all(&data).expect_err("the reader is gone").kind()
            });
            yield_until(&parked);
            assert!(!writer.is_finished(), "the writer parked on a full pipe");
            drop(r);
            join(writer)
        });
        assert_eq!(kind, ErrorKind::BrokenPipe);
    });
}

#[test]
fn writable_parks_until_the_full_pipe_has_room() {
    watchdog("pipe_writable", WATCHDOG, || {
        let rt = runtime(1, "pl-wable");
        rt.block_on(|| {
            let (mut r, w) = pipe(0);
            let w = Arc::new(Pollable::new(w).expect("wrap the write end"));
            // Fill the pipe (the fd is non-blocking now).
            let chunk = [7u8; 4096];
            let mut filled = 0;
            loop {
                match w.get_ref().write(&chunk) {
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("filling the pipe: {e}"),
                }
            }
            assert!(filled >= 4096, "the pipe took {filled} bytes");
            let (parked, flag) = flags();
            let waiter = {
                let w = Arc::clone(&w);
                fibra::spawn(move || {
                    flag.store(true, Ordering::SeqCst);
                    w.writable()
                })
            };
            yield_until(&parked);
            assert!(!waiter.is_finished(), "writable() waits on a full pipe");
            let mut drained = vec![0u8; filled];
            r.read_exact(&mut drained).expect("drain the pipe");
            join(waiter).expect("writable");
            // The room is real: a write goes through without waiting.
            assert_eq!(w.get_ref().write(b"x").expect("write"), 1);
        });
    });
}

// ---------------------------------------------------------------------------
// eventfd

#[test]
fn eventfd_read_and_readable_park_until_the_counter_is_written() {
    watchdog("eventfd", WATCHDOG, || {
        let rt = runtime(1, "pl-event");
        let values = rt.block_on(|| {
            let event = Arc::new(Pollable::new(eventfd()).expect("wrap the eventfd"));
            let (parked_read, flag_read) = flags();
            let (parked_ready, flag_ready) = flags();
            let reader = {
                let event = Arc::clone(&event);
                fibra::spawn(move || {
                    let mut value = [0u8; 8];
                    flag_read.store(true, Ordering::SeqCst);
                    (&*event).read_exact(&mut value).expect("read");
                    let first = u64::from_ne_bytes(value);
                    flag_ready.store(true, Ordering::SeqCst);
                    event.readable().expect("readable");
                    (&*event).read_exact(&mut value).expect("read");
                    (first, u64::from_ne_bytes(value))
                })
            };
            yield_until(&parked_read);
            assert!(!reader.is_finished(), "read waits while the counter is 0");
            (&*event).write_all(&5u64.to_ne_bytes()).unwrap();
            yield_until(&parked_ready);
            assert!(!reader.is_finished(), "readable() waits while it is 0");
            (&*event).write_all(&7u64.to_ne_bytes()).unwrap();
            (&*event).write_all(&4u64.to_ne_bytes()).unwrap();
            join(reader)
        });
        assert_eq!(values, (5, 11), "each read takes the whole counter");
    });
}

// ---------------------------------------------------------------------------
// UnixStream

#[test]
fn unix_stream_pair_carries_data_both_ways_at_once() {
    const BYTES: usize = 4 << 20;
    watchdog("unix_pair", WATCHDOG, || {
        let rt = runtime(1, "pl-unix");
        let results = rt.block_on(|| {
            let (a, b) = UnixStream::pair().unwrap();
            let mut handles = Vec::new();
            for (end, seed) in [(a, 1u8), (b, 2u8)] {
                let end = Arc::new(Pollable::new(end).expect("wrap"));
                let writer = {
                    let end = Arc::clone(&end);
                    fibra::spawn(move || {
                        let data: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8 ^ seed).collect();
                        (&*end).write_all(&data).expect("write");
                        end.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
                    })
                };
                let reader = fibra::spawn(move || {
                    let mut got = Vec::new();
                    (&*end).read_to_end(&mut got).expect("read");
                    got
                });
                handles.push((seed, writer, reader));
            }
            handles
                .into_iter()
                .map(|(seed, writer, reader)| {
                    join(writer);
                    (seed, join(reader))
                })
                .collect::<Vec<_>>()
        });
        for (seed, got) in results {
            // Each end reads what the other wrote.
            let other = 3 - seed;
            assert_eq!(got.len(), BYTES, "end {seed}");
            assert!(
                got.iter()
                    .enumerate()
                    .all(|(i, &b)| b == (i % 251) as u8 ^ other),
                "end {seed} got the other end's bytes in order"
            );
        }
    });
}

// ---------------------------------------------------------------------------
// Regular files

#[test]
fn regular_file_reads_at_once_and_is_always_ready() {
    watchdog("regular_file", WATCHDOG, || {
        let file = TempFile::new("ready", b"plain file content");
        let check = move |file: File| {
            let mut pollable = Pollable::new(file).expect("wrap a regular file");
            // A regular file never blocks: both waits return at once, and a
            // read just reads.
            pollable.readable().expect("readable");
            pollable.writable().expect("writable");
            let mut text = String::new();
            pollable.read_to_string(&mut text).expect("read");
            text
        };
        assert_eq!(check(file.open()), "plain file content", "plain thread");
        let rt = runtime(1, "pl-file");
        let opened = file.open();
        assert_eq!(
            rt.block_on(move || check(opened)),
            "plain file content",
            "coroutine"
        );
    });
}

/// Waits on a regular file through an operation that reports `WouldBlock`:
/// `flock(LOCK_EX | LOCK_NB)` while another open file holds the lock. The
/// wait cannot be done by epoll (it refuses regular files), and poll(2)
/// calls a regular file always ready, so no wait can ever end it. Returns
/// the error, or `Other` ("spun") if the operation was retried 1,000 times.
fn wait_on_locked_file(pollable: &Pollable<File>) -> std::io::Error {
    let tries = AtomicUsize::new(0);
    let result = pollable.read_with(|file| {
        if tries.fetch_add(1, Ordering::SeqCst) >= 1000 {
            return Err(std::io::Error::other(
                "retried flock 1,000 times: the wait spins instead of failing",
            ));
        }
        // SAFETY: flock(2) on an open fd.
        match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    });
    result.expect_err("the lock is held elsewhere")
}

fn locked_file(tag: &str) -> (TempFile, File) {
    let file = TempFile::new(tag, b"locked");
    let holder = file.open();
    // SAFETY: flock(2) on an open fd.
    let rc = unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    (file, holder)
}

#[test]
fn regular_file_wait_in_a_coroutine_is_unsupported() {
    watchdog("regular_file_wait_coroutine", WATCHDOG, || {
        let (file, _holder) = locked_file("coroutine");
        let pollable = Pollable::new(file.open()).unwrap();
        let rt = runtime(1, "pl-fwait");
        let error = rt.block_on(move || wait_on_locked_file(&pollable));
        assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    });
}

#[test]
fn regular_file_wait_on_a_plain_thread_is_unsupported() {
    watchdog("regular_file_wait_thread", WATCHDOG, || {
        let (file, _holder) = locked_file("thread");
        let pollable = Pollable::new(file.open()).unwrap();
        let error = wait_on_locked_file(&pollable);
        assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    });
}

// ---------------------------------------------------------------------------
// Blocking mode, plain threads, cancellation, drop

#[test]
fn into_inner_restores_the_blocking_mode_it_found() {
    watchdog("into_inner", WATCHDOG, || {
        let rt = runtime(1, "pl-inner");
        // Blocking before: blocking after, also once a wait registered it.
        let (r, w) = pipe(0);
        let (r, w) = rt.block_on(move || {
            let r = Pollable::new(r).unwrap();
            assert!(is_nonblocking(r.as_raw_fd()), "non-blocking while wrapped");
            let mut w = Pollable::new(w).unwrap();
            let (parked, flag) = flags();
            let reader = fibra::spawn(move || {
                flag.store(true, Ordering::SeqCst);
                let mut byte = [0u8; 1];
                r.read_with(|mut f| f.read(&mut byte)).unwrap();
                r
            });
            yield_until(&parked);
            w.write_all(b"x").unwrap();
            let r = join(reader).into_inner().expect("into_inner");
            (r, w.into_inner().expect("into_inner"))
        });
        assert!(
            !is_nonblocking(r.as_raw_fd()),
            "the read end is blocking again"
        );
        assert!(
            !is_nonblocking(w.as_raw_fd()),
            "the write end is blocking again"
        );
        // Wrapped again after into_inner, it registers and parks again (the
        // first registration is gone).
        let received = rt.block_on(move || {
            let r = Pollable::new(r).unwrap();
            let (parked, flag) = flags();
            let reader = fibra::spawn(move || {
                flag.store(true, Ordering::SeqCst);
                let mut buf = [0u8; 5];
                let mut r = r;
                r.read_exact(&mut buf).map(|()| buf)
            });
            yield_until(&parked);
            let mut w = w;
            w.write_all(b"again").unwrap();
            join(reader)
        });
        assert_eq!(&received.expect("read after re-wrapping"), b"again");
        // Non-blocking before: non-blocking after.
        let (r, _w) = pipe(libc::O_NONBLOCK);
        let r = Pollable::new(r).unwrap().into_inner().unwrap();
        assert!(is_nonblocking(r.as_raw_fd()), "left non-blocking as found");
        // A UnixStream too.
        let (a, _b) = UnixStream::pair().unwrap();
        let a = Pollable::new(a).unwrap().into_inner().unwrap();
        assert!(!is_nonblocking(a.as_raw_fd()));
    });
}

#[test]
fn pipe_read_on_a_plain_thread_blocks_in_poll_until_written() {
    watchdog("plain_thread", WATCHDOG, || {
        let (r, w) = pipe(0);
        let (tid_tx, tid_rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut r = Pollable::new(r).unwrap();
            tid_tx.send(gettid()).unwrap();
            let mut buf = [0u8; 4];
            r.read_exact(&mut buf).expect("read on a plain thread");
            buf
        });
        let tid = tid_rx.recv().unwrap();
        wait_for(
            "the reader thread blocks in poll",
            Duration::from_secs(10),
            || asleep_in(tid, POLLS),
        );
        let mut w = Pollable::new(w).unwrap();
        w.write_all(b"ping").unwrap();
        assert_eq!(&reader.join().unwrap(), b"ping");
    });
}

#[test]
fn cancelled_reader_unwinds_and_the_pipe_serves_the_next_reader() {
    watchdog("cancel", WATCHDOG, || {
        let rt = runtime(1, "pl-cancel");
        let drops = Arc::new(AtomicUsize::new(0));
        let drops2 = Arc::clone(&drops);
        let got = rt.block_on(move || {
            let (r, w) = pipe(0);
            let r = Arc::new(Pollable::new(r).unwrap());
            let (parked, flag) = flags();
            let victim = {
                let (r, drops) = (Arc::clone(&r), Arc::clone(&drops2));
                fibra::spawn(move || {
                    let _counter = DropCounter(drops);
                    flag.store(true, Ordering::SeqCst);
                    (&*r).read(&mut [0u8; 8])
                })
            };
            yield_until(&parked);
            victim.cancel();
            match victim.join() {
                Ok(result) => panic!("the cancelled reader returned {result:?}"),
                Err(payload) => assert!(payload.is::<Cancelled>(), "joined with Cancelled"),
            }
            let (parked, flag) = flags();
            let next = fibra::spawn(move || {
                flag.store(true, Ordering::SeqCst);
                let mut buf = [0u8; 4];
                (&*r).read_exact(&mut buf).map(|()| buf)
            });
            yield_until(&parked);
            let mut w = Pollable::new(w).unwrap();
            w.write_all(b"next").unwrap();
            join(next)
        });
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "the victim's destructors ran"
        );
        assert_eq!(&got.unwrap(), b"next");
    });
}

/// An fd borrowed by number: wrapping it does not close it on drop.
struct FdNumber(std::os::fd::RawFd);

impl AsRawFd for FdNumber {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

#[test]
fn pollable_dropped_on_a_plain_thread_deregisters_so_its_fd_can_be_wrapped_again() {
    watchdog("drop_elsewhere", WATCHDOG, || {
        let rt = runtime(1, "pl-drop");
        let (r, mut w) = pipe(0);
        let fd = r.as_raw_fd();
        let read_byte = |pollable: &Pollable<FdNumber>| {
            let mut byte = [0u8; 1];
            pollable
                .read_with(|p| {
                    // SAFETY: reads at most one byte into `byte` from an fd
                    // that `r` keeps open.
                    match unsafe { libc::read(p.0, byte.as_mut_ptr().cast(), 1) } {
                        1 => Ok(byte[0]),
                        _ => Err(std::io::Error::last_os_error()),
                    }
                })
                .expect("read a byte")
        };
        let (w_tx, w_rx) = mpsc::channel::<()>();
        // Registered on the worker's epoll by a wait...
        let first = Pollable::new(FdNumber(fd)).unwrap();
        let waiter = rt.spawn(move || {
            let _ = w_tx.send(());
            let byte = read_byte(&first);
            (first, byte)
        });
        w_rx.recv().unwrap();
        common::wait_until_workers_sleep("pl-drop", 1);
        w.write_all(b"1").unwrap();
        let (first, byte) = join(waiter);
        assert_eq!(byte, b'1');
        // ...then dropped on this thread, which must take the fd out of that
        // epoll set: adding the same fd again would fail with EEXIST.
        drop(first);
        let got = rt.block_on(move || {
            let again = Pollable::new(FdNumber(fd)).unwrap();
            let (parked, flag) = flags();
            let reader = fibra::spawn(move || {
                flag.store(true, Ordering::SeqCst);
                read_byte(&again)
            });
            yield_until(&parked);
            w.write_all(b"2").unwrap();
            join(reader)
        });
        assert_eq!(got, b'2');
        drop(r);
    });
}

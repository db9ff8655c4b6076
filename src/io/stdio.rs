//! The standard streams from coroutines: `stdin()`, `stdout()`, `stderr()`.
//!
//! This file owns `fibra::io::{Stdin, Stdout, Stderr}` and their locks,
//! mirrors of std's. Every call that may block — a read waiting for a line,
//! a write to a full pipe or a slow terminal — runs std's own call on one of
//! the runtime's syscall threads (`crate::blocking::unblock_scoped`, which
//! lends the caller's buffer: nothing is copied) while the calling coroutine
//! is parked, so a coroutine waiting for input never holds up its worker. On
//! a plain OS thread the same calls run inline.
//!
//! # Why the syscall threads, not the poller
//!
//! The poller works on descriptors fibra owns: it sets `O_NONBLOCK` and
//! parks on `EAGAIN` until epoll reports the descriptor ready. Descriptors
//! 0, 1 and 2 are not fibra's. They were inherited, and `O_NONBLOCK` is a
//! flag of the *open file description*, shared with the parent shell and
//! with every other process that inherited it: set on a terminal or a pipe,
//! their blocking reads and writes start failing with `EAGAIN` (`cat` exits
//! with "Resource temporarily unavailable", an interactive shell misbehaves),
//! and restoring the flag at exit does not help a process that crashes or a
//! reader that runs meanwhile. Go keeps its stdio blocking for this reason.
//! So fibra never touches the descriptors' flags: whatever stdio is —
//! terminal, pipe, file — it is read and written with blocking calls, on the
//! blocking pool.
//!
//! # Where the buffering lives
//!
//! std keeps one process-wide buffer for stdin and one line buffer for
//! stdout, each behind a reentrant lock; fibra uses them and keeps no bytes
//! of its own that they would miss. A syscall thread takes std's lock for one
//! call (`read_line`, `write_all`, ...) and has released it before the
//! coroutine resumes. So fibra's handles, std's handles on plain threads and
//! `println!` all see one stream, and a line read by `read_line` or a buffer
//! written by one `write_all` is never split or interleaved with another
//! caller's.
//!
//! std's lock itself cannot be held across a park: it belongs to an OS
//! thread, so held on a worker it would make every coroutine of that worker
//! its owner and block the syscall thread that needs it. fibra's handles
//! have a lock of their own (`HandleLock`), taken by each call or by
//! `lock()` for a run of calls: a coroutine that waits for it parks, and it
//! is reentrant per coroutine (per thread on a plain thread), as std's is
//! per thread.
//!
//! `StdinLock` implements `BufRead`. `read_line` and `read_until` (so
//! `lines()` and `split()`), `read_to_end`, `read_to_string`, `read_exact`
//! are one hop each, straight on std's buffer. `fill_buf` copies what std
//! has buffered (at most its 8 KiB) into the lock and `consume` only counts;
//! the count is applied to std's buffer at the next hop of any fibra stdin
//! handle, or when the lock is dropped. Until then the bytes stay in std's
//! buffer too, so none is lost when a lock is dropped.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, IoSlice, IoSliceMut, Read, Write};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use crate::Coroutine;
use crate::blocking::unblock_scoped;

// ---------------------------------------------------------------------------
// The handles' lock

/// A lock held by a coroutine across parks: a coroutine that waits for it
/// parks (a plain thread blocks), and its holder may take it again (it
/// counts). `data` is the state its holder works on.
struct HandleLock<T: 'static> {
    state: Mutex<LockState<T>>,
}

struct LockState<T> {
    /// The id (`fibra::current().id()`) of the holder.
    owner: Option<u64>,
    /// How many times the holder has taken it.
    depth: usize,
    /// Who waits, woken one at a time in order.
    waiters: VecDeque<Coroutine>,
    data: T,
}

impl<T: 'static> HandleLock<T> {
    const fn new(data: T) -> HandleLock<T> {
        HandleLock {
            state: Mutex::new(LockState {
                owner: None,
                depth: 0,
                waiters: VecDeque::new(),
                data,
            }),
        }
    }

    /// The state, locked for a moment (never across a park).
    fn state(&self) -> MutexGuard<'_, LockState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the holder's data. Only the holder calls it.
    fn with_data<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.state().data)
    }

    /// Takes the lock, parking while another coroutine or thread holds it.
    fn acquire(&'static self) -> HandleGuard<T> {
        let me = crate::current();
        let id = me.id();
        loop {
            let mut state = self.state();
            match state.owner {
                None => {
                    state.owner = Some(id);
                    state.depth = 1;
                    state.waiters.retain(|w| w.id() != id);
                    break;
                }
                Some(owner) if owner == id => {
                    state.depth += 1;
                    break;
                }
                Some(_) => {
                    if !state.waiters.iter().any(|w| w.id() == id) {
                        state.waiters.push_back(me.clone());
                    }
                }
            }
            drop(state);
            // A cancelled coroutine unwinds out of `park`: leave the queue.
            let leave = LeaveQueue { lock: self, id };
            crate::park();
            std::mem::forget(leave);
        }
        HandleGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    fn release(&self) {
        let mut state = self.state();
        state.depth -= 1;
        if state.depth > 0 {
            return;
        }
        state.owner = None;
        let next = state.waiters.pop_front();
        drop(state);
        if let Some(next) = next {
            next.unpark();
        }
    }
}

/// Takes a waiter that unwinds out of its park off the queue, and hands on
/// the wake it may have been given.
struct LeaveQueue<T: 'static> {
    lock: &'static HandleLock<T>,
    id: u64,
}

impl<T> Drop for LeaveQueue<T> {
    fn drop(&mut self) {
        let mut state = self.lock.state();
        state.waiters.retain(|w| w.id() != self.id);
        let next = match state.owner {
            None => state.waiters.pop_front(),
            Some(_) => None,
        };
        drop(state);
        if let Some(next) = next {
            next.unpark();
        }
    }
}

/// One hold of a `HandleLock`. Not `Send`, like std's lock guards: the
/// lock is reentrant for the coroutine that took it.
struct HandleGuard<T: 'static> {
    lock: &'static HandleLock<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Drop for HandleGuard<T> {
    fn drop(&mut self) {
        self.lock.release();
    }
}

// ---------------------------------------------------------------------------
// Stdin

/// What the holder of the stdin lock shares with its other stdin locks.
struct StdinState {
    /// Bytes `consume`d through a `StdinLock` but not yet in std's buffer.
    pending: usize,
    /// Hops to a syscall thread so far; a lock's copy of std's buffer is
    /// valid while no hop has happened since it was taken.
    generation: u64,
}

static STDIN: HandleLock<StdinState> = HandleLock::new(StdinState {
    pending: 0,
    generation: 0,
});

/// A handle to the process's standard input, like `std::io::Stdin`, whose
/// reads run on a syscall thread (see [`stdin`]).
#[derive(Debug)]
pub struct Stdin {
    std: io::Stdin,
}

/// The standard input, like `std::io::stdin()`, for coroutines.
///
/// Reads go through std's process-wide stdin buffer, each on a syscall
/// thread while the calling coroutine is parked: a coroutine waiting for
/// input leaves its worker free for the others. (fibra does not make
/// descriptor 0 non-blocking: the flag would be shared with the parent
/// shell and every process that inherited it, so it is read with blocking
/// calls on the blocking pool.) On a plain thread, a read blocks that thread,
/// as std's does.
///
/// A coroutine waiting for input cannot be cancelled out of the read: it
/// unwinds once the read returns (a line arrives, or end of input). So
/// dropping a runtime waits for such a coroutine until then.
///
/// ```no_run
/// use std::io::BufRead;
///
/// let total = fibra::spawn(|| {
///     let mut total = 0u64;
///     for line in fibra::io::stdin().lines() {
///         total += line?.trim().parse::<u64>().unwrap_or(0);
///     }
///     Ok::<_, std::io::Error>(total)
/// })
/// .join()
/// .unwrap()
/// .unwrap();
/// println!("{total}");
/// ```
pub fn stdin() -> Stdin {
    Stdin { std: io::stdin() }
}

impl Stdin {
    /// Locks this handle for the calling coroutine (other coroutines'
    /// fibra stdin calls wait, parked), giving a `BufRead`er, as
    /// `std::io::Stdin::lock`. Reentrant within one coroutine.
    pub fn lock(&self) -> StdinLock<'static> {
        StdinLock {
            guard: STDIN.acquire(),
            peeked: Vec::new(),
            pos: 0,
            generation: 0,
            _handle: PhantomData,
        }
    }

    /// Reads a line, newline included, and appends it to `buf`, as
    /// `std::io::Stdin::read_line`; `Ok(0)` at end of input. One hop.
    pub fn read_line(&self, buf: &mut String) -> io::Result<usize> {
        self.lock().read_line(buf)
    }

    /// The lines of the input, as `std::io::Stdin::lines` (the lock is held
    /// while the iterator lives). One hop per line.
    pub fn lines(self) -> io::Lines<StdinLock<'static>> {
        self.lock().lines()
    }
}

impl Read for &Stdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.lock().read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.lock().read_vectored(bufs)
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.lock().read_to_end(buf)
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        self.lock().read_to_string(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.lock().read_exact(buf)
    }
}

impl Read for Stdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        (&*self).read_to_end(buf)
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        (&*self).read_to_string(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        (&*self).read_exact(buf)
    }
}

impl AsFd for Stdin {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.std.as_fd()
    }
}

impl AsRawFd for Stdin {
    fn as_raw_fd(&self) -> RawFd {
        self.std.as_raw_fd()
    }
}

/// The standard input locked for one coroutine ([`Stdin::lock`]): a
/// `BufRead` whose calls run on a syscall thread.
///
/// `read_line`, `read_until` (hence `lines` and `split`), `read_to_end`,
/// `read_to_string` and `read_exact` are one hop each. `fill_buf` hops to
/// copy what std has buffered (up to 8 KiB); `consume` and `read`s served
/// from that copy need no hop.
pub struct StdinLock<'a> {
    guard: HandleGuard<StdinState>,
    /// A copy of std's buffered bytes as of this lock's last `fill_buf`.
    peeked: Vec<u8>,
    /// How much of `peeked` has been consumed.
    pos: usize,
    /// `StdinState::generation` when `peeked` was taken.
    generation: u64,
    _handle: PhantomData<&'a Stdin>,
}

impl StdinLock<'_> {
    /// Runs `op` on std's locked stdin on a syscall thread, after applying
    /// the consumed count std has not seen yet. Invalidates every lock's
    /// copy of the buffer.
    fn hop<R: Send>(&mut self, op: impl FnOnce(&mut io::StdinLock<'static>) -> R + Send) -> R {
        let (pending, generation) = self.guard.lock.with_data(|state| {
            state.generation += 1;
            (std::mem::take(&mut state.pending), state.generation)
        });
        self.peeked.clear();
        self.pos = 0;
        self.generation = generation;
        unblock_scoped(move || {
            let mut stdin = io::stdin().lock();
            stdin.consume(pending);
            op(&mut stdin)
        })
    }

    /// The unconsumed part of this lock's copy of std's buffer, if that
    /// copy is still current.
    fn unread(&self) -> Option<&[u8]> {
        let rest = &self.peeked[self.pos..];
        let current = self.guard.lock.with_data(|s| s.generation) == self.generation;
        (!rest.is_empty() && current).then_some(rest)
    }
}

impl Read for StdinLock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(rest) = self.unread() {
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.consume(n);
            return Ok(n);
        }
        self.hop(|stdin| stdin.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.hop(|stdin| stdin.read_vectored(bufs))
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.hop(|stdin| stdin.read_to_end(buf))
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        self.hop(|stdin| stdin.read_to_string(buf))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.hop(|stdin| stdin.read_exact(buf))
    }
}

impl BufRead for StdinLock<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.unread().is_none() {
            let mut copy = std::mem::take(&mut self.peeked);
            let filled = self.hop(|stdin| {
                copy.clear();
                stdin.fill_buf().map(|bytes| copy.extend_from_slice(bytes))
            });
            self.peeked = copy;
            filled?;
        }
        Ok(&self.peeked[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        let generation = self.generation;
        let rest = self.peeked.len() - self.pos;
        let taken = self.guard.lock.with_data(|state| {
            // On a current copy, as std, at most what is buffered; on a
            // stale one std clamps it when applied.
            let taken = if state.generation == generation {
                amt.min(rest)
            } else {
                amt
            };
            state.pending += taken;
            (state.generation == generation).then_some(taken)
        });
        if let Some(taken) = taken {
            self.pos += taken;
        }
    }

    fn read_until(&mut self, byte: u8, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.hop(|stdin| stdin.read_until(byte, buf))
    }

    fn read_line(&mut self, buf: &mut String) -> io::Result<usize> {
        self.hop(|stdin| stdin.read_line(buf))
    }
}

impl Drop for StdinLock<'_> {
    fn drop(&mut self) {
        // Bytes consumed here must be gone from std's buffer before anyone
        // else (a std handle on a plain thread) reads it.
        if self.guard.lock.with_data(|state| state.pending) > 0 {
            self.hop(|_| ());
        }
    }
}

impl fmt::Debug for StdinLock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdinLock").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Stdout and stderr

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

static STDOUT: HandleLock<()> = HandleLock::new(());
static STDERR: HandleLock<()> = HandleLock::new(());

/// What `StdoutLock` and `StderrLock` share: a hold of fibra's lock for
/// the stream, and calls to std's on a syscall thread.
struct OutputLock {
    _guard: HandleGuard<()>,
    stream: Stream,
}

impl OutputLock {
    fn new(stream: Stream) -> OutputLock {
        let lock = match stream {
            Stream::Out => &STDOUT,
            Stream::Err => &STDERR,
        };
        OutputLock {
            _guard: lock.acquire(),
            stream,
        }
    }

    /// Runs `op` on std's locked stream, on a syscall thread.
    fn call<R: Send>(&self, op: impl FnOnce(&mut dyn Write) -> R + Send) -> R {
        let stream = self.stream;
        unblock_scoped(move || match stream {
            Stream::Out => op(&mut io::stdout().lock()),
            Stream::Err => op(&mut io::stderr().lock()),
        })
    }
}

impl Write for OutputLock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.call(|out| out.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.call(|out| out.write_vectored(bufs))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.call(|out| out.write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.call(|out| out.flush())
    }

    /// Formats here, then writes the text in one hop and one `write_all`
    /// (the default would hop per piece, and other writers could come in
    /// between).
    fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
        if let Some(text) = args.as_str() {
            return self.write_all(text.as_bytes());
        }
        let mut text = String::new();
        fmt::Write::write_fmt(&mut text, args).map_err(|_| io::Error::other("formatter error"))?;
        self.write_all(text.as_bytes())
    }
}

/// Defines a handle (`Stdout`/`Stderr`), its lock and its constructor.
macro_rules! output_stream {
    (
        $handle:ident, $guard:ident, $ctor:ident, $stream:expr, $std_ctor:path, $std_type:ty,
        $name:literal, $buffering:literal
    ) => {
        #[doc = concat!(
            "A handle to the process's standard ", $name, ", like `std::io::",
            stringify!($handle), "`, whose writes run on a syscall thread (see [`",
            stringify!($ctor), "`])."
        )]
        #[derive(Debug)]
        pub struct $handle {
            std: $std_type,
        }

        #[doc = concat!(
            "The standard ", $name, ", like `std::io::", stringify!($ctor),
            "()`, for coroutines.\n\n",
            "Writes go to std's handle (", $buffering, "), each on a syscall thread while ",
            "the calling coroutine is parked, so a full pipe or a slow terminal stalls ",
            "only that coroutine, not its worker. (fibra does not make the descriptor ",
            "non-blocking: the flag would be shared with the parent shell and every ",
            "process that inherited it.) On a plain thread, a write blocks that thread, ",
            "as std's does.\n\n",
            "One `write_all`, and one `write!`/`writeln!` (formatted first, then written ",
            "with one `write_all`), reaches the stream whole: no other write of this ",
            "process comes in between. `lock()` keeps other coroutines' writes out for a ",
            "run of calls.\n\n",
            "```\nuse std::io::Write;\n\n",
            "fibra::spawn(|| writeln!(fibra::io::", stringify!($ctor),
            "(), \"hello from a coroutine\"))\n    .join()\n    .unwrap()\n    .unwrap();\n```"
        )]
        pub fn $ctor() -> $handle {
            $handle { std: $std_ctor() }
        }

        impl $handle {
            #[doc = concat!(
                "Locks this handle for the calling coroutine, as `std::io::",
                stringify!($handle), "::lock`: other coroutines' writes to it through ",
                "fibra wait (parked) until the lock is dropped. Reentrant within one ",
                "coroutine."
            )]
            pub fn lock(&self) -> $guard<'static> {
                $guard {
                    inner: OutputLock::new($stream),
                    _handle: PhantomData,
                }
            }
        }

        impl Write for &$handle {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.lock().write(buf)
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.lock().write_vectored(bufs)
            }

            fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                self.lock().write_all(buf)
            }

            fn flush(&mut self) -> io::Result<()> {
                self.lock().flush()
            }

            fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
                self.lock().write_fmt(args)
            }
        }

        impl Write for $handle {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                (&*self).write_vectored(bufs)
            }

            fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                (&*self).write_all(buf)
            }

            fn flush(&mut self) -> io::Result<()> {
                (&*self).flush()
            }

            fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
                (&*self).write_fmt(args)
            }
        }

        impl AsFd for $handle {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.std.as_fd()
            }
        }

        impl AsRawFd for $handle {
            fn as_raw_fd(&self) -> RawFd {
                self.std.as_raw_fd()
            }
        }

        #[doc = concat!(
            "The standard ", $name, " locked for one coroutine ([`", stringify!($handle),
            "::lock`]); each call runs on a syscall thread."
        )]
        pub struct $guard<'a> {
            inner: OutputLock,
            _handle: PhantomData<&'a $handle>,
        }

        impl Write for $guard<'_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.inner.write(buf)
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.inner.write_vectored(bufs)
            }

            fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                self.inner.write_all(buf)
            }

            fn flush(&mut self) -> io::Result<()> {
                self.inner.flush()
            }

            fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
                self.inner.write_fmt(args)
            }
        }

        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard)).finish_non_exhaustive()
            }
        }
    };
}

output_stream!(
    Stdout,
    StdoutLock,
    stdout,
    Stream::Out,
    io::stdout,
    io::Stdout,
    "output",
    "line-buffered, in std's process-wide buffer: `flush` to see a partial line"
);

output_stream!(
    Stderr,
    StderrLock,
    stderr,
    Stream::Err,
    io::stderr,
    io::Stderr,
    "error",
    "unbuffered, as std's"
);

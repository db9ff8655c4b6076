//! `Source`: one non-blocking fd as the poller sees it, and the wait that
//! parks a coroutine until the fd is ready.
//!
//! # The readiness protocol (no lost events)
//!
//! Each direction (read, write) has a sequence number, bumped by the poller
//! on every edge-triggered event for that direction, and a queue of waiting
//! coroutines. `Source::io` reads the sequence number, tries the system
//! call, and on `EAGAIN` calls `wait`, which under the state's lock checks
//! whether the number moved (an event arrived after the snapshot: retry at
//! once) and otherwise queues the coroutine and parks it. The poller bumps the
//! number and wakes the queue under the same lock, so an event is either
//! seen by the check or finds the coroutine queued: it is never lost between
//! the `EAGAIN` and the park. (Go's `pollDesc` has one waiter slot per
//! direction and serialises users with a lock on the fd; here a queue lets
//! several coroutines wait on one socket, e.g. acceptors on one listener.)
//!
//! Every waiter of a direction is woken by an event: with edge triggering,
//! waking one could leave a second pending connection or datagram unnoticed
//! if the woken coroutine takes only one. The losers find `EAGAIN` again
//! and re-queue.
//!
//! # Registration
//!
//! An fd joins an epoll set the first time a coroutine has to wait on it,
//! on the epoll of that coroutine's worker (a socket is often created by
//! one coroutine, an acceptor, and used by another that may start on
//! another worker; registering where the first wait happens puts the
//! events where the coroutine lives). It stays there; a later waiter on
//! another worker is woken through that worker's inbox. If the registering
//! runtime is dropped, the next wait registers again. Dropping the `Source`
//! deregisters it. A listening socket shared by several processes can ask
//! for `EPOLLEXCLUSIVE` (`set_exclusive`), so that a connection wakes one
//! waiting process rather than all of them (src/prefork/listeners.rs).
//!
//! On a plain thread (not a coroutine) a wait is `poll(2)` on the fd.
//!
//! # Short stream reads (one `recv` saved per request)
//!
//! A stream read that returns fewer bytes than asked for normally emptied
//! the receive queue, so the next read would fail with `EAGAIN`: it parks
//! at once instead (`read_stream`; nginx's `ready = 0` after a short
//! `recv`). The invariant that makes this safe: *a short read is trusted
//! only if the queue was empty when it returned, or an event after the
//! sequence number read before it is still to come.* Data arriving after
//! the read raises a new edge, which bumps the number and ends the wait.
//! The kernel also stops a stream read early, with data still queued and
//! no new edge to come, in three cases, each handled here:
//!
//! - a hang-up or error: an event reporting it (`EPOLLRDHUP`, `EPOLLHUP`,
//!   `EPOLLERR`) may be the one that also brought the data just read, and
//!   none follows it;
//! - TCP urgent data (`MSG_OOB`): a read stops at the urgent mark, with
//!   the data behind the mark queued. The socket is registered for
//!   `EPOLLPRI`, which the kernel reports from the moment the urgent byte
//!   arrives until a read passes the mark. So if a read that stopped at
//!   the mark started from the sequence number of an event collected after
//!   the urgent byte came, that event said `EPOLLPRI` (and the flag below
//!   was set before the number moved); if the event was collected before,
//!   the urgent byte's own event is still to come and ends the wait;
//! - a Unix-stream chunk that carried ancillary data: the kernel ends a
//!   read with the chunk that carried file descriptors (`SCM_RIGHTS`), and
//!   with `SO_PASSCRED` it never joins chunks from different writers.
//!   Reads from a Unix stream use `recvmsg`, and the kernel sets
//!   `MSG_CTRUNC` on such a read (there is no control buffer to take the
//!   data): that one read is not trusted.
//!
//! The first two are sticky (`FdState::short_reads_distrusted`): such a
//! connection is near its end, or uses urgent data, which almost nothing
//! does (RFC 6093 advises new applications against it), so it loses the
//! saving for the rest of its life. Rejected: `SIOCATMARK` after every
//! short read (an `ioctl` per request costs what the saved `recv` did),
//! and no shortcut at all on Unix streams: every Unix-socket server would
//! pay a failing `recv` per request (≈ 0.31 µs on the project's 2-vCPU
//! VM), where `recvmsg` costs ≈ 0.12–0.15 µs more than `recvfrom`
//! (64-byte reads, pinned, medians of 41 rounds; see BENCHMARKS.md). One
//! case stays open: a program that takes the urgent byte itself (`recv` with
//! `MSG_OOB` on the raw fd) before any event reported it clears the
//! kernel's `EPOLLPRI` while reads still stop at the mark; such a program
//! should put the socket in non-blocking mode (`set_nonblocking(true)`),
//! which never skips a `recv`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::poller::Poller;
use crate::observe::ParkReason;
use crate::runtime::{self, Coroutine};

/// Which readiness a call waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Read = 0,
    Write = 1,
}

impl Direction {
    /// The `poll(2)` events that mean ready in this direction.
    fn poll_events(self) -> libc::c_short {
        match self {
            Direction::Read => libc::POLLIN | libc::POLLRDHUP,
            Direction::Write => libc::POLLOUT,
        }
    }
}

/// The readiness state of one fd, shared by its `Source` and (through the
/// epoll data pointer) the poller it is registered with.
pub(crate) struct FdState {
    /// Bumped on every event for the direction (see the module docs).
    seq: [AtomicU32; 2],
    /// `drained_mark(seq)` when a short stream read at read sequence `seq`
    /// emptied the receive queue (see `Source::read_stream`); 0 if unknown.
    drained_at: AtomicU64,
    /// An event reported the peer's hang-up, an error or TCP urgent data:
    /// from then on a short read does not prove the receive queue empty
    /// (see "Short stream reads"). Set before the event's sequence bump.
    short_reads_distrusted: AtomicBool,
    waiting: Mutex<Waiting>,
}

struct Waiting {
    /// Where the fd is registered, if anywhere yet.
    poller: Option<Arc<Poller>>,
    /// Register with `EPOLLEXCLUSIVE` (see `Source::set_exclusive`).
    exclusive: bool,
    queues: [Waiters; 2],
}

impl FdState {
    /// The events an fd is registered for, edge-triggered: both
    /// directions, the peer's hang-up, and TCP urgent data (`EPOLLPRI`, see
    /// "Short stream reads"). `EPOLLERR` and `EPOLLHUP` come unasked.
    pub const EPOLL_EVENTS: u32 =
        (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLPRI | libc::EPOLLET) as u32;

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiter, as if an event had come for both directions
    /// (the poller they wait on is closing).
    pub fn wake_all(&self) {
        self.ready((libc::EPOLLIN | libc::EPOLLOUT) as u32);
    }

    /// Called by the poller for an epoll event: wakes the waiters of each
    /// direction the event concerns.
    pub fn ready(&self, events: u32) {
        let read =
            (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR)
                as u32;
        let write = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let mut waiting = self.lock();
        let distrust = (libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        if events & distrust != 0 {
            // Sticky: from now on a short read proves nothing (the next read
            // returns end of file, the error or the data behind the urgent
            // mark, and no new edge will come). Stored before the bump below
            // (Release), so a reader that sees the new number sees this too.
            self.short_reads_distrusted.store(true, Ordering::Relaxed);
        }
        for (direction, mask) in [(Direction::Read, read), (Direction::Write, write)] {
            if events & mask != 0 {
                self.seq[direction as usize].fetch_add(1, Ordering::Release);
                waiting.queues[direction as usize].wake_all();
            }
        }
    }
}

/// A non-blocking fd and its readiness state. Does not own the fd: the
/// owner drops the `Source` (which deregisters it) before closing the fd.
pub(crate) struct Source {
    fd: RawFd,
    state: Arc<FdState>,
    /// A regular file or directory: epoll refuses it and `poll(2)` calls
    /// it always ready, so a wait on it is `Unsupported` (see
    /// `Source::for_any_fd`).
    unpollable: bool,
}

impl Source {
    /// Wraps `fd`, which must already be in non-blocking mode.
    pub fn new(fd: RawFd) -> Source {
        Source {
            fd,
            state: Arc::new(FdState {
                seq: [AtomicU32::new(0), AtomicU32::new(0)],
                drained_at: AtomicU64::new(0),
                short_reads_distrusted: AtomicBool::new(false),
                waiting: Mutex::new(Waiting {
                    poller: None,
                    exclusive: false,
                    queues: [Waiters::default(), Waiters::default()],
                }),
            }),
            unpollable: false,
        }
    }

    /// `new` for an fd of unknown kind (a user's): finds out once whether it
    /// can be polled at all.
    pub fn for_any_fd(fd: RawFd) -> io::Result<Source> {
        // SAFETY: fstat writes one `stat` into `st`; all zeroes is a valid
        // initial value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `fd` is the caller's open fd.
        if unsafe { libc::fstat(fd, &mut st) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let kind = st.st_mode & libc::S_IFMT;
        let mut source = Source::new(fd);
        source.unpollable = kind == libc::S_IFREG || kind == libc::S_IFDIR;
        Ok(source)
    }

    /// Runs the non-blocking `op` until it does not fail with `WouldBlock`,
    /// parking between tries until the fd is ready in `direction`. With a
    /// `timeout`, gives up with `WouldBlock` (as std's socket timeouts do)
    /// once it has passed.
    #[inline]
    pub fn io<R>(
        &self,
        direction: Direction,
        timeout: Option<Duration>,
        op: impl FnMut() -> io::Result<R>,
    ) -> io::Result<R> {
        self.retry(direction, timeout, op, |_| false)
    }

    /// `io` for a read from a stream socket into a buffer of `len` bytes,
    /// which skips a doomed system call: a read that returns fewer bytes
    /// than asked for (but not 0, end of file) emptied the socket's receive
    /// queue, so until the next read event the next read would fail with
    /// `EAGAIN`; it parks at once instead. `op` returns the byte count and
    /// whether the kernel said it ended the read early with data left
    /// (`MSG_CTRUNC`: a chunk with ancillary data); such a read, and every
    /// read once an event reported a hang-up, an error or urgent data,
    /// proves nothing. See "Short stream reads" in the module docs. Saves
    /// one `recv` per request in a request/response server.
    #[inline]
    pub fn read_stream(
        &self,
        timeout: Option<Duration>,
        len: usize,
        op: impl FnMut() -> io::Result<(usize, bool)>,
    ) -> io::Result<usize> {
        self.retry(Direction::Read, timeout, op, |&(n, ended_early)| {
            n > 0 && n < len && !ended_early
        })
        .map(|(n, _)| n)
    }

    #[inline]
    fn retry<R>(
        &self,
        direction: Direction,
        timeout: Option<Duration>,
        mut op: impl FnMut() -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
    ) -> io::Result<R> {
        let mut deadline = None;
        loop {
            let seq = self.state.seq[direction as usize].load(Ordering::Acquire);
            if direction == Direction::Read
                && self.state.drained_at.load(Ordering::Relaxed) == drained_mark(seq)
            {
                // Known empty since `seq`: wait for the next event.
            } else {
                match op() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(value) => {
                        if drained(&value)
                            && !self.state.short_reads_distrusted.load(Ordering::Relaxed)
                        {
                            self.state
                                .drained_at
                                .store(drained_mark(seq), Ordering::Relaxed);
                        }
                        return Ok(value);
                    }
                    Err(e) => return Err(e),
                }
            }
            // Whatever ends the wait, try the call next time round (on a
            // plain thread no event bumps `seq`).
            self.state.drained_at.store(0, Ordering::Relaxed);
            if let Some(timeout) = timeout {
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                if !self.wait(direction, seq, Some(deadline))? {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "{} timed out after {timeout:?}",
                            match direction {
                                Direction::Read => "read",
                                Direction::Write => "write",
                            }
                        ),
                    ));
                }
            } else {
                self.wait(direction, seq, None)?;
            }
        }
    }

    /// Waits until the fd may be ready in `direction` — an event came after
    /// sequence number `seq` was read — or until `deadline`. Returns false
    /// if the deadline passed first. May return true spuriously.
    pub fn wait(
        &self,
        direction: Direction,
        seq: u32,
        deadline: Option<Instant>,
    ) -> io::Result<bool> {
        if self.unpollable {
            return Err(unpollable_error(self.fd));
        }
        let Some(me) = runtime::current_coroutine() else {
            return poll_fd(self.fd, direction, deadline);
        };
        let d = direction as usize;
        let id = me.id();
        {
            let mut waiting = self.state.lock();
            if self.state.seq[d].load(Ordering::Acquire) != seq {
                return Ok(true);
            }
            self.ensure_registered(&mut waiting)?;
            waiting.queues[d].push(me);
        }
        // Leaves the queue if the park ends by timeout or cancellation (an
        // event empties the queue itself).
        let dequeue = Dequeue {
            state: &self.state,
            direction: d,
            seq,
            id,
        };
        runtime::set_park_reason(ParkReason::Io);
        let timed_out = runtime::park_until(deadline);
        drop(dequeue);
        Ok(!timed_out || self.state.seq[d].load(Ordering::Acquire) != seq)
    }

    /// Registers the fd with the current worker's poller unless it is
    /// registered with a live one already.
    fn ensure_registered(&self, waiting: &mut Waiting) -> io::Result<()> {
        if waiting.poller.as_ref().is_some_and(|p| !p.is_closed()) {
            return Ok(());
        }
        let poller = runtime::current_poller().expect("a coroutine runs on a worker");
        if let Some(old) = waiting.poller.take() {
            old.deregister(self.fd, Arc::clone(&self.state), false);
        }
        poller
            .register(self.fd, &self.state, waiting.exclusive)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EPERM) {
                    unpollable_error(self.fd)
                } else {
                    e
                }
            })?;
        waiting.poller = Some(poller);
        Ok(())
    }

    /// Makes the fd's registrations from the next one on `EPOLLEXCLUSIVE`
    /// and read-only: for a listening socket that several processes wait
    /// on, so that a connection wakes one of them (the first whose worker
    /// sleeps in `epoll_wait`; a busy one does not absorb the wake).
    pub fn set_exclusive(&self) {
        self.state.lock().exclusive = true;
    }

    /// The readiness sequence number of `direction`, to pass to `wait`
    /// after a try that would block.
    pub fn seq(&self, direction: Direction) -> u32 {
        self.state.seq[direction as usize].load(Ordering::Acquire)
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let Some(poller) = self.state.lock().poller.take() else {
            return;
        };
        let on_poller_thread = runtime::current_poller().is_some_and(|p| Arc::ptr_eq(&p, &poller));
        poller.deregister(self.fd, Arc::clone(&self.state), on_poller_thread);
    }
}

fn unpollable_error(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "fd {fd} cannot be waited on: epoll and poll(2) cannot tell when a regular file or directory is ready (use fibra::fs)"
        ),
    )
}

/// The `drained_at` value for read sequence `seq` (never 0).
#[inline]
fn drained_mark(seq: u32) -> u64 {
    (1 << 32) | seq as u64
}

/// The coroutines waiting for one direction of an fd, in arrival order.
/// Almost always zero or one: the first is kept inline, so that waking it
/// touches no other cache line (with thousands of connections each is a
/// miss); more wait in `rest`.
#[derive(Default)]
struct Waiters {
    first: Option<Coroutine>,
    rest: VecDeque<Coroutine>,
}

impl Waiters {
    fn push(&mut self, waiter: Coroutine) {
        if self.first.is_none() {
            self.first = Some(waiter);
        } else {
            self.rest.push_back(waiter);
        }
    }

    fn wake_all(&mut self) {
        if let Some(first) = self.first.take() {
            first.unpark();
        }
        while let Some(waiter) = self.rest.pop_front() {
            waiter.unpark();
        }
    }

    fn remove(&mut self, id: u64) {
        if self.first.as_ref().is_some_and(|w| w.id() == id) {
            self.first = self.rest.pop_front();
        } else {
            self.rest.retain(|w| w.id() != id);
        }
    }
}

/// Removes a waiter from its queue when its park ended without an event.
struct Dequeue<'a> {
    state: &'a FdState,
    direction: usize,
    seq: u32,
    id: u64,
}

impl Drop for Dequeue<'_> {
    fn drop(&mut self) {
        // An event since the snapshot drained the queue (under the lock, in
        // the same step as the bump): nothing to remove.
        if self.state.seq[self.direction].load(Ordering::Acquire) != self.seq {
            return;
        }
        let mut waiting = self.state.lock();
        waiting.queues[self.direction].remove(self.id);
    }
}

/// Blocks the calling thread in `poll(2)` until `fd` is ready in
/// `direction` or `deadline` passes (false).
fn poll_fd(fd: RawFd, direction: Direction, deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                millis_rounded_up(left)
            }
        };
        match poll_once(fd, direction.poll_events(), timeout_ms) {
            Ok(revents) => {
                if revents != 0 {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether `fd` is ready in `direction` right now (a zero-timeout poll).
pub(crate) fn poll_now(fd: RawFd, direction: Direction) -> io::Result<bool> {
    Ok(poll_once(fd, direction.poll_events(), 0)? != 0)
}

/// One `poll(2)` of one fd: the events that occurred (0 on timeout).
pub(crate) fn poll_once(
    fd: RawFd,
    events: libc::c_short,
    timeout_ms: libc::c_int,
) -> io::Result<libc::c_short> {
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    if unsafe { libc::poll(&mut pollfd, 1, timeout_ms) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pollfd.revents)
}

/// `timeout` in whole milliseconds, rounded up (so a wait never ends
/// early), capped at what a `c_int` holds.
pub(crate) fn millis_rounded_up(timeout: Duration) -> libc::c_int {
    timeout
        .as_nanos()
        .div_ceil(1_000_000)
        .min(libc::c_int::MAX as u128) as libc::c_int
}

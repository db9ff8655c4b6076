//! The master↔worker channel: one Unix-domain `SOCK_DGRAM` socketpair per
//! worker process, made by the master just before it forks that worker.
//!
//! Every message is one datagram: a kind byte, then the payload.
//!
//! | kind        | direction       | payload                            |
//! |-------------|-----------------|------------------------------------|
//! | `HEARTBEAT` | worker → master | none: "my runtime still schedules" |
//! | `READY`     | worker → master | none: runtime up, listeners taken  |
//! | `STOP`      | master → worker | none: stop accepting, finish, exit |
//! | `APP`       | both ways       | the application's bytes            |
//!
//! Datagrams rather than a stream: each send is atomic and keeps its
//! boundary, so the heartbeat coroutine and any number of application
//! coroutines may send at once with no framing and no lock held across a
//! park. Unix datagrams are reliable and ordered; a full queue makes the
//! sender wait (a coroutine parks), nothing is dropped. The master's end is
//! non-blocking: it never waits on a worker, and what a worker's full queue
//! refuses stays in that worker's outbox until the socket is writable.
//!
//! The application's side: in a worker, `Worker::channel()` sends to and
//! receives from the master; in the master, the handler given to
//! `Prefork::on_message` sees each message with the sender's `WorkerId` and
//! may answer it.

use std::collections::VecDeque;
use std::io;
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::net::UnixDatagram;

pub(crate) const HEARTBEAT: u8 = 1;
pub(crate) const READY: u8 = 2;
pub(crate) const STOP: u8 = 3;
pub(crate) const APP: u8 = 4;

/// The largest application message, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Which worker process a message came from (`Prefork::on_message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId {
    /// The worker's index, `0..workers`.
    pub index: usize,
    /// How many reloads (`SIGHUP`) the master had seen when it started it.
    pub generation: u64,
    /// Its process id.
    pub pid: u32,
}

fn too_long(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("fibra::prefork: a channel message is at most {MAX_MESSAGE} bytes, not {len}"),
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// The master's end

/// The master's end of one worker's channel.
pub(crate) struct MasterEnd {
    socket: StdDatagram,
    /// Messages the worker's full queue refused, sent when it is writable.
    outbox: VecDeque<Vec<u8>>,
}

impl MasterEnd {
    pub fn new(socket: StdDatagram) -> MasterEnd {
        MasterEnd {
            socket,
            outbox: VecDeque::new(),
        }
    }

    pub fn fd(&self) -> libc::c_int {
        std::os::fd::AsRawFd::as_raw_fd(&self.socket)
    }

    /// Queues a message of `kind` and sends what the socket takes now.
    pub fn send(&mut self, kind: u8, payload: &[u8]) {
        let mut message = Vec::with_capacity(payload.len() + 1);
        message.push(kind);
        message.extend_from_slice(payload);
        self.outbox.push_back(message);
        self.flush();
    }

    /// Sends queued messages until the socket would block.
    pub fn flush(&mut self) {
        while let Some(message) = self.outbox.front() {
            match self.socket.send(message) {
                Ok(_) => {
                    self.outbox.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: later. Anything else: the worker is gone,
                // which its exit status will tell.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.outbox.clear();
                    return;
                }
            }
        }
    }

    /// Whether messages wait for the socket to become writable.
    pub fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// The messages that have arrived, as (kind, payload).
    pub fn receive(&self) -> Vec<(u8, Vec<u8>)> {
        let mut messages = Vec::new();
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(0) => return messages,
                Ok(n) => messages.push((buf[0], buf[1..n].to_vec())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return messages,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Waiting in a worker

/// Coroutines (or threads) waiting for a condition that others change and
/// then `notify_all`. A waiter enters the list and checks the condition
/// again before it parks, so a change made between its first check and
/// its park unparks it (the park then returns at once): none is lost.
#[derive(Default)]
pub(crate) struct WaitList {
    waiters: Mutex<Vec<crate::Coroutine>>,
}

impl WaitList {
    /// Parks until `done()` holds.
    pub fn wait_until(&self, done: impl Fn() -> bool) {
        while !done() {
            lock(&self.waiters).push(crate::current());
            if done() {
                return;
            }
            crate::park();
        }
    }

    /// Unparks every waiter (each checks its condition again).
    pub fn notify_all(&self) {
        let waiters = std::mem::take(&mut *lock(&self.waiters));
        for waiter in waiters {
            waiter.unpark();
        }
    }
}

// ---------------------------------------------------------------------------
// The worker's end

/// A worker process's end of its channel to the master
/// (`Worker::channel`): application messages both ways. The master sees
/// them in its `Prefork::on_message` handler, which may answer.
#[derive(Clone)]
pub struct Channel {
    state: Arc<ChannelState>,
}

struct ChannelState {
    socket: UnixDatagram,
    inbox: Mutex<VecDeque<Vec<u8>>>,
    inbox_waiters: WaitList,
    /// The master's end is gone.
    closed: AtomicBool,
}

impl Channel {
    pub(crate) fn new(socket: UnixDatagram) -> Channel {
        Channel {
            state: Arc::new(ChannelState {
                socket,
                inbox: Mutex::new(VecDeque::new()),
                inbox_waiters: WaitList::default(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `message` to the master (parks while its queue is full). At
    /// most `MAX_MESSAGE` bytes.
    pub fn send(&self, message: &[u8]) -> io::Result<()> {
        if message.len() > MAX_MESSAGE {
            return Err(too_long(message.len()));
        }
        self.send_kind(APP, message)
    }

    pub(crate) fn send_kind(&self, kind: u8, payload: &[u8]) -> io::Result<()> {
        let mut datagram = Vec::with_capacity(payload.len() + 1);
        datagram.push(kind);
        datagram.extend_from_slice(payload);
        self.state.socket.send(&datagram).map(drop)
    }

    /// The next message from the master, parking until one arrives.
    /// `BrokenPipe` once the master is gone and every message was taken.
    pub fn recv(&self) -> io::Result<Vec<u8>> {
        let state = &self.state;
        state
            .inbox_waiters
            .wait_until(|| !lock(&state.inbox).is_empty() || state.closed.load(Ordering::Acquire));
        lock(&state.inbox).pop_front().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "fibra::prefork: the master is gone",
            )
        })
    }

    /// The next message from the master if one is there.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        lock(&self.state.inbox).pop_front()
    }

    /// Reads one datagram from the master (the worker's control coroutine
    /// is the only reader): `Some((kind, payload))`, or None when the
    /// master's end is closed or broken.
    pub(crate) fn read_control(&self) -> Option<(u8, Vec<u8>)> {
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        match self.state.socket.recv(&mut buf) {
            Ok(n) if n > 0 => Some((buf[0], buf[1..n].to_vec())),
            _ => None,
        }
    }

    /// Hands an application message to `recv`.
    pub(crate) fn deliver(&self, message: Vec<u8>) {
        lock(&self.state.inbox).push_back(message);
        self.state.inbox_waiters.notify_all();
    }

    /// The master is gone: `recv` stops waiting.
    pub(crate) fn close(&self) {
        self.state.closed.store(true, Ordering::Release);
        self.state.inbox_waiters.notify_all();
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

//! Listening sockets of a prefork deployment: bound by the master before any
//! fork, inherited by the worker processes, and handed to the application
//! there as `fibra::net` types.
//!
//! # Two ways to share a port (`Sharing`)
//!
//! - `Exclusive` (the default): one listening socket, one accept queue,
//!   inherited by every worker. Each worker's epoll registers it with
//!   `EPOLLEXCLUSIVE` (Linux 4.5+), so a new connection wakes one worker
//!   whose thread sleeps in `epoll_wait`, not all of them — no thundering
//!   herd. A worker that is busy does not absorb the wake: the kernel goes
//!   on to the next idle one. A stalled worker strands nothing: the queue
//!   is shared, and the others keep taking from it. The price is balance:
//!   the kernel wakes the *first* idle worker in its wait queue, so under a
//!   light load one worker takes most connections (see BENCHMARKS.md for
//!   the spread measured here).
//! - `ReusePort`: one `SO_REUSEPORT` socket per worker index, all bound to
//!   the same address, and the kernel spreads connections over them by a
//!   hash of the 4-tuple: even, whatever the load. The price: a connection
//!   hashed to a worker that is stalled (or restarting) waits in that
//!   worker's queue though others are idle, and closing a socket resets the
//!   connections queued on it — which is why the master keeps every index's
//!   socket open across restarts and reloads (a new worker of the same
//!   index takes the same socket). Only `SIGTTOU` retires a socket: the
//!   master closes its copy at once, so the socket lives on in its worker
//!   alone, which accepts until it stops and then takes what is queued;
//!   a connection hashed to it between that last accept and the worker's
//!   exit (microseconds) is reset, unless `net.ipv4.tcp_migrate_req` is 1
//!   (then the kernel moves it to a sibling socket).
//!
//! Unix-domain listeners and listeners handed over already bound are
//! always shared (`SO_REUSEPORT` does not balance Unix sockets, and a
//! socket bound without it cannot get siblings).
//!
//! The master never accepts. Listening sockets are non-blocking (the flag
//! belongs to the open file, shared by all processes, which all want it).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use crate::net::sys;
use crate::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// How worker processes share a listening address (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// One socket shared by every worker, registered with
    /// `EPOLLEXCLUSIVE`: one accept queue, no thundering herd.
    #[default]
    Exclusive,
    /// One `SO_REUSEPORT` socket per worker: the kernel balances by hash.
    ReusePort,
}

/// A listener the builder was given, not yet bound.
pub(crate) enum ListenerSpec {
    Tcp(Vec<SocketAddr>),
    Unix(PathBuf),
    TcpBound(std::net::TcpListener),
    UnixBound(std::os::unix::net::UnixListener),
}

/// A listener bound by the master.
pub(crate) struct BoundListener {
    tcp: bool,
    /// The one socket every worker shares (shared listeners).
    shared: Option<OwnedFd>,
    /// One socket per worker index (`ReusePort` over TCP).
    per_worker: Vec<Option<OwnedFd>>,
    /// The address the per-worker sockets bind to.
    addr: Option<SocketAddr>,
    /// A socket file this master created, removed when it is dropped.
    unlink: Option<PathBuf>,
}

impl BoundListener {
    /// Binds `spec`; `workers` per-worker sockets in `ReusePort` mode.
    pub fn bind(spec: ListenerSpec, sharing: Sharing, workers: usize) -> io::Result<BoundListener> {
        let mut bound = BoundListener {
            tcp: true,
            shared: None,
            per_worker: Vec::new(),
            addr: None,
            unlink: None,
        };
        match spec {
            ListenerSpec::Tcp(addrs) if sharing == Sharing::ReusePort => {
                let first = crate::net::each_addr(&addrs, |addr| bind_tcp(addr, true))?;
                // Port 0: the siblings bind to the port the first one got.
                bound.addr = Some(local_addr(&first)?);
                bound.per_worker.push(Some(first));
                for index in 1..workers {
                    bound.fd_for(index)?;
                }
            }
            ListenerSpec::Tcp(addrs) => {
                bound.shared = Some(crate::net::each_addr(&addrs, |addr| bind_tcp(addr, false))?);
            }
            ListenerSpec::Unix(path) => {
                let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
                sys::bind_unix(fd.as_raw_fd(), &sys::UnixSockaddr::from_path(&path)?)?;
                bound.unlink = Some(path);
                sys::listen(fd.as_raw_fd())?;
                bound.tcp = false;
                bound.shared = Some(fd);
            }
            ListenerSpec::TcpBound(listener) => {
                listener.set_nonblocking(true)?;
                bound.shared = Some(OwnedFd::from(listener));
            }
            ListenerSpec::UnixBound(listener) => {
                listener.set_nonblocking(true)?;
                bound.tcp = false;
                bound.shared = Some(OwnedFd::from(listener));
            }
        }
        Ok(bound)
    }

    /// The socket worker `index` accepts on, binding a new `SO_REUSEPORT`
    /// sibling if this index has none yet (`SIGTTIN`).
    pub fn fd_for(&mut self, index: usize) -> io::Result<RawFd> {
        if let Some(shared) = &self.shared {
            return Ok(shared.as_raw_fd());
        }
        if self.per_worker.len() <= index {
            self.per_worker.resize_with(index + 1, || None);
        }
        if self.per_worker[index].is_none() {
            let addr = self.addr.expect("a per-worker listener has an address");
            self.per_worker[index] = Some(bind_tcp(&addr, true)?);
        }
        Ok(self.per_worker[index]
            .as_ref()
            .map_or(-1, AsRawFd::as_raw_fd))
    }

    /// Closes the sockets of indexes `>= workers` (`SIGTTOU` retired them
    /// and their workers have exited).
    pub fn release_from(&mut self, workers: usize) {
        for slot in self.per_worker.iter_mut().skip(workers) {
            slot.take();
        }
    }

    /// Every fd this listener holds (a forked worker closes those that are
    /// not its own).
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.shared
            .iter()
            .chain(self.per_worker.iter().flatten())
            .map(AsRawFd::as_raw_fd)
    }

    /// The TCP address it listens on; None for a Unix socket.
    pub fn tcp_addr(&self) -> io::Result<Option<SocketAddr>> {
        if !self.tcp {
            return Ok(None);
        }
        match (&self.shared, &self.addr) {
            (Some(fd), _) => local_addr(fd).map(Some),
            (None, addr) => Ok(*addr),
        }
    }

    pub fn is_tcp(&self) -> bool {
        self.tcp
    }
}

impl Drop for BoundListener {
    fn drop(&mut self) {
        if let Some(path) = self.unlink.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind_tcp(addr: &SocketAddr, reuse_port: bool) -> io::Result<OwnedFd> {
    let fd = sys::socket(sys::family(addr), libc::SOCK_STREAM)?;
    sys::set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuse_port {
        sys::set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    sys::bind(fd.as_raw_fd(), addr)?;
    sys::listen(fd.as_raw_fd())?;
    Ok(fd)
}

fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let listener = std::mem::ManuallyDrop::new(
        // SAFETY: borrows the fd for one call; ManuallyDrop never closes it.
        unsafe { std::net::TcpListener::from_raw_fd(fd.as_raw_fd()) },
    );
    listener.local_addr()
}

// ---------------------------------------------------------------------------
// The worker's side

/// A listening socket as a worker process sees it: a `fibra::net`
/// listener, registered with `EPOLLEXCLUSIVE` when it parks.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-domain stream listener.
    Unix(UnixListener),
}

impl Listener {
    /// Takes ownership of an inherited listening fd in a worker process.
    ///
    /// # Safety
    /// `fd` must be an open listening socket that nothing else in this
    /// process will close.
    pub(crate) unsafe fn adopt(fd: RawFd, tcp: bool) -> Listener {
        // SAFETY: the caller passes an fd that is ours alone from now on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = if tcp {
            Listener::Tcp(TcpListener::from(fd))
        } else {
            Listener::Unix(UnixListener::from(fd))
        };
        listener.set_exclusive_wakeups();
        listener
    }

    fn set_exclusive_wakeups(&self) {
        match self {
            Listener::Tcp(l) => l.set_exclusive_wakeups(),
            Listener::Unix(l) => l.set_exclusive_wakeups(),
        }
    }

    /// Accepts a connection, parking until one arrives (or `WouldBlock`
    /// after `set_nonblocking(true)`).
    pub fn accept(&self) -> io::Result<Stream> {
        Ok(match self {
            Listener::Tcp(l) => Stream::Tcp(l.accept()?.0),
            Listener::Unix(l) => Stream::Unix(l.accept()?.0),
        })
    }

    /// Another handle to the socket (its own fd; also registered with
    /// `EPOLLEXCLUSIVE`).
    pub fn try_clone(&self) -> io::Result<Listener> {
        let clone = match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l) => Listener::Unix(l.try_clone()?),
        };
        clone.set_exclusive_wakeups();
        Ok(clone)
    }

    /// With `true`, `accept` returns `WouldBlock` instead of parking.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(nonblocking),
            Listener::Unix(l) => l.set_nonblocking(nonblocking),
        }
    }

    /// The TCP listener, if this is one.
    pub fn as_tcp(&self) -> Option<&TcpListener> {
        match self {
            Listener::Tcp(l) => Some(l),
            Listener::Unix(_) => None,
        }
    }

    /// The Unix-domain listener, if this is one.
    pub fn as_unix(&self) -> Option<&UnixListener> {
        match self {
            Listener::Unix(l) => Some(l),
            Listener::Tcp(_) => None,
        }
    }
}

/// An accepted connection: TCP or Unix-domain, `Read + Write` either way.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain stream connection.
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

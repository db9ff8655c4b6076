//! `UnixListener`, `UnixStream` and `UnixDatagram`: std's Unix-domain
//! sockets (`std::os::unix::net`), parking the calling coroutine instead of
//! blocking its worker.
//!
//! As in tcp.rs: sockets are created non-blocking and close-on-exec
//! (`socket`, `socketpair` and `accept4` with `SOCK_NONBLOCK`), listeners
//! use the kernel's largest backlog, and a call tries the non-blocking
//! system call and parks on `EAGAIN` until the worker's epoll reports the
//! socket ready (see `SocketIo`). Writes and sends go through
//! `sys::send`/`sys::send_to_unix` with `MSG_NOSIGNAL`, so a closed peer is
//! `BrokenPipe` and never SIGPIPE whatever std's own calls do (a plain
//! `write(2)` would raise it); every call passes `MSG_DONTWAIT` (or, for
//! `accept`, checks the mode), so none blocks the worker when a std twin
//! has made the file blocking (see mod.rs). Stream reads use `recvmsg`,
//! whose `MSG_CTRUNC` tells a read the kernel ended at a chunk carrying
//! file descriptors (see src/io/source.rs, "Short stream reads"). The
//! peer address `accept4` reports becomes std's `SocketAddr` without
//! another system call (`sys::unix_addr_from_raw`).
//! `bind` and `connect` look their path up on the calling worker, as Go's
//! do: the lookup is served from the kernel's directory cache, and only a
//! socket file on a network file system could make it wait.
//!
//! # Two waits epoll cannot see
//!
//! For two calls, a blocking caller sleeps in the kernel on the *peer's*
//! wait queue (`peer_wait`), and no readiness event on the caller's own
//! socket tells a non-blocking caller when to try again:
//!
//! - `connect` while the listener's backlog is full fails with `EAGAIN`;
//!   the connecting socket polls writable (and hung up) at once and stays
//!   so, and hears nothing when the listener accepts;
//! - an unconnected `UnixDatagram::send_to` to a receiver whose queue is
//!   full (`net.unix.max_dgram_qlen`, 10 by default) fails with `EAGAIN`.
//!   Worse, each failed try frees the buffer it allocated, which signals
//!   `EPOLLOUT` on the sender's own socket: waiting for writability would
//!   wake at once, fail again and spin through the poller. (A *connected*
//!   sender is registered on the peer by the kernel and gets no such
//!   event: `send` waits on events alone.)
//!
//! Both sleep and retry, after 50 µs doubling to 64 ms: a bounded number
//! of tries, each a single system call, however long the peer stays full.
//! The alternative, a blocking call on a syscall thread, would hold a
//! thread for as long as the peer stays overloaded: a flood of such calls
//! would starve the pool `fibra::fs` and name resolution run on.
//!
//! # End of file on a datagram socket
//!
//! A datagram socket whose read side is shut down reports `EAGAIN` to a
//! non-blocking receive, where a blocking one returns 0 bytes. A receive
//! that finds `EAGAIN` therefore checks `POLLRDHUP` before it parks and
//! returns 0 bytes as std's blocking receive does, so a receive parked while
//! another coroutine shuts the socket down wakes with end of file.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{self, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use super::SocketIo;
use super::sys::{self, UnixSockaddr};

/// First and longest pause between retries of a wait epoll cannot see (see
/// the module docs).
const FIRST_BACKOFF: Duration = Duration::from_micros(50);
const MAX_BACKOFF: Duration = Duration::from_millis(64);

// ---------------------------------------------------------------------------
// UnixListener

/// A Unix-domain socket server, listening for connections (mirrors
/// `std::os::unix::net::UnixListener`). `accept` parks the calling
/// coroutine until a connection arrives; several coroutines may accept on
/// one listener.
///
/// ```
/// use std::io::{Read, Write};
/// use fibra::net::{UnixListener, UnixStream};
///
/// let path = std::env::temp_dir().join(format!("fibra-doc-{}.sock", std::process::id()));
/// let _ = std::fs::remove_file(&path);
/// let listener = UnixListener::bind(&path).unwrap();
/// let server = fibra::spawn(move || {
///     let (mut stream, _) = listener.accept().unwrap(); // parks until a client connects
///     let mut text = String::new();
///     stream.read_to_string(&mut text).unwrap();
///     text
/// });
/// let mut client = UnixStream::connect(&path).unwrap();
/// client.write_all(b"hello").unwrap();
/// drop(client);
/// assert_eq!(server.join().unwrap(), "hello");
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct UnixListener {
    io: SocketIo<net::UnixListener>,
}

impl UnixListener {
    /// Creates a listener bound to the socket file `path`, which must not
    /// exist yet (`AddrInUse` otherwise; remove a stale one first).
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        UnixListener::bind_to(&UnixSockaddr::from_path(path.as_ref())?)
    }

    /// Creates a listener bound to `addr`: a path or, on Linux, an abstract
    /// name (`std::os::linux::net::SocketAddrExt::from_abstract_name`).
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixListener> {
        UnixListener::bind_to(&UnixSockaddr::from_std(addr)?)
    }

    fn bind_to(addr: &UnixSockaddr) -> io::Result<UnixListener> {
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
        sys::bind_unix(fd.as_raw_fd(), addr)?;
        sys::listen(fd.as_raw_fd())?;
        Ok(UnixListener::from_nonblocking(net::UnixListener::from(fd)))
    }

    /// Accepts a new connection, parking until one arrives; returns it and
    /// the peer's address (usually unnamed: clients seldom bind).
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        self.io.read(|listener| {
            let (fd, raw, len) = sys::accept_unix(listener.as_raw_fd())?;
            let stream = net::UnixStream::from(fd);
            let addr = match sys::unix_addr_from_raw(&raw, len) {
                Ok(addr) => addr,
                Err(_) => stream.peer_addr()?,
            };
            Ok((UnixStream::from_nonblocking(stream), addr))
        })
    }

    /// An iterator over incoming connections (`accept` in a loop; never
    /// ends).
    pub fn incoming(&self) -> UnixIncoming<'_> {
        UnixIncoming { listener: self }
    }

    /// The local address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// Another handle to the same socket (its own fd, registered on its own).
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        Ok(UnixListener {
            io: self.io.try_clone()?,
        })
    }

    state_methods!();

    /// As `TcpListener::set_exclusive_wakeups`.
    pub(crate) fn set_exclusive_wakeups(&self) {
        self.io.source().set_exclusive();
    }

    fn from_nonblocking(listener: net::UnixListener) -> UnixListener {
        UnixListener {
            io: SocketIo::new(listener),
        }
    }
}

/// The iterator `UnixListener::incoming` returns (std's
/// `std::os::unix::net::Incoming`).
pub struct UnixIncoming<'a> {
    listener: &'a UnixListener,
}

impl Iterator for UnixIncoming<'_> {
    type Item = io::Result<UnixStream>;

    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

impl fmt::Debug for UnixIncoming<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixIncoming").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// UnixStream

/// A Unix-domain stream connection (mirrors
/// `std::os::unix::net::UnixStream`). Reads and writes park the calling
/// coroutine while the socket is not ready; `&UnixStream` reads and writes
/// too, so one coroutine may read while another writes. Writing to a
/// closed peer is `ErrorKind::BrokenPipe`, never SIGPIPE.
pub struct UnixStream {
    io: SocketIo<net::UnixStream>,
}

impl UnixStream {
    /// Connects to the socket file `path`. While the listener's backlog is
    /// full, sleeps and retries (see the module docs) until it has room, as
    /// std's blocking connect waits.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        UnixStream::connect_to(&UnixSockaddr::from_path(path.as_ref())?)
    }

    /// As `connect`, to `addr`: a path or, on Linux, an abstract name.
    pub fn connect_addr(addr: &SocketAddr) -> io::Result<UnixStream> {
        UnixStream::connect_to(&UnixSockaddr::from_std(addr)?)
    }

    fn connect_to(addr: &UnixSockaddr) -> io::Result<UnixStream> {
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
        let mut backoff = FIRST_BACKOFF;
        // A refused try starts nothing: the same socket tries again.
        while !sys::connect_unix(fd.as_raw_fd(), addr)? {
            crate::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Ok(UnixStream::from_nonblocking(net::UnixStream::from(fd)))
    }

    /// A connected pair of unnamed sockets.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = sys::socketpair(libc::SOCK_STREAM)?;
        Ok((
            UnixStream::from_nonblocking(net::UnixStream::from(a)),
            UnixStream::from_nonblocking(net::UnixStream::from(b)),
        ))
    }

    /// Another handle to the same connection (its own fd, registered on its
    /// own), with this one's timeouts and non-blocking mode: e.g. to read in
    /// one coroutine and write in another.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        Ok(UnixStream {
            io: self.io.try_clone()?,
        })
    }

    /// The local address (unnamed unless this end was bound).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    timeout_methods!();

    state_methods!();

    /// Shuts down the read, write or both halves. Shutting down writes gives
    /// the peer end of file once it has read what was sent; a coroutine
    /// parked reading this socket (through a clone or a shared reference)
    /// wakes with end of file when reads are shut down.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get().shutdown(how)
    }

    fn from_nonblocking(stream: net::UnixStream) -> UnixStream {
        UnixStream {
            io: SocketIo::new(stream),
        }
    }
}

stream_read_write!(UnixStream, sys::recv_unix_stream);

// ---------------------------------------------------------------------------
// UnixDatagram

/// A Unix-domain datagram socket (mirrors
/// `std::os::unix::net::UnixDatagram`). Receives park the calling coroutine
/// until a datagram arrives, sends until the receiver has room. Every
/// method takes `&self`, so coroutines may share a socket or use clones.
///
/// ```
/// use fibra::net::UnixDatagram;
///
/// let (a, b) = UnixDatagram::pair().unwrap();
/// let receiver = fibra::spawn(move || {
///     let mut buf = [0u8; 16];
///     let n = b.recv(&mut buf).unwrap(); // parks until a datagram arrives
///     buf[..n].to_vec()
/// });
/// a.send(b"datagram").unwrap();
/// assert_eq!(receiver.join().unwrap(), b"datagram");
/// ```
pub struct UnixDatagram {
    io: SocketIo<net::UnixDatagram>,
}

impl UnixDatagram {
    /// Creates a socket bound to the socket file `path`, which must not
    /// exist yet.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        UnixDatagram::bind_to(&UnixSockaddr::from_path(path.as_ref())?)
    }

    /// Creates a socket bound to `addr`: a path or, on Linux, an abstract
    /// name.
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixDatagram> {
        UnixDatagram::bind_to(&UnixSockaddr::from_std(addr)?)
    }

    fn bind_to(addr: &UnixSockaddr) -> io::Result<UnixDatagram> {
        let socket = UnixDatagram::unbound()?;
        sys::bind_unix(socket.as_raw_fd(), addr)?;
        Ok(socket)
    }

    /// Creates a socket bound to no address. It can send; a receiver sees
    /// its datagrams come from an unnamed address, so it cannot answer.
    pub fn unbound() -> io::Result<UnixDatagram> {
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM)?;
        Ok(UnixDatagram::from_nonblocking(net::UnixDatagram::from(fd)))
    }

    /// A pair of unnamed sockets, each connected to the other.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = sys::socketpair(libc::SOCK_DGRAM)?;
        Ok((
            UnixDatagram::from_nonblocking(net::UnixDatagram::from(a)),
            UnixDatagram::from_nonblocking(net::UnixDatagram::from(b)),
        ))
    }

    /// Sets the socket's peer to the socket file `path`: `send` and `recv`
    /// then talk to it only. Never waits.
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        self.io.get().connect(path)
    }

    /// As `connect`, to `addr`: a path or, on Linux, an abstract name.
    pub fn connect_addr(&self, addr: &SocketAddr) -> io::Result<()> {
        self.io.get().connect_addr(addr)
    }

    /// Another handle to the same socket (its own fd, registered on its
    /// own), with this one's timeouts and non-blocking mode.
    pub fn try_clone(&self) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            io: self.io.try_clone()?,
        })
    }

    /// The local address (unnamed unless bound).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// The address of the connected peer (`NotConnected` if none).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    /// Receives one datagram, parking until one arrives; returns its length
    /// and sender. A datagram longer than `buf` is cut to fit. Once the
    /// socket's read side is shut down, returns 0 bytes from an unnamed
    /// address (as std's blocking call does).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let eof_when_shut = !self.io.is_nonblocking();
        self.io
            .read(|s| match sys::recv_from_unix(s.as_raw_fd(), buf) {
                Err(e) if eof_when_shut && is_shut_down_for_reads(s, &e)? => {
                    Ok((0, sys::unnamed_unix_addr()?))
                }
                result => result,
            })
    }

    /// Receives one datagram from the connected peer, parking until one
    /// arrives. Once the socket's read side is shut down, returns 0.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let eof_when_shut = !self.io.is_nonblocking();
        self.io.read(|s| match sys::recv(s.as_raw_fd(), buf, 0) {
            Err(e) if eof_when_shut && is_shut_down_for_reads(s, &e)? => Ok(0),
            result => result,
        })
    }

    /// Sends `buf` as one datagram to the socket file `path`, waiting while
    /// the receiver's queue is full (by sleeping and retrying: see the
    /// module docs).
    pub fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let addr = UnixSockaddr::from_path(path.as_ref())?;
        self.send_to_unconnected(buf, &addr)
    }

    /// As `send_to`, to `addr`: a path or, on Linux, an abstract name.
    pub fn send_to_addr(&self, buf: &[u8], addr: &SocketAddr) -> io::Result<usize> {
        let addr = UnixSockaddr::from_std(addr)?;
        self.send_to_unconnected(buf, &addr)
    }

    /// Sends `buf` as one datagram to the connected peer, parking while the
    /// peer's queue is full. Sending on a socket shut down for writes (or to
    /// a peer shut down for reads) is `BrokenPipe`, never SIGPIPE.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.write(|s| sys::send(s.as_raw_fd(), buf))
    }

    timeout_methods!();

    state_methods!();

    /// Shuts down the read, write or both halves. A coroutine parked
    /// receiving on this socket wakes with 0 bytes when reads are shut
    /// down.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get().shutdown(how)
    }

    /// `sendto` that sleeps and retries on `EAGAIN`, up to the write
    /// timeout: no event says when a full receiver has room (see the module
    /// docs).
    fn send_to_unconnected(&self, buf: &[u8], addr: &UnixSockaddr) -> io::Result<usize> {
        let fd = self.as_raw_fd();
        let send = || sys::send_to_unix(fd, buf, addr);
        if self.io.is_nonblocking() {
            return send();
        }
        let timeout = self.io.write_timeout();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut backoff = FIRST_BACKOFF;
        loop {
            match send() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => return result,
            }
            let now = Instant::now();
            if deadline.is_some_and(|deadline| now >= deadline) {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("write timed out after {:?}", timeout.unwrap_or_default()),
                ));
            }
            let retry = now + backoff;
            crate::sleep_until(deadline.map_or(retry, |deadline| deadline.min(retry)));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn from_nonblocking(socket: net::UnixDatagram) -> UnixDatagram {
        UnixDatagram {
            io: SocketIo::new(socket),
        }
    }
}

/// Whether a receive failed with `WouldBlock` only because the socket's
/// read side is shut down (a datagram socket says `EAGAIN` then, not 0).
fn is_shut_down_for_reads(socket: &net::UnixDatagram, error: &io::Error) -> io::Result<bool> {
    Ok(error.kind() == io::ErrorKind::WouldBlock && sys::read_shut_down(socket.as_raw_fd())?)
}

// ---------------------------------------------------------------------------
// Conversions

conversions!(UnixListener, net::UnixListener);
conversions!(UnixStream, net::UnixStream);
conversions!(UnixDatagram, net::UnixDatagram);

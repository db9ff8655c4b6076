//! `TcpListener` and `TcpStream`: std's TCP sockets, parking the calling
//! coroutine instead of blocking its worker.
//!
//! Reads, writes and accepts try the non-blocking call first and park on
//! `EAGAIN` (see `SocketIo`). `connect` starts a non-blocking connect and
//! waits for writability, then reads `SO_ERROR`. Accepted sockets are
//! created non-blocking and close-on-exec by `accept4`, which saves the
//! `fcntl` a std accept plus `set_nonblocking` would cost. Listeners use the
//! kernel's largest backlog (`somaxconn`), so an accept storm queues in the
//! kernel instead of being refused.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{self, Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::{SocketIo, each_addr, resolve, sys, zero_timeout_error};
use crate::io::{Direction, poll_now};

// ---------------------------------------------------------------------------
// TcpListener

/// A TCP socket server, listening for connections (mirrors
/// `std::net::TcpListener`). `accept` parks the calling coroutine until a
/// connection arrives; several coroutines may accept on one listener.
pub struct TcpListener {
    io: SocketIo<net::TcpListener>,
}

impl TcpListener {
    /// Creates a listener bound to `addr` (host names are resolved on the
    /// syscall threads). Sets `SO_REUSEADDR`, as std does.
    pub fn bind<A: ToSocketAddrs + Send>(addr: A) -> io::Result<TcpListener> {
        let addrs = resolve(addr)?;
        each_addr(&addrs, bind_one)
    }

    /// Accepts a new connection, parking until one arrives.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.io.read(|listener| {
            let (fd, storage) = sys::accept(listener.as_raw_fd())?;
            let addr = sys::from_sockaddr(&storage)?;
            Ok((TcpStream::from_nonblocking(net::TcpStream::from(fd)), addr))
        })
    }

    /// An iterator over incoming connections (`accept` in a loop; never
    /// ends).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The local address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// Another handle to the same socket (its own fd, registered on its own).
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        Ok(TcpListener {
            io: self.io.try_clone()?,
        })
    }

    ttl_methods!();

    state_methods!();

    /// Asks for `EPOLLEXCLUSIVE` wakeups (src/io/source.rs): for a listener
    /// that several worker processes share (src/prefork).
    pub(crate) fn set_exclusive_wakeups(&self) {
        self.io.source().set_exclusive();
    }

    fn from_nonblocking(listener: net::TcpListener) -> TcpListener {
        TcpListener {
            io: SocketIo::new(listener),
        }
    }
}

fn bind_one(addr: &SocketAddr) -> io::Result<TcpListener> {
    let fd = sys::socket(sys::family(addr), libc::SOCK_STREAM)?;
    sys::set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    sys::bind(fd.as_raw_fd(), addr)?;
    sys::listen(fd.as_raw_fd())?;
    Ok(TcpListener::from_nonblocking(net::TcpListener::from(fd)))
}

/// The iterator `TcpListener::incoming` returns.
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

impl fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// TcpStream

/// A TCP connection (mirrors `std::net::TcpStream`). Reads and writes park
/// the calling coroutine while the socket is not ready; `&TcpStream` reads
/// and writes too, so one coroutine may read while another writes.
pub struct TcpStream {
    io: SocketIo<net::TcpStream>,
}

impl TcpStream {
    /// Opens a connection to `addr`, trying each resolved address in turn
    /// (host names are resolved on the syscall threads).
    pub fn connect<A: ToSocketAddrs + Send>(addr: A) -> io::Result<TcpStream> {
        let addrs = resolve(addr)?;
        each_addr(&addrs, |addr| connect_one(addr, None))
    }

    /// Opens a connection to `addr`, failing with `ErrorKind::TimedOut` if
    /// it is not established within `timeout` (zero is `InvalidInput`, as
    /// in std).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(zero_timeout_error());
        }
        connect_one(addr, Some(timeout))
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// Shuts down the read, write or both halves. A coroutine parked reading
    /// this socket (through a clone) wakes and sees end of file.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get().shutdown(how)
    }

    /// Another handle to the same connection (its own fd, registered on its
    /// own), e.g. to read in one coroutine and write in another.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream {
            io: self.io.try_clone()?,
        })
    }

    /// Reads without removing the data from the socket's queue.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io
            .read(|s| sys::recv(s.as_raw_fd(), buf, libc::MSG_PEEK))
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.get().set_nodelay(nodelay)
    }

    /// The value of `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.get().nodelay()
    }

    ttl_methods!();

    timeout_methods!();

    state_methods!();

    fn from_nonblocking(stream: net::TcpStream) -> TcpStream {
        TcpStream {
            io: SocketIo::new(stream),
        }
    }
}

/// Connects a new socket to `addr`, waiting at most `timeout`.
fn connect_one(addr: &SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let fd = sys::socket(sys::family(addr), libc::SOCK_STREAM)?;
    let connected = sys::start_connect(fd.as_raw_fd(), addr)?;
    let stream = TcpStream::from_nonblocking(net::TcpStream::from(fd));
    if !connected {
        let deadline = timeout.map(|t| Instant::now() + t);
        let source = stream.io.source();
        let fd = stream.as_raw_fd();
        loop {
            let seq = source.seq(Direction::Write);
            if poll_now(fd, Direction::Write)? {
                break;
            }
            if !source.wait(Direction::Write, seq, deadline)? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connection to {addr} timed out after {:?}",
                        timeout.unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(error) = sys::take_error(fd)? {
            return Err(error);
        }
    }
    Ok(stream)
}

stream_read_write!(TcpStream, sys::recv_tcp_stream);

// ---------------------------------------------------------------------------
// Conversions

conversions!(TcpListener, net::TcpListener);
conversions!(TcpStream, net::TcpStream);

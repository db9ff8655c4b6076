//! Sockets for coroutines, mirroring `std::net` (and
//! `std::os::unix::net`): the same types and methods, but a call that would
//! block parks the calling coroutine, not its worker thread.
//!
//! Each type wraps the std socket, in non-blocking mode, with a `Source`
//! (src/io/source.rs): a call tries the system call, and on `EAGAIN` parks
//! until the worker's epoll reports the socket ready. On a plain thread,
//! every call works too, by blocking that thread in `poll(2)`.
//!
//! - `tcp.rs` — `TcpListener`, `TcpStream`;
//! - `udp.rs` — `UdpSocket`;
//! - `unix.rs` — `UnixListener`, `UnixStream`, `UnixDatagram`;
//! - `sys.rs` — the raw calls std does not offer in non-blocking form
//!   (`connect` without waiting, `accept4`, sockaddr conversions);
//! - here: `SocketIo`, what every socket type shares (its `Source`,
//!   timeouts, non-blocking mode, `try_clone`), the macros that give each
//!   type std's conversions, stream `Read`/`Write` and timeout accessors,
//!   and name resolution.
//!
//! Writes never raise SIGPIPE (they use `MSG_NOSIGNAL`): writing to a
//! closed peer is an `EPIPE` error (`ErrorKind::BrokenPipe`).
//!
//! # A file switched back to blocking mode
//!
//! `O_NONBLOCK` belongs to the open file description, which a socket shares
//! with its duplicates: a `try_clone` twin converted into a std socket
//! clears it for both (std code expects a blocking socket), and so can any
//! other holder of a duplicate. No call of a fibra socket relies on the
//! flag, so none blocks its worker then: reads, receives, peeks, writes
//! and sends pass `MSG_DONTWAIT` (sys.rs); `accept`, which has no such
//! flag, reads the mode first and in blocking mode accepts only what
//! `poll` says is queued (`sys::accept`); `connect` runs on a socket just
//! created, which nobody else holds yet. (`fibra::io::Pollable` runs the
//! caller's own operation, to which it cannot add a flag: it relies on the
//! mode; see its docs.)
//!
//! Name resolution (`ToSocketAddrs` with a host name) runs on the syscall
//! threads (`fibra::blocking`), never on a worker; socket addresses and IP
//! addresses resolve in place.

/// The std-style conversions every socket type has: from and to its std
/// type, `OwnedFd` and raw fds, plus `AsRawFd`, `AsFd` and `Debug`. The
/// type must have a `from_nonblocking(std type)` constructor and an `io:
/// SocketIo<std type>` field.
macro_rules! conversions {
    ($fibra:ident, $std:ty) => {
        impl From<$std> for $fibra {
            /// Adopts a std socket, switching it to non-blocking mode.
            fn from(socket: $std) -> $fibra {
                // fcntl cannot fail on an open socket; were the fd invalid,
                // every later call would report EBADF.
                let _ = $crate::io::set_nonblocking(socket.as_raw_fd(), true);
                $fibra::from_nonblocking(socket)
            }
        }

        impl From<$fibra> for $std {
            /// Gives the socket back to std, in blocking mode.
            fn from(socket: $fibra) -> $std {
                socket.io.into_blocking()
            }
        }

        impl From<OwnedFd> for $fibra {
            fn from(fd: OwnedFd) -> $fibra {
                $fibra::from(<$std>::from(fd))
            }
        }

        impl From<$fibra> for OwnedFd {
            /// The fd, deregistered, still in non-blocking mode.
            fn from(socket: $fibra) -> OwnedFd {
                OwnedFd::from(socket.io.into_inner())
            }
        }

        impl FromRawFd for $fibra {
            /// # Safety
            /// `fd` must be an open socket of the right type, owned by nobody
            /// else.
            unsafe fn from_raw_fd(fd: RawFd) -> $fibra {
                // SAFETY: the caller hands over ownership of an open socket.
                $fibra::from(unsafe { <$std>::from_raw_fd(fd) })
            }
        }

        impl IntoRawFd for $fibra {
            /// The fd, deregistered, still in non-blocking mode.
            fn into_raw_fd(self) -> RawFd {
                self.io.into_inner().into_raw_fd()
            }
        }

        impl AsRawFd for $fibra {
            fn as_raw_fd(&self) -> RawFd {
                self.io.get().as_raw_fd()
            }
        }

        impl AsFd for $fibra {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.io.get().as_fd()
            }
        }

        impl fmt::Debug for $fibra {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.io.get(), f)
            }
        }
    };
}

/// `Read` and `Write` for a stream socket type and for shared references to
/// it (so one coroutine may read while another writes), as std's stream
/// types have. Reads call `$recv` (a `sys` stream read, which tells whether
/// the kernel ended the read early) and park without a doomed `recv` after
/// a short read (`SocketIo::read_stream`); writes pass `MSG_NOSIGNAL`, so a
/// closed peer is `BrokenPipe`, never SIGPIPE.
macro_rules! stream_read_write {
    ($fibra:ident, $recv:path) => {
        impl Read for $fibra {
            #[inline]
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }

            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                (&*self).read_vectored(bufs)
            }
        }

        impl Read for &$fibra {
            #[inline]
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.io
                    .read_stream(buf.len(), |s| $recv(s.as_raw_fd(), buf))
            }

            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                let len = bufs.iter().map(|b| b.len()).sum();
                self.io
                    .read_stream(len, |s| sys::recv_vectored(s.as_raw_fd(), bufs))
            }
        }

        impl Write for $fibra {
            #[inline]
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                (&*self).write_vectored(bufs)
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        impl Write for &$fibra {
            #[inline]
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.io.write(|s| sys::send(s.as_raw_fd(), buf))
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.io.write(|s| sys::send_vectored(s.as_raw_fd(), bufs))
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
    };
}

/// std's timeout accessors, for the body of a socket type's `impl` (the
/// type has an `io: SocketIo<_>` field).
macro_rules! timeout_methods {
    () => {
        /// Limits how long a read or receive parks: past it, the call fails
        /// with `ErrorKind::WouldBlock`, as std's does on Linux. `None` waits
        /// for ever; a zero duration is `InvalidInput`.
        pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            self.io.set_read_timeout(timeout)
        }

        /// As `set_read_timeout`, for writes and sends.
        pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            self.io.set_write_timeout(timeout)
        }

        /// The read timeout.
        pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
            Ok(self.io.read_timeout())
        }

        /// The write timeout.
        pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
            Ok(self.io.write_timeout())
        }
    };
}

/// `take_error` and `set_nonblocking`, for the body of every socket type's
/// `impl` (the type has an `io: SocketIo<_>` field).
macro_rules! state_methods {
    () => {
        /// Reads and clears `SO_ERROR`.
        pub fn take_error(&self) -> io::Result<Option<io::Error>> {
            self.io.get().take_error()
        }

        /// With `true`, calls that would park (reads, writes, sends,
        /// `accept`) return `WouldBlock` instead (std's meaning).
        pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
            self.io.set_nonblocking(nonblocking);
            Ok(())
        }
    };
}

/// `IP_TTL` accessors, for the IP socket types.
macro_rules! ttl_methods {
    () => {
        /// Sets `IP_TTL`.
        pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
            self.io.get().set_ttl(ttl)
        }

        /// The value of `IP_TTL`.
        pub fn ttl(&self) -> io::Result<u32> {
            self.io.get().ttl()
        }
    };
}

pub(crate) mod sys;
mod tcp;
mod udp;
mod unix;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::io::{Direction, Source};

pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixIncoming, UnixListener, UnixStream};

/// What every fibra socket holds: the std socket (non-blocking), its
/// readiness `Source`, and the std-style options that change how calls
/// wait.
pub(crate) struct SocketIo<T: AsRawFd> {
    // Dropped before `inner`: deregisters the fd before it is closed.
    source: Source,
    inner: T,
    /// Read and write timeouts in nanoseconds; 0 means none.
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
    /// `set_nonblocking(true)`: calls return `WouldBlock` instead of parking.
    nonblocking: AtomicBool,
}

impl<T: AsRawFd> SocketIo<T> {
    /// Wraps `inner`, whose fd must already be non-blocking.
    pub fn new(inner: T) -> SocketIo<T> {
        SocketIo {
            source: Source::new(inner.as_raw_fd()),
            inner,
            read_timeout: AtomicU64::new(0),
            write_timeout: AtomicU64::new(0),
            nonblocking: AtomicBool::new(false),
        }
    }

    pub fn get(&self) -> &T {
        &self.inner
    }

    /// Unwraps the std socket, deregistered and back in blocking mode (what
    /// std code expects of it). The mode belongs to the open file
    /// description, so fibra clones (`try_clone`) of the socket see it too;
    /// they still never block their worker (see "A file switched back to
    /// blocking mode" in the module docs).
    pub fn into_blocking(self) -> T {
        let SocketIo { source, inner, .. } = self;
        drop(source);
        let _ = crate::io::set_nonblocking(inner.as_raw_fd(), false);
        inner
    }

    /// Another `SocketIo` on a duplicate of the fd (registered on its own),
    /// with this one's timeouts and non-blocking mode: `try_clone`.
    pub fn try_clone(&self) -> io::Result<SocketIo<T>>
    where
        T: From<OwnedFd>,
    {
        let fd = sys::duplicate(self.inner.as_raw_fd())?;
        let clone = SocketIo::new(T::from(fd));
        clone
            .read_timeout
            .store(self.read_timeout.load(Ordering::Relaxed), Ordering::Relaxed);
        clone.write_timeout.store(
            self.write_timeout.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        clone.set_nonblocking(self.is_nonblocking());
        Ok(clone)
    }

    /// Unwraps the std socket, deregistered and still non-blocking.
    pub fn into_inner(self) -> T {
        let SocketIo { source, inner, .. } = self;
        drop(source);
        inner
    }

    /// Runs a non-blocking read-side `op`, parking until the socket is
    /// readable when it would block (up to the read timeout).
    #[inline]
    pub fn read<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io(Direction::Read, &self.read_timeout, op)
    }

    /// `read` for a stream socket's `recv` into `len` bytes: parks without
    /// a doomed `recv` after a short read (see `Source::read_stream`).
    #[inline]
    pub fn read_stream(
        &self,
        len: usize,
        mut op: impl FnMut(&T) -> io::Result<sys::StreamRead>,
    ) -> io::Result<usize> {
        if self.nonblocking.load(Ordering::Relaxed) {
            return op(&self.inner).map(|(n, _)| n);
        }
        let timeout = load_timeout(&self.read_timeout);
        self.source.read_stream(timeout, len, || op(&self.inner))
    }

    /// As `read`, for the write side.
    #[inline]
    pub fn write<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io(Direction::Write, &self.write_timeout, op)
    }

    #[inline]
    fn io<R>(
        &self,
        direction: Direction,
        timeout: &AtomicU64,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        if self.nonblocking.load(Ordering::Relaxed) {
            return op(&self.inner);
        }
        self.source
            .io(direction, load_timeout(timeout), || op(&self.inner))
    }

    /// The readiness state, for waits that are not a plain retry loop
    /// (`connect`).
    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        store_timeout(&self.read_timeout, timeout)
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        store_timeout(&self.write_timeout, timeout)
    }

    pub fn read_timeout(&self) -> Option<Duration> {
        load_timeout(&self.read_timeout)
    }

    pub fn write_timeout(&self) -> Option<Duration> {
        load_timeout(&self.write_timeout)
    }

    /// std's `set_nonblocking`: with `true`, calls that would block return
    /// `WouldBlock` instead of parking. (The fd itself is always
    /// non-blocking.)
    pub fn set_nonblocking(&self, nonblocking: bool) {
        self.nonblocking.store(nonblocking, Ordering::Relaxed);
    }

    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }
}

fn store_timeout(slot: &AtomicU64, timeout: Option<Duration>) -> io::Result<()> {
    let nanos = match timeout {
        None => 0,
        Some(t) if t.is_zero() => return Err(zero_timeout_error()),
        Some(t) => t.as_nanos().clamp(1, u64::MAX as u128) as u64,
    };
    slot.store(nanos, Ordering::Relaxed);
    Ok(())
}

/// As std: a zero timeout is an error, not "no timeout".
fn zero_timeout_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "cannot set a 0 duration timeout",
    )
}

fn load_timeout(slot: &AtomicU64) -> Option<Duration> {
    match slot.load(Ordering::Relaxed) {
        0 => None,
        nanos => Some(Duration::from_nanos(nanos)),
    }
}

/// Resolves `addr` as `ToSocketAddrs` does, on a syscall thread when it may
/// need a name lookup (a host name), so the worker never blocks on DNS.
/// std's impls for socket and IP address types never look anything up and
/// resolve in place.
pub(crate) fn resolve<A: ToSocketAddrs + Send>(addr: A) -> io::Result<Vec<SocketAddr>> {
    if resolves_without_lookup::<A>() || !crate::runtime::in_coroutine() {
        return Ok(addr.to_socket_addrs()?.collect());
    }
    crate::blocking::unblock_scoped(move || addr.to_socket_addrs().map(Iterator::collect))
}

/// Whether `A` is one of std's `ToSocketAddrs` types that convert without a
/// lookup (no host name involved).
fn resolves_without_lookup<A>() -> bool {
    let name = std::any::type_name::<A>();
    let name = name.trim_start_matches('&');
    [
        "core::net::socket_addr::SocketAddr",
        "core::net::socket_addr::SocketAddrV4",
        "core::net::socket_addr::SocketAddrV6",
        "(core::net::ip_addr::IpAddr, u16)",
        "(core::net::ip_addr::Ipv4Addr, u16)",
        "(core::net::ip_addr::Ipv6Addr, u16)",
        "[core::net::socket_addr::SocketAddr]",
    ]
    .contains(&name)
}

/// Tries each address in turn with `f`, returning the first success or the
/// last error (as std's `bind`/`connect` do for several addresses).
pub(crate) fn each_addr<R>(
    addrs: &[SocketAddr],
    mut f: impl FnMut(&SocketAddr) -> io::Result<R>,
) -> io::Result<R> {
    let mut last = None;
    for addr in addrs {
        match f(addr) {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

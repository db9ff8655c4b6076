//! The raw socket calls std does not expose in a non-blocking form:
//! creating a non-blocking socket, `connect` without waiting, `accept4`
//! with `SOCK_NONBLOCK`, and `sockaddr` conversions (IP and Unix-domain).

use std::ffi::OsStr;
use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::SocketAddr as UnixAddr;
use std::path::Path;
use std::sync::OnceLock;

/// Turns a -1 return into the error in `errno`.
pub(crate) fn cvt(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// A new non-blocking, close-on-exec socket.
pub(crate) fn socket(family: libc::c_int, kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; a non-negative result is a
    // fresh fd that we wrap (and so own) at once.
    unsafe {
        let fd = cvt(libc::socket(
            family,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The address family of `addr`.
pub(crate) fn family(addr: &SocketAddr) -> libc::c_int {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// `addr` as a `sockaddr_storage` and its length.
pub(crate) fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for
            // sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The `SocketAddr` in a `sockaddr_storage` the kernel filled in.
pub(crate) fn from_sockaddr(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family says so), and
            // the storage is aligned for it.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unexpected address family {other}"),
        )),
    }
}

/// Starts connecting `fd` to `addr`: Ok(true) if connected at once,
/// Ok(false) if in progress (wait for writability, then `take_error`).
pub(crate) fn start_connect(fd: RawFd, addr: &SocketAddr) -> io::Result<bool> {
    let (storage, len) = to_sockaddr(addr);
    loop {
        // SAFETY: `storage` holds a valid sockaddr of length `len`.
        let r = unsafe { libc::connect(fd, (&raw const storage).cast(), len) };
        if r == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINPROGRESS) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(error),
        }
    }
}

/// The pending error of a socket (SO_ERROR), cleared by reading it.
pub(crate) fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut error: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `error`.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut error).cast(),
            &mut len,
        )
    })?;
    Ok((error != 0).then(|| io::Error::from_raw_os_error(error)))
}

/// Accepts one connection: a non-blocking, close-on-exec socket and the
/// peer's address (the raw storage, for callers of other families).
pub(crate) fn accept(fd: RawFd) -> io::Result<(OwnedFd, libc::sockaddr_storage)> {
    // SAFETY: sockaddr_storage is a libc sockaddr type.
    unsafe { accept_as::<libc::sockaddr_storage>(fd) }.map(|(new, addr, _)| (new, addr))
}

/// `accept4` with `SOCK_NONBLOCK | SOCK_CLOEXEC`, the peer's address read
/// into an `A` as the kernel wrote it, and that address's length.
///
/// `accept4` has no per-call `MSG_DONTWAIT`: it blocks if the listener's
/// open file description has lost `O_NONBLOCK` (a `try_clone` twin given
/// back to std clears it for both; so can any other holder of a
/// duplicate). So the mode is read first (`F_GETFL`: ≈ 0.17 µs added to
/// an `accept4` of ≈ 2.3–2.7 µs, see BENCHMARKS.md), and in blocking mode
/// `accept4` is called only when `poll` says a connection is queued, else
/// the caller parks as on `EAGAIN`. What remains: another thread accepting
/// through the blocking twin may take that connection between the `poll`
/// and the `accept4`.
///
/// # Safety
/// `A` must be a libc socket address type: plain old data, valid all zero.
unsafe fn accept_as<A>(fd: RawFd) -> io::Result<(OwnedFd, A, libc::socklen_t)> {
    if !is_nonblocking(fd)? && !crate::io::poll_now(fd, crate::io::Direction::Read)? {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let mut addr = MaybeUninit::<A>::zeroed();
    let mut len = mem::size_of::<A>() as libc::socklen_t;
    // SAFETY: accept4 writes at most `len` bytes of address into `addr`; a
    // non-negative result is a fresh fd that we wrap at once. A zeroed `A`
    // is valid (the caller's promise), whatever part the kernel wrote.
    unsafe {
        let new = cvt(libc::accept4(
            fd,
            addr.as_mut_ptr().cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        ))?;
        Ok((OwnedFd::from_raw_fd(new), addr.assume_init(), len))
    }
}

/// Whether `O_NONBLOCK` is set on `fd`'s open file description.
fn is_nonblocking(fd: RawFd) -> io::Result<bool> {
    // SAFETY: F_GETFL reads the status flags of an open fd; no memory.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// Sets an integer socket option.
pub(crate) fn set_int_option(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `value`.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `dup` with close-on-exec.
pub(crate) fn duplicate(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh fd, wrapped at once.
    unsafe {
        let new = cvt(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3))?;
        Ok(OwnedFd::from_raw_fd(new))
    }
}

// Stream and datagram calls pass `MSG_DONTWAIT`, so they never block even
// if the fd's own `O_NONBLOCK` flag is cleared behind our back (converting a
// `try_clone` twin back to a std socket does that to the shared open file
// description), and writes pass `MSG_NOSIGNAL`: a closed peer is `EPIPE`,
// never SIGPIPE.

const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;

/// A `ssize_t` result as a byte count or the error in `errno`.
fn cvt_len(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

// `send` and `recv` are issued as raw `sendto`/`recvfrom` system calls:
// glibc's wrappers are pthread cancellation points, and entering and leaving
// asynchronous-cancel mode around each call cost ≈ 60 instructions per
// request in an HTTP server's profile (fibra coroutines are never
// pthread-cancelled).

/// `send(2)`, non-blocking and without SIGPIPE.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: sendto(fd, buf, len, flags, NULL, 0) reads at most
    // `buf.len()` bytes from `buf`.
    cvt_len(unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            SEND_FLAGS,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    } as isize)
}

/// Gathered `send` (`sendmsg`), non-blocking and without SIGPIPE.
pub(crate) fn send_vectored(fd: RawFd, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain old data; zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::c_int::MAX as usize) as _;
    // SAFETY: `msg` points to `bufs`, which outlive the call; sendmsg only
    // reads them.
    cvt_len(unsafe { libc::sendmsg(fd, &msg, SEND_FLAGS) })
}

/// `sendto(2)`, non-blocking and without SIGPIPE.
pub(crate) fn send_to(fd: RawFd, buf: &[u8], addr: &SocketAddr) -> io::Result<usize> {
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: sendto reads at most `buf.len()` bytes from `buf` and `len`
    // bytes of address from `storage`.
    cvt_len(unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            SEND_FLAGS,
            (&raw const storage).cast(),
            len,
        )
    })
}

/// `recv(2)` with `flags` (e.g. `MSG_PEEK`), non-blocking.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: recvfrom(fd, buf, len, flags, NULL, NULL) writes at most
    // `buf.len()` bytes into `buf`.
    cvt_len(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    } as isize)
}

/// What a stream read returned: the byte count, and whether the kernel
/// said it ended the read early with data still queued (`MSG_CTRUNC`, see
/// `recv_vectored`). `Source::read_stream` trusts a short read only
/// without the second.
pub(crate) type StreamRead = (usize, bool);

/// `recv(2)` from a TCP stream, non-blocking. TCP carries no ancillary
/// data, so the kernel never reports a read ended early (a read stopped at
/// the urgent mark is told by the poller's `EPOLLPRI`: see
/// src/io/source.rs).
#[inline]
pub(crate) fn recv_tcp_stream(fd: RawFd, buf: &mut [u8]) -> io::Result<StreamRead> {
    recv(fd, buf, 0).map(|n| (n, false))
}

/// `recvmsg(2)` from a Unix stream into `buf`, non-blocking; see
/// `recv_vectored`.
#[inline]
pub(crate) fn recv_unix_stream(fd: RawFd, buf: &mut [u8]) -> io::Result<StreamRead> {
    recv_vectored(fd, &mut [std::io::IoSliceMut::new(buf)])
}

/// Scattered `recv` (`recvmsg`), non-blocking, without a control buffer.
/// A Unix-stream read ends with a chunk that carried ancillary data (file
/// descriptors; with `SO_PASSCRED`, a change of writer) even when more is
/// queued; the kernel then drops that data, as std's `read` does, and
/// sets `MSG_CTRUNC`, returned here as "ended early".
pub(crate) fn recv_vectored(
    fd: RawFd,
    bufs: &mut [std::io::IoSliceMut<'_>],
) -> io::Result<StreamRead> {
    // SAFETY: msghdr is plain old data; zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // IoSliceMut is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_mut_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::c_int::MAX as usize) as _;
    // SAFETY: recvmsg(fd, &msg, flags): `msg` points to `bufs`, which
    // outlive the call; the kernel writes at most their lengths into them
    // and the result flags into `msg`. (The raw system call, as for `recv`.)
    let n = unsafe { libc::syscall(libc::SYS_recvmsg, fd, &raw mut msg, libc::MSG_DONTWAIT) };
    let n = cvt_len(n as isize)?;
    Ok((n, msg.msg_flags & libc::MSG_CTRUNC != 0))
}

/// `recvfrom(2)` with `flags`, non-blocking: the byte count and the
/// sender's address.
pub(crate) fn recv_from(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, SocketAddr)> {
    // SAFETY: sockaddr_storage is a libc sockaddr type.
    let (n, storage, _) = unsafe { recv_from_as::<libc::sockaddr_storage>(fd, buf, flags) }?;
    Ok((n, from_sockaddr(&storage)?))
}

/// `recvfrom(2)` with `flags | MSG_DONTWAIT`: the byte count, and the
/// sender's address read into an `A` as the kernel wrote it, with its
/// length.
///
/// # Safety
/// `A` must be a libc socket address type: plain old data, valid all zero.
unsafe fn recv_from_as<A>(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, A, libc::socklen_t)> {
    let mut addr = MaybeUninit::<A>::zeroed();
    let mut len = mem::size_of::<A>() as libc::socklen_t;
    // SAFETY: recvfrom writes at most `buf.len()` bytes into `buf` and at
    // most `len` bytes of address into `addr`. A zeroed `A` is valid (the
    // caller's promise), whatever part the kernel wrote.
    unsafe {
        let n = cvt_len(libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
            addr.as_mut_ptr().cast(),
            &mut len,
        ))?;
        Ok((n, addr.assume_init(), len))
    }
}

// ---------------------------------------------------------------------------
// Unix-domain sockets

/// A Unix-domain socket address as the kernel takes it: a `sockaddr_un` and
/// the length of its meaningful part.
pub(crate) struct UnixSockaddr {
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
}

impl UnixSockaddr {
    /// The address of the socket file at `path`, laid out as std lays it
    /// out: the path's bytes, then a NUL (none after an empty path, as in
    /// std). A path with a NUL inside, or too long for `sun_path` (107 bytes
    /// and the NUL), is `InvalidInput`.
    pub fn from_path(path: &Path) -> io::Result<UnixSockaddr> {
        let bytes = path.as_os_str().as_bytes();
        if bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "paths must not contain interior null bytes",
            ));
        }
        UnixSockaddr::with_name(&[], bytes, usize::from(!bytes.is_empty()))
    }

    /// The address a std `SocketAddr` names: a path, or an abstract name
    /// (a leading NUL, no trailing one). An unnamed address names nothing to
    /// bind or connect to: `InvalidInput`.
    pub fn from_std(addr: &UnixAddr) -> io::Result<UnixSockaddr> {
        if let Some(path) = addr.as_pathname() {
            return UnixSockaddr::from_path(path);
        }
        if let Some(name) = addr.as_abstract_name() {
            return UnixSockaddr::with_name(&[0], name, 0);
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an unnamed Unix socket address cannot be bound or connected to",
        ))
    }

    /// `prefix`, `name`, then `nul` zero bytes in `sun_path`.
    fn with_name(prefix: &[u8], name: &[u8], nul: usize) -> io::Result<UnixSockaddr> {
        // SAFETY: sockaddr_un is plain old data; all zeroes is valid (and
        // supplies the trailing NUL).
        let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let used = prefix.len() + name.len();
        if used + nul > addr.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "Unix socket address must be shorter than SUN_LEN ({} bytes)",
                    addr.sun_path.len()
                ),
            ));
        }
        for (slot, &byte) in addr.sun_path.iter_mut().zip(prefix.iter().chain(name)) {
            *slot = byte as libc::c_char;
        }
        let len = mem::offset_of!(libc::sockaddr_un, sun_path) + used + nul;
        Ok(UnixSockaddr {
            addr,
            len: len as libc::socklen_t,
        })
    }
}

/// `bind(2)` to an IP address.
pub(crate) fn bind(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of length `len`; bind only
    // reads it.
    cvt(unsafe { libc::bind(fd, (&raw const storage).cast(), len) }).map(drop)
}

/// Backlog passed to `listen`; the kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: libc::c_int = 65535;

/// `listen(2)` with the largest backlog the kernel allows.
pub(crate) fn listen(fd: RawFd) -> io::Result<()> {
    // SAFETY: listen(2) takes no memory; a bad fd is an error, not UB.
    cvt(unsafe { libc::listen(fd, LISTEN_BACKLOG) }).map(drop)
}

/// `bind(2)` to a Unix-domain address.
pub(crate) fn bind_unix(fd: RawFd, addr: &UnixSockaddr) -> io::Result<()> {
    // SAFETY: `addr.addr` is a valid sockaddr_un, meaningful for `addr.len`
    // bytes; bind only reads it.
    cvt(unsafe { libc::bind(fd, (&raw const addr.addr).cast(), addr.len) }).map(drop)
}

/// Connects a Unix-domain stream socket without waiting: Ok(true) if
/// connected, Ok(false) if the listener's backlog is full (`EAGAIN`:
/// nothing was started, try again later).
pub(crate) fn connect_unix(fd: RawFd, addr: &UnixSockaddr) -> io::Result<bool> {
    loop {
        // SAFETY: as in `bind_unix`; connect only reads the address.
        let r = unsafe { libc::connect(fd, (&raw const addr.addr).cast(), addr.len) };
        if r == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(error),
        }
    }
}

/// `sendto(2)` a Unix-domain address, non-blocking and without SIGPIPE
/// (as `send_to`).
pub(crate) fn send_to_unix(fd: RawFd, buf: &[u8], addr: &UnixSockaddr) -> io::Result<usize> {
    // SAFETY: sendto reads at most `buf.len()` bytes from `buf` and
    // `addr.len` bytes of the valid sockaddr_un.
    cvt_len(unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            SEND_FLAGS,
            (&raw const addr.addr).cast(),
            addr.len,
        )
    })
}

/// Accepts one connection on a Unix-domain listener: a non-blocking,
/// close-on-exec socket, and the peer's address as the kernel wrote it
/// (see `unix_addr_from_raw`).
pub(crate) fn accept_unix(fd: RawFd) -> io::Result<(OwnedFd, libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is a libc sockaddr type.
    unsafe { accept_as::<libc::sockaddr_un>(fd) }
}

/// `recvfrom(2)` on a Unix-domain datagram socket, non-blocking: the byte
/// count and the sender's address (unnamed if it was not bound, or bound
/// to a path std cannot hold: the datagram is not lost for that).
pub(crate) fn recv_from_unix(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, UnixAddr)> {
    // SAFETY: sockaddr_un is a libc sockaddr type.
    let (n, addr, len) = unsafe { recv_from_as::<libc::sockaddr_un>(fd, buf, 0) }?;
    let from = match unix_addr_from_raw(&addr, len) {
        Ok(from) => from,
        Err(_) => unnamed_unix_addr()?,
    };
    Ok((n, from))
}

/// The std `SocketAddr` of a `sockaddr_un` of `len` bytes the kernel wrote
/// (read as std reads one: no name is unnamed, a leading NUL an abstract
/// name, else a path up to its NUL). Fails only for a path std cannot hold
/// (108 bytes, no NUL); `getpeername` through std is the fallback.
pub(crate) fn unix_addr_from_raw(
    addr: &libc::sockaddr_un,
    len: libc::socklen_t,
) -> io::Result<UnixAddr> {
    let name_len = (len as usize)
        .saturating_sub(mem::offset_of!(libc::sockaddr_un, sun_path))
        .min(addr.sun_path.len());
    // SAFETY: c_char and u8 have the same size and alignment; the slice
    // covers the array it is made from.
    let path: &[u8] =
        unsafe { std::slice::from_raw_parts(addr.sun_path.as_ptr().cast(), name_len) };
    match path.first() {
        None => unnamed_unix_addr(),
        Some(0) => UnixAddr::from_abstract_name(&path[1..]),
        Some(_) => {
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            UnixAddr::from_pathname(Path::new(OsStr::from_bytes(&path[..end])))
        }
    }
}

/// An unnamed Unix socket address (what an unbound peer has). std offers no
/// constructor for one, so the first call takes it from an unbound socket
/// and later calls clone that.
pub(crate) fn unnamed_unix_addr() -> io::Result<UnixAddr> {
    static UNNAMED: OnceLock<UnixAddr> = OnceLock::new();
    if let Some(addr) = UNNAMED.get() {
        return Ok(addr.clone());
    }
    let addr = std::os::unix::net::UnixDatagram::unbound()?.local_addr()?;
    debug_assert!(addr.is_unnamed());
    Ok(UNNAMED.get_or_init(|| addr).clone())
}

/// A connected pair of non-blocking, close-on-exec Unix-domain sockets of
/// type `kind`.
pub(crate) fn socketpair(kind: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1; 2];
    // SAFETY: socketpair writes two fresh fds into `fds` on success; we
    // wrap (and so own) them at once.
    unsafe {
        cvt(libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        ))?;
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// Whether the read side of socket `fd` is shut down (`POLLRDHUP`).
pub(crate) fn read_shut_down(fd: RawFd) -> io::Result<bool> {
    Ok(crate::io::poll_once(fd, libc::POLLRDHUP, 0)? & libc::POLLRDHUP != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `unix_addr_from_raw` makes of an address laid out by
    /// `UnixSockaddr`, as the kernel would hand it back.
    fn round_trip(addr: &UnixSockaddr) -> io::Result<UnixAddr> {
        unix_addr_from_raw(&addr.addr, addr.len)
    }

    #[test]
    fn unix_addresses_convert_to_std_and_back() {
        let path = Path::new("/tmp/some dir/fibra.sock");
        let back = round_trip(&UnixSockaddr::from_path(path).unwrap()).unwrap();
        assert_eq!(back.as_pathname(), Some(path));

        let std_abstract = UnixAddr::from_abstract_name(b"fibra\0name").unwrap();
        let back = round_trip(&UnixSockaddr::from_std(&std_abstract).unwrap()).unwrap();
        assert_eq!(back.as_abstract_name(), Some(&b"fibra\0name"[..]));
        assert_eq!(
            UnixSockaddr::from_std(&std_abstract).unwrap().len as usize,
            mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + 10
        );

        // Just the family: unnamed.
        let mut unnamed = UnixSockaddr::from_path(path).unwrap();
        unnamed.len = mem::size_of::<libc::sa_family_t>() as libc::socklen_t;
        assert!(round_trip(&unnamed).unwrap().is_unnamed());

        // The longest path std takes: 107 bytes and the NUL.
        let longest = "p".repeat(107);
        let back = round_trip(&UnixSockaddr::from_path(Path::new(&longest)).unwrap()).unwrap();
        assert_eq!(back.as_pathname(), Some(Path::new(&longest)));
    }

    #[test]
    fn unix_addresses_std_cannot_hold_are_errors() {
        let too_long = "p".repeat(108);
        let error = UnixSockaddr::from_path(Path::new(&too_long)).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let error = UnixSockaddr::from_path(Path::new("a\0b")).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let unnamed = unnamed_unix_addr().unwrap();
        assert!(unnamed.is_unnamed());
        let error = UnixSockaddr::from_std(&unnamed).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);

        // A kernel address filling `sun_path` with no NUL (bound by code
        // that passed the full length): std cannot hold it, the caller falls
        // back to getpeername.
        let mut full = UnixSockaddr::from_path(Path::new("p")).unwrap();
        full.addr.sun_path.fill(b'p' as libc::c_char);
        full.len = mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        assert!(round_trip(&full).is_err());
    }
}

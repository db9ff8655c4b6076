//! `UdpSocket`: std's UDP socket, parking the calling coroutine instead of
//! blocking its worker.
//!
//! A socket is created non-blocking and close-on-exec (`sys::socket`) and
//! bound with `bind(2)` on that fd, so no call ever blocks a worker. Sends
//! and receives try the system call with `MSG_DONTWAIT` (sends also with
//! `MSG_NOSIGNAL`; see sys.rs) and park on `EAGAIN` until the worker's
//! epoll reports the socket ready (see `SocketIo`). An event wakes every coroutine
//! waiting on the socket, so several may receive on one socket (or on its
//! clones): each datagram goes to exactly one of them, the others wait
//! again.
//!
//! `bind`, `connect` and `send_to` resolve host names on the syscall
//! threads. `send_to` is the hot path of a UDP server: a socket address
//! converts in place there, without the `Vec` that `resolve` returns.

use std::fmt;
use std::io;
use std::net::{self, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{SocketIo, each_addr, resolve, resolves_without_lookup, sys};

/// A UDP socket (mirrors `std::net::UdpSocket`). Receives park the calling
/// coroutine until a datagram arrives, sends until there is room in the
/// socket's send buffer. Every method takes `&self`, so coroutines may
/// share a socket (through an `Arc`) or use clones (`try_clone`).
///
/// ```
/// use fibra::net::UdpSocket;
///
/// let server = UdpSocket::bind("127.0.0.1:0").unwrap();
/// let addr = server.local_addr().unwrap();
/// let echo = fibra::spawn(move || {
///     let mut buf = [0u8; 64];
///     let (n, from) = server.recv_from(&mut buf).unwrap(); // parks until a datagram arrives
///     server.send_to(&buf[..n], from).unwrap();
/// });
/// let client = UdpSocket::bind("127.0.0.1:0").unwrap();
/// client.connect(addr).unwrap();
/// client.send(b"ping").unwrap();
/// let mut buf = [0u8; 64];
/// let n = client.recv(&mut buf).unwrap();
/// assert_eq!(&buf[..n], b"ping");
/// echo.join().unwrap();
/// ```
pub struct UdpSocket {
    io: SocketIo<net::UdpSocket>,
}

impl UdpSocket {
    /// Creates a socket bound to `addr`, trying each resolved address in
    /// turn (host names are resolved on the syscall threads). Port 0 asks
    /// the kernel for a free port; `local_addr` tells which.
    pub fn bind<A: ToSocketAddrs + Send>(addr: A) -> io::Result<UdpSocket> {
        let addrs = resolve(addr)?;
        each_addr(&addrs, bind_one)
    }

    /// Receives one datagram, parking until one arrives; returns its length
    /// and sender. A datagram longer than `buf` is cut to fit (the rest is
    /// lost), as in std.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.read(|s| sys::recv_from(s.as_raw_fd(), buf, 0))
    }

    /// As `recv_from`, but leaves the datagram queued: the next receive
    /// returns it again.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io
            .read(|s| sys::recv_from(s.as_raw_fd(), buf, libc::MSG_PEEK))
    }

    /// Sends `buf` as one datagram to `addr` (the first address it resolves
    /// to, as in std), parking while the send buffer is full. Returns the
    /// number of bytes sent.
    pub fn send_to<A: ToSocketAddrs + Send>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let first = if resolves_without_lookup::<A>() {
            addr.to_socket_addrs()?.next()
        } else {
            resolve(addr)?.into_iter().next()
        };
        let Some(addr) = first else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no addresses to send data to",
            ));
        };
        self.io.write(|s| sys::send_to(s.as_raw_fd(), buf, &addr))
    }

    /// Sets the socket's peer: `send` and `recv` then talk to it only, and
    /// datagrams from other addresses are dropped. Tries each resolved
    /// address in turn; a UDP connect sends nothing and never waits.
    pub fn connect<A: ToSocketAddrs + Send>(&self, addr: A) -> io::Result<()> {
        let addrs = resolve(addr)?;
        each_addr(&addrs, |addr| self.io.get().connect(addr))
    }

    /// Sends `buf` as one datagram to the connected peer (see `connect`),
    /// parking while the send buffer is full.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.write(|s| sys::send(s.as_raw_fd(), buf))
    }

    /// Receives one datagram from the connected peer, parking until one
    /// arrives. A previous datagram the peer refused (ICMP port
    /// unreachable) may surface here as `ConnectionRefused`, as in std.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read(|s| sys::recv(s.as_raw_fd(), buf, 0))
    }

    /// As `recv`, but leaves the datagram queued.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io
            .read(|s| sys::recv(s.as_raw_fd(), buf, libc::MSG_PEEK))
    }

    /// The address of the connected peer (`NotConnected` if none).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    /// The local address this socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// Another handle to the same socket (its own fd, registered on its
    /// own), with this one's timeouts and non-blocking mode.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            io: self.io.try_clone()?,
        })
    }

    timeout_methods!();

    /// Sets `SO_BROADCAST`: whether datagrams may go to a broadcast address.
    pub fn set_broadcast(&self, broadcast: bool) -> io::Result<()> {
        self.io.get().set_broadcast(broadcast)
    }

    /// The value of `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.io.get().broadcast()
    }

    /// Sets `IP_MULTICAST_LOOP`: whether IPv4 multicast datagrams this
    /// socket sends are looped back to the local host.
    pub fn set_multicast_loop_v4(&self, multicast_loop_v4: bool) -> io::Result<()> {
        self.io.get().set_multicast_loop_v4(multicast_loop_v4)
    }

    /// The value of `IP_MULTICAST_LOOP`.
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.io.get().multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_TTL`: how many hops IPv4 multicast datagrams may
    /// take (1, the default, keeps them on the local network).
    pub fn set_multicast_ttl_v4(&self, multicast_ttl_v4: u32) -> io::Result<()> {
        self.io.get().set_multicast_ttl_v4(multicast_ttl_v4)
    }

    /// The value of `IP_MULTICAST_TTL`.
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.io.get().multicast_ttl_v4()
    }

    /// Sets `IPV6_MULTICAST_LOOP`, the IPv6 `set_multicast_loop_v4`.
    pub fn set_multicast_loop_v6(&self, multicast_loop_v6: bool) -> io::Result<()> {
        self.io.get().set_multicast_loop_v6(multicast_loop_v6)
    }

    /// The value of `IPV6_MULTICAST_LOOP`.
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.io.get().multicast_loop_v6()
    }

    /// Joins IPv4 multicast group `multiaddr` on the interface with address
    /// `interface` (`Ipv4Addr::UNSPECIFIED`: the kernel picks one).
    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.io.get().join_multicast_v4(multiaddr, interface)
    }

    /// Joins IPv6 multicast group `multiaddr` on the interface with index
    /// `interface` (0: the kernel picks one).
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.io.get().join_multicast_v6(multiaddr, interface)
    }

    /// Leaves a group joined with `join_multicast_v4`.
    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.io.get().leave_multicast_v4(multiaddr, interface)
    }

    /// Leaves a group joined with `join_multicast_v6`.
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.io.get().leave_multicast_v6(multiaddr, interface)
    }

    ttl_methods!();

    state_methods!();

    fn from_nonblocking(socket: net::UdpSocket) -> UdpSocket {
        UdpSocket {
            io: SocketIo::new(socket),
        }
    }
}

/// A new non-blocking socket bound to `addr`.
fn bind_one(addr: &SocketAddr) -> io::Result<UdpSocket> {
    let fd = sys::socket(sys::family(addr), libc::SOCK_DGRAM)?;
    sys::bind(fd.as_raw_fd(), addr)?;
    Ok(UdpSocket::from_nonblocking(net::UdpSocket::from(fd)))
}

conversions!(UdpSocket, net::UdpSocket);

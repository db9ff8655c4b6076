//! The baseline for fibra's HTTP server: a hand-written, single-threaded,
//! edge-triggered epoll loop serving the shared keep-alive responder
//! (`http_common`). fibra's target is to cost at most 1.05× its CPU time per
//! request (see `benches/http_compare.sh`).
//!
//!     cargo run --release --example epoll_baseline -- 8080
//!
//! It is written as a good ordinary server is, with nothing exotic (no
//! io_uring, no batching across connections):
//!
//! - Connections live in a slab indexed by the epoll event's data, which also
//!   carries a generation, so that an event queued for a connection closed
//!   earlier in the same batch is not taken for the one reusing its slot.
//! - Each socket is registered once, for `EPOLLIN | EPOLLOUT | EPOLLRDHUP`,
//!   edge-triggered, and never modified: an edge-triggered `EPOLLOUT` is
//!   reported only when a full send buffer drains, so it costs nothing while
//!   writes complete.
//! - On readiness: write what output is left over (if any), then read until
//!   `EAGAIN`, answering the requests of each read, then write the answers in
//!   one `write`. A partial write keeps the rest, and reading stops until
//!   `EPOLLOUT` says the rest has gone, so a client that sends without
//!   reading cannot make the output grow without bound.
//! - The listener is accepted from until `EAGAIN` (`accept4` with
//!   `SOCK_NONBLOCK | SOCK_CLOEXEC`, so no `fcntl`); a new socket gets
//!   `TCP_NODELAY`, as the other servers' sockets do.
//!
//! `EPOLL_SHORT_READ=1` adds one further trick (nginx and tokio do it): a
//! read that does not fill the buffer is taken to have drained the socket,
//! which saves the read that would return `EAGAIN` (another edge comes if
//! more data arrives). It is off by default: the plain loop is the baseline.

#[path = "http_common/mod.rs"]
mod http_common;

use http_common::Session;
use std::io;
use std::os::fd::RawFd;

/// The epoll data of the listening socket; a connection's is its slot index
/// and the slot's generation.
const LISTENER: u64 = u64::MAX;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Output at which reading stops until it has been written.
const MAX_PENDING_OUTPUT: usize = 64 * 1024;

struct Connection {
    fd: RawFd,
    session: Session,
    /// Close once the pending output is written (a response said so, or the
    /// peer has closed its side).
    closing: bool,
}

struct Slot {
    generation: u32,
    connection: Option<Connection>,
}

struct Server {
    epoll: RawFd,
    listener: RawFd,
    slots: Vec<Slot>,
    free: Vec<u32>,
    short_read: bool,
}

fn main() -> io::Result<()> {
    http_common::raise_fd_limit()?;
    let port = http_common::port_arg(8080);
    let short_read = std::env::var_os("EPOLL_SHORT_READ").is_some_and(|v| v == "1");
    let listener = listen(port)?;
    // SAFETY: plain syscall.
    let epoll = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: LISTENER,
    };
    // SAFETY: `event` is a valid epoll_event; both fds are open.
    cvt(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, listener, &mut event) })?;
    let mut server = Server {
        epoll,
        listener,
        slots: Vec::new(),
        free: Vec::new(),
        short_read,
    };
    server.run()
}

/// A non-blocking listening socket on 127.0.0.1:`port`.
fn listen(port: u16) -> io::Result<RawFd> {
    // SAFETY: plain syscall.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    set_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_in of `len` bytes.
    cvt(unsafe { libc::bind(fd, (&raw const addr).cast(), len) })?;
    // SAFETY: plain syscall.
    cvt(unsafe { libc::listen(fd, libc::SOMAXCONN) })?;
    Ok(fd)
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            // SAFETY: `events` has room for EVENTS entries.
            let n = unsafe { libc::epoll_wait(self.epoll, events.as_mut_ptr(), EVENTS as i32, -1) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            for event in &events[..n as usize] {
                let (flags, data) = (event.events, event.u64);
                if data == LISTENER {
                    self.accept_all();
                } else {
                    self.ready(data, flags);
                }
            }
        }
    }

    /// Accepts every pending connection. On an error other than EAGAIN (for
    /// instance EMFILE) the rest stay queued until the next connection's edge.
    fn accept_all(&mut self) {
        loop {
            // SAFETY: null address arguments are allowed.
            let fd = unsafe {
                libc::accept4(
                    self.listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::EINTR | libc::ECONNABORTED) => continue,
                    _ => {
                        eprintln!("epoll_baseline: accept: {err}");
                        return;
                    }
                }
            }
            if let Err(err) = self.add(fd) {
                eprintln!("epoll_baseline: new connection: {err}");
                // SAFETY: `fd` is ours and registered nowhere else.
                unsafe { libc::close(fd) };
            }
        }
    }

    fn add(&mut self, fd: RawFd) -> io::Result<()> {
        set_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY)?;
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    connection: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: u64::from(slot.generation) << 32 | u64::from(index),
        };
        // SAFETY: `event` is a valid epoll_event; both fds are open.
        if let Err(err) =
            cvt(unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, fd, &mut event) })
        {
            self.free.push(index);
            return Err(err);
        }
        slot.connection = Some(Connection {
            fd,
            session: Session::new(),
            closing: false,
        });
        Ok(())
    }

    fn ready(&mut self, data: u64, flags: u32) {
        let (index, generation) = (data as u32 as usize, (data >> 32) as u32);
        let slot = &mut self.slots[index];
        let Some(connection) = slot
            .connection
            .as_mut()
            .filter(|_| slot.generation == generation)
        else {
            return; // closed earlier in this batch
        };
        let readable = flags
            & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32
            != 0;
        let drain_fully = !self.short_read
            || flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        let open = connection.drive(readable, drain_fully).unwrap_or(false);
        if !open {
            // SAFETY: the fd is ours; closing it also removes it from epoll.
            unsafe { libc::close(connection.fd) };
            slot.connection = None;
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(index as u32);
        }
    }
}

impl Connection {
    /// Does all the socket allows now; returns whether the connection stays
    /// open (an error closes it).
    fn drive(&mut self, mut readable: bool, drain_fully: bool) -> io::Result<bool> {
        loop {
            if !self.flush()? {
                return Ok(true); // the rest goes on EPOLLOUT
            }
            if self.closing {
                return Ok(false);
            }
            if !readable {
                return Ok(true);
            }
            readable = self.read_available(drain_fully)?;
        }
    }

    /// Reads until EAGAIN (or a short read, if `drain_fully` is false), EOF,
    /// a response that closes, or enough output to write first; answers
    /// what it reads. Returns whether the socket may still hold input.
    fn read_available(&mut self, drain_fully: bool) -> io::Result<bool> {
        loop {
            let buf = self.session.read_buf();
            let len = buf.len();
            // SAFETY: `buf` is valid for `len` bytes of writes.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), len) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(false),
                    Some(libc::EINTR) => continue,
                    _ => return Err(err),
                }
            }
            if n == 0 {
                self.closing = true;
                return Ok(false);
            }
            if self.session.received(n as usize) {
                self.closing = true;
                return Ok(false);
            }
            if !drain_fully && (n as usize) < len {
                return Ok(false);
            }
            if self.session.pending_output().len() >= MAX_PENDING_OUTPUT {
                return Ok(true);
            }
        }
    }

    /// Writes the pending output; returns whether all of it went.
    fn flush(&mut self) -> io::Result<bool> {
        loop {
            let out = self.session.pending_output();
            if out.is_empty() {
                return Ok(true);
            }
            // SAFETY: `out` is valid for `out.len()` bytes of reads.
            let n = unsafe { libc::write(self.fd, out.as_ptr().cast(), out.len()) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(false),
                    Some(libc::EINTR) => continue,
                    _ => return Err(err),
                }
            }
            self.session.wrote(n as usize);
        }
    }
}

fn set_option(fd: RawFd, level: i32, name: i32) -> io::Result<()> {
    let on: libc::c_int = 1;
    let len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `on` is a valid c_int of `len` bytes.
    cvt(unsafe { libc::setsockopt(fd, level, name, (&raw const on).cast(), len) }).map(drop)
}

fn cvt(ret: i32) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

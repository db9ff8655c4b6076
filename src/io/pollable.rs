//! `Pollable<T>`: any pollable fd, made to park coroutines instead of
//! blocking their worker.
//!
//! The fd is switched to non-blocking mode; each call tries the operation
//! and, on `WouldBlock`, parks the coroutine until the poller reports the fd
//! ready (src/io/source.rs). Used from a plain thread, it blocks that thread
//! in `poll(2)` instead.
//!
//! Unlike the `fibra::net` sockets, which pass `MSG_DONTWAIT` on every
//! call, a `Pollable` relies on the fd's `O_NONBLOCK`: the operation is the
//! caller's (`T::read`, a closure), so there is no flag to add to it. A
//! check of the mode before each operation (`F_GETFL`, ≈ 0.17 µs here, as
//! much as half of a failing read) would tax every operation to guard
//! against another holder of the file switching it back to blocking mode;
//! the type documents that instead.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use super::source::{Direction, Source, poll_now};

/// An fd of your own (a pipe, an eventfd, a timerfd, a tty, a socket) whose
/// reads and writes park the calling coroutine until the fd is ready.
///
/// `new` puts the fd in non-blocking mode. That flag belongs to the open
/// file description, so it also applies to duplicates of the fd (and to
/// other processes sharing it: think twice before wrapping an inherited
/// terminal; `fibra::io::stdin` does not, for that reason). Pollable
/// relies on the flag: it runs your operation (`read`, `read_with`, ...)
/// as it is, with no per-call `MSG_DONTWAIT` to add, so if a holder of a
/// duplicate switches the description back to blocking mode (std's
/// `set_nonblocking(false)`, `into_inner` of a second `Pollable` on a
/// duplicate, another process), an operation that finds nothing ready
/// blocks the worker. Give each `Pollable` a file of its own, or use the
/// `fibra::net` types for sockets, which never depend on the flag.
/// Regular files and directories cannot be polled (epoll refuses them):
/// waiting on one gives `ErrorKind::Unsupported`; use `fibra::fs`.
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use fibra::io::Pollable;
///
/// let (a, b) = UnixStream::pair().unwrap();
/// let reader = fibra::spawn(move || {
///     let mut a = Pollable::new(a).unwrap();
///     let mut text = String::new();
///     a.read_to_string(&mut text).unwrap(); // parks until b writes and closes
///     text
/// });
/// let mut b = Pollable::new(b).unwrap();
/// b.write_all(b"hello").unwrap();
/// drop(b);
/// assert_eq!(reader.join().unwrap(), "hello");
/// ```
pub struct Pollable<T: AsRawFd> {
    // Dropped first: deregisters the fd before `inner` closes it.
    source: Source,
    inner: Option<T>,
    was_nonblocking: bool,
}

impl<T: AsRawFd> Pollable<T> {
    /// Wraps `inner`, switching its fd to non-blocking mode.
    pub fn new(inner: T) -> io::Result<Pollable<T>> {
        let fd = inner.as_raw_fd();
        let source = Source::for_any_fd(fd)?;
        let was_nonblocking = set_nonblocking(fd, true)?;
        Ok(Pollable {
            source,
            inner: Some(inner),
            was_nonblocking,
        })
    }

    /// The wrapped value.
    pub fn get_ref(&self) -> &T {
        self.inner.as_ref().expect("present until into_inner")
    }

    /// The wrapped value, mutably. Calls on it that would block return
    /// `WouldBlock` instead; use `read_with_mut`/`write_with_mut` to wait.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.as_mut().expect("present until into_inner")
    }

    /// Unwraps the value, restoring the fd's blocking mode as `new` found it.
    pub fn into_inner(mut self) -> io::Result<T> {
        let inner = self.inner.take().expect("present until into_inner");
        let restore = !self.was_nonblocking;
        drop(self);
        if restore {
            set_nonblocking(inner.as_raw_fd(), false)?;
        }
        Ok(inner)
    }

    /// Runs `op` until it stops failing with `WouldBlock`, waiting for the
    /// fd to become readable between tries.
    pub fn read_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        let inner = self.get_ref();
        self.source.io(Direction::Read, None, || op(inner))
    }

    /// As `read_with`, with mutable access.
    pub fn read_with_mut<R>(
        &mut self,
        mut op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        let inner = self.inner.as_mut().expect("present until into_inner");
        self.source.io(Direction::Read, None, || op(inner))
    }

    /// Runs `op` until it stops failing with `WouldBlock`, waiting for the
    /// fd to become writable between tries.
    pub fn write_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        let inner = self.get_ref();
        self.source.io(Direction::Write, None, || op(inner))
    }

    /// As `write_with`, with mutable access.
    pub fn write_with_mut<R>(
        &mut self,
        mut op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        let inner = self.inner.as_mut().expect("present until into_inner");
        self.source.io(Direction::Write, None, || op(inner))
    }

    /// Waits until the fd is readable (data, end of file, or an error).
    pub fn readable(&self) -> io::Result<()> {
        self.ready(Direction::Read)
    }

    /// Waits until the fd is writable.
    pub fn writable(&self) -> io::Result<()> {
        self.ready(Direction::Write)
    }

    fn ready(&self, direction: Direction) -> io::Result<()> {
        let fd = self.source.fd();
        self.source.io(direction, None, || {
            if poll_now(fd, direction)? {
                Ok(())
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        })
    }
}

impl<T: AsRawFd + Read> Read for Pollable<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with_mut(|inner| inner.read(buf))
    }
}

impl<T: AsRawFd + Write> Write for Pollable<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_with_mut(|inner| inner.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_with_mut(|inner| inner.flush())
    }
}

impl<T: AsRawFd> Read for &Pollable<T>
where
    for<'a> &'a T: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|mut inner| inner.read(buf))
    }
}

impl<T: AsRawFd> Write for &Pollable<T>
where
    for<'a> &'a T: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|mut inner| inner.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_with(|mut inner| inner.flush())
    }
}

impl<T: AsRawFd> AsRawFd for Pollable<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.source.fd()
    }
}

impl<T: AsRawFd + AsFd> AsFd for Pollable<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<T: AsRawFd + std::fmt::Debug> std::fmt::Debug for Pollable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pollable").field(self.get_ref()).finish()
    }
}

/// Sets or clears `O_NONBLOCK`; returns whether it was set before.
pub(crate) fn set_nonblocking(fd: RawFd, nonblocking: bool) -> io::Result<bool> {
    // SAFETY: fcntl on an fd the caller owns or borrows; F_GETFL/F_SETFL
    // touch only its status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let was = flags & libc::O_NONBLOCK != 0;
        let wanted = if nonblocking {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if wanted != flags && libc::fcntl(fd, libc::F_SETFL, wanted) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(was)
    }
}

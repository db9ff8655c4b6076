//! Helpers for the tests that fork (tests/fork_*.rs, tests/prefork_*.rs):
//! fork a child that runs a closure and `_exit`s, wait for a process with a
//! deadline (a pidfd, so no polling), and report from a forked child without
//! taking std's stdout lock (which a thread of the parent may have held at
//! the fork).

#![allow(dead_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How a waited-for process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Still running at the deadline: killed with SIGKILL by the waiter.
    Hung,
}

/// Forks; the child runs `body` and `_exit`s with its value (a panic in
/// `body` exits with 101). Returns the child's pid in the parent.
pub fn fork_child(body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: fork(2) has no memory-safety preconditions; the child only
    // runs `body` and then `_exit`s without returning into the caller.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: _exit ends the process at once; nothing of the parent's
        // state is unwound in the child.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for child `pid` to end, for up to `limit`; kills it if it is still
/// running then.
pub fn wait_child(pid: i32, limit: Duration) -> Ended {
    let pidfd = pidfd_open(pid).expect("pidfd_open");
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pollfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pollfd, 1, left.as_millis() as libc::c_int) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n > 0 {
            return reap(pid);
        }
        if left.is_zero() {
            // SAFETY: kill(2) of our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap(pid);
            return Ended::Hung;
        }
    }
}

/// Whether the process of `pidfd` (not necessarily our child) has exited
/// within `limit`.
pub fn exited_within(pidfd: &OwnedFd, limit: Duration) -> bool {
    let mut pollfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a pidfd is readable once its process has
    // exited.
    unsafe { libc::poll(&mut pollfd, 1, limit.as_millis() as libc::c_int) == 1 }
}

/// Reaps `pid` (blocking) and says how it ended.
pub fn reap(pid: i32) -> Ended {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status word into `status`.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let error = io::Error::last_os_error();
        assert_eq!(error.kind(), io::ErrorKind::Interrupted, "waitpid: {error}");
    }
    if libc::WIFEXITED(status) {
        Ended::Exited(libc::WEXITSTATUS(status))
    } else {
        Ended::Signaled(libc::WTERMSIG(status))
    }
}

/// A pidfd for `pid` (readable once the process has exited).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(pid, flags) takes two integers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes a `FIBRA-CHILD` report line (see tests/common) to fd 1 with one
/// `write(2)`: safe in a forked child, where std's stdout lock may be held
/// by a thread that does not exist there.
pub fn raw_report(line: &str) {
    raw_write(1, format!("\nFIBRA-CHILD {line}\n").as_bytes());
}

/// Writes all of `bytes` to `fd` with plain `write(2)` calls.
pub fn raw_write(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writes from a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// This process's id.
pub fn getpid() -> i32 {
    // SAFETY: getpid(2) cannot fail.
    unsafe { libc::getpid() }
}

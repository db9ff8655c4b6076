//! The master's signals, by the self-pipe trick: each handler writes the
//! signal's number, one byte, to a non-blocking pipe and returns; the
//! master's loop `poll`s the pipe's read end beside its workers' channels
//! and does the work there. No work in a handler: `write(2)` is
//! async-signal-safe, and the handler saves and restores `errno`.
//!
//! A self-pipe rather than `signalfd`: a signalfd sees only signals blocked
//! in every thread, and the master may share its process with threads it
//! did not start (a test harness, a logger); a handler runs on whichever
//! thread takes the signal, and the pipe gets the byte either way.
//!
//! # Forking without losing or misrouting a signal
//!
//! A forked worker inherits the handlers and the pipe, so a signal that
//! reached it before it reset them would land in the master's pipe. The
//! master therefore blocks every signal around `fork` (`Blocked`); the child
//! restores the previous dispositions, closes the pipe, and only then
//! unblocks: a signal sent to it in between stays pending and is delivered
//! with the default action. The master's own pending signals are delivered
//! when it unblocks.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The signals the master handles.
pub(crate) const HANDLED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGCHLD,
];

/// The write end of the installed pipe (-1: none). One master per process.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    // SAFETY: errno is thread-local; saved and restored around write(2),
    // which is async-signal-safe. A full pipe drops the byte: the master
    // has plenty of that signal pending already.
    unsafe {
        let errno = *libc::__errno_location();
        let byte = signal as u8;
        libc::write(
            PIPE_WRITE.load(Ordering::Relaxed),
            (&raw const byte).cast(),
            1,
        );
        *libc::__errno_location() = errno;
    }
}

/// The installed handlers and their pipe; dropping it restores what was
/// there before.
pub(crate) struct SignalPipe {
    read: OwnedFd,
    write: OwnedFd,
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl SignalPipe {
    /// Installs the handlers. Fails if another master in this process has
    /// them.
    pub fn install() -> io::Result<SignalPipe> {
        let mut fds = [-1; 2];
        // SAFETY: pipe2 writes two fresh fds, wrapped (owned) at once.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        if PIPE_WRITE
            .compare_exchange(-1, write.as_raw_fd(), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "fibra::prefork: a prefork master is already running in this process",
            ));
        }
        let mut pipe = SignalPipe {
            read,
            write,
            previous: Vec::with_capacity(HANDLED.len()),
        };
        for signal in HANDLED {
            // SAFETY: a zeroed sigaction is valid; we fill handler, mask
            // and flags before passing it to sigaction(2), which writes the
            // previous action into `old`.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut action.sa_mask);
                action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut old) != 0 {
                    return Err(io::Error::last_os_error());
                }
                pipe.previous.push((signal, old));
            }
        }
        Ok(pipe)
    }

    /// The fd to poll for signals.
    pub fn fd(&self) -> libc::c_int {
        self.read.as_raw_fd()
    }

    /// The signals received since the last call, in order.
    pub fn take(&self) -> Vec<libc::c_int> {
        let mut signals = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a live buffer.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return signals;
            }
            signals.extend(buf[..n as usize].iter().map(|&b| b as libc::c_int));
        }
    }

    /// In a forked worker, before it unblocks signals: the previous
    /// dispositions back, the pipe closed (by number: the master's objects
    /// are never dropped in the child, which ends with `_exit`).
    pub fn reset_in_child(&self) {
        self.restore();
        // SAFETY: closes this process's copies of the pipe; the OwnedFds
        // holding the numbers are never dropped here (see above).
        unsafe {
            libc::close(self.read.as_raw_fd());
            libc::close(self.write.as_raw_fd());
        }
    }

    fn restore(&self) {
        for (signal, old) in &self.previous {
            // SAFETY: reinstalls the action sigaction(2) gave us.
            unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
        }
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        self.restore();
        PIPE_WRITE.store(-1, Ordering::Release);
    }
}

/// Every signal blocked on the calling thread until dropped (around a fork).
pub(crate) struct Blocked {
    previous: libc::sigset_t,
}

impl Blocked {
    pub fn all() -> Blocked {
        // SAFETY: sigfillset initialises `all`; pthread_sigmask writes the
        // previous mask into `previous`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
            Blocked { previous }
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask pthread_sigmask gave us.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}

/// The name of a signal, for log lines.
pub(crate) fn name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGALRM => "SIGALRM",
        _ => "signal",
    }
}

//! The prefork HTTP server with blocking I/O: a fixed pool of worker
//! processes forked at start, each accepting on the shared listener and
//! serving one connection at a time with blocking `std::net` calls (the
//! shared keep-alive responder, `http_common::serve`) — Apache's prefork
//! MPM and gunicorn's sync workers. One of the servers of the C10K
//! comparison (`benches/c10k.sh`): a connection beyond the pool's size
//! waits in the accept queue until a worker is free, which with keep-alive
//! means until another client closes.
//!
//!     cargo run --release --example http_prefork_blocking -- --workers 64 8080
//!
//! The workers die with the master (`PR_SET_PDEATHSIG`); a worker that
//! dies is not replaced (this is the baseline, not a supervisor: see
//! `fibra::prefork` for that).

#[path = "http_common/mod.rs"]
mod http_common;

use std::io;
use std::net::TcpListener;

/// Worker processes unless `--workers` says otherwise.
const DEFAULT_WORKERS: usize = 64;

fn main() -> io::Result<()> {
    http_common::raise_fd_limit()?;
    let (workers, port) = arguments().unwrap_or_else(|| {
        eprintln!("usage: http_prefork_blocking [--workers N] [PORT]");
        std::process::exit(2)
    });
    let listener = http_common::listen_std(port)?;
    // SAFETY: getpid(2) cannot fail.
    let master = unsafe { libc::getpid() };
    for _ in 0..workers {
        // SAFETY: fork(2) of this single-threaded process; the child never
        // returns from `work`.
        match unsafe { libc::fork() } {
            0 => work(&listener, master),
            -1 => return Err(io::Error::last_os_error()),
            _ => {}
        }
    }
    // Wait for ever (the workers never exit on their own); a signal ends
    // the master and, through PDEATHSIG, the workers.
    let mut status = 0;
    // SAFETY: waitpid writes the status word into `status`.
    while unsafe { libc::waitpid(-1, &mut status, 0) } > 0 {}
    Ok(())
}

/// `--workers N` and the port, each optional.
fn arguments() -> Option<(usize, u16)> {
    let (mut workers, mut port) = (DEFAULT_WORKERS, 8080);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workers" => workers = args.next()?.parse().ok()?,
            _ => port = arg.parse().ok()?,
        }
    }
    Some((workers, port))
}

fn work(listener: &TcpListener, master: libc::pid_t) -> ! {
    // SAFETY: prctl and getppid take and return plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != master {
            libc::_exit(1);
        }
    }
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let _ = http_common::serve(stream);
            }
            Err(err) => eprintln!("http_prefork_blocking: accept: {err}"),
        }
    }
}

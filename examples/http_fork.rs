//! The process-per-connection HTTP server: `fork(2)` for every accepted
//! connection, the child serving it with blocking `std::net` calls (the
//! shared keep-alive responder, `http_common::serve`) and exiting when the
//! peer closes — inetd's and early CGI servers' model, the second server
//! the C10K comparison (`benches/c10k.sh`) starts from. The parent only
//! accepts, forks and reaps: a reaped child's CPU time lands in the
//! parent's `cutime`/`cstime`, where the comparison counts it.
//!
//!     cargo run --release --example http_fork -- 8080
//!
//! A fork that fails (out of processes or memory) closes that connection:
//! the client sees it as an error, which is what this model does at its
//! limit.

#[path = "http_common/mod.rs"]
mod http_common;

use std::io;
use std::thread;
use std::time::Duration;

fn main() -> io::Result<()> {
    http_common::raise_fd_limit()?;
    let port = http_common::port_arg(8080);
    let listener = http_common::listen_std(port)?;
    loop {
        reap_children();
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) => {
                eprintln!("http_fork: accept: {err}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        stream.set_nodelay(true)?;
        // SAFETY: fork(2) of this single-threaded process; the child only
        // serves its connection and leaves with _exit.
        match unsafe { libc::fork() } {
            0 => {
                drop(listener);
                let _ = http_common::serve(stream);
                // SAFETY: ends the child without running the parent's
                // exit handlers.
                unsafe { libc::_exit(0) }
            }
            -1 => {
                eprintln!("http_fork: fork: {}", io::Error::last_os_error());
                drop(stream);
                thread::sleep(Duration::from_millis(1));
            }
            _ => drop(stream),
        }
    }
}

/// Reaps every child that has exited, without waiting.
fn reap_children() {
    let mut status = 0;
    // SAFETY: waitpid writes the status word into `status`.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

//! The thread-per-connection HTTP server: `std::net`, one OS thread with a
//! 64 KiB stack per accepted connection, blocking reads and writes, serving
//! the shared keep-alive responder (`http_common::serve`). It is what
//! `http_server` is with `fibra::net` → `std::net` and `fibra::spawn` →
//! `thread::spawn` (and a listen backlog as large as theirs), and the figure
//! fibra's coroutines are compared against.
//!
//!     cargo run --release --example http_threads -- 8080

#[path = "http_common/mod.rs"]
mod http_common;

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

fn main() -> io::Result<()> {
    http_common::raise_fd_limit()?;
    let port = http_common::port_arg(8080);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    // std listens with a backlog of 128; at 5000 connections arriving at
    // once that drops SYNs (retried after 1 s, 3 s, ...) and measures the
    // backlog, not the server. Ask for the kernel's largest, as fibra::net
    // and epoll_baseline do; listen(2) on a listening socket only resizes it.
    // SAFETY: plain syscall on an fd the listener owns.
    if unsafe { libc::listen(listener.as_raw_fd(), libc::SOMAXCONN) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                // Out of file descriptors, say: pause rather than spin.
                eprintln!("http_threads: accept: {err}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        stream.set_nodelay(true)?;
        let spawned = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            let _ = http_common::serve(stream);
        });
        if let Err(err) = spawned {
            eprintln!("http_threads: spawn: {err}");
        }
    }
    Ok(())
}

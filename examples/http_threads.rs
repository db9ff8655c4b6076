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
use std::thread;
use std::time::Duration;

fn main() -> io::Result<()> {
    http_common::raise_fd_limit()?;
    let port = http_common::port_arg(8080);
    let listener = http_common::listen_std(port)?;
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

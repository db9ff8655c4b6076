//! fibra's HTTP server: one coroutine per connection, written as plain
//! sequential code. It is `http_threads` with `std::net` → `fibra::net` and
//! `thread::spawn` → `fibra::spawn`, serving the same keep-alive responder
//! (`http_common::serve`: blocking-style read, answer, write). Compared with
//! the hand-written epoll loop and with thread-per-connection by
//! `benches/http_compare.sh`.
//!
//!     FIBRA_WORKERS=1 cargo run --release --example http_server -- 8080
//!
//! The port is the last argument (8080 by default); `FIBRA_WORKERS` sets the
//! number of worker threads (default: one per CPU).

#[path = "http_common/mod.rs"]
mod http_common;

use fibra::net::TcpListener;
use std::io;
use std::time::Duration;

fn main() -> io::Result<()> {
    http_common::raise_fd_limit()?;
    let port = http_common::port_arg(8080);
    let mut runtime = fibra::Runtime::builder();
    if let Some(workers) = workers_from_env()? {
        runtime = runtime.workers(workers);
    }
    runtime.build()?.block_on(move || {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(stream) => stream,
                Err(err) => {
                    // Out of file descriptors, say: pause rather than spin.
                    eprintln!("http_server: accept: {err}");
                    fibra::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            fibra::spawn(move || {
                let _ = http_common::serve(stream);
            });
        }
        Ok(())
    })
}

/// `FIBRA_WORKERS`, if set.
fn workers_from_env() -> io::Result<Option<usize>> {
    match std::env::var("FIBRA_WORKERS") {
        Ok(n) => n.parse().map(Some).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("FIBRA_WORKERS={n:?} is not a number"),
            )
        }),
        Err(_) => Ok(None),
    }
}

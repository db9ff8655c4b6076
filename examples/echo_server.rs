//! A TCP echo server on fibra: one coroutine per connection, written as
//! plain sequential code — the `std::net` + `thread::spawn` echo server with
//! `fibra::net` and `fibra::spawn` instead.
//!
//!     cargo run --release --example echo_server -- 7878
//!
//! The port is the last argument (7878 by default); `FIBRA_WORKERS` sets the
//! number of worker threads (default: one per CPU).

#[path = "http_common/mod.rs"]
mod http_common;

use fibra::net::{TcpListener, TcpStream};
use std::io::{self, Read, Write};
use std::time::Duration;

fn main() -> io::Result<()> {
    http_common::raise_fd_limit()?;
    let port = http_common::port_arg(7878);
    let mut runtime = fibra::Runtime::builder();
    if let Ok(n) = std::env::var("FIBRA_WORKERS") {
        let workers = n.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("FIBRA_WORKERS={n:?} is not a number"),
            )
        })?;
        runtime = runtime.workers(workers);
    }
    runtime.build()?.block_on(move || {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    fibra::spawn(move || {
                        let _ = echo(stream);
                    });
                }
                Err(err) => {
                    eprintln!("echo_server: accept: {err}");
                    fibra::sleep(Duration::from_millis(10));
                }
            }
        }
        Ok(())
    })
}

/// Sends back everything it receives until the peer closes.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = [0; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stream.write_all(&buf[..n])?;
    }
}

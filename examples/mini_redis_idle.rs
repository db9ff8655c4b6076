//! Holds idle client connections open against a Redis-protocol server, for
//! the "10,000 idle connections beside 50 busy ones" case of
//! `benches/redis_compare.sh`:
//!
//!     cargo run --release --example mini_redis_idle -- 6379 10000
//!
//! Opens COUNT connections to 127.0.0.1:PORT one after another, sends PING
//! on each and checks the `+PONG` (so each one is accepted and served, not
//! just queued in the listen backlog), prints `holding COUNT connections`,
//! then keeps them all open and silent until its standard input closes or
//! it is killed. Exits non-zero, saying which connection failed and how, if
//! any does. Plain blocking `std::net`, so it works against any server; it
//! raises its own open-file limit.

#[path = "http_common/mod.rs"]
mod http_common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (port, count) = match (args.first(), args.get(1)) {
        (Some(port), Some(count)) => match (port.parse::<u16>(), count.parse::<usize>()) {
            (Ok(port), Ok(count)) => (port, count),
            _ => return usage(),
        },
        _ => return usage(),
    };
    if let Err(err) = http_common::raise_fd_limit() {
        eprintln!("mini_redis_idle: cannot raise the open-file limit: {err}");
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        match open_and_ping(addr) {
            Ok(stream) => held.push(stream),
            Err(err) => {
                eprintln!("mini_redis_idle: connection {i} of {count} to {addr}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "holding {count} connections to {addr} (opened and pinged in {:.0?})",
        started.elapsed()
    );
    let _ = io::stdout().flush();
    // Idle until told to stop: end of standard input (or a signal).
    let _ = io::stdin().read_to_end(&mut Vec::new());
    drop(held);
    ExitCode::SUCCESS
}

fn open_and_ping(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0; 7];
    stream.read_exact(&mut reply)?;
    if &reply != b"+PONG\r\n" {
        return Err(io::Error::other(format!(
            "PING answered {:?}",
            String::from_utf8_lossy(&reply)
        )));
    }
    Ok(stream)
}

fn usage() -> ExitCode {
    eprintln!("usage: mini_redis_idle PORT COUNT");
    ExitCode::from(2)
}

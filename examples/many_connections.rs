//! Checks that an HTTP server holds many connections open at once: opens
//! CONNS (10,000 by default) keep-alive connections to 127.0.0.1:PORT, keeps
//! them all open, and makes two rounds over them — send a request on every
//! connection, then read and check every response — so each server-side
//! connection must serve twice while all the others are open. Exits non-zero,
//! saying which connection and what went wrong, on the first failure.
//!
//!     cargo run --release --example http_server -- 8080 &
//!     cargo run --release --example many_connections -- 10000 8080
//!
//! The client is plain blocking `std::net`, one connection after another, so
//! it checks any server (the three example servers alike) and needs no
//! runtime of its own. It raises its own RLIMIT_NOFILE soft limit; the server
//! must allow CONNS open files too (the example servers raise theirs).

#[path = "http_common/mod.rs"]
mod http_common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";
/// How long any one connect, read or write may take before the check fails.
const TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (conns, port) = match args.as_slice() {
        [port] => (Some(10_000), port.parse().ok()),
        [conns, port] => (conns.parse().ok(), port.parse().ok()),
        _ => (None, None),
    };
    let (Some(conns), Some(port)) = (conns, port) else {
        eprintln!("usage: many_connections [CONNS] PORT");
        return ExitCode::from(2);
    };
    match run(conns, port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("many_connections: FAILED: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(conns: usize, port: u16) -> io::Result<()> {
    let limit = http_common::raise_fd_limit()?;
    if (limit as usize) < conns + 16 {
        return Err(io::Error::other(format!(
            "RLIMIT_NOFILE hard limit is {limit}, too low for {conns} connections"
        )));
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let mut streams = Vec::with_capacity(conns);
    for i in 0..conns {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .map_err(|e| context(e, format!("connect #{i} (after {i} open)")))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        streams.push(stream);
    }
    println!(
        "opened {conns} connections to {addr} in {:.2?}",
        start.elapsed()
    );

    for round in 1..=2 {
        let start = Instant::now();
        for (i, stream) in streams.iter_mut().enumerate() {
            stream
                .write_all(REQUEST)
                .map_err(|e| context(e, format!("round {round}: write on #{i}")))?;
        }
        let mut response = [0; RESPONSE.len()];
        for (i, stream) in streams.iter_mut().enumerate() {
            stream
                .read_exact(&mut response)
                .map_err(|e| context(e, format!("round {round}: read on #{i}")))?;
            if response != RESPONSE {
                return Err(io::Error::other(format!(
                    "round {round}: connection #{i} got {:?}",
                    String::from_utf8_lossy(&response)
                )));
            }
        }
        println!(
            "round {round}: {conns} requests sent and {conns} responses checked in {:.2?}",
            start.elapsed()
        );
    }
    println!("ok: {conns} connections open at once, each served twice");
    Ok(())
}

fn context(err: io::Error, what: String) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

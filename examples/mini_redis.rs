//! mini-redis on fibra: GET, SET (EX/PX), PUBLISH, SUBSCRIBE, UNSUBSCRIBE,
//! PING, QUIT and CONFIG GET over RESP2, one coroutine per connection (the
//! server is in `examples/mini_redis/`; its module docs say how it works).
//!
//!     cargo run --release --example mini_redis -- --port 6379
//!     redis-cli -p 6379 set hello world
//!     redis-benchmark -p 6379 -t set,get -c 50 -P 16
//!
//! Listens on 127.0.0.1 (port 6379 unless `--port` says otherwise).
//! `FIBRA_WORKERS` sets the number of worker threads (default: one per CPU).
//! `benches/redis_compare.sh` measures it against tokio's mini-redis and
//! redis-server.

#[path = "http_common/mod.rs"]
mod http_common;
#[path = "mini_redis/mod.rs"]
mod mini_redis;

use std::io;
use std::process::ExitCode;
use std::sync::Arc;

use fibra::net::TcpListener;

const USAGE: &str = "usage: mini_redis [--port PORT]   (env: FIBRA_WORKERS)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mini_redis: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    let port = port_from_args(std::env::args().skip(1))?;
    // Room for 10,000 clients and more.
    http_common::raise_fd_limit()?;
    // fibra's default runtime: one worker per CPU, or `FIBRA_WORKERS` (a bad
    // value stops the first spawn with a message naming the variable).
    let server = fibra::spawn(move || {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        eprintln!(
            "mini_redis: listening on {} with {} worker(s)",
            listener.local_addr()?,
            fibra::metrics().workers
        );
        let shared = Arc::new(mini_redis::Shared::new(mini_redis::DEFAULT_MAILBOX_LIMIT));
        mini_redis::serve(listener, shared)
    });
    match server.join() {
        Ok(result) => result,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// `--port N` (or `--port=N`); 6379 without it.
fn port_from_args(mut args: impl Iterator<Item = String>) -> io::Result<u16> {
    let mut port = 6379;
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--port=") {
            Some(value) => value.to_owned(),
            None if arg == "--port" => args
                .next()
                .ok_or_else(|| invalid(format!("--port needs a value\n{USAGE}")))?,
            None => return Err(invalid(format!("unexpected argument {arg:?}\n{USAGE}"))),
        };
        port = value
            .parse()
            .map_err(|_| invalid(format!("--port {value:?} is not a port number\n{USAGE}")))?;
    }
    Ok(port)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

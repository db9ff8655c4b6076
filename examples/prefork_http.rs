//! The keep-alive HTTP server of `http_server` (the shared responder,
//! `http_common::serve`), served by N worker processes under a prefork
//! master (`fibra::prefork`): each worker runs its own fibra runtime with a
//! coroutine per connection, and the master binds the port, restarts
//! workers that die and answers signals.
//!
//!     cargo run --release --example prefork_http -- --workers 2 --port 8080
//!     kill -HUP  <master pid>   # rolling reload: new workers first, no refused connection
//!     kill -TTIN <master pid>   # one worker more
//!     kill -TTOU <master pid>   # one worker fewer
//!     kill -TERM <master pid>   # graceful stop (in-flight requests finish)
//!
//! Options: `--workers N` (default one per CPU), `--threads T` (runtime
//! threads per worker, default 1), `--port P` (default 8080), `--reuseport`
//! (one `SO_REUSEPORT` socket per worker instead of one shared socket woken
//! with `EPOLLEXCLUSIVE`), `--pin` (worker i on CPU i). The master prints
//! its pid and address, then one line per event on stderr.

#[path = "http_common/mod.rs"]
mod http_common;

use std::io;

use fibra::prefork::{Prefork, Sharing, Stream};

struct Options {
    workers: usize,
    threads: usize,
    port: u16,
    sharing: Sharing,
    pin: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        workers: num_cpus(),
        threads: 1,
        port: 8080,
        sharing: Sharing::Exclusive,
        pin: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--workers" => options.workers = value("--workers")?,
            "--threads" => options.threads = value("--threads")?,
            "--port" => {
                options.port = u16::try_from(value("--port")?).map_err(|e| e.to_string())?
            }
            "--reuseport" => options.sharing = Sharing::ReusePort,
            "--pin" => options.pin = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(options)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() -> io::Result<()> {
    let options = options().unwrap_or_else(|e| {
        eprintln!(
            "prefork_http: {e}\nusage: prefork_http [--workers N] [--threads T] [--port P] \
             [--reuseport] [--pin]"
        );
        std::process::exit(2)
    });
    http_common::raise_fd_limit()?;
    let master = Prefork::new()
        .workers(options.workers)
        .threads(options.threads)
        .sharing(options.sharing)
        .pin_workers(options.pin)
        .tcp(("127.0.0.1", options.port))
        .bind()?;
    println!(
        "prefork_http: master pid {}, {} workers x {} threads, listening on {:?} ({:?})",
        std::process::id(),
        options.workers,
        options.threads,
        master.tcp_addrs()?,
        options.sharing
    );
    master.run(|worker| {
        worker.serve(|stream| {
            if let Stream::Tcp(tcp) = &stream {
                let _ = tcp.set_nodelay(true);
            }
            let _ = http_common::serve(stream);
        })
    })
}

//! How evenly the two ways of sharing a port spread connections over the
//! worker processes of a `fibra::prefork` master: `Sharing::Exclusive` (one
//! socket, `EPOLLEXCLUSIVE`) against `Sharing::ReusePort` (one socket per
//! worker, balanced by the kernel's hash).
//!
//!     cargo run --release --example prefork_spread -- [WORKERS] [CONNECTIONS]
//!
//! For each mode and each number of concurrent clients (1, 4, 32), plain
//! client threads in this process open CONNECTIONS connections (4,000 by
//! default) in all, one request each; every worker answers with its index.
//! Prints the share each worker took, and the largest share over the fair
//! one (1.00 is perfectly even). A second table stalls one worker for a
//! second (its thread blocks, as a coroutine that never parks would) while
//! 32 clients go on, and counts the connections that waited over half a
//! second — the ones stranded on the stalled worker's queue — and the
//! round's time. The master
//! runs on this process's main thread (no fibra runtime here); SIGTERM to
//! ourselves stops it between rounds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fibra::prefork::{Prefork, Sharing};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4000);
    println!("{workers} workers, {total} connections per row, one request each\n");
    println!(
        "{:<10} {:>7}   {:<40} {:>9}",
        "sharing", "clients", "share of connections per worker (%)", "max/fair"
    );
    for sharing in [Sharing::Exclusive, Sharing::ReusePort] {
        for clients in [1, 4, 32] {
            let (counts, _, _) = measure(sharing, workers, clients, total, false)?;
            let shares: Vec<String> = counts
                .iter()
                .map(|&c| format!("{:.1}", 100.0 * c as f64 / total as f64))
                .collect();
            let max = counts.iter().copied().max().unwrap_or(0) as f64;
            println!(
                "{:<10} {:>7}   {:<40} {:>9.2}",
                format!("{sharing:?}"),
                clients,
                shares.join(" "),
                max / (total as f64 / workers as f64)
            );
        }
    }
    println!("\none worker stalled for 1 s, 32 clients, {total} connections");
    println!(
        "{:<10} {:>20} {:>12}",
        "sharing", "waited over 500 ms", "elapsed"
    );
    for sharing in [Sharing::Exclusive, Sharing::ReusePort] {
        let (_, slow, elapsed) = measure(sharing, workers, 32, total, true)?;
        println!(
            "{:<10} {:>20} {:>12.2?}",
            format!("{sharing:?}"),
            slow,
            elapsed
        );
    }
    Ok(())
}

/// Runs a master with `workers` workers and returns how many of `total`
/// connections each worker answered, how many took over 500 ms, and how
/// long the clients took; with `stall`, one worker's thread is blocked for
/// a second first.
fn measure(
    sharing: Sharing,
    workers: usize,
    clients: usize,
    total: usize,
    stall: bool,
) -> std::io::Result<(Vec<usize>, usize, Duration)> {
    let master = Prefork::new()
        .workers(workers)
        .sharing(sharing)
        .graceful_timeout(Duration::from_secs(5))
        .tcp("127.0.0.1:0")
        .log_to(|_| {})
        .bind()?;
    let addr = master.tcp_addrs()?[0];
    let counts: Arc<Vec<AtomicUsize>> =
        Arc::new((0..workers).map(|_| AtomicUsize::new(0)).collect());
    let slow = Arc::new(AtomicUsize::new(0));
    let load = {
        let (counts, slow) = (Arc::clone(&counts), Arc::clone(&slow));
        thread::spawn(move || {
            // Let every worker start accepting (connections queued before
            // would all go to the first one up).
            thread::sleep(Duration::from_millis(300));
            let stalled = stall.then(|| {
                let stalled = thread::spawn(move || ask(addr, b"stall\n"));
                thread::sleep(Duration::from_millis(50));
                stalled
            });
            let next = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let threads: Vec<_> = (0..clients)
                .map(|_| {
                    let (counts, next, slow) =
                        (Arc::clone(&counts), Arc::clone(&next), Arc::clone(&slow));
                    thread::spawn(move || {
                        while next.fetch_add(1, Ordering::Relaxed) < total {
                            let start = Instant::now();
                            if let Some(index) = ask(addr, b"hi\n") {
                                counts[index].fetch_add(1, Ordering::Relaxed);
                            }
                            if start.elapsed() > Duration::from_millis(500) {
                                slow.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                let _ = t.join();
            }
            let elapsed = start.elapsed();
            if let Some(stalled) = stalled {
                let _ = stalled.join();
            }
            // SAFETY: kill(2) of this process: the master stops gracefully.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            elapsed
        })
    };
    master.run(|worker| {
        let index = worker.index();
        worker.serve(move |mut stream| {
            let mut request = [0u8; 16];
            let n = stream.read(&mut request).unwrap_or(0);
            if request[..n].starts_with(b"stall") {
                // Blocks the worker's only thread: no coroutine of this
                // process runs, none of its sockets is served.
                thread::sleep(Duration::from_secs(1));
            }
            let _ = stream.write_all(format!("{index}\n").as_bytes());
        })
    })?;
    let elapsed = load.join().unwrap_or_default();
    let counts = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    Ok((counts, slow.load(Ordering::Relaxed), elapsed))
}

/// One connection: the index of the worker that answered.
fn ask(addr: SocketAddr, request: &[u8]) -> Option<usize> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.trim().parse().ok()
}

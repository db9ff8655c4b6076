//! The C10K comparison's own load generator and CPU meter
//! (`benches/c10k.sh`).
//!
//!     c10k_client close PORT CLIENTS SECONDS
//!     c10k_client keepalive PORT CLIENTS SECONDS
//!     c10k_client cpu PID
//!
//! `close` and `keepalive` run CLIENTS coroutines against 127.0.0.1:PORT
//! for SECONDS, each sending `GET /` and reading the whole response, again
//! and again: `close` on a new connection per request (`Connection: close`,
//! the load ApacheBench made for the original table, which wrk cannot
//! make), `keepalive` on one connection per client, opened again after a
//! failure. Every connect, read and write has a 1 s timeout, and one that
//! runs out is a failed request (a request that waits a second is a
//! failure to a user). Not wrk for keep-alive: it does not count a request
//! that never gets an answer (measured here: 0 errors reported against a
//! 64-process blocking server holding 1,000 connections, 936 of which it
//! never answered), and such requests are what the comparison is about.
//!
//! It prints one line: `requests=N rps=R errors=E clients_failed=F
//! connect=.. io=.. timeout=.. bad=.. seconds=S`, where F is how many
//! clients saw at least one failure, counting what completed before the end
//! (requests in flight then count neither way). The coroutines run on one
//! fibra worker thread, so the load costs one CPU at most, as `wrk -t1`.
//!
//! `cpu` prints `cpu_us=N processes=M`: the user + system CPU time used by
//! process PID and all its descendants, alive or reaped, from /proc (a
//! process's reaped children are in its `cutime`/`cstime`; a live
//! descendant's own time is in its `stat`), rounded down to 10 ms ticks per
//! process. The script prefers a cgroup's exact count when it can make one.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
const KEEP_ALIVE: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
const STATUS: &[u8] = b"HTTP/1.1 200 OK\r\n";
const BODY: &[u8] = b"Hello, world!";
const TIMEOUT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [mode @ ("close" | "keepalive"), port, clients, seconds] => {
            match (port.parse(), clients.parse(), seconds.parse()) {
                (Ok(port), Ok(clients), Ok(seconds)) => {
                    load(*mode == "close", port, clients, seconds)
                }
                _ => Err(usage()),
            }
        }
        ["cpu", pid] => match pid.parse() {
            Ok(pid) => tree_cpu(pid).map(|(us, n)| println!("cpu_us={us} processes={n}")),
            Err(_) => Err(usage()),
        },
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c10k_client: {e}");
            ExitCode::from(2)
        }
    }
}

fn usage() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "usage: c10k_client close|keepalive PORT CLIENTS SECONDS | c10k_client cpu PID",
    )
}

/// Counters of a load run.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    connect: AtomicU64,
    io: AtomicU64,
    timeout: AtomicU64,
    bad: AtomicU64,
    clients_failed: AtomicU64,
}

enum Failure {
    Connect,
    Io(io::Error),
    Bad,
}

impl Counts {
    fn failure(&self, failure: &Failure) -> &AtomicU64 {
        match failure {
            Failure::Connect => &self.connect,
            Failure::Io(e) if is_timeout(e) => &self.timeout,
            Failure::Io(_) => &self.io,
            Failure::Bad => &self.bad,
        }
    }
}

fn load(close: bool, port: u16, clients: usize, seconds: f64) -> io::Result<()> {
    raise_fd_limit()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let runtime = fibra::Runtime::builder().workers(1).build()?;
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    for _ in 0..clients {
        let counts = Arc::clone(&counts);
        runtime.spawn(move || client(close, addr, end, &counts));
    }
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let elapsed = start.elapsed().as_secs_f64();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let errors = get(&counts.connect) + get(&counts.io) + get(&counts.timeout) + get(&counts.bad);
    println!(
        "requests={} rps={:.0} errors={errors} clients_failed={} connect={} io={} timeout={} bad={} seconds={elapsed:.2}",
        get(&counts.ok),
        get(&counts.ok) as f64 / elapsed,
        get(&counts.clients_failed),
        get(&counts.connect),
        get(&counts.io),
        get(&counts.timeout),
        get(&counts.bad),
    );
    let _ = io::stdout().flush();
    // Coroutines still in a connect or read would hold a runtime drop for
    // up to their timeout: the figures are out, leave now.
    std::process::exit(0)
}

/// One client until `end`: requests on a connection per request (`close`)
/// or on one kept-alive connection, counted as they complete.
fn client(close: bool, addr: SocketAddr, end: Instant, counts: &Counts) {
    let mut failed = false;
    let mut connection = None;
    while Instant::now() < end {
        let outcome = match close {
            true => connect(addr).and_then(|mut stream| request(&mut stream, CLOSE, true)),
            false => keep_alive_request(addr, &mut connection),
        };
        if Instant::now() >= end {
            return;
        }
        match outcome {
            Ok(()) => counts.ok.fetch_add(1, Ordering::Relaxed),
            Err(failure) => {
                if !std::mem::replace(&mut failed, true) {
                    counts.clients_failed.fetch_add(1, Ordering::Relaxed);
                }
                connection = None;
                counts.failure(&failure).fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn connect(addr: SocketAddr) -> Result<fibra::net::TcpStream, Failure> {
    let stream = fibra::net::TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| {
        match is_timeout(&e) {
            true => Failure::Io(e),
            false => Failure::Connect,
        }
    })?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(Failure::Io)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(Failure::Io)?;
    Ok(stream)
}

fn keep_alive_request(
    addr: SocketAddr,
    connection: &mut Option<fibra::net::TcpStream>,
) -> Result<(), Failure> {
    if connection.is_none() {
        *connection = Some(connect(addr)?);
    }
    request(connection.as_mut().expect("connected"), KEEP_ALIVE, false)
}

/// Sends `request` and reads one whole response: to the end of the
/// connection (`to_end`), or to the end of the body.
fn request(
    stream: &mut fibra::net::TcpStream,
    request: &[u8],
    to_end: bool,
) -> Result<(), Failure> {
    stream.write_all(request).map_err(Failure::Io)?;
    let mut response = Vec::with_capacity(256);
    if to_end {
        stream.read_to_end(&mut response).map_err(Failure::Io)?;
    } else {
        let mut buf = [0u8; 512];
        while !response.ends_with(BODY) {
            match stream.read(&mut buf).map_err(Failure::Io)? {
                0 => return Err(Failure::Bad),
                n => response.extend_from_slice(&buf[..n]),
            }
        }
    }
    match response.starts_with(STATUS) && response.ends_with(BODY) {
        true => Ok(()),
        false => Err(Failure::Bad),
    }
}

/// Raises this process's soft limit on open files to its hard limit.
fn raise_fd_limit() -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the one struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CPU microseconds used by `root` and its descendants, and how many
/// processes that is.
fn tree_cpu(root: i32) -> io::Result<(u64, usize)> {
    // pid -> (parent, own ticks + reaped children's ticks)
    let mut procs: HashMap<i32, (i32, u64)> = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // A process may exit while we look: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name, which is in parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); ppid is field 4, utime..cstime 14..17.
        let number = |field: usize| fields.get(field - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(ppid), Some(u), Some(s), Some(cu), Some(cs)) =
            (number(4), number(14), number(15), number(16), number(17))
        {
            procs.insert(pid, (ppid as i32, u + s + cu + cs));
        }
    }
    if !procs.contains_key(&root) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no process {root}"),
        ));
    }
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, &(ppid, _)) in &procs {
        children.entry(ppid).or_default().push(pid);
    }
    let (mut ticks, mut count, mut stack) = (0, 0, vec![root]);
    while let Some(pid) = stack.pop() {
        ticks += procs[&pid].1;
        count += 1;
        stack.extend(children.get(&pid).into_iter().flatten());
    }
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok((ticks * 1_000_000 / hz, count))
}

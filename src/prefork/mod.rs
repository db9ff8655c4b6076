//! Multi-process deployments: a master process that binds the listening
//! sockets and supervises N worker processes, each running its own fibra
//! runtime — nginx's and gunicorn's model, with coroutines inside each
//! worker. A crash takes down one process's connections only; the master
//! restarts it.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use fibra::prefork::Prefork;
//!
//! fn main() -> std::io::Result<()> {
//!     Prefork::new()
//!         .workers(2)
//!         .tcp("127.0.0.1:8080")
//!         .run(|worker| {
//!             // In each worker process, on its own fibra runtime:
//!             worker.serve(|mut stream| {
//!                 let mut buf = [0u8; 1024];
//!                 while let Ok(n) = stream.read(&mut buf) {
//!                     if n == 0 || stream.write_all(&buf[..n]).is_err() {
//!                         break;
//!                     }
//!                 }
//!             })
//!         })
//! }
//! ```
//!
//! `run` binds every listener in the master, forks the workers, and returns
//! after a stop signal once every worker has exited. Each worker process
//! builds a runtime (`threads`, 1 by default: N processes × 1 thread is
//! nginx's shape), takes its listeners as `fibra::net` listeners and calls
//! the function with its `Worker`: index, generation, listeners, channel to
//! the master, and `serve`, which accepts on every listener, runs a handler
//! coroutine per connection and stops gracefully when told to.
//!
//! The parts, each in its file:
//!
//! - `listeners.rs` — binding in the master; how the workers share a port
//!   (`Sharing::Exclusive`: one queue, `EPOLLEXCLUSIVE`, no thundering herd;
//!   `Sharing::ReusePort`: one `SO_REUSEPORT` socket per worker, balanced
//!   by the kernel, but a stalled worker strands what is queued on its
//!   socket) and the trade-off, measured;
//! - `master.rs` — forking and supervision: restarts with exponential
//!   backoff, one log line per event, the signals (`SIGTERM`/`SIGINT`
//!   graceful stop, `SIGQUIT` immediate stop, `SIGHUP` rolling reload that
//!   refuses no connection, `SIGTTIN`/`SIGTTOU` one worker more/fewer),
//!   `PR_SET_PDEATHSIG` checked against the start-up race, the heartbeat
//!   timeout that replaces a hung worker, CPU pinning;
//! - `worker.rs` — the worker process: its runtime, the heartbeat
//!   coroutine, the control reader, `Worker::serve` and its graceful stop;
//! - `signals.rs` — the master's self-pipe: no work in a signal handler;
//! - `channel.rs` — the master↔worker socketpair (datagrams: heartbeats,
//!   control, and the application's own messages).
//!
//! # Fork rules
//!
//! `fork(2)` copies memory but only the calling thread, so a runtime can
//! never run in two processes. fibra enforces it (src/runtime/fork.rs): in
//! a forked child every runtime of the parent is dead — its coroutines never
//! run there, its epoll instances (shared with the parent) are neither read
//! nor changed, and using it (`Runtime::spawn`, `block_on`, joining one of
//! its coroutines) fails with an error or panic that says so. Hence:
//!
//! - Fork before building runtimes, or exec right after the fork
//!   (`std::process::Command` does).
//! - In a forked child, build a new `Runtime`; `fibra::spawn`'s default
//!   runtime starts afresh there by itself.
//! - A coroutine that forks goes on in the child as plain code on a plain
//!   thread (its waits block that thread). When it returns, the child
//!   exits, with a line on stderr: the rest of its worker is the parent's.
//! - For long-lived worker processes, use this module: its master runs no
//!   runtime (`run` refuses with an error if one runs in its process) and
//!   each worker builds its own after the fork.
//! - A worker is a fork of the thread that called `run`: no other thread
//!   of the master exists in it, and a lock such a thread held at the fork
//!   stays held there. Call `run` from `main` before starting threads, or
//!   keep the master's other threads away from locks the workers use
//!   (std's stdout, a logger's).
//!
//! # Signals and the master's log
//!
//! The master handles `SIGTERM`, `SIGINT`, `SIGQUIT`, `SIGHUP`, `SIGTTIN`,
//! `SIGTTOU` and `SIGCHLD` while `run` runs (and restores the previous
//! handlers when it returns); only one master may run per process. Every
//! event is one line: `worker 1 (pid 4242, generation 0) was killed by
//! signal 9 (SIGKILL) after 3.2s; restarting now`. Lines go to stderr,
//! prefixed `fibra-prefork[<pid>]:`, unless `Prefork::log_to` says
//! otherwise.

mod channel;
mod listeners;
mod master;
mod signals;
mod worker;

use std::io;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use channel::{Channel, MAX_MESSAGE, WorkerId};
pub use listeners::{Listener, Sharing, Stream};
pub use master::Master;
pub use worker::Worker;

use listeners::{BoundListener, ListenerSpec};
use master::Config;

/// Configures a prefork deployment (see the module docs). Every knob has a
/// default; at least one listener is needed.
pub struct Prefork {
    config: Config,
    listeners: Vec<ListenerSpec>,
    /// The first bad argument a builder method was given (reported by
    /// `bind`).
    error: Option<io::Error>,
}

impl Default for Prefork {
    fn default() -> Prefork {
        Prefork::new()
    }
}

impl Prefork {
    /// A deployment with one worker process per CPU, one runtime thread per
    /// worker, `Sharing::Exclusive`, a 30 s graceful timeout, a heartbeat
    /// every second with a 30 s timeout, restart backoff from 100 ms to
    /// 10 s for workers that die within 1 s of starting, no CPU pinning,
    /// and no listener yet.
    pub fn new() -> Prefork {
        Prefork {
            config: Config {
                workers: num_cpus::get().max(1),
                threads: 1,
                sharing: Sharing::Exclusive,
                graceful_timeout: Duration::from_secs(30),
                heartbeat_interval: Duration::from_secs(1),
                heartbeat_timeout: Duration::from_secs(30),
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(10),
                min_uptime: Duration::from_secs(1),
                pin_workers: false,
                on_message: None,
                log: Arc::new(|line| eprintln!("fibra-prefork[{}]: {line}", std::process::id())),
            },
            listeners: Vec::new(),
            error: None,
        }
    }

    /// The number of worker processes (at least 1; `SIGTTIN`/`SIGTTOU`
    /// change it while running).
    pub fn workers(mut self, n: usize) -> Prefork {
        self.config.workers = n.max(1);
        self
    }

    /// Runtime worker threads in each worker process (default 1).
    pub fn threads(mut self, n: usize) -> Prefork {
        self.config.threads = n.max(1);
        self
    }

    /// How the workers share each TCP port (see `Sharing`).
    pub fn sharing(mut self, sharing: Sharing) -> Prefork {
        self.config.sharing = sharing;
        self
    }

    /// Listens on a TCP address (resolved now; bound by `bind`/`run`).
    pub fn tcp<A: ToSocketAddrs>(mut self, addr: A) -> Prefork {
        match addr.to_socket_addrs() {
            Ok(addrs) => self.listeners.push(ListenerSpec::Tcp(addrs.collect())),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Listens on a Unix-domain socket at `path`, which must not exist yet;
    /// the master removes it when it is done.
    pub fn unix(mut self, path: impl Into<PathBuf>) -> Prefork {
        self.listeners.push(ListenerSpec::Unix(path.into()));
        self
    }

    /// Shares a TCP listener bound already (always `Sharing::Exclusive`).
    pub fn tcp_listener(mut self, listener: std::net::TcpListener) -> Prefork {
        self.listeners.push(ListenerSpec::TcpBound(listener));
        self
    }

    /// Shares a Unix-domain listener bound already.
    pub fn unix_listener(mut self, listener: std::os::unix::net::UnixListener) -> Prefork {
        self.listeners.push(ListenerSpec::UnixBound(listener));
        self
    }

    /// How long stopping workers may take to finish their connections
    /// before they are killed (default 30 s).
    pub fn graceful_timeout(mut self, timeout: Duration) -> Prefork {
        self.config.graceful_timeout = timeout;
        self
    }

    /// How often each worker's heartbeat coroutine beats (default 1 s), and
    /// how long the master waits for a beat before it kills the worker as
    /// hung (default 30 s).
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Prefork {
        self.config.heartbeat_interval = interval;
        self.config.heartbeat_timeout = timeout.max(interval);
        self
    }

    /// Restart backoff for workers that die within `min_uptime` of their
    /// start: `min` first, doubling up to `max` (defaults 100 ms, 10 s,
    /// 1 s). A worker that lived longer is restarted at once.
    pub fn restart_backoff(
        mut self,
        min: Duration,
        max: Duration,
        min_uptime: Duration,
    ) -> Prefork {
        self.config.backoff_min = min;
        self.config.backoff_max = max.max(min);
        self.config.min_uptime = min_uptime;
        self
    }

    /// Pins worker `i` to the `i`-th CPU this process may use (modulo
    /// their number).
    pub fn pin_workers(mut self, pin: bool) -> Prefork {
        self.config.pin_workers = pin;
        self
    }

    /// Handles the application's messages from the workers
    /// (`Channel::send`), in the master; a returned `Some` is sent back to
    /// that worker (`Channel::recv`). Runs on the master's loop: keep it
    /// short, and do not start a fibra runtime in it.
    pub fn on_message<H>(mut self, handler: H) -> Prefork
    where
        H: FnMut(WorkerId, &[u8]) -> Option<Vec<u8>> + 'static,
    {
        self.config.on_message = Some(Box::new(handler));
        self
    }

    /// Sends the master's log lines (one per event, no newline) to `log`
    /// instead of stderr.
    pub fn log_to<L>(mut self, log: L) -> Prefork
    where
        L: Fn(&str) + Send + Sync + 'static,
    {
        self.config.log = Arc::new(log);
        self
    }

    /// Binds every listener, without starting workers: ask the `Master`
    /// its addresses (a port 0 gets one from the kernel), then `run` it.
    pub fn bind(self) -> io::Result<Master> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.listeners.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fibra::prefork: no listener (call tcp, unix, tcp_listener or unix_listener)",
            ));
        }
        let (sharing, workers) = (self.config.sharing, self.config.workers);
        let bound = self
            .listeners
            .into_iter()
            .map(|spec| BoundListener::bind(spec, sharing, workers))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Master::new(self.config, bound))
    }

    /// `bind`, then `Master::run`: starts the workers, each running
    /// `worker`, and supervises them until a stop signal.
    pub fn run<F>(self, worker: F) -> io::Result<()>
    where
        F: Fn(&Worker) -> io::Result<()> + Send + Sync + 'static,
    {
        self.bind()?.run(worker)
    }
}

impl std::fmt::Debug for Prefork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefork")
            .field("workers", &self.config.workers)
            .field("threads", &self.config.threads)
            .field("sharing", &self.config.sharing)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

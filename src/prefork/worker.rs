//! The worker process: what runs in a child after the master forks it.
//!
//! The master has already reset the signal handlers, set the parent-death
//! signal and closed the fds that are not this worker's (master.rs). Here
//! the child pins itself to a CPU if asked, builds its own fibra runtime
//! (`threads` workers, 1 by default), adopts its listening sockets as
//! `fibra::net` listeners (registered with `EPOLLEXCLUSIVE` when they park,
//! listeners.rs) and its end of the channel, and runs the application's
//! function as a coroutine with a `Worker` context. Beside it run two
//! coroutines of prefork's own:
//!
//! - the heartbeat: a `HEARTBEAT` datagram to the master every interval.
//!   It is a coroutine, not a thread, on purpose: when a coroutine spins
//!   without parking, it holds its worker thread and the heartbeat stops,
//!   so the master sees the hang and replaces the process. (With several
//!   threads per process, only a hang of every thread stops it.)
//! - the control reader: takes the master's datagrams; `STOP` starts the
//!   graceful stop, `APP` goes to `Channel::recv`.
//!
//! A worker reports `READY` once it serves (`Worker::ready`, which `serve`
//! calls when its acceptors run): a reload stops the old worker of an
//! index only then, so a new generation that fails at start-up never
//! replaces a working one.
//!
//! # Graceful stop (`Worker::serve`)
//!
//! `serve` accepts on every listener, one coroutine per listener, on a
//! clone of its fd, and runs the handler in a coroutine per connection,
//! counted. On `STOP` it cancels the acceptors (which unwinds them from
//! `accept` and drops their clones: the fds leave this worker's epoll),
//! then takes the connections already queued with non-blocking accepts on
//! the originals (never registered, so no wakeup is owed to them), and
//! returns once every counted connection has finished. The order matters
//! with `EPOLLEXCLUSIVE`: a connection whose wakeup went to this worker
//! just before it stopped would otherwise sit in the shared queue with no
//! other worker woken for it — the drain after deregistering accepts it.
//!
//! The process exits 0 when the application's function returns `Ok`, 1 on
//! `Err` (logged), 101 on a panic; the master restarts it unless it was
//! told to stop.

use std::io::{self, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::channel::{APP, Channel, HEARTBEAT, READY, STOP, WaitList};
use super::listeners::{Listener, Stream};
use crate::net::UnixDatagram;

/// What a forked child needs to become worker `index`.
pub(crate) struct WorkerSpec {
    pub index: usize,
    pub generation: u64,
    /// Its listening fds, and whether each is TCP.
    pub listeners: Vec<(RawFd, bool)>,
    pub channel: OwnedFd,
    pub threads: usize,
    pub heartbeat_interval: Duration,
    pub cpu: Option<usize>,
}

/// A worker process's view of itself, given to the application's function
/// (see `fibra::prefork`).
pub struct Worker {
    index: usize,
    generation: u64,
    listeners: Vec<Listener>,
    channel: Channel,
    state: Arc<StopState>,
    ready_sent: AtomicBool,
}

/// The stop request and the connections `serve` counts.
#[derive(Default)]
struct StopState {
    stopping: AtomicBool,
    stop_waiters: WaitList,
    in_flight: AtomicUsize,
    idle_waiters: WaitList,
}

impl StopState {
    fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop_waiters.notify_all();
    }
}

/// Counts one connection of `serve` while it lives.
struct InFlight(Arc<StopState>);

impl InFlight {
    fn enter(state: &Arc<StopState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_waiters.notify_all();
        }
    }
}

impl Worker {
    /// This worker's index, `0..workers` (a restarted or reloaded worker
    /// keeps the index of the one it replaces).
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many reloads (`SIGHUP`) the master had seen when it started
    /// this worker.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The listening sockets, in the order they were given to the builder.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The channel to the master (see `Prefork::on_message`).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Whether the master has asked this worker to stop (a graceful stop,
    /// a reload, or one worker fewer).
    pub fn is_stopping(&self) -> bool {
        self.state.stopping.load(Ordering::Acquire)
    }

    /// Tells the master that this worker serves: during a reload, the
    /// old worker of this index is stopped only then. `serve` calls it; an
    /// application with its own accept loop calls it once it accepts (if
    /// it never does, the master takes a worker that has lived
    /// `min_uptime` as ready).
    pub fn ready(&self) -> io::Result<()> {
        if self.ready_sent.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.channel.send_kind(READY, &[])
    }

    /// Parks until the master asks this worker to stop.
    pub fn wait_for_stop(&self) {
        let state = &self.state;
        state
            .stop_waiters
            .wait_until(|| state.stopping.load(Ordering::Acquire));
    }

    /// Serves every listener until the master asks this worker to stop:
    /// each connection runs `handler` in a coroutine of its own. On the
    /// stop request it stops accepting, takes what was already queued for
    /// it, and returns once every connection's handler has returned (the
    /// master kills the process if that takes longer than the graceful
    /// timeout).
    pub fn serve<H>(&self, handler: H) -> io::Result<()>
    where
        H: Fn(Stream) + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        let mut acceptors = Vec::with_capacity(self.listeners.len());
        for listener in &self.listeners {
            let listener = listener.try_clone()?;
            let handler = Arc::clone(&handler);
            let state = Arc::clone(&self.state);
            acceptors.push(crate::spawn(move || {
                loop {
                    match listener.accept() {
                        Ok(stream) => spawn_counted(&state, &handler, stream),
                        Err(e) => pause_after_accept_error(&e),
                    }
                }
            }));
        }
        self.ready()?;
        self.wait_for_stop();
        for acceptor in &acceptors {
            acceptor.cancel();
        }
        for acceptor in acceptors {
            let _ = acceptor.join();
        }
        for listener in &self.listeners {
            listener.set_nonblocking(true)?;
            while let Ok(stream) = listener.accept() {
                spawn_counted(&self.state, &handler, stream);
            }
            listener.set_nonblocking(false)?;
        }
        let state = &self.state;
        state
            .idle_waiters
            .wait_until(|| state.in_flight.load(Ordering::Acquire) == 0);
        Ok(())
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("generation", &self.generation)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

fn spawn_counted<H>(state: &Arc<StopState>, handler: &Arc<H>, stream: Stream)
where
    H: Fn(Stream) + Send + Sync + 'static,
{
    let counted = InFlight::enter(state);
    let handler = Arc::clone(handler);
    crate::spawn(move || {
        let _counted = counted;
        handler(stream);
    });
}

/// An accept that failed for another reason than a closed connection (out
/// of fds, say): pause rather than spin on it.
fn pause_after_accept_error(error: &io::Error) {
    if error.raw_os_error() != Some(libc::ECONNABORTED) {
        eprintln!("fibra-prefork[{}]: accept: {error}", std::process::id());
        crate::sleep(Duration::from_millis(10));
    }
}

/// The forked child's life as worker `spec.index`: never returns.
pub(crate) fn main<F>(spec: WorkerSpec, body: &Arc<F>) -> !
where
    F: Fn(&Worker) -> io::Result<()> + Send + Sync + 'static,
{
    let index = spec.index;
    let code = match catch_unwind(AssertUnwindSafe(|| run(spec, body))) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("fibra-prefork[{}]: worker {index}: {e}", std::process::id());
            1
        }
        // The panic hook has printed the message.
        Err(_) => 101,
    };
    let _ = io::stdout().flush();
    // SAFETY: _exit ends this process without returning into the master's
    // frames copied by fork (whose objects must never be dropped here).
    unsafe { libc::_exit(code) }
}

fn run<F>(spec: WorkerSpec, body: &Arc<F>) -> io::Result<()>
where
    F: Fn(&Worker) -> io::Result<()> + Send + Sync + 'static,
{
    if let Some(cpu) = spec.cpu {
        pin_to_cpu(cpu)?;
    }
    let runtime = crate::Runtime::builder()
        .workers(spec.threads)
        .thread_name(format!("prefork-w{}", spec.index))
        .build()?;
    let channel = Channel::new(UnixDatagram::from(spec.channel));
    let listeners = spec
        .listeners
        .iter()
        // SAFETY: the master handed these fds to this worker; the master's
        // own copies are never closed in this process (see `main`).
        .map(|&(fd, tcp)| unsafe { Listener::adopt(fd, tcp) })
        .collect();
    let worker = Worker {
        index: spec.index,
        generation: spec.generation,
        listeners,
        channel: channel.clone(),
        state: Arc::new(StopState::default()),
        ready_sent: AtomicBool::new(false),
    };
    let body = Arc::clone(body);
    let interval = spec.heartbeat_interval;
    let result = runtime.block_on(move || {
        let control = {
            let (channel, state) = (channel.clone(), Arc::clone(&worker.state));
            crate::spawn(move || read_control(&channel, &state))
        };
        let heartbeat = crate::spawn(move || {
            while channel.send_kind(HEARTBEAT, &[]).is_ok() {
                crate::sleep(interval);
            }
        });
        let result = body(&worker);
        control.cancel();
        heartbeat.cancel();
        result
    });
    drop(runtime);
    result
}

/// The control reader: the master's datagrams, until the channel breaks.
fn read_control(channel: &Channel, state: &StopState) {
    while let Some((kind, payload)) = channel.read_control() {
        match kind {
            STOP => state.request_stop(),
            APP => channel.deliver(payload),
            _ => {}
        }
    }
    channel.close();
}

fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes a bit inside it
    // (`cpu` is below CPU_SETSIZE, checked by the master), and
    // sched_setaffinity reads `size_of::<cpu_set_t>()` bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

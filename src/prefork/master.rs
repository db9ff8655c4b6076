//! The master: forks the worker processes and supervises them, in the
//! manner of nginx's master and gunicorn's arbiter. It runs no fibra
//! runtime: one thread, one `poll(2)` loop over the signal pipe
//! (signals.rs) and every worker's channel (channel.rs), with a timeout
//! set to the next deadline (a restart due, a heartbeat overdue, a stop
//! timing out). It never sleeps blindly and never blocks on a worker.
//!
//! # Supervision
//!
//! Each running worker is a `Slot`. A slot's process that ends is logged
//! (one line: index, pid, generation, exit status or signal) and, unless
//! the master asked it to stop or a newer generation has taken its index,
//! restarted. A worker that dies within `min_uptime` of its start counts as
//! a start-up failure: its index waits `backoff_min` before the next try,
//! then twice as long each time, up to `backoff_max`; a worker that lived
//! longer is restarted at once and resets the backoff. A worker whose
//! heartbeat is overdue by `heartbeat_timeout` is killed (SIGKILL) and, once
//! reaped, restarted like any other.
//!
//! # Signals
//!
//! - `SIGTERM`, `SIGINT`: graceful stop. Every worker gets `STOP` (it stops
//!   accepting and finishes its connections); a worker still there after
//!   `graceful_timeout` is killed; `run` returns when all are gone.
//! - `SIGQUIT`: immediate stop: every worker is killed at once.
//! - `SIGHUP`: rolling reload. A new generation of workers starts; as each
//!   new worker reports `READY` (or has lived `min_uptime`), the old worker
//!   of its index gets `STOP`.
//!   The listening sockets stay open in the master throughout, so a
//!   connection that arrives meanwhile waits in a queue some live worker
//!   accepts from: none is refused. If a new worker keeps failing, the old
//!   one of its index keeps serving.
//! - `SIGTTIN` / `SIGTTOU`: one worker more / fewer (at least one). The
//!   retired index's worker stops gracefully.
//!
//! # Forking a worker
//!
//! The master refuses to fork while a fibra runtime runs in its process
//! (src/runtime/fork.rs: the child could not use it anyway, and a master
//! that schedules coroutines is not what this model means). Around the
//! fork every signal is blocked (signals.rs). In the child, before it
//! unblocks them: the master's handlers are undone and its pipe closed,
//! `PR_SET_PDEATHSIG` makes the kernel kill the worker when the master
//! dies — and since the master may have died between the fork and that
//! `prctl`, the child then checks that its parent is still the master and
//! exits if not — and every fd of the master's that is not this worker's
//! (other workers' channels, other workers' `SO_REUSEPORT` sockets) is
//! closed. Then it becomes a worker (worker.rs) and never returns here.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::channel::{APP, HEARTBEAT, MasterEnd, READY, STOP, WorkerId};
use super::listeners::{BoundListener, Sharing};
use super::signals::{self, Blocked, SignalPipe};
use super::worker::{self, Worker, WorkerSpec};
use crate::net::sys;

/// What the builder configured (see `Prefork`'s methods for each knob).
pub(crate) struct Config {
    pub workers: usize,
    pub threads: usize,
    pub sharing: Sharing,
    pub graceful_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub min_uptime: Duration,
    pub pin_workers: bool,
    pub on_message: Option<MessageHandler>,
    pub log: Logger,
}

/// `Prefork::on_message`'s handler.
pub(crate) type MessageHandler = Box<dyn FnMut(WorkerId, &[u8]) -> Option<Vec<u8>>>;
/// Where the master's log lines go.
pub(crate) type Logger = Arc<dyn Fn(&str) + Send + Sync>;

/// A master whose listeners are bound and whose workers are not started
/// yet (`Prefork::bind`): ask it the addresses, then `run` it.
pub struct Master {
    config: Config,
    listeners: Vec<BoundListener>,
}

impl Master {
    pub(crate) fn new(config: Config, listeners: Vec<BoundListener>) -> Master {
        Master { config, listeners }
    }

    /// The addresses of the TCP listeners, in the order they were given
    /// (a port 0 shows the port the kernel chose).
    pub fn tcp_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        let mut addrs = Vec::new();
        for listener in &self.listeners {
            addrs.extend(listener.tcp_addr()?);
        }
        Ok(addrs)
    }

    /// Starts the workers, each running `worker` with its `Worker`
    /// context, and supervises them until a stop signal; returns once every
    /// worker has exited. Fails at once if a fibra runtime is running in
    /// this process (the master must run none) or if another master runs
    /// in it.
    pub fn run<F>(self, worker: F) -> io::Result<()>
    where
        F: Fn(&Worker) -> io::Result<()> + Send + Sync + 'static,
    {
        refuse_if_runtime_runs()?;
        let signals = SignalPipe::install()?;
        let workers = self.config.workers;
        let mut supervisor = Supervisor {
            config: self.config,
            listeners: self.listeners,
            body: Arc::new(worker),
            signals,
            slots: Vec::new(),
            restarts: HashMap::new(),
            target: workers,
            generation: 0,
            stop_deadline: None,
            cpus: allowed_cpus(),
        };
        for index in 0..workers {
            if let Err(e) = supervisor.start(index) {
                supervisor.kill_all();
                return Err(e);
            }
        }
        supervisor.supervise();
        Ok(())
    }
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("workers", &self.config.workers)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

fn refuse_if_runtime_runs() -> io::Result<()> {
    let running = crate::runtime::runtimes_running();
    if running == 0 {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "fibra::prefork: {running} fibra runtime(s) run in this process; the master must run \
         none (a forked worker could not use them): build runtimes in the workers, and do not \
         call fibra::spawn in the master before or while it runs"
    )))
}

/// One worker process.
struct Slot {
    id: WorkerId,
    channel: MasterEnd,
    started: Instant,
    last_beat: Instant,
    /// Said `READY`, or lived `min_uptime` without failing.
    ready: bool,
    /// Sent `STOP`: must exit by this deadline.
    stopping: Option<Instant>,
    /// Killed for a missed heartbeat or a missed deadline (not twice).
    killed: bool,
}

/// An index's restart state.
#[derive(Default)]
struct Restart {
    at: Option<Instant>,
    backoff: Duration,
}

struct Supervisor<F> {
    config: Config,
    listeners: Vec<BoundListener>,
    body: Arc<F>,
    signals: SignalPipe,
    slots: Vec<Slot>,
    restarts: HashMap<usize, Restart>,
    /// The number of workers wanted.
    target: usize,
    generation: u64,
    /// Set by a graceful stop: when the remaining workers get killed.
    stop_deadline: Option<Instant>,
    cpus: Vec<usize>,
}

impl<F> Supervisor<F>
where
    F: Fn(&Worker) -> io::Result<()> + Send + Sync + 'static,
{
    fn log(&self, line: &str) {
        (self.config.log)(line);
    }

    /// The loop: returns when stopped and every worker has been reaped.
    fn supervise(&mut self) {
        loop {
            for signal in self.signals.take() {
                if !self.on_signal(signal) {
                    return;
                }
            }
            self.reap();
            self.read_channels();
            self.check_deadlines();
            self.start_due();
            if self.stop_deadline.is_some() && self.slots.is_empty() {
                self.log("stopped");
                return;
            }
            self.wait();
        }
    }

    /// Acts on one signal; false when the master must return at once.
    fn on_signal(&mut self, signal: libc::c_int) -> bool {
        let stopping = self.stop_deadline.is_some();
        match signal {
            libc::SIGTERM | libc::SIGINT if !stopping => self.stop_gracefully(signal),
            libc::SIGQUIT => {
                self.log("SIGQUIT: stopping now");
                self.kill_all();
                self.log("stopped");
                return false;
            }
            libc::SIGHUP if !stopping => self.reload(),
            libc::SIGTTIN if !stopping => {
                self.target += 1;
                self.log(&format!("SIGTTIN: {} workers", self.target));
                self.try_start(self.target - 1);
            }
            libc::SIGTTOU if !stopping && self.target > 1 => {
                self.target -= 1;
                self.log(&format!("SIGTTOU: {} workers", self.target));
                let deadline = Instant::now() + self.config.graceful_timeout;
                let target = self.target;
                self.restarts.retain(|&index, _| index < target);
                // The retired index's SO_REUSEPORT socket now lives in its
                // worker alone, and closes when that worker exits, right
                // after its last accepts (listeners.rs).
                for listener in &mut self.listeners {
                    listener.release_from(target);
                }
                for slot in self.slots.iter_mut().filter(|s| s.id.index >= target) {
                    stop(slot, deadline);
                }
            }
            _ => {}
        }
        true
    }

    fn stop_gracefully(&mut self, signal: libc::c_int) {
        let timeout = self.config.graceful_timeout;
        self.log(&format!(
            "{}: stopping gracefully (up to {timeout:?})",
            signals::name(signal)
        ));
        let deadline = Instant::now() + timeout;
        self.stop_deadline = Some(deadline);
        self.restarts.clear();
        for slot in &mut self.slots {
            stop(slot, deadline);
        }
    }

    fn reload(&mut self) {
        self.generation += 1;
        self.log(&format!(
            "SIGHUP: reloading, starting generation {}",
            self.generation
        ));
        for index in 0..self.target {
            self.restarts.remove(&index);
            self.try_start(index);
        }
    }

    /// Forks worker `index` of the current generation.
    fn start(&mut self, index: usize) -> io::Result<()> {
        refuse_if_runtime_runs()?;
        let mut fds = Vec::with_capacity(self.listeners.len());
        for listener in &mut self.listeners {
            fds.push((listener.fd_for(index)?, listener.is_tcp()));
        }
        let (master_end, worker_end) = sys::socketpair(libc::SOCK_DGRAM)?;
        let cpu = match self.config.pin_workers {
            true => self.cpus.get(index % self.cpus.len().max(1)).copied(),
            false => None,
        };
        let spec = WorkerSpec {
            index,
            generation: self.generation,
            listeners: fds,
            channel: worker_end,
            threads: self.config.threads,
            heartbeat_interval: self.config.heartbeat_interval,
            cpu,
        };
        // SAFETY: getpid(2) cannot fail.
        let master = unsafe { libc::getpid() };
        let blocked = Blocked::all();
        // SAFETY: fork(2). The child below only resets signals, closes fds
        // and becomes a worker, which ends with _exit: it never returns
        // into this frame or drops anything of the master's.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            self.become_worker(master, &master_end, spec, blocked);
        }
        drop(blocked);
        drop(spec);
        let now = Instant::now();
        let id = WorkerId {
            index,
            generation: self.generation,
            pid: pid as u32,
        };
        self.slots.push(Slot {
            id,
            channel: MasterEnd::new(StdDatagram::from(master_end)),
            started: now,
            last_beat: now,
            ready: false,
            stopping: None,
            killed: false,
        });
        self.log(&format!("{} started", describe(&id)));
        Ok(())
    }

    /// `start`, logging a failure and retrying it later.
    fn try_start(&mut self, index: usize) {
        if let Err(e) = self.start(index) {
            let backoff = self.schedule_restart(index, true);
            self.log(&format!(
                "worker {index}: cannot start: {e}; retrying in {backoff:?}"
            ));
        }
    }

    /// The child's side of `start`.
    fn become_worker(
        &self,
        master: libc::pid_t,
        master_end: &OwnedFd,
        spec: WorkerSpec,
        blocked: Blocked,
    ) -> ! {
        self.signals.reset_in_child();
        // SAFETY: prctl(PR_SET_PDEATHSIG, signal) and getppid(2) take and
        // return plain integers.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != master {
                // The master died before the prctl: nobody will kill us.
                libc::_exit(1);
            }
        }
        drop(blocked);
        let keep: Vec<_> = spec.listeners.iter().map(|&(fd, _)| fd).collect();
        let others = self
            .slots
            .iter()
            .map(|s| s.channel.fd())
            .chain(Some(master_end.as_raw_fd()))
            .chain(self.listeners.iter().flat_map(BoundListener::fds))
            .filter(|fd| !keep.contains(fd));
        for fd in others {
            // SAFETY: closes this process's copy of a master fd; the
            // master's objects owning these numbers are never dropped in
            // this process (it ends with _exit).
            unsafe { libc::close(fd) };
        }
        worker::main(spec, &self.body)
    }

    /// Reaps every worker that has ended, and decides about each.
    fn reap(&mut self) {
        let mut index = 0;
        while index < self.slots.len() {
            let pid = self.slots[index].id.pid as libc::pid_t;
            let mut status = 0;
            // SAFETY: waitpid writes the status word into `status`.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if rc == pid
                || (rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
            {
                let slot = self.slots.swap_remove(index);
                self.ended(slot, status, rc == pid);
            } else {
                index += 1;
            }
        }
    }

    fn ended(&mut self, slot: Slot, status: libc::c_int, have_status: bool) {
        let id = slot.id;
        let how = match have_status {
            false => "is gone".to_string(),
            true => exit_description(status),
        };
        let replaced = self
            .slots
            .iter()
            .any(|s| s.id.index == id.index && s.id.generation > id.generation);
        let wanted = self.stop_deadline.is_none()
            && slot.stopping.is_none()
            && !replaced
            && id.index < self.target;
        if !wanted {
            self.log(&format!("{} {how}", describe(&id)));
            return;
        }
        let uptime = slot.started.elapsed();
        let backoff = self.schedule_restart(id.index, uptime < self.config.min_uptime);
        let when = match backoff.is_zero() {
            true => "now".to_string(),
            false => format!("in {backoff:?}"),
        };
        self.log(&format!(
            "{} {how} after {uptime:.1?}; restarting {when}",
            describe(&id)
        ));
    }

    /// Schedules a restart of `index` and returns its delay: none after a
    /// worker that ran for a while; after a start-up failure
    /// (`failed_early`), `backoff_min`, then twice the previous delay each
    /// time, up to `backoff_max`.
    fn schedule_restart(&mut self, index: usize, failed_early: bool) -> Duration {
        let (min, max) = (self.config.backoff_min, self.config.backoff_max);
        let restart = self.restarts.entry(index).or_default();
        restart.backoff = if !failed_early {
            Duration::ZERO
        } else if restart.backoff.is_zero() {
            min
        } else {
            (restart.backoff * 2).min(max)
        };
        restart.at = Some(Instant::now() + restart.backoff);
        restart.backoff
    }

    /// Starts the restarts that are due.
    fn start_due(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .restarts
            .iter()
            .filter(|(_, r)| r.at.is_some_and(|at| at <= now))
            .map(|(&index, _)| index)
            .collect();
        for index in due {
            if let Some(restart) = self.restarts.get_mut(&index) {
                restart.at = None;
            }
            self.try_start(index);
        }
    }

    /// Heartbeats, `READY`s and application messages from the workers.
    fn read_channels(&mut self) {
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut messages = Vec::new();
        for slot in &mut self.slots {
            slot.channel.flush();
            if !slot.ready && now.duration_since(slot.started) >= self.config.min_uptime {
                // Lived through start-up without saying READY: an
                // application that never calls `Worker::ready`.
                slot.ready = true;
                ready.push(slot.id);
            }
            for (kind, payload) in slot.channel.receive() {
                match kind {
                    HEARTBEAT => slot.last_beat = now,
                    READY if !slot.ready => {
                        slot.ready = true;
                        ready.push(slot.id);
                    }
                    APP => messages.push((slot.id, payload)),
                    _ => {}
                }
            }
        }
        for id in ready {
            self.retire_older(id);
        }
        for (id, payload) in messages {
            let Some(handler) = self.config.on_message.as_mut() else {
                continue;
            };
            // A panicking handler must not end the loop that supervises
            // every worker (and, through PDEATHSIG, keeps them alive).
            let reply = match catch_unwind(AssertUnwindSafe(|| handler(id, &payload))) {
                Ok(reply) => reply,
                Err(_) => {
                    self.log(&format!(
                        "{}: on_message panicked; message dropped",
                        describe(&id)
                    ));
                    None
                }
            };
            if let Some(reply) = reply
                && let Some(slot) = self.slots.iter_mut().find(|s| s.id == id)
            {
                slot.channel.send(APP, &reply);
            }
        }
    }

    /// A worker of a newer generation is ready: the older one of its index
    /// stops (a reload's hand-over).
    fn retire_older(&mut self, new: WorkerId) {
        let deadline = Instant::now() + self.config.graceful_timeout;
        let mut retired = Vec::new();
        for slot in &mut self.slots {
            if slot.id.index == new.index
                && slot.id.generation < new.generation
                && slot.stopping.is_none()
            {
                stop(slot, deadline);
                retired.push(slot.id);
            }
        }
        for id in retired {
            self.log(&format!(
                "{} stopping: replaced by pid {}",
                describe(&id),
                new.pid
            ));
        }
    }

    /// Kills workers whose heartbeat is overdue or whose stop timed out.
    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let heartbeat_timeout = self.config.heartbeat_timeout;
        let mut lines = Vec::new();
        for slot in self.slots.iter_mut().filter(|s| !s.killed) {
            let silent = now.saturating_duration_since(slot.last_beat);
            let line = if slot.stopping.is_some_and(|d| d <= now) {
                format!("{} did not stop in time; killing it", describe(&slot.id))
            } else if silent > heartbeat_timeout {
                format!(
                    "{} sent no heartbeat for {silent:.1?}; killing it",
                    describe(&slot.id)
                )
            } else {
                continue;
            };
            slot.killed = true;
            kill(slot.id.pid, libc::SIGKILL);
            lines.push(line);
        }
        for line in lines {
            self.log(&line);
        }
    }

    /// Waits in `poll(2)` for a signal, a worker's message or a writable
    /// channel, until the next deadline.
    fn wait(&self) {
        let mut fds = vec![libc::pollfd {
            fd: self.signals.fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for slot in &self.slots {
            let events = match slot.channel.has_outbox() {
                true => libc::POLLIN | libc::POLLOUT,
                false => libc::POLLIN,
            };
            fds.push(libc::pollfd {
                fd: slot.channel.fd(),
                events,
                revents: 0,
            });
        }
        let timeout = self.next_deadline().map_or(-1, |deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            left.as_millis().min(60_000) as libc::c_int + 1
        });
        // SAFETY: `fds` is a live array of `fds.len()` pollfds. EINTR (a
        // signal) is fine: the loop looks at the pipe next.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    }

    fn next_deadline(&self) -> Option<Instant> {
        let restarts = self.restarts.values().filter_map(|r| r.at);
        let slots = self.slots.iter().filter(|s| !s.killed).flat_map(|s| {
            let until_ready = (!s.ready).then_some(s.started + self.config.min_uptime);
            [
                Some(s.last_beat + self.config.heartbeat_timeout),
                s.stopping,
                until_ready,
            ]
            .into_iter()
            .flatten()
        });
        restarts.chain(slots).min()
    }

    /// Kills every worker and reaps it (blocking).
    fn kill_all(&mut self) {
        for slot in &self.slots {
            kill(slot.id.pid, libc::SIGKILL);
        }
        for slot in std::mem::take(&mut self.slots) {
            let mut status = 0;
            // SAFETY: waitpid writes the status word into `status`.
            while unsafe { libc::waitpid(slot.id.pid as libc::pid_t, &mut status, 0) } < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
            self.log(&format!(
                "{} {}",
                describe(&slot.id),
                exit_description(status)
            ));
        }
    }
}

fn stop(slot: &mut Slot, deadline: Instant) {
    slot.stopping = Some(deadline);
    slot.channel.send(STOP, &[]);
}

fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) of our own, not yet reaped, child.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

fn describe(id: &WorkerId) -> String {
    format!(
        "worker {} (pid {}, generation {})",
        id.index, id.pid, id.generation
    )
}

/// "exited with status N" or "was killed by signal N (NAME)".
fn exit_description(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else {
        let signal = libc::WTERMSIG(status);
        format!("was killed by signal {signal} ({})", signals::name(signal))
    }
}

/// The CPUs this process may run on, in order (for `pin_workers`).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
    // `size_of::<cpu_set_t>()` bytes; CPU_ISSET reads bits inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

//! The monitor thread: stalled-worker reports, the coarse clock, the dump
//! signal. One per process (Go's sysmon), watching every runtime.
//!
//! # Noticing a stall without touching the hot path
//!
//! Each worker counts its picks and publishes the task it is resuming
//! (`WorkerCounters::switches`, `running`; metrics pay for both). Every
//! check interval the monitor reads them: a worker whose pick count and
//! running task have not changed since the monitor first saw them, while
//! a task runs, is held by that task — it has not parked or yielded since.
//! Once that has lasted the runtime's threshold, the monitor prints one
//! report (worker, coroutine id and name, how long, where, a hint), then
//! asks the worker (an `ATTEND_STALL_END` bit it looks at once per pick,
//! on a cold path) to print the end of the stall with its length: the
//! worker is the one that sees it end. A hold measured this way starts
//! when the monitor first saw the pick, so it is short by up to one check
//! interval; the interval is an eighth of the threshold (1–25 ms), so a
//! stall is reported within the threshold plus a quarter of it. The
//! longest hold seen is kept per worker for `Metrics` (written by this
//! thread only).
//!
//! # Where the coroutine is
//!
//! `/proc/self/task/<tid>/syscall` names the system call the worker thread
//! is blocked in, or says it is running: read from another thread, safely,
//! at any time. That alone gives the hint (nanosleep: `std::thread::sleep`;
//! futex: a std lock, channel or condvar; read, recv, poll...: blocking
//! I/O; running: a loop that never parks). When the thread is blocked in a
//! system call, its backtrace is also taken, by a signal whose handler
//! walks its own stack into preallocated memory (signals.rs says when that
//! is safe and why a thread running on the CPU is not walked).
//!
//! # Sleeping
//!
//! The monitor waits in `poll(2)` on an eventfd with the check interval as
//! timeout — never spinning — and with no timeout at all when every worker
//! of every runtime sleeps in `epoll_wait`: nothing can stall then, and no
//! coarse time is needed. It publishes `asleep` before it re-checks the
//! workers; a worker leaving its sleep clears its `sleeping` flag before it
//! reads `asleep` (both SeqCst), so one of the two sees the other, and the
//! worker writes the eventfd. The dump signal's handler writes the same
//! eventfd; new runtimes do too.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::{ATTEND_STALL_END, clock, signals};
use crate::runtime::{Shared, StallProbe, probe_stall};

/// The shortest and longest check interval.
const MIN_CHECK: Duration = Duration::from_millis(1);
const MAX_CHECK: Duration = Duration::from_millis(25);

struct Monitor {
    runtimes: Mutex<Vec<Weak<Shared>>>,
    /// Written to wake the monitor; never closed (signal handlers write it).
    wake: OwnedFd,
    /// The monitor is waiting without a timeout.
    asleep: AtomicBool,
}

static MONITOR: OnceLock<Option<Monitor>> = OnceLock::new();

/// The monitor, started on first use; None if its thread or eventfd could
/// not be created (then no stall is reported, and the coarse clock moves
/// only with the workers' own clock reads).
fn monitor() -> Option<&'static Monitor> {
    MONITOR
        .get_or_init(|| {
            // SAFETY: eventfd has no preconditions; the result is checked.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd < 0 {
                return None;
            }
            // SAFETY: a fresh fd that nothing else owns.
            let wake = unsafe { OwnedFd::from_raw_fd(fd) };
            signals::set_wake_fd(wake.as_raw_fd());
            clock::epoch();
            Some(Monitor {
                runtimes: Mutex::new(Vec::new()),
                wake,
                asleep: AtomicBool::new(false),
            })
        })
        .as_ref()
        .filter(|_| start_thread())
}

fn start_thread() -> bool {
    static STARTED: OnceLock<bool> = OnceLock::new();
    *STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("fibra-watchdog".into())
            .spawn(|| {
                if let Some(Some(monitor)) = MONITOR.get() {
                    monitor.run();
                }
            })
            .is_ok()
    })
}

/// Starts watching a runtime that has just been built.
pub(crate) fn watch(shared: &Arc<Shared>) {
    if let Some(monitor) = monitor() {
        lock(&monitor.runtimes).push(Arc::downgrade(shared));
        signals::wake_monitor();
    }
}

/// Installs the dump-signal handler for `signal` (`RuntimeBuilder::dump_signal`).
pub(crate) fn listen_for_dump_signal(signal: i32) -> std::io::Result<()> {
    if monitor().is_none() {
        return Err(std::io::Error::other(
            "the watchdog thread, which prints dumps on a signal, could not be started",
        ));
    }
    signals::listen_for_dump(signal)
}

/// Called by a worker after it leaves its sleep (after its SeqCst store of
/// `sleeping = false`): wakes the monitor if it waits without a timeout.
#[inline]
pub(crate) fn worker_awake() {
    if let Some(Some(monitor)) = MONITOR.get()
        && monitor.asleep.load(Ordering::SeqCst)
        && monitor.asleep.swap(false, Ordering::SeqCst)
    {
        signals::wake_monitor();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The check interval for a threshold.
fn check_interval(threshold: Option<Duration>) -> Duration {
    threshold.map_or(MAX_CHECK, |t| (t / 8).clamp(MIN_CHECK, MAX_CHECK))
}

/// What the monitor remembers of one worker between checks.
#[derive(Clone, Copy, Default)]
struct Sight {
    picks: u64,
    running: usize,
    since: Option<Instant>,
    reported: bool,
}

/// A stall the monitor is reporting, for the end to be reported after it.
///
/// The monitor leaves the note before it looks for where the coroutine
/// is (a backtrace takes a signal and, the first time, loading debug
/// information: the stall may end meanwhile). The worker, at its next
/// pick after the stall, prints the end if the report is out; otherwise it
/// records when the stall ended and the monitor prints the end after its
/// report. Either way the end line follows the report and has the length
/// the worker saw.
pub(crate) struct StallNote {
    began: Instant,
    who: String,
    worker: usize,
    reported: bool,
    ended: Option<Instant>,
}

impl StallNote {
    fn end_line(&self, ended: Instant) -> String {
        let held = ended.saturating_duration_since(self.began);
        format!(
            "fibra: worker {} is free again: {} held it for {:.2}s\n",
            self.worker,
            self.who,
            held.as_secs_f64()
        )
    }
}

/// The worker's side, at its first pick after it was asked
/// (`ATTEND_STALL_END`): the stall has ended by now.
pub(crate) fn stall_ended(note: &Mutex<Option<StallNote>>, now: Instant) {
    let mut slot = lock(note);
    match slot.as_mut() {
        Some(stall) if stall.reported => {
            let line = stall.end_line(now);
            *slot = None;
            drop(slot);
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        Some(stall) => stall.ended = Some(now),
        None => {}
    }
}

impl Monitor {
    fn run(&self) {
        let mut sights: HashMap<usize, Vec<Sight>> = HashMap::new();
        loop {
            let now = Instant::now();
            clock::advance(now);
            let runtimes: Vec<Arc<Shared>> = {
                let mut list = lock(&self.runtimes);
                list.retain(|w| w.strong_count() > 0);
                list.iter().filter_map(Weak::upgrade).collect()
            };
            sights.retain(|key, _| runtimes.iter().any(|r| Arc::as_ptr(r) as usize == *key));
            let pending = signals::take_pending_dumps();
            if pending != 0 {
                for shared in &runtimes {
                    if shared
                        .dump_signal()
                        .is_some_and(|s| pending & (1u64 << s) != 0)
                    {
                        let dump = crate::runtime::dump_of(shared);
                        let _ = std::io::stderr().write_all(format!("{dump}\n").as_bytes());
                    }
                }
            }
            let mut interval = MAX_CHECK;
            let mut busy = false;
            for shared in &runtimes {
                if shared.is_shutting_down() {
                    continue;
                }
                interval = interval.min(check_interval(shared.stall_threshold()));
                let sights = sights
                    .entry(Arc::as_ptr(shared) as usize)
                    .or_insert_with(|| vec![Sight::default(); shared.worker_watches().count()]);
                for (index, ((watch, sleeping), sight)) in
                    shared.worker_watches().zip(sights.iter_mut()).enumerate()
                {
                    busy |= !sleeping;
                    check_worker(shared, index, watch, sight, Instant::now());
                }
            }
            if !busy {
                self.asleep.store(true, Ordering::SeqCst);
                let still_idle = runtimes
                    .iter()
                    .filter(|r| !r.is_shutting_down())
                    .all(|r| r.worker_watches().all(|(_, sleeping)| sleeping));
                if still_idle && signals::take_pending_peek() == 0 {
                    drop(runtimes);
                    self.wait(None);
                    self.asleep.store(false, Ordering::SeqCst);
                    continue;
                }
                self.asleep.store(false, Ordering::SeqCst);
            }
            drop(runtimes);
            self.wait(Some(interval));
        }
    }

    /// Waits for the eventfd (a wake, a signal) or the timeout.
    fn wait(&self, timeout: Option<Duration>) {
        let timeout_ms = timeout.map_or(-1, |t| t.as_millis().max(1) as libc::c_int);
        let mut pollfd = libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into `counter`; the fd is non-blocking.
        unsafe { libc::read(self.wake.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
    }
}

/// One check of one worker (module docs).
fn check_worker(
    shared: &Shared,
    index: usize,
    watch: &super::WorkerWatch,
    sight: &mut Sight,
    now: Instant,
) {
    let counters = &watch.counters;
    let picks = counters.switches.load(Ordering::Relaxed);
    let running = counters.running.load(Ordering::Relaxed);
    if running == 0 || picks != sight.picks || running != sight.running {
        *sight = Sight {
            picks,
            running,
            since: (running != 0).then_some(now),
            reported: false,
        };
        return;
    }
    let Some(since) = sight.since else {
        return;
    };
    let held = now.saturating_duration_since(since);
    let held_ns = held.as_nanos() as u64;
    if held_ns > counters.longest_hold_ns.load(Ordering::Relaxed) {
        counters.longest_hold_ns.store(held_ns, Ordering::Relaxed);
    }
    let Some(threshold) = shared.stall_threshold() else {
        return;
    };
    if sight.reported || held < threshold {
        return;
    }
    sight.reported = true;
    let Some(probe) = probe_stall(shared, index, running) else {
        return;
    };
    let who = describe(&probe);
    *lock(&watch.stall) = Some(StallNote {
        began: since,
        who: who.clone(),
        worker: index,
        reported: false,
        ended: None,
    });
    watch.ask(ATTEND_STALL_END);
    // If the stall ended just now, the worker may be asleep already.
    shared.wake_worker(index);
    let tid = watch.tid.load(Ordering::Relaxed);
    let place = Place::of_thread(tid);
    let report = format!(
        "fibra: worker {index} has been held for {:.0} ms by {who}, which has not parked or \
         yielded since: the other coroutines of this worker wait.\n  where: {}\n  hint: {}\n",
        held.as_secs_f64() * 1000.0,
        place.describe(),
        place.hint()
    );
    let _ = std::io::stderr().write_all(report.as_bytes());
    if place.in_syscall()
        && let Some(ips) = signals::backtrace_of_stuck_thread(tid, &counters.switches, picks)
    {
        let mut trace = format!("  backtrace of {who} on worker {index}:\n");
        let stack = super::ParkStack::resolve(&ips);
        for (i, frame) in stack.frames.iter().enumerate() {
            trace.push_str(&format!(
                "    {i:>3}: {}\n",
                frame.to_string().replace('\n', "\n    ")
            ));
        }
        let _ = std::io::stderr().write_all(trace.as_bytes());
    }
    let mut slot = lock(&watch.stall);
    if let Some(stall) = slot.as_mut() {
        match stall.ended {
            Some(ended) => {
                let line = stall.end_line(ended);
                let held = ended.saturating_duration_since(stall.began).as_nanos() as u64;
                if held > counters.longest_hold_ns.load(Ordering::Relaxed) {
                    counters.longest_hold_ns.store(held, Ordering::Relaxed);
                }
                *slot = None;
                drop(slot);
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            None => stall.reported = true,
        }
    }
}

fn describe(probe: &StallProbe) -> String {
    match &probe.name {
        Some(name) => format!("coroutine #{} '{name}'", probe.id),
        None => format!("coroutine #{}", probe.id),
    }
}

/// What `/proc/self/task/<tid>/syscall` says a thread is doing.
enum Place {
    Syscall(i64),
    Running,
    Unknown,
}

impl Place {
    fn of_thread(tid: i32) -> Place {
        let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
            return Place::Unknown;
        };
        match text.split_whitespace().next() {
            Some("running") => Place::Running,
            Some(number) => match number.parse::<i64>() {
                Ok(n) if n >= 0 => Place::Syscall(n),
                _ => Place::Unknown,
            },
            None => Place::Unknown,
        }
    }

    fn in_syscall(&self) -> bool {
        matches!(self, Place::Syscall(_))
    }

    fn describe(&self) -> String {
        match self {
            Place::Syscall(n) => match syscall_name(*n) {
                Some(name) => format!("blocked in the system call {name} ({n})"),
                None => format!("blocked in system call number {n}"),
            },
            Place::Running => "running on the CPU, not in a system call".into(),
            Place::Unknown => "unknown (/proc/self/task/<tid>/syscall could not be read)".into(),
        }
    }

    fn hint(&self) -> &'static str {
        match self {
            Place::Syscall(35 | 230) => {
                "std::thread::sleep blocks the whole worker: use fibra::sleep"
            }
            Place::Syscall(202) => {
                "a std lock, channel, condvar or thread::park blocks the whole worker: use \
                 fibra::sync (or fibra::park), or move the wait to fibra::blocking::unblock"
            }
            Place::Syscall(0 | 7 | 17 | 19 | 23 | 43 | 45 | 47 | 232 | 270 | 271 | 281 | 288) => {
                "blocking I/O on the worker: use fibra::net or fibra::io::Pollable (they park), \
                 or fibra::fs / fibra::blocking::unblock"
            }
            Place::Syscall(_) => {
                "a blocking system call on the worker: run it with fibra::blocking::unblock"
            }
            Place::Running => {
                "a computation that never reaches a park point: call fibra::yield_now in long \
                 loops, or run it with fibra::blocking::unblock"
            }
            Place::Unknown => {
                "use fibra::sleep, fibra::sync, fibra::net or fibra::blocking::unblock instead \
                 of calls that block the thread"
            }
        }
    }
}

/// Names of the system calls a stalled worker is usually found in
/// (x86_64 numbers).
fn syscall_name(number: i64) -> Option<&'static str> {
    Some(match number {
        0 => "read",
        1 => "write",
        7 => "poll",
        17 => "pread64",
        19 => "readv",
        23 => "select",
        35 => "nanosleep",
        42 => "connect",
        43 => "accept",
        45 => "recvfrom",
        47 => "recvmsg",
        61 => "wait4",
        74 => "fsync",
        202 => "futex",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        257 => "openat",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        _ => return None,
    })
}

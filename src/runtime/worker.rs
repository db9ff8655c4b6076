//! Workers: the OS threads that run coroutines, their queues, stealing,
//! idling and shutdown.
//!
//! # Queues of one worker (Go's P, with one Rust-specific rule)
//!
//! - `run_next`: the task most recently woken by the running one, run next so
//!   that producer/consumer pairs stay hot in cache. A streak guard stops two
//!   tasks that keep waking each other from starving the rest.
//! - `local`: started tasks ready to run. Only the owner touches it: no
//!   atomics on the hot path.
//! - `fresh`: tasks that have not started (a crossbeam FIFO deque). Other
//!   workers steal from it in batches.
//! - `inbox` (in `WorkerShared`): wakes from other threads for tasks whose
//!   home is this worker.
//! - The runtime's global `injector` takes spawns from threads that are not
//!   workers of this runtime.
//!
//! **Home worker.** A task runs its whole life on the worker that first runs
//! it: only `fresh` (never-started) tasks are stolen, and a wake from another
//! thread goes to the home worker's inbox. A started stack may hold `!Send`
//! values and thread-local addresses the compiler cached, so it must never
//! move; an empty one can (ARCHITECTURE.md, "Home worker").
//!
//! # Choosing the next task
//!
//! `run_next`, then started and fresh tasks in turns, then the inbox,
//! timers, the global queue and stealing: see placement.rs, which also
//! decides where fresh tasks start.
//!
//! # Timers and I/O beside busy coroutines
//!
//! Picks are not equal in length: a coroutine may compute for milliseconds
//! between two `yield_now` calls, and 61 such picks kept a due timer (or a
//! ready socket) waiting 55–69 ms. So the fairness check is also a look at
//! the clock, about every `CLOCK_PERIOD` (250 µs): a worker counts picks
//! down, and at each look it measures how long the last picks took and
//! sets the countdown so that the next look comes after about that much
//! time — every pick when picks take a millisecond, every 61st when they
//! take nanoseconds. A look fires due timers and, if the poller has fds
//! and was not polled for `IO_POLL_PERIOD` (500 µs), polls it without
//! blocking. With no timer armed and no fd registered a look reads no
//! clock and comes every 61st pick (the yield of two coroutines pays one
//! counter decrement per pick); arming a timer makes the next pick look. Go checks timers on
//! every schedule and leaves sockets to sysmon's 10 ms netpoll; reading
//! the clock on every pick here would cost more than the yield itself.
//!
//! # Idling
//!
//! A worker with nothing to do polls briefly, then sleeps in its poller's
//! `epoll_wait` without losing a wake: see idle.rs.
//!
//! # I/O readiness
//!
//! The worker's poller is also polled without blocking at every fairness
//! check and, when the run queues are empty, before stealing (as Go's
//! `findrunnable` calls `netpoll(0)`), if any fd is registered with it:
//! coroutines whose sockets became ready join the local queue.
//!
//! # Shutdown
//!
//! When the runtime is dropped, each worker notices at its next pick (one
//! relaxed load per pick), drops the tasks that never started (their
//! `JoinHandle`s get `Cancelled`), cancels its started tasks once and runs
//! them until they have unwound, then exits. Its thread's stack pool unmaps
//! the stacks. In a forked child the flag means "this runtime is the
//! parent's" (src/runtime/fork.rs): a worker copy that sees it runs nothing
//! and ends the process.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal, Stealer, Worker as Deque};

use crate::coroutine::CoroutineResult;
use crate::io::Poller;

use super::Shared;
use super::live::LiveLock;
use super::spawn::drop_unrun;
use super::task::{NO_HOME, Suspend, Task, TaskCoroutine, TaskYielder};
use super::task_ref::TaskRef;
use super::timer::Timers;
use crate::observe::metrics::{WorkerCounters, bump};
use crate::observe::{WorkerWatch, clock};

/// Picks between fairness checks of the inbox, timers and global queue.
const FAIRNESS_INTERVAL: u32 = 61;
/// A worker that has begun no pair of turns while another began this many
/// is taken to be stuck in a long pick: fresh tasks are not left to it.
pub(super) const PROGRESS_PAIRS: usize = 4;
/// How often, in time, a busy worker looks at its timers and (with
/// `IO_POLL_PERIOD`) its poller; see "Timers and I/O beside busy
/// coroutines" in the module docs.
const CLOCK_PERIOD: Duration = Duration::from_micros(250);
/// The longest a busy worker with registered fds goes without polling them.
const IO_POLL_PERIOD: Duration = Duration::from_micros(500);
/// Consecutive `run_next` picks before the local queue gets a turn.
const RUN_NEXT_STREAK: u32 = 16;
/// Rounds of looking for work before an idle worker sleeps.
const SPIN_ROUNDS: u32 = 64;
/// The longest an idle worker polls before it sleeps. The poll yields the
/// CPU between looks, and a `sched_yield` on a CPU other threads want lasts
/// one of their time slices (milliseconds); a polling worker does not watch
/// its timers. Bounded by rounds only, the poll kept a one-worker runtime's
/// 1 ms sleeps up to 94–99 ms late while two CPU hogs ran (4.5–15 ms with
/// this bound).
const SPIN_TIME: Duration = Duration::from_micros(50);

/// The part of a worker other threads see.
pub(crate) struct WorkerShared {
    pub inbox: Injector<TaskRef>,
    pub stealer: Stealer<TaskRef>,
    pub sleeping: AtomicBool,
    /// The worker's epoll instance: where it sleeps, and where the fds its
    /// coroutines wait on are registered.
    pub poller: Arc<Poller>,
    /// Started tasks queued when the worker began its current pair of
    /// turns, and how many pairs it has begun: what other workers read to
    /// place fresh tasks (`Worker::take_fresh`).
    pub(super) queued: AtomicUsize,
    pub(super) pairs: AtomicUsize,
    /// Started, unfinished tasks homed here (raw: each is kept alive by the
    /// reference its queue entry, its running worker or its PARKED state
    /// holds). Locked by the worker only when a task starts or finishes,
    /// and by a dump or the watchdog that reads the tasks from another
    /// thread: a task listed here cannot be freed while the lock is held.
    pub live: LiveLock,
    /// What observers see of the worker (src/observe, runtime/inspect.rs).
    pub watch: WorkerWatch,
}

impl WorkerShared {
    pub fn new(stealer: Stealer<TaskRef>) -> std::io::Result<WorkerShared> {
        Ok(WorkerShared {
            inbox: Injector::new(),
            stealer,
            sleeping: AtomicBool::new(false),
            poller: Arc::new(Poller::new()?),
            queued: AtomicUsize::new(0),
            pairs: AtomicUsize::new(0),
            live: LiveLock::new(),
            watch: WorkerWatch::new(),
        })
    }

    /// Wakes the worker's thread from its sleep in `epoll_wait` (or makes
    /// its next sleep return at once).
    pub fn wake(&self) {
        self.poller.notify();
    }
}

/// A worker's own state, owned by its thread.
pub(crate) struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    /// The task being resumed right now (None in the scheduler loop).
    pub current: Cell<Option<NonNull<Task>>>,
    /// `shared.workers[index].watch.counters`, without the bounds check.
    counters: *const WorkerCounters,
    run_next: Cell<Option<TaskRef>>,
    pub(super) run_next_streak: Cell<u32>,
    pub(super) local: RefCell<VecDeque<TaskRef>>,
    pub fresh: Deque<TaskRef>,
    pub timers: RefCell<Timers>,
    /// Where a parked task resumed for a dump records its backtrace
    /// (runtime/inspect.rs).
    pub(super) capture_ips: RefCell<Vec<usize>>,
    /// The lowest address of the stack of the task being captured.
    pub(super) capture_stack_bottom: Cell<usize>,
    /// Picks left before the next look at the clock, the length of the
    /// current countdown, and when the clock was last read there.
    clock_left: Cell<u32>,
    clock_interval: Cell<u32>,
    last_clock: Cell<Instant>,
    /// When the clock look last polled the poller.
    last_io_poll: Cell<Instant>,
    /// Whether shutdown has cancelled the tasks homed here.
    cancelled_all: Cell<bool>,
    /// Picks left in the current turn of `local` and of `fresh`.
    pub(super) local_left: Cell<usize>,
    pub(super) fresh_left: Cell<usize>,
    pub(super) spinning: Cell<bool>,
    /// Each other worker's `pairs` as last seen changing, and this
    /// worker's own `pairs` when it saw that.
    pub(super) pairs_seen: Vec<Cell<(usize, usize)>>,
}

thread_local! {
    static WORKER: Cell<*const Worker> = const { Cell::new(std::ptr::null()) };
}

/// The worker running on this thread, if any.
///
/// `#[inline(never)]` so that the compiler re-reads the thread-local on every
/// call instead of caching its address across a switch (rust-lang/rust#33368;
/// see "Home worker" above); coroutines do not migrate today, but this keeps the runtime's
/// own state honest if they ever may.
#[inline(never)]
pub(crate) fn current_worker() -> Option<&'static Worker> {
    let ptr = WORKER.with(Cell::get);
    // SAFETY: the pointer is set by `Worker::run` for exactly as long as the
    // Worker lives on that thread's stack, and cleared before it is dropped;
    // callers use the reference only within that window (inside the worker
    // loop or a coroutine it is running).
    unsafe { ptr.as_ref() }
}

/// The task running on this thread, if this is a worker inside a coroutine.
#[inline(never)]
pub(crate) fn current_task() -> Option<&'static Task> {
    let worker = WORKER.with(Cell::get);
    // SAFETY: as in `current_worker`; `current` is non-null only while the
    // task runs, and the worker holds a reference to it all that time.
    unsafe { Some(worker.as_ref()?.current.get()?.as_ref()) }
}

/// Makes the calling thread a plain thread again as far as the runtime can
/// tell (`current_worker`, `current_task` give None). Called in a forked
/// child (src/runtime/fork.rs), whose one thread may be a copy of a worker:
/// the coroutine that forked goes on there as plain code and must never
/// switch back into the copied worker's queues. One TLS store.
pub(crate) fn forget_worker_thread() {
    WORKER.with(|w| w.set(std::ptr::null()));
    crate::stack::set_makes_idle_passes(false);
}

/// Puts a task that was just moved to RUNNING by a wake on a run queue of its
/// home worker.
pub(crate) fn schedule(task: TaskRef) {
    let home = task.home.load(Ordering::Relaxed);
    debug_assert_ne!(home, NO_HOME, "only started tasks park");
    if let Some(worker) = current_worker()
        && worker.index == home
        && Arc::ptr_eq(&worker.shared, &task.shared)
    {
        if worker.current.get().is_none() {
            // Woken from the scheduler loop (the poller, a timer): it runs
            // after the tasks queued before it; start loading its record.
            prefetch_record(&task);
            worker.local.borrow_mut().push_back(task);
        } else {
            worker.push_run_next(task);
        }
        return;
    }
    let shared = Arc::clone(&task.shared);
    let target = &shared.workers[home];
    target.inbox.push(task);
    fence(Ordering::SeqCst);
    if target.sleeping.load(Ordering::SeqCst) {
        target.wake();
    }
}

impl Worker {
    pub fn new(index: usize, shared: Arc<Shared>, fresh: Deque<TaskRef>) -> Worker {
        let n_workers = shared.workers.len();
        let counters = &shared.workers[index].watch.counters as *const WorkerCounters;
        Worker {
            index,
            counters,
            shared,
            current: Cell::new(None),
            run_next: Cell::new(None),
            run_next_streak: Cell::new(0),
            local: RefCell::new(VecDeque::new()),
            fresh,
            timers: RefCell::new(Timers::default()),
            capture_ips: RefCell::new(Vec::new()),
            capture_stack_bottom: Cell::new(0),
            clock_left: Cell::new(FAIRNESS_INTERVAL),
            clock_interval: Cell::new(FAIRNESS_INTERVAL),
            last_clock: Cell::new(Instant::now()),
            last_io_poll: Cell::new(Instant::now()),
            cancelled_all: Cell::new(false),
            local_left: Cell::new(0),
            fresh_left: Cell::new(0),
            spinning: Cell::new(false),
            pairs_seen: (0..n_workers).map(|_| Cell::new((0, 0))).collect(),
        }
    }

    /// The worker thread's body: runs tasks until the runtime shuts down and
    /// every task homed here has finished.
    pub fn run(&self) {
        let _abort_if_unwinding = AbortIfUnwinding { index: self.index };
        crate::stack::ensure_signal_stack();
        crate::stack::set_makes_idle_passes(true);
        WORKER.with(|w| w.set(self as *const Worker));
        self.me().watch.worker_started();
        while let Some(task) = self.next_task() {
            self.run_task(task);
        }
        self.me().watch.exited.store(true, Ordering::SeqCst);
        self.attend();
        self.timers.borrow_mut().clear();
        self.poller().close();
        WORKER.with(|w| w.set(std::ptr::null()));
        crate::stack::set_makes_idle_passes(false);
    }

    fn run_task(&self, task: TaskRef) {
        if task.home.load(Ordering::Relaxed) == NO_HOME {
            self.enlist(&task);
        }
        // SAFETY: this is the task's home worker, the only thread that
        // touches its coroutine once it has started; no other reference to
        // the coroutine exists while it runs.
        let slot = unsafe { &mut *task.coroutine.get() };
        if slot.is_none() {
            *slot = self.start_task(&task);
        }
        // Names the last task resumed until `finish` or `find_work` clears
        // it (one store per pick; src/observe/watchdog.rs reads it).
        let counters = self.counters();
        counters
            .running
            .store(task.as_ptr() as usize, Ordering::Release);
        self.current.set(Some(NonNull::from(&*task)));
        let outcome = match slot {
            Some(coroutine) => coroutine.resume(()),
            None => CoroutineResult::Return(()),
        };
        self.current.set(None);
        match outcome {
            CoroutineResult::Yield(Suspend::Yield) => self.local.borrow_mut().push_back(task),
            CoroutineResult::Yield(Suspend::Park) => {
                task.parked_at.store(clock::now_ms(), Ordering::Relaxed);
                // The PARKED state owns this reference now (see task.rs).
                std::mem::forget(task)
            }
            CoroutineResult::Yield(Suspend::Captured) => {
                unreachable!("only a dump resumes a task to capture its stack")
            }
            CoroutineResult::Return(()) => self.finish(&task),
        }
    }

    /// This worker's counters and observer slots.
    #[inline(always)]
    pub(super) fn counters(&self) -> &WorkerCounters {
        // SAFETY: points into `self.shared`, which this worker keeps alive.
        unsafe { &*self.counters }
    }

    /// Makes this worker the home of a task that runs for the first time.
    #[cold]
    fn enlist(&self, task: &TaskRef) {
        task.home.store(self.index, Ordering::Relaxed);
        let mut live = self.me().live.lock();
        task.live_slot.set(live.0.len());
        live.0.push(task.as_ptr());
    }

    /// The part of this worker other threads see.
    #[inline]
    pub(super) fn me(&self) -> &WorkerShared {
        &self.shared.workers[self.index]
    }

    /// Binds a stack from this thread's pool to a task that runs for the
    /// first time and wraps its body in a coroutine. If no stack can be
    /// had, the body is dropped here and the `JoinHandle` gets the error.
    #[cold]
    fn start_task(&self, task: &TaskRef) -> Option<TaskCoroutine> {
        // Home worker: a task is started once, before its body is taken.
        if task.body_taken.get() {
            return None;
        }
        let stack = match crate::stack::acquire(task.stack_size) {
            Ok(stack) => stack,
            Err(error) => {
                if drop_unrun(task, Some(error)) {
                    self.shared
                        .counters
                        .dropped_unrun
                        .fetch_add(1, Ordering::Relaxed);
                }
                return None;
            }
        };
        let taken = task.take_body();
        debug_assert!(taken, "checked above");
        bump(&self.counters().started);
        let task_ptr = TaskPtr(task.as_ptr());
        let entry = move |yielder: &TaskYielder, ()| {
            let task_ptr = task_ptr;
            // SAFETY: see TaskPtr; the yielder lives on this stack until the
            // closure returns, and is used only while the task runs.
            let task = unsafe { &*task_ptr.0 };
            task.yielder.set(yielder as *const TaskYielder);
            // SAFETY: `start_task` took the body for this entry, which runs
            // once.
            unsafe { task.run_body() };
            task.yielder.set(std::ptr::null());
        };
        match TaskCoroutine::with_stack(stack, task.id, task.name.clone(), entry) {
            Ok(coroutine) => Some(coroutine),
            // The wrapper is a pointer and a box: it always fits.
            Err((stack, error)) => unreachable!("a task entry did not fit on {stack:?}: {error}"),
        }
    }

    /// Retires a finished task: its stack goes back to this thread's pool.
    fn finish(&self, task: &Task) {
        // SAFETY: home worker, the coroutine is not running.
        let coroutine = unsafe { (*task.coroutine.get()).take() };
        // Before the `live` lock below: see `inspect::probe_stall`.
        self.counters().running.store(0, Ordering::Release);
        if coroutine.is_some() {
            bump(&self.counters().finished);
        }
        drop(coroutine);
        let slot = task.live_slot.replace(usize::MAX);
        let mut live = self.me().live.lock();
        let live = &mut live.0;
        if slot < live.len() {
            live.swap_remove(slot);
            if let Some(&moved) = live.get(slot) {
                // SAFETY: live tasks are kept alive (see `live`).
                unsafe { (*moved).live_slot.set(slot) };
            }
        }
    }

    fn push_run_next(&self, task: TaskRef) {
        if let Some(previous) = self.run_next.replace(Some(task)) {
            self.local.borrow_mut().push_back(previous);
        }
    }

    fn next_task(&self) -> Option<TaskRef> {
        // One load per pick covers shutdown, dump requests and stall ends
        // (`WorkerCounters::attention`).
        if self.counters().attention.load(Ordering::Relaxed) != 0 {
            if self.shared.shutdown.load(Ordering::Relaxed) {
                return self.next_task_in_shutdown();
            }
            self.attend();
        }
        // The pick counter: what the watchdog watches.
        let switches = &self.counters().switches;
        switches.store(
            switches.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        // One countdown for the fairness check and the clock: at most every
        // FAIRNESS_INTERVAL picks, more often when picks are long.
        let left = self.clock_left.get();
        if left > 1 {
            self.clock_left.set(left - 1);
        } else if let Some(task) = self.check_fairness_and_clock() {
            return Some(task);
        }
        if let Some(task) = self.take_run_next() {
            return Some(task);
        }
        if let Some(task) = self.pop_ready() {
            return Some(task);
        }
        self.find_work()
    }

    /// Makes the next pick look at the clock: a timer was just armed, and
    /// the countdown may have been set long while nothing was watched.
    #[inline]
    pub fn watch_clock_soon(&self) {
        if self.clock_interval.get() == 0 {
            self.clock_left.set(1);
        }
    }

    /// Fires due timers and polls the poller if it has not been polled for
    /// `IO_POLL_PERIOD`, then sets how many picks until the next look so
    /// that looks come about every `CLOCK_PERIOD`, judging by how long the
    /// picks since the last look took (at least every pick, at most every
    /// `FAIRNESS_INTERVAL` picks). With no timer armed and no fd
    /// registered it reads no clock.
    /// The periodic look at every source besides the local queues, so that
    /// none starves: wakes from other threads (the inbox), due timers and
    /// the poller (`look_at_clock`), and the global queue.
    #[inline(never)]
    fn check_fairness_and_clock(&self) -> Option<TaskRef> {
        self.drain_inbox();
        self.look_at_clock();
        if self.shared.injector.is_empty() {
            return None;
        }
        self.steal_global()
    }

    fn look_at_clock(&self) {
        let watching_io = self.poller().has_registrations();
        if self.timers.borrow().len() == 0 && !watching_io {
            self.clock_interval.set(0);
            self.clock_left.set(FAIRNESS_INTERVAL);
            return;
        }
        let now = Instant::now();
        clock::advance(now);
        let picks = self.clock_interval.get();
        let next = if picks == 0 {
            // The clock was not read at the last look: measure from here.
            1
        } else {
            let per_pick = now.saturating_duration_since(self.last_clock.get()) / picks;
            let fit = CLOCK_PERIOD.as_nanos() / per_pick.as_nanos().max(1);
            fit.clamp(1, FAIRNESS_INTERVAL as u128) as u32
        };
        self.clock_interval.set(next);
        self.clock_left.set(next);
        self.last_clock.set(now);
        self.fire_timers_at(now);
        if watching_io && now.saturating_duration_since(self.last_io_poll.get()) >= IO_POLL_PERIOD {
            self.last_io_poll.set(now);
            self.poll_io();
        }
    }

    fn take_run_next(&self) -> Option<TaskRef> {
        let task = self.run_next.take()?;
        let streak = self.run_next_streak.get() + 1;
        if streak > RUN_NEXT_STREAK && !self.local.borrow().is_empty() {
            // Let the others run: the woken task waits its turn.
            self.run_next_streak.set(0);
            let mut local = self.local.borrow_mut();
            local.push_back(task);
            return local.pop_front();
        }
        self.run_next_streak.set(streak);
        Some(task)
    }

    /// The slow path: inbox, timers, the global queue, stealing; then spin,
    /// then sleep. Returns None when the worker should exit.
    fn find_work(&self) -> Option<TaskRef> {
        // No task runs from here on (see `run_task`).
        self.counters().running.store(0, Ordering::Release);
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) {
                self.stop_spinning(false);
                return self.next_task_in_shutdown();
            }
            self.attend_if_asked();
            if let Some(task) = self.poll_sources() {
                self.stop_spinning(true);
                return Some(task);
            }
            if !self.spinning.get() && self.work_expected_soon() && self.start_spinning() {
                // Between looks, yield the CPU rather than spin on it: the
                // thread that will hand us work (a syscall thread finishing
                // a job, another worker) may share this CPU. Alone on it,
                // the yield returns at once; on a busy CPU it may last a
                // time slice, hence the time bound (SPIN_TIME).
                let start = Instant::now();
                for _ in 0..SPIN_ROUNDS {
                    std::thread::yield_now();
                    if self.has_shared_work() || start.elapsed() >= SPIN_TIME {
                        break;
                    }
                }
                continue;
            }
            self.stop_spinning(false);
            self.sleep();
        }
    }

    /// One look at every source of work, in order.
    ///
    /// This worker's ready sockets are looked at (a non-blocking
    /// `epoll_wait`) only when the alternative is taking work from
    /// elsewhere, so that its own coroutines come first. With nothing
    /// elsewhere the look is skipped: the sleep that follows is an
    /// `epoll_wait` that returns at once if a socket is ready, and looking
    /// first would cost a server a second system call every time it runs
    /// out of work.
    fn poll_sources(&self) -> Option<TaskRef> {
        self.drain_inbox();
        self.fire_timers();
        if let Some(task) = self.pop_ready() {
            return Some(task);
        }
        if !self.has_shared_work() {
            return None;
        }
        self.poll_io();
        self.pop_ready()
            .or_else(|| self.steal_global())
            .or_else(|| self.steal_others())
    }

    pub(super) fn poller(&self) -> &Poller {
        &self.shared.workers[self.index].poller
    }

    /// Wakes the coroutines whose fds are ready, without blocking.
    fn poll_io(&self) {
        let poller = self.poller();
        if poller.has_registrations() {
            poller.poll(Some(Duration::ZERO));
            bump(&self.counters().polls);
        }
    }

    /// The next task to run once the runtime is shutting down, or None when
    /// every task homed here has finished and the worker may exit.
    ///
    /// Tasks that never started are dropped, not run (their `JoinHandle`s
    /// get `Cancelled`). Started tasks are cancelled once, all together, and
    /// then run as usual — woken by the inbox and by timers — until they have
    /// unwound; a destructor that sleeps or waits on another worker while
    /// unwinding is waited for without spinning. A coroutine that catches
    /// `Cancelled` and parks for good again, or never reaches a park point,
    /// keeps its worker (and so the runtime's drop) waiting.
    fn next_task_in_shutdown(&self) -> Option<TaskRef> {
        // In a forked child the "shutdown" is fork.rs marking the parent's
        // runtime dead: run nothing of it, not even its unwinding.
        super::fork::end_if_forked_copy(&self.shared);
        if !self.cancelled_all.replace(true) {
            let live = self.me().live.lock();
            for &task in &live.0 {
                // SAFETY: live tasks are kept alive (see `live`).
                let task = unsafe { &*task };
                task.cancelled.store(true, Ordering::Release);
                if let Some(task) = task.try_claim_parked() {
                    self.local.borrow_mut().push_back(task);
                }
            }
        }
        loop {
            while let Some(task) = self.fresh.pop() {
                drop_unstarted(task);
            }
            drain_unstarted(&self.shared.injector);
            self.drain_inbox();
            self.fire_timers();
            self.attend_if_asked();
            let next = self
                .run_next
                .take()
                .or_else(|| self.local.borrow_mut().pop_front());
            if next.is_some() {
                return next;
            }
            if self.me().live.lock().0.is_empty() {
                return None;
            }
            self.sleep_in_shutdown();
        }
    }

    /// Sleeps until a wake reaches the inbox or the next timer is due.
    fn sleep_in_shutdown(&self) {
        let inbox = &self.shared.workers[self.index].inbox;
        self.sleep_unless(|| !inbox.is_empty());
    }

    /// Moves wakes from other threads to the local queue; returns how many.
    fn drain_inbox(&self) -> usize {
        let inbox = &self.shared.workers[self.index].inbox;
        if inbox.is_empty() {
            return 0;
        }
        let mut moved = 0;
        let mut local = self.local.borrow_mut();
        loop {
            match inbox.steal() {
                Steal::Success(task) => {
                    local.push_back(task);
                    moved += 1;
                }
                Steal::Retry => continue,
                Steal::Empty => return moved,
            }
        }
    }

    /// Wakes the tasks whose deadline has passed; returns how many.
    fn fire_timers(&self) -> usize {
        if self.timers.borrow().len() == 0 {
            return 0;
        }
        self.fire_timers_at(Instant::now())
    }

    /// Wakes the tasks whose deadline is `now` or earlier; returns how many.
    fn fire_timers_at(&self, now: Instant) -> usize {
        let mut timers = self.timers.borrow_mut();
        let mut fired = 0;
        while let Some(task) = timers.pop_due(now) {
            // Mark first: only this thread reads it, after resuming the task.
            task.timed_out.set(true);
            if let Some(task) = task.try_claim_parked() {
                self.local.borrow_mut().push_back(task);
                fired += 1;
            } else {
                // An unpark won the race; the task will see it was not a timeout.
                task.timed_out.set(false);
            }
        }
        fired
    }
}

/// Starts loading what the next tasks in `local` will touch first when they
/// run: the stack of the next one (see `Coroutine::prefetch`) and the task
/// record of the one after, whose stack pointer the next call reads. With
/// thousands of parked connections these are cold, and a miss taken while
/// another task runs is hidden; taken at the switch, it was the largest
/// user-space cost of a request.
#[inline]
pub(super) fn prefetch_ahead(local: &VecDeque<TaskRef>) {
    if let Some(next) = local.front() {
        // SAFETY: tasks in `local` are started tasks homed on this worker,
        // so this thread alone touches their coroutines, and none of them
        // is running.
        if let Some(coroutine) = unsafe { (*next.coroutine.get()).as_ref() } {
            coroutine.prefetch();
        }
    }
    if let Some(after) = local.get(1) {
        prefetch_record(after);
    }
}

/// Starts loading the part of a task's record that resuming it reads (its
/// coroutine's stack pointer and parent slot).
#[inline]
fn prefetch_record(task: &Task) {
    // SAFETY: a prefetch never faults; the address is only computed, not
    // read through. The coroutine's fields may straddle two cache lines.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let fields = task.coroutine.get() as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(fields);
        _mm_prefetch::<_MM_HINT_T0>(fields.wrapping_add(64));
    }
}

/// Drops a task that never started; its body delivers `Cancelled` to the
/// `JoinHandle`. A panic in a capture's `Drop` is reported, never unwinds
/// the caller.
fn drop_unstarted(task: TaskRef) {
    // An unstarted task is owned by the queue entry we just took.
    if drop_unrun(&task, None) {
        task.shared
            .counters
            .dropped_unrun
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// A pointer to the task, moved into its own coroutine's closure.
struct TaskPtr(*const Task);
// SAFETY: the task outlives its coroutine (it owns it), and the pointer is
// dereferenced only on the thread running that coroutine.
unsafe impl Send for TaskPtr {}

/// Aborts the process if a worker loop unwinds. Nothing of a task runs
/// outside its catch-all body, so this is defence in depth: a worker that
/// unwound would drop its queues, and the last reference to a started task
/// could then be dropped on another thread, unwinding its stack there —
/// which would move `!Send` values across threads (the home-worker rule).
struct AbortIfUnwinding {
    index: usize,
}

impl Drop for AbortIfUnwinding {
    fn drop(&mut self) {
        if std::thread::panicking() {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "fibra: worker {} is unwinding out of its scheduler loop; aborting, because \
                 its started coroutines cannot move to another thread",
                self.index
            );
            std::process::abort();
        }
    }
}

/// Drops the tasks left in a global injector after the workers exited.
pub(crate) fn drain_unstarted(injector: &Injector<TaskRef>) {
    loop {
        match injector.steal() {
            Steal::Success(task) => drop_unstarted(task),
            Steal::Retry => continue,
            Steal::Empty => return,
        }
    }
}

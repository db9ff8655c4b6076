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
//! move; an empty one can (see DESIGN, "Home worker").
//!
//! # Choosing the next task
//!
//! Every 61st pick (Go's number) first drains the inbox, fires due timers and
//! takes a task from the global injector, so none of them starves. Otherwise:
//! `run_next`, then `local` and `fresh` in turns (one pass over the started
//! tasks, then as many fresh ones; so both progress under a flood of spawns,
//! and the run queue stays in spawn order, which keeps switches friendly to
//! the TLB), then the inbox, timers, the injector, and stealing from the
//! other workers.
//!
//! # Timers and I/O beside busy coroutines
//!
//! Picks are not equal in length: a coroutine may compute for milliseconds
//! between two `yield_now` calls, and 61 such picks kept a due timer (or a
//! ready socket) waiting 55–69 ms. So besides the fairness check, a worker
//! looks at the clock about every `CLOCK_PERIOD` (250 µs): it counts picks
//! down, and at each look it measures how long the last picks took and
//! sets the countdown so that the next look comes after about that much
//! time — every pick when picks take a millisecond, every 61st when they
//! take nanoseconds. A look fires due timers and, if the poller has fds
//! and was not polled for `IO_POLL_PERIOD` (500 µs), polls it without
//! blocking. With no timer armed and no fd registered a look reads no
//! clock (the yield of two coroutines pays one counter decrement per
//! pick); arming a timer makes the next pick look. Go checks timers on
//! every schedule and leaves sockets to sysmon's 10 ms netpoll; reading
//! the clock on every pick here would cost more than the yield itself.
//!
//! # Idling without lost wakeups or busy waiting
//!
//! A worker with nothing to do polls the shared sources for up to 50 µs if
//! work is expected within microseconds (a syscall-thread job in flight,
//! another worker busy; at most half the workers poll at once), then
//! sleeps: it enters the idle list and
//! sets its `sleeping` flag, re-checks every source, and sleeps in its
//! poller's `epoll_wait` (src/io/poller.rs) until an fd it watches is ready,
//! its next timer deadline passes, or another thread writes its eventfd.
//! Work that any worker could run (a spawn) wakes one idle worker, and only
//! when no worker is spinning; a wake for a started task wakes its home
//! worker if it sleeps. Each side writes, fences (SeqCst), then reads the
//! other side's word, and the eventfd stays readable for a wake that lands
//! between the re-check and the `epoll_wait`: no wake is lost and no one
//! polls.
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
//! the stacks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal, Stealer, Worker as Deque};

use crate::coroutine::CoroutineResult;
use crate::io::Poller;

use super::Shared;
use super::spawn::drop_unrun;
use super::task::{NO_HOME, Suspend, Task, TaskCoroutine, TaskYielder};
use super::timer::Timers;

/// Picks between fairness checks of the inbox, timers and global queue.
const FAIRNESS_INTERVAL: u32 = 61;
/// A worker that has begun no pair of turns while another began this many
/// is taken to be stuck in a long pick: fresh tasks are not left to it.
const PROGRESS_PAIRS: usize = 4;
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
    pub inbox: Injector<Arc<Task>>,
    pub stealer: Stealer<Arc<Task>>,
    pub sleeping: AtomicBool,
    /// The worker's epoll instance: where it sleeps, and where the fds its
    /// coroutines wait on are registered.
    pub poller: Arc<Poller>,
    /// Started tasks queued when the worker began its current pair of
    /// turns, and how many pairs it has begun: what other workers read to
    /// place fresh tasks (`Worker::take_fresh`).
    queued: AtomicUsize,
    pairs: AtomicUsize,
}

impl WorkerShared {
    pub fn new(stealer: Stealer<Arc<Task>>) -> std::io::Result<WorkerShared> {
        Ok(WorkerShared {
            inbox: Injector::new(),
            stealer,
            sleeping: AtomicBool::new(false),
            poller: Arc::new(Poller::new()?),
            queued: AtomicUsize::new(0),
            pairs: AtomicUsize::new(0),
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
    /// The task being resumed right now (null in the scheduler loop).
    pub current: Cell<*const Task>,
    run_next: Cell<Option<Arc<Task>>>,
    run_next_streak: Cell<u32>,
    local: RefCell<VecDeque<Arc<Task>>>,
    pub fresh: Deque<Arc<Task>>,
    pub timers: RefCell<Timers>,
    /// Started, unfinished tasks homed here (raw: each is kept alive by the
    /// reference its queue entry, its running worker or its PARKED state holds).
    live: RefCell<Vec<*const Task>>,
    tick: Cell<u32>,
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
    local_left: Cell<usize>,
    fresh_left: Cell<usize>,
    spinning: Cell<bool>,
    /// Each other worker's `pairs` as last seen changing, and this
    /// worker's own `pairs` when it saw that.
    pairs_seen: Vec<Cell<(usize, usize)>>,
}

thread_local! {
    static WORKER: Cell<*const Worker> = const { Cell::new(std::ptr::null()) };
}

/// The worker running on this thread, if any.
///
/// `#[inline(never)]` so that the compiler re-reads the thread-local on every
/// call instead of caching its address across a switch (DESIGN, "Home
/// worker"); coroutines do not migrate today, but this keeps the runtime's
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
    unsafe { worker.as_ref()?.current.get().as_ref() }
}

/// Puts a task that was just moved to RUNNING by a wake on a run queue of its
/// home worker.
pub(crate) fn schedule(task: Arc<Task>) {
    let home = task.home.load(Ordering::Relaxed);
    debug_assert_ne!(home, NO_HOME, "only started tasks park");
    if let Some(worker) = current_worker()
        && worker.index == home
        && Arc::ptr_eq(&worker.shared, &task.shared)
    {
        if worker.current.get().is_null() {
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

/// Queues a task that has never run, on this worker's `fresh` deque when
/// called on a worker of `shared`, else on the global injector; then wakes an
/// idle worker if none is looking for work.
pub(crate) fn submit_fresh(shared: &Arc<Shared>, task: Arc<Task>) {
    match current_worker() {
        Some(worker) if Arc::ptr_eq(&worker.shared, shared) => worker.fresh.push(task),
        _ => shared.injector.push(task),
    }
    notify_idle(shared);
}

/// Wakes one idle worker if there is one and none is spinning.
pub(crate) fn notify_idle(shared: &Shared) {
    fence(Ordering::SeqCst);
    if shared.n_spinning.load(Ordering::SeqCst) != 0 || shared.n_idle.load(Ordering::SeqCst) == 0 {
        return;
    }
    let woken = {
        let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        let woken = idle.pop();
        shared.n_idle.store(idle.len(), Ordering::SeqCst);
        woken
    };
    if let Some(index) = woken {
        shared.workers[index].wake();
    }
}

impl Worker {
    pub fn new(index: usize, shared: Arc<Shared>, fresh: Deque<Arc<Task>>) -> Worker {
        let n_workers = shared.workers.len();
        Worker {
            index,
            shared,
            current: Cell::new(std::ptr::null()),
            run_next: Cell::new(None),
            run_next_streak: Cell::new(0),
            local: RefCell::new(VecDeque::new()),
            fresh,
            timers: RefCell::new(Timers::default()),
            live: RefCell::new(Vec::new()),
            tick: Cell::new(0),
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
        WORKER.with(|w| w.set(self as *const Worker));
        while let Some(task) = self.next_task() {
            self.run_task(task);
        }
        self.timers.borrow_mut().clear();
        self.poller().close();
        WORKER.with(|w| w.set(std::ptr::null()));
    }

    fn run_task(&self, task: Arc<Task>) {
        if task.home.load(Ordering::Relaxed) == NO_HOME {
            task.home.store(self.index, Ordering::Relaxed);
            let mut live = self.live.borrow_mut();
            task.live_slot.set(live.len());
            live.push(Arc::as_ptr(&task));
        }
        // SAFETY: this is the task's home worker, the only thread that
        // touches its coroutine once it has started; no other reference to
        // the coroutine exists while it runs.
        let slot = unsafe { &mut *task.coroutine.get() };
        if slot.is_none() {
            *slot = self.start_task(&task);
        }
        self.current.set(Arc::as_ptr(&task));
        let outcome = match slot {
            Some(coroutine) => coroutine.resume(()),
            None => CoroutineResult::Return(()),
        };
        self.current.set(std::ptr::null());
        match outcome {
            CoroutineResult::Yield(Suspend::Yield) => self.local.borrow_mut().push_back(task),
            // The PARKED state owns this reference now (see task.rs).
            CoroutineResult::Yield(Suspend::Park) => std::mem::forget(task),
            CoroutineResult::Return(()) => self.finish(&task),
        }
    }

    /// Binds a stack from this thread's pool to a task that runs for the
    /// first time and wraps its body in a coroutine. If no stack can be
    /// had, the body is dropped here and the `JoinHandle` gets the error.
    #[cold]
    fn start_task(&self, task: &Arc<Task>) -> Option<TaskCoroutine> {
        // SAFETY: home worker; the body is taken once, before the first run.
        let body = unsafe { (*task.body.get()).take() }?;
        let stack = match crate::stack::acquire(task.stack_size) {
            Ok(stack) => stack,
            Err(error) => {
                drop_unrun(body, Some((task, error)));
                return None;
            }
        };
        let task_ptr = TaskPtr(Arc::as_ptr(task));
        let entry = move |yielder: &TaskYielder, ()| {
            let task_ptr = task_ptr;
            // SAFETY: see TaskPtr; the yielder lives on this stack until the
            // closure returns, and is used only while the task runs.
            let task = unsafe { &*task_ptr.0 };
            task.yielder.set(yielder as *const TaskYielder);
            body.run(task);
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
        drop(unsafe { (*task.coroutine.get()).take() });
        let slot = task.live_slot.replace(usize::MAX);
        let mut live = self.live.borrow_mut();
        if slot < live.len() {
            live.swap_remove(slot);
            if let Some(&moved) = live.get(slot) {
                // SAFETY: live tasks are kept alive (see `live`).
                unsafe { (*moved).live_slot.set(slot) };
            }
        }
    }

    fn push_run_next(&self, task: Arc<Task>) {
        if let Some(previous) = self.run_next.replace(Some(task)) {
            self.local.borrow_mut().push_back(previous);
        }
    }

    fn next_task(&self) -> Option<Arc<Task>> {
        if self.shared.shutdown.load(Ordering::Relaxed) {
            return self.next_task_in_shutdown();
        }
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        if tick.is_multiple_of(FAIRNESS_INTERVAL) {
            self.drain_inbox();
            self.fire_timers();
            self.poll_io();
            if let Some(task) = self.steal_global() {
                return Some(task);
            }
        }
        let left = self.clock_left.get();
        if left > 1 {
            self.clock_left.set(left - 1);
        } else {
            self.look_at_clock();
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
    #[inline(never)]
    fn look_at_clock(&self) {
        let watching_io = self.poller().has_registrations();
        if self.timers.borrow().len() == 0 && !watching_io {
            self.clock_interval.set(0);
            self.clock_left.set(FAIRNESS_INTERVAL);
            return;
        }
        let now = Instant::now();
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

    fn take_run_next(&self) -> Option<Arc<Task>> {
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

    /// A started or fresh task. The two kinds take turns, so that both make
    /// progress under a flood of spawns: a turn of `local` runs the started
    /// tasks queued when it began (one pass), then a turn of `fresh` starts
    /// as many new ones (at least one).
    ///
    /// Turns, not one of each alternately: alternating per pick merged each
    /// round's newly started tasks between the old ones, which after a few
    /// rounds left the run queue in a bit-reversed order of their stacks'
    /// addresses; every switch then missed the TLB (≈ 450 ns per yield with
    /// 10,000 runnable here, against ≈ 25 ns in address order). With turns,
    /// newly started tasks join the queue in spawn order.
    fn pop_ready(&self) -> Option<Arc<Task>> {
        self.run_next_streak.set(0);
        for _ in 0..2 {
            if self.local_left.get() > 0 {
                self.local_left.set(self.local_left.get() - 1);
                let mut local = self.local.borrow_mut();
                if let Some(task) = local.pop_front() {
                    prefetch_ahead(&local);
                    return Some(task);
                }
                self.local_left.set(0);
            }
            if self.fresh_left.get() > 0 {
                self.fresh_left.set(self.fresh_left.get() - 1);
                if let Some(task) = self.take_fresh() {
                    return Some(task);
                }
                self.fresh_left.set(0);
            }
            // Both turns are over: begin the next pair.
            let started = self.local.borrow().len();
            self.local_left.set(started);
            self.fresh_left.set(started.max(1));
            self.publish_pair(started);
        }
        None
    }

    /// Tells other workers how many started tasks this one has queued at
    /// the start of a pair of turns, and notes how far they have got.
    #[inline]
    fn publish_pair(&self, started: usize) {
        let workers = &self.shared.workers;
        if workers.len() == 1 {
            return;
        }
        let me = &workers[self.index];
        me.queued.store(started, Ordering::Relaxed);
        let mine = me.pairs.load(Ordering::Relaxed) + 1;
        me.pairs.store(mine, Ordering::Relaxed);
        for (seen, other) in self.pairs_seen.iter().zip(workers) {
            let theirs = other.pairs.load(Ordering::Relaxed);
            if theirs != seen.get().0 {
                seen.set((theirs, mine));
            }
        }
    }

    /// A fresh task to start in a fresh turn, placed so that a fan-out
    /// spreads over the workers — a started task never moves, so where it
    /// starts is where it will run:
    ///
    /// - a worker with started work queued leaves fresh tasks to another
    ///   worker that is idle (and wakes it: it steals from `fresh`), or
    ///   that has fewer started tasks queued and is making progress (it
    ///   began a pair of turns during this one's last `PROGRESS_PAIRS`; a
    ///   worker stuck in a long pick, or not given a CPU, is not waited
    ///   for long). Without this the worker
    ///   that spawned a fan-out started most of it before the others had
    ///   stolen any (a 127/73 split of 200 CPU-bound coroutines);
    /// - with its own `fresh` empty, it takes a batch from another worker's
    ///   `fresh` or from the global queue, so that a busy worker keeps
    ///   sharing a fan-out instead of waiting until it runs dry.
    #[inline]
    fn take_fresh(&self) -> Option<Arc<Task>> {
        if self.shared.workers.len() == 1 {
            return self.fresh.pop();
        }
        self.take_fresh_shared()
    }

    /// `take_fresh` with other workers to share with.
    #[inline(never)]
    fn take_fresh_shared(&self) -> Option<Arc<Task>> {
        let queued = self.local.borrow().len();
        if queued > 0 && self.another_should_start_fresh(queued) {
            return None;
        }
        if let Some(task) = self.fresh.pop() {
            return Some(task);
        }
        if let Some(task) = self.steal_others() {
            return Some(task);
        }
        if self.shared.injector.is_empty() {
            return None;
        }
        self.steal_global()
    }

    /// Whether another worker should start the next fresh task instead of
    /// this one, which has `queued` started tasks waiting (see
    /// `take_fresh`). Looks only while some fresh task exists.
    fn another_should_start_fresh(&self, queued: usize) -> bool {
        let shared = &self.shared;
        let others_fresh = || {
            shared
                .workers
                .iter()
                .enumerate()
                .any(|(i, w)| i != self.index && !w.stealer.is_empty())
        };
        if self.fresh.is_empty() && !others_fresh() && shared.injector.is_empty() {
            return false;
        }
        if shared.n_idle.load(Ordering::Relaxed) > 0 {
            notify_idle(shared);
            return true;
        }
        let mine = shared.workers[self.index].pairs.load(Ordering::Relaxed);
        shared.workers.iter().enumerate().any(|(i, other)| {
            let (_, seen_at) = self.pairs_seen[i].get();
            i != self.index
                && other.queued.load(Ordering::Relaxed) + 1 < queued
                && mine - seen_at <= PROGRESS_PAIRS
        })
    }

    /// The slow path: inbox, timers, the global queue, stealing; then spin,
    /// then sleep. Returns None when the worker should exit.
    fn find_work(&self) -> Option<Arc<Task>> {
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) {
                self.stop_spinning(false);
                return self.next_task_in_shutdown();
            }
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
    fn poll_sources(&self) -> Option<Arc<Task>> {
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

    fn poller(&self) -> &Poller {
        &self.shared.workers[self.index].poller
    }

    /// Wakes the coroutines whose fds are ready, without blocking.
    fn poll_io(&self) {
        let poller = self.poller();
        if poller.has_registrations() {
            poller.poll(Some(Duration::ZERO));
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
    fn next_task_in_shutdown(&self) -> Option<Arc<Task>> {
        if !self.cancelled_all.replace(true) {
            let live: Vec<*const Task> = self.live.borrow().clone();
            for task in live {
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
            let next = self
                .run_next
                .take()
                .or_else(|| self.local.borrow_mut().pop_front());
            if next.is_some() {
                return next;
            }
            if self.live.borrow().is_empty() {
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

    fn steal_global(&self) -> Option<Arc<Task>> {
        loop {
            match self.shared.injector.steal_batch_and_pop(&self.fresh) {
                Steal::Success(task) => return Some(task),
                Steal::Retry => continue,
                Steal::Empty => return None,
            }
        }
    }

    fn steal_others(&self) -> Option<Arc<Task>> {
        let workers = &self.shared.workers;
        let n = workers.len();
        for offset in 1..n {
            let victim = &workers[(self.index + offset) % n];
            if victim.stealer.is_empty() {
                continue;
            }
            loop {
                match victim.stealer.steal_batch_and_pop(&self.fresh) {
                    Steal::Success(task) => return Some(task),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
        None
    }

    /// Whether a source this worker could take from has work.
    fn has_shared_work(&self) -> bool {
        let shared = &self.shared;
        !shared.workers[self.index].inbox.is_empty()
            || !shared.injector.is_empty()
            || shared
                .workers
                .iter()
                .enumerate()
                .any(|(i, w)| i != self.index && !w.stealer.is_empty())
            || shared.shutdown.load(Ordering::Acquire)
    }

    /// Whether work is likely to arrive within microseconds, so that
    /// polling for it beats a sleep and a wake: a syscall thread is running
    /// a job for a coroutine, or another worker is busy (it may spawn or
    /// wake). Socket readiness is not a reason: the sleep is `epoll_wait`,
    /// which wakes on it directly, and polling for it would cost a server
    /// CPU on every idle moment.
    fn work_expected_soon(&self) -> bool {
        self.shared.blocking.has_jobs_in_flight()
            || self.shared.n_idle.load(Ordering::Relaxed) + 1 < self.shared.workers.len()
    }

    /// Becomes a spinning worker unless half the workers already spin.
    fn start_spinning(&self) -> bool {
        let shared = &self.shared;
        let limit = shared.workers.len().div_ceil(2);
        let spinning = shared.n_spinning.load(Ordering::SeqCst);
        if spinning >= limit
            || shared
                .n_spinning
                .compare_exchange(spinning, spinning + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return false;
        }
        self.spinning.set(true);
        true
    }

    /// Stops spinning. The last spinner to find work wakes another idle
    /// worker, so that parallelism ramps up with the work (as Go does); one
    /// that found nothing wakes nobody, or idle workers would wake each other
    /// in a circle.
    fn stop_spinning(&self, found_work: bool) {
        if self.spinning.replace(false)
            && self.shared.n_spinning.fetch_sub(1, Ordering::SeqCst) == 1
            && found_work
        {
            notify_idle(&self.shared);
        }
    }

    /// Sleeps until woken or until the next timer deadline.
    fn sleep(&self) {
        let shared = &self.shared;
        {
            let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
            if !idle.contains(&self.index) {
                idle.push(self.index);
            }
            shared.n_idle.store(idle.len(), Ordering::SeqCst);
        }
        self.sleep_unless(|| self.has_shared_work() || !self.fresh.is_empty());
        let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|&i| i != self.index);
        shared.n_idle.store(idle.len(), Ordering::SeqCst);
    }

    /// The one place a worker thread sleeps in the kernel: publishes
    /// `sleeping`, then (after a SeqCst fence, so a waker that pushed first
    /// is seen here, and one that pushes later sees `sleeping`) sleeps in
    /// `epoll_wait` until woken, an fd is ready or the next timer deadline,
    /// unless a timer is already due or `work_waiting()` says there is
    /// something to do. Coroutines whose fds became ready are queued.
    fn sleep_unless(&self, work_waiting: impl Fn() -> bool) {
        // An idle moment is when this thread gives back the deep pages of
        // the stacks it pooled (at most every few tens of ms; see
        // src/stack/pool.rs); if one is pending, wake for it.
        let trim = crate::stack::trim_idle_cache(Instant::now());
        let me = &self.shared.workers[self.index];
        me.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let now = Instant::now();
        let timer = self.timers.borrow_mut().next_deadline();
        let deadline = match (timer, trim) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let due = timer.is_some_and(|d| d <= now);
        if !due && !work_waiting() {
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            self.poller().poll(timeout);
        }
        me.sleeping.store(false, Ordering::SeqCst);
    }
}

/// Starts loading what the next tasks in `local` will touch first when they
/// run: the stack of the next one (see `Coroutine::prefetch`) and the task
/// record of the one after, whose stack pointer the next call reads. With
/// thousands of parked connections these are cold, and a miss taken while
/// another task runs is hidden; taken at the switch, it was the largest
/// user-space cost of a request.
#[inline]
fn prefetch_ahead(local: &VecDeque<Arc<Task>>) {
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

/// Drops a task that never started; its closure's `ResultSender` delivers
/// `Cancelled` to the `JoinHandle`. A panic in a capture's `Drop` is
/// reported, never unwinds the caller.
fn drop_unstarted(task: Arc<Task>) {
    // SAFETY: an unstarted task is owned by the queue entry we just took.
    if let Some(body) = unsafe { (*task.body.get()).take() } {
        drop_unrun(body, None);
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
pub(crate) fn drain_unstarted(injector: &Injector<Arc<Task>>) {
    loop {
        match injector.steal() {
            Steal::Success(task) => drop_unstarted(task),
            Steal::Retry => continue,
            Steal::Empty => return,
        }
    }
}

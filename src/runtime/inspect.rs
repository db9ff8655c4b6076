//! What the workers tell observers: dumps, stall ends, metrics, and what
//! the watchdog may read of a running task (src/observe has the rest).
//!
//! # How a dump gets each parked coroutine's backtrace
//!
//! A parked coroutine's stack is suspended at a known place: the switch in
//! `park_task_raw`. Rather than walk a stack that is not running (which
//! needs an unwinder that starts from saved registers), its home worker
//! resumes it with `Task::capture` set; the park code, seeing the flag
//! after its switch returns, records its own backtrace into the worker's
//! buffer (`backtrace::trace_unsynchronized`: the unwinder walks the
//! coroutine's frames from where it runs, then on through the entry
//! trampoline's CFI), clears the flag and switches back with
//! `Suspend::Captured`. Its state word is never touched, so every race
//! resolves as if the dump had not happened:
//!
//! - a wake that lands meanwhile (another thread moves it PARKED →
//!   RUNNING and queues it in this worker's inbox) stays valid: the task
//!   switches back after the capture and is resumed from the queue later,
//!   when it returns from its park as woken;
//! - cancellation is such a wake with a flag; the capture path has no
//!   cancellation point;
//! - timers fire and queued tasks run only in this worker's loop, which is
//!   busy resuming the captured task: nothing else runs on its thread;
//! - only tasks in state PARKED are resumed, and only between picks, when
//!   no task of this worker runs: a PARKED task is then always suspended in
//!   `park_task_raw`;
//! - a worker held by a coroutine that never parks cannot answer: after
//!   `ANSWER_WAIT` the dump gives up on it (a compare-and-swap on the
//!   request decides who answers, so an answer that comes late is dropped)
//!   and lists its tasks from the `live` list under its lock, without
//!   backtraces; a worker that has exited is answered for the same way;
//! - a dump called from a coroutine runs on a syscall thread, so that the
//!   caller's own worker is free to answer.
//!
//! The capture runs on the coroutine's stack and touches pages below its
//! park frame (the unwinder's context is a few KiB): those pages are given
//! back to the kernel before the task parks again (`MADV_DONTNEED` below
//! the stack pointer), so a dump does not grow the RSS of 100,000 parked
//! coroutines. The alternative, walking a suspended stack from the
//! worker's stack, needs an unwinder that starts from a saved register set
//! (libgcc's cannot); the capture costs a switch pair and a walk per task.
//!
//! Coroutines not started are listed from this worker's `fresh` deque
//! (popped and pushed back in order) and from the global queue.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_deque::Steal;

use crate::coroutine::CoroutineResult;
use crate::observe::dump::{RecordState, Request, TaskRecord, WorkerAnswer};
use crate::observe::metrics::{Metrics, Sources};
use crate::observe::{ATTEND_DUMP, ATTEND_STALL_END, Dump, ParkReason, REASONS, WorkerWatch};

use super::placement::notify_idle;
use super::task::{PARKED, Suspend, Task};
use super::worker::{Worker, WorkerShared, current_worker};
use super::{Shared, in_coroutine, suspend};

/// How long a dump waits for a worker to start answering before it lists
/// that worker's coroutines itself, without backtraces.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// Frames recorded per backtrace.
const MAX_FRAMES: usize = 48;

// ---------------------------------------------------------------------------
// Metrics and what the watchdog reads

/// `Runtime::metrics()`: sums the counters, and counts the parked tasks of
/// each worker by reason from its `live` list (under its lock: the worker
/// takes it only when a task starts or finishes).
pub(crate) fn metrics(shared: &Shared) -> Metrics {
    Metrics::sum(Sources {
        workers: shared
            .workers
            .iter()
            .map(|w| {
                let counters = &w.watch.counters;
                let mut parked = [0u64; REASONS];
                let live = w.live.lock();
                let running = counters.running.load(Ordering::Acquire);
                let mut is_running = false;
                for &task in &live.0 {
                    // SAFETY: live tasks are kept alive while the lock is
                    // held (see `WorkerShared::live`); only atomics are read.
                    let task = unsafe { &*task };
                    if task.state.load(Ordering::Acquire) == PARKED {
                        parked[task.park_reason.load(Ordering::Relaxed) as usize % REASONS] += 1;
                    } else if task as *const Task as usize == running {
                        is_running = true;
                    }
                }
                (counters, is_running, parked)
            })
            .collect(),
        runtime: &shared.counters,
        blocking: shared.blocking.stats(),
    })
}

impl Shared {
    pub(crate) fn stall_threshold(&self) -> Option<Duration> {
        self.stall_threshold
    }

    pub(crate) fn dump_signal(&self) -> Option<i32> {
        self.dump_signal
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Wakes worker `index` if it sleeps (so that it sees a request).
    pub(crate) fn wake_worker(&self, index: usize) {
        if let Some(worker) = self.workers.get(index) {
            worker.wake();
        }
    }

    /// Each worker's observer slots, and whether it sleeps in `epoll_wait`.
    pub(crate) fn worker_watches(&self) -> impl Iterator<Item = (&WorkerWatch, bool)> {
        self.workers
            .iter()
            .map(|w| (&w.watch, w.sleeping.load(Ordering::SeqCst)))
    }
}

/// The coroutine holding a worker, as the watchdog reports it.
pub(crate) struct StallProbe {
    pub id: u64,
    pub name: Option<Arc<str>>,
}

/// The id and name of the task worker `index` is running, if it is still
/// the one at address `running` (as read from `counters.running`).
pub(crate) fn probe_stall(shared: &Shared, index: usize, running: usize) -> Option<StallProbe> {
    let worker = shared.workers.get(index)?;
    let _live = worker.live.lock();
    if running == 0 || worker.watch.counters.running.load(Ordering::Acquire) != running {
        return None;
    }
    // SAFETY: `running` names a task while the worker resumes it; the
    // worker clears it before `finish` takes the `live` lock we hold, and
    // holds its own reference to the task until after that: so a task
    // still named here under the lock is alive.
    let task = unsafe { &*(running as *const Task) };
    Some(StallProbe {
        id: task.id,
        name: task.name.clone(),
    })
}

// ---------------------------------------------------------------------------
// The worker's side

impl Worker {
    /// Looks at the attention word: one load per pick.
    #[inline(always)]
    pub(super) fn attend_if_asked(&self) {
        if self.counters().attention.load(Ordering::Relaxed) != 0 {
            self.attend();
        }
    }

    /// Answers dump requests and reports the end of a stall.
    #[cold]
    #[inline(never)]
    pub(super) fn attend(&self) {
        let watch = &self.me().watch;
        let bits = watch
            .counters
            .attention
            .fetch_and(!(ATTEND_DUMP | ATTEND_STALL_END), Ordering::AcqRel);
        if bits & ATTEND_STALL_END != 0 {
            crate::observe::watchdog::stall_ended(&watch.stall, Instant::now());
        }
        let requests = std::mem::take(
            &mut *watch
                .dump_requests
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for request in requests {
            if request.begin(self.index) {
                let answer = self.answer_dump();
                request.finish(self.index, answer);
            }
        }
    }

    /// Lists this worker's coroutines with the backtraces of the parked ones.
    fn answer_dump(&self) -> WorkerAnswer {
        // Not running a task while it answers (the watchdog must not take
        // a long dump for a stall).
        self.counters().running.store(0, Ordering::Release);
        let mut answer = WorkerAnswer::new(self.index, true);
        let mut stacks: HashMap<Vec<usize>, u32> = HashMap::new();
        {
            let live = self.me().live.lock();
            answer.tasks.reserve(live.0.len());
            for &task in &live.0 {
                // SAFETY: live tasks are kept alive (see `WorkerShared::live`).
                let task = unsafe { &*task };
                let mut record = record_of(task, Some(self.index), 0);
                if matches!(record.state, RecordState::Parked { .. })
                    && let Some(ips) = self.capture_parked(task)
                {
                    let next = answer.stacks.len() as u32;
                    let index = *stacks.entry(ips).or_insert_with_key(|ips| {
                        answer.stacks.push(ips.clone());
                        next
                    });
                    record.stack = Some(index);
                }
                answer.tasks.push(record);
            }
        }
        let mut fresh = Vec::new();
        while let Some(task) = self.fresh.pop() {
            fresh.push(task);
        }
        for task in fresh {
            answer.tasks.push(unstarted_record(&task));
            self.fresh.push(task);
        }
        answer
    }

    /// Resumes a parked task of this worker so that it records its
    /// backtrace (module docs); None if it recorded nothing.
    fn capture_parked(&self, task: &Task) -> Option<Vec<usize>> {
        // SAFETY: home worker, between picks: no other reference to the
        // coroutine is in use, and a PARKED task is suspended in its park.
        let coroutine = unsafe { (*task.coroutine.get()).as_mut() }?;
        self.capture_ips.borrow_mut().clear();
        self.capture_stack_bottom
            .set(coroutine.stack_bottom().unwrap_or(0));
        task.capture.set(true);
        match coroutine.resume(()) {
            CoroutineResult::Yield(Suspend::Captured) => {}
            _ => unreachable!("a task resumed for a dump switched back without capturing"),
        }
        let ips = self.capture_ips.borrow();
        (!ips.is_empty()).then(|| ips.clone())
    }
}

/// Runs on a parked task's own stack when its worker resumed it for a dump
/// (`Task::capture`): records the backtrace and parks again, as many times
/// as the worker asks, until a real wake resumes it.
#[cold]
#[inline(never)]
pub(super) fn capture_while_parked(task: &Task) {
    loop {
        // A panic here must not unwind through the user's park site.
        let _ = catch_unwind(AssertUnwindSafe(record_backtrace));
        give_back_pages_below_here();
        task.capture.set(false);
        suspend(task, Suspend::Captured);
        if !task.capture.get() {
            return;
        }
    }
}

#[inline(never)]
fn record_backtrace() {
    let Some(worker) = current_worker() else {
        return;
    };
    let mut ips = worker.capture_ips.borrow_mut();
    ips.reserve(MAX_FRAMES);
    // SAFETY: only the Windows dbghelp backend needs the synchronised
    // `trace`; on Linux the unwinder (libgcc's `_Unwind_Backtrace`) may run
    // on several threads at once, and nothing here allocates (reserved).
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            ips.push(frame.ip() as usize);
            ips.len() < MAX_FRAMES
        });
    }
}

/// Gives back to the kernel the pages of this stack below the caller's
/// frame, which the unwinder touched and nothing live uses. A KiB below
/// this frame's local is kept: it covers the rest of this frame and the
/// return address the call to `madvise` pushes (glibc's wrapper is a bare
/// system call that uses no more stack).
#[inline(never)]
fn give_back_pages_below_here() {
    let Some(worker) = current_worker() else {
        return;
    };
    let here = &worker as *const _ as usize;
    let page = crate::stack::page_size();
    let end = here.saturating_sub(1024) & !(page - 1);
    let bottom = worker.capture_stack_bottom.get();
    if bottom != 0 && end > bottom && here - bottom < (1 << 40) {
        // SAFETY: [bottom, end) lies in this coroutine's stack below every
        // live frame (see above): no live data is there, and
        // MADV_DONTNEED on anonymous memory only makes those pages read as
        // zero (fresh) the next time they are touched.
        unsafe {
            libc::madvise(
                bottom as *mut libc::c_void,
                end - bottom,
                libc::MADV_DONTNEED,
            )
        };
    }
}

// ---------------------------------------------------------------------------
// The dumping thread's side

/// `Runtime::dump()`.
pub(crate) fn dump(shared: &Arc<Shared>) -> Dump {
    if in_coroutine() {
        // Our own worker must be free to answer: wait on a syscall thread.
        let shared = Arc::clone(shared);
        return crate::blocking::unblock(move || collect(&shared));
    }
    collect(shared)
}

fn collect(shared: &Arc<Shared>) -> Dump {
    let began = Instant::now();
    crate::observe::clock::advance(began);
    let now_ms = crate::observe::clock::now_ms();
    let request = Arc::new(Request::new(shared.workers.len()));
    for worker in &shared.workers {
        worker
            .watch
            .dump_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&request));
        worker.watch.ask(ATTEND_DUMP);
        worker.wake();
    }
    let mut outside = Vec::new();
    for (index, worker) in shared.workers.iter().enumerate() {
        // A worker that has exited answers nothing more.
        if worker.watch.exited.load(Ordering::SeqCst) && request.abandon(index) {
            outside.push(list_from_outside(worker, index));
        }
    }
    let deadline = began + ANSWER_WAIT;
    let late = request.wait_for_answers(deadline);
    for index in late {
        outside.push(list_from_outside(&shared.workers[index], index));
    }
    let mut answers = request.take_answers();
    answers.extend(outside);
    let mut queued = WorkerAnswer::new(usize::MAX, true);
    let mut taken = Vec::new();
    loop {
        match shared.injector.steal() {
            Steal::Success(task) => taken.push(task),
            Steal::Retry => continue,
            Steal::Empty => break,
        }
    }
    for task in taken {
        queued.tasks.push(unstarted_record(&task));
        shared.injector.push(task);
    }
    if !queued.tasks.is_empty() {
        notify_idle(shared);
    }
    answers.push(queued);
    Dump::assemble(answers, now_ms, shared.workers.len(), began)
}

/// Lists a worker's coroutines from another thread, without backtraces.
fn list_from_outside(worker: &WorkerShared, index: usize) -> WorkerAnswer {
    let mut answer = WorkerAnswer::new(index, false);
    let live = worker.live.lock();
    let running = worker.watch.counters.running.load(Ordering::Acquire);
    for &task in &live.0 {
        // SAFETY: live tasks are kept alive while the lock is held (see
        // `WorkerShared::live`); only their atomics and immutable fields are
        // read here.
        let record = record_of(unsafe { &*task }, Some(index), running);
        answer.tasks.push(record);
    }
    answer.unlisted_not_started = worker.stealer.len();
    answer
}

/// What a dump says of a started task, from its atomics and immutable
/// fields (safe to read on any thread while the task is alive).
fn record_of(task: &Task, worker: Option<usize>, running: usize) -> TaskRecord {
    let state = if running != 0 && running == task as *const Task as usize {
        RecordState::Running
    } else if task.state.load(Ordering::Acquire) == PARKED {
        RecordState::Parked {
            reason: ParkReason::from_u8(task.park_reason.load(Ordering::Relaxed)),
            since_ms: task.parked_at.load(Ordering::Relaxed),
        }
    } else {
        RecordState::Runnable
    };
    TaskRecord {
        id: task.id,
        name: task.name.clone(),
        worker,
        state,
        stack: None,
    }
}

fn unstarted_record(task: &Task) -> TaskRecord {
    TaskRecord {
        id: task.id,
        name: task.name.clone(),
        worker: None,
        state: RecordState::NotStarted,
        stack: None,
    }
}

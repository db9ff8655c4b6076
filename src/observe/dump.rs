//! `Dump`: every live coroutine of a runtime, and where the parked ones
//! wait.
//!
//! # The request protocol
//!
//! A dump posts one `Request` to every worker and waits on its condvar.
//! Each worker's slot goes PENDING → ANSWERING → DONE when the worker
//! answers (src/runtime/inspect.rs records the backtraces), or PENDING →
//! ABANDONED when the dump gives up waiting (a worker held by a coroutine
//! that does not park) or the worker has exited: one compare-and-swap
//! decides, so exactly one side lists that worker's coroutines, and a
//! worker that started answering is always waited for (its answer takes
//! bounded time: it runs only fibra's capture code).
//!
//! # Grouping
//!
//! Workers send each distinct stack once (a list of instruction pointers)
//! and each coroutine names its stack by index. The dump merges the lists,
//! resolves each distinct stack once (`backtrace::resolve`, which reads
//! the debug information of the binary: the first dump pays for loading
//! it), and `Display` prints one group per (state, reason, stack) with a
//! count, as Go's `pprof` `debug=1` goroutine profile does: 100,000
//! coroutines parked at one place print as one group. `{:#}` lists every
//! coroutine instead.
//!
//! The frames of the capture itself are cut from the top of each stack,
//! and the runtime's frames below the coroutine's closure from the bottom.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::ParkReason;

const PENDING: u8 = 0;
const ANSWERING: u8 = 1;
const DONE: u8 = 2;
const ABANDONED: u8 = 3;

/// What a dump learned of one coroutine, before symbolisation.
pub(crate) struct TaskRecord {
    pub id: u64,
    pub name: Option<Arc<str>>,
    pub worker: Option<usize>,
    pub state: RecordState,
    /// Index into its `WorkerAnswer::stacks`.
    pub stack: Option<u32>,
}

#[derive(Clone, Copy)]
pub(crate) enum RecordState {
    Running,
    Runnable,
    Parked { reason: ParkReason, since_ms: u64 },
    NotStarted,
}

/// One worker's part of a dump (or, with `index == usize::MAX`, the
/// coroutines found in the global queue).
pub(crate) struct WorkerAnswer {
    pub index: usize,
    /// Whether the worker answered itself (with backtraces).
    pub answered: bool,
    pub tasks: Vec<TaskRecord>,
    pub stacks: Vec<Vec<usize>>,
    /// Coroutines not started that could not be listed (in the queue of a
    /// worker that did not answer).
    pub unlisted_not_started: usize,
}

impl WorkerAnswer {
    pub fn new(index: usize, answered: bool) -> WorkerAnswer {
        WorkerAnswer {
            index,
            answered,
            tasks: Vec::new(),
            stacks: Vec::new(),
            unlisted_not_started: 0,
        }
    }
}

/// One dump's question to the workers (see the module docs).
pub(crate) struct Request {
    states: Vec<AtomicU8>,
    answers: Mutex<Vec<WorkerAnswer>>,
    changed: Condvar,
}

impl Request {
    pub fn new(workers: usize) -> Request {
        Request {
            states: (0..workers).map(|_| AtomicU8::new(PENDING)).collect(),
            answers: Mutex::new(Vec::with_capacity(workers)),
            changed: Condvar::new(),
        }
    }

    /// Worker `index` starts answering; false if the dump gave up on it.
    pub fn begin(&self, index: usize) -> bool {
        self.states[index]
            .compare_exchange(PENDING, ANSWERING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn finish(&self, index: usize, answer: WorkerAnswer) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers.push(answer);
        self.states[index].store(DONE, Ordering::Release);
        self.changed.notify_all();
    }

    /// The dump gives up on worker `index`; false if it began answering.
    pub fn abandon(&self, index: usize) -> bool {
        self.states[index]
            .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Waits until every worker has answered or been abandoned; at
    /// `deadline`, abandons those that have not begun. Returns the workers
    /// abandoned here.
    pub fn wait_for_answers(&self, deadline: Instant) -> Vec<usize> {
        let mut abandoned = Vec::new();
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let open: Vec<usize> = (0..self.states.len())
                .filter(|&i| matches!(self.states[i].load(Ordering::Acquire), PENDING | ANSWERING))
                .collect();
            if open.is_empty() {
                return abandoned;
            }
            let now = Instant::now();
            if now >= deadline {
                abandoned.extend(open.iter().copied().filter(|&i| self.abandon(i)));
                if open.iter().all(|&i| abandoned.contains(&i)) {
                    return abandoned;
                }
                // Workers that began answering are waited for.
                answers = self
                    .changed
                    .wait(answers)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            answers = self
                .changed
                .wait_timeout(answers, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn take_answers(&self) -> Vec<WorkerAnswer> {
        std::mem::take(&mut *self.answers.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

// ---------------------------------------------------------------------------
// The public dump

/// A coroutine's state at the time of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoroutineState {
    /// Running on its worker (it holds the worker: the dump could not ask
    /// that worker, so no backtrace).
    Running,
    /// Started, ready to run, waiting for its worker.
    Runnable,
    /// Parked, for `reason`, for about `for_` (to within the coarse
    /// clock's step: the watchdog's check interval at worst).
    Parked {
        /// What it waits for.
        reason: ParkReason,
        /// How long it has been parked.
        for_: Duration,
    },
    /// Spawned, not started yet.
    NotStarted,
}

impl fmt::Display for CoroutineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoroutineState::Running => f.write_str("running"),
            CoroutineState::Runnable => f.write_str("runnable"),
            CoroutineState::Parked { reason, for_ } => {
                write!(f, "parked ({reason}) for {}", Seconds(*for_))
            }
            CoroutineState::NotStarted => f.write_str("not started"),
        }
    }
}

/// One frame of a backtrace, symbolised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The demangled function name (without the hash), or `??`.
    pub function: String,
    /// The source file, when the binary has debug information.
    pub file: Option<String>,
    /// The line in `file`.
    pub line: Option<u32>,
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.function)?;
        if let Some(file) = &self.file {
            write!(f, "\n        at {file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
        }
        Ok(())
    }
}

/// Where a parked coroutine waits: its stack from the park call up to its
/// closure, innermost frame first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkStack {
    /// The frames, innermost first.
    pub frames: Vec<Frame>,
}

impl ParkStack {
    /// The innermost frame that is not fibra's or the standard library's:
    /// the user's code that parked (directly or through `fibra::net`, a
    /// lock, a join, ...).
    pub fn site(&self) -> Option<&Frame> {
        self.frames
            .iter()
            .find(|frame| !is_library_frame(&frame.function))
            .or_else(|| self.frames.first())
    }

    /// Resolves instruction pointers and trims the capture's own frames and
    /// the runtime's frames below the coroutine's closure.
    pub(crate) fn resolve(ips: &[usize]) -> ParkStack {
        let mut frames = Vec::with_capacity(ips.len());
        for &ip in ips {
            let before = frames.len();
            backtrace::resolve(ip as *mut std::ffi::c_void, |symbol| {
                frames.push(Frame {
                    function: symbol
                        .name()
                        .map(|name| format!("{name:#}"))
                        .unwrap_or_else(|| "??".to_string()),
                    file: symbol.filename().map(|p| p.display().to_string()),
                    line: symbol.lineno(),
                });
            });
            if frames.len() == before {
                frames.push(Frame {
                    function: format!("?? ({ip:#x})"),
                    file: None,
                    line: None,
                });
            }
        }
        if let Some(last) = frames
            .iter()
            .rposition(|f| f.function.contains("capture_while_parked"))
        {
            frames.drain(..=last);
        }
        // The park primitive's own frames (the public call stays).
        while frames.first().is_some_and(|f| {
            f.function.starts_with("fibra::runtime::park_task")
                || f.function == "fibra::runtime::suspend"
        }) {
            frames.remove(0);
        }
        if let Some(entry) = frames
            .iter()
            .position(|f| f.function.starts_with("<fibra::runtime::spawn::Body"))
        {
            frames.truncate(entry);
            while frames
                .last()
                .is_some_and(|f| is_runtime_wrapper(&f.function))
            {
                frames.pop();
            }
        }
        ParkStack { frames }
    }
}

/// Frames of fibra, the standard library and the unwinder.
fn is_library_frame(function: &str) -> bool {
    let name = function.trim_start_matches('<');
    [
        "fibra::",
        "std::",
        "core::",
        "alloc::",
        "backtrace::",
        "__rust",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

/// The standard library's frames between a coroutine's body and its
/// closure (`catch_unwind` and the closure call).
fn is_runtime_wrapper(function: &str) -> bool {
    let name = function.trim_start_matches('<');
    [
        "std::panic",
        "core::panic",
        "__rust_try",
        "core::ops::function",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

/// One live coroutine in a `Dump`.
#[derive(Debug, Clone)]
pub struct CoroutineInfo {
    id: u64,
    name: Option<Arc<str>>,
    worker: Option<usize>,
    state: CoroutineState,
    stack: Option<Arc<ParkStack>>,
}

impl CoroutineInfo {
    /// Its id (as `fibra::Coroutine::id`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Its home worker; None if it has not started.
    pub fn worker(&self) -> Option<usize> {
        self.worker
    }

    /// What it was doing.
    pub fn state(&self) -> CoroutineState {
        self.state
    }

    /// Where it is parked (None unless parked on a worker that answered).
    pub fn stack(&self) -> Option<&ParkStack> {
        self.stack.as_deref()
    }
}

/// Every live coroutine of a runtime at one moment (`Runtime::dump()`).
///
/// `Display` prints a summary grouped by state and park site with counts
/// (`{:#}` lists every coroutine). A coroutine that has not started and is
/// being moved between queues (stolen) while the dump is taken may be
/// missed; every started one is listed.
#[derive(Debug, Clone)]
pub struct Dump {
    coroutines: Vec<CoroutineInfo>,
    workers: usize,
    unanswered: Vec<usize>,
    unlisted_not_started: usize,
    took: Duration,
}

impl Dump {
    /// The live coroutines, by worker.
    pub fn coroutines(&self) -> &[CoroutineInfo] {
        &self.coroutines
    }

    /// Workers that could not answer in time (held by a coroutine that
    /// does not park); their coroutines are listed without backtraces.
    pub fn unanswered_workers(&self) -> &[usize] {
        &self.unanswered
    }

    /// How long taking the dump took.
    pub fn took(&self) -> Duration {
        self.took
    }

    pub(crate) fn assemble(
        answers: Vec<WorkerAnswer>,
        now_ms: u64,
        workers: usize,
        began: Instant,
    ) -> Dump {
        let mut distinct: HashMap<Vec<usize>, Arc<ParkStack>> = HashMap::new();
        let mut coroutines = Vec::new();
        let mut unanswered = Vec::new();
        let mut unlisted_not_started = 0;
        let mut answers = answers;
        answers.sort_by_key(|a| a.index);
        for answer in answers {
            if !answer.answered {
                unanswered.push(answer.index);
            }
            unlisted_not_started += answer.unlisted_not_started;
            let stacks: Vec<Arc<ParkStack>> = answer
                .stacks
                .into_iter()
                .map(|ips| {
                    let resolved = distinct.get(&ips).cloned();
                    resolved.unwrap_or_else(|| {
                        let stack = Arc::new(ParkStack::resolve(&ips));
                        distinct.insert(ips, Arc::clone(&stack));
                        stack
                    })
                })
                .collect();
            for record in answer.tasks {
                let state = match record.state {
                    RecordState::Running => CoroutineState::Running,
                    RecordState::Runnable => CoroutineState::Runnable,
                    RecordState::NotStarted => CoroutineState::NotStarted,
                    RecordState::Parked { reason, since_ms } => CoroutineState::Parked {
                        reason,
                        for_: Duration::from_millis(now_ms.saturating_sub(since_ms)),
                    },
                };
                coroutines.push(CoroutineInfo {
                    id: record.id,
                    name: record.name,
                    worker: record.worker,
                    state,
                    stack: record.stack.and_then(|i| stacks.get(i as usize).cloned()),
                });
            }
        }
        Dump {
            coroutines,
            workers,
            unanswered,
            unlisted_not_started,
            took: began.elapsed(),
        }
    }
}

/// A duration in seconds with two decimals (`1.25s`).
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}s", self.0.as_secs_f64())
    }
}

/// What the grouped summary groups by: state kind, reason, stack.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    kind: u8,
    reason: Option<ParkReason>,
    stack: usize,
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |pred: fn(&CoroutineState) -> bool| {
            self.coroutines.iter().filter(|c| pred(&c.state)).count()
        };
        writeln!(
            f,
            "fibra dump: {} coroutines on {} workers: {} running, {} runnable, {} parked, {} not \
             started (taken in {:.1?})",
            self.coroutines.len() + self.unlisted_not_started,
            self.workers,
            count(|s| matches!(s, CoroutineState::Running)),
            count(|s| matches!(s, CoroutineState::Runnable)),
            count(|s| matches!(s, CoroutineState::Parked { .. })),
            count(|s| matches!(s, CoroutineState::NotStarted)) + self.unlisted_not_started,
            self.took
        )?;
        for index in &self.unanswered {
            writeln!(
                f,
                "worker {index} did not answer (held by a coroutine that does not park, or \
                 exited): its coroutines are listed without backtraces"
            )?;
        }
        if self.unlisted_not_started > 0 {
            writeln!(
                f,
                "{} coroutines not started are queued on workers that did not answer (not listed)",
                self.unlisted_not_started
            )?;
        }
        if f.alternate() {
            for c in &self.coroutines {
                write_identity(f, c)?;
                write!(f, ": {}", c.state)?;
                if let Some(worker) = c.worker {
                    write!(f, " on worker {worker}")?;
                }
                if let Some(site) = c.stack().and_then(ParkStack::site) {
                    write!(f, " in {}", site.function)?;
                }
                writeln!(f)?;
            }
            return Ok(());
        }
        let mut groups: BTreeMap<GroupKey, Vec<&CoroutineInfo>> = BTreeMap::new();
        for c in &self.coroutines {
            let (kind, reason) = match c.state {
                CoroutineState::Running => (0, None),
                CoroutineState::Parked { reason, .. } => (1, Some(reason)),
                CoroutineState::Runnable => (2, None),
                CoroutineState::NotStarted => (3, None),
            };
            let stack = c.stack.as_ref().map_or(0, |s| Arc::as_ptr(s) as usize);
            groups
                .entry(GroupKey {
                    kind,
                    reason,
                    stack,
                })
                .or_default()
                .push(c);
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by_key(|(key, members)| (key.kind, std::cmp::Reverse(members.len())));
        for (_, members) in groups {
            writeln!(f)?;
            write_group(f, &members)?;
        }
        Ok(())
    }
}

fn write_identity(f: &mut fmt::Formatter<'_>, c: &CoroutineInfo) -> fmt::Result {
    match &c.name {
        Some(name) => write!(f, "#{} '{name}'", c.id),
        None => write!(f, "#{}", c.id),
    }
}

/// One group of the summary: a count, the state, a few members, the stack.
fn write_group(f: &mut fmt::Formatter<'_>, members: &[&CoroutineInfo]) -> fmt::Result {
    let first = members[0];
    match first.state {
        CoroutineState::Parked { reason, .. } => {
            let times = members.iter().filter_map(|c| match c.state {
                CoroutineState::Parked { for_, .. } => Some(for_),
                _ => None,
            });
            let (low, high) = times.fold((Duration::MAX, Duration::ZERO), |(l, h), t| {
                (l.min(t), h.max(t))
            });
            write!(f, "{} parked ({reason}) for ", members.len())?;
            if low == high {
                writeln!(f, "{}:", Seconds(low))?;
            } else {
                writeln!(f, "{} to {}:", Seconds(low), Seconds(high))?;
            }
        }
        state => writeln!(f, "{} {state}:", members.len())?,
    }
    const SHOWN: usize = 5;
    f.write_str("    ")?;
    for (i, c) in members.iter().take(SHOWN).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_identity(f, c)?;
        if let (CoroutineState::Running, Some(worker)) = (c.state, c.worker) {
            write!(f, " on worker {worker}")?;
        }
    }
    if members.len() > SHOWN {
        write!(f, ", and {} more", members.len() - SHOWN)?;
    }
    writeln!(f)?;
    if let Some(stack) = first.stack() {
        for (i, frame) in stack.frames.iter().enumerate() {
            writeln!(
                f,
                "    {i:>3}: {}",
                frame.to_string().replace('\n', "\n    ")
            )?;
        }
    }
    Ok(())
}

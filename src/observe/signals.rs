//! The two signal handlers: the opt-in dump signal, and the backtrace of a
//! worker stuck in a system call. Each handler does only what is
//! async-signal-safe: atomic operations on static memory, `write(2)` to
//! the monitor's eventfd, `gettid(2)`, and (the second) the unwinder.
//!
//! # The dump signal
//!
//! The handler sets the signal's bit in `PENDING` and writes the monitor's
//! eventfd (which is never closed); the monitor thread takes the dump and
//! prints it. The process goes on: nothing runs in the handler that could
//! take a lock or allocate.
//!
//! # A stuck worker's backtrace (`SIGURG`, as Go uses for preemption)
//!
//! The monitor, having seen a worker held by one coroutine for the
//! threshold, and `/proc` saying the thread is blocked in a system call,
//! arms `CAPTURE` (the target thread and the pick count it saw) and sends
//! `SIGURG` to that thread with `tgkill`. The handler, on the worker's
//! alternate signal stack:
//!
//! 1. claims `CAPTURE` (ARMED → BUSY), and checks that it runs on the
//!    target thread and that the worker's pick count is still the one the
//!    monitor saw (the stall has not ended);
//! 2. checks that the interrupted instruction follows a `syscall`
//!    instruction (`0f 05`): the thread was stopped at a system call, a
//!    point that the C library's unwind tables describe;
//! 3. walks its stack with `backtrace::trace_unsynchronized` into the
//!    preallocated `ips` array (libgcc's `_Unwind_Backtrace`: it allocates
//!    nothing, and finds unwind tables with glibc's `_dl_find_object`,
//!    which is async-signal-safe — glibc ≥ 2.35 and GCC ≥ 12; the
//!    development machine has glibc 2.36 and a libgcc that imports it);
//! 4. publishes DONE.
//!
//! Why not walk a thread that is running on the CPU: it may be anywhere,
//! including inside a context switch, where the stack pointer already
//! belongs to the other stack and the unwind tables of the surrounding
//! function no longer describe the frame; the unwinder would then read
//! through garbage, and a fault there would kill the process. Step 2 rules
//! that out: a switch makes no system call. Such a stall is reported with
//! its place ("running on the CPU") and hint, without a backtrace.
//!
//! The interrupted call sees the signal as any signal: with `SA_RESTART`
//! most calls resume by themselves; `nanosleep`, `poll` and `epoll_wait`
//! return `EINTR`, which `std::thread::sleep` and the standard library's
//! blocking calls retry. The handler is installed only if `SIGURG` has no
//! handler yet (its default action is to ignore it); otherwise stalls are
//! reported without backtraces. The monitor waits for the handler at most
//! 100 ms, then disarms `CAPTURE` (ARMED → IDLE) unless the handler has
//! claimed it, in which case it waits for DONE: the handler never reads
//! monitor memory the monitor may have freed.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The monitor's eventfd (-1 before it exists).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// Dump signals received and not yet handled, one bit per signal number.
static PENDING: AtomicU64 = AtomicU64::new(0);

pub(super) fn set_wake_fd(fd: i32) {
    WAKE_FD.store(fd, Ordering::SeqCst);
}

/// Wakes the monitor thread (async-signal-safe).
pub(super) fn wake_monitor() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one = 1u64;
        // SAFETY: writes 8 bytes from `one` to an eventfd that is never
        // closed; write(2) is async-signal-safe.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// Takes the set of dump signals received since the last call.
pub(super) fn take_pending_dumps() -> u64 {
    PENDING.swap(0, Ordering::AcqRel)
}

/// Whether a dump signal is waiting (without taking it).
pub(super) fn take_pending_peek() -> u64 {
    PENDING.load(Ordering::Acquire)
}

extern "C" fn on_dump_signal(signal: libc::c_int) {
    let errno = errno();
    if (0..64).contains(&signal) {
        PENDING.fetch_or(1 << signal, Ordering::AcqRel);
    }
    wake_monitor();
    set_errno(errno);
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}

/// The current handler of `signal`.
fn current_action(signal: i32) -> io::Result<libc::sighandler_t> {
    // SAFETY: all zeroes is a valid sigaction to be overwritten.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old.sa_sigaction)
}

/// Installs `handler` for `signal` with `flags`.
fn install(signal: i32, handler: libc::sighandler_t, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: all zeroes is a valid sigaction; the fields are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler;
    action.sa_flags = flags;
    // SAFETY: an empty mask is valid; `action` is fully initialised; the
    // handler only does async-signal-safe work (module docs).
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Installs the dump handler for `signal` (once per signal).
pub(super) fn listen_for_dump(signal: i32) -> io::Result<()> {
    static INSTALLED: Mutex<u64> = Mutex::new(0);
    let refused = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGABRT,
        libc::SIGURG,
        libc::SIGCHLD,
    ];
    if !(1..64).contains(&signal) || refused.contains(&signal) || signal > libc::SIGRTMAX() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "signal {signal} cannot print dumps (use SIGUSR1, SIGUSR2, SIGQUIT or a real-time \
                 signal; fault signals, SIGKILL, SIGSTOP, SIGCHLD and SIGURG are refused)"
            ),
        ));
    }
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed & (1 << signal) != 0 {
        return Ok(());
    }
    let ours = on_dump_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let current = current_action(signal)?;
    if current != libc::SIG_DFL && current != libc::SIG_IGN && current != ours {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signal} already has a handler that fibra did not install"),
        ));
    }
    install(signal, ours, libc::SA_RESTART)?;
    *installed |= 1 << signal;
    Ok(())
}

// ---------------------------------------------------------------------------
// A stuck worker's backtrace

const IDLE: u8 = 0;
const ARMED: u8 = 1;
const BUSY: u8 = 2;
const DONE: u8 = 3;

/// Frames the handler records.
const CAPTURE_FRAMES: usize = 64;

struct Capture {
    state: AtomicU8,
    tid: AtomicI32,
    picks: AtomicPtr<AtomicU64>,
    expected_picks: AtomicU64,
    rip: AtomicUsize,
    len: AtomicUsize,
    ips: [AtomicUsize; CAPTURE_FRAMES],
}

static CAPTURE: Capture = Capture {
    state: AtomicU8::new(IDLE),
    tid: AtomicI32::new(0),
    picks: AtomicPtr::new(std::ptr::null_mut()),
    expected_picks: AtomicU64::new(0),
    rip: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    ips: [const { AtomicUsize::new(0) }; CAPTURE_FRAMES],
};

/// Whether `SIGURG` carries our capture handler (installed on first use,
/// only if nothing else handles it).
fn capture_handler_installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let handler = on_capture_signal
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as libc::sighandler_t;
        match current_action(libc::SIGURG) {
            Ok(current) if current == libc::SIG_DFL || current == libc::SIG_IGN => install(
                libc::SIGURG,
                handler,
                libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART,
            )
            .is_ok(),
            _ => false,
        }
    })
}

/// The instruction pointers of the thread `tid`, a worker blocked in a
/// system call whose pick counter `picks` still reads `expected`,
/// innermost first, from the interrupted instruction on. None if the
/// backtrace could not be taken safely (module docs).
pub(super) fn backtrace_of_stuck_thread(
    tid: i32,
    picks: &AtomicU64,
    expected: u64,
) -> Option<Vec<usize>> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    if tid <= 0 || !capture_handler_installed() {
        return None;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    CAPTURE.tid.store(tid, Ordering::Relaxed);
    CAPTURE.picks.store(
        picks as *const AtomicU64 as *mut AtomicU64,
        Ordering::Relaxed,
    );
    CAPTURE.expected_picks.store(expected, Ordering::Relaxed);
    CAPTURE.len.store(0, Ordering::Relaxed);
    CAPTURE.state.store(ARMED, Ordering::Release);
    // SAFETY: tgkill to a thread of this process; SIGURG carries our
    // handler (checked above).
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGURG) } == 0;
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        match CAPTURE.state.load(Ordering::Acquire) {
            DONE => break,
            ARMED if !sent || Instant::now() >= deadline => {
                if CAPTURE
                    .state
                    .compare_exchange(ARMED, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return None;
                }
            }
            _ => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    let len = CAPTURE.len.load(Ordering::Acquire);
    let rip = CAPTURE.rip.load(Ordering::Relaxed);
    CAPTURE.state.store(IDLE, Ordering::Release);
    let ips: Vec<usize> = CAPTURE.ips[..len]
        .iter()
        .map(|ip| ip.load(Ordering::Relaxed))
        .collect();
    // Drop the handler's own frames: start at the interrupted instruction.
    let start = ips.iter().position(|&ip| ip.abs_diff(rip) <= 1)?;
    Some(ips[start..].to_vec())
}

extern "C" fn on_capture_signal(
    _signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    if CAPTURE
        .state
        .compare_exchange(ARMED, BUSY, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let errno = errno();
    let recorded = capture_here(context);
    CAPTURE.len.store(recorded, Ordering::Release);
    CAPTURE.state.store(DONE, Ordering::Release);
    set_errno(errno);
}

/// The handler's checks and walk (module docs); the number of frames.
fn capture_here(context: *mut libc::c_void) -> usize {
    // SAFETY: gettid has no preconditions.
    if unsafe { libc::gettid() } != CAPTURE.tid.load(Ordering::Relaxed) || context.is_null() {
        return 0;
    }
    let picks = CAPTURE.picks.load(Ordering::Relaxed);
    // SAFETY: the monitor keeps the worker's counters alive until this
    // capture is DONE (it waits for BUSY to end).
    if picks.is_null()
        || unsafe { &*picks }.load(Ordering::Relaxed)
            != CAPTURE.expected_picks.load(Ordering::Relaxed)
    {
        return 0;
    }
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let rip = unsafe {
        (*(context as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize]
    } as usize;
    // The two bytes before `rip` are on the same page (checked), which is
    // mapped and executable since the thread was running there.
    if rip % 4096 < 2 {
        return 0;
    }
    // SAFETY: as above.
    let before = unsafe { std::ptr::read_volatile((rip - 2) as *const [u8; 2]) };
    if before != [0x0f, 0x05] {
        return 0;
    }
    CAPTURE.rip.store(rip, Ordering::Relaxed);
    let mut n = 0;
    // SAFETY: the unwinder runs on this thread only, allocates nothing, and
    // starts from a point the unwind tables describe (module docs).
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            CAPTURE.ips[n].store(frame.ip() as usize, Ordering::Relaxed);
            n += 1;
            n < CAPTURE_FRAMES
        });
    }
    n
}

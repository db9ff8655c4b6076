//! Fault handling, checked in child processes (this test binary re-run with
//! `FIBRA_TEST_CHILD` set): a coroutine that overflows its stack is reported by
//! id, name and size before the process aborts, while other faults and
//! ordinary thread stack overflows keep their usual outcome and message.

mod common;

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::thread;
use std::time::Duration;

use common::{ChildRun, ChildSetup, child_mode, report};
use fibra::coroutine::{Builder, Coroutine, CoroutineResult, Yielder};
use fibra::stack::Stack;

/// Signal numbers on x86_64 Linux (libc is not a dev-dependency).
const SIGABRT: i32 = 6;
const SIGSEGV: i32 = 11;

/// How this file's children run: killed, failing the test, after 30 s.
const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(30),
    env: &[],
};

// SAFETY: matches glibc's `int prctl(int option, ...)`.
unsafe extern "C" {
    /// prctl(2); variadic in glibc.
    fn prctl(option: i32, ...) -> i32;
}

/// prctl option that controls core dumps.
const PR_SET_DUMPABLE: i32 = 4;

/// `stack_t` of x86_64 Linux, for sigaltstack(2).
#[repr(C)]
struct SignalStackT {
    ss_sp: *mut u8,
    ss_flags: i32,
    ss_size: usize,
}

/// `ss_flags` value that turns a thread's alternate signal stack off.
const SS_DISABLE: i32 = 2;

// SAFETY: match glibc's `sigaltstack`, `mmap` and `mprotect`.
unsafe extern "C" {
    fn sigaltstack(ss: *const SignalStackT, old: *mut SignalStackT) -> i32;
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, offset: i64) -> *mut u8;
    fn mprotect(addr: *mut u8, len: usize, prot: i32) -> i32;
}

/// mmap(2) and mprotect(2) constants of x86_64 Linux.
const PROT_NONE: i32 = 0;
const PROT_READ_WRITE: i32 = 0x1 | 0x2;
const MAP_PRIVATE_ANONYMOUS: i32 = 0x02 | 0x20;
const MAP_FIXED_NOREPLACE: i32 = 0x100000;

/// Keeps a child that is meant to crash from writing a core dump.
fn disable_core_dumps() {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory
    // of ours.
    let rc = unsafe { prctl(PR_SET_DUMPABLE, 0u64) };
    assert_eq!(rc, 0, "prctl(PR_SET_DUMPABLE, 0) failed");
}

/// Recurses until the stack runs out (the depth check never succeeds, but
/// keeps the compiler from seeing an endless recursion).
#[inline(never)]
fn recurse_forever(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse_forever(depth + 1) + black_box(&frame)[31]
}

/// The lines of the child's stderr that report a coroutine overflow.
fn overflow_lines(run: &ChildRun) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.contains("fibra: coroutine #"))
        .collect()
}

/// The child side of the overflow tests: a coroutine named `name` on a
/// 64 KiB stack recurses until it overflows; reports its id and stack size
/// first, and `survived=yes` if the process outlives the overflow.
fn overflow_named_coroutine(name: String) {
    disable_core_dumps();
    let mut co: Coroutine<(), (), u64> = Builder::new()
        .name(name)
        .stack_size(64 * 1024)
        .build(|_, ()| recurse_forever(0))
        .expect("stack can be mapped");
    report(&format!("id={} stack_size={}", co.id(), co.stack_size()));
    let _ = co.resume(());
    report("survived=yes");
}

fn assert_killed_by(run: &ChildRun, signal: i32) {
    assert_eq!(run.status.code(), None, "{run}");
    assert_eq!(run.status.signal(), Some(signal), "{run}");
}

#[test]
fn overflow_reports_coroutine_name_id_and_size() {
    const NAME: &str = "overflow_reports_coroutine_name_id_and_size";
    if child_mode().as_deref() == Some("overflow-named") {
        overflow_named_coroutine("deep-recursion".into());
        return;
    }
    let run = CHILD.run(NAME, "overflow-named");
    assert_killed_by(&run, SIGABRT);
    assert!(!run.stdout.contains("survived=yes"), "{run}");
    let id: u64 = run.reported("id").parse().expect("numeric id");
    let stack_size: usize = run.reported("stack_size").parse().expect("numeric size");
    assert_eq!(
        stack_size,
        64 * 1024,
        "a whole-page request is kept exactly; {run}"
    );
    let lines = overflow_lines(&run);
    assert_eq!(lines.len(), 1, "exactly one report line; {run}");
    let line = lines[0];
    let expected_start = format!(
        "fibra: coroutine #{id} 'deep-recursion' overflowed its stack of {} KiB",
        stack_size / 1024
    );
    assert!(line.starts_with(&expected_start), "{line:?}; {run}");
    assert!(
        line.contains("stack_size"),
        "the line names the fix: {line:?}"
    );
    assert!(!run.stderr.contains("has overflowed its stack"), "{run}");
}

#[test]
fn overflow_of_a_coroutine_with_a_very_long_name_is_reported_cut_short() {
    const NAME: &str = "overflow_of_a_coroutine_with_a_very_long_name_is_reported_cut_short";
    // Longer than the signal handler's fixed 512-byte message buffer.
    let long_name = "n".repeat(2000);
    if child_mode().as_deref() == Some("overflow-long-name") {
        overflow_named_coroutine(long_name);
        return;
    }
    let run = CHILD.run(NAME, "overflow-long-name");
    assert_killed_by(&run, SIGABRT);
    assert!(!run.stdout.contains("survived=yes"), "{run}");
    let id: u64 = run.reported("id").parse().expect("numeric id");
    let lines = overflow_lines(&run);
    assert_eq!(lines.len(), 1, "exactly one report line; {run}");
    let expected_start = format!("fibra: coroutine #{id} 'nnnnnnnn");
    assert!(lines[0].starts_with(&expected_start), "{}; {run}", lines[0]);
    assert!(
        lines[0].len() <= 512,
        "the report is cut to the handler's buffer: {} bytes",
        lines[0].len()
    );
}

#[test]
fn overflow_on_a_thread_without_an_alternate_signal_stack_is_still_reported() {
    const NAME: &str = "overflow_on_a_thread_without_an_alternate_signal_stack_is_still_reported";
    if child_mode().as_deref() == Some("overflow-no-altstack") {
        // As on a thread that C code created: no alternate signal stack, so
        // a fault handler could not run on a stack that just overflowed.
        // fibra gives the thread one when it makes its first coroutine.
        let off = SignalStackT {
            ss_sp: std::ptr::null_mut(),
            ss_flags: SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: turns this thread's alternate stack off; no handler runs now.
        assert_eq!(unsafe { sigaltstack(&off, std::ptr::null_mut()) }, 0);
        overflow_named_coroutine("no-altstack".into());
        return;
    }
    let run = CHILD.run(NAME, "overflow-no-altstack");
    assert_killed_by(&run, SIGABRT);
    let id: u64 = run.reported("id").parse().expect("numeric id");
    let lines = overflow_lines(&run);
    assert_eq!(lines.len(), 1, "exactly one report line; {run}");
    let expected_start = format!("fibra: coroutine #{id} 'no-altstack' overflowed its stack");
    assert!(lines[0].starts_with(&expected_start), "{}; {run}", lines[0]);
}

#[test]
fn overflow_of_unnamed_coroutine_reports_id_without_name() {
    const NAME: &str = "overflow_of_unnamed_coroutine_reports_id_without_name";
    if child_mode().as_deref() == Some("overflow-unnamed") {
        disable_core_dumps();
        let mut co: Coroutine<(), (), u64> = Coroutine::new(|_, ()| recurse_forever(0));
        report(&format!("id={} stack_size={}", co.id(), co.stack_size()));
        let _ = co.resume(());
        report("survived=yes");
        return;
    }
    let run = CHILD.run(NAME, "overflow-unnamed");
    assert_killed_by(&run, SIGABRT);
    assert!(!run.stdout.contains("survived=yes"), "{run}");
    let id: u64 = run.reported("id").parse().expect("numeric id");
    let stack_size: usize = run.reported("stack_size").parse().expect("numeric size");
    let lines = overflow_lines(&run);
    assert_eq!(lines.len(), 1, "exactly one report line; {run}");
    let line = lines[0];
    let expected_start = format!(
        "fibra: coroutine #{id} overflowed its stack of {} KiB",
        stack_size / 1024
    );
    assert!(line.starts_with(&expected_start), "{line:?}; {run}");
    assert!(!line.contains('\''), "no name is quoted: {line:?}");
    assert!(line.contains("stack_size"), "{line:?}");
}

#[test]
fn overflow_in_nested_coroutine_names_the_inner_one() {
    const NAME: &str = "overflow_in_nested_coroutine_names_the_inner_one";
    if child_mode().as_deref() == Some("overflow-nested") {
        disable_core_dumps();
        let mut outer: Coroutine<(), (), ()> = Builder::new()
            .name("outer")
            .build(|_, ()| {
                let mut inner: Coroutine<(), (), u64> = Builder::new()
                    .name("inner")
                    .stack_size(32 * 1024)
                    .build(|_, ()| recurse_forever(0))
                    .expect("stack can be mapped");
                report(&format!("id={}", inner.id()));
                let _ = inner.resume(());
            })
            .expect("stack can be mapped");
        let _ = outer.resume(());
        report("survived=yes");
        return;
    }
    let run = CHILD.run(NAME, "overflow-nested");
    assert_killed_by(&run, SIGABRT);
    let id: u64 = run.reported("id").parse().expect("numeric id");
    let lines = overflow_lines(&run);
    assert_eq!(lines.len(), 1, "{run}");
    assert!(
        lines[0].starts_with(&format!(
            "fibra: coroutine #{id} 'inner' overflowed its stack"
        )),
        "{run}"
    );
}

/// An address in the never-mapped first page: writing there faults, and it is
/// non-null and aligned, so no debug precondition check fires first.
const UNMAPPED: usize = 0x10;

#[test]
fn wild_write_inside_coroutine_is_not_reported_as_overflow() {
    const NAME: &str = "wild_write_inside_coroutine_is_not_reported_as_overflow";
    if child_mode().as_deref() == Some("wild-write-coroutine") {
        disable_core_dumps();
        let mut co: Coroutine<(), (), ()> = Builder::new()
            .name("wild-writer")
            .build(|_, ()| {
                report("writing=yes");
                // SAFETY: deliberately invalid: this child process exists to
                // die of the SIGSEGV this write raises.
                unsafe { std::ptr::write_volatile(UNMAPPED as *mut u64, 1) };
            })
            .expect("stack can be mapped");
        let _ = co.resume(());
        report("survived=yes");
        return;
    }
    let run = CHILD.run(NAME, "wild-write-coroutine");
    assert_killed_by(&run, SIGSEGV);
    assert_eq!(run.reported("writing"), "yes");
    assert!(!run.stdout.contains("survived=yes"), "{run}");
    assert!(!run.stderr.contains("overflowed its stack"), "{run}");
    assert!(!run.stderr.contains("fibra: coroutine"), "{run}");
}

#[test]
fn a_fault_where_a_freed_stack_was_mapped_is_not_reported_as_overflow() {
    const NAME: &str = "a_fault_where_a_freed_stack_was_mapped_is_not_reported_as_overflow";
    if child_mode().as_deref() == Some("fault-at-freed-guard") {
        disable_core_dumps();
        const PAGE: usize = 4096;
        let stack = Stack::new(64 * 1024).expect("stack can be mapped");
        let bottom = stack.bottom();
        let len = stack.size() + PAGE;
        // The guard page lies just below the usable bottom.
        let base = bottom.wrapping_sub(PAGE);
        drop(stack); // unmapped
        // Something else maps the same range, with its own inaccessible
        // first page, and faults there: a plain segfault, not an overflow.
        // SAFETY: MAP_FIXED_NOREPLACE maps only if the range is free.
        let again = unsafe {
            mmap(
                base,
                len,
                PROT_READ_WRITE,
                MAP_PRIVATE_ANONYMOUS | MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if again != base {
            report("remapped=no");
            return;
        }
        // SAFETY: the first page of the mapping just made.
        assert_eq!(unsafe { mprotect(base, PAGE, PROT_NONE) }, 0);
        report("remapped=yes");
        // SAFETY: deliberately invalid: this child exists to die of the
        // SIGSEGV this write raises.
        unsafe { std::ptr::write_volatile(base.cast::<u64>(), 1) };
        report("survived=yes");
        return;
    }
    let run = CHILD.run(NAME, "fault-at-freed-guard");
    assert_eq!(
        run.reported("remapped"),
        "yes",
        "the freed range could be mapped again; {run}"
    );
    assert_killed_by(&run, SIGSEGV);
    assert!(!run.stdout.contains("survived=yes"), "{run}");
    assert!(!run.stderr.contains("fibra: coroutine"), "{run}");
}

#[test]
fn wild_write_on_thread_stack_after_coroutines_exist_is_plain_segfault() {
    const NAME: &str = "wild_write_on_thread_stack_after_coroutines_exist_is_plain_segfault";
    if child_mode().as_deref() == Some("wild-write-thread") {
        disable_core_dumps();
        // A coroutine suspended part-way, so its stack is live and registered.
        let mut co = Coroutine::new(|y: &Yielder<(), u32>, ()| {
            y.suspend(1);
        });
        assert_eq!(co.resume(()), CoroutineResult::Yield(1));
        report("writing=yes");
        // SAFETY: deliberately invalid: this child process exists to die of
        // the SIGSEGV this write raises.
        unsafe { std::ptr::write_volatile(UNMAPPED as *mut u64, 1) };
        report("survived=yes");
        return;
    }
    let run = CHILD.run(NAME, "wild-write-thread");
    assert_killed_by(&run, SIGSEGV);
    assert_eq!(run.reported("writing"), "yes");
    assert!(!run.stdout.contains("survived=yes"), "{run}");
    assert!(!run.stderr.contains("overflowed its stack"), "{run}");
    assert!(!run.stderr.contains("fibra: coroutine"), "{run}");
}

/// Runs `before` and then unbounded recursion on a new thread named
/// "small-stack" with a 128 KiB stack; returns only if the thread does.
fn overflow_small_thread(before: fn()) {
    let handle = thread::Builder::new()
        .name("small-stack".to_string())
        .stack_size(128 * 1024)
        .spawn(move || {
            before();
            report("recursing=yes");
            recurse_forever(0)
        })
        .expect("spawn a thread");
    let _ = handle.join();
    report("survived=yes");
}

fn assert_rust_reported_thread_overflow(run: &ChildRun) {
    assert_killed_by(run, SIGABRT);
    assert_eq!(run.reported("recursing"), "yes");
    assert!(!run.stdout.contains("survived=yes"), "{run}");
    assert!(
        run.stderr.lines().any(
            |l| l.starts_with("thread 'small-stack'") && l.contains("has overflowed its stack")
        ),
        "{run}"
    );
    assert!(!run.stderr.contains("fibra: coroutine"), "{run}");
}

// fibra's handler runs first and must pass the fault on to Rust's handler on
// the 8 KiB alternate signal stack std gives each thread: its own frame has to
// stay small, in debug builds too.
#[test]
fn thread_stack_overflow_is_still_reported_by_rust() {
    const NAME: &str = "thread_stack_overflow_is_still_reported_by_rust";
    if child_mode().as_deref() == Some("thread-overflow") {
        disable_core_dumps();
        // Mapping a stack installs fibra's fault handler for the process.
        let stack = Stack::new(64 * 1024).expect("stack can be mapped");
        overflow_small_thread(|| {});
        drop(stack);
        return;
    }
    let run = CHILD.run(NAME, "thread-overflow");
    assert_rust_reported_thread_overflow(&run);
}

#[test]
fn thread_stack_overflow_after_running_coroutines_on_it_is_reported_by_rust() {
    const NAME: &str = "thread_stack_overflow_after_running_coroutines_on_it_is_reported_by_rust";
    if child_mode().as_deref() == Some("thread-overflow-after-coroutine") {
        disable_core_dumps();
        // Creating a coroutine on the thread also sets up fibra's alternate
        // signal stack there; Rust's report must still come out.
        overflow_small_thread(|| {
            let mut co = Coroutine::new(|y: &Yielder<(), u8>, ()| {
                y.suspend(3);
            });
            assert_eq!(co.resume(()), CoroutineResult::Yield(3));
            assert_eq!(co.resume(()), CoroutineResult::Return(()));
        });
        return;
    }
    let run = CHILD.run(NAME, "thread-overflow-after-coroutine");
    assert_rust_reported_thread_overflow(&run);
}

//! Fault handling, checked in child processes (this test binary re-run with
//! `FIBRA_TEST_CHILD` set): a coroutine that overflows its stack is reported by
//! id, name and size before the process aborts, while other faults and
//! ordinary thread stack overflows keep their usual outcome and message.

use std::hint::black_box;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fibra::coroutine::{Builder, Coroutine, CoroutineResult, Yielder};
use fibra::stack::Stack;

/// Signal numbers on x86_64 Linux (libc is not a dev-dependency).
const SIGABRT: i32 = 6;
const SIGSEGV: i32 = 11;

/// Set in a child process to the scenario it must act out.
const CHILD_ENV: &str = "FIBRA_TEST_CHILD";

/// How long a child may run before the test kills it and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// The scenario this process must act out, if it is a child.
fn child_mode() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

// SAFETY: matches glibc's `int prctl(int option, ...)`.
unsafe extern "C" {
    /// prctl(2); variadic in glibc.
    fn prctl(option: i32, ...) -> i32;
}

/// prctl option that controls core dumps.
const PR_SET_DUMPABLE: i32 = 4;

/// Keeps a child that is meant to crash from writing a core dump.
fn disable_core_dumps() {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory
    // of ours.
    let rc = unsafe { prctl(PR_SET_DUMPABLE, 0u64) };
    assert_eq!(rc, 0, "prctl(PR_SET_DUMPABLE, 0) failed");
}

/// Prints a line the parent looks for (stdout is line-buffered, so it is
/// written before any crash).
fn report(line: &str) {
    println!("\nFIBRA-CHILD {line}");
}

struct ChildRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl ChildRun {
    /// The values of the `FIBRA-CHILD` lines the child printed.
    fn reports(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("FIBRA-CHILD "))
            .collect()
    }

    /// The `key=value` the child reported for `key`.
    fn reported(&self, key: &str) -> String {
        self.reports()
            .iter()
            .flat_map(|r| r.split_whitespace())
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("child did not report {key}; {self}"))
            .to_string()
    }
}

impl std::fmt::Display for ChildRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "child {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Re-runs this test binary for just `test_name` (even if it is ignored) with
/// `CHILD_ENV=mode`, and collects its exit status and output. Fails if it runs
/// past the timeout.
fn run_child(test_name: &str, mode: &str) -> ChildRun {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            test_name,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(CHILD_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    // Drain both pipes on their own threads; both reach EOF when the child
    // exits, which the channel reports without polling.
    let (tx, rx) = mpsc::channel();
    let pipes: [(usize, Box<dyn Read + Send>); 2] = [
        (0, Box::new(child.stdout.take().expect("piped stdout"))),
        (1, Box::new(child.stderr.take().expect("piped stderr"))),
    ];
    for (index, mut pipe) in pipes {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send((index, String::from_utf8_lossy(&bytes).into_owned()));
        });
    }
    drop(tx);
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut outputs = [String::new(), String::new()];
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((index, text)) => outputs[index] = text,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child {mode} did not exit within {CHILD_TIMEOUT:?}");
            }
        }
    }
    let status = child.wait().expect("wait for the child");
    let [stdout, stderr] = outputs;
    ChildRun {
        status,
        stdout,
        stderr,
    }
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

fn assert_killed_by(run: &ChildRun, signal: i32) {
    assert_eq!(run.status.code(), None, "{run}");
    assert_eq!(run.status.signal(), Some(signal), "{run}");
}

#[test]
fn overflow_reports_coroutine_name_id_and_size() {
    const NAME: &str = "overflow_reports_coroutine_name_id_and_size";
    if child_mode().as_deref() == Some("overflow-named") {
        disable_core_dumps();
        let mut co: Coroutine<(), (), u64> = Builder::new()
            .name("deep-recursion")
            .stack_size(64 * 1024)
            .build(|_, ()| recurse_forever(0))
            .expect("stack can be mapped");
        report(&format!("id={} stack_size={}", co.id(), co.stack_size()));
        let _ = co.resume(());
        report("survived=yes");
        return;
    }
    let run = run_child(NAME, "overflow-named");
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
    let run = run_child(NAME, "overflow-unnamed");
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
    let run = run_child(NAME, "overflow-nested");
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
    let run = run_child(NAME, "wild-write-coroutine");
    assert_killed_by(&run, SIGSEGV);
    assert_eq!(run.reported("writing"), "yes");
    assert!(!run.stdout.contains("survived=yes"), "{run}");
    assert!(!run.stderr.contains("overflowed its stack"), "{run}");
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
    let run = run_child(NAME, "wild-write-thread");
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
    let run = run_child(NAME, "thread-overflow");
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
    let run = run_child(NAME, "thread-overflow-after-coroutine");
    assert_rust_reported_thread_overflow(&run);
}

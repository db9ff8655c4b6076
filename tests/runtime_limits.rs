//! Process-level limits and reports, checked in child processes (this test
//! binary re-run with `FIBRA_TEST_CHILD` set): spawning until the kernel
//! refuses a stack names the limit that was hit (`vm.max_map_count`, or
//! `RLIMIT_AS`), and a detached coroutine's panic is reported once, by name.

use std::hint::black_box;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fibra::{Builder, Runtime};

/// Set in a child process to the scenario it must act out.
const CHILD_ENV: &str = "FIBRA_TEST_CHILD";

/// How long a child may run before the test kills it and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Spawns a child stops at, refused or not.
const SPAWN_CAP: usize = 200_000;

/// Stack size of the coroutines the spawning children create.
const CHILD_STACK: usize = 64 * 1024;

/// `RLIMIT_AS` on x86_64 Linux (libc is not a dev-dependency).
const RLIMIT_AS: i32 = 9;

unsafe extern "C" {
    /// setrlimit(2); `rlim` points to `{ rlim_cur, rlim_max }`.
    fn setrlimit(resource: i32, rlim: *const [u64; 2]) -> i32;
}

/// The scenario this process must act out, if it is a child.
fn child_mode() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Prints a line the parent looks for.
fn report(line: &str) {
    println!("\nFIBRA-CHILD {line}");
}

struct ChildRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl ChildRun {
    /// The value the child reported as `key=value` (the rest of the line).
    fn reported(&self, key: &str) -> String {
        let prefix = format!("FIBRA-CHILD {key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
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

/// Re-runs this test binary for just `test_name` with `CHILD_ENV=mode`, and
/// collects its exit status and output. Fails if it runs past the timeout.
fn run_child(test_name: &str, mode: &str) -> ChildRun {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut child = Command::new(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env("RUST_BACKTRACE", "0")
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

fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .expect("read /proc/sys/vm/max_map_count")
        .trim()
        .parse()
        .expect("a number")
}

/// Bytes of address space the process uses now (VmSize).
fn address_space_in_use() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    kib * 1024
}

/// The child's side of the spawn-limit tests: with `limit_as`, first lowers
/// RLIMIT_AS to 256 MiB above what is in use. Spawns coroutines that park
/// forever until a spawn fails (or SPAWN_CAP), reports, and exits at once
/// (dropping a runtime with tens of thousands of parked coroutines would
/// only waste time).
fn spawn_until_refused(limit_as: bool) -> ! {
    let rt = Runtime::builder()
        .workers(1)
        .stack_size(CHILD_STACK)
        .build()
        .expect("start the runtime");
    // Let the worker thread set itself up (its allocator arena, its signal
    // stack) before address space gets scarce.
    rt.block_on(|| ());
    if limit_as {
        let limit = address_space_in_use() + (256 << 20);
        let rlim = [limit, limit];
        // SAFETY: setrlimit reads the two-word struct we pass and nothing else.
        let rc = unsafe { setrlimit(RLIMIT_AS, &rlim) };
        assert_eq!(rc, 0, "setrlimit(RLIMIT_AS) failed");
        report(&format!("rlimit_as={limit}"));
    }
    let mut spawned = 0usize;
    let mut error = None;
    while spawned < SPAWN_CAP {
        match Builder::new().spawn_on(&rt, || {
            loop {
                fibra::park();
            }
        }) {
            Ok(handle) => {
                drop(handle); // detached; it parks forever
                spawned += 1;
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    report(&format!("spawned={spawned}"));
    match error {
        Some(e) => report(&format!("error={e}")),
        None => report("error=none"),
    }
    std::process::exit(0);
}

/// Runs the spawn-limit child in `mode` and returns (error message, spawned).
fn spawn_limit_outcome(test_name: &str, mode: &str) -> (String, usize, ChildRun) {
    let run = run_child(test_name, mode);
    assert!(run.status.success(), "the child exits 0; {run}");
    let spawned: usize = run.reported("spawned").parse().expect("a number");
    let error = run.reported("error");
    assert_ne!(
        error, "none",
        "{spawned} spawns succeeded: no limit was hit; {run}"
    );
    (error, spawned, run)
}

#[test]
fn spawn_failure_names_vm_max_map_count() {
    const NAME: &str = "spawn_failure_names_vm_max_map_count";
    match child_mode().as_deref() {
        Some("max-map-count") => spawn_until_refused(false),
        Some("rlimit-as") => spawn_until_refused(true),
        _ => {}
    }
    let max_maps = max_map_count();
    // Each stack takes two mappings: the cap must be out of reach of the
    // map limit for this scenario to hit it.
    if max_maps >= 2 * SPAWN_CAP {
        println!(
            "note: vm.max_map_count is {max_maps}, too high to reach with {SPAWN_CAP} \
             coroutines; checking the RLIMIT_AS report instead"
        );
        let (error, spawned, run) = spawn_limit_outcome(NAME, "rlimit-as");
        assert!(error.contains("RLIMIT_AS"), "{error:?}; {run}");
        assert!(spawned > 1_000, "only {spawned} spawned; {run}");
        return;
    }
    let (error, spawned, run) = spawn_limit_outcome(NAME, "max-map-count");
    assert!(
        error.contains("vm.max_map_count"),
        "the error names the limit: {error:?}; {run}"
    );
    assert!(
        spawned > 10_000,
        "only {spawned} coroutines before the limit; {run}"
    );
    assert!(
        spawned <= max_maps / 2,
        "{spawned} stacks cannot fit in {max_maps} mappings; {run}"
    );
}

#[test]
fn spawn_failure_names_rlimit_as() {
    const NAME: &str = "spawn_failure_names_rlimit_as";
    if child_mode().as_deref() == Some("rlimit-as") {
        spawn_until_refused(true);
    }
    let (error, spawned, run) = spawn_limit_outcome(NAME, "rlimit-as");
    assert!(
        error.contains("RLIMIT_AS"),
        "the error names the limit: {error:?}; {run}"
    );
    // 256 MiB of room, each stack at least 64 KiB + a guard page (with a
    // little slack in case the process unmapped something meanwhile).
    let per_stack = CHILD_STACK + 4096;
    assert!(spawned > 1_000, "only {spawned} spawned; {run}");
    assert!(
        spawned <= (256 << 20) / per_stack + 64,
        "{spawned} stacks of {per_stack} bytes cannot fit in 256 MiB; {run}"
    );
}

/// Sends on a channel when dropped: tells the parent the coroutine unwound.
struct NotifyOnDrop(mpsc::Sender<()>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[test]
fn detached_panic_is_reported_once_with_coroutine_name() {
    const NAME: &str = "detached_panic_is_reported_once_with_coroutine_name";
    if child_mode().as_deref() == Some("detached-panic") {
        let rt = Runtime::builder()
            .workers(1)
            .build()
            .expect("start the runtime");
        let (unwound_tx, unwound_rx) = mpsc::channel();
        let handle = Builder::new()
            .name("reporter-test")
            .spawn_on(&rt, move || {
                let _notify = NotifyOnDrop(unwound_tx);
                panic!("detached coroutine failed with code {}", black_box(7));
            })
            .expect("spawn");
        drop(handle); // detached: nobody will join it
        unwound_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the panicking coroutine unwound");
        // The only worker survived the panic.
        report(&format!("survived={}", rt.block_on(|| 6 * 7)));
        drop(rt);
        return;
    }
    let run = run_child(NAME, "detached-panic");
    assert!(run.status.success(), "the child exits 0; {run}");
    assert_eq!(run.reported("survived"), "42", "{run}");
    assert_eq!(
        run.stderr.matches("coroutine 'reporter-test'").count(),
        1,
        "reported exactly once, by name; {run}"
    );
    assert_eq!(
        run.stderr
            .matches("detached coroutine failed with code 7")
            .count(),
        1,
        "the panic message is reported once; {run}"
    );
    let report_line = run
        .stderr
        .lines()
        .find(|l| l.contains("coroutine 'reporter-test'"))
        .expect("counted above");
    assert!(report_line.contains("panicked"), "{report_line:?}; {run}");
}

//! Limits of `Stack::new`: when the kernel refuses more stacks (checked in a
//! child process that maps stacks until it fails) the error names the limit
//! that was hit with its current value; absurd sizes are rejected as invalid
//! input; small sizes round up and the whole usable range is writable.

use std::io::{self, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fibra::stack::{MIN_STACK_SIZE, Stack};

/// Set in a child process to the scenario it must act out.
const CHILD_ENV: &str = "FIBRA_TEST_CHILD";

/// How long a child may run before the test kills it and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Most stacks a child maps before giving up on hitting a limit.
const MAX_STACKS: usize = 200_000;

/// Usable bytes of each stack the child maps.
const CHILD_STACK_SIZE: usize = 64 * 1024;

/// Above this `vm.max_map_count`, exhausting mappings would take too long;
/// the child lowers its address-space limit instead.
const HIGH_MAX_MAP_COUNT: usize = 1_000_000;

/// Address space a child may still map once it lowers `RLIMIT_AS`.
const ADDRESS_SPACE_HEADROOM: u64 = 64 * 1024 * 1024;

/// `RLIMIT_AS` on x86_64 Linux (libc is not a dev-dependency).
const RLIMIT_AS: i32 = 9;

// SAFETY: matches glibc's `int setrlimit(int, const struct rlimit *)`,
// where `struct rlimit` is two 64-bit words on x86_64.
unsafe extern "C" {
    /// setrlimit(2); `rlim` points to `{ rlim_cur, rlim_max }`.
    fn setrlimit(resource: i32, rlim: *const [u64; 2]) -> i32;
}

fn child_mode() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

fn read_max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .expect("read /proc/sys/vm/max_map_count")
        .trim()
        .parse()
        .expect("numeric vm.max_map_count")
}

/// This process's current address-space size in bytes (VmSize).
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

/// Lowers this process's `RLIMIT_AS` to `limit` bytes (soft and hard).
fn limit_address_space(limit: u64) {
    let rlim = [limit, limit];
    // SAFETY: setrlimit reads the two-word struct we pass and nothing else.
    let rc = unsafe { setrlimit(RLIMIT_AS, &rlim) };
    assert_eq!(
        rc,
        0,
        "setrlimit(RLIMIT_AS) failed: {}",
        io::Error::last_os_error()
    );
}

/// Child side: maps stacks until `Stack::new` fails, then prints what it got.
/// With `limit_address_space` set it first caps `RLIMIT_AS` a little above
/// what the process already uses.
fn exhaust_stacks(lower_address_space: bool) {
    if lower_address_space {
        let limit = address_space_in_use() + ADDRESS_SPACE_HEADROOM;
        limit_address_space(limit);
        println!("\nFIBRA-CHILD limit={limit}");
    }
    // Reserved up front: growing the Vec near the limit could fail itself.
    let mut stacks = Vec::with_capacity(MAX_STACKS);
    let err = loop {
        if stacks.len() == MAX_STACKS {
            println!("\nFIBRA-CHILD count={} no-error", stacks.len());
            return;
        }
        match Stack::new(CHILD_STACK_SIZE) {
            Ok(stack) => stacks.push(stack),
            Err(err) => break err,
        }
    };
    let count = stacks.len();
    drop(stacks);
    println!("\nFIBRA-CHILD count={count} kind={:?}", err.kind());
    println!("FIBRA-CHILD-MESSAGE {err}");
}

struct ChildRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl ChildRun {
    /// The `key=value` the child reported for `key`.
    fn reported(&self, key: &str) -> String {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("FIBRA-CHILD "))
            .flat_map(|r| r.split_whitespace())
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("child did not report {key}; {self}"))
            .to_string()
    }

    /// The error message the child printed.
    fn message(&self) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("FIBRA-CHILD-MESSAGE "))
            .unwrap_or_else(|| panic!("child printed no error message; {self}"))
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

/// Checks a child that ran into `RLIMIT_AS`.
fn assert_reports_address_space_limit(run: &ChildRun) {
    let limit = run.reported("limit");
    let message = run.message();
    assert!(message.contains("RLIMIT_AS"), "{run}");
    assert!(
        message.contains(&format!("is {limit} bytes")),
        "the message gives the current limit {limit}; {run}"
    );
    assert!(!message.contains("vm.max_map_count"), "{run}");
    // The headroom fits some hundreds of 68 KiB stacks, not thousands.
    let count: usize = run.reported("count").parse().expect("numeric count");
    let most = (ADDRESS_SPACE_HEADROOM / (CHILD_STACK_SIZE as u64)) as usize;
    assert!(count > 0 && count < most, "{count} stacks; {run}");
}

#[test]
fn exhausting_stacks_reports_the_limit_that_was_hit() {
    const NAME: &str = "exhausting_stacks_reports_the_limit_that_was_hit";
    let max_map_count = read_max_map_count();
    let lower_address_space = max_map_count > HIGH_MAX_MAP_COUNT;
    if child_mode().as_deref() == Some("exhaust") {
        exhaust_stacks(lower_address_space);
        return;
    }
    let run = run_child(NAME, "exhaust");
    assert!(run.status.success(), "{run}");
    assert!(
        !run.stdout.contains("no-error"),
        "Stack::new never failed; {run}"
    );
    assert_eq!(run.reported("kind"), "OutOfMemory", "{run}");
    if lower_address_space {
        assert_reports_address_space_limit(&run);
        return;
    }
    let message = run.message();
    assert!(message.contains("vm.max_map_count"), "{run}");
    assert!(
        message.contains(&format!("vm.max_map_count is {max_map_count}")),
        "the message gives the current value {max_map_count}; {run}"
    );
    // Two mappings per stack: the child got close to half the limit (the
    // process's own mappings take the rest).
    let count: usize = run.reported("count").parse().expect("numeric count");
    assert!(count < max_map_count / 2, "{count} stacks; {run}");
    assert!(count > max_map_count / 2 - 1_000, "{count} stacks; {run}");
}

#[test]
fn exhausting_address_space_reports_rlimit_as() {
    const NAME: &str = "exhausting_address_space_reports_rlimit_as";
    if child_mode().as_deref() == Some("exhaust-address-space") {
        exhaust_stacks(true);
        return;
    }
    let run = run_child(NAME, "exhaust-address-space");
    assert!(run.status.success(), "{run}");
    assert!(
        !run.stdout.contains("no-error"),
        "Stack::new never failed; {run}"
    );
    assert_eq!(run.reported("kind"), "OutOfMemory", "{run}");
    assert_reports_address_space_limit(&run);
}

#[test]
fn stack_of_usize_max_bytes_is_invalid_input() {
    let err = Stack::new(usize::MAX).expect_err("usize::MAX bytes cannot be mapped");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("too large"), "{err}");
}

/// The largest request whose page rounding does not overflow but whose
/// mapping length (usable bytes + guard page) does, with 4 KiB pages.
const NEAR_MAX_SIZE: usize = usize::MAX - 4159;

// The guard page added to a size this large must not overflow the mapping
// length (it once did: debug builds panicked, release builds wrote the header
// below a one-page mapping). Run in a child so that either failure stays here.
#[test]
fn stack_of_size_near_usize_max_is_invalid_input() {
    const NAME: &str = "stack_of_size_near_usize_max_is_invalid_input";
    if child_mode().as_deref() == Some("near-max") {
        let err = Stack::new(NEAR_MAX_SIZE).expect_err("no such stack can be mapped");
        println!("\nFIBRA-CHILD kind={:?}", err.kind());
        return;
    }
    let run = run_child(NAME, "near-max");
    assert!(run.status.success(), "{run}");
    assert_eq!(run.reported("kind"), "InvalidInput", "{run}");
}

#[test]
fn small_stack_rounds_up_and_all_of_it_is_writable() {
    for request in [0, 1, MIN_STACK_SIZE - 1, MIN_STACK_SIZE, 40_000] {
        let stack = Stack::new(request).expect("stack can be mapped");
        let size = stack.size();
        assert!(size >= request.max(MIN_STACK_SIZE), "{request} gave {size}");
        let bottom = stack.bottom();
        assert_eq!(
            bottom as usize % 4096,
            0,
            "the usable range starts on a page"
        );
        // SAFETY: [bottom, bottom + size) is the stack's usable, writable
        // range, which this Stack owns and nothing else uses.
        unsafe {
            bottom.write_volatile(0xa5);
            bottom.add(size / 2).write_volatile(0x5a);
            bottom.add(size - 1).write_volatile(0xc3);
            assert_eq!(bottom.read_volatile(), 0xa5);
            assert_eq!(bottom.add(size / 2).read_volatile(), 0x5a);
            assert_eq!(bottom.add(size - 1).read_volatile(), 0xc3);
        }
    }
}

//! Process-level limits and reports, checked in child processes (this test
//! binary re-run with `FIBRA_TEST_CHILD` set): spawning until the kernel
//! refuses a stack names the limit that was hit (`vm.max_map_count`, or
//! `RLIMIT_AS`), and a detached coroutine's panic is reported once, by name.

mod common;

use std::hint::black_box;
use std::sync::mpsc;
use std::time::Duration;

use common::{
    ChildRun, ChildSetup, address_space_in_use, child_mode, limit_address_space, max_map_count,
    report,
};
use fibra::{Builder, Runtime};

/// How this file's children run: killed, failing the test, after 60 s, and
/// without backtraces in their panic reports.
const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(60),
    env: &[("RUST_BACKTRACE", "0")],
};

/// Spawns a child stops at, refused or not.
const SPAWN_CAP: usize = 200_000;

/// Stack size of the coroutines the spawning children create.
const CHILD_STACK: usize = 64 * 1024;

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
        limit_address_space(limit);
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
    let run = CHILD.run(test_name, mode);
    assert!(run.status.success(), "the child exits 0; {run}");
    let spawned: usize = run.reported_line("spawned").parse().expect("a number");
    let error = run.reported_line("error");
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
    let run = CHILD.run(NAME, "detached-panic");
    assert!(run.status.success(), "the child exits 0; {run}");
    assert_eq!(run.reported_line("survived"), "42", "{run}");
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

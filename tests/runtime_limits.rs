//! Process-level limits and reports, checked in child processes (this test
//! binary re-run with `FIBRA_TEST_CHILD` set).
//!
//! Stacks are bound when a coroutine first runs, so a refused mapping shows
//! at `join` (an `io::Error` payload that names the limit), not at spawn.
//! The `vm.max_map_count` children first use up the process's mappings
//! themselves (one reservation split into one-page mappings of alternating
//! protection) so that only a few thousand are left: the limit is reached
//! the same way whatever the host's `vm.max_map_count` is (65,530 by
//! default; 1,048,576 on Ubuntu 24.04 and Fedora 39+).

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ChildSetup, address_space_in_use, child_mode, limit_address_space, report};
use fibra::{Builder, JoinHandle, Runtime};

/// How this file's children run: killed, failing the test, after 60 s, and
/// without backtraces in their panic reports.
const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(60),
    env: &[("RUST_BACKTRACE", "0")],
};

/// Stack size of the coroutines the spawning children create.
const CHILD_STACK: usize = 64 * 1024;

/// Mappings the filling children leave free: room for about 1,500 stacks.
const ROOM: usize = 3_000;

// SAFETY: these match glibc's declarations on x86_64 (libc is not a
// dev-dependency of this crate).
unsafe extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
    fn mprotect(addr: *mut u8, len: usize, prot: i32) -> i32;
}
const PROT_NONE: i32 = 0;
const PROT_READ: i32 = 1;
const MAP_PRIVATE: i32 = 0x02;
const MAP_ANONYMOUS: i32 = 0x20;
const MAP_NORESERVE: i32 = 0x4000;
const PAGE: usize = 4096;

/// Lines of /proc/self/maps: this process's mappings.
fn mappings_in_use() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .count()
}

/// Uses up this process's mappings until about `room` are left: reserves
/// one region and turns every other page readable, so that each page is a
/// mapping of its own. Costs address space only (nothing is touched).
fn fill_mappings_leaving(room: usize) {
    let limit = common::max_map_count();
    let used = mappings_in_use();
    let fill = limit.saturating_sub(used + room);
    if fill < 2 {
        return;
    }
    // SAFETY: a fresh anonymous reservation; nothing else refers to it and
    // it is never unmapped (the child exits with it).
    let base = unsafe {
        mmap(
            std::ptr::null_mut(),
            fill * PAGE,
            PROT_NONE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(base as isize, -1, "reserve {fill} pages");
    for page in (1..fill).step_by(2) {
        // SAFETY: the page lies inside the reservation made above.
        let rc = unsafe { mprotect(base.add(page * PAGE), PAGE, PROT_READ) };
        assert_eq!(rc, 0, "split page {page} of {fill}");
    }
    let left = limit.saturating_sub(mappings_in_use());
    report(&format!("mappings_left={left}"));
}

/// A coroutine that reports that it started and then parks until cancelled.
fn spawn_parked(rt: &Runtime, started: &Arc<AtomicUsize>, stack: usize) -> JoinHandle<()> {
    let started = Arc::clone(started);
    Builder::new()
        .stack_size(stack)
        .spawn_on(rt, move || {
            started.fetch_add(1, Ordering::SeqCst);
            loop {
                fibra::park();
            }
        })
        .expect("spawning needs no stack")
}

/// Waits until `started` reaches `count` or `handle` finishes (its stack
/// was refused); true if it started.
fn started_or_failed(started: &AtomicUsize, count: usize, handle: &JoinHandle<()>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if started.load(Ordering::SeqCst) >= count {
            return true;
        }
        if handle.is_finished() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "coroutine {count} neither started nor failed"
        );
        std::thread::yield_now();
    }
}

/// The error a coroutine whose stack was refused gives at `join`.
fn start_error(handle: JoinHandle<()>) -> String {
    let payload = handle.join().expect_err("a coroutine that could not start");
    match payload.downcast::<std::io::Error>() {
        Ok(error) => error.to_string(),
        Err(_) => panic!("the join payload of a refused stack is an io::Error"),
    }
}

/// Spawns coroutines that park forever, one at a time, until one cannot
/// start; returns the handles of those that started and the error.
fn start_until_refused(rt: &Runtime, cap: usize) -> (Vec<JoinHandle<()>>, String) {
    let started = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for n in 1..=cap {
        let handle = spawn_parked(rt, &started, CHILD_STACK);
        if !started_or_failed(&started, n, &handle) {
            return (handles, start_error(handle));
        }
        handles.push(handle);
    }
    panic!("{cap} coroutines started: no limit was hit");
}

/// The child of the spawn-limit tests: with `limit_as`, lowers RLIMIT_AS
/// to 256 MiB above what is in use; otherwise uses up all but ROOM
/// mappings. Reports how many coroutines started and the error.
fn start_until_refused_child(limit_as: bool) -> ! {
    let rt = Runtime::builder()
        .workers(1)
        .stack_size(CHILD_STACK)
        .build()
        .expect("start the runtime");
    // Let the worker thread set itself up (its allocator arena, its signal
    // stack) before mappings or address space get scarce.
    rt.block_on(|| ());
    if limit_as {
        // Half the mapping table in use, so that the explanation must tell
        // the address-space limit from the mapping limit by how close the
        // count is to the limit, not by the count being small.
        fill_mappings_leaving(common::max_map_count() / 2);
        let limit = address_space_in_use() + (256 << 20);
        limit_address_space(limit);
        report(&format!("rlimit_as={limit}"));
    } else {
        fill_mappings_leaving(ROOM);
    }
    let (handles, error) = start_until_refused(&rt, 200_000);
    report(&format!("spawned={}", handles.len()));
    report(&format!("error={error}"));
    std::process::exit(0);
}

#[test]
fn spawn_failure_names_vm_max_map_count() {
    const NAME: &str = "spawn_failure_names_vm_max_map_count";
    if child_mode().as_deref() == Some("max-map-count") {
        start_until_refused_child(false);
    }
    let max_maps = common::max_map_count();
    let run = CHILD.run(NAME, "max-map-count");
    assert!(run.status.success(), "the child exits 0; {run}");
    let spawned: usize = run.reported("spawned").parse().expect("a number");
    let error = run.reported_line("error");
    // The map-limit branch of the explanation, with the limit and the count:
    // "the process has N memory mappings and vm.max_map_count is M".
    let expected_limit = format!("vm.max_map_count is {max_maps}.");
    assert!(
        error.contains(&expected_limit),
        "the error names the limit and its value: {error:?}; {run}"
    );
    let count: usize = error
        .split("the process has ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the error gives the mapping count: {error:?}; {run}"));
    // /proc/self/maps also lists [vsyscall], which the limit does not count.
    assert!(
        count + 8 >= max_maps && count <= max_maps + 1,
        "the count is at the limit: {count} of {max_maps}; {run}"
    );
    assert!(
        error.contains("sysctl -w vm.max_map_count="),
        "says how to raise it: {error:?}"
    );
    // ROOM mappings left: about ROOM / 2 stacks fit, fewer what the runtime
    // and the allocator map meanwhile.
    assert!(
        (ROOM / 4..=ROOM / 2 + 2).contains(&spawned),
        "{spawned} coroutines started in room for {ROOM} mappings; {run}"
    );
}

#[test]
fn spawn_failure_names_rlimit_as() {
    const NAME: &str = "spawn_failure_names_rlimit_as";
    if child_mode().as_deref() == Some("rlimit-as") {
        start_until_refused_child(true);
    }
    let run = CHILD.run(NAME, "rlimit-as");
    assert!(run.status.success(), "the child exits 0; {run}");
    let spawned: usize = run.reported("spawned").parse().expect("a number");
    let error = run.reported_line("error");
    let limit = run.reported("rlimit_as");
    assert!(
        error.contains(&format!("RLIMIT_AS (ulimit -v) is {limit} bytes")),
        "the error names the limit and its value: {error:?}; {run}"
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

#[test]
fn stacks_freed_at_the_mapping_limit_serve_spawns_from_any_thread() {
    const NAME: &str = "stacks_freed_at_the_mapping_limit_serve_spawns_from_any_thread";
    if child_mode().as_deref() == Some("reuse-at-limit") {
        let rt = Runtime::builder()
            .workers(2)
            .stack_size(CHILD_STACK)
            .build()
            .expect("start the runtime");
        rt.block_on(|| ());
        fill_mappings_leaving(ROOM);
        let (mut handles, error) = start_until_refused(&rt, 200_000);
        report(&format!("spawned={}", handles.len()));
        report(&format!("error={error}"));
        // Free 500 stacks: cancel and join 500 of the parked coroutines.
        for handle in handles.drain(..500) {
            handle.cancel();
            assert!(handle.join().is_err(), "cancelled");
        }
        // Then 100 spawns from this plain thread, on whichever worker runs
        // them: all must start on the freed stacks.
        let started = Arc::new(AtomicUsize::new(0));
        let mut failed = 0;
        for n in 1..=100 {
            let handle = spawn_parked(&rt, &started, CHILD_STACK);
            if !started_or_failed(&started, n - failed, &handle) {
                failed += 1;
                report(&format!("late_error={}", start_error(handle)));
            }
        }
        report(&format!("late_failed={failed}"));
        std::process::exit(0);
    }
    let run = CHILD.run(NAME, "reuse-at-limit");
    assert!(run.status.success(), "the child exits 0; {run}");
    assert!(
        run.reported_line("error").contains("vm.max_map_count"),
        "the limit was reached first; {run}"
    );
    assert_eq!(
        run.reported("late_failed"),
        "0",
        "every spawn after freeing 500 stacks started; {run}"
    );
}

#[test]
fn pools_keep_a_small_share_of_the_mapping_budget() {
    const NAME: &str = "pools_keep_a_small_share_of_the_mapping_budget";
    if child_mode().as_deref() == Some("bursts") {
        let rt = Runtime::builder()
            .workers(2)
            .build()
            .expect("start the runtime");
        rt.block_on(|| ());
        let baseline = mappings_in_use();
        // Six bursts of 5,200 coroutines alive at once, each burst at its
        // own stack size; then none is alive.
        for burst in 0..6 {
            let size = (32 + 16 * burst) * 1024;
            let started = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..5_200)
                .map(|_| spawn_parked(&rt, &started, size))
                .collect();
            let deadline = Instant::now() + Duration::from_secs(30);
            while started.load(Ordering::SeqCst) < handles.len() {
                assert!(Instant::now() < deadline, "burst {burst} did not start");
                std::thread::sleep(Duration::from_millis(1));
            }
            for handle in &handles {
                handle.cancel();
            }
            for handle in handles {
                assert!(handle.join().is_err());
            }
        }
        let stats = fibra::stack::stats();
        report(&format!("pooled={}", stats.pooled));
        report(&format!("budget={}", fibra::stack::pool_budget()));
        report(&format!(
            "extra_mappings={}",
            mappings_in_use().saturating_sub(baseline)
        ));
        // A new size: as many coroutines as the limit allows still start.
        let started = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..20_000)
            .map(|_| spawn_parked(&rt, &started, 200 * 1024))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while started.load(Ordering::SeqCst) + handles.iter().filter(|h| h.is_finished()).count()
            < handles.len()
        {
            assert!(Instant::now() < deadline, "the new size did not start");
            std::thread::sleep(Duration::from_millis(1));
        }
        report(&format!(
            "new_size_started={}",
            started.load(Ordering::SeqCst)
        ));
        std::process::exit(0);
    }
    let run = CHILD.run(NAME, "bursts");
    assert!(run.status.success(), "the child exits 0; {run}");
    let pooled: usize = run.reported("pooled").parse().expect("a number");
    let budget: usize = run.reported("budget").parse().expect("a number");
    let extra: usize = run.reported("extra_mappings").parse().expect("a number");
    assert!(
        budget <= common::max_map_count() / 2 / 16 + 64,
        "the budget is a small share"
    );
    assert!(
        pooled <= budget,
        "{pooled} pooled over a budget of {budget}"
    );
    assert!(
        extra <= 2 * budget + 256,
        "with no coroutine alive the process holds {extra} more mappings; {run}"
    );
    assert_eq!(
        run.reported("new_size_started"),
        "20000",
        "a new size still gets its stacks; {run}"
    );
}

#[test]
fn a_refused_mapping_unmaps_pooled_stacks_of_other_sizes_and_retries() {
    const NAME: &str = "a_refused_mapping_unmaps_pooled_stacks_of_other_sizes_and_retries";
    if child_mode().as_deref() == Some("trim") {
        let rt = Runtime::builder()
            .workers(1)
            .stack_size(CHILD_STACK)
            .build()
            .expect("start the runtime");
        rt.block_on(|| ());
        fill_mappings_leaving(ROOM);
        // Fill the room with 64 KiB stacks, then free them all: they go to
        // the pools (fewer than the budget), holding the room.
        let (handles, _) = start_until_refused(&rt, 200_000);
        let first = handles.len();
        for handle in &handles {
            handle.cancel();
        }
        for handle in handles {
            assert!(handle.join().is_err());
        }
        report(&format!("pooled={}", fibra::stack::stats().pooled));
        // A new size finds no stack of its own in the pools and no mapping
        // left: unless the pools are emptied, nothing starts.
        let started = Arc::new(AtomicUsize::new(0));
        let mut second = 0;
        for n in 1..=first {
            let handle = spawn_parked(&rt, &started, 2 * CHILD_STACK);
            if !started_or_failed(&started, n, &handle) {
                break;
            }
            second += 1;
        }
        report(&format!("first={first} second={second}"));
        std::process::exit(0);
    }
    let run = CHILD.run(NAME, "trim");
    assert!(run.status.success(), "the child exits 0; {run}");
    let pooled: usize = run.reported("pooled").parse().expect("a number");
    let first: usize = run.reported("first").parse().expect("a number");
    let second: usize = run.reported("second").parse().expect("a number");
    assert!(pooled + 10 >= first, "the freed stacks were pooled; {run}");
    // The larger stacks take the same two mappings each: as many fit.
    assert!(
        second + 10 >= first,
        "after freeing {first} stacks only {second} of another size started; {run}"
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
            .name("reporter-test".into())
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

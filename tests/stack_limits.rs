//! Limits of `Stack::new`: when the kernel refuses more stacks (checked in a
//! child process that maps stacks until it fails) the error names the limit
//! that was hit with its current value; absurd sizes are rejected as invalid
//! input (by `Stack::new`, by a runtime built with one, and by a spawn
//! asking for one); small sizes round up and the whole usable range is
//! writable.

mod common;

use std::io;
use std::time::Duration;

use common::{
    ChildRun, ChildSetup, address_space_in_use, child_mode, limit_address_space, max_map_count,
    report,
};
use fibra::stack::{MIN_STACK_SIZE, Stack};

/// How this file's children run: killed, failing the test, after 60 s.
const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(60),
    env: &[],
};

/// Most stacks a child maps before giving up on hitting a limit.
const MAX_STACKS: usize = 200_000;

/// Usable bytes of each stack the child maps.
const CHILD_STACK_SIZE: usize = 64 * 1024;

/// Above this `vm.max_map_count`, exhausting mappings would take too long;
/// the child lowers its address-space limit instead.
const HIGH_MAX_MAP_COUNT: usize = 1_000_000;

/// Address space a child may still map once it lowers `RLIMIT_AS`.
const ADDRESS_SPACE_HEADROOM: u64 = 64 * 1024 * 1024;

/// Child side: maps stacks until `Stack::new` fails, then prints what it got.
/// With `limit_address_space` set it first caps `RLIMIT_AS` a little above
/// what the process already uses.
fn exhaust_stacks(lower_address_space: bool) {
    if lower_address_space {
        let limit = address_space_in_use() + ADDRESS_SPACE_HEADROOM;
        limit_address_space(limit);
        report(&format!("limit={limit}"));
    }
    // Reserved up front: growing the Vec near the limit could fail itself.
    let mut stacks = Vec::with_capacity(MAX_STACKS);
    let err = loop {
        if stacks.len() == MAX_STACKS {
            report(&format!("count={} no-error", stacks.len()));
            return;
        }
        match Stack::new(CHILD_STACK_SIZE) {
            Ok(stack) => stacks.push(stack),
            Err(err) => break err,
        }
    };
    let count = stacks.len();
    drop(stacks);
    report(&format!("count={count} kind={:?}", err.kind()));
    println!("FIBRA-CHILD-MESSAGE {err}");
}

/// Runs an `exhaust_stacks` child in `mode` and checks that it exited
/// cleanly after `Stack::new` failed with `OutOfMemory`.
fn run_exhaust_child(test_name: &str, mode: &str) -> ChildRun {
    let run = CHILD.run(test_name, mode);
    assert!(run.status.success(), "{run}");
    assert!(
        !run.stdout.contains("no-error"),
        "Stack::new never failed; {run}"
    );
    assert_eq!(run.reported("kind"), "OutOfMemory", "{run}");
    run
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
    let max_map_count = max_map_count();
    let lower_address_space = max_map_count > HIGH_MAX_MAP_COUNT;
    if child_mode().as_deref() == Some("exhaust") {
        exhaust_stacks(lower_address_space);
        return;
    }
    let run = run_exhaust_child(NAME, "exhaust");
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
    let run = run_exhaust_child(NAME, "exhaust-address-space");
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
        report(&format!("kind={:?}", err.kind()));
        return;
    }
    let run = CHILD.run(NAME, "near-max");
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

// A runtime's default stack size is checked once, when it is built (a spawn
// with that size does not check it again); a size given to one spawn is
// checked by that spawn. Both refuse an absurd size with `InvalidInput`.
#[test]
fn absurd_stack_sizes_are_refused_when_the_runtime_is_built_or_at_spawn() {
    let err = fibra::Runtime::builder()
        .workers(1)
        .stack_size(usize::MAX)
        .build()
        .expect_err("a runtime of usize::MAX-byte stacks cannot be built");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("too large"), "{err}");

    let rt = fibra::Runtime::builder().workers(1).build().unwrap();
    let err = fibra::Builder::new()
        .stack_size(usize::MAX)
        .spawn_on(&rt, || ())
        .expect_err("no coroutine gets a usize::MAX-byte stack");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("too large"), "{err}");
    // The runtime's own size still works.
    assert_eq!(rt.spawn(|| 7).join().unwrap(), 7);
}

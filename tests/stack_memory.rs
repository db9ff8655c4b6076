//! What a coroutine's stack must hold, and what a pooled stack keeps:
//!
//! - a closure is moved through its coroutine's stack, so spawning one that
//!   cannot fit is refused with `InvalidInput` (before, a 200 KiB capture on
//!   a 256 KiB stack passed the check and overflowed), and the largest one
//!   accepted runs without overflowing (checked in a child process: an
//!   overflow aborts);
//! - pages a deep recursion touched are given back when the stack is pooled.

mod common;

use std::hint::black_box;
use std::io;
use std::time::Duration;

use common::{ChildSetup, child_mode, report};
use fibra::coroutine::{Builder as RawBuilder, Coroutine, CoroutineResult};
use fibra::{Builder, Runtime};

const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(30),
    env: &[("RUST_BACKTRACE", "0")],
};

const STACK: usize = 256 * 1024;

/// A closure capturing `N` bytes that sums them.
fn summing<const N: usize>() -> impl FnOnce() -> u64 + Send + 'static {
    let data = [1u8; N];
    move || black_box(&data).iter().map(|&b| u64::from(b)).sum()
}

fn one_worker() -> Runtime {
    Runtime::builder()
        .workers(1)
        .thread_name("stack-memory")
        .build()
        .expect("start the runtime")
}

#[test]
fn a_closure_too_large_for_its_stack_is_refused_at_spawn() {
    let rt = one_worker();
    let error = Builder::new()
        .stack_size(STACK)
        .spawn_on(&rt, summing::<{ 200 * 1024 }>())
        .expect_err("200 KiB moved twice cannot fit on 256 KiB");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(
        error
            .to_string()
            .contains("too many for a 262144-byte stack"),
        "{error}"
    );
    let f = summing::<{ 200 * 1024 }>();
    let raw = RawBuilder::new().stack_size(STACK).build(move |_, ()| f());
    let error: io::Error = raw
        .map(|_: Coroutine<(), (), u64>| ())
        .expect_err("refused");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

/// Spawns the largest of a few closure sizes that `Builder::spawn_on`
/// accepts on a 256 KiB stack; returns its size and handle.
fn spawn_largest_accepted(rt: &Runtime) -> (usize, fibra::JoinHandle<u64>) {
    macro_rules! try_sizes {
        ($($kib:literal),*) => {$(
            if let Ok(handle) = Builder::new()
                .stack_size(STACK)
                .spawn_on(rt, summing::<{ $kib * 1024 }>())
            {
                return ($kib * 1024, handle);
            }
        )*};
    }
    try_sizes!(124, 120, 112, 100, 88, 76, 64, 56, 48, 40, 36, 32);
    panic!("no closure of 32 KiB or more fits on a 256 KiB stack");
}

/// As `spawn_largest_accepted`, for a raw coroutine.
fn build_largest_accepted() -> (usize, Coroutine<(), (), u64>) {
    macro_rules! try_sizes {
        ($($kib:literal),*) => {$(
            let f = summing::<{ $kib * 1024 }>();
            if let Ok(co) = RawBuilder::new().stack_size(STACK).build(move |_, ()| f()) {
                return ($kib * 1024, co);
            }
        )*};
    }
    try_sizes!(124, 120, 112, 100, 88, 76, 64, 56, 48, 40, 36, 32);
    panic!("no closure of 32 KiB or more fits on a 256 KiB stack");
}

#[test]
fn the_largest_accepted_closure_runs_without_overflowing() {
    const NAME: &str = "the_largest_accepted_closure_runs_without_overflowing";
    if child_mode().as_deref() == Some("large") {
        // The probing below builds many large closures on this thread's
        // stack (an unoptimised build gives each its own slot).
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(run_largest_accepted)
            .expect("spawn")
            .join()
            .expect("ran");
        return;
    }
    let run = CHILD.run(NAME, "large");
    assert!(run.status.success(), "no overflow; {run}");
    for kind in ["scheduled", "raw"] {
        let size = run.reported(&format!("{kind}_size"));
        eprintln!("largest {kind} closure accepted on a 256 KiB stack: {size} bytes");
        assert_eq!(run.reported(&format!("{kind}_sum")), size, "{run}");
    }
}

fn run_largest_accepted() {
    let rt = one_worker();
    let (size, handle) = spawn_largest_accepted(&rt);
    report(&format!("scheduled_size={size}"));
    report(&format!("scheduled_sum={}", handle.join().expect("ran")));
    let (size, mut raw) = build_largest_accepted();
    report(&format!("raw_size={size}"));
    match raw.resume(()) {
        CoroutineResult::Return(sum) => report(&format!("raw_sum={sum}")),
        CoroutineResult::Yield(()) => unreachable!(),
    }
}

// SAFETY: matches glibc's `int mincore(void *, size_t, unsigned char *)`.
unsafe extern "C" {
    fn mincore(addr: *mut u8, len: usize, vec: *mut u8) -> i32;
}

/// Touches `depth` frames of 4 KiB each below the caller.
#[inline(never)]
fn recurse(depth: usize) -> u64 {
    let mut frame = [0u8; 4096];
    frame[0] = depth as u8 | 1;
    black_box(&mut frame);
    if depth == 0 {
        return u64::from(frame[0]);
    }
    recurse(depth - 1) + u64::from(black_box(&frame)[4095])
}

/// Pages of [from, to) resident in memory, by mincore(2).
fn resident_pages(from: usize, to: usize) -> usize {
    let page = 4096;
    let from = from & !(page - 1);
    let pages = (to - from) / page;
    let mut vec = vec![0u8; pages];
    // SAFETY: mincore reads page tables for the range and writes one byte
    // per page into `vec`, which has room for all of them.
    let rc = unsafe { mincore(from as *mut u8, pages * page, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

#[test]
fn pages_a_deep_recursion_touched_are_given_back_when_the_stack_is_pooled() {
    let rt = one_worker();
    // The coroutine touches about 200 KiB of its 256 KiB stack and says
    // where its stack's top is.
    let top = rt.block_on(|| {
        let marker = 0u8;
        black_box(recurse(50));
        black_box(&marker) as *const u8 as usize
    });
    let deep = (top - 220 * 1024, top - 24 * 1024);
    // A worker gives pages back when it goes idle (the frames here hold
    // mostly zeros, which the check on release cannot tell from untouched
    // pages).
    common::wait_until_workers_sleep("stack-memory", 1);
    assert_eq!(
        resident_pages(deep.0, deep.1),
        0,
        "the touched pages below the top 16 KiB were given back"
    );
    // The stack is pooled and reused: the next coroutine's frames are at
    // the same place, and shallow use touches nothing deep.
    let again = rt.block_on(|| {
        let marker = 0u8;
        black_box(&marker) as *const u8 as usize
    });
    assert_eq!(again, top, "the pooled stack was reused");
    common::wait_until_workers_sleep("stack-memory", 1);
    assert_eq!(resident_pages(deep.0, deep.1), 0);
    // Deep again, well after the last idle pass that gave pages back (they
    // are given back at most every 50 ms): the next idle pass does it again.
    std::thread::sleep(Duration::from_millis(100));
    let third = rt.block_on(|| {
        let marker = 0u8;
        black_box(recurse(50));
        black_box(&marker) as *const u8 as usize
    });
    assert_eq!(third, top, "the pooled stack was reused again");
    common::wait_until_workers_sleep("stack-memory", 1);
    assert_eq!(
        resident_pages(deep.0, deep.1),
        0,
        "a later deep use was given back too"
    );
}

/// Touches `depth` frames of 4 KiB each, filled with non-zero bytes.
#[inline(never)]
fn recurse_filled(depth: usize) -> u64 {
    let mut frame = [0xABu8; 4096];
    black_box(&mut frame);
    if depth == 0 {
        return u64::from(frame[0]);
    }
    recurse_filled(depth - 1) + u64::from(black_box(&frame)[4095])
}

#[test]
fn a_deep_stack_released_on_a_plain_thread_gives_its_pages_back_at_once() {
    // A raw coroutine on this thread: no worker, no idle moment; only the
    // check on release can see that it went deep.
    let mut co: Coroutine<(), (), usize> = RawBuilder::new()
        .stack_size(STACK)
        .build(|_, ()| {
            let marker = 0u8;
            black_box(recurse_filled(50));
            black_box(&marker) as *const u8 as usize
        })
        .expect("a stack");
    let top = match co.resume(()) {
        CoroutineResult::Return(top) => top,
        CoroutineResult::Yield(()) => unreachable!(),
    };
    assert!(co.done());
    let deep = (top - 220 * 1024, top - 24 * 1024);
    assert_eq!(
        resident_pages(deep.0, deep.1),
        0,
        "pages below the top 16 KiB were given back when the stack was pooled"
    );
}

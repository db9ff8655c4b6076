//! Behaviour of raw coroutines through the public API: values crossing
//! `resume`/`suspend`, return values, panics, drops (forced unwinding), nesting,
//! many live coroutines, stack use, `Builder` options and backtraces taken on a
//! coroutine stack.

mod common;

use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::rc::Rc;

use common::panic_message;
use fibra::coroutine::{Builder, Coroutine, CoroutineResult, Yielder};
use fibra::stack::{DEFAULT_STACK_SIZE, MIN_STACK_SIZE};

/// Adds one to a shared counter when dropped.
struct DropCounter(Rc<Cell<usize>>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Appends its label to a shared log when dropped.
struct Logged(&'static str, Rc<RefCell<Vec<&'static str>>>);

impl Drop for Logged {
    fn drop(&mut self) {
        self.1.borrow_mut().push(self.0);
    }
}

/// Resumes `co` and returns the yielded value, failing the test otherwise.
fn expect_yield<I, Y, R: std::fmt::Debug>(co: &mut Coroutine<I, Y, R>, input: I) -> Y {
    match co.resume(input) {
        CoroutineResult::Yield(y) => y,
        CoroutineResult::Return(r) => panic!("expected a yield, the coroutine returned {r:?}"),
    }
}

// ---------------------------------------------------------------------------
// Values in and out

#[test]
fn first_resume_input_becomes_closure_argument() {
    let mut co = Coroutine::new(|_y: &Yielder<u32, ()>, first: u32| first * 3);
    assert!(!co.started());
    assert_eq!(co.resume(14), CoroutineResult::Return(42));
}

#[test]
fn integers_pass_both_ways_through_resume_and_suspend() {
    let mut co = Coroutine::new(|y: &Yielder<i64, i64>, first: i64| {
        let mut total = first;
        for _ in 0..3 {
            total += y.suspend(total);
        }
        total
    });
    assert_eq!(co.resume(-5), CoroutineResult::Yield(-5));
    assert_eq!(co.resume(10), CoroutineResult::Yield(5));
    assert_eq!(co.resume(i64::MAX - 5), CoroutineResult::Yield(i64::MAX));
    assert_eq!(co.resume(i64::MIN), CoroutineResult::Return(-1));

    // Different widths and a 16-byte-aligned type (u128) in each direction.
    let mut co = Coroutine::new(|y: &Yielder<u8, u128>, first: u8| {
        let second = y.suspend(u128::from(first) << 100);
        let third = y.suspend(u128::MAX - u128::from(second));
        u16::from(first) * 256 + u16::from(third)
    });
    assert_eq!(co.resume(3), CoroutineResult::Yield(3u128 << 100));
    assert_eq!(co.resume(255), CoroutineResult::Yield(u128::MAX - 255));
    assert_eq!(co.resume(7), CoroutineResult::Return(3 * 256 + 7));
}

#[test]
fn strings_pass_both_ways_and_as_return_value() {
    let mut co = Coroutine::new(|y: &Yielder<String, String>, first: String| {
        let mut seen = vec![first.clone()];
        let mut next = y.suspend(format!("{first}!"));
        while next != "stop" {
            seen.push(next.clone());
            next = y.suspend(next.to_uppercase());
        }
        seen.join("+")
    });
    assert_eq!(
        co.resume("hello".to_string()),
        CoroutineResult::Yield("hello!".to_string())
    );
    assert_eq!(
        co.resume("a longer string that lives on the heap".to_string()),
        CoroutineResult::Yield("A LONGER STRING THAT LIVES ON THE HEAP".to_string())
    );
    assert_eq!(
        co.resume("stop".to_string()),
        CoroutineResult::Return("hello+a longer string that lives on the heap".to_string())
    );
}

/// 256 bytes: larger than any register, passed through memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Big([u64; 32]);

impl Big {
    fn pattern(seed: u64) -> Big {
        let mut words = [0u64; 32];
        for (i, w) in words.iter_mut().enumerate() {
            *w = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((i as u64) << 56) ^ (i as u64);
        }
        Big(words)
    }
}

#[test]
fn large_struct_passes_both_ways_through_resume_and_suspend() {
    assert_eq!(std::mem::size_of::<Big>(), 256);
    let mut co = Coroutine::new(|y: &Yielder<Big, Big>, first: Big| {
        let mut current = first;
        for round in 0..3u64 {
            let mut reply = current.clone();
            reply.0.reverse();
            reply.0[0] ^= round;
            current = y.suspend(reply);
        }
        current
    });
    for (round, seed) in [11u64, 22, 33].into_iter().enumerate() {
        let sent = Big::pattern(seed);
        let mut expected = sent.clone();
        expected.0.reverse();
        expected.0[0] ^= round as u64;
        assert_eq!(co.resume(sent), CoroutineResult::Yield(expected));
    }
    assert_eq!(
        co.resume(Big::pattern(44)),
        CoroutineResult::Return(Big::pattern(44))
    );
}

thread_local! {
    static TOKENS_DROPPED: Cell<usize> = const { Cell::new(0) };
}

/// A zero-sized value whose drops are counted (per thread).
#[derive(Debug, PartialEq, Eq)]
struct Token;

impl Drop for Token {
    fn drop(&mut self) {
        TOKENS_DROPPED.with(|n| n.set(n.get() + 1));
    }
}

#[test]
fn zero_sized_values_pass_without_leaks_or_double_drops() {
    assert_eq!(std::mem::size_of::<Token>(), 0);
    let dropped = || TOKENS_DROPPED.with(Cell::get);
    assert_eq!(dropped(), 0);

    // The coroutine hands back the token it was given each time.
    let mut co = Coroutine::new(|y: &Yielder<Token, Token>, first: Token| {
        let mut held = first;
        for _ in 0..4 {
            held = y.suspend(held);
        }
        held
    });
    for round in 0..4 {
        // Each resume sends a new token and gets the previous one back.
        let back = expect_yield(&mut co, Token);
        assert_eq!(dropped(), round, "a token was dropped in transit");
        drop(back);
        assert_eq!(dropped(), round + 1);
    }
    let result = co.resume(Token);
    assert_eq!(dropped(), 4);
    assert!(matches!(result, CoroutineResult::Return(Token)));
    drop(result);
    assert_eq!(dropped(), 5);

    // Plain `()` everywhere.
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        y.suspend(());
        y.suspend(());
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(()));
    assert_eq!(co.resume(()), CoroutineResult::Yield(()));
    assert_eq!(co.resume(()), CoroutineResult::Return(()));
    assert!(co.done());
}

/// A type that demands 64-byte alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(align(64))]
struct Aligned64([u8; 64]);

#[test]
fn overaligned_values_and_captures_keep_their_alignment() {
    let capture = Aligned64([7; 64]);
    let mut co = Coroutine::new(move |y: &Yielder<Aligned64, (usize, Aligned64)>, first| {
        let capture_addr = &capture as *const Aligned64 as usize;
        let first: Aligned64 = first;
        let second = y.suspend((capture_addr % 64, first));
        let second_addr = &second as *const Aligned64 as usize;
        (
            second_addr % 64,
            Aligned64([second.0[0] + capture.0[0]; 64]),
        )
    });
    assert_eq!(
        co.resume(Aligned64([1; 64])),
        CoroutineResult::Yield((0, Aligned64([1; 64])))
    );
    assert_eq!(
        co.resume(Aligned64([2; 64])),
        CoroutineResult::Return((0, Aligned64([9; 64])))
    );
}

// ---------------------------------------------------------------------------
// Life cycle

#[test]
fn return_value_finishes_coroutine_and_releases_its_stack() {
    let mut co = Coroutine::try_new(|y: &Yielder<(), &'static str>, ()| {
        y.suspend("first");
        vec![1u8, 2, 3]
    })
    .expect("a default stack can be mapped");
    assert!(!co.started());
    assert!(!co.done());
    assert!(co.stack_size() >= DEFAULT_STACK_SIZE);

    assert_eq!(co.resume(()), CoroutineResult::Yield("first"));
    assert!(co.started());
    assert!(!co.done());

    assert_eq!(co.resume(()), CoroutineResult::Return(vec![1, 2, 3]));
    assert!(co.started());
    assert!(co.done());
    assert_eq!(co.stack_size(), 0, "a finished coroutine keeps no stack");
}

#[test]
fn coroutine_moved_between_resumes_keeps_working() {
    let make = || {
        Coroutine::new(|y: &Yielder<u32, u32>, first: u32| {
            let local = [first; 16];
            let second = y.suspend(local.iter().sum());
            let third = y.suspend(second + local[15]);
            third + local[0]
        })
    };
    let mut co = make();
    assert_eq!(co.resume(2), CoroutineResult::Yield(32));
    // Move it onto the heap, then into a Vec that reallocates.
    let mut boxed = Box::new(co);
    assert_eq!(boxed.resume(5), CoroutineResult::Yield(7));
    let mut all = vec![*boxed];
    all.extend((0..100).map(|_| make()));
    assert_eq!(all[0].resume(1), CoroutineResult::Return(3));
}

#[test]
fn panic_payload_reaches_resumer_and_coroutine_is_done() {
    let mut co = Coroutine::new(|y: &Yielder<u32, u32>, first: u32| -> u32 {
        let n = y.suspend(first + 1);
        panic!("boom after {n}");
    });
    assert_eq!(co.resume(1), CoroutineResult::Yield(2));
    let payload = catch_unwind(AssertUnwindSafe(|| co.resume(41))).expect_err("resume must panic");
    assert_eq!(panic_message(&*payload), "boom after 41");
    assert!(co.done());
    assert_eq!(co.stack_size(), 0);
}

/// A non-string panic payload.
#[derive(Debug, PartialEq, Eq)]
struct CustomPayload {
    code: u32,
    text: String,
}

#[test]
fn panic_any_payload_keeps_its_type_across_resume() {
    let mut co: Coroutine<(), (), ()> = Coroutine::new(|_y, ()| {
        panic_any(CustomPayload {
            code: 7,
            text: "custom".to_string(),
        })
    });
    let payload = catch_unwind(AssertUnwindSafe(|| co.resume(()))).expect_err("resume must panic");
    let payload = payload
        .downcast::<CustomPayload>()
        .expect("the payload keeps its type");
    assert_eq!(
        *payload,
        CustomPayload {
            code: 7,
            text: "custom".to_string()
        }
    );
    assert!(co.done());
}

#[test]
fn resuming_finished_coroutine_panics() {
    let mut co = Coroutine::new(|_y: &Yielder<(), ()>, ()| 5u8);
    assert_eq!(co.resume(()), CoroutineResult::Return(5));
    let payload =
        catch_unwind(AssertUnwindSafe(|| co.resume(()))).expect_err("second resume must panic");
    assert!(
        panic_message(&*payload).contains("already finished"),
        "unexpected message: {}",
        panic_message(&*payload)
    );
    assert!(co.done());
}

#[test]
fn resuming_coroutine_that_panicked_panics_as_finished() {
    let mut co: Coroutine<(), (), ()> = Coroutine::new(|_y, ()| panic!("first panic"));
    let first = catch_unwind(AssertUnwindSafe(|| co.resume(()))).expect_err("must panic");
    assert_eq!(panic_message(&*first), "first panic");
    let second = catch_unwind(AssertUnwindSafe(|| co.resume(()))).expect_err("must panic");
    assert!(panic_message(&*second).contains("already finished"));
}

// ---------------------------------------------------------------------------
// Drops

fn nested_level_one(y: &Yielder<(), u32>, log: &Rc<RefCell<Vec<&'static str>>>) {
    let _one = Logged("level one", log.clone());
    nested_level_two(y, log);
    unreachable!("the coroutine is dropped while suspended below");
}

#[inline(never)]
fn nested_level_two(y: &Yielder<(), u32>, log: &Rc<RefCell<Vec<&'static str>>>) {
    let _two = Logged("level two", log.clone());
    let boxed = Box::new(Logged("level two (boxed)", log.clone()));
    y.suspend(2);
    drop(boxed);
    unreachable!("the coroutine is dropped while suspended here");
}

#[test]
fn dropping_suspended_coroutine_runs_destructors_in_nested_frames() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let in_co = log.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), u32>, ()| {
        let _top = Logged("closure", in_co.clone());
        y.suspend(1);
        nested_level_one(y, &in_co);
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(1));
    assert_eq!(co.resume(()), CoroutineResult::Yield(2));
    assert!(log.borrow().is_empty());
    drop(co);
    assert_eq!(
        *log.borrow(),
        ["level two (boxed)", "level two", "level one", "closure"]
    );
    // Every clone of the log held by the coroutine is gone.
    assert_eq!(Rc::strong_count(&log), 1);
}

#[test]
fn dropping_unstarted_coroutine_drops_captures_once_without_running_it() {
    let drops = Rc::new(Cell::new(0));
    let ran = Rc::new(Cell::new(false));
    let capture = DropCounter(drops.clone());
    let ran_in = ran.clone();
    let co = Coroutine::new(move |_y: &Yielder<(), ()>, ()| {
        ran_in.set(true);
        drop(capture);
    });
    assert_eq!(drops.get(), 0);
    drop(co);
    assert_eq!(drops.get(), 1);
    assert!(!ran.get());
    assert_eq!(Rc::strong_count(&drops), 1);
    assert_eq!(Rc::strong_count(&ran), 1);
}

#[test]
fn captures_of_finished_coroutine_are_dropped_exactly_once() {
    let drops = Rc::new(Cell::new(0));
    let capture = DropCounter(drops.clone());
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        let _keep = &capture;
        y.suspend(());
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(()));
    assert_eq!(drops.get(), 0);
    assert_eq!(co.resume(()), CoroutineResult::Return(()));
    assert_eq!(drops.get(), 1);
    drop(co);
    assert_eq!(drops.get(), 1);
}

#[test]
fn drop_completes_when_coroutine_catches_forced_unwind_and_suspends_again() {
    let locals = Rc::new(Cell::new(0));
    let yields = Rc::new(Cell::new(0));
    let caught = Rc::new(Cell::new(0));
    let (l, yc, c) = (locals.clone(), yields.clone(), caught.clone());
    let mut co: Coroutine<(), DropCounter, ()> = Coroutine::new(move |y, ()| {
        let _outer = DropCounter(l.clone());
        let result = catch_unwind(AssertUnwindSafe(|| {
            let _inner = DropCounter(l.clone());
            y.suspend(DropCounter(yc.clone()))
        }));
        assert!(
            result.is_err(),
            "the first suspend returns only by unwinding"
        );
        c.set(c.get() + 1);
        // Suspend again in the middle of being dropped.
        y.suspend(DropCounter(yc.clone()));
        unreachable!("the second forced unwind is not caught");
    });
    let first = expect_yield(&mut co, ());
    drop(first);
    assert_eq!(yields.get(), 1);
    drop(co);
    assert_eq!(caught.get(), 1);
    assert_eq!(locals.get(), 2, "_inner and _outer were dropped");
    assert_eq!(
        yields.get(),
        2,
        "the value yielded during the drop was dropped"
    );
    assert_eq!(Rc::strong_count(&locals), 1);
    assert_eq!(Rc::strong_count(&yields), 1);
}

#[test]
fn drop_completes_when_coroutine_catches_forced_unwind_and_returns() {
    let returned = Rc::new(Cell::new(0));
    let r = returned.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        let caught = catch_unwind(AssertUnwindSafe(|| y.suspend(()))).is_err();
        assert!(caught);
        DropCounter(r)
    });
    assert_eq!(co.resume(()).as_yield(), Some(&()));
    drop(co);
    assert_eq!(
        returned.get(),
        1,
        "the return value made during drop is dropped"
    );
    assert_eq!(Rc::strong_count(&returned), 1);
}

// ---------------------------------------------------------------------------
// Nesting

#[test]
fn nested_coroutine_runs_inside_outer_coroutine() {
    let mut outer = Coroutine::new(|y: &Yielder<u32, u32>, first: u32| {
        let mut inner = Coroutine::new(|iy: &Yielder<u32, u32>, start: u32| {
            let mut n = start;
            for _ in 0..3 {
                n = n * 2 + iy.suspend(n);
            }
            n
        });
        let mut seen = vec![expect_yield(&mut inner, first)];
        let mut input = first;
        loop {
            input += y.suspend(*seen.last().unwrap());
            match inner.resume(input) {
                CoroutineResult::Yield(v) => seen.push(v),
                CoroutineResult::Return(v) => return (v, seen),
            }
        }
    });
    // inner: n=1 → yields 1; n=1*2+(10+1)=13 → yields 13; n=26+(20+11)=57 →
    // yields 57; n=114+(30+31)=175 → returns 175.
    assert_eq!(outer.resume(1), CoroutineResult::Yield(1));
    assert_eq!(outer.resume(10), CoroutineResult::Yield(13));
    assert_eq!(outer.resume(20), CoroutineResult::Yield(57));
    assert_eq!(
        outer.resume(30),
        CoroutineResult::Return((175, vec![1, 13, 57]))
    );
}

#[test]
fn dropping_outer_coroutine_unwinds_inner_suspended_inside_it() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let in_outer = log.clone();
    let mut outer: Coroutine<(), u32, ()> = Coroutine::new(move |y, ()| {
        let _o = Logged("outer local", in_outer.clone());
        let in_inner = in_outer.clone();
        let mut inner: Coroutine<(), u32, ()> = Coroutine::new(move |iy, ()| {
            let _i = Logged("inner local", in_inner);
            iy.suspend(4);
            unreachable!("inner is dropped while suspended");
        });
        let v = expect_yield(&mut inner, ());
        y.suspend(v * 10);
        unreachable!("outer is dropped while suspended");
    });
    assert_eq!(outer.resume(()), CoroutineResult::Yield(40));
    drop(outer);
    assert_eq!(*log.borrow(), ["inner local", "outer local"]);
    assert_eq!(Rc::strong_count(&log), 1);
}

#[test]
fn panic_in_inner_coroutine_propagates_through_outer() {
    let mut outer: Coroutine<(), (), ()> = Coroutine::new(|_y, ()| {
        let mut inner: Coroutine<(), (), ()> = Coroutine::new(|_iy, ()| {
            panic_any(CustomPayload {
                code: 99,
                text: "inner".to_string(),
            })
        });
        inner.resume(());
        unreachable!("the inner panic continues in the outer coroutine");
    });
    let payload = catch_unwind(AssertUnwindSafe(|| outer.resume(()))).expect_err("must panic");
    assert_eq!(
        payload.downcast_ref::<CustomPayload>().map(|p| p.code),
        Some(99)
    );
    assert!(outer.done());
}

// ---------------------------------------------------------------------------
// Scale and stack use

#[test]
fn ten_thousand_coroutines_alive_at_once_each_resumed_several_times() {
    const COUNT: u64 = 10_000;
    let mut all: Vec<Coroutine<u64, u64, u64>> = (0..COUNT)
        .map(|i| {
            Coroutine::new(move |y: &Yielder<u64, u64>, first: u64| {
                let mut acc = i + first;
                for _ in 0..3 {
                    let x = y.suspend(acc);
                    acc += x * i;
                }
                acc
            })
        })
        .collect();
    // Rounds: inputs 1, 2, 3 give yields i+1, 3i+1, 6i+1; input 4 returns 10i+1.
    for (round, (input, factor)) in [(1, 1), (2, 3), (3, 6)].into_iter().enumerate() {
        for (i, co) in all.iter_mut().enumerate() {
            let i = i as u64;
            assert_eq!(
                co.resume(input),
                CoroutineResult::Yield(factor * i + 1),
                "coroutine {i}, round {round}"
            );
        }
    }
    assert!(all.iter().all(|co| co.started() && !co.done()));
    let ids: std::collections::HashSet<u64> = all.iter().map(Coroutine::id).collect();
    assert_eq!(ids.len(), COUNT as usize, "ids are unique");
    for (i, co) in all.iter_mut().enumerate() {
        let i = i as u64;
        assert_eq!(co.resume(4), CoroutineResult::Return(10 * i + 1));
    }
    assert!(all.iter().all(Coroutine::done));
}

/// Recurses with a 1 KiB array per frame until the frames below `top` span
/// `target` bytes; returns (depth reached, bytes spanned, checksum).
#[inline(never)]
fn recurse_until(depth: usize, top: usize, target: usize) -> (usize, usize, u64) {
    let frame = black_box([depth as u8; 1024]);
    let here = black_box(&frame).as_ptr() as usize;
    let used = top - here;
    let (deepest, span, sum) = if used >= target {
        (depth, used, 0)
    } else {
        recurse_until(depth + 1, top, target)
    };
    // Reading the array after the call keeps it alive in this frame.
    (deepest, span, sum + u64::from(black_box(&frame)[1023]))
}

#[test]
fn recursion_using_100_kib_fits_default_stack() {
    const TARGET: usize = 100 * 1024;
    let mut co = Coroutine::new(|_y: &Yielder<(), ()>, ()| {
        let marker = black_box(0u8);
        let top = black_box(&marker) as *const u8 as usize;
        recurse_until(0, top, TARGET)
    });
    assert!(co.stack_size() >= DEFAULT_STACK_SIZE);
    let CoroutineResult::Return((depth, used, sum)) = co.resume(()) else {
        panic!("the coroutine returned");
    };
    assert!(used >= TARGET, "recursion spanned only {used} bytes");
    assert!(used < DEFAULT_STACK_SIZE);
    assert!(
        depth * 1024 <= used,
        "{depth} frames of >= 1 KiB in {used} bytes"
    );
    // Each frame adds its depth (mod 256) to the checksum.
    let expected: u64 = (0..=depth).map(|d| (d % 256) as u64).sum();
    assert_eq!(sum, expected);
}

#[test]
fn builder_stack_size_is_usable_and_at_least_the_request() {
    for request in [1, MIN_STACK_SIZE, 64 * 1024 + 1, 1024 * 1024] {
        let co = Builder::new()
            .stack_size(request)
            .build(|_y: &Yielder<(), ()>, ()| ())
            .expect("stack can be mapped");
        assert!(
            co.stack_size() >= request.max(MIN_STACK_SIZE),
            "request {request} gave {}",
            co.stack_size()
        );
    }
    // The whole 1 MiB is usable: recurse through 900 KiB of it.
    const TARGET: usize = 900 * 1024;
    let mut co = Builder::new()
        .stack_size(1024 * 1024)
        .build(|_y: &Yielder<(), ()>, ()| {
            let marker = black_box(0u8);
            let top = black_box(&marker) as *const u8 as usize;
            recurse_until(0, top, TARGET)
        })
        .expect("stack can be mapped");
    let CoroutineResult::Return((_, used, _)) = co.resume(()) else {
        panic!("the coroutine returned");
    };
    assert!(used >= TARGET);
}

#[test]
fn builder_name_shows_in_name_and_unnamed_coroutines_have_none() {
    let named: Coroutine<(), (), ()> = Builder::new()
        .name("worker-7")
        .build(|_, ()| ())
        .expect("stack can be mapped");
    assert_eq!(named.name(), Some("worker-7"));
    assert!(named.stack_size() >= DEFAULT_STACK_SIZE);

    let via_coroutine: Coroutine<(), (), ()> = Coroutine::<(), (), ()>::builder()
        .name(String::from("with ünïcode"))
        .build(|_, ()| ())
        .expect("stack can be mapped");
    assert_eq!(via_coroutine.name(), Some("with ünïcode"));

    let unnamed: Coroutine<(), (), ()> = Coroutine::new(|_, ()| ());
    assert_eq!(unnamed.name(), None);
    let built_unnamed: Coroutine<(), (), ()> = Builder::new()
        .build(|_, ()| ())
        .expect("stack can be mapped");
    assert_eq!(built_unnamed.name(), None);

    // Ids are process-unique and increase in creation order.
    assert!(named.id() >= 1);
    assert!(named.id() < via_coroutine.id());
    assert!(via_coroutine.id() < unnamed.id());
    assert!(unnamed.id() < built_unnamed.id());
}

#[test]
fn builder_rejects_closure_too_large_for_its_stack() {
    let big = [1u8; 64 * 1024];
    let result: io::Result<Coroutine<(), (), u8>> = Builder::new()
        .stack_size(MIN_STACK_SIZE)
        .build(move |_, ()| big[100]);
    let err = result.expect_err("a 64 KiB closure cannot fit a 16 KiB stack");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("65536 bytes"), "{err}");
}

#[test]
fn builder_rejects_absurd_stack_size_with_invalid_input() {
    let result: io::Result<Coroutine<(), (), ()>> =
        Builder::new().stack_size(usize::MAX).build(|_, ()| ());
    let err = result.expect_err("usize::MAX bytes cannot be mapped");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

// ---------------------------------------------------------------------------
// Backtraces

/// Takes a backtrace in a frame of its own, which no inlining removes, so
/// that the coroutine's own code shows in every build profile (in release
/// the closure itself is inlined into `entry` and leaves no symbol).
#[inline(never)]
fn backtrace_from_coroutine_code() -> String {
    black_box(Backtrace::force_capture()).to_string()
}

#[test]
fn backtrace_inside_coroutine_ends_at_trampoline() {
    let mut co = Coroutine::new(|_y: &Yielder<(), ()>, ()| backtrace_from_coroutine_code());
    let CoroutineResult::Return(text) = co.resume(()) else {
        panic!("the coroutine returned");
    };
    // Frame lines look like "  12: symbol"; inlined symbols and "at" lines
    // carry no number.
    let lines: Vec<&str> = text.lines().collect();
    let numbered: Vec<(usize, usize, &str)> = lines
        .iter()
        .enumerate()
        .filter_map(|(line_no, line)| {
            let (num, symbol) = line.trim_start().split_once(": ")?;
            Some((line_no, num.parse().ok()?, symbol))
        })
        .collect();
    assert!(numbered.len() >= 3, "too few frames:\n{text}");
    for (i, &(_, num, _)) in numbered.iter().enumerate() {
        assert_eq!(
            num,
            numbered[0].1 + i,
            "frames are numbered in order:\n{text}"
        );
    }
    // `entry` itself, not a closure inside it nor a frame with `entry` in
    // its type arguments: the legacy printing ends a closure's name with
    // `{{closure}}`, the v0 one (nightly's sanitizer builds) with
    // `{closure#0}`, and v0 also prints type arguments.
    let is_entry = |s: &str| {
        let s = s.trim();
        s.starts_with("fibra::coroutine::entry") && !s.ends_with('}')
    };
    let entry = numbered
        .iter()
        .position(|(_, _, s)| is_entry(s))
        .unwrap_or_else(|| panic!("no fibra::coroutine::entry frame:\n{text}"));
    assert_eq!(
        entry,
        numbered.len() - 2,
        "the trampoline calls entry directly:\n{text}"
    );
    // The coroutine's code runs below entry, in every profile: the first
    // frame is the function that took the backtrace.
    assert!(
        numbered[0].2.contains("backtrace_from_coroutine_code"),
        "the first frame is not the coroutine's code:\n{text}"
    );
    let &(last_line, _, last_symbol) = numbered.last().unwrap();
    assert!(
        last_symbol.contains("fibra_coroutine_trampoline"),
        "the last frame is not the trampoline:\n{text}"
    );
    assert_eq!(
        numbered
            .iter()
            .filter(|(_, _, s)| s.contains("fibra_coroutine_trampoline"))
            .count(),
        1,
        "{text}"
    );
    // Nothing but source locations may follow the trampoline's frame line.
    for line in &lines[last_line + 1..] {
        assert!(
            line.trim_start().starts_with("at "),
            "unexpected line after the trampoline: {line:?}\n{text}"
        );
    }
    // Frames of the resumer's stack (the test harness) do not show up.
    assert!(!text.contains("test::run_test"), "{text}");
}

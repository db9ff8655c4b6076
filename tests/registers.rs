//! Callee-saved registers (rbx, rbp, r12–r15) across fibra's context switch,
//! checked in assembly: values the resumer holds around `resume` survive it, and
//! values a coroutine holds around `suspend` survive it, while the other side
//! fills all six with garbage in between. Also checks stack alignment.

use std::arch::asm;
use std::ffi::c_void;

use fibra::coroutine::{Coroutine, CoroutineResult, Yielder};

/// rbx, rbp, r12, r13, r14, r15, in that order.
type Regs = [u64; 6];

/// Sets the six callee-saved registers to `values`, calls `f(arg)` from the
/// same `asm!` block, and returns what the six registers held right after `f`
/// returned. `f` must not unwind.
fn call_with_callee_saved(values: &Regs, f: extern "C" fn(*mut c_void), arg: *mut c_void) -> Regs {
    let mut after: Regs = [0; 6];
    // SAFETY: rbx and rbp are saved on the stack by hand and restored before
    // the block ends; r12–r15 are declared clobbered and everything else `f`
    // may change is covered by `clobber_abi("C")`. The stack is realigned to
    // 16 bytes before the call and the original rsp restored afterwards. The
    // block reads 48 bytes from `values` and writes 48 bytes to `after`, both
    // live arrays of six u64.
    unsafe {
        asm!(
            "push rbx",
            "push rbp",
            // Align the stack for the call, remembering where it was.
            "mov rbp, rsp",
            "and rsp, -16",
            "push rbp",
            "push rdx", // `after`; rdx does not survive the call
            "mov rbx, [rsi]",
            "mov rbp, [rsi + 8]",
            "mov r12, [rsi + 16]",
            "mov r13, [rsi + 24]",
            "mov r14, [rsi + 32]",
            "mov r15, [rsi + 40]",
            "call rax",
            "pop rdx",
            "mov [rdx], rbx",
            "mov [rdx + 8], rbp",
            "mov [rdx + 16], r12",
            "mov [rdx + 24], r13",
            "mov [rdx + 32], r14",
            "mov [rdx + 40], r15",
            "pop rsp",
            "pop rbp",
            "pop rbx",
            in("rax") f as usize,
            in("rdi") arg,
            in("rsi") values.as_ptr(),
            in("rdx") after.as_mut_ptr(),
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        );
    }
    after
}

/// A resume to perform from inside `call_with_callee_saved`.
struct ResumeCall<'a, R> {
    co: &'a mut Coroutine<(), (), R>,
    result: Option<CoroutineResult<(), R>>,
}

extern "C" fn resume_call<R>(arg: *mut c_void) {
    // SAFETY: `arg` is the `&mut ResumeCall<R>` that `resume_with` passed to
    // `call_with_callee_saved`; nothing else uses it during the call.
    let call = unsafe { &mut *arg.cast::<ResumeCall<'_, R>>() };
    call.result = Some(call.co.resume(()));
}

/// Resumes `co` with the callee-saved registers set to `values`; returns the
/// coroutine's result and the registers as they were after the resume.
fn resume_with<R>(co: &mut Coroutine<(), (), R>, values: &Regs) -> (CoroutineResult<(), R>, Regs) {
    let mut call = ResumeCall { co, result: None };
    let after = call_with_callee_saved(
        values,
        resume_call::<R>,
        (&mut call as *mut ResumeCall<'_, R>).cast(),
    );
    (call.result.expect("resume_call ran"), after)
}

extern "C" fn suspend_call(arg: *mut c_void) {
    // SAFETY: `arg` is the `&Yielder<(), ()>` that `suspend_with` passed;
    // the coroutines in this file always run to completion, so this
    // `suspend` never unwinds through the `extern "C"` frame.
    let yielder = unsafe { &*arg.cast::<Yielder<(), ()>>() };
    yielder.suspend(());
}

/// Suspends the current coroutine with the callee-saved registers set to
/// `values`; returns the registers as they were once it was resumed.
fn suspend_with(y: &Yielder<(), ()>, values: &Regs) -> Regs {
    call_with_callee_saved(
        values,
        suspend_call,
        (y as *const Yielder<(), ()>).cast_mut().cast(),
    )
}

/// Distinct, recognisable 64-bit values: `tag` in the top half, the register
/// index in the low bits.
const fn pattern(tag: u32) -> Regs {
    let mut regs = [0u64; 6];
    let mut i = 0;
    while i < 6 {
        regs[i] = ((tag as u64) << 32) | 0x5a5a_0000 | (i as u64 + 1);
        i += 1;
    }
    regs
}

const RESUMER: [Regs; 3] = [
    pattern(0x1111_1111),
    pattern(0x2222_2222),
    pattern(0x3333_3333),
];
const COROUTINE: [Regs; 2] = [pattern(0xc0c0_0001), pattern(0xc0c0_0002)];
const GARBAGE: [Regs; 3] = [
    [
        u64::MAX,
        0,
        0xdead_beef_dead_beef,
        1,
        0x8000_0000_0000_0000,
        0x0123_4567_89ab_cdef,
    ],
    [0xbad0_bad0_bad0_bad0; 6],
    [0, u64::MAX, 0, u64::MAX, 0, u64::MAX],
];

#[test]
fn callee_saved_registers_survive_resume_on_resumer_side() {
    // The coroutine fills all six registers with garbage before each suspend.
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        suspend_with(y, &GARBAGE[0]);
        suspend_with(y, &GARBAGE[1]);
        7u32
    });
    // Three resumes: into the trampoline (first), back into a suspend, and
    // the last one, which the coroutine leaves by finishing.
    let (first, after_first) = resume_with(&mut co, &RESUMER[0]);
    let (second, after_second) = resume_with(&mut co, &RESUMER[1]);
    let (third, after_third) = resume_with(&mut co, &RESUMER[2]);
    assert_eq!(first, CoroutineResult::Yield(()));
    assert_eq!(second, CoroutineResult::Yield(()));
    assert_eq!(third, CoroutineResult::Return(7));
    assert_eq!(after_first, RESUMER[0], "first resume (trampoline)");
    assert_eq!(after_second, RESUMER[1], "resume into a suspend");
    assert_eq!(after_third, RESUMER[2], "resume that ends in a return");
}

#[test]
fn callee_saved_registers_survive_suspend_inside_coroutine() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        let first = suspend_with(y, &COROUTINE[0]);
        let second = suspend_with(y, &COROUTINE[1]);
        [first, second]
    });
    // The resumer fills all six registers with garbage around every resume.
    let (r1, _) = resume_with(&mut co, &GARBAGE[0]);
    let (r2, _) = resume_with(&mut co, &GARBAGE[1]);
    let (r3, _) = resume_with(&mut co, &GARBAGE[2]);
    assert_eq!(r1, CoroutineResult::Yield(()));
    assert_eq!(r2, CoroutineResult::Yield(()));
    assert_eq!(r3, CoroutineResult::Return([COROUTINE[0], COROUTINE[1]]));
}

#[test]
fn callee_saved_registers_survive_resume_from_inside_a_coroutine() {
    // The resumer is itself a coroutine: its registers must survive a nested
    // resume of an inner coroutine that clobbers them before suspending.
    let mut outer = Coroutine::new(|_y: &Yielder<(), ()>, ()| {
        let mut inner = Coroutine::new(|iy: &Yielder<(), ()>, ()| {
            suspend_with(iy, &GARBAGE[2]);
            suspend_with(iy, &GARBAGE[0]);
        });
        let (a, after_a) = resume_with(&mut inner, &RESUMER[0]);
        let (b, after_b) = resume_with(&mut inner, &RESUMER[1]);
        let (c, after_c) = resume_with(&mut inner, &RESUMER[2]);
        ([a, b, c], [after_a, after_b, after_c])
    });
    let CoroutineResult::Return((results, after)) = outer.resume(()) else {
        panic!("the outer coroutine returns");
    };
    assert_eq!(
        results,
        [
            CoroutineResult::Yield(()),
            CoroutineResult::Yield(()),
            CoroutineResult::Return(())
        ]
    );
    assert_eq!(after, RESUMER);
}

/// The stack pointer at an `asm!` block, where Rust guarantees call alignment
/// provided every function was entered with an ABI-aligned stack.
#[inline(never)]
fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: only reads rsp into a register.
    unsafe { asm!("mov {}, rsp", out(reg) sp, options(nomem, preserves_flags)) };
    sp
}

#[test]
fn coroutine_code_runs_on_16_byte_aligned_stack() {
    let mut co = Coroutine::new(|y: &Yielder<(), usize>, ()| {
        // Entered through the trampoline.
        let first = stack_pointer();
        y.suspend(first % 16);
        // Resumed after a suspend.
        stack_pointer() % 16
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(0));
    assert_eq!(co.resume(()), CoroutineResult::Return(0));
}

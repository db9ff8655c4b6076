//! x86_64 System V context switch and coroutine entry trampoline.
//!
//! This file is the only place in fibra that names machine registers. It is
//! pulled into the crate by `src/arch.rs` with `#[path]`; nothing here knows
//! about coroutines beyond "a stack pointer to switch to and a word to pass".
//!
//! # How a switch works
//!
//! A switch is not a function: `switch_into` and `switch_out` are
//! `#[inline(always)]`, so each resume/suspend site gets its own copy of the
//! `asm!` block and its own branches, which the predictor learns per site.
//!
//! Resuming leaves by an indirect `call [rsi]` to the coroutine's resume
//! address; suspending comes back by `ret`. Every `ret` of a suspend is thus
//! paired with the `call` of the resume that entered the coroutine, and the
//! CPU's return-stack buffer predicts it exactly (corosensei does the same).
//! Measured here (AMD EPYC, medians of 31 interleaved runs, pinned): this
//! form costs 1.00× corosensei per round trip, while leaving both ways by
//! `pop rax; jmp rax` cost 1.25–1.3×, and a shared switch routine ending in a
//! `ret` that matches no `call` mispredicts on every switch.
//!
//! The `asm!` blocks declare `clobber_abi("sysv64")` and r12–r15 as clobbered,
//! so the compiler spills only what is live at that particular site. rbx and
//! rbp cannot be named as `asm!` operands (LLVM reserves them), so the blocks
//! save them by hand.
//!
//! ```text
//!   a suspended coroutine's stack          the resumer's stack while the
//!   (its saved sp points at word 0)        coroutine runs (parent-sp slot
//!                                          points at word 0)
//!   ┌──────────────────────┐               ┌──────────────────────────────┐
//!   │ rbp                  │ sp + 16       │ rbx       (switch_into push) │ +16
//!   │ rbx                  │ sp + 8        │ return address (the `call`)  │ +8
//!   │ resume address (rip) │ sp + 0        │ rbp  (pushed by the resumed  │ +0
//!   └──────────────────────┘               │       coroutine's side)      │
//!                                          └──────────────────────────────┘
//! ```
//!
//! The resumer's side is a valid frame record (saved rbp, return address),
//! so frame-pointer walkers see the resumer's frame too.
//!
//! A resume (`switch_into`): push rbx, `call [rsi]`. The coroutine's side,
//! at its resume address, pushes the resumer's rbp, stores rsp in the
//! parent-sp slot, loads its own rsp, and pops its rbx and rbp.
//!
//! A suspend (`switch_out`): push rbp, rbx and the resume address, hand the
//! resulting rsp back in rsi, load the resumer's rsp from the parent-sp slot,
//! pop its rbp and `ret` into `switch_into`, which pops rbx.
//!
//! Registers that carry values across a switch:
//!
//! | register | into the coroutine              | out of the coroutine                 |
//! |----------|---------------------------------|--------------------------------------|
//! | rdi      | a message word (resume → co)    | a message word (co → resumer)        |
//! | rsi      | the coroutine's saved rsp       | its new saved rsp (0: it finished)   |
//! | rdx      | address of the parent-sp slot   | (unchanged)                          |
//!
//! The parent-sp slot is a word at a fixed place (the top of the coroutine's
//! stack, see `src/stack.rs`), so a coroutine can be moved in memory (its
//! `Coroutine` value) between resumes without fixing up pointers.
//!
//! # A new stack
//!
//! `init_stack` writes a saved frame whose resume address is the trampoline,
//! so the first `switch_into` "resumes" into `fibra_coroutine_trampoline`:
//!
//! ```text
//!   higher addresses
//!   │ (caller's data, e.g. the closure)  │
//!   ├────────────────────────────────────┤ ← aligned to 16: rsp at `call rbx`
//!   │ data pointer       → popped to rbp │ sp + 16
//!   │ entry function     → popped to rbx │ sp + 8
//!   │ trampoline address → `call [rsi]`  │ sp + 0   ← initial saved rsp
//!   lower addresses
//! ```
//!
//! The trampoline does what every resume address does (save the resumer's
//! rbp and rsp, load our rsp, pop rbx and rbp), then moves the data pointer
//! to rsi, clears rbp (ending the frame-pointer chain) and calls the entry
//! function with rdi = the first message, rsi = data, rdx = parent-sp slot.
//! The entry function never returns: it finishes with `switch_out_final`.
//!
//! Its CFI marks the return address as undefined, so a debugger's `bt` or a
//! panic backtrace taken inside a coroutine walks up to the entry function
//! and the trampoline and stops there cleanly instead of wandering into
//! whatever bytes lie above the stack.
//!
//! # What is *not* saved
//!
//! The floating-point control state (MXCSR and the x87 control word) is
//! shared by all coroutines of a thread, as in Go, corosensei and may:
//! reading MXCSR alone costs more than the whole switch. Code that changes
//! rounding or flush-to-zero must restore them before it switches or parks.
//! The direction flag is clear at every switch, as the ABI requires at calls.

use core::arch::{asm, global_asm};

/// Alignment the ABI requires of rsp at a call instruction.
pub const STACK_ALIGN: usize = 16;

/// Bytes `init_stack` needs below the caller's data.
pub const INIT_FRAME_BYTES: usize = 3 * 8;

/// The entry function a new stack starts in: `(message, data, parent_slot)`.
pub type EntryFn = unsafe extern "C" fn(usize, *mut u8, *mut *mut u8) -> !;

unsafe extern "C" {
    fn fibra_coroutine_trampoline();
}

// The trampoline. `.cfi_undefined rip` makes this the outermost frame for
// every DWARF unwinder (gdb, libgcc's _Unwind_Backtrace, std's backtrace).
global_asm!(
    ".text",
    ".p2align 4",
    ".globl fibra_coroutine_trampoline",
    ".hidden fibra_coroutine_trampoline",
    ".type fibra_coroutine_trampoline, @function",
    "fibra_coroutine_trampoline:",
    ".cfi_startproc",
    ".cfi_undefined rip",
    // rdi = first message, rdx = parent-sp slot, rsi = our initial sp.
    "push rbp",
    "mov [rdx], rsp",
    "lea rsp, [rsi + 8]",
    "pop rbx",
    "pop rbp",
    "mov rsi, rbp",
    "xor ebp, ebp",
    "call rbx",
    // The entry function never returns.
    "ud2",
    ".cfi_endproc",
    ".size fibra_coroutine_trampoline, . - fibra_coroutine_trampoline",
);

/// Writes the initial frame of a new stack just below `data_end` and returns
/// the stack pointer to hand to the first `switch_into`.
///
/// # Safety
/// `data_end` must point into a writable stack with at least
/// `INIT_FRAME_BYTES + STACK_ALIGN` bytes below it.
#[inline]
pub unsafe fn init_stack(data_end: *mut u8, entry: EntryFn, data: *mut u8) -> *mut u8 {
    let aligned = (data_end as usize) & !(STACK_ALIGN - 1);
    let sp = (aligned - INIT_FRAME_BYTES) as *mut usize;
    // SAFETY: the caller guarantees these three words lie in the writable stack.
    unsafe {
        sp.write(fibra_coroutine_trampoline as *const () as usize);
        sp.add(1).write(entry as *const () as usize);
        sp.add(2).write(data as usize);
    }
    sp.cast()
}

/// Switches from the current stack into a suspended (or new) coroutine.
///
/// The coroutine's side stores our rsp in `*parent_slot`. Resumes the context saved at
/// `target_sp` with `message` in rdi, and returns when that context switches
/// back with `switch_out`, giving `(message, coroutine's new saved sp)`.
///
/// # Safety
/// `target_sp` must be a saved frame produced by `init_stack` or
/// `switch_out`, not resumed since; `parent_slot` must be the slot that
/// context will switch out through.
#[inline(always)]
pub unsafe fn switch_into(
    message: usize,
    target_sp: *mut u8,
    parent_slot: *mut *mut u8,
) -> (usize, *mut u8) {
    let reply: usize;
    let new_sp: *mut u8;
    // SAFETY: see the module docs; every register the other side may change
    // is declared (clobber_abi + r12–r15) or saved by hand (rbx, rbp).
    unsafe {
        asm!(
            "push rbx",
            "call [rsi]",
            "pop rbx",
            inout("rdi") message => reply,
            inout("rsi") target_sp => new_sp,
            in("rdx") parent_slot,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("sysv64"),
        );
    }
    (reply, new_sp)
}

/// Switches from a coroutine back to whoever resumed it, passing `message`;
/// returns the message of the next `switch_into`.
///
/// # Safety
/// Must run on a coroutine stack whose resumer saved its rsp in
/// `*parent_slot` and is waiting in `switch_into`.
#[inline(always)]
pub unsafe fn switch_out(message: usize, parent_slot: *mut *mut u8) -> usize {
    let input: usize;
    // SAFETY: as for `switch_into`; the resumer's frame at `*parent_slot` was
    // written by its `switch_into`.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "lea rax, [rip + 2f]",
            "push rax",
            "mov rsi, rsp",
            "mov rsp, [rdx]",
            "pop rbp",
            "ret",
            "2:",
            "push rbp",
            "mov [rdx], rsp",
            "lea rsp, [rsi + 8]",
            "pop rbx",
            "pop rbp",
            inout("rdi") message => input,
            in("rdx") parent_slot,
            lateout("rsi") _,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("sysv64"),
        );
    }
    input
}

/// Leaves a finished coroutine for good: like `switch_out`, but saves nothing,
/// because nothing will ever resume this stack, and hands back 0 as the new
/// stack pointer so that the resumer knows it finished.
///
/// # Safety
/// As for `switch_out`; in addition nothing on the current stack may be used
/// again (the owner will reuse or unmap it).
#[inline(always)]
pub unsafe fn switch_out_final(message: usize, parent_slot: *mut *mut u8) -> ! {
    // SAFETY: as for `switch_out`.
    unsafe {
        asm!(
            "mov rsp, [rdx]",
            "pop rbp",
            "ret",
            in("rdi") message,
            in("rsi") 0usize,
            in("rdx") parent_slot,
            options(noreturn),
        );
    }
}

//! AddressSanitizer's fiber annotations, for a nightly build made with
//! `RUSTFLAGS="-Zsanitizer=address --cfg fibra_asan"` (`scripts/asan.sh`).
//! Without `--cfg fibra_asan` this module is not compiled and no switch
//! pays anything for it.
//!
//! ASan keeps a record of each thread's stack: where it starts and ends,
//! and a "fake stack" of frames it moved to the heap to catch
//! use-after-return. A coroutine switch changes the stack under its feet,
//! so without being told ASan takes coroutine frames for wild addresses:
//! after a panic unwound on a coroutine stack it clears the wrong range
//! (it prints that it ignored `__asan_handle_no_return`) and later reports
//! false stack errors. Its interface for this is a pair of calls around
//! every switch (compiler-rt's `common_interface_defs.h`):
//!
//! - `__sanitizer_start_switch_fiber(save, bottom, size)` just before
//!   leaving: `[bottom, bottom + size)` is the stack being switched to,
//!   `save` receives the fake stack of the one being left (null: it is left
//!   for good, and its fake stack is freed);
//! - `__sanitizer_finish_switch_fiber(saved, &old_bottom, &old_size)` just
//!   after arriving: `saved` is what `start` stored when this stack was
//!   left (null on a stack's first entry), and ASan reports the bounds of
//!   the stack switched from.
//!
//! `Coroutine::switch` (the resumer's side) enters the coroutine's stack,
//! whose bounds it knows; the coroutine's side learns its resumer's bounds
//! from each `finish` and keeps them in its `Yielder` for the way back (a
//! raw coroutine may be resumed from another thread each time).

use std::ffi::c_void;
use std::ptr;

unsafe extern "C" {
    fn __sanitizer_start_switch_fiber(
        fake_stack_save: *mut *mut c_void,
        bottom: *const c_void,
        size: usize,
    );
    fn __sanitizer_finish_switch_fiber(
        fake_stack_save: *mut c_void,
        bottom_old: *mut *const c_void,
        size_old: *mut usize,
    );
    fn __asan_unpoison_memory_region(addr: *const c_void, size: usize);
}

/// A stack's extent, as ASan takes it.
#[derive(Clone, Copy)]
pub(crate) struct Bounds {
    bottom: *const c_void,
    size: usize,
}

impl Bounds {
    pub(crate) fn new(bottom: *const u8, size: usize) -> Bounds {
        Bounds {
            bottom: bottom.cast(),
            size,
        }
    }
}

/// The fake stack of a stack left for a while (from `enter`).
pub(crate) struct FakeStack(*mut c_void);

/// Just before switching to the stack `to`, meaning to come back.
#[inline(always)]
pub(crate) fn enter(to: Bounds) -> FakeStack {
    let mut save = ptr::null_mut();
    // SAFETY: ASan's runtime is linked (`-Zsanitizer=address`); `save` is a
    // valid out-pointer and `to` the extent of a mapped stack.
    unsafe { __sanitizer_start_switch_fiber(&mut save, to.bottom, to.size) };
    FakeStack(save)
}

/// Just before switching to the stack `to` for the last time from here
/// (a finished coroutine's stack is never entered again in this life).
#[inline(always)]
pub(crate) fn leave_for_good(to: Bounds) {
    // SAFETY: as in `enter`; a null save tells ASan to drop the fake stack
    // of the stack being left.
    unsafe { __sanitizer_start_switch_fiber(ptr::null_mut(), to.bottom, to.size) };
}

/// Just after arriving back on a stack left with `enter`; the bounds of
/// the stack switched from.
#[inline(always)]
pub(crate) fn arrived(saved: FakeStack) -> Bounds {
    finish(saved.0)
}

/// Just after arriving on a stack for the first time.
#[inline(always)]
pub(crate) fn arrived_first() -> Bounds {
    finish(ptr::null_mut())
}

#[inline(always)]
fn finish(saved: *mut c_void) -> Bounds {
    let mut from = Bounds {
        bottom: ptr::null(),
        size: 0,
    };
    // SAFETY: `saved` came from this stack's `start` (or is null on a first
    // entry); the out-pointers are valid.
    unsafe { __sanitizer_finish_switch_fiber(saved, &mut from.bottom, &mut from.size) };
    from
}

/// Clears leftover poisoning from a pooled stack before a new coroutine
/// uses it (a previous one may have ended in a way ASan did not follow).
pub(crate) fn unpoison(bottom: *const u8, size: usize) {
    // SAFETY: `[bottom, bottom + size)` is a mapped stack the caller owns.
    unsafe { __asan_unpoison_memory_region(bottom.cast(), size) };
}

//! Overflow reports: the guard-page registry, the SIGSEGV/SIGBUS handler,
//! and the alternate signal stacks it runs on.
//!
//! Every mapped stack's guard page is entered in a registry. The handler,
//! running on an alternate signal stack (a handler cannot run on the stack
//! that has just overflowed), looks the fault address up: a hit inside a
//! guard page prints one line naming the coroutine (id, name), the stack
//! size and how to raise it, then aborts. Any other fault is passed to the
//! handler that was installed before fibra's (Rust's own stack-overflow
//! handler included), or to the default action. Nothing here allocates or
//! takes a lock that could be held by the faulting thread.

use std::cell::{RefCell, UnsafeCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::{Once, RwLock};

use memmap2::{MmapMut, MmapOptions};

use super::{HEADER_BYTES, StackHeader};

struct GuardEntry {
    guard_end: usize,
    top: usize,
}

/// Guard pages of all mapped stacks, keyed by their start address. The fault
/// handler only ever `try_read`s it (retrying while another thread writes),
/// so a fault while this thread holds the write lock is passed on as an
/// unknown fault instead of deadlocking.
static REGISTRY: RwLock<BTreeMap<usize, GuardEntry>> = RwLock::new(BTreeMap::new());

/// The registry's lock, held across a `fork` (see `super::ForkHold`).
pub(super) struct RegistryHold(
    #[allow(dead_code)] std::sync::RwLockWriteGuard<'static, BTreeMap<usize, GuardEntry>>,
);

pub(super) fn hold_registry() -> RegistryHold {
    RegistryHold(REGISTRY.write().unwrap_or_else(|e| e.into_inner()))
}

pub(super) fn registry_insert(base: usize, guard: usize, top: usize) {
    let mut map = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    map.insert(
        base,
        GuardEntry {
            guard_end: base + guard,
            top,
        },
    );
}

pub(super) fn registry_remove(base: usize) {
    let mut map = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    map.remove(&base);
}

/// What the fault handler learned about a fault inside a guard page.
struct Overflow {
    id: u64,
    name: (*const u8, usize),
    size: usize,
}

#[inline(never)]
fn find_overflow(addr: usize) -> Option<Overflow> {
    // `try_read` fails while any thread holds or waits for the write lock
    // (another thread mapping or unmapping a stack, briefly): retry for a
    // while. It fails for good only if this very thread faulted while
    // holding the write lock; the fault is then passed on as unknown.
    let mut map = None;
    for _ in 0..1_000_000 {
        if let Ok(guard) = REGISTRY.try_read() {
            map = Some(guard);
            break;
        }
        std::hint::spin_loop();
    }
    let map = map?;
    let (_, entry) = map.range(..=addr).next_back()?;
    if addr >= entry.guard_end {
        return None;
    }
    let header = (entry.top - HEADER_BYTES) as *const StackHeader;
    // SAFETY: registered stacks are mapped until `registry_remove`, which
    // cannot run while we hold the read lock; the header is plain data.
    let header = unsafe { &*header };
    Some(Overflow {
        id: header.owner_id.get(),
        name: header.owner_name.get(),
        size: entry.top - entry.guard_end,
    })
}

/// The handlers that were installed before ours, for SIGSEGV and SIGBUS.
struct PreviousActions(UnsafeCell<[MaybeUninit<libc::sigaction>; 2]>);
// SAFETY: written once inside `Once::call_once` before our handler is
// installed, read-only afterwards.
unsafe impl Sync for PreviousActions {}
static PREVIOUS: PreviousActions = PreviousActions(UnsafeCell::new([MaybeUninit::uninit(); 2]));
const FAULT_SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

pub(super) fn install_overflow_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        for (i, &sig) in FAULT_SIGNALS.iter().enumerate() {
            // SAFETY: sigaction reads and writes the structs we pass; PREVIOUS
            // is written before the new handler can observe it.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_fault as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                let previous = (*PREVIOUS.0.get())[i].as_mut_ptr();
                libc::sigaction(sig, ptr::null(), previous);
                libc::sigaction(sig, &action, ptr::null_mut());
            }
        }
    });
}

/// A `fmt::Write` into a fixed buffer: formatting in a signal handler must
/// not allocate.
struct FixedBuf {
    bytes: [u8; 512],
    len: usize,
}

impl std::fmt::Write for FixedBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Prints the overflow line and aborts. Out of line, so that `on_fault`'s
/// own frame stays small: when the fault is not ours, `on_fault` calls the
/// previous handler (Rust's, with its own frame) on the same small signal
/// stack, and a large frame here overflowed std's 8 KiB signal stack in
/// debug builds.
#[inline(never)]
#[cold]
fn report_overflow(addr: usize, overflow: Overflow) -> ! {
    let mut out = FixedBuf {
        bytes: [0; 512],
        len: 0,
    };
    let _ = write!(out, "fibra: coroutine #{}", overflow.id);
    if !overflow.name.0.is_null() {
        // SAFETY: the owner keeps its name alive while it runs on the stack.
        // The pointer and length came from a `&str`, so the bytes are UTF-8.
        let name = unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                overflow.name.0,
                overflow.name.1,
            ))
        };
        let _ = write!(out, " '{}'", name.escape_debug());
    }
    let _ = writeln!(
        out,
        " overflowed its stack of {} KiB (fault at {addr:#x} in the guard page); \
         give it a larger stack with Builder::stack_size",
        overflow.size / 1024
    );
    // SAFETY: write(2) and abort(3) are async-signal-safe.
    unsafe {
        libc::write(libc::STDERR_FILENO, out.bytes.as_ptr().cast(), out.len);
        libc::abort();
    }
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(overflow) = find_overflow(addr) {
        report_overflow(addr, overflow);
    }
    let index = if sig == libc::SIGSEGV { 0 } else { 1 };
    // SAFETY: PREVIOUS was filled before this handler was installed.
    let previous = unsafe { (*PREVIOUS.0.get())[index].assume_init_ref() };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction
        // runs again and the kernel ends the process with the signal.
        // SAFETY: plain sigaction call with a zeroed (SIG_DFL) action.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &action, ptr::null_mut());
        }
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was registered with this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, context);
    } else {
        // SAFETY: the previous handler was registered with this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

// ---------------------------------------------------------------------------
// Alternate signal stacks

/// Bytes of alternate signal stack fibra gives a thread that has none.
const SIGNAL_STACK_SIZE: usize = 64 * 1024;

/// An alternate signal stack fibra installed on this thread; removed and
/// unmapped when the thread exits.
struct SignalStack {
    map: Option<MmapMut>,
}

impl Drop for SignalStack {
    fn drop(&mut self) {
        if let Some(map) = &self.map {
            // SAFETY: sigaltstack with SS_DISABLE only changes this thread's
            // settings; we disable it only if it is still ours.
            unsafe {
                let mut current: libc::stack_t = std::mem::zeroed();
                libc::sigaltstack(ptr::null(), &mut current);
                if current.ss_sp == map.as_ptr() as *mut libc::c_void {
                    let disable = libc::stack_t {
                        ss_sp: ptr::null_mut(),
                        ss_flags: libc::SS_DISABLE,
                        ss_size: 0,
                    };
                    libc::sigaltstack(&disable, ptr::null_mut());
                }
            }
        }
    }
}

thread_local! {
    static SIGNAL_STACK: RefCell<Option<SignalStack>> = const { RefCell::new(None) };
}

/// Makes sure the current thread has an alternate signal stack, so that the
/// overflow handler can run when a coroutine stack overflows. Cheap after the
/// first call on a thread.
pub(crate) fn ensure_signal_stack() {
    let _ = SIGNAL_STACK.try_with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            return;
        };
        if slot.is_some() {
            return;
        }
        // SAFETY: querying sigaltstack writes only the struct we pass.
        let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
        unsafe { libc::sigaltstack(ptr::null(), &mut current) };
        if current.ss_flags & libc::SS_DISABLE == 0 && current.ss_size >= 16 * 1024 {
            *slot = Some(SignalStack { map: None });
            return;
        }
        let Ok(map) = MmapOptions::new().len(SIGNAL_STACK_SIZE).stack().map_anon() else {
            return;
        };
        let stack = libc::stack_t {
            ss_sp: map.as_ptr() as *mut libc::c_void,
            ss_flags: 0,
            ss_size: map.len(),
        };
        // SAFETY: the mapping stays alive as long as it is installed (the
        // SignalStack's drop uninstalls it before the unmap).
        if unsafe { libc::sigaltstack(&stack, ptr::null_mut()) } == 0 {
            *slot = Some(SignalStack { map: Some(map) });
        }
    });
}

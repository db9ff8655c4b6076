//! Coroutine stacks: guarded `MAP_NORESERVE` mappings, a pool, overflow reports.
//!
//! # Layout
//!
//! Every stack is one anonymous mapping made with `MAP_NORESERVE | MAP_STACK`,
//! whose lowest page is turned `PROT_NONE` as a guard. Only pages a coroutine
//! actually touches cost memory, so a 256 KiB stack that parks after using
//! 2 KiB costs one page of RSS.
//!
//! ```text
//!   top ─► ┌─────────────────────────┐
//!          │ StackHeader (64 bytes)  │ parent-sp slot, owner id and name
//!          ├─────────────────────────┤ ← usable_top(): the coroutine starts here
//!          │ usable stack, grows ↓   │   `size()` bytes
//!          ├─────────────────────────┤ ← bottom()
//!          │ guard page (PROT_NONE)  │
//!   base ─►└─────────────────────────┘
//! ```
//!
//! A guarded stack costs two kernel mappings (VMAs), so the default
//! `vm.max_map_count` of 65,530 allows about 32,000 live stacks. When the
//! kernel refuses a mapping, `Stack::new` says which limit was hit.
//!
//! # The rest of this module
//!
//! - `pool.rs` — released stacks kept for reuse (per-thread caches and a
//!   shared pool) within a budget of mappings; deep pages given back;
//! - `overflow.rs` — the guard-page registry and the fault handler that
//!   reports an overflow by coroutine name, on an alternate signal stack.

mod overflow;
mod pool;

pub(crate) use overflow::ensure_signal_stack;
pub use pool::{KEEP_RESIDENT, StackPool, THREAD_POOL_CAPACITY, pool_budget, trim};
pub(crate) use pool::{acquire, release, set_makes_idle_passes, trim_idle_cache, trim_shared};

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::MmapMut;
use memmap2::MmapOptions;

use overflow::{install_overflow_handler, registry_insert, registry_remove};

/// This module's process-wide locks — the shared pool's and the guard-page
/// registry's — held by the thread that forks from just before the fork
/// until just after it, in parent and child alike (src/runtime/fork.rs): a
/// child never inherits one of them locked by a thread that does not exist
/// there, which would hang its first spawn.
pub(crate) struct ForkHold {
    _pools: pool::SharedHold,
    _guards: overflow::RegistryHold,
}

/// Takes the locks `ForkHold` holds (in this order; no other path holds
/// both at once).
pub(crate) fn hold_for_fork() -> ForkHold {
    ForkHold {
        _pools: pool::hold_shared(),
        _guards: overflow::hold_registry(),
    }
}

/// Usable bytes of a stack when none is asked for: 256 KiB of address space,
/// of which only touched pages cost memory.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// The smallest size `Stack::new` hands out (smaller requests round up).
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// The largest size `Stack::new` accepts (1 TiB of address space); larger
/// requests are `InvalidInput` rather than an arithmetic overflow.
pub const MAX_STACK_SIZE: usize = 1 << 40;

/// Bytes at the top of every stack reserved for its `StackHeader`.
pub(crate) const HEADER_BYTES: usize = 64;

static MAPPINGS_CREATED: AtomicUsize = AtomicUsize::new(0);
static MAPPINGS_RELEASED: AtomicUsize = AtomicUsize::new(0);

/// Process-wide stack counters (all threads, all pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackStats {
    /// Stacks mapped from the kernel since the process started.
    pub mappings_created: usize,
    /// Stacks returned to the kernel since the process started.
    pub mappings_released: usize,
    /// Stacks kept for reuse in fibra's pools right now (mapped, unused).
    pub pooled: usize,
}

/// Reads the process-wide stack counters.
pub fn stats() -> StackStats {
    StackStats {
        mappings_created: MAPPINGS_CREATED.load(Ordering::Relaxed),
        mappings_released: MAPPINGS_RELEASED.load(Ordering::Relaxed),
        pooled: pool::pooled(),
    }
}

pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
            PAGE.store(page, Ordering::Relaxed);
            page
        }
        page => page,
    }
}

/// The words at the top of every stack. The context switch stores the
/// resumer's stack pointer in `parent_sp`; the overflow handler reads the
/// owner fields. Written only by the thread that owns the coroutine.
#[repr(C)]
pub(crate) struct StackHeader {
    pub parent_sp: UnsafeCell<*mut u8>,
    owner_id: Cell<u64>,
    owner_name: Cell<(*const u8, usize)>,
}

/// A guarded, lazily committed coroutine stack. Dropping it unmaps it.
pub struct Stack {
    map: MmapMut,
    guard: usize,
    /// Whether the pages below the top `KEEP_RESIDENT` bytes are known to
    /// be untouched (fresh, or given back since the last use); see pool.rs.
    pub(crate) trimmed: bool,
}

// SAFETY: a Stack is plain memory; the raw pointers in its header are only
// dereferenced by the thread running a coroutine on it.
unsafe impl Send for Stack {}

impl Stack {
    /// Maps a stack with at least `size` usable bytes (rounded up to whole
    /// pages, and to `MIN_STACK_SIZE`) below a 64-byte header, with a guard
    /// page underneath.
    ///
    /// When the kernel refuses, the error names the limit that was hit —
    /// `vm.max_map_count`, `RLIMIT_AS` or memory — with its current value.
    pub fn new(size: usize) -> io::Result<Stack> {
        install_overflow_handler();
        let page = page_size();
        let usable = usable_size(size);
        if usable == 0 {
            return Err(too_large(size));
        }
        let total = usable + page;
        let map = MmapOptions::new()
            .len(total)
            .stack()
            .no_reserve_swap()
            .map_anon()
            .map_err(|e| explain_map_error(e, total))?;
        let base = map.as_ptr() as usize;
        // SAFETY: [base, base + page) lies inside the mapping we own.
        if unsafe { libc::mprotect(base as *mut libc::c_void, page, libc::PROT_NONE) } != 0 {
            return Err(explain_map_error(io::Error::last_os_error(), total));
        }
        let stack = Stack {
            map,
            guard: page,
            trimmed: true,
        };
        // SAFETY: the header lies in the top page, which is writable.
        unsafe {
            stack.header_ptr().write(StackHeader {
                parent_sp: UnsafeCell::new(ptr::null_mut()),
                owner_id: Cell::new(0),
                owner_name: Cell::new((ptr::null(), 0)),
            })
        };
        registry_insert(base, page, stack.top());
        MAPPINGS_CREATED.fetch_add(1, Ordering::Relaxed);
        Ok(stack)
    }

    /// Bytes above the guard page: the requested size rounded up to whole
    /// pages. The top 64 bytes hold fibra's header; the rest is the
    /// coroutine's.
    pub fn size(&self) -> usize {
        self.map.len() - self.guard
    }

    /// Lowest usable address (just above the guard page).
    pub fn bottom(&self) -> *mut u8 {
        (self.map.as_ptr() as usize + self.guard) as *mut u8
    }

    /// One past the highest address of the mapping.
    pub(crate) fn top(&self) -> usize {
        self.map.as_ptr() as usize + self.map.len()
    }

    /// Where a coroutine's frames start (16-byte aligned, below the header).
    pub(crate) fn usable_top(&self) -> *mut u8 {
        (self.top() - HEADER_BYTES) as *mut u8
    }

    fn header_ptr(&self) -> *mut StackHeader {
        self.usable_top().cast()
    }

    pub(crate) fn header(&self) -> &StackHeader {
        // SAFETY: written in `new`, lives as long as the mapping.
        unsafe { &*self.header_ptr() }
    }

    /// Records who runs on this stack, for overflow reports. `name` must stay
    /// alive until `clear_owner` (the coroutine owns it).
    pub(crate) fn set_owner(&self, id: u64, name: Option<&str>) {
        let header = self.header();
        header.owner_id.set(id);
        header
            .owner_name
            .set(name.map_or((ptr::null(), 0), |n| (n.as_ptr(), n.len())));
    }

    pub(crate) fn clear_owner(&self) {
        self.set_owner(0, None);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        registry_remove(self.map.as_ptr() as usize);
        MAPPINGS_RELEASED.fetch_add(1, Ordering::Relaxed);
        // The mapping itself is unmapped by MmapMut's drop.
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("bottom", &self.bottom())
            .field("size", &self.size())
            .finish()
    }
}

/// Turns a failed `mmap`/`mprotect` into an error that names the limit.
///
/// At the mapping limit, anything that maps memory may fail too (reading
/// `/proc/self/maps` with std allocates, and a large allocation maps), so
/// the counts are read with raw `open`/`read` into a buffer on the stack.
fn explain_map_error(err: io::Error, bytes: usize) -> io::Error {
    if err.raw_os_error() != Some(libc::ENOMEM) {
        return io::Error::new(
            err.kind(),
            format!("cannot map a {bytes}-byte coroutine stack: {err}"),
        );
    }
    let max_maps = read_max_map_count();
    let maps_now = count_process_mappings();
    let created = MAPPINGS_CREATED.load(Ordering::Relaxed);
    let live = created.saturating_sub(MAPPINGS_RELEASED.load(Ordering::Relaxed));
    let message = match (max_maps, maps_now) {
        (Some(max), Some(now)) if now + 8 >= max => format!(
            "cannot map a coroutine stack: the process has {now} memory mappings and \
             vm.max_map_count is {max}. Each coroutine stack takes two mappings (stack + guard \
             page), so about {} stacks fit; fibra holds {live} stacks ({} of them pooled). \
             Raise the limit (sysctl -w vm.max_map_count={}) or keep fewer coroutines \
             started at once",
            max / 2,
            pool::pooled(),
            max.saturating_mul(4)
        ),
        _ => {
            let mut limit = MaybeUninit::<libc::rlimit>::uninit();
            // SAFETY: getrlimit writes the struct it is given.
            let as_limit = if unsafe { libc::getrlimit(libc::RLIMIT_AS, limit.as_mut_ptr()) } == 0 {
                // SAFETY: initialised by the successful call above.
                Some(unsafe { limit.assume_init() }.rlim_cur)
            } else {
                None
            };
            let unknown = || "unknown".to_string();
            match as_limit {
                Some(cur) if cur != libc::RLIM_INFINITY => format!(
                    "cannot map a {bytes}-byte coroutine stack: the address-space limit \
                     RLIMIT_AS (ulimit -v) is {cur} bytes and is reached. Raise it, use smaller \
                     stacks, or keep fewer coroutines started at once"
                ),
                _ => format!(
                    "cannot map a {bytes}-byte coroutine stack: the kernel is out of memory \
                     (ENOMEM with {} of {} allowed mappings in use). Free memory or keep fewer \
                     coroutines started at once",
                    maps_now.map_or_else(unknown, |n| n.to_string()),
                    max_maps.map_or_else(unknown, |n| n.to_string()),
                ),
            }
        }
    };
    io::Error::new(io::ErrorKind::OutOfMemory, message)
}

/// Calls `each` with successive chunks of the file at `path`, read with raw
/// system calls into a buffer on the stack (no allocation, no mapping).
fn read_file_raw(path: &std::ffi::CStr, mut each: impl FnMut(&[u8])) -> Option<()> {
    // SAFETY: `path` is NUL-terminated; open has no other preconditions.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let result = loop {
        // SAFETY: reads at most buf.len() bytes into our buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => break Some(()),
            n if n > 0 => each(&buf[..n as usize]),
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => break None,
        }
    };
    // SAFETY: closes the fd we opened.
    unsafe { libc::close(fd) };
    result
}

/// Lines of `/proc/self/maps`: the process's memory mappings.
fn count_process_mappings() -> Option<usize> {
    let mut lines = 0;
    read_file_raw(c"/proc/self/maps", |chunk| {
        lines += chunk.iter().filter(|&&b| b == b'\n').count()
    })?;
    Some(lines)
}

/// `vm.max_map_count`, read without allocating.
pub(crate) fn read_max_map_count() -> Option<usize> {
    let mut value: Option<usize> = None;
    read_file_raw(c"/proc/sys/vm/max_map_count", |chunk| {
        for &b in chunk {
            if b.is_ascii_digit() {
                value = Some(value.unwrap_or(0).saturating_mul(10) + (b - b'0') as usize);
            }
        }
    })?;
    value
}

/// The usable size `Stack::new(size)` gives, or `InvalidInput` if `size` is
/// absurdly large.
pub(crate) fn checked_usable_size(size: usize) -> io::Result<usize> {
    match usable_size(size) {
        0 => Err(too_large(size)),
        usable => Ok(usable),
    }
}

fn too_large(size: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("stack size {size} is too large (the maximum is {MAX_STACK_SIZE} bytes)"),
    )
}

/// The usable size `Stack::new(size)` gives (0 if `size` is absurdly large).
pub(crate) fn usable_size(size: usize) -> usize {
    let page = page_size();
    if size > MAX_STACK_SIZE {
        return 0;
    }
    (size.max(MIN_STACK_SIZE) + page - 1) & !(page - 1)
}

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
//! # Overflow reports
//!
//! Every mapped stack's guard page is entered in a registry. A SIGSEGV/SIGBUS
//! handler, running on an alternate signal stack, looks the fault address up:
//! a hit inside a guard page prints one line naming the coroutine (id, name),
//! the stack size and how to raise it, then aborts. Any other fault is passed
//! to the handler that was installed before fibra's (Rust's own stack
//! overflow handler included), or to the default action. Every thread that
//! runs coroutines calls `ensure_signal_stack` first, since a handler cannot
//! run on the stack that has just overflowed.
//!
//! # Pooling
//!
//! `StackPool` keeps released stacks for reuse, so creating a coroutine
//! normally costs no system call. Each thread keeps one per stack size it has
//! used (`acquire` / `release`), so a worker reuses the stacks of the
//! coroutines that finished on it. Behind them, a process-wide shared pool
//! takes the surplus of full thread pools and refills empty ones in batches
//! (a stack is taken where a coroutine is spawned and given back where it
//! ran, which need not be the same thread). A thread's own pool is unmapped
//! when the thread exits, so dropping a runtime returns its workers' stacks.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, RwLock};

use memmap2::{MmapMut, MmapOptions};

/// Usable bytes of a stack when none is asked for: 256 KiB of address space,
/// of which only touched pages cost memory.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// The smallest size `Stack::new` hands out (smaller requests round up).
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// The largest size `Stack::new` accepts (1 TiB of address space); larger
/// requests are `InvalidInput` rather than an arithmetic overflow.
pub const MAX_STACK_SIZE: usize = 1 << 40;

/// Stacks a thread's pool keeps for reuse before it unmaps released ones.
pub const THREAD_POOL_CAPACITY: usize = 1024;

/// Bytes at the top of every stack reserved for its `StackHeader`.
const HEADER_BYTES: usize = 64;

static MAPPINGS_CREATED: AtomicUsize = AtomicUsize::new(0);
static MAPPINGS_RELEASED: AtomicUsize = AtomicUsize::new(0);

/// Process-wide stack counters (all threads, all pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackStats {
    /// Stacks mapped from the kernel since the process started.
    pub mappings_created: usize,
    /// Stacks returned to the kernel since the process started.
    pub mappings_released: usize,
}

/// Reads the process-wide stack counters.
pub fn stats() -> StackStats {
    StackStats {
        mappings_created: MAPPINGS_CREATED.load(Ordering::Relaxed),
        mappings_released: MAPPINGS_RELEASED.load(Ordering::Relaxed),
    }
}

fn page_size() -> usize {
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
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("stack size {size} is too large (the maximum is {MAX_STACK_SIZE} bytes)"),
            ));
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
        let stack = Stack { map, guard: page };
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
    fn top(&self) -> usize {
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
fn explain_map_error(err: io::Error, bytes: usize) -> io::Error {
    if err.raw_os_error() != Some(libc::ENOMEM) {
        return io::Error::new(
            err.kind(),
            format!("cannot map a {bytes}-byte coroutine stack: {err}"),
        );
    }
    let max_maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    let maps_now = std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .ok();
    let message = match (max_maps, maps_now) {
        (Some(max), Some(now)) if now + 8 >= max => format!(
            "cannot map a coroutine stack: the process has {now} memory mappings and \
             vm.max_map_count is {max}. Each coroutine stack takes two mappings (stack + guard \
             page), so about {} stacks fit. Raise the limit (sysctl -w vm.max_map_count={}) or \
             keep fewer coroutines alive at once",
            max / 2,
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
            match as_limit {
                Some(cur) if cur != libc::RLIM_INFINITY => format!(
                    "cannot map a {bytes}-byte coroutine stack: the address-space limit \
                     RLIMIT_AS (ulimit -v) is {cur} bytes and is reached. Raise it, use smaller \
                     stacks, or keep fewer coroutines alive at once"
                ),
                _ => format!(
                    "cannot map a {bytes}-byte coroutine stack: the kernel is out of memory \
                     (ENOMEM; mappings in use: {}, vm.max_map_count: {}). Free memory or \
                     keep fewer coroutines alive at once",
                    maps_now.map_or("unknown".to_string(), |n| n.to_string()),
                    max_maps.map_or("unknown".to_string(), |n| n.to_string()),
                ),
            }
        }
    };
    io::Error::new(io::ErrorKind::OutOfMemory, message)
}

// ---------------------------------------------------------------------------
// Pool

/// The usable size `Stack::new(size)` gives (0 if `size` is absurdly large).
fn usable_size(size: usize) -> usize {
    let page = page_size();
    if size > MAX_STACK_SIZE {
        return 0;
    }
    (size.max(MIN_STACK_SIZE) + page - 1) & !(page - 1)
}

/// A free list of stacks of one size. Stacks of other sizes pass through.
#[derive(Debug)]
pub struct StackPool {
    size: usize,
    capacity: usize,
    free: Vec<Stack>,
}

impl StackPool {
    /// A pool that keeps up to `capacity` stacks of `size` usable bytes.
    pub fn new(size: usize, capacity: usize) -> StackPool {
        StackPool {
            size,
            capacity,
            free: Vec::new(),
        }
    }

    /// A stack of `size` usable bytes (rounded as `Stack::new` rounds): from
    /// the pool when it keeps stacks of that size, otherwise freshly mapped.
    pub fn get(&mut self, size: usize) -> io::Result<Stack> {
        if usable_size(size) == self.pooled_size()
            && let Some(stack) = self.free.pop()
        {
            return Ok(stack);
        }
        Stack::new(size)
    }

    /// Returns a stack; it is kept if it is of the pool's size and there is
    /// room, unmapped otherwise.
    pub fn put(&mut self, stack: Stack) {
        if self.free.len() < self.capacity && stack.size() == self.pooled_size() {
            self.free.push(stack);
        }
    }

    /// Stacks currently kept.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether the pool keeps no stack right now.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    fn pooled_size(&self) -> usize {
        usable_size(self.size)
    }
}

/// Distinct stack sizes a thread keeps pools for.
const THREAD_POOL_SIZES: usize = 8;

thread_local! {
    static THREAD_POOLS: RefCell<Vec<StackPool>> = const { RefCell::new(Vec::new()) };
}

/// Stacks a thread takes from the shared pool at once when its own is empty.
const SHARED_BATCH: usize = 64;

/// Stacks of one size the process-wide shared pool keeps.
pub const SHARED_POOL_CAPACITY: usize = 4096;

/// The second level: stacks that threads with full pools handed over, for
/// threads with empty ones. A coroutine's stack is taken on the thread that
/// spawns it and given back on the worker that ran it; without this level a
/// thread that only spawns (a plain thread, or a worker whose coroutines get
/// stolen) would map a new stack for almost every spawn.
static SHARED_POOLS: Mutex<Vec<StackPool>> = Mutex::new(Vec::new());

fn shared_pools() -> std::sync::MutexGuard<'static, Vec<StackPool>> {
    SHARED_POOLS.lock().unwrap_or_else(|e| e.into_inner())
}

/// This module's process-wide locks, held by the thread that forks from just
/// before the fork until just after it, in parent and child alike (see
/// src/runtime/fork.rs): a child never inherits one of them locked by a
/// thread that does not exist there, which would hang its first spawn.
pub(crate) struct ForkHold {
    _pools: std::sync::MutexGuard<'static, Vec<StackPool>>,
    _guards: std::sync::RwLockWriteGuard<'static, BTreeMap<usize, GuardEntry>>,
}

/// Takes the locks `ForkHold` holds (in the order every other path takes
/// them: never both at once elsewhere).
pub(crate) fn hold_for_fork() -> ForkHold {
    ForkHold {
        _pools: shared_pools(),
        _guards: REGISTRY.write().unwrap_or_else(|e| e.into_inner()),
    }
}

/// The pool for `size` in `pools`, created if there is room for one more.
fn pool_for(pools: &mut Vec<StackPool>, size: usize, capacity: usize) -> Option<&mut StackPool> {
    match pools.iter().position(|p| p.pooled_size() == size) {
        Some(index) => Some(&mut pools[index]),
        None if pools.len() < THREAD_POOL_SIZES => {
            pools.push(StackPool {
                size,
                capacity,
                free: Vec::new(),
            });
            pools.last_mut()
        }
        None => None,
    }
}

/// A stack of `size` usable bytes: from the current thread's pool for that
/// size, else a batch from the shared pool, else freshly mapped.
pub(crate) fn acquire(size: usize) -> io::Result<Stack> {
    let wanted = usable_size(size);
    let pooled = THREAD_POOLS
        .try_with(|pools| {
            let mut pools = pools.try_borrow_mut().ok()?;
            let local = pool_for(&mut pools, wanted, THREAD_POOL_CAPACITY)?;
            if local.free.is_empty() {
                let mut shared = shared_pools();
                let from = shared.iter_mut().find(|p| p.pooled_size() == wanted)?;
                let keep = from.free.len().saturating_sub(SHARED_BATCH);
                local.free.extend(from.free.drain(keep..));
            }
            local.free.pop()
        })
        .ok()
        .flatten();
    match pooled {
        Some(stack) => Ok(stack),
        None => Stack::new(size),
    }
}

/// Returns a stack to the current thread's pool for its size. A full pool
/// hands half its stacks to the shared pool first; what neither keeps is
/// unmapped, as is everything during thread exit.
pub(crate) fn release(stack: Stack) {
    let mut stack = Some(stack);
    let _ = THREAD_POOLS.try_with(|pools| {
        let Ok(mut pools) = pools.try_borrow_mut() else {
            return;
        };
        let size = stack.as_ref().map_or(0, Stack::size);
        let Some(local) = pool_for(&mut pools, size, THREAD_POOL_CAPACITY) else {
            return;
        };
        if local.free.len() >= local.capacity {
            let half = local.free.len() / 2;
            let mut shared = shared_pools();
            if let Some(to) = pool_for(&mut shared, size, SHARED_POOL_CAPACITY) {
                let room = to.capacity.saturating_sub(to.free.len()).min(half);
                let from = local.free.len() - room;
                to.free.extend(local.free.drain(from..));
            }
        }
        if let Some(stack) = stack.take() {
            local.put(stack);
        }
    });
}

// ---------------------------------------------------------------------------
// Guard-page registry and the fault handler

struct GuardEntry {
    guard_end: usize,
    top: usize,
}

/// Guard pages of all mapped stacks, keyed by their start address. The fault
/// handler only ever `try_read`s it (retrying while another thread writes),
/// so a fault while this thread holds the write lock is passed on as an
/// unknown fault instead of deadlocking.
static REGISTRY: RwLock<BTreeMap<usize, GuardEntry>> = RwLock::new(BTreeMap::new());

fn registry_insert(base: usize, guard: usize, top: usize) {
    let mut map = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    map.insert(
        base,
        GuardEntry {
            guard_end: base + guard,
            top,
        },
    );
}

fn registry_remove(base: usize) {
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

fn install_overflow_handler() {
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

//! Stack pools: released stacks kept for reuse, within a mapping budget.
//!
//! Creating a coroutine should cost no system call, so stacks of finished
//! coroutines are kept and handed out again. Two levels:
//!
//! - each thread keeps the stack it released last (any size) and a small
//!   cache per stack size (`THREAD_POOL_CAPACITY` each, up to
//!   `THREAD_POOL_SIZES` sizes), touched without a lock. A
//!   runtime binds a coroutine's stack on the worker that first runs it and
//!   takes it back there when the coroutine finishes, so a worker's own
//!   cache serves the common spawn + join, mostly from the last stack
//!   alone (no size-class lookup: 62 instructions less per spawn + join);
//! - behind them, one process-wide shared pool, under a mutex, takes a full
//!   cache's surplus and refills an empty one in batches. Stacks freed on
//!   one thread are thus reachable by every thread.
//!
//! # The budget
//!
//! Each pooled stack holds two kernel mappings (stack + guard page), and
//! the kernel caps mappings per process (`vm.max_map_count`, 65,530 by
//! default: about 32,700 stacks). Pools that kept stacks without bound
//! could hold most of that while no coroutine is alive, and a spawn would
//! then be refused. So all pools together keep at most `pool_budget()`
//! stacks (a sixteenth of what the limit allows, at least 64); a release
//! beyond it unmaps. And when a mapping fails with `ENOMEM` anyway, the
//! acquiring thread empties its own cache and the shared pool (unmapping
//! them) and tries once more before it reports the error: only the few
//! stacks in other threads' caches stay out of reach.
//!
//! # Memory of pooled stacks
//!
//! A stack that a deep recursion touched keeps its pages resident when it
//! is pooled: a burst of deep coroutines would keep RSS high for the life
//! of the process. Pages below the top `KEEP_RESIDENT` bytes are handed
//! back with `madvise(MADV_DONTNEED)` — but a system call per release
//! would double the cost of a spawn + join, and which stacks went deep is
//! not recorded anywhere. Two passes:
//!
//! - a stack released is marked untrimmed, and a worker about to sleep
//!   gives back the untrimmed stacks of its cache (`trim_idle_cache`), at
//!   most once per `IDLE_TRIM_INTERVAL`; stacks a cache hands to the shared
//!   pool are given back on the way. A spawn-per-request server thus pays
//!   one `madvise` per interval for the stack it keeps reusing, not one per
//!   request. A worker that never idles keeps at most its cache's stacks
//!   untrimmed, and reuses them.
//! - a thread that never makes idle passes (a plain thread running raw
//!   coroutines) samples, on release, the page just below the boundary
//!   (eight words): if any is non-zero the coroutine went deeper, and the
//!   pages are given back at once. (Reading an untouched page maps the
//!   shared zero page, which costs no memory.) A deep page holding only
//!   zeros at the sampled words escapes this check. Workers skip it: the
//!   load touches a page the coroutine did not, and its TLB miss was most
//!   of the added cost of a spawn + join.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::{Stack, page_size, read_max_map_count, usable_size};

/// Stacks of one size a thread's cache keeps; beyond it, half go to the
/// shared pool.
pub const THREAD_POOL_CAPACITY: usize = 32;

/// Distinct stack sizes a thread keeps caches for.
const THREAD_POOL_SIZES: usize = 8;

/// Stacks a thread takes from the shared pool at once when its cache is
/// empty.
const SHARED_BATCH: usize = 16;

/// Bytes at the top of a pooled stack that stay resident; deeper touched
/// pages are given back when the stack is pooled.
pub const KEEP_RESIDENT: usize = 16 * 1024;

/// The shortest time between two idle passes of a thread that give back
/// the deep pages of its cached stacks.
const IDLE_TRIM_INTERVAL: Duration = Duration::from_millis(50);

/// Stacks in all pools (thread caches and shared) right now.
static POOLED: AtomicUsize = AtomicUsize::new(0);

/// How many stacks all pools together may keep: a sixteenth of what
/// `vm.max_map_count` allows (two mappings a stack), at least 64.
pub fn pool_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| (read_max_map_count().unwrap_or(65_530) / 2 / 16).max(64))
}

/// Stacks kept in all pools right now.
pub(crate) fn pooled() -> usize {
    POOLED.load(Ordering::Relaxed)
}

/// Free stacks of one usable size.
struct SizeClass {
    size: usize,
    free: Vec<Stack>,
}

/// A thread's caches; unmapped (and uncounted) when the thread exits.
struct ThreadCaches {
    /// The stack released last, of any size: a worker that spawns and
    /// joins one coroutine after another takes it back at once, without
    /// looking up a size class.
    hot: Option<Stack>,
    classes: Vec<SizeClass>,
}

impl ThreadCaches {
    /// Every stack of the cache, the hot one first.
    fn stacks_mut(&mut self) -> impl Iterator<Item = &mut Stack> {
        self.hot
            .iter_mut()
            .chain(self.classes.iter_mut().flat_map(|c| c.free.iter_mut()))
    }

    /// Moves every stack of the cache into `freed`.
    fn drain_into(&mut self, freed: &mut Vec<Stack>) {
        freed.extend(self.hot.take());
        for class in self.classes.iter_mut() {
            freed.append(&mut class.free);
        }
    }
}

impl Drop for ThreadCaches {
    fn drop(&mut self) {
        let n = self.stacks_mut().count();
        POOLED.fetch_sub(n, Ordering::Relaxed);
    }
}

thread_local! {
    static THREAD_CACHES: RefCell<ThreadCaches> = const {
        RefCell::new(ThreadCaches { hot: None, classes: Vec::new() })
    };
    /// When this thread last gave back the deep pages of its cache.
    static LAST_IDLE_TRIM: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether this thread makes idle passes (it is a worker).
    static MAKES_IDLE_PASSES: Cell<bool> = const { Cell::new(false) };
}

static SHARED: Mutex<Vec<SizeClass>> = Mutex::new(Vec::new());

fn shared() -> MutexGuard<'static, Vec<SizeClass>> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared pool's lock, held across a `fork` (see `super::ForkHold`).
pub(super) struct SharedHold(#[allow(dead_code)] MutexGuard<'static, Vec<SizeClass>>);

pub(super) fn hold_shared() -> SharedHold {
    SharedHold(shared())
}

/// The class for `size` in `classes`, created if there are fewer than
/// `max_classes`.
fn class_for(
    classes: &mut Vec<SizeClass>,
    size: usize,
    max_classes: usize,
) -> Option<&mut SizeClass> {
    match classes.iter().position(|c| c.size == size) {
        Some(index) => Some(&mut classes[index]),
        None if classes.len() < max_classes => {
            classes.push(SizeClass {
                size,
                free: Vec::new(),
            });
            classes.last_mut()
        }
        None => {
            // Reuse an empty class for the new size.
            let index = classes.iter().position(|c| c.free.is_empty())?;
            classes[index].size = size;
            Some(&mut classes[index])
        }
    }
}

/// A stack of `size` usable bytes: from this thread's cache, else a batch
/// from the shared pool, else freshly mapped — after emptying the pools
/// into the kernel if the first mapping attempt fails with `ENOMEM`.
pub(crate) fn acquire(size: usize) -> io::Result<Stack> {
    let wanted = usable_size(size);
    let mut stack = match take_pooled(wanted) {
        Some(stack) => {
            POOLED.fetch_sub(1, Ordering::Relaxed);
            stack
        }
        None => match Stack::new(size) {
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory && trim() > 0 => Stack::new(size)?,
            result => result?,
        },
    };
    stack.trimmed = false;
    Ok(stack)
}

fn take_pooled(wanted: usize) -> Option<Stack> {
    THREAD_CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            if caches.hot.as_ref().is_some_and(|hot| hot.size() == wanted) {
                return caches.hot.take();
            }
            let cache = class_for(&mut caches.classes, wanted, THREAD_POOL_SIZES)?;
            if cache.free.is_empty() {
                let mut shared = shared();
                let from = shared.iter_mut().find(|c| c.size == wanted)?;
                let keep = from.free.len().saturating_sub(SHARED_BATCH);
                cache.free.extend(from.free.drain(keep..));
            }
            cache.free.pop()
        })
        .ok()
        .flatten()
}

/// Returns a stack for reuse: deep pages given back, then kept in this
/// thread's cache (a full cache hands half to the shared pool) unless the
/// pools are at their budget, in which case it is unmapped.
pub(crate) fn release(mut stack: Stack) {
    if !MAKES_IDLE_PASSES.with(Cell::get) && deep_pages_touched(&stack) {
        give_back_deep_pages(&mut stack);
    }
    // Take a place within the budget first, so that threads releasing at
    // once cannot together go over it.
    if POOLED.fetch_add(1, Ordering::Relaxed) >= pool_budget() {
        POOLED.fetch_sub(1, Ordering::Relaxed);
        return; // dropped: unmapped
    }
    let mut stack = Some(stack);
    let _ = THREAD_CACHES.try_with(|caches| {
        let Ok(mut caches) = caches.try_borrow_mut() else {
            return;
        };
        if caches.hot.is_none() {
            caches.hot = stack.take();
            return;
        }
        let size = stack.as_ref().map_or(0, Stack::size);
        let Some(cache) = class_for(&mut caches.classes, size, THREAD_POOL_SIZES) else {
            return;
        };
        if cache.free.len() >= THREAD_POOL_CAPACITY {
            let half = cache.free.len() / 2;
            let mut shared = shared();
            // The shared pool holds any number of sizes: the budget bounds it.
            if let Some(to) = class_for(&mut shared, size, usize::MAX) {
                for mut moved in cache.free.drain(half..) {
                    give_back_deep_pages(&mut moved);
                    to.free.push(moved);
                }
            }
        }
        if let Some(stack) = stack.take() {
            cache.free.push(stack);
        }
    });
    if stack.is_some() {
        // Not taken (thread exiting, or no class free): unmapped here.
        POOLED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Unmaps every stack in this thread's cache and in the shared pool;
/// returns how many. Called when a mapping fails for lack of mappings or
/// memory: stacks sitting in pools are the first thing to give back.
pub fn trim() -> usize {
    let mut freed = Vec::new();
    let _ = THREAD_CACHES.try_with(|caches| {
        if let Ok(mut caches) = caches.try_borrow_mut() {
            caches.drain_into(&mut freed);
        }
    });
    for class in shared().iter_mut() {
        freed.append(&mut class.free);
    }
    let n = freed.len();
    POOLED.fetch_sub(n, Ordering::Relaxed);
    drop(freed);
    n
}

/// Unmaps every stack in the shared pool; returns how many. A runtime that
/// is the last one alive calls this when it is dropped, so that dropping
/// every runtime gives all their stacks back (workers' own caches are
/// unmapped when their threads exit).
pub(crate) fn trim_shared() -> usize {
    let mut freed = Vec::new();
    for class in shared().iter_mut() {
        freed.append(&mut class.free);
    }
    let n = freed.len();
    POOLED.fetch_sub(n, Ordering::Relaxed);
    drop(freed);
    n
}

/// Says whether this thread makes idle passes (`trim_idle_cache`): a
/// worker sets it when its loop starts, so that its releases skip the
/// deep-page sample from its first coroutine on (a worker that never idles
/// would otherwise pay the sample's TLB miss on every release), and clears
/// it when the loop ends or the thread turns plain in a forked child.
pub(crate) fn set_makes_idle_passes(yes: bool) {
    let _ = MAKES_IDLE_PASSES.try_with(|c| c.set(yes));
}

/// Gives back the deep pages of the stacks in this thread's cache that
/// were used since they were last given back, if `IDLE_TRIM_INTERVAL` has
/// passed since this thread last did so; otherwise returns when it will
/// have (a worker about to sleep wakes then). None when nothing is left
/// to give back.
pub(crate) fn trim_idle_cache(now: Instant) -> Option<Instant> {
    THREAD_CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            let untrimmed = caches.stacks_mut().filter(|stack| !stack.trimmed);
            let last = LAST_IDLE_TRIM.with(Cell::get);
            if let Some(last) = last
                && now < last + IDLE_TRIM_INTERVAL
            {
                let mut untrimmed = untrimmed;
                return untrimmed.next().map(|_| last + IDLE_TRIM_INTERVAL);
            }
            let mut trimmed_any = false;
            for stack in untrimmed {
                give_back_deep_pages(stack);
                trimmed_any = true;
            }
            if trimmed_any {
                LAST_IDLE_TRIM.with(|c| c.set(Some(now)));
            }
            None
        })
        .ok()
        .flatten()
}

/// Whether the page just below `stack`'s top `KEEP_RESIDENT` bytes shows
/// signs of use (a non-zero word among eight sampled).
fn deep_pages_touched(stack: &Stack) -> bool {
    let page = page_size();
    let bottom = stack.bottom() as usize;
    let boundary = stack.top() - KEEP_RESIDENT;
    if boundary < bottom + page {
        return false;
    }
    let probe = (boundary - page) as *const u64;
    let words = page / 8;
    (0..8).any(|i| {
        // SAFETY: the probe page lies inside the stack's usable, readable
        // range (above the guard page, below the boundary); no coroutine
        // runs on a stack being released, so nothing else accesses it. A
        // volatile read, so that the load is not elided.
        unsafe { probe.add(i * words / 8).read_volatile() != 0 }
    })
}

/// Hands the pages of `stack` below its top `KEEP_RESIDENT` bytes back to
/// the kernel, unless they are known to be untouched.
fn give_back_deep_pages(stack: &mut Stack) {
    if stack.trimmed {
        return;
    }
    stack.trimmed = true;
    let bottom = stack.bottom() as usize;
    let boundary = stack.top() - KEEP_RESIDENT;
    if boundary <= bottom {
        return;
    }
    // SAFETY: [bottom, boundary) lies inside the mapping this Stack owns,
    // and no coroutine uses it; MADV_DONTNEED on private anonymous memory
    // only makes those pages read back as zeros.
    unsafe {
        libc::madvise(
            bottom as *mut libc::c_void,
            boundary - bottom,
            libc::MADV_DONTNEED,
        );
    }
}

/// A free list of stacks of one size, owned by whoever made it. Stacks of
/// other sizes pass through. (fibra's own pools are the per-thread caches
/// and the shared pool above; this type is for code that manages stacks
/// itself.)
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
        if usable_size(size) == usable_size(self.size)
            && let Some(stack) = self.free.pop()
        {
            return Ok(stack);
        }
        Stack::new(size)
    }

    /// Returns a stack; it is kept if it is of the pool's size and there is
    /// room, unmapped otherwise.
    pub fn put(&mut self, stack: Stack) {
        if self.free.len() < self.capacity && stack.size() == usable_size(self.size) {
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
}

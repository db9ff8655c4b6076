//! `fibra::thread::scope`: scoped coroutines that may borrow from the
//! caller's stack, as `std::thread::scope` lets threads borrow.
//!
//! # The guarantee, and how it is kept
//!
//! A scoped coroutine's closure and result may hold borrows of lifetime
//! `'scope`, so `scope` must not return — nor unwind — before every
//! coroutine spawned in it has finished *and* its closure and result are
//! gone (the runtime's `spawn_unchecked` contract: its join cell is DONE).
//!
//! - Each scoped spawn goes into the scope's list (`pending`) before the
//!   handle reaches the caller: a `Slot` holding the coroutine's
//!   `JoinHandle`. The user's `ScopedJoinHandle` shares the slot.
//! - `ScopedJoinHandle::join` takes the handle out of the slot and joins it
//!   with no cancellation point (`join_uncancelled`): once a handle has
//!   left its slot, whoever took it finishes the join before it can return
//!   or unwind.
//! - When the scope's closure is done — returned, panicked, or unwound by a
//!   cancellation of the scope's own coroutine (caught) — `scope` walks the
//!   list in spawn order and joins, again without a cancellation point,
//!   every handle still in its slot. A slot found empty was taken by a
//!   join that completes before its taker finishes: the taker was the
//!   scope's closure (done by now) or another scoped coroutine, which this
//!   walk waits for in turn. Coroutines spawned while the walk runs are
//!   appended to the list and reached by it. Only then does `scope` return
//!   the closure's value or resume its unwinding.
//!
//! # Panics and cancellation
//!
//! As std: if the closure panics, `scope` waits for every coroutine and
//! then continues the panic; if a coroutine panicked and nobody joined it,
//! `scope` panics ("a scoped coroutine panicked") after the wait. If the
//! scope's own coroutine is cancelled (`JoinHandle::cancel`, a runtime
//! shutting down), the cancellation is passed on: every scoped coroutine
//! still running is cancelled too (unwinding from its park point), waited
//! for, and then the scope's coroutine continues unwinding. An unjoined
//! coroutine that ended by cancellation does not count as a panic.
//!
//! The wait at the end has no cancellation point, so a scoped coroutine
//! that never parks keeps its scope waiting: cancellation, here as
//! everywhere, is delivered at park points.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Builder, Result, Thread};
use crate::Cancelled;
use crate::runtime;

/// A scope for coroutines that may borrow (as `std::thread::Scope`); see
/// [`scope`].
pub struct Scope<'scope, 'env: 'scope> {
    /// Every coroutine spawned in the scope, in spawn order. The slots'
    /// lifetime `'scope` is erased (as std erases it): a list whose type
    /// named `'scope` could not live in the value `'scope` borrows. Sound
    /// because `scope()` empties every slot — joins its coroutine — before
    /// `'scope` ends; an empty slot's drop touches nothing borrowed.
    pending: Mutex<Vec<Arc<dyn Pending>>>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// An owned permission to join a scoped coroutine (as
/// `std::thread::ScopedJoinHandle`).
pub struct ScopedJoinHandle<'scope, T> {
    slot: Arc<Slot<T>>,
    thread: Thread,
    _scope: PhantomData<&'scope ()>,
}

/// A scoped coroutine's handle, shared by the scope and its
/// `ScopedJoinHandle` (see the module docs).
struct Slot<T> {
    handle: Mutex<Option<crate::JoinHandle<T>>>,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, Option<crate::JoinHandle<T>>> {
        // Held for a few instructions; never poisoned by a panic in between.
        self.handle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the scope does with a slot it finds still holding a handle.
trait Pending: Send + Sync {
    /// Joins it (no cancellation point); true if it panicked unjoined.
    fn finish(&self) -> bool;
    /// Cancels it if it is still in its slot.
    fn cancel(&self);
}

impl<T: Send> Pending for Slot<T> {
    fn finish(&self) -> bool {
        let handle = self.lock().take();
        match handle {
            Some(handle) => match handle.join_uncancelled() {
                Ok(_) => false,
                Err(payload) => !payload.is::<Cancelled>(),
            },
            None => false,
        }
    }

    fn cancel(&self) {
        if let Some(handle) = &*self.lock() {
            handle.cancel();
        }
    }
}

/// Runs `f` with a scope in which coroutines may borrow from the caller
/// (as `std::thread::scope`). Returns once every coroutine spawned in it
/// has finished, whether `f` returned, panicked, or its coroutine was
/// cancelled — in which case the scoped coroutines are cancelled too.
///
/// ```
/// use fibra::thread;
///
/// let mut totals = [0u64; 4];
/// let data: Vec<u64> = (1..=1000).collect();
/// thread::scope(|s| {
///     for (chunk, total) in data.chunks(250).zip(totals.iter_mut()) {
///         s.spawn(move || *total = chunk.iter().sum()); // borrows `data`
///     }
/// }); // every coroutine has finished here, joined or not
/// assert_eq!(totals.iter().sum::<u64>(), 500_500);
/// ```
///
/// Cancelling the coroutine that runs the scope cancels the coroutines in
/// it and waits for them before the cancellation goes on:
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let unwound = Arc::new(AtomicUsize::new(0));
/// let counter = Arc::clone(&unwound);
/// let owner = fibra::spawn(move || {
///     let borrowed = &counter;
///     fibra::thread::scope(|s| {
///         for _ in 0..3 {
///             s.spawn(move || {
///                 struct Count<'a>(&'a AtomicUsize);
///                 impl Drop for Count<'_> {
///                     fn drop(&mut self) {
///                         self.0.fetch_add(1, Ordering::SeqCst);
///                     }
///                 }
///                 let _count = Count(borrowed);
///                 loop {
///                     fibra::park(); // until cancelled
///                 }
///             });
///         }
///         loop {
///             fibra::park();
///         }
///     })
/// });
/// fibra::sleep(std::time::Duration::from_millis(10));
/// owner.cancel();
/// assert!(owner.join().is_err());
/// assert_eq!(unwound.load(Ordering::SeqCst), 3); // all unwound before join returned
/// ```
pub fn scope<'env, F, T>(f: F) -> T
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
{
    let scope = Scope {
        pending: Mutex::new(Vec::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    let result = catch_unwind(AssertUnwindSafe(|| f(&scope)));
    if let Err(payload) = &result
        && payload.is::<Cancelled>()
    {
        scope.cancel_all();
    }
    let unjoined_panic = scope.finish_all();
    match result {
        Err(payload) => resume_unwind(payload),
        Ok(_) if unjoined_panic => panic!("a scoped coroutine panicked"),
        Ok(value) => value,
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Spawns a scoped coroutine, which may borrow anything that outlives
    /// the scope (as `std::thread::Scope::spawn`).
    ///
    /// # Panics
    /// If no stack can be mapped; `Builder::spawn_scoped` returns that
    /// error instead.
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        Builder::new()
            .spawn_scoped(self, f)
            .unwrap_or_else(|e| panic!("fibra: cannot spawn a coroutine: {e}"))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<dyn Pending>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cancel_all(&self) {
        let pending: Vec<_> = self.lock().clone();
        for slot in pending {
            slot.cancel();
        }
    }

    /// Waits for every coroutine (see the module docs); true if one
    /// panicked and nobody joined it.
    fn finish_all(&self) -> bool {
        let mut unjoined_panic = false;
        let mut next = 0;
        loop {
            let slot = self.lock().get(next).cloned();
            let Some(slot) = slot else {
                return unjoined_panic;
            };
            unjoined_panic |= slot.finish();
            next += 1;
        }
    }
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("spawned", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Spawns a scoped coroutine with this configuration (as
    /// `std::thread::Builder::spawn_scoped`).
    pub fn spawn_scoped<'scope, 'env, F, T>(
        self,
        scope: &'scope Scope<'scope, 'env>,
        f: F,
    ) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        // Room for the slot first, so that nothing can fail between the
        // spawn and the slot being listed.
        let mut pending = scope.lock();
        pending.reserve(1);
        // SAFETY: the coroutine's handle is listed in `scope` before this
        // returns, and `scope()` joins every listed handle, or waits for the
        // join that took it, without a cancellation point before it returns
        // or unwinds (module docs): every borrow in `f` and in its result,
        // all of lifetime 'scope, outlives the coroutine.
        let handle =
            unsafe { runtime::spawn_unchecked(runtime::current_shared(), self.into_inner(), f) }?;
        let thread = Thread::from(handle.coroutine());
        let slot = Arc::new(Slot {
            handle: Mutex::new(Some(handle)),
        });
        let listed: Arc<dyn Pending + 'scope> = Arc::clone(&slot) as Arc<dyn Pending + 'scope>;
        // SAFETY: only the lifetime bound changes (same fat pointer); the
        // scope empties the slot before 'scope ends (see `pending`).
        let listed =
            unsafe { std::mem::transmute::<Arc<dyn Pending + 'scope>, Arc<dyn Pending>>(listed) };
        pending.push(listed);
        drop(pending);
        Ok(ScopedJoinHandle {
            slot,
            thread,
            _scope: PhantomData,
        })
    }
}

impl<T> ScopedJoinHandle<'_, T> {
    /// Waits for the coroutine and returns its value, or its panic's
    /// payload. The wait has no cancellation point: a cancelled caller
    /// unwinds only once the joined coroutine has finished (it may borrow
    /// what the caller's frame owns).
    pub fn join(self) -> Result<T> {
        let handle = self.slot.lock().take();
        handle
            .expect("a ScopedJoinHandle is joined once")
            .join_uncancelled()
    }

    /// A handle to the coroutine.
    pub fn thread(&self) -> &Thread {
        &self.thread
    }

    /// Whether the coroutine has finished.
    pub fn is_finished(&self) -> bool {
        self.slot
            .lock()
            .as_ref()
            .is_none_or(|handle| handle.is_finished())
    }
}

impl<T> fmt::Debug for ScopedJoinHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedJoinHandle")
            .field("thread", &self.thread)
            .finish_non_exhaustive()
    }
}

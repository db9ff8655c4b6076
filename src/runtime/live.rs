//! A worker's list of started, unfinished tasks, and the lock around it.
//!
//! The owning worker adds a task when it starts and removes it when it
//! finishes; a dump, `metrics()` and the watchdog read the list from other
//! threads, rarely. A `std::sync::Mutex` costs the owner two atomic
//! read-modify-writes per lock and unlock (a compare-and-swap in, a swap
//! out, so that it can wake sleepers): four per spawn + join. This lock
//! takes a swap to enter and a plain release store to leave. A thread that
//! finds it held spins briefly, then sleeps 50 µs at a time: the holders
//! are the owner (for a push or a swap-remove) and observers (which may
//! hold it for a whole dump, hundreds of milliseconds with 100,000 tasks),
//! so a waiter that spun on would take a CPU from the holder. There is no
//! poisoning: the guard releases the lock when dropped, unwinding or not,
//! and the list is consistent after each push or remove.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::task::Task;

/// The tasks homed on one worker that have started and not finished.
pub(crate) struct LiveTasks(pub Vec<*const Task>);

/// `LiveTasks` behind a swap-and-store lock (see the module docs).
pub(crate) struct LiveLock {
    locked: AtomicBool,
    tasks: UnsafeCell<LiveTasks>,
}

// SAFETY: the list is only touched through a `LiveGuard`, and one guard
// exists at a time (the `locked` flag, taken with Acquire and released with
// Release, orders every access after the previous holder's). The pointers
// it holds are dereferenced only by holders, while the tasks are alive (see
// `WorkerShared::live`).
unsafe impl Sync for LiveLock {}
// SAFETY: as above; the raw pointers carry no thread affinity.
unsafe impl Send for LiveLock {}

impl LiveLock {
    pub(crate) fn new() -> LiveLock {
        LiveLock {
            locked: AtomicBool::new(false),
            tasks: UnsafeCell::new(LiveTasks(Vec::new())),
        }
    }

    /// Takes the lock: one swap when it is free.
    #[inline]
    pub(crate) fn lock(&self) -> LiveGuard<'_> {
        if self.locked.swap(true, Ordering::Acquire) {
            self.lock_contended();
        }
        LiveGuard { lock: self }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 100 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            if !self.locked.swap(true, Ordering::Acquire) {
                return;
            }
        }
    }
}

/// Access to the list while the lock is held; released on drop.
pub(crate) struct LiveGuard<'a> {
    lock: &'a LiveLock,
}

impl Deref for LiveGuard<'_> {
    type Target = LiveTasks;

    fn deref(&self) -> &LiveTasks {
        // SAFETY: this guard holds the lock: no other reference exists.
        unsafe { &*self.lock.tasks.get() }
    }
}

impl DerefMut for LiveGuard<'_> {
    fn deref_mut(&mut self) -> &mut LiveTasks {
        // SAFETY: as in `deref`, and `&mut self` makes this one unique.
        unsafe { &mut *self.lock.tasks.get() }
    }
}

impl Drop for LiveGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

//! `TaskRef`: a counted reference to a task, one word wide.
//!
//! A task's allocation is its header (`Task`) followed by its body, whose
//! type only the spawn that made it knows (task.rs, "One allocation per
//! task"); `Arc` cannot free such an allocation through a pointer to the
//! header, so the count lives in the header and the last reference frees
//! through the header's `BodyVTable::destroy`. Otherwise it is `Arc`'s
//! protocol: a Relaxed increment (a new reference comes from an existing
//! one), a Release decrement, and an Acquire fence before the last one
//! frees, so every use of the task by other references happens-before its
//! destruction.

use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};

use super::task::Task;

/// A counted reference to a task (as `Arc<Task>`).
pub(crate) struct TaskRef {
    task: NonNull<Task>,
}

// SAFETY: `Task` is `Send + Sync` (task.rs); the count is atomic.
unsafe impl Send for TaskRef {}
// SAFETY: as above.
unsafe impl Sync for TaskRef {}

/// Past this count, a leak of references would soon wrap the counter:
/// abort, as `Arc` does.
const MAX_REFS: usize = isize::MAX as usize;

impl TaskRef {
    /// Takes over a reference that was forgotten (`mem::forget`), as a
    /// parked task's worker forgets its own (task.rs).
    ///
    /// # Safety
    /// `task` is a live task owed that forgotten reference, and it is
    /// taken over once.
    pub unsafe fn from_raw(task: *const Task) -> TaskRef {
        TaskRef {
            // SAFETY: a live task's address is not null.
            task: unsafe { NonNull::new_unchecked(task as *mut Task) },
        }
    }

    /// The task's address.
    pub fn as_ptr(&self) -> *const Task {
        self.task.as_ptr()
    }

    /// One more reference to a task the caller can see, hence alive. Made
    /// from the task's `this`, which reaches the whole allocation.
    pub fn clone_from_ref(task: &Task) -> TaskRef {
        if task.refs.fetch_add(1, Ordering::Relaxed) > MAX_REFS {
            std::process::abort();
        }
        // SAFETY: the count just went up for this reference.
        unsafe { TaskRef::from_raw(task.this) }
    }
}

impl Clone for TaskRef {
    fn clone(&self) -> TaskRef {
        TaskRef::clone_from_ref(self)
    }
}

impl Deref for TaskRef {
    type Target = Task;

    #[inline]
    fn deref(&self) -> &Task {
        // SAFETY: a reference keeps the task alive.
        unsafe { self.task.as_ref() }
    }
}

impl Drop for TaskRef {
    #[inline]
    fn drop(&mut self) {
        if self.refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let destroy = self.body.destroy;
        // SAFETY: the last reference: nobody else can reach the task, and
        // `destroy` was made for this allocation.
        unsafe { destroy(self.task) }
    }
}

impl fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

//! `Coroutine`, the handle to a coroutine or a plain thread that
//! `fibra::current()` and `JoinHandle::coroutine()` give (as
//! `std::thread::Thread` is to a thread): id, name and `unpark`.

use std::thread;

use crate::coroutine::next_id;

use super::task_ref::TaskRef;
use super::worker::current_task;

/// A handle to a coroutine (mirrors `std::thread::Thread`): its id and name,
/// and `unpark`. `fibra::current()` inside a plain OS thread gives a handle
/// to that thread, whose `unpark` is `Thread::unpark`.
///
/// Not to be confused with `fibra::coroutine::Coroutine`, the raw,
/// scheduler-free coroutine type.
#[derive(Clone)]
pub struct Coroutine {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Task(TaskRef),
    Thread { thread: thread::Thread, id: u64 },
}

impl Coroutine {
    pub(super) fn from_task(task: TaskRef) -> Coroutine {
        Coroutine {
            inner: Inner::Task(task),
        }
    }

    /// A process-unique id (coroutines and threads share the numbering).
    pub fn id(&self) -> u64 {
        match &self.inner {
            Inner::Task(task) => task.id,
            Inner::Thread { id, .. } => *id,
        }
    }

    /// The name given with `Builder::name` (for a thread, its name).
    pub fn name(&self) -> Option<&str> {
        match &self.inner {
            Inner::Task(task) => task.name.as_deref(),
            Inner::Thread { thread, .. } => thread.name(),
        }
    }

    /// Makes a pending or the next `park` of this coroutine return.
    pub fn unpark(&self) {
        match &self.inner {
            Inner::Task(task) => task.unpark(),
            Inner::Thread { thread, .. } => thread.unpark(),
        }
    }
}

impl std::fmt::Debug for Coroutine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coroutine")
            .field("id", &self.id())
            .field("name", &self.name())
            .finish()
    }
}

/// A handle to the calling coroutine, or to the calling thread.
pub fn current() -> Coroutine {
    if let Some(task) = current_task() {
        return Coroutine::from_task(task.arc());
    }
    Coroutine {
        inner: Inner::Thread {
            thread: thread::current(),
            id: thread_id(),
        },
    }
}

/// `current().id()` without making a handle (no reference count): for
/// fibra::sync's owner checks (`ReentrantLock`).
pub(crate) fn current_id() -> u64 {
    match current_task() {
        Some(task) => task.id,
        None => thread_id(),
    }
}

/// The calling thread's id in the coroutines' numbering.
fn thread_id() -> u64 {
    thread_local! {
        static THREAD_ID: u64 = next_id();
    }
    THREAD_ID.with(|id| *id)
}

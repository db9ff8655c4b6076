//! `std::thread` for coroutines: change `use std::thread` to
//! `use fibra::thread` and keep the code. `spawn` starts a coroutine,
//! `sleep` and `park` park it, `scope` runs scoped coroutines that may
//! borrow from the caller's stack; on a plain OS thread each call does what
//! std's does.
//!
//! The names follow std: `Thread` (a handle with `id()`, `name()`,
//! `unpark()`), `ThreadId`, `JoinHandle::thread()`, `Builder`,
//! `Scope`/`ScopedJoinHandle`, `Result`. The crate-root functions
//! (`fibra::spawn`, `fibra::sleep`, ...) are the same operations under
//! fibra's own names; `fibra::JoinHandle` and this module's `JoinHandle`
//! convert into each other.
//!
//! What a coroutine is not: an OS thread. `thread_local!` values are per
//! worker thread, so coroutines of one worker share them —
//! `fibra::coroutine_local!` declares values per coroutine instead
//! (`CoroutineLocal`); and a coroutine runs its whole life on the worker
//! that first ran it (see the crate docs, "What blocks a worker").
//!
//! ```
//! use fibra::thread;
//! use std::time::Duration;
//!
//! let handle = thread::Builder::new()
//!     .name("sleeper".into())
//!     .spawn(|| {
//!         thread::sleep(Duration::from_millis(5)); // parks; the worker runs others
//!         thread::current().name().map(str::to_owned)
//!     })
//!     .unwrap();
//! let id = handle.thread().id();
//! assert_ne!(id, thread::current().id());
//! assert_eq!(handle.join().unwrap().as_deref(), Some("sleeper"));
//! ```

use std::fmt;
use std::io;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::runtime::{self, Coroutine};
use crate::sync::poison::{self, ParkNote};

mod scope;

pub use crate::sync::local::{CoroutineLocal, LocalAccessError};
pub use scope::{Scope, ScopedJoinHandle, scope};
pub use std::thread::{AccessError, LocalKey, Result, available_parallelism};

// ---------------------------------------------------------------------------
// Thread and ThreadId

/// A handle to a coroutine or thread (as `std::thread::Thread`): its id,
/// its name, and `unpark`.
#[derive(Clone)]
pub struct Thread {
    inner: Coroutine,
}

/// A process-unique id of a coroutine or thread (as `std::thread::ThreadId`;
/// coroutines and threads share one numbering, and ids are never reused).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ThreadId(u64);

impl ThreadId {
    /// The id as a number.
    pub fn as_u64(&self) -> u64 {
        self.0
    }
}

impl Thread {
    /// The coroutine's (or thread's) id.
    pub fn id(&self) -> ThreadId {
        ThreadId(self.inner.id())
    }

    /// The name given with `Builder::name`; for a plain thread, its name.
    pub fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    /// Makes a pending or the next `park` of this coroutine return.
    pub fn unpark(&self) {
        self.inner.unpark();
    }

    /// The crate-root handle to the same coroutine.
    pub fn coroutine(&self) -> &Coroutine {
        &self.inner
    }
}

impl From<Coroutine> for Thread {
    fn from(inner: Coroutine) -> Thread {
        Thread { inner }
    }
}

impl fmt::Debug for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Thread")
            .field("id", &self.id())
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// A handle to the calling coroutine, or to the calling thread.
pub fn current() -> Thread {
    Thread {
        inner: crate::current(),
    }
}

// ---------------------------------------------------------------------------
// Spawning

/// An owned permission to join a coroutine (as `std::thread::JoinHandle`).
/// Dropping it detaches the coroutine.
pub struct JoinHandle<T> {
    inner: crate::JoinHandle<T>,
    thread: OnceLock<Thread>,
}

impl<T> JoinHandle<T> {
    /// Waits for the coroutine to finish: its value, or its panic's payload
    /// (`fibra::Cancelled` if it was cancelled). Parks the calling coroutine
    /// or blocks the calling thread.
    pub fn join(self) -> Result<T> {
        self.inner.join()
    }

    /// A handle to the coroutine.
    pub fn thread(&self) -> &Thread {
        self.thread.get_or_init(|| Thread {
            inner: self.inner.coroutine(),
        })
    }

    /// Whether the coroutine has finished.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Asks the coroutine to unwind from its current or next park point
    /// (see `fibra::JoinHandle::cancel`).
    pub fn cancel(&self) {
        self.inner.cancel();
    }
}

impl<T> From<crate::JoinHandle<T>> for JoinHandle<T> {
    fn from(inner: crate::JoinHandle<T>) -> JoinHandle<T> {
        JoinHandle {
            inner,
            thread: OnceLock::new(),
        }
    }
}

impl<T> From<JoinHandle<T>> for crate::JoinHandle<T> {
    fn from(handle: JoinHandle<T>) -> crate::JoinHandle<T> {
        handle.inner
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinHandle").field(&self.inner).finish()
    }
}

/// Configures a coroutine before spawning it (as `std::thread::Builder`).
#[derive(Debug, Default, Clone)]
pub struct Builder {
    inner: crate::Builder,
}

impl Builder {
    /// A builder with the defaults: no name, the runtime's stack size.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the coroutine (`Thread::name`, panic messages, overflow
    /// reports).
    pub fn name(self, name: String) -> Builder {
        Builder {
            inner: self.inner.name(name),
        }
    }

    /// Usable stack bytes (rounded up to whole pages; only touched pages
    /// cost memory).
    pub fn stack_size(self, size: usize) -> Builder {
        Builder {
            inner: self.inner.stack_size(size),
        }
    }

    /// Spawns the coroutine on the calling coroutine's runtime, or the
    /// default one. Fails if no stack can be mapped (the error names the
    /// limit).
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.inner.spawn(f).map(JoinHandle::from)
    }

    fn into_inner(self) -> crate::Builder {
        self.inner
    }
}

/// Spawns a coroutine (as `std::thread::spawn`) on the calling coroutine's
/// runtime, or on the default one.
///
/// # Panics
/// If no stack can be mapped; `Builder::spawn` returns that error instead.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    JoinHandle::from(crate::spawn(f))
}

// ---------------------------------------------------------------------------
// Waiting

/// Parks the calling coroutine for at least `dur` (its worker runs others
/// meanwhile); on a plain thread, `std::thread::sleep`.
pub fn sleep(dur: Duration) {
    let _note = ParkNote::enter(runtime::in_coroutine());
    crate::sleep(dur);
}

/// Parks the calling coroutine until `deadline`.
pub fn sleep_until(deadline: Instant) {
    let _note = ParkNote::enter(runtime::in_coroutine());
    crate::sleep_until(deadline);
}

/// Lets the other coroutines of this worker run, then continues.
pub fn yield_now() {
    crate::yield_now();
}

/// Parks until `Thread::unpark` (an earlier unpark makes it return at
/// once). May return spuriously: wait in a loop on a condition.
pub fn park() {
    let _note = ParkNote::enter(runtime::in_coroutine());
    crate::park();
}

/// As `park`, returning after `dur` at the latest.
pub fn park_timeout(dur: Duration) {
    let _note = ParkNote::enter(runtime::in_coroutine());
    crate::park_timeout(dur);
}

/// Whether the caller is unwinding from a panic.
///
/// Exact on a plain thread. In a coroutine it is std's answer for the
/// worker thread: true also while another coroutine of the same worker is
/// suspended partway through its own unwinding (a destructor that parked).
/// It is never false while the caller itself unwinds, so a `Drop` that
/// checks it to avoid a second panic stays safe. std keeps the panic count
/// per OS thread and offers no way to keep one per coroutine.
pub fn panicking() -> bool {
    poison::panicking()
}

//! Coroutine-local storage: `fibra::coroutine_local!` declares a
//! `CoroutineLocal<T>` whose value is per coroutine (per thread on a plain
//! thread), as `thread_local!` declares one per thread.
//!
//! # `thread_local!` against `coroutine_local!` inside a coroutine
//!
//! A coroutine runs its whole life on one worker thread, shared with the
//! other coroutines of that worker: a `thread_local!` value there is the
//! worker's, seen (and changed) by every coroutine of the worker, and
//! dropped when the worker thread exits. A `coroutine_local!` value is the
//! coroutine's own: created on its first access in that coroutine, seen by
//! no other, and dropped when the coroutine ends. Outside any coroutine (a
//! plain thread, `main`) a `coroutine_local!` behaves as a `thread_local!`.
//!
//! # Where the values live
//!
//! Each coroutine's task record has one word for them (`Task::locals`):
//! None until the first access, then a `LocalMap` — a small vector of
//! (key, boxed value) searched linearly; the key is the address of the
//! `static` the macro declares. A coroutine that never uses one pays that
//! word, its initialisation at spawn and two loads when it ends: no lock,
//! no allocation. A plain thread's map is a `thread_local!` of its own,
//! dropped at thread exit.
//!
//! Only the owner touches a map (the home-worker rule: a coroutine's task
//! fields are touched by its home worker thread only), never while a
//! reference into its vector is held across user code: `with` finds or
//! creates the entry, keeps a pointer to the boxed value (which does not
//! move when the vector grows) and only then calls the closure, which may
//! reach other coroutine-locals — or create them — freely.
//!
//! # Destruction
//!
//! When the coroutine's closure has returned (or unwound), the task's
//! epilogue drops the values *as the coroutine*, before the result is
//! delivered to its `JoinHandle` (as std runs thread-local destructors
//! before `join` returns): a destructor may park, lock, send, sleep. The
//! most recently created value goes first. An entry being dropped is
//! marked destroyed, so a destructor that reaches it again gets
//! `LocalAccessError` (`with` panics), while one that reaches a value not
//! yet created creates it, and it is dropped in turn. The epilogue looks
//! once more after delivering (a detached result's destructor may use a
//! coroutine-local) and then frees the map. A destructor that panics is
//! reported; the others still run.

use std::any::Any;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::runtime;

/// A value per coroutine, declared with `fibra::coroutine_local!` (see
/// `fibra::thread`'s docs on `thread_local!` against `coroutine_local!`).
///
/// ```
/// use std::cell::RefCell;
///
/// fibra::coroutine_local! {
///     static NAME: RefCell<String> = RefCell::new(String::from("unnamed"));
/// }
///
/// let handle = fibra::spawn(|| {
///     NAME.set("request 7".to_string());
///     fibra::yield_now();
///     NAME.with_borrow(|name| name.clone())
/// });
/// assert_eq!(handle.join().unwrap(), "request 7");
/// assert_eq!(NAME.with(|name| name.borrow().clone()), "unnamed"); // this thread's
/// ```
pub struct CoroutineLocal<T: 'static> {
    init: fn() -> T,
}

/// A coroutine-local value was reached while or after it was dropped (as
/// `std::thread::AccessError`): `CoroutineLocal::try_with` from a
/// destructor of that same value as its coroutine ends.
///
/// ```
/// use std::cell::Cell;
///
/// fibra::coroutine_local! {
///     static COUNT: Cell<u32> = Cell::new(0);
/// }
///
/// // Alive: `try_with` gives the value.
/// let seen = fibra::spawn(|| COUNT.try_with(|count| count.get() + 1)).join().unwrap();
/// assert_eq!(seen, Ok(1));
/// let error = fibra::thread::LocalAccessError;
/// assert!(error.to_string().contains("destruction"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LocalAccessError;

impl fmt::Display for LocalAccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a coroutine-local value was reached during or after its destruction")
    }
}

impl std::error::Error for LocalAccessError {}

/// Declares coroutine-local values: `thread_local!`'s syntax, a value per
/// coroutine (per thread outside coroutines).
///
/// ```
/// use std::cell::{Cell, RefCell};
///
/// fibra::coroutine_local! {
///     static REQUEST_ID: Cell<u64> = Cell::new(0);
///     static TRAIL: RefCell<Vec<&'static str>> = RefCell::new(Vec::new());
/// }
///
/// let handles: Vec<_> = (1..=3u64)
///     .map(|id| {
///         fibra::spawn(move || {
///             REQUEST_ID.set(id);
///             for _ in 0..3 {
///                 fibra::yield_now(); // the others run, each with its own value
///                 TRAIL.with_borrow_mut(|trail| trail.push("step"));
///             }
///             (REQUEST_ID.get(), TRAIL.with_borrow(Vec::len))
///         })
///     })
///     .collect();
/// for (id, handle) in (1..=3u64).zip(handles) {
///     assert_eq!(handle.join().unwrap(), (id, 3));
/// }
/// assert_eq!(REQUEST_ID.get(), 0); // this thread's own value
/// ```
#[macro_export]
macro_rules! coroutine_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        $(#[$attr])*
        $vis static $name: $crate::thread::CoroutineLocal<$t> =
            $crate::thread::CoroutineLocal::__new({
                fn __init() -> $t {
                    $init
                }
                __init
            });
        $crate::coroutine_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr) => {
        $crate::coroutine_local!($(#[$attr])* $vis static $name: $t = $init;);
    };
}

impl<T: 'static> CoroutineLocal<T> {
    #[doc(hidden)]
    pub const fn __new(init: fn() -> T) -> CoroutineLocal<T> {
        CoroutineLocal { init }
    }

    /// Calls `f` with the calling coroutine's value, created on first use.
    ///
    /// # Panics
    /// If the value is being or has been dropped (see `try_with`), or its
    /// initialiser reaches it recursively.
    pub fn with<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&T) -> R,
    {
        match self.try_with(f) {
            Ok(r) => r,
            Err(err) => panic!("{err}"),
        }
    }

    /// As `with`, but `Err` if the value is being or has been dropped (a
    /// destructor of a coroutine-local reaching it as the coroutine ends).
    pub fn try_with<F, R>(&'static self, f: F) -> Result<R, LocalAccessError>
    where
        F: FnOnce(&T) -> R,
    {
        let map = current_map()?;
        // SAFETY: the map is the caller's own and outlives this call (see
        // the module docs); `get_or_init` keeps no reference into it.
        let value = unsafe { (*map).get_or_init(self)? };
        // SAFETY: the boxed value stays in place, alive, until the map's
        // destruction reaches it, which happens only after the caller's
        // closure has returned (the coroutine's epilogue), or in a
        // destructor, which finds it marked and gets an error instead.
        Ok(f(unsafe { &*value }))
    }

    fn key(&'static self) -> usize {
        self as *const CoroutineLocal<T> as usize
    }
}

impl<T: 'static> CoroutineLocal<Cell<T>> {
    /// Sets the value.
    pub fn set(&'static self, value: T) {
        self.with(|cell| cell.set(value));
    }

    /// A copy of the value.
    pub fn get(&'static self) -> T
    where
        T: Copy,
    {
        self.with(Cell::get)
    }

    /// Takes the value, leaving `T::default()`.
    pub fn take(&'static self) -> T
    where
        T: Default,
    {
        self.with(Cell::take)
    }

    /// Replaces the value, returning the old one.
    pub fn replace(&'static self, value: T) -> T {
        self.with(|cell| cell.replace(value))
    }
}

impl<T: 'static> CoroutineLocal<RefCell<T>> {
    /// Calls `f` with a shared borrow of the value.
    pub fn with_borrow<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&T) -> R,
    {
        self.with(|cell| f(&cell.borrow()))
    }

    /// Calls `f` with a mutable borrow of the value.
    pub fn with_borrow_mut<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&mut T) -> R,
    {
        self.with(|cell| f(&mut cell.borrow_mut()))
    }

    /// Sets the value.
    pub fn set(&'static self, value: T) {
        self.with(|cell| *cell.borrow_mut() = value);
    }

    /// Takes the value, leaving `T::default()`.
    pub fn take(&'static self) -> T
    where
        T: Default,
    {
        self.with(RefCell::take)
    }

    /// Replaces the value, returning the old one.
    pub fn replace(&'static self, value: T) -> T {
        self.with(|cell| cell.replace(value))
    }
}

impl<T: 'static> fmt::Debug for CoroutineLocal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoroutineLocal").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// The map

/// One coroutine's (or thread's) values (see the module docs).
pub(crate) struct LocalMap {
    entries: UnsafeCell<Vec<Entry>>,
}

struct Entry {
    key: usize,
    value: Value,
}

enum Value {
    /// Its initialiser is running.
    Initializing,
    Alive(Box<dyn Any>),
    /// Dropped, or being dropped.
    Destroyed,
}

impl LocalMap {
    pub(crate) const fn new() -> LocalMap {
        LocalMap {
            entries: UnsafeCell::new(Vec::new()),
        }
    }

    /// The value of `local`, created if it has never been; a pointer into
    /// its box, valid until the map's destruction reaches it.
    ///
    /// # Safety
    /// Only the map's owner calls it (see the module docs).
    unsafe fn get_or_init<T: 'static>(
        &self,
        local: &'static CoroutineLocal<T>,
    ) -> Result<*const T, LocalAccessError> {
        let key = local.key();
        let entries = self.entries.get();
        // SAFETY: the owner's access; no other reference into the vector is
        // live (none is ever held across user code).
        if let Some(entry) = unsafe { (*entries).iter().find(|e| e.key == key) } {
            return match &entry.value {
                Value::Alive(value) => Ok(downcast::<T>(value)),
                Value::Destroyed => Err(LocalAccessError),
                Value::Initializing => {
                    panic!("a coroutine_local! initialiser reached its own value")
                }
            };
        }
        // SAFETY: as above.
        unsafe {
            (*entries).push(Entry {
                key,
                value: Value::Initializing,
            })
        };
        // The initialiser is user code: it may reach other coroutine-locals
        // (the vector may grow). If it panics, the entry goes again.
        let forget_on_unwind = ForgetOnUnwind { map: self, key };
        let value: Box<dyn Any> = Box::new((local.init)());
        std::mem::forget(forget_on_unwind);
        let pointer = downcast::<T>(&value);
        // SAFETY: as above; found again, as the vector may have moved.
        let entry = unsafe { (*entries).iter_mut().find(|e| e.key == key) };
        entry
            .expect("an entry stays until the map is destroyed")
            .value = Value::Alive(value);
        Ok(pointer)
    }

    /// Drops every value, the most recently created first; values that
    /// destructors create meanwhile are dropped too. A panic is passed on
    /// once every value has been dropped.
    ///
    /// # Safety
    /// Only the map's owner calls it, with no closure of `with` running
    /// but in the destructors it runs itself.
    pub(crate) unsafe fn destroy_values(&self) {
        let mut panic = None;
        loop {
            // SAFETY: the owner's access, not held across the drop below.
            let next = unsafe {
                (*self.entries.get())
                    .iter_mut()
                    .rev()
                    .find(|e| matches!(e.value, Value::Alive(_)))
                    .map(|e| std::mem::replace(&mut e.value, Value::Destroyed))
            };
            let Some(value) = next else { break };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
                panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }
}

impl Drop for LocalMap {
    fn drop(&mut self) {
        // A thread's map at thread exit (a task's is emptied by its
        // epilogue first).
        // SAFETY: `&mut self`: the owner, with nothing else running.
        unsafe { self.destroy_values() };
    }
}

/// Removes an `Initializing` entry whose initialiser unwound.
struct ForgetOnUnwind<'a> {
    map: &'a LocalMap,
    key: usize,
}

impl Drop for ForgetOnUnwind<'_> {
    fn drop(&mut self) {
        // SAFETY: the owner's access (still inside `get_or_init`).
        unsafe { (*self.map.entries.get()).retain(|e| e.key != self.key) };
    }
}

fn downcast<T: 'static>(value: &Box<dyn Any>) -> *const T {
    value
        .downcast_ref::<T>()
        .expect("a key's value has the key's type")
}

/// The calling coroutine's map (created on first use), or the thread's.
fn current_map() -> Result<*const LocalMap, LocalAccessError> {
    if let Some(slot) = runtime::current_locals() {
        // SAFETY: the running task's home-worker-only field, touched only
        // by this coroutine (and its epilogue, which is this coroutine too).
        let slot = unsafe { &mut *slot.get() };
        return Ok(&**slot.get_or_insert_with(|| Box::new(LocalMap::new())));
    }
    thread_local! {
        static THREAD_MAP: LocalMap = const { LocalMap::new() };
    }
    THREAD_MAP
        .try_with(|map| map as *const LocalMap)
        .map_err(|_| LocalAccessError)
}

/// The epilogue's part (src/runtime/spawn.rs): drops the values of the
/// task whose `locals` field this is, as the coroutine. With `free`, also
/// frees the map, once the values that a destructor or the result's drop
/// created are gone too. A destructor's panic is passed on after the rest
/// are dropped.
///
/// # Safety
/// Called by the coroutine that owns `slot`, from its epilogue.
pub(crate) unsafe fn end_of_coroutine(slot: &UnsafeCell<Option<Box<LocalMap>>>, free: bool) {
    // SAFETY: the owner's field (the caller's promise).
    let Some(map) = (unsafe { &*slot.get() }).as_deref() else {
        return;
    };
    let map: *const LocalMap = map;
    // SAFETY: the owner, in its epilogue; the map stays in the slot while
    // its destructors run (they may reach it), and is freed only below.
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { (*map).destroy_values() }));
    if free {
        // SAFETY: as above; every value has been dropped.
        drop(unsafe { (*slot.get()).take() });
    }
    if let Err(payload) = dropped {
        resume_unwind(payload);
    }
}

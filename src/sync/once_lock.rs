//! `OnceLock` and `LazyLock`: std's write-once cells over fibra's `Once`,
//! so a caller that finds another initialising parks instead of blocking
//! its worker.
//!
//! Both keep their value beside a `Once` and read it only after the
//! `Once` is complete (its Acquire load pairs with the runner's Release
//! store, after the value was written). `OnceLock` initialises with
//! `call_once_force`: an initialiser that panics leaves the cell empty and
//! the next caller tries again, as std's does. `LazyLock` uses `call_once`
//! semantics: once its function has panicked, every later access panics
//! ("poisoned"), as std's does.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::panic::{RefUnwindSafe, UnwindSafe};

use super::once::Once;

// ---------------------------------------------------------------------------
// OnceLock

/// A cell written at most once (as `std::sync::OnceLock`); readers that
/// arrive during the initialisation park until it is done.
///
/// ```
/// use fibra::sync::OnceLock;
///
/// static CONFIG: OnceLock<String> = OnceLock::new();
/// let handles: Vec<_> = (0..4)
///     .map(|i| fibra::spawn(move || CONFIG.get_or_init(|| format!("set by {i}")).len()))
///     .collect();
/// for handle in handles {
///     assert_eq!(handle.join().unwrap(), "set by 0".len());
/// }
/// ```
pub struct OnceLock<T> {
    once: Once,
    value: UnsafeCell<MaybeUninit<T>>,
    _owns: PhantomData<T>,
}

// SAFETY: the value is written once, by the single runner of `once`, and
// read only after `once` completed; `&OnceLock` hands out `&T` (Sync) and
// lets any thread write a T it made (Send).
unsafe impl<T: Sync + Send> Sync for OnceLock<T> {}
// SAFETY: moving the cell moves the T.
unsafe impl<T: Send> Send for OnceLock<T> {}

impl<T: RefUnwindSafe + UnwindSafe> RefUnwindSafe for OnceLock<T> {}
impl<T: UnwindSafe> UnwindSafe for OnceLock<T> {}

impl<T> OnceLock<T> {
    /// An empty cell.
    pub const fn new() -> OnceLock<T> {
        OnceLock {
            once: Once::new(),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            _owns: PhantomData,
        }
    }

    /// The value, if initialised.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        if self.once.is_completed() {
            // SAFETY: complete: written, and never written again.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }

    /// The value through `&mut self`, if initialised.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        if self.once.is_completed() {
            // SAFETY: complete: written; `&mut self` excludes readers.
            Some(unsafe { self.value.get_mut().assume_init_mut() })
        } else {
            None
        }
    }

    /// Parks until the cell has been initialised, then returns the value.
    pub fn wait(&self) -> &T {
        self.once.wait_force();
        self.get().expect("a completed OnceLock holds its value")
    }

    /// Initialises the cell with `value`; `Err(value)` if it already was.
    pub fn set(&self, value: T) -> Result<(), T> {
        let mut value = Some(value);
        self.get_or_init(|| value.take().expect("taken once"));
        match value {
            None => Ok(()),
            Some(value) => Err(value),
        }
    }

    /// The value, initialising it with `f` first if empty. If `f` panics,
    /// the panic goes to the caller and the cell stays empty.
    #[inline]
    pub fn get_or_init<F: FnOnce() -> T>(&self, f: F) -> &T {
        if let Some(value) = self.get() {
            return value;
        }
        self.initialize(f);
        self.get().expect("a completed OnceLock holds its value")
    }

    #[cold]
    fn initialize<F: FnOnce() -> T>(&self, f: F) {
        let slot = &self.value;
        self.once.call_once_force(|_| {
            let value = f();
            // SAFETY: we are the Once's single runner; no reader looks
            // before it completes.
            unsafe { (*slot.get()).write(value) };
        });
    }

    /// The value, leaving the cell empty.
    pub fn take(&mut self) -> Option<T> {
        if self.once.is_completed() {
            self.once = Once::new();
            // SAFETY: it was complete (initialised); the reset Once makes
            // sure it is not read or dropped again.
            Some(unsafe { self.value.get_mut().assume_init_read() })
        } else {
            None
        }
    }

    /// The value, consuming the cell.
    pub fn into_inner(mut self) -> Option<T> {
        self.take()
    }
}

impl<T> Default for OnceLock<T> {
    fn default() -> OnceLock<T> {
        OnceLock::new()
    }
}

impl<T> From<T> for OnceLock<T> {
    fn from(value: T) -> OnceLock<T> {
        let cell = OnceLock::new();
        let _ = cell.set(value);
        cell
    }
}

impl<T: Clone> Clone for OnceLock<T> {
    fn clone(&self) -> OnceLock<T> {
        let cell = OnceLock::new();
        if let Some(value) = self.get() {
            let _ = cell.set(value.clone());
        }
        cell
    }
}

impl<T: PartialEq> PartialEq for OnceLock<T> {
    fn eq(&self, other: &OnceLock<T>) -> bool {
        self.get() == other.get()
    }
}

impl<T: Eq> Eq for OnceLock<T> {}

impl<T: fmt::Debug> fmt::Debug for OnceLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("OnceLock");
        match self.get() {
            Some(value) => d.field(value),
            None => d.field(&format_args!("<uninit>")),
        };
        d.finish()
    }
}

impl<T> Drop for OnceLock<T> {
    fn drop(&mut self) {
        if self.once.is_completed() {
            // SAFETY: complete means initialised; dropped once, here.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

// ---------------------------------------------------------------------------
// LazyLock

/// A value computed on first access (as `std::sync::LazyLock`); accesses
/// during the computation park until it is done.
///
/// ```
/// use std::collections::HashMap;
/// use fibra::sync::LazyLock;
///
/// static TABLE: LazyLock<HashMap<u32, &str>> =
///     LazyLock::new(|| HashMap::from([(1, "one"), (2, "two")]));
/// let handle = fibra::spawn(|| TABLE[&2]);
/// assert_eq!(handle.join().unwrap(), "two");
/// ```
pub struct LazyLock<T, F = fn() -> T> {
    once: Once,
    data: UnsafeCell<Lazy<T, F>>,
}

enum Lazy<T, F> {
    Init(F),
    Value(T),
    /// The function was taken and panicked.
    Poisoned,
}

// SAFETY: `data` changes only inside the Once's single run and is read
// only after it completed; the function runs on whichever thread forces
// first (F: Send), the value is shared (T: Sync) and dropped anywhere (T: Send).
unsafe impl<T: Sync + Send, F: Send> Sync for LazyLock<T, F> {}

impl<T: RefUnwindSafe + UnwindSafe, F: UnwindSafe> RefUnwindSafe for LazyLock<T, F> {}
impl<T: UnwindSafe, F: UnwindSafe> UnwindSafe for LazyLock<T, F> {}

impl<T, F: FnOnce() -> T> LazyLock<T, F> {
    /// A lazy value computed by `f` on first access.
    pub const fn new(f: F) -> LazyLock<T, F> {
        LazyLock {
            once: Once::new(),
            data: UnsafeCell::new(Lazy::Init(f)),
        }
    }

    /// Computes the value if needed and returns it. Panics if the function
    /// panicked before (now or in an earlier call).
    #[inline]
    pub fn force(this: &LazyLock<T, F>) -> &T {
        if !this.once.is_completed() {
            this.run();
        }
        // SAFETY: complete: `data` holds the value and is never changed
        // through `&self` again.
        match unsafe { &*this.data.get() } {
            Lazy::Value(value) => value,
            _ => unreachable!("a completed LazyLock holds its value"),
        }
    }

    /// As `force`, through `&mut`.
    pub fn force_mut(this: &mut LazyLock<T, F>) -> &mut T {
        LazyLock::force(this);
        match this.data.get_mut() {
            Lazy::Value(value) => value,
            _ => unreachable!("a completed LazyLock holds its value"),
        }
    }

    /// The value if it has been computed.
    pub fn get(this: &LazyLock<T, F>) -> Option<&T> {
        if this.once.is_completed() {
            // SAFETY: as in `force`.
            match unsafe { &*this.data.get() } {
                Lazy::Value(value) => Some(value),
                _ => None,
            }
        } else {
            None
        }
    }

    #[cold]
    fn run(&self) {
        let data = &self.data;
        // `call_once_force` returns only once the `Once` is complete: this
        // closure either stores the value or panics, and a panic leaves the
        // `Once` poisoned (so later calls get here again, and panic too).
        self.once.call_once_force(|state| {
            if state.is_poisoned() {
                panic_poisoned();
            }
            // SAFETY: we are the Once's single runner: nobody else reads or
            // writes `data` until it completes.
            let data = unsafe { &mut *data.get() };
            let Lazy::Init(f) = std::mem::replace(data, Lazy::Poisoned) else {
                panic_poisoned();
            };
            *data = Lazy::Value(f());
        });
    }
}

#[cold]
fn panic_poisoned() -> ! {
    panic!("LazyLock instance has previously been poisoned")
}

impl<T, F: FnOnce() -> T> Deref for LazyLock<T, F> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        LazyLock::force(self)
    }
}

impl<T, F: FnOnce() -> T> DerefMut for LazyLock<T, F> {
    fn deref_mut(&mut self) -> &mut T {
        LazyLock::force_mut(self)
    }
}

impl<T: Default> Default for LazyLock<T> {
    fn default() -> LazyLock<T> {
        LazyLock::new(T::default)
    }
}

impl<T: fmt::Debug, F> fmt::Debug for LazyLock<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("LazyLock");
        let value = if self.once.is_completed() {
            // SAFETY: as in `force`.
            match unsafe { &*self.data.get() } {
                Lazy::Value(value) => Some(value),
                _ => None,
            }
        } else {
            None
        };
        match value {
            Some(value) => d.field(value),
            None => d.field(&format_args!("<uninit>")),
        };
        d.finish()
    }
}

//! `Once` and `OnceState`: std's one-time initialisation; a caller that
//! finds the initialiser running parks until it has finished.
//!
//! The state word goes INCOMPLETE → RUNNING → COMPLETE, or → POISONED if
//! the initialiser unwound (a later `call_once_force` may run again from
//! there). The fast path is one Acquire load of COMPLETE. Every transition
//! happens under the list lock, together with the check that leads to it,
//! and the runner's last step — store the outcome, claim every waiter —
//! is one critical section: a caller that saw RUNNING and queued is woken,
//! and re-reads the word.
//!
//! A caller that finds RUNNING set by *itself* (the initialiser calls
//! `call_once` on the same `Once`) would wait for itself forever; std
//! allows a panic or a deadlock there, and fibra panics, naming the
//! problem. The runner is remembered by its coroutine (or thread) id.
//! `Once::wait` queues the same way, also while nobody runs the
//! initialiser yet.

use std::fmt;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};

use super::waiter::{FIRST_TOKEN, Node, SpinLock, WaitList, Waiter, Wakeups};

const INCOMPLETE: u8 = 0;
const POISONED: u8 = 1;
const RUNNING: u8 = 2;
const COMPLETE: u8 = 3;

const CHANGED: usize = FIRST_TOKEN;

/// Runs an initialiser once (as `std::sync::Once`). Callers that arrive
/// while it runs park until it has finished.
///
/// ```
/// use fibra::sync::Once;
///
/// static INIT: Once = Once::new();
/// let handles: Vec<_> = (0..10)
///     .map(|_| fibra::spawn(|| INIT.call_once(|| println!("once"))))
///     .collect();
/// for handle in handles {
///     handle.join().unwrap();
/// }
/// assert!(INIT.is_completed());
/// ```
pub struct Once {
    state: AtomicU8,
    waiting: SpinLock<Waiting>,
}

struct Waiting {
    list: WaitList<()>,
    /// Coroutine or thread id of the running initialiser.
    runner: u64,
}

impl UnwindSafe for Once {}
impl RefUnwindSafe for Once {}

/// What `call_once_force`'s closure is told (as `std::sync::OnceState`).
pub struct OnceState {
    poisoned: bool,
}

impl OnceState {
    /// True if an earlier initialiser panicked.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

impl fmt::Debug for OnceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnceState")
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

/// Publishes the runner's outcome on every way out, unwinding included.
struct Finish<'a> {
    once: &'a Once,
    set_to: u8,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut wakeups = Wakeups::default();
        let mut waiting = self.once.waiting.lock();
        self.once.state.store(self.set_to, Ordering::Release);
        waiting.list.wake_all(CHANGED, |_| (), &mut wakeups);
        drop(waiting);
        wakeups.wake();
    }
}

impl Once {
    /// A new `Once`.
    pub const fn new() -> Once {
        Once {
            state: AtomicU8::new(INCOMPLETE),
            waiting: SpinLock::new(Waiting {
                list: WaitList::new(),
                runner: 0,
            }),
        }
    }

    /// Runs `f` if no initialiser has completed yet; parks while another
    /// caller's runs. Panics if an earlier initialiser panicked.
    #[inline]
    pub fn call_once<F: FnOnce()>(&self, f: F) {
        if self.is_completed() {
            return;
        }
        let mut f = Some(f);
        self.call(false, &mut |_| {
            if let Some(f) = f.take() {
                f()
            }
        });
    }

    /// As `call_once`, but runs `f` also after an earlier initialiser
    /// panicked (`OnceState::is_poisoned` says so).
    #[inline]
    pub fn call_once_force<F: FnOnce(&OnceState)>(&self, f: F) {
        if self.is_completed() {
            return;
        }
        let mut f = Some(f);
        self.call(true, &mut |state| {
            if let Some(f) = f.take() {
                f(state)
            }
        });
    }

    /// True once an initialiser has completed.
    #[inline]
    pub fn is_completed(&self) -> bool {
        self.state.load(Ordering::Acquire) == COMPLETE
    }

    /// Parks until an initialiser has completed. Panics if one panicked.
    pub fn wait(&self) {
        if !self.is_completed() {
            self.wait_for_completion(false);
        }
    }

    /// Parks until an initialiser has completed, ignoring panicked ones.
    pub fn wait_force(&self) {
        if !self.is_completed() {
            self.wait_for_completion(true);
        }
    }

    #[cold]
    fn call(&self, ignore_poison: bool, f: &mut dyn FnMut(&OnceState)) {
        let me = crate::current().id();
        loop {
            let waiter = Waiter::new();
            let node = Node::new(&waiter, ());
            let mut waiting = self.waiting.lock();
            match self.state.load(Ordering::Acquire) {
                COMPLETE => return,
                POISONED if !ignore_poison => {
                    drop(waiting);
                    panic!("Once instance has previously been poisoned");
                }
                RUNNING => {
                    if waiting.runner == me {
                        drop(waiting);
                        panic!(
                            "fibra::sync::Once: call_once called from its own initialiser \
                             (it would wait for itself forever)"
                        );
                    }
                    self.park(waiting, &waiter, &node);
                }
                previous => {
                    self.state.store(RUNNING, Ordering::Relaxed);
                    waiting.runner = me;
                    drop(waiting);
                    // Poisons the Once if `f` unwinds.
                    let mut finish = Finish {
                        once: self,
                        set_to: POISONED,
                    };
                    let state = OnceState {
                        poisoned: previous == POISONED,
                    };
                    f(&state);
                    finish.set_to = COMPLETE;
                    return;
                }
            }
        }
    }

    #[cold]
    fn wait_for_completion(&self, ignore_poison: bool) {
        loop {
            let waiter = Waiter::new();
            let node = Node::new(&waiter, ());
            let waiting = self.waiting.lock();
            match self.state.load(Ordering::Acquire) {
                COMPLETE => return,
                POISONED if !ignore_poison => {
                    drop(waiting);
                    panic!("Once instance has previously been poisoned");
                }
                _ => self.park(waiting, &waiter, &node),
            }
        }
    }

    /// Queues `node` (the list is locked by `waiting`) and parks until the
    /// state changes.
    fn park(
        &self,
        mut waiting: super::waiter::SpinGuard<'_, Waiting>,
        waiter: &Waiter,
        node: &Node<()>,
    ) {
        // SAFETY: the node stays in the caller's frame until `wait` returns,
        // and `wait` unlinks it unless a claim did.
        unsafe { waiting.list.push_back(node) };
        drop(waiting);
        waiter.wait(None, || self.waiting.lock().list.remove(node), |_| ());
    }
}

impl Default for Once {
    fn default() -> Once {
        Once::new()
    }
}

impl fmt::Debug for Once {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Once").finish_non_exhaustive()
    }
}

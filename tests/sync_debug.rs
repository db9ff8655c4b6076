//! `{:?}` of the `fibra::sync` types that mirror `std::sync` prints what
//! std's prints, in every state a user may print one in (unlocked, locked,
//! poisoned, set, unset): code that logs a lock or a `OnceLock` keeps its
//! output after the import swap. fibra's own types print their name and
//! state.

use std::panic::{AssertUnwindSafe, catch_unwind};

use fibra::sync as ours;
use std::sync as theirs;

/// `{:?}` with a locked lock's placeholder unquoted: std printed it bare
/// and prints it quoted now; either way, what matters is where it stands.
fn debug_locked(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}").replace("\"<locked>\"", "<locked>")
}

/// Poisons a lock by panicking while a guard from `lock` is held.
fn poison<G>(lock: impl FnOnce() -> G) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _guard = lock();
        panic!("poisoning on purpose");
    }));
}

#[test]
fn mutex_prints_as_std_unlocked_locked_and_poisoned() {
    let (a, b) = (ours::Mutex::new(5), theirs::Mutex::new(5));
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    {
        let (ga, gb) = (a.lock().unwrap(), b.lock().unwrap());
        assert_eq!(debug_locked(&a), debug_locked(&b), "while locked");
        assert_eq!(format!("{ga:?}"), format!("{gb:?}"), "the guards");
    }
    poison(|| a.lock());
    poison(|| b.lock());
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "poisoned");
}

#[test]
fn rwlock_prints_as_std_unlocked_read_written_and_poisoned() {
    let (a, b) = (ours::RwLock::new("x"), theirs::RwLock::new("x"));
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    {
        let (ra, rb) = (a.read().unwrap(), b.read().unwrap());
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "while read");
        assert_eq!(format!("{ra:?}"), format!("{rb:?}"), "the read guards");
    }
    {
        let (wa, wb) = (a.write().unwrap(), b.write().unwrap());
        assert_eq!(debug_locked(&a), debug_locked(&b), "while written");
        assert_eq!(format!("{wa:?}"), format!("{wb:?}"), "the write guards");
    }
    poison(|| a.write());
    poison(|| b.write());
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "poisoned");
}

#[test]
fn condvar_barrier_and_once_print_as_std() {
    assert_eq!(
        format!("{:?}", ours::Condvar::new()),
        format!("{:?}", theirs::Condvar::new())
    );
    let (a, b) = (ours::Barrier::new(1), theirs::Barrier::new(1));
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert_eq!(
        format!("{:?}", a.wait()),
        format!("{:?}", b.wait()),
        "a leader's result"
    );
    let (a, b) = (ours::Once::new(), theirs::Once::new());
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    a.call_once(|| ());
    b.call_once(|| ());
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "done");
    // An `OnceState`, fresh and after a panicked initialiser (`a` and `b`
    // are done, so their closures would not run: fresh `Once`s).
    let (a, b) = (ours::Once::new(), theirs::Once::new());
    for poisoned in [false, true] {
        let (mut mine, mut seen) = (None, None);
        let _ = catch_unwind(AssertUnwindSafe(|| {
            a.call_once_force(|state| {
                mine = Some(format!("{state:?}"));
                if !poisoned {
                    panic!("poisoning on purpose");
                }
            })
        }));
        let _ = catch_unwind(AssertUnwindSafe(|| {
            b.call_once_force(|state| {
                seen = Some(format!("{state:?}"));
                if !poisoned {
                    panic!("poisoning on purpose");
                }
            })
        }));
        assert!(mine.is_some(), "the closure ran");
        assert_eq!(mine, seen, "an OnceState, poisoned: {poisoned}");
    }
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "done after a poisoning");
}

#[test]
fn once_lock_and_lazy_lock_print_as_std_before_and_after() {
    let (a, b) = (ours::OnceLock::<u8>::new(), theirs::OnceLock::<u8>::new());
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "unset");
    a.set(3).unwrap();
    b.set(3).unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "set");
    let a = ours::LazyLock::new(|| 9);
    let b = theirs::LazyLock::new(|| 9);
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "not yet forced");
    assert_eq!(*a, *b);
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "forced");
}

#[test]
fn fibras_own_types_print_their_name_and_state() {
    let semaphore = ours::Semaphore::new(2);
    let text = format!("{semaphore:?}");
    assert!(
        text.starts_with("Semaphore") && text.contains('2'),
        "{text}"
    );
    let event = ours::Event::new();
    let unset = format!("{event:?}");
    event.set();
    let set = format!("{event:?}");
    assert!(
        unset.starts_with("Event") && set.starts_with("Event"),
        "{unset} / {set}"
    );
    assert_ne!(unset, set, "the flag shows");
    let lock = ours::ReentrantLock::new(4);
    let text = format!("{lock:?}");
    assert!(
        text.starts_with("ReentrantLock") && text.contains('4'),
        "{text}"
    );
    let queue = ours::JoinableQueue::<u8>::new();
    let text = format!("{queue:?}");
    assert!(text.starts_with("JoinableQueue"), "{text}");
}

//! Edges of the smaller `fibra::sync` types that the mutation run of
//! `scripts/mutants.sh sync-others` found unchecked: how `Full` and
//! `LocalAccessError` print, `JoinableQueue::empty` and `full` as items
//! come and go, `take` on a `Cell` coroutine-local (in a coroutine and on a
//! plain thread), a coroutine-local's `Debug`, a plain thread's
//! coroutine-local values dropped when the thread exits (newest first),
//! `Once::wait_force` on a poisoned `Once`, `OnceLock`'s `From`, `==` and
//! drop, `Semaphore::try_acquire`, and the exact `Debug` of `Semaphore`
//! (queued or not), its permit, `WaitGroup` and `WaitGroupToken`.

mod common;

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{DropCounter, WATCHDOG, runtime, watchdog};
use fibra::sync::{Arc, Full, JoinableQueue, Once, OnceLock, Semaphore, WaitGroup};
use fibra::thread::LocalAccessError;

fibra::coroutine_local! {
    static NUMBER: Cell<u32> = Cell::new(5);
    static HELD: RefCell<Option<DropCounter>> = RefCell::new(None);
    static FIRST: RefCell<Option<Recorder>> = RefCell::new(None);
    static SECOND: RefCell<Option<Recorder>> = RefCell::new(None);
}

#[test]
fn a_full_queue_error_prints_its_kind_not_its_item() {
    let error = Full(vec![1, 2, 3]);
    assert_eq!(format!("{error:?}"), "Full(..)");
    assert_eq!(error.to_string(), "the queue is full");
    let boxed: Box<dyn std::error::Error> = Box::new(Full(1));
    assert_eq!(boxed.to_string(), "the queue is full");
}

#[test]
fn empty_and_full_follow_the_items_in_the_queue() {
    let queue = JoinableQueue::with_maxsize(2);
    assert!(queue.empty() && !queue.full());
    queue.put(1);
    assert!(!queue.empty() && !queue.full());
    queue.put(2);
    assert!(!queue.empty() && queue.full());
    assert_eq!(queue.get(), 1);
    assert!(!queue.empty() && !queue.full());
    assert_eq!(queue.get(), 2);
    assert!(queue.empty());
    let unbounded = JoinableQueue::new();
    for item in 0..1000 {
        unbounded.put(item);
    }
    assert!(!unbounded.empty() && !unbounded.full());
    assert_eq!(unbounded.qsize(), 1000);
}

#[test]
fn a_local_access_error_says_what_went_wrong() {
    assert_eq!(
        LocalAccessError.to_string(),
        "a coroutine-local value was reached during or after its destruction"
    );
    assert_eq!(format!("{LocalAccessError:?}"), "LocalAccessError");
}

#[test]
fn take_returns_the_value_and_leaves_the_default() {
    let check = || {
        assert_eq!(NUMBER.get(), 5, "the initialiser's value");
        NUMBER.set(9);
        assert_eq!(NUMBER.take(), 9);
        assert_eq!(NUMBER.get(), 0, "u32's default, not the initialiser's");
        assert_eq!(NUMBER.replace(4), 0);
        NUMBER.get()
    };
    let rt = runtime(1, "oe-take");
    assert_eq!(rt.block_on(check), 4, "in a coroutine");
    assert_eq!(std::thread::spawn(check).join().unwrap(), 4, "on a thread");
}

#[test]
fn a_coroutine_local_prints_like_a_thread_local() {
    assert_eq!(format!("{NUMBER:?}"), "CoroutineLocal { .. }");
}

/// Records its name in a shared log when dropped.
struct Recorder(&'static str, Arc<std::sync::Mutex<Vec<&'static str>>>);

impl Drop for Recorder {
    fn drop(&mut self) {
        self.1.lock().unwrap().push(self.0);
    }
}

#[test]
fn a_plain_threads_values_are_dropped_at_exit_newest_first() {
    let drops = Arc::new(AtomicUsize::new(0));
    let counter = DropCounter(Arc::clone(&drops));
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let thread_log = Arc::clone(&log);
    std::thread::spawn(move || {
        HELD.set(Some(counter));
        FIRST.set(Some(Recorder("first", Arc::clone(&thread_log))));
        SECOND.set(Some(Recorder("second", thread_log)));
        assert!(HELD.with_borrow(Option::is_some));
    })
    .join()
    .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped at thread exit");
    assert_eq!(
        *log.lock().unwrap(),
        ["second", "first"],
        "the most recently created value goes first, as in a coroutine"
    );
}

#[test]
fn wait_force_waits_past_a_poisoned_once_and_wait_panics() {
    watchdog("once_wait_force", WATCHDOG, || {
        let once = Arc::new(Once::new());
        let _ = catch_unwind(AssertUnwindSafe(|| {
            once.call_once(|| panic!("the first initialiser fails"))
        }));
        let waited = catch_unwind(AssertUnwindSafe(|| once.wait()));
        assert!(waited.is_err(), "wait on a poisoned Once panics, as std's");
        // One worker: the waiter runs at the yield and parks before the
        // caller goes on.
        runtime(1, "oe-once").block_on(|| {
            let returned = Arc::new(AtomicBool::new(false));
            let waiter = {
                let (once, returned) = (Arc::clone(&once), Arc::clone(&returned));
                fibra::spawn(move || {
                    once.wait_force();
                    returned.store(true, Ordering::SeqCst);
                })
            };
            fibra::yield_now();
            assert!(!returned.load(Ordering::SeqCst), "poisoned is not complete");
            once.call_once_force(|state| assert!(state.is_poisoned()));
            waiter.join().expect("wait_force ignores the poisoning");
            assert!(returned.load(Ordering::SeqCst) && once.is_completed());
        });
    });
}

#[test]
fn a_once_lock_from_a_value_holds_it_and_compares_by_value() {
    let one = OnceLock::from(1);
    assert_eq!(one.get(), Some(&1));
    assert!(one == OnceLock::from(1));
    assert!(one != OnceLock::from(2));
    assert!(one != OnceLock::new());
    assert!(OnceLock::<u8>::new() == OnceLock::new());
}

#[test]
fn a_once_lock_drops_its_value_with_it() {
    let drops = Arc::new(AtomicUsize::new(0));
    let set = OnceLock::from(DropCounter(Arc::clone(&drops)));
    let unset = OnceLock::<DropCounter>::new();
    drop(unset);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(set);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn try_acquire_takes_a_free_permit_and_only_then() {
    let semaphore = Semaphore::new(1);
    let permit = semaphore.try_acquire().expect("one permit is free");
    assert_eq!(permit.num_permits(), 1);
    assert_eq!(format!("{permit:?}"), "SemaphorePermit { permits: 1 }");
    assert!(semaphore.try_acquire().is_none());
    drop(permit);
    assert!(semaphore.try_acquire().is_some());
    assert_eq!(semaphore.available_permits(), 1);
}

#[test]
fn semaphores_and_wait_groups_print_their_state() {
    watchdog("others_debug", WATCHDOG, || {
        runtime(1, "oe-debug").block_on(|| {
            let semaphore = Arc::new(Semaphore::new(0));
            assert_eq!(
                format!("{semaphore:?}"),
                "Semaphore { permits: 0, queued: false }"
            );
            let acquirer = {
                let semaphore = Arc::clone(&semaphore);
                fibra::spawn(move || semaphore.acquire().num_permits())
            };
            fibra::yield_now(); // one worker: it queues before this goes on
            assert_eq!(
                format!("{semaphore:?}"),
                "Semaphore { permits: 0, queued: true }"
            );
            semaphore.add_permits(3);
            assert_eq!(acquirer.join().unwrap(), 1);
            assert_eq!(
                format!("{semaphore:?}"),
                "Semaphore { permits: 3, queued: false }"
            );
        });
        let group = Arc::new(WaitGroup::new());
        let token = group.token();
        assert_eq!(format!("{group:?}"), "WaitGroup { count: 1 }");
        assert_eq!(
            format!("{token:?}"),
            "WaitGroupToken { group: WaitGroup { count: 1 } }"
        );
        drop(token);
        assert_eq!(format!("{group:?}"), "WaitGroup { count: 0 }");
    });
}

//! `fibra::sync::JoinableQueue` (Python's `queue.Queue`): every item put is
//! got exactly once, bounded and unbounded, by coroutines on one and two
//! workers and plain threads; `join` returns only once every item is
//! marked done; FIFO; `try_put`/`try_get`, timeouts (lower bound exact);
//! a cancelled `get` gives a handed item back and a cancelled `put`
//! uncounts its item unless it was delivered; a runtime dropped with
//! coroutines parked in `put` and `get` leaves the queue consistent.

mod common;
mod sync_common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{WATCHDOG, panic_message, runtime, watchdog};
use fibra::sync::{Arc, Event, Full, JoinableQueue, Mutex};
use sync_common::check_timeout_lateness;

#[test]
fn every_item_is_got_once_and_join_waits_for_every_task_done() {
    watchdog("queue_contention", WATCHDOG, || {
        for workers in [1, 2] {
            for maxsize in [0, 3] {
                let rt = runtime(workers, "jq-count");
                let queue = Arc::new(JoinableQueue::with_maxsize(maxsize));
                let processed = Arc::new(AtomicUsize::new(0));
                let got = Arc::new(Mutex::new(Vec::new()));
                let (producers, per_producer) = (6, 150);
                let total = producers * per_producer;
                let stop = Arc::new(AtomicBool::new(false));
                let consumer = |kind: usize| {
                    let (queue, processed, got, stop) = (
                        Arc::clone(&queue),
                        Arc::clone(&processed),
                        Arc::clone(&got),
                        Arc::clone(&stop),
                    );
                    move || {
                        while !stop.load(Ordering::SeqCst) {
                            let item = match kind % 3 {
                                0 => queue.get_timeout(Duration::from_millis(2)),
                                1 => queue.try_get().or_else(|| {
                                    fibra::yield_now();
                                    None
                                }),
                                _ => queue.get_timeout(Duration::from_secs(60)),
                            };
                            let Some(item) = item else { continue };
                            if item == usize::MAX {
                                queue.task_done(); // a stop marker is an item too
                                break;
                            }
                            got.lock().unwrap().push(item);
                            fibra::yield_now();
                            processed.fetch_add(1, Ordering::SeqCst);
                            queue.task_done();
                        }
                    }
                };
                let producer = |p: usize| {
                    let queue = Arc::clone(&queue);
                    move || {
                        for i in 0..per_producer {
                            let item = p * per_producer + i;
                            match i % 3 {
                                0 => queue.put(item),
                                1 => {
                                    let mut item = item;
                                    while let Err(Full(back)) = queue.try_put(item) {
                                        item = back;
                                        fibra::yield_now();
                                    }
                                }
                                _ => {
                                    let mut item = item;
                                    while let Err(Full(back)) =
                                        queue.put_timeout(item, Duration::from_millis(1))
                                    {
                                        item = back;
                                    }
                                }
                            }
                        }
                    }
                };
                let consumers: Vec<_> = (0..5).map(|k| rt.spawn(consumer(k))).collect();
                let consumer_thread = std::thread::spawn(consumer(2));
                let mut producer_handles: Vec<_> =
                    (0..producers - 1).map(|p| rt.spawn(producer(p))).collect();
                let producer_thread = std::thread::spawn(producer(producers - 1));
                // `join` from a coroutine and from this thread, once every
                // item is in (before, the count may touch zero between puts).
                let produced = Arc::new(Event::new());
                let joiner = {
                    let (queue, processed) = (Arc::clone(&queue), Arc::clone(&processed));
                    let produced = Arc::clone(&produced);
                    rt.spawn(move || {
                        produced.wait();
                        queue.join();
                        processed.load(Ordering::SeqCst)
                    })
                };
                for handle in producer_handles.drain(..) {
                    handle.join().unwrap();
                }
                producer_thread.join().unwrap();
                produced.set();
                queue.join();
                assert_eq!(
                    processed.load(Ordering::SeqCst),
                    total,
                    "join returned early"
                );
                assert_eq!(joiner.join().unwrap(), total, "join returned early");
                assert_eq!(queue.unfinished_tasks(), 0);
                // Stop the consumers: the untimed one needs a marker.
                stop.store(true, Ordering::SeqCst);
                for _ in 0..6 {
                    queue.put(usize::MAX);
                }
                for consumer in consumers {
                    consumer.join().unwrap();
                }
                consumer_thread.join().unwrap();
                let mut got = std::mem::take(&mut *got.lock().unwrap());
                got.sort_unstable();
                assert_eq!(got, (0..total).collect::<Vec<_>>(), "{workers} workers");
                // Markers nobody took stay queued, counted.
                while queue.try_get().is_some() {
                    queue.task_done();
                }
                assert_eq!(queue.unfinished_tasks(), 0);
                assert!(queue.join_timeout(Duration::ZERO));
            }
        }
    });
}

#[test]
fn a_single_producer_and_consumer_see_fifo_order() {
    watchdog("queue_fifo", WATCHDOG, || {
        let rt = runtime(2, "jq-fifo");
        let queue = Arc::new(JoinableQueue::with_maxsize(4));
        let consumer = {
            let queue = Arc::clone(&queue);
            rt.spawn(move || {
                let items: Vec<u32> = (0..500).map(|_| queue.get()).collect();
                for _ in 0..500 {
                    queue.task_done();
                }
                items
            })
        };
        for i in 0..500u32 {
            queue.put(i);
        }
        queue.join();
        assert_eq!(consumer.join().unwrap(), (0..500).collect::<Vec<_>>());
    });
}

#[test]
fn try_and_timed_operations_give_up_without_counting() {
    let queue = JoinableQueue::with_maxsize(2);
    assert_eq!(queue.maxsize(), Some(2));
    assert!(queue.try_get().is_none());
    queue.put('a');
    queue.try_put('b').unwrap();
    assert!(queue.full());
    assert_eq!(queue.try_put('c'), Err(Full('c')));
    assert_eq!(
        queue.put_timeout('d', Duration::from_millis(5)),
        Err(Full('d'))
    );
    assert_eq!((queue.qsize(), queue.unfinished_tasks()), (2, 2));
    assert!(!queue.join_timeout(Duration::from_millis(5)));
    assert_eq!(queue.get(), 'a');
    assert_eq!(queue.get_timeout(Duration::from_millis(5)), Some('b'));
    assert!(queue.empty());
    assert_eq!(queue.unfinished_tasks(), 2, "got, not yet done");
    queue.task_done();
    queue.task_done();
    assert!(queue.join_timeout(Duration::ZERO));
    let payload = std::panic::catch_unwind(|| queue.task_done()).unwrap_err();
    assert_eq!(
        panic_message(&*payload),
        "JoinableQueue::task_done called more times than items were put"
    );
    assert_eq!(queue.unfinished_tasks(), 0);
    let unbounded = JoinableQueue::new();
    assert_eq!(unbounded.maxsize(), None);
    for i in 0..10_000 {
        unbounded.try_put(i).unwrap();
    }
    assert!(!unbounded.full());
    assert_eq!(unbounded.qsize(), 10_000);
}

#[test]
fn timed_waits_end_no_earlier_than_their_timeout() {
    let rt = runtime(1, "jq-timeout");
    let empty = Arc::new(JoinableQueue::<u8>::new());
    check_timeout_lateness(&rt, Duration::from_millis(20), move || {
        assert_eq!(empty.get_timeout(Duration::from_millis(20)), None);
    });
    let full = Arc::new(JoinableQueue::with_maxsize(1));
    full.put(0u8);
    let unfinished = Arc::clone(&full);
    check_timeout_lateness(&rt, Duration::from_millis(20), move || {
        assert_eq!(full.put_timeout(1, Duration::from_millis(20)), Err(Full(1)));
    });
    assert_eq!(unfinished.unfinished_tasks(), 1);
    let joined = Arc::clone(&unfinished);
    check_timeout_lateness(&rt, Duration::from_millis(20), move || {
        assert!(!joined.join_timeout(Duration::from_millis(20)));
    });
}

#[test]
fn a_cancelled_get_gives_a_handed_item_back() {
    watchdog("queue_cancel_get", WATCHDOG, || {
        let rt = runtime(1, "jq-cancel-get");
        rt.block_on(|| {
            let queue = Arc::new(JoinableQueue::new());
            let getter = {
                let queue = Arc::clone(&queue);
                fibra::spawn(move || queue.get())
            };
            fibra::yield_now(); // it parks in `get`
            // One worker: the item is handed to the parked getter, which
            // cannot run before the cancellation reaches it.
            queue.put(7u32);
            assert!(queue.empty(), "handed straight to the getter");
            getter.cancel();
            assert!(getter.join().is_err());
            assert_eq!((queue.qsize(), queue.unfinished_tasks()), (1, 1));
            assert_eq!(queue.get(), 7);
            queue.task_done();
            queue.join();
        });
    });
}

#[test]
fn a_cancelled_put_uncounts_its_item_unless_it_was_delivered() {
    watchdog("queue_cancel_put", WATCHDOG, || {
        let rt = runtime(1, "jq-cancel-put");
        rt.block_on(|| {
            let queue = Arc::new(JoinableQueue::with_maxsize(1));
            queue.put(1u32);
            // Cancelled while still waiting for room: the item is dropped
            // and uncounted, so `join` does not wait for it.
            let putter = {
                let queue = Arc::clone(&queue);
                fibra::spawn(move || queue.put(2))
            };
            fibra::yield_now(); // it parks in `put`
            assert_eq!(queue.unfinished_tasks(), 2);
            putter.cancel();
            assert!(putter.join().is_err());
            assert_eq!((queue.qsize(), queue.unfinished_tasks()), (1, 1));
            // Delivered, then cancelled before it runs: the item stays
            // counted (it is in the queue).
            let putter = {
                let queue = Arc::clone(&queue);
                fibra::spawn(move || queue.put(3))
            };
            fibra::yield_now();
            assert_eq!(queue.get(), 1); // moves 3 from the putter into the queue
            putter.cancel();
            assert!(putter.join().is_err());
            assert_eq!((queue.qsize(), queue.unfinished_tasks()), (1, 2));
            assert_eq!(queue.get(), 3);
            queue.task_done();
            assert!(!queue.join_timeout(Duration::from_millis(2)));
            queue.task_done();
            queue.join();
        });
    });
}

#[test]
fn a_runtime_dropped_with_parked_putters_and_getters_leaves_it_consistent() {
    watchdog("queue_runtime_drop", WATCHDOG, || {
        let full = Arc::new(JoinableQueue::with_maxsize(2));
        full.put(0u32);
        full.put(1);
        let empty = Arc::new(JoinableQueue::<u32>::new());
        let rt = runtime(2, "jq-rtdrop");
        let parked = Arc::new(AtomicUsize::new(0));
        for i in 0..4 {
            let (full, putter_parked) = (Arc::clone(&full), Arc::clone(&parked));
            drop(rt.spawn(move || {
                putter_parked.fetch_add(1, Ordering::SeqCst);
                full.put(10 + i);
                putter_parked.fetch_add(1, Ordering::SeqCst);
            }));
            let (empty, getter_parked) = (Arc::clone(&empty), Arc::clone(&parked));
            drop(rt.spawn(move || {
                getter_parked.fetch_add(1, Ordering::SeqCst);
                let _ = empty.get();
                getter_parked.fetch_add(1, Ordering::SeqCst);
            }));
        }
        while parked.load(Ordering::SeqCst) < 8 {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(10)); // they park
        drop(rt);
        assert_eq!(parked.load(Ordering::SeqCst), 8, "nobody got through");
        assert_eq!((full.qsize(), full.unfinished_tasks()), (2, 2));
        assert_eq!((empty.qsize(), empty.unfinished_tasks()), (0, 0));
        // Both still work: no stale waiter swallows an item.
        empty.put(5);
        assert_eq!(empty.try_get(), Some(5));
        empty.task_done();
        assert!(empty.join_timeout(Duration::ZERO));
        assert_eq!(full.get(), 0);
        full.try_put(2).unwrap();
        assert_eq!((full.get(), full.get()), (1, 2));
        for _ in 0..3 {
            full.task_done();
        }
        assert!(full.join_timeout(Duration::ZERO));
    });
}

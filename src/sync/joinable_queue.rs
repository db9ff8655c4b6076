//! `JoinableQueue`: Python's `queue.Queue` — a FIFO shared by producers
//! and consumers (`put`, `get`, optionally bounded) that also counts
//! unfinished items: each `put` adds one, each `task_done` removes one,
//! and `join` parks until the count is zero.
//!
//! Built from two parts already here: the channel core (`channel.rs`) for
//! the items — the queue holds one sender and one receiver count of its
//! own, so it never disconnects — and a `WaitGroup` for the unfinished
//! count. `put` counts the item *before* it enters the queue, so a `join`
//! can never see zero while an item is in the queue or being handed to a
//! consumer; a `put` that gives up (full, timed out, or cancelled while it
//! waits for room) uncounts it again.
//! Every wait — a `get` on an empty queue, a `put` on a full one, `join` —
//! parks the calling coroutine (or blocks a plain thread), and a consumer
//! cancelled while an item is being handed to it gives the item back.

use std::fmt;
use std::time::{Duration, Instant};

use super::WaitGroup;
use super::channel::{Channel, RecvFailure, SendFailure, UNBOUNDED, Wait};

/// A multi-producer, multi-consumer FIFO with a count of unfinished items,
/// as Python's `queue.Queue`: share it with an `Arc`.
///
/// ```
/// use fibra::sync::{Arc, JoinableQueue, Mutex};
///
/// let queue = Arc::new(JoinableQueue::with_maxsize(4));
/// let done = Arc::new(Mutex::new(Vec::new()));
/// for _ in 0..3 {
///     let (queue, done) = (Arc::clone(&queue), Arc::clone(&done));
///     fibra::spawn(move || loop {
///         let item: u32 = queue.get();
///         done.lock().unwrap().push(item * 10);
///         queue.task_done();
///     });
/// }
/// for item in 0..20 {
///     queue.put(item); // parks while 4 items wait
/// }
/// queue.join(); // every item has been taken and marked done
/// assert_eq!(done.lock().unwrap().len(), 20);
/// assert!(queue.empty());
/// ```
pub struct JoinableQueue<T> {
    items: Channel<T>,
    unfinished: WaitGroup,
}

/// A `put` that found the queue full (`try_put`) or gave up waiting
/// (`put_timeout`); the item comes back.
///
/// ```
/// use fibra::sync::{Full, JoinableQueue};
/// use std::time::Duration;
///
/// let queue = JoinableQueue::with_maxsize(1);
/// queue.put("first");
/// assert_eq!(queue.try_put("second"), Err(Full("second")));
/// assert_eq!(queue.put_timeout("third", Duration::from_millis(1)), Err(Full("third")));
/// assert_eq!(queue.unfinished_tasks(), 1, "refused items are not counted");
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct Full<T>(pub T);

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the queue is full")
    }
}

impl<T> std::error::Error for Full<T> {}

impl<T> JoinableQueue<T> {
    /// An unbounded queue.
    pub fn new() -> JoinableQueue<T> {
        JoinableQueue::with_maxsize(0)
    }

    /// A queue holding at most `maxsize` items; 0 means unbounded, as in
    /// Python.
    pub fn with_maxsize(maxsize: usize) -> JoinableQueue<T> {
        let cap = if maxsize == 0 { UNBOUNDED } else { maxsize };
        JoinableQueue {
            items: Channel::new(cap),
            unfinished: WaitGroup::new(),
        }
    }

    /// Adds `item` at the back, parking while the queue is full.
    pub fn put(&self, item: T) {
        if let Err(Full(_)) = self.put_until(item, Wait::Until(None)) {
            unreachable!("an untimed put on a queue that never disconnects succeeds");
        }
    }

    /// Adds `item` if there is room now (Python's `put_nowait`).
    pub fn try_put(&self, item: T) -> Result<(), Full<T>> {
        self.put_until(item, Wait::Never)
    }

    /// As `put`, for at most `timeout`.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), Full<T>> {
        self.put_until(item, Wait::Until(Instant::now().checked_add(timeout)))
    }

    fn put_until(&self, item: T, wait: Wait) -> Result<(), Full<T>> {
        self.unfinished.add(1);
        // A put cancelled while it waits for room, its item never taken,
        // uncounts it as it unwinds (the item is dropped).
        let uncount = || self.unfinished.done();
        let sent = self.items.send_hooked(item, wait, Some(&uncount));
        sent.map_err(|failure| {
            self.unfinished.done();
            match failure {
                SendFailure::Full(item) | SendFailure::Timeout(item) => Full(item),
                SendFailure::Disconnected(_) => unreachable!("the queue holds a receiver"),
            }
        })
    }

    /// Removes and returns the front item, parking while the queue is
    /// empty.
    pub fn get(&self) -> T {
        match self.items.recv(Wait::Until(None)) {
            Ok(item) => item,
            Err(_) => unreachable!("an untimed get on a queue that never disconnects succeeds"),
        }
    }

    /// The front item if there is one now (Python's `get_nowait`).
    pub fn try_get(&self) -> Option<T> {
        self.get_until(Wait::Never)
    }

    /// As `get`, for at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Option<T> {
        self.get_until(Wait::Until(Instant::now().checked_add(timeout)))
    }

    fn get_until(&self, wait: Wait) -> Option<T> {
        match self.items.recv(wait) {
            Ok(item) => Some(item),
            Err(RecvFailure::Empty | RecvFailure::Timeout) => None,
            Err(RecvFailure::Disconnected) => unreachable!("the queue holds a sender"),
        }
    }

    /// Marks one item taken with `get` as processed.
    ///
    /// # Panics
    /// If called more times than items were put (Python raises
    /// `ValueError`).
    pub fn task_done(&self) {
        if self.unfinished.try_add(-1).is_err() {
            panic!("JoinableQueue::task_done called more times than items were put");
        }
    }

    /// Parks until every item put has been marked done with `task_done`.
    pub fn join(&self) {
        self.unfinished.wait();
    }

    /// As `join`, for at most `timeout`: true if every item was done.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.unfinished.wait_timeout(timeout)
    }

    /// Items in the queue now.
    pub fn qsize(&self) -> usize {
        self.items.len()
    }

    /// Whether the queue holds no item now.
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether a bounded queue is full now (never for an unbounded one).
    pub fn full(&self) -> bool {
        self.maxsize().is_some_and(|max| self.qsize() >= max)
    }

    /// The bound given to `with_maxsize`; None if unbounded.
    pub fn maxsize(&self) -> Option<usize> {
        Some(self.items.capacity()).filter(|&cap| cap != UNBOUNDED)
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.unfinished.count()
    }
}

// A panic inside a method (`task_done` called once too often) leaves the
// state consistent (every change is one atomic step or made under the
// channel's lock): no broken invariant can be observed after it is caught.
impl<T> std::panic::UnwindSafe for JoinableQueue<T> {}
impl<T> std::panic::RefUnwindSafe for JoinableQueue<T> {}

impl<T> Default for JoinableQueue<T> {
    fn default() -> JoinableQueue<T> {
        JoinableQueue::new()
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize())
            .field("unfinished_tasks", &self.unfinished_tasks())
            .finish()
    }
}

//! Per-worker timers: the deadlines of parked tasks (`sleep`, `park_timeout`,
//! and later I/O deadlines).
//!
//! A binary min-heap of `(deadline, seq, task)`. Only the home worker of a
//! task arms or cancels its timer, so the heap needs no lock.
//!
//! Cancelling is O(1): the task bumps its `timer_seq`, which makes its heap
//! entry stale; stale entries are skipped when they reach the top, and the
//! heap is compacted once stale entries outnumber live ones (as Go does with
//! its deleted timers), so a coroutine that sets a long deadline on every
//! read and is woken early each time cannot grow the heap without bound.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::task::Task;
use super::task_ref::TaskRef;

struct Entry {
    deadline: Instant,
    seq: u64,
    task: TaskRef,
}

impl Entry {
    fn is_live(&self) -> bool {
        self.task.timer_seq.get() == self.seq
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and we want the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .cmp(&self.deadline)
            .then(other.seq.cmp(&self.seq))
    }
}

/// The timers of one worker.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Entry>,
    stale: usize,
}

impl Timers {
    /// Arms a timer for `task` (which must be running on this worker).
    pub fn insert(&mut self, deadline: Instant, task: &TaskRef) {
        let seq = task.timer_seq.get().wrapping_add(1);
        task.timer_seq.set(seq);
        task.timer_armed.set(true);
        self.heap.push(Entry {
            deadline,
            seq,
            task: task.clone(),
        });
    }

    /// Disarms `task`'s timer if it has one that has not fired.
    pub fn cancel(&mut self, task: &Task) {
        if !task.timer_armed.replace(false) {
            return;
        }
        task.timer_seq.set(task.timer_seq.get().wrapping_add(1));
        self.stale += 1;
        if self.stale > 64 && self.stale > self.heap.len() / 2 {
            self.heap.retain(Entry::is_live);
            self.stale = 0;
        }
    }

    /// The earliest live deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale_top();
        self.heap.peek().map(|e| e.deadline)
    }

    /// Removes and returns the task of the earliest live timer if it is due
    /// at `now`. The entry is consumed: its task's timer is disarmed, so
    /// that a later `cancel` of it counts nothing stale.
    pub fn pop_due(&mut self, now: Instant) -> Option<TaskRef> {
        self.drop_stale_top();
        if self.heap.peek()?.deadline > now {
            return None;
        }
        let entry = self.heap.pop()?;
        entry.task.timer_armed.set(false);
        Some(entry.task)
    }

    fn drop_stale_top(&mut self) {
        while let Some(top) = self.heap.peek() {
            if top.is_live() {
                break;
            }
            self.heap.pop();
            self.stale = self.stale.saturating_sub(1);
        }
    }

    /// Number of heap entries, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every timer (at worker exit).
    pub fn clear(&mut self) {
        self.heap.clear();
        self.stale = 0;
    }
}

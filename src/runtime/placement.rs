//! Choosing the next task: the turns of started and fresh tasks, where
//! fresh tasks start, and stealing them (split from worker.rs, which keeps
//! the worker loop, timers, idling and shutdown).
//!
//! # Choosing the next task
//!
//! At most every 61st pick (Go's number; more often when picks are long,
//! see "Timers and I/O beside busy coroutines" in worker.rs) a worker first
//! drains its inbox, fires due timers, polls its sockets and takes a task
//! from the global injector, so none of them starves. Otherwise:
//! `run_next`, then `local` and `fresh` in turns (one pass over the started
//! tasks, then as many fresh ones; so both progress under a flood of spawns,
//! and the run queue stays in spawn order, which keeps switches friendly to
//! the TLB), then the inbox, timers, the injector, and stealing from the
//! other workers.
//!
//! # Placement
//!
//! Only tasks that have not started move between workers (a started stack
//! never does, see worker.rs): where a fresh task starts is where it will
//! run all its life. `take_fresh` spreads a fan-out over the workers, and a
//! spawn wakes one idle worker when no worker is already looking for work
//! (`notify_idle`).

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use crossbeam_deque::Steal;

use super::Shared;
use super::task_ref::TaskRef;
use super::worker::{PROGRESS_PAIRS, Worker, current_worker, prefetch_ahead};
use crate::observe::metrics::bump;

/// Queues a task that has never run, on this worker's `fresh` deque when
/// called on a worker of `shared`, else on the global injector; then wakes an
/// idle worker if none is looking for work.
pub(crate) fn submit_fresh(shared: &Arc<Shared>, task: TaskRef) {
    match current_worker() {
        Some(worker) if Arc::ptr_eq(&worker.shared, shared) => {
            bump(&worker.counters().spawned);
            worker.fresh.push(task)
        }
        _ => {
            shared
                .counters
                .spawned_outside
                .fetch_add(1, Ordering::Relaxed);
            shared.injector.push(task)
        }
    }
    notify_idle(shared);
}

/// Wakes one idle worker if there is one and none is spinning.
pub(crate) fn notify_idle(shared: &Shared) {
    fence(Ordering::SeqCst);
    if shared.n_spinning.load(Ordering::SeqCst) != 0 || shared.n_idle.load(Ordering::SeqCst) == 0 {
        return;
    }
    let woken = {
        let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        let woken = idle.pop();
        shared.n_idle.store(idle.len(), Ordering::SeqCst);
        woken
    };
    if let Some(index) = woken {
        shared.workers[index].wake();
    }
}

impl Worker {
    /// A started or fresh task. The two kinds take turns, so that both make
    /// progress under a flood of spawns: a turn of `local` runs the started
    /// tasks queued when it began (one pass), then a turn of `fresh` starts
    /// as many new ones (at least one).
    ///
    /// Turns, not one of each alternately: alternating per pick merged each
    /// round's newly started tasks between the old ones, which after a few
    /// rounds left the run queue in a bit-reversed order of their stacks'
    /// addresses; every switch then missed the TLB (≈ 450 ns per yield with
    /// 10,000 runnable here, against ≈ 25 ns in address order). With turns,
    /// newly started tasks join the queue in spawn order.
    pub(super) fn pop_ready(&self) -> Option<TaskRef> {
        self.run_next_streak.set(0);
        for _ in 0..2 {
            if self.local_left.get() > 0 {
                self.local_left.set(self.local_left.get() - 1);
                let mut local = self.local.borrow_mut();
                if let Some(task) = local.pop_front() {
                    prefetch_ahead(&local);
                    return Some(task);
                }
                self.local_left.set(0);
            }
            if self.fresh_left.get() > 0 {
                self.fresh_left.set(self.fresh_left.get() - 1);
                if let Some(task) = self.take_fresh() {
                    return Some(task);
                }
                self.fresh_left.set(0);
            }
            // Both turns are over: begin the next pair.
            let started = self.local.borrow().len();
            self.local_left.set(started);
            self.fresh_left.set(started.max(1));
            self.publish_pair(started);
        }
        None
    }

    /// Tells other workers how many started tasks this one has queued at
    /// the start of a pair of turns, and notes how far they have got.
    #[inline]
    fn publish_pair(&self, started: usize) {
        let workers = &self.shared.workers;
        if workers.len() == 1 {
            return;
        }
        let me = &workers[self.index];
        me.queued.store(started, Ordering::Relaxed);
        let mine = me.pairs.load(Ordering::Relaxed) + 1;
        me.pairs.store(mine, Ordering::Relaxed);
        for (seen, other) in self.pairs_seen.iter().zip(workers) {
            let theirs = other.pairs.load(Ordering::Relaxed);
            if theirs != seen.get().0 {
                seen.set((theirs, mine));
            }
        }
    }

    /// A fresh task to start in a fresh turn, placed so that a fan-out
    /// spreads over the workers — a started task never moves, so where it
    /// starts is where it will run:
    ///
    /// - a worker with started work queued leaves fresh tasks to another
    ///   worker that is idle (and wakes it: it steals from `fresh`), or
    ///   that has fewer started tasks queued and is making progress (it
    ///   began a pair of turns during this one's last `PROGRESS_PAIRS`; a
    ///   worker stuck in a long pick, or not given a CPU, is not waited
    ///   for long). Without this the worker
    ///   that spawned a fan-out started most of it before the others had
    ///   stolen any (a 127/73 split of 200 CPU-bound coroutines);
    /// - with its own `fresh` empty, it takes a batch from another worker's
    ///   `fresh` or from the global queue, so that a busy worker keeps
    ///   sharing a fan-out instead of waiting until it runs dry.
    #[inline]
    fn take_fresh(&self) -> Option<TaskRef> {
        if self.shared.workers.len() == 1 {
            return self.fresh.pop();
        }
        self.take_fresh_shared()
    }

    /// `take_fresh` with other workers to share with.
    #[inline(never)]
    fn take_fresh_shared(&self) -> Option<TaskRef> {
        let queued = self.local.borrow().len();
        if queued > 0 && self.another_should_start_fresh(queued) {
            return None;
        }
        if let Some(task) = self.fresh.pop() {
            return Some(task);
        }
        if let Some(task) = self.steal_others() {
            return Some(task);
        }
        if self.shared.injector.is_empty() {
            return None;
        }
        self.steal_global()
    }

    /// Whether another worker should start the next fresh task instead of
    /// this one, which has `queued` started tasks waiting (see
    /// `take_fresh`). Looks only while some fresh task exists.
    fn another_should_start_fresh(&self, queued: usize) -> bool {
        let shared = &self.shared;
        let others_fresh = || {
            shared
                .workers
                .iter()
                .enumerate()
                .any(|(i, w)| i != self.index && !w.stealer.is_empty())
        };
        if self.fresh.is_empty() && !others_fresh() && shared.injector.is_empty() {
            return false;
        }
        if shared.n_idle.load(Ordering::Relaxed) > 0 {
            notify_idle(shared);
            return true;
        }
        let mine = shared.workers[self.index].pairs.load(Ordering::Relaxed);
        shared.workers.iter().enumerate().any(|(i, other)| {
            let (_, seen_at) = self.pairs_seen[i].get();
            i != self.index
                && other.queued.load(Ordering::Relaxed) + 1 < queued
                && mine - seen_at <= PROGRESS_PAIRS
        })
    }

    pub(super) fn steal_global(&self) -> Option<TaskRef> {
        loop {
            match self.shared.injector.steal_batch_and_pop(&self.fresh) {
                Steal::Success(task) => {
                    bump(&self.counters().steals);
                    return Some(task);
                }
                Steal::Retry => continue,
                Steal::Empty => return None,
            }
        }
    }

    pub(super) fn steal_others(&self) -> Option<TaskRef> {
        let workers = &self.shared.workers;
        let n = workers.len();
        for offset in 1..n {
            let victim = &workers[(self.index + offset) % n];
            if victim.stealer.is_empty() {
                continue;
            }
            loop {
                match victim.stealer.steal_batch_and_pop(&self.fresh) {
                    Steal::Success(task) => {
                        bump(&self.counters().steals);
                        return Some(task);
                    }
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
        None
    }

    /// Whether a source this worker could take from has work.
    pub(super) fn has_shared_work(&self) -> bool {
        let shared = &self.shared;
        !shared.workers[self.index].inbox.is_empty()
            || !shared.injector.is_empty()
            || shared
                .workers
                .iter()
                .enumerate()
                .any(|(i, w)| i != self.index && !w.stealer.is_empty())
            || shared.shutdown.load(Ordering::Acquire)
    }
}

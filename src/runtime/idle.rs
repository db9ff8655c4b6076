//! How a worker idles: a short poll when work is expected within
//! microseconds, then a sleep that no wake can miss (split from worker.rs,
//! which keeps the loop that calls these from `find_work`).
//!
//! A worker with nothing to do polls the shared sources for up to 50 µs if
//! work is expected within microseconds (a syscall-thread job in flight,
//! another worker busy; at most half the workers poll at once), then
//! sleeps: it enters the idle list and sets its `sleeping` flag,
//! re-checks every source, and sleeps in its
//! poller's `epoll_wait` (src/io/poller.rs) until an fd it watches is ready,
//! its next timer deadline passes, or another thread writes its eventfd.
//! Work that any worker could run (a spawn) wakes one idle worker, and only
//! when no worker is spinning; a wake for a started task wakes its home
//! worker if it sleeps. Each side writes, fences (SeqCst), then reads the
//! other side's word, and the eventfd stays readable for a wake that lands
//! between the re-check and the `epoll_wait`: no wake is lost and no one
//! polls.

use std::sync::atomic::{Ordering, fence};
use std::time::Instant;

use super::placement::notify_idle;
use super::worker::Worker;
use crate::observe::watchdog;

impl Worker {
    /// Whether work is likely to arrive within microseconds, so that
    /// polling for it beats a sleep and a wake: a syscall thread is running
    /// a job for a coroutine, or another worker is busy (it may spawn or
    /// wake). Socket readiness is not a reason: the sleep is `epoll_wait`,
    /// which wakes on it directly, and polling for it would cost a server
    /// CPU on every idle moment.
    pub(super) fn work_expected_soon(&self) -> bool {
        self.shared.blocking.has_jobs_in_flight()
            || self.shared.n_idle.load(Ordering::Relaxed) + 1 < self.shared.workers.len()
    }

    /// Becomes a spinning worker unless half the workers already spin.
    pub(super) fn start_spinning(&self) -> bool {
        let shared = &self.shared;
        let limit = shared.workers.len().div_ceil(2);
        let spinning = shared.n_spinning.load(Ordering::SeqCst);
        if spinning >= limit
            || shared
                .n_spinning
                .compare_exchange(spinning, spinning + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return false;
        }
        self.spinning.set(true);
        true
    }

    /// Stops spinning. The last spinner to find work wakes another idle
    /// worker, so that parallelism ramps up with the work (as Go does); one
    /// that found nothing wakes nobody, or idle workers would wake each other
    /// in a circle.
    pub(super) fn stop_spinning(&self, found_work: bool) {
        if self.spinning.replace(false)
            && self.shared.n_spinning.fetch_sub(1, Ordering::SeqCst) == 1
            && found_work
        {
            notify_idle(&self.shared);
        }
    }

    /// Sleeps until woken or until the next timer deadline.
    pub(super) fn sleep(&self) {
        let shared = &self.shared;
        {
            let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
            if !idle.contains(&self.index) {
                idle.push(self.index);
            }
            shared.n_idle.store(idle.len(), Ordering::SeqCst);
        }
        self.sleep_unless(|| self.has_shared_work() || !self.fresh.is_empty());
        let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|&i| i != self.index);
        shared.n_idle.store(idle.len(), Ordering::SeqCst);
    }

    /// The one place a worker thread sleeps in the kernel: publishes
    /// `sleeping`, then (after a SeqCst fence, so a waker that pushed first
    /// is seen here, and one that pushes later sees `sleeping`) sleeps in
    /// `epoll_wait` until woken, an fd is ready or the next timer deadline,
    /// unless a timer is already due or `work_waiting()` says there is
    /// something to do. Coroutines whose fds became ready are queued.
    pub(super) fn sleep_unless(&self, work_waiting: impl Fn() -> bool) {
        // An idle moment is when this thread gives back the deep pages of
        // the stacks it pooled (at most every few tens of ms; see
        // src/stack/pool.rs); if one is pending, wake for it.
        let trim = crate::stack::trim_idle_cache(Instant::now());
        let me = &self.shared.workers[self.index];
        me.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let now = Instant::now();
        let timer = self.timers.borrow_mut().next_deadline();
        let deadline = match (timer, trim) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let due = timer.is_some_and(|d| d <= now);
        if !due && !work_waiting() {
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let counters = self.counters();
            counters.sleep_begins(now);
            self.poller().poll(timeout);
            counters.sleep_ends(now, Instant::now());
        }
        me.sleeping.store(false, Ordering::SeqCst);
        // SeqCst store, then load: the monitor's side of this handshake is
        // in src/observe/watchdog.rs.
        watchdog::worker_awake();
    }
}

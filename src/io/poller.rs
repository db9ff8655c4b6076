//! `Poller`: one epoll instance per worker, and the eventfd that interrupts
//! its `epoll_wait`.
//!
//! A worker with nothing to run sleeps in `Poller::poll` (it is the worker's
//! one kernel sleep, see src/runtime/worker.rs), with the timeout set to its
//! next timer deadline; another thread that queues work for it writes the
//! eventfd. A busy worker also polls without blocking whenever its run
//! queues empty and every 61st pick, so I/O readiness is never starved by a
//! long run queue.
//!
//! Each registered fd's epoll data is a pointer to its `FdState`
//! (source.rs). An event for an fd wakes that fd's waiters (`FdState::ready`).
//!
//! # Freeing an `FdState` safely
//!
//! A socket dropped on another thread deletes its fd from the epoll set, but
//! an event for it may already sit in the batch this worker is processing,
//! holding a pointer to its state. So the state is not freed at once: it goes
//! to the poller's `retired` list, which the polling thread empties after it
//! has processed a batch (any batch that could name the fd was read before
//! the deletion finished, so it is done by then). A socket dropped on the
//! poller's own thread (the usual case: a coroutine drops its connection on
//! its home worker) frees the state at once, as no batch is in flight there.
//!
//! In a forked child, an inherited poller's epoll instance is still the
//! parent's: `abandon_after_fork` (src/runtime/fork.rs) marks it closed, so
//! waits register elsewhere, and makes `deregister` leave it alone, so that
//! a socket the child drops stays registered for the parent.
//!
//! The eventfd is edge-triggered and never read: every write is a new edge
//! (eventfd wakes its waiters on each write), and its counter would take
//! 2^64 writes to fill. That saves a `read(2)` per cross-thread wake.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::source::{FdState, millis_rounded_up};

/// Events read per `epoll_wait` call.
const EVENTS_PER_POLL: usize = 256;
/// The epoll data of the eventfd (an `FdState` pointer is never null).
const WAKE_TOKEN: u64 = 0;

/// Whether the kernel has `epoll_pwait2` (nanosecond timeouts); cleared on
/// ENOSYS, after which timeouts round up to milliseconds.
static HAVE_EPOLL_PWAIT2: AtomicBool = AtomicBool::new(true);

/// An epoll instance and the eventfd that interrupts it.
pub(crate) struct Poller {
    epoll: OwnedFd,
    wake: OwnedFd,
    /// The states of the fds registered here, by address: `close` wakes
    /// their waiters.
    registry: Mutex<HashMap<usize, Weak<FdState>>>,
    /// `registry.len()`, readable without the lock (a busy worker checks it
    /// at every fairness tick).
    registered: AtomicUsize,
    /// States of deregistered fds, freed after the next processed batch.
    retired: Mutex<Vec<Arc<FdState>>>,
    /// Set when the owning worker has exited: nobody polls this any more.
    closed: AtomicBool,
    /// Set in a forked child (src/runtime/fork.rs): the epoll instance is
    /// the parent's too, so nothing here may change it.
    forked_away: AtomicBool,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: plain system calls; each result is checked before use and
        // wrapped in an OwnedFd, which closes it exactly once.
        let epoll = unsafe { owned(libc::epoll_create1(libc::EPOLL_CLOEXEC))? };
        // SAFETY: as above.
        let wake = unsafe { owned(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))? };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: WAKE_TOKEN,
        };
        // SAFETY: both fds are open; `event` is a valid epoll_event.
        cvt(unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                wake.as_raw_fd(),
                &mut event,
            )
        })?;
        Ok(Poller {
            epoll,
            wake,
            registered: AtomicUsize::new(0),
            registry: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            forked_away: AtomicBool::new(false),
        })
    }

    /// Interrupts a `poll` in progress on another thread, or makes the next
    /// one return at once.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. It cannot
        // fail but for a full counter (EAGAIN, see the module docs), which
        // would still leave the eventfd readable: the wake is not lost.
        unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Whether any fd is registered (if not, a non-blocking poll would find
    /// nothing and is skipped).
    pub fn has_registrations(&self) -> bool {
        self.registered.load(Ordering::Relaxed) != 0
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the poller as no longer polled (its worker has exited) and
    /// wakes every coroutine waiting on an fd registered here: each tries
    /// its call again and, if it would still block, registers the fd with
    /// its own worker's poller (a coroutine of another runtime may wait on
    /// a socket this one registered).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.free_retired();
        let states: Vec<Arc<FdState>> = self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for state in states {
            state.wake_all();
        }
    }

    /// Called in a forked child, on a poller inherited from the parent: the
    /// epoll instance is shared with the parent, so from now on this process
    /// never deletes an fd from it (that would silence the parent's socket)
    /// and registers elsewhere (`is_closed`). Only atomic stores: this runs
    /// in the child right after `fork`, before anything else.
    pub fn abandon_after_fork(&self) {
        self.forked_away.store(true, Ordering::Relaxed);
        self.closed.store(true, Ordering::Release);
    }

    /// Waits for readiness events for up to `timeout` (None: until one
    /// arrives or `notify`; zero: just looks) and wakes the coroutines
    /// waiting on the ready fds.
    pub fn poll(&self, timeout: Option<Duration>) {
        // Uninitialised: zeroing 3 KiB per call showed up in a server's
        // profile, and the kernel writes the entries it returns.
        let mut events = [MaybeUninit::<libc::epoll_event>::uninit(); EVENTS_PER_POLL];
        let n = self.epoll_wait(&mut events, timeout);
        let events = &events[..n];
        // Start loading every ready fd's state first: with thousands of
        // connections each is a cache miss, and these overlap.
        for event in events {
            // SAFETY: epoll_wait initialised the first `n` entries; a
            // prefetch never faults, whatever the address.
            // An FdState spans about three cache lines.
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                let state = event.assume_init_ref().u64 as usize as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(state);
                _mm_prefetch::<_MM_HINT_T0>(state.wrapping_add(64));
                _mm_prefetch::<_MM_HINT_T0>(state.wrapping_add(128));
            }
        }
        for event in events {
            // SAFETY: epoll_wait initialised the first `n` entries.
            let event = unsafe { event.assume_init_ref() };
            let token = event.u64;
            if token == WAKE_TOKEN {
                continue;
            }
            // SAFETY: a registered fd's data is a pointer to its FdState,
            // which stays allocated until this thread has finished the batch
            // (see "Freeing an FdState safely").
            let state = unsafe { &*(token as usize as *const FdState) };
            state.ready(event.events);
        }
        if n > 0 {
            self.free_retired();
        }
    }

    fn epoll_wait(
        &self,
        events: &mut [MaybeUninit<libc::epoll_event>],
        timeout: Option<Duration>,
    ) -> usize {
        let epfd = self.epoll.as_raw_fd();
        let max = events.len() as libc::c_int;
        loop {
            let n = if timeout.is_some_and(|t| !t.is_zero() && t < Duration::from_secs(1 << 30))
                && HAVE_EPOLL_PWAIT2.load(Ordering::Relaxed)
            {
                let t = timeout.unwrap_or_default();
                let spec = libc::timespec {
                    tv_sec: t.as_secs() as libc::time_t,
                    tv_nsec: t.subsec_nanos() as libc::c_long,
                };
                // SAFETY: epoll_pwait2(epfd, events, maxevents, timeout,
                // sigmask = NULL, sigsetsize = 0): `events` has room for
                // `max` entries and `spec` lives across the call.
                let n = unsafe {
                    libc::syscall(
                        libc::SYS_epoll_pwait2,
                        epfd,
                        events.as_mut_ptr().cast::<libc::epoll_event>(),
                        max,
                        &raw const spec,
                        std::ptr::null::<libc::sigset_t>(),
                        0usize,
                    )
                } as libc::c_int;
                if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                    HAVE_EPOLL_PWAIT2.store(false, Ordering::Relaxed);
                    continue;
                }
                n
            } else {
                // Rounded up, so a timer is never fired early.
                let ms = timeout.map_or(-1, millis_rounded_up);
                // SAFETY: `events` has room for `max` entries.
                unsafe {
                    libc::epoll_wait(
                        epfd,
                        events.as_mut_ptr().cast::<libc::epoll_event>(),
                        max,
                        ms,
                    )
                }
            };
            if n >= 0 {
                return n as usize;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                // EBADF/EFAULT/EINVAL cannot happen with our own epoll fd and
                // buffer; report as "no events" rather than spin on it.
                return 0;
            }
        }
    }

    /// Adds `fd` to the epoll set for `FdState::EPOLL_EVENTS` (edge-triggered,
    /// both directions), with `state` as its data. `exclusive`: for reading only, with
    /// `EPOLLEXCLUSIVE` (a listener shared by processes; see
    /// `Source::set_exclusive`), or without it on a kernel older than 4.5.
    pub fn register(&self, fd: RawFd, state: &Arc<FdState>, exclusive: bool) -> io::Result<()> {
        let both = FdState::EPOLL_EVENTS;
        let add = |events: u32| {
            let mut event = libc::epoll_event {
                events,
                u64: Arc::as_ptr(state) as usize as u64,
            };
            // SAFETY: `event` is a valid epoll_event; epoll_ctl only reads
            // it. The state outlives the registration (see the module docs).
            cvt(unsafe {
                libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event)
            })
        };
        match exclusive {
            true => {
                add((libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32).or_else(|e| {
                    match e.raw_os_error() {
                        Some(libc::EINVAL) => add(both),
                        _ => Err(e),
                    }
                })?
            }
            false => add(both)?,
        };
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.insert(Arc::as_ptr(state) as usize, Arc::downgrade(state));
        self.registered.store(registry.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Removes `fd` from the epoll set and frees `state` once no batch in
    /// flight can point to it. `on_poller_thread`: the caller runs on the
    /// thread that polls this poller, outside `poll`.
    pub fn deregister(&self, fd: RawFd, state: Arc<FdState>, on_poller_thread: bool) {
        if self.forked_away.load(Ordering::Relaxed) {
            // The parent's epoll and registry: leave both alone.
            return;
        }
        // SAFETY: EPOLL_CTL_DEL ignores the event argument (non-null for
        // old kernels). An error (the fd already closed) leaves nothing
        // registered either way.
        unsafe {
            let mut event = libc::epoll_event { events: 0, u64: 0 };
            libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut event);
        }
        {
            let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            registry.remove(&(Arc::as_ptr(&state) as usize));
            self.registered.store(registry.len(), Ordering::Relaxed);
        }
        if on_poller_thread || self.is_closed() {
            drop(state);
        } else {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(state);
        }
    }

    fn free_retired(&self) {
        let retired = {
            let mut list = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            if list.is_empty() {
                return;
            }
            std::mem::take(&mut *list)
        };
        drop(retired);
    }
}

/// Wraps a new fd, or the error that refused it.
///
/// # Safety
/// `fd` must be -1 or a newly opened fd owned by nobody else.
unsafe fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the caller passes a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cvt(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

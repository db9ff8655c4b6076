//! Readiness-based I/O: the epoll poller and fds that park coroutines.
//!
//! - `poller.rs` — `Poller`: one epoll instance per worker, which is also
//!   where an idle worker sleeps;
//! - `source.rs` — `Source`: a non-blocking fd's readiness state, and the
//!   wait that parks a coroutine on `EAGAIN` until the poller sees the fd
//!   ready (no event lost between the two);
//! - `pollable.rs` — [`Pollable`]: the public wrapper that brings any
//!   pollable fd (a pipe, an eventfd, a timerfd, a tty, a socket of your
//!   own) to coroutines;
//! - `stdio.rs` — `stdin()`, `stdout()`, `stderr()` for coroutines, on the
//!   syscall threads (not the poller: see that file for why).
//!
//! # Why one epoll per worker
//!
//! A started coroutine never leaves its home worker (ARCHITECTURE.md,
//! "Home worker"), so an fd is registered on the epoll of the worker whose
//! coroutine first waits on it: its readiness event is read by the very
//! thread that will run the coroutine, which joins the local run queue with
//! no cross-thread hand-off, no lock shared between workers and no eventfd
//! write. Go's single epoll, polled by whichever worker is idle, would hand
//! most events to a worker that must pass them on to the coroutine's home
//! (an inbox push and a wake per event). With one worker (the measured
//! server configuration) the two are the same, so the per-worker choice
//! costs nothing there and saves the hop with more workers. What it gives
//! up: a worker that runs a coroutine which never parks does not poll its
//! epoll meanwhile, so the sockets registered there wait — including one
//! that a coroutine homed on another, idle worker now waits on (a socket
//! stays where it was first waited on). Coroutines are not preempted, so a
//! coroutine that never parks delays its worker's other coroutines anyway;
//! with per-worker epoll it delays their sockets' other users too.
//!
//! When a worker exits (its runtime is dropped), its poller wakes every
//! coroutine still waiting on an fd registered there, and each registers
//! the fd again with its own worker.

mod pollable;
mod poller;
mod source;
mod stdio;

pub use pollable::Pollable;
pub(crate) use pollable::set_nonblocking;
pub(crate) use poller::Poller;
pub(crate) use source::{Direction, Source, poll_now, poll_once};
pub use stdio::{Stderr, StderrLock, Stdin, StdinLock, Stdout, StdoutLock, stderr, stdin, stdout};

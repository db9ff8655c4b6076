//! fibra: stackful coroutines (green threads) for Linux x86_64.
//!
//! Code that looks synchronous runs as many cheap coroutines on few OS
//! threads. The layers, bottom up (see the design notes in the repository):
//!
//! - `arch` — the hand-written x86_64 context switch and entry trampoline;
//! - [`stack`] — guarded, lazily committed stacks, their pool and the
//!   overflow reporter;
//! - [`coroutine`] — raw stackful coroutines: `Coroutine::new`, `resume`,
//!   `Yielder::suspend`, with panics carried to the resumer and unwinding on
//!   drop;
//! - the N:M scheduler (`runtime`): [`spawn`], [`Builder`], [`JoinHandle`],
//!   [`park`], [`sleep`], [`yield_now`], [`current`], and [`Runtime`] — one
//!   worker thread per CPU, work stealing of coroutines that have not started,
//!   timers, cancellation;
//! - [`blocking`] — syscall threads: `unblock(f)` runs blocking work off the
//!   workers while the calling coroutine is parked;
//! - [`fs`] — `std::fs` for coroutines: files and directories whose calls
//!   run on the syscall threads, in bounded chunks;
//! - [`io`] — the epoll poller (one per worker; an idle worker sleeps in
//!   its `epoll_wait`), [`io::Pollable`], which makes any pollable fd park
//!   coroutines instead of blocking, and `stdin()`, `stdout()`, `stderr()`
//!   for coroutines (std's streams, on the syscall threads);
//! - [`net`] — `std::net` for coroutines: `TcpListener`, `TcpStream`,
//!   `UdpSocket` and the Unix sockets, whose calls park the coroutine on
//!   `EAGAIN` until the socket is ready.
//!
//! ```
//! let handles: Vec<_> = (0..1000u64).map(|i| fibra::spawn(move || i * 2)).collect();
//! let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
//! assert_eq!(sum, 999 * 1000);
//! ```
//!
//! # Floating-point state
//! The floating-point control state (MXCSR rounding/flush-to-zero, the x87
//! control word) is shared by all coroutines of a thread and is not saved by a
//! switch. Code that changes it must restore it before it suspends or parks.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod arch;
pub mod blocking;
pub mod coroutine;
pub mod fs;
pub mod io;
pub mod net;
mod runtime;
pub mod stack;
pub mod sync;
pub mod thread;

pub use runtime::{
    Builder, Cancelled, Coroutine, JoinHandle, Runtime, RuntimeBuilder, current, park,
    park_timeout, sleep, sleep_until, spawn, yield_now,
};

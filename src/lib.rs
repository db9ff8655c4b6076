//! fibra: stackful coroutines (green threads) for Linux x86_64.
//!
//! Code that looks synchronous runs as many cheap coroutines on few OS
//! threads. The layers, bottom up (ARCHITECTURE.md in the repository has
//! the full map and the invariants each layer keeps):
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
//!   `EAGAIN` until the socket is ready;
//! - [`observe`] — [`metrics`] (`Runtime::metrics`), the coroutine
//!   [`dump`] (`Runtime::dump`) and the stalled-worker watchdog;
//! - [`prefork`] — multi-process deployments: a master that binds the
//!   listeners and supervises worker processes, each running its own
//!   runtime.
//!
//! ```
//! let handles: Vec<_> = (0..1000u64).map(|i| fibra::spawn(move || i * 2)).collect();
//! let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
//! assert_eq!(sum, 999 * 1000);
//! ```
//!
//! # Fork
//!
//! A runtime belongs to the process that built it. After `fork(2)` the
//! child has only the forking thread, and its copies of the parent's
//! runtimes are dead: their coroutines never run there, their epoll
//! instances (shared with the parent) are neither polled nor changed, and
//! using one (`Runtime::spawn`, `block_on`, joining one of its coroutines)
//! fails with an error or panic that says so. Fork before building
//! runtimes, or exec right after the fork (as `std::process::Command`
//! does); in a forked child, build a new `Runtime` — `fibra::spawn`'s
//! default runtime starts afresh there by itself. A coroutine that forks
//! goes on in the child as plain code on a plain thread, and the child
//! exits when it returns. For worker processes, use [`prefork`].
//!
//! # Watching a running program
//!
//! `fibra::metrics()` counts the coroutines (alive, running, runnable,
//! parked by reason, not started) and says what each worker has done;
//! `fibra::dump()` lists every coroutine and where the parked ones wait,
//! grouped by place, without stopping anything:
//!
//! ```
//! let handle = fibra::Builder::new()
//!     .name("waiter".into())
//!     .spawn(|| fibra::park())
//!     .unwrap();
//! // Once it has parked, the dump shows where.
//! let dump = loop {
//!     let dump = fibra::dump();
//!     let waiter = dump.coroutines().iter().find(|c| c.name() == Some("waiter"));
//!     if waiter.is_some_and(|c| c.stack().is_some()) {
//!         break dump;
//!     }
//! };
//! println!("{dump}");
//! handle.coroutine().unpark();
//! handle.join().unwrap();
//! ```
//!
//! A watchdog reports on stderr a coroutine that holds its worker for more
//! than 100 ms without parking (a `std::thread::sleep`, a std lock, a
//! blocking system call, a long loop): which one, where, and what to use
//! instead; then when it lets go. `RuntimeBuilder::stall_threshold` changes
//! the threshold or turns the report off; `RuntimeBuilder::dump_signal`
//! prints a dump on a signal.
//!
//! # Configuring the default runtime
//!
//! The runtime `fibra::spawn` starts on first use reads these environment
//! variables then (empty means unset); a value it cannot use makes that
//! first call panic with a message naming the variable and what it expects:
//!
//! - `FIBRA_WORKERS` — worker threads (default: one per CPU), as Go's
//!   `GOMAXPROCS`;
//! - `FIBRA_STACK_SIZE` — default stack size: bytes, or `512K`, `1M`, ...
//!   (default 256 KiB of address space, only touched pages cost memory);
//! - `FIBRA_STALL_THRESHOLD` — the watchdog's threshold, `250ms`, `2s` or
//!   `off` (default 100 ms);
//! - `FIBRA_DUMP_SIGNAL` — print a dump to stderr on this signal: `USR1`,
//!   `USR2`, `QUIT`, ... (default: none).
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
pub mod observe;
pub mod prefork;
mod runtime;
pub mod stack;

pub use runtime::{
    Builder, Cancelled, Coroutine, DEFAULT_STALL_THRESHOLD, JoinHandle, Runtime, RuntimeBuilder,
    current, dump, metrics, park, park_timeout, sleep, sleep_until, spawn, yield_now,
};

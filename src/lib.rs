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
//! - [`sync`] — `std::sync` for coroutines: `Mutex`, `RwLock`, `Condvar`,
//!   `Barrier`, `Once`, `OnceLock`, `LazyLock`, `mpsc`, whose waits park the
//!   coroutine (or block a plain thread); and beyond std: `mpmc`, `select!`,
//!   `Semaphore`, `WaitGroup`, `Event`, `ReentrantLock`, `JoinableQueue`;
//!   [`coroutine_local!`] for a value per coroutine;
//! - [`thread`] — `std::thread`'s names over the scheduler: `spawn`,
//!   `Builder`, `scope`, `sleep`, `current`, ...;
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
//! # Porting std code: change the imports
//!
//! | std | fibra |
//! |---|---|
//! | `std::thread` (`spawn`, `Builder`, `scope`, `sleep`, `park`, `current`, ...) | [`fibra::thread`](thread) |
//! | `std::sync` (`Mutex`, `RwLock`, `Condvar`, `Barrier`, `Once`, `OnceLock`, `LazyLock`, `mpsc`, and `Arc`, `atomic`, ... re-exported) | [`fibra::sync`](sync) |
//! | `std::net` | [`fibra::net`](net) |
//! | `std::fs` | [`fibra::fs`](fs) |
//! | `std::io::{stdin, stdout, stderr}` | [`fibra::io`](io) |
//! | `thread_local!` (a value per coroutine wanted) | [`coroutine_local!`] |
//!
//! Beyond std, as Go and Python offer them: [`sync::mpmc`] (cloneable
//! receivers), [`select!`] over channel operations,
//! [`Semaphore`](sync::Semaphore), [`WaitGroup`](sync::WaitGroup),
//! [`Event`](sync::Event), [`ReentrantLock`](sync::ReentrantLock) (owned by
//! a coroutine, Python's `RLock`) and [`JoinableQueue`](sync::JoinableQueue)
//! (Python's `queue.Queue`).
//!
//! Same names, signatures and errors; a call that would block parks the
//! calling coroutine and its worker runs other coroutines meanwhile. Every
//! call also works on a plain OS thread (it blocks that thread), so a
//! `main`, a test, or a std thread can share a `Mutex` or a channel with
//! coroutines.
//!
//! # What blocks a worker, and what to use instead
//!
//! A coroutine gives up its worker thread only at a park point inside
//! fibra. Anything that blocks the OS thread blocks every coroutine of that
//! worker, and can deadlock it (the coroutine that would release the wait
//! may be queued on the same worker):
//!
//! | blocks the worker | use instead |
//! |---|---|
//! | `std::sync::{Mutex, RwLock, Condvar, Barrier}`, `std::sync::mpsc`, `parking_lot`, `crossbeam-channel` waits | `fibra::sync` (a std `Mutex` held only for a few instructions, never across a park, is harmless) |
//! | `std::thread::sleep`, `std::thread::park`, joining a std thread | `fibra::thread::sleep`, `fibra::thread::park`, `fibra::blocking::unblock` |
//! | `std::net` sockets, `std::fs`, `std::io::stdin` | `fibra::net`, `fibra::fs`, `fibra::io` |
//! | other blocking system calls, C libraries, DNS through libc | `fibra::blocking::unblock(\|\| ...)`: runs on a syscall thread while the coroutine parks |
//! | a long computation with no park point | split it, calling `fibra::yield_now()` now and then |
//!
//! # What a coroutine may assume
//!
//! - It runs its whole life on the worker thread that first runs it, so a
//!   `thread_local!` value is shared by all coroutines of that worker (use
//!   [`coroutine_local!`] for one per coroutine), and `!Send` values held
//!   across a park stay on one thread.
//! - No preemption: between two park points no other coroutine of its
//!   worker runs.
//! - std keeps its panic state per OS thread: while one coroutine is
//!   suspended partway through unwinding (a destructor that parks),
//!   `std::thread::panicking()` is true in the other coroutines of its
//!   worker. [`thread::panicking`] and fibra's poison flags say what they
//!   make of that.
//!
//! # Spawning, joining, cancelling
//!
//! ```
//! use std::time::Duration;
//!
//! // A configured coroutine (as std::thread::Builder).
//! let handle = fibra::Builder::new()
//!     .name("worker".into())
//!     .stack_size(64 * 1024)
//!     .spawn(|| fibra::current().name().map(str::to_owned))?;
//! assert_eq!(handle.join().unwrap().as_deref(), Some("worker"));
//!
//! // A JoinHandle also cancels: the coroutine unwinds from its park point.
//! let sleeper = fibra::spawn(|| fibra::sleep(Duration::from_secs(3600)));
//! sleeper.cancel();
//! let payload = sleeper.join().unwrap_err();
//! assert!(payload.downcast_ref::<fibra::Cancelled>().is_some());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Runtimes
//!
//! `fibra::spawn` starts a default runtime (one worker per CPU) on first
//! use. One can be configured explicitly:
//!
//! ```
//! let rt = fibra::Runtime::builder().workers(2).build()?;
//! let answer = rt.block_on(|| {
//!     let half = fibra::spawn(|| 21); // on `rt`: the caller's runtime
//!     half.join().unwrap() * 2
//! });
//! assert_eq!(answer, 42);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Sockets, locks and channels together
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use fibra::net::{TcpListener, TcpStream};
//! use fibra::sync::{Arc, Mutex, mpsc};
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let (done_tx, done_rx) = mpsc::channel();
//! let server = {
//!     let seen = Arc::clone(&seen);
//!     fibra::spawn(move || -> std::io::Result<()> {
//!         for stream in listener.incoming().take(2) {
//!             let (mut stream, seen, done_tx) = (stream?, Arc::clone(&seen), done_tx.clone());
//!             fibra::spawn(move || {
//!                 let mut line = String::new();
//!                 BufReader::new(&stream).read_line(&mut line).unwrap(); // parks
//!                 seen.lock().unwrap().push(line.trim().to_owned());
//!                 stream.write_all(b"ok\n").unwrap();
//!                 done_tx.send(()).unwrap();
//!             });
//!         }
//!         Ok(())
//!     })
//! };
//! for name in ["alice", "bob"] {
//!     let mut client = TcpStream::connect(addr)?;
//!     writeln!(client, "{name}")?;
//!     let mut reply = String::new();
//!     BufReader::new(&client).read_line(&mut reply)?;
//!     assert_eq!(reply, "ok\n");
//! }
//! server.join().unwrap()?;
//! done_rx.recv().unwrap();
//! done_rx.recv().unwrap();
//! let mut seen = seen.lock().unwrap().clone();
//! seen.sort();
//! assert_eq!(seen, ["alice", "bob"]);
//! # Ok::<(), std::io::Error>(())
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
#[cfg(fibra_asan)]
mod asan;
pub mod blocking;
pub mod coroutine;
pub mod fs;
pub mod io;
pub mod net;
pub mod observe;
pub mod prefork;
mod runtime;
pub mod stack;
pub mod sync;
pub mod thread;

pub use runtime::{
    Builder, Cancelled, Coroutine, DEFAULT_STALL_THRESHOLD, JoinHandle, Runtime, RuntimeBuilder,
    current, dump, metrics, park, park_timeout, sleep, sleep_until, spawn, yield_now,
};

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
//!   drop.
//!
//! # Floating-point state
//! The floating-point control state (MXCSR rounding/flush-to-zero, the x87
//! control word) is shared by all coroutines of a thread and is not saved by a
//! switch. Code that changes it must restore it before it suspends or parks.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod arch;
pub mod coroutine;
pub mod stack;

//! I/O for coroutines: the standard streams (on the syscall threads).

mod stdio;

pub use stdio::{Stderr, StderrLock, Stdin, StdinLock, Stdout, StdoutLock, stderr, stdin, stdout};

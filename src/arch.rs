//! Brings the architecture's context switch (`arch/`) into the crate.
//!
//! Only x86_64 Linux (System V ABI) is supported. Everything above this module
//! uses the five items re-exported here and never names a register.

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!(
    "fibra supports only x86_64 Linux (System V ABI): its context switch is hand-written \
     x86_64 assembly and its stacks, signals and I/O use Linux system calls."
);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[path = "../arch/x86_64.rs"]
mod imp;

pub(crate) use imp::{
    INIT_FRAME_BYTES, STACK_ALIGN, init_stack, switch_into, switch_out, switch_out_final,
};

//! OS-thread baselines and CPU pinning for `switch_cost`: a futex ping-pong
//! between two threads on one CPU, `sched_yield` between two threads on one
//! CPU, and the affinity helpers both need.

use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The "model name" line of /proc/cpuinfo, the number of CPUs this process
/// may use, and the load average (a busy shared machine shows there).
pub fn machine_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    format!("{model}, {cpus} CPUs, load average {load} at start")
}

/// Pins the whole process (this thread, and threads it spawns later) to the
/// highest-numbered CPU it may use; returns that CPU.
pub fn pin_process_to_one_cpu() -> usize {
    let allowed = current_affinity();
    let cpu = cpus_in(&allowed)
        .next_back()
        .expect("the process may run on no CPU");
    pin_current_thread(cpu);
    cpu
}

// ---------------------------------------------------------------------------
// OS-thread ping-pong over a futex word (benches/switch.rs measures it too).

/// Whose turn it is in the ping-pong, and the stop signal.
const A_TURN: u32 = 0;
const B_TURN: u32 = 1;
const STOP: u32 = 2;

/// Two OS threads on one CPU handing a turn back and forth through a futex
/// word. The creating thread is A; `new` pins it (and the spawned B) to one
/// CPU, and dropping the pair stops and joins B and restores A's affinity.
pub struct PingPong {
    state: Arc<AtomicU32>,
    peer: Option<JoinHandle<()>>,
    saved_affinity: libc::cpu_set_t,
}

impl PingPong {
    pub fn new() -> PingPong {
        let saved_affinity = current_affinity();
        let cpu = cpus_in(&saved_affinity)
            .next()
            .expect("the thread may run on no CPU");
        pin_current_thread(cpu);
        let state = Arc::new(AtomicU32::new(A_TURN));
        let peer_state = Arc::clone(&state);
        let peer = thread::Builder::new()
            .name("ping-pong-b".into())
            .spawn(move || {
                pin_current_thread(cpu);
                loop {
                    match wait_while(&peer_state, A_TURN, || false) {
                        STOP => return,
                        _ => {
                            peer_state.store(A_TURN, Ordering::Release);
                            futex_wake(&peer_state);
                        }
                    }
                }
            })
            .expect("cannot spawn the ping-pong thread");
        PingPong {
            state,
            peer: Some(peer),
            saved_affinity,
        }
    }

    /// A → B → A: hands B the turn and sleeps until B hands it back.
    pub fn round_trip(&self) {
        self.state.store(B_TURN, Ordering::Release);
        futex_wake(&self.state);
        let peer = self.peer.as_ref().expect("the peer thread is running");
        wait_while(&self.state, B_TURN, || peer.is_finished());
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        // It is A's turn whenever A is not inside `round_trip`, so B is
        // waiting for the word to change and sees STOP.
        self.state.store(STOP, Ordering::Release);
        futex_wake(&self.state);
        if let Some(peer) = self.peer.take() {
            let result = peer.join();
            if result.is_err() && !thread::panicking() {
                panic!("the ping-pong thread panicked");
            }
        }
        set_affinity(&self.saved_affinity);
    }
}

/// Sleeps on `word` while it holds `value`; returns the value that ended the
/// wait. Every second of sleep asks `peer_gone` whether the thread that
/// should change the word has died, and panics if so rather than hang.
fn wait_while(word: &AtomicU32, value: u32, peer_gone: impl Fn() -> bool) -> u32 {
    let timeout = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        let now = word.load(Ordering::Acquire);
        if now != value {
            return now;
        }
        // SAFETY: `word` is a live, aligned u32 for the whole call; FUTEX_WAIT
        // only reads it, and `timeout` outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                value,
                &timeout as *const libc::timespec,
            )
        };
        if r == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
            && peer_gone()
        {
            panic!("the ping-pong peer thread exited mid-exchange");
        }
    }
}

/// Wakes one thread sleeping on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// The calling thread's CPU affinity mask.
pub fn current_affinity() -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t of the size passed; pid 0 means
    // the calling thread.
    let r = unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(
        r,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    set
}

/// The CPUs in `set`, lowest-numbered first.
fn cpus_in(set: &libc::cpu_set_t) -> impl DoubleEndedIterator<Item = usize> {
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, so within the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
}

/// Restricts the calling thread to `cpu`.
fn pin_current_thread(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: callers pass a CPU found in a cpu_set_t, so below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set_affinity(&set);
}

/// Sets the calling thread's CPU affinity mask.
pub fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 means the
    // calling thread.
    let r = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), set) };
    assert_eq!(
        r,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// Two OS threads on the calling thread's CPU each calling `sched_yield`
/// `n` times; returns the time per yield (the pair's time over 2n yields).
pub fn sched_yield_pair(n: u64) -> Duration {
    let yields = move || {
        for _ in 0..n {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    };
    let start = Instant::now();
    let partner = thread::spawn(yields);
    yields();
    partner.join().expect("sched_yield thread");
    start.elapsed() / 2
}

//! Criterion benchmarks of fibra's foundation: the context switch and the
//! cost of a coroutine's life, each next to the baseline it is judged by.
//!
//! - `switch_round_trip/{fibra,corosensei,fibra_u64}`: one `resume` plus the
//!   matching `suspend` of `|y, ()| loop { y.suspend(()) }` (the `u64` case
//!   passes a word each way). Both libraries' results are consumed by the
//!   same `match`, not `black_box`ed: black-boxing fibra's `CoroutineResult`
//!   adds a store that corosensei's layout avoids (≈ 10 %, an artefact).
//! - `thread_ping_pong/futex_pinned`: one round trip A → B → A between two OS
//!   threads pinned to the same CPU, handing over through a futex word.
//! - `create_run_drop/{fibra_pooled,thread_spawn_join}`: a coroutine created
//!   (its stack from the thread's pool), run to completion and dropped, next
//!   to `std::thread::spawn(|| ()).join()`.
//!
//! Run pinned, e.g. `taskset -c 1 cargo bench --bench switch`; the ping-pong
//! pins both of its threads to the first CPU the process may use. Results and
//! how to read them: BENCHMARKS.md.

use std::hint::black_box;
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fibra::coroutine::{Coroutine, CoroutineResult};

fn switch_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("switch_round_trip");

    let mut co: Coroutine<(), (), ()> = Coroutine::new(|y, ()| {
        loop {
            y.suspend(())
        }
    });
    group.bench_function("fibra", |b| {
        b.iter(|| match co.resume(()) {
            CoroutineResult::Yield(()) => {}
            CoroutineResult::Return(_) => unreachable!(),
        })
    });

    let mut co: corosensei::Coroutine<(), (), ()> = corosensei::Coroutine::new(|y, ()| {
        loop {
            y.suspend(())
        }
    });
    group.bench_function("corosensei", |b| {
        b.iter(|| match co.resume(()) {
            corosensei::CoroutineResult::Yield(()) => {}
            corosensei::CoroutineResult::Return(_) => unreachable!(),
        })
    });

    let mut co: Coroutine<u64, u64, ()> = Coroutine::new(|y, mut x: u64| {
        loop {
            x = y.suspend(x.wrapping_add(1))
        }
    });
    group.bench_function("fibra_u64", |b| {
        let mut x = 0u64;
        b.iter(|| match co.resume(black_box(x)) {
            CoroutineResult::Yield(v) => x = v,
            CoroutineResult::Return(_) => unreachable!(),
        })
    });

    group.finish();
}

fn thread_ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("thread_ping_pong");
    let pair = PingPong::new();
    group.bench_function("futex_pinned", |b| b.iter(|| pair.round_trip()));
    group.finish();
    // Stops and joins the peer thread, restores this thread's affinity.
    drop(pair);
}

fn create_run_drop(c: &mut Criterion) {
    let mut group = c.benchmark_group("create_run_drop");
    group.bench_function("fibra_pooled", |b| {
        b.iter(|| {
            let mut co: Coroutine<(), (), ()> = Coroutine::new(|_, ()| ());
            match co.resume(()) {
                CoroutineResult::Return(()) => {}
                CoroutineResult::Yield(_) => unreachable!(),
            }
        })
    });
    group.bench_function("thread_spawn_join", |b| {
        b.iter(|| thread::spawn(|| ()).join().unwrap())
    });
    group.finish();
}

/// Whose turn it is in the ping-pong, and the stop signal.
const A_TURN: u32 = 0;
const B_TURN: u32 = 1;
const STOP: u32 = 2;

/// Two OS threads on one CPU handing a turn back and forth through a futex
/// word. The benchmark's own thread is A; `new` pins it (and the spawned B)
/// to one CPU, and dropping the pair stops and joins B and restores A's
/// affinity.
struct PingPong {
    state: Arc<AtomicU32>,
    peer: Option<JoinHandle<()>>,
    saved_affinity: libc::cpu_set_t,
}

impl PingPong {
    fn new() -> PingPong {
        let saved_affinity = current_affinity();
        let cpu = first_cpu(&saved_affinity);
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
    fn round_trip(&self) {
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
fn current_affinity() -> libc::cpu_set_t {
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

/// The lowest-numbered CPU in `set`.
fn first_cpu(set: &libc::cpu_set_t) -> usize {
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, so within the set.
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
        .expect("the thread may run on no CPU")
}

/// Restricts the calling thread to `cpu`.
fn pin_current_thread(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `cpu` came from `first_cpu`, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set_affinity(&set);
}

/// Sets the calling thread's CPU affinity mask.
fn set_affinity(set: &libc::cpu_set_t) {
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = switch_round_trip, thread_ping_pong, create_run_drop
}
criterion_main!(benches);

//! What a fibra context switch costs next to its baselines, in one run.
//!
//! The program pins itself to one CPU, then measures each case below in
//! batches of about 20 ms, the cases interleaved, for `REPS` rounds, and
//! prints the median ns per operation of each case with its ratio to the
//! fibra switch round trip measured in the same run. Absolute figures drift
//! on a shared machine; same-run ratios are the figures to compare. Even so,
//! the fibra/corosensei ratio can differ from one process to the next (where
//! things land in memory), so run it a few times (see BENCHMARKS.md).
//!
//!     cargo run --release --example switch_cost
//!
//! To add a row, write a function returning a `Case` and list it in `cases()`.

use std::hint::black_box;
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fibra::coroutine::{Coroutine, CoroutineResult};

/// Measurement rounds; every case is measured once per round.
const REPS: usize = 31;

/// How long one batch of one case should take.
const BATCH: Duration = Duration::from_millis(20);

/// One thing to measure. `run(n)` performs the operation `n` times and
/// returns how long that took.
struct Case {
    name: &'static str,
    note: &'static str,
    run: Box<dyn FnMut(u64) -> Duration>,
}

/// One line of the printed table.
struct Row {
    name: &'static str,
    /// Median ns per operation over the rounds.
    ns: f64,
    /// Lower and upper quartile of the rounds' ns per operation.
    quartiles: (f64, f64),
    note: &'static str,
}

/// The cases, the baseline (the fibra switch round trip) first.
fn cases() -> Vec<Case> {
    vec![
        fibra_switch(),
        corosensei_switch(),
        thread_ping_pong(),
        fibra_create_run_drop(),
        thread_spawn_join(),
    ]
}

fn fibra_switch() -> Case {
    let mut co: Coroutine<(), (), ()> = Coroutine::new(|y, ()| {
        loop {
            y.suspend(())
        }
    });
    Case {
        name: "fibra switch round trip",
        note: "resume + suspend, ()",
        run: Box::new(move |n| {
            let start = Instant::now();
            for _ in 0..n {
                match co.resume(()) {
                    CoroutineResult::Yield(()) => {}
                    CoroutineResult::Return(_) => unreachable!(),
                }
            }
            start.elapsed()
        }),
    }
}

fn corosensei_switch() -> Case {
    let mut co: corosensei::Coroutine<(), (), ()> = corosensei::Coroutine::new(|y, ()| {
        loop {
            y.suspend(())
        }
    });
    Case {
        name: "corosensei switch round trip",
        note: "resume + suspend, ()",
        run: Box::new(move |n| {
            let start = Instant::now();
            for _ in 0..n {
                match co.resume(()) {
                    corosensei::CoroutineResult::Yield(()) => {}
                    corosensei::CoroutineResult::Return(_) => unreachable!(),
                }
            }
            start.elapsed()
        }),
    }
}

fn thread_ping_pong() -> Case {
    let pair = PingPong::new();
    Case {
        name: "OS thread ping-pong",
        note: "A->B->A, futex, one CPU",
        // The pair lives in the closure: dropping the cases joins B.
        run: Box::new(move |n| {
            let start = Instant::now();
            for _ in 0..n {
                pair.round_trip();
            }
            start.elapsed()
        }),
    }
}

fn fibra_create_run_drop() -> Case {
    Case {
        name: "fibra create+run+drop",
        note: "pooled stack",
        run: Box::new(|n| {
            let start = Instant::now();
            for _ in 0..n {
                let mut co: Coroutine<(), (), ()> = Coroutine::new(|_, ()| ());
                match co.resume(()) {
                    CoroutineResult::Return(()) => {}
                    CoroutineResult::Yield(_) => unreachable!(),
                }
                drop(black_box(co));
            }
            start.elapsed()
        }),
    }
}

fn thread_spawn_join() -> Case {
    Case {
        name: "OS thread spawn+join",
        note: "std::thread::spawn(|| ())",
        run: Box::new(|n| {
            let start = Instant::now();
            for _ in 0..n {
                thread::spawn(|| ()).join().unwrap();
            }
            start.elapsed()
        }),
    }
}

fn main() {
    let machine = machine_description();
    let cpu = pin_process_to_one_cpu();
    let mut cases = cases();

    // Calibrate (this also warms up): find n such that a batch takes ~BATCH.
    let iters: Vec<u64> = cases.iter_mut().map(|c| calibrate(&mut c.run)).collect();

    let mut samples = vec![Vec::with_capacity(REPS); cases.len()];
    for _ in 0..REPS {
        for ((case, &n), out) in cases.iter_mut().zip(&iters).zip(&mut samples) {
            let elapsed = (case.run)(n);
            out.push(elapsed.as_nanos() as f64 / n as f64);
        }
    }

    let rows: Vec<Row> = cases
        .iter()
        .zip(&samples)
        .map(|(case, s)| Row {
            name: case.name,
            ns: quantile(s, 0.5),
            quartiles: (quantile(s, 0.25), quantile(s, 0.75)),
            note: case.note,
        })
        .collect();
    // Stop the ping-pong thread before printing.
    drop(cases);

    println!("fibra switch_cost — {machine}");
    println!(
        "pinned to CPU {cpu}; figures are medians of {REPS} interleaved runs (~{} ms batches)",
        BATCH.as_millis()
    );
    println!();
    print_table(&rows);
    println!();

    // The targets. The corosensei ratio is taken per round, then the median,
    // so that drift between rounds cancels.
    let per_round: Vec<f64> = samples[0]
        .iter()
        .zip(&samples[1])
        .map(|(f, c)| f / c)
        .collect();
    let vs_corosensei = quantile(&per_round, 0.5);
    let thread_factor = rows[2].ns / rows[0].ns;
    println!(
        "target: fibra switch <= 1.00x corosensei: {:.2}x (median of per-round ratios; {:.2}x from the medians) -> {}",
        vs_corosensei,
        rows[0].ns / rows[1].ns,
        verdict((vs_corosensei * 100.0).round() <= 100.0)
    );
    println!(
        "target: OS thread round trip >= 100x a fibra switch: {thread_factor:.0}x -> {}",
        verdict(thread_factor >= 100.0)
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// Prints the rows, each with its ratio to the first row.
fn print_table(rows: &[Row]) {
    let base = rows[0].ns;
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    println!(
        "{:<width$}  {:>12}  {:>19}  {:>14}  note",
        "what", "median ns/op", "quartiles", "x fibra switch"
    );
    for row in rows {
        let quartiles = format!("{} .. {}", fmt_ns(row.quartiles.0), fmt_ns(row.quartiles.1));
        let ratio = fmt_ratio(row.ns / base);
        println!(
            "{:<width$}  {:>12}  {:>19}  {:>14}  {}",
            row.name,
            fmt_ns(row.ns),
            quartiles,
            ratio,
            row.note
        );
    }
    println!();
    for row in &rows[1..] {
        println!(
            "{}: {} ns = {} a fibra switch",
            row.name,
            fmt_ns(row.ns),
            fmt_ratio(row.ns / base)
        );
    }
}

/// A ratio to two decimals when small, to whole units when large.
fn fmt_ratio(ratio: f64) -> String {
    if ratio < 10.0 {
        format!("{ratio:.2}x")
    } else {
        format!("{ratio:.0}x")
    }
}

/// Three significant digits, enough for noisy figures.
fn fmt_ns(ns: f64) -> String {
    if ns < 10.0 {
        format!("{ns:.2}")
    } else if ns < 100.0 {
        format!("{ns:.1}")
    } else {
        format!("{ns:.0}")
    }
}

/// The `q` quantile of `values` (linear interpolation).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// An iteration count for which `run` takes about `BATCH`.
fn calibrate(run: &mut dyn FnMut(u64) -> Duration) -> u64 {
    let mut n = 1u64;
    loop {
        let t = run(n);
        if t >= BATCH / 4 {
            let per_op = t.as_secs_f64() / n as f64;
            return ((BATCH.as_secs_f64() / per_op) as u64).max(1);
        }
        n *= 2;
    }
}

/// The "model name" line of /proc/cpuinfo, the number of CPUs this process
/// may use, and the load average (a busy shared machine shows there).
fn machine_description() -> String {
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
fn pin_process_to_one_cpu() -> usize {
    let allowed = current_affinity();
    let cpu = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, so within the set.
        .rfind(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })
        .expect("the process may run on no CPU");
    pin_current_thread(cpu);
    cpu
}

// ---------------------------------------------------------------------------
// OS-thread ping-pong over a futex word (as in benches/switch.rs).

/// Whose turn it is in the ping-pong, and the stop signal.
const A_TURN: u32 = 0;
const B_TURN: u32 = 1;
const STOP: u32 = 2;

/// Two OS threads on one CPU handing a turn back and forth through a futex
/// word. The creating thread is A; `new` pins it (and the spawned B) to one
/// CPU, and dropping the pair stops and joins B and restores A's affinity.
struct PingPong {
    state: Arc<AtomicU32>,
    peer: Option<JoinHandle<()>>,
    saved_affinity: libc::cpu_set_t,
}

impl PingPong {
    fn new() -> PingPong {
        let saved_affinity = current_affinity();
        let cpu = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE, so within the set.
            .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &saved_affinity) })
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

/// Restricts the calling thread to `cpu`.
fn pin_current_thread(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: callers pass a CPU found in a cpu_set_t, so below CPU_SETSIZE.
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

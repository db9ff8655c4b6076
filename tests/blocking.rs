//! The syscall-thread pool behind `fibra::blocking::unblock`: jobs run off
//! the workers while the worker keeps running other coroutines; panics come
//! back; the thread cap holds under a burst; the idle count stays exact
//! across jobs; with no room to start a thread the caller runs the job
//! itself (in a child process); idle threads do not spin and
//! exit when the idle timeout has passed, not before and (typically) not
//! more than 100 ms after, or at once when their runtime is dropped; a cancelled waiter goes back to waiting and
//! unwinds only after its job has returned, dropping the result itself; the
//! scoped variant lends the caller's data to the syscall thread.
//!
//! What a worker is doing is read from /proc (asleep in `epoll_wait`, how
//! often it has gone to sleep) rather than assumed after a fixed sleep.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use fibra::blocking::{BlockingStats, unblock};
use fibra::{Cancelled, Runtime};

const LIMIT: Duration = Duration::from_secs(30);

fn runtime(workers: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .build()
        .expect("runtime")
}

/// Polls `cond` (sleeping 1 ms between tries) for at most `LIMIT`.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn unblock_runs_the_job_on_a_syscall_thread_and_returns_its_value() {
    let rt = runtime(1);
    let (value, worker, job) = rt.block_on(|| {
        let worker = thread::current().name().map(str::to_owned);
        let (value, job) = unblock(|| (21 * 2, thread::current().name().map(str::to_owned)));
        (value, worker, job)
    });
    assert_eq!(value, 42);
    assert_eq!(worker.as_deref(), Some("fibra-worker-0"));
    assert_eq!(job.as_deref(), Some("fibra-worker-blocking"));
}

#[test]
fn unblock_on_a_plain_thread_runs_the_job_right_there() {
    let here = thread::current().id();
    assert!(unblock(move || thread::current().id() == here));
}

#[test]
fn worker_keeps_running_coroutines_while_a_job_blocks() {
    // The job blocks until a coroutine on the same (only) worker sends: if
    // the job ran on the worker, that coroutine could never run.
    let rt = runtime(1);
    let (tx, rx) = mpsc::channel::<u32>();
    let waiter =
        rt.spawn(move || unblock(move || rx.recv_timeout(LIMIT).expect("the other coroutine ran")));
    let sender = rt.spawn(move || {
        fibra::sleep(Duration::from_millis(20));
        tx.send(7).unwrap();
    });
    sender.join().unwrap();
    assert_eq!(waiter.join().unwrap(), 7);
}

#[test]
fn job_panic_continues_in_the_caller_and_the_thread_survives() {
    let rt = runtime(1);
    let result = rt.block_on(|| {
        catch_unwind(AssertUnwindSafe(|| {
            unblock(|| -> u8 { panic!("job failed") })
        }))
        .map_err(|p| p.downcast_ref::<&str>().map(|s| s.to_string()))
    });
    assert_eq!(result, Err(Some("job failed".to_string())));
    // The thread that ran the panicking job goes back to waiting for work...
    wait_for("the syscall thread to go idle", || {
        let stats = rt.blocking_stats();
        stats.threads == 1 && stats.idle == 1
    });
    // ...and runs the next job: no second thread is started.
    assert_eq!(rt.block_on(|| unblock(|| 5)), 5);
    assert_eq!(
        rt.blocking_stats().threads,
        1,
        "the same thread ran the next job"
    );
}

/// The tids of this process's threads whose name (as the kernel keeps it:
/// 15 bytes) starts with `prefix`.
fn threads_named(prefix: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.starts_with(prefix))
        })
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect()
}

/// x86_64 syscall number of `futex`, where a condvar wait sleeps.
const FUTEX: i64 = 202;

#[test]
fn a_thread_that_runs_job_after_job_is_counted_idle_once() {
    let rt = common::runtime(1, "idlecount");
    for round in 0..4 {
        assert_eq!(rt.block_on(move || unblock(move || round)), round);
        // Asleep on the pool's condvar: counted idle, and the only thread
        // (a job submitted while none is idle or polling starts another).
        wait_for("the syscall thread to sleep on the condvar", || {
            let pool = threads_named("idlecount-bl");
            pool.len() == 1 && common::asleep_in(pool[0], &[FUTEX])
        });
        assert_eq!(
            rt.blocking_stats(),
            BlockingStats {
                threads: 1,
                idle: 1,
                queued: 0
            },
            "after job {round}"
        );
    }
}

#[test]
fn dropping_the_runtime_ends_its_syscall_threads_before_their_idle_timeout() {
    // The default idle timeout (10 s) is far beyond this bound.
    const GONE_WITHIN: Duration = Duration::from_secs(3);
    let rt = common::runtime(1, "dropped");
    let jobs: Vec<_> = (0..4)
        .map(|i| rt.spawn(move || unblock(move || thread::sleep(Duration::from_millis(10 * i)))))
        .collect();
    for job in jobs {
        job.join().unwrap();
    }
    assert!(!threads_named("dropped-blocki").is_empty());
    drop(rt);
    let start = Instant::now();
    while !threads_named("dropped-blocki").is_empty() {
        assert!(
            start.elapsed() < GONE_WITHIN,
            "syscall threads of a dropped runtime still run after {GONE_WITHIN:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// How this file's child runs: killed, failing the test, after 20 s (it
/// takes well under a second).
const CHILD: common::ChildSetup = common::ChildSetup {
    timeout: Duration::from_secs(20),
    env: &[],
};

#[test]
fn unblock_runs_the_job_itself_when_no_syscall_thread_can_start() {
    const NAME: &str = "unblock_runs_the_job_itself_when_no_syscall_thread_can_start";
    if common::child_mode().as_deref() == Some("no-threads") {
        let rt = common::runtime(1, "nothreads");
        let (ran_on, value) = rt.block_on(|| {
            // No room for a thread's stack (2 MiB) any more.
            common::limit_address_space(common::address_space_in_use() + (1 << 20));
            unblock(|| (common::thread_name(), 42))
        });
        common::report(&format!(
            "ran_on={ran_on} value={value} threads={}",
            rt.blocking_stats().threads
        ));
        std::process::exit(0);
    }
    let run = CHILD.run(NAME, "no-threads");
    assert!(run.status.success(), "the child exits 0; {run}");
    assert_eq!(run.reported("value"), "42", "{run}");
    assert_eq!(
        run.reported("ran_on"),
        "nothreads-0",
        "the job ran on the caller's worker; {run}"
    );
    assert_eq!(run.reported("threads"), "0", "{run}");
}

#[test]
fn burst_of_jobs_never_exceeds_the_thread_cap() {
    const CAP: usize = 4;
    const JOBS: usize = 200;
    let rt = Runtime::builder()
        .workers(2)
        .max_blocking_threads(CAP)
        .build()
        .unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..JOBS)
        .map(|i| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            rt.spawn(move || {
                unblock(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(2));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                })
            })
        })
        .collect();
    let mut queued_seen = 0;
    for (i, handle) in handles.into_iter().enumerate() {
        queued_seen = queued_seen.max(rt.blocking_stats().queued);
        assert!(rt.blocking_stats().threads <= CAP);
        assert_eq!(handle.join().unwrap(), i);
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        CAP,
        "the burst used exactly the cap"
    );
    assert!(queued_seen > 0, "jobs beyond the cap queued");
    assert!(rt.blocking_stats().threads <= CAP);
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn idle_syscall_threads_exit_after_the_timeout_without_spinning() {
    const IDLE: Duration = Duration::from_millis(300);
    // How late the typical thread may exit: its wake from the condvar.
    const TYPICAL_LATE: Duration = Duration::from_millis(100);
    // How late any thread may exit on a loaded machine.
    const MOST_LATE: Duration = Duration::from_secs(2);
    let rt = Runtime::builder()
        .workers(1)
        .thread_name("idlepool")
        .blocking_idle_timeout(IDLE)
        .build()
        .unwrap();
    let ends = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let ends = Arc::clone(&ends);
            rt.spawn(move || {
                unblock(move || {
                    thread::sleep(Duration::from_millis(20));
                    ends.lock().unwrap().push(Instant::now());
                })
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let grown = rt.blocking_stats();
    assert!(grown.threads >= 2, "the pool grew under load: {grown:?}");
    let ends = ends.lock().unwrap().clone();
    // No thread can idle (and so exit) before the first job ended, and
    // every thread idles from its last job's end, which is no later than
    // the last job's.
    let first_end = *ends.iter().min().unwrap();
    let last_end = *ends.iter().max().unwrap();
    // While idle (before the timeout), the threads sleep: they use no CPU.
    let cpu_before = pool_cpu_time("idlepool-block");
    thread::sleep(Duration::from_millis(150));
    let cpu = pool_cpu_time("idlepool-block") - cpu_before;
    assert!(
        cpu <= Duration::from_millis(10),
        "idle syscall threads used {cpu:?} of CPU in 150 ms"
    );
    // Watch the thread count, noting when each thread is seen gone.
    let mut exits = Vec::new();
    let mut alive = grown.threads;
    let give_up = last_end + IDLE + MOST_LATE;
    while alive > 0 && Instant::now() < give_up {
        let now = rt.blocking_stats().threads;
        let seen = Instant::now();
        assert!(
            now == alive || seen >= first_end + IDLE,
            "{} of {} idle syscall threads exited {:?} after the first job ended, \
             before the idle timeout of {IDLE:?}",
            grown.threads - now,
            grown.threads,
            seen - first_end
        );
        exits.extend((now..alive).map(|_| seen - last_end));
        alive = now;
        thread::sleep(Duration::from_millis(1));
    }
    eprintln!(
        "{} idle syscall threads exited {exits:?} after the last job ended (timeout {IDLE:?})",
        grown.threads
    );
    assert_eq!(
        alive, 0,
        "{alive} of {} syscall threads still run {MOST_LATE:?} past the idle timeout of {IDLE:?}",
        grown.threads
    );
    let typical = median(exits);
    assert!(
        typical <= IDLE + TYPICAL_LATE,
        "the median syscall thread exited {typical:?} after the last job ended; \
         the idle timeout is {IDLE:?}"
    );
}

/// Records `(what, thread name)` events from several threads in order.
#[derive(Clone, Default)]
struct Events(Arc<std::sync::Mutex<Vec<(&'static str, String)>>>);

impl Events {
    fn log(&self, what: &'static str) {
        let thread = thread::current().name().unwrap_or("<unnamed>").to_string();
        self.0.lock().unwrap().push((what, thread));
    }

    fn seen(&self) -> Vec<(&'static str, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// Logs its label when dropped.
struct LogOnDrop(&'static str, Events);

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        self.1.log(self.0);
    }
}

#[test]
fn cancelled_waiter_unwinds_only_after_its_job_returns() {
    let rt = common::runtime(1, "cancelwait");
    let worker = common::worker_tids("cancelwait", 1)[0];
    let events = Events::default();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let waiter = {
        let events = events.clone();
        rt.spawn(move || {
            let _unwound = LogOnDrop("waiter unwound", events.clone());
            let _result = unblock(move || {
                events.log("job started");
                started_tx.send(()).unwrap();
                release_rx.recv_timeout(LIMIT).expect("released");
                events.log("job returns");
                LogOnDrop("result dropped", events)
            });
            unreachable!("a cancelled waiter does not get the result");
        })
    };
    started_rx.recv_timeout(LIMIT).expect("the job started");
    // The waiter has parked: its (only) worker sleeps in epoll_wait.
    wait_for("the worker to sleep while its coroutine waits", || {
        common::asleep_in(worker, common::EPOLL_WAITS)
    });
    let sleeps = common::voluntary_switches(worker);
    waiter.cancel();
    // The cancel wakes the worker, which resumes the waiter; the waiter
    // must go back to waiting for its job, and the worker to sleep (a
    // worker re-checks its inbox before every sleep).
    wait_for(
        "the worker to run the cancelled waiter and sleep again",
        || {
            common::voluntary_switches(worker) > sleeps
                && common::asleep_in(worker, common::EPOLL_WAITS)
        },
    );
    assert!(
        !waiter.is_finished(),
        "the waiter unwound before its job returned: {:?}",
        events.seen()
    );
    let blocking = "cancelwait-blocking".to_string();
    assert_eq!(events.seen(), [("job started", blocking.clone())]);
    release_tx.send(()).unwrap();
    let payload = waiter.join().unwrap_err();
    assert!(payload.downcast_ref::<Cancelled>().is_some());
    // The waiter takes the result before it unwinds, so the result is
    // dropped on the worker, inside the unwinding coroutine.
    let on_worker = "cancelwait-0".to_string();
    assert_eq!(
        events.seen(),
        [
            ("job started", blocking.clone()),
            ("job returns", blocking),
            ("result dropped", on_worker.clone()),
            ("waiter unwound", on_worker),
        ]
    );
}

/// User + system CPU time so far of this process's threads whose name
/// (as the kernel keeps it: 15 bytes) starts with `prefix`.
fn pool_cpu_time(prefix: &str) -> Duration {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        // After the name: utime and stime are the 12th and 13th fields, in
        // clock ticks (100 per second on Linux x86_64).
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    Duration::from_millis(ticks * 10)
}

#[test]
fn unblock_scoped_lends_the_callers_buffer_to_a_syscall_thread() {
    let rt = runtime(1);
    let (ran_elsewhere, filled) = rt.block_on(|| {
        let worker = thread::current().id();
        let mut buf = vec![0u8; 1 << 16];
        let ran_elsewhere = fibra::blocking::unblock_scoped(|| {
            for (i, byte) in buf.iter_mut().enumerate() {
                *byte = i as u8;
            }
            thread::current().id() != worker
        });
        let filled = buf.iter().enumerate().all(|(i, byte)| *byte == i as u8);
        (ran_elsewhere, filled)
    });
    assert!(ran_elsewhere, "the job ran on a syscall thread");
    assert!(filled, "the job wrote into the caller's buffer");
}

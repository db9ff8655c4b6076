//! The syscall-thread pool behind `fibra::blocking::unblock`: jobs run off
//! the workers while the worker keeps running other coroutines; panics come
//! back; the thread cap holds under a burst; idle threads exit and do not
//! spin; a cancelled waiter unwinds only after its job has returned; the
//! scoped variant lends the caller's data to the syscall thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use fibra::blocking::unblock;
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

#[test]
fn idle_syscall_threads_exit_after_the_timeout_without_spinning() {
    let rt = Runtime::builder()
        .workers(1)
        .thread_name("idlepool")
        .blocking_idle_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| rt.spawn(|| unblock(|| thread::sleep(Duration::from_millis(20)))))
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let grown = rt.blocking_stats();
    assert!(grown.threads >= 2, "the pool grew under load: {grown:?}");
    // While idle (before the timeout), the threads sleep: they use no CPU.
    let cpu_before = pool_cpu_time("idlepool-block");
    thread::sleep(Duration::from_millis(150));
    let cpu = pool_cpu_time("idlepool-block") - cpu_before;
    assert!(
        cpu <= Duration::from_millis(10),
        "idle syscall threads used {cpu:?} of CPU in 150 ms"
    );
    wait_for("the idle syscall threads to exit", || {
        rt.blocking_stats().threads == 0
    });
}

#[test]
fn cancelled_waiter_unwinds_only_after_its_job_returns() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let rt = runtime(1);
    let results_dropped = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let dropped = Arc::clone(&results_dropped);
    let waiter = rt.spawn(move || {
        let _result = unblock(move || {
            started_tx.send(()).unwrap();
            release_rx.recv_timeout(LIMIT).expect("released");
            Counted(dropped)
        });
        unreachable!("a cancelled waiter does not get the result");
    });
    started_rx.recv_timeout(LIMIT).expect("the job started");
    waiter.cancel();
    thread::sleep(Duration::from_millis(50));
    assert!(
        !waiter.is_finished(),
        "the waiter unwound before its job returned"
    );
    assert_eq!(results_dropped.load(Ordering::SeqCst), 0);
    release_tx.send(()).unwrap();
    let payload = waiter.join().unwrap_err();
    assert!(payload.downcast_ref::<Cancelled>().is_some());
    // Dropped with the last reference to the result cell, which the syscall
    // thread lets go of just after it woke the waiter.
    wait_for("the job's result to be dropped", || {
        results_dropped.load(Ordering::SeqCst) == 1
    });
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

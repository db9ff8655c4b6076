//! `fibra::prefork` supervision: a killed worker is replaced while service
//! goes on, a worker that crashes at start-up is backed off, a hung worker
//! (a coroutine spinning without parking) is killed by the heartbeat
//! timeout and replaced, and workers die with their master. Each master is
//! this test binary re-run as a child process (tests/prefork_common).

mod common;
mod fork_common;
mod prefork_common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fibra::prefork::Sharing;
use fork_common::{Ended, exited_within, pidfd_open};
use prefork_common::{LOG_WAIT, MasterProcess, RoleConfig, pid_in, stop};

/// Client threads sending `who` requests back to back until stopped,
/// counting answers, failures and the pids that answered.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<Vec<i32>>>,
}

impl Load {
    fn start(master: &MasterProcess, clients: usize) -> Load {
        let addr = master.addr.unwrap();
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                thread::spawn(move || {
                    let mut pids = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match prefork_common::request(addr, "who") {
                            Ok(answer) if answer.split_whitespace().count() == 3 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                pids.push(
                                    answer.split_whitespace().nth(2).unwrap().parse().unwrap(),
                                );
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    pids
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Waits until `n` more requests have been answered.
    fn wait_answers(&self, n: usize) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        common::wait_for("answers under load", LOG_WAIT, || {
            self.ok.load(Ordering::Relaxed) >= target
        });
    }

    /// Stops the clients; (answered, failed, every pid that answered).
    fn finish(self) -> (usize, usize, Vec<i32>) {
        self.stop.store(true, Ordering::Relaxed);
        let pids = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            pids,
        )
    }
}

#[test]
fn a_worker_killed_under_load_is_replaced_and_service_goes_on() {
    const NAME: &str = "a_worker_killed_under_load_is_replaced_and_service_goes_on";
    // SO_REUSEPORT: the replacement has its own share of connections, so
    // the test can see it serve. A worker that ran 10 ms is no start-up
    // failure: restarted at once.
    let Some(master) = prefork_common::start(
        NAME,
        RoleConfig {
            sharing: Sharing::ReusePort,
            backoff_ms: (50, 400, 10),
            ..RoleConfig::default()
        },
    ) else {
        return;
    };
    let victim = pid_in(&master.wait_log("worker 0 (pid", LOG_WAIT).text);
    master.wait_log("worker 1 (pid", LOG_WAIT);
    const CLIENTS: usize = 4;
    let load = Load::start(&master, CLIENTS);
    load.wait_answers(50);
    // SAFETY: kill(2) of a worker process.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    let died = master.wait_log(
        &format!("worker 0 (pid {victim}, generation 0) was killed by signal 9 (SIGKILL)"),
        LOG_WAIT,
    );
    let replacement = pid_in(
        &master
            .wait_log_after("worker 0 (pid", died.index + 1, LOG_WAIT)
            .text,
    );
    assert_ne!(replacement, victim);
    load.wait_answers(200);
    let (answered, failed, pids) = load.finish();
    // Only connections the dead worker held can fail: one per client at
    // most (each has one connection at a time).
    assert!(
        failed <= CLIENTS,
        "{failed} failed requests, {answered} answered"
    );
    assert!(
        pids.contains(&replacement),
        "the replacement {replacement} answered none of {answered} requests"
    );
    stop(master);
}

#[test]
fn a_worker_crashing_at_start_up_is_restarted_with_exponential_backoff() {
    const NAME: &str = "a_worker_crashing_at_start_up_is_restarted_with_exponential_backoff";
    let Some(master) = prefork_common::start(
        NAME,
        RoleConfig {
            workers: 1,
            crash_from: Some(0),
            backoff_ms: (50, 400, 1_000),
            ..RoleConfig::default()
        },
    ) else {
        return;
    };
    // 50 + 100 + 200 + 400 + 400 ms of backoff before the sixth restart.
    let first = master.wait_log("restarting in 400ms", LOG_WAIT);
    master.wait_log_after("restarting in 400ms", first.index + 1, LOG_WAIT);
    let logs = master.logs();
    let delays: Vec<&str> = logs
        .iter()
        .filter_map(|l| l.text.split("restarting in ").nth(1))
        .collect();
    assert!(delays.len() >= 5, "{}", master.output());
    for (i, delay) in delays.iter().enumerate() {
        let expected = ["50ms", "100ms", "200ms"]
            .get(i)
            .copied()
            .unwrap_or("400ms");
        assert_eq!(*delay, expected, "restart {i}: {}", master.output());
    }
    // Each start comes no earlier than its announced delay after the exit
    // before it (the lower bound is what a backoff is).
    for (i, exit) in logs.iter().enumerate() {
        let Some(delay) = exit.text.split("restarting in ").nth(1) else {
            continue;
        };
        let Some(start) = logs[i..].iter().find(|l| l.text.ends_with(") started")) else {
            continue;
        };
        let ms: u64 = delay.trim_end_matches("ms").parse().unwrap();
        let gap = start.at.duration_since(exit.at);
        assert!(
            gap >= Duration::from_millis(ms * 9 / 10),
            "restarted {gap:?} after an exit that announced {delay}"
        );
    }
    assert!(
        logs.iter().all(|l| !l.text.contains("restarting now")),
        "a start-up crash is never restarted at once: {}",
        master.output()
    );
    stop(master);
}

#[test]
fn a_hung_worker_is_killed_by_the_heartbeat_timeout_and_replaced() {
    const NAME: &str = "a_hung_worker_is_killed_by_the_heartbeat_timeout_and_replaced";
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let Some(master) = prefork_common::start(
        NAME,
        RoleConfig {
            workers: 1,
            heartbeat_ms: (50, TIMEOUT.as_millis() as u64),
            ..RoleConfig::default()
        },
    ) else {
        return;
    };
    let hung = pid_in(&master.wait_log("worker 0 (pid", LOG_WAIT).text);
    // An idle worker keeps beating: no kill over twice the timeout.
    assert!(
        !master.log_within("heartbeat", 2 * TIMEOUT),
        "an idle worker was taken for hung: {}",
        master.output()
    );
    let answer = prefork_common::request(master.addr.unwrap(), "who").unwrap();
    assert_eq!(
        answer.split_whitespace().nth(2),
        Some(hung.to_string().as_str())
    );
    // Now a coroutine spins without parking: the heartbeat stops.
    let spin = std::net::TcpStream::connect(master.addr.unwrap()).unwrap();
    (&spin).write_all(b"spin\n").unwrap();
    let spun_at = Instant::now();
    let killed = master.wait_log(
        &format!("worker 0 (pid {hung}, generation 0) sent no heartbeat for"),
        LOG_WAIT,
    );
    assert!(
        killed.at.duration_since(spun_at) >= TIMEOUT - Duration::from_millis(60),
        "killed {:?} after the spin began, before the {TIMEOUT:?} timeout",
        killed.at.duration_since(spun_at)
    );
    let reaped = master.wait_log(
        &format!("worker 0 (pid {hung}, generation 0) was killed by signal 9"),
        LOG_WAIT,
    );
    let replacement = pid_in(
        &master
            .wait_log_after("worker 0 (pid", reaped.index + 1, LOG_WAIT)
            .text,
    );
    let answer = prefork_common::request(master.addr.unwrap(), "who").unwrap();
    assert_eq!(
        answer.split_whitespace().nth(2),
        Some(replacement.to_string().as_str())
    );
    stop(master);
}

#[test]
fn workers_die_with_their_master() {
    const NAME: &str = "workers_die_with_their_master";
    let Some(mut master) = prefork_common::start(NAME, RoleConfig::default()) else {
        return;
    };
    master.wait_log("worker 1 (pid", LOG_WAIT);
    let workers: Vec<_> = master
        .started_pids()
        .into_iter()
        .map(|pid| pidfd_open(pid).expect("a running worker"))
        .collect();
    master.signal(libc::SIGKILL);
    assert_eq!(master.wait_exit(LOG_WAIT), Ended::Signaled(libc::SIGKILL));
    for pidfd in workers {
        assert!(
            exited_within(&pidfd, LOG_WAIT),
            "a worker outlived its master by {LOG_WAIT:?}"
        );
    }
}

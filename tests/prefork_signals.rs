//! `fibra::prefork` signals: `SIGTERM` lets a slow in-flight request
//! finish, `SIGQUIT` stops at once, `SIGHUP` under a continuous request loop
//! refuses no connection (both ways of sharing the port), `SIGTTIN` /
//! `SIGTTOU` add and retire a worker. Each master is this test binary
//! re-run as a child process (tests/prefork_common), on 127.0.0.1.

mod common;
mod fork_common;
mod prefork_common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fibra::prefork::Sharing;
use fork_common::{Ended, exited_within, pidfd_open};
use prefork_common::{LOG_WAIT, MasterProcess, RoleConfig, pid_in};

/// Sends `slow MS` and returns the connection once the worker has said
/// `started` (the request is in flight in a worker).
fn slow_request(master: &MasterProcess, ms: u64) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(master.addr.unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (&stream)
        .write_all(format!("slow {ms}\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    reader
}

#[test]
fn sigterm_lets_a_slow_in_flight_request_finish() {
    const NAME: &str = "sigterm_lets_a_slow_in_flight_request_finish";
    let Some(mut master) = prefork_common::start(NAME, RoleConfig::default()) else {
        return;
    };
    let mut slow = slow_request(&master, 700);
    let sent = Instant::now();
    master.signal(libc::SIGTERM);
    master.wait_log("SIGTERM: stopping gracefully", LOG_WAIT);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut slow, &mut rest).unwrap();
    assert!(
        rest.starts_with("done "),
        "the slow request was cut: {rest:?}"
    );
    assert!(sent.elapsed() >= Duration::from_millis(600));
    let stopped = master.wait_log("stopped", LOG_WAIT);
    assert!(
        stopped.at >= sent + Duration::from_millis(600),
        "the master stopped before the slow request was done"
    );
    assert_eq!(
        master.wait_exit(LOG_WAIT),
        Ended::Exited(0),
        "{}",
        master.output()
    );
    // Both workers exited by themselves, none was killed.
    let exits = master
        .logs()
        .iter()
        .filter(|l| l.text.contains("exited with status 0"))
        .count();
    assert_eq!(exits, 2, "{}", master.output());
}

#[test]
fn sigquit_stops_at_once() {
    const NAME: &str = "sigquit_stops_at_once";
    let Some(mut master) = prefork_common::start(NAME, RoleConfig::default()) else {
        return;
    };
    let mut slow = slow_request(&master, 30_000);
    let sent = Instant::now();
    master.signal(libc::SIGQUIT);
    assert_eq!(
        master.wait_exit(LOG_WAIT),
        Ended::Exited(0),
        "{}",
        master.output()
    );
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut slow, &mut rest);
    assert_eq!(rest, "", "the request was not cut");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "SIGQUIT took {:?}",
        sent.elapsed()
    );
    // The log reader may still be draining the exited master's pipe.
    master.wait_log("SIGQUIT: stopping now", LOG_WAIT);
    master.wait_log("was killed by signal 9", LOG_WAIT);
}

fn sighup_refuses_nothing(name: &str, sharing: Sharing) {
    let Some(master) = prefork_common::start(
        name,
        RoleConfig {
            sharing,
            ..RoleConfig::default()
        },
    ) else {
        return;
    };
    master.wait_log("worker 1 (pid", LOG_WAIT);
    let addr = master.addr.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            thread::spawn(move || {
                let (mut answers, mut failures) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    // A quick request, then one that is in flight for
                    // 20 ms: a worker stopped mid-request would cut it.
                    match prefork_common::request(addr, "who") {
                        Ok(answer) if answer.split_whitespace().count() == 3 => {
                            answers.push(answer.split_whitespace().nth(1).unwrap().to_string());
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(answer) => failures.push(format!("answer {answer:?}")),
                        Err(e) => failures.push(e.to_string()),
                    }
                    match prefork_common::request(addr, "slow 20") {
                        Ok(answer) if answer.starts_with("started\ndone ") => {}
                        Ok(answer) => failures.push(format!("answer {answer:?}")),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                (answers, failures)
            })
        })
        .collect();
    let wait_answers = |n: usize| {
        let target = answered.load(Ordering::Relaxed) + n;
        common::wait_for("answers", LOG_WAIT, || {
            answered.load(Ordering::Relaxed) >= target
        });
    };
    wait_answers(20);
    master.signal(libc::SIGHUP);
    let first = master.wait_log("generation 0) exited with status 0", LOG_WAIT);
    master.wait_log_after(
        "generation 0) exited with status 0",
        first.index + 1,
        LOG_WAIT,
    );
    wait_answers(100);
    stop.store(true, Ordering::Relaxed);
    let (mut answers, mut failures) = (Vec::new(), Vec::new());
    for client in clients {
        let (a, f) = client.join().unwrap();
        answers.extend(a);
        failures.extend(f);
    }
    assert_eq!(failures, Vec::<String>::new(), "{}", master.output());
    assert!(
        answers.iter().any(|g| g == "0"),
        "no answer from generation 0"
    );
    assert!(
        answers.iter().any(|g| g == "1"),
        "no answer from generation 1"
    );
    assert_eq!(answers.last().map(String::as_str), Some("1"));
    let mut master = master;
    master.signal(libc::SIGTERM);
    master.wait_log("stopped", LOG_WAIT);
    assert_eq!(master.wait_exit(LOG_WAIT), Ended::Exited(0));
}

#[test]
fn sighup_under_a_request_loop_refuses_no_connection_on_a_shared_listener() {
    sighup_refuses_nothing(
        "sighup_under_a_request_loop_refuses_no_connection_on_a_shared_listener",
        Sharing::Exclusive,
    );
}

#[test]
fn sighup_under_a_request_loop_refuses_no_connection_on_reuseport_sockets() {
    sighup_refuses_nothing(
        "sighup_under_a_request_loop_refuses_no_connection_on_reuseport_sockets",
        Sharing::ReusePort,
    );
}

#[test]
fn a_reload_whose_new_workers_fail_keeps_the_old_ones_serving() {
    const NAME: &str = "a_reload_whose_new_workers_fail_keeps_the_old_ones_serving";
    let Some(mut master) = prefork_common::start(
        NAME,
        RoleConfig {
            crash_from: Some(1),
            ..RoleConfig::default()
        },
    ) else {
        return;
    };
    master.wait_log("worker 1 (pid", LOG_WAIT);
    master.signal(libc::SIGHUP);
    // Both new workers fail, and fail again after their backoff.
    let first = master.wait_log("generation 1) exited with status 1", LOG_WAIT);
    for _ in 0..3 {
        master.wait_log_after(
            "generation 1) exited with status 1",
            first.index + 1,
            LOG_WAIT,
        );
    }
    for _ in 0..50 {
        let answer = master.request("who").expect("the old generation serves");
        assert_eq!(answer.split_whitespace().nth(1), Some("0"), "{answer:?}");
    }
    assert!(
        !master.output().contains("generation 0) stopping"),
        "an old worker was stopped though no new one was ready: {}",
        master.output()
    );
    master.signal(libc::SIGTERM);
    master.wait_log("stopped", LOG_WAIT);
    assert_eq!(master.wait_exit(LOG_WAIT), Ended::Exited(0));
}

fn ttin_ttou(name: &str, sharing: Sharing) {
    let Some(mut master) = prefork_common::start(
        name,
        RoleConfig {
            workers: 1,
            sharing,
            ..RoleConfig::default()
        },
    ) else {
        return;
    };
    master.wait_log("worker 0 (pid", LOG_WAIT);
    master.signal(libc::SIGTTIN);
    master.wait_log("SIGTTIN: 2 workers", LOG_WAIT);
    let added = pid_in(&master.wait_log("worker 1 (pid", LOG_WAIT).text);
    let added_fd = pidfd_open(added).expect("the added worker runs");
    // The added worker takes connections (on its own socket with
    // SO_REUSEPORT; on the shared one when the first is busy).
    if sharing == Sharing::ReusePort {
        let answered_by_added = (0..200).any(|_| {
            let answer = master.request("who").unwrap();
            answer.split_whitespace().nth(2) == Some(added.to_string().as_str())
        });
        assert!(answered_by_added, "{}", master.output());
    }
    master.signal(libc::SIGTTOU);
    master.wait_log("SIGTTOU: 1 workers", LOG_WAIT);
    master.wait_log(
        &format!("worker 1 (pid {added}, generation 0) exited with status 0"),
        LOG_WAIT,
    );
    assert!(exited_within(&added_fd, Duration::ZERO));
    for _ in 0..50 {
        let answer = master.request("who").expect("service goes on");
        assert!(answer.starts_with("0 0 "), "{answer:?}");
    }
    master.signal(libc::SIGTERM);
    master.wait_log("stopped", LOG_WAIT);
    assert_eq!(master.wait_exit(LOG_WAIT), Ended::Exited(0));
}

#[test]
fn sigttin_adds_a_worker_and_sigttou_retires_it() {
    ttin_ttou(
        "sigttin_adds_a_worker_and_sigttou_retires_it",
        Sharing::Exclusive,
    );
}

#[test]
fn sigttin_and_sigttou_with_reuseport_sockets() {
    ttin_ttou(
        "sigttin_and_sigttou_with_reuseport_sockets",
        Sharing::ReusePort,
    );
}

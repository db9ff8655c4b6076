//! `fibra::prefork` serving: worker processes answer on a shared listener
//! and on `SO_REUSEPORT` sockets, on a Unix socket, through the
//! master↔worker channel, pinned to CPUs when asked; and a master refuses
//! to run beside a fibra runtime. Each master is this test binary re-run
//! as a child process (tests/prefork_common), on 127.0.0.1.

mod common;
mod fork_common;
mod prefork_common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::TempDir;
use fibra::prefork::{Prefork, Sharing};
use prefork_common::{LOG_WAIT, MasterProcess, RoleConfig, stop};

/// `who` answers, as (index, generation, pid).
fn who(master: &MasterProcess) -> (usize, u64, i32) {
    let answer = master.request("who").expect("who");
    let fields: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "answer {answer:?}");
    (
        fields[0].parse().unwrap(),
        fields[1].parse().unwrap(),
        fields[2].parse().unwrap(),
    )
}

fn serves_with(name: &str, sharing: Sharing) {
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
    let started: BTreeSet<i32> = master.started_pids().into_iter().collect();
    assert_eq!(started.len(), 2, "{}", master.output());
    let mut indexes = BTreeSet::new();
    for _ in 0..200 {
        let (index, generation, pid) = who(&master);
        assert!(started.contains(&pid), "answered by {pid}, not a worker");
        assert_eq!(generation, 0);
        indexes.insert(index);
    }
    if sharing == Sharing::ReusePort {
        // The kernel hashes each connection's 4-tuple: 200 random source
        // ports all on one of two sockets has odds of 2^-199.
        assert_eq!(indexes, BTreeSet::from([0, 1]), "{}", master.output());
    } else {
        assert!(indexes.iter().all(|&i| i < 2));
    }
    stop(master);
}

#[test]
fn workers_serve_on_one_shared_listener() {
    serves_with("workers_serve_on_one_shared_listener", Sharing::Exclusive);
}

#[test]
fn workers_serve_on_reuseport_sockets_and_both_get_connections() {
    serves_with(
        "workers_serve_on_reuseport_sockets_and_both_get_connections",
        Sharing::ReusePort,
    );
}

#[test]
fn a_unix_listener_is_served_and_removed_at_the_end() {
    const NAME: &str = "a_unix_listener_is_served_and_removed_at_the_end";
    let dir = TempDir::new();
    let path = dir.join("prefork.sock");
    let Some(master) = prefork_common::start(
        NAME,
        RoleConfig {
            unix: Some(path.to_string_lossy().into_owned()),
            ..RoleConfig::default()
        },
    ) else {
        return;
    };
    master.wait_log("worker 1 (pid", LOG_WAIT);
    let mut stream = UnixStream::connect(&path).expect("connect to the unix listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"who\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.split_whitespace().count(), 3, "answer {answer:?}");
    stop(master);
    assert!(!path.exists(), "the master removes its socket file");
}

#[test]
fn the_channel_carries_messages_between_a_worker_and_the_master() {
    const NAME: &str = "the_channel_carries_messages_between_a_worker_and_the_master";
    let Some(master) = prefork_common::start(NAME, RoleConfig::default()) else {
        return;
    };
    for round in 0..5 {
        let answer = master.request(&format!("ask ping{round}")).unwrap();
        let index: usize = answer
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or(99);
        assert_eq!(
            answer,
            format!("master answers ping{round} to worker {index}\n")
        );
        assert!(index < 2);
    }
    stop(master);
}

#[test]
fn workers_are_pinned_to_one_cpu_each_when_asked() {
    const NAME: &str = "workers_are_pinned_to_one_cpu_each_when_asked";
    let cpus = prefork_common::allowed_cpus();
    let Some(master) = prefork_common::start(
        NAME,
        RoleConfig {
            pin: true,
            ..RoleConfig::default()
        },
    ) else {
        return;
    };
    for _ in 0..20 {
        let answer = master.request("cpus").unwrap();
        let (index, list) = answer.trim_end().split_once(' ').unwrap();
        let index: usize = index.parse().unwrap();
        assert_eq!(list, format!("{:?}", [cpus[index % cpus.len()]]));
    }
    stop(master);
}

#[test]
fn a_master_refuses_to_run_beside_a_fibra_runtime() {
    let runtime = fibra::Runtime::builder().workers(1).build().unwrap();
    let error = Prefork::new()
        .workers(1)
        .tcp("127.0.0.1:0")
        .run(|_| Ok(()))
        .expect_err("a runtime runs in this process");
    let message = error.to_string();
    assert!(
        message.contains("runtime") && message.contains("master"),
        "{message}"
    );
    drop(runtime);
}

#[test]
fn a_builder_without_listeners_or_with_a_bad_address_says_so() {
    let error = Prefork::new().bind().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("no listener"), "{error}");
    let error = Prefork::new().tcp("not an address").bind().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
}

/// Voluntary context switches of every thread of process `pid` (each
/// sleep in `epoll_wait` that ends is one).
fn wakeups(pid: i32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status =
            std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap());
    }
    total
}

#[test]
fn a_connection_wakes_one_idle_worker_not_all_of_them() {
    const NAME: &str = "a_connection_wakes_one_idle_worker_not_all_of_them";
    const WORKERS: usize = 4;
    const REQUESTS: u64 = 200;
    let Some(master) = prefork_common::start(
        NAME,
        RoleConfig {
            workers: WORKERS,
            heartbeat_ms: (60_000, 120_000),
            ..RoleConfig::default()
        },
    ) else {
        return;
    };
    master.wait_log("worker 3 (pid", LOG_WAIT);
    let pids = master.started_pids();
    // Every worker has parked its acceptor (registered its listener).
    for _ in 0..50 {
        who(&master);
    }
    let before: u64 = pids.iter().map(|&p| wakeups(p)).sum();
    for _ in 0..REQUESTS {
        who(&master);
    }
    let after: u64 = pids.iter().map(|&p| wakeups(p)).sum();
    let per_request = (after - before) as f64 / REQUESTS as f64;
    eprintln!("wakeups per request, {WORKERS} workers: {per_request:.2}");
    // The serving worker wakes once or twice (the connection, then maybe
    // its request); with a herd the 3 idle workers wake too (measured
    // here: 1.6-1.7 with EPOLLEXCLUSIVE, 4.5 without).
    assert!(
        per_request < 3.0,
        "{per_request:.2} worker wakeups per connection: a thundering herd"
    );
    stop(master);
}

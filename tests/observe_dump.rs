//! `Runtime::dump()`: named parked coroutines with their park sites, from a
//! thread and from a coroutine, and a worker that cannot answer.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::wait_for;
use fibra::observe::{CoroutineState, ParkReason};
use fibra::{Builder, Runtime};

const PARKED: usize = 1000;

/// Where the dump must find the parked coroutines.
#[inline(never)]
fn wait_in_dump_test(release: &AtomicBool) {
    while !release.load(Ordering::Acquire) {
        fibra::park();
    }
}

#[test]
fn dump_lists_named_parked_coroutines_and_their_park_site() {
    let rt = Runtime::builder().workers(2).build().expect("runtime");
    let release = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..PARKED)
        .map(|i| {
            let release = Arc::clone(&release);
            Builder::new()
                .name(format!("parked-{i}"))
                .spawn_on(&rt, move || wait_in_dump_test(&release))
                .expect("spawn")
        })
        .collect();
    wait_for("all park", Duration::from_secs(30), || {
        rt.metrics().parked as usize == PARKED
    });

    let dump = rt.dump();
    let parked: Vec<_> = dump
        .coroutines()
        .iter()
        .filter(|c| c.name().is_some_and(|n| n.starts_with("parked-")))
        .collect();
    let names: HashSet<&str> = parked.iter().filter_map(|c| c.name()).collect();
    assert_eq!(names.len(), PARKED, "every named coroutine is listed once");
    for c in &parked {
        assert!(
            matches!(
                c.state(),
                CoroutineState::Parked {
                    reason: ParkReason::Park,
                    ..
                }
            ),
            "{:?} {}",
            c.name(),
            c.state()
        );
        let stack = c.stack().expect("a parked coroutine's stack");
        let site = stack.site().expect("a park site");
        assert!(
            site.function.ends_with("wait_in_dump_test"),
            "site {site} of {:?}",
            c.name()
        );
    }
    assert!(dump.unanswered_workers().is_empty());
    let text = dump.to_string();
    assert!(text.contains("1000 parked (park)"), "{text}");
    assert!(text.contains("observe_dump::wait_in_dump_test"), "{text}");
    let full = format!("{dump:#}");
    assert!(full.contains("'parked-999': parked (park)"), "{full}");

    // From a coroutine too (the dump then waits on a syscall thread, so
    // that this coroutine's worker can answer).
    let from_inside = rt.block_on(fibra::dump);
    let listed = from_inside
        .coroutines()
        .iter()
        .filter(|c| {
            c.stack().is_some_and(|s| {
                s.site()
                    .is_some_and(|f| f.function.ends_with("wait_in_dump_test"))
            })
        })
        .count();
    assert_eq!(listed, PARKED);

    release.store(true, Ordering::Release);
    for handle in &handles {
        handle.coroutine().unpark();
    }
    for handle in handles {
        handle.join().expect("join");
    }
}

#[test]
fn dump_lists_a_held_workers_coroutines_without_waiting_for_it() {
    let rt = Runtime::builder()
        .workers(1)
        .stall_threshold(None)
        .build()
        .expect("runtime");
    let parked: Vec<_> = (0..10)
        .map(|i| {
            Builder::new()
                .name(format!("quiet-{i}"))
                .spawn_on(&rt, fibra::park)
                .expect("spawn")
        })
        .collect();
    wait_for("all park", Duration::from_secs(20), || {
        rt.metrics().parked == 10
    });
    let holding = Arc::new(AtomicBool::new(false));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let flag = Arc::clone(&holding);
    let holder = Builder::new()
        .name("holder".into())
        .spawn_on(&rt, move || {
            flag.store(true, Ordering::Release);
            release_rx.recv().expect("release");
        })
        .expect("spawn");
    wait_for("the holder runs", Duration::from_secs(20), || {
        holding.load(Ordering::Acquire)
    });

    let dump = rt.dump();
    assert_eq!(dump.unanswered_workers(), &[0]);
    let holder_info = dump
        .coroutines()
        .iter()
        .find(|c| c.name() == Some("holder"))
        .expect("the holder is listed");
    assert_eq!(holder_info.state(), CoroutineState::Running);
    let quiet = dump
        .coroutines()
        .iter()
        .filter(|c| c.name().is_some_and(|n| n.starts_with("quiet-")))
        .inspect(|c| assert!(c.stack().is_none(), "no backtrace without the worker"))
        .count();
    assert_eq!(quiet, 10);
    assert!(
        dump.to_string().contains("worker 0 did not answer"),
        "{dump}"
    );

    release_tx.send(()).unwrap();
    holder.join().expect("holder");
    // The late request is not answered twice, and the next dump works.
    let again = rt.dump();
    assert!(again.unanswered_workers().is_empty());
    assert_eq!(
        again
            .coroutines()
            .iter()
            .filter(|c| c.stack().is_some())
            .count(),
        10
    );
    for handle in &parked {
        handle.coroutine().unpark();
    }
    for handle in parked {
        handle.join().expect("join");
    }
}

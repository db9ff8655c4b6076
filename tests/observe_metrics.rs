//! `Runtime::metrics()`: the coroutine counts of a known population, frozen
//! by one coroutine that holds the only worker (a std channel receive), so
//! that nothing changes while they are read.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{pair, wait_for};
use fibra::Runtime;
use fibra::observe::ParkedBy;

const PARKED: usize = 20;
const RUNNABLE: usize = 7;
const NOT_STARTED: usize = 5;

#[test]
fn metrics_count_a_known_population_exactly() {
    let rt = Runtime::builder()
        .workers(1)
        .stall_threshold(None)
        .build()
        .expect("runtime");
    // Parked in fibra::park: PARKED stay so, RUNNABLE are woken later.
    let parkers: Vec<_> = (0..PARKED + RUNNABLE)
        .map(|_| {
            rt.spawn(|| {
                fibra::park();
            })
        })
        .collect();
    // One of each other reason.
    let sleeper = rt.spawn(|| fibra::sleep(Duration::from_secs(3600)));
    let (job_tx, job_rx) = mpsc::channel::<()>();
    let blocked = rt.spawn(move || fibra::blocking::unblock(move || job_rx.recv()));
    let (mut near, far) = pair();
    let reader = rt.spawn(move || {
        let mut byte = [0u8; 1];
        far.set_read_timeout(None).unwrap();
        let _ = (&far).read(&mut byte);
    });
    let target = parkers[0].coroutine();
    let joiner = rt.spawn(move || {
        // Joins a coroutine that stays parked until the end.
        let _ = fibra::spawn(move || fibra::park_timeout(Duration::from_secs(3600))).join();
        drop(target);
    });
    let others = 5; // sleeper, blocked, reader, joiner and the one it joins
    wait_for("everyone parks", Duration::from_secs(20), || {
        rt.metrics().parked as usize == PARKED + RUNNABLE + others
    });

    // Hold the worker, then wake RUNNABLE parkers and spawn NOT_STARTED.
    let holding = Arc::new(AtomicBool::new(false));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let flag = Arc::clone(&holding);
    let holder = rt.spawn(move || {
        flag.store(true, Ordering::Release);
        release_rx.recv().expect("release");
    });
    wait_for("the holder runs", Duration::from_secs(20), || {
        holding.load(Ordering::Acquire)
    });
    for handle in &parkers[PARKED..] {
        handle.coroutine().unpark();
    }
    let fresh: Vec<_> = (0..NOT_STARTED).map(|_| rt.spawn(|| ())).collect();

    let m = rt.metrics();
    assert_eq!(
        m.parked_by,
        ParkedBy {
            io: 1,
            timer: 1,
            join: 1,
            sync: 0,
            park: PARKED as u64 + 1,
            blocking: 1,
        },
        "{m}"
    );
    assert_eq!(m.parked as usize, PARKED + others, "{m}");
    assert_eq!(m.runnable as usize, RUNNABLE, "{m}");
    assert_eq!(m.not_started as usize, NOT_STARTED, "{m}");
    assert_eq!(m.running, 1, "{m}");
    assert_eq!(
        m.alive as usize,
        PARKED + RUNNABLE + others + 1 + NOT_STARTED,
        "{m}"
    );
    assert_eq!(m.workers, 1);
    assert!(m.per_worker[0].running, "{m}");
    assert!(
        m.per_worker[0].switches >= (PARKED + RUNNABLE + others + 1) as u64,
        "{m}"
    );
    assert_eq!(m.blocking.threads - m.blocking.idle, 1, "{m}");
    let text = m.to_string();
    assert!(text.contains(&format!("{RUNNABLE} runnable")), "{text}");

    // Let everything finish; the counts return to zero.
    release_tx.send(()).unwrap();
    job_tx.send(()).unwrap();
    near.set_nodelay(true).unwrap();
    std::io::Write::write_all(&mut near, b"x").unwrap();
    for handle in &parkers[..PARKED] {
        handle.coroutine().unpark();
    }
    sleeper.cancel();
    joiner.cancel();
    for handle in parkers {
        handle.join().expect("parker");
    }
    for handle in fresh {
        handle.join().expect("fresh");
    }
    holder.join().expect("holder");
    blocked.join().expect("blocked").expect("job");
    reader.join().expect("reader");
    let _ = sleeper.join();
    let _ = joiner.join();
    wait_for("the joined coroutine ends", Duration::from_secs(20), || {
        rt.metrics().alive == 1
    });
    let m = rt.metrics();
    assert_eq!(m.parked_by.join, 0, "{m}");
    assert_eq!(m.parked_by.park, 1, "the coroutine the joiner joined: {m}");
    assert_eq!(m.runnable + m.running + m.not_started, 0, "{m}");
}

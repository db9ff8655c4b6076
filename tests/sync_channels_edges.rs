//! Edges of `fibra::sync`'s channels that the channel tests do not reach
//! (found by cargo-mutants over `channel.rs`, `mpsc`, `mpmc` and `select`):
//! the handles and `mpmc::SendTimeoutError` print as std's do (`Debug` and
//! `Display`), which the other tests format only when an assertion fails;
//! and a select whose deadline passed but which the other side's
//! disconnection claimed before it ran (one worker, so the order is
//! exact): it returns the disconnection error, a sending arm with its
//! value, as a plain wait would. And the `Select` builder's `timeout` and
//! `deadline` keep the arms given before them.

mod common;

use std::time::{Duration, Instant};

use common::{WATCHDOG, runtime, watchdog};
use fibra::sync::mpmc::{self, SendTimeoutError};
use fibra::sync::mpsc::{self, RecvError, SendError};

#[test]
fn channel_handles_print_as_std_s() {
    let (tx, rx) = mpmc::channel::<u8>();
    assert_eq!(format!("{tx:?}"), "Sender { .. }");
    assert_eq!(format!("{rx:?}"), "Receiver { .. }");
    let (_stx, srx) = mpsc::sync_channel::<u8>(1);
    assert_eq!(format!("{srx:?}"), "Receiver { .. }");
}

#[test]
fn send_timeout_errors_print_as_std_s() {
    let timeout = SendTimeoutError::Timeout(1u8);
    let disconnected = SendTimeoutError::Disconnected(1u8);
    assert_eq!(format!("{timeout:?}"), "Timeout(..)");
    assert_eq!(format!("{disconnected:?}"), "Disconnected(..)");
    assert_eq!(timeout.to_string(), "timed out waiting on send operation");
    assert_eq!(
        disconnected.to_string(),
        "sending on a disconnected channel"
    );
}

/// Holds the only worker past `timeout`, then yields until the selector's
/// timer has fired (it is queued to run behind us, no longer parked).
fn outlast_the_selectors_deadline(timeout: Duration) {
    std::thread::sleep(timeout * 2);
    while fibra::metrics().parked_by.sync != 0 {
        fibra::yield_now();
    }
}

#[test]
fn a_receiving_select_whose_deadline_passed_before_a_disconnection_claimed_it_gets_the_error() {
    watchdog("select_deadline_then_disconnect", WATCHDOG, || {
        let rt = runtime(1, "edges-select-disc");
        rt.block_on(|| {
            let timeout = Duration::from_millis(5);
            // The last sender goes after the deadline.
            let (tx, rx) = mpmc::channel::<u8>();
            let (_idle_tx, idle) = mpsc::channel::<u8>();
            let selector = fibra::spawn(move || {
                let started = Instant::now();
                let outcome = fibra::select! {
                    recv(rx) -> v => Some(v),
                    recv(idle) -> _ => unreachable!(),
                    timeout(timeout) => None,
                };
                (outcome, started.elapsed())
            });
            fibra::yield_now(); // the selector parks
            outlast_the_selectors_deadline(timeout);
            drop(tx);
            let (outcome, elapsed) = selector.join().unwrap();
            assert!(elapsed >= timeout, "{elapsed:?}");
            assert_eq!(outcome, Some(Err(RecvError)));
        });
    });
}

#[test]
fn a_sending_select_whose_deadline_passed_before_a_disconnection_claimed_it_gets_its_value_back() {
    watchdog("select_send_deadline_then_disconnect", WATCHDOG, || {
        let rt = runtime(1, "edges-select-sdisc");
        rt.block_on(|| {
            // A rendezvous channel: the last receiver goes after the
            // deadline; the value comes back in the error.
            let timeout = Duration::from_millis(5);
            let (tx, rx) = mpmc::sync_channel::<u8>(0);
            let (_idle_tx, idle) = mpsc::channel::<u8>();
            let selector = fibra::spawn(move || {
                let started = Instant::now();
                let outcome = fibra::select! {
                    send(tx, 7) -> r => Some(r),
                    recv(idle) -> _ => unreachable!(),
                    timeout(timeout) => None,
                };
                (outcome, started.elapsed())
            });
            fibra::yield_now();
            outlast_the_selectors_deadline(timeout);
            drop(rx);
            let (outcome, elapsed) = selector.join().unwrap();
            assert!(elapsed >= timeout, "{elapsed:?}");
            assert_eq!(outcome, Some(Err(SendError(7))));
        });
    });
}

// The builder's `timeout` and `deadline` add an ending to the arms given
// before; they must keep those arms (and the ending must fire when no arm
// is ready). `Debug` shows the arm count and the ending.
#[test]
fn a_select_builders_timeout_and_deadline_keep_its_arms() {
    watchdog("select_builder_endings", WATCHDOG, || {
        let (tx, rx) = mpmc::channel::<u8>();
        let (_idle_tx, idle) = mpmc::channel::<u8>();
        tx.send(3).unwrap();
        let select = fibra::sync::Select::new()
            .recv(&rx, |m| m.ok())
            .timeout(Duration::from_secs(10), || None);
        // A timeout becomes a deadline when it is given.
        let text = format!("{select:?}");
        assert!(
            text.starts_with("Select { arms: 1, otherwise: Some(Deadline(Some(Instant {"),
            "{text}"
        );
        assert_eq!(select.wait(), Some(3), "the arm given before the timeout");
        tx.send(4).unwrap();
        let got = fibra::sync::Select::new()
            .recv(&rx, |m| m.ok())
            .deadline(Instant::now() + Duration::from_secs(10), || None)
            .wait();
        assert_eq!(got, Some(4), "the arm given before the deadline");
        let started = Instant::now();
        let got = fibra::sync::Select::new()
            .recv(&idle, |m| m.ok())
            .timeout(Duration::from_millis(20), || Some(99))
            .wait();
        assert_eq!(got, Some(99));
        assert!(started.elapsed() >= Duration::from_millis(20));
        let started = Instant::now();
        let got = fibra::sync::Select::new()
            .recv(&idle, |m| m.ok())
            .deadline(started + Duration::from_millis(20), || Some(98))
            .wait();
        assert_eq!(got, Some(98));
        assert!(started.elapsed() >= Duration::from_millis(20));
    });
}

//! Sync workloads measured both by `sync_compare` (next to Go) and by
//! `benches/sync.rs` (next to std): each runs inside a coroutine — call it
//! in `Runtime::block_on` — and returns the time its loop took.

use std::time::{Duration, Instant};

use fibra::sync::{Arc, mpsc};

/// A counter behind some lock: fibra's `Mutex` or, as the baseline, std's.
pub trait Counter: Send + Sync + 'static {
    fn add_one(&self);
    fn get(&self) -> u64;
}

impl Counter for fibra::sync::Mutex<u64> {
    #[inline]
    fn add_one(&self) {
        *self.lock().unwrap() += 1;
    }

    fn get(&self) -> u64 {
        *self.lock().unwrap()
    }
}

impl Counter for std::sync::Mutex<u64> {
    #[inline]
    fn add_one(&self) {
        *self.lock().unwrap() += 1;
    }

    fn get(&self) -> u64 {
        *self.lock().unwrap()
    }
}

/// `coroutines` coroutines each add one to `counter` `increments` times,
/// yielding after every `yield_every`-th; spawning and joining included.
pub fn mutex_contended<C: Counter>(
    counter: C,
    coroutines: usize,
    increments: usize,
    yield_every: usize,
) -> Duration {
    let counter = Arc::new(counter);
    let started = Instant::now();
    let handles: Vec<_> = (0..coroutines)
        .map(|_| {
            let counter = Arc::clone(&counter);
            fibra::spawn(move || {
                for i in 0..increments {
                    counter.add_one();
                    if i % yield_every == yield_every - 1 {
                        fibra::yield_now();
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(counter.get(), (coroutines * increments) as u64);
    elapsed
}

/// The sending half of either kind of channel.
trait SendHalf: Send + 'static {
    fn put(&self, value: u64);
}

impl SendHalf for mpsc::Sender<u64> {
    fn put(&self, value: u64) {
        self.send(value).unwrap();
    }
}

impl SendHalf for mpsc::SyncSender<u64> {
    fn put(&self, value: u64) {
        self.send(value).unwrap();
    }
}

/// `rounds` round trips: a value sent to a partner coroutine over one
/// channel made by `channel`, answered over another.
fn ping_pong<S: SendHalf>(rounds: u64, channel: fn() -> (S, mpsc::Receiver<u64>)) -> Duration {
    let (there_tx, there_rx) = channel();
    let (back_tx, back_rx) = channel();
    let echo = fibra::spawn(move || {
        for value in there_rx.iter() {
            back_tx.put(value + 1);
        }
    });
    let started = Instant::now();
    for i in 0..rounds {
        there_tx.put(i);
        assert_eq!(back_rx.recv().unwrap(), i + 1);
    }
    let elapsed = started.elapsed();
    drop(there_tx);
    echo.join().unwrap();
    elapsed
}

/// Ping-pong over `mpsc::channel` (a send never waits).
pub fn channel_ping_pong(rounds: u64) -> Duration {
    ping_pong(rounds, mpsc::channel)
}

/// Ping-pong over `sync_channel(0)` (each send waits for the receive).
pub fn rendezvous_ping_pong(rounds: u64) -> Duration {
    ping_pong(rounds, || mpsc::sync_channel(0))
}

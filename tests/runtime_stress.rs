//! The scheduler under load: a million coroutines spawned and joined, the
//! home-worker rule under heavy yielding and cross-worker parking, stealing of
//! unstarted coroutines, no lost wakeups in a token ring spanning coroutines
//! and OS threads, and fairness between started and fresh coroutines.
//!
//! The ring carries 8 tokens, so a lost wakeup there is healed by the next
//! token's unpark; tests/runtime_unpark.rs passes one token, which cannot.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{WATCHDOG, runtime, thread_name, watchdog};

/// A value that differs for every input, so a result delivered to the wrong
/// handle is caught.
fn mix(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ i
}

#[test]
fn million_coroutines_spawned_and_joined_in_batches() {
    const TOTAL: u64 = 1_000_000;
    // Within the capacity of a thread's stack pool (1,024), so that every
    // stack is reused from the worker's own pool.
    const BATCH: u64 = 1_000;
    let (checked, elapsed) = watchdog(
        "million_coroutines_spawned_and_joined_in_batches",
        Duration::from_secs(60),
        || {
            let start = Instant::now();
            let rt = runtime(1, "million");
            let checked = rt.block_on(|| {
                let mut checked = 0u64;
                let mut batch_start = 0;
                while batch_start < TOTAL {
                    let handles: Vec<_> = (batch_start..batch_start + BATCH)
                        .map(|i| fibra::spawn(move || mix(i)))
                        .collect();
                    for (i, handle) in (batch_start..).zip(handles) {
                        assert_eq!(handle.join().expect("no panic"), mix(i), "coroutine {i}");
                        checked += 1;
                    }
                    batch_start += BATCH;
                }
                checked
            });
            drop(rt);
            (checked, start.elapsed())
        },
    );
    eprintln!("{checked} coroutines spawned and joined in {elapsed:?}");
    assert_eq!(checked, TOTAL);
}

/// Installs the caller's handle in `slot`, then fences: paired with the fence
/// in `wake_slot`, either the waker sees the handle or the caller sees the
/// waker's earlier write (Dekker), so no wake is lost before the handle exists.
fn publish_self(slot: &OnceLock<fibra::Coroutine>) {
    slot.set(fibra::current())
        .expect("each slot is published once");
    fence(Ordering::SeqCst);
}

/// Unparks whoever published itself in `slot`; call after writing the
/// condition it waits for.
fn wake_slot(slot: &OnceLock<fibra::Coroutine>) {
    fence(Ordering::SeqCst);
    if let Some(handle) = slot.get() {
        handle.unpark();
    }
}

/// Who partners whom in the home-worker test, decided once every coroutine
/// has started and knows its worker.
struct Plan {
    /// For each coroutine: its pair and its side (0 or 1) in that pair.
    seat: Vec<(usize, u64)>,
    /// For each coroutine: its partner.
    partner: Vec<usize>,
    /// Pairs whose two coroutines live on different workers.
    cross_pairs: usize,
}

impl Plan {
    /// Pairs coroutines of different workers first, then the rest.
    fn new(registry: &[(usize, usize)]) -> Plan {
        let n = registry.len();
        let on = |w: usize| -> Vec<usize> {
            registry
                .iter()
                .filter(|&&(worker, _)| worker == w)
                .map(|&(_, i)| i)
                .collect()
        };
        let (mut a, mut b) = (on(0), on(1));
        let cross_pairs = a.len().min(b.len());
        let mut order = Vec::with_capacity(n);
        for _ in 0..cross_pairs {
            order.push(a.pop().unwrap());
            order.push(b.pop().unwrap());
        }
        order.extend(a);
        order.extend(b);
        let mut seat = vec![(0, 0); n];
        let mut partner = vec![0; n];
        for (pair, two) in order.chunks(2).enumerate() {
            seat[two[0]] = (pair, 0);
            seat[two[1]] = (pair, 1);
            partner[two[0]] = two[1];
            partner[two[1]] = two[0];
        }
        Plan {
            seat,
            partner,
            cross_pairs,
        }
    }
}

/// What the coroutines of the home-worker test share.
struct HomeTest {
    slots: Vec<OnceLock<fibra::Coroutine>>,
    /// (worker index, coroutine index) of every coroutine that has started.
    registry: Mutex<Vec<(usize, usize)>>,
    plan: OnceLock<Plan>,
    /// One turn counter per pair.
    turns: Vec<AtomicU64>,
}

#[test]
fn coroutines_stay_on_home_worker_across_parks_and_yields() {
    const COROUTINES: usize = 200;
    const ROUNDS: u64 = 1_000;
    let (mismatches, homes, parks, cross_pairs) = watchdog(
        "coroutines_stay_on_home_worker_across_parks_and_yields",
        WATCHDOG,
        || {
            let rt = runtime(2, "home");
            let test = Arc::new(HomeTest {
                slots: (0..COROUTINES).map(|_| OnceLock::new()).collect(),
                registry: Mutex::new(Vec::new()),
                plan: OnceLock::new(),
                turns: (0..COROUTINES / 2).map(|_| AtomicU64::new(0)).collect(),
            });
            let handles: Vec<_> = (0..COROUTINES)
                .map(|me| {
                    let test = Arc::clone(&test);
                    rt.spawn(move || {
                        publish_self(&test.slots[me]);
                        let home = thread_name();
                        let mut mismatches = 0u64;
                        let mut parks = 0u64;
                        let check = |mismatches: &mut u64| {
                            if thread::current().name() != Some(home.as_str()) {
                                *mismatches += 1;
                            }
                        };
                        let worker: usize = home
                            .strip_prefix("home-")
                            .and_then(|i| i.parse().ok())
                            .expect("runs on a worker");
                        let last = {
                            let mut registry = test.registry.lock().unwrap();
                            registry.push((worker, me));
                            registry.len() == COROUTINES
                        };
                        // Balance the workers: while this one hosts more
                        // coroutines than the other (plus one), keep it busy
                        // (no park), so that the other one has to start the
                        // rest. Coroutines then pair up across workers.
                        let give_up = Instant::now() + Duration::from_secs(10);
                        while Instant::now() < give_up {
                            let registry = test.registry.lock().unwrap();
                            let here = registry.iter().filter(|&&(w, _)| w == worker).count();
                            if registry.len() == COROUTINES || 2 * here <= registry.len() + 1 {
                                break;
                            }
                        }
                        if last {
                            let plan = Plan::new(&test.registry.lock().unwrap());
                            assert!(test.plan.set(plan).is_ok(), "planned once");
                            for slot in &test.slots {
                                wake_slot(slot);
                            }
                        }
                        let plan = loop {
                            if let Some(plan) = test.plan.get() {
                                break plan;
                            }
                            check(&mut mismatches);
                            fibra::park();
                            check(&mut mismatches);
                            parks += 1;
                        };
                        // Ping-pong with the partner: park until it has moved
                        // the turn to us, then move it on and unpark it.
                        let (pair, side) = plan.seat[me];
                        let turn = &test.turns[pair];
                        let partner = &test.slots[plan.partner[me]];
                        for round in 0..ROUNDS {
                            check(&mut mismatches);
                            fibra::yield_now();
                            check(&mut mismatches);
                            let mine = 2 * round + side;
                            while turn.load(Ordering::SeqCst) != mine {
                                check(&mut mismatches);
                                fibra::park();
                                check(&mut mismatches);
                                parks += 1;
                            }
                            turn.store(mine + 1, Ordering::SeqCst);
                            wake_slot(partner);
                        }
                        (home, mismatches, parks)
                    })
                })
                .collect();
            let mut mismatches = 0;
            let mut parks = 0;
            let mut homes = BTreeMap::new();
            for handle in handles {
                let (home, wrong, parked) = handle.join().expect("no panic");
                mismatches += wrong;
                parks += parked;
                *homes.entry(home).or_insert(0usize) += 1;
            }
            let cross_pairs = test.plan.get().expect("planned").cross_pairs;
            for turn in &test.turns {
                assert_eq!(turn.load(Ordering::SeqCst), 2 * ROUNDS);
            }
            drop(rt);
            (mismatches, homes, parks, cross_pairs)
        },
    );
    eprintln!("homes: {homes:?}; cross-worker pairs: {cross_pairs}; parks: {parks}");
    assert_eq!(mismatches, 0, "a coroutine resumed on another worker");
    assert_eq!(homes.values().sum::<usize>(), COROUTINES);
    assert_eq!(
        homes.keys().map(String::as_str).collect::<Vec<_>>(),
        ["home-0", "home-1"],
        "both workers host coroutines"
    );
    assert!(
        cross_pairs >= COROUTINES / 4,
        "only {cross_pairs} pairs wake across workers: {homes:?}"
    );
    assert!(parks > 0, "the ping-pong parked");
}

#[test]
fn unstarted_coroutines_are_stolen_by_idle_worker() {
    const CHILDREN: usize = 64;
    let (parent, names) = watchdog(
        "unstarted_coroutines_are_stolen_by_idle_worker",
        WATCHDOG,
        || {
            let rt = runtime(2, "steal");
            let result = rt.block_on(|| {
                let parent = thread_name();
                let seen = Arc::new(Mutex::new(HashSet::new()));
                // All children go to this worker's queue. Each one keeps its
                // worker busy (never parking) until both workers have run a
                // child: that can only happen if the other worker steals.
                let handles: Vec<_> = (0..CHILDREN)
                    .map(|_| {
                        let seen = Arc::clone(&seen);
                        fibra::spawn(move || {
                            let me = thread_name();
                            seen.lock().unwrap().insert(me.clone());
                            let give_up = Instant::now() + Duration::from_secs(10);
                            while seen.lock().unwrap().len() < 2 && Instant::now() < give_up {
                                std::hint::spin_loop();
                            }
                            me
                        })
                    })
                    .collect();
                let names: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
                (parent, names)
            });
            drop(rt);
            result
        },
    );
    assert_eq!(names.len(), CHILDREN);
    let distinct: HashSet<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        distinct,
        HashSet::from(["steal-0", "steal-1"]),
        "children spawned on {parent} ran on {distinct:?} only: nothing was stolen"
    );
}

/// The shared state of the token ring.
struct Ring {
    /// Tokens waiting at each participant.
    tokens: Vec<AtomicUsize>,
    /// Each participant's handle, published by itself.
    slots: Vec<OnceLock<fibra::Coroutine>>,
    /// Tickets: a pass is made only with a ticket below the total.
    tickets: AtomicUsize,
    done: AtomicBool,
    total: usize,
}

impl Ring {
    /// One participant: waits for a token, passes it on, until `total`
    /// passes have been made. Returns how many passes it made.
    fn participate(&self, me: usize) -> usize {
        publish_self(&self.slots[me]);
        let next = (me + 1) % self.slots.len();
        let mut passes = 0;
        loop {
            loop {
                if self.done.load(Ordering::SeqCst) {
                    return passes;
                }
                if self.tokens[me].load(Ordering::SeqCst) > 0 {
                    // Only `me` takes from its own count.
                    self.tokens[me].fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                fibra::park();
            }
            let ticket = self.tickets.fetch_add(1, Ordering::SeqCst);
            if ticket >= self.total {
                // Someone else made the last pass: keep the token.
                self.tokens[me].fetch_add(1, Ordering::SeqCst);
                return passes;
            }
            passes += 1;
            self.tokens[next].fetch_add(1, Ordering::SeqCst);
            wake_slot(&self.slots[next]);
            if ticket + 1 == self.total {
                self.done.store(true, Ordering::SeqCst);
                for slot in &self.slots {
                    wake_slot(slot);
                }
                return passes;
            }
        }
    }
}

#[test]
fn token_ring_across_coroutines_and_threads_loses_no_wakeup() {
    const COROUTINES: usize = 64;
    const THREADS: [usize; 2] = [21, 43]; // ring positions of the OS threads
    const PARTICIPANTS: usize = COROUTINES + THREADS.len();
    const TOKENS: usize = 8;
    const TOTAL: usize = 20_000;
    let (counts, ring) = watchdog(
        "token_ring_across_coroutines_and_threads_loses_no_wakeup",
        WATCHDOG,
        || {
            let ring = Arc::new(Ring {
                // One token on every 8th participant, from 0.
                tokens: (0..PARTICIPANTS)
                    .map(|i| AtomicUsize::new(usize::from(i % 8 == 0 && i / 8 < TOKENS)))
                    .collect(),
                slots: (0..PARTICIPANTS).map(|_| OnceLock::new()).collect(),
                tickets: AtomicUsize::new(0),
                done: AtomicBool::new(false),
                total: TOTAL,
            });
            let placed: usize = ring.tokens.iter().map(|t| t.load(Ordering::SeqCst)).sum();
            assert_eq!(placed, TOKENS);
            let rt = runtime(2, "ring");
            let mut coroutines = Vec::new();
            let mut threads = Vec::new();
            for me in 0..PARTICIPANTS {
                let ring = Arc::clone(&ring);
                if THREADS.contains(&me) {
                    threads.push((me, thread::spawn(move || ring.participate(me))));
                } else {
                    coroutines.push((me, rt.spawn(move || ring.participate(me))));
                }
            }
            let mut counts = vec![0; PARTICIPANTS];
            for (me, handle) in coroutines {
                counts[me] = handle.join().expect("no panic");
            }
            for (me, handle) in threads {
                counts[me] = handle.join().expect("no panic");
            }
            drop(rt);
            (counts, ring)
        },
    );
    assert_eq!(counts.iter().sum::<usize>(), TOTAL, "passes made");
    let left: usize = ring.tokens.iter().map(|t| t.load(Ordering::SeqCst)).sum();
    assert_eq!(left, TOKENS, "every token is still somewhere");
    assert!(ring.tickets.load(Ordering::SeqCst) >= TOTAL);
    // Each token visits the participants in ring order, so any two counts
    // differ by at most one per token.
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(
        max - min <= TOKENS,
        "uneven passes {min}..{max}: {counts:?}"
    );
    for &thread in &THREADS {
        assert!(
            counts[thread] >= TOTAL / PARTICIPANTS - TOKENS,
            "{counts:?}"
        );
    }
}

#[test]
fn started_and_fresh_coroutines_both_progress_under_spawn_flood() {
    const BATCHES: usize = 100;
    const PER_BATCH: usize = 50;
    const FLOOD: usize = BATCHES * PER_BATCH;
    let (yields_during_flood, ran_during_flood, ran) = watchdog(
        "started_and_fresh_coroutines_both_progress_under_spawn_flood",
        WATCHDOG,
        || {
            let rt = runtime(1, "flood");
            let report = rt.block_on(|| {
                let yields = Arc::new(AtomicUsize::new(0));
                let ran = Arc::new(AtomicUsize::new(0));
                // A started coroutine that yields and counts until the whole
                // flood has run.
                let counter = {
                    let (yields, ran) = (Arc::clone(&yields), Arc::clone(&ran));
                    fibra::spawn(move || {
                        while ran.load(Ordering::SeqCst) < FLOOD {
                            yields.fetch_add(1, Ordering::SeqCst);
                            fibra::yield_now();
                        }
                    })
                };
                // The flood: PER_BATCH fresh coroutines per turn, faster than
                // one worker can run them.
                let flooder = {
                    let (yields, ran) = (Arc::clone(&yields), Arc::clone(&ran));
                    fibra::spawn(move || {
                        let mut handles = Vec::with_capacity(FLOOD);
                        let yields_at_start = yields.load(Ordering::SeqCst);
                        for batch in 0..BATCHES {
                            for i in 0..PER_BATCH {
                                let ran = Arc::clone(&ran);
                                let n = batch * PER_BATCH + i;
                                handles.push(fibra::spawn(move || {
                                    ran.fetch_add(1, Ordering::SeqCst);
                                    n
                                }));
                            }
                            fibra::yield_now();
                        }
                        let yields_during_flood = yields.load(Ordering::SeqCst) - yields_at_start;
                        let ran_during_flood = ran.load(Ordering::SeqCst);
                        for (n, handle) in handles.into_iter().enumerate() {
                            assert_eq!(handle.join().unwrap(), n);
                        }
                        (yields_during_flood, ran_during_flood)
                    })
                };
                let (yields_during_flood, ran_during_flood) = flooder.join().unwrap();
                counter.join().unwrap();
                (
                    yields_during_flood,
                    ran_during_flood,
                    ran.load(Ordering::SeqCst),
                )
            });
            drop(rt);
            report
        },
    );
    eprintln!(
        "flood: the counter yielded {yields_during_flood} times and {ran_during_flood} flooded \
         coroutines ran while {FLOOD} were spawned in {BATCHES} batches"
    );
    assert_eq!(ran, FLOOD, "every flooded coroutine ran");
    // The started coroutine ran between (nearly) every two batches.
    assert!(
        yields_during_flood >= BATCHES - 2,
        "the counter advanced only {yields_during_flood} times in {BATCHES} batches"
    );
    // Fresh coroutines ran while the flood went on, not only after it.
    assert!(
        ran_during_flood >= BATCHES,
        "only {ran_during_flood} flooded coroutines ran during the flood"
    );
}

/// A coroutine that joins a fresh backlog in order is woken through
/// `run_next` once per finished coroutine. That rhythm once kept the parity of
/// the tick `pop_ready` alternated by fixed, so a started coroutine got no turn
/// until the whole backlog had run (1 turn for 5,000 fresh coroutines).
#[test]
fn started_coroutine_keeps_turns_while_joiner_drains_fresh_backlog() {
    const BACKLOG: usize = 5_000;
    let (yields, ran) = watchdog(
        "started_coroutine_keeps_turns_while_joiner_drains_fresh_backlog",
        WATCHDOG,
        || {
            let rt = runtime(1, "backlog");
            let report = rt.block_on(|| {
                let ran = Arc::new(AtomicUsize::new(0));
                let counter = {
                    let ran = Arc::clone(&ran);
                    fibra::spawn(move || {
                        let mut yields = 0usize;
                        while ran.load(Ordering::SeqCst) < BACKLOG {
                            yields += 1;
                            fibra::yield_now();
                        }
                        yields
                    })
                };
                // One worker, FIFO queue: `counter` starts (and yields) while
                // we wait for this one.
                fibra::spawn(|| ()).join().unwrap();
                let handles: Vec<_> = (0..BACKLOG)
                    .map(|n| {
                        let ran = Arc::clone(&ran);
                        fibra::spawn(move || {
                            ran.fetch_add(1, Ordering::SeqCst);
                            n
                        })
                    })
                    .collect();
                // Join in order: each one, finishing, wakes us via run_next.
                for (n, handle) in handles.into_iter().enumerate() {
                    assert_eq!(handle.join().unwrap(), n);
                }
                (counter.join().unwrap(), ran.load(Ordering::SeqCst))
            });
            drop(rt);
            report
        },
    );
    eprintln!("backlog: the counter yielded {yields} times while {ran} fresh coroutines ran");
    assert_eq!(ran, BACKLOG);
    // Alternating started and fresh coroutines gives the counter about one
    // turn per fresh coroutine; a quarter of that is plenty.
    assert!(
        yields >= BACKLOG / 4,
        "the started counter got {yields} turns while {BACKLOG} fresh coroutines ran: \
         starved by the fresh queue"
    );
}

#[test]
fn a_pair_waking_each_other_does_not_starve_a_yielding_coroutine() {
    // Two coroutines that unpark each other and park keep `run_next` full:
    // each wake puts the partner there. Without the streak guard the third
    // coroutine, queued behind them on the same worker, never ran; the pair
    // stops at `ROUNDS_CAP` so that the test ends either way.
    const ROUNDS_CAP: u64 = 200_000;
    const TURNS: u64 = 100;
    let rounds = watchdog(
        "a_pair_waking_each_other_does_not_starve_a_yielding_coroutine",
        WATCHDOG,
        || {
            let rt = runtime(1, "streak");
            let rounds = rt.block_on(|| {
                let done = Arc::new(AtomicBool::new(false));
                let rounds = Arc::new(AtomicU64::new(0));
                let slots: Arc<[OnceLock<fibra::Coroutine>; 2]> =
                    Arc::new([OnceLock::new(), OnceLock::new()]);
                let yielder = {
                    let done = Arc::clone(&done);
                    fibra::spawn(move || {
                        for _ in 0..TURNS {
                            fibra::yield_now();
                        }
                        done.store(true, Ordering::SeqCst);
                    })
                };
                let player = |me: usize| {
                    let (done, rounds, slots) =
                        (Arc::clone(&done), Arc::clone(&rounds), Arc::clone(&slots));
                    fibra::spawn(move || {
                        publish_self(&slots[me]);
                        while !done.load(Ordering::SeqCst)
                            && rounds.fetch_add(1, Ordering::SeqCst) < ROUNDS_CAP
                        {
                            wake_slot(&slots[1 - me]);
                            fibra::park();
                        }
                        // The partner may be parked: let it see the end too.
                        wake_slot(&slots[1 - me]);
                    })
                };
                let (a, b) = (player(0), player(1));
                a.join().unwrap();
                b.join().unwrap();
                yielder.join().unwrap();
                rounds.load(Ordering::SeqCst)
            });
            drop(rt);
            rounds
        },
    );
    eprintln!(
        "streak: the pair played {rounds} rounds while the third coroutine yielded {TURNS} times"
    );
    assert!(
        rounds < ROUNDS_CAP,
        "the yielding coroutine got fewer than {TURNS} turns in {rounds} rounds of the pair: \
         starved by run_next"
    );
}

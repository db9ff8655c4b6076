//! Lost unparks, caught where they cannot heal.
//!
//! A park/unpark bug loses a wakeup only inside a window of a few
//! instructions: an unpark that lands after the parker found its condition
//! false and before it has switched away, or one that finds a token being
//! consumed and leaves its own write invisible to the parker's re-check. A
//! test with several tokens in flight hides such a loss: the next token's
//! unpark wakes the stranded party and the run still ends. Here exactly one
//! token is passed back and forth between two parties; each pass is one
//! `Release` store of the turn and one unpark, and nothing else ever unparks
//! them. So `park` must make the store visible on its own, as
//! `std::thread::park` promises (unpark synchronizes with the park that
//! consumes its token), and a single lost unpark leaves both sides waiting
//! forever. The test thread sees that as a stall (no pass for `STALL`, the
//! bound on the longest wait) and reports the round, the waiting side and
//! what its thread is doing.
//!
//! To make unparks land inside those windows often, half of the waits spin
//! for 2,048 looks at the turn before they park, a quarter park after one
//! look and a quarter after up to 16: a spinning side answers within a
//! fraction of a microsecond, while the other is in the middle of parking
//! or of consuming a stale token (left by an unpark that came while it was
//! still spinning). What it catches, measured (TESTING.md has the runs):
//! `park`'s compare-and-swap turned into a load and a store; the token
//! consumed with a plain store; `unpark` returning on a pending token
//! without writing the state word (the last two together were the code's
//! own bug, which this test found).
//!
//! Two pairs, one after the other (each wants both CPUs of a small machine):
//! two coroutines on different workers (each wake goes through the other
//! worker's inbox and, if it sleeps, its `epoll_wait`), and a coroutine with
//! a plain OS thread (`fibra::park` on a thread is `std::thread::park`; the
//! thread's unparks come from outside the runtime).

mod common;

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{runtime, thread_name};

/// Passes in each direction, unless `TIME_BUDGET` runs out first.
const ROUNDS: u64 = 5_000_000;
/// The longest a pair plays (a loaded machine gets fewer rounds; the count
/// played is printed, and a warning if it is low).
const TIME_BUDGET: Duration = Duration::from_secs(6);
/// No pass for this long is a lost unpark. The longest wait a healthy pair
/// showed on a loaded 2-core machine was 133 ms.
const STALL: Duration = Duration::from_secs(2);
/// How long a party waits for its partner to sit down.
const MEET: Duration = Duration::from_secs(10);
/// The `turn` by which side 0 ends the game early (time budget spent).
const STOP: u64 = u64::MAX;
/// Spin looks of a wait that outlasts the partner's answer.
const LONG_SPIN: u64 = 2_048;

/// One game at a time: each side spins, and two games at once on two CPUs
/// would mostly wait for each other's time slices.
static ONE_GAME: Mutex<()> = Mutex::new(());

/// The pair's shared state: whose turn it is, and who sits where.
struct Table {
    /// Round `r` of side `s` may go when `turn == 2 * r + s`; each pass adds
    /// one. One token, by construction.
    turn: AtomicU64,
    /// Each side's handle, published by itself before the first round.
    seats: [OnceLock<fibra::Coroutine>; 2],
    /// The name of the OS thread each side runs on.
    hosts: [OnceLock<String>; 2],
    /// Set by the test thread after a stall, to end both sides.
    abort: AtomicBool,
}

/// What one side saw.
#[derive(Debug)]
struct Play {
    rounds: u64,
    parks: u64,
    longest_wait: Duration,
}

/// A xorshift64 step.
fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

impl Table {
    fn new() -> Table {
        Table {
            turn: AtomicU64::new(0),
            seats: [OnceLock::new(), OnceLock::new()],
            hosts: [OnceLock::new(), OnceLock::new()],
            abort: AtomicBool::new(false),
        }
    }

    /// One side of the game; `None` if the test thread aborted it. Runs in
    /// a coroutine or on a plain thread alike. Spins (never parks) until
    /// the partner has sat down, so that a coroutine partner spawned after
    /// this one has to start on another worker.
    fn play(&self, side: usize, seed: u64) -> Option<Play> {
        self.hosts[side]
            .set(thread_name())
            .expect("each side sits down once");
        self.seats[side]
            .set(fibra::current())
            .expect("each side sits down once");
        let met = Instant::now();
        let partner = loop {
            if let Some(partner) = self.seats[1 - side].get() {
                break partner.clone();
            }
            assert!(met.elapsed() < MEET, "side {side}: the partner never came");
            spin_loop();
        };
        let started = Instant::now();
        let mut rng = seed;
        let mut play = Play {
            rounds: 0,
            parks: 0,
            longest_wait: Duration::ZERO,
        };
        for round in 0..ROUNDS {
            let mine = 2 * round + side as u64;
            let waiting = Instant::now();
            let r = next(&mut rng);
            let mut spins = match r % 4 {
                0 | 1 => LONG_SPIN,
                2 => 0,
                _ => (r >> 8) % 16,
            };
            loop {
                let turn = self.turn.load(Ordering::Acquire);
                if turn == mine {
                    break;
                }
                if turn == STOP {
                    return Some(play);
                }
                if self.abort.load(Ordering::SeqCst) {
                    return None;
                }
                if spins > 0 {
                    spins -= 1;
                    spin_loop();
                } else {
                    play.parks += 1;
                    fibra::park();
                }
            }
            play.longest_wait = play.longest_wait.max(waiting.elapsed());
            play.rounds += 1;
            let pass = if side == 0 && started.elapsed() >= TIME_BUDGET {
                STOP
            } else {
                mine + 1
            };
            self.turn.store(pass, Ordering::Release);
            partner.unpark();
            if pass == STOP {
                break;
            }
        }
        Some(play)
    }

    /// Watches the turn until the game ends (`done()`). If no pass is made
    /// for `STALL`, aborts both sides (one more unpark each, now harmless,
    /// so that they can be joined) and returns what was lost.
    fn referee(&self, done: impl Fn() -> bool) -> Result<(), String> {
        let mut last = self.turn.load(Ordering::SeqCst);
        let mut last_change = Instant::now();
        while !done() {
            let turn = self.turn.load(Ordering::SeqCst);
            if turn != last {
                (last, last_change) = (turn, Instant::now());
            } else if last_change.elapsed() > STALL {
                let side = (turn % 2) as usize;
                let host = self.hosts[side].get().cloned().unwrap_or_default();
                let doing = thread_activity(&host);
                self.abort.store(true, Ordering::SeqCst);
                for seat in self.seats.iter().filter_map(OnceLock::get) {
                    seat.unpark();
                }
                return Err(format!(
                    "lost unpark: no pass for {STALL:?} at round {}: side {side} (on {host:?}, \
                     {doing}) waits, though its partner stored the turn and unparked it once",
                    turn / 2,
                ));
            }
            thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// What the thread named `name` is doing, from /proc: its state and, when
/// asleep, the system call (232, 281, 441: epoll_wait; 202: futex).
fn thread_activity(name: &str) -> String {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return "no /proc".to_string();
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .unwrap_or('?');
        let syscall = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        let number = syscall.split_whitespace().next().unwrap_or("?");
        return format!("thread state {state}, system call {number}");
    }
    "thread not found".to_string()
}

/// Checks what both sides report and prints it.
fn check_plays(what: &str, table: &Table, plays: [Option<Play>; 2], elapsed: Duration) {
    let [Some(a), Some(b)] = plays else {
        panic!("{what}: a side was aborted without a stall");
    };
    eprintln!(
        "{what}: {} rounds in {elapsed:.2?} on {:?} / {:?}; parks {} / {}; \
         longest wait {:.2?} / {:.2?}",
        a.rounds,
        table.hosts[0].get(),
        table.hosts[1].get(),
        a.parks,
        b.parks,
        a.longest_wait,
        b.longest_wait,
    );
    // Side 0 makes the last pass (possibly STOP), so it played as many
    // rounds as side 1 or one more.
    assert!(
        a.rounds == b.rounds || a.rounds == b.rounds + 1,
        "{what}: rounds {} / {}",
        a.rounds,
        b.rounds
    );
    assert!(a.rounds > 0, "{what}: no round was played");
    if a.rounds < 20_000 {
        eprintln!(
            "{what}: only {} rounds fit in {TIME_BUDGET:?} on this loaded host: \
             a weaker check for lost unparks than intended this time",
            a.rounds
        );
    }
    // A quarter of the waits park after one look, so each side parks in
    // about a quarter of the rounds or more; far fewer and the game tests
    // only spinning.
    for (side, play) in [&a, &b].into_iter().enumerate() {
        assert!(
            play.parks >= play.rounds / 16,
            "{what}: side {side} parked {} times in {} rounds",
            play.parks,
            play.rounds
        );
    }
}

#[test]
fn one_token_between_coroutines_on_two_workers_is_never_lost() {
    let _one = ONE_GAME.lock().unwrap_or_else(|e| e.into_inner());
    let what = "coroutines on two workers";
    let rt = runtime(2, "unpark");
    let table = Arc::new(Table::new());
    let start = Instant::now();
    let first = {
        let table = Arc::clone(&table);
        rt.spawn(move || table.play(0, 0x2545_F491_4F6C_DD1D))
    };
    // Spawned once the first side sits (and spins) on its worker: the
    // second can then only start on the other worker.
    common::wait_for("the first side sits down", MEET, || {
        table.hosts[0].get().is_some()
    });
    let second = {
        let table = Arc::clone(&table);
        rt.spawn(move || table.play(1, 0x9E37_79B9_7F4A_7C15))
    };
    let verdict = table.referee(|| first.is_finished() && second.is_finished());
    let plays = [first, second].map(|side| side.join().expect("no panic"));
    verdict.unwrap_or_else(|lost| panic!("{what}: {lost}"));
    let elapsed = start.elapsed();
    drop(rt);
    assert_ne!(
        table.hosts[0].get(),
        table.hosts[1].get(),
        "the two coroutines share a worker"
    );
    check_plays(what, &table, plays, elapsed);
}

#[test]
fn one_token_between_a_coroutine_and_a_plain_thread_is_never_lost() {
    let _one = ONE_GAME.lock().unwrap_or_else(|e| e.into_inner());
    let what = "a coroutine and a plain thread";
    let rt = runtime(1, "unpark-c");
    let table = Arc::new(Table::new());
    let start = Instant::now();
    let coroutine = {
        let table = Arc::clone(&table);
        rt.spawn(move || table.play(0, 0x2545_F491_4F6C_DD1D))
    };
    let plain = {
        let table = Arc::clone(&table);
        thread::Builder::new()
            .name("unpark-thread".to_string())
            .spawn(move || table.play(1, 0x9E37_79B9_7F4A_7C15))
            .expect("spawn the plain thread")
    };
    let verdict = table.referee(|| coroutine.is_finished() && plain.is_finished());
    let plays = [
        coroutine.join().expect("no panic"),
        plain.join().expect("no panic"),
    ];
    verdict.unwrap_or_else(|lost| panic!("{what}: {lost}"));
    let elapsed = start.elapsed();
    drop(rt);
    assert_eq!(table.hosts[0].get().map(String::as_str), Some("unpark-c-0"));
    assert_eq!(
        table.hosts[1].get().map(String::as_str),
        Some("unpark-thread")
    );
    check_plays(what, &table, plays, elapsed);
}

//! The key space: string keys to string values, each with an optional
//! deadline, and the coroutine that deletes keys when their deadline passes.
//!
//! # Expiry
//!
//! Keys with a deadline are also in `expirations`, ordered by deadline. The
//! expiry coroutine ([`Db::run_expiry`]) deletes every key whose deadline has
//! passed, then sleeps until the earliest deadline left (or until woken, if
//! there is none). A SET whose deadline comes before every other wakes it,
//! so that it sleeps until the new, earlier deadline instead. A key is also
//! treated as gone by GET the moment its deadline passes, even if the expiry
//! coroutine has not run yet (it may be queued behind busy connections): a
//! client never reads a value past its deadline. (tokio's mini-redis relies on
//! its purge task alone, so a GET can return a key a little after it
//! expired.)
//!
//! Invariant, under the lock: a key has a deadline in `entries` exactly when
//! `(deadline, key)` is in `expirations`.
//!
//! # Costs on the hot path
//!
//! GET copies the value straight from the map into the reply buffer under
//! the lock: no allocation, no reference counting. SET of an existing key
//! reuses that key's allocation and value buffer, so `redis-benchmark`'s SET
//! of one key over and over allocates nothing. Only SETs that add or change a
//! deadline touch `expirations` (and allocate a copy of the key for it).
//!
//! The lock is a std `Mutex` held for map operations only, never across a
//! park (see `sync.rs`).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::sync::{Mutex, Wakeup, lock};

/// The key space of one server.
pub struct Db {
    state: Mutex<State>,
    /// Wakes the expiry coroutine: an earlier deadline, or shutdown.
    expiry: Wakeup,
}

#[derive(Default)]
struct State {
    entries: HashMap<Vec<u8>, Entry>,
    expirations: BTreeSet<(Instant, Vec<u8>)>,
    shutdown: bool,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl Default for Db {
    fn default() -> Db {
        Db::new()
    }
}

impl Db {
    /// An empty key space. Keys expire only while some coroutine runs
    /// [`Db::run_expiry`] (GET hides expired keys regardless).
    pub fn new() -> Db {
        Db {
            state: Mutex::new(State::default()),
            expiry: Wakeup::default(),
        }
    }

    /// Appends the GET reply for `key` to `out`: its value as a bulk
    /// string, or the null bulk string if it is absent or expired.
    pub fn get_into(&self, key: &[u8], out: &mut Vec<u8>) {
        let mut state = lock(&self.state);
        if let Some(entry) = state.entries.get(key) {
            match entry.expires_at {
                Some(deadline) if deadline <= Instant::now() => {
                    state.remove(key);
                }
                _ => return super::resp::push_bulk(out, &entry.value),
            }
        }
        super::resp::push_null(out);
    }

    /// The value of `key`, if present and not expired (a copy; for tests).
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let state = lock(&self.state);
        let entry = state.entries.get(key)?;
        match entry.expires_at {
            Some(deadline) if deadline <= Instant::now() => None,
            _ => Some(entry.value.clone()),
        }
    }

    /// Sets `key` to `value`, with a deadline or none (a SET without EX/PX
    /// clears an earlier deadline, as in Redis).
    pub fn set(&self, key: &[u8], value: &[u8], expires_at: Option<Instant>) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let old_deadline = match state.entries.get_mut(key) {
            Some(entry) => {
                entry.value.clear();
                entry.value.extend_from_slice(value);
                std::mem::replace(&mut entry.expires_at, expires_at)
            }
            None => {
                state.entries.insert(
                    key.to_vec(),
                    Entry {
                        value: value.to_vec(),
                        expires_at,
                    },
                );
                None
            }
        };
        if old_deadline == expires_at {
            return;
        }
        if let Some(old) = old_deadline {
            state.expirations.remove(&(old, key.to_vec()));
        }
        if let Some(deadline) = expires_at {
            let earliest = state
                .expirations
                .first()
                .is_none_or(|(first, _)| deadline < *first);
            state.expirations.insert((deadline, key.to_vec()));
            if earliest {
                self.expiry.notify();
            }
        }
    }

    /// How many keys are stored, expired ones not yet deleted included.
    pub fn stored_keys(&self) -> usize {
        lock(&self.state).entries.len()
    }

    /// Deletes the keys whose deadline has passed, waits for the next
    /// deadline, and again, until [`Db::shutdown`]. Run it in a coroutine of
    /// its own.
    pub fn run_expiry(&self) {
        loop {
            let next = {
                let mut state = lock(&self.state);
                if state.shutdown {
                    return;
                }
                state.remove_expired(Instant::now())
            };
            self.expiry.wait(next);
        }
    }

    /// Makes `run_expiry` return.
    pub fn shutdown(&self) {
        lock(&self.state).shutdown = true;
        self.expiry.notify();
    }
}

impl State {
    /// Removes `key` and its deadline.
    fn remove(&mut self, key: &[u8]) {
        if let Some(Entry {
            expires_at: Some(deadline),
            ..
        }) = self.entries.remove(key)
        {
            self.expirations.remove(&(deadline, key.to_vec()));
        }
    }

    /// Removes every key whose deadline is at or before `now`; returns the
    /// earliest deadline left.
    fn remove_expired(&mut self, now: Instant) -> Option<Instant> {
        while let Some((deadline, _)) = self.expirations.first() {
            if *deadline > now {
                return Some(*deadline);
            }
            let (_, key) = self.expirations.pop_first().expect("first exists");
            self.entries.remove(&key);
        }
        None
    }
}

//! Pub/sub: which connections listen on which channel, and fan-out.
//!
//! The registry maps a channel name to its subscribers, each a connection id
//! and that connection's [`Mailbox`]. PUBLISH encodes the `message` frame
//! once and appends its bytes to every subscriber's mailbox under the
//! registry's lock; each subscriber connection's writer coroutine wakes and
//! writes what it finds. Holding the lock for the whole fan-out gives every
//! subscriber of a channel the messages in the same order, and a publisher
//! never waits on a slow subscriber: a mailbox push is a memory copy, and a
//! mailbox that has grown past its limit refuses the push and has its
//! connection dropped (see `Mailbox`). PUBLISH replies with the number of
//! mailboxes that took the message.
//!
//! The lock is a std `Mutex` held for map operations and mailbox pushes only,
//! never across a park (see `sync.rs`).
//!
//! (tokio's mini-redis gives each channel a `broadcast` channel of 1,024
//! messages, and a subscriber that falls behind silently skips what it
//! missed; here nothing is skipped without the connection being closed.)

use std::collections::HashMap;
use std::sync::Arc;

use super::resp;
use super::sync::{Mailbox, Mutex, lock};

/// All channels of one server and their subscribers.
#[derive(Default)]
pub struct Registry {
    channels: Mutex<HashMap<Vec<u8>, Vec<Subscriber>>>,
}

struct Subscriber {
    connection: u64,
    mailbox: Arc<Mailbox>,
}

impl Registry {
    /// Adds `connection` (whose output goes to `mailbox`) to `channel`'s
    /// subscribers; the caller knows it is not there yet.
    pub fn subscribe(&self, channel: &[u8], connection: u64, mailbox: &Arc<Mailbox>) {
        lock(&self.channels)
            .entry(channel.to_vec())
            .or_default()
            .push(Subscriber {
                connection,
                mailbox: Arc::clone(mailbox),
            });
    }

    /// Removes `connection` from `channel`'s subscribers.
    pub fn unsubscribe(&self, channel: &[u8], connection: u64) {
        let mut channels = lock(&self.channels);
        if let Some(subscribers) = channels.get_mut(channel) {
            subscribers.retain(|s| s.connection != connection);
            if subscribers.is_empty() {
                channels.remove(channel);
            }
        }
    }

    /// Sends `message` to every subscriber of `channel`; returns how many
    /// took it.
    pub fn publish(&self, channel: &[u8], message: &[u8]) -> usize {
        let mut frame = Vec::with_capacity(message.len() + channel.len() + 32);
        resp::push_array_header(&mut frame, 3);
        resp::push_bulk(&mut frame, b"message");
        resp::push_bulk(&mut frame, channel);
        resp::push_bulk(&mut frame, message);
        let channels = lock(&self.channels);
        channels.get(channel).map_or(0, |subscribers| {
            subscribers
                .iter()
                .filter(|s| s.mailbox.push(&frame))
                .count()
        })
    }

    /// How many connections are subscribed to `channel`.
    pub fn subscribers(&self, channel: &[u8]) -> usize {
        lock(&self.channels).get(channel).map_or(0, Vec::len)
    }
}

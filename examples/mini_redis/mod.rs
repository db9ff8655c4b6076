//! mini-redis on fibra: a Redis subset served by plain sequential code, one
//! coroutine per connection.
//!
//! This is the server of tokio's mini-redis (the teaching server built on
//! async tasks, `Mutex<HashMap>` and broadcast channels) written the way a
//! thread-per-connection server is written — blocking reads and writes, a
//! loop per client — and run on fibra's coroutines, so that waiting costs no
//! thread. The parts:
//!
//! - `resp.rs` — RESP2 framing: complete requests out of the input bytes
//!   (arrays of bulk strings and inline commands), replies into the output;
//! - `command.rs` — the commands (GET, SET with EX/PX, PUBLISH, SUBSCRIBE,
//!   UNSUBSCRIBE, PING, QUIT, CONFIG GET) and Redis's error replies;
//! - `connection.rs` — one client: read, answer every complete request,
//!   write once; a subscribed client gets a second, writer coroutine;
//! - `db.rs` — the key space, and the coroutine that expires keys;
//! - `pubsub.rs` — channels, subscribers, fan-out;
//! - `sync.rs` — the locks and waits the others share, on `fibra::sync`
//!   (`Mutex`, `Condvar`): waits park the coroutine, not the worker.
//!
//! [`serve`] is the accept loop; the example binary (`examples/mini_redis.rs`)
//! and the tests (`tests/mini_redis*.rs`) both run it.

#![allow(dead_code)] // the example binary and the tests use different parts

pub mod command;
pub mod connection;
pub mod db;
pub mod pubsub;
pub mod resp;
pub mod sync;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fibra::net::TcpListener;

/// The most bytes a subscriber may have waiting to be written before the
/// server drops it (Redis's hard limit for pub/sub clients: 32 MiB).
pub const DEFAULT_MAILBOX_LIMIT: usize = 32 * 1024 * 1024;

/// What all connections of one server share.
pub struct Shared {
    pub db: db::Db,
    pub pubsub: pubsub::Registry,
    /// The output a subscriber may let pile up (see `sync::Mailbox`).
    pub mailbox_limit: usize,
    next_connection: AtomicU64,
}

impl Shared {
    /// An empty server state whose subscribers may have `mailbox_limit`
    /// bytes waiting.
    pub fn new(mailbox_limit: usize) -> Shared {
        Shared {
            db: db::Db::new(),
            pubsub: pubsub::Registry::default(),
            mailbox_limit,
            next_connection: AtomicU64::new(1),
        }
    }

    fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// Accepts connections on `listener` and serves each in a coroutine of its
/// own; runs the expiry coroutine alongside. Returns only on an error of the
/// listener itself (running out of file descriptors is waited out).
pub fn serve(listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let expiry = Arc::clone(&shared);
    let _expiry = ExpiryStop(Arc::clone(&shared));
    fibra::spawn(move || expiry.db.run_expiry());
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if is_transient(&err) => {
                // Out of file descriptors, say: pause rather than spin.
                eprintln!("mini_redis: accept: {err}");
                fibra::sleep(Duration::from_millis(10));
                continue;
            }
            Err(err) => return Err(err),
        };
        // Replies are written once per batch: nothing to gain from Nagle.
        stream.set_nodelay(true)?;
        let shared = Arc::clone(&shared);
        let spawned = fibra::Builder::new().spawn(move || {
            let _ = connection::serve(stream, shared);
        });
        if let Err(err) = spawned {
            // No room for another coroutine (the error says which limit):
            // this client is dropped, the server goes on.
            eprintln!("mini_redis: cannot serve a new connection: {err}");
            fibra::sleep(Duration::from_millis(10));
        }
    }
}

/// Errors after which accepting again makes sense.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    ) || err.kind() == io::ErrorKind::ConnectionAborted
}

/// Stops the expiry coroutine when the accept loop ends (or is cancelled).
struct ExpiryStop(Arc<Shared>);

impl Drop for ExpiryStop {
    fn drop(&mut self) {
        self.0.db.shutdown();
    }
}

//! What the mini-redis tests share: a server on 127.0.0.1 (the example's
//! own code, included from `examples/mini_redis/`) running on a fibra
//! runtime of its own, a raw-socket client for byte-exact checks, and a
//! reader of RESP2 replies that checks their framing.

#![allow(dead_code)] // each test file uses a different part

#[path = "../../examples/mini_redis/mod.rs"]
pub mod mini_redis;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use mini_redis::Shared;

/// How long any client read may wait before the test fails instead of
/// hanging.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A running server; dropping it cancels every coroutine of its runtime.
pub struct Server {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    _runtime: fibra::Runtime,
}

impl Server {
    /// A server on an ephemeral port, 2 workers, Redis's subscriber limit.
    pub fn start() -> Server {
        Server::with(2, mini_redis::DEFAULT_MAILBOX_LIMIT)
    }

    /// A server on `workers` workers whose subscribers may have `limit`
    /// bytes waiting.
    pub fn with(workers: usize, limit: usize) -> Server {
        let runtime = fibra::Runtime::builder().workers(workers).build().unwrap();
        let listener = fibra::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::new(limit));
        let serving = Arc::clone(&shared);
        runtime.spawn(move || mini_redis::serve(listener, serving));
        Server {
            addr,
            shared,
            _runtime: runtime,
        }
    }

    /// A `redis` crate client connection with read and write timeouts.
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://{}/", self.addr)).unwrap();
        let connection = client.get_connection_with_timeout(TIMEOUT).unwrap();
        connection.set_read_timeout(Some(TIMEOUT)).unwrap();
        connection.set_write_timeout(Some(TIMEOUT)).unwrap();
        connection
    }

    /// A plain socket with a read timeout.
    pub fn raw(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream
    }
}

/// Waits (bounded by [`TIMEOUT`]) until `condition` holds; false if it
/// never did.
pub fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    condition()
}

/// Reads exactly `expected.len()` bytes and returns them as text (lossy),
/// for an exact comparison with `expected`.
pub fn read_exact_text(stream: &mut TcpStream, expected: &str) -> String {
    let mut buf = vec![0; expected.len()];
    match stream.read_exact(&mut buf) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(err) => panic!("reading {expected:?}: {err}"),
    }
}

/// Writes `input`, closes the sending side, and reads until the server
/// closes the connection. Err if the server did not close within
/// [`TIMEOUT`].
pub fn send_and_read_to_end(stream: &mut TcpStream, input: &[u8]) -> io::Result<Vec<u8>> {
    // The server may close before it has read everything (a protocol
    // error): a failed write is then expected.
    let _ = stream.write_all(input);
    let _ = stream.shutdown(Shutdown::Write);
    let mut replies = Vec::new();
    loop {
        let mut buf = [0; 4096];
        match stream.read(&mut buf) {
            Ok(0) => return Ok(replies),
            Ok(n) => replies.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => return Ok(replies),
            Err(err) => return Err(err),
        }
    }
}

/// Splits `bytes` into RESP2 replies, checking the framing of each; Err
/// says where it breaks. A reply cut off at the end is an error too.
pub fn split_replies(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut replies = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let end = reply_end(bytes, pos)?;
        replies.push(&bytes[pos..end]);
        pos = end;
    }
    Ok(replies)
}

fn reply_end(bytes: &[u8], pos: usize) -> Result<usize, String> {
    let line_end = bytes[pos..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| pos + i)
        .ok_or_else(|| format!("no line end after byte {pos}"))?;
    let line = std::str::from_utf8(&bytes[pos + 1..line_end]).map_err(|e| e.to_string())?;
    let next = line_end + 2;
    match bytes[pos] {
        b'+' | b'-' => Ok(next),
        b':' => line.parse::<i64>().map(|_| next).map_err(|e| e.to_string()),
        b'$' => {
            let len: i64 = line
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())?;
            if len < 0 {
                return Ok(next);
            }
            let end = next + len as usize;
            if bytes.get(end..end + 2) != Some(b"\r\n") {
                return Err(format!("bulk string at byte {pos} not terminated"));
            }
            Ok(end + 2)
        }
        b'*' => {
            let len: i64 = line
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())?;
            let mut at = next;
            for _ in 0..len.max(0) {
                if at >= bytes.len() {
                    return Err(format!("array at byte {pos} cut off"));
                }
                at = reply_end(bytes, at)?;
            }
            Ok(at)
        }
        other => Err(format!("byte {pos} starts no reply: {other:#x}")),
    }
}

//! One client connection, served by one coroutine in plain blocking style:
//! read, answer every complete request, write, repeat.
//!
//! # Batching (pipelining)
//!
//! A read takes whatever the client has sent — one request or a pipeline of
//! hundreds. Every complete request in the input is answered into one output
//! buffer, which is written with one `write` (the socket parks the coroutine
//! if the kernel's buffer is full). So `redis-benchmark -P 16` costs one read
//! and one write per 16 requests. An incomplete request at the end of the
//! input stays where it is; the next read appends to it. The input buffer
//! starts at 16 KiB and grows (doubling) only while one request does not fit,
//! up to [`MAX_INPUT`]; both buffers are reused, so the steady state
//! allocates nothing per request. The alternative, a write per reply (tokio's
//! mini-redis flushes after every frame), measured 2.9 µs of server CPU per
//! request under `redis-benchmark -P 16` against 0.7–0.9 µs for this loop
//! (BENCHMARKS.md).
//!
//! # Subscriber mode: a second coroutine writes
//!
//! A subscribed connection must write at two kinds of moments: when the
//! client sends a command, and when someone publishes to its channels. A
//! coroutine blocked in `read` cannot do the second, so the first SUBSCRIBE
//! starts a writer coroutine and a [`Mailbox`]. From then on everything this
//! connection sends — its own replies as well as published messages — goes
//! into the mailbox, and the writer writes it out in arrival order with one
//! `write` per wake-up. Before it hands over, the reader writes what it has
//! answered so far itself, so replies keep their order.
//!
//! The race this closes: a message published to a channel right after the
//! connection subscribed must not reach the client before the subscription's
//! confirmation. So SUBSCRIBE pushes the confirmation into the mailbox
//! *before* it adds the connection to the registry, and UNSUBSCRIBE removes
//! it from the registry before it queues the confirmation.
//!
//! When the reader ends (end of input, an error, QUIT, a protocol error), it
//! unsubscribes from everything, closes the mailbox and joins the writer,
//! which writes what is queued and ends. When the writer fails (the peer is
//! gone) it shuts the socket down, which ends the reader's `read`. When the
//! mailbox overflows because the client does not read, the pusher shuts the
//! socket down: that ends both the writer's stuck `write` and the reader.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use fibra::JoinHandle;
use fibra::net::TcpStream;

use super::Shared;
use super::command::{self, Outcome, Request};
use super::resp::{self, push_array_header, push_bulk, push_error, push_integer, push_null};
use super::sync::{Mailbox, MailboxState};

/// The input buffer's first size.
const INITIAL_INPUT: usize = 16 * 1024;

/// The most input one connection may buffer for a single request; a larger
/// request is a protocol error.
pub const MAX_INPUT: usize = 64 * 1024 * 1024;

/// Serves one client until it disconnects, sends QUIT or breaks the
/// protocol. Errors are the socket's (a reset peer, say).
pub fn serve(stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    let mut connection = Connection {
        input: Input::new(),
        args: Vec::new(),
        out: Vec::with_capacity(INITIAL_INPUT),
        session: Session {
            id: shared.next_connection_id(),
            shared,
            stream: Arc::new(stream),
            channels: Vec::new(),
            mailbox: None,
            writer: None,
        },
    };
    let result = connection.run();
    connection.session.finish();
    result
}

struct Connection {
    input: Input,
    /// The current request's arguments, as ranges of the input.
    args: Vec<std::ops::Range<usize>>,
    /// Replies not yet written (or pushed to the mailbox).
    out: Vec<u8>,
    session: Session,
}

/// Everything about the connection except its buffers.
struct Session {
    id: u64,
    shared: Arc<Shared>,
    stream: Arc<TcpStream>,
    /// The channels subscribed to, in subscription order.
    channels: Vec<Vec<u8>>,
    /// Set by the first SUBSCRIBE: from then on all output goes here.
    mailbox: Option<Arc<Mailbox>>,
    writer: Option<JoinHandle<()>>,
}

impl Connection {
    fn run(&mut self) -> io::Result<()> {
        loop {
            if self.input.fill(&self.session.stream)? == 0 {
                return Ok(()); // the client closed; a partial request is dropped
            }
            let open = self.answer_buffered()?;
            self.session.send(&mut self.out)?;
            if !open {
                return Ok(());
            }
        }
    }

    /// Answers every complete request in the input. False when the
    /// connection is to close once the replies are out (QUIT, or input that
    /// breaks the protocol).
    fn answer_buffered(&mut self) -> io::Result<bool> {
        loop {
            let pending = self.input.pending();
            let len = match resp::parse(pending, &mut self.args) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    if pending.len() >= MAX_INPUT {
                        push_error(&mut self.out, "ERR Protocol error: request too large");
                        return Ok(false);
                    }
                    return Ok(true);
                }
                Err(resp::ProtocolError(message)) => {
                    push_error(&mut self.out, &format!("ERR Protocol error: {message}"));
                    return Ok(false);
                }
            };
            let request = Request {
                input: pending,
                args: &self.args,
            };
            let subscribed = !self.session.channels.is_empty();
            match command::execute(&request, &self.session.shared, subscribed, &mut self.out) {
                Outcome::Done => {}
                Outcome::Quit => return Ok(false),
                Outcome::Subscribe => self.session.subscribe(&request, &mut self.out)?,
                Outcome::Unsubscribe => self.session.unsubscribe(&request, &mut self.out),
                Outcome::Punsubscribe => self.session.punsubscribe(&request, &mut self.out),
            }
            self.input.consume(len);
        }
    }
}

impl Session {
    /// Sends the replies in `out`: written directly, or, once subscribed,
    /// pushed to the mailbox for the writer.
    fn send(&self, out: &mut Vec<u8>) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        match &self.mailbox {
            // A refused push means the writer is dropping the connection,
            // which the next read will see.
            Some(mailbox) => {
                mailbox.push(out);
            }
            None => (&*self.stream).write_all(out)?,
        }
        out.clear();
        Ok(())
    }

    fn subscribe(&mut self, request: &Request, out: &mut Vec<u8>) -> io::Result<()> {
        let mailbox = match &self.mailbox {
            Some(mailbox) => Arc::clone(mailbox),
            None => {
                self.send(out)?;
                let socket = Arc::clone(&self.stream);
                let mailbox = Arc::new(Mailbox::new(self.shared.mailbox_limit, move || {
                    let _ = socket.shutdown(Shutdown::Both);
                }));
                let stream = Arc::clone(&self.stream);
                let queue = Arc::clone(&mailbox);
                // An error (no room for another coroutine) ends this
                // connection, not the server.
                self.writer = Some(
                    fibra::Builder::new()
                        .name("mini_redis subscriber writer".into())
                        .spawn(move || write_mailbox(&stream, &queue))?,
                );
                self.mailbox = Some(Arc::clone(&mailbox));
                mailbox
            }
        };
        for i in 1..request.len() {
            let channel = request.arg(i);
            let new = !self.channels.iter().any(|c| c == channel);
            if new {
                self.channels.push(channel.to_vec());
            }
            confirmation(out, b"subscribe", Some(channel), self.channels.len());
            // The confirmation is queued before any message can be (see the
            // module docs), together with the replies answered before it.
            mailbox.push(out);
            out.clear();
            if new {
                self.shared.pubsub.subscribe(channel, self.id, &mailbox);
            }
        }
        Ok(())
    }

    fn unsubscribe(&mut self, request: &Request, out: &mut Vec<u8>) {
        let channels: Vec<Vec<u8>> = if request.len() > 1 {
            (1..request.len())
                .map(|i| request.arg(i).to_vec())
                .collect()
        } else {
            self.channels.clone()
        };
        if channels.is_empty() {
            confirmation(out, b"unsubscribe", None, 0);
        }
        for channel in channels {
            if let Some(at) = self.channels.iter().position(|c| *c == channel) {
                self.channels.remove(at);
                self.shared.pubsub.unsubscribe(&channel, self.id);
            }
            confirmation(out, b"unsubscribe", Some(&channel), self.channels.len());
        }
    }

    /// Confirms leaving the patterns named (or "all", none): the channel
    /// subscriptions stay, and their count is what Redis reports.
    fn punsubscribe(&self, request: &Request, out: &mut Vec<u8>) {
        let count = self.channels.len();
        if request.len() == 1 {
            confirmation(out, b"punsubscribe", None, count);
        }
        for i in 1..request.len() {
            confirmation(out, b"punsubscribe", Some(request.arg(i)), count);
        }
    }

    /// Leaves every channel, lets the writer write what is queued, and waits
    /// for it to end.
    fn finish(&mut self) {
        for channel in self.channels.drain(..) {
            self.shared.pubsub.unsubscribe(&channel, self.id);
        }
        if let Some(mailbox) = self.mailbox.take() {
            mailbox.close();
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// `["subscribe" | "unsubscribe", channel or null, count]`
fn confirmation(out: &mut Vec<u8>, kind: &[u8], channel: Option<&[u8]>, count: usize) {
    push_array_header(out, 3);
    push_bulk(out, kind);
    match channel {
        Some(channel) => push_bulk(out, channel),
        None => push_null(out),
    }
    push_integer(out, count as i64);
}

/// The writer coroutine of a subscribed connection (see the module docs).
fn write_mailbox(stream: &TcpStream, mailbox: &Mailbox) {
    let mut bytes = Vec::new();
    loop {
        let state = mailbox.take(&mut bytes);
        if state == MailboxState::Overflowed {
            break;
        }
        let mut writer = stream;
        if !bytes.is_empty() && writer.write_all(&bytes).is_err() {
            break;
        }
        bytes.clear();
        if state == MailboxState::Closed {
            return;
        }
    }
    // Failed: take no more, and end the reader's read.
    mailbox.close();
    let _ = stream.shutdown(Shutdown::Both);
}

/// The input buffer: `buf[start..end]` is read and not yet answered.
struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    fn new() -> Input {
        Input {
            buf: vec![0; INITIAL_INPUT],
            start: 0,
            end: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, len: usize) {
        self.start += len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once into the free tail, making room first (moving the
    /// pending bytes to the front, or growing the buffer if they fill it).
    /// Returns the bytes read; 0 at the end of input.
    fn fill(&mut self, stream: &TcpStream) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // Parsing has seen these bytes and said "incomplete"; it
                // refuses a request beyond MAX_INPUT before we get here.
                let size = (self.buf.len() * 2).min(MAX_INPUT);
                self.buf.resize(size, 0);
            }
        }
        let mut reader = stream;
        let n = reader.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }
}

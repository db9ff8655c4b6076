//! The commands: what each request does and what it answers.
//!
//! The set is tokio's mini-redis's — GET, SET with EX or PX, PUBLISH,
//! SUBSCRIBE, UNSUBSCRIBE, PING — plus QUIT, PUNSUBSCRIBE (answered, as
//! no pattern is ever subscribed), and CONFIG GET for the two
//! parameters `redis-benchmark` asks for before it starts (`save` and
//! `appendonly`; without answers it warns that it could not fetch the
//! server's configuration). Command names are matched without regard to
//! case; the error replies use Redis's wording, so clients that look at
//! them (the `redis` crate's error kinds) classify them as Redis would.
//!
//! [`execute`] runs every command that needs no more than the shared state
//! and appends its reply. SUBSCRIBE and UNSUBSCRIBE change the connection
//! itself (its mailbox, its channels), so it only recognises them and leaves
//! them to `connection.rs`.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::Shared;
use super::resp::{parse_i64, push_array_header, push_bulk, push_error, push_integer, push_simple};

/// One parsed request: its arguments are ranges of the connection's input.
pub struct Request<'a> {
    pub input: &'a [u8],
    pub args: &'a [Range<usize>],
}

impl<'a> Request<'a> {
    /// The number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Argument `i` (0 is the command name).
    pub fn arg(&self, i: usize) -> &'a [u8] {
        &self.input[self.args[i].clone()]
    }

    /// Whether the command name is `name` (given in lower case).
    fn is(&self, name: &str) -> bool {
        self.arg(0).eq_ignore_ascii_case(name.as_bytes())
    }
}

/// What the connection must do after [`execute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The reply (if any) is in the output buffer.
    Done,
    /// QUIT: the reply is in the output buffer; close after writing it.
    Quit,
    /// SUBSCRIBE with at least one channel: for the connection to run.
    Subscribe,
    /// UNSUBSCRIBE: for the connection to run.
    Unsubscribe,
    /// PUNSUBSCRIBE: patterns are not supported, so there is none to leave,
    /// but clients send it when they leave pub/sub mode (the `redis` crate
    /// does), and it must be answered as Redis answers it.
    Punsubscribe,
}

/// What Redis allows while a connection is subscribed to a channel (RESP2).
const SUBSCRIBED_ONLY: &str =
    "only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";

/// Runs `request` against `shared`, appending its reply to `out`. A
/// `subscribed` connection may run only the pub/sub commands, PING and QUIT.
pub fn execute(request: &Request, shared: &Shared, subscribed: bool, out: &mut Vec<u8>) -> Outcome {
    if request.len() == 0 {
        return Outcome::Done; // an empty line or `*0`: Redis answers nothing
    }
    // The two that carry the load first.
    if !subscribed && request.is("get") {
        if request.len() != 2 {
            wrong_arguments(out, "get");
        } else {
            shared.db.get_into(request.arg(1), out);
        }
        return Outcome::Done;
    }
    if !subscribed && request.is("set") {
        set(request, shared, out);
        return Outcome::Done;
    }
    if request.is("subscribe") {
        if request.len() < 2 {
            wrong_arguments(out, "subscribe");
            return Outcome::Done;
        }
        return Outcome::Subscribe;
    }
    if request.is("unsubscribe") {
        return Outcome::Unsubscribe;
    }
    if request.is("punsubscribe") {
        return Outcome::Punsubscribe;
    }
    if request.is("ping") {
        ping(request, subscribed, out);
        return Outcome::Done;
    }
    if request.is("quit") {
        push_simple(out, "OK");
        return Outcome::Quit;
    }
    if subscribed {
        let name = String::from_utf8_lossy(request.arg(0)).to_lowercase();
        push_error(
            out,
            &format!("ERR Can't execute '{name}': {SUBSCRIBED_ONLY}"),
        );
        return Outcome::Done;
    }
    if request.is("publish") {
        if request.len() != 3 {
            wrong_arguments(out, "publish");
        } else {
            let receivers = shared.pubsub.publish(request.arg(1), request.arg(2));
            push_integer(out, receivers as i64);
        }
    } else if request.is("config") {
        config(request, out);
    } else {
        unknown(request, out);
    }
    Outcome::Done
}

/// `SET key value [EX seconds | PX milliseconds]`
fn set(request: &Request, shared: &Shared, out: &mut Vec<u8>) {
    if request.len() < 3 {
        return wrong_arguments(out, "set");
    }
    let mut expires_at = None;
    let mut i = 3;
    while i < request.len() {
        let option = request.arg(i);
        let unit = if option.eq_ignore_ascii_case(b"ex") {
            Duration::from_secs(1)
        } else if option.eq_ignore_ascii_case(b"px") {
            Duration::from_millis(1)
        } else {
            return push_error(out, "ERR syntax error");
        };
        if expires_at.is_some() || i + 1 >= request.len() {
            return push_error(out, "ERR syntax error");
        }
        let Some(amount) = parse_i64(request.arg(i + 1)) else {
            return push_error(out, "ERR value is not an integer or out of range");
        };
        let deadline = u32::try_from(amount)
            .ok()
            .filter(|&n| n > 0)
            .and_then(|n| unit.checked_mul(n))
            .and_then(|ttl| Instant::now().checked_add(ttl));
        let Some(deadline) = deadline else {
            return push_error(out, "ERR invalid expire time in 'set' command");
        };
        expires_at = Some(deadline);
        i += 2;
    }
    shared.db.set(request.arg(1), request.arg(2), expires_at);
    push_simple(out, "OK");
}

/// `PING [message]`; a subscribed connection gets `["pong", message]`.
fn ping(request: &Request, subscribed: bool, out: &mut Vec<u8>) {
    let message = match request.len() {
        1 => None,
        2 => Some(request.arg(1)),
        _ => return wrong_arguments(out, "ping"),
    };
    if subscribed {
        push_array_header(out, 2);
        push_bulk(out, b"pong");
        push_bulk(out, message.unwrap_or(b""));
    } else {
        match message {
            None => push_simple(out, "PONG"),
            Some(message) => push_bulk(out, message),
        }
    }
}

/// The parameters CONFIG GET knows, with the values a server that keeps
/// nothing on disk has.
const CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "no")];

/// `CONFIG GET parameter [parameter ...]`: the known parameters that match
/// (by name, or all for `*`), as name/value pairs.
fn config(request: &Request, out: &mut Vec<u8>) {
    if request.len() < 2 || !request.arg(1).eq_ignore_ascii_case(b"get") {
        let sub = if request.len() < 2 {
            String::new()
        } else {
            String::from_utf8_lossy(request.arg(1)).into_owned()
        };
        return push_error(
            out,
            &format!("ERR unknown subcommand '{sub}'. Only CONFIG GET is supported"),
        );
    }
    if request.len() < 3 {
        return wrong_arguments(out, "config|get");
    }
    let matches: Vec<&(&str, &str)> = CONFIG
        .iter()
        .filter(|(name, _)| {
            (2..request.len()).any(|i| {
                let pattern = request.arg(i);
                pattern == b"*" || pattern.eq_ignore_ascii_case(name.as_bytes())
            })
        })
        .collect();
    push_array_header(out, matches.len() * 2);
    for (name, value) in matches {
        push_bulk(out, name.as_bytes());
        push_bulk(out, value.as_bytes());
    }
}

fn wrong_arguments(out: &mut Vec<u8>, name: &str) {
    push_error(
        out,
        &format!("ERR wrong number of arguments for '{name}' command"),
    );
}

/// Redis's reply to a command it does not have, quoting the first arguments.
fn unknown(request: &Request, out: &mut Vec<u8>) {
    let quote = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(128)]).into_owned();
        format!("'{text}'")
    };
    let args: Vec<String> = (1..request.len().min(4))
        .map(|i| quote(request.arg(i)))
        .collect();
    push_error(
        out,
        &format!(
            "ERR unknown command {}, with args beginning with: {}",
            quote(request.arg(0)),
            args.join(" ")
        ),
    );
}

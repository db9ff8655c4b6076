//! RESP2 framing: finding complete requests in a connection's input, and
//! writing replies.
//!
//! # Requests
//!
//! A client sends either an array of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every client library and
//! `redis-benchmark` send) or an inline command (`GET k\r\n`, what a person
//! types into telnet: words split on spaces, no quoting). [`parse`] looks at
//! the start of the buffered input and says one of three things:
//!
//! - `Ok(Some(len))`: the first `len` bytes are one complete request, whose
//!   arguments it has put into `args` as ranges of the input (nothing is
//!   copied; the arguments stay in the read buffer while the command runs);
//! - `Ok(None)`: the bytes so far are the start of a valid request — read
//!   more and ask again (a prefix of a valid request is never an error);
//! - `Err(ProtocolError)`: the bytes cannot start a valid request. The
//!   framing is lost, so the connection answers `-ERR Protocol error: …` and
//!   closes, as Redis does.
//!
//! The limits bound what one connection can make the server buffer: a bulk
//! string of at most [`MAX_BULK_LEN`] bytes, at most [`MAX_ARGS`] arguments,
//! an inline command of at most [`MAX_INLINE_LEN`] bytes. A length line is
//! refused at its first byte that cannot belong to one (a letter, a 19th
//! digit), so a stream of garbage without a line end is refused after a few
//! bytes instead of being buffered.
//!
//! Parsing restarts at the start of the request after every read. It skips
//! bulk strings by their announced length, so a large request is rescanned
//! per read only over its length lines, not its data. A length line is read
//! in one pass (sign, digits, line end) and the arguments stay ranges: under
//! callgrind a GET then costs about 1,290 user-space instructions in the
//! whole server, where finding the line end first and parsing the digits
//! after cost about 1,440.
//!
//! # Replies
//!
//! The `push_*` functions append one RESP2 reply to an output buffer that the
//! connection writes once per batch of requests.

use std::ops::Range;

/// The largest bulk string accepted in a request (Redis allows 512 MiB; an
/// example server keeps the memory one client can pin smaller).
pub const MAX_BULK_LEN: usize = 16 * 1024 * 1024;

/// The most arguments one request may have (Redis's limit too).
pub const MAX_ARGS: usize = 1024 * 1024;

/// The longest inline command (Redis's limit too).
pub const MAX_INLINE_LEN: usize = 64 * 1024;

/// Why the input cannot be a request; the message follows "Protocol error: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// Looks for one complete request at the start of `input` (see the module
/// docs). On `Ok(Some(_))`, `args` holds its arguments as ranges of `input`;
/// otherwise its contents are unspecified.
pub fn parse(input: &[u8], args: &mut Vec<Range<usize>>) -> Result<Option<usize>, ProtocolError> {
    args.clear();
    match input.first() {
        None => Ok(None),
        Some(b'*') => parse_array(input, args),
        Some(_) => parse_inline(input, args),
    }
}

fn parse_array(input: &[u8], args: &mut Vec<Range<usize>>) -> Result<Option<usize>, ProtocolError> {
    let Some((count, mut pos)) = length_line(input, 0, "multibulk")? else {
        return Ok(None);
    };
    // `*0` and `*-1` are empty requests: Redis skips them.
    if count <= 0 {
        return Ok(Some(pos));
    }
    if count as u64 > MAX_ARGS as u64 {
        return Err(ProtocolError("invalid multibulk length".into()));
    }
    for _ in 0..count {
        match input.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&other) => {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    char::from(other).escape_default()
                )));
            }
        }
        let Some((len, data)) = length_line(input, pos, "bulk")? else {
            return Ok(None);
        };
        if len < 0 || len as u64 > MAX_BULK_LEN as u64 {
            return Err(ProtocolError("invalid bulk length".into()));
        }
        let end = data + len as usize;
        if input.len() < end + 2 {
            // Check the part of the line end that is there already.
            if input.len() > end && input[end] != b'\r' {
                return Err(ProtocolError("bulk string not followed by CRLF".into()));
            }
            return Ok(None);
        }
        if &input[end..end + 2] != b"\r\n" {
            return Err(ProtocolError("bulk string not followed by CRLF".into()));
        }
        args.push(data..end);
        pos = end + 2;
    }
    Ok(Some(pos))
}

/// Reads the `*N\r\n` or `$N\r\n` line that starts at `start`: the number and
/// where the next line starts, or `None` if the line is not complete yet.
/// One pass over the bytes (this runs two or three times per request): an
/// optional `-`, 1 to 18 digits (every valid length has fewer), `\r\n`.
fn length_line(
    input: &[u8],
    start: usize,
    what: &str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let invalid = || ProtocolError(format!("invalid {what} length"));
    let mut at = start + 1;
    let negative = input.get(at) == Some(&b'-');
    if negative {
        at += 1;
    }
    let digits = at;
    let mut value: i64 = 0;
    loop {
        match input.get(at) {
            None => return Ok(None),
            Some(b'\r') => break,
            Some(&d) if d.is_ascii_digit() && at - digits < 18 => {
                value = value * 10 + i64::from(d - b'0');
                at += 1;
            }
            Some(_) => return Err(invalid()),
        }
    }
    if at == digits {
        return Err(invalid());
    }
    match input.get(at + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((if negative { -value } else { value }, at + 2))),
        Some(_) => Err(invalid()),
    }
}

fn parse_inline(
    input: &[u8],
    args: &mut Vec<Range<usize>>,
) -> Result<Option<usize>, ProtocolError> {
    let Some(newline) = input.iter().take(MAX_INLINE_LEN).position(|&b| b == b'\n') else {
        if input.len() >= MAX_INLINE_LEN {
            return Err(ProtocolError("too big inline request".into()));
        }
        return Ok(None);
    };
    let line_end = if newline > 0 && input[newline - 1] == b'\r' {
        newline - 1
    } else {
        newline
    };
    let mut word_start = None;
    for (i, &b) in input[..line_end].iter().enumerate() {
        let blank = b == b' ' || b == b'\t';
        match (word_start, blank) {
            (None, false) => word_start = Some(i),
            (Some(s), true) => {
                args.push(s..i);
                word_start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = word_start {
        args.push(s..line_end);
    }
    Ok(Some(newline + 1))
}

/// A decimal integer as Redis writes lengths: an optional `-`, then 1 to 19
/// digits, nothing else.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

// ---------------------------------------------------------------------------
// Replies

/// `+text\r\n`
pub fn push_simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `-message\r\n` (line breaks in the message would break the framing, so
/// they become spaces).
pub fn push_error(out: &mut Vec<u8>, message: &str) {
    out.push(b'-');
    out.extend(
        message
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// `:n\r\n`
pub fn push_integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `$len\r\nbytes\r\n`
pub fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_decimal(out, bytes.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// `$-1\r\n`, the null bulk string (GET of a missing key).
pub fn push_null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// `*len\r\n`, the header of an array whose `len` elements follow.
pub fn push_array_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    push_decimal(out, len as i64);
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in decimal without going through `fmt` (this is on the path
/// of every GET reply).
fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

//! The request logic every HTTP example server shares, so that comparing them
//! compares their I/O models and nothing else.
//!
//! [`respond`] is a minimal keep-alive HTTP/1.1 responder: given the bytes a
//! connection has buffered so far, it parses as many complete requests as are
//! there (pipelining), appends one fixed `200 OK` ("Hello, world!") response
//! per request to an output buffer, and says how many input bytes it used and
//! whether the connection must close once the output is written. A request is
//! a request line and header lines up to an empty line, plus a
//! `Content-Length` body if it has one. `Connection: close`, and HTTP/1.0
//! without `Connection: keep-alive`, close after the response. A malformed
//! request gets `400 Bad Request`, a header block over [`MAX_HEADER_BYTES`]
//! `431`, a body over [`MAX_BODY_BYTES`] `413`, a `Transfer-Encoding` (chunked
//! bodies are not supported) `501`; each of these closes the connection.
//!
//! [`Session`] is one connection's state on top of it: the input buffer (read
//! into its free tail, grown only while a single request does not fit) and the
//! output buffer with how much of it has been written. Both are reused, so
//! the steady state allocates nothing per request. [`serve`] is the whole
//! blocking connection loop (read, respond, write) for anything that is
//! `Read + Write`: the thread-per-connection server runs it on a
//! `std::net::TcpStream`, the fibra server on a `fibra::net::TcpStream`.
//!
//! Each example includes this file with
//! `#[path = "http_common/mod.rs"] mod http_common;`; cargo does not take the
//! directory for an example because it has no `main.rs`.

#![allow(dead_code)] // each example uses a different part

use std::io::{self, Read, Write};

/// The largest request line plus header block (with its terminating empty
/// line) accepted; more without the end of the headers gets a 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// The largest `Content-Length` accepted; more gets a 413.
pub const MAX_BODY_BYTES: u64 = 1 << 20;

/// The body of every successful response.
pub const BODY: &[u8] = b"Hello, world!";

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";
// HTTP/1.0 closes by default, so a kept-alive 1.0 connection is announced.
const OK_KEEP_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";
const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const HEADERS_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const BODY_TOO_LARGE: &[u8] =
    b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const NOT_IMPLEMENTED: &[u8] =
    b"HTTP/1.1 501 Not Implemented\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// What [`respond`] did with the input it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes used: the complete requests answered. The rest is the
    /// start of a request still to come; keep it and append to it.
    pub consumed: usize,
    /// Close the connection once the output is written; ignore further input.
    pub close: bool,
}

/// Answers every complete request at the start of `input`, appending the
/// responses to `out`.
pub fn respond(input: &[u8], out: &mut Vec<u8>) -> Progress {
    let mut pos = 0;
    loop {
        match parse_request(&input[pos..]) {
            Parsed::Incomplete => {
                return Progress {
                    consumed: pos,
                    close: false,
                };
            }
            Parsed::Request {
                len,
                head,
                keep_alive,
                http10,
            } => {
                let response = match (keep_alive, http10) {
                    (false, _) => OK_CLOSE,
                    (true, false) => OK,
                    (true, true) => OK_KEEP_ALIVE,
                };
                let response = if head {
                    &response[..response.len() - BODY.len()]
                } else {
                    response
                };
                out.extend_from_slice(response);
                pos += len;
                if !keep_alive {
                    return Progress {
                        consumed: pos,
                        close: true,
                    };
                }
            }
            Parsed::Error(response) => {
                out.extend_from_slice(response);
                return Progress {
                    consumed: input.len(),
                    close: true,
                };
            }
        }
    }
}

/// One request at the start of a buffer.
enum Parsed {
    /// Not all of it has arrived yet.
    Incomplete,
    /// A complete request of `len` bytes (blank lines before it included).
    Request {
        len: usize,
        head: bool,
        keep_alive: bool,
        http10: bool,
    },
    /// A request that will never be valid; answer with this and close.
    Error(&'static [u8]),
}

/// The header fields the responder acts on.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    close: bool,
    keep_alive: bool,
    transfer_encoding: bool,
}

fn parse_request(buf: &[u8]) -> Parsed {
    // The header budget counts from the first byte, so that it also bounds
    // the empty lines a server should ignore before a request line (RFC 9112
    // §2.2).
    let window = &buf[..buf.len().min(MAX_HEADER_BYTES)];
    let incomplete = || {
        if window.len() == MAX_HEADER_BYTES {
            Parsed::Error(HEADERS_TOO_LARGE)
        } else {
            Parsed::Incomplete
        }
    };
    let mut start = 0;
    while let Some((b"", next)) = next_line(window, start) {
        start = next;
    }
    let Some((request_line, mut pos)) = next_line(window, start) else {
        return incomplete();
    };
    let Some((head, http10)) = parse_request_line(request_line) else {
        return Parsed::Error(BAD_REQUEST);
    };
    let mut fields = Fields::default();
    loop {
        let Some((line, next)) = next_line(window, pos) else {
            return incomplete();
        };
        pos = next;
        if line.is_empty() {
            break;
        }
        if !parse_header_line(line, &mut fields) {
            return Parsed::Error(BAD_REQUEST);
        }
    }

    if fields.transfer_encoding {
        return Parsed::Error(NOT_IMPLEMENTED);
    }
    let body = fields.content_length.unwrap_or(0);
    if body > MAX_BODY_BYTES {
        return Parsed::Error(BODY_TOO_LARGE);
    }
    let len = pos + body as usize;
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let keep_alive = !fields.close && (!http10 || fields.keep_alive);
    Parsed::Request {
        len,
        head,
        keep_alive,
        http10,
    }
}

/// The line starting at `from` without its `\r\n` (or bare `\n`), and where
/// the next line starts; `None` if the line has not ended yet.
#[inline]
fn next_line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let end = from + buf[from..].iter().position(|&b| b == b'\n')?;
    let line = &buf[from..end];
    Some((line.strip_suffix(b"\r").unwrap_or(line), end + 1))
}

/// `METHOD SP request-target SP HTTP/1.x`: whether the method is HEAD and
/// whether the version is 1.0.
fn parse_request_line(line: &[u8]) -> Option<(bool, bool)> {
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !is_token(method) || target.is_empty() {
        return None;
    }
    if !target.iter().all(|&b| b > b' ' && b != 0x7f) {
        return None;
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return None,
    };
    Some((method == b"HEAD", http10))
}

/// `name ":" OWS value OWS`, noting the fields the responder acts on; false
/// if the line is malformed (including obsolete line folding and stray CRs).
fn parse_header_line(line: &[u8], fields: &mut Fields) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = &line[..colon];
    let value = trim_ows(&line[colon + 1..]);
    if !is_token(name) || value.iter().any(|&b| b == b'\r' || b == 0) {
        return false;
    }
    if name.eq_ignore_ascii_case(b"content-length") {
        let Some(n) = parse_decimal(value) else {
            return false;
        };
        if fields.content_length.is_some_and(|m| m != n) {
            return false;
        }
        fields.content_length = Some(n);
    } else if name.eq_ignore_ascii_case(b"connection") {
        for option in value.split(|&b| b == b',').map(trim_ows) {
            fields.close |= option.eq_ignore_ascii_case(b"close");
            fields.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
        }
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        fields.transfer_encoding = true;
    }
    true
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 `token`: one or more `tchar`.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Initial (and usual) size of a connection's input buffer.
const READ_BUF_BYTES: usize = 4096;

/// One connection's buffers: the input not yet answered and the output not
/// yet written. Reused across requests; see the module comment.
pub struct Session {
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    written: usize,
}

impl Default for Session {
    fn default() -> Session {
        Session::new()
    }
}

impl Session {
    /// Empty buffers with room for the usual requests.
    pub fn new() -> Session {
        Session {
            input: vec![0; READ_BUF_BYTES],
            filled: 0,
            output: Vec::new(), // grows to what one read's answers need
            written: 0,
        }
    }

    /// Where the next read goes: the free tail of the input buffer, which is
    /// doubled if a request still incomplete fills it all ([`respond`] keeps
    /// that bounded: headers up to 8 KiB, bodies up to 1 MiB).
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.filled == self.input.len() {
            self.input.resize(self.input.len() * 2, 0);
        }
        &mut self.input[self.filled..]
    }

    /// Takes `n` bytes just read into [`Session::read_buf`], answers the
    /// requests now complete into the output, and returns whether the
    /// connection must close once the output is written.
    pub fn received(&mut self, n: usize) -> bool {
        self.filled += n;
        let progress = respond(&self.input[..self.filled], &mut self.output);
        if progress.consumed > 0 {
            self.input.copy_within(progress.consumed..self.filled, 0);
            self.filled -= progress.consumed;
            if self.filled == 0 && self.input.len() > 16 * READ_BUF_BYTES {
                // Do not keep a large body's buffer for the connection's life.
                self.input = vec![0; READ_BUF_BYTES];
            }
        }
        progress.close
    }

    /// The output not yet written.
    pub fn pending_output(&self) -> &[u8] {
        &self.output[self.written..]
    }

    /// Marks the first `n` bytes of [`Session::pending_output`] written.
    pub fn wrote(&mut self, n: usize) {
        self.written += n;
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
    }
}

/// Serves one connection with blocking calls until the peer closes it or a
/// response says to close: read what has arrived, answer it, write the
/// answers. Returns the first I/O error.
pub fn serve<S: Read + Write>(mut stream: S) -> io::Result<()> {
    let mut session = Session::new();
    loop {
        let n = match stream.read(session.read_buf()) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let close = session.received(n);
        let output = session.pending_output();
        let len = output.len();
        stream.write_all(output)?;
        session.wrote(len);
        if close {
            return Ok(());
        }
    }
}

/// The port from the last command-line argument (the benchmark tools'
/// convention), or `default` if there is none.
pub fn port_arg(default: u16) -> u16 {
    match std::env::args().skip(1).last() {
        Some(arg) => arg.parse().unwrap_or_else(|_| {
            eprintln!(
                "usage: {} [PORT]  (got {arg:?})",
                std::env::args().next().unwrap_or_default()
            );
            std::process::exit(2)
        }),
        None => default,
    }
}

/// A blocking std listener on 127.0.0.1:`port` with the kernel's largest
/// backlog: std listens with 128, which at thousands of connections
/// arriving at once drops SYNs (retried after 1 s, 3 s, ...) and measures
/// the backlog, not the server; fibra::net listens with the largest too.
pub fn listen_std(port: u16) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    // SAFETY: listen(2) again on a listening socket only resizes its
    // backlog.
    if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), libc::SOMAXCONN) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

/// Raises this process's soft limit on open files to its hard limit, so that
/// 10,000 connections fit; returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to write to.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit to read from.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

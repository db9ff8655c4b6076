//! The HTTP responder the example servers share (`examples/http_common`):
//! pipelining, bodies, keep-alive and close, and the error responses. The
//! tests live here because `cargo test` does not run examples' own tests.

#[path = "../examples/http_common/mod.rs"]
mod http_common;

use http_common::{MAX_HEADER_BYTES, Progress, Session, respond};
use std::io::{self, Read, Write};

const OK: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";
const GET: &str = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn run(input: &str) -> (String, Progress) {
    let mut out = Vec::new();
    let progress = respond(input.as_bytes(), &mut out);
    (String::from_utf8(out).unwrap(), progress)
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap()
}

#[test]
fn one_request_gets_hello_and_stays_open() {
    assert_eq!(
        run(GET),
        (
            OK.to_owned(),
            Progress {
                consumed: GET.len(),
                close: false
            }
        )
    );
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let input = GET.repeat(16);
    assert_eq!(
        run(&input),
        (
            OK.repeat(16),
            Progress {
                consumed: input.len(),
                close: false
            }
        )
    );
}

#[test]
fn partial_request_is_left_for_later() {
    let input = format!("{GET}{GET}{}", &GET[..20]);
    assert_eq!(
        run(&input),
        (
            OK.repeat(2),
            Progress {
                consumed: 2 * GET.len(),
                close: false
            }
        )
    );
    assert_eq!(
        run(&GET[..GET.len() - 1]),
        (
            String::new(),
            Progress {
                consumed: 0,
                close: false
            }
        )
    );
}

#[test]
fn every_split_of_a_pipeline_gives_the_same_answers() {
    let input =
        format!("{GET}POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello{GET}").into_bytes();
    for cut in 0..=input.len() {
        let mut out = Vec::new();
        let first = respond(&input[..cut], &mut out);
        assert!(!first.close);
        let mut rest = input[first.consumed..].to_vec();
        let second = respond(&rest, &mut out);
        assert_eq!(
            second,
            Progress {
                consumed: rest.len(),
                close: false
            },
            "cut at {cut}"
        );
        rest.clear();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            OK.repeat(3),
            "cut at {cut}"
        );
    }
}

#[test]
fn body_is_consumed_with_its_request() {
    let input = "POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\nabcdGET / HTTP/1.1\r\n\r\n";
    assert_eq!(
        run(input),
        (
            OK.repeat(2),
            Progress {
                consumed: input.len(),
                close: false
            }
        )
    );
    let partial = "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabc";
    assert_eq!(
        run(partial),
        (
            String::new(),
            Progress {
                consumed: 0,
                close: false
            }
        )
    );
}

#[test]
fn connection_close_closes_after_the_response_and_ignores_the_rest() {
    let close = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    let (out, progress) = run(&format!("{GET}{close}{GET}"));
    assert_eq!(
        progress,
        Progress {
            consumed: GET.len() + close.len(),
            close: true
        }
    );
    assert_eq!(out.matches("200 OK").count(), 2);
    assert!(out.ends_with(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"
    ));
}

#[test]
fn connection_options_are_a_case_insensitive_list() {
    let (_, progress) = run("GET / HTTP/1.1\r\nCONNECTION: Upgrade ,  Close\r\n\r\n");
    assert!(progress.close);
}

#[test]
fn http10_closes_unless_keep_alive_is_asked_for() {
    let (out, progress) = run("GET / HTTP/1.0\r\n\r\n");
    assert!(progress.close);
    assert!(out.contains("Connection: close\r\n"));
    let (out, progress) = run("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(!progress.close);
    assert!(out.contains("Connection: keep-alive\r\n"));
}

#[test]
fn head_gets_the_headers_without_the_body() {
    let (out, progress) = run("HEAD / HTTP/1.1\r\n\r\n");
    assert_eq!(out, OK.strip_suffix("Hello, world!").unwrap());
    assert!(!progress.close);
}

#[test]
fn bare_lf_line_ends_and_leading_blank_lines_are_accepted() {
    let input = "\r\n\nGET / HTTP/1.1\nHost: x\n\n";
    assert_eq!(
        run(input),
        (
            OK.to_owned(),
            Progress {
                consumed: input.len(),
                close: false
            }
        )
    );
}

#[test]
fn malformed_requests_get_400_and_close() {
    let cases = [
        "GET /\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1 x\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
        "GET / HTTP/1.1\r\nBad name: x\r\n\r\n",
        "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
        "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ];
    for case in cases {
        let input = format!("{GET}{case}");
        let (out, progress) = run(&input);
        assert_eq!(
            progress,
            Progress {
                consumed: input.len(),
                close: true
            },
            "{case:?}"
        );
        assert_eq!(out.matches("200 OK").count(), 1, "{case:?}");
        let bad = &out[OK.len()..];
        assert_eq!(status(bad), "HTTP/1.1 400 Bad Request", "{case:?}");
        assert!(bad.contains("Connection: close\r\n"), "{case:?}");
    }
}

#[test]
fn a_bad_line_is_refused_before_the_headers_end() {
    let (out, progress) = run("GET / HTTP/1.1\r\nNo colon\r\n");
    assert_eq!(status(&out), "HTTP/1.1 400 Bad Request");
    assert!(progress.close);
}

#[test]
fn repeated_equal_content_lengths_are_accepted() {
    let input = "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
    assert_eq!(
        run(input),
        (
            OK.to_owned(),
            Progress {
                consumed: input.len(),
                close: false
            }
        )
    );
}

#[test]
fn headers_without_an_end_within_the_limit_get_431() {
    let filler = "X-Filler: aaaaaaaaaaaaaaaa\r\n";
    let mut input = String::from("GET / HTTP/1.1\r\n");
    while input.len() + filler.len() < MAX_HEADER_BYTES {
        input.push_str(filler);
    }
    assert_eq!(
        run(&input).1,
        Progress {
            consumed: 0,
            close: false
        },
        "still under the limit"
    );
    input.push_str(filler);
    let (out, progress) = run(&input);
    assert_eq!(status(&out), "HTTP/1.1 431 Request Header Fields Too Large");
    assert!(progress.close);
    // Blank lines before the request count against the same limit.
    let (out, _) = run(&"\r\n".repeat(MAX_HEADER_BYTES / 2));
    assert_eq!(status(&out), "HTTP/1.1 431 Request Header Fields Too Large");
}

#[test]
fn headers_just_within_the_limit_are_accepted() {
    let mut input = String::from("GET / HTTP/1.1\r\nX: ");
    input.push_str(&"a".repeat(MAX_HEADER_BYTES - input.len() - 4));
    input.push_str("\r\n\r\n");
    assert_eq!(input.len(), MAX_HEADER_BYTES);
    assert_eq!(
        run(&input),
        (
            OK.to_owned(),
            Progress {
                consumed: input.len(),
                close: false
            }
        )
    );
}

#[test]
fn oversized_body_gets_413_and_transfer_encoding_501() {
    let (out, progress) = run("POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n");
    assert_eq!(status(&out), "HTTP/1.1 413 Content Too Large");
    assert!(progress.close);
    let (out, progress) = run("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(status(&out), "HTTP/1.1 501 Not Implemented");
    assert!(progress.close);
}

#[test]
fn session_keeps_a_split_request_and_grows_for_a_large_body() {
    let mut session = Session::new();
    let body = "b".repeat(100_000);
    let input = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}{GET}",
        body.len()
    );
    let mut fed = 0;
    while fed < input.len() {
        let buf = session.read_buf();
        let n = buf.len().min(input.len() - fed).min(1000);
        buf[..n].copy_from_slice(&input.as_bytes()[fed..fed + n]);
        fed += n;
        assert!(!session.received(n));
    }
    assert_eq!(session.pending_output(), OK.repeat(2).as_bytes());
    session.wrote(10);
    assert_eq!(session.pending_output(), &OK.repeat(2).as_bytes()[10..]);
    let rest = session.pending_output().len();
    session.wrote(rest);
    assert!(session.pending_output().is_empty());
}

/// A stream that hands out its input in fixed-size pieces and records what
/// is written to it.
struct Chunked {
    input: Vec<u8>,
    pos: usize,
    piece: usize,
    written: Vec<u8>,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.piece).min(self.input.len() - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Chunked {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn serve_answers_until_eof_or_close() {
    for piece in [1, 7, 4096] {
        let input = GET.repeat(5);
        let mut stream = Chunked {
            input: input.into_bytes(),
            pos: 0,
            piece,
            written: Vec::new(),
        };
        http_common::serve(&mut stream).unwrap();
        assert_eq!(stream.written, OK.repeat(5).as_bytes(), "piece {piece}");

        let input = format!("{GET}GET / HTTP/1.1\r\nConnection: close\r\n\r\n{GET}");
        let mut stream = Chunked {
            input: input.into_bytes(),
            pos: 0,
            piece,
            written: Vec::new(),
        };
        http_common::serve(&mut stream).unwrap();
        let out = String::from_utf8(stream.written).unwrap();
        assert_eq!(out.matches("200 OK").count(), 2, "piece {piece}");
        assert!(out.ends_with("Hello, world!"));
    }
}

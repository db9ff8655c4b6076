//! mini-redis (examples/mini_redis) at the byte level: the RESP2 parser on
//! its own, exact replies on a raw socket (pipelines split anywhere, inline
//! commands, subscriber mode), protocol errors, a fuzz run of random and
//! truncated input, and a subscriber that never reads.

mod mini_redis_common;

use std::io::Write;
use std::ops::Range;

use mini_redis_common::mini_redis::resp::{self, ProtocolError};
use mini_redis_common::{Server, eventually, read_exact_text, send_and_read_to_end, split_replies};

/// A complete request: its length and its arguments.
type Parsed = (usize, Vec<Vec<u8>>);

fn parse(input: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    let mut args: Vec<Range<usize>> = Vec::new();
    Ok(resp::parse(input, &mut args)?.map(|len| {
        (
            len,
            args.iter().map(|r| input[r.clone()].to_vec()).collect(),
        )
    }))
}

fn words(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// Valid requests and their arguments.
fn corpus() -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    vec![
        (b"*1\r\n$4\r\nPING\r\n".to_vec(), words(&["PING"])),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".to_vec(),
            words(&["SET", "k", ""]),
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$6\r\na\r\nb\r\n\r\n".to_vec(),
            words(&["GET", "a\r\nb\r\n"]),
        ),
        (b"GET  key\r\n".to_vec(), words(&["GET", "key"])),
        (b"ping\n".to_vec(), words(&["ping"])),
        (b"\r\n".to_vec(), vec![]),
        (b"*0\r\n".to_vec(), vec![]),
        (b"*-1\r\n".to_vec(), vec![]),
    ]
}

#[test]
fn parser_reads_every_valid_request_exactly() {
    for (input, args) in corpus() {
        assert_eq!(
            parse(&input),
            Ok(Some((input.len(), args))),
            "{:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn parser_says_incomplete_for_every_prefix_of_a_valid_request() {
    for (input, _) in corpus() {
        for cut in 0..input.len() {
            assert_eq!(
                parse(&input[..cut]),
                Ok(None),
                "prefix {:?}",
                String::from_utf8_lossy(&input[..cut])
            );
        }
    }
}

#[test]
fn parser_takes_one_request_at_a_time_from_a_pipeline() {
    let one = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    let two = [one.as_slice(), b"PING\r\n"].concat();
    assert_eq!(parse(&two), Ok(Some((one.len(), words(&["GET", "k"])))));
}

#[test]
fn parser_refuses_malformed_framing_with_a_reason() {
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$2\r\nabc\r\n", "bulk string not followed by CRLF"),
        (b"*1\r\n$99999999999\r\n", "invalid bulk length"),
        (b"*9999999999\r\n", "invalid multibulk length"),
        (b"*1\r\n$1\rx", "invalid bulk length"),
        (
            b"*123456789012345678901234567890",
            "invalid multibulk length",
        ),
    ];
    for (input, reason) in cases {
        assert_eq!(
            parse(input),
            Err(ProtocolError(reason.to_string())),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let long_inline = vec![b'a'; resp::MAX_INLINE_LEN];
    assert_eq!(
        parse(&long_inline),
        Err(ProtocolError("too big inline request".into()))
    );
}

/// xorshift64*: a fixed seed makes every run feed the same input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random bytes biased towards RESP's own (`*`, `$`, digits, CR, LF), whole
/// valid requests cut short, and valid requests with one byte changed.
fn fuzz_input(rng: &mut Rng) -> Vec<u8> {
    let valid: Vec<Vec<u8>> = corpus().into_iter().map(|(input, _)| input).collect();
    let alphabet = b"*$+-:\r\n0123456789-GETSgetsPINGping \x00\xff";
    match rng.below(3) {
        0 => (0..rng.below(200))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect(),
        1 => {
            let mut input = Vec::new();
            for _ in 0..1 + rng.below(4) {
                input.extend_from_slice(&valid[rng.below(valid.len())]);
            }
            input.truncate(rng.below(input.len() + 1));
            input
        }
        _ => {
            let mut input = valid[rng.below(valid.len())].clone();
            let at = rng.below(input.len());
            input[at] = (rng.next() & 0xff) as u8;
            input
        }
    }
}

#[test]
fn parser_never_panics_and_never_claims_more_than_it_was_given() {
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    for _ in 0..20_000 {
        let input = fuzz_input(&mut rng);
        if let Ok(Some((len, _))) = parse(&input) {
            assert!(len > 0 && len <= input.len(), "{len} of {}", input.len());
        }
    }
}

#[test]
fn a_pipeline_split_at_every_byte_is_answered_exactly() {
    let server = Server::start();
    let mut stream = server.raw();
    stream.set_nodelay(true).unwrap();
    let requests = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nGET k\r\nPING\r\n";
    let replies = "+OK\r\n$5\r\nhello\r\n$5\r\nhello\r\n+PONG\r\n";
    // Byte by byte: every read ends inside a request.
    for byte in requests {
        stream.write_all(&[*byte]).unwrap();
    }
    assert_eq!(read_exact_text(&mut stream, replies), replies);
    // And all at once, ten times over.
    stream.write_all(&requests.repeat(10)).unwrap();
    assert_eq!(
        read_exact_text(&mut stream, &replies.repeat(10)),
        replies.repeat(10)
    );
}

#[test]
fn a_protocol_error_is_answered_then_the_connection_closes() {
    let server = Server::start();
    let mut stream = server.raw();
    let replies = send_and_read_to_end(&mut stream, b"PING\r\n*1\r\n$x\r\nPING\r\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&replies),
        "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
}

#[test]
fn quit_answers_ok_and_closes() {
    let server = Server::start();
    let mut stream = server.raw();
    let replies = send_and_read_to_end(&mut stream, b"QUIT\r\nPING\r\n").unwrap();
    assert_eq!(String::from_utf8_lossy(&replies), "+OK\r\n");
}

#[test]
fn a_subscribed_connection_runs_only_pubsub_commands_and_ping() {
    let server = Server::start();
    let mut stream = server.raw();
    stream
        .write_all(b"SET a 1\r\nSUBSCRIBE x y x\r\nGET a\r\nPING\r\nUNSUBSCRIBE\r\nGET a\r\n")
        .unwrap();
    let expected = concat!(
        "+OK\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$1\r\ny\r\n:2\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:2\r\n",
        "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
        "*2\r\n$4\r\npong\r\n$0\r\n\r\n",
        "*3\r\n$11\r\nunsubscribe\r\n$1\r\nx\r\n:1\r\n",
        "*3\r\n$11\r\nunsubscribe\r\n$1\r\ny\r\n:0\r\n",
        "$1\r\n1\r\n",
    );
    assert_eq!(read_exact_text(&mut stream, expected), expected);
}

#[test]
fn random_and_truncated_input_never_crashes_or_hangs_the_server() {
    let server = Server::start();
    let mut rng = Rng(0x0bad_f00d_dead_beef);
    for round in 0..300 {
        let input = fuzz_input(&mut rng);
        let mut stream = server.raw();
        // The server must close the connection (end of input, or a protocol
        // error) within the timeout, and what it said must be well-framed.
        let replies = send_and_read_to_end(&mut stream, &input).unwrap_or_else(|err| {
            panic!(
                "round {round}: {err} after {:?}",
                String::from_utf8_lossy(&input)
            )
        });
        if let Err(why) = split_replies(&replies) {
            panic!(
                "round {round}: {why} in {:?}",
                String::from_utf8_lossy(&replies)
            );
        }
    }
    // Still serving.
    let mut con = server.client();
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut con).unwrap(),
        "PONG"
    );
}

#[test]
fn a_subscriber_that_never_reads_is_dropped_at_its_limit() {
    // 256 KiB may wait in the server. On one worker the writer coroutine
    // runs between two publishes, so it keeps the mailbox short until the
    // kernel's socket buffers (a few MiB) are full and it parks in `write`;
    // only then does the mailbox fill, and the server must drop a client
    // whose writer is stuck.
    let server = Server::with(1, 256 * 1024);
    let mut lazy = server.raw();
    lazy.write_all(b"SUBSCRIBE firehose\r\n").unwrap();
    let confirmation = "*3\r\n$9\r\nsubscribe\r\n$8\r\nfirehose\r\n:1\r\n";
    assert_eq!(read_exact_text(&mut lazy, confirmation), confirmation);
    let mut publisher = server.client();
    let message = vec![b'm'; 16 * 1024];
    let mut published = 0;
    // 64 MiB at most: far beyond any socket buffer.
    while published < 4096 {
        let receivers: usize =
            redis::Commands::publish(&mut publisher, "firehose", &message).unwrap();
        if receivers == 0 {
            break;
        }
        published += 1;
    }
    assert!(published < 4096, "the subscriber was never dropped");
    assert!(eventually(
        || server.shared.pubsub.subscribers(b"firehose") == 0
    ));
    // What it does get is the messages in order, the last one possibly cut
    // off where the socket was shut down, then the end.
    let replies = send_and_read_to_end(&mut lazy, b"").unwrap();
    let mut frame = b"*3\r\n$7\r\nmessage\r\n$8\r\nfirehose\r\n$16384\r\n".to_vec();
    frame.extend_from_slice(&message);
    frame.extend_from_slice(b"\r\n");
    assert!(
        replies.len() <= published * frame.len(),
        "{} bytes",
        replies.len()
    );
    let sent = frame.repeat(replies.len().div_ceil(frame.len()));
    assert!(
        replies == sent[..replies.len()],
        "the messages were not delivered in order"
    );
}

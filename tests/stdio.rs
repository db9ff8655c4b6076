//! `fibra::io::{stdin, stdout, stderr}`, checked in child processes (this
//! test binary re-run with `FIBRA_TEST_CHILD` set) whose standard streams
//! are pipes the parent holds: lines read with `lines()` arrive exactly and
//! in order while the worker keeps running its other coroutines through a
//! pause in the input; `fill_buf`/`consume` leave the unconsumed bytes to
//! the next reader, std's included; writes from many coroutines arrive
//! whole; the calls go through the syscall pool.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::{ChildRun, ChildSetup, Ticker, WATCHDOG, child_mode, runtime, watchdog};

/// How this file's children run: killed, failing the test, after 30 s.
const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(30),
    env: &[],
};

/// Prints a `FIBRA-CHILD` line through `fibra::io::stdout` (the leading
/// newline keeps it off a line the test harness has started).
fn report(line: &str) {
    writeln!(fibra::io::stdout(), "\nFIBRA-CHILD {line}").expect("write a report");
}

// ---------------------------------------------------------------------------
// A child whose stdin the parent writes while reading its stdout

/// A running child with piped stdin, stdout and stderr.
struct Interactive {
    process: std::process::Child,
    stdin: Option<ChildStdin>,
    /// The child's stdout, line by line, until EOF.
    stdout_lines: Receiver<String>,
    stdout: String,
    /// The child's whole stderr, at EOF.
    stderr: Receiver<String>,
    deadline: Instant,
}

impl Interactive {
    fn start(test_name: &str, mode: &str) -> Interactive {
        let mut process = CHILD
            .command(test_name, mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child test process");
        let (line_tx, stdout_lines) = mpsc::channel();
        let mut out = BufReader::new(process.stdout.take().expect("piped stdout"));
        thread::spawn(move || {
            let mut line = Vec::new();
            while matches!(out.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line).into_owned();
                if line_tx.send(text).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let (err_tx, stderr) = mpsc::channel();
        let mut err = process.stderr.take().expect("piped stderr");
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = err.read_to_end(&mut bytes);
            let _ = err_tx.send(String::from_utf8_lossy(&bytes).into_owned());
        });
        Interactive {
            stdin: process.stdin.take(),
            process,
            stdout_lines,
            stdout: String::new(),
            stderr,
            deadline: Instant::now() + CHILD.timeout,
        }
    }

    /// The child's next stdout line, None at EOF; fails past the deadline.
    fn next_line(&mut self) -> Option<String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.stdout_lines.recv_timeout(left) {
            Ok(line) => {
                self.stdout.push_str(&line);
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.process.kill();
                panic!(
                    "child did not finish within {:?}; stdout so far:\n{}",
                    CHILD.timeout, self.stdout
                );
            }
        }
    }

    /// Reads the child's stdout up to its `FIBRA-CHILD <what>` line.
    fn wait_for_report(&mut self, what: &str) {
        let wanted = format!("FIBRA-CHILD {what}");
        while let Some(line) = self.next_line() {
            if line.trim_end() == wanted {
                return;
            }
        }
        panic!(
            "child exited without reporting {what}; stdout:\n{}",
            self.stdout
        );
    }

    fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(text.as_bytes())
            .expect("write to the child");
        stdin.flush().expect("flush to the child");
    }

    /// Closes the child's stdin, reads the rest of its output, and waits.
    fn finish(mut self) -> ChildRun {
        drop(self.stdin.take());
        while self.next_line().is_some() {}
        let left = self.deadline.saturating_duration_since(Instant::now());
        let stderr = self.stderr.recv_timeout(left).unwrap_or_default();
        let status = self.process.wait().expect("wait for the child");
        ChildRun {
            status,
            stdout: std::mem::take(&mut self.stdout),
            stderr,
        }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        // A failed test must not leave its child behind.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

// ---------------------------------------------------------------------------
// Reading lines while the worker keeps running

/// Lines the parent writes before its pause, and after it (the last one
/// without a newline: `lines()` still yields it at end of input).
fn first_batch() -> Vec<String> {
    ["alpha", "", "gamma with\ttab and spaces  ", "ünïcødé ✓"]
        .map(String::from)
        .to_vec()
}

fn second_batch() -> Vec<String> {
    vec![
        "after the pause".to_string(),
        // Longer than std's 8 KiB stdin buffer.
        "x".repeat(20_000) + "end",
        "last, unterminated".to_string(),
    ]
}

/// How long the parent leaves the pipe open and empty between the batches.
const PAUSE: Duration = Duration::from_millis(200);

#[test]
fn lines_arrive_in_order_while_the_worker_runs_other_coroutines() {
    const NAME: &str = "lines_arrive_in_order_while_the_worker_runs_other_coroutines";
    if child_mode().as_deref() == Some("stdin-lines") {
        child_reads_lines_beside_a_ticker();
        return;
    }
    let mut child = Interactive::start(NAME, "stdin-lines");
    let (first, second) = (first_batch(), second_batch());
    child.send(&(first.join("\n") + "\n"));
    // Wait until the child has read the whole first batch, so that the
    // pause happens while its reader waits for more.
    child.wait_for_report("first-batch-read");
    thread::sleep(PAUSE);
    child.send(&second.join("\n"));
    let run = child.finish();
    assert!(run.status.success(), "{run}");

    let expected: Vec<String> = first.into_iter().chain(second).collect();
    assert_eq!(
        run.reported("count"),
        expected.len().to_string(),
        "lines read; {run}"
    );
    for (i, line) in expected.iter().enumerate() {
        assert_eq!(
            run.reported_line(&format!("line{i}")),
            format!("{line:?}"),
            "line {i}"
        );
    }
    let gap_ms: u64 = run.reported("gap_ms").parse().unwrap();
    let gap_ticks: u64 = run.reported("gap_ticks").parse().unwrap();
    eprintln!(
        "reader waited {gap_ms} ms for the second batch; the ticker ticked {gap_ticks} times"
    );
    assert!(
        gap_ms >= PAUSE.as_millis() as u64 - 20,
        "the reader did not wait for the second batch ({gap_ms} ms); {run}"
    );
    // A ticker sleeping 1 ms at a time: about 190 ticks in 200 ms on an idle
    // machine; 0 or 1 if the read had blocked the worker.
    assert!(
        gap_ticks >= 20,
        "the other coroutine ticked only {gap_ticks} times in the {gap_ms} ms the reader \
         waited: the read blocked the worker; {run}"
    );
}

/// The child: one worker; a coroutine reads stdin with `lines()` while
/// another counts 1 ms sleeps.
fn child_reads_lines_beside_a_ticker() {
    let first_len = first_batch().len();
    let rt = runtime(1, "stdio-child");
    rt.block_on(move || {
        let ticker = Ticker::start();
        let ticks = ticker.counter();
        let reader = fibra::spawn(move || {
            let mut lines = Vec::new();
            // (ticks, time) when each line arrived.
            let mut arrivals = Vec::new();
            for line in fibra::io::stdin().lines() {
                lines.push(line.expect("read a line"));
                arrivals.push((ticks.load(Ordering::SeqCst), Instant::now()));
                if lines.len() == first_len {
                    report("first-batch-read");
                }
            }
            (lines, arrivals)
        });
        let (lines, arrivals) = reader.join().unwrap();
        ticker.stop();
        report(&format!("count={}", lines.len()));
        for (i, line) in lines.iter().enumerate() {
            report(&format!("line{i}={line:?}"));
        }
        if lines.len() > first_len {
            let (before, after) = (arrivals[first_len - 1], arrivals[first_len]);
            let gap = after.1 - before.1;
            report(&format!(
                "gap_ms={} gap_ticks={}",
                gap.as_millis(),
                after.0 - before.0
            ));
        }
    });
}

// ---------------------------------------------------------------------------
// BufRead on a lock, and std's handle, share one buffer

#[test]
fn consumed_bytes_are_gone_and_the_rest_is_left_for_the_next_reader() {
    const NAME: &str = "consumed_bytes_are_gone_and_the_rest_is_left_for_the_next_reader";
    if child_mode().as_deref() == Some("stdin-share") {
        child_shares_stdin();
        return;
    }
    let mut child = Interactive::start(NAME, "stdin-share");
    child.send("plain thread\n");
    child.wait_for_report("plain-done");
    // One write (under PIPE_BUF): the next read takes all of it.
    child.send("abcdef\nfrom std\nreentrant\nafter the lock\nrest 1\nrest 2\n");
    let run = child.finish();
    assert!(run.status.success(), "{run}");
    let reports = [
        ("plain", "plain thread\n"),
        (
            "peeked",
            "abcdef\nfrom std\nreentrant\nafter the lock\nrest 1\nrest 2\n",
        ),
        ("std", "cdef\n"),
        ("after-std", "from std\n"),
        ("nested", "reentrant\n"),
        ("outer", "after the lock\n"),
        ("read6", "rest 1"),
        ("rest", "\nrest 2\n"),
    ];
    for (key, text) in reports {
        assert_eq!(run.reported_line(key), format!("{text:?}"), "{key}; {run}");
    }
}

fn child_shares_stdin() {
    // On a plain thread the calls run inline.
    let mut plain = String::new();
    fibra::io::stdin().read_line(&mut plain).unwrap();
    report(&format!("plain={plain:?}"));
    report("plain-done");

    let rt = runtime(1, "stdio-child");
    rt.block_on(|| {
        let mut lock = fibra::io::stdin().lock();
        let peeked = String::from_utf8(lock.fill_buf().unwrap().to_vec()).unwrap();
        report(&format!("peeked={peeked:?}"));
        lock.consume(2);
        drop(lock);
    });
    // The two consumed bytes are gone from std's buffer too.
    let mut from_std = String::new();
    std::io::stdin().read_line(&mut from_std).unwrap();
    report(&format!("std={from_std:?}"));

    rt.block_on(|| {
        let mut lock = fibra::io::stdin().lock();
        let mut line = String::new();
        lock.read_line(&mut line).unwrap();
        report(&format!("after-std={line:?}"));
        // The lock is reentrant for the coroutine holding it.
        let mut nested = String::new();
        fibra::io::stdin().read_line(&mut nested).unwrap();
        report(&format!("nested={nested:?}"));
        // The lock's copy of std's buffer goes stale when another handle
        // reads: a `read` then must not be served from it.
        let _ = lock.fill_buf().unwrap();
        let mut outer = String::new();
        fibra::io::stdin().read_line(&mut outer).unwrap();
        report(&format!("outer={outer:?}"));
        let mut read6 = [0u8; 6];
        let n = lock.read(&mut read6).unwrap();
        report(&format!("read6={:?}", String::from_utf8_lossy(&read6[..n])));
        let mut rest = String::new();
        lock.read_to_string(&mut rest).unwrap();
        report(&format!("rest={rest:?}"));
    });
}

// ---------------------------------------------------------------------------
// Writes from many coroutines

const WRITERS: usize = 40;
const LINES_PER_WRITER: usize = 60;

/// The line writer `i` writes `j`-th (without its newline).
fn output_line(tag: &str, i: usize, j: usize) -> String {
    // Varied lengths, some past std's 1 KiB line buffer and the 4 KiB a
    // pipe writes atomically.
    let len = (i * 37 + j * 101) % 300 + if j.is_multiple_of(17) { 6000 } else { 0 };
    let fill = char::from(b'a' + ((i + j) % 26) as u8);
    format!("{tag} {i} {j} {}", fill.to_string().repeat(len))
}

#[test]
fn writes_from_many_coroutines_arrive_whole() {
    const NAME: &str = "writes_from_many_coroutines_arrive_whole";
    if child_mode().as_deref() == Some("stdout-many") {
        child_writes_from_many_coroutines();
        return;
    }
    let run = CHILD.run(NAME, "stdout-many");
    assert!(run.status.success(), "{run}");
    for (tag, text, lines) in [
        ("OUT", &run.stdout, LINES_PER_WRITER),
        ("ERR", &run.stderr, LINES_PER_WRITER / 4),
    ] {
        let mut by_writer: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut count = 0;
        for line in text.lines().filter(|l| l.contains(tag)) {
            let writer: usize = line
                .split(' ')
                .nth(1)
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("a torn {tag} line: {line:.100}"));
            by_writer.entry(writer).or_default().push(line.to_string());
            count += 1;
        }
        assert_eq!(count, WRITERS * lines, "{tag} lines");
        for i in 0..WRITERS {
            let expected: Vec<String> = (0..lines).map(|j| output_line(tag, i, j)).collect();
            let got = by_writer.get(&i).map(Vec::as_slice).unwrap_or_default();
            assert!(
                got == expected.as_slice(),
                "{tag}: writer {i}'s lines are not whole and in order"
            );
        }
    }
}

/// The child: 40 coroutines on 2 workers each write 60 lines to stdout,
/// each line whole: by `writeln!`, by one `write_all`, or in three pieces
/// (one through a nested, reentrant handle) under `lock()`, yielding
/// between them; and 15 lines to stderr.
fn child_writes_from_many_coroutines() {
    let rt = runtime(2, "stdio-child");
    report("begin");
    let handles: Vec<_> = (0..WRITERS)
        .map(|i| {
            rt.spawn(move || {
                for j in 0..LINES_PER_WRITER {
                    let line = output_line("OUT", i, j);
                    match j % 3 {
                        0 => writeln!(fibra::io::stdout(), "{line}").unwrap(),
                        1 => fibra::io::stdout()
                            .write_all(format!("{line}\n").as_bytes())
                            .unwrap(),
                        _ => {
                            let mut lock = fibra::io::stdout().lock();
                            let (head, tail) = line.split_at(line.len() / 2);
                            lock.write_all(head.as_bytes()).unwrap();
                            fibra::yield_now();
                            fibra::io::stdout().write_all(tail.as_bytes()).unwrap();
                            fibra::yield_now();
                            lock.write_all(b"\n").unwrap();
                        }
                    }
                    if j.is_multiple_of(4) {
                        let err = output_line("ERR", i, j / 4);
                        writeln!(fibra::io::stderr().lock(), "{err}").unwrap();
                    }
                }
                fibra::io::stdout().flush().unwrap();
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert!(
        rt.blocking_stats().threads >= 1,
        "the writes went through the syscall pool"
    );
    report("end");
}

// ---------------------------------------------------------------------------
// In this process

#[test]
fn calls_from_a_coroutine_use_the_syscall_pool_and_plain_threads_run_inline() {
    watchdog("stdio-pool", WATCHDOG, || {
        let rt = runtime(1, "stdio-pool");
        assert_eq!(rt.blocking_stats().threads, 0);
        rt.block_on(|| fibra::io::stderr().flush()).unwrap();
        assert_eq!(rt.blocking_stats().threads, 1);
        // No runtime here: the calls simply run.
        fibra::io::stderr().flush().unwrap();
        fibra::io::stdout().lock().flush().unwrap();
    });
}

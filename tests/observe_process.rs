//! What the watchdog and the default runtime's configuration print, seen
//! from outside: each scenario runs in a child process (this test binary
//! re-run with `FIBRA_TEST_CHILD` set) whose stderr the parent reads.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{ChildSetup, child_mode, report};
use fibra::{Builder, Runtime};

const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(60),
    env: &[("RUST_BACKTRACE", "0")],
};

/// The stall test's threshold, and the watchdog's check interval for it
/// (an eighth of the threshold: a stall is reported within the threshold
/// plus two intervals).
const THRESHOLD: Duration = Duration::from_millis(100);
const CHECK: Duration = Duration::from_micros(12_500);

/// A line of the child's output and when the parent read it.
struct Line {
    at: Instant,
    text: String,
    stderr: bool,
}

/// A running child whose output lines arrive on a channel as they come.
struct Watched {
    child: std::process::Child,
    lines: mpsc::Receiver<Line>,
    seen: Vec<Line>,
}

impl Watched {
    fn start(test: &str, mode: &str, env: &[(&str, &str)]) -> Watched {
        let mut child = CHILD
            .command(test, mode)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let (tx, rx) = mpsc::channel();
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for (pipe, is_err) in [(stdout, false), (stderr, true)] {
            let tx = tx.clone();
            thread::spawn(move || {
                for text in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let line = Line {
                        at: Instant::now(),
                        text,
                        stderr: is_err,
                    };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Watched {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle` (on stderr if `stderr`), and
    /// returns its index in `seen`.
    fn wait_for_line(&mut self, needle: &str, stderr: bool) -> usize {
        if let Some(i) = self
            .seen
            .iter()
            .position(|l| l.stderr == stderr && l.text.contains(needle))
        {
            return i;
        }
        let deadline = Instant::now() + CHILD.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.stderr == stderr && line.text.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return self.seen.len() - 1;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "the child never printed {needle:?}; it printed:\n{}",
                        self.text()
                    );
                }
            }
        }
    }

    fn text(&self) -> String {
        self.seen
            .iter()
            .map(|l| format!("{}{}\n", if l.stderr { "E " } else { "O " }, l.text))
            .collect()
    }

    /// Tells the child to exit and waits for it.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let _ = self.child.stdin.take().unwrap().write_all(b"exit\n");
        let status = self.child.wait().expect("wait for the child");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, self.text())
    }
}

/// The child's side: waits until the parent writes a line.
fn wait_for_parent() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// The function the stalled coroutine blocks in: the report's backtrace
/// must name it.
#[inline(never)]
fn sleepy_body() {
    report("start");
    std::thread::sleep(Duration::from_secs(2));
    report("end");
}

#[test]
fn a_coroutine_in_std_sleep_is_reported_by_name_and_its_end_too() {
    if child_mode().as_deref() == Some("stall") {
        let rt = Runtime::builder()
            .workers(1)
            .stall_threshold(Some(THRESHOLD))
            .build()
            .unwrap();
        let handle = Builder::new()
            .name("sleepy".into())
            .spawn_on(&rt, sleepy_body)
            .unwrap();
        handle.join().unwrap();
        // A probe coroutine runs once the worker is free.
        rt.block_on(|| report("probe"));
        wait_for_parent();
        return;
    }
    let mut child = Watched::start(
        "a_coroutine_in_std_sleep_is_reported_by_name_and_its_end_too",
        "stall",
        &[],
    );
    let start = child.wait_for_line("FIBRA-CHILD start", false);
    let held = child.wait_for_line("has been held", true);
    let free = child.wait_for_line("is free again", true);
    child.wait_for_line("FIBRA-CHILD probe", false);
    let started_at = child.seen[start].at;
    let reported_after = child.seen[held].at - started_at;
    let report_line = child.seen[held].text.clone();
    let free_line = child.seen[free].text.clone();
    let (status, text) = child.finish();
    assert!(status.success(), "{text}");

    assert!(
        report_line.contains("worker 0")
            && report_line.contains("coroutine #")
            && report_line.contains("'sleepy'"),
        "{report_line}"
    );
    // The monitor's own measure of the hold: at least the threshold, at
    // most the threshold plus two check intervals, plus what a loaded
    // machine adds to the monitor's wake-ups (bounded generously here).
    let ms: f64 = report_line
        .split("held for ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .expect("the hold in ms");
    let most = THRESHOLD + 2 * CHECK;
    eprintln!(
        "reported after {reported_after:?}, held {ms} ms by the monitor's clock (tight bound {most:?})"
    );
    assert!(ms >= THRESHOLD.as_millis() as f64, "{report_line}");
    assert!(ms < 1000.0, "reported far too late: {report_line}");
    assert!(
        reported_after < Duration::from_millis(1500),
        "reported after {reported_after:?}, before the 2 s sleep ended"
    );
    assert!(
        text.contains("nanosleep"),
        "where: names the system call:\n{text}"
    );
    assert!(text.contains("use fibra::sleep"), "the hint:\n{text}");
    assert!(
        text.contains("observe_process::sleepy_body"),
        "the backtrace names the coroutine's function:\n{text}"
    );
    assert!(free_line.contains("'sleepy' held it for"), "{free_line}");
    let seconds: f64 = free_line
        .split("held it for ")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches('s').parse().ok())
        .expect("the stall's length");
    assert!((1.9..5.0).contains(&seconds), "{free_line}");
    assert_eq!(
        text.matches("has been held").count(),
        1,
        "one report per stall:\n{text}"
    );
}

#[test]
fn the_dump_signal_prints_a_dump_and_the_process_goes_on() {
    if child_mode().as_deref() == Some("signal") {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                Builder::new()
                    .name(format!("waiting-{i}"))
                    .spawn(fibra::park)
                    .unwrap()
            })
            .collect();
        while fibra::metrics().parked < 3 {
            fibra::yield_now();
            std::thread::sleep(Duration::from_millis(1));
        }
        report("ready");
        wait_for_parent();
        for handle in &handles {
            handle.coroutine().unpark();
        }
        for handle in handles {
            handle.join().unwrap();
        }
        report("still-alive");
        return;
    }
    let mut child = Watched::start(
        "the_dump_signal_prints_a_dump_and_the_process_goes_on",
        "signal",
        &[("FIBRA_DUMP_SIGNAL", "USR1"), ("FIBRA_WORKERS", "2")],
    );
    child.wait_for_line("FIBRA-CHILD ready", false);
    // SAFETY: kill(2) to our own child process.
    let sent = unsafe { libc::kill(child.child.id() as i32, libc::SIGUSR1) };
    assert_eq!(sent, 0);
    child.wait_for_line("fibra dump:", true);
    child.wait_for_line("3 parked (park)", true);
    let (status, text) = child.finish();
    assert!(
        status.success(),
        "the process goes on after the dump:\n{text}"
    );
    assert!(text.contains("FIBRA-CHILD still-alive"), "{text}");
    assert!(text.contains("'waiting-0'"), "{text}");
}

/// A closure too large for a 256 KiB stack, fine on a 4 MiB one.
fn spawn_large_closure() -> std::io::Result<()> {
    let big = [7u8; 200 * 1024];
    Builder::new()
        .spawn(move || big[0])
        .map(|handle| assert_eq!(handle.join().unwrap(), 7))
}

#[test]
fn the_default_runtime_takes_its_settings_from_the_environment() {
    match child_mode().as_deref() {
        Some("env") => {
            report(&format!("workers={}", fibra::metrics().workers));
            report(&format!("large={}", spawn_large_closure().is_ok()));
            return;
        }
        Some("bad") => {
            fibra::spawn(|| ()).join().unwrap();
            report("started");
            return;
        }
        _ => {}
    }
    let set = ChildSetup {
        timeout: CHILD.timeout,
        env: &[("FIBRA_WORKERS", "3"), ("FIBRA_STACK_SIZE", "4M")],
    };
    let run = set.run(
        "the_default_runtime_takes_its_settings_from_the_environment",
        "env",
    );
    assert!(run.status.success(), "{run}");
    assert_eq!(run.reported("workers"), "3", "{run}");
    assert_eq!(run.reported("large"), "true", "{run}");

    let defaults = ChildSetup {
        timeout: CHILD.timeout,
        env: &[("FIBRA_WORKERS", ""), ("FIBRA_STACK_SIZE", "")],
    };
    let run = defaults.run(
        "the_default_runtime_takes_its_settings_from_the_environment",
        "env",
    );
    assert!(run.status.success(), "{run}");
    assert_eq!(
        run.reported("workers"),
        std::thread::available_parallelism()
            .unwrap()
            .get()
            .to_string(),
        "empty means unset: {run}"
    );
    assert_eq!(run.reported("large"), "false", "the 256 KiB default: {run}");

    let cases: [(&ChildSetup, &str); 4] = [
        (
            &ChildSetup {
                timeout: CHILD.timeout,
                env: &[("FIBRA_WORKERS", "0")],
            },
            "FIBRA_WORKERS=\"0\" cannot be used: expected a whole number of worker threads",
        ),
        (
            &ChildSetup {
                timeout: CHILD.timeout,
                env: &[("FIBRA_WORKERS", "many")],
            },
            "FIBRA_WORKERS=\"many\" cannot be used",
        ),
        (
            &ChildSetup {
                timeout: CHILD.timeout,
                env: &[("FIBRA_STACK_SIZE", "lots")],
            },
            "FIBRA_STACK_SIZE=\"lots\" cannot be used: expected a stack size in bytes",
        ),
        (
            &ChildSetup {
                timeout: CHILD.timeout,
                env: &[("FIBRA_DUMP_SIGNAL", "9")],
            },
            "cannot start the default runtime: signal 9 cannot print dumps",
        ),
    ];
    for (setup, message) in cases {
        let run = setup.run(
            "the_default_runtime_takes_its_settings_from_the_environment",
            "bad",
        );
        assert!(!run.status.success(), "{run}");
        assert!(run.stderr.contains(message), "expected {message:?}:\n{run}");
        assert!(run.reports().is_empty(), "{run}");
    }
}

//! Helpers for the prefork tests (tests/prefork_*.rs): a master role that
//! the test binary runs as a child process (configured by `PREFORK_ENV`),
//! whose workers answer a one-line protocol, and the test's handle on that
//! process — its address, its log lines as they arrive (stamped with the
//! time they were read), signals, and a bounded wait for its exit.
//!
//! The protocol, one request per connection: `who` → `index generation
//! pid`; `slow MS` → `started`, then after MS milliseconds `done index
//! pid`; `spin` → never answers (a coroutine that never parks); `ask TEXT`
//! → the master's answer to TEXT through the channel; `cpus` → the CPUs
//! the worker may run on.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fibra::prefork::{Prefork, Sharing, Stream, Worker};

use crate::common::{ChildSetup, report};
use crate::fork_common::{Ended, wait_child};

/// How the prefork tests run their master roles: killed, failing the test,
/// after a minute.
pub const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(60),
    env: &[],
};

/// How long a test waits for a master's log line or exit.
pub const LOG_WAIT: Duration = Duration::from_secs(10);

/// In the master role (this binary re-run for test `name`), runs the
/// master and returns None; in the test, starts that role with `config`.
pub fn start(name: &str, config: RoleConfig) -> Option<MasterProcess> {
    if crate::common::child_mode().as_deref() == Some("master") {
        run_master_role();
        return None;
    }
    Some(MasterProcess::start(&CHILD, name, &config))
}

/// Stops the master with SIGTERM and checks that it stopped cleanly.
pub fn stop(mut master: MasterProcess) {
    master.signal(libc::SIGTERM);
    master.wait_log("stopped", LOG_WAIT);
    assert_eq!(
        master.wait_exit(LOG_WAIT),
        Ended::Exited(0),
        "{}",
        master.output()
    );
}

/// The variable that configures the master role: space-separated
/// `key=value`s (see `RoleConfig`).
pub const PREFORK_ENV: &str = "FIBRA_PREFORK_TEST";

/// How the master role is configured.
#[derive(Debug, Clone)]
pub struct RoleConfig {
    pub workers: usize,
    pub sharing: Sharing,
    /// Workers of this generation and later fail at once (exit status 1)
    /// instead of serving.
    pub crash_from: Option<u64>,
    pub heartbeat_ms: (u64, u64),
    pub graceful_ms: u64,
    pub backoff_ms: (u64, u64, u64),
    pub pin: bool,
    pub unix: Option<String>,
}

impl Default for RoleConfig {
    fn default() -> RoleConfig {
        RoleConfig {
            workers: 2,
            sharing: Sharing::Exclusive,
            crash_from: None,
            heartbeat_ms: (50, 5_000),
            graceful_ms: 5_000,
            backoff_ms: (50, 400, 1_000),
            pin: false,
            unix: None,
        }
    }
}

impl RoleConfig {
    fn to_env(&self) -> String {
        let mut env = format!(
            "workers={} sharing={} crash_from={} heartbeat={},{} graceful={} backoff={},{},{} pin={}",
            self.workers,
            match self.sharing {
                Sharing::Exclusive => "exclusive",
                Sharing::ReusePort => "reuseport",
            },
            self.crash_from.map_or(-1, |g| g as i64),
            self.heartbeat_ms.0,
            self.heartbeat_ms.1,
            self.graceful_ms,
            self.backoff_ms.0,
            self.backoff_ms.1,
            self.backoff_ms.2,
            self.pin as u8,
        );
        if let Some(path) = &self.unix {
            env.push_str(&format!(" unix={path}"));
        }
        env
    }

    fn from_env() -> RoleConfig {
        let text = std::env::var(PREFORK_ENV).expect("the master role's configuration");
        let mut config = RoleConfig::default();
        let numbers = |v: &str| -> Vec<u64> { v.split(',').map(|n| n.parse().unwrap()).collect() };
        for pair in text.split_whitespace() {
            let (key, value) = pair.split_once('=').unwrap();
            match key {
                "workers" => config.workers = value.parse().unwrap(),
                "sharing" if value == "reuseport" => config.sharing = Sharing::ReusePort,
                "sharing" => config.sharing = Sharing::Exclusive,
                "crash_from" => config.crash_from = value.parse().ok(),
                "heartbeat" => {
                    let n = numbers(value);
                    config.heartbeat_ms = (n[0], n[1]);
                }
                "graceful" => config.graceful_ms = value.parse().unwrap(),
                "backoff" => {
                    let n = numbers(value);
                    config.backoff_ms = (n[0], n[1], n[2]);
                }
                "pin" => config.pin = value == "1",
                "unix" => config.unix = Some(value.to_string()),
                _ => panic!("unknown key {key}"),
            }
        }
        config
    }
}

/// The master role: binds, reports its address, runs until stopped.
pub fn run_master_role() {
    let config = RoleConfig::from_env();
    let ms = Duration::from_millis;
    let mut prefork = Prefork::new()
        .workers(config.workers)
        .sharing(config.sharing)
        .heartbeat(ms(config.heartbeat_ms.0), ms(config.heartbeat_ms.1))
        .graceful_timeout(ms(config.graceful_ms))
        .restart_backoff(
            ms(config.backoff_ms.0),
            ms(config.backoff_ms.1),
            ms(config.backoff_ms.2),
        )
        .pin_workers(config.pin)
        .on_message(|id, text| {
            let text = String::from_utf8_lossy(text);
            Some(format!("master answers {text} to worker {}", id.index).into_bytes())
        });
    prefork = match &config.unix {
        Some(path) => prefork.unix(path),
        None => prefork.tcp("127.0.0.1:0"),
    };
    let master = prefork.bind().expect("bind");
    let addr = master.tcp_addrs().unwrap().first().copied();
    report(&format!(
        "addr={} master={}",
        addr.map_or("unix".to_string(), |a| a.to_string()),
        std::process::id()
    ));
    let crash_from = config.crash_from;
    master
        .run(move |worker| {
            if crash_from.is_some_and(|g| worker.generation() >= g) {
                return Err(io::Error::other("crashing at start-up, as asked"));
            }
            serve_protocol(worker)
        })
        .expect("the master runs");
    report("master_returned=yes");
}

fn serve_protocol(worker: &Worker) -> io::Result<()> {
    let (index, generation) = (worker.index(), worker.generation());
    let channel = worker.channel().clone();
    worker.serve(move |mut stream: Stream| {
        let Ok(line) = read_line(&mut stream) else {
            return;
        };
        let pid = std::process::id();
        let answer = match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("who", _) => format!("{index} {generation} {pid}\n"),
            ("slow", ms) => {
                let _ = stream.write_all(b"started\n");
                fibra::sleep(Duration::from_millis(ms.parse().unwrap_or(500)));
                format!("done {index} {pid}\n")
            }
            ("spin", _) => loop {
                std::hint::spin_loop();
            },
            ("ask", text) => {
                if channel.send(text.as_bytes()).is_err() {
                    return;
                }
                match channel.recv() {
                    Ok(reply) => format!("{}\n", String::from_utf8_lossy(&reply)),
                    Err(e) => format!("error {e}\n"),
                }
            }
            ("cpus", _) => format!("{index} {:?}\n", allowed_cpus()),
            _ => "unknown\n".to_string(),
        };
        let _ = stream.write_all(answer.as_bytes());
    })
}

fn read_line(stream: &mut Stream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte)? == 1 {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The CPUs the calling thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its
    // size; CPU_ISSET reads bits inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The test's side

/// A log line of the master and when the test read it.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Its position among the process's lines.
    pub index: usize,
    pub at: Instant,
    pub text: String,
}

type Lines = Arc<(Mutex<Vec<LogLine>>, Condvar)>;

/// A master role process started by a test.
pub struct MasterProcess {
    child: Option<Child>,
    pub addr: Option<SocketAddr>,
    pub pid: i32,
    stderr: Lines,
    stdout: Lines,
}

fn collect(pipe: impl Read + Send + 'static) -> Lines {
    let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let sink = Arc::clone(&lines);
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(text) = line else { break };
            let (list, changed) = &*sink;
            let mut list = list.lock().unwrap();
            let index = list.len();
            list.push(LogLine {
                index,
                at: Instant::now(),
                text,
            });
            changed.notify_all();
        }
    });
    lines
}

/// Waits until a line containing `pattern` is there (from the `skip`-th
/// on); None after `limit`.
fn wait_line(lines: &Lines, pattern: &str, skip: usize, limit: Duration) -> Option<LogLine> {
    let deadline = Instant::now() + limit;
    let (list, changed) = &**lines;
    let mut list = list.lock().unwrap();
    loop {
        if let Some(line) = list.iter().skip(skip).find(|l| l.text.contains(pattern)) {
            return Some(line.clone());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        list = changed.wait_timeout(list, left).unwrap().0;
    }
}

impl MasterProcess {
    /// Runs this test binary's `test_name` as the master role, configured
    /// by `config`, and waits for it to report its address.
    pub fn start(setup: &ChildSetup, test_name: &str, config: &RoleConfig) -> MasterProcess {
        let mut child = setup
            .command(test_name, "master")
            .env(PREFORK_ENV, config.to_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the master role");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let mut master = MasterProcess {
            child: Some(child),
            addr: None,
            pid: 0,
            stderr,
            stdout,
        };
        let line = wait_line(
            &master.stdout,
            "FIBRA-CHILD addr=",
            0,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|| panic!("the master role reported no address; {}", master.output()));
        let fields: Vec<&str> = line.text.split_whitespace().collect();
        master.addr = fields[1].strip_prefix("addr=").unwrap().parse().ok();
        master.pid = fields[2].strip_prefix("master=").unwrap().parse().unwrap();
        master
    }

    /// Waits for a master log line containing `pattern`; fails the test
    /// after `limit`.
    pub fn wait_log(&self, pattern: &str, limit: Duration) -> LogLine {
        self.wait_log_after(pattern, 0, limit)
    }

    /// As `wait_log`, among the lines from the `skip`-th on.
    pub fn wait_log_after(&self, pattern: &str, skip: usize, limit: Duration) -> LogLine {
        wait_line(&self.stderr, pattern, skip, limit).unwrap_or_else(|| {
            panic!(
                "no master log line with {pattern:?} within {limit:?}; {}",
                self.output()
            )
        })
    }

    /// Whether a log line with `pattern` arrives within `window`.
    pub fn log_within(&self, pattern: &str, window: Duration) -> bool {
        wait_line(&self.stderr, pattern, 0, window).is_some()
    }

    /// The master's log lines so far.
    pub fn logs(&self) -> Vec<LogLine> {
        self.stderr.0.lock().unwrap().clone()
    }

    /// The number of log lines so far.
    pub fn log_count(&self) -> usize {
        self.stderr.0.lock().unwrap().len()
    }

    /// The pids of the workers the log says were started, in order.
    pub fn started_pids(&self) -> Vec<i32> {
        self.logs()
            .iter()
            .filter(|l| l.text.ends_with(") started"))
            .map(|l| pid_in(&l.text))
            .collect()
    }

    /// Sends `signal` to the master.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) of our child.
        assert_eq!(unsafe { libc::kill(self.pid, signal) }, 0);
    }

    /// Waits for the master to exit; fails the test after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Ended {
        let pid = self.child.as_ref().expect("not waited for yet").id();
        let ended = wait_child(pid as i32, limit);
        // Reaped by wait_child: std's handle must not wait or kill now.
        self.child = None;
        match ended {
            Ended::Hung => panic!(
                "the master did not exit within {limit:?}; {}",
                self.output()
            ),
            ended => ended,
        }
    }

    /// Everything the master process printed so far, for failure messages.
    pub fn output(&self) -> String {
        let text = |lines: &Lines| {
            lines
                .0
                .lock()
                .unwrap()
                .iter()
                .map(|l| l.text.clone())
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "\n--- master stdout ---\n{}\n--- master stderr ---\n{}",
            text(&self.stdout),
            text(&self.stderr)
        )
    }

    /// Sends one request over TCP and returns the whole answer.
    pub fn request(&self, line: &str) -> io::Result<String> {
        request(self.addr.expect("a TCP master"), line)
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A failed test: the workers die with the master (PDEATHSIG).
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The pid in a log line `worker I (pid P, generation G) ...`.
pub fn pid_in(line: &str) -> i32 {
    let rest = line.split("(pid ").nth(1).expect("a worker line");
    rest.split(',').next().unwrap().parse().unwrap()
}

/// Connects to `addr`, sends `line`, and reads the answer to its end.
pub fn request(addr: SocketAddr, line: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

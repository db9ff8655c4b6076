//! Helpers shared by the integration tests: a watchdog against hangs, runtime
//! and drop-counting helpers, panic-payload text, and the child-process
//! machinery (this test binary re-run for one test with `FIBRA_TEST_CHILD`
//! set) with the address-space probes the children's scenarios need.

// Every test binary compiles this module but uses only part of it.
#![allow(dead_code)]

use std::any::Any;
use std::io::{self, Read};
use std::panic::resume_unwind;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use fibra::Runtime;

// ---------------------------------------------------------------------------
// Runtime tests

/// Generous limit for anything that could hang (a lost wakeup, a stuck join,
/// a stuck shutdown).
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// Runs `body` on its own OS thread and returns its value; fails the test with
/// a clear message instead of hanging if it has not finished within `limit`.
pub fn watchdog<T: Send + 'static>(
    what: &str,
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::Builder::new()
        .name(format!("watchdog-{what}"))
        .spawn(move || {
            let _ = tx.send(body());
        })
        .expect("spawn the watchdog's thread");
    match rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().expect("the body has returned");
            value
        }
        Err(RecvTimeoutError::Timeout) => panic!(
            "{what}: still running after {limit:?}; it hangs \
             (lost wakeup, stuck join or stuck runtime drop?)"
        ),
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(payload) => resume_unwind(payload),
            Ok(()) => unreachable!("the body returned without sending its value"),
        },
    }
}

/// A runtime with `workers` workers whose threads are named `<prefix>-<i>`.
pub fn runtime(workers: usize, prefix: &str) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .thread_name(prefix)
        .build()
        .expect("start the runtime")
}

/// Adds one to a shared counter when dropped.
pub struct DropCounter(pub Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The name of the OS thread running the caller.
pub fn thread_name() -> String {
    thread::current().name().unwrap_or("<unnamed>").to_string()
}

// ---------------------------------------------------------------------------
// Panic payloads

/// The text of a panic payload made by `panic!`.
pub fn panic_text(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// The text of a panic payload made by `panic!`/`assert!`; fails the test if
/// the payload is not text.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    match panic_text(payload) {
        Some(text) => text.to_string(),
        None => panic!("panic payload is neither &str nor String"),
    }
}

// ---------------------------------------------------------------------------
// Child processes

/// Set in a child process to the scenario it must act out.
pub const CHILD_ENV: &str = "FIBRA_TEST_CHILD";

/// The scenario this process must act out, if it is a child.
pub fn child_mode() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Prints a line the parent looks for (stdout is line-buffered, so it is
/// written before any crash).
pub fn report(line: &str) {
    println!("\nFIBRA-CHILD {line}");
}

/// How a test file runs its children.
pub struct ChildSetup {
    /// How long a child may run before the test kills it and fails.
    pub timeout: Duration,
    /// Environment variables set in every child besides `CHILD_ENV`.
    pub env: &'static [(&'static str, &'static str)],
}

impl ChildSetup {
    /// The command that re-runs this test binary for just `test_name` (even
    /// if it is ignored) with `CHILD_ENV=mode`; the caller sets up its
    /// standard streams.
    pub fn command(&self, test_name: &str, mode: &str) -> Command {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut command = Command::new(exe);
        command
            .args([
                "--exact",
                test_name,
                "--nocapture",
                "--test-threads=1",
                "--include-ignored",
            ])
            .env(CHILD_ENV, mode)
            .envs(self.env.iter().copied());
        command
    }

    /// Re-runs this test binary for just `test_name` (even if it is ignored)
    /// with `CHILD_ENV=mode`, and collects its exit status and output. Fails
    /// if it runs past the timeout.
    pub fn run(&self, test_name: &str, mode: &str) -> ChildRun {
        let mut child = self
            .command(test_name, mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child test process");
        // Drain both pipes on their own threads; both reach EOF when the child
        // exits, which the channel reports without polling.
        let (tx, rx) = mpsc::channel();
        let pipes: [(usize, Box<dyn Read + Send>); 2] = [
            (0, Box::new(child.stdout.take().expect("piped stdout"))),
            (1, Box::new(child.stderr.take().expect("piped stderr"))),
        ];
        for (index, mut pipe) in pipes {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                let _ = tx.send((index, String::from_utf8_lossy(&bytes).into_owned()));
            });
        }
        drop(tx);
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let mut outputs = [String::new(), String::new()];
        for _ in 0..2 {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((index, text)) => outputs[index] = text,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("child {mode} did not exit within {timeout:?}");
                }
            }
        }
        let status = child.wait().expect("wait for the child");
        let [stdout, stderr] = outputs;
        ChildRun {
            status,
            stdout,
            stderr,
        }
    }
}

/// How a child exited and what it printed.
pub struct ChildRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ChildRun {
    /// The values of the `FIBRA-CHILD` lines the child printed.
    pub fn reports(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("FIBRA-CHILD "))
            .collect()
    }

    /// The `key=value` the child reported for `key` (a value without spaces,
    /// anywhere in a `FIBRA-CHILD` line).
    pub fn reported(&self, key: &str) -> String {
        self.reports()
            .iter()
            .flat_map(|r| r.split_whitespace())
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("child did not report {key}; {self}"))
            .to_string()
    }

    /// The value the child reported as `key=value` at the start of a line:
    /// the rest of that line, spaces and all.
    pub fn reported_line(&self, key: &str) -> String {
        let prefix = format!("FIBRA-CHILD {key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("child did not report {key}; {self}"))
            .to_string()
    }

    /// The error message the child printed on a `FIBRA-CHILD-MESSAGE` line.
    pub fn message(&self) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("FIBRA-CHILD-MESSAGE "))
            .unwrap_or_else(|| panic!("child printed no error message; {self}"))
    }
}

impl std::fmt::Display for ChildRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "child {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

// ---------------------------------------------------------------------------
// Address-space limits (for the children that exhaust them)

/// `RLIMIT_AS` on x86_64 Linux (libc is not a dev-dependency).
const RLIMIT_AS: i32 = 9;

// SAFETY: matches glibc's `int setrlimit(int, const struct rlimit *)`,
// where `struct rlimit` is two 64-bit words on x86_64.
unsafe extern "C" {
    /// setrlimit(2); `rlim` points to `{ rlim_cur, rlim_max }`.
    fn setrlimit(resource: i32, rlim: *const [u64; 2]) -> i32;
}

/// The kernel's `vm.max_map_count`.
pub fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .expect("read /proc/sys/vm/max_map_count")
        .trim()
        .parse()
        .expect("numeric vm.max_map_count")
}

/// This process's resident memory in bytes (the second field of
/// /proc/self/statm, in 4 KiB pages).
pub fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages in /proc/self/statm");
    pages * 4096
}

/// This process's current address-space size in bytes (VmSize).
pub fn address_space_in_use() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    kib * 1024
}

/// Lowers this process's `RLIMIT_AS` to `limit` bytes (soft and hard).
pub fn limit_address_space(limit: u64) {
    let rlim = [limit, limit];
    // SAFETY: setrlimit reads the two-word struct we pass and nothing else.
    let rc = unsafe { setrlimit(RLIMIT_AS, &rlim) };
    assert_eq!(
        rc,
        0,
        "setrlimit(RLIMIT_AS) failed: {}",
        io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------
// Thread states (for tests that must know that a thread sleeps in the kernel)
//
// A worker of a runtime sleeps in `epoll_wait` only when it has nothing to
// run, so "every worker asleep in epoll_wait" means every coroutine of that
// runtime is parked (or finished). A plain thread waiting on a fibra fd
// sleeps in `poll(2)`. Both can be read from /proc without sleeping blindly.

/// x86_64 syscall numbers of `epoll_wait`, `epoll_pwait`, `epoll_pwait2`.
pub const EPOLL_WAITS: &[i64] = &[232, 281, 441];
/// x86_64 syscall numbers of `poll` and `ppoll`.
pub const POLLS: &[i64] = &[7, 271];

/// The kernel thread id of the calling thread.
pub fn gettid() -> i32 {
    // SAFETY: gettid(2) has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` of this process is asleep (state S) inside one of
/// `syscalls`.
pub fn asleep_in(tid: i32, syscalls: &[i64]) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if state != Some('S') {
        return false;
    }
    let Ok(syscall) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return false;
    };
    syscall
        .split_whitespace()
        .next()
        .and_then(|nr| nr.parse::<i64>().ok())
        .is_some_and(|nr| syscalls.contains(&nr))
}

/// How many times thread `tid` of this process has gone to sleep (its
/// voluntary context switches): a sleeping thread that is not woken keeps
/// the count.
pub fn voluntary_switches(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .expect("read the thread's status")
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc/<tid>/status")
}

/// The thread ids of the workers of a runtime built by `runtime(n, prefix)`
/// (threads named `<prefix>-<i>`; keep the prefix short, as the kernel keeps
/// 15 bytes of a thread name).
pub fn worker_tids(prefix: &str, workers: usize) -> Vec<i32> {
    let names: Vec<String> = (0..workers).map(|i| format!("{prefix}-{i}")).collect();
    assert!(
        names.iter().all(|n| n.len() <= 15),
        "prefix {prefix:?} too long"
    );
    let mut tids = Vec::new();
    // A new thread names itself once it runs: wait for all of them.
    wait_for(
        &format!("the {workers} workers of runtime {prefix:?} have their names"),
        Duration::from_secs(10),
        || {
            tids.clear();
            for entry in std::fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
                let Ok(entry) = entry else { continue };
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                if names.iter().any(|n| n == comm.trim_end()) {
                    tids.push(
                        entry
                            .file_name()
                            .to_string_lossy()
                            .parse()
                            .expect("numeric tid"),
                    );
                }
            }
            tids.len() == workers
        },
    );
    tids
}

/// Checks `condition` every millisecond until it holds; fails the test if it
/// does not within `limit`.
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not so after {limit:?}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until every worker of the runtime `runtime(workers, prefix)` sleeps
/// in `epoll_wait`, i.e. all its coroutines are parked or finished.
pub fn wait_until_workers_sleep(prefix: &str, workers: usize) {
    let tids = worker_tids(prefix, workers);
    wait_for(
        &format!("every worker of {prefix} asleep in epoll_wait"),
        Duration::from_secs(10),
        || tids.iter().all(|&tid| asleep_in(tid, EPOLL_WAITS)),
    );
}

/// Whether `O_NONBLOCK` is set on `fd`.
pub fn is_nonblocking(fd: i32) -> bool {
    // SAFETY: F_GETFL reads the status flags of an fd the caller holds.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0, "fcntl(F_GETFL): {}", io::Error::last_os_error());
    flags & libc::O_NONBLOCK != 0
}

// ---------------------------------------------------------------------------
// TCP sockets (the tests/net_tcp*.rs files)

use std::net::{self as stdnet, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;

use fibra::net::{TcpListener, TcpStream};
use fibra::{Cancelled, JoinHandle};

/// 127.0.0.1 with a port of the kernel's choice (a type that resolves
/// without a lookup).
pub const LOCAL: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 0);

/// How late a timeout may fire on a loaded 2-core machine.
pub const SLACK: Duration = Duration::from_secs(2);

pub fn listen() -> TcpListener {
    TcpListener::bind(LOCAL).expect("bind 127.0.0.1:0")
}

/// A connected (client, server) pair; works in a coroutine or on a thread.
pub fn pair() -> (TcpStream, TcpStream) {
    let listener = listen();
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, peer) = listener.accept().expect("accept");
    assert_eq!(
        peer,
        client.local_addr().unwrap(),
        "accept names the client"
    );
    (client, server)
}

/// The value of a coroutine; its panic continues here.
pub fn join<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|payload| resume_unwind(payload))
}

pub fn assert_cancelled<T>(what: &str, handle: JoinHandle<T>) {
    match handle.join() {
        Ok(_) => panic!("{what} returned instead of being cancelled"),
        Err(payload) => assert!(
            payload.is::<Cancelled>(),
            "{what}: the join payload is not Cancelled (a panic: {:?})",
            panic_text(&*payload)
        ),
    }
}

/// Yields until `flag` is set. On a one-worker runtime, when this returns
/// the coroutine that set the flag has parked in the call it made next.
pub fn yield_until(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        fibra::yield_now();
    }
}

/// Sets SO_LINGER to {on, 0 s}: closing the socket then sends a RST.
pub fn set_linger_zero(socket: &impl AsRawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads size_of::<linger>() bytes from `linger`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// A listener whose accept queue is full: with `listen(fd, 0)` one
/// connection may queue, and Linux then drops every further SYN (no RST, no
/// SYN-ACK), so a connect to it stays in SYN_SENT until it gives up.
pub struct FullBacklog {
    pub listener: stdnet::TcpListener,
    _queued: stdnet::TcpStream,
    pub addr: SocketAddr,
}

/// (connections in the accept queue, queue limit) of a listening socket.
pub fn accept_queue(listener: &stdnet::TcpListener) -> (u32, u32) {
    let info = tcp_info(listener);
    // For a listener, the kernel reports these two as unacked / sacked.
    (info.tcpi_unacked, info.tcpi_sacked)
}

/// The kernel's `TCP_INFO` for a TCP socket.
pub fn tcp_info(socket: &impl AsRawFd) -> libc::tcp_info {
    // SAFETY: tcp_info is plain old data; all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    info
}

/// Builds a `FullBacklog`; call on a plain thread (it uses std's blocking
/// connect).
pub fn full_backlog() -> FullBacklog {
    let listener = stdnet::TcpListener::bind(LOCAL).unwrap();
    // SAFETY: listen(2) again on a listening socket only changes its backlog.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(rc, 0, "listen(fd, 0): {}", io::Error::last_os_error());
    let addr = listener.local_addr().unwrap();
    let queued = stdnet::TcpStream::connect(addr).expect("the first connection queues");
    wait_for(
        "the first connection sits in the accept queue",
        Duration::from_secs(10),
        || accept_queue(&listener) == (1, 0),
    );
    FullBacklog {
        listener,
        _queued: queued,
        addr,
    }
}

// ---------------------------------------------------------------------------
// Files and a ticking coroutine (fs, stdio and Unix-socket tests)

/// A fresh directory under the temp dir (named by pid and a counter),
/// removed with its contents on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("fibra-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create the temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` pseudo-random bytes (xorshift64).
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// A coroutine that counts its 1 ms sleeps until stopped: whether a worker
/// keeps running its other coroutines while one of them waits. Start it
/// from a coroutine of the worker to watch.
pub struct Ticker {
    ticks: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Ticker {
    pub fn start() -> Ticker {
        let ticks = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let handle = {
            let (ticks, done) = (Arc::clone(&ticks), Arc::clone(&done));
            fibra::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    fibra::sleep(Duration::from_millis(1));
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        Ticker {
            ticks,
            done,
            handle,
        }
    }

    /// The tick count, to read from another coroutine.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.ticks)
    }

    /// Stops the ticker and waits for it to end.
    pub fn stop(self) {
        self.done.store(true, Ordering::SeqCst);
        self.handle.join().unwrap();
    }
}

// ---------------------------------------------------------------------------
// Unix-domain datagrams (tests/net_unix.rs, tests/net_timeouts.rs)

/// Fills the Unix datagram receiver bound at `path` with datagrams from a
/// std socket until the kernel refuses one with `WouldBlock`; returns them
/// in order.
pub fn fill_unix_datagram_receiver(path: &std::path::Path) -> Vec<Vec<u8>> {
    let filler = std::os::unix::net::UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut sent = Vec::new();
    loop {
        let bytes = format!("filler {}", sent.len()).into_bytes();
        match filler.send_to(&bytes, path) {
            Ok(_) => sent.push(bytes),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return sent,
            Err(e) => panic!("filling the receiver: {e}"),
        }
    }
}

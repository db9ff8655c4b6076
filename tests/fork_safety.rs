//! Fork safety. Each test re-runs this binary as a child process (the role
//! named by `FIBRA_TEST_CHILD`, see tests/common) that builds runtimes,
//! forks, and reports what the forked grandchild saw: the forks happen in a
//! process of known threads, never in the test harness itself. A grandchild
//! that hangs is killed by its parent after a deadline and reported as hung.

mod common;
mod fork_common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

use common::{ChildSetup, child_mode, panic_message, report, wait_until_workers_sleep};
use fork_common::{fork_child, getpid, raw_report, raw_write, wait_child};

const CHILD: ChildSetup = ChildSetup {
    timeout: Duration::from_secs(40),
    env: &[],
};

/// How long a forked grandchild may take before its parent calls it hung.
const GRANDCHILD_LIMIT: Duration = Duration::from_secs(10);

/// Runs the test's role in a child process and returns what it reported.
fn run_role(name: &str, mode: &str) -> common::ChildRun {
    let run = CHILD.run(name, mode);
    assert!(run.status.success(), "{run}");
    run
}

#[test]
fn default_runtime_starts_afresh_in_a_forked_child() {
    const NAME: &str = "default_runtime_starts_afresh_in_a_forked_child";
    if child_mode().as_deref() == Some("default") {
        // The default runtime runs here (two workers on this machine)...
        assert_eq!(fibra::spawn(|| 1).join().unwrap(), 1);
        let pid = fork_child(|| {
            // ...and in the fork, whose copy of it has no workers.
            let answer = fibra::spawn(|| {
                fibra::sleep(Duration::from_millis(5));
                let halves: Vec<_> = (0..100u64).map(|i| fibra::spawn(move || i)).collect();
                halves.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            })
            .join()
            .unwrap();
            raw_report(&format!("child_sum={answer}"));
            0
        });
        report(&format!("child={:?}", wait_child(pid, GRANDCHILD_LIMIT)));
        // The parent's default runtime is unaffected.
        assert_eq!(fibra::spawn(|| 2).join().unwrap(), 2);
        return;
    }
    let run = run_role(NAME, "default");
    assert_eq!(run.reported("child"), "Exited(0)", "{run}");
    assert_eq!(run.reported("child_sum"), "4950", "{run}");
}

#[test]
fn inherited_runtime_refuses_with_advice_in_a_forked_child() {
    const NAME: &str = "inherited_runtime_refuses_with_advice_in_a_forked_child";
    if child_mode().as_deref() == Some("inherited") {
        let mut rt = Some(common::runtime(2, "inh"));
        assert_eq!(rt.as_ref().unwrap().block_on(|| 1), 1);
        let parked = rt.as_ref().unwrap().spawn(|| {
            loop {
                fibra::park();
            }
        });
        wait_until_workers_sleep("inh", 2);
        let pid = fork_child(|| {
            let rt = rt.take().unwrap();
            let spawn_on = fibra::Builder::new().spawn_on(&rt, || 1);
            let error = spawn_on.err().map(|e| e.to_string()).unwrap_or_default();
            raw_report(&format!("spawn_on_error={}", advice_keys(&error)));
            let spawn = catch_unwind(AssertUnwindSafe(|| rt.spawn(|| 1)));
            let spawn = spawn.err().map(|p| panic_message(&*p)).unwrap_or_default();
            raw_report(&format!("spawn_panic={}", advice_keys(&spawn)));
            let block_on = catch_unwind(AssertUnwindSafe(|| rt.block_on(|| 1)));
            let block_on = block_on
                .err()
                .map(|p| panic_message(&*p))
                .unwrap_or_default();
            raw_report(&format!("block_on_panic={}", advice_keys(&block_on)));
            // A coroutine of the parent never finishes here: joining it
            // would wait for ever, so it panics instead.
            let join = catch_unwind(AssertUnwindSafe(|| parked.join()));
            let join = join.err().map(|p| panic_message(&*p)).unwrap_or_default();
            raw_report(&format!("join_panic={}", advice_keys(&join)));
            raw_report(&format!("whole_message={}", spawn.replace(' ', "_")));
            // Dropping the copy returns (it must not wait for the parent's
            // worker threads, which do not exist here).
            drop(rt);
            raw_report("dropped=yes");
            0
        });
        report(&format!("child={:?}", wait_child(pid, GRANDCHILD_LIMIT)));
        let rt = rt.unwrap();
        assert_eq!(rt.block_on(|| 3), 3, "the parent's runtime still works");
        return;
    }
    let run = run_role(NAME, "inherited");
    assert_eq!(run.reported("child"), "Exited(0)", "{run}");
    let all = "fork+Runtime+prefork+exec";
    assert_eq!(run.reported("spawn_on_error"), all, "{run}");
    assert_eq!(run.reported("spawn_panic"), all, "{run}");
    assert_eq!(run.reported("block_on_panic"), all, "{run}");
    assert_eq!(run.reported("join_panic"), all, "{run}");
    assert_eq!(run.reported("dropped"), "yes", "{run}");
}

/// Which of the words a user needs ("fork" says what happened; the others
/// what to do) a message contains, joined by '+'; "none" if it is empty.
fn advice_keys(message: &str) -> String {
    let found: Vec<&str> = ["fork", "Runtime", "prefork", "exec"]
        .into_iter()
        .filter(|k| message.contains(k))
        .collect();
    if found.is_empty() {
        "none".into()
    } else {
        found.join("+")
    }
}

#[test]
fn fork_in_a_coroutine_never_runs_the_parents_other_coroutines_in_the_child() {
    const NAME: &str = "fork_in_a_coroutine_never_runs_the_parents_other_coroutines_in_the_child";
    if child_mode().as_deref() == Some("siblings") {
        let rt = common::runtime(1, "sib");
        let (mut pids_in, pids_out) = UnixStream::pair().unwrap();
        // A sibling on the same worker that says which process runs it,
        // every 10 ms for 400 ms: in the child, its worker copy would run it.
        let sibling = rt.spawn(move || {
            for _ in 0..40 {
                fibra::sleep(Duration::from_millis(10));
                raw_write(pids_out.as_raw_fd(), &getpid().to_le_bytes());
            }
        });
        let forker = rt.spawn(|| {
            // SAFETY: fork(2); the child goes on in this coroutine.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // The child goes on as a plain thread: these work, on the
                // child's own default runtime...
                let value = fibra::spawn(|| 6 * 7).join().unwrap();
                fibra::sleep(Duration::from_millis(300));
                raw_report(&format!("child_value={value}"));
                // ...and when this coroutine returns to its worker, the
                // child process ends.
            }
            pid
        });
        let child = forker.join().unwrap();
        sibling.join().unwrap();
        report(&format!("child={:?}", wait_child(child, GRANDCHILD_LIMIT)));
        let parent = getpid();
        let mut bytes = Vec::new();
        pids_in
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4];
        for _ in 0..40 {
            pids_in.read_exact(&mut buf).unwrap();
            bytes.push(i32::from_le_bytes(buf));
        }
        let foreign = bytes.iter().filter(|&&p| p != parent).count();
        report(&format!("sibling_runs_elsewhere={foreign}"));
        return;
    }
    let run = run_role(NAME, "siblings");
    assert_eq!(run.reported("child"), "Exited(0)", "{run}");
    assert_eq!(run.reported("child_value"), "42", "{run}");
    assert_eq!(run.reported("sibling_runs_elsewhere"), "0", "{run}");
    assert!(
        run.stderr.contains("forked") && run.stderr.contains("exits"),
        "the child says why it ends: {run}"
    );
}

/// A std client connected to a fibra server-side stream, on 127.0.0.1.
fn connected_pair() -> (std::net::TcpStream, fibra::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let server = fibra::net::TcpStream::from(listener.accept().unwrap().0);
    (client, server)
}

/// The issue's data theft: a coroutine parked on a socket in the parent,
/// and a fork from another coroutine of the same worker. The parent's
/// worker is kept busy (it waits for the child) while bytes arrive, so on a
/// runtime that is not fork-safe the child's copy of the worker is the one
/// that sees the event on the shared epoll and reads the bytes.
#[test]
fn fork_in_a_coroutine_never_lets_the_child_read_the_parents_socket() {
    const NAME: &str = "fork_in_a_coroutine_never_lets_the_child_read_the_parents_socket";
    if child_mode().as_deref() == Some("theft") {
        let rt = common::runtime(1, "dt");
        let (mut client, server) = connected_pair();
        let reader = rt.spawn(move || {
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut got = [0u8; 20];
            let mut server = server;
            server.read_exact(&mut got).map(|()| got)
        });
        wait_until_workers_sleep("dt", 1);
        let (mut ready_in, ready_out) = UnixStream::pair().unwrap();
        let forker = rt.spawn(move || {
            let child = fork_child(|| {
                raw_write(ready_out.as_raw_fd(), b"r");
                // Long enough for the bytes to arrive while the child lives.
                fibra::sleep(Duration::from_millis(500));
                0
            });
            // Keep this worker busy in the parent until the child is gone.
            wait_child(child, GRANDCHILD_LIMIT)
        });
        ready_in.read_exact(&mut [0u8; 1]).unwrap();
        client.write_all(&[7u8; 20]).unwrap();
        let child = forker.join().unwrap();
        report(&format!("child={child:?}"));
        match reader.join().unwrap() {
            Ok(bytes) => report(&format!(
                "parent_read={}",
                bytes.iter().filter(|&&b| b == 7).count()
            )),
            Err(e) => report(&format!("parent_read=0 error={:?}", e.kind())),
        }
        return;
    }
    let run = run_role(NAME, "theft");
    assert_eq!(run.reported("child"), "Exited(0)", "{run}");
    assert_eq!(
        run.reported("parent_read"),
        "20",
        "the forked child consumed bytes sent to the parent: {run}"
    );
}

/// A socket registered with a worker's epoll and dropped by the forked
/// child: the epoll instance is shared with the parent, so deregistering
/// there would silence the parent's socket for good.
#[test]
fn a_forked_child_dropping_a_socket_keeps_the_parents_registration() {
    const NAME: &str = "a_forked_child_dropping_a_socket_keeps_the_parents_registration";
    if child_mode().as_deref() == Some("deregister") {
        let rt = common::runtime(1, "dr");
        let (mut client, server) = connected_pair();
        let (forked_tx, forked_rx) = mpsc::channel();
        let user = rt.spawn(move || {
            let mut server = server;
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 16];
            // Parks first: the socket joins this worker's epoll.
            let n = server.read(&mut buf)?;
            assert_eq!(&buf[..n], b"one");
            let mut server = Some(server);
            let child = fork_child(|| {
                drop(server.take());
                0
            });
            forked_tx.send(wait_child(child, GRANDCHILD_LIMIT)).unwrap();
            let n = server.as_mut().unwrap().read(&mut buf)?;
            Ok::<_, std::io::Error>(buf[..n].to_vec())
        });
        wait_until_workers_sleep("dr", 1);
        client.write_all(b"one").unwrap();
        let child = forked_rx.recv().unwrap();
        report(&format!("child={child:?}"));
        client.write_all(b"two").unwrap();
        match user.join().unwrap() {
            Ok(bytes) => report(&format!("second_read={}", String::from_utf8_lossy(&bytes))),
            Err(e) => report(&format!("second_read=error:{:?}", e.kind())),
        }
        return;
    }
    let run = run_role(NAME, "deregister");
    assert_eq!(run.reported("child"), "Exited(0)", "{run}");
    assert_eq!(run.reported("second_read"), "two", "{run}");
}

#[test]
fn a_forked_child_may_build_and_use_its_own_runtime() {
    const NAME: &str = "a_forked_child_may_build_and_use_its_own_runtime";
    if child_mode().as_deref() == Some("own") {
        let parent_rt = common::runtime(2, "own");
        assert_eq!(parent_rt.block_on(|| 5), 5);
        let pid = fork_child(|| {
            let rt = fibra::Runtime::builder().workers(2).build().unwrap();
            let listener = fibra::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let echoed = rt.block_on(move || {
                let server = fibra::spawn(move || {
                    let (mut stream, _) = listener.accept().unwrap();
                    let mut buf = [0u8; 5];
                    stream.read_exact(&mut buf).unwrap();
                    stream.write_all(&buf).unwrap();
                });
                let mut client = fibra::net::TcpStream::connect(addr).unwrap();
                client.write_all(b"hello").unwrap();
                let mut back = [0u8; 5];
                client.read_exact(&mut back).unwrap();
                server.join().unwrap();
                back
            });
            raw_report(&format!("echoed={}", String::from_utf8_lossy(&echoed)));
            drop(rt);
            0
        });
        report(&format!("child={:?}", wait_child(pid, GRANDCHILD_LIMIT)));
        return;
    }
    let run = run_role(NAME, "own");
    assert_eq!(run.reported("child"), "Exited(0)", "{run}");
    assert_eq!(run.reported("echoed"), "hello", "{run}");
}

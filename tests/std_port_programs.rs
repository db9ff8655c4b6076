//! The three std programs of issue #12 — a TCP chat server, a parallel file
//! hasher, a producer/consumer pipeline — written once the std way
//! (`programs!`) and compiled twice: with std's imports, run on OS threads
//! as the reference, and with fibra's imports, run on a 1-worker and a
//! 2-worker runtime. The `use` lines given to the macro are the only
//! difference. Each run's output is compared with the exact expected one.
//!
//! With std's locks and channels inside coroutines all three hang (std's
//! `recv`, `lock`, `Condvar::wait` and `Barrier::wait` block the worker
//! thread); the chat variant that writes to the other clients' sockets
//! while holding the lock deadlocks for good once one reader is slow.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TempDir, WATCHDOG, pseudo_random, watchdog};

macro_rules! programs {
    ($($imports:item)*) => {
        $($imports)*

        use std::collections::VecDeque;
        use std::io::{BufRead, BufReader, Write};
        use std::net::SocketAddr;
        use std::path::{Path, PathBuf};
        use std::time::{Duration, Instant};

        // -------------------------------------------------------------------
        // Chat server

        /// What one chat run does.
        #[derive(Clone, Copy)]
        pub struct Chat {
            pub clients: usize,
            pub lines_each: usize,
            /// Bytes of padding per line.
            pub padding: usize,
            /// The server writes to the other clients' sockets itself,
            /// holding the client list's lock, instead of going through a
            /// writer thread and channel per client.
            pub write_under_lock: bool,
            /// This client waits this long before it reads anything.
            pub slow_client: Option<(usize, Duration)>,
        }

        /// What the clients saw: every client's received lines in order,
        /// and when each fast client had them all.
        pub struct ChatOutcome {
            pub received: Vec<Vec<String>>,
            pub fast_done_after: Vec<Duration>,
        }

        pub fn chat(config: Chat) -> ChatOutcome {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = thread::spawn(move || {
                if config.write_under_lock {
                    serve_writing_under_lock(listener, config.clients)
                } else {
                    serve_with_channels(listener, config.clients)
                }
            });
            let start = Instant::now();
            let clients: Vec<_> = (0..config.clients)
                .map(|id| thread::spawn(move || chat_client(addr, id, config)))
                .collect();
            let mut received = Vec::new();
            let mut fast_done_after = Vec::new();
            for (id, client) in clients.into_iter().enumerate() {
                let (lines, done) = client.join().unwrap();
                if config.slow_client.map(|(slow, _)| slow) != Some(id) {
                    fast_done_after.push(done.duration_since(start));
                }
                received.push(lines);
            }
            server.join().unwrap();
            ChatOutcome { received, fast_done_after }
        }

        /// A reader thread per client broadcasts each line to every
        /// client's channel; a writer thread per client drains its channel
        /// into its socket.
        fn serve_with_channels(listener: TcpListener, clients: usize) {
            let senders: Arc<Mutex<Vec<(usize, mpsc::Sender<String>)>>> =
                Arc::new(Mutex::new(Vec::new()));
            let mut threads = Vec::new();
            let mut readers = Vec::new();
            for (id, stream) in listener.incoming().take(clients).enumerate() {
                let stream = stream.unwrap();
                let (tx, rx) = mpsc::channel::<String>();
                senders.lock().unwrap().push((id, tx));
                let mut writer = stream.try_clone().unwrap();
                threads.push(thread::spawn(move || {
                    for line in rx {
                        writer.write_all(line.as_bytes()).unwrap();
                    }
                }));
                readers.push(stream);
            }
            for (_, tx) in senders.lock().unwrap().iter() {
                tx.send("ready\n".to_string()).unwrap();
            }
            for (id, stream) in readers.into_iter().enumerate() {
                let senders = Arc::clone(&senders);
                threads.push(thread::spawn(move || {
                    for line in BufReader::new(stream).lines() {
                        let line = line.unwrap();
                        for (_, tx) in senders.lock().unwrap().iter() {
                            tx.send(format!("{line}\n")).unwrap();
                        }
                    }
                    senders.lock().unwrap().retain(|(other, _)| *other != id);
                }));
            }
            for thread in threads {
                thread.join().unwrap();
            }
        }

        /// A reader thread per client writes each line to every client's
        /// socket while it holds the lock on the list of sockets.
        fn serve_writing_under_lock(listener: TcpListener, clients: usize) {
            let streams: Arc<Mutex<Vec<(usize, TcpStream)>>> = Arc::new(Mutex::new(Vec::new()));
            let mut readers = Vec::new();
            for (id, stream) in listener.incoming().take(clients).enumerate() {
                let stream = stream.unwrap();
                streams.lock().unwrap().push((id, stream.try_clone().unwrap()));
                readers.push(stream);
            }
            for (_, stream) in streams.lock().unwrap().iter_mut() {
                stream.write_all(b"ready\n").unwrap();
            }
            let threads: Vec<_> = readers
                .into_iter()
                .enumerate()
                .map(|(id, stream)| {
                    let streams = Arc::clone(&streams);
                    thread::spawn(move || {
                        for line in BufReader::new(stream).lines() {
                            let line = format!("{}\n", line.unwrap());
                            let mut streams = streams.lock().unwrap();
                            for (_, stream) in streams.iter_mut() {
                                stream.write_all(line.as_bytes()).unwrap();
                            }
                        }
                        streams.lock().unwrap().retain(|(other, _)| *other != id);
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
        }

        /// Connects, waits for "ready", sends its lines from a second thread
        /// while it reads every client's lines; returns what it read and
        /// when it had all of it.
        fn chat_client(addr: SocketAddr, id: usize, config: Chat) -> (Vec<String>, Instant) {
            let stream = TcpStream::connect(addr).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut ready = String::new();
            reader.read_line(&mut ready).unwrap();
            assert_eq!(ready, "ready\n");
            let mut writer = stream.try_clone().unwrap();
            let sender = thread::spawn(move || {
                let padding = "x".repeat(config.padding);
                for i in 0..config.lines_each {
                    writeln!(writer, "client {id} line {i} {padding}").unwrap();
                }
            });
            if let Some((slow, delay)) = config.slow_client {
                if slow == id {
                    thread::sleep(delay);
                }
            }
            let expected = config.clients * config.lines_each;
            let mut lines = Vec::with_capacity(expected);
            let mut line = String::new();
            while lines.len() < expected {
                line.clear();
                assert_ne!(reader.read_line(&mut line).unwrap(), 0, "server closed early");
                lines.push(line.trim_end().split(' ').take(4).collect::<Vec<_>>().join(" "));
            }
            let done = Instant::now();
            sender.join().unwrap();
            (lines, done)
        }

        // -------------------------------------------------------------------
        // Parallel file hasher

        /// FNV-1a, 64 bits.
        fn fnv1a(data: &[u8]) -> u64 {
            data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
                (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
            })
        }

        fn walk(dir: &Path, jobs: &mpsc::Sender<PathBuf>) {
            for entry in fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    walk(&entry.path(), jobs);
                } else {
                    jobs.send(entry.path()).unwrap();
                }
            }
        }

        /// A walker thread feeds paths to a pool sharing one receiver
        /// behind a mutex; results come back over a channel. Returns each
        /// file's path (relative to `root`) and hash, sorted.
        pub fn hash_tree(root: PathBuf, pool_size: usize) -> Vec<(String, u64)> {
            let (job_tx, job_rx) = mpsc::channel::<PathBuf>();
            let job_rx = Arc::new(Mutex::new(job_rx));
            let (result_tx, result_rx) = mpsc::channel::<(String, u64)>();
            let walker = {
                let root = root.clone();
                thread::spawn(move || walk(&root, &job_tx))
            };
            let pool: Vec<_> = (0..pool_size)
                .map(|_| {
                    let job_rx = Arc::clone(&job_rx);
                    let result_tx = result_tx.clone();
                    let root = root.clone();
                    thread::spawn(move || loop {
                        let job = job_rx.lock().unwrap().recv();
                        let Ok(path) = job else { break };
                        let data = fs::read(&path).unwrap();
                        let name = path.strip_prefix(&root).unwrap().display().to_string();
                        result_tx.send((name, fnv1a(&data))).unwrap();
                    })
                })
                .collect();
            drop(result_tx);
            walker.join().unwrap();
            let mut results: Vec<_> = result_rx.iter().collect();
            for worker in pool {
                worker.join().unwrap();
            }
            results.sort();
            results
        }

        // -------------------------------------------------------------------
        // Producer/consumer pipeline

        struct Bounded {
            items: Mutex<VecDeque<Option<u64>>>,
            not_empty: Condvar,
            not_full: Condvar,
            capacity: usize,
        }

        impl Bounded {
            fn put(&self, item: Option<u64>) {
                let guard = self.items.lock().unwrap();
                let mut items = self
                    .not_full
                    .wait_while(guard, |items| items.len() >= self.capacity)
                    .unwrap();
                items.push_back(item);
                drop(items);
                self.not_empty.notify_one();
            }

            fn take(&self) -> Option<u64> {
                let guard = self.items.lock().unwrap();
                let mut items = self.not_empty.wait_while(guard, |items| items.is_empty()).unwrap();
                let item = items.pop_front().unwrap();
                drop(items);
                self.not_full.notify_one();
                item
            }
        }

        /// Producers and consumers all start at a barrier and meet in a
        /// bounded queue; returns every consumed value, sorted.
        pub fn pipeline(producers: u64, consumers: usize, items_each: u64, capacity: usize) -> Vec<u64> {
            let queue = Arc::new(Bounded {
                items: Mutex::new(VecDeque::new()),
                not_empty: Condvar::new(),
                not_full: Condvar::new(),
                capacity,
            });
            let start = Arc::new(Barrier::new(producers as usize + consumers));
            let producer_threads: Vec<_> = (0..producers)
                .map(|p| {
                    let (queue, start) = (Arc::clone(&queue), Arc::clone(&start));
                    thread::spawn(move || {
                        start.wait();
                        for i in 0..items_each {
                            queue.put(Some(p * items_each + i));
                        }
                    })
                })
                .collect();
            let consumer_threads: Vec<_> = (0..consumers)
                .map(|_| {
                    let (queue, start) = (Arc::clone(&queue), Arc::clone(&start));
                    thread::spawn(move || {
                        start.wait();
                        let mut got = Vec::new();
                        while let Some(value) = queue.take() {
                            got.push(value);
                        }
                        got
                    })
                })
                .collect();
            for producer in producer_threads {
                producer.join().unwrap();
            }
            for _ in 0..consumers {
                queue.put(None);
            }
            let mut all: Vec<u64> = consumer_threads
                .into_iter()
                .flat_map(|consumer| consumer.join().unwrap())
                .collect();
            all.sort_unstable();
            all
        }
    };
}

mod with_std {
    programs! {
        use std::fs;
        use std::net::{TcpListener, TcpStream};
        use std::sync::{Arc, Barrier, Condvar, Mutex, mpsc};
        use std::thread;
    }
}

mod with_fibra {
    programs! {
        use fibra::fs;
        use fibra::net::{TcpListener, TcpStream};
        use fibra::sync::{Arc, Barrier, Condvar, Mutex, mpsc};
        use fibra::thread;
    }
}

/// Runs `program` as a coroutine of a fresh runtime with `workers` workers.
fn on_runtime<T: Send + 'static>(
    workers: usize,
    program: impl FnOnce() -> T + Send + 'static,
) -> T {
    fibra::Runtime::builder()
        .workers(workers)
        .build()
        .expect("start the runtime")
        .block_on(program)
}

// ---------------------------------------------------------------------------
// Chat

/// Every client must have received every line exactly once, each sender's
/// lines in the order sent.
fn check_chat(what: &str, config: with_std::Chat, received: &[Vec<String>]) {
    assert_eq!(received.len(), config.clients, "{what}");
    let mut expected: Vec<String> = (0..config.clients)
        .flat_map(|c| (0..config.lines_each).map(move |i| format!("client {c} line {i}")))
        .collect();
    expected.sort();
    for (client, lines) in received.iter().enumerate() {
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(
            sorted, expected,
            "{what}: client {client} received a different set of lines"
        );
        let mut next_from: BTreeMap<&str, usize> = BTreeMap::new();
        for line in lines {
            let mut words = line.split(' ');
            let origin = words.nth(1).expect("client id");
            let index: usize = words
                .nth(1)
                .expect("line number")
                .parse()
                .expect("a number");
            let next = next_from.entry(origin).or_insert(0);
            assert_eq!(
                index, *next,
                "{what}: client {client} got client {origin}'s lines out of order"
            );
            *next += 1;
        }
    }
}

fn chat_config(write_under_lock: bool, slow: bool) -> (with_std::Chat, with_fibra::Chat) {
    let (clients, lines_each, padding) = if slow { (5, 1000, 1000) } else { (4, 250, 20) };
    let slow_client = slow.then_some((2, Duration::from_millis(300)));
    (
        with_std::Chat {
            clients,
            lines_each,
            padding,
            write_under_lock,
            slow_client,
        },
        with_fibra::Chat {
            clients,
            lines_each,
            padding,
            write_under_lock,
            slow_client,
        },
    )
}

/// What makes the write-under-lock variant hard: while the slow client is
/// not reading, a server thread blocks in a write holding the lock, so no
/// fast client can have every line before the slow one starts to read. If
/// the socket buffers swallowed the backlog, the run did not exercise that:
/// say so.
fn note_if_no_write_blocked(what: &str, fast_done_after: &[Duration], delay: Duration) {
    let earliest = fast_done_after.iter().min().expect("fast clients");
    if *earliest < delay {
        eprintln!(
            "note: {what}: a fast client had every line after {earliest:?}, before the slow \
             client read anything ({delay:?}): the socket buffers absorbed the backlog, so no \
             write blocked under the lock"
        );
    }
}

/// Runs the chat with std on threads, then with fibra on 1 and 2 workers,
/// and checks every run; returns each run's name and when its fast clients
/// were done.
fn run_chat(write_under_lock: bool, slow: bool) -> Vec<(String, Vec<Duration>)> {
    let (std_config, fibra_config) = chat_config(write_under_lock, slow);
    let reference = with_std::chat(std_config);
    check_chat("std threads", std_config, &reference.received);
    let mut runs = vec![("std threads".to_string(), reference.fast_done_after)];
    for workers in [1, 2] {
        let what = format!("fibra, {workers} workers");
        let outcome = on_runtime(workers, move || with_fibra::chat(fibra_config));
        check_chat(&what, std_config, &outcome.received);
        runs.push((what, outcome.fast_done_after));
    }
    runs
}

#[test]
fn chat_server_with_channels_per_client() {
    watchdog("chat_server_with_channels_per_client", WATCHDOG, || {
        run_chat(false, false);
    });
}

#[test]
fn chat_server_writing_under_lock_completes_with_a_slow_reader() {
    watchdog(
        "chat_server_writing_under_lock_completes_with_a_slow_reader",
        WATCHDOG,
        || {
            let (config, _) = chat_config(true, true);
            assert_eq!(config.clients * config.lines_each, 5000);
            let delay = config.slow_client.expect("a slow client").1;
            for (what, fast_done_after) in run_chat(true, true) {
                note_if_no_write_blocked(&what, &fast_done_after, delay);
            }
        },
    );
}

// ---------------------------------------------------------------------------
// Hasher

#[test]
fn parallel_file_hasher_over_a_shared_receiver() {
    watchdog(
        "parallel_file_hasher_over_a_shared_receiver",
        WATCHDOG,
        || {
            let dir = TempDir::new();
            let mut expected = Vec::new();
            for d in 0..6 {
                let sub = dir.path().join(format!("dir{d}")).join("nested");
                std::fs::create_dir_all(&sub).unwrap();
                for f in 0..25 {
                    let data = pseudo_random(1 + (d * 25 + f) * 97 % 20_000);
                    let path = sub.join(format!("file{f}"));
                    std::fs::write(&path, &data).unwrap();
                    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
                    });
                    expected.push((format!("dir{d}/nested/file{f}"), hash));
                }
            }
            expected.sort();
            let root = dir.path().to_path_buf();
            assert_eq!(
                with_std::hash_tree(root.clone(), 4),
                expected,
                "std threads"
            );
            for workers in [1, 2] {
                let root = root.clone();
                let hashes = on_runtime(workers, move || with_fibra::hash_tree(root, 4));
                assert_eq!(hashes, expected, "fibra, {workers} workers");
            }
        },
    );
}

// ---------------------------------------------------------------------------
// Pipeline

#[test]
fn producer_consumer_pipeline_with_two_condvars_and_a_barrier() {
    watchdog(
        "producer_consumer_pipeline_with_two_condvars_and_a_barrier",
        WATCHDOG,
        || {
            let (producers, consumers, items_each, capacity) = (4u64, 3usize, 5_000u64, 8usize);
            let expected: Vec<u64> = (0..producers * items_each).collect();
            assert_eq!(
                with_std::pipeline(producers, consumers, items_each, capacity),
                expected,
                "std threads"
            );
            for workers in [1, 2] {
                let started = Instant::now();
                let values = on_runtime(workers, move || {
                    with_fibra::pipeline(producers, consumers, items_each, capacity)
                });
                assert_eq!(values, expected, "fibra, {workers} workers");
                assert!(started.elapsed() < WATCHDOG);
            }
        },
    );
}

//! `fibra::fs::read` on and off the page cache (src/fs/whole_file.rs): a
//! cached file is read on the worker without starting a syscall thread; a
//! file evicted from the cache, a FIFO, procfs files, directories and
//! files of every edge size come back exactly as `std::fs::read` gives
//! them; a huge cached read lets the worker's other coroutines run.
//!
//! Whether the temp dir's filesystem takes `RWF_NOWAIT` is asked first
//! (`nowait_reads_supported`): where it does not (tmpfs), every read must
//! go through the syscall threads instead, and the tests assert that.

mod common;

use std::ffi::CString;
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{TempDir, Ticker, pseudo_random, watchdog};
use fibra::Runtime;
use fibra::fs::{self, MAX_CHUNK};

fn runtime() -> Runtime {
    Runtime::builder().workers(1).build().expect("runtime")
}

/// Whether a `preadv2(RWF_NOWAIT)` on `path` is accepted (not
/// `EOPNOTSUPP`) by its filesystem.
fn nowait_reads_supported(path: &Path) -> bool {
    let file = std::fs::File::open(path).expect("open the probe file");
    let mut byte = [0u8; 1];
    let iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: `iov` describes `byte`, writable, alive across the call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    !(n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP))
}

/// Writes `data` to `path` and drops the file's pages from the page cache;
/// true if its first page is then verifiably not resident.
fn write_uncached(path: &Path, data: &[u8]) -> bool {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all(data).unwrap();
    file.sync_all().unwrap();
    // SAFETY: advice on an open descriptor; no memory involved.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
    !first_page_resident(&file)
}

/// Whether the page cache holds the first page of `file` (`mincore` on a
/// mapping of it, which does not read it in).
fn first_page_resident(file: &std::fs::File) -> bool {
    // SAFETY: a fresh shared read-only mapping of one page of an open file
    // (longer than the page); nothing else uses the address range.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap");
    let mut resident = 0u8;
    // SAFETY: `map` is a one-page mapping; mincore writes one byte.
    let rc = unsafe { libc::mincore(map, 4096, &mut resident) };
    // SAFETY: unmapping the mapping made above, used by nothing else.
    unsafe { libc::munmap(map, 4096) };
    assert_eq!(rc, 0, "mincore");
    resident & 1 == 1
}

#[test]
fn a_cached_file_is_read_on_the_worker_without_a_syscall_thread() {
    let dir = TempDir::new();
    let path = dir.join("cached.bin");
    let data = pseudo_random(MAX_CHUNK + 4321);
    std::fs::write(&path, &data).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data, "now in the page cache");
    let inline = nowait_reads_supported(&path);

    let rt = runtime();
    let p = path.clone();
    let (bytes, text_err) = rt.block_on(move || {
        let bytes = fs::read(&p).unwrap();
        let text_err = fs::read_to_string(&p).unwrap_err().kind();
        (bytes, text_err)
    });
    assert_eq!(bytes, data);
    assert_eq!(
        text_err,
        ErrorKind::InvalidData,
        "random bytes are not UTF-8"
    );
    let threads = rt.blocking_stats().threads;
    if inline {
        assert_eq!(threads, 0, "a cached read started a syscall thread");
    } else {
        assert!(threads >= 1, "without RWF_NOWAIT the read must hop");
    }
}

#[test]
fn an_evicted_file_is_read_through_syscall_threads() {
    let dir = TempDir::new();
    let path = dir.join("evicted.bin");
    let data = pseudo_random(3 * MAX_CHUNK + 777);
    // Probe RWF_NOWAIT support while the file is cached: on an evicted
    // file the probe's EAGAIN still starts readahead, which could bring the
    // pages back before the read under test.
    std::fs::write(&path, &data).unwrap();
    let inline = nowait_reads_supported(&path);
    let evicted = write_uncached(&path, &data);

    let rt = runtime();
    let p = path.clone();
    let bytes = rt.block_on(move || fs::read(&p).unwrap());
    assert_eq!(bytes.len(), data.len());
    assert!(
        bytes == data,
        "the bytes read differ from the bytes written"
    );
    if evicted || !inline {
        assert!(
            rt.blocking_stats().threads >= 1,
            "pages not in the cache (evicted: {evicted}) were read without a hop"
        );
    }
}

#[test]
fn files_of_edge_sizes_read_exactly() {
    let dir = TempDir::new();
    let sizes = [
        0,
        1,
        31,
        32,
        33,
        4096,
        MAX_CHUNK - 1,
        MAX_CHUNK,
        MAX_CHUNK + 1,
    ];
    let root = dir.path().to_path_buf();
    for &size in &sizes {
        std::fs::write(root.join(format!("f{size}")), pseudo_random(size)).unwrap();
    }
    let read = runtime().block_on(move || {
        sizes
            .iter()
            .map(|size| fs::read(root.join(format!("f{size}"))).unwrap())
            .collect::<Vec<_>>()
    });
    for (bytes, &size) in read.iter().zip(&sizes) {
        assert_eq!(bytes.len(), size);
        assert!(*bytes == pseudo_random(size), "size {size}: wrong bytes");
    }
}

#[test]
fn procfs_files_and_errors_are_those_of_std() {
    let dir = TempDir::new();
    let missing = dir.join("missing");
    let root = dir.path().to_path_buf();
    let (version, cmdline, of_dir, of_missing, of_nul) = runtime().block_on(move || {
        (
            // Regular files of size 0 (procfs) whose bytes come on reading.
            fs::read("/proc/version").unwrap(),
            fs::read("/proc/self/cmdline").unwrap(),
            fs::read(&root).unwrap_err().kind(),
            fs::read(&missing).unwrap_err().kind(),
            fs::read("bad\0name").unwrap_err().kind(),
        )
    });
    assert!(!version.is_empty());
    assert_eq!(version, std::fs::read("/proc/version").unwrap());
    assert_eq!(cmdline, std::fs::read("/proc/self/cmdline").unwrap());
    assert_eq!(of_dir, std::fs::read(dir.path()).unwrap_err().kind());
    assert_eq!(of_missing, ErrorKind::NotFound);
    assert_eq!(of_nul, std::fs::read("bad\0name").unwrap_err().kind());
}

/// Creates a FIFO at `path`.
fn make_fifo(path: &Path) {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Opens the FIFO for writing (waiting for a reader, as std does) after
/// `delay`, writes `data` in pieces and closes it.
fn fifo_writer(path: &Path, delay: Duration, data: Vec<u8>) -> std::thread::JoinHandle<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let mut fifo = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for piece in data.chunks(10_000) {
            fifo.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

#[test]
fn a_fifo_is_read_until_its_writer_closes_while_the_worker_runs_others() {
    watchdog("fifo read", Duration::from_secs(20), || {
        for delay_ms in [0, 50] {
            let dir = TempDir::new();
            let path = dir.join("fifo");
            make_fifo(&path);
            let data = pseudo_random(150_000);
            // Writer first (it waits for the reader's open), then a reader
            // that comes first and must wait for the writer.
            let writer = fifo_writer(&path, Duration::from_millis(delay_ms), data.clone());
            let p = path.clone();
            let (bytes, ticks) = runtime().block_on(move || {
                let ticker = Ticker::start();
                let ticks = ticker.counter();
                let bytes = fs::read(&p).unwrap();
                let ticks = ticks.load(Ordering::SeqCst);
                ticker.stop();
                (bytes, ticks)
            });
            writer.join().unwrap();
            assert!(
                bytes == data,
                "delay {delay_ms} ms: FIFO bytes lost or reordered"
            );
            assert!(ticks > 0, "delay {delay_ms} ms: the worker was blocked");
        }
    });
}

#[test]
fn a_huge_cached_read_lets_the_workers_other_coroutines_run() {
    const LEN: usize = 24 * MAX_CHUNK;
    let dir = TempDir::new();
    let path = dir.join("huge.bin");
    let data = pseudo_random(LEN);
    std::fs::write(&path, &data).unwrap();
    let _ = std::fs::read(&path).unwrap();
    let p = path.clone();
    let (bytes, turns) = runtime().block_on(move || {
        let turns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let (turns, stop) = (Arc::clone(&turns), Arc::clone(&stop));
            fibra::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    turns.fetch_add(1, Ordering::SeqCst);
                    fibra::yield_now();
                }
            })
        };
        fibra::yield_now();
        let before = turns.load(Ordering::SeqCst);
        let bytes = fs::read(&p).unwrap();
        let turns = turns.load(Ordering::SeqCst) - before;
        stop.store(true, Ordering::SeqCst);
        spinner.join().unwrap();
        (bytes, turns)
    });
    assert_eq!(bytes.len(), LEN);
    assert!(
        bytes == data,
        "the bytes read differ from the bytes written"
    );
    // One step per MAX_CHUNK, on the worker or on a syscall thread, and the
    // other coroutine runs between steps.
    assert!(
        turns >= LEN / MAX_CHUNK / 2,
        "the other coroutine ran {turns} times during a {LEN}-byte read"
    );
}

#[test]
fn read_at_serves_cached_data_on_the_worker_and_the_rest_through_a_hop() {
    use std::os::unix::fs::FileExt;
    let dir = TempDir::new();
    let (cached, evicted) = (dir.join("cached.bin"), dir.join("evicted.bin"));
    let data = pseudo_random(2 * MAX_CHUNK + 99);
    std::fs::write(&cached, &data).unwrap();
    let _ = std::fs::read(&cached).unwrap();
    let was_evicted = write_uncached(&evicted, &data);
    let inline = nowait_reads_supported(&cached);

    let rt = runtime();
    // Opened here, so that only the reads could start a syscall thread.
    let file = fs::File::from(std::fs::File::open(&cached).unwrap());
    let expected = data.clone();
    let file = rt.block_on(move || {
        let mut buf = vec![0u8; 3 * MAX_CHUNK];
        // At most MAX_CHUNK per call, from the offset given.
        assert_eq!(file.read_at(&mut buf, 5).unwrap(), MAX_CHUNK);
        assert!(buf[..MAX_CHUNK] == expected[5..MAX_CHUNK + 5]);
        let mut tail = [0u8; 200];
        assert_eq!(
            file.read_at(&mut tail, expected.len() as u64 - 50).unwrap(),
            50
        );
        assert_eq!(tail[..50], expected[expected.len() - 50..]);
        assert_eq!(file.read_at(&mut tail, expected.len() as u64).unwrap(), 0);
        file
    });
    if inline {
        assert_eq!(rt.blocking_stats().threads, 0, "a cached read_at hopped");
    } else {
        assert!(
            rt.blocking_stats().threads >= 1,
            "without RWF_NOWAIT it must hop"
        );
    }
    drop(file);

    let file = fs::File::from(std::fs::File::open(&evicted).unwrap());
    let expected = data;
    rt.block_on(move || {
        let mut all = vec![0u8; expected.len()];
        file.read_exact_at(&mut all, 0).unwrap();
        assert!(
            all == expected,
            "read_exact_at of an evicted file: wrong bytes"
        );
        let mut past = [0u8; 8];
        let err = file
            .read_exact_at(&mut past, expected.len() as u64 - 4)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    });
    if was_evicted {
        assert!(
            rt.blocking_stats().threads >= 1,
            "pages not in the cache were read without a hop"
        );
    }
}

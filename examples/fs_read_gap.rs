//! Where `fibra::fs::read`'s time goes next to `std::fs::read`, for one
//! cached file: per read, the mean time and the minor page faults of
//! `std::fs::read` on this thread, `fibra::fs::read` from a coroutine
//! (served from the page cache on the worker, no hop), and
//! `std::fs::read` run whole on a syscall thread (what a read that needs
//! the hop costs; timed from the coroutine, and inside the job). One
//! worker; the variants take turns, three rounds.
//!
//!     cargo run --release --example fs_read_gap [bytes, default 1 MiB]

use std::path::PathBuf;
use std::time::{Duration, Instant};

const READS: u32 = 2000;

/// This process's minor page faults so far.
fn minor_faults() -> i64 {
    // SAFETY: `rusage` is plain integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one `rusage`, which `usage` is.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    usage.ru_minflt
}

fn main() {
    let len: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("a byte count"))
        .unwrap_or(1 << 20);
    let dir = std::env::temp_dir().join(format!("fibra-read-gap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join("file");
    let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, bytes).expect("scratch file");
    let rt = fibra::Runtime::builder()
        .workers(1)
        .build()
        .expect("runtime");

    type Variant = fn(&fibra::Runtime, PathBuf, usize) -> Duration;
    let variants: [(&str, Variant); 4] = [
        ("std::fs::read, this thread", |_, path, len| {
            let start = Instant::now();
            for _ in 0..READS {
                assert_eq!(std::fs::read(&path).unwrap().len(), len);
            }
            start.elapsed()
        }),
        ("fibra::fs::read, coroutine", |rt, path, len| {
            rt.block_on(move || {
                let start = Instant::now();
                for _ in 0..READS {
                    assert_eq!(fibra::fs::read(&path).unwrap().len(), len);
                }
                start.elapsed()
            })
        }),
        ("unblock(std::fs::read)", |rt, path, len| {
            rt.block_on(move || {
                let start = Instant::now();
                for _ in 0..READS {
                    let path = &path;
                    let n = fibra::blocking::unblock_scoped(|| std::fs::read(path).unwrap().len());
                    assert_eq!(n, len);
                }
                start.elapsed()
            })
        }),
        ("  the same, inside the job", |rt, path, len| {
            rt.block_on(move || {
                let mut inside = Duration::ZERO;
                for _ in 0..READS {
                    let path = &path;
                    let (n, took) = fibra::blocking::unblock_scoped(|| {
                        let start = Instant::now();
                        let n = std::fs::read(path).unwrap().len();
                        (n, start.elapsed())
                    });
                    assert_eq!(n, len);
                    inside += took;
                }
                inside
            })
        }),
    ];
    for round in 1..=3 {
        println!("round {round}: {len} bytes, {READS} reads each");
        for (name, variant) in &variants {
            let faults = minor_faults();
            let took = variant(&rt, path.clone(), len);
            let faults = minor_faults() - faults;
            println!(
                "  {name:<28} {:>8.1} µs/read {:>6.2} minor faults/read",
                took.as_secs_f64() * 1e6 / f64::from(READS),
                faults as f64 / f64::from(READS)
            );
        }
    }
    std::fs::remove_dir_all(&dir).expect("remove the scratch directory");
}

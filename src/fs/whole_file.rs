//! `fibra::fs::read`: whole-file reads, served on the worker when the data
//! is in the page cache, on syscall threads when it is not.
//!
//! A hop to a syscall thread costs a round trip: ≈ 2 µs with both sides
//! awake, and 15–20 µs more when the job outlasts the worker's idle poll
//! (a 1 MiB copy does) and a sleeping worker has to be woken across CPUs.
//! For a file in the page cache nothing blocks, and Linux can say so
//! before it would block, for the two calls a read needs:
//!
//! - `openat2(.., RESOLVE_CACHED)` resolves the path from the dentry cache
//!   only; if that needs a directory block from disk it fails with
//!   `EAGAIN` instead (Linux 5.12).
//! - `preadv2(.., RWF_NOWAIT)` copies only what is in the page cache: it
//!   returns what is there, or `EAGAIN`, having started readahead for the
//!   rest. A filesystem that cannot promise this says `EOPNOTSUPP` (tmpfs
//!   and procfs on the 6.18 kernel this was written on); local disk
//!   filesystems such as ext4 can.
//!
//! io_uring makes the same two attempts inline before it punts a request
//! to its worker threads. Here:
//!
//! 1. On a worker, `read` opens the file with `RESOLVE_CACHED` and
//!    `O_NONBLOCK` (so opening a FIFO does not wait for a writer); any
//!    failure but a definite answer (`EAGAIN`, `ENOSYS` on an old kernel,
//!    ...) opens it on a syscall thread instead, as `std::fs::File::open`.
//! 2. The size comes from `statx` with `AT_STATX_DONT_SYNC` (a network
//!    filesystem answers from its cached attributes, never from the
//!    server); it sizes the buffer, as `std::fs::read` does.
//! 3. Each step appends up to `MAX_CHUNK` bytes: with `RWF_NOWAIT` on the
//!    worker while that works, yielding between steps so a huge cached
//!    file does not hold the worker; on a syscall thread (one hop) for a
//!    step that would block, after which the worker tries inline again
//!    (readahead has usually fetched the following pages meanwhile). A
//!    filesystem without `RWF_NOWAIT` is read on syscall threads only.
//! 4. EOF is a read of 0 bytes, as std's: a full buffer is probed with a
//!    32-byte read, so a file that grew since `statx` is read whole.
//! 5. The file is closed where its last step ran: on the worker only for a
//!    filesystem that took `RWF_NOWAIT` (local disks, where closing a file
//!    opened for reading does no I/O), else in the last hop.
//!
//! Anything but a regular file (a FIFO, a device, a directory) goes whole
//! to a syscall thread, which clears `O_NONBLOCK` and, for a FIFO, first
//! waits in `poll(2)` until a writer connects and writes or leaves, as the
//! blocking open std makes would have waited; then `std`'s `read_to_end`.
//!
//! What can still block a worker, as with io_uring's inline open: a
//! filesystem whose `open` asks a server (FUSE sends its `OPEN` request
//! and waits) and fanotify permission checks on open.
//!
//! `File::read_at` (in `fs.rs`) uses the same `RWF_NOWAIT` attempt,
//! `read_cached_at`, before it hops.

use std::ffi::CString;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::MAX_CHUNK;
use crate::blocking::unblock_scoped;

/// Cleared once `openat2` is missing (`ENOSYS`): every open then hops.
static OPENAT2_AVAILABLE: AtomicBool = AtomicBool::new(true);

/// The bytes of a short read that tells EOF from a file that grew.
const PROBE: usize = 32;

/// Reads a whole file; see the module header. The body of `fs::read`.
pub(super) fn read(path: &Path) -> io::Result<Vec<u8>> {
    if !crate::runtime::in_coroutine() {
        return std::fs::read(path);
    }
    let file = match open_from_dentry_cache(path)? {
        Some(file) => file,
        None => OwnedFd::from(unblock_scoped(move || std::fs::File::open(path))?),
    };
    let size = match file_kind(file.as_raw_fd()) {
        Kind::Regular { size } => size,
        Kind::Fifo => return read_whole_on_pool(file, true),
        Kind::Other => return read_whole_on_pool(file, false),
    };
    let mut bytes = Vec::new();
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    bytes
        .try_reserve_exact(size)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    read_steps(file, bytes)
}

/// Opens `path` read-only on the worker if the dentry cache can resolve
/// it: `Ok(None)` when it cannot (or `openat2` is missing, or the path
/// holds a NUL byte: the syscall thread's open then says what std says).
fn open_from_dentry_cache(path: &Path) -> io::Result<Option<OwnedFd>> {
    if !OPENAT2_AVAILABLE.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return Ok(None);
    };
    // SAFETY: `open_how` is plain integers; all-zero is its documented
    // "no options" value, which the fields set below then fill in.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_CACHED;
    // SAFETY: `c_path` is a NUL-terminated string and `how` an `open_how`
    // of the size passed; both outlive the call, which only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }));
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENOSYS) => {
            OPENAT2_AVAILABLE.store(false, Ordering::Relaxed);
            Ok(None)
        }
        // Not resolvable from the cache, interrupted, or refused for a
        // reason std's plain open might not share (RESOLVE_CACHED unknown
        // to the kernel, a seccomp filter): let the syscall thread open it.
        Some(libc::EAGAIN | libc::EINTR | libc::EINVAL | libc::EPERM) => Ok(None),
        _ => Err(error),
    }
}

/// What an open file is, as far as `read` cares.
enum Kind {
    /// A regular file, with its size from cached attributes.
    Regular {
        size: u64,
    },
    Fifo,
    /// Anything else, or unknown because `statx` failed (the syscall thread
    /// then reads it as std would and meets the same error).
    Other,
}

fn file_kind(fd: RawFd) -> Kind {
    let mut stx = MaybeUninit::<libc::statx>::uninit();
    // SAFETY: the empty path with AT_EMPTY_PATH names `fd` itself; statx
    // writes one `statx` into `stx`, which is that size.
    let rc = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE | libc::STATX_SIZE,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Kind::Other;
    }
    // SAFETY: statx returned 0, so it filled `stx`.
    let stx = unsafe { stx.assume_init() };
    match u32::from(stx.stx_mode) & libc::S_IFMT {
        libc::S_IFREG => Kind::Regular { size: stx.stx_size },
        libc::S_IFIFO => Kind::Fifo,
        _ => Kind::Other,
    }
}

/// What one step of `fill` found.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Read some bytes; there may be more.
    More,
    /// Reached the end of the file.
    End,
}

/// Reads a regular file into `bytes` (empty, sized), a step at a time,
/// on the worker while the page cache has the data, else on syscall
/// threads.
fn read_steps(file: OwnedFd, mut bytes: Vec<u8>) -> io::Result<Vec<u8>> {
    let fd = file.as_raw_fd();
    // The file, until a syscall thread closes it in the last hop.
    let mut open = Some(file);
    let mut nowait = true;
    loop {
        if nowait {
            match fill(fd, &mut bytes, libc::RWF_NOWAIT) {
                Ok(Step::End) => break,
                Ok(Step::More) => {
                    crate::yield_now();
                    continue;
                }
                // Not in the cache: this step hops, the next tries again.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                // EOPNOTSUPP (no RWF_NOWAIT here) or a real error: from now
                // on the syscall threads read, and meet the error as std
                // would, closing the file there.
                Err(_) => nowait = false,
            }
        }
        let (slot, buf) = (&mut open, &mut bytes);
        let step = unblock_scoped(move || {
            let step = fill(fd, buf, 0);
            if !matches!(step, Ok(Step::More)) {
                // The last hop closes the file (no hop just for that).
                drop(slot.take());
            }
            step
        });
        match step {
            // Back to the worker: readahead may have the next pages.
            Ok(Step::More) => continue,
            Ok(Step::End) => break,
            Err(e) => return Err(e),
        }
    }
    // Still open only if the last step ran here, on a filesystem that took
    // RWF_NOWAIT: a local disk, where this close does no I/O.
    drop(open);
    Ok(bytes)
}

/// Appends to `bytes` the file's bytes from offset `bytes.len()` on, up to
/// `MAX_CHUNK` of them (plus a probe), with `preadv2` `flags`. An error
/// after some bytes were read is left for the next call to meet.
fn fill(fd: RawFd, bytes: &mut Vec<u8>, flags: libc::c_int) -> io::Result<Step> {
    let mut budget = MAX_CHUNK;
    let mut progressed = false;
    loop {
        let full = bytes.len() == bytes.capacity();
        // Past the budget, go on only to probe a full buffer, so that a
        // file of exactly the chunk size ends in this step.
        if budget == 0 && !full {
            return Ok(Step::More);
        }
        let offset = bytes.len() as u64;
        let result = if full {
            // As std's read_to_end: a small read tells EOF (the usual case:
            // the buffer was sized by the file) before the Vec is grown.
            let mut probe = [MaybeUninit::<u8>::uninit(); PROBE];
            pread(fd, &mut probe, offset, flags).inspect(|&n| {
                // SAFETY: pread initialized the first `n` bytes of `probe`.
                let read = unsafe { std::slice::from_raw_parts(probe.as_ptr().cast::<u8>(), n) };
                bytes.extend_from_slice(read);
            })
        } else {
            let spare = bytes.spare_capacity_mut();
            let want = spare.len().min(budget);
            pread(fd, &mut spare[..want], offset, flags).inspect(|&n| {
                // SAFETY: pread initialized `n` bytes of the spare capacity,
                // right after the initialized ones.
                unsafe { bytes.set_len(bytes.len() + n) };
            })
        };
        match result {
            Ok(0) => return Ok(Step::End),
            Ok(n) => {
                progressed = true;
                budget = budget.saturating_sub(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) if progressed => return Ok(Step::More),
            Err(e) => return Err(e),
        }
    }
}

/// `File::read_at`'s attempt on the worker: a `preadv2(RWF_NOWAIT)` at an
/// explicit offset, which takes no lock a syscall thread could hold (unlike
/// a read at the file position, which waits for the open file's position
/// lock). `None` if the data is not all in the page cache, the filesystem
/// cannot say, or anything else went wrong: the caller's hop then reads it
/// as std would (and meets the same error).
pub(super) fn read_cached_at(fd: RawFd, buf: &mut [u8], offset: u64) -> Option<usize> {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the kernel
    // writes only initialized bytes into it, so `buf` stays initialized.
    let buf = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    pread(fd, buf, offset, libc::RWF_NOWAIT).ok()
}

/// One `preadv2` into `buf` at `offset`.
fn pread(
    fd: RawFd,
    buf: &mut [MaybeUninit<u8>],
    offset: u64,
    flags: libc::c_int,
) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `iov` describes `buf`, writable for its whole length, and
    // lives across the call; the kernel writes at most that many bytes.
    let n = unsafe { libc::preadv2(fd, &iov, 1, offset, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads anything but a regular file whole on a syscall thread, as
/// `std::fs::read` would have after its blocking open (see the header).
fn read_whole_on_pool(file: OwnedFd, fifo: bool) -> io::Result<Vec<u8>> {
    unblock_scoped(move || {
        let fd = file.as_raw_fd();
        clear_nonblocking(fd)?;
        if fifo {
            wait_for_fifo_writer(fd)?;
        }
        let mut bytes = Vec::new();
        std::fs::File::from(file).read_to_end(&mut bytes)?;
        Ok(bytes)
    })
}

fn clear_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor read and set its
    // status flags; no memory is involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks until a FIFO opened without waiting has data or a writer that
/// came and left. Linux reports neither while no writer has opened it since,
/// which is exactly when a blocking open would still be waiting.
fn wait_for_fifo_writer(fd: RawFd) -> io::Result<()> {
    let mut poll_fd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid `pollfd`, which poll reads and writes.
        let rc = unsafe { libc::poll(&mut poll_fd, 1, -1) };
        if rc >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

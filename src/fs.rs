//! Files and directories from coroutines: `std::fs`, run on syscall threads.
//!
//! This module owns `fibra::fs`, a mirror of `std::fs`. epoll cannot make a
//! regular file non-blocking (a read of a cold page, a `fsync`, an `open`
//! on a slow disk all block the thread), and a worker blocked in such a
//! call stalls every coroutine queued on it. Here each operation runs on
//! one of the runtime's syscall threads (`crate::blocking::unblock_scoped`,
//! which lends the caller's file, path and buffer to that thread: nothing
//! is copied) while the calling coroutine is parked and the worker runs
//! others: one hop per call, and per `MAX_CHUNK` (1 MiB) of data read or
//! written, so a 1 GiB read never has a second buffer pinned anywhere.
//! Called from a plain OS thread, every function simply runs inline.
//!
//! Two exceptions: `read` (and `read_to_string`) serve a file that is in the
//! page cache on the worker, without a hop, using the kernel's non-blocking
//! `openat2(RESOLVE_CACHED)` and `preadv2(RWF_NOWAIT)` (`whole_file.rs`);
//! so does `File::read_at` (std's `FileExt`) for cached data.
//!
//! Errors are exactly the `io::Error`s `std::fs` returns (a missing file is
//! `ErrorKind::NotFound`), since the same `std::fs` calls make them.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("fibra-fs-doc-{}", std::process::id()));
//! let text = fibra::spawn(move || {
//!     fibra::fs::create_dir_all(&dir)?;
//!     let path = dir.join("hello.txt");
//!     fibra::fs::write(&path, "hello")?;
//!     let text = fibra::fs::read_to_string(&path)?;
//!     fibra::fs::remove_dir_all(&dir)?;
//!     Ok::<_, std::io::Error>(text)
//! })
//! .join()
//! .unwrap()
//! .unwrap();
//! assert_eq!(text, "hello");
//! ```

use std::fmt;
use std::fs::{Metadata, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::blocking::unblock_scoped;

mod whole_file;

/// The most bytes one hop to a syscall thread reads or writes. A `read` or
/// `write` on a [`File`] with a larger buffer transfers at most this much
/// (as the `Read`/`Write` contracts allow); `read`, `write`, `read_to_end`
/// and `write_all` loop, one hop per chunk.
pub const MAX_CHUNK: usize = 1 << 20;

/// An open file, like `std::fs::File`, whose operations run on a syscall
/// thread. Convert from and to `std::fs::File` with `From` and
/// [`File::into_std`].
#[derive(Debug)]
pub struct File {
    inner: std::fs::File,
}

impl File {
    /// Opens a file read-only, as `std::fs::File::open`.
    pub fn open<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new().read(true).open(path)
    }

    /// Opens a file write-only, creating or truncating it, as
    /// `std::fs::File::create`.
    pub fn create<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// Creates a new file read-write, failing with `AlreadyExists` if it
    /// exists, as `std::fs::File::create_new`.
    pub fn create_new<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }

    /// A blank [`OpenOptions`], as `std::fs::File::options`.
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// The file's metadata, as `std::fs::File::metadata`.
    pub fn metadata(&self) -> io::Result<Metadata> {
        let file = &self.inner;
        unblock_scoped(move || file.metadata())
    }

    /// Truncates or extends the file to `size` bytes, as
    /// `std::fs::File::set_len`.
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        let file = &self.inner;
        unblock_scoped(move || file.set_len(size))
    }

    /// Flushes data and metadata to the device (`fsync`), as
    /// `std::fs::File::sync_all`.
    pub fn sync_all(&self) -> io::Result<()> {
        let file = &self.inner;
        unblock_scoped(move || file.sync_all())
    }

    /// Flushes data to the device (`fdatasync`), as
    /// `std::fs::File::sync_data`.
    pub fn sync_data(&self) -> io::Result<()> {
        let file = &self.inner;
        unblock_scoped(move || file.sync_data())
    }

    /// A new handle to the same open file (`dup`), as
    /// `std::fs::File::try_clone`.
    pub fn try_clone(&self) -> io::Result<File> {
        let file = &self.inner;
        unblock_scoped(move || file.try_clone()).map(File::from)
    }

    /// Changes the file's permissions, as `std::fs::File::set_permissions`.
    pub fn set_permissions(&self, perm: Permissions) -> io::Result<()> {
        let file = &self.inner;
        unblock_scoped(move || file.set_permissions(perm))
    }

    /// The `std::fs::File` inside (its calls then block the caller's
    /// thread).
    pub fn into_std(self) -> std::fs::File {
        self.inner
    }
}

/// One bounded `read` on a syscall thread.
fn read_chunk(file: &std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len().min(MAX_CHUNK);
    let buf = &mut buf[..len];
    unblock_scoped(move || { file }.read(buf))
}

/// One bounded `write` on a syscall thread.
fn write_chunk(file: &std::fs::File, buf: &[u8]) -> io::Result<usize> {
    let buf = &buf[..buf.len().min(MAX_CHUNK)];
    unblock_scoped(move || { file }.write(buf))
}

/// Appends the rest of `file` to `buf`, one hop per `MAX_CHUNK`, after
/// reserving room for the rest of the file as far as `hint` tells.
fn read_rest(file: &std::fs::File, buf: &mut Vec<u8>, hint: Option<u64>) -> io::Result<usize> {
    if let Some(hint) = hint {
        let hint = usize::try_from(hint).unwrap_or(usize::MAX);
        buf.try_reserve_exact(hint)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    }
    let start = buf.len();
    loop {
        let chunk = MAX_CHUNK as u64;
        let vec = &mut *buf;
        // `Take::read_to_end` fills the spare capacity directly (no zeroing
        // and no second buffer) and stops at the chunk limit or at EOF.
        let n = unblock_scoped(move || { file }.take(chunk).read_to_end(vec))?;
        if n < MAX_CHUNK {
            return Ok(buf.len() - start);
        }
    }
}

/// How many bytes are left from the file position to the end, if known.
fn remaining(file: &std::fs::File) -> Option<u64> {
    unblock_scoped(move || {
        let len = file.metadata().ok()?.len();
        let pos = { file }.stream_position().ok()?;
        Some(len.saturating_sub(pos))
    })
}

/// As std's `read_to_string`: appends to `buf` only valid UTF-8 and fails
/// with `InvalidData` otherwise, leaving `buf` as it was.
fn append_to_string(
    buf: &mut String,
    read: impl FnOnce(&mut Vec<u8>) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut bytes = std::mem::take(buf).into_bytes();
    let old_len = bytes.len();
    let result = read(&mut bytes);
    let valid = std::str::from_utf8(&bytes[old_len..]).is_ok();
    if !valid {
        bytes.truncate(old_len);
    }
    *buf = String::from_utf8(bytes).expect("the old contents and the new are valid UTF-8");
    match result {
        Ok(_) if !valid => Err(invalid_utf8()),
        other => other,
    }
}

fn invalid_utf8() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "stream did not contain valid UTF-8",
    )
}

impl Read for &File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_chunk(&self.inner, buf)
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let hint = remaining(&self.inner);
        read_rest(&self.inner, buf, hint)
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        append_to_string(buf, |bytes| self.read_to_end(bytes))
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        (&*self).read_to_end(buf)
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        (&*self).read_to_string(buf)
    }
}

/// Positional reads and writes, as std's `FileExt` for `std::fs::File`
/// (`use std::os::unix::fs::FileExt` works for both): the file position is
/// neither used nor moved. At most `MAX_CHUNK` bytes per call; the
/// `read_exact_at`/`write_all_at` loops come with the trait.
///
/// A `read_at` of data in the page cache runs on the worker, without a hop
/// (`preadv2(RWF_NOWAIT)`, see `whole_file.rs`); anything else, and every
/// `write_at`, is one hop. Plain `read` stays a hop: a read at the file
/// position takes the open file's position lock, which a syscall thread
/// blocked in a read or write of the same file holds until its disk answers.
impl std::os::unix::fs::FileExt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let len = buf.len().min(MAX_CHUNK);
        let buf = &mut buf[..len];
        if crate::runtime::in_coroutine()
            && let Some(n) = whole_file::read_cached_at(self.inner.as_raw_fd(), buf, offset)
        {
            return Ok(n);
        }
        let file = &self.inner;
        unblock_scoped(move || file.read_at(buf, offset))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let buf = &buf[..buf.len().min(MAX_CHUNK)];
        let file = &self.inner;
        unblock_scoped(move || file.write_at(buf, offset))
    }
}

impl Write for &File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_chunk(&self.inner, buf)
    }

    /// A file has no userspace buffer: nothing to do (as `std::fs::File`).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for &File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let file = &self.inner;
        unblock_scoped(move || { file }.seek(pos))
    }
}

impl Seek for File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        (&*self).seek(pos)
    }
}

impl From<std::fs::File> for File {
    fn from(inner: std::fs::File) -> File {
        File { inner }
    }
}

impl From<File> for std::fs::File {
    fn from(file: File) -> std::fs::File {
        file.inner
    }
}

impl From<OwnedFd> for File {
    fn from(fd: OwnedFd) -> File {
        File::from(std::fs::File::from(fd))
    }
}

impl From<File> for OwnedFd {
    fn from(file: File) -> OwnedFd {
        file.inner.into()
    }
}

impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl IntoRawFd for File {
    fn into_raw_fd(self) -> RawFd {
        self.inner.into_raw_fd()
    }
}

impl FromRawFd for File {
    unsafe fn from_raw_fd(fd: RawFd) -> File {
        // SAFETY: the caller guarantees `fd` is an open file descriptor it
        // owns, which is the whole contract of `std::fs::File::from_raw_fd`.
        File::from(unsafe { std::fs::File::from_raw_fd(fd) })
    }
}

/// Options for opening a file, mirroring `std::fs::OpenOptions`; `open`
/// runs on a syscall thread.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    inner: std::fs::OpenOptions,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Options with every flag off, as `std::fs::OpenOptions::new`.
    pub fn new() -> OpenOptions {
        OpenOptions {
            inner: std::fs::OpenOptions::new(),
        }
    }

    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut OpenOptions {
        self.inner.read(read);
        self
    }

    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut OpenOptions {
        self.inner.write(write);
        self
    }

    /// Open for appending: every write goes to the end.
    pub fn append(&mut self, append: bool) -> &mut OpenOptions {
        self.inner.append(append);
        self
    }

    /// Truncate the file to 0 bytes on open (needs `write`).
    pub fn truncate(&mut self, truncate: bool) -> &mut OpenOptions {
        self.inner.truncate(truncate);
        self
    }

    /// Create the file if it does not exist (needs `write` or `append`).
    pub fn create(&mut self, create: bool) -> &mut OpenOptions {
        self.inner.create(create);
        self
    }

    /// Create the file, failing with `AlreadyExists` if it exists.
    pub fn create_new(&mut self, create_new: bool) -> &mut OpenOptions {
        self.inner.create_new(create_new);
        self
    }

    /// The permission bits of a created file, as
    /// `std::os::unix::fs::OpenOptionsExt::mode`.
    pub fn mode(&mut self, mode: u32) -> &mut OpenOptions {
        std::os::unix::fs::OpenOptionsExt::mode(&mut self.inner, mode);
        self
    }

    /// Extra `open(2)` flags, as
    /// `std::os::unix::fs::OpenOptionsExt::custom_flags`.
    pub fn custom_flags(&mut self, flags: i32) -> &mut OpenOptions {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut self.inner, flags);
        self
    }

    /// Opens `path` with these options, on a syscall thread.
    pub fn open<P: AsRef<Path>>(&self, path: P) -> io::Result<File> {
        let (options, path) = (&self.inner, path.as_ref());
        unblock_scoped(move || options.open(path)).map(File::from)
    }
}

/// Reads a whole file, as `std::fs::read`.
///
/// From a coroutine, a file in the page cache is opened and read on the
/// worker itself, with the kernel's promise that nothing there blocks
/// (`RESOLVE_CACHED`, `RWF_NOWAIT`); whatever would block goes to a syscall
/// thread, one hop per `MAX_CHUNK`. See `src/fs/whole_file.rs`.
pub fn read<P: AsRef<Path>>(path: P) -> io::Result<Vec<u8>> {
    whole_file::read(path.as_ref())
}

/// Reads a whole file as UTF-8, as `std::fs::read_to_string` (invalid
/// UTF-8 is `ErrorKind::InvalidData`).
pub fn read_to_string<P: AsRef<Path>>(path: P) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|_| invalid_utf8())
}

/// Writes `contents` as the whole file, creating or truncating it, as
/// `std::fs::write`: one hop to create it, then one per `MAX_CHUNK`.
pub fn write<P: AsRef<Path>, C: AsRef<[u8]>>(path: P, contents: C) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(contents.as_ref())
}

/// Copies a file's contents and permissions, as `std::fs::copy`, in one hop
/// (the kernel copies: `copy_file_range`, no buffer in this process).
pub fn copy<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<u64> {
    let (from, to) = (from.as_ref(), to.as_ref());
    unblock_scoped(move || std::fs::copy(from, to))
}

/// Renames a file or directory, as `std::fs::rename`.
pub fn rename<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<()> {
    let (from, to) = (from.as_ref(), to.as_ref());
    unblock_scoped(move || std::fs::rename(from, to))
}

/// Creates a hard link, as `std::fs::hard_link`.
pub fn hard_link<P: AsRef<Path>, Q: AsRef<Path>>(original: P, link: Q) -> io::Result<()> {
    let (original, link) = (original.as_ref(), link.as_ref());
    unblock_scoped(move || std::fs::hard_link(original, link))
}

/// Removes a file, as `std::fs::remove_file`.
pub fn remove_file<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::remove_file(path))
}

/// Creates a directory, as `std::fs::create_dir`.
pub fn create_dir<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::create_dir(path))
}

/// Creates a directory and its missing parents, as `std::fs::create_dir_all`.
pub fn create_dir_all<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::create_dir_all(path))
}

/// Removes an empty directory, as `std::fs::remove_dir`.
pub fn remove_dir<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::remove_dir(path))
}

/// Removes a directory and everything in it, as `std::fs::remove_dir_all`
/// (in one hop).
pub fn remove_dir_all<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::remove_dir_all(path))
}

/// A path's metadata, following symlinks, as `std::fs::metadata`.
pub fn metadata<P: AsRef<Path>>(path: P) -> io::Result<Metadata> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::metadata(path))
}

/// A path's metadata, not following symlinks, as
/// `std::fs::symlink_metadata`.
pub fn symlink_metadata<P: AsRef<Path>>(path: P) -> io::Result<Metadata> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::symlink_metadata(path))
}

/// Changes a path's permissions, as `std::fs::set_permissions`.
pub fn set_permissions<P: AsRef<Path>>(path: P, perm: Permissions) -> io::Result<()> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::set_permissions(path, perm))
}

/// The absolute path with symlinks resolved, as `std::fs::canonicalize`.
pub fn canonicalize<P: AsRef<Path>>(path: P) -> io::Result<PathBuf> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::canonicalize(path))
}

/// A symlink's target, as `std::fs::read_link`.
pub fn read_link<P: AsRef<Path>>(path: P) -> io::Result<PathBuf> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::read_link(path))
}

/// Whether a path exists (`Ok(false)` if it does not, an error if that
/// cannot be told), as `std::fs::exists`.
pub fn exists<P: AsRef<Path>>(path: P) -> io::Result<bool> {
    let path = path.as_ref();
    unblock_scoped(move || std::fs::exists(path))
}

/// The entries of a directory, as `std::fs::read_dir`.
///
/// Unlike std's lazy iterator, the whole directory is listed in one hop on
/// a syscall thread; the returned [`ReadDir`] then hands out the entries
/// (and any per-entry error) without blocking. The entries are
/// `std::fs::DirEntry`s: `path`, `file_name` and usually `file_type` need
/// no system call, but `DirEntry::metadata` blocks the caller's thread —
/// use `fibra::fs::metadata(entry.path())` from a coroutine.
pub fn read_dir<P: AsRef<Path>>(path: P) -> io::Result<ReadDir> {
    let path = path.as_ref();
    let entries = unblock_scoped(move || {
        std::fs::read_dir(path).map(|dir| dir.collect::<Vec<io::Result<std::fs::DirEntry>>>())
    })?;
    Ok(ReadDir {
        entries: entries.into_iter(),
    })
}

/// The listed entries of a directory ([`read_dir`]), in the order the
/// directory gave them.
pub struct ReadDir {
    entries: std::vec::IntoIter<io::Result<std::fs::DirEntry>>,
}

impl Iterator for ReadDir {
    type Item = io::Result<std::fs::DirEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.entries.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for ReadDir {}

impl fmt::Debug for ReadDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadDir")
            .field("remaining", &self.entries.len())
            .finish()
    }
}

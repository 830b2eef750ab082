//! Shared memory (memfd + mmap), futex waits and wakes, and the probes that tell whether
//! another process is still alive: the system calls behind `Lock` and `Value`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::mm::{Advice, MapFlags, ProtFlags};
use rustix::process::Pid;
use rustix::thread::futex;

/// Seals every shared region carries: nobody can shrink it under another process's mapping
/// (which would turn that process's next access into SIGBUS), grow it, or lift the seals.
const SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW).union(SealFlags::SEAL);

/// Creates an anonymous shared-memory file of `len` zero bytes: close-on-exec, its size
/// sealed. `name` only shows in `/proc/<pid>/fd` (as `memfd:<name>`).
pub fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    rustix::fs::fcntl_add_seals(&fd, SEALS)?;
    Ok(fd)
}

/// Checks that `fd` is a shared-memory file of at least `len` bytes that cannot shrink (so
/// mapping `len` bytes of it is safe for as long as the mapping lives).
pub fn check_memfd(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let seals = rustix::fs::fcntl_get_seals(fd)?;
    if !seals.contains(SealFlags::SHRINK) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the descriptor is not a sealed mp shared-memory file",
        ));
    }
    let size = rustix::fs::fstat(fd)?.st_size;
    if u64::try_from(size).map_or(true, |size| size < len as u64) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the shared-memory file has {size} bytes, {len} were expected"),
        ));
    }
    Ok(())
}

/// Maps the first `len` bytes of `fd` readable and writable, shared with every other process
/// that maps the same file. `len` must be positive.
pub fn map_shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: no address hint and no MAP_FIXED: the kernel picks a range no existing mapping
    // uses, so no memory this process already references is affected. What the new range
    // may be used for is the caller's business (it gets a raw pointer).
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd.as_fd(),
            0,
        )?
    };
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned a null pointer"))
}

/// Unmaps what [`map_shared`] mapped.
///
/// # Safety
///
/// `ptr` and `len` are exactly what `map_shared` returned and was given, the range was not
/// unmapped before, and nothing references it any more.
pub unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller guarantees the range is one whole mapping of ours that nothing uses.
    // munmap of a valid mapping cannot fail; there is nothing useful to do if it did.
    let _ = unsafe { rustix::mm::munmap(ptr.as_ptr().cast(), len) };
}

/// Sleeps while `*word == expected`, at most `timeout`. Returns on a wake-up, a changed word,
/// a signal or the timeout alike (callers re-read the word). The futex is *shared*: waiters
/// and wakers may be in different processes that map the same file.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> io::Result<()> {
    let ts = rustix::thread::futex::Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match futex::wait(word, futex::Flags::empty(), expected, Some(&ts)) {
        Ok(()) | Err(Errno::AGAIN | Errno::TIMEDOUT | Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Wakes up to `n` threads (of any process) sleeping in [`futex_wait`] on `word`.
pub fn futex_wake(word: &AtomicU32, n: u32) {
    // Errors are impossible for a valid word (EFAULT/EINVAL); a failed wake would only cost
    // the waiter its bounded wait, never correctness.
    let _ = futex::wake(word, futex::Flags::empty(), n);
}

/// This process's id.
pub fn getpid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// A word in memory that reads as zero again in a child created by `fork()` (its page is
/// `MADV_WIPEONFORK`), so a cache kept in it is never inherited stale. Falls back to an
/// ordinary word on kernels before 4.14.
pub fn fork_wiped_word() -> &'static AtomicU32 {
    let page = 4096;
    // SAFETY: a fresh private anonymous mapping chosen by the kernel (no hint, no MAP_FIXED)
    // touches no existing memory.
    let mapped = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            page,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    };
    let Ok(p) = mapped else {
        return Box::leak(Box::new(AtomicU32::new(0)));
    };
    // SAFETY: `p` is the page just mapped and never unmapped; MADV_WIPEONFORK changes what a
    // forked child sees there, never this process's view.
    if unsafe { rustix::mm::madvise(p, page, Advice::LinuxWipeOnFork) }.is_err() {
        // Old kernel: the cache survives fork (documented in synchronize/README.md).
    }
    // SAFETY: the page is zero-filled, page-aligned (more than AtomicU32 needs), lives for the
    // rest of the process (never unmapped) and is only ever accessed through this atomic.
    unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }
}

/// What a probe of another process found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No such process, or it has exited (a zombie not yet reaped counts as exited).
    Gone,
    /// A live process has this pid; `start_ticks` is its start time (clock ticks after boot,
    /// from `/proc`), `None` when `/proc` could not say.
    Alive {
        /// The process's start time, which tells a recycled pid from the original.
        start_ticks: Option<u64>,
    },
}

/// Probes process `pid`: `/proc/<pid>/stat` (state and start time), or `kill(pid, 0)` where
/// `/proc` is not readable (then a zombie still looks alive).
pub fn probe_process(pid: u32) -> Probe {
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => match parse_stat(&stat) {
            Some((b'Z' | b'X', _)) => Probe::Gone,
            Some((_, start)) => Probe::Alive { start_ticks: Some(start) },
            None => Probe::Alive { start_ticks: None },
        },
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => Probe::Gone,
        Err(e) if e.raw_os_error() == Some(Errno::SRCH.raw_os_error()) => Probe::Gone,
        Err(_) => {
            let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
                return Probe::Gone;
            };
            match rustix::process::test_kill_process(p) {
                Err(Errno::SRCH) => Probe::Gone,
                _ => Probe::Alive { start_ticks: None },
            }
        }
    }
}

/// The start time (clock ticks after boot) of process `pid`, if `/proc` tells.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, start)| start)
}

/// Field 3 (state) and field 22 (starttime) of a `/proc/<pid>/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &[u8]) -> Option<(u8, u64)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Where POSIX shared-memory objects live on Linux (what glibc's `shm_open` uses).
pub const SHM_DIR: &str = "/dev/shm";

fn shm_path(name: &str) -> String {
    format!("{SHM_DIR}/{name}")
}

/// `shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)` then `ftruncate(len)`: a new named block
/// of `len` zero bytes, close-on-exec. `name` is a validated file name (no `/`, no NUL). If
/// sizing fails, the half-made block is removed again.
pub fn shm_create(name: &str, len: u64) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let path = shm_path(name);
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path.as_str(), flags, Mode::RUSR | Mode::WUSR)?;
    if let Err(e) = rustix::fs::ftruncate(&fd, len) {
        let _ = rustix::fs::unlink(path.as_str());
        return Err(e.into());
    }
    Ok(fd)
}

/// `shm_open(name, O_RDWR)`: an existing named block, close-on-exec, with its size in bytes.
pub fn shm_open(name: &str) -> io::Result<(OwnedFd, u64)> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(shm_path(name).as_str(), flags, Mode::empty())?;
    let size = file_size(fd.as_fd())?;
    Ok((fd, size))
}

/// `shm_unlink(name)`: removes the name; mappings and descriptors stay valid.
pub fn shm_unlink(name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlink(shm_path(name).as_str())?)
}

/// The size in bytes of the file behind `fd`.
pub fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let size = rustix::fs::fstat(fd)?.st_size;
    u64::try_from(size).map_err(|_| io::Error::other(format!("negative file size {size}")))
}

/// `(device, inode)` of the file behind `fd`: what tells one shared-memory object from
/// another that later got the same name.
pub fn file_id(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// `(device, inode)` of the named block, without opening it (`Ok(None)` if there is none).
pub fn shm_id(name: &str) -> io::Result<Option<(u64, u64)>> {
    match rustix::fs::lstat(shm_path(name).as_str()) {
        Ok(st) => Ok(Some((st.st_dev, st.st_ino))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether any process we can inspect maps the file with inode `ino` on device `dev`, read from
/// `/proc/*/maps` (processes of other users, whose maps we cannot read, count as not using it).
pub fn mapped_anywhere(dev: u64, ino: u64) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let dev_field = format!("{major:02x}:{minor:02x}");
    let ino_field = ino.to_string();
    procs.flatten().any(|p| {
        let is_pid = p.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            return false;
        }
        let Ok(maps) = std::fs::read_to_string(p.path().join("maps")) else {
            return false;
        };
        // `address perms offset dev inode path`
        maps.lines().any(|line| {
            let mut f = line.split_ascii_whitespace().skip(3);
            f.next() == Some(dev_field.as_str()) && f.next() == Some(ino_field.as_str())
        })
    })
}

/// Detaches this process from its parent's fate: no parent-death signal, and a session of its
/// own (so a Ctrl-C at the terminal, sent to the foreground process group, does not reach it).
pub fn detach_from_parent() -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(None)?;
    // Fails only if we already lead a process group, which an mp child never does.
    let _ = rustix::process::setsid();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_odd_command_name() {
        let line = b"42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some((b'S', 987_654)));
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn own_process_is_alive_with_a_start_time() {
        let me = getpid();
        let start = start_ticks(me).expect("/proc is mounted in the test environment");
        assert_eq!(probe_process(me), Probe::Alive { start_ticks: Some(start) });
    }
}

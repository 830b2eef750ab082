//! Raw OS calls: the only module of mp that talks to the kernel directly.
//!
//! Everything here is a thin, typed wrapper over one system call (through rustix, or nix
//! where rustix lacks the call), so the rest of the runtime reads as protocol logic.

mod atexit;
pub use atexit::at_exit;

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

pub mod shm;

#[cfg(feature = "mpi")]
pub mod mpi;

pub use rustix::process::WaitStatus;

/// The most descriptors one frame may carry (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS_PER_FRAME: usize = 64;

/// A connected pair of Unix stream sockets, both close-on-exec.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) =
        rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    Ok((a, b))
}

/// Connects a Unix stream socket to `path`, giving up at `deadline` (`Ok(None)`). While the
/// listener's backlog of unaccepted connections is full, `connect` waits for a free slot;
/// `SO_SNDTIMEO` bounds that wait (the kernel then says `EAGAIN`), and is cleared again
/// before the socket is used.
pub fn connect_unix(path: &std::path::Path, deadline: Instant) -> io::Result<Option<OwnedFd>> {
    use rustix::net::sockopt::{Timeout, set_socket_timeout};
    let addr = rustix::net::SocketAddrUnix::new(path)?;
    let fd = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // Zero would mean "no timeout".
        set_socket_timeout(&fd, Timeout::Send, Some(left.max(std::time::Duration::from_millis(1))))?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => {
                set_socket_timeout(&fd, Timeout::Send, None)?;
                return Ok(Some(fd));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes every byte of `bufs`, attaching `fds` to the first chunk. Never raises SIGPIPE: a
/// vanished peer is `BrokenPipe`.
pub fn send_all(fd: BorrowedFd<'_>, bufs: &[&[u8]], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut sent = 0usize;
    let mut first = true;
    while sent < total {
        // Rebuild the iovec list past what was already written.
        let mut skip = sent;
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len());
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            iov.push(IoSlice::new(&b[skip..]));
            skip = 0;
        }
        let n = if first && !fds.is_empty() {
            sendmsg(fd, &iov, fds, SendFlags::NOSIGNAL)?
        } else if iov.len() == 1 {
            retry(|| rustix::net::send(fd, iov[0].as_ref(), SendFlags::NOSIGNAL))?
        } else {
            sendmsg(fd, &iov, &[], SendFlags::NOSIGNAL)?
        };
        first = false;
        sent += n;
    }
    Ok(())
}

/// Reads what is available (at least one byte; blocking unless `dontwait`, which makes an
/// empty socket `WouldBlock`), queueing any descriptors that came with it. Returns 0 at end
/// of stream.
pub fn recv_some(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    dontwait: bool,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_FRAME))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let flags =
        if dontwait { RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT } else { RecvFlags::CMSG_CLOEXEC };
    let msg = retry(|| rustix::net::recvmsg(fd, &mut iov, &mut control, flags))?;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::other(format!(
            "a frame carried more than {MAX_FDS_PER_FRAME} descriptors; the extra ones were dropped"
        )));
    }
    Ok(msg.bytes)
}

/// Waits until `fd` is readable (or hung up; a pidfd is readable once its process exited).
/// `None` waits forever. Returns false on timeout.
pub fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    Ok(wait_any_readable(&[fd], deadline)?.is_some())
}

/// Waits until one of `fds` is readable; returns its index, or `None` on timeout.
pub fn wait_any_readable(fds: &[BorrowedFd<'_>], deadline: Option<Instant>) -> io::Result<Option<usize>> {
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect();
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            Timespec::try_from(left).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 })
        });
        match rustix::event::poll(&mut pfds, timeout.as_ref()) {
            Ok(0) => return Ok(None),
            Ok(_) => {
                return Ok(pfds.iter().position(|p| !p.revents().is_empty()));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One `sendmsg`, with `fds` (if any) as an SCM_RIGHTS control message.
fn sendmsg(
    fd: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> io::Result<usize> {
    if fds.is_empty() {
        let mut control = SendAncillaryBuffer::default();
        return retry(|| rustix::net::sendmsg(fd, iov, &mut control, flags));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("control buffer too small for descriptors"));
    }
    retry(|| rustix::net::sendmsg(fd, iov, &mut control, flags))
}

fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(Into::into),
        }
    }
}

/// Duplicates `fd` to a close-on-exec descriptor numbered at least `min`.
pub fn dup_cloexec_min(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, min)?)
}

/// Marks `fd` close-on-exec, so programs the user starts with `std::process::Command` from a
/// worker never inherit mp's channel.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?)
}

/// Starts `path` with `args` and `env` on the posix_spawn path (vfork+exec, no copy of the
/// parent's page tables). `dup2s` are applied in order in the child, as `(from, to)`.
pub fn spawn(path: &CString, args: &[CString], env: &[CString], dup2s: &[(RawFd, RawFd)]) -> io::Result<Pid> {
    use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, posix_spawn};
    let mut actions = PosixSpawnFileActions::init()?;
    for &(from, to) in dup2s {
        // dup2 onto the same number would keep close-on-exec: callers keep sources >= 10.
        debug_assert_ne!(from, to);
        actions.add_dup2(from, to)?;
    }
    let attr = PosixSpawnAttr::init()?;
    let pid = posix_spawn(path.as_c_str(), &actions, &attr, args, env)?;
    Pid::from_raw(pid.as_raw()).ok_or_else(|| io::Error::other("posix_spawn returned pid 0"))
}

/// Opens /dev/null for reading and writing, close-on-exec, at descriptor 10 or above.
pub fn dev_null() -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    dup_cloexec_min(fd.as_fd(), 10)
}

/// Points standard output at `fd` (then `fd` may be closed).
pub fn redirect_stdout(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::stdio::dup2_stdout(fd)?)
}

/// A descriptor that becomes readable when process `pid` exits (race-free against pid reuse).
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// Sends `sig` through a pidfd: never hits a recycled pid.
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    let sig = Signal::from_named_raw(sig)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("unknown signal {sig}")))?;
    match rustix::process::pidfd_send_signal(pidfd, sig) {
        // Already exited but not yet reaped: nothing to signal.
        Err(rustix::io::Errno::SRCH) => Ok(()),
        other => Ok(other?),
    }
}

/// Reaps `pid` if it has exited; never blocks.
pub fn try_wait(pid: Pid) -> io::Result<Option<WaitStatus>> {
    match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Ok(Some(status)),
        Ok(None) => Ok(None),
        Err(rustix::io::Errno::INTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Asks the kernel to SIGKILL this process when the thread that started it exits.
pub fn set_parent_death_kill() -> io::Result<()> {
    Ok(rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?)
}

/// Cancels the parent-death signal: a manager watches its owner through a socket instead,
/// so it can remove its socket directory before it exits.
pub fn clear_parent_death_signal() -> io::Result<()> {
    Ok(rustix::process::set_parent_process_death_signal(None)?)
}

/// The parent's pid, or 0 when the parent is outside our pid namespace.
pub fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}

/// Takes ownership of descriptor `fd`, which the spawner placed in this process.
///
/// Returns `None` when `fd` is not an open socket: then we were not started by mp.
pub fn adopt_inherited_socket(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: `fd` is borrowed only for the duration of `fstat`; the kernel validates it, so a
    // closed number is an EBADF error, not undefined behaviour.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let stat = rustix::fs::fstat(borrowed).ok()?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return None;
    }
    // SAFETY: the spawner dup2'ed our end of the socket pair to `fd` and nothing else in this
    // process knows the number (it came from our own environment marker), so we are its only
    // owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes ownership of inherited descriptor `fd`, whatever it is, if it is open.
pub fn adopt_inherited(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: borrowed only for `fcntl`, which the kernel validates (EBADF if closed).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).ok()?;
    // SAFETY: the spawner placed this descriptor for us, and its number came from our own
    // environment marker: nothing else in this process owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes the child markers from our environment, so programs a worker starts do not
/// mistake themselves for mp children.
pub fn remove_env(keys: &[&str]) {
    for k in keys {
        // SAFETY: called once from `mp::init()` in a freshly started child, before the worker
        // code runs and before mp starts any thread; nothing reads the environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
}

/// Exits the process now, without unwinding: the last step of a child.
pub fn exit(code: i32) -> ! {
    std::process::exit(code)
}

/// Writes what the socket takes now (one `sendmsg`, never blocking), attaching `fds` to it.
/// `Ok(0)` when the socket buffer is full.
pub fn send_nonblocking(fd: BorrowedFd<'_>, bufs: &[&[u8]], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let iov: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    match sendmsg(fd, &iov, fds, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}

/// A counter descriptor that another thread makes readable to wake a `poll`.
pub fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )?)
}

/// Wakes whoever polls `efd`.
pub fn eventfd_signal(efd: BorrowedFd<'_>) {
    let _ = rustix::io::write(efd, &1u64.to_ne_bytes());
}

/// Resets `efd` after a wake-up.
pub fn eventfd_drain(efd: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(efd, &mut buf);
}

/// `poll(2)` until `deadline` (`None`: no deadline); a signal just ends the wait early
/// (callers look at the results and wait again).
fn poll_until(pfds: &mut [PollFd<'_>], deadline: Option<Instant>) -> io::Result<()> {
    let timeout = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        Timespec::try_from(left).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 })
    });
    match rustix::event::poll(pfds, timeout.as_ref()) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Polls `fds` with the given interest; returns which are ready (readable, writable).
pub fn poll_many(fds: &[(BorrowedFd<'_>, bool)], deadline: Option<Instant>) -> io::Result<Vec<(bool, bool)>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(f, want_write)| {
            let mut flags = PollFlags::IN;
            if *want_write {
                flags |= PollFlags::OUT;
            }
            PollFd::new(f, flags)
        })
        .collect();
    poll_until(&mut pfds, deadline)?;
    Ok(pfds
        .iter()
        .map(|p| {
            let r = p.revents();
            (
                r.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR),
                r.intersects(PollFlags::OUT | PollFlags::ERR),
            )
        })
        .collect())
}

/// Polls each of `fds` for reading and/or writing (`(fd, read, write)`); returns which woke
/// (ready as asked, hung up, or in error). A socket asked for neither wakes only on hang-up
/// or error.
#[cfg(feature = "tls")]
pub fn poll_rw(fds: &[(BorrowedFd<'_>, bool, bool)], deadline: Option<Instant>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(f, r, w)| {
            let mut flags = PollFlags::empty();
            if *r {
                flags |= PollFlags::IN;
            }
            if *w {
                flags |= PollFlags::OUT;
            }
            PollFd::new(f, flags)
        })
        .collect();
    poll_until(&mut pfds, deadline)?;
    Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect())
}

/// Waits until one of `exits` (pidfds) is readable or one of `sockets` is hung up on by its
/// peer (POLLRDHUP: data waiting to be read does not count), or `timeout` passes. Returns
/// which (`(exits ready, sockets hung up)`).
pub fn wait_exit_or_hangup(
    exits: &[BorrowedFd<'_>],
    sockets: &[BorrowedFd<'_>],
    timeout: std::time::Duration,
) -> io::Result<(Vec<bool>, Vec<bool>)> {
    let mut pfds: Vec<PollFd<'_>> = exits
        .iter()
        .map(|f| PollFd::new(f, PollFlags::IN))
        .chain(sockets.iter().map(|f| PollFd::new(f, PollFlags::RDHUP)))
        .collect();
    poll_until(&mut pfds, Instant::now().checked_add(timeout))?;
    let any = |p: &PollFd<'_>| !p.revents().is_empty();
    let (a, b) = pfds.split_at(exits.len());
    Ok((a.iter().map(any).collect(), b.iter().map(any).collect()))
}

/// Reads at most `max` bytes into `v`'s spare capacity (no zero-filling first), appending
/// them to `v`. Returns 0 at end of stream.
pub fn recv_into_spare(fd: BorrowedFd<'_>, v: &mut Vec<u8>, max: usize, dontwait: bool) -> io::Result<usize> {
    if v.capacity() - v.len() < max {
        v.reserve(max);
    }
    let flags = if dontwait { RecvFlags::DONTWAIT } else { RecvFlags::empty() };
    let n = loop {
        let spare = &mut v.spare_capacity_mut()[..max];
        match rustix::net::recv(fd, spare, flags) {
            Ok(((filled, _), _)) => break filled.len(),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // SAFETY: `recv` initialized the first `n` bytes of the spare capacity (rustix returns
    // exactly the initialized prefix), and `n <= max <= capacity - len`.
    unsafe { v.set_len(v.len() + n) };
    Ok(n)
}

/// Asks for transparent huge pages behind a large buffer's spare capacity, so filling it takes
/// a few hundred page faults instead of tens of thousands. Advisory: failures are ignored.
pub fn advise_huge_pages(v: &mut Vec<u8>) {
    const HUGE: usize = 2 << 20;
    let spare = v.spare_capacity_mut();
    if spare.len() < 2 * HUGE {
        return;
    }
    let start = spare.as_mut_ptr() as usize;
    let end = start + spare.len();
    let page = 4096;
    let (a, b) = (start.div_ceil(page) * page, end / page * page);
    if b <= a {
        return;
    }
    // SAFETY: [a, b) lies inside the Vec's own allocation (its spare capacity, rounded inwards
    // to page boundaries), which stays allocated for the call; MADV_HUGEPAGE changes only how
    // the kernel backs those pages, never their contents or validity.
    let _ = unsafe { rustix::mm::madvise(a as *mut _, b - a, rustix::mm::Advice::LinuxHugepage) };
}

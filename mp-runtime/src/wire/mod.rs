//! Frames: the unit of every exchange between mp processes. See `README.md` beside this file.

pub(crate) mod codec;

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::sys;

/// Bytes in a frame header: magic (2), version (1), kind (1), fd count (4), length (8).
pub(crate) const HEADER_LEN: usize = 16;
const MAGIC: [u8; 2] = *b"mp";
const VERSION: u8 = 1;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Parent to child: who you are and how to behave (`Setup`).
    Setup = 1,
    /// Parent to child: run a worker (`TaskHead` then the encoded arguments).
    Task = 2,
    /// Child to parent: a task's result (`ReplyHead` then the encoded output(s)).
    Reply = 3,
    /// Parent to child: finish and exit.
    Shutdown = 4,
    /// Child to parent: which item of a chunk has been running for a while (`Running`).
    Progress = 5,
    /// Listener and Client: one handshake message (see `listener/README.md`).
    Auth = 6,
    /// A value sent through a `Connection`.
    Data = 16,
    /// Raw bytes sent with `Connection::send_bytes`.
    Bytes = 17,
}

impl Kind {
    pub(crate) fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Setup,
            2 => Kind::Task,
            3 => Kind::Reply,
            4 => Kind::Shutdown,
            5 => Kind::Progress,
            6 => Kind::Auth,
            16 => Kind::Data,
            17 => Kind::Bytes,
            _ => return None,
        })
    }
}

static MAX_FRAME: AtomicU64 = AtomicU64::new(1 << 30);

/// The largest frame payload mp sends or accepts, in bytes (default 1 GiB, or
/// `MP_MAX_FRAME_SIZE` from the environment).
///
/// # Examples
///
/// ```
/// assert!(mp::max_frame_size() >= 1 << 20);
/// ```
pub fn max_frame_size() -> u64 {
    MAX_FRAME.load(Ordering::Relaxed)
}

/// Sets the largest frame payload this process sends or accepts. A larger incoming frame is
/// an `Error::Protocol` and is skipped, so the connection stays usable; a larger outgoing
/// value is refused before anything is written.
///
/// # Examples
///
/// ```
/// mp::set_max_frame_size(2 << 30);
/// assert_eq!(mp::max_frame_size(), 2 << 30);
/// ```
pub fn set_max_frame_size(bytes: u64) {
    MAX_FRAME.store(bytes, Ordering::Relaxed);
}

pub(crate) fn load_max_frame_from_env() {
    if let Some(n) = std::env::var("MP_MAX_FRAME_SIZE").ok().and_then(|v| v.parse().ok()) {
        set_max_frame_size(n);
    }
}

/// A frame being built: header space first, then the payload appended by the encoder.
pub(crate) struct OutFrame {
    pub buf: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    kind: Kind,
}

impl OutFrame {
    pub fn new(kind: Kind) -> Self {
        Self::with_capacity(kind, 64)
    }

    pub fn with_capacity(kind: Kind, cap: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + cap);
        buf.resize(HEADER_LEN, 0);
        OutFrame { buf, fds: Vec::new(), kind }
    }

    /// Fills in the header; returns the bytes ready to write.
    pub(crate) fn seal(&mut self) -> Result<(), Error> {
        let len = (self.buf.len() - HEADER_LEN) as u64;
        if len > max_frame_size() {
            return Err(too_large(len));
        }
        if self.fds.len() > sys::MAX_FDS_PER_FRAME {
            return Err(Error::Protocol(format!(
                "a message carries {} handles; at most {} fit in one frame",
                self.fds.len(),
                sys::MAX_FDS_PER_FRAME
            )));
        }
        write_header(&mut self.buf[..HEADER_LEN], self.kind, self.fds.len() as u32, len);
        Ok(())
    }

    /// Writes the frame to `fd`.
    pub fn send(mut self, fd: BorrowedFd<'_>, what: &str) -> Result<(), Error> {
        self.seal()?;
        let fds: Vec<BorrowedFd<'_>> = self.fds.iter().map(|f| f.as_fd()).collect();
        sys::send_all(fd, &[&self.buf], &fds).map_err(|e| send_error(e, what))
    }
}

/// Writes several frames in one vectored write; every descriptor rides on the first bytes,
/// which the reader's descriptor queue hands to the frames that announced them, in order.
pub(crate) fn send_frames(fd: BorrowedFd<'_>, mut frames: Vec<OutFrame>, what: &str) -> Result<(), Error> {
    for f in &mut frames {
        f.seal()?;
    }
    let bufs: Vec<&[u8]> = frames.iter().map(|f| f.buf.as_slice()).collect();
    let fds: Vec<BorrowedFd<'_>> = frames.iter().flat_map(|f| f.fds.iter().map(|d| d.as_fd())).collect();
    sys::send_all(fd, &bufs, &fds).map_err(|e| send_error(e, what))
}

/// Writes one frame whose payload is the concatenation of `parts`, in one vectored write.
pub(crate) fn send_parts(fd: BorrowedFd<'_>, kind: Kind, parts: &[&[u8]], what: &str) -> Result<(), Error> {
    let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
    if len > max_frame_size() {
        return Err(too_large(len));
    }
    let mut header = [0u8; HEADER_LEN];
    write_header(&mut header, kind, 0, len);
    let mut bufs: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
    bufs.push(&header);
    bufs.extend_from_slice(parts);
    sys::send_all(fd, &bufs, &[]).map_err(|e| send_error(e, what))
}

fn too_large(len: u64) -> Error {
    Error::Protocol(format!(
        "a message of {len} bytes exceeds the frame limit of {} bytes; raise it with \
         mp::set_max_frame_size (or MP_MAX_FRAME_SIZE) in both processes, or send it in parts",
        max_frame_size()
    ))
}

/// Fills in the header of `buf` (header space, then the payload) for a frame without
/// descriptors.
pub(crate) fn seal_raw(buf: &mut [u8], kind: Kind) {
    let len = (buf.len() - HEADER_LEN) as u64;
    write_header(&mut buf[..HEADER_LEN], kind, 0, len);
}

fn write_header(h: &mut [u8], kind: Kind, nfds: u32, len: u64) {
    h[0..2].copy_from_slice(&MAGIC);
    h[2] = VERSION;
    h[3] = kind as u8;
    h[4..8].copy_from_slice(&nfds.to_le_bytes());
    h[8..16].copy_from_slice(&len.to_le_bytes());
}

fn send_error(e: std::io::Error, what: &str) -> Error {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
            Error::Disconnected { what: what.to_string() }
        }
        _ => Error::io(format!("sending on {what}"), e),
    }
}

/// A received frame.
#[derive(Debug)]
pub(crate) struct Frame {
    pub kind: Kind,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

struct Partial {
    kind: Kind,
    nfds: usize,
    /// The announced payload length.
    len: usize,
    /// The bytes received so far.
    payload: Vec<u8>,
}

impl Partial {
    /// Room for the rest of the payload. Only address space is reserved: pages are committed
    /// as bytes arrive, so a lying length costs no memory (and is capped by the frame limit).
    fn reserve_rest(&mut self) {
        if self.payload.capacity() < self.len {
            self.payload.reserve_exact(self.len - self.payload.len());
            sys::advise_huge_pages(&mut self.payload);
        }
    }
}

fn recv_error(e: std::io::Error, what: &str) -> Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock => timeout(what),
        std::io::ErrorKind::ConnectionReset => Error::Disconnected { what: what.to_string() },
        _ => Error::io(format!("receiving on {what}"), e),
    }
}

fn timeout(what: &str) -> Error {
    Error::Timeout { what: format!("receiving on {what}"), after: Default::default() }
}

fn truncated(what: &str, got: usize, len: usize) -> Error {
    Error::Protocol(format!("truncated frame on {what}: the peer closed after {got} of {len} payload bytes"))
}

/// Reads frames from a stream socket, keeping partial state so a timeout never loses bytes.
pub(crate) struct FrameReader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
    partial: Option<Partial>,
    /// Bytes of an oversized frame still to be skipped.
    discard: u64,
    /// Overrides the process-wide frame limit for this reader.
    pub limit: Option<u64>,
    /// Set during `try_read`: never wait, an empty socket ends the attempt.
    nonblocking: bool,
    /// A buffer to receive the next payload into (its pages are already mapped).
    pub spare: Option<Vec<u8>>,
    /// A TCP stream: no descriptors can arrive, so a frame announcing some is refused.
    pub remote: bool,
    /// Busy-polls briefly before blocking (request/response connections); see [`Spin`].
    pub spin: Option<Spin>,
}

/// Adaptive busy-polling for a connection whose peer usually answers within microseconds
/// (a manager's client waiting for its reply, the server waiting for the next call of a
/// client in a loop).
///
/// Sleeping in `recv` and being woken costs two context switches and, when the peer runs on
/// another CPU, an inter-processor interrupt: on a VM that is most of a 15-25 µs round trip.
/// Polling with non-blocking `recv` for a few microseconds instead, when the answer is about
/// to arrive, avoids all of it, and costs less CPU than the sleep and wake-up it replaces.
///
/// The window follows the recent waits: a peer that answers fast gets up to [`SPIN_MAX`] of
/// polling; a quiet one (waits above `SPIN_MAX`), none, so an idle connection burns nothing.
/// Between polls the thread yields (a peer on the same CPU runs at once). A poll that
/// misses its window, or a yield that lets another thread run for long (the CPUs are
/// busy: sleeping is then better, since the scheduler favours a woken thread), turns
/// polling off for the next 1, 2, 4, … up to 4096 waits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spin {
    /// Moving average of recent waits, in nanoseconds (each capped at `4 * SPIN_MAX`).
    avg_ns: u64,
    /// Waits left before polling is tried again.
    skip: u32,
    /// The current length of `skip` after a failed poll.
    backoff: u32,
}

/// Whether connections that ask for it may busy-poll: yes unless `MP_BUSY_POLL=0` (or
/// `off`) in the environment, for machines where CPU time matters more than latency.
pub(crate) fn busy_poll_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let v = std::env::var("MP_BUSY_POLL").unwrap_or_default();
        !["0", "off", "false", "no"].iter().any(|off| v.trim().eq_ignore_ascii_case(off))
    })
}

/// The longest a reader polls before it sleeps.
pub(crate) const SPIN_MAX: Duration = Duration::from_micros(50);

/// A yield longer than this ran another thread: the CPU is wanted.
const SPIN_PREEMPTED: Duration = Duration::from_micros(20);

const SPIN_MAX_BACKOFF: u32 = 4096;

impl Default for Spin {
    fn default() -> Self {
        Spin { avg_ns: SPIN_MAX.as_nanos() as u64 / 4, skip: 0, backoff: 0 }
    }
}

impl Spin {
    /// How long to poll before sleeping: twice the usual wait, with some slack, or nothing
    /// when waits have been longer than polling could cover, or polling is backing off.
    fn window(&mut self) -> Duration {
        if self.skip > 0 {
            self.skip -= 1;
            return Duration::ZERO;
        }
        let max = SPIN_MAX.as_nanos() as u64;
        if self.avg_ns >= max {
            return Duration::ZERO;
        }
        Duration::from_nanos((2 * self.avg_ns + 5_000).min(max))
    }

    fn observe(&mut self, waited: Duration) {
        let w = (waited.as_nanos() as u64).min(4 * SPIN_MAX.as_nanos() as u64);
        self.avg_ns = (3 * self.avg_ns + w) / 4;
    }

    fn failed(&mut self) {
        self.backoff = (self.backoff * 2).clamp(1, SPIN_MAX_BACKOFF);
        self.skip = self.backoff;
    }
}

const READ_BUF: usize = 64 * 1024;

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader {
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            fds: VecDeque::new(),
            partial: None,
            discard: 0,
            limit: None,
            nonblocking: false,
            spare: None,
            remote: false,
            spin: None,
        }
    }

    /// Whether bytes of a next frame are already buffered (so `poll` can answer without a
    /// system call).
    pub fn has_buffered(&self) -> bool {
        self.end > self.start
    }

    /// Reads more bytes into the buffer. Ok(false) at end of stream.
    fn fill(&mut self, fd: BorrowedFd<'_>, deadline: Option<Instant>, what: &str) -> Result<bool, Error> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // The wait for the start of a frame is what the spin window adapts to (the rest of a
        // frame follows at once; a `try_read` does not wait).
        let new_frame = self.partial.is_none() && self.discard == 0 && self.start == self.end;
        let started = self.spin.filter(|_| new_frame && !self.nonblocking).map(|_| Instant::now());
        let observe = |spin: &mut Option<Spin>| {
            if let (Some(spin), Some(t)) = (spin, started) {
                spin.observe(t.elapsed());
            }
        };
        let n = match self.spin_recv(fd, deadline).map_err(|e| recv_error(e, what))? {
            Some(n) => n,
            None => {
                if !self.nonblocking
                    && deadline.is_some()
                    && !sys::wait_readable(fd, deadline)
                        .map_err(|e| Error::io(format!("waiting on {what}"), e))?
                {
                    observe(&mut self.spin);
                    return Err(timeout(what));
                }
                sys::recv_some(fd, &mut self.buf[self.end..], &mut self.fds, self.nonblocking)
                    .map_err(|e| recv_error(e, what))?
            }
        };
        observe(&mut self.spin);
        self.end += n;
        Ok(n > 0)
    }

    /// Polls for bytes during the spin window (see [`Spin`]): `Some(n)` when they came (0:
    /// end of stream), `None` when the caller should block.
    fn spin_recv(&mut self, fd: BorrowedFd<'_>, deadline: Option<Instant>) -> std::io::Result<Option<usize>> {
        let window = match &mut self.spin {
            Some(spin) if !self.nonblocking => spin.window(),
            _ => return Ok(None),
        };
        if window.is_zero() {
            return Ok(None);
        }
        let start = Instant::now();
        // A caller's deadline that ends the polling first is no sign polling does not pay.
        let (until, by_window) = match deadline {
            Some(d) if d < start + window => (d, false),
            _ => (start + window, true),
        };
        let fail = |spin: &mut Option<Spin>| spin.as_mut().map(Spin::failed);
        loop {
            match sys::recv_some(fd, &mut self.buf[self.end..], &mut self.fds, true) {
                Ok(n) => {
                    if let Some(spin) = &mut self.spin {
                        spin.backoff = 0;
                    }
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= until {
                if by_window {
                    fail(&mut self.spin);
                }
                return Ok(None);
            }
            std::thread::yield_now();
            if now.elapsed() > SPIN_PREEMPTED {
                // Another thread wanted this CPU: look once more, then let the scheduler decide.
                fail(&mut self.spin);
                return match sys::recv_some(fd, &mut self.buf[self.end..], &mut self.fds, true) {
                    Ok(n) => Ok(Some(n)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) => Err(e),
                };
            }
        }
    }

    /// Reads one frame. `deadline` bounds the wait; a timeout keeps every byte read so far.
    pub fn read(
        &mut self,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
        what: &str,
    ) -> Result<Frame, Error> {
        loop {
            // Skip the rest of an oversized frame first, so the stream stays in sync.
            while self.discard > 0 {
                let have = (self.end - self.start) as u64;
                if have == 0 {
                    if !self.fill(fd, deadline, what)? {
                        return Err(Error::Disconnected { what: what.to_string() });
                    }
                    continue;
                }
                let n = have.min(self.discard) as usize;
                self.start += n;
                self.discard -= n as u64;
            }
            if let Some(p) = &mut self.partial {
                // Copy what is buffered, then read the rest straight into the payload.
                let take = (p.len - p.payload.len()).min(self.end - self.start);
                p.payload.extend_from_slice(&self.buf[self.start..self.start + take]);
                self.start += take;
                while p.len - p.payload.len() >= READ_BUF / 2 {
                    if !self.nonblocking
                        && deadline.is_some()
                        && !sys::wait_readable(fd, deadline)
                            .map_err(|e| Error::io(format!("waiting on {what}"), e))?
                    {
                        return Err(timeout(what));
                    }
                    p.reserve_rest();
                    // Plain recv: this frame's descriptors came with its header, and reading
                    // stops at its last byte, before the next frame's.
                    let need = p.len - p.payload.len();
                    let n = sys::recv_into_spare(fd, &mut p.payload, need, self.nonblocking)
                        .map_err(|e| recv_error(e, what))?;
                    if n == 0 {
                        let (got, len) = (p.payload.len(), p.len);
                        self.partial = None;
                        return Err(truncated(what, got, len));
                    }
                }
                if p.payload.len() == p.len {
                    let p = self.partial.take().expect("partial frame present");
                    if self.fds.len() < p.nfds {
                        return Err(Error::Protocol(format!(
                            "a frame on {what} announced {} handles but {} arrived",
                            p.nfds,
                            self.fds.len()
                        )));
                    }
                    let fds = self.fds.drain(..p.nfds).collect();
                    return Ok(Frame { kind: p.kind, payload: p.payload, fds });
                }
                let (got, len) = (p.payload.len(), p.len);
                if !self.fill(fd, deadline, what)? {
                    self.partial = None;
                    return Err(truncated(what, got, len));
                }
                continue;
            }
            if self.end - self.start < HEADER_LEN {
                let had = self.end - self.start;
                if !self.fill(fd, deadline, what)? {
                    if had == 0 {
                        return Err(Error::Disconnected { what: what.to_string() });
                    }
                    self.start = self.end;
                    return Err(Error::Protocol(format!(
                        "truncated frame on {what}: the peer closed after {had} header bytes"
                    )));
                }
                continue;
            }
            let h = &self.buf[self.start..self.start + HEADER_LEN];
            if h[0..2] != MAGIC || h[2] != VERSION {
                // Nothing after a corrupt header can be trusted: drop the buffered bytes.
                self.start = self.end;
                return Err(Error::Protocol(format!(
                    "malformed frame on {what}: bad magic/version {:02x?} (is something other \
                     than mp writing to this socket?)",
                    &h[0..3]
                )));
            }
            let kind_byte = h[3];
            let nfds = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")) as usize;
            let len = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
            self.start += HEADER_LEN;
            // Descriptors arrived with the header bytes; a bad frame still owns them.
            let max = self.limit.unwrap_or_else(max_frame_size);
            let Some(kind) = Kind::from_u8(kind_byte) else {
                self.discard = len;
                self.drop_fds(nfds);
                return Err(Error::Protocol(format!("unknown frame kind {kind_byte} on {what}")));
            };
            if nfds > 0 && self.remote {
                self.discard = len;
                return Err(Error::Protocol(format!(
                    "a frame on {what} announces {nfds} OS handles, which cannot travel over TCP; \
                     it was skipped"
                )));
            }
            if len > max {
                self.discard = len;
                self.drop_fds(nfds);
                return Err(Error::Protocol(format!(
                    "a frame of {len} bytes on {what} exceeds the limit of {max} bytes and was \
                     skipped; raise the limit (Connection::set_max_message_size, \
                     mp::set_max_frame_size or MP_MAX_FRAME_SIZE)"
                )));
            }
            let len = len as usize;
            // Grow as bytes arrive: a lying length never allocates more than is received.
            let payload = match self.spare.take() {
                Some(mut v) => {
                    v.clear();
                    v
                }
                None => Vec::with_capacity(len.min(READ_BUF)),
            };
            self.partial = Some(Partial { kind, nfds, len, payload });
        }
    }

    /// Reads one frame if the bytes are there, without waiting: `Ok(None)` when the socket
    /// is drained (partial state is kept for the next call).
    pub fn try_read(&mut self, fd: BorrowedFd<'_>, what: &str) -> Result<Option<Frame>, Error> {
        self.nonblocking = true;
        let r = self.read(fd, None, what);
        self.nonblocking = false;
        match r {
            Ok(f) => Ok(Some(f)),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn drop_fds(&mut self, n: usize) {
        let n = n.min(self.fds.len());
        self.fds.drain(..n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_window_follows_the_waits() {
        let mut s = Spin::default();
        for _ in 0..8 {
            s.observe(Duration::from_micros(8));
        }
        let w = s.window();
        assert!(w >= Duration::from_micros(16) && w <= SPIN_MAX, "{w:?}");
        // A quiet peer: waits longer than polling could cover turn it off...
        for _ in 0..4 {
            s.observe(Duration::from_millis(5));
        }
        assert_eq!(s.window(), Duration::ZERO);
        // ...and a few fast answers turn it on again.
        for _ in 0..8 {
            s.observe(Duration::from_micros(8));
        }
        assert!(s.window() > Duration::ZERO);
    }

    #[test]
    fn failed_polls_back_off_doubling_up_to_the_cap() {
        let mut s = Spin::default();
        let mut skipped = Vec::new();
        for _ in 0..16 {
            s.failed();
            let mut n = 0;
            while s.window().is_zero() {
                n += 1;
            }
            skipped.push(n);
        }
        assert_eq!(&skipped[..4], &[1, 2, 4, 8]);
        assert_eq!(*skipped.last().unwrap(), SPIN_MAX_BACKOFF as usize);
    }

    #[test]
    fn a_polling_reader_keeps_deadlines_and_still_sleeps_for_late_frames() {
        let (a, b) = sys::socketpair().unwrap();
        let mut r = FrameReader::new();
        r.spin = Some(Spin::default());
        // Nothing arrives: the timeout is the caller's, not the poll window's.
        let t = Instant::now();
        let e = r.read(b.as_fd(), Some(Instant::now() + Duration::from_millis(30)), "test").unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(t.elapsed() >= Duration::from_millis(30));
        // A frame long after any poll window is received by the blocking wait.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            send_parts(a.as_fd(), Kind::Bytes, &[b"late"], "test").unwrap();
            a
        });
        let f = r.read(b.as_fd(), None, "test").unwrap();
        assert_eq!(f.payload, b"late");
        // The wait it saw was long: the next one does not poll.
        assert_eq!(r.spin.unwrap().window(), Duration::ZERO);
        drop(writer.join().unwrap());
    }
}

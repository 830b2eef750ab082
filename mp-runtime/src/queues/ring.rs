//! `Ring`: the shared-memory message ring under `Queue`, `JoinableQueue` and `SimpleQueue`.
//! One memfd holds a header page (positions, locks, wait words) and a power-of-two byte ring
//! of records. Producers take `put_lock`, consumers `get_lock`: each side is serialised, the
//! two sides run concurrently. The protocol, and what happens when a process dies in the
//! middle of it, is in README.md beside this file.

use std::fmt;
use std::hint;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::synchronize::{Lock, LockGuard, Words, sleep_on, wake_all};
use crate::sys;

const MAGIC: u32 = 0x6d70_7131; // "mpq1"
/// The header: one page, each side's words on cache lines of their own.
pub(crate) const HEADER: usize = 4096;
/// A record header: fragment length (u32), flags (u32), whole message length (u64).
const REC: u64 = 16;
/// The longest fragment payload: big messages stream through the ring in fragments of at most
/// this much, so the consumer copies one while the producer writes the next.
const FRAG_MAX: u64 = 1 << 20;
/// Smallest ring: room for a few fragments of a streamed message.
pub(crate) const MIN_CAPACITY: usize = 64 << 10;
/// Largest ring (positions are 32-bit counters; this keeps their difference unambiguous).
pub(crate) const MAX_CAPACITY: usize = 1 << 31;

// Packed positions: message count (32 bits) << 32 | byte position (32 bits), both wrapping.
// One store publishes bytes and messages together, so `qsize` is exact and a crash cannot
// skew it.
const POS_BITS: u32 = 32;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const MSG_MASK: u64 = (1 << 32) - 1;

// Header layout (byte offsets).
const OFF_MAGIC: usize = 0; // u32
const OFF_JOINABLE: usize = 4; // u32
const OFF_CAPACITY: usize = 8; // u64
const OFF_MAXSIZE: usize = 16; // u64, 0 = unbounded
const OFF_PUT_LOCK: usize = 128; // Lock word
const OFF_WRITING: usize = 132; // u32: a streamed message is half-written
const OFF_TAIL: usize = 136; // u64 packed: published end
const OFF_HEAD_SEEN: usize = 144; // u64 packed: producers' last look at `head`
const OFF_GET_LOCK: usize = 256; // Lock word
const OFF_HEAD: usize = 264; // u64 packed: consumed end
const OFF_TAIL_SEEN: usize = 272; // u64 packed: consumers' last look at `tail`
const OFF_DATA_SEQ: usize = 384; // u32 futex: bumped when data is published to a sleeper
const OFF_DATA_WAITERS: usize = 388; // u32
const OFF_SPACE_SEQ: usize = 512; // u32 futex: bumped when space or a slot is freed
const OFF_SPACE_WAITERS: usize = 516; // u32
const OFF_UNFINISHED: usize = 640; // u32 futex: JoinableQueue's unfinished tasks

// Record flags.
const FIRST: u32 = 1;
const LAST: u32 = 2;
/// The rest of the message being streamed will never come (its producer died or timed out).
const ABORT: u32 = 4;

/// Spins before sleeping: with a consumer on another core, the next message is usually
/// less than a futex round trip away.
const SPINS: u32 = 2000;
/// Yields after spinning: on a busy machine the peer may need this core.
const YIELDS: u32 = 8;
/// How often a consumer waiting in the middle of a streamed message checks that its producer
/// is still alive.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

fn pos(p: u64) -> u64 {
    p & POS_MASK
}

fn msgs(p: u64) -> u64 {
    p >> POS_BITS
}

fn advance(p: u64, bytes: u64, messages: u64) -> u64 {
    ((msgs(p) + messages) & MSG_MASK) << POS_BITS | (pos(p) + bytes) & POS_MASK
}

fn used(tail: u64, head: u64) -> u64 {
    pos(tail).wrapping_sub(pos(head)) & POS_MASK
}

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Why a put did not happen.
pub(crate) enum PutFail {
    /// No room (slot or bytes) before the deadline.
    Full,
    /// The operating system refused a wait.
    Error(Error),
}

impl PutFail {
    fn into_error(self) -> Error {
        match self {
            PutFail::Error(e) => e,
            PutFail::Full => Error::invalid("a queue wait reported Full outside a put"),
        }
    }
}

impl From<Error> for PutFail {
    fn from(e: Error) -> Self {
        PutFail::Error(e)
    }
}

/// The shared ring: a mapping of the queue's memfd and its two locks.
pub(crate) struct Ring {
    words: Words,
    put_lock: Lock,
    get_lock: Lock,
    /// First byte of the ring, `HEADER` bytes into the mapping.
    data: NonNull<u8>,
    capacity: u64,
    frag_max: u64,
    maxsize: u64,
    joinable: bool,
}

// SAFETY: the ring's bytes are only read and written under the protocol in README.md
// (each byte range belongs to exactly one side at a time, handed over by Release/Acquire on
// `tail` and `head`); everything else is atomics. The mapping lives as long as `words`.
unsafe impl Send for Ring {}
// SAFETY: as for `Send`: `&Ring` methods take the side's lock before touching ring bytes.
unsafe impl Sync for Ring {}

impl Ring {
    /// A new empty ring of `capacity` bytes (a power of two in `MIN_CAPACITY..=MAX_CAPACITY`)
    /// holding at most `maxsize` messages (0: no limit). Pages are allocated as they are first
    /// written, so a large ring that stays mostly empty costs little.
    pub(crate) fn create(capacity: usize, maxsize: u64, joinable: bool) -> Result<Ring, Error> {
        debug_assert!(capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity));
        let words = Words::new("mp-queue", HEADER + capacity)?;
        words.u64(OFF_CAPACITY).store(capacity as u64, Ordering::Relaxed);
        words.u64(OFF_MAXSIZE).store(maxsize, Ordering::Relaxed);
        words.u32(OFF_JOINABLE).store(u32::from(joinable), Ordering::Relaxed);
        words.u32(OFF_MAGIC).store(MAGIC, Ordering::Release);
        Ring::open(words)
    }

    /// The ring in a received region; checks that it is one.
    pub(crate) fn open(words: Words) -> Result<Ring, Error> {
        let bad = |why: String| Error::Protocol(format!("received a bad Queue: {why}"));
        let len = words.region().len();
        if len < HEADER + MIN_CAPACITY {
            return Err(bad(format!("its shared region has {len} bytes")));
        }
        if words.u32(OFF_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(bad("its header is not a queue's".into()));
        }
        let capacity = words.u64(OFF_CAPACITY).load(Ordering::Relaxed);
        if !capacity.is_power_of_two() || capacity as usize != len - HEADER {
            return Err(bad(format!("capacity {capacity} does not match its {len}-byte region")));
        }
        let put_lock = Lock::in_region(words.region().clone(), OFF_PUT_LOCK)?;
        let get_lock = Lock::in_region(words.region().clone(), OFF_GET_LOCK)?;
        // SAFETY: the region is `HEADER + capacity` bytes long (checked above), so the ring
        // starts inside it.
        let data = unsafe { words.region().as_ptr().add(HEADER) };
        Ok(Ring {
            put_lock,
            get_lock,
            data,
            capacity,
            frag_max: FRAG_MAX.min(capacity / 4),
            maxsize: words.u64(OFF_MAXSIZE).load(Ordering::Relaxed),
            joinable: words.u32(OFF_JOINABLE).load(Ordering::Relaxed) != 0,
            words,
        })
    }

    pub(crate) fn words(&self) -> &Words {
        &self.words
    }

    pub(crate) fn maxsize(&self) -> u64 {
        self.maxsize
    }

    pub(crate) fn is_joinable(&self) -> bool {
        self.joinable
    }

    /// Messages published and not yet taken (one being read counts as taken).
    pub(crate) fn len(&self) -> u64 {
        // `head` first: a later `tail` is never behind it.
        let head = self.words.u64(OFF_HEAD).load(Ordering::Acquire);
        let tail = self.words.u64(OFF_TAIL).load(Ordering::Acquire);
        msgs(tail).wrapping_sub(msgs(head)) & MSG_MASK
    }

    // ---- bytes ----

    /// Copies `src` into the ring at position `at` (wrapping).
    ///
    /// The caller holds `put_lock` and `at..at + len` is free space: no consumer reads it
    /// until a later Release store of `tail` publishes it.
    fn write(&self, at: u64, src: &[u8]) {
        let mask = self.capacity - 1;
        let off = (at & mask) as usize;
        let first = src.len().min(self.capacity as usize - off);
        // SAFETY: `off + first <= capacity` and the rest (`src.len() - first`, at most
        // `capacity`) starts at the ring's start, so both copies stay in the ring. The range
        // is free space owned by the producer holding `put_lock` (see above); `src` is local
        // memory, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.as_ptr().add(off), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data.as_ptr(), src.len() - first);
        }
    }

    /// Appends `len` ring bytes at position `at` (wrapping) to `out`.
    ///
    /// The caller holds `get_lock` and `at..at + len` was published by a `tail` it loaded
    /// with Acquire: no producer writes it until `head` moves past it.
    fn read_into(&self, at: u64, len: u64, out: &mut Vec<u8>) {
        let mask = self.capacity - 1;
        let off = (at & mask) as usize;
        let len = len as usize;
        let first = len.min(self.capacity as usize - off);
        // SAFETY: both slices lie inside the ring (as in `write`); the bytes are published
        // data that no process modifies while this consumer holds `get_lock` and has not
        // moved `head` past them.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(self.data.as_ptr().add(off), first),
                std::slice::from_raw_parts(self.data.as_ptr(), len - first),
            )
        };
        out.extend_from_slice(a);
        out.extend_from_slice(b);
    }

    fn write_record(&self, at: u64, len: u64, flags: u32, total: u64) {
        let mut h = [0u8; REC as usize];
        h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        h[4..8].copy_from_slice(&flags.to_le_bytes());
        h[8..16].copy_from_slice(&total.to_le_bytes());
        self.write(at, &h);
    }

    fn read_record(&self, at: u64) -> (u64, u32, u64) {
        let mut h = [0u8; REC as usize];
        let mask = self.capacity - 1;
        for (i, b) in h.iter_mut().enumerate() {
            // SAFETY: the offset is masked into the ring; the bytes are published (see
            // `read_into`). Byte reads: the header may wrap around the ring's end.
            *b = unsafe { *self.data.as_ptr().add(((at + i as u64) & mask) as usize) };
        }
        let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
        let flags = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        let total = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        (u64::from(len), flags, total)
    }

    // ---- producer side ----

    /// Puts one message made of `parts` (concatenated). Waits for a slot (bounded queues) and
    /// for ring space until `deadline`. A message larger than one fragment streams: it is
    /// visible to consumers as it is written, and a producer that times out (or dies) midway
    /// ends it with an ABORT record, so consumers drop the partial message.
    pub(crate) fn put(&self, parts: &[&[u8]], deadline: Option<Instant>) -> Result<(), PutFail> {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let Some(guard) = self.put_lock.lock_until(deadline)? else {
            return Err(PutFail::Full);
        };
        self.recover_writer(&guard);
        if self.maxsize > 0 {
            self.wait_slot(deadline)?;
        }
        if total <= self.frag_max {
            let rec = REC + align8(total);
            let tail = self.words.u64(OFF_TAIL).load(Ordering::Relaxed);
            self.wait_space(tail, rec, deadline)?;
            self.write_record(pos(tail), total, FIRST | LAST, total);
            let mut at = pos(tail) + REC;
            for p in parts {
                self.write(at, p);
                at += p.len() as u64;
            }
            if self.joinable {
                self.words.u32(OFF_UNFINISHED).fetch_add(1, Ordering::Relaxed);
            }
            self.publish(advance(tail, rec, 1));
            return Ok(());
        }
        self.put_streamed(parts, total, deadline)
    }

    fn put_streamed(&self, parts: &[&[u8]], total: u64, deadline: Option<Instant>) -> Result<(), PutFail> {
        let writing = self.words.u32(OFF_WRITING);
        let (mut part, mut in_part) = (0usize, 0usize);
        let mut sent = 0u64;
        while sent < total {
            let tail = self.words.u64(OFF_TAIL).load(Ordering::Relaxed);
            // Always leave room for an ABORT record after this fragment.
            let want = (total - sent).min(self.frag_max);
            let least = want.min(self.frag_max / 4).max(1);
            let free = match self.wait_space(tail, REC + align8(least) + REC, deadline) {
                Ok(free) => free,
                Err(e) => {
                    if sent > 0 {
                        self.append_abort();
                    }
                    writing.store(0, Ordering::Relaxed);
                    return Err(e);
                }
            };
            let len = want.min((free - 2 * REC) & !7);
            let first = sent == 0;
            let last = sent + len == total;
            let flags = if first { FIRST } else { 0 } | if last { LAST } else { 0 };
            self.write_record(pos(tail), len, flags, total);
            let mut at = pos(tail) + REC;
            let mut left = len as usize;
            while left > 0 {
                let p = parts[part];
                let n = left.min(p.len() - in_part);
                self.write(at, &p[in_part..in_part + n]);
                at += n as u64;
                left -= n;
                in_part += n;
                if in_part == p.len() {
                    part += 1;
                    in_part = 0;
                }
            }
            if last && self.joinable {
                self.words.u32(OFF_UNFINISHED).fetch_add(1, Ordering::Relaxed);
            }
            if first {
                // Set before FIRST is visible, after the room for it (and an ABORT) was
                // found: whoever sees it set can always append an ABORT.
                writing.store(1, Ordering::Relaxed);
            }
            self.publish(advance(tail, REC + align8(len), u64::from(first)));
            sent += len;
        }
        writing.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// After taking `put_lock` over from a producer that died mid-stream, ends its message.
    fn recover_writer(&self, guard: &LockGuard<'_>) {
        if guard.previous_owner_died() && self.words.u32(OFF_WRITING).load(Ordering::Relaxed) != 0 {
            self.append_abort();
            self.words.u32(OFF_WRITING).store(0, Ordering::Relaxed);
        }
    }

    /// Publishes an ABORT record. Streaming producers always leave room for one.
    fn append_abort(&self) {
        let tail = self.words.u64(OFF_TAIL).load(Ordering::Relaxed);
        self.write_record(pos(tail), 0, ABORT, 0);
        self.publish(advance(tail, REC, 0));
    }

    /// Makes everything up to `tail` visible to consumers and wakes any that sleep.
    fn publish(&self, tail: u64) {
        self.words.u64(OFF_TAIL).store(tail, Ordering::Release);
        // Dekker with `wait_data`: a consumer registers as a waiter, then re-reads `tail`.
        fence(Ordering::SeqCst);
        if self.words.u32(OFF_DATA_WAITERS).load(Ordering::Relaxed) > 0 {
            self.words.u32(OFF_DATA_SEQ).fetch_add(1, Ordering::Release);
            wake_all(self.words.u32(OFF_DATA_SEQ));
        }
    }

    /// Waits until the ring has `need` free bytes after `tail`; returns the free bytes.
    fn wait_space(&self, tail: u64, need: u64, deadline: Option<Instant>) -> Result<u64, PutFail> {
        let seen = self.words.u64(OFF_HEAD_SEEN);
        let free = |head: u64| self.capacity - used(tail, head);
        let f = free(seen.load(Ordering::Relaxed));
        if f >= need {
            return Ok(f);
        }
        let head = self.words.u64(OFF_HEAD);
        let r = self.wait_until(OFF_SPACE_SEQ, OFF_SPACE_WAITERS, deadline, "space in a Queue", || {
            let h = head.load(Ordering::Acquire);
            seen.store(h, Ordering::Relaxed);
            let f = free(h);
            (f >= need).then_some(f)
        })?;
        r.ok_or(PutFail::Full)
    }

    /// Waits until fewer than `maxsize` messages are queued.
    fn wait_slot(&self, deadline: Option<Instant>) -> Result<(), PutFail> {
        let r =
            self.wait_until(OFF_SPACE_SEQ, OFF_SPACE_WAITERS, deadline, "a free slot in a Queue", || {
                (self.len() < self.maxsize).then_some(())
            })?;
        r.ok_or(PutFail::Full)
    }

    // ---- consumer side ----

    /// Takes the next whole message into `out` (cleared first). `Ok(false)` if none started
    /// before `deadline`; a message that has started arriving is finished (its producer is
    /// alive, or it is ended for it), so a timeout never drops half a message. With
    /// `strip_len`, a leading postcard length prefix is checked and left out (how a `Vec<u8>`
    /// arrives without a second copy).
    pub(crate) fn get(
        &self,
        out: &mut Vec<u8>,
        strip_len: bool,
        deadline: Option<Instant>,
    ) -> Result<bool, Error> {
        let Some(_guard) = self.get_lock.lock_until(deadline)? else {
            return Ok(false);
        };
        out.clear();
        // What the fragments at `head` belong to.
        #[derive(PartialEq)]
        enum State {
            /// Between messages.
            Idle,
            /// A message whose FIRST fragment this call took, `total` bytes long.
            Reading { total: u64 },
            /// The rest of a message this call cannot deliver (`Some(total)`: too big), or
            /// whose start a consumer that died took (`None`).
            Skipping(Option<u64>),
        }
        let mut state = State::Idle;
        // Bytes of the message read so far (length prefix included).
        let mut got = 0u64;
        loop {
            let Some(head) = self.wait_data(state != State::Idle, deadline)? else {
                return Ok(false);
            };
            let (len, flags, total) = self.read_record(pos(head));
            if len > self.frag_max || flags > (FIRST | LAST | ABORT) || (flags & FIRST != 0 && len > total) {
                return Err(Error::Protocol(format!(
                    "a Queue's shared ring holds a bad record (length {len}, flags {flags:#x}) at \
                     position {}: some process wrote into the queue's memory outside mp",
                    pos(head)
                )));
            }
            let next = advance(head, REC + align8(len), u64::from(flags & FIRST != 0));
            if flags & ABORT != 0 {
                // The message in progress will not be finished: drop what arrived of it.
                out.clear();
                state = State::Idle;
                self.consume(next);
                continue;
            }
            if flags & FIRST != 0 {
                state = if total > crate::wire::max_frame_size() {
                    State::Skipping(Some(total))
                } else {
                    out.clear();
                    got = 0;
                    out.reserve_exact(total as usize);
                    sys::advise_huge_pages(out);
                    State::Reading { total }
                };
            } else if state == State::Idle {
                state = State::Skipping(None);
            }
            if let State::Reading { total } = state {
                got += len;
                let mut start = pos(head) + REC;
                let mut len = len;
                if strip_len && flags & FIRST != 0 {
                    let (k, n) = self.varint_at(start, len).ok_or_else(|| {
                        Error::Protocol("a Queue message of bytes lacks its length prefix".into())
                    })?;
                    if k != total - n {
                        return Err(Error::Protocol(
                            "a Queue message of bytes has a wrong length prefix".into(),
                        ));
                    }
                    (start, len) = (start + n, len - n);
                }
                self.read_into(start, len, out);
            }
            self.consume(next);
            if flags & LAST != 0 {
                match state {
                    State::Reading { total } => {
                        if got != total {
                            return Err(Error::Protocol(format!(
                                "a Queue message announced {total} bytes and carried {got}"
                            )));
                        }
                        return Ok(true);
                    }
                    State::Skipping(Some(total)) => return Err(too_big(total)),
                    State::Skipping(None) | State::Idle => state = State::Idle,
                }
            }
        }
    }

    /// A postcard varint (`usize`) in the first bytes of the `len` ring bytes at `at`: its
    /// value and its length.
    fn varint_at(&self, at: u64, len: u64) -> Option<(u64, u64)> {
        let mut prefix = Vec::with_capacity(10);
        self.read_into(at, len.min(10), &mut prefix);
        let mut v = 0u64;
        for (i, &byte) in prefix.iter().enumerate() {
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some((v, i as u64 + 1));
            }
        }
        None
    }

    /// Frees ring bytes up to `head` and wakes producers waiting for room.
    fn consume(&self, head: u64) {
        self.words.u64(OFF_HEAD).store(head, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.words.u32(OFF_SPACE_WAITERS).load(Ordering::Relaxed) > 0 {
            self.words.u32(OFF_SPACE_SEQ).fetch_add(1, Ordering::Release);
            wake_all(self.words.u32(OFF_SPACE_SEQ));
        }
    }

    /// Waits until a record is published past `head`; returns `head`. `None` if `deadline`
    /// passes first, except mid-message (`streaming`): then it waits for the rest, checking
    /// now and then that the producer is alive, and ends the message for it if it died.
    fn wait_data(&self, streaming: bool, deadline: Option<Instant>) -> Result<Option<u64>, Error> {
        let head = self.words.u64(OFF_HEAD).load(Ordering::Relaxed);
        let seen = self.words.u64(OFF_TAIL_SEEN);
        if used(seen.load(Ordering::Relaxed), head) >= REC {
            return Ok(Some(head));
        }
        let tail = self.words.u64(OFF_TAIL);
        loop {
            let until = if streaming { Some(Instant::now() + PROBE_INTERVAL) } else { deadline };
            let r = self
                .wait_until(OFF_DATA_SEQ, OFF_DATA_WAITERS, until, "a Queue message", || {
                    let t = tail.load(Ordering::Acquire);
                    seen.store(t, Ordering::Relaxed);
                    (used(t, head) >= REC).then_some(head)
                })
                .map_err(PutFail::into_error)?;
            if r.is_some() || !streaming {
                return Ok(r);
            }
            // The producer of a half-read message holds `put_lock`; if it died, end its
            // message for it (a live one makes this `None`).
            if let Some(g) = self.put_lock.try_lock()? {
                self.recover_writer(&g);
            }
        }
    }

    // ---- waiting ----

    /// Spins, yields, then sleeps on the futex `seq` (registering in `waiters`) until
    /// `ready` returns `Some` or `deadline` passes (`Ok(None)`).
    fn wait_until<R>(
        &self,
        seq: usize,
        waiters: usize,
        deadline: Option<Instant>,
        what: &str,
        mut ready: impl FnMut() -> Option<R>,
    ) -> Result<Option<R>, PutFail> {
        if deadline.is_some_and(|d| d <= Instant::now()) {
            // try_put / try_get: one look, no spinning.
            return Ok(ready());
        }
        for i in 0..SPINS + YIELDS {
            if let Some(r) = ready() {
                return Ok(Some(r));
            }
            if i < SPINS {
                hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let (seq, waiters) = (self.words.u32(seq), self.words.u32(waiters));
        loop {
            waiters.fetch_add(1, Ordering::SeqCst);
            let s = seq.load(Ordering::Acquire);
            // Dekker with `publish`/`consume`: they store, fence, then read `waiters`.
            fence(Ordering::SeqCst);
            let r = ready();
            let slept = if r.is_none() { sleep_on(seq, s, deadline, what) } else { Ok(true) };
            waiters.fetch_sub(1, Ordering::Relaxed);
            if let Some(r) = r {
                return Ok(Some(r));
            }
            if !slept? {
                return Ok(ready());
            }
        }
    }

    // ---- JoinableQueue ----

    /// One task of a `JoinableQueue` is done. Err if none was unfinished.
    pub(crate) fn task_done(&self) -> Result<(), Error> {
        let word = self.words.u32(OFF_UNFINISHED);
        let mut n = word.load(Ordering::Relaxed);
        loop {
            if n == 0 {
                return Err(Error::invalid(
                    "task_done() was called more times than there were items put in the JoinableQueue",
                ));
            }
            match word.compare_exchange_weak(n, n - 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        if n == 1 {
            wake_all(word);
        }
        Ok(())
    }

    /// Waits until every item put has been marked done. `Ok(false)` at the deadline.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<bool, Error> {
        let word: &AtomicU32 = self.words.u32(OFF_UNFINISHED);
        loop {
            let n = word.load(Ordering::Acquire);
            if n == 0 {
                return Ok(true);
            }
            if !sleep_on(word, n, deadline, "a JoinableQueue's unfinished tasks")? {
                return Ok(word.load(Ordering::Acquire) == 0);
            }
        }
    }

    /// Unfinished tasks of a `JoinableQueue`.
    pub(crate) fn unfinished(&self) -> u32 {
        self.words.u32(OFF_UNFINISHED).load(Ordering::Acquire)
    }
}

pub(crate) fn too_big(total: u64) -> Error {
    Error::Protocol(format!(
        "a Queue message of {total} bytes is over this process's limit of {} bytes; raise it with \
         mp::set_max_frame_size (or MP_MAX_FRAME_SIZE) in every process using the queue",
        crate::wire::max_frame_size()
    ))
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = self.words.u64(OFF_TAIL).load(Ordering::Relaxed);
        let head = self.words.u64(OFF_HEAD).load(Ordering::Relaxed);
        f.debug_struct("Queue")
            .field("len", &self.len())
            .field("bytes", &used(tail, head))
            .field("capacity", &self.capacity)
            .field("maxsize", &self.maxsize)
            .finish()
    }
}

//! `mp::Lock`: a mutex shared between processes — one 32-bit word in shared memory, futex
//! waits, and takeover of a lock whose holder died. The protocol and its memory-ordering
//! argument are in README.md beside this file.

use std::fmt;
use std::hint;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::owner::{self, FIRST_PROBE, PROBE_INTERVAL, WAITERS};
use crate::error::Error;
use crate::shared_memory::Region;
use crate::sys;
use crate::wire::codec;

/// Spins (reading the word) before sleeping: a holder's critical section is often shorter
/// than a futex round trip.
const SPIN_LIMIT: u32 = 100;

/// A mutual-exclusion lock shared between processes: Python's `multiprocessing.Lock`, with a
/// guard, and safe against a holder that dies.
///
/// `lock()` returns a [`LockGuard`]; the lock is released when the guard drops. A `Lock` is
/// an ordinary argument: pass it (or a clone — clones are the same lock) to a worker, or send
/// it through a [`Connection`](crate::Connection), and the other process shares it.
///
/// The lock is a single word in shared memory (a sealed memfd mapped by every process that
/// holds it): taking and releasing a free lock is one atomic operation each, and a waiter
/// sleeps in the kernel (futex) without polling.
///
/// **A holder that dies does not deadlock the others.** If the process holding the lock
/// exits or is killed (even by SIGKILL) before releasing it, the next `lock()` (or
/// `try_lock()`, `lock_timeout()`) takes it over and its guard reports
/// [`previous_owner_died`](LockGuard::previous_owner_died): the data the lock protects may be
/// half-updated, so check or repair it. Waiters notice a dead holder within about 100 ms.
///
/// The lock is held by a *process*, not a thread: another thread of the holding process
/// waits like anyone else, and locking twice from one thread deadlocks (as Python's `Lock`
/// does; use an [`RLock`](crate::RLock) to lock again).
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn critical(lock: mp::Lock) -> bool {
///     let guard = lock.lock().unwrap(); // waits until the parent releases it
///     guard.previous_owner_died()
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let lock = mp::Lock::new()?;
/// let guard = lock.lock()?;
/// let mut p = mp::Process::new(critical, lock.clone());
/// p.start()?;
/// drop(guard); // now the child gets it
/// assert!(!p.join()?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Lock {
    /// Keeps the mapping (and so `word`) alive.
    region: Arc<Region>,
    /// The lock word, inside `region`.
    word: NonNull<AtomicU32>,
}

// SAFETY: the lock word is only accessed through atomics and futex calls, from any thread of
// any process; the mapping it lives in is kept alive by the `Arc<Region>`.
unsafe impl Send for Lock {}
// SAFETY: as for `Send`: `&Lock` only performs atomic operations on the word.
unsafe impl Sync for Lock {}

/// Proof that this process holds a [`Lock`]; the lock is released when it drops.
///
/// # Examples
///
/// ```
/// let lock = mp::Lock::new()?;
/// {
///     let guard = lock.lock()?;
///     assert!(!guard.previous_owner_died());
///     assert!(lock.try_lock()?.is_none()); // held
/// } // released here
/// assert!(lock.try_lock()?.is_some());
/// # Ok::<(), mp::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    previous_owner_died: bool,
}

impl Lock {
    /// Creates an unlocked lock, in its own shared-memory region.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = mp::Lock::new()?;
    /// drop(lock.lock()?);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new() -> Result<Lock, Error> {
        let region = Region::new("mp-lock", size_of::<AtomicU32>())?;
        Lock::in_region(Arc::new(region), 0)
    }

    /// The lock whose word is at `offset` in `region` (a zeroed word is an unlocked lock).
    pub(crate) fn in_region(region: Arc<Region>, offset: usize) -> Result<Lock, Error> {
        let fits = offset.checked_add(size_of::<AtomicU32>()).is_some_and(|end| end <= region.len());
        if !fits || offset % align_of::<AtomicU32>() != 0 {
            return Err(Error::invalid(format!(
                "a lock word at offset {offset} does not fit a region of {} bytes",
                region.len()
            )));
        }
        // SAFETY: `offset + 4 <= len` (checked above), so the pointer stays inside the mapping.
        let word = unsafe { region.as_ptr().add(offset) }.cast::<AtomicU32>();
        Ok(Lock { region, word })
    }

    /// The region the lock lives in (a `Value` keeps its data in the same one).
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: `word` points inside the mapping, 4-byte aligned (`in_region` checked both);
        // the mapping lives as long as `self.region`, and the word is only accessed atomically.
        unsafe { self.word.as_ref() }
    }

    /// Acquires the lock, waiting as long as it takes.
    ///
    /// Takes over the lock if its holder died; the guard then says so
    /// ([`previous_owner_died`](LockGuard::previous_owner_died)). Errors only if the
    /// operating system refuses to wait (`Error::Io`).
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = mp::Lock::new()?;
    /// let guard = lock.lock()?;
    /// // ... the critical section ...
    /// drop(guard);
    /// # Ok::<(), mp::Error>(())
    /// ```
    #[inline]
    pub fn lock(&self) -> Result<LockGuard<'_>, Error> {
        let me = owner::me();
        if self.word().compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return Ok(LockGuard { lock: self, previous_owner_died: false });
        }
        match self.lock_contended(me, None)? {
            Some(previous_owner_died) => Ok(LockGuard { lock: self, previous_owner_died }),
            None => unreachable!("a wait without a deadline does not time out"),
        }
    }

    /// Acquires the lock if that is possible without waiting: `Ok(None)` when a live process
    /// holds it.
    ///
    /// A lock whose holder died is taken over (the guard says so). To tell that, a failed
    /// attempt reads `/proc/<holder>/stat` (a few microseconds): spin on `lock()` or
    /// `lock_timeout()`, not on `try_lock()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = mp::Lock::new()?;
    /// let guard = lock.try_lock()?.expect("a new lock is free");
    /// assert!(lock.try_lock()?.is_none());
    /// drop(guard);
    /// assert!(lock.try_lock()?.is_some());
    /// # Ok::<(), mp::Error>(())
    /// ```
    #[inline]
    pub fn try_lock(&self) -> Result<Option<LockGuard<'_>>, Error> {
        let me = owner::me();
        match self.word().compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Ok(Some(LockGuard { lock: self, previous_owner_died: false })),
            Err(held) if self.take_over_if_gone(held, me) => {
                Ok(Some(LockGuard { lock: self, previous_owner_died: true }))
            }
            Err(_) => Ok(None),
        }
    }

    /// Acquires the lock, waiting at most `timeout`: `Error::Timeout` if a live process still
    /// holds it then. A lock whose holder died is taken over (the guard says so), even with
    /// a zero timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let lock = mp::Lock::new()?;
    /// let guard = lock.lock_timeout(Duration::from_secs(1))?;
    /// let again = lock.lock_timeout(Duration::from_millis(20));
    /// assert!(matches!(again, Err(mp::Error::Timeout { .. })));
    /// drop(guard);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>, Error> {
        let me = owner::me();
        if self.word().compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return Ok(LockGuard { lock: self, previous_owner_died: false });
        }
        // A deadline past any representable instant is no deadline.
        let deadline = Instant::now().checked_add(timeout);
        match self.lock_contended(me, deadline)? {
            Some(previous_owner_died) => Ok(LockGuard { lock: self, previous_owner_died }),
            None => Err(Error::Timeout { what: "acquiring a Lock".into(), after: timeout }),
        }
    }

    /// Acquires the lock before `deadline` (`None`: no deadline); `Ok(None)` if a live
    /// process still holds it then. For primitives built on a `Lock` (queues).
    pub(crate) fn lock_until(&self, deadline: Option<Instant>) -> Result<Option<LockGuard<'_>>, Error> {
        let me = owner::me();
        if self.word().compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return Ok(Some(LockGuard { lock: self, previous_owner_died: false }));
        }
        Ok(self
            .lock_contended(me, deadline)?
            .map(|previous_owner_died| LockGuard { lock: self, previous_owner_died }))
    }

    /// If the holder named by `held` is gone, takes the lock over from it: true if this
    /// thread now holds the lock. The exchange succeeds only if the word still names that
    /// same holder, so of several processes noticing the death only one takes over.
    #[cold]
    fn take_over_if_gone(&self, held: u32, me: u32) -> bool {
        if held == 0 || !owner::is_gone(held) {
            return false;
        }
        // Keep WAITERS: others may be asleep on the dead holder's word.
        let new = me | (held & WAITERS);
        self.word().compare_exchange(held, new, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Reads the word while it is held and nobody sleeps, for a little while.
    #[inline]
    fn spin(&self) -> u32 {
        let mut left = SPIN_LIMIT;
        loop {
            let w = self.word().load(Ordering::Relaxed);
            if w == 0 || w & WAITERS != 0 || left == 0 {
                return w;
            }
            hint::spin_loop();
            left -= 1;
        }
    }

    /// The slow path of the acquiring calls: `Some(previous_owner_died)` once held, `None`
    /// if `deadline` passed first.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self, me: u32, deadline: Option<Instant>) -> Result<Option<bool>, Error> {
        let word = self.word();
        // Until this thread has slept it takes a free lock like an uncontended one; after,
        // it sets WAITERS on taking it, since others may still sleep (README: "waking").
        let mut mark = 0;
        let mut next_probe = Instant::now() + FIRST_PROBE;
        let mut w = self.spin();
        loop {
            if w == 0 {
                match word.compare_exchange(0, me | mark, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return Ok(Some(false)),
                    Err(now) => {
                        w = now;
                        continue;
                    }
                }
            }
            if w & WAITERS == 0 {
                // Announce a sleeper, so the holder's release wakes one.
                if let Err(now) = word.compare_exchange(w, w | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                {
                    w = now;
                    continue;
                }
                w |= WAITERS;
            }
            let now = Instant::now();
            let timed_out = deadline.is_some_and(|d| now >= d);
            if now >= next_probe || timed_out {
                next_probe = now + PROBE_INTERVAL;
                if self.take_over_if_gone(w, me | WAITERS) {
                    return Ok(Some(true));
                }
                if timed_out {
                    // One last look, in case the holder released since.
                    return Ok(word
                        .compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                        .then_some(false));
                }
            }
            // Bounded: a lost wake-up (a woken waiter killed before taking the lock, a waiter
            // that timed out) costs at most one interval, and a dead holder is noticed.
            let mut sleep = next_probe.saturating_duration_since(now);
            if let Some(d) = deadline {
                sleep = sleep.min(d.saturating_duration_since(now));
            }
            sys::shm::futex_wait(word, w, sleep).map_err(|e| Error::io("waiting for a Lock", e))?;
            mark = WAITERS;
            w = self.spin();
        }
    }

    /// Releases the lock if this process holds it (see README: "releasing").
    #[inline]
    pub(crate) fn unlock(&self) {
        let me = owner::me();
        if self.word().compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed).is_err() {
            self.unlock_contended(me);
        }
    }

    #[cold]
    #[inline(never)]
    fn unlock_contended(&self, me: u32) {
        let word = self.word();
        let mut w = word.load(Ordering::Relaxed);
        loop {
            if w & !WAITERS != me {
                // Not ours any more: this is a fork()ed copy of the guard, or another process
                // took the lock over believing us dead (which takes a misleading probe, e.g.
                // across pid namespaces; see README). Releasing would free someone else's lock.
                return;
            }
            match word.compare_exchange(w, 0, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if w & WAITERS != 0 {
            sys::shm::futex_wake(word, 1);
        }
    }
}

impl LockGuard<'_> {
    /// True if the lock was taken over from a process that died while holding it (Python has
    /// no equivalent; POSIX robust mutexes report `EOWNERDEAD`). The data the lock protects
    /// may be inconsistent: the holder may have died halfway through an update. Only the
    /// acquisition that took the lock over sees `true`; the lock is ordinary again after it.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = mp::Lock::new()?;
    /// let guard = lock.lock()?;
    /// if guard.previous_owner_died() {
    ///     // check or repair what the lock protects
    /// }
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn previous_owner_died(&self) -> bool {
        self.previous_owner_died
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").field("previous_owner_died", &self.previous_owner_died).finish()
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.word().load(Ordering::Relaxed);
        let mut d = f.debug_struct("Lock");
        match owner::pid_of(w) {
            0 => d.field("locked", &false),
            pid => d.field("locked", &true).field("holder_pid", &pid).field("waiters", &(w & WAITERS != 0)),
        };
        d.finish()
    }
}

impl Serialize for Lock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Both pointers are into the same mapping, `word` at or after its start.
        let offset = self.word.as_ptr() as usize - self.region.as_ptr().as_ptr() as usize;
        (&*self.region, offset as u32).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Lock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (region, offset) = <(Region, u32)>::deserialize(d)?;
        Lock::in_region(Arc::new(region), offset as usize)
            .map_err(|e| D::Error::custom(codec::custom_error(format!("received a bad Lock: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_protocol() {
        let lock = Lock::new().unwrap();
        let me = owner::me();
        let g = lock.lock().unwrap();
        assert_eq!(lock.word().load(Ordering::Relaxed), me);
        drop(g);
        assert_eq!(lock.word().load(Ordering::Relaxed), 0);
        // A sleeper's mark makes the release clear the word all the same.
        let g = lock.lock().unwrap();
        lock.word().fetch_or(WAITERS, Ordering::Relaxed);
        drop(g);
        assert_eq!(lock.word().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn failed_attempts_leave_the_lock_held() {
        let lock = Lock::new().unwrap();
        let g = lock.lock().unwrap();
        assert!(lock.try_lock().unwrap().is_none());
        assert_eq!(lock.word().load(Ordering::Relaxed) & !WAITERS, owner::me());
        assert!(matches!(lock.lock_timeout(Duration::from_millis(20)), Err(Error::Timeout { .. })));
        assert_eq!(lock.word().load(Ordering::Relaxed) & !WAITERS, owner::me());
        drop(g);
        assert_eq!(lock.word().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_guard_never_releases_a_lock_taken_over() {
        let lock = Lock::new().unwrap();
        let g = lock.lock().unwrap();
        // Another identity took the lock over (as a waiter that believed us dead would).
        let other = owner::pid_of(owner::me()) ^ 1;
        lock.word().store(other, Ordering::Relaxed);
        drop(g);
        assert_eq!(lock.word().load(Ordering::Relaxed), other);
    }

    #[test]
    fn dead_holder_is_taken_over_by_waiters_and_try_lock() {
        // A word naming a process that does not exist.
        let ghost = owner::tests::unused_pid();
        let lock = Lock::new().unwrap();
        lock.word().store(ghost, Ordering::Relaxed);
        let g = lock.try_lock().unwrap().expect("a dead holder's lock is taken over");
        assert!(g.previous_owner_died());
        drop(g);
        lock.word().store(ghost | WAITERS, Ordering::Relaxed);
        let t = Instant::now();
        let g = lock.lock().unwrap();
        assert!(g.previous_owner_died());
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(g);
        let g = lock.lock().unwrap();
        assert!(!g.previous_owner_died());
    }
}

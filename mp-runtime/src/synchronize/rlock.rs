//! `mp::RLock`: a re-entrant lock shared between processes — a [`Lock`] word, the owning
//! thread and a recursion count beside it in one shared region. See README.md ("RLock").

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lock::Lock;
use super::owner;
use super::words::Words;
use crate::error::Error;
use crate::wire::codec;

/// Layout: the `Lock` word at 0, the recursion count at 4, the owning thread's token at 8.
const COUNT: usize = 4;
const OWNER: usize = 8;
const LEN: usize = 16;

/// A lock that the thread holding it may take again: Python's `multiprocessing.RLock`.
///
/// The owner is a *thread* of some process, and it holds the lock as many times as it took
/// it; each [`RLockGuard`] (or [`release`](RLock::release)) gives back one level, and the lock
/// is free when the count reaches zero. Another thread, in this process or another, waits.
/// Releasing a lock the calling thread does not hold is an error, as in Python.
///
/// Like [`Lock`], an `RLock` is an ordinary argument (clones and copies sent to other
/// processes are the same lock), and **a holder that dies does not deadlock the others**: the
/// next acquirer takes it over, with a count of one, and its guard reports
/// [`previous_owner_died`](RLockGuard::previous_owner_died).
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn try_it(rlock: mp::RLock) -> bool {
///     rlock.try_lock().unwrap().is_some()
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let rlock = mp::RLock::new()?;
/// let outer = rlock.lock()?;
/// let inner = rlock.lock()?; // the same thread: no deadlock
/// assert_eq!(rlock.recursion_count(), 2);
/// let mut p = mp::Process::new(try_it, rlock.clone());
/// p.start()?;
/// assert!(!p.join()?, "another process cannot take it");
/// drop(inner);
/// drop(outer);
/// assert_eq!(rlock.recursion_count(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RLock {
    /// The lock word (offset 0 of `words`' region).
    lock: Lock,
    words: Words,
}

/// One level of an [`RLock`] held by this thread; given back when it drops.
///
/// A guard cannot move to another thread: the level belongs to the thread that took it.
///
/// # Examples
///
/// ```
/// let rlock = mp::RLock::new()?;
/// {
///     let _a = rlock.lock()?;
///     let b = rlock.lock()?;
///     assert!(!b.previous_owner_died());
///     assert_eq!(rlock.recursion_count(), 2);
/// }
/// assert_eq!(rlock.recursion_count(), 0);
/// # Ok::<(), mp::Error>(())
/// ```
#[must_use = "the level is given back as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    rlock: &'a RLock,
    previous_owner_died: bool,
    /// The level belongs to this thread: not `Send`.
    _thread: PhantomData<*const ()>,
}

thread_local! {
    /// This thread's number within its process (1, 2, ...), 0 until first asked.
    static THREAD: Cell<u32> = const { Cell::new(0) };
}

/// This thread's token: its process's identity (pid and start-time tag) in the high half,
/// its number within the process in the low half. Never 0; no other live thread of any
/// process has it.
fn my_token() -> u64 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = THREAD.with(|t| {
        if t.get() == 0 {
            t.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        t.get()
    });
    (u64::from(owner::me()) << 32) | u64::from(n)
}

impl RLock {
    /// Creates a free re-entrant lock, in its own shared-memory region.
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = mp::RLock::new()?;
    /// assert!(!rlock.is_owned());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new() -> Result<RLock, Error> {
        RLock::from_words(Words::new("mp-rlock", LEN)?)
    }

    fn from_words(words: Words) -> Result<RLock, Error> {
        let lock = Lock::in_region(words.region().clone(), 0)?;
        Ok(RLock { lock, words })
    }

    fn count(&self) -> &AtomicU32 {
        self.words.u32(COUNT)
    }

    fn owner(&self) -> &AtomicU64 {
        self.words.u64(OWNER)
    }

    /// Whether the calling thread holds the lock. Only this thread ever writes its own
    /// token, and clears it before releasing, so reading it back means it holds the lock.
    fn held_by(&self, token: u64) -> bool {
        self.owner().load(Ordering::Relaxed) == token
    }

    /// One more level for the holder (the count is only touched by the holding thread).
    fn relock(&self) -> Result<RLockGuard<'_>, Error> {
        let count = self.count();
        let n = count.load(Ordering::Relaxed);
        let n = n.checked_add(1).ok_or_else(|| Error::invalid("an RLock was taken 2^32 - 1 times"))?;
        count.store(n, Ordering::Relaxed);
        Ok(self.guard(false))
    }

    /// Records the calling thread as the holder of the freshly taken `Lock` word.
    fn first_level(&self, token: u64, previous_owner_died: bool) -> RLockGuard<'_> {
        self.count().store(1, Ordering::Relaxed);
        self.owner().store(token, Ordering::Relaxed);
        self.guard(previous_owner_died)
    }

    fn guard(&self, previous_owner_died: bool) -> RLockGuard<'_> {
        RLockGuard { rlock: self, previous_owner_died, _thread: PhantomData }
    }

    /// Acquires the lock (one more level if this thread holds it already), waiting as long as
    /// it takes. A lock whose holder died is taken over; the guard says so.
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = mp::RLock::new()?;
    /// let a = rlock.lock()?;
    /// let b = rlock.lock()?;
    /// drop((b, a));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn lock(&self) -> Result<RLockGuard<'_>, Error> {
        let token = my_token();
        if self.held_by(token) {
            return self.relock();
        }
        let g = self.lock.lock()?;
        let died = g.previous_owner_died();
        std::mem::forget(g); // held until `release_level` unlocks the word
        Ok(self.first_level(token, died))
    }

    /// Acquires the lock if that is possible without waiting: `Ok(None)` when another thread
    /// (of any process) holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = mp::RLock::new()?;
    /// let a = rlock.try_lock()?.expect("free");
    /// let b = rlock.try_lock()?.expect("ours already");
    /// drop((b, a));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn try_lock(&self) -> Result<Option<RLockGuard<'_>>, Error> {
        let token = my_token();
        if self.held_by(token) {
            return self.relock().map(Some);
        }
        let Some(g) = self.lock.try_lock()? else { return Ok(None) };
        let died = g.previous_owner_died();
        std::mem::forget(g);
        Ok(Some(self.first_level(token, died)))
    }

    /// Acquires the lock, waiting at most `timeout`: `Error::Timeout` if another thread still
    /// holds it then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let rlock = mp::RLock::new()?;
    /// let a = rlock.lock_timeout(Duration::from_millis(10))?;
    /// let b = rlock.lock_timeout(Duration::ZERO)?; // re-entry never waits
    /// drop((b, a));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>, Error> {
        let token = my_token();
        if self.held_by(token) {
            return self.relock();
        }
        let g = self.lock.lock_timeout(timeout).map_err(|e| match e {
            Error::Timeout { after, .. } => Error::Timeout { what: "acquiring an RLock".into(), after },
            e => e,
        })?;
        let died = g.previous_owner_died();
        std::mem::forget(g);
        Ok(self.first_level(token, died))
    }

    /// Gives back one level held by the calling thread, as Python's `release()`: the pair of
    /// [`RLockGuard::keep`]. `Error::Invalid` if this thread does not hold the lock (then
    /// nothing changes).
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = mp::RLock::new()?;
    /// assert!(matches!(rlock.release(), Err(mp::Error::Invalid(_))));
    /// rlock.lock()?.keep();
    /// assert!(rlock.is_owned());
    /// rlock.release()?;
    /// assert!(!rlock.is_owned());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn release(&self) -> Result<(), Error> {
        if !self.held_by(my_token()) {
            return Err(Error::invalid(
                "cannot release an RLock this thread does not hold (release it from the thread that locked it)",
            ));
        }
        let count = self.count();
        let n = count.load(Ordering::Relaxed);
        if n > 1 {
            count.store(n - 1, Ordering::Relaxed);
        } else {
            count.store(0, Ordering::Relaxed);
            self.owner().store(0, Ordering::Relaxed);
            // The word's Release CAS publishes the stores above with the critical section.
            self.lock.unlock();
        }
        Ok(())
    }

    /// Whether the calling thread holds the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = mp::RLock::new()?;
    /// let g = rlock.lock()?;
    /// assert!(rlock.is_owned());
    /// std::thread::scope(|s| assert!(!s.spawn(|| rlock.is_owned()).join().unwrap()));
    /// drop(g);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn is_owned(&self) -> bool {
        self.held_by(my_token())
    }

    /// How many levels the calling thread holds (0 when it does not hold the lock).
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = mp::RLock::new()?;
    /// let a = rlock.lock()?;
    /// let b = rlock.lock()?;
    /// assert_eq!(rlock.recursion_count(), 2);
    /// drop(b);
    /// assert_eq!(rlock.recursion_count(), 1);
    /// # drop(a);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn recursion_count(&self) -> u32 {
        if self.is_owned() { self.count().load(Ordering::Relaxed) } else { 0 }
    }

    /// Gives back every level the calling thread holds, returning how many (a condition
    /// variable's wait). The caller holds the lock.
    pub(crate) fn release_all(&self) -> u32 {
        let n = self.count().load(Ordering::Relaxed);
        self.count().store(1, Ordering::Relaxed);
        let _ = self.release();
        n
    }

    /// Takes the lock again with `levels` levels (after `release_all`): previous owner died.
    pub(crate) fn reacquire(&self, levels: u32) -> Result<bool, Error> {
        let g = self.lock()?;
        let died = g.previous_owner_died();
        g.keep();
        self.count().store(levels, Ordering::Relaxed);
        Ok(died)
    }
}

impl RLockGuard<'_> {
    /// True if the lock was taken over from a process that died while holding it (see
    /// [`LockGuard::previous_owner_died`](crate::LockGuard::previous_owner_died)); the data the
    /// lock protects may be half-updated.
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = mp::RLock::new()?;
    /// assert!(!rlock.lock()?.previous_owner_died());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn previous_owner_died(&self) -> bool {
        self.previous_owner_died
    }

    /// Keeps the level without a guard (Python's `acquire()` without `with`); give it back
    /// with [`RLock::release`] from this thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = mp::RLock::new()?;
    /// rlock.lock()?.keep();
    /// assert_eq!(rlock.recursion_count(), 1);
    /// rlock.release()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // The guard is not `Send`, so the calling thread is the holder: this cannot fail,
        // unless the level was given back with `release()` meanwhile (then it is a no-op).
        let _ = self.rlock.release();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").field("previous_owner_died", &self.previous_owner_died).finish()
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("lock", &self.lock)
            .field("owned_by_this_thread", &self.is_owned())
            .finish()
    }
}

impl Serialize for RLock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.words.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RLock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let words = Words::deserialize(d)?.checked(LEN, "RLock")?;
        RLock::from_words(words)
            .map_err(|e| D::Error::custom(codec::custom_error(format!("received a bad RLock: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_between_threads() {
        let a = my_token();
        let b = std::thread::spawn(my_token).join().unwrap();
        assert_ne!(a, b);
        assert_eq!(a >> 32, b >> 32);
        assert_eq!(my_token(), a);
    }

    #[test]
    fn count_and_owner_cleared_on_last_release() {
        let r = RLock::new().unwrap();
        let a = r.lock().unwrap();
        let b = r.lock().unwrap();
        assert_eq!(r.count().load(Ordering::Relaxed), 2);
        drop(b);
        drop(a);
        assert_eq!(r.count().load(Ordering::Relaxed), 0);
        assert_eq!(r.owner().load(Ordering::Relaxed), 0);
        assert!(r.lock.try_lock().unwrap().is_some());
    }
}

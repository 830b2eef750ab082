//! `mp::Condition`: a condition variable shared between processes, over an [`RLock`] or a
//! [`Lock`]: notification tokens counted under the lock, and a sequence word to sleep on.
//! See README.md ("Condition").

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lock::Lock;
use super::rlock::RLock;
use super::words::{self, Words};
use crate::error::Error;

/// Layout: the sequence word (futex) at 0, waiters not yet notified at 4, notifications not
/// yet taken at 8.
const SEQ: usize = 0;
const WAITING: usize = 4;
const TOKENS: usize = 8;
const LEN: usize = 12;

/// The lock a condition works over.
#[derive(Clone, Serialize, Deserialize)]
enum Inner {
    Lock(Lock),
    RLock(RLock),
}

/// A condition variable shared between processes: Python's `multiprocessing.Condition`.
///
/// Take its lock with [`lock`](Condition::lock); the [`ConditionGuard`] waits
/// ([`wait`](ConditionGuard::wait), [`wait_for`](ConditionGuard::wait_for), with timeouts)
/// and notifies ([`notify`](ConditionGuard::notify), [`notify_all`](ConditionGuard::notify_all)),
/// which Python allows only with the lock held — here the guard makes that a compile-time
/// rule. A wait releases the lock (every level of an `RLock`), sleeps until notified, and takes
/// it again before returning. `notify(n)` wakes at most `n` of the parties waiting at that
/// moment; later waiters are not woken by it.
///
/// Over an [`RLock`] by default ([`new`](Condition::new)), as in Python, or over a lock you
/// give it ([`with_lock`](Condition::with_lock), [`with_rlock`](Condition::with_rlock)).
/// Clones, and copies passed to workers, are the same condition.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// #[mp::worker]
/// fn produce(cond: mp::Condition, ready: mp::RawValue<u32>) {
///     let g = cond.lock().unwrap();
///     ready.set(1);
///     g.notify_all();
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let cond = mp::Condition::new()?;
/// let ready = mp::RawValue::new(0u32)?;
/// let mut g = cond.lock()?;
/// let mut p = mp::Process::new(produce, (cond.clone(), ready.clone()));
/// p.start()?;
/// g.wait_for_timeout(|| ready.get() == 1, Duration::from_secs(10))?;
/// drop(g);
/// p.join()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Condition {
    lock: Inner,
    words: Words,
}

/// The condition's lock, held by this thread; released when it drops. Waits and notifications
/// go through it.
///
/// # Examples
///
/// ```
/// let cond = mp::Condition::new()?;
/// let g = cond.lock()?;
/// g.notify(1); // nobody waits: nothing happens
/// assert!(!g.previous_owner_died());
/// # Ok::<(), mp::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    previous_owner_died: bool,
    /// An `RLock` level belongs to the thread that took it: not `Send`.
    _thread: PhantomData<*const ()>,
}

impl Condition {
    /// A condition over a new [`RLock`], as Python's `Condition()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = mp::Condition::new()?;
    /// let a = cond.lock()?;
    /// let b = cond.lock()?; // re-entrant
    /// drop((b, a));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new() -> Result<Condition, Error> {
        Condition::over(Inner::RLock(RLock::new()?))
    }

    /// A condition over `lock` (Python's `Condition(lock)`): holding `lock` elsewhere excludes
    /// this condition's holders too.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = mp::Lock::new()?;
    /// let cond = mp::Condition::with_lock(lock.clone())?;
    /// let g = cond.lock()?;
    /// assert!(lock.try_lock()?.is_none());
    /// drop(g);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn with_lock(lock: Lock) -> Result<Condition, Error> {
        Condition::over(Inner::Lock(lock))
    }

    /// A condition over `rlock`.
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = mp::RLock::new()?;
    /// let cond = mp::Condition::with_rlock(rlock.clone())?;
    /// let g = cond.lock()?;
    /// assert!(rlock.is_owned());
    /// drop(g);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn with_rlock(rlock: RLock) -> Result<Condition, Error> {
        Condition::over(Inner::RLock(rlock))
    }

    fn over(lock: Inner) -> Result<Condition, Error> {
        Ok(Condition { lock, words: Words::new("mp-condition", LEN)? })
    }

    fn seq(&self) -> &AtomicU32 {
        self.words.u32(SEQ)
    }

    fn waiting(&self) -> &AtomicU32 {
        self.words.u32(WAITING)
    }

    fn tokens(&self) -> &AtomicU32 {
        self.words.u32(TOKENS)
    }

    fn guard(&self, previous_owner_died: bool) -> ConditionGuard<'_> {
        ConditionGuard { cond: self, previous_owner_died, _thread: PhantomData }
    }

    /// Takes the condition's lock, waiting as long as it takes. A lock whose holder died is
    /// taken over; the guard says so.
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = mp::Condition::new()?;
    /// let g = cond.lock()?;
    /// drop(g);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ConditionGuard<'_>, Error> {
        let died = match &self.lock {
            Inner::Lock(l) => {
                let g = l.lock()?;
                let died = g.previous_owner_died();
                std::mem::forget(g); // released by the ConditionGuard
                died
            }
            Inner::RLock(r) => {
                let g = r.lock()?;
                let died = g.previous_owner_died();
                g.keep();
                died
            }
        };
        Ok(self.guard(died))
    }

    /// Takes the condition's lock, waiting at most `timeout` (`Error::Timeout`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let cond = mp::Condition::with_lock(mp::Lock::new()?)?;
    /// let g = cond.lock_timeout(Duration::from_millis(10))?;
    /// assert!(cond.lock_timeout(Duration::from_millis(10)).is_err());
    /// drop(g);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ConditionGuard<'_>, Error> {
        let died = match &self.lock {
            Inner::Lock(l) => {
                let g = l.lock_timeout(timeout)?;
                let died = g.previous_owner_died();
                std::mem::forget(g);
                died
            }
            Inner::RLock(r) => {
                let g = r.lock_timeout(timeout)?;
                let died = g.previous_owner_died();
                g.keep();
                died
            }
        };
        Ok(self.guard(died))
    }

    /// Releases every level of the lock this thread holds: how many, for `reacquire`.
    fn release_all(&self) -> u32 {
        match &self.lock {
            Inner::Lock(l) => {
                l.unlock();
                1
            }
            Inner::RLock(r) => r.release_all(),
        }
    }

    fn reacquire(&self, levels: u32) -> Result<bool, Error> {
        match &self.lock {
            Inner::Lock(l) => {
                let g = l.lock()?;
                let died = g.previous_owner_died();
                std::mem::forget(g);
                Ok(died)
            }
            Inner::RLock(r) => r.reacquire(levels),
        }
    }

    /// Takes one notification, if there is one.
    fn take_token(&self) -> bool {
        self.tokens().fetch_update(Ordering::Acquire, Ordering::Relaxed, |t| t.checked_sub(1)).is_ok()
    }

    /// The wait protocol (README.md, "Condition"); the caller holds the lock. True if
    /// notified, false if `deadline` passed first. The lock is held again on return, also on
    /// error.
    fn wait_until(&self, guard: &mut ConditionGuard<'_>, deadline: Option<Instant>) -> Result<bool, Error> {
        // Registered under the lock, so a notify that runs after our release counts us.
        self.waiting().fetch_add(1, Ordering::Relaxed);
        let levels = self.release_all();
        let mut outcome = Ok(false);
        loop {
            let s = self.seq().load(Ordering::Acquire);
            if self.take_token() {
                outcome = Ok(true);
                break;
            }
            match words::sleep_on(self.seq(), s, deadline, "a Condition") {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        // Take the lock back (Python's wait does, whatever happened).
        guard.previous_owner_died |= self.reacquire(levels)?;
        if !matches!(outcome, Ok(true)) {
            // Leave: take a notification that is owed to a waiter (so none is left over for
            // a later one), or else unregister. The invariant, under the lock:
            // waiters in the loop = waiting + tokens.
            if self.take_token() {
                return Ok(true);
            }
            self.waiting().fetch_sub(1, Ordering::Relaxed);
        }
        outcome
    }
}

impl<'a> ConditionGuard<'a> {
    /// True if the lock was taken over from a process that died holding it (at the `lock()`
    /// or at any wait's re-acquisition since).
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = mp::Condition::new()?;
    /// assert!(!cond.lock()?.previous_owner_died());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn previous_owner_died(&self) -> bool {
        self.previous_owner_died
    }

    /// Releases the lock, sleeps until notified, takes the lock back. As long as it takes.
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = mp::Condition::new()?;
    /// let mut g = cond.lock()?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| cond.lock().unwrap().notify_all());
    ///     g.wait()
    /// })?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn wait(&mut self) -> Result<(), Error> {
        let cond = self.cond;
        cond.wait_until(self, None).map(|_| ())
    }

    /// As [`wait`](ConditionGuard::wait), for at most `timeout`: `Error::Timeout` if not
    /// notified by then (the lock is held again either way).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let cond = mp::Condition::new()?;
    /// let mut g = cond.lock()?;
    /// assert!(matches!(g.wait_timeout(Duration::from_millis(10)), Err(mp::Error::Timeout { .. })));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<(), Error> {
        let cond = self.cond;
        if cond.wait_until(self, words::deadline(timeout))? {
            Ok(())
        } else {
            Err(Error::Timeout { what: "waiting on a Condition".into(), after: timeout })
        }
    }

    /// Waits until `predicate` (called with the lock held) is true; returns at once if it is.
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = mp::Condition::new()?;
    /// let mut g = cond.lock()?;
    /// g.wait_for(|| true)?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn wait_for(&mut self, mut predicate: impl FnMut() -> bool) -> Result<(), Error> {
        while !predicate() {
            self.wait()?;
        }
        Ok(())
    }

    /// Waits at most `timeout` for `predicate` to become true: `Error::Timeout` if it is still
    /// false then (Python's `wait_for` returns the predicate's last value).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let cond = mp::Condition::new()?;
    /// let mut g = cond.lock()?;
    /// let r = g.wait_for_timeout(|| false, Duration::from_millis(20));
    /// assert!(matches!(r, Err(mp::Error::Timeout { .. })));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn wait_for_timeout(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = words::deadline(timeout);
        let cond = self.cond;
        while !predicate() {
            if !cond.wait_until(self, deadline)? && !predicate() {
                return Err(Error::Timeout {
                    what: "waiting on a Condition for a predicate".into(),
                    after: timeout,
                });
            }
        }
        Ok(())
    }

    /// Wakes at most `n` of the parties waiting now (none if nobody waits).
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = mp::Condition::new()?;
    /// cond.lock()?.notify(2);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn notify(&self, n: u32) {
        let cond = self.cond;
        // `waiting` only changes under the lock, which we hold (takers of tokens do not
        // touch it), so this read-then-write is not racy.
        let waiting = cond.waiting().load(Ordering::Relaxed);
        let k = waiting.min(n);
        if k == 0 {
            return;
        }
        cond.waiting().store(waiting - k, Ordering::Relaxed);
        cond.tokens().fetch_add(k, Ordering::Release);
        cond.seq().fetch_add(1, Ordering::Release);
        // Every sleeper wakes and competes for the k tokens; the others sleep again.
        words::wake_all(cond.seq());
    }

    /// Wakes every party waiting now.
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = mp::Condition::new()?;
    /// cond.lock()?.notify_all();
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        match &self.cond.lock {
            Inner::Lock(l) => l.unlock(),
            Inner::RLock(r) => {
                let _ = r.release();
            }
        }
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").field("previous_owner_died", &self.previous_owner_died).finish()
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Condition");
        match &self.lock {
            Inner::Lock(l) => d.field("lock", l),
            Inner::RLock(r) => d.field("lock", r),
        };
        d.field("waiting", &self.waiting().load(Ordering::Relaxed)).finish()
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.lock, &self.words).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (lock, words) = <(Inner, Words)>::deserialize(d)?;
        Ok(Condition { lock, words: words.checked(LEN, "Condition")? })
    }
}

//! `mp::Semaphore` and `mp::BoundedSemaphore`: a counter in one shared word, futex waits,
//! and a table of the units each live process holds through guards, so that the units of a
//! process that dies are given back. See README.md ("Semaphore").

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::owner::{self, FIRST_PROBE, PROBE_INTERVAL};
use super::words::{self, Words};
use crate::error::Error;

/// Set while some thread may sleep on the counter: the next release wakes them all.
const WAITERS: u32 = 1 << 31;
/// The counter's bits, and so the largest value.
const VALUE: u32 = WAITERS - 1;
/// Layout: the counter word at 0, the bound at 4 (`UNBOUNDED` for a plain semaphore), then
/// the holder table to the end of one page: `SLOTS` words of `identity << 32 | units`.
const BOUND: usize = 4;
const TABLE: usize = 8;
const LEN: usize = 4096;
const SLOTS: usize = (LEN - TABLE) / size_of::<u64>();
const UNBOUNDED: u32 = u32::MAX;
/// A guard whose unit is not in the table (it was full, see README).
const UNTRACKED: u32 = u32::MAX;

/// What the two semaphore types share: the words, and whether this one is bounded.
#[derive(Clone)]
struct Sem {
    words: Words,
}

impl Sem {
    fn new(value: u32, bound: u32, what: &str) -> Result<Sem, Error> {
        if value > VALUE {
            return Err(Error::invalid(format!("a {what} holds at most {VALUE}, not {value}")));
        }
        let words = Words::new("mp-semaphore", LEN)?;
        words.u32(0).store(value, Ordering::Relaxed);
        words.u32(BOUND).store(bound, Ordering::Relaxed);
        Ok(Sem { words })
    }

    fn word(&self) -> &AtomicU32 {
        self.words.u32(0)
    }

    fn value(&self) -> u32 {
        self.word().load(Ordering::Relaxed) & VALUE
    }

    /// The most units the counter may hold: the bound, or the counter's largest value.
    fn cap(&self) -> u32 {
        self.words.u32(BOUND).load(Ordering::Relaxed).min(VALUE)
    }

    /// Slot `i` of the holder table: 0 when free, else `identity << 32 | units` with
    /// `units >= 1`.
    fn slot(&self, i: usize) -> &AtomicU64 {
        self.words.u64(TABLE + i * size_of::<u64>())
    }

    /// Takes one unit if there is one, without waiting.
    #[inline]
    fn try_take(&self) -> bool {
        let word = self.word();
        let mut w = word.load(Ordering::Relaxed);
        while w & VALUE > 0 {
            // WAITERS stays as it is: the sleepers still need the next release to wake them.
            match word.compare_exchange_weak(w, w - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
        false
    }

    /// Takes one unit, waiting until `deadline` (`None`: as long as it takes):
    /// `Some(previous_owner_died)`, or `None` if the deadline passed first. A waiter gives
    /// back the units of dead holders after 10 ms, then every 100 ms, keeping one.
    #[inline]
    fn take(&self, deadline: Option<Instant>) -> Result<Option<bool>, Error> {
        if self.try_take() {
            return Ok(Some(false));
        }
        self.take_contended(deadline)
    }

    /// `take` once the counter was seen at zero (kept apart so the uncontended path reads no
    /// clock).
    #[cold]
    #[inline(never)]
    fn take_contended(&self, deadline: Option<Instant>) -> Result<Option<bool>, Error> {
        let word = self.word();
        let mut next_probe = Instant::now() + FIRST_PROBE;
        loop {
            if self.try_take() {
                return Ok(Some(false));
            }
            let w = word.load(Ordering::Relaxed);
            if w & VALUE > 0 {
                continue;
            }
            if w & WAITERS == 0
                && word.compare_exchange(w, w | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            let now = Instant::now();
            let timed_out = deadline.is_some_and(|d| now >= d);
            if now >= next_probe || timed_out {
                next_probe = now + PROBE_INTERVAL;
                if self.reclaim(true) {
                    return Ok(Some(true));
                }
                if timed_out {
                    // One last look: a release may have come as the deadline passed.
                    return Ok(self.try_take().then_some(false));
                }
            }
            let wake = deadline.map_or(next_probe, |d| d.min(next_probe));
            words::sleep_on(word, w | WAITERS, Some(wake), "a Semaphore")?;
        }
    }

    /// Gives back one unit; refuses to pass the bound (or the largest value).
    fn give(&self, what: &str) -> Result<(), Error> {
        self.add_one().map_err(|bound| match bound {
            VALUE => Error::invalid(format!("{what} released past its largest value {VALUE}")),
            bound => Error::invalid(format!(
                "{what} released too many times: its value is already its initial value {bound}"
            )),
        })
    }

    /// `give` without the error message (a guard's drop has no use for it): `Err(cap)` when
    /// the value is already at its cap.
    #[inline]
    fn add_one(&self) -> Result<(), u32> {
        let cap = self.cap();
        let word = self.word();
        let mut w = word.load(Ordering::Relaxed);
        loop {
            let v = w & VALUE;
            if v >= cap {
                return Err(cap);
            }
            // The new value with WAITERS cleared: every sleeper is woken below, and those that
            // find no unit set the bit again before sleeping.
            match word.compare_exchange_weak(w, v + 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if w & WAITERS != 0 {
            words::wake_all(word);
        }
        Ok(())
    }

    /// Counts one more unit held by a guard of this process: the slot it is counted in, or
    /// `UNTRACKED` when every slot counts another live process's units. Any slot that names
    /// this process will do (the units of one process may be spread over several); the
    /// search starts at a slot chosen by the identity, so processes rarely meet.
    #[inline]
    fn track(&self) -> u32 {
        let me = u64::from(owner::me());
        let home = (me.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % SLOTS;
        // The usual case: this process holds no other unit and its home slot is free.
        if self.slot(home).compare_exchange(0, me << 32 | 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            return home as u32;
        }
        self.track_search(me, home)
    }

    #[cold]
    #[inline(never)]
    fn track_search(&self, me: u64, home: usize) -> u32 {
        for k in 0..SLOTS {
            let i = (home + k) % SLOTS;
            let slot = self.slot(i);
            let mut s = slot.load(Ordering::Relaxed);
            loop {
                // Units never reach 2^32: the counter holds fewer than 2^31.
                let new = match s {
                    0 => me << 32 | 1,
                    s if s >> 32 == me => s + 1,
                    _ => break,
                };
                match slot.compare_exchange_weak(s, new, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return i as u32,
                    Err(now) => s = now,
                }
            }
        }
        UNTRACKED
    }

    /// Counts one unit less in slot `i` (from `track`): false if the slot no longer names
    /// this process — another process believed it dead and gave its units back already, or
    /// the guard is a `fork()`ed copy — so the caller must not give the unit back again.
    #[inline]
    fn untrack(&self, i: u32) -> bool {
        if i == UNTRACKED {
            return true;
        }
        let me = u64::from(owner::me());
        let slot = self.slot(i as usize);
        // The usual case: the guard's unit is the only one counted in its slot.
        let mut s = me << 32 | 1;
        if let Err(now) = slot.compare_exchange(s, 0, Ordering::Relaxed, Ordering::Relaxed) {
            s = now;
        } else {
            return true;
        }
        loop {
            if s >> 32 != me {
                return false;
            }
            // The last unit frees the slot.
            let new = if s & u64::from(u32::MAX) == 1 { 0 } else { s - 1 };
            match slot.compare_exchange_weak(s, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Gives back the units counted for processes that are gone. With `take_one`, keeps one
    /// of them for the caller instead: true if it did. Each slot is emptied by one exchange
    /// that names the exact contents read, so of several reclaimers only one gives back a
    /// given dead process's units.
    #[cold]
    fn reclaim(&self, take_one: bool) -> bool {
        let mut took = false;
        for i in 0..SLOTS {
            let slot = self.slot(i);
            let s = slot.load(Ordering::Relaxed);
            if s == 0 || !owner::is_gone((s >> 32) as u32) {
                continue;
            }
            // Acquire: the dead process's last changes to the slot are read before its units
            // are handed on (it can make no more).
            if slot.compare_exchange(s, 0, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                took |= self.give_back(s as u32, take_one && !took);
            }
        }
        took
    }

    /// Adds `units` reclaimed units to the counter, never past the bound (units beyond it
    /// were given back by someone else meanwhile). With `take_one`, one of them goes to the
    /// caller instead of the counter: true if it did.
    fn give_back(&self, units: u32, take_one: bool) -> bool {
        let cap = self.cap();
        let word = self.word();
        let mut w = word.load(Ordering::Relaxed);
        loop {
            let v = w & VALUE;
            let back = units.min(cap.saturating_sub(v));
            if back == 0 {
                return false;
            }
            let added = back - u32::from(take_one);
            if added == 0 {
                // The one unit goes straight to the caller; the counter does not change.
                return true;
            }
            // As in `give`: WAITERS cleared, everyone woken below.
            match word.compare_exchange_weak(w, v + added, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if w & WAITERS != 0 {
            words::wake_all(word);
        }
        take_one
    }

    /// A guard for a unit this thread has just taken.
    #[inline]
    fn guard(&self, previous_owner_died: bool) -> SemaphoreGuard<'_> {
        SemaphoreGuard { sem: self, slot: self.track(), previous_owner_died }
    }
}

/// A counter of available units shared between processes: Python's
/// `multiprocessing.Semaphore`.
///
/// [`acquire`](Semaphore::acquire) takes a unit, waiting while there is none, and returns a
/// [`SemaphoreGuard`] that gives the unit back when it drops (Python's `with sem:`); to keep
/// the unit (a semaphore used as a signal), call [`SemaphoreGuard::keep`], and give units
/// back with [`release`](Semaphore::release) from any thread of any process. The count may
/// grow past its initial value (use [`BoundedSemaphore`] to forbid that).
///
/// Clones, and copies passed to workers, are the same semaphore.
///
/// **A process that dies holding units does not starve the others.** The units a process
/// holds through guards are counted per process in the semaphore's shared region; if it
/// exits or is killed before dropping them, a waiter gives them back (within about 100 ms;
/// a failed `try_acquire` at once) and keeps one, and its guard reports
/// [`previous_owner_died`](SemaphoreGuard::previous_owner_died). Units set aside with
/// [`keep`](SemaphoreGuard::keep) are not counted: they may be meant for another process to
/// release (a signal, a hand-off), so they are the caller's to give back, as in Python.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// #[mp::worker]
/// fn signal(done: mp::Semaphore) {
///     done.release().unwrap();
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let done = mp::Semaphore::new(0)?;
/// let mut p = mp::Process::new(signal, done.clone());
/// p.start()?;
/// done.acquire_timeout(Duration::from_secs(10))?.keep(); // waits for the child's release
/// p.join()?;
/// assert_eq!(done.value(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Semaphore(Sem);

/// A [`Semaphore`] that refuses to be released above its initial value: Python's
/// `multiprocessing.BoundedSemaphore`. A release too many is `Error::Invalid`.
///
/// # Examples
///
/// ```
/// let slots = mp::BoundedSemaphore::new(2)?;
/// let a = slots.acquire()?;
/// assert_eq!(slots.value(), 1);
/// drop(a);
/// assert!(matches!(slots.release(), Err(mp::Error::Invalid(_))));
/// assert_eq!(slots.value(), 2);
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore(Sem);

/// A unit taken from a [`Semaphore`] or [`BoundedSemaphore`]; given back when it drops, or
/// by another process if this one dies first.
///
/// # Examples
///
/// ```
/// let sem = mp::Semaphore::new(1)?;
/// {
///     let _unit = sem.acquire()?;
///     assert_eq!(sem.value(), 0);
/// }
/// assert_eq!(sem.value(), 1);
/// # Ok::<(), mp::Error>(())
/// ```
#[must_use = "the unit is given back as soon as the guard is dropped; call keep() to keep it"]
pub struct SemaphoreGuard<'a> {
    sem: &'a Sem,
    /// The holder-table slot that counts this unit for this process, or `UNTRACKED`.
    slot: u32,
    previous_owner_died: bool,
}

impl SemaphoreGuard<'_> {
    /// Keeps the unit: nothing is given back when the guard goes (Python's `acquire()`
    /// without `with`). Give it back later with `release`, from any process. A kept unit no
    /// longer counts as this process's, so it is not given back if this process dies.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = mp::Semaphore::new(1)?;
    /// sem.acquire()?.keep();
    /// assert_eq!(sem.value(), 0);
    /// sem.release()?;
    /// assert_eq!(sem.value(), 1);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn keep(self) {
        self.sem.untrack(self.slot);
        std::mem::forget(self);
    }

    /// True if this unit was given back by a process that died holding it (Python has no
    /// equivalent; see [`LockGuard::previous_owner_died`](crate::LockGuard::previous_owner_died)).
    /// Whatever that process was doing with the unit may be half done. When a dead process
    /// held several units, the acquisition that gave them back keeps one and sees `true`;
    /// the others return to the semaphore as ordinary units.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = mp::Semaphore::new(1)?;
    /// let unit = sem.acquire()?;
    /// assert!(!unit.previous_owner_died());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn previous_owner_died(&self) -> bool {
        self.previous_owner_died
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        if self.sem.untrack(self.slot) {
            // Fails only if a bounded semaphore was over-released by someone else meanwhile
            // (that release already reported the mistake) or the count is at its maximum.
            let _ = self.sem.add_one();
        }
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard")
            .field("previous_owner_died", &self.previous_owner_died)
            .finish_non_exhaustive()
    }
}

/// The methods of both semaphore types (documented on each).
macro_rules! semaphore_methods {
    ($ty:ident, $name:literal, $example_new:literal) => {
        impl $ty {
            /// Takes a unit, waiting as long as it takes while there is none; the guard gives
            /// it back. Units held by a process that died are given back meanwhile (the guard
            /// then reports [`previous_owner_died`](SemaphoreGuard::previous_owner_died)).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = $example_new]
            /// let unit = sem.acquire()?;
            /// assert_eq!(sem.value(), 0);
            /// drop(unit);
            /// # Ok::<(), mp::Error>(())
            /// ```
            pub fn acquire(&self) -> Result<SemaphoreGuard<'_>, Error> {
                match self.0.take(None)? {
                    Some(died) => Ok(self.0.guard(died)),
                    None => unreachable!("a wait without a deadline does not time out"),
                }
            }

            /// Takes a unit, waiting at most `timeout`: `Error::Timeout` if there is still
            /// none then.
            ///
            /// # Examples
            ///
            /// ```
            /// use std::time::Duration;
            ///
            #[doc = $example_new]
            /// let unit = sem.acquire_timeout(Duration::from_millis(10))?;
            /// let none = sem.acquire_timeout(Duration::from_millis(10));
            /// assert!(matches!(none, Err(mp::Error::Timeout { .. })));
            /// drop(unit);
            /// # Ok::<(), mp::Error>(())
            /// ```
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphoreGuard<'_>, Error> {
                match self.0.take(words::deadline(timeout))? {
                    Some(died) => Ok(self.0.guard(died)),
                    None => {
                        Err(Error::Timeout { what: concat!("acquiring a ", $name).into(), after: timeout })
                    }
                }
            }

            /// Takes a unit if there is one: `None` otherwise, without waiting. When there
            /// is none, it looks for units held by processes that died (reading
            /// `/proc/<pid>/stat` of each holder: spin on `acquire_timeout`, not on this).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = $example_new]
            /// let unit = sem.try_acquire().expect("one unit");
            /// assert!(sem.try_acquire().is_none());
            /// drop(unit);
            /// # Ok::<(), mp::Error>(())
            /// ```
            pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
                if self.0.try_take() {
                    Some(self.0.guard(false))
                } else if self.0.reclaim(true) {
                    Some(self.0.guard(true))
                } else {
                    None
                }
            }

            /// The number of units available now (Python's `get_value()`): a snapshot that
            /// other processes may change at once.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = $example_new]
            /// assert_eq!(sem.value(), 1);
            /// # Ok::<(), mp::Error>(())
            /// ```
            pub fn value(&self) -> u32 {
                self.0.value()
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut d = f.debug_struct($name);
                d.field("value", &self.value());
                let bound = self.0.words.u32(BOUND).load(Ordering::Relaxed);
                if bound != UNBOUNDED {
                    d.field("bound", &bound);
                }
                d.finish()
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.words.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($ty(Sem { words: Words::deserialize(d)?.checked(LEN, $name)? }))
            }
        }
    };
}

semaphore_methods!(Semaphore, "Semaphore", "let sem = mp::Semaphore::new(1)?;");
semaphore_methods!(BoundedSemaphore, "BoundedSemaphore", "let sem = mp::BoundedSemaphore::new(1)?;");

impl Semaphore {
    /// A semaphore with `value` units (Python's default is 1). `Error::Invalid` above 2^31 - 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = mp::Semaphore::new(3)?;
    /// assert_eq!(sem.value(), 3);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore, Error> {
        Sem::new(value, UNBOUNDED, "Semaphore").map(Semaphore)
    }

    /// Gives back one unit (or adds one: a semaphore may grow past its initial value), waking
    /// the waiters. Any thread of any process may release. `Error::Invalid` only past
    /// 2^31 - 1 units.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = mp::Semaphore::new(0)?;
    /// sem.release()?;
    /// sem.release()?;
    /// assert_eq!(sem.value(), 2);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn release(&self) -> Result<(), Error> {
        self.0.give("a Semaphore")
    }
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` units, which is also its bound.
    /// `Error::Invalid` above 2^31 - 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = mp::BoundedSemaphore::new(2)?;
    /// assert_eq!(sem.value(), 2);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore, Error> {
        Sem::new(value, value, "BoundedSemaphore").map(BoundedSemaphore)
    }

    /// Gives back one unit, waking the waiters; `Error::Invalid` (and nothing changes) if
    /// that would exceed the initial value, as Python's `ValueError`.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = mp::BoundedSemaphore::new(1)?;
    /// sem.acquire()?.keep();
    /// sem.release()?;
    /// assert!(sem.release().is_err());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn release(&self) -> Result<(), Error> {
        self.0.give("a BoundedSemaphore")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_bit_is_kept_by_takes_and_cleared_by_gives() {
        let s = Semaphore::new(2).unwrap();
        s.0.word().fetch_or(WAITERS, Ordering::Relaxed);
        s.acquire().unwrap().keep();
        assert_eq!(s.0.word().load(Ordering::Relaxed), WAITERS | 1);
        s.release().unwrap();
        assert_eq!(s.0.word().load(Ordering::Relaxed), 2);
    }

    /// The units the table counts for `id`, over all slots.
    fn counted(sem: &Sem, id: u32) -> u64 {
        (0..SLOTS)
            .map(|i| sem.slot(i).load(Ordering::Relaxed))
            .filter(|s| *s != 0 && s >> 32 == u64::from(id))
            .map(|s| s & u64::from(u32::MAX))
            .sum()
    }

    fn empty_table(sem: &Sem) -> bool {
        (0..SLOTS).all(|i| sem.slot(i).load(Ordering::Relaxed) == 0)
    }

    #[test]
    fn guards_are_counted_and_kept_units_are_not() {
        let s = Semaphore::new(3).unwrap();
        let me = owner::me();
        let a = s.acquire().unwrap();
        let b = s.try_acquire().unwrap();
        assert_eq!(counted(&s.0, me), 2);
        drop(a);
        assert_eq!(counted(&s.0, me), 1);
        b.keep();
        assert!(empty_table(&s.0), "the last unit frees the slot; a kept unit is not counted");
        assert_eq!(s.value(), 2);
        s.release().unwrap();
        assert!(empty_table(&s.0), "release never touches the table");
        assert_eq!(s.value(), 3);
    }

    #[test]
    fn a_dead_holders_units_are_given_back_once() {
        let ghost = owner::tests::unused_pid();
        let s = Semaphore::new(0).unwrap();
        s.0.slot(7).store(u64::from(ghost) << 32 | 3, Ordering::Relaxed);
        let g = s.try_acquire().expect("a dead holder's units are given back");
        assert!(g.previous_owner_died());
        assert_eq!(s.value(), 2, "one of the three went to the caller");
        assert_eq!(counted(&s.0, ghost), 0);
        assert_eq!(counted(&s.0, owner::me()), 1);
        assert!(!s.0.reclaim(false), "nothing is given back twice");
        assert_eq!(s.value(), 2);
        drop(g);
        assert_eq!(s.value(), 3);
        assert!(empty_table(&s.0));

        // A waiter finds them too.
        let s = Semaphore::new(0).unwrap();
        s.0.slot(SLOTS - 1).store(u64::from(ghost) << 32 | 1, Ordering::Relaxed);
        let g = s.acquire_timeout(Duration::from_secs(5)).unwrap();
        assert!(g.previous_owner_died());
        assert_eq!(s.value(), 0);
    }

    #[test]
    fn reclaiming_never_passes_the_bound() {
        let ghost = owner::tests::unused_pid();
        let s = BoundedSemaphore::new(3).unwrap();
        s.acquire().unwrap().keep();
        // Counts 2 units for the dead process, but only 1 is missing from the counter.
        s.0.slot(0).store(u64::from(ghost) << 32 | 2, Ordering::Relaxed);
        assert!(!s.0.reclaim(false));
        assert_eq!(s.value(), 3);
        assert!(empty_table(&s.0));
        assert!(s.release().is_err());
    }

    #[test]
    fn a_full_table_leaves_units_untracked_but_correct() {
        let s = Semaphore::new(2).unwrap();
        // A live process other than this one: our pid with an unknown start time (tag 0).
        let other = u64::from(owner::pid_of(owner::me()));
        for i in 0..SLOTS {
            s.0.slot(i).store(other << 32 | 1, Ordering::Relaxed);
        }
        let g = s.acquire().unwrap();
        assert_eq!(g.slot, UNTRACKED);
        assert!(s.try_acquire().is_some_and(|g| !g.previous_owner_died()));
        assert_eq!(s.value(), 1);
        drop(g);
        assert_eq!(s.value(), 2);
        let _both = (s.acquire().unwrap(), s.acquire().unwrap());
        assert!(s.try_acquire().is_none(), "a live holder's units are not taken");
        assert_eq!(counted(&s.0, other as u32), SLOTS as u64);
    }

    #[test]
    fn a_guard_whose_slot_was_given_back_gives_nothing() {
        let s = Semaphore::new(1).unwrap();
        let g = s.acquire().unwrap();
        // Another process believed us dead and gave our unit back.
        s.0.slot(g.slot as usize).store(0, Ordering::Relaxed);
        s.release().unwrap();
        drop(g);
        assert_eq!(s.value(), 1);
    }

    #[test]
    fn too_large_values_are_refused() {
        assert!(Semaphore::new(VALUE + 1).is_err());
        let s = Semaphore::new(VALUE).unwrap();
        assert!(s.release().is_err());
        assert_eq!(s.value(), VALUE);
    }
}

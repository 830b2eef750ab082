//! `mp::Semaphore` and `mp::BoundedSemaphore`: a counter in one shared word, futex waits.
//! See README.md ("Semaphore").

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::words::{self, Words};
use crate::error::Error;

/// Set while some thread may sleep on the counter: the next release wakes them all.
const WAITERS: u32 = 1 << 31;
/// The counter's bits, and so the largest value.
const VALUE: u32 = WAITERS - 1;
/// Layout: the counter word at 0, the bound at 4 (`UNBOUNDED` for a plain semaphore).
const BOUND: usize = 4;
const LEN: usize = 8;
const UNBOUNDED: u32 = u32::MAX;

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

    /// Takes one unit if there is one, without waiting.
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

    /// Takes one unit, waiting until `deadline` (`None`: as long as it takes). False if the
    /// deadline passed first.
    fn take(&self, deadline: Option<Instant>) -> Result<bool, Error> {
        let word = self.word();
        loop {
            if self.try_take() {
                return Ok(true);
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
            if !words::sleep_on(word, w | WAITERS, deadline, "a Semaphore")? {
                // One last look: a release may have come as the deadline passed.
                return Ok(self.try_take());
            }
        }
    }

    /// Gives back one unit; refuses to pass the bound (or the largest value).
    fn give(&self, what: &str) -> Result<(), Error> {
        let bound = self.words.u32(BOUND).load(Ordering::Relaxed);
        let word = self.word();
        let mut w = word.load(Ordering::Relaxed);
        loop {
            let v = w & VALUE;
            if bound != UNBOUNDED && v >= bound {
                return Err(Error::invalid(format!(
                    "{what} released too many times: its value is already its initial value {bound}"
                )));
            }
            if v == VALUE {
                return Err(Error::invalid(format!("{what} released past its largest value {VALUE}")));
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
/// Clones, and copies passed to workers, are the same semaphore. Units taken by a process
/// that dies are not given back (a semaphore has no owner to take over from; see the
/// synchronisation README).
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

/// A unit taken from a [`Semaphore`] or [`BoundedSemaphore`]; given back when it drops.
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
}

impl SemaphoreGuard<'_> {
    /// Keeps the unit: nothing is given back when the guard goes (Python's `acquire()`
    /// without `with`). Give it back later with `release`, from any process.
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
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Fails only if a bounded semaphore was over-released by someone else meanwhile (that
        // release already reported the mistake) or the count is at its maximum.
        let _ = self.sem.give("a semaphore");
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}

/// The methods of both semaphore types (documented on each).
macro_rules! semaphore_methods {
    ($ty:ident, $name:literal, $example_new:literal) => {
        impl $ty {
            /// Takes a unit, waiting as long as it takes while there is none; the guard gives
            /// it back.
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
                self.0.take(None)?;
                Ok(SemaphoreGuard { sem: &self.0 })
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
                if self.0.take(words::deadline(timeout))? {
                    Ok(SemaphoreGuard { sem: &self.0 })
                } else {
                    Err(Error::Timeout { what: concat!("acquiring a ", $name).into(), after: timeout })
                }
            }

            /// Takes a unit if there is one: `None` otherwise, without waiting.
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
                // Not `then_some`: an eagerly built guard would give back a unit never taken.
                self.0.try_take().then(|| SemaphoreGuard { sem: &self.0 })
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

    #[test]
    fn too_large_values_are_refused() {
        assert!(Semaphore::new(VALUE + 1).is_err());
        let s = Semaphore::new(VALUE).unwrap();
        assert!(s.release().is_err());
        assert_eq!(s.value(), VALUE);
    }
}

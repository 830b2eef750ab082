//! `mp::Event`: a flag in one shared word, with a generation so that a `set` wakes every
//! waiter even if a `clear` follows at once. See README.md ("Event").

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::words::{self, Words};
use crate::error::Error;

/// The flag.
const SET: u32 = 1;
/// Some thread may sleep on the word: `set` must wake them.
const WAITERS: u32 = 2;
/// The generation (bits 2..32) counts the `set`s that found the flag clear.
const GENERATION: u32 = 4;
const LEN: usize = 4;

/// A flag that processes wait for: Python's `multiprocessing.Event`.
///
/// [`set`](Event::set) raises the flag and wakes every waiter; [`clear`](Event::clear) lowers
/// it; [`wait`](Event::wait) returns at once while it is up and otherwise sleeps until a
/// `set`. As in Python, a waiter asleep when `set` is called returns even if the flag is
/// cleared again before it runs. What a process wrote before `set` is visible to whoever
/// returns from `wait` because of it.
///
/// Clones, and copies passed to workers, are the same event.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// #[mp::worker]
/// fn wait_for_go(go: mp::Event) -> bool {
///     go.wait_timeout(Duration::from_secs(10)).is_ok()
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let go = mp::Event::new()?;
/// let mut p = mp::Process::new(wait_for_go, go.clone());
/// p.start()?;
/// go.set();
/// assert!(p.join()?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Event {
    words: Words,
}

impl Event {
    /// A new event, not set.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = mp::Event::new()?;
    /// assert!(!e.is_set());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new() -> Result<Event, Error> {
        Ok(Event { words: Words::new("mp-event", LEN)? })
    }

    fn word(&self) -> &AtomicU32 {
        self.words.u32(0)
    }

    /// Raises the flag and wakes every waiter (of any process). Nothing happens if it is up.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = mp::Event::new()?;
    /// e.set();
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn set(&self) {
        let word = self.word();
        let mut w = word.load(Ordering::Relaxed);
        loop {
            if w & SET != 0 {
                return; // already up: waiters return because of the set that raised it
            }
            // Next generation, flag up, WAITERS cleared: everyone asleep is woken below.
            let next = (w & !(SET | WAITERS)).wrapping_add(GENERATION) | SET;
            match word.compare_exchange_weak(w, next, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if w & WAITERS != 0 {
            words::wake_all(word);
        }
    }

    /// Lowers the flag. Waiters woken by an earlier `set` still return.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = mp::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn clear(&self) {
        // Keeps the generation and any WAITERS bit (impossible while SET, but harmless).
        self.word().fetch_and(!SET, Ordering::Relaxed);
    }

    /// Whether the flag is up now.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = mp::Event::new()?;
    /// assert!(!e.is_set());
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.word().load(Ordering::Acquire) & SET != 0
    }

    /// Waits until the flag is up (returns at once if it is), as long as it takes.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = mp::Event::new()?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| e.set());
    ///     e.wait()
    /// })?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn wait(&self) -> Result<(), Error> {
        self.wait_until(None).map(|_| ())
    }

    /// Waits at most `timeout` for the flag: `Error::Timeout` if it is still down then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let e = mp::Event::new()?;
    /// let r = e.wait_timeout(Duration::from_millis(10));
    /// assert!(matches!(r, Err(mp::Error::Timeout { .. })));
    /// e.set();
    /// e.wait_timeout(Duration::ZERO)?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), Error> {
        if self.wait_until(words::deadline(timeout))? {
            Ok(())
        } else {
            Err(Error::Timeout { what: "waiting for an Event".into(), after: timeout })
        }
    }

    /// True once the flag was up at some point since the call (false: the deadline passed).
    fn wait_until(&self, deadline: Option<Instant>) -> Result<bool, Error> {
        let word = self.word();
        let mut w = word.load(Ordering::Acquire);
        let generation = w & !(SET | WAITERS);
        loop {
            if w & SET != 0 || w & !(SET | WAITERS) != generation {
                // Set now, or set (and maybe cleared) since we started: the Acquire load that
                // saw it synchronizes with that set's Release.
                return Ok(true);
            }
            if w & WAITERS == 0 {
                if let Err(now) = word.compare_exchange(w, w | WAITERS, Ordering::Acquire, Ordering::Acquire)
                {
                    w = now;
                    continue;
                }
                w |= WAITERS;
            }
            if !words::sleep_on(word, w, deadline, "an Event")? {
                let last = word.load(Ordering::Acquire);
                return Ok(last & SET != 0 || last & !(SET | WAITERS) != generation);
            }
            w = word.load(Ordering::Acquire);
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("is_set", &self.is_set()).finish()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.words.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Event { words: Words::deserialize(d)?.checked(LEN, "Event")? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_returns_after_set_then_clear() {
        let e = Event::new().unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| e.wait_timeout(Duration::from_secs(10)));
            // Let the waiter sleep, then set and clear at once.
            while e.word().load(Ordering::Relaxed) & WAITERS == 0 {
                std::thread::yield_now();
            }
            e.set();
            e.clear();
            assert!(waiter.join().unwrap().is_ok());
        });
        assert!(!e.is_set());
        assert_eq!(e.word().load(Ordering::Relaxed), GENERATION);
    }
}

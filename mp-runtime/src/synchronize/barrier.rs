//! `mp::Barrier`: parties meet, generation by generation. State changes under a `Lock` in the
//! same region; parties sleep on a phase word, and watch one another so that a party that
//! dies while waiting breaks the barrier. See README.md ("Barrier").

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lock::Lock;
use super::owner::{self, PROBE_INTERVAL};
use super::words::{self, Words};
use crate::error::Error;
use crate::registry::{self, Worker};

/// Layout: the `Lock` word at 0; the phase (generation << 1 | BROKEN) at 4, the futex word;
/// arrivals in this generation at 8; parties at 12; at 16 the outcome of the last 32
/// generations (bit `g % 32` set: generation `g` ended by a reset, not by passing); from 20 to
/// the end of the page, the identity of the party that arrived `i`-th in this generation.
const PHASE: usize = 4;
const COUNT: usize = 8;
const PARTIES: usize = 12;
const HISTORY: usize = 16;
const ARRIVALS: usize = 20;
const LEN: usize = 4096;
/// How many waiting parties are watched for death (the later ones are not).
const WATCHED: u32 = ((LEN - ARRIVALS) / size_of::<u32>()) as u32;
const BROKEN: u32 = 1;

/// A meeting point for a fixed number of parties: Python's `multiprocessing.Barrier`.
///
/// Each party calls [`wait`](Barrier::wait); all of them return once the last has arrived,
/// each with a different index in `0..parties` (arrival order, so exactly one gets 0), and the
/// barrier is ready for the next pass. An optional action — an `#[mp::worker]` taking and
/// returning nothing — runs once per pass, in the last party to arrive, before the others are
/// released.
///
/// The barrier *breaks* ([`Error::BrokenBarrier`]) when [`abort`](Barrier::abort) is called,
/// when it is [`reset`](Barrier::reset) while parties wait, when a party's
/// [`wait_timeout`](Barrier::wait_timeout) expires (that party gets `Error::Timeout`), or when
/// the action panics, or when a waiting party's process dies (the others notice within about
/// 200 ms); every waiting and later `wait` fails until `reset`.
///
/// Clones, and copies passed to workers, are the same barrier.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// #[mp::worker]
/// fn meet(barrier: mp::Barrier) -> u32 {
///     barrier.wait_timeout(Duration::from_secs(10)).unwrap()
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let barrier = mp::Barrier::new(3)?;
/// let mut ps: Vec<_> = (0..2).map(|_| mp::Process::new(meet, barrier.clone())).collect();
/// for p in &mut ps {
///     p.start()?;
/// }
/// let mut indices = vec![barrier.wait_timeout(Duration::from_secs(10))?];
/// for p in &mut ps {
///     indices.push(p.join()?);
/// }
/// indices.sort();
/// assert_eq!(indices, [0, 1, 2]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Barrier {
    /// The state lock (offset 0 of `words`' region).
    lock: Lock,
    words: Words,
    /// The registered name of the action worker.
    action: Option<String>,
}

impl Barrier {
    /// A barrier for `parties` parties (at least one).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = mp::Barrier::new(1)?;
    /// assert_eq!(b.wait()?, 0); // one party: passes at once
    /// assert!(mp::Barrier::new(0).is_err());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new(parties: u32) -> Result<Barrier, Error> {
        Barrier::create(parties, None)
    }

    /// A barrier whose `action` (an `#[mp::worker]` with no arguments and no result) runs
    /// once per pass, in the last party to arrive, before the others are released. A panic in
    /// it breaks the barrier and continues in that party.
    ///
    /// # Examples
    ///
    /// ```
    /// #[mp::worker]
    /// fn on_pass() {
    ///     println!("everyone is here");
    /// }
    ///
    /// let b = mp::Barrier::with_action(1, on_pass)?;
    /// b.wait()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn with_action<W: Worker<Args = (), Output = ()>>(
        parties: u32,
        _action: W,
    ) -> Result<Barrier, Error> {
        Barrier::create(parties, Some(W::NAME.to_string()))
    }

    fn create(parties: u32, action: Option<String>) -> Result<Barrier, Error> {
        if parties == 0 || parties > (u32::MAX >> 1) {
            return Err(Error::invalid(format!("a Barrier needs 1 to 2^31 - 1 parties, not {parties}")));
        }
        let words = Words::new("mp-barrier", LEN)?;
        words.u32(PARTIES).store(parties, Ordering::Relaxed);
        Barrier::from_words(words, action)
    }

    fn from_words(words: Words, action: Option<String>) -> Result<Barrier, Error> {
        let lock = Lock::in_region(words.region().clone(), 0)?;
        Ok(Barrier { lock, words, action })
    }

    fn phase(&self) -> &AtomicU32 {
        self.words.u32(PHASE)
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        self.words.u32(offset)
    }

    /// Waits for the other parties, as long as it takes: this party's index in `0..parties`.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = mp::Barrier::new(2)?;
    /// let (x, y) = std::thread::scope(|s| {
    ///     let other = s.spawn(|| b.wait().unwrap());
    ///     (b.wait().unwrap(), other.join().unwrap())
    /// });
    /// assert_eq!(x + y, 1);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn wait(&self) -> Result<u32, Error> {
        self.wait_until(None, Duration::MAX)
    }

    /// Waits at most `timeout` for the other parties. On timeout this party gets
    /// `Error::Timeout` and the barrier breaks (the others get `Error::BrokenBarrier`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let b = mp::Barrier::new(2)?;
    /// let r = b.wait_timeout(Duration::from_millis(10));
    /// assert!(matches!(r, Err(mp::Error::Timeout { .. })));
    /// assert!(b.broken());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, Error> {
        self.wait_until(words::deadline(timeout), timeout)
    }

    fn wait_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<u32, Error> {
        let guard = self.lock.lock()?;
        let phase = self.phase().load(Ordering::Relaxed);
        if phase & BROKEN != 0 {
            return Err(Error::BrokenBarrier);
        }
        if guard.previous_owner_died() {
            // A party died arriving: counted or not, this generation cannot pass as meant.
            self.break_now(phase);
            return Err(Error::BrokenBarrier);
        }
        let index = self.word(COUNT).load(Ordering::Relaxed);
        let parties = self.word(PARTIES).load(Ordering::Relaxed);
        if index + 1 == parties {
            // The last to arrive: run the action, then release everyone.
            if let Some(name) = &self.action {
                let ran = panic::catch_unwind(AssertUnwindSafe(|| run_action(name)));
                match ran {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        self.break_now(phase);
                        return Err(e);
                    }
                    Err(payload) => {
                        self.break_now(phase);
                        drop(guard);
                        panic::resume_unwind(payload);
                    }
                }
            }
            self.end_generation(phase, false);
            return Ok(index);
        }
        if index < WATCHED {
            self.arrival(index).store(owner::me(), Ordering::Relaxed);
        }
        self.word(COUNT).store(index + 1, Ordering::Relaxed);
        drop(guard);

        let generation = phase >> 1;
        let mut next_probe = Instant::now() + PROBE_INTERVAL;
        loop {
            let p = self.phase().load(Ordering::Acquire);
            if let Some(r) = self.outcome(p, generation) {
                return r.map(|()| index);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            if now >= next_probe {
                next_probe = now + PROBE_INTERVAL;
                self.break_if_a_party_died(generation, index)?;
                continue;
            }
            let wake = deadline.map_or(next_probe, |d| d.min(next_probe));
            words::sleep_on(self.phase(), p, Some(wake), "a Barrier")?;
        }
        // Timed out: break the barrier, unless it passed (or broke) meanwhile.
        let _guard = self.lock.lock()?;
        let p = self.phase().load(Ordering::Acquire);
        if let Some(r) = self.outcome(p, generation) {
            return r.map(|()| index);
        }
        self.break_now(p);
        Err(Error::Timeout { what: "waiting at a Barrier".into(), after: timeout })
    }

    /// The identity of the party that arrived `index`-th (`index < WATCHED`).
    fn arrival(&self, index: u32) -> &AtomicU32 {
        self.words.u32(ARRIVALS + index as usize * size_of::<u32>())
    }

    /// Breaks generation `generation` if the party this waiter watches died: the one that
    /// arrived just before it, or for the first arrival the latest one. Every death of a
    /// waiting party is seen by some live waiter this way (the first dead party after a live
    /// one is watched by it; if all the later ones are dead, the first arrival watches the
    /// last), at a cost of one `/proc` read per waiter per probe.
    #[cold]
    fn break_if_a_party_died(&self, generation: u32, index: u32) -> Result<(), Error> {
        let guard = self.lock.lock()?;
        let p = self.phase().load(Ordering::Relaxed);
        if p >> 1 != generation || p & BROKEN != 0 {
            return Ok(()); // the caller sees what happened
        }
        if guard.previous_owner_died() {
            // A party died arriving, as in `wait_until`.
            self.break_now(p);
            return Ok(());
        }
        let watched = match index {
            0 => self.word(COUNT).load(Ordering::Relaxed).saturating_sub(1),
            i => i - 1,
        };
        if watched != index && watched < WATCHED {
            // Written under this lock when that party arrived in this generation: never 0.
            let id = self.arrival(watched).load(Ordering::Relaxed);
            if id != 0 && owner::is_gone(id) {
                self.break_now(p);
            }
        }
        Ok(())
    }

    /// What became of generation `generation`, seen in phase `p`: `None` while it is still
    /// filling.
    fn outcome(&self, p: u32, generation: u32) -> Option<Result<(), Error>> {
        let now = p >> 1;
        if now == generation {
            return (p & BROKEN != 0).then_some(Err(Error::BrokenBarrier));
        }
        let ago = now.wrapping_sub(generation) & (u32::MAX >> 1);
        let reset = self.word(HISTORY).load(Ordering::Relaxed) & (1 << (generation % 32)) != 0;
        Some(if ago <= 32 && reset { Err(Error::BrokenBarrier) } else { Ok(()) })
    }

    /// Breaks the current generation (the caller holds the lock).
    fn break_now(&self, phase: u32) {
        self.phase().store(phase | BROKEN, Ordering::Release);
        words::wake_all(self.phase());
    }

    /// Starts the next generation, recording how this one ended (the caller holds the lock).
    fn end_generation(&self, phase: u32, by_reset: bool) {
        let bit = 1 << ((phase >> 1) % 32);
        let history = self.word(HISTORY);
        if by_reset {
            history.fetch_or(bit, Ordering::Relaxed);
        } else {
            history.fetch_and(!bit, Ordering::Relaxed);
        }
        self.word(COUNT).store(0, Ordering::Relaxed);
        // The Release store publishes the history bit and everything the parties did before
        // arriving (each arrival took the lock this thread now holds).
        self.phase().store(((phase >> 1).wrapping_add(1) << 1) & !BROKEN, Ordering::Release);
        words::wake_all(self.phase());
    }

    /// Breaks the barrier: every waiting and later `wait` fails with `Error::BrokenBarrier`
    /// until [`reset`](Barrier::reset).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = mp::Barrier::new(2)?;
    /// b.abort()?;
    /// assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier)));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn abort(&self) -> Result<(), Error> {
        let _guard = self.lock.lock()?;
        self.break_now(self.phase().load(Ordering::Relaxed));
        Ok(())
    }

    /// Returns the barrier to its empty, unbroken state; parties waiting now get
    /// `Error::BrokenBarrier`.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = mp::Barrier::new(1)?;
    /// b.abort()?;
    /// b.reset()?;
    /// assert!(!b.broken());
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn reset(&self) -> Result<(), Error> {
        let _guard = self.lock.lock()?;
        self.end_generation(self.phase().load(Ordering::Relaxed), true);
        Ok(())
    }

    /// The number of parties the barrier waits for.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(mp::Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn parties(&self) -> u32 {
        self.word(PARTIES).load(Ordering::Relaxed)
    }

    /// How many parties wait now (a snapshot). 0 while broken.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(mp::Barrier::new(4)?.n_waiting(), 0);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn n_waiting(&self) -> u32 {
        if self.broken() { 0 } else { self.word(COUNT).load(Ordering::Relaxed) }
    }

    /// Whether the barrier is broken.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = mp::Barrier::new(2)?;
    /// assert!(!b.broken());
    /// b.abort()?;
    /// assert!(b.broken());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn broken(&self) -> bool {
        self.phase().load(Ordering::Acquire) & BROKEN != 0
    }
}

/// Runs the action worker registered as `name` in this process.
fn run_action(name: &str) -> Result<(), Error> {
    let entry = registry::lookup(name)?;
    // `()` encodes to no bytes; the output, `()`, to none either.
    let mut out = Vec::new();
    (entry.dispatch)(&mut &[][..], &mut out)
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .field("action", &self.action)
            .finish()
    }
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.words, &self.action).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (words, action) = <(Words, Option<String>)>::deserialize(d)?;
        Barrier::from_words(words.checked(LEN, "Barrier")?, action).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_party_that_died_arriving_breaks_the_barrier() {
        let b = Barrier::new(2).unwrap();
        // The state lock is held by a process that no longer exists.
        b.word(0).store(owner::tests::unused_pid(), Ordering::Relaxed);
        assert!(matches!(b.wait_timeout(Duration::from_secs(5)), Err(Error::BrokenBarrier)));
        assert!(b.broken());
        b.reset().unwrap();
        assert!(matches!(b.wait_timeout(Duration::from_millis(10)), Err(Error::Timeout { .. })));
    }

    #[test]
    fn a_dead_waiting_party_breaks_the_barrier() {
        let b = Barrier::new(3).unwrap();
        // A party that arrived first and died while waiting.
        b.arrival(0).store(owner::tests::unused_pid(), Ordering::Relaxed);
        b.word(COUNT).store(1, Ordering::Relaxed);
        assert!(matches!(b.wait_timeout(Duration::from_secs(5)), Err(Error::BrokenBarrier)));
    }
}

//! `Words`: the few atomic words of one synchronisation primitive, at the start of its own
//! shared-memory region, and the waiting helpers the primitives share. `RLock`, `Semaphore`,
//! `BoundedSemaphore` and `Event` are built on it; their protocols are in README.md.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::shared_memory::Region;
use crate::sys;
use crate::wire::codec;

/// The longest single futex sleep. Wake-ups are never lost by the protocols, so this only
/// bounds what an unforeseen one (or a waker killed between its store and its wake) costs.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// A region whose first `len` bytes are the atomic words of one primitive (zeroed at first).
#[derive(Clone)]
pub(crate) struct Words {
    region: Arc<Region>,
}

impl Words {
    /// A fresh zeroed region of `len` bytes; `name` shows as `memfd:<name>`.
    pub(crate) fn new(name: &str, len: usize) -> Result<Words, Error> {
        Ok(Words { region: Arc::new(Region::new(name, len)?) })
    }

    /// The region, for a primitive that keeps a `Lock` in it too.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The 32-bit word at byte `offset`.
    ///
    /// # Panics
    ///
    /// If the word does not fit the region or is misaligned: a bug in the caller's layout,
    /// which `from_region` checked against the region's length.
    pub(crate) fn u32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, size_of::<AtomicU32>());
        // SAFETY: the word is inside the mapping and aligned (checked above: the region is
        // page-aligned and `offset` a multiple of 4); the mapping lives as long as
        // `self.region`, and its bytes are only ever accessed atomically, by every process.
        unsafe { self.region.as_ptr().add(offset).cast::<AtomicU32>().as_ref() }
    }

    /// The 64-bit word at byte `offset` (as [`u32`](Words::u32)).
    pub(crate) fn u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, size_of::<AtomicU64>());
        // SAFETY: as in `u32`, with 8-byte alignment checked.
        unsafe { self.region.as_ptr().add(offset).cast::<AtomicU64>().as_ref() }
    }

    fn check(&self, offset: usize, size: usize) {
        assert!(
            offset % size == 0 && offset + size <= self.region.len(),
            "a {size}-byte word at offset {offset} in a region of {} bytes",
            self.region.len()
        );
    }

    /// Refuses a received region shorter than `len` bytes; `what` names the primitive.
    pub(crate) fn checked<E: serde::de::Error>(self, len: usize, what: &str) -> Result<Words, E> {
        if self.region.len() < len {
            return Err(E::custom(codec::custom_error(format!(
                "received a bad {what}: its shared region has {} bytes, {len} were expected",
                self.region.len()
            ))));
        }
        Ok(self)
    }
}

/// The region travels as its descriptor (see `Region`); receivers call `checked`.
impl Serialize for Words {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (*self.region).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Words { region: Arc::new(Region::deserialize(d)?) })
    }
}

impl fmt::Debug for Words {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.region.fmt(f)
    }
}

/// Sleeps while `word == expected`, until woken, `deadline` or [`MAX_SLEEP`]. Returns false
/// without sleeping if `deadline` has passed. Callers re-read the word either way.
pub(crate) fn sleep_on(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
    what: &str,
) -> Result<bool, Error> {
    let now = Instant::now();
    let mut sleep = MAX_SLEEP;
    if let Some(d) = deadline {
        if now >= d {
            return Ok(false);
        }
        sleep = sleep.min(d - now);
    }
    sys::shm::futex_wait(word, expected, sleep).map_err(|e| Error::io(format!("waiting for {what}"), e))?;
    Ok(true)
}

/// Wakes every thread (of any process) asleep on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    sys::shm::futex_wake(word, i32::MAX as u32);
}

/// The deadline `timeout` from now (`None`, no deadline, past any representable instant).
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

//! Who holds a lock. A holder writes its *identity* into the lock word: its pid and a 9-bit
//! tag of its start time, so that a waiter can tell a dead holder (no such pid), and a dead
//! holder whose pid was recycled by a new process (same pid, other start time), from a live
//! one. See README.md for how the protocol uses it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys::shm::{self, Probe};

/// Set in the lock word while threads may sleep on it: the release must wake one.
pub(crate) const WAITERS: u32 = 1 << 31;

/// A waiter first checks that a holder is alive after waiting this long...
pub(crate) const FIRST_PROBE: Duration = Duration::from_millis(10);
/// ...and then this often. It is also the longest a single futex wait of a `Lock` lasts.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Linux pids are below `PID_MAX_LIMIT` = 2^22 (`/proc/sys/kernel/pid_max` cannot exceed it).
const PID_BITS: u32 = 22;
const PID_MASK: u32 = (1 << PID_BITS) - 1;
/// The tag takes bits 22..31; tag 0 means "start time unknown" (no `/proc`).
const TAG_VALUES: u64 = (1 << 9) - 1;

/// This process's identity, cached in a page a `fork()`ed child sees zeroed.
static IDENTITY: OnceLock<&'static AtomicU32> = OnceLock::new();

/// This process's identity word: never 0, never has `WAITERS` set.
#[inline]
pub(crate) fn me() -> u32 {
    let cell = IDENTITY.get_or_init(shm::fork_wiped_word);
    match cell.load(Ordering::Relaxed) {
        0 => compute(cell),
        id => id,
    }
}

#[cold]
fn compute(cell: &AtomicU32) -> u32 {
    let pid = shm::getpid();
    assert!(pid <= PID_MASK, "pid {pid} exceeds Linux's PID_MAX_LIMIT (2^22)");
    let tag = shm::start_ticks(pid).map_or(0, tag_of);
    let id = pid | (tag << PID_BITS);
    // Threads racing here compute the same value.
    cell.store(id, Ordering::Relaxed);
    id
}

/// A well-mixed tag in `1..=511` of a start time.
fn tag_of(start_ticks: u64) -> u32 {
    let mixed = start_ticks.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    1 + (mixed % TAG_VALUES) as u32
}

/// The pid in a lock word (0 for an unlocked word).
pub(crate) fn pid_of(word: u32) -> u32 {
    word & PID_MASK
}

/// Whether the holder named by the (non-zero) lock word `word` is certainly gone: its
/// process exited, or its pid now belongs to a process that started at another time.
///
/// Costs a read of `/proc/<pid>/stat`; callers probe only after waiting a while.
pub(crate) fn is_gone(word: u32) -> bool {
    let id = word & !WAITERS;
    if id == me() {
        // Held by a thread of this very process: alive by definition.
        return false;
    }
    let tag = id >> PID_BITS;
    match shm::probe_process(id & PID_MASK) {
        Probe::Gone => true,
        Probe::Alive { start_ticks: Some(start) } => tag != 0 && tag_of(start) != tag,
        Probe::Alive { start_ticks: None } => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn identity_names_this_process() {
        let id = me();
        assert_eq!(pid_of(id), std::process::id());
        assert_eq!(id & WAITERS, 0);
        assert_ne!(id >> PID_BITS, 0, "the start-time tag is known where /proc is mounted");
        assert_eq!(me(), id);
        assert!(!is_gone(id) && !is_gone(id | WAITERS));
    }

    #[test]
    fn tags_are_in_range_and_spread() {
        let tags: std::collections::HashSet<u32> = (0..10_000u64).map(tag_of).collect();
        assert!(tags.iter().all(|&t| (1..=511).contains(&t)));
        assert!(tags.len() > 500, "{} distinct tags", tags.len());
    }

    #[test]
    fn a_recycled_pid_is_gone() {
        let id = me();
        let other_tag = if (id >> PID_BITS) == 1 { 2 } else { 1 };
        // Our pid with another start-time tag: a process that had our pid before us.
        let impostor = pid_of(id) | (other_tag << PID_BITS);
        assert!(is_gone(impostor));
        // An unknown tag (0) is never taken for a recycled pid.
        assert!(!is_gone(pid_of(id) | WAITERS));
    }

    /// A pid no process has right now (the highest free one below pid_max).
    pub(crate) fn unused_pid() -> u32 {
        let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
        (300..max.min(PID_MASK + 1))
            .rev()
            .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
            .unwrap()
    }

    #[test]
    fn a_missing_pid_is_gone() {
        let ghost = unused_pid();
        assert!(is_gone(ghost));
        assert!(is_gone(ghost | (7 << PID_BITS) | WAITERS));
    }
}

//! `mp::Lock`: mutual exclusion across processes and threads, try_lock, timeouts, handles
//! passed as arguments and through a Connection, and a holder SIGKILLed while holding it.

mod common;

use std::time::{Duration, Instant};

use common::{StartLine, Starter, wait_gone};
use mp::{Connection, Error, Exit, Lock, Pipe, Process, RawValue};

/// Takes the lock, tells the parent (its pid), and sleeps holding it until killed.
#[mp::worker]
fn hold_until_killed(lock: Lock, ready: Connection<u32>) {
    let _guard = lock.lock().unwrap();
    ready.send(std::process::id()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Takes the lock, tells the parent, holds it `ms` milliseconds, releases it.
#[mp::worker]
fn hold_for(lock: Lock, ready: Connection<u32>, ms: u64) {
    let guard = lock.lock().unwrap();
    ready.send(std::process::id()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    drop(guard);
}

/// Waits for the lock (a regression fails after 10 s rather than hanging): (previous owner
/// died, milliseconds waited).
#[mp::worker]
fn acquire(lock: Lock) -> (bool, u64) {
    let start = Instant::now();
    let guard = lock.lock_timeout(Duration::from_secs(10)).expect("acquired within 10 s");
    (guard.previous_owner_died(), start.elapsed().as_millis() as u64)
}

#[mp::worker]
fn try_acquire(lock: Lock) -> bool {
    lock.try_lock().unwrap().is_some()
}

/// `lock_timeout(ms)`: (timed out, milliseconds waited).
#[mp::worker]
fn acquire_within(lock: Lock, ms: u64) -> (bool, u64) {
    let start = Instant::now();
    let r = lock.lock_timeout(Duration::from_millis(ms));
    let waited = start.elapsed().as_millis() as u64;
    match r {
        Ok(_) => (false, waited),
        Err(Error::Timeout { .. }) => (true, waited),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A few microseconds of work inside a critical section: the window in which a broken lock
/// would let another update be lost.
fn dawdle() {
    for i in 0..1000 {
        std::hint::black_box(i);
    }
}

/// `n` increments of `counter`, each a separate read and write, under `lock`.
#[mp::worker]
fn locked_increments(lock: Lock, counter: RawValue<u64>, n: u32, line: StartLine) {
    line.wait();
    for _ in 0..n {
        let _guard = lock.lock().unwrap();
        let v = counter.get();
        dawdle();
        counter.set(v + 1);
    }
}

/// Receives a Lock through a Connection: (was it free, milliseconds `lock()` then waited).
#[mp::worker]
fn lock_from_connection(conn: Connection<Lock>) -> (bool, u64) {
    let lock = conn.recv().unwrap();
    let was_free = lock.try_lock().unwrap().is_some();
    let start = Instant::now();
    let guard = lock.lock_timeout(Duration::from_secs(10)).expect("acquired within 10 s");
    assert!(!guard.previous_owner_died());
    (was_free, start.elapsed().as_millis() as u64)
}

/// The descriptors of this process that are mp shared-memory files.
fn memfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("/memfd:mp-"))
        .count()
}

#[mp::worker]
fn count_memfds() -> usize {
    memfds()
}

#[mp::worker]
fn count_memfds_holding(lock: Lock) -> usize {
    drop(lock.lock().unwrap());
    memfds()
}

/// Creates, uses, passes around and drops locks; returns (memfds, all descriptors) before
/// and after. Runs in a child so other tests' descriptors do not interfere.
#[mp::worker]
fn churn_locks() -> ((usize, usize), (usize, usize)) {
    let all = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = (memfds(), all());
    for _ in 0..200 {
        let lock = Lock::new().unwrap();
        let copy = lock.clone();
        drop(copy.lock().unwrap());
        let (a, b) = Pipe::new::<Lock>().unwrap();
        a.send(lock).unwrap();
        let received = b.recv().unwrap();
        assert!(received.try_lock().unwrap().is_some());
    }
    (before, (memfds(), all()))
}

#[mp::test]
fn smoke() {
    let lock = Lock::new().unwrap();
    let guard = lock.lock().unwrap();
    assert!(!guard.previous_owner_died());
    assert!(lock.try_lock().unwrap().is_none(), "held");
    drop(guard);
    let guard = lock.try_lock().unwrap().expect("free again");
    assert!(!guard.previous_owner_died());
    drop(guard);
    assert!(lock.lock_timeout(Duration::from_millis(10)).is_ok());
}

#[mp::test]
fn clones_are_the_same_lock() {
    let lock = Lock::new().unwrap();
    let other = lock.clone();
    let guard = lock.lock().unwrap();
    assert!(other.try_lock().unwrap().is_none());
    drop(guard);
    assert!(other.try_lock().unwrap().is_some());
    assert!(format!("{lock:?}").contains("locked: false"), "{lock:?}");
}

#[mp::test]
fn mutual_exclusion_across_processes() {
    let lock = Lock::new().unwrap();
    let counter = RawValue::new(0u64).unwrap();
    let (starter, lines) = Starter::new(4);
    let mut workers: Vec<_> = lines
        .into_iter()
        .map(|line| Process::new(locked_increments, (lock.clone(), counter.clone(), 5000, line)))
        .collect();
    for p in &mut workers {
        p.start().unwrap();
    }
    starter.go();
    for p in &mut workers {
        p.join().unwrap();
    }
    assert_eq!(counter.get(), 20_000);
}

#[mp::test]
fn mutual_exclusion_across_threads_and_processes() {
    let lock = Lock::new().unwrap();
    let counter = RawValue::new(0u64).unwrap();
    let (starter, mut lines) = Starter::new(1);
    let mut child = Process::new(locked_increments, (lock.clone(), counter.clone(), 20_000, lines.remove(0)));
    child.start().unwrap();
    let gun = std::sync::Barrier::new(4);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                gun.wait();
                for _ in 0..20_000 {
                    let _guard = lock.lock().unwrap();
                    let v = counter.get();
                    dawdle();
                    counter.set(v + 1);
                }
            });
        }
        starter.go();
        gun.wait();
    });
    child.join().unwrap();
    assert_eq!(counter.get(), 80_000);
}

#[mp::test]
fn try_lock_across_processes() {
    let lock = Lock::new().unwrap();
    let guard = lock.lock().unwrap();
    let mut p = Process::new(try_acquire, lock.clone());
    p.start().unwrap();
    assert!(!p.join().unwrap(), "the parent holds it");
    drop(guard);
    let mut p = Process::new(try_acquire, lock.clone());
    p.start().unwrap();
    assert!(p.join().unwrap(), "released");
    assert!(lock.try_lock().unwrap().is_some(), "the child released it on exit");
}

#[mp::test]
fn lock_timeout_while_another_process_holds_it() {
    let lock = Lock::new().unwrap();
    let (ready_rx, ready_tx) = Pipe::new::<u32>().unwrap();
    let mut holder = Process::new(hold_for, (lock.clone(), ready_tx, 1500));
    holder.start().unwrap();
    ready_rx.recv().unwrap();

    let start = Instant::now();
    match lock.lock_timeout(Duration::from_millis(200)) {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_millis(1000), "{waited:?}");
    assert!(matches!(lock.lock_timeout(Duration::ZERO), Err(Error::Timeout { .. })));

    let mut other = Process::new(acquire_within, (lock.clone(), 100));
    other.start().unwrap();
    let (timed_out, waited_ms) = other.join().unwrap();
    assert!(timed_out && (100..1000).contains(&waited_ms), "{timed_out} after {waited_ms} ms");

    // Long enough for the holder's release: acquired, not taken over.
    let guard = lock.lock_timeout(Duration::from_secs(10)).unwrap();
    assert!(!guard.previous_owner_died());
    drop(guard);
    holder.join().unwrap();
}

#[mp::test]
fn release_wakes_a_waiting_process() {
    let lock = Lock::new().unwrap();
    let guard = lock.lock().unwrap();
    let mut p = Process::new(acquire, lock.clone());
    p.start().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let released = Instant::now();
    drop(guard);
    let (died, waited_ms) = p.join().unwrap();
    assert!(!died);
    assert!(waited_ms >= 200, "the child waited for the release, not {waited_ms} ms");
    assert!(released.elapsed() < Duration::from_secs(1));
}

#[mp::test]
fn release_wakes_a_sleeping_thread_at_once() {
    // Waits are bounded (100 ms) even without a wake-up; a release must not rely on that.
    let lock = Lock::new().unwrap();
    let mut prompt = 0;
    for _ in 0..5 {
        let guard = lock.lock().unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                drop(lock.lock_timeout(Duration::from_secs(10)).expect("acquired within 10 s"));
                Instant::now()
            });
            std::thread::sleep(Duration::from_millis(150)); // past the first probe: asleep
            let released = Instant::now();
            drop(guard);
            let latency = waiter.join().unwrap() - released;
            if latency < Duration::from_millis(30) {
                prompt += 1;
            }
        });
    }
    assert!(prompt >= 4, "only {prompt} of 5 waiters woke within 30 ms of the release");
}

#[mp::test]
fn holder_sigkilled_then_a_waiting_process_takes_over() {
    let lock = Lock::new().unwrap();
    let (ready_rx, ready_tx) = Pipe::new::<u32>().unwrap();
    let mut holder = Process::new(hold_until_killed, (lock.clone(), ready_tx)).daemon(true);
    holder.start().unwrap();
    let holder_pid = ready_rx.recv().unwrap();
    assert_eq!(Some(holder_pid), holder.pid());

    // A process already asleep on the lock when the holder dies.
    let mut waiter = Process::new(acquire, lock.clone());
    waiter.start().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(waiter.is_alive(), "the waiter is still waiting");

    holder.kill().unwrap();
    let killed = Instant::now();
    let (died, _) = waiter.join().unwrap();
    assert!(died, "the waiter is told the previous owner died");
    assert!(killed.elapsed() < Duration::from_secs(1), "took over after {:?}", killed.elapsed());
    assert!(matches!(holder.join(), Err(Error::WorkerDied { exit: Exit::Signal(9), .. })));

    // The waiter released it normally on exit: an ordinary lock again.
    let guard = lock.lock_timeout(Duration::from_secs(1)).unwrap();
    assert!(!guard.previous_owner_died());
}

#[mp::test]
fn holder_sigkilled_then_the_parent_takes_over() {
    let lock = Lock::new().unwrap();
    let (ready_rx, ready_tx) = Pipe::new::<u32>().unwrap();
    let mut holder = Process::new(hold_until_killed, (lock.clone(), ready_tx)).daemon(true);
    holder.start().unwrap();
    ready_rx.recv().unwrap();
    assert!(lock.try_lock().unwrap().is_none(), "a live holder keeps it");

    holder.kill().unwrap();
    let killed = Instant::now();
    let guard = lock.lock_timeout(Duration::from_secs(10)).expect("a dead holder's lock is taken over");
    assert!(killed.elapsed() < Duration::from_secs(1), "took over after {:?}", killed.elapsed());
    assert!(guard.previous_owner_died());
    drop(guard);
    let guard = lock.try_lock().unwrap().expect("released");
    assert!(!guard.previous_owner_died(), "only the takeover reports the death");
}

#[mp::test]
fn holder_sigkilled_then_try_lock_and_a_new_process_take_over() {
    let lock = Lock::new().unwrap();
    let (ready_rx, ready_tx) = Pipe::new::<u32>().unwrap();
    let mut holder = Process::new(hold_until_killed, (lock.clone(), ready_tx)).daemon(true);
    holder.start().unwrap();
    let pid = ready_rx.recv().unwrap();
    holder.kill().unwrap();
    assert!(wait_gone(pid, Duration::from_secs(5)));

    // A process started after the death takes it over at once.
    let mut late = Process::new(acquire, lock.clone());
    late.start().unwrap();
    let (died, waited_ms) = late.join().unwrap();
    assert!(died && waited_ms < 1000, "died={died}, waited {waited_ms} ms");

    // And try_lock, too, never reports a lock held by the dead.
    let (ready_rx, ready_tx) = Pipe::new::<u32>().unwrap();
    let mut holder = Process::new(hold_until_killed, (lock.clone(), ready_tx)).daemon(true);
    holder.start().unwrap();
    let pid = ready_rx.recv().unwrap();
    holder.kill().unwrap();
    assert!(wait_gone(pid, Duration::from_secs(5)));
    let guard = lock.try_lock().unwrap().expect("a dead holder's lock is free");
    assert!(guard.previous_owner_died());
}

#[mp::test]
fn lock_passed_through_a_connection() {
    let lock = Lock::new().unwrap();
    let (ours, theirs) = Pipe::new::<Lock>().unwrap();
    let mut p = Process::new(lock_from_connection, theirs);
    p.start().unwrap();
    let guard = lock.lock().unwrap();
    ours.send(lock.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(guard);
    let (was_free, waited_ms) = p.join().unwrap();
    assert!(!was_free, "the child's copy is the same lock, held by the parent");
    assert!((150..5000).contains(&waited_ms), "the child waited {waited_ms} ms for the release");
}

#[mp::test]
fn shared_memory_descriptors_are_not_inherited_and_not_leaked() {
    let lock = Lock::new().unwrap();
    drop(lock.lock().unwrap());
    let mut p = Process::new(count_memfds, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0, "a child is not handed locks it was not given");
    let mut p = Process::new(count_memfds_holding, lock.clone());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 1, "a lock passed as an argument is one descriptor");

    let mut p = Process::new(churn_locks, ());
    p.start().unwrap();
    let (before, after) = p.join().unwrap();
    assert_eq!(before, after, "(memfds, descriptors) before and after 200 locks");
}

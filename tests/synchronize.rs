//! `mp::RLock`, `Semaphore`, `BoundedSemaphore`, `Event`, `Condition` and `Barrier` across
//! processes, with Python's semantics: re-entrancy and non-owner release, counts and timeouts,
//! over-release, set / wait / clear, notify(n) / notify_all / wait_for, barrier passes in
//! lockstep, abort, reset and timeouts, and an RLock holder, a semaphore holder or a barrier
//! party SIGKILLed while holding or waiting.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::wait_gone;
use mp::{
    Barrier, BoundedSemaphore, Condition, Connection, Error, Event, Lock, Pipe, Process, RLock, RawValue,
    Semaphore, Value,
};

// ---------------------------------------------------------------------------------------------
// Workers

/// What a process that does not hold `rlock` sees: (try_lock succeeded, release refused as
/// Invalid, recursion_count).
#[mp::worker]
fn rlock_outsider(rlock: RLock) -> (bool, bool, u32) {
    let got = rlock.try_lock().unwrap().is_some();
    let refused = matches!(rlock.release(), Err(Error::Invalid(_)));
    (got, refused, rlock.recursion_count())
}

/// Takes `rlock` `depth` times in this process, reports, and sleeps until killed.
#[mp::worker]
fn rlock_hold_until_killed(rlock: RLock, depth: u32, ready: Connection<u32>) {
    for _ in 0..depth {
        rlock.lock().unwrap().keep();
    }
    ready.send(rlock.recursion_count()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Takes `rlock` (within 10 s): (previous owner died, recursion count, ms waited).
#[mp::worker]
fn rlock_acquire(rlock: RLock) -> (bool, u32, u64) {
    let start = Instant::now();
    let g = rlock.lock_timeout(Duration::from_secs(10)).expect("acquired within 10 s");
    let inner = rlock.lock().unwrap();
    let count = rlock.recursion_count();
    drop(inner);
    (g.previous_owner_died(), count, start.elapsed().as_millis() as u64)
}

/// Takes a unit and keeps it: true if one was there within `ms`.
#[mp::worker]
fn sem_take(sem: Semaphore, ms: u64) -> bool {
    match sem.acquire_timeout(Duration::from_millis(ms)) {
        Ok(g) => {
            g.keep();
            true
        }
        Err(Error::Timeout { .. }) => false,
        Err(e) => panic!("unexpected {e}"),
    }
}

/// Waits for a unit (up to 10 s) and returns how long that took in ms.
#[mp::worker]
fn sem_wait_ms(sem: Semaphore) -> u64 {
    let start = Instant::now();
    sem.acquire_timeout(Duration::from_secs(10)).expect("a unit within 10 s").keep();
    start.elapsed().as_millis() as u64
}

/// Holds `n` units of `sem` through guards, reports the value left, and sleeps until killed.
#[mp::worker]
fn sem_hold_until_killed(sem: Semaphore, n: u32, ready: Connection<u32>) {
    let _units: Vec<_> = (0..n).map(|_| sem.acquire().unwrap()).collect();
    ready.send(sem.value()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// As `sem_hold_until_killed`, for a bounded semaphore.
#[mp::worker]
fn bounded_hold_until_killed(sem: BoundedSemaphore, n: u32, ready: Connection<u32>) {
    let _units: Vec<_> = (0..n).map(|_| sem.acquire().unwrap()).collect();
    ready.send(sem.value()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Takes a unit (within 10 s) and keeps it: whether it came from a dead holder.
#[mp::worker]
fn bounded_take(sem: BoundedSemaphore) -> bool {
    let unit = sem.acquire_timeout(Duration::from_secs(10)).expect("a unit within 10 s");
    let died = unit.previous_owner_died();
    unit.keep();
    died
}

#[mp::worker]
fn sem_release(sem: Semaphore, n: u32) {
    for _ in 0..n {
        sem.release().unwrap();
    }
}

/// `rounds` times: takes a unit, counts itself in `inside` (recording the most seen in
/// `most`), lingers, counts itself out.
#[mp::worker]
fn sem_occupy(sem: Semaphore, inside: Value<u32>, most: Value<u32>, rounds: u32) {
    for _ in 0..rounds {
        let _unit = sem.acquire_timeout(Duration::from_secs(10)).expect("a unit within 10 s");
        let now = inside.with_lock(|v| {
            *v += 1;
            *v
        });
        most.with_lock(|m| *m = (*m).max(now.unwrap())).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        inside.with_lock(|v| *v -= 1).unwrap();
    }
}

/// Releases a bounded semaphore once: Ok, or the error's message.
#[mp::worker]
fn bounded_release(sem: BoundedSemaphore) -> Result<(), String> {
    sem.release().map_err(|e| match e {
        Error::Invalid(m) => m,
        e => panic!("unexpected {e}"),
    })
}

/// Waits for `event` up to `ms`: (set in time, the value `data` then holds).
#[mp::worker]
fn event_wait(event: Event, data: RawValue<u64>, ms: u64) -> (bool, u64) {
    let ok = match event.wait_timeout(Duration::from_millis(ms)) {
        Ok(()) => true,
        Err(Error::Timeout { .. }) => false,
        Err(e) => panic!("unexpected {e}"),
    };
    (ok, data.get())
}

#[mp::worker]
fn event_set(event: Event, data: RawValue<u64>, value: u64) {
    data.set(value);
    event.set();
}

#[mp::worker]
fn event_is_set(event: Event) -> bool {
    event.is_set()
}

/// Counts itself in `arrived` under the condition's lock, waits up to 10 s for a notify, then
/// counts itself in `woken`. True if notified.
#[mp::worker]
fn cond_waiter(cond: Condition, arrived: RawValue<u32>, woken: RawValue<u32>) -> bool {
    let mut g = cond.lock().unwrap();
    arrived.set(arrived.get() + 1);
    let notified = match g.wait_timeout(Duration::from_secs(10)) {
        Ok(()) => true,
        Err(Error::Timeout { .. }) => false,
        Err(e) => panic!("unexpected {e}"),
    };
    woken.set(woken.get() + 1);
    notified
}

/// Raises `value` to 1..=`n`, notifying all after each step.
#[mp::worker]
fn cond_count_up(cond: Condition, value: RawValue<u32>, n: u32) {
    for i in 1..=n {
        let g = cond.lock().unwrap();
        value.set(i);
        g.notify_all();
        drop(g);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[mp::worker]
fn lock_is_free(lock: Lock) -> bool {
    lock.try_lock().unwrap().is_some()
}

/// Runs once per barrier pass, in the process of the last party to arrive.
static ACTIONS_HERE: AtomicU32 = AtomicU32::new(0);

#[mp::worker]
fn count_pass() {
    ACTIONS_HERE.fetch_add(1, Ordering::Relaxed);
}

/// `passes` barrier passes. Each pass: count the arrival, wait, check that everyone (and no
/// one twice) arrived. Returns (times index 0, sum of indices, actions run here, lockstep
/// violations).
#[mp::worker]
fn barrier_passes(barrier: Barrier, arrivals: Value<u64>, passes: u64) -> (u32, u64, u32, u32) {
    let parties = u64::from(barrier.parties());
    let (mut zeros, mut sum, mut violations) = (0, 0, 0);
    for i in 0..passes {
        arrivals.with_lock(|a| *a += 1).unwrap();
        let index = barrier.wait_timeout(Duration::from_secs(20)).unwrap();
        zeros += u32::from(index == 0);
        sum += u64::from(index);
        // All of pass i arrived; of pass i + 1, at most the others.
        let a = arrivals.get();
        if a < parties * (i + 1) || a > parties * (i + 2) - 1 {
            violations += 1;
        }
    }
    (zeros, sum, ACTIONS_HERE.load(Ordering::Relaxed), violations)
}

/// Waits at the barrier up to `ms`: Ok(index), or "broken" / "timeout".
#[mp::worker]
fn barrier_wait(barrier: Barrier, ms: u64) -> Result<u32, String> {
    barrier.wait_timeout(Duration::from_millis(ms)).map_err(|e| match e {
        Error::BrokenBarrier => "broken".to_string(),
        Error::Timeout { .. } => "timeout".to_string(),
        e => panic!("unexpected {e}"),
    })
}

// ---------------------------------------------------------------------------------------------
// Tests

#[mp::test]
fn smoke() {
    let rlock = RLock::new().unwrap();
    let a = rlock.lock().unwrap();
    let b = rlock.try_lock().unwrap().expect("re-entry");
    assert_eq!(rlock.recursion_count(), 2);
    drop((b, a));
    assert!(!rlock.is_owned());
    assert!(matches!(rlock.release(), Err(Error::Invalid(_))));

    let sem = Semaphore::new(2).unwrap();
    let u1 = sem.acquire().unwrap();
    let u2 = sem.try_acquire().expect("second unit");
    assert!(sem.try_acquire().is_none());
    assert_eq!(sem.value(), 0);
    drop((u1, u2));
    assert_eq!(sem.value(), 2);
    sem.release().unwrap();
    assert_eq!(sem.value(), 3, "a plain semaphore may grow");

    let bounded = BoundedSemaphore::new(1).unwrap();
    bounded.acquire().unwrap().keep();
    bounded.release().unwrap();
    assert!(matches!(bounded.release(), Err(Error::Invalid(_))));
    assert_eq!(bounded.value(), 1);

    let event = Event::new().unwrap();
    assert!(!event.is_set());
    event.set();
    assert!(event.is_set());
    event.wait().unwrap();
    event.clear();
    assert!(matches!(event.wait_timeout(Duration::from_millis(5)), Err(Error::Timeout { .. })));

    for text in [format!("{rlock:?}"), format!("{sem:?}"), format!("{bounded:?}"), format!("{event:?}")] {
        assert!(!text.is_empty());
    }
    assert!(format!("{bounded:?}").contains("bound: 1"), "{bounded:?}");
}

#[mp::test]
fn rlock_reentrancy_and_non_owner_release_across_processes() {
    let rlock = RLock::new().unwrap();
    let outer = rlock.lock().unwrap();
    let inner = rlock.lock().unwrap();
    assert_eq!(rlock.recursion_count(), 2);

    let outsider = |rlock: &RLock| {
        let mut p = Process::new(rlock_outsider, rlock.clone());
        p.start().unwrap();
        p.join().unwrap()
    };
    assert_eq!(outsider(&rlock), (false, true, 0), "held twice by the parent");
    assert_eq!(rlock.recursion_count(), 2, "the child's refused release changed nothing");
    drop(inner);
    assert_eq!(outsider(&rlock), (false, true, 0), "still held once");
    drop(outer);
    assert_eq!(rlock.recursion_count(), 0);
    // Free now: the child takes it (and its guard gives it back), and its extra release is
    // still refused since it no longer holds it.
    assert_eq!(outsider(&rlock), (true, true, 0));
    assert!(rlock.try_lock().unwrap().is_some(), "the child gave it back");
}

#[mp::test]
fn rlock_is_owned_by_a_thread() {
    let rlock = RLock::new().unwrap();
    let g = rlock.lock().unwrap();
    std::thread::scope(|s| {
        let other = s
            .spawn(|| {
                let refused = matches!(rlock.release(), Err(Error::Invalid(_)));
                let timed_out =
                    matches!(rlock.lock_timeout(Duration::from_millis(50)), Err(Error::Timeout { .. }));
                (rlock.try_lock().unwrap().is_none(), refused, timed_out, rlock.is_owned())
            })
            .join()
            .unwrap();
        assert_eq!(other, (true, true, true, false));
    });
    assert_eq!(rlock.recursion_count(), 1);
    drop(g);
    std::thread::scope(|s| {
        assert!(s.spawn(|| rlock.try_lock().unwrap().is_some()).join().unwrap());
    });
}

#[mp::test]
fn rlock_waiter_gets_it_after_the_last_level() {
    let rlock = RLock::new().unwrap();
    let a = rlock.lock().unwrap();
    let b = rlock.lock().unwrap();
    let mut p = Process::new(rlock_acquire, rlock.clone());
    p.start().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(b);
    std::thread::sleep(Duration::from_millis(200));
    assert!(p.is_alive(), "one level is still held");
    drop(a);
    let (died, count, waited) = p.join().unwrap();
    assert!(!died);
    assert_eq!(count, 2, "the child re-entered once");
    assert!((350..5000).contains(&waited), "waited {waited} ms");
}

#[mp::test]
fn rlock_holder_sigkilled_then_taken_over() {
    let rlock = RLock::new().unwrap();
    let (rx, tx) = Pipe::new::<u32>().unwrap();
    let mut holder = Process::new(rlock_hold_until_killed, (rlock.clone(), 3, tx)).daemon(true);
    holder.start().unwrap();
    assert_eq!(rx.recv().unwrap(), 3, "the holder took it three times");
    assert!(rlock.try_lock().unwrap().is_none());

    let mut waiter = Process::new(rlock_acquire, rlock.clone());
    waiter.start().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = holder.pid().unwrap();
    holder.kill().unwrap();
    let killed = Instant::now();
    let (died, count, _) = waiter.join().unwrap();
    assert!(died, "the waiter is told the previous owner died");
    assert_eq!(count, 2, "a fresh count after the takeover, not the dead holder's 3");
    assert!(killed.elapsed() < Duration::from_secs(2), "took over after {:?}", killed.elapsed());
    assert!(wait_gone(pid, Duration::from_secs(5)));

    let g = rlock.lock_timeout(Duration::from_secs(1)).unwrap();
    assert!(!g.previous_owner_died(), "an ordinary lock again");
    assert_eq!(rlock.recursion_count(), 1);
}

#[mp::test]
fn semaphore_counts_and_timeouts_across_processes() {
    let sem = Semaphore::new(3).unwrap();
    let take = |ms| {
        let mut p = Process::new(sem_take, (sem.clone(), ms));
        p.start().unwrap();
        p.join().unwrap()
    };
    for left in [2, 1, 0] {
        assert!(take(100));
        assert_eq!(sem.value(), left);
    }
    let start = Instant::now();
    assert!(!take(150), "no unit left");
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(sem.value(), 0);

    let start = Instant::now();
    match sem.acquire_timeout(Duration::from_millis(100)) {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(100)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(1), "{waited:?}");

    let mut p = Process::new(sem_release, (sem.clone(), 5));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(sem.value(), 5, "releases from another process count");
}

#[mp::test]
fn semaphore_release_wakes_waiting_processes() {
    let sem = Semaphore::new(0).unwrap();
    let mut waiters: Vec<_> = (0..3).map(|_| Process::new(sem_wait_ms, sem.clone())).collect();
    for p in &mut waiters {
        p.start().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(waiters.iter().all(|p| p.is_alive()), "all wait for a unit");
    for _ in 0..3 {
        sem.release().unwrap();
    }
    let released = Instant::now();
    for p in &mut waiters {
        let waited = p.join().unwrap();
        assert!(waited >= 200, "waited for the release, not {waited} ms");
    }
    assert!(released.elapsed() < Duration::from_millis(900), "woken after {:?}", released.elapsed());
    assert_eq!(sem.value(), 0, "each took exactly one");
}

#[mp::test]
fn semaphore_admits_at_most_its_value() {
    let sem = Semaphore::new(2).unwrap();
    let inside = Value::new(0u32).unwrap();
    let most = Value::new(0u32).unwrap();
    let mut workers: Vec<_> =
        (0..5).map(|_| Process::new(sem_occupy, (sem.clone(), inside.clone(), most.clone(), 30))).collect();
    for p in &mut workers {
        p.start().unwrap();
    }
    for p in &mut workers {
        p.join().unwrap();
    }
    assert_eq!(most.get(), 2, "two at a time, never more");
    assert_eq!((inside.get(), sem.value()), (0, 2));
}

#[mp::test]
fn semaphore_holder_sigkilled_units_given_back() {
    let sem = Semaphore::new(3).unwrap();
    let (rx, tx) = Pipe::new::<u32>().unwrap();
    let mut holder = Process::new(sem_hold_until_killed, (sem.clone(), 2, tx)).daemon(true);
    holder.start().unwrap();
    assert_eq!(rx.recv().unwrap(), 1, "the holder took 2 of 3");
    let pid = holder.pid().unwrap();
    holder.kill().unwrap();

    let units: Vec<_> =
        (0..3).map(|_| sem.acquire_timeout(Duration::from_secs(5)).expect("all 3 units come back")).collect();
    let died: Vec<bool> = units.iter().map(|u| u.previous_owner_died()).collect();
    assert_eq!(died.iter().filter(|d| **d).count(), 1, "one acquisition reports the dead holder: {died:?}");
    assert!(!died[0], "the free unit is an ordinary one");
    assert_eq!(sem.value(), 0);
    assert!(sem.try_acquire().is_none(), "nothing is given back twice");
    drop(units);
    assert_eq!(sem.value(), 3);
    assert!(wait_gone(pid, Duration::from_secs(5)));
}

#[mp::test]
fn semaphore_signals_from_exited_processes_are_not_given_back() {
    // Semaphore(0) as a signal: the releasing child exits, the parent gets exactly its units.
    let sem = Semaphore::new(0).unwrap();
    let mut signaller = Process::new(sem_release, (sem.clone(), 2));
    signaller.start().unwrap();
    signaller.join().unwrap();
    // A consumer that keeps a unit and exits: the unit was consumed, not held.
    let mut consumer = Process::new(sem_take, (sem.clone(), 5_000));
    consumer.start().unwrap();
    assert!(consumer.join().unwrap());
    let unit = sem.acquire_timeout(Duration::from_secs(5)).unwrap();
    assert!(!unit.previous_owner_died());
    unit.keep();
    assert!(sem.try_acquire().is_none(), "exactly the released units, none invented");
    assert!(matches!(sem.acquire_timeout(Duration::from_millis(150)), Err(Error::Timeout { .. })));
    assert_eq!(sem.value(), 0);
}

#[mp::test]
fn bounded_semaphore_reclaimed_once_and_within_its_bound() {
    let sem = BoundedSemaphore::new(2).unwrap();
    let (rx, tx) = Pipe::new::<u32>().unwrap();
    let mut holder = Process::new(bounded_hold_until_killed, (sem.clone(), 2, tx)).daemon(true);
    holder.start().unwrap();
    assert_eq!(rx.recv().unwrap(), 0);
    // Two waiters notice the death; the units are given back once between them.
    let mut waiters: Vec<_> = (0..2).map(|_| Process::new(bounded_take, sem.clone())).collect();
    for p in &mut waiters {
        p.start().unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    holder.kill().unwrap();
    let died: Vec<bool> = waiters.iter_mut().map(|p| p.join().unwrap()).collect();
    assert_eq!(died.iter().filter(|d| **d).count(), 1, "{died:?}");
    assert_eq!(sem.value(), 0, "each waiter kept one unit; none was counted twice");
    sem.release().unwrap();
    sem.release().unwrap();
    assert!(matches!(sem.release(), Err(Error::Invalid(_))), "the bound holds");
    assert_eq!(sem.value(), 2);
}

#[mp::test]
fn bounded_semaphore_over_release() {
    let sem = BoundedSemaphore::new(2).unwrap();
    let release_in_child = || {
        let mut p = Process::new(bounded_release, sem.clone());
        p.start().unwrap();
        p.join().unwrap()
    };
    let err = release_in_child().expect_err("at its bound");
    assert!(err.contains("released too many times"), "{err}");
    assert_eq!(sem.value(), 2);

    sem.acquire().unwrap().keep();
    sem.acquire().unwrap().keep();
    assert!(sem.try_acquire().is_none());
    assert_eq!(release_in_child(), Ok(()));
    assert_eq!(sem.value(), 1);
    sem.release().unwrap();
    assert!(matches!(sem.release(), Err(Error::Invalid(_))));
    assert_eq!(sem.value(), 2, "a refused release changes nothing");
    assert!(release_in_child().is_err());
}

#[mp::test]
fn event_set_wait_clear_across_processes() {
    let event = Event::new().unwrap();
    let data = RawValue::new(0u64).unwrap();
    let mut waiters: Vec<_> =
        (0..3).map(|_| Process::new(event_wait, (event.clone(), data.clone(), 10_000))).collect();
    for p in &mut waiters {
        p.start().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(waiters.iter().all(|p| p.is_alive()), "all wait for the event");

    let mut setter = Process::new(event_set, (event.clone(), data.clone(), 42));
    setter.start().unwrap();
    setter.join().unwrap();
    let set_at = Instant::now();
    for p in &mut waiters {
        assert_eq!(p.join().unwrap(), (true, 42), "woken, and the setter's write is visible");
    }
    assert!(set_at.elapsed() < Duration::from_millis(900));
    assert!(event.is_set());

    let mut p = Process::new(event_is_set, event.clone());
    p.start().unwrap();
    assert!(p.join().unwrap());
    event.clear();
    let mut p = Process::new(event_is_set, event.clone());
    p.start().unwrap();
    assert!(!p.join().unwrap(), "the clear is seen by other processes");

    let start = Instant::now();
    let mut p = Process::new(event_wait, (event.clone(), data.clone(), 150));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (false, 42), "a cleared event times out");
    assert!(start.elapsed() >= Duration::from_millis(150));

    event.set();
    let mut p = Process::new(event_wait, (event.clone(), data.clone(), 0));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (true, 42), "a set event returns at once");
}

#[mp::test]
fn event_set_then_clear_still_wakes_the_waiters() {
    let event = Event::new().unwrap();
    let data = RawValue::new(0u64).unwrap();
    let mut waiters: Vec<_> =
        (0..2).map(|_| Process::new(event_wait, (event.clone(), data.clone(), 10_000))).collect();
    for p in &mut waiters {
        p.start().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    data.set(7);
    event.set();
    event.clear();
    for p in &mut waiters {
        assert_eq!(p.join().unwrap(), (true, 7), "a waiter present at set() returns, as in Python");
    }
    assert!(!event.is_set());
}

/// Starts `n` `cond_waiter`s and returns once all of them wait (registered under the lock).
fn start_cond_waiters(cond: &Condition, n: u32, woken: &RawValue<u32>) -> Vec<Process<cond_waiter>> {
    let arrived = RawValue::new(0u32).unwrap();
    let mut waiters: Vec<_> =
        (0..n).map(|_| Process::new(cond_waiter, (cond.clone(), arrived.clone(), woken.clone()))).collect();
    for p in &mut waiters {
        p.start().unwrap();
    }
    let start = Instant::now();
    while arrived.get() < n {
        assert!(start.elapsed() < Duration::from_secs(10), "waiters did not arrive");
        std::thread::sleep(Duration::from_millis(5));
    }
    waiters
}

/// `woken` once it stops changing for a while.
fn settled(woken: &RawValue<u32>) -> u32 {
    std::thread::sleep(Duration::from_millis(300));
    woken.get()
}

#[mp::test]
fn condition_notify_n_and_notify_all_across_processes() {
    let cond = Condition::new().unwrap();
    let woken = RawValue::new(0u32).unwrap();
    let mut waiters = start_cond_waiters(&cond, 4, &woken);
    assert_eq!(settled(&woken), 0, "nobody wakes without a notify");
    cond.lock().unwrap().notify(1);
    assert_eq!(settled(&woken), 1, "notify(1) wakes exactly one");
    cond.lock().unwrap().notify(2);
    assert_eq!(settled(&woken), 3, "notify(2) wakes exactly two more");
    cond.lock().unwrap().notify_all();
    assert_eq!(settled(&woken), 4);
    for p in &mut waiters {
        assert!(p.join().unwrap(), "each was notified, none timed out");
    }
    // Notifications are not stored: a later waiter is not woken by an earlier notify.
    cond.lock().unwrap().notify_all();
    let mut g = cond.lock().unwrap();
    assert!(matches!(g.wait_timeout(Duration::from_millis(50)), Err(Error::Timeout { .. })));
}

#[mp::test]
fn condition_over_a_lock_and_wait_for() {
    let lock = Lock::new().unwrap();
    let cond = Condition::with_lock(lock.clone()).unwrap();
    let value = RawValue::new(0u32).unwrap();
    let mut g = cond.lock().unwrap();
    let mut p = Process::new(cond_count_up, (cond.clone(), value.clone(), 5));
    p.start().unwrap();
    let mut checks = 0;
    g.wait_for_timeout(
        || {
            checks += 1;
            value.get() == 5
        },
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(value.get(), 5);
    assert!(checks >= 2, "the predicate was re-checked after notifications ({checks})");

    // On timeout the lock is held again: another process finds it taken.
    let start = Instant::now();
    let r = g.wait_for_timeout(|| value.get() == 6, Duration::from_millis(100));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(start.elapsed() >= Duration::from_millis(100));
    let mut q = Process::new(lock_is_free, lock.clone());
    q.start().unwrap();
    assert!(!q.join().unwrap(), "the condition's lock is held after the wait");
    drop(g);
    p.join().unwrap();
    let mut q = Process::new(lock_is_free, lock.clone());
    q.start().unwrap();
    assert!(q.join().unwrap());
}

#[mp::test]
fn condition_wait_releases_every_rlock_level() {
    let rlock = RLock::new().unwrap();
    let cond = Condition::with_rlock(rlock.clone()).unwrap();
    let value = RawValue::new(0u32).unwrap();
    let outer = cond.lock().unwrap();
    let mut inner = cond.lock().unwrap();
    assert_eq!(rlock.recursion_count(), 2);
    let mut p = Process::new(cond_count_up, (cond.clone(), value.clone(), 1));
    p.start().unwrap();
    inner.wait_for_timeout(|| value.get() == 1, Duration::from_secs(10)).unwrap();
    assert_eq!(rlock.recursion_count(), 2, "both levels are held again");
    drop((inner, outer));
    assert!(!rlock.is_owned());
    p.join().unwrap();
}

#[mp::test]
fn barrier_5_processes_1000_passes_in_lockstep() {
    const PARTIES: u32 = 5;
    const PASSES: u64 = 1000;
    let barrier = Barrier::with_action(PARTIES, count_pass).unwrap();
    let arrivals = Value::new(0u64).unwrap();
    let mut ps: Vec<_> = (0..PARTIES)
        .map(|_| Process::new(barrier_passes, (barrier.clone(), arrivals.clone(), PASSES)))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    let (mut zeros, mut sum, mut actions, mut violations) = (0, 0, 0, 0);
    for p in &mut ps {
        let (z, s, a, v) = p.join().unwrap();
        zeros += z;
        sum += s;
        actions += a;
        violations += v;
    }
    assert_eq!(violations, 0, "a party ran ahead of the others");
    assert_eq!(zeros, PASSES as u32, "index 0 exactly once per pass");
    assert_eq!(sum, PASSES * (0..u64::from(PARTIES)).sum::<u64>(), "indices 0..5 once each per pass");
    assert_eq!(actions, PASSES as u32, "the action ran once per pass");
    assert_eq!(arrivals.get(), PASSES * u64::from(PARTIES));
    assert!(!barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
}

#[mp::test]
fn barrier_abort_and_reset() {
    let barrier = Barrier::new(3).unwrap();
    let start_two = |barrier: &Barrier| {
        let mut ps: Vec<_> = (0..2).map(|_| Process::new(barrier_wait, (barrier.clone(), 10_000))).collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        let start = Instant::now();
        while barrier.n_waiting() < 2 {
            assert!(start.elapsed() < Duration::from_secs(10), "parties did not arrive");
            std::thread::sleep(Duration::from_millis(5));
        }
        ps
    };

    // abort: the waiting parties and every later wait fail.
    let mut ps = start_two(&barrier);
    barrier.abort().unwrap();
    for p in &mut ps {
        assert_eq!(p.join().unwrap(), Err("broken".to_string()));
    }
    assert!(barrier.broken());
    assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));

    // reset: usable again, a full pass works.
    barrier.reset().unwrap();
    assert!(!barrier.broken());
    let mut ps = start_two(&barrier);
    let mut indices = vec![barrier.wait_timeout(Duration::from_secs(10)).unwrap()];
    for p in &mut ps {
        indices.push(p.join().unwrap().unwrap());
    }
    indices.sort();
    assert_eq!(indices, [0, 1, 2]);

    // reset while parties wait: they get BrokenBarrier, the barrier itself is not broken.
    let mut ps = start_two(&barrier);
    barrier.reset().unwrap();
    for p in &mut ps {
        assert_eq!(p.join().unwrap(), Err("broken".to_string()));
    }
    assert!(!barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
    let mut ps = start_two(&barrier);
    assert_eq!(barrier.wait().unwrap(), 2, "the parent arrived last");
    for p in &mut ps {
        assert!(p.join().unwrap().is_ok());
    }
}

#[mp::test]
fn barrier_timeout_breaks_it() {
    let barrier = Barrier::new(3).unwrap();
    let mut patient = Process::new(barrier_wait, (barrier.clone(), 10_000));
    patient.start().unwrap();
    while barrier.n_waiting() < 1 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = Instant::now();
    let mut hasty = Process::new(barrier_wait, (barrier.clone(), 200));
    hasty.start().unwrap();
    assert_eq!(hasty.join().unwrap(), Err("timeout".to_string()));
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(patient.join().unwrap(), Err("broken".to_string()), "the others see it broken");
    assert!(barrier.broken());
    assert!(matches!(barrier.wait_timeout(Duration::from_secs(1)), Err(Error::BrokenBarrier)));
    barrier.reset().unwrap();
    assert!(matches!(barrier.wait_timeout(Duration::from_millis(20)), Err(Error::Timeout { .. })));
}

#[mp::test]
fn barrier_party_killed_while_waiting_breaks_it() {
    let barrier = Barrier::new(3).unwrap();
    // Kill the first party to arrive, then (after a reset) the latest: each is watched by a
    // different live party.
    for killed in [0, 1] {
        let mut ps: Vec<_> =
            (0..2).map(|_| Process::new(barrier_wait, (barrier.clone(), 10_000)).daemon(true)).collect();
        for (i, p) in ps.iter_mut().enumerate() {
            p.start().unwrap();
            let start = Instant::now();
            while barrier.n_waiting() < i as u32 + 1 {
                assert!(start.elapsed() < Duration::from_secs(10), "party {i} did not arrive");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let pid = ps[killed].pid().unwrap();
        ps[killed].kill().unwrap();
        let mut survivor = ps.remove(1 - killed);
        assert_eq!(survivor.join().unwrap(), Err("broken".to_string()), "killed party {killed}");
        assert!(barrier.broken());
        assert!(wait_gone(pid, Duration::from_secs(5)));
        barrier.reset().unwrap();
    }
    // Usable again: a full pass.
    let mut ps: Vec<_> = (0..2).map(|_| Process::new(barrier_wait, (barrier.clone(), 10_000))).collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    barrier.wait_timeout(Duration::from_secs(10)).unwrap();
    for p in &mut ps {
        assert!(p.join().unwrap().is_ok());
    }
}

#[mp::worker]
fn explode() {
    panic!("the barrier action failed");
}

#[mp::test]
fn barrier_action_panic_breaks_it() {
    let barrier = Barrier::with_action(1, explode).unwrap();
    let r = std::panic::catch_unwind(|| barrier.wait());
    assert!(r.is_err(), "the panic continues in the party that ran the action");
    assert!(barrier.broken());
    assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));
    assert!(format!("{barrier:?}").contains("explode"), "{barrier:?}");
}

//! `mp::Value<T>` and `mp::RawValue<T>`: shared across processes, locked counters, arrays,
//! floats and wide integers, handles through a Connection, a holder killed mid-update.

mod common;

use std::time::{Duration, Instant};

use common::{StartLine, Starter};
use mp::{Connection, Pipe, Process, RawValue, Value};

/// A few microseconds of work inside a critical section: the window in which a broken lock
/// would let another process's update be lost.
fn dawdle() {
    for i in 0..1000 {
        std::hint::black_box(i);
    }
}

#[mp::worker]
fn add_with_lock(counter: Value<i64>, n: u32, line: StartLine) {
    line.wait();
    for _ in 0..n {
        counter
            .with_lock(|v| {
                dawdle();
                *v += 1;
            })
            .unwrap();
    }
}

#[mp::worker]
fn add_with_get_lock(counter: Value<i64>, n: u32, line: StartLine) {
    line.wait();
    for _ in 0..n {
        let _guard = counter.get_lock().lock().unwrap();
        let v = counter.get();
        dawdle();
        counter.set(v + 1);
    }
}

#[mp::worker]
fn add_with_guard(counter: Value<u64>, n: u32, line: StartLine) {
    line.wait();
    for _ in 0..n {
        let mut v = counter.lock().unwrap();
        dawdle();
        *v += 1;
    }
}

#[mp::worker]
fn add_to_each(array: Value<[i32; 4]>, n: u32, line: StartLine) {
    line.wait();
    for _ in 0..n {
        array
            .with_lock(|a| {
                dawdle();
                a.iter_mut().for_each(|x| *x += 1);
            })
            .unwrap();
    }
}

/// Reads what the parent stored, and stores new values.
#[mp::worker]
fn swap_values(f: Value<f64>, wide: RawValue<u128>, raw: RawValue<[u16; 3]>) -> (f64, u128, [u16; 3]) {
    let seen = (f.get(), wide.get(), raw.get());
    f.set(-0.5);
    wide.set(u128::MAX - 7);
    raw.set([7, 8, 9]);
    seen
}

#[mp::worker]
fn set_through_connection(conn: Connection<Value<i32>>) -> i32 {
    let v = conn.recv().unwrap();
    let before = v.get();
    v.set(before * 10);
    before
}

/// Takes the value's lock, writes half an update, tells the parent, and sleeps until killed.
#[mp::worker]
fn die_mid_update(v: Value<u32>, ready: Connection<()>) {
    let _guard = v.get_lock().lock().unwrap();
    v.set(13);
    ready.send(()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Changes the value through a guard, tells the parent, and sleeps until killed.
#[mp::worker]
fn die_in_guard(v: Value<u32>, ready: Connection<()>) {
    let mut guard = v.lock().unwrap();
    *guard = 99;
    ready.send(()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Starts `n` workers made by `make` (given their start line), starts them counting at the
/// same moment, and joins them.
fn race<W: mp::Worker<Output = ()>>(n: usize, make: impl Fn(StartLine) -> Process<W>) {
    let (starter, lines) = Starter::new(n);
    let mut workers: Vec<_> = lines.into_iter().map(make).collect();
    for p in &mut workers {
        p.start().unwrap();
    }
    starter.go();
    for p in &mut workers {
        p.join().unwrap();
    }
}

#[mp::test]
fn smoke() {
    let v = Value::new(5i64).unwrap();
    assert_eq!(v.get(), 5);
    v.set(7);
    assert_eq!(v.get(), 7);
    assert_eq!(v.with_lock(|x| std::mem::replace(x, 8)).unwrap(), 7);
    assert_eq!(v.get(), 8);
    {
        let mut g = v.lock().unwrap();
        *g *= 2;
        assert!(!g.previous_owner_died());
        assert!(v.get_lock().try_lock().unwrap().is_none(), "the guard holds the value's lock");
        assert!(matches!(v.lock_timeout(Duration::from_millis(20)), Err(mp::Error::Timeout { .. })));
    }
    assert_eq!(v.get(), 16);
    assert_eq!(format!("{v:?}"), "Value(16)");

    let raw = RawValue::new([1u8, 2]).unwrap();
    raw.set([3, 4]);
    assert_eq!(raw.get(), [3, 4]);
    let copy = raw.clone();
    copy.set([5, 6]);
    assert_eq!(raw.get(), [5, 6], "a clone is the same shared value");
}

#[mp::test]
fn counter_8_processes_x_1000_locked_increments() {
    let counter = Value::new(0i64).unwrap();
    race(8, |line| Process::new(add_with_lock, (counter.clone(), 1000, line)));
    assert_eq!(counter.get(), 8000);
}

#[mp::test]
fn counter_with_get_lock_and_with_the_guard() {
    let counter = Value::new(0i64).unwrap();
    race(4, |line| Process::new(add_with_get_lock, (counter.clone(), 1000, line)));
    assert_eq!(counter.get(), 4000);

    let counter = Value::new(0u64).unwrap();
    race(4, |line| Process::new(add_with_guard, (counter.clone(), 1000, line)));
    assert_eq!(counter.get(), 4000);
}

#[mp::test]
fn counter_from_threads_and_processes() {
    let counter = Value::new(0u64).unwrap();
    let (starter, mut lines) = Starter::new(1);
    let mut child = Process::new(add_with_guard, (counter.clone(), 5000, lines.remove(0)));
    child.start().unwrap();
    let gun = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                gun.wait();
                for _ in 0..5000 {
                    let mut v = counter.lock().unwrap();
                    dawdle();
                    *v += 1;
                }
            });
        }
        starter.go();
        gun.wait();
    });
    child.join().unwrap();
    assert_eq!(counter.get(), 15_000);
}

#[mp::test]
fn array_of_2000_in_each_element() {
    let array = Value::new([0i32; 4]).unwrap();
    race(2, |line| Process::new(add_to_each, (array.clone(), 1000, line)));
    assert_eq!(array.get(), [2000; 4]);
}

#[mp::test]
fn floats_wide_integers_and_raw_arrays_cross_processes() {
    let f = Value::new(1.25f64).unwrap();
    let wide = RawValue::new(u128::MAX / 3).unwrap();
    let raw = RawValue::new([1u16, 2, 3]).unwrap();
    let mut p = Process::new(swap_values, (f.clone(), wide.clone(), raw.clone()));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (1.25, u128::MAX / 3, [1, 2, 3]), "the child saw the parent's values");
    assert_eq!(
        (f.get(), wide.get(), raw.get()),
        (-0.5, u128::MAX - 7, [7, 8, 9]),
        "and the parent the child's"
    );
}

#[mp::test]
fn value_passed_through_a_connection() {
    let v = Value::new(4i32).unwrap();
    let (ours, theirs) = Pipe::new::<Value<i32>>().unwrap();
    let mut p = Process::new(set_through_connection, theirs);
    p.start().unwrap();
    ours.send(v.clone()).unwrap();
    assert_eq!(p.join().unwrap(), 4);
    assert_eq!(v.get(), 40);
}

#[mp::test]
fn holder_killed_mid_update_leaves_the_lock_usable_and_says_so() {
    let v = Value::new(0u32).unwrap();
    let (ready_rx, ready_tx) = Pipe::new::<()>().unwrap();
    let mut p = Process::new(die_mid_update, (v.clone(), ready_tx)).daemon(true);
    p.start().unwrap();
    ready_rx.recv().unwrap();
    p.kill().unwrap();
    let killed = Instant::now();
    let g = v.lock_timeout(Duration::from_secs(10)).expect("a dead holder's lock is taken over");
    assert!(killed.elapsed() < Duration::from_secs(1), "took over after {:?}", killed.elapsed());
    assert!(g.previous_owner_died());
    assert_eq!(*g, 13, "what the dead holder wrote directly is there");
}

#[mp::test]
fn holder_killed_in_a_guard_never_wrote_back() {
    let v = Value::new(1u32).unwrap();
    let (ready_rx, ready_tx) = Pipe::new::<()>().unwrap();
    let mut p = Process::new(die_in_guard, (v.clone(), ready_tx)).daemon(true);
    p.start().unwrap();
    ready_rx.recv().unwrap();
    p.kill().unwrap();
    let g = v.lock_timeout(Duration::from_secs(10)).expect("a dead holder's lock is taken over");
    assert!(g.previous_owner_died());
    assert_eq!(*g, 1, "a guard writes back only when it drops");
}

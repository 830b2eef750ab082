//! Synchronization benchmarks: uncontended acquire+release pairs of `Lock`, `RLock` and
//! `Semaphore`, and 2 processes x 10^5 locked increments of a `Value`, next to `std::sync::Mutex`
//! (the in-process floor) and CPython's `multiprocessing` in the same run.
//!
//! ```text
//! cargo bench --bench synchronize
//! ```
//!
//! Prints a table of medians and the ratios the targets are stated in (Lock pair under 30 ns;
//! the contended counter at least 10x CPython). `MP_BENCH_NO_PYTHON=1` skips the CPython rows.
//! The binary is its own worker: `mp::init()` comes first.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{median, python_rows};

/// Acquire+release pairs per timed run.
const PAIRS: u32 = 1_000_000;
const PAIR_RUNS: usize = 7;
/// Increments per process in the counter race.
const INCREMENTS: u64 = 100_000;
const COUNTER_RUNS: usize = 5;

/// `n` locked increments of `value`; with a barrier, meets the parent before and after.
#[mp::worker]
fn increment(value: mp::Value<i64>, n: u64, barrier: Option<mp::Barrier>) {
    if let Some(b) = &barrier {
        b.wait().unwrap();
    }
    for _ in 0..n {
        value.with_lock(|v| *v += 1).unwrap();
    }
    if let Some(b) = &barrier {
        b.wait().unwrap();
    }
}

/// The median seconds of one pair over `PAIR_RUNS` runs of `PAIRS`, after a warm-up run
/// (in `f64`: a `Duration` would round to whole nanoseconds).
fn per_pair(mut pair: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..=PAIR_RUNS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..PAIRS {
                pair();
            }
            t.elapsed().as_secs_f64() / f64::from(PAIRS)
        })
        .skip(1)
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// 2 processes x `INCREMENTS` increments: (start to both joined, first barrier to second).
fn counter_race() -> (Duration, Duration) {
    let race = |barrier: Option<mp::Barrier>| {
        let value = mp::Value::new(0i64).unwrap();
        let t = Instant::now();
        let mut ps: Vec<_> = (0..2)
            .map(|_| mp::Process::new(increment, (value.clone(), INCREMENTS, barrier.clone())))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        let mut loop_time = Duration::ZERO;
        if let Some(b) = &barrier {
            b.wait().unwrap();
            let t = Instant::now();
            b.wait().unwrap();
            loop_time = t.elapsed();
        }
        for p in &mut ps {
            p.join().unwrap();
        }
        let total = t.elapsed();
        assert_eq!(value.get(), 2 * INCREMENTS as i64, "lost updates");
        (total, loop_time)
    };
    race(None);
    let total = median((0..COUNTER_RUNS).map(|_| race(None).0).collect());
    let in_loop = median((0..COUNTER_RUNS).map(|_| race(Some(mp::Barrier::new(3).unwrap())).1).collect());
    (total, in_loop)
}

/// The same race between 2 threads on a `std::sync::Mutex`: the threads ceiling.
fn thread_race() -> Duration {
    let race = || {
        let value = Arc::new(Mutex::new(0i64));
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                let value = &value;
                s.spawn(move || {
                    for _ in 0..INCREMENTS {
                        *value.lock().unwrap() += 1;
                    }
                });
            }
        });
        t.elapsed()
    };
    race();
    median((0..COUNTER_RUNS).map(|_| race()).collect())
}

struct Table(Vec<[String; 4]>);

impl Table {
    fn row(&mut self, name: &str, value: String, vs: String, note: String) {
        self.0.push([name.to_string(), value, vs, note]);
    }
    fn print(&self) {
        println!("{:<40} {:>10} {:>22}  peer", "workload", "mp", "ratio");
        for [a, b, c, d] in &self.0 {
            println!("{a:<40} {b:>10} {c:>22}  {d}");
        }
    }
}

fn ns(secs: f64) -> String {
    format!("{:.1} ns", secs * 1e9)
}

fn ms(secs: f64) -> String {
    format!("{:.1} ms", secs * 1e3)
}

/// "`n`x CPython" and "CPython <t>", or dashes when the row was skipped.
fn vs_python(py: &HashMap<String, f64>, name: &str, ours: f64, show: fn(f64) -> String) -> (String, String) {
    match py.get(name) {
        Some(&s) => (format!("{:.1}x CPython", s / ours), format!("CPython {}", show(s))),
        None => ("-".into(), "CPython skipped".into()),
    }
}

fn main() {
    mp::init();
    println!("cargo bench --bench synchronize   ({} CPUs)\n", mp::cpu_count());
    let py = python_rows("synchronize.py", &[PAIRS.to_string(), INCREMENTS.to_string()], "seconds");
    let mut t = Table(Vec::new());
    let mut verdicts = Vec::new();

    let lock = mp::Lock::new().unwrap();
    let mutex = Mutex::new(());
    let ours = per_pair(|| drop(black_box(&lock).lock().unwrap()));
    let floor = per_pair(|| drop(black_box(&mutex).lock().unwrap()));
    let (vs, peer) = vs_python(&py, "lock", ours, ns);
    t.row("Lock lock+unlock, uncontended", ns(ours), vs, format!("{peer}; std Mutex {}", ns(floor)));
    verdicts.push(format!(
        "Lock pair {} (target < 30 ns): {}",
        ns(ours),
        if ours < 30e-9 { "PASS" } else { "MISS" }
    ));

    let rlock = mp::RLock::new().unwrap();
    let ours = per_pair(|| drop(black_box(&rlock).lock().unwrap()));
    let (vs, peer) = vs_python(&py, "rlock", ours, ns);
    t.row("RLock lock+unlock, uncontended", ns(ours), vs, peer);

    let sem = mp::Semaphore::new(1).unwrap();
    let ours = per_pair(|| drop(black_box(&sem).acquire().unwrap()));
    let (vs, peer) = vs_python(&py, "semaphore", ours, ns);
    t.row("Semaphore acquire+release, uncontended", ns(ours), vs, peer);

    let (total, in_loop) = counter_race();
    let (total, in_loop, threads) = (total.as_secs_f64(), in_loop.as_secs_f64(), thread_race().as_secs_f64());
    let (vs, peer) = vs_python(&py, "counter_total", total, ms);
    t.row("2 procs x 10^5 locked Value += 1, total", ms(total), vs.clone(), format!("{peer} (fork)"));
    verdicts.push(format!("counter with spawn+join {} vs CPython: {vs} (target >= 10x)", ms(total)));
    let (vs, peer) = vs_python(&py, "counter_loop", in_loop, ms);
    t.row(
        "same, increments only (spawn excluded)",
        ms(in_loop),
        vs.clone(),
        format!("{peer}; 2 threads on a std Mutex {}", ms(threads)),
    );
    verdicts.push(format!("counter loop {} vs CPython: {vs} (target >= 10x)", ms(in_loop)));

    println!();
    t.print();
    println!();
    for v in verdicts {
        println!("{v}");
    }
}

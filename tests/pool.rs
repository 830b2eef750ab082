//! `mp::Pool` and `par_map`: order, laziness, per-task failures, crashes, limits, cleanup.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::wait_gone;
use mp::prelude::*;
use mp::{Error, Exit, Pool};

#[mp::worker]
fn square(x: i32) -> i32 {
    x * x
}

#[mp::worker]
fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[mp::worker]
fn panic_on_3(x: i32) -> i32 {
    if x == 3 {
        panic!("item three is bad");
    }
    x
}

#[mp::worker]
fn my_pid(_x: u32) -> u32 {
    std::process::id()
}

#[mp::worker]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Item 3 announces its pid in `dir` and then hangs until killed.
#[mp::worker]
fn hang_on_3(x: u32, dir: String) -> u32 {
    if x == 3 {
        std::fs::write(PathBuf::from(&dir).join("pid.tmp"), std::process::id().to_string()).unwrap();
        std::fs::rename(PathBuf::from(&dir).join("pid.tmp"), PathBuf::from(&dir).join("pid")).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_millis(20));
    x * 2
}

#[mp::worker]
fn crash(how: String) -> u8 {
    match how.as_str() {
        "segv" => {
            // What a bad pointer in C code does to the process: SIGSEGV. Raised twice: the
            // first one only makes Rust's stack-overflow handler step aside.
            let me = rustix::process::getpid();
            for _ in 0..2 {
                let _ = rustix::process::kill_process(me, rustix::process::Signal::SEGV);
                std::thread::sleep(Duration::from_millis(100));
            }
            0
        }
        "stack" => {
            fn deep(n: u64) -> u64 {
                let pad = std::hint::black_box([n; 64]);
                if n == 0 { pad[1] } else { deep(n - 1) + pad[0] }
            }
            deep(std::hint::black_box(u64::MAX)) as u8
        }
        "abort" => std::process::abort(),
        "exit" => std::process::exit(7),
        "oom" => {
            let v = vec![1u8; 4 << 30];
            v[v.len() - 1]
        }
        _ => 1,
    }
}

#[mp::worker]
fn record_init(dir: String) {
    std::fs::write(PathBuf::from(dir).join(std::process::id().to_string()), b"init").unwrap();
}

#[mp::worker]
fn init_panics() {
    panic!("initializer refuses")
}

#[mp::worker]
fn echo_on(c: mp::Connection<u32>, x: u32) -> u32 {
    c.send(x + 100).unwrap();
    x
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mp-pool-{tag}-{}-{:?}", std::process::id(), Instant::now()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn worker_pids(pool: &Pool) -> Vec<u32> {
    pool.stats().workers.iter().map(|w| w.pid).collect()
}

#[mp::test]
fn smoke() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(square, 0..10).unwrap(), (0..10).map(|x| x * x).collect::<Vec<_>>());
}

#[mp::test]
fn map_keeps_order_for_every_chunk_size() {
    let pool = Pool::new(2).unwrap();
    let expected: Vec<i32> = (0..1000).map(|x| x * x).collect();
    assert_eq!(pool.map_chunked(square, 0..1000, 1).unwrap(), expected);
    assert_eq!(pool.map_chunked(square, 0..1000, 7).unwrap(), expected);
    assert_eq!(pool.map(square, 0..1000).unwrap(), expected);
    let lazy: Vec<i32> = pool.imap_chunked(square, 0..1000, 7).unwrap().map(Result::unwrap).collect();
    assert_eq!(lazy, expected);
    let mut unordered: Vec<i32> = pool.imap_unordered(square, 0..1000).unwrap().map(Result::unwrap).collect();
    unordered.sort();
    assert_eq!(unordered, expected);
}

#[mp::test]
fn starmap_and_apply() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)]).unwrap(), vec![3, 7]);
    assert_eq!(pool.apply(add, (20, 22)).unwrap(), 42);
    let r = pool.map_async(square, vec![3, 4]).unwrap();
    assert_eq!(r.get().unwrap(), vec![9, 16]);
}

#[mp::test]
fn empty_input_for_every_method() {
    let pool = Pool::new(1).unwrap();
    assert!(pool.map(square, Vec::new()).unwrap().is_empty());
    assert!(pool.map_chunked(square, Vec::new(), 3).unwrap().is_empty());
    assert!(pool.starmap(add, Vec::new()).unwrap().is_empty());
    assert!(pool.map_async(square, Vec::new()).unwrap().get().unwrap().is_empty());
    assert_eq!(pool.imap(square, Vec::new()).unwrap().count(), 0);
    assert_eq!(pool.imap_unordered(square, Vec::new()).unwrap().count(), 0);
    assert!(square.par_map(Vec::new()).unwrap().is_empty());
    assert!(square.par_map_unordered(Vec::new()).unwrap().is_empty());
}

#[mp::test]
fn imap_over_an_endless_iterator() {
    let pool = Pool::new(2).unwrap();
    let first: Vec<i32> = pool.imap(square, 0..).unwrap().take(100).map(Result::unwrap).collect();
    assert_eq!(first, (0..100).map(|x| x * x).collect::<Vec<_>>());
    // The input is pulled lazily: only a bounded window beyond what was taken was computed.
    assert!(pool.stats().tasks_completed < 100_000, "{:?}", pool.stats());
}

#[mp::test]
fn a_panic_is_that_items_error_and_the_pool_lives_on() {
    let pool = Pool::new(2).unwrap();
    match pool.map_chunked(panic_on_3, 0..6, 1) {
        Err(Error::Panic { index: Some(3), message, worker, .. }) => {
            assert_eq!(message, "item three is bad");
            assert!(worker.ends_with("::panic_on_3"));
        }
        other => panic!("expected a panic on input #3, got {other:?}"),
    }
    // The same with automatic chunks: still item 3, named.
    assert!(matches!(pool.map(panic_on_3, 0..6), Err(Error::Panic { index: Some(3), .. })));
    // Per-item results with imap: only item 3 failed.
    let results: Vec<_> = pool.imap(panic_on_3, 0..6).unwrap().collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_err(), i == 3, "item {i}: {r:?}");
    }
    assert_eq!(pool.map(square, 0..6).unwrap(), vec![0, 1, 4, 9, 16, 25]);
    assert_eq!(pool.stats().workers_respawned, 0, "a panic does not cost a worker");
}

#[mp::test]
fn a_worker_killed_mid_map_fails_only_its_task() {
    let pool = Pool::new(2).unwrap();
    let dir = tempdir("kill");
    let items: Vec<(u32, String)> = (0..12).map(|i| (i, dir.display().to_string())).collect();
    let mut it = pool.imap_chunked(hang_on_3, items, 1).unwrap();
    let pid_file = dir.join("pid");
    let t0 = Instant::now();
    while !pid_file.exists() {
        assert!(t0.elapsed() < Duration::from_secs(20), "item 3 never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let mut results = Vec::new();
    for r in it.by_ref() {
        results.push(r);
    }
    assert_eq!(results.len(), 12);
    for (i, r) in results.into_iter().enumerate() {
        match (i, r) {
            (3, Err(Error::WorkerDied { exit: Exit::Signal(9), index: Some(3), pid: dead, .. })) => {
                assert_eq!(dead, pid as u32)
            }
            (3, other) => panic!("item 3: expected WorkerDied(SIGKILL), got {other:?}"),
            (i, r) => assert_eq!(r.unwrap(), i as u32 * 2),
        }
    }
    assert!(wait_gone(pid as u32, Duration::from_secs(5)));
    assert_eq!(pool.stats().workers_respawned, 1);
    assert_eq!(pool.map(square, 0..4).unwrap(), vec![0, 1, 4, 9], "the pool keeps working");
    assert!(!worker_pids(&pool).contains(&(pid as u32)));
    std::fs::remove_dir_all(dir).unwrap();
}

#[mp::test]
fn segfault_abort_exit_each_fail_one_task() {
    let pool = Pool::new(2).unwrap();
    let cases = [
        ("segv", Exit::Signal(11)),
        ("abort", Exit::Signal(6)),
        ("exit", Exit::Code(7)),
        ("stack", Exit::Signal(6)), // Rust reports a stack overflow, then aborts
    ];
    for (how, expected) in cases {
        match pool.apply(crash, how.to_string()) {
            Err(Error::WorkerDied { exit, .. }) => assert_eq!(exit, expected, "{how}"),
            other => panic!("{how}: expected WorkerDied, got {other:?}"),
        }
    }
    // In a map, with automatic chunks: the crashing item is found and named; the rest complete.
    let items: Vec<String> = ["ok", "ok", "abort", "ok", "ok", "ok"].iter().map(|s| s.to_string()).collect();
    let results: Vec<_> = pool.imap(crash, items).unwrap().collect();
    for (i, r) in results.iter().enumerate() {
        if i == 2 {
            assert!(
                matches!(r, Err(Error::WorkerDied { exit: Exit::Signal(6), index: Some(2), .. })),
                "{r:?}"
            );
        } else {
            assert_eq!(r.as_ref().unwrap(), &1);
        }
    }
    assert_eq!(pool.map(square, 0..3).unwrap(), vec![0, 1, 4]);
}

#[mp::test]
fn max_memory_turns_an_oom_into_one_failed_task() {
    let pool = Pool::builder().processes(1).max_memory(512 << 20).build().unwrap();
    assert!(matches!(
        pool.apply(crash, "oom".to_string()),
        Err(Error::WorkerDied { exit: Exit::Signal(6), .. })
    ));
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
}

#[mp::test]
fn task_timeout_kills_a_sleeping_task() {
    let pool = Pool::builder().processes(2).task_timeout(Duration::from_millis(300)).build().unwrap();
    let t0 = Instant::now();
    let results: Vec<_> = pool.imap_chunked(sleep_ms, vec![10, 60_000, 10, 10], 1).unwrap().collect();
    assert!(t0.elapsed() < Duration::from_secs(10), "the timeout did not fire: {:?}", t0.elapsed());
    assert!(matches!(results[1], Err(Error::Timeout { .. })), "{:?}", results[1]);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    assert!(matches!(pool.apply(sleep_ms, 60_000), Err(Error::Timeout { .. })));
    assert_eq!(pool.apply(sleep_ms, 1).unwrap(), 1);
}

#[mp::test]
fn get_timeout_does_not_cancel() {
    let pool = Pool::new(1).unwrap();
    let mut r = pool.apply_async(sleep_ms, 300).unwrap();
    assert!(!r.ready());
    assert!(matches!(r.get_timeout(Duration::from_millis(10)), Err(Error::Timeout { .. })));
    assert_eq!(r.get_timeout(Duration::from_secs(20)).unwrap(), 300);
}

#[mp::test]
fn maxtasksperchild_replaces_workers() {
    let pool = Pool::builder().processes(1).maxtasksperchild(2).build().unwrap();
    let pids: HashSet<u32> = pool.map_chunked(my_pid, 0..6, 1).unwrap().into_iter().collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
}

#[mp::test]
fn a_small_map_spreads_over_every_worker() {
    // A deep prefetch (what the pool picks after short tasks) must not let the first worker
    // take a whole small map while the other waits.
    let pool = Pool::builder().processes(2).prefetch(8).build().unwrap();
    let warm: HashSet<u32> = pool.map_chunked(my_pid, 0..64, 1).unwrap().into_iter().collect();
    assert_eq!(warm.len(), 2, "both workers are up: {warm:?}");
    for _ in 0..5 {
        let pids: HashSet<u32> = pool.map_chunked(my_pid, 0..4, 1).unwrap().into_iter().collect();
        assert_eq!(pids.len(), 2, "4 tasks ran on {pids:?}");
    }
}

#[mp::test]
fn initializer_runs_once_per_worker() {
    let dir = tempdir("init");
    let pool =
        Pool::builder().processes(2).initializer(record_init, dir.display().to_string()).build().unwrap();
    let pids: HashSet<u32> = pool.map_chunked(my_pid, 0..50, 1).unwrap().into_iter().collect();
    let inited: HashSet<u32> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    assert_eq!(inited.len(), 2);
    assert!(pids.is_subset(&inited), "{pids:?} vs {inited:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[mp::test]
fn a_failing_initializer_fails_tasks_instead_of_hanging() {
    let pool = Pool::builder().processes(1).initializer(init_panics, ()).build().unwrap();
    match pool.apply(square, 2) {
        Err(Error::Panic { message, worker, .. }) => {
            assert_eq!(message, "initializer refuses");
            assert!(worker.ends_with("::init_panics"));
        }
        other => panic!("expected the initializer's panic, got {other:?}"),
    }
}

#[mp::test]
fn terminate_during_a_long_map_returns_promptly() {
    let pool = Pool::new(2).unwrap();
    let pids = worker_pids(&pool);
    let r = pool.map_async(sleep_ms, vec![30_000; 4]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    pool.terminate();
    assert!(t0.elapsed() < Duration::from_secs(3), "terminate took {:?}", t0.elapsed());
    assert!(matches!(r.get(), Err(Error::Closed { .. })));
    assert!(matches!(pool.map(square, 0..2), Err(Error::Closed { .. })));
    for pid in pids {
        assert!(wait_gone(pid, Duration::from_secs(2)), "worker {pid} survived terminate");
    }
}

#[mp::test]
fn close_then_join_finishes_queued_work() {
    let pool = Pool::new(2).unwrap();
    assert!(pool.join().is_err(), "join before close is refused");
    let r = pool.map_async(sleep_ms, vec![50; 4]).unwrap();
    pool.close();
    assert!(matches!(pool.apply(square, 1), Err(Error::Closed { .. })));
    pool.join().unwrap();
    assert_eq!(r.get().unwrap(), vec![50; 4]);
}

#[mp::test]
fn no_worker_left_after_drop() {
    let pool = Pool::new(3).unwrap();
    let pids = worker_pids(&pool);
    assert_eq!(pids.len(), 3);
    let _pending = pool.apply_async(sleep_ms, 30_000).unwrap();
    let t0 = Instant::now();
    drop(pool);
    assert!(t0.elapsed() < Duration::from_secs(3), "drop took {:?}", t0.elapsed());
    for pid in pids {
        assert!(wait_gone(pid, Duration::from_secs(2)), "worker {pid} left behind");
    }
}

#[mp::test]
fn bad_options_are_clear_errors() {
    let e = Pool::new(0).unwrap_err();
    assert!(e.to_string().contains("at least 1 process"), "{e}");
    let e = Pool::builder().maxtasksperchild(0).build().unwrap_err();
    assert!(e.to_string().contains("maxtasksperchild"), "{e}");
    let e = Pool::builder().task_timeout(Duration::ZERO).build().unwrap_err();
    assert!(e.to_string().contains("task_timeout"), "{e}");
    let pool = Pool::new(1).unwrap();
    assert!(pool.map_chunked(square, 0..3, 0).is_err());
}

#[mp::test]
fn handles_travel_as_pool_arguments() {
    let pool = Pool::new(2).unwrap();
    let (ours, theirs) = mp::Pipe::new::<u32>().unwrap();
    assert_eq!(pool.apply(echo_on, (theirs, 5)).unwrap(), 5);
    assert_eq!(ours.recv().unwrap(), 105);
}

#[mp::test]
fn a_pool_first_used_from_a_short_lived_thread_keeps_its_workers() {
    let pool = std::thread::spawn(|| {
        let p = Pool::new(2).unwrap();
        p.map(square, 0..4).unwrap();
        p
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(pool.map(square, 0..4).unwrap(), vec![0, 1, 4, 9]);
    assert_eq!(pool.stats().workers_respawned, 0);
}

#[mp::test]
fn stats_count_tasks() {
    let pool = Pool::new(2).unwrap();
    pool.map_chunked(square, 0..10, 1).unwrap();
    let _ = pool.map_chunked(panic_on_3, 0..6, 1);
    let s = pool.stats();
    assert_eq!(s.tasks_completed, 15);
    assert_eq!(s.tasks_failed, 1);
    assert_eq!(s.workers.len(), 2);
    assert_eq!(s.workers.iter().map(|w| w.tasks).sum::<u64>(), 16);
}

#[mp::test]
fn par_map_on_the_default_pool() {
    assert_eq!(square.par_map(0..100).unwrap(), (0..100).map(|x| x * x).collect::<Vec<_>>());
    let v: Vec<i32> = square.par_imap(0..).unwrap().take(10).map(Result::unwrap).collect();
    assert_eq!(v, (0..10).map(|x| x * x).collect::<Vec<_>>());
}

#[cfg(feature = "progress")]
#[mp::test]
fn progress_bars_do_not_change_results() {
    let pool = Pool::builder().processes(2).progress(true).build().unwrap();
    assert_eq!(pool.map(square, 0..100).unwrap().len(), 100);
    assert_eq!(pool.imap(square, 0..).unwrap().take(10).count(), 10);
}

/// Records each run in `dir` (one file per run), then sleeps `ms` and, if asked, aborts.
#[mp::worker]
fn logged(dir: String, i: u32, ms: u64, abort: bool) -> u32 {
    let stamp = format!("{i}-{}-{:?}", std::process::id(), Instant::now());
    std::fs::write(PathBuf::from(&dir).join(stamp), b"").unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    if abort {
        std::process::abort();
    }
    i
}

fn runs_of(dir: &PathBuf, i: u32) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(&format!("{i}-")))
        .count()
}

#[mp::test]
fn a_long_hung_item_in_a_chunk_times_out_once_and_alone() {
    let pool = Pool::builder().processes(1).task_timeout(Duration::from_millis(500)).build().unwrap();
    let dir = tempdir("hang");
    let d = dir.display().to_string();
    let items: Vec<_> = [10, 10, 60_000, 10, 10]
        .iter()
        .enumerate()
        .map(|(i, &ms)| (d.clone(), i as u32, ms, false))
        .collect();
    let t0 = Instant::now();
    let results: Vec<_> = pool.imap_chunked(logged, items, 5).unwrap().collect();
    let took = t0.elapsed();
    assert!(matches!(results[2], Err(Error::Timeout { .. })), "{:?}", results[2]);
    for i in [0, 1, 3, 4] {
        assert_eq!(results[i].as_ref().unwrap(), &(i as u32));
    }
    assert_eq!(runs_of(&dir, 2), 1, "the hung item must not be run again");
    assert!(took < Duration::from_millis(1400), "one timeout, not two: {took:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[mp::test]
fn a_crash_in_a_long_item_is_not_run_again() {
    let pool = Pool::new(1).unwrap();
    let dir = tempdir("crash-once");
    let d = dir.display().to_string();
    let items: Vec<_> = (0..5).map(|i| (d.clone(), i, if i == 2 { 100 } else { 1 }, i == 2)).collect();
    let results: Vec<_> = pool.imap_chunked(logged, items, 5).unwrap().collect();
    assert!(
        matches!(results[2], Err(Error::WorkerDied { exit: Exit::Signal(6), index: Some(2), .. })),
        "{:?}",
        results[2]
    );
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    assert_eq!(runs_of(&dir, 2), 1, "an item that ran 100 ms before crashing is pinned, not retried");
    std::fs::remove_dir_all(dir).unwrap();
}

//! `mp::Process`: exit codes, results, errors, timeouts, signals, nesting.

mod common;

use std::time::{Duration, Instant};

use common::{assert_reaped, wait_gone};
use mp::{Error, Exit, Process};
use serde::{Deserialize, Serialize};

#[mp::worker]
fn square(x: i32) -> i32 {
    x * x
}

#[mp::worker]
fn add(a: i64, b: i64, c: i64) -> i64 {
    a + b + c
}

#[mp::worker]
fn nothing() {}

#[mp::worker]
fn exit_with(code: i32) {
    std::process::exit(code)
}

#[mp::worker]
fn panics(msg: String) -> u8 {
    panic!("{msg}")
}

#[mp::worker]
fn aborts() {
    std::process::abort()
}

#[mp::worker]
fn sleeps(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mp::worker]
fn who_am_i() -> (String, Option<(String, u32)>, u32) {
    let me = mp::current_process();
    let parent = mp::parent_process().map(|p| (p.name, p.pid));
    (me.name, parent, me.pid)
}

#[mp::worker]
fn nested(x: i32) -> (i32, u32) {
    let mut p = Process::new(square, x);
    p.start().expect("grandchild starts");
    let pid = p.pid().unwrap();
    (p.join().expect("grandchild answers"), pid)
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Point {
    x: f64,
    label: String,
}

#[mp::worker]
fn mirror(p: Point) -> Point {
    Point { x: -p.x, label: p.label.chars().rev().collect() }
}

#[derive(Serialize, Deserialize)]
struct Inner {
    a: u8,
}

#[derive(Serialize, Deserialize)]
struct Flattened {
    #[serde(flatten)]
    inner: Inner,
}

#[mp::worker]
fn takes_flattened(_f: Flattened) {}

#[mp::test]
fn smoke() {
    let mut p = Process::new(square, 7);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 49);
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert_reaped(p.pid().unwrap());
}

#[mp::test]
fn plain_call_still_works() {
    assert_eq!(square(5), 25);
    assert_eq!(add(1, 2, 3), 6);
    let f: fn(i32) -> i32 = *square;
    assert_eq!([1, 2].map(f), [1, 4]);
}

#[mp::test]
fn several_arguments_and_structs() {
    let mut p = Process::new(add, (1, 2, 39));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 42);

    let mut p = Process::new(mirror, Point { x: 1.5, label: "abc".into() });
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), Point { x: -1.5, label: "cba".into() });

    let mut p = Process::new(nothing, ());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

#[mp::test]
fn exit_code_from_std_process_exit() {
    let mut p = Process::new(exit_with, 3);
    p.start().unwrap();
    let pid = p.pid().unwrap();
    match p.join() {
        Err(Error::WorkerDied { exit: Exit::Code(3), pid: dead, worker, .. }) => {
            assert_eq!(dead, pid);
            assert!(worker.ends_with("::exit_with"), "{worker}");
        }
        other => panic!("expected WorkerDied(code 3), got {other:?}"),
    }
    assert_eq!(p.exitcode(), Some(3));
    assert_reaped(pid);
}

#[mp::test]
fn panic_comes_back_with_message_and_location() {
    let mut p = Process::new(panics, "boom at item 3".to_string());
    p.start().unwrap();
    match p.join() {
        Err(Error::Panic { worker, message, location, .. }) => {
            assert!(worker.ends_with("::panics"), "{worker}");
            assert_eq!(message, "boom at item 3");
            let location = location.expect("location");
            assert!(location.contains("process.rs"), "{location}");
        }
        other => panic!("expected Panic, got {other:?}"),
    }
    assert_eq!(p.exitcode(), Some(1), "a panicking child exits with 1, as Python's exception");
}

#[mp::test]
fn abort_is_signal_6() {
    let mut p = Process::new(aborts, ());
    p.start().unwrap();
    assert!(matches!(p.join(), Err(Error::WorkerDied { exit: Exit::Signal(6), .. })));
    assert_eq!(p.exitcode(), Some(-6));
}

#[mp::test]
fn terminate_is_minus_15_and_kill_minus_9() {
    let mut t = Process::new(sleeps, 30_000);
    let mut k = Process::new(sleeps, 30_000);
    t.start().unwrap();
    k.start().unwrap();
    assert!(t.is_alive() && k.is_alive());
    assert_eq!(t.exitcode(), None);
    t.terminate().unwrap();
    k.kill().unwrap();
    assert!(matches!(t.join(), Err(Error::WorkerDied { exit: Exit::Signal(15), .. })));
    assert!(matches!(k.join(), Err(Error::WorkerDied { exit: Exit::Signal(9), .. })));
    assert_eq!(t.exitcode(), Some(-15));
    assert_eq!(k.exitcode(), Some(-9));
    assert!(!t.is_alive());
}

#[mp::test]
fn join_timeout_leaves_the_child_running() {
    let mut p = Process::new(sleeps, 30_000);
    p.start().unwrap();
    let t0 = Instant::now();
    let e = p.join_timeout(Duration::from_millis(300)).unwrap_err();
    let waited = t0.elapsed();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(waited >= Duration::from_millis(300), "returned early: {waited:?}");
    assert!(waited < Duration::from_secs(5), "returned late: {waited:?}");
    assert!(p.is_alive());
    p.kill().unwrap();
    assert!(p.join().is_err());
    assert!(!p.is_alive());
}

#[mp::test]
fn join_timeout_returns_the_value_when_in_time() {
    let mut p = Process::new(sleeps, 10);
    p.start().unwrap();
    assert_eq!(p.join_timeout(Duration::from_secs(20)).unwrap(), 10);
}

#[mp::test]
fn misuse_is_a_clear_error() {
    let mut p = Process::new(square, 2);
    let e = p.join().unwrap_err();
    assert!(e.to_string().contains("before start"), "{e}");
    assert!(p.terminate().is_err());
    p.start().unwrap();
    let e = p.start().unwrap_err();
    assert!(e.to_string().contains("already started"), "{e}");
    assert_eq!(p.join().unwrap(), 4);
    let e = p.join().unwrap_err();
    assert!(e.to_string().contains("already joined"), "{e}");
}

#[mp::test]
fn names_and_parent() {
    let mut p = Process::new(who_am_i, ()).name("inspector");
    assert_eq!(p.get_name(), "inspector");
    p.start().unwrap();
    let child_pid = p.pid().unwrap();
    let (name, parent, pid) = p.join().unwrap();
    assert_eq!(name, "inspector");
    assert_eq!(pid, child_pid);
    assert_eq!(parent, Some(("MainProcess".to_string(), std::process::id())));
    assert_eq!(mp::current_process().name, "MainProcess");
    assert!(mp::parent_process().is_none());
}

#[mp::test]
fn default_names_count_up() {
    let a = Process::new(square, 1);
    let b = Process::new(square, 1);
    assert!(a.get_name().starts_with("Process-"));
    assert_ne!(a.get_name(), b.get_name());
}

#[mp::test]
fn active_children_lists_running_ones() {
    let mut p = Process::new(sleeps, 30_000).name("listed");
    p.start().unwrap();
    let pid = p.pid().unwrap();
    assert!(mp::active_children().iter().any(|c| c.pid == pid && c.name == "listed"));
    p.kill().unwrap();
    let _ = p.join();
    assert!(!mp::active_children().iter().any(|c| c.pid == pid));
}

#[mp::test]
fn nested_children_work() {
    let mut p = Process::new(nested, 9);
    p.start().unwrap();
    let (v, grandchild) = p.join().unwrap();
    assert_eq!(v, 81);
    assert!(wait_gone(grandchild, Duration::from_secs(5)), "grandchild {grandchild} left behind");
}

#[mp::test]
fn unencodable_argument_is_a_codec_error_before_spawning() {
    let mut p = Process::new(takes_flattened, Flattened { inner: Inner { a: 1 } });
    match p.start() {
        Err(Error::Codec { type_name, .. }) => {
            assert!(type_name.contains("Flattened"), "{type_name}")
        }
        other => panic!("expected a Codec error, got {other:?}"),
    }
    assert!(p.pid().is_none(), "no process may be started for an unencodable argument");
}

#[mp::test]
fn dropping_a_daemon_kills_it() {
    let mut p = Process::new(sleeps, 30_000).daemon(true);
    p.start().unwrap();
    let pid = p.pid().unwrap();
    drop(p);
    assert!(wait_gone(pid, Duration::from_secs(5)));
    assert_reaped(pid);
}

#[mp::test]
fn many_processes_in_parallel() {
    let mut ps: Vec<_> = (0..8).map(|i| Process::new(square, i)).collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    let out: Vec<i32> = ps.iter_mut().map(|p| p.join().unwrap()).collect();
    assert_eq!(out, (0..8).map(|i| i * i).collect::<Vec<_>>());
}

#[mp::test]
fn spawning_from_a_short_lived_thread_keeps_the_child() {
    // The parent-death signal is tied to the spawning thread: mp spawns from its own.
    let mut p = std::thread::spawn(|| {
        let mut p = Process::new(sleeps, 300);
        p.start().unwrap();
        p
    })
    .join()
    .unwrap();
    assert_eq!(p.join().unwrap(), 300);
}

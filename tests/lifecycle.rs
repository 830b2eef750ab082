//! Whole-program behaviour: what happens at exit, when the parent is SIGKILLed, without
//! `init()`, and that nothing leaks. This binary is its own driver and its own scenarios.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{is_gone, wait_gone};
use mp::{Error, Process};

mod common;

#[mp::worker]
fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[mp::worker]
fn touch_after(path: String, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(path, b"done").unwrap();
}

#[mp::worker]
fn panics() {
    panic!("with a backtrace")
}

#[mp::worker]
fn echo_once(c: mp::Connection<u32>) -> u32 {
    let v = c.recv().unwrap();
    c.send(v + 1).unwrap();
    v
}

fn scenario(name: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.arg(name);
    c
}

fn read_pids(line: &str) -> Vec<u32> {
    line.split_whitespace().filter_map(|w| w.parse().ok()).collect()
}

#[mp::main]
fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("scenario-exit") => {
            let marker = args.next().unwrap();
            let mut d = Process::new(sleep_ms, 60_000).daemon(true);
            let mut n = Process::new(touch_after, (marker, 500));
            d.start().unwrap();
            n.start().unwrap();
            println!("{} {}", d.pid().unwrap(), n.pid().unwrap());
            std::mem::forget((d, n)); // leave them to the exit hook, as a script would
        }
        Some("scenario-exit-without-guard") => {
            // std::process::exit skips #[mp::main]'s guard: the exit hook registered by
            // mp::init() must still join the non-daemon child.
            let marker = args.next().unwrap();
            let mut n = Process::new(touch_after, (marker, 300));
            n.start().unwrap();
            std::mem::forget(n);
            std::process::exit(0);
        }
        Some("scenario-slow-exit") => {
            let mut n = Process::new(sleep_ms, 3_500);
            n.start().unwrap();
            println!("{}", n.pid().unwrap());
            std::mem::forget(n);
        }
        Some("scenario-orphan") => {
            let mut p = Process::new(sleep_ms, 60_000);
            p.start().unwrap();
            println!("{}", p.pid().unwrap());
            std::thread::sleep(Duration::from_secs(60));
        }
        Some("scenario-backtrace") => {
            let mut p = Process::new(panics, ());
            p.start().unwrap();
            match p.join() {
                Err(Error::Panic { backtrace: Some(bt), message, .. }) => {
                    assert_eq!(message, "with a backtrace");
                    assert!(bt.contains("panics"), "{bt}");
                }
                other => panic!("expected a panic with a backtrace, got {other:?}"),
            }
        }
        Some(other) => panic!("unknown scenario {other}"),
        None => driver(),
    }
}

fn driver() {
    daemons_are_terminated_and_others_joined_at_exit();
    the_exit_hook_joins_without_the_guard();
    a_long_join_at_exit_names_the_child();
    a_sigkilled_parent_leaves_no_child();
    backtrace_when_rust_backtrace_is_set();
    no_descriptor_or_zombie_is_left();
    println!("lifecycle: ok");
}

fn daemons_are_terminated_and_others_joined_at_exit() {
    let dir = std::env::temp_dir().join(format!("mp-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("non-daemon-finished");
    let t0 = Instant::now();
    let out = scenario("scenario-exit").arg(&marker).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let pids = read_pids(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(pids.len(), 2, "{out:?}");
    assert!(t0.elapsed() >= Duration::from_millis(500), "exited before joining the non-daemon child");
    assert!(marker.exists(), "the non-daemon child was not allowed to finish");
    // A short join says nothing.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("waits for"), "{out:?}");
    assert!(wait_gone(pids[0], Duration::from_secs(2)), "daemon child {} survived its parent", pids[0]);
    assert!(wait_gone(pids[1], Duration::from_secs(2)));
    std::fs::remove_dir_all(&dir).unwrap();
    println!("  daemons terminated, non-daemons joined at exit");
}

fn the_exit_hook_joins_without_the_guard() {
    let dir = std::env::temp_dir().join(format!("mp-lifecycle-hook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("joined");
    let out = scenario("scenario-exit-without-guard").arg(&marker).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(marker.exists(), "the non-daemon child was killed instead of joined at exit");
    std::fs::remove_dir_all(&dir).unwrap();
    println!("  mp::init()'s exit hook joins non-daemon children even without #[mp::main]");
}

fn a_long_join_at_exit_names_the_child() {
    let out = scenario("scenario-slow-exit").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid = read_pids(&String::from_utf8_lossy(&out.stdout))[0];
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("waits for its child process") && err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains(".daemon(true)"), "{err}");
    println!("  a join at exit that takes a while says which child it waits for");
}

fn a_sigkilled_parent_leaves_no_child() {
    let mut parent = scenario("scenario-orphan").stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let child = read_pids(&line)[0];
    assert!(!is_gone(child));
    parent.kill().unwrap(); // SIGKILL: no exit hook runs
    parent.wait().unwrap();
    assert!(wait_gone(child, Duration::from_secs(3)), "child {child} outlived its SIGKILLed parent");
    println!("  a SIGKILLed parent leaves no child");
}

fn backtrace_when_rust_backtrace_is_set() {
    let out = scenario("scenario-backtrace").env("RUST_BACKTRACE", "1").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!("  panics carry the child's backtrace under RUST_BACKTRACE");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn children_of_self() -> String {
    let mut all = String::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = t.unwrap().path().join("children");
        all.push_str(&std::fs::read_to_string(p).unwrap_or_default());
    }
    all.trim().to_string()
}

fn no_descriptor_or_zombie_is_left() {
    // Warm up the spawner thread and its /dev/null, which live for the whole process.
    let mut p = Process::new(sleep_ms, 0);
    p.start().unwrap();
    p.join().unwrap();
    let before = open_fds();
    for i in 0..20 {
        let (ours, theirs) = mp::Pipe::new::<u32>().unwrap();
        let mut p = Process::new(echo_once, theirs);
        p.start().unwrap();
        ours.send(i).unwrap();
        assert_eq!(ours.recv().unwrap(), i + 1);
        assert_eq!(p.join().unwrap(), i);
        let mut k = Process::new(sleep_ms, 60_000);
        k.start().unwrap();
        k.kill().unwrap();
        assert!(k.join().is_err());
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
    assert_eq!(children_of_self(), "", "children (or zombies) left behind");
    println!("  no descriptor or zombie left after 40 processes");
}

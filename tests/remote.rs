//! Remote pools: worker hosts (this very binary, started with `MP_CONNECT`/`MP_AUTHKEY`)
//! serving a Pool that listens on TCP. A host killed mid-map, a wrong key, handles that
//! cannot leave the machine, a remote task timeout that really kills, hosts exiting when the
//! pool closes, and (as root, where `ip netns` works) the same across two network namespaces.
//!
//! This binary is its own driver: `main` calls `mp::init()` first, where worker hosts and
//! their workers branch off, then runs the cases named on the command line (all by default).

mod common;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::wait_gone;
use mp::{Error, Pool};

const KEY: &str = "remote-test-key";

#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

#[mp::worker]
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(5));
    x * x
}

#[mp::worker]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mp::worker]
fn try_lock(lock: mp::Lock) -> bool {
    lock.try_lock().unwrap().is_some()
}

/// A worker host: this binary with `MP_CONNECT`, killed (with its workers) on drop.
struct Host {
    child: Child,
}

impl Host {
    fn start(addr: &str, key: &str, workers: usize) -> Host {
        Host::start_with(Command::new(std::env::current_exe().unwrap()), addr, key, workers)
    }

    fn start_with(mut cmd: Command, addr: &str, key: &str, workers: usize) -> Host {
        let child = cmd
            .env("MP_CONNECT", addr)
            .env("MP_AUTHKEY", key)
            .env("MP_WORKERS", workers.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Host { child }
    }

    /// Waits up to `within` for the host to exit by itself.
    fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Its workers get SIGKILL from the parent-death signal.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_pool(processes: usize) -> (Pool, String) {
    let pool = Pool::builder().processes(processes).listen("127.0.0.1:0", KEY).build().unwrap();
    let addr = pool.address().unwrap().to_string();
    (pool, addr)
}

fn remote_only_pool_spreads_a_map_over_two_hosts() {
    let (pool, addr) = listening_pool(0);
    let _hosts = [Host::start(&addr, KEY, 1), Host::start(&addr, KEY, 1)];
    pool.wait_for_workers(2, Duration::from_secs(30)).unwrap();
    let out = pool.map(square, 0..2000u64).unwrap();
    assert_eq!(out, (0..2000u64).map(|x| x * x).collect::<Vec<_>>());
    // Tasks of 5 ms, one at a time: both hosts get some.
    let out = pool.map_chunked(slow_square, 0..100u64, 1).unwrap();
    assert_eq!(out, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    let st = pool.stats();
    assert_eq!(st.workers.len(), 2, "{st:?}");
    assert!(st.workers.iter().all(|w| w.tasks > 0), "both hosts served: {st:?}");
    let sums = pool.starmap(square, 0..10u64).unwrap();
    assert_eq!(sums[9], 81);
    assert_eq!(pool.apply_async(square, 12).unwrap().get().unwrap(), 144);
}

fn local_and_remote_workers_share_one_pool() {
    let (pool, addr) = listening_pool(1);
    let _host = Host::start(&addr, KEY, 1);
    pool.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let out = pool.map_chunked(slow_square, 0..200u64, 1).unwrap();
    assert_eq!(out, (0..200u64).map(|x| x * x).collect::<Vec<_>>());
    let st = pool.stats();
    assert_eq!(st.workers.len(), 2);
    assert!(st.workers.iter().all(|w| w.tasks > 0), "local and remote both served: {st:?}");
}

fn a_host_killed_mid_map_costs_at_most_its_running_item() {
    let (pool, addr) = listening_pool(0);
    let mut doomed = Host::start(&addr, KEY, 1);
    let _survivor = Host::start(&addr, KEY, 1);
    pool.wait_for_workers(2, Duration::from_secs(30)).unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        doomed.child.kill().unwrap();
        doomed.child.wait().unwrap();
    });
    let results: Vec<Result<u64, Error>> = pool.imap_chunked(slow_square, 0..300u64, 1).unwrap().collect();
    killer.join().unwrap();
    assert_eq!(results.len(), 300);
    let mut failed = 0;
    for (x, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(v, (x * x) as u64),
            Err(Error::WorkerDied { peer: Some(peer), .. }) => {
                assert!(peer.contains("remote worker"), "{peer}");
                failed += 1;
            }
            Err(e) => panic!("item {x}: {e}"),
        }
    }
    assert!(failed <= 1, "only the item running on the killed host fails ({failed} failed)");
    // The pool carries on with the other host.
    assert_eq!(pool.map(square, 0..100u64).unwrap()[99], 99 * 99);
}

fn a_host_with_the_wrong_key_is_refused_and_says_why() {
    let (pool, addr) = listening_pool(0);
    let mut host = Host::start(&addr, "not the key", 1);
    let status = host.wait(Duration::from_secs(30)).expect("a refused host exits");
    assert_eq!(status.code(), Some(1));
    let err = host.stderr();
    assert!(err.contains("authentication"), "{err}");
    assert!(pool.wait_for_workers(1, Duration::from_millis(200)).is_err());
}

fn handles_stay_on_this_machine() {
    let lock = mp::Lock::new().unwrap();
    let (remote_only, addr) = listening_pool(0);
    let _host = Host::start(&addr, KEY, 1);
    remote_only.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    match remote_only.apply(try_lock, lock.clone()) {
        Err(Error::Codec { message, .. }) => assert!(message.contains("Manager"), "{message}"),
        other => panic!("expected a codec error naming the Manager, got {other:?}"),
    }
    // With a local worker too, the task runs there.
    let (mixed, addr) = listening_pool(1);
    let _host = Host::start(&addr, KEY, 1);
    mixed.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    assert!(mixed.apply(try_lock, lock).unwrap());
}

fn a_remote_task_timeout_kills_the_worker_and_its_host_replaces_it() {
    let pool = Pool::builder()
        .processes(0)
        .task_timeout(Duration::from_millis(300))
        .listen("127.0.0.1:0", KEY)
        .build()
        .unwrap();
    let addr = pool.address().unwrap().to_string();
    let _host = Host::start(&addr, KEY, 1);
    pool.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let pid = pool.stats().workers[0].pid;
    assert!(matches!(pool.apply(sleep_ms, 60_000), Err(Error::Timeout { .. })));
    assert!(wait_gone(pid, Duration::from_secs(10)), "the host killed the timed-out worker {pid}");
    pool.wait_for_workers(2, Duration::from_secs(30)).unwrap();
    assert_eq!(pool.apply(square, 7).unwrap(), 49);
}

fn hosts_exit_when_the_pool_closes() {
    let (pool, addr) = listening_pool(0);
    let mut host = Host::start(&addr, KEY, 2);
    pool.wait_for_workers(2, Duration::from_secs(30)).unwrap();
    assert_eq!(pool.map(square, 0..10u64).unwrap()[3], 9);
    pool.close();
    pool.join().unwrap();
    let status = host.wait(Duration::from_secs(30)).expect("the host exits after the pool closes");
    assert!(status.success(), "{status:?}: {}", host.stderr());
}

/// The same map, with the worker host in another network namespace joined by a veth pair:
/// the traffic really crosses an interface.
fn across_network_namespaces() {
    let ns = format!("mpt{}", std::process::id());
    let (a, b) =
        (format!("mpa{}", std::process::id() % 100_000), format!("mpb{}", std::process::id() % 100_000));
    let ip = |args: &[&str]| {
        Command::new("ip").args(args).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if !ip(&["netns", "add", &ns]) {
        println!("across_network_namespaces: skipped (`ip netns add` needs root and iproute2)");
        return;
    }
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _cleanup = Cleanup(ns.clone());
    let nsx = |args: &[&str]| {
        let mut v = vec!["netns", "exec", &ns, "ip"];
        v.extend_from_slice(args);
        ip(&v)
    };
    assert!(ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]));
    assert!(ip(&["link", "set", &b, "netns", &ns]));
    assert!(ip(&["addr", "add", "10.77.0.1/24", "dev", &a]));
    assert!(ip(&["link", "set", &a, "up"]));
    assert!(nsx(&["addr", "add", "10.77.0.2/24", "dev", &b]));
    assert!(nsx(&["link", "set", &b, "up"]));
    assert!(nsx(&["link", "set", "lo", "up"]));

    let pool = Pool::builder().processes(0).listen("10.77.0.1:0", KEY).build().unwrap();
    let addr = pool.address().unwrap().to_string();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns]).arg(std::env::current_exe().unwrap());
    let _host = Host::start_with(cmd, &addr, KEY, 2);
    pool.wait_for_workers(2, Duration::from_secs(30)).unwrap();
    let out = pool.map(square, 0..1000u64).unwrap();
    assert_eq!(out, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
}

#[mp::main]
fn main() {
    let cases: &[(&str, fn())] = &[
        ("remote_only_pool_spreads_a_map_over_two_hosts", remote_only_pool_spreads_a_map_over_two_hosts),
        ("local_and_remote_workers_share_one_pool", local_and_remote_workers_share_one_pool),
        (
            "a_host_killed_mid_map_costs_at_most_its_running_item",
            a_host_killed_mid_map_costs_at_most_its_running_item,
        ),
        (
            "a_host_with_the_wrong_key_is_refused_and_says_why",
            a_host_with_the_wrong_key_is_refused_and_says_why,
        ),
        ("handles_stay_on_this_machine", handles_stay_on_this_machine),
        (
            "a_remote_task_timeout_kills_the_worker_and_its_host_replaces_it",
            a_remote_task_timeout_kills_the_worker_and_its_host_replaces_it,
        ),
        ("hosts_exit_when_the_pool_closes", hosts_exit_when_the_pool_closes),
        ("across_network_namespaces", across_network_namespaces),
    ];
    common::run_cases("tests/remote.rs", cases);
}

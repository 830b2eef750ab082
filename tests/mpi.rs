//! The default pool and `Pool::builder().mpi()` under `mpirun` (feature `mpi`). This binary
//! is its own driver: run plainly, it starts itself under `mpirun -n 3` and checks what rank
//! 0 printed and the job's exit code; under mpirun, rank 0 runs a scenario and the other
//! ranks serve it. Skips with a message when `mpirun` is not installed.

use std::process::Command;
use std::time::Duration;

use mp::prelude::*;
use mp::{Error, Pool};

#[mp::worker]
fn square(x: i64) -> i64 {
    x * x
}

#[mp::worker]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Which MPI rank ran the task (the launcher's variable, inherited by the rank).
#[mp::worker]
fn whoami(_: u32) -> String {
    std::env::var("OMPI_COMM_WORLD_RANK").unwrap_or_else(|_| "?".into())
}

#[mp::worker]
fn fails_on_three(x: i64) -> i64 {
    assert!(x != 3, "three is not allowed");
    x
}

#[mp::worker]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mp::worker]
fn bad_init(x: u32) {
    panic!("no setup for {x}");
}

#[mp::worker]
fn takes_conn(c: mp::Connection<u8>) -> u8 {
    c.recv().unwrap_or(0)
}

/// Rank 0 of `mpirun -n 3`: every verb on an explicit MPI pool, then a task timeout, then
/// the default pool. Prints `ok <check>` lines the driver looks for.
fn scenario_pool() -> Result<(), Error> {
    let pool = Pool::builder().mpi().build()?;
    assert_eq!(pool.processes(), 2);
    let pids: Vec<u32> = pool.stats().workers.iter().map(|w| w.pid).collect();
    assert_eq!(pids.len(), 2);
    assert!(!pids.contains(&std::process::id()));
    println!("ok workers 2");

    assert_eq!(pool.map(square, 0..100)?, (0..100).map(|x| x * x).collect::<Vec<_>>());
    println!("ok map");
    assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)])?, vec![3, 7]);
    println!("ok starmap");
    let lazy: Vec<i64> = pool.imap(square, 0..50)?.collect::<Result<_, _>>()?;
    assert_eq!(lazy, (0..50).map(|x| x * x).collect::<Vec<_>>());
    println!("ok imap");
    let pending: Vec<_> = (0..10).map(|x| pool.apply_async(square, x)).collect::<Result<_, _>>()?;
    let got: Vec<i64> = pending.into_iter().map(|p| p.get()).collect::<Result<_, _>>()?;
    assert_eq!(got, (0..10).map(|x| x * x).collect::<Vec<_>>());
    println!("ok apply_async");

    let mut ranks = pool.map_chunked(whoami, 0..40, 1)?;
    ranks.sort();
    ranks.dedup();
    assert_eq!(ranks, vec!["1".to_string(), "2".to_string()], "tasks ran on ranks 1 and 2 only");
    println!("ok ranks 1 2");

    match pool.map(fails_on_three, 0..10) {
        Err(Error::Panic { message, index: Some(3), .. }) => assert!(message.contains("three")),
        other => panic!("expected a panic on input 3, got {other:?}"),
    }
    let each: Vec<Result<i64, Error>> = pool.imap(fails_on_three, 0..6)?.collect();
    assert!(matches!(each[3], Err(Error::Panic { .. })));
    assert_eq!(each.iter().filter(|r| r.is_ok()).count(), 5);
    println!("ok panic");

    let (a, b) = mp::Pipe::new::<u8>()?;
    a.send(1)?;
    match pool.apply(takes_conn, b) {
        Err(e) => assert!(e.to_string().contains("MPI rank"), "{e}"),
        Ok(v) => panic!("a handle crossed to another rank: {v}"),
    }
    println!("ok handles refused");

    match Pool::builder().mpi().build() {
        Err(e) => assert!(e.to_string().contains("already serve another pool"), "{e}"),
        Ok(_) => panic!("two pools on the same ranks"),
    }
    println!("ok one pool at a time");
    match Pool::builder().mpi().max_memory(1 << 30).build() {
        Err(e) => assert!(e.to_string().contains("do not apply to an MPI pool"), "{e}"),
        Ok(_) => panic!("max_memory on MPI ranks"),
    }
    drop(pool);

    // An initializer that panics on the ranks fails every task with its panic, as locally.
    let pool = Pool::builder().mpi().initializer(bad_init, 7).build()?;
    match pool.map(square, 0..10) {
        Err(Error::Panic { message, .. }) => assert!(message.contains("no setup for 7"), "{message}"),
        other => panic!("expected the initializer's panic, got {other:?}"),
    }
    println!("ok initializer");
    drop(pool);

    // A task over the timeout fails alone; its rank leaves the pool, the other goes on. When
    // the second rank times out too, the pool has no worker left: the rest fails at once.
    let pool = Pool::builder().mpi().task_timeout(Duration::from_millis(500)).prefetch(1).build()?;
    let naps = vec![3000, 10, 10, 10, 10, 10, 3000, 10];
    let results: Vec<Result<u64, Error>> = pool.imap_chunked(nap, naps, 1)?.collect();
    let timed_out =
        |r: &Result<u64, Error>| matches!(r, Err(Error::Timeout { what, .. }) if what.contains("MPI rank"));
    assert!(timed_out(&results[0]), "{results:?}");
    assert!(results[1..6].iter().all(|r| matches!(r, Ok(10))), "{results:?}");
    println!("ok task_timeout");
    assert!(timed_out(&results[6]), "{results:?}");
    assert!(
        matches!(&results[7], Err(Error::Disconnected { what }) if what.contains("no worker left")),
        "{results:?}"
    );
    assert!(pool.stats().workers.is_empty());
    assert!(matches!(pool.apply(square, 2), Err(Error::Disconnected { .. })));
    println!("ok no worker left");
    drop(pool);

    // The default pool is the MPI pool; the rank stuck in its nap rejoins when it ends.
    let v = square.par_map(0..1000)?;
    assert_eq!(v[999], 999 * 999);
    let mut ranks = whoami.par_map(0..4)?;
    ranks.sort();
    ranks.dedup();
    assert!(ranks.iter().all(|r| r == "1" || r == "2"), "{ranks:?}");
    println!("ok par_map");
    Ok(())
}

#[mp::worker]
fn big(mib: usize) -> Vec<u8> {
    vec![7; mib << 20]
}

/// Rank 0 returns from `main` while the ranks are still sending it 64 MiB results: the
/// job still ends, with code 0.
fn scenario_exit_busy() -> Result<(), Error> {
    let mut results = big.par_imap(vec![64; 6])?;
    assert_eq!(results.next().expect("one result")?.len(), 64 << 20);
    println!("ok exit while busy");
    std::mem::forget(results);
    Ok(())
}

/// Rank 0 of `mpirun -n 1`: no rank to serve, so `.mpi()` says so and `par_map` is local.
fn smoke() -> Result<(), Error> {
    match Pool::builder().mpi().build() {
        Err(e) => assert!(e.to_string().contains("single rank"), "{e}"),
        Ok(_) => panic!("an MPI pool without worker ranks"),
    }
    assert_eq!(square.par_map(0..4)?, vec![0, 1, 4, 9]);
    println!("ok single");
    Ok(())
}

fn mpirun(ranks: u32, scenario: &str) -> Option<(i32, String, String)> {
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-n", &ranks.to_string()])
        .arg(std::env::current_exe().unwrap())
        .arg(scenario)
        .output()
        .ok()?;
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn check(ranks: u32, scenario: &str, expected: &[&str]) {
    let Some((code, out, err)) = mpirun(ranks, scenario) else {
        println!("mpi: skipped, `mpirun` is not installed (apt-get install openmpi-bin libopenmpi-dev)");
        std::process::exit(0);
    };
    assert_eq!(code, 0, "mpirun -n {ranks} {scenario} failed:\n{out}\n{err}");
    for line in expected {
        assert!(out.lines().any(|l| l == *line), "missing {line:?} in:\n{out}\nstderr:\n{err}");
    }
    println!("test mpi {scenario} (-n {ranks}) ... ok");
}

#[mp::main]
fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("scenario-pool") => scenario_pool().unwrap(),
        Some("smoke") => smoke().unwrap(),
        Some("scenario-exit-busy") => scenario_exit_busy().unwrap(),
        _ => {
            let pool_lines = [
                "ok workers 2",
                "ok map",
                "ok starmap",
                "ok imap",
                "ok apply_async",
                "ok ranks 1 2",
                "ok panic",
                "ok handles refused",
                "ok one pool at a time",
                "ok initializer",
                "ok task_timeout",
                "ok no worker left",
                "ok par_map",
            ];
            check(1, "smoke", &["ok single"]);
            check(3, "scenario-pool", &pool_lines);
            check(3, "scenario-exit-busy", &["ok exit while busy"]);
        }
    }
}

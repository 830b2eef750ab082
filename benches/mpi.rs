//! MPI pool benchmark: `par_map` of 200 tasks of ~1 ms under `mpirun -n 3` (rank 0 runs
//! `main`, ranks 1 and 2 serve), next to a local `Pool(2)` on the same machine, in one run.
//!
//! ```text
//! cargo bench --features mpi --bench mpi
//! ```
//!
//! The binary starts itself under mpirun; rank 0 times the MPI pool and a local `Pool(2)` in
//! alternating rounds. Skips with a message when `mpirun` is not installed.

use std::process::Command;
use std::time::{Duration, Instant};

use mp::prelude::*;

mod common;
use common::{calibrate_spin, spin};

const TASKS: usize = 200;
const ROUNDS: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// Rank 0 under mpirun: the default pool is served by ranks 1 and 2; a local Pool(2) runs
/// beside it. Rounds alternate between the two, so a load change on the machine hits both.
fn rank0() {
    let n = calibrate_spin();
    let tasks = vec![n; TASKS];
    let local = mp::Pool::new(2).expect("local pool");
    let run_local = || std::hint::black_box(local.map(spin, tasks.iter().copied()).unwrap());
    let run_mpi = || std::hint::black_box(spin.par_map(tasks.iter().copied()).unwrap());
    run_local();
    run_mpi();
    let (mut l, mut m) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        l.push(time(|| {
            run_local();
        }));
        m.push(time(|| {
            run_mpi();
        }));
    }
    let (l, m) = (median(l), median(m));
    println!("{:<44} {:>10} {:>10} {:>8}", "workload", "MPI pool", "Pool(2)", "ratio");
    println!(
        "{:<44} {:>7.1} ms {:>7.1} ms {:>7.2}x",
        "par_map, 200 tasks of ~1 ms, mpirun -n 3",
        m.as_secs_f64() * 1e3,
        l.as_secs_f64() * 1e3,
        m.as_secs_f64() / l.as_secs_f64()
    );
    println!(
        "\n(medians of {ROUNDS} alternating rounds; ratio = MPI pool / local Pool(2): 1 main + 2 worker \
         ranks vs 2 local workers, on the same machine)"
    );
}

fn main() {
    mp::init();
    if std::env::args().nth(1).as_deref() == Some("rank0") {
        rank0();
        return;
    }
    println!("cargo bench --features mpi --bench mpi   ({} CPUs)\n", mp::cpu_count());
    let status = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-n", "3"])
        .arg(std::env::current_exe().expect("own path"))
        .arg("rank0")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("mpirun -n 3 failed: {s}"),
        Err(_) => println!("skipped: `mpirun` is not installed (apt-get install openmpi-bin libopenmpi-dev)"),
    }
}

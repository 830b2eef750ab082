//! Remote pool benchmark: the same chunked maps on a local `Pool(2)` and on a pool whose 2
//! workers are a worker host (this binary with `MP_CONNECT`) reached over TCP loopback, in
//! one run. The issue's target: remote within 2x of local for chunked maps.
//!
//! ```text
//! cargo bench --bench remote
//! ```
//!
//! The binary is its own worker host: `mp::init()` comes first.

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{calibrate_spin, spin, timed};

const KEY: &str = "bench-key";

#[mp::worker]
fn square(x: i64) -> i64 {
    x.wrapping_mul(x)
}

fn main() {
    mp::init();
    println!("cargo bench --bench remote   ({} CPUs)\n", mp::cpu_count());
    let local = mp::Pool::new(2).unwrap();
    let remote = mp::Pool::builder().processes(0).listen("127.0.0.1:0", KEY).build().unwrap();
    let mut host = Command::new("/proc/self/exe")
        .env("MP_CONNECT", remote.address().unwrap().to_string())
        .env("MP_AUTHKEY", KEY)
        .env("MP_WORKERS", "2")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    remote.wait_for_workers(2, Duration::from_secs(30)).unwrap();

    let mut rows: Vec<[String; 4]> = Vec::new();
    let data: Vec<i64> = (0..1_000_000).collect();
    for (name, chunk) in
        [("map x*x, 10^6 items, chunks of 10^4", 10_000usize), ("same, chunks of 10^3", 1000)]
    {
        let l = timed(5, || {
            std::hint::black_box(local.map_chunked(square, data.iter().copied(), chunk).unwrap());
        });
        let r = timed(5, || {
            std::hint::black_box(remote.map_chunked(square, data.iter().copied(), chunk).unwrap());
        });
        let rate = |d: Duration| data.len() as f64 / d.as_secs_f64() / 1e6;
        rows.push([
            name.into(),
            format!("{:.1} M/s", rate(r)),
            format!("{:.1} M/s", rate(l)),
            format!("{:.2}x", r.as_secs_f64() / l.as_secs_f64()),
        ]);
    }
    let n = calibrate_spin();
    let tasks = vec![n; 200];
    let l = timed(5, || {
        std::hint::black_box(local.map_chunked(spin, tasks.iter().copied(), 1).unwrap());
    });
    let r = timed(5, || {
        std::hint::black_box(remote.map_chunked(spin, tasks.iter().copied(), 1).unwrap());
    });
    rows.push([
        "200 tasks of ~1 ms, chunks of 1".into(),
        format!("{:.1} ms", r.as_secs_f64() * 1e3),
        format!("{:.1} ms", l.as_secs_f64() * 1e3),
        format!("{:.2}x", r.as_secs_f64() / l.as_secs_f64()),
    ]);
    let apply = |p: &mp::Pool| {
        timed(5, || {
            let rs: Vec<_> = (0..2000).map(|i| p.apply_async(square, i).unwrap()).collect();
            for r in rs {
                std::hint::black_box(r.get().unwrap());
            }
        })
    };
    let (l, r) = (apply(&local), apply(&remote));
    rows.push([
        "2000 apply_async".into(),
        format!("{:.1} k/s", 2000.0 / r.as_secs_f64() / 1e3),
        format!("{:.1} k/s", 2000.0 / l.as_secs_f64() / 1e3),
        format!("{:.2}x", r.as_secs_f64() / l.as_secs_f64()),
    ]);
    remote.close();
    remote.join().unwrap();
    let _ = host.wait();

    println!(
        "{:<40} {:>14} {:>14} {:>18}",
        "workload (2 workers each)", "remote (TCP)", "local", "remote time/local"
    );
    for [a, b, c, d] in &rows {
        println!("{a:<40} {b:>14} {c:>14} {d:>18}");
    }
}

//! Pool benchmarks: `par_map`, `apply_async`, 1 ms tasks and pool start-up, next to CPython's
//! `multiprocessing.Pool(2)`, rayon (the threads ceiling) and serial code, in one run.
//!
//! ```text
//! cargo bench --bench pool
//! ```
//!
//! Prints a table of medians and the ratios the targets are stated in. `MP_BENCH_NO_PYTHON=1`
//! skips the CPython rows. The binary is its own worker: `mp::init()` comes first.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use rayon::prelude::*;

mod common;
use common::{calibrate_spin, json_field, python_lines, spin, timed};

#[mp::worker]
fn square(x: i32) -> i32 {
    x.wrapping_mul(x)
}

const BARE_EXIT: &str = "MP_BENCH_BARE_EXIT";

struct Table(Vec<[String; 4]>);

impl Table {
    fn row(&mut self, name: &str, value: String, vs: String, note: &str) {
        self.0.push([name.to_string(), value, vs, note.to_string()]);
    }
    fn print(&self) {
        println!("{:<34} {:>16} {:>26}  peer", "workload", "mp", "ratio");
        for [a, b, c, d] in &self.0 {
            println!("{a:<34} {b:>16} {c:>26}  {d}");
        }
    }
}

fn rate(items: usize, d: Duration) -> f64 {
    items as f64 / d.as_secs_f64()
}

fn main() {
    if std::env::var_os(BARE_EXIT).is_some() {
        std::process::exit(0);
    }
    mp::init();
    println!("cargo bench --bench pool   ({} CPUs)\n", mp::cpu_count());
    // {"name": ..., "seconds": x[, "serial": y]} a line.
    let py: HashMap<String, (f64, Option<f64>)> = python_lines("pool.py", &["fork".to_string()])
        .iter()
        .filter_map(|l| {
            let secs = json_field(l, "seconds")?.parse().ok()?;
            let serial = json_field(l, "serial").and_then(|s| s.parse().ok());
            Some((json_field(l, "name")?.to_string(), (secs, serial)))
        })
        .collect();
    let pool = mp::Pool::new(2).expect("pool");
    let rayon2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("rayon");
    let mut t = Table(Vec::new());

    for size in [10_000usize, 100_000, 1_000_000] {
        let data: Vec<i32> = (0..size as i32).collect();
        let ours = timed(if size < 1_000_000 { 9 } else { 5 }, || {
            std::hint::black_box(pool.map(square, data.iter().copied()).unwrap());
        });
        let ray = timed(9, || {
            rayon2.install(|| std::hint::black_box(data.par_iter().map(|&x| square(x)).collect::<Vec<_>>()));
        });
        let serial = timed(9, || {
            std::hint::black_box(data.iter().map(|&x| square(x)).collect::<Vec<_>>());
        });
        let ours_rate = rate(size, ours);
        let (vs, peer) = match py.get(&format!("map_{size}")) {
            Some((s, _)) => (
                format!("{:.1}x CPython", ours_rate / (size as f64 / s)),
                format!("CPython {:.2} M/s", size as f64 / s / 1e6),
            ),
            None => ("-".into(), "CPython skipped".into()),
        };
        t.row(
            &format!("Pool(2).map x*x, {size} items"),
            format!("{:.2} M items/s", ours_rate / 1e6),
            vs,
            &format!(
                "{peer}; rayon {:.0} M/s; serial {:.0} M/s",
                rate(size, ray) / 1e6,
                rate(size, serial) / 1e6
            ),
        );
    }

    let apply = timed(5, || {
        let rs: Vec<_> = (0..10_000).map(|i| pool.apply_async(square, i).unwrap()).collect();
        for r in rs {
            std::hint::black_box(r.get().unwrap());
        }
    });
    let (vs, peer) = match py.get("apply_async_10000") {
        Some((s, _)) => (
            format!("{:.1}x CPython", s / apply.as_secs_f64()),
            format!("CPython {:.1} k tasks/s", 1e4 / s / 1e3),
        ),
        None => ("-".into(), "CPython skipped".into()),
    };
    t.row("10^4 apply_async", format!("{:.1} k tasks/s", rate(10_000, apply) / 1e3), vs, &peer);

    let n = calibrate_spin();
    let tasks = vec![n; 200];
    let ours = timed(5, || {
        std::hint::black_box(pool.map(spin, tasks.iter().copied()).unwrap());
    });
    let serial = timed(3, || {
        std::hint::black_box(tasks.iter().map(|&n| spin(n)).collect::<Vec<_>>());
    });
    let ray = timed(5, || {
        rayon2.install(|| std::hint::black_box(tasks.par_iter().map(|&n| spin(n)).collect::<Vec<_>>()));
    });
    let py_note = match py.get("spin_200") {
        Some((s, Some(ser))) => format!("; CPython {:.2}x its serial", ser / s),
        _ => String::new(),
    };
    t.row(
        "200 tasks of ~1 ms CPU",
        format!("{:.1} ms", ours.as_secs_f64() * 1e3),
        format!("{:.2}x serial", serial.as_secs_f64() / ours.as_secs_f64()),
        &format!("rayon {:.2}x serial{py_note}", serial.as_secs_f64() / ray.as_secs_f64()),
    );
    drop(pool);

    let create = timed(9, || {
        let p = mp::Pool::new(2).unwrap();
        p.close();
        p.join().unwrap();
    });
    let bare = timed(9, || {
        let kids: Vec<_> =
            (0..2).map(|_| Command::new("/proc/self/exe").env(BARE_EXIT, "1").spawn().unwrap()).collect();
        for mut k in kids {
            k.wait().unwrap();
        }
    });
    let py_note = match py.get("pool_create") {
        Some((s, _)) => format!("; CPython Pool(2) {:.1} ms", s * 1e3),
        None => String::new(),
    };
    t.row(
        "Pool(2) create + close + join",
        format!("{:.2} ms", create.as_secs_f64() * 1e3),
        format!("{:.2}x 2 bare processes", create.as_secs_f64() / bare.as_secs_f64()),
        &format!("2 bare re-execs {:.2} ms{py_note}", bare.as_secs_f64() * 1e3),
    );
    println!();
    t.print();
}

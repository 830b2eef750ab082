//! Manager benchmarks: `DictProxy` insert+get pairs next to CPython's `Manager().dict()`
//! proxy and a raw Unix-socket round trip (8 bytes, ping-pong with a child), in one run.
//!
//! ```text
//! cargo bench --bench managers
//! ```
//!
//! Targets: a proxy call within 1.5x of the raw round trip, and 4x CPython's proxy call or
//! better. `MP_BENCH_NO_PYTHON=1` skips the CPython rows. The binary is its own worker.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::Instant;

/// Echoes 8-byte messages on a raw Unix socket until the other end closes.
#[mp::worker]
fn echo(path: String) {
    let mut s = UnixStream::connect(path).unwrap();
    let mut b = [0u8; 8];
    while s.read_exact(&mut b).is_ok() {
        s.write_all(&b).unwrap();
    }
}

/// `pairs` insert+get pairs from a child, for the several-clients row.
#[mp::worker]
fn pairs_in_child(d: mp::DictProxy<u64, u64>, base: u64, pairs: u64) -> f64 {
    let t = Instant::now();
    for i in base..base + pairs {
        d.insert(i, i).unwrap();
        assert_eq!(d.get(&i).unwrap(), Some(i));
    }
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn python_rows() -> HashMap<String, f64> {
    let mut rows = HashMap::new();
    if std::env::var_os("MP_BENCH_NO_PYTHON").is_some() {
        return rows;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/managers.py");
    let Ok(out) = Command::new("python3").arg(script).output() else {
        return rows;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // {"name": "...", "us": x}: parsed by hand to keep dependencies few.
        let field = |key: &str| -> Option<&str> {
            let at = line.find(&format!("\"{key}\": "))? + key.len() + 4;
            let rest = &line[at..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim().trim_matches('"'))
        };
        if let (Some(name), Some(us)) = (field("name"), field("us").and_then(|s| s.parse().ok())) {
            rows.insert(name.to_string(), us);
        }
    }
    rows
}

/// Microseconds per raw round trip with a child echoing on a Unix socket.
fn raw_roundtrip_us(n: usize) -> f64 {
    let dir = std::env::temp_dir().join(format!("mp-bench-raw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let mut p = mp::Process::new(echo, path.display().to_string());
    p.start().unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let mut b = *b"12345678";
    for _ in 0..1000 {
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
    }
    let us = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..n {
                    s.write_all(&b).unwrap();
                    s.read_exact(&mut b).unwrap();
                }
                t.elapsed().as_secs_f64() / n as f64 * 1e6
            })
            .collect(),
    );
    drop(s);
    p.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    us
}

fn main() {
    mp::init();
    println!("cargo bench --bench managers   ({} CPUs)\n", mp::cpu_count());
    let py = python_rows();
    let raw = raw_roundtrip_us(20_000);

    let m = mp::Manager::new().expect("manager");
    let d = m.dict::<u64, u64>().unwrap();
    let pairs = 5_000u64;
    let run = |base: u64| {
        let t = Instant::now();
        for i in base..base + pairs {
            d.insert(i, i).unwrap();
            assert_eq!(d.get(&i).unwrap(), Some(i));
        }
        t.elapsed()
    };
    run(0);
    let per_call_us =
        median((1..=7).map(|k| run(k * pairs).as_secs_f64() / (2 * pairs) as f64 * 1e6).collect());

    // Two child processes calling at once (one connection each, one server thread each).
    let d2 = d.clone();
    let two = {
        let t = Instant::now();
        let mut ps: Vec<_> = (0..2u64)
            .map(|k| mp::Process::new(pairs_in_child, (d2.clone(), 1_000_000 * (k + 1), pairs)))
            .collect();
        ps.iter_mut().for_each(|p| p.start().unwrap());
        ps.iter_mut().for_each(|p| {
            p.join().unwrap();
        });
        t.elapsed()
    };
    let two_rate = 2.0 * pairs as f64 / two.as_secs_f64();

    println!("{:<40} {:>14} {:>22}  peer", "workload", "mp", "ratio");
    let pair_rate = 1e6 / (2.0 * per_call_us);
    let (vs_py, peer) = match py.get("manager_dict_call") {
        Some(&us) => (
            format!("{:.1}x CPython", us / per_call_us),
            format!("CPython {:.1} us/call, {:.1} k pairs/s", us, 1e6 / (2.0 * us) / 1e3),
        ),
        None => ("-".into(), "CPython skipped".into()),
    };
    println!(
        "{:<40} {:>14} {:>22}  {peer}",
        "Manager dict insert+get pairs",
        format!("{:.1} k pairs/s", pair_rate / 1e3),
        vs_py
    );
    println!(
        "{:<40} {:>14} {:>22}  raw unix round trip {raw:.1} us (target <= 1.5x)",
        "  one proxy call",
        format!("{per_call_us:.1} us"),
        format!("{:.2}x raw round trip", per_call_us / raw),
    );
    if let Some(&us) = py.get("raw_roundtrip") {
        println!(
            "{:<40} {:>14} {:>22}  CPython socketpair ping-pong",
            "  raw round trip, CPython",
            format!("{us:.1} us"),
            "-"
        );
    }
    println!(
        "{:<40} {:>14} {:>22}  2 children at once",
        "  2 processes calling at once",
        format!("{:.1} k pairs/s", two_rate / 1e3),
        format!("{:.2}x one caller", two_rate / pair_rate),
    );
}

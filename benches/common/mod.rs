//! What the benchmark binaries share: medians, timed runs, and the CPython peers' output
//! (one `{"name": ..., "<value>": x, ...}` JSON object a line, parsed by hand to keep
//! dependencies few).
#![allow(dead_code)] // each bench uses its own subset

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of `runs` timed calls of `f`, after one untimed warm-up call.
pub fn timed(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// Field `key` of a one-line JSON object, unquoted.
pub fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\": "))? + key.len() + 4;
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}

/// Runs `benches/python/<script>` with `args`; its output lines, or none when python3 is
/// missing or `MP_BENCH_NO_PYTHON` is set (the CPython rows are then skipped).
pub fn python_lines(script: &str, args: &[String]) -> Vec<String> {
    if std::env::var_os("MP_BENCH_NO_PYTHON").is_some() {
        return Vec::new();
    }
    let path = format!("{}/benches/python/{script}", env!("CARGO_MANIFEST_DIR"));
    match Command::new("python3").arg(path).args(args).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// The `value` field of each line of `script`'s output, by `name`.
pub fn python_rows(script: &str, args: &[String], value: &str) -> HashMap<String, f64> {
    python_lines(script, args)
        .iter()
        .filter_map(|line| {
            let v = json_field(line, value)?.parse().ok()?;
            Some((json_field(line, "name")?.to_string(), v))
        })
        .collect()
}

/// About 1 ms of CPU for the calibrated `n` (an LCG the optimizer cannot fold): the "real
/// work" task of the pool, remote and MPI benches.
#[mp::worker]
pub fn spin(n: u64) -> u64 {
    let mut acc: u64 = 0;
    for i in 0..n {
        acc = std::hint::black_box(acc.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    acc
}

/// The `n` for which [`spin`] takes about 1 ms here.
pub fn calibrate_spin() -> u64 {
    let mut n = 1_000u64;
    loop {
        let t = Instant::now();
        std::hint::black_box(spin(n));
        let d = t.elapsed();
        if d > Duration::from_micros(500) {
            return (n as f64 * 1e-3 / d.as_secs_f64()) as u64;
        }
        n *= 2;
    }
}

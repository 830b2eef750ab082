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

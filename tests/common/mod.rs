//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// True when `pid` no longer exists (or is a zombie that is not ours to reap).
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // The state follows the command name's closing parenthesis.
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start().chars().next());
            matches!(state, Some(Some('Z' | 'X')))
        }
    }
}

/// Waits up to `within` for `pid` to disappear.
pub fn wait_gone(pid: u32, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if is_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    is_gone(pid)
}

/// CPU time (user + system) of `pid` so far, from `/proc` (in clock ticks of 10 ms).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Asserts `pid` was reaped: no process, and no zombie either.
pub fn assert_reaped(pid: u32) {
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || !is_our_child(pid),
        "pid {pid} is still present (a zombie or a running child)"
    );
}

fn is_our_child(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        })
        .is_some_and(|ppid| ppid == std::process::id())
}

/// A start line for workers that race: each reports at its line and waits for the start, so
/// they run their loops at the same time (a lost update needs two processes in a critical
/// section at once; without it, each child may finish before the next has even started).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct StartLine {
    report: mp::Connection<()>,
    go: mp::RawValue<u8>,
}

impl StartLine {
    /// In the worker: reports at the line, then waits for the start.
    pub fn wait(&self) {
        self.report.send(()).unwrap();
        while self.go.get() == 0 {
            std::thread::yield_now();
        }
    }
}

/// The parent's side of [`StartLine`]s.
pub struct Starter {
    reports: Vec<mp::Connection<()>>,
    go: mp::RawValue<u8>,
}

impl Starter {
    /// A starter and one line for each of `n` workers.
    pub fn new(n: usize) -> (Starter, Vec<StartLine>) {
        let go = mp::RawValue::new(0u8).unwrap();
        let (reports, lines) = (0..n)
            .map(|_| {
                let (ours, theirs) = mp::Pipe::new::<()>().unwrap();
                (ours, StartLine { report: theirs, go: go.clone() })
            })
            .unzip();
        (Starter { reports, go }, lines)
    }

    /// Waits until every worker is at its line, then starts them all.
    pub fn go(self) {
        for r in &self.reports {
            r.recv().unwrap();
        }
        self.go.set(1);
    }
}

/// The driver of a `harness = false` test binary whose cases need a process of their own
/// (children of `#[mp::main]`): runs the cases whose names contain a command-line filter
/// (libtest-style; flags from `cargo test` are ignored) and prints libtest-like lines. A case
/// that hangs fails the run after 300 s instead of blocking CI.
pub fn run_cases(file: &str, cases: &[(&str, fn())]) {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let file = file.to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(300));
        eprintln!("{file}: a case is still running after 300 s");
        std::process::exit(101);
    });
    let mut ran = 0;
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t = Instant::now();
        case();
        println!("test {name} ... ok ({:?})", t.elapsed());
        ran += 1;
    }
    println!("test result: ok. {ran} passed");
}

/// A job-queue client: takes numbers from the manager's shared `jobs` queue until `None`,
/// records `(n * n, who)` in its shared `results` dict; returns how many it took.
pub fn take_jobs_from(m: &mp::Manager, who: u32) -> u32 {
    let jobs: mp::QueueProxy<Option<u64>> = m.shared().get("jobs").unwrap().expect("jobs published");
    let results: mp::DictProxy<u64, (u64, u32)> =
        m.shared().get("results").unwrap().expect("results published");
    let mut done = 0;
    while let Some(n) = jobs.get().unwrap() {
        results.insert(n, (n * n, who)).unwrap();
        done += 1;
    }
    done
}

//! Foundation benchmarks: what one `mp::Process` and one `mp::Pipe` cost, next to the floor
//! the OS allows (a bare re-exec, a raw socket pair) and to CPython's `multiprocessing`.
//!
//! ```text
//! cargo bench --bench foundation
//! ```
//!
//! 1. spawn+join of an empty worker vs. a bare re-exec of this binary that exits at once;
//! 2. round trip of a `u64` over a `Connection` echoed by a worker vs. a raw socket pair
//!    ping-pong with a child process;
//! 3. one 64 MiB `Vec<u8>` to a child that replies with its length (`send` and `send_bytes`)
//!    vs. the same through a raw socket pair.
//!
//! CPython peers live in `benches/python/` and run with `python3` (rows are "skipped" when it
//! is missing). A hand-written harness (warm-up, then the median of N runs, mp and its floor
//! interleaved) keeps the total under a minute and prints ratios, which criterion does not.
//!
//! This binary is re-executed as a child three ways: by mp (`mp::init()` branches off to the
//! worker), as the bare-exit floor (`MP_BENCH_BARE_EXIT`, checked before anything else) and
//! as the raw echo peer (`MP_BENCH_RAW_ECHO=<mode>:<fd>`).
//!
//! For profiling: `MP_BENCH_ONLY=1,3` runs only those sections, `MP_BENCH_NO_PYTHON=1` skips
//! the CPython rows.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Makes `main` exit at once: the floor for spawn+join.
const BARE_EXIT: &str = "MP_BENCH_BARE_EXIT";
/// `<mode>:<fd>`: run the raw echo peer on inherited descriptor `fd`.
const RAW_ECHO: &str = "MP_BENCH_RAW_ECHO";
const SELF_EXE: &str = "/proc/self/exe";

// Bench 1.
const SPAWN_WARMUP: usize = 10;
const SPAWN_RUNS: usize = 100;
// Bench 2.
const ROUND_TRIPS: usize = 10_000;
const RT_BATCHES: usize = 9;
const RT_WARMUP: usize = 2_000;
// Bench 3.
const BULK_LEN: usize = 64 << 20;
const BULK_WARMUP: usize = 2;
const BULK_RUNS: usize = 10;
// CPython (its spawn method costs ~100 ms a process: fewer runs).
const PY_SPAWN_PLAN: &[&str] = &["fork:5:50", "forkserver:3:30", "spawn:2:20"];
const PY_RT_BATCHES: usize = 5;

#[mp::worker]
fn noop() {}

/// Echoes every value until the parent closes its end.
#[mp::worker]
fn echo_u64(conn: mp::Connection<u64>) {
    while let Ok(v) = conn.recv() {
        if conn.send(v).is_err() {
            break;
        }
    }
}

/// Receives whole messages (mode 0: typed with `recv`; 1: raw with `recv_bytes`; 2: raw with
/// `recv_bytes_into` a reused buffer) and replies with each one's length as 8 little-endian
/// bytes, until the parent closes its end.
#[mp::worker]
fn bulk_sink(conn: mp::Connection<Vec<u8>>, mode: u8) {
    let mut reused = Vec::new();
    loop {
        let got = match mode {
            0 => conn.recv(),
            1 => conn.recv_bytes(),
            _ => conn.recv_bytes_into(&mut reused).map(|_| std::mem::take(&mut reused)),
        };
        let Ok(v) = got else { break };
        // Reply first, free after: the transfer is measured, not the deallocation.
        if conn.send_bytes(&(v.len() as u64).to_le_bytes()).is_err() {
            break;
        }
        if mode == 2 {
            reused = v; // keep the buffer (and its mapped pages) for the next message
        } else {
            drop(v);
        }
    }
}

fn main() {
    if std::env::var_os(BARE_EXIT).is_some() {
        std::process::exit(0);
    }
    mp::init();
    if let Ok(spec) = std::env::var(RAW_ECHO) {
        raw_echo_child(&spec);
    }
    if let Err(e) = run() {
        eprintln!("foundation bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    println!("command: cargo bench --bench foundation");
    println!(
        "machine: {} CPUs; {}; each row is the median of N runs after a warm-up, ratio = row / floor",
        mp::cpu_count(),
        python_version()
    );
    println!();

    let only = std::env::var("MP_BENCH_ONLY").ok();
    let wanted = |n: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x.trim() == n));
    let mut t = Table::default();
    if wanted("1") {
        bench_spawn(&mut t)?;
    }
    if wanted("2") {
        bench_roundtrip(&mut t)?;
    }
    if wanted("3") {
        bench_bulk(&mut t)?;
    }
    print!("{}", t.out);
    println!();
    for v in &t.verdicts {
        println!("{v}");
    }
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bench 1: spawn + join.

fn bench_spawn(t: &mut Table) -> Result<(), Box<dyn std::error::Error>> {
    let mut bare = Vec::with_capacity(SPAWN_RUNS);
    let mut mp_ = Vec::with_capacity(SPAWN_RUNS);
    for i in 0..SPAWN_WARMUP + SPAWN_RUNS {
        // Alternate which goes first, so neither always follows the other's teardown.
        let (a, b) = if i % 2 == 0 {
            let a = time_bare_reexec()?;
            (a, time_mp_noop()?)
        } else {
            let b = time_mp_noop()?;
            (time_bare_reexec()?, b)
        };
        if i >= SPAWN_WARMUP {
            bare.push(a);
            mp_.push(b);
        }
    }
    let floor = Stats::of(&bare);
    let mp_s = Stats::of(&mp_);
    t.section(&format!("1. spawn+join of an empty worker ({SPAWN_RUNS} runs each, interleaved)"), false);
    t.latency_row("floor: bare re-exec of this binary, exit(0)", &floor, 1.0, "");
    let ratio = mp_s.median / floor.median;
    t.latency_row(
        "mp::Process::new(noop, ()).start() + join()",
        &mp_s,
        ratio,
        &target(ratio <= 1.5, "<= 1.5x"),
    );
    t.verdict(format!(
        "spawn+join: mp {} vs bare re-exec {} = {ratio:.2}x (target <= 1.5x): {}",
        fmt_dur(mp_s.median),
        fmt_dur(floor.median),
        pass(ratio <= 1.5)
    ));
    match run_python("spawn_join.py", PY_SPAWN_PLAN) {
        Ok(rows) => {
            for (method, s) in rows {
                let note = format!("mp is {:.1}x faster", s.median / mp_s.median);
                t.latency_row(
                    &format!("CPython Process start+join, {method}"),
                    &s,
                    s.median / floor.median,
                    &note,
                );
            }
        }
        Err(why) => t.skipped("CPython Process start+join (fork/forkserver/spawn)", &why),
    }
    Ok(())
}

fn time_bare_reexec() -> io::Result<Duration> {
    let t0 = Instant::now();
    let status = Command::new(SELF_EXE).env(BARE_EXIT, "1").stdin(Stdio::null()).status()?;
    let dt = t0.elapsed();
    if !status.success() {
        return Err(io::Error::other(format!("bare re-exec exited {status}")));
    }
    Ok(dt)
}

fn time_mp_noop() -> Result<Duration, mp::Error> {
    let t0 = Instant::now();
    let mut p = mp::Process::new(noop, ());
    p.start()?;
    p.join()?;
    Ok(t0.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Bench 2: small-value round trip.

fn bench_roundtrip(t: &mut Table) -> Result<(), Box<dyn std::error::Error>> {
    let (ours, theirs) = mp::Pipe::new::<u64>()?;
    let mut worker = mp::Process::new(echo_u64, theirs);
    worker.start()?;
    let mut raw = RawEcho::spawn("pingpong")?;

    let mp_rt = |n: usize| -> Result<Duration, mp::Error> {
        let t0 = Instant::now();
        for i in 0..n as u64 {
            ours.send(i)?;
            let back = ours.recv()?;
            debug_assert_eq!(back, i);
        }
        Ok(t0.elapsed())
    };
    let mut raw_rt = |n: usize| -> io::Result<Duration> {
        let mut buf = [0u8; 8];
        let t0 = Instant::now();
        for i in 0..n as u64 {
            raw.sock.write_all(&i.to_le_bytes())?;
            raw.sock.read_exact(&mut buf)?;
            debug_assert_eq!(u64::from_le_bytes(buf), i);
        }
        Ok(t0.elapsed())
    };

    mp_rt(RT_WARMUP)?;
    raw_rt(RT_WARMUP)?;
    let mut mp_per = Vec::new();
    let mut raw_per = Vec::new();
    for i in 0..RT_BATCHES {
        let (m, r) = if i % 2 == 0 {
            let m = mp_rt(ROUND_TRIPS)?;
            (m, raw_rt(ROUND_TRIPS)?)
        } else {
            let r = raw_rt(ROUND_TRIPS)?;
            (mp_rt(ROUND_TRIPS)?, r)
        };
        mp_per.push(m / ROUND_TRIPS as u32);
        raw_per.push(r / ROUND_TRIPS as u32);
    }
    drop(ours);
    worker.join()?;
    raw.finish()?;

    let floor = Stats::of(&raw_per);
    let mp_s = Stats::of(&mp_per);
    let ratio = mp_s.median / floor.median;
    t.section(
        &format!(
            "2. round trip of a u64, per round trip ({RT_BATCHES} batches of {ROUND_TRIPS}, interleaved)"
        ),
        false,
    );
    t.latency_row("floor: raw socketpair ping-pong, child process", &floor, 1.0, "");
    t.latency_row(
        "mp Connection<u64> send+recv, echo worker",
        &mp_s,
        ratio,
        &target(ratio <= 1.3, "<= 1.3x"),
    );
    t.verdict(format!(
        "round trip: mp {} vs raw {} = {ratio:.2}x (target <= 1.3x): {}",
        fmt_dur(mp_s.median),
        fmt_dur(floor.median),
        pass(ratio <= 1.3)
    ));
    let args = [ROUND_TRIPS.to_string(), PY_RT_BATCHES.to_string(), RT_WARMUP.to_string()];
    match run_python("pipe_roundtrip.py", &args) {
        Ok(rows) => {
            for (_, s) in rows {
                let note = format!("mp is {:.1}x faster", s.median / mp_s.median);
                t.latency_row(
                    "CPython multiprocessing.Pipe send+recv (int)",
                    &s,
                    s.median / floor.median,
                    &note,
                );
            }
        }
        Err(why) => t.skipped("CPython multiprocessing.Pipe send+recv", &why),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bench 3: one 64 MiB message.

fn bench_bulk(t: &mut Table) -> Result<(), Box<dyn std::error::Error>> {
    let data: Vec<u8> = (0..BULK_LEN).map(|i| (i % 251) as u8).collect();

    let (typed_conn, theirs) = mp::Pipe::new::<Vec<u8>>()?;
    let mut typed_worker = mp::Process::new(bulk_sink, (theirs, 0));
    typed_worker.start()?;
    let (bytes_conn, theirs) = mp::Pipe::new::<Vec<u8>>()?;
    let mut bytes_worker = mp::Process::new(bulk_sink, (theirs, 1));
    bytes_worker.start()?;
    let (into_conn, theirs) = mp::Pipe::new::<Vec<u8>>()?;
    let mut into_worker = mp::Process::new(bulk_sink, (theirs, 2));
    into_worker.start()?;
    let mut raw = RawEcho::spawn("bulk")?;
    let mut raw_fresh = RawEcho::spawn("bulk-fresh")?;

    let expect = |reply: Vec<u8>| -> io::Result<()> {
        let n = <[u8; 8]>::try_from(reply.as_slice()).map(u64::from_le_bytes);
        match n {
            Ok(n) if n == BULK_LEN as u64 => Ok(()),
            _ => Err(io::Error::other(format!("bad length reply {reply:?}"))),
        }
    };
    // send() takes the Vec: the copy is made before the clock starts.
    let typed = |data: &Vec<u8>| -> Result<Duration, Box<dyn std::error::Error>> {
        let v = data.clone();
        let t0 = Instant::now();
        typed_conn.send(v)?;
        expect(typed_conn.recv_bytes()?)?;
        Ok(t0.elapsed())
    };
    let bytes =
        |conn: &mp::Connection<Vec<u8>>, data: &[u8]| -> Result<Duration, Box<dyn std::error::Error>> {
            let t0 = Instant::now();
            conn.send_bytes(data)?;
            expect(conn.recv_bytes()?)?;
            Ok(t0.elapsed())
        };

    let (mut s_typed, mut s_bytes, mut s_raw, mut s_fresh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut s_into = Vec::new();
    for i in 0..BULK_WARMUP + BULK_RUNS {
        // Rotate the order each round.
        let mut round = [Duration::ZERO; 5];
        for k in 0..5 {
            let which = (k + i) % 5;
            round[which] = match which {
                0 => raw.bulk(&data)?,
                1 => raw_fresh.bulk(&data)?,
                2 => bytes(&bytes_conn, &data)?,
                3 => bytes(&into_conn, &data)?,
                _ => typed(&data)?,
            };
        }
        if i >= BULK_WARMUP {
            s_raw.push(round[0]);
            s_fresh.push(round[1]);
            s_bytes.push(round[2]);
            s_into.push(round[3]);
            s_typed.push(round[4]);
        }
    }
    drop(typed_conn);
    drop(bytes_conn);
    drop(into_conn);
    typed_worker.join()?;
    bytes_worker.join()?;
    into_worker.join()?;
    raw.finish()?;
    raw_fresh.finish()?;

    let floor = Stats::of(&s_raw);
    t.section(
        &format!(
            "3. one {} MiB message to a child that replies with its length ({BULK_RUNS} runs, interleaved)",
            BULK_LEN >> 20
        ),
        true,
    );
    let floor_bw = mbps(floor.median);
    t.bulk_row("floor: raw socketpair write, child reads into a reused buffer", &floor, 1.0, "");
    let fresh = Stats::of(&s_fresh);
    t.bulk_row(
        "raw socketpair, child reads into a fresh Vec each time",
        &fresh,
        mbps(fresh.median) / floor_bw,
        "informational: page-fault floor for a new Vec",
    );
    for (name, short, s) in [
        ("mp send_bytes(&[u8]) / recv_bytes_into(reused)", "send_bytes+recv_bytes_into", &s_into),
        ("mp send_bytes(&[u8]) / recv_bytes()", "send_bytes", &s_bytes),
        ("mp send(Vec<u8>) / recv() (serde, postcard)", "send(Vec<u8>)", &s_typed),
    ] {
        let s = Stats::of(s);
        let ratio = mbps(s.median) / floor_bw;
        t.bulk_row(name, &s, ratio, &target(ratio >= 0.5, ">= 0.5x"));
        t.verdict(format!(
            "64 MiB {short}: mp {:.0} MB/s vs raw {floor_bw:.0} MB/s = {ratio:.2}x (target >= 0.5x): {}",
            mbps(s.median),
            pass(ratio >= 0.5)
        ));
    }
    let args = [BULK_LEN.to_string(), BULK_WARMUP.to_string(), BULK_RUNS.to_string()];
    match run_python("pipe_bandwidth.py", &args) {
        Ok(rows) => {
            for (_, s) in rows {
                t.bulk_row("CPython Connection.send_bytes / recv_bytes", &s, mbps(s.median) / floor_bw, "");
            }
        }
        Err(why) => t.skipped("CPython Connection.send_bytes / recv_bytes", &why),
    }
    Ok(())
}

fn mbps(per_message: f64) -> f64 {
    BULK_LEN as f64 / per_message / 1e6
}

// ---------------------------------------------------------------------------------------------
// The raw peer: a child of this binary started with std::process::Command, holding one end of
// a socket pair (close-on-exec cleared for the spawn only).

struct RawEcho {
    sock: UnixStream,
    child: Child,
}

impl RawEcho {
    fn spawn(mode: &str) -> io::Result<RawEcho> {
        let (sock, theirs) = UnixStream::pair()?;
        rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?;
        let child = Command::new(SELF_EXE)
            .env(RAW_ECHO, format!("{mode}:{}", theirs.as_raw_fd()))
            .stdin(Stdio::null())
            .spawn();
        // Close our copy at once, so no later child inherits it.
        drop(theirs);
        Ok(RawEcho { sock, child: child? })
    }

    /// Writes a length-prefixed message, reads the 8-byte length reply.
    fn bulk(&mut self, data: &[u8]) -> io::Result<Duration> {
        let mut reply = [0u8; 8];
        let t0 = Instant::now();
        self.sock.write_all(&(data.len() as u64).to_le_bytes())?;
        self.sock.write_all(data)?;
        self.sock.read_exact(&mut reply)?;
        let dt = t0.elapsed();
        if u64::from_le_bytes(reply) != data.len() as u64 {
            return Err(io::Error::other("raw echo child replied a wrong length"));
        }
        Ok(dt)
    }

    fn finish(mut self) -> io::Result<()> {
        drop(self.sock);
        let st = self.child.wait()?;
        if st.success() { Ok(()) } else { Err(io::Error::other(format!("raw echo child exited {st}"))) }
    }
}

/// The child side of [`RawEcho`]; never returns.
fn raw_echo_child(spec: &str) -> ! {
    let (mode, fd) = spec.split_once(':').expect("MP_BENCH_RAW_ECHO is <mode>:<fd>");
    let fd: i32 = fd.parse().expect("MP_BENCH_RAW_ECHO fd is a number");
    // SAFETY: the parent cleared close-on-exec on its end of a fresh socket pair and passed
    // that descriptor number here; nothing else in this process refers to it.
    let mut s = unsafe { UnixStream::from_raw_fd(fd) };
    let mut h = [0u8; 8];
    match mode {
        "pingpong" => {
            while s.read_exact(&mut h).is_ok() {
                if s.write_all(&h).is_err() {
                    break;
                }
            }
        }
        "bulk" | "bulk-fresh" => {
            let mut reused = Vec::new();
            while s.read_exact(&mut h).is_ok() {
                let n = u64::from_le_bytes(h) as usize;
                let fresh = if mode == "bulk-fresh" {
                    let mut v = vec![0u8; n];
                    if s.read_exact(&mut v).is_err() {
                        break;
                    }
                    Some(v)
                } else {
                    if reused.len() < n {
                        reused.resize(n, 0);
                    }
                    if s.read_exact(&mut reused[..n]).is_err() {
                        break;
                    }
                    None
                };
                if s.write_all(&(n as u64).to_le_bytes()).is_err() {
                    break;
                }
                drop(fresh);
            }
        }
        other => panic!("unknown raw echo mode {other}"),
    }
    std::process::exit(0)
}

// ---------------------------------------------------------------------------------------------
// CPython peers.

fn python_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python"))
}

fn python_version() -> String {
    match Command::new("python3").arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "python3 not found (CPython rows skipped)".to_string(),
    }
}

/// Runs a peer script; returns its `RESULT <name> <median_us> <min_us> <max_us>` lines.
fn run_python(script: &str, args: &[impl AsRef<str>]) -> Result<Vec<(String, Stats)>, String> {
    if std::env::var_os("MP_BENCH_NO_PYTHON").is_some() {
        return Err("MP_BENCH_NO_PYTHON is set".to_string());
    }
    let out = Command::new("python3")
        .arg(python_dir().join(script))
        .args(args.iter().map(AsRef::as_ref))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => "python3 not found".to_string(),
            _ => format!("cannot run python3: {e}"),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").trim().to_string();
        return Err(format!("{script} failed ({}): {last}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<(String, Stats)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "RESULT").then_some(())?;
            let name = it.next()?.to_string();
            let us: Vec<f64> = it.map_while(|x| x.parse().ok()).collect();
            let [median, min, max] = us[..] else {
                return None;
            };
            Some((name, Stats { median: median / 1e6, min: min / 1e6, max: max / 1e6 }))
        })
        .collect();
    if rows.is_empty() {
        return Err(format!("{script} printed no RESULT line"));
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Statistics and the table.

/// Seconds.
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut v: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Stats { median, min: v[0], max: v[n - 1] }
    }
}

fn fmt_dur(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.2} µs", secs * 1e6)
    }
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn target(ok: bool, what: &str) -> String {
    format!("target {what}: {}", pass(ok))
}

#[derive(Default)]
struct Table {
    out: String,
    verdicts: Vec<String>,
}

const NAME_W: usize = 62;

impl Table {
    fn section(&mut self, title: &str, bandwidth: bool) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        let _ = writeln!(self.out, "{title}");
        self.line(format!(
            "  {:<NAME_W$} {:>11} {:>11} {:>11} {:>10} {:>7}  note",
            "benchmark",
            "median",
            "min",
            "max",
            if bandwidth { "bandwidth" } else { "" },
            "ratio"
        ));
    }

    fn latency_row(&mut self, name: &str, s: &Stats, ratio: f64, note: &str) {
        self.line(format!(
            "  {name:<NAME_W$} {:>11} {:>11} {:>11} {:>10} {:>6.2}x  {note}",
            fmt_dur(s.median),
            fmt_dur(s.min),
            fmt_dur(s.max),
            "",
            ratio
        ));
    }

    fn bulk_row(&mut self, name: &str, s: &Stats, ratio: f64, note: &str) {
        self.line(format!(
            "  {name:<NAME_W$} {:>11} {:>11} {:>11} {:>10} {:>6.2}x  {note}",
            fmt_dur(s.median),
            fmt_dur(s.min),
            fmt_dur(s.max),
            format!("{:.0} MB/s", mbps(s.median)),
            ratio
        ));
    }

    fn line(&mut self, l: String) {
        self.out.push_str(l.trim_end());
        self.out.push('\n');
    }

    fn skipped(&mut self, name: &str, why: &str) {
        let _ = writeln!(self.out, "  {name:<NAME_W$} skipped ({why})");
    }

    fn verdict(&mut self, v: String) {
        self.verdicts.push(v);
    }
}

//! Manager benchmarks: `DictProxy` insert+get pairs next to CPython's `Manager().dict()`
//! proxy, a raw Unix-socket round trip (8 bytes, ping-pong with a child) and an mp frame
//! round trip (the proxies' transport), in one run.
//!
//! ```text
//! cargo bench --bench managers
//! ```
//!
//! Targets: a proxy call within 1.5x of the raw round trip, and 4x CPython's proxy call or
//! better. The three Rust measurements take turns, batch by batch, so a change in the load of
//! the machine hits them alike. A second run of this binary with `MP_BUSY_POLL=0` measures
//! the call again with the managers' busy-polling off (sleep in `recv` as the raw peer does).
//! `MP_BENCH_NO_PYTHON=1` skips the CPython rows. The binary is its own worker.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

mod common;
use common::python_rows;

/// Echoes 8-byte messages on a raw Unix socket until the other end closes.
#[mp::worker]
fn echo(path: String) {
    let mut s = UnixStream::connect(path).unwrap();
    let mut b = [0u8; 8];
    while s.read_exact(&mut b).is_ok() {
        s.write_all(&b).unwrap();
    }
}

/// Echoes mp frames (`send_bytes`) until the other end closes.
#[mp::worker]
fn echo_frames(c: mp::Connection<()>) {
    while let Ok(b) = c.recv_bytes() {
        c.send_bytes(&b).unwrap();
    }
}

/// `pairs` insert+get pairs from a child, for the several-clients row.
#[mp::worker]
fn pairs_in_child(d: mp::DictProxy<u64, u64>, base: u64, pairs: u64) {
    for i in base..base + pairs {
        d.insert(i, i).unwrap();
        assert_eq!(d.get(&i).unwrap(), Some(i));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Microseconds per iteration of `f`, over `n` iterations.
fn per_iter_us(n: u64, mut f: impl FnMut(u64)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_secs_f64() / n as f64 * 1e6
}

/// Medians (µs) of the raw round trip, the frame round trip and one proxy call.
struct Latency {
    raw_us: f64,
    frame_us: f64,
    call_us: f64,
}

/// Raw, frame and proxy-call round trips, batch by batch in turns; returns the manager and
/// the dict for the next rows.
fn latencies() -> (Latency, mp::Manager, mp::DictProxy<u64, u64>) {
    // Raw socket peer.
    let dir = std::env::temp_dir().join(format!("mp-bench-raw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let mut raw_child = mp::Process::new(echo, path.display().to_string());
    raw_child.start().unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    let mut b = *b"12345678";
    // Frame peer.
    let (frames, theirs) = mp::Pipe::new::<()>().unwrap();
    let mut frame_child = mp::Process::new(echo_frames, theirs);
    frame_child.start().unwrap();
    let msg = [7u8; 24];
    // The manager.
    let m = mp::Manager::new().expect("manager");
    let d = m.dict::<u64, u64>().unwrap();

    let batch = 4_000u64;
    let (mut raw_us, mut frame_us, mut call_us) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..8u64 {
        let r = per_iter_us(batch, |_| {
            raw.write_all(&b).unwrap();
            raw.read_exact(&mut b).unwrap();
        });
        let f = per_iter_us(batch, |_| {
            frames.send_bytes(&msg).unwrap();
            frames.recv_bytes().unwrap();
        });
        let base = round * batch;
        // Two calls per iteration: the result is per pair.
        let c = per_iter_us(batch / 2, |i| {
            d.insert(base + i, i).unwrap();
            assert_eq!(d.get(&(base + i)).unwrap(), Some(i));
        }) / 2.0;
        if round > 0 {
            // Round 0 warms up.
            raw_us.push(r);
            frame_us.push(f);
            call_us.push(c);
        }
    }
    let l = Latency { raw_us: median(raw_us), frame_us: median(frame_us), call_us: median(call_us) };
    drop(raw);
    drop(frames);
    raw_child.join().unwrap();
    frame_child.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (l, m, d)
}

fn main() {
    mp::init();
    if std::env::var_os("MP_BENCH_LATENCY_ONLY").is_some() {
        let (l, _m, _d) = latencies();
        println!("latency {} {} {}", l.raw_us, l.frame_us, l.call_us);
        return;
    }
    println!("cargo bench --bench managers   ({} CPUs)\n", mp::cpu_count());
    let py = python_rows("managers.py", &[], "us");
    // The same measurement with busy-polling off, in a process of its own (the setting is
    // read once per process, and inherited by the manager it starts).
    let no_poll = std::process::Command::new(std::env::current_exe().expect("this binary"))
        .env("MP_BENCH_LATENCY_ONLY", "1")
        .env("MP_BUSY_POLL", "0")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|out| {
            let line = out.lines().find(|l| l.starts_with("latency "))?.to_string();
            let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            (v.len() == 3).then(|| Latency { raw_us: v[0], frame_us: v[1], call_us: v[2] })
        });
    let (Latency { raw_us, frame_us, call_us }, _m, d) = latencies();

    // Two child processes calling at once (one connection and one server thread each).
    let pairs = 5_000u64;
    let t = Instant::now();
    let mut ps: Vec<_> = (0..2u64)
        .map(|k| mp::Process::new(pairs_in_child, (d.clone(), 1_000_000 * (k + 1), pairs)))
        .collect();
    ps.iter_mut().for_each(|p| p.start().unwrap());
    ps.iter_mut().for_each(|p| p.join().unwrap());
    let two_rate = 2.0 * pairs as f64 / t.elapsed().as_secs_f64();

    let pair_rate = 1e6 / (2.0 * call_us);
    println!("{:<36} {:>15} {:>22}  peer", "workload", "mp", "ratio");
    let (vs_py, peer) = match py.get("manager_dict_call") {
        Some(&us) => (
            format!("{:.1}x CPython", us / call_us),
            format!("CPython {:.1} us/call, {:.1} k pairs/s", us, 1e6 / (2.0 * us) / 1e3),
        ),
        None => ("-".into(), "CPython skipped".into()),
    };
    let row = |a: &str, b: String, c: String, d: &str| println!("{a:<36} {b:>15} {c:>22}  {d}");
    row("Manager dict insert+get pairs", format!("{:.1} k pairs/s", pair_rate / 1e3), vs_py, &peer);
    row(
        "  one proxy call",
        format!("{call_us:.1} us"),
        format!("{:.2}x raw round trip", call_us / raw_us),
        &format!("raw Unix-socket round trip {raw_us:.1} us (target <= 1.5x)"),
    );
    if let Some(l) = &no_poll {
        row(
            "  same, busy-polling off",
            format!("{:.1} us", l.call_us),
            format!("{:.2}x raw round trip", l.call_us / l.raw_us),
            &format!("MP_BUSY_POLL=0, its own run: raw {:.1} us, frame {:.1} us", l.raw_us, l.frame_us),
        );
    }
    row(
        "  mp frame round trip",
        format!("{frame_us:.1} us"),
        format!("{:.2}x raw round trip", frame_us / raw_us),
        "24-byte Connection::send_bytes echo: the proxies' transport",
    );
    if let Some(&us) = py.get("raw_roundtrip") {
        row(
            "  raw round trip, CPython",
            format!("{us:.1} us"),
            "-".into(),
            "socketpair ping-pong, forked child",
        );
    }
    row(
        "  2 processes calling at once",
        format!("{:.1} k pairs/s", two_rate / 1e3),
        format!("{:.2}x one caller", two_rate / pair_rate),
        "one connection and server thread each",
    );
}

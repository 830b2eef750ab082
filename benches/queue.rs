//! Queue benchmarks: 10^5 small messages and one 64 MiB message from one process to another
//! through `mp::Queue`, next to CPython's `Queue`/`SimpleQueue`, a raw socket pair (the
//! "socket per message" floor), a thread channel (no process boundary) and memcpy, in one run.
//!
//! ```text
//! cargo bench --bench queue
//! ```
//!
//! Every run goes parent → a child that is already running (spawn is not timed) and ends when
//! the child has acknowledged the last message. Medians of several runs; ratios are what the
//! targets are stated in. `MP_BENCH_NO_PYTHON=1` skips the CPython rows.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use mp::Queue;

mod common;
use common::{python_rows, timed};

const SMALL: usize = 100_000;
const BIG: usize = 64 << 20;
const RAW_SINK: &str = "MP_BENCH_RAW_SINK";

/// Each run: a count, then that many messages; acknowledges with the count.
#[mp::worker]
fn small_sink(q: Queue<u64>, done: Queue<u64>) {
    while let Ok(n) = q.get() {
        if n == u64::MAX {
            return;
        }
        let mut sum = 0u64;
        for _ in 0..n {
            sum = sum.wrapping_add(q.get().unwrap());
        }
        std::hint::black_box(sum);
        done.put(n).unwrap();
    }
}

/// Acknowledges each message with its length (before freeing it: the transfer is timed, not
/// the deallocation); an empty message ends it.
#[mp::worker]
fn big_sink(q: Queue<Vec<u8>>, done: Queue<u64>) {
    while let Ok(v) = q.get() {
        if v.is_empty() {
            return;
        }
        done.put(v.len() as u64).unwrap();
        drop(v);
    }
}

/// The raw floor's child: reads `u64` byte counts, then that many bytes (into one reused
/// buffer), and answers each with one byte, on the socket it got as stdin.
fn raw_sink() -> ! {
    let mut s = std::io::stdin().lock();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut len = [0u8; 8];
        if s.read_exact(&mut len).is_err() {
            std::process::exit(0);
        }
        let mut left = u64::from_le_bytes(len) as usize;
        while left > 0 {
            let n = s.read(&mut buf[..left.min(1 << 20)]).unwrap();
            assert!(n > 0);
            left -= n;
        }
        std::io::stdout().write_all(&[1]).unwrap();
        std::io::stdout().flush().unwrap();
    }
}

struct RawPeer {
    sock: UnixStream,
    child: std::process::Child,
}

impl RawPeer {
    fn spawn() -> RawPeer {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let back = theirs.try_clone().unwrap();
        let child = Command::new("/proc/self/exe")
            .env(RAW_SINK, "1")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(back)))
            .spawn()
            .unwrap();
        RawPeer { sock: ours, child }
    }

    /// `count` messages of `each` bytes, one `write` each, then waits for the ack.
    fn send(&mut self, count: usize, each: &[u8]) {
        self.sock.write_all(&((count * each.len()) as u64).to_le_bytes()).unwrap();
        for _ in 0..count {
            self.sock.write_all(each).unwrap();
        }
        let mut ack = [0u8; 1];
        self.sock.read_exact(&mut ack).unwrap();
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
    }
}

fn main() {
    if std::env::var_os(RAW_SINK).is_some() {
        raw_sink();
    }
    mp::init();
    println!("cargo bench --bench queue   ({} CPUs)\n", mp::cpu_count());
    let py = python_rows("mp_queue_peer.py", &[SMALL.to_string(), BIG.to_string()], "seconds");
    let mut rows: Vec<[String; 3]> = Vec::new();

    // 10^5 small messages.
    let (q, done) = (Queue::<u64>::new().unwrap(), Queue::<u64>::new().unwrap());
    let mut child = mp::Process::new(small_sink, (q.clone(), done.clone()));
    child.start().unwrap();
    let ours = timed(7, || {
        q.put(SMALL as u64).unwrap();
        for i in 0..SMALL as u64 {
            q.put(i).unwrap();
        }
        assert_eq!(done.get().unwrap(), SMALL as u64);
    });
    q.put(u64::MAX).unwrap();
    child.join().unwrap();
    let mut raw = RawPeer::spawn();
    let raw_small = timed(7, || raw.send(SMALL, &7u64.to_le_bytes()));
    let threads = timed(7, || {
        let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(1024);
        let t = std::thread::spawn(move || rx.iter().fold(0u64, u64::wrapping_add));
        for i in 0..SMALL as u64 {
            tx.send(i).unwrap();
        }
        drop(tx);
        std::hint::black_box(t.join().unwrap());
    });
    let rate = |d: Duration| SMALL as f64 / d.as_secs_f64();
    let ours_rate = rate(ours);
    let mut vs = format!(
        "{:.2}x raw socket, 1 write/msg ({:.2} M/s)",
        ours_rate / rate(raw_small),
        rate(raw_small) / 1e6
    );
    for (key, name) in [("queue_small", "CPython Queue"), ("simplequeue_small", "CPython SimpleQueue")] {
        if let Some(&s) = py.get(key) {
            vs += &format!(
                "; {:.1}x {name} ({:.0} k/s)",
                ours_rate / (SMALL as f64 / s),
                SMALL as f64 / s / 1e3
            );
        }
    }
    vs += &format!("; threads' mpsc {:.2} M/s", rate(threads) / 1e6);
    rows.push([
        "10^5 u64 messages, process to process".into(),
        format!("{:.2} M msgs/s", ours_rate / 1e6),
        vs,
    ]);

    // One 64 MiB message.
    let (q, done) = (Queue::<Vec<u8>>::new().unwrap(), Queue::<u64>::new().unwrap());
    let mut child = mp::Process::new(big_sink, (q.clone(), done.clone()));
    child.start().unwrap();
    let data = vec![0x5au8; BIG];
    let ours = timed(9, || {
        q.put(data.clone()).unwrap();
        assert_eq!(done.get().unwrap(), BIG as u64);
    });
    // The clone is not the queue's cost: time it alone and take it off.
    let clone = timed(9, || drop(std::hint::black_box(data.clone())));
    q.put(Vec::new()).unwrap();
    child.join().unwrap();
    let raw_big = timed(9, || raw.send(1, &data));
    drop(raw);
    let mut dst = vec![0u8; BIG];
    let memcpy = timed(9, || dst.copy_from_slice(std::hint::black_box(&data)));
    let mbps = |d: Duration| BIG as f64 / d.as_secs_f64() / 1e6;
    let ours_net = ours.saturating_sub(clone).max(Duration::from_micros(1));
    let mut vs = format!(
        "{:.2}x raw socket ({:.0} MB/s); {:.2}x memcpy ({:.0} MB/s)",
        mbps(ours_net) / mbps(raw_big),
        mbps(raw_big),
        mbps(ours_net) / mbps(memcpy),
        mbps(memcpy)
    );
    if let Some(&s) = py.get("queue_big") {
        vs +=
            &format!("; {:.1}x CPython Queue ({:.0} MB/s)", s / ours_net.as_secs_f64(), BIG as f64 / s / 1e6);
    }
    rows.push(["one 64 MiB Vec<u8>, process to process".into(), format!("{:.0} MB/s", mbps(ours_net)), vs]);

    println!("{:<42} {:>16}  ratios", "workload", "mp::Queue");
    for [a, b, c] in &rows {
        println!("{a:<42} {b:>16}  {c}");
    }
}

//! What TLS costs (feature `tls`): the same `Listener`/`Client` traffic over plain TCP and
//! over TLS, to an echo child on loopback, and one manager dict call to a TCP manager
//! without and with TLS, in one run, with the ratios.
//!
//! ```text
//! cargo bench --features tls --bench tls
//! ```
//!
//! Plain and TLS take turns batch by batch, so a change in the load of the machine hits
//! both alike. The certificate is self-signed, made at start with rcgen. The binary is its
//! own worker: `mp::init()` comes first.

use std::time::{Duration, Instant};

mod common;
use common::{median, timed};

const KEY: &[u8] = b"bench-key";
const SMALL: usize = 64;
const BULK: usize = 64 << 20;
/// Round trips per batch, and batches per kind.
const BATCH: u32 = 2000;
const BATCHES: usize = 9;

/// Connects to `addr` (over TLS, trusting `ca`, when given) and echoes 64-byte messages; a
/// larger message is answered with its length, as 8 little-endian bytes.
#[mp::worker]
fn echo(addr: mp::Address, ca: Option<String>) {
    let conn: mp::Connection<()> = match ca {
        None => mp::Client::connect(&addr, KEY).unwrap(),
        Some(ca) => {
            let tls = mp::TlsClientConfig::from_ca_pem(ca).unwrap();
            mp::Client::connect_tls(&addr, KEY, &tls).unwrap()
        }
    };
    let mut buf = Vec::new();
    while conn.recv_bytes_into(&mut buf).is_ok() {
        let sent = if buf.len() > SMALL {
            conn.send_bytes(&(buf.len() as u64).to_le_bytes())
        } else {
            conn.send_bytes(&buf)
        };
        if sent.is_err() {
            return;
        }
    }
}

/// A connection to an echo child, and the child.
struct Peer {
    conn: mp::Connection<()>,
    child: mp::Process<echo>,
}

impl Peer {
    fn start(listener: mp::Listener, ca: Option<String>) -> Peer {
        let mut child = mp::Process::new(echo, (listener.address().clone(), ca));
        child.start().unwrap();
        let conn = listener.accept::<()>().unwrap();
        Peer { conn, child }
    }

    /// Microseconds per 64-byte round trip, over one batch.
    fn round_trips(&self) -> f64 {
        let msg = [7u8; SMALL];
        let mut buf = Vec::with_capacity(SMALL);
        let t = Instant::now();
        for _ in 0..BATCH {
            self.conn.send_bytes(&msg).unwrap();
            self.conn.recv_bytes_into(&mut buf).unwrap();
        }
        t.elapsed().as_secs_f64() / f64::from(BATCH) * 1e6
    }

    /// One 64 MiB message and its 8-byte answer.
    fn bulk(&self, data: &[u8]) {
        self.conn.send_bytes(data).unwrap();
        let reply = self.conn.recv_bytes().unwrap();
        assert_eq!(reply, (data.len() as u64).to_le_bytes());
    }

    fn stop(mut self) {
        drop(self.conn);
        self.child.join_timeout(Duration::from_secs(30)).unwrap();
    }
}

/// Microseconds per dict call (an insert, then a get), over one batch.
fn dict_calls(d: &mp::DictProxy<u32, u64>) -> f64 {
    let t = Instant::now();
    for i in 0..BATCH / 2 {
        d.insert(i, u64::from(i)).unwrap();
        std::hint::black_box(d.get(&i).unwrap());
    }
    t.elapsed().as_secs_f64() / f64::from(BATCH) * 1e6
}

/// Medians of `plain` and `tls`, measured in turns.
fn in_turns(mut plain: impl FnMut() -> f64, mut tls: impl FnMut() -> f64) -> (f64, f64) {
    plain();
    tls();
    let (mut p, mut t) = (Vec::new(), Vec::new());
    for _ in 0..BATCHES {
        p.push(plain());
        t.push(tls());
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (med(p), med(t))
}

fn main() {
    mp::init();
    println!("cargo bench --features tls --bench tls   ({} CPUs)\n", mp::cpu_count());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let server = mp::TlsServerConfig::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem()).unwrap();
    let ca = cert.cert.pem();

    let plain = Peer::start(mp::Listener::bind("127.0.0.1:0", KEY).unwrap(), None);
    let tls = Peer::start(mp::Listener::bind_tls("127.0.0.1:0", KEY, &server).unwrap(), Some(ca.clone()));
    let mut rows: Vec<[String; 4]> = Vec::new();

    let (p, t) = in_turns(|| plain.round_trips(), || tls.round_trips());
    rows.push([
        "Listener/Client 64-byte round trip".into(),
        format!("{p:.1} us"),
        format!("{t:.1} us"),
        format!("{:.2}x", t / p),
    ]);

    let data = vec![0xa5u8; BULK];
    let mut p = Vec::new();
    let mut t = Vec::new();
    for _ in 0..5 {
        p.push(timed(1, || plain.bulk(&data)));
        t.push(timed(1, || tls.bulk(&data)));
    }
    let (p, t) = (median(p), median(t));
    let mbps = |d: Duration| BULK as f64 / d.as_secs_f64() / 1e6;
    rows.push([
        "64 MiB send_bytes + 8-byte answer".into(),
        format!("{:.0} MB/s", mbps(p)),
        format!("{:.0} MB/s", mbps(t)),
        format!("{:.2}x", t.as_secs_f64() / p.as_secs_f64()),
    ]);
    plain.stop();
    tls.stop();

    let plain_m = mp::Manager::builder().address("127.0.0.1:0").authkey(KEY.to_vec()).start().unwrap();
    let tls_m =
        mp::Manager::builder().address("127.0.0.1:0").authkey(KEY.to_vec()).tls(server).start().unwrap();
    let (pd, td) = (plain_m.dict::<u32, u64>().unwrap(), tls_m.dict::<u32, u64>().unwrap());
    let (p, t) = in_turns(|| dict_calls(&pd), || dict_calls(&td));
    rows.push([
        "Manager dict call over TCP (insert or get)".into(),
        format!("{p:.1} us"),
        format!("{t:.1} us"),
        format!("{:.2}x", t / p),
    ]);

    println!("{:<44} {:>12} {:>12} {:>14}", "workload (loopback)", "plain TCP", "TLS", "TLS time/plain");
    for [a, b, c, d] in &rows {
        println!("{a:<44} {b:>12} {c:>12} {d:>14}");
    }
}

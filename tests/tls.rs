//! TLS (feature `tls`): Listener/Client round trips through a child, certificates that do not
//! check out (unknown CA, wrong name), plaintext and TLS peers meeting the other kind (both
//! fail at once, on both sides), bad PEM, a large message both ways, descriptors freed when
//! connections close, and a listening pool over TLS served by a worker host (this binary
//! with `MP_CONNECT` and `MP_TLS_CA`). Managers over TLS: one started with a certificate used
//! by two client processes that connect with its CA, proxies handed to workers (local, and
//! on a worker host that has no TLS settings of its own), one served in a process of its own,
//! plaintext and TLS meeting the other kind, an unknown CA or name, TLS on a Unix address.
//!
//! Certificates are made at test time with rcgen: a CA, and a listener certificate it signs
//! for `localhost` and `127.0.0.1`.
//!
//! This binary is its own driver (harness = false): `main` calls `mp::init()` first, where
//! worker hosts and their workers branch off, then runs the cases named on the command line
//! (all by default).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mp::{
    Address, Client, Connection, DictProxy, Error, Listener, Manager, Pipe, Pool, Process, QueueProxy,
    TlsClientConfig, TlsServerConfig,
};

const KEY: &[u8] = b"tls-test-key";

/// A CA and a listener certificate it signed, as PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: another CA is unknown, not a namesake with a bad signature.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca.distinguished_name.push(DnType::CommonName, format!("mp test CA {n}"));
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        Pki { ca: ca.as_ref().pem(), cert: leaf.pem(), key: leaf_key.serialize_pem() }
    }

    fn server(&self) -> TlsServerConfig {
        TlsServerConfig::from_pem(&self.cert, &self.key).unwrap()
    }

    fn client(&self) -> TlsClientConfig {
        TlsClientConfig::from_ca_pem(&self.ca).unwrap()
    }

    /// The CA written to a file, for `MP_TLS_CA`; removed on drop.
    fn ca_file(&self) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "mp-tls-test-ca-{}-{:?}.pem",
            std::process::id(),
            Instant::now()
        ));
        std::fs::write(&path, &self.ca).unwrap();
        TempFile(path)
    }
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

/// Connects over TLS, trusting `ca`, and doubles what it is sent until the listener hangs up;
/// returns how many it doubled.
#[mp::worker]
fn tls_doubler(addr: Address, ca: String) -> u32 {
    let tls = TlsClientConfig::from_ca_pem(ca).unwrap();
    let conn: Connection<u64> = Client::connect_tls(&addr, KEY, &tls).unwrap();
    assert!(conn.is_remote());
    let mut n = 0;
    while let Ok(x) = conn.recv() {
        conn.send(2 * x).unwrap();
        n += 1;
    }
    n
}

/// A client process of a TLS manager: connects trusting `ca`, takes jobs until `None` and
/// records their squares; returns how many it took.
#[mp::worker]
fn take_jobs_over_tls(addr: String, ca: String, who: u32) -> u32 {
    let tls = TlsClientConfig::from_ca_pem(ca).unwrap();
    let m = Manager::connect_tls(addr.as_str(), KEY, &tls).unwrap();
    common::take_jobs_from(&m, who)
}

/// Uses a queue proxy it was handed, in a process that never connected to its manager.
#[mp::worker]
fn put_from_a_child(q: QueueProxy<String>, s: String) {
    q.put(s).unwrap();
}

/// Runs on a pool's worker host: records `n * n` through a proxy it was handed.
#[mp::worker]
fn square_into(d: DictProxy<u64, u64>, n: u64) -> u64 {
    d.insert(n, n * n).unwrap();
    n
}

/// Serves a TLS manager in this process, on a free port, until a client stops it.
#[mp::worker]
fn serve_tls_here(cert: String, key: String, report: Connection<String>) -> String {
    let tls = TlsServerConfig::from_pem(cert, key).unwrap();
    let server = Manager::builder().address("127.0.0.1:0").authkey(KEY.to_vec()).tls(tls).server().unwrap();
    report.send(server.address().to_string()).unwrap();
    server.serve_forever().unwrap();
    "stopped".to_string()
}

type Conn = Result<Connection<Vec<u8>>, Error>;

/// Runs `accept` on a thread while the client connects here; returns (listener, server,
/// client) results. Timeouts are long: an `Auth` error (not a `Timeout`) shows nobody waited.
fn both_sides(listener: Listener, client: impl FnOnce(&Address) -> Conn) -> (Listener, Conn, Conn) {
    let addr = listener.address().clone();
    let server = std::thread::spawn(move || {
        let r = listener.accept_timeout::<Vec<u8>>(Duration::from_secs(60));
        (listener, r)
    });
    let c = client(&addr);
    let (listener, s) = server.join().unwrap();
    (listener, s, c)
}

fn auth_message(r: &Conn, side: &str) -> String {
    match r {
        Err(Error::Auth(m)) => m.clone(),
        other => panic!("{side}: expected Error::Auth, got {:?}", other.as_ref().map(|_| "a connection")),
    }
}

/// Checks that `listener` still serves a good client.
fn still_works(listener: Listener, pki: &Pki) {
    let tls = pki.client();
    let (_l, s, c) = both_sides(listener, |a| Client::connect_tls(a, KEY, &tls));
    c.unwrap().send(vec![7]).unwrap();
    assert_eq!(s.unwrap().recv().unwrap(), vec![7]);
}

fn smoke() {
    let pki = Pki::new();
    let listener = Listener::bind_tls("127.0.0.1:0", KEY, &pki.server()).unwrap();
    assert!(listener.is_tls());
    let mut p = Process::new(tls_doubler, (listener.address().clone(), pki.ca.clone()));
    p.start().unwrap();
    let conn = listener.accept::<u64>().unwrap();
    assert!(conn.is_remote());
    for x in [1, 20, 300] {
        conn.send(x).unwrap();
        assert_eq!(conn.recv().unwrap(), 2 * x);
    }
    drop(conn);
    assert_eq!(p.join().unwrap(), 3);
    common::assert_reaped(p.pid().unwrap());
}

fn the_certificate_name_is_checked() {
    let pki = Pki::new();
    let listener = Listener::bind_tls("127.0.0.1:0", KEY, &pki.server()).unwrap();
    let port = listener.address().to_string().rsplit(':').next().unwrap().to_string();
    // By the name the certificate carries: fine.
    let tls = pki.client();
    let (listener, s, c) =
        both_sides(listener, |_| Client::connect_tls(format!("localhost:{port}"), KEY, &tls));
    c.unwrap().send(vec![1, 2]).unwrap();
    assert_eq!(s.unwrap().recv().unwrap(), vec![1, 2]);
    // Another name: refused, saying so, on both sides.
    let tls = pki.client().server_name("pool.example").unwrap();
    let (listener, s, c) = both_sides(listener, |a| Client::connect_tls(a, KEY, &tls));
    let m = auth_message(&c, "client");
    assert!(m.contains("not issued for pool.example") && m.contains("server_name"), "{m}");
    let m = auth_message(&s, "listener");
    assert!(m.contains("TLS"), "{m}");
    still_works(listener, &pki);
}

fn a_certificate_from_another_ca_is_refused_on_both_sides() {
    let pki = Pki::new();
    let other = Pki::new();
    let listener = Listener::bind_tls("127.0.0.1:0", KEY, &pki.server()).unwrap();
    let tls = other.client();
    let (listener, s, c) = both_sides(listener, |a| Client::connect_tls(a, KEY, &tls));
    let m = auth_message(&c, "client");
    assert!(m.contains("not signed by a CA this client trusts"), "{m}");
    let m = auth_message(&s, "listener");
    assert!(m.contains("TLS"), "{m}");
    still_works(listener, &pki);
}

fn a_plaintext_client_is_refused_at_once_on_both_sides() {
    let pki = Pki::new();
    let listener = Listener::bind_tls("127.0.0.1:0", KEY, &pki.server()).unwrap();
    let (listener, s, c) = both_sides(listener, |a| Client::connect_timeout(a, KEY, Duration::from_secs(60)));
    let m = auth_message(&c, "client");
    assert!(m.contains("uses TLS") && m.contains("connect_tls"), "{m}");
    let m = auth_message(&s, "listener");
    assert!(m.contains("TLS"), "{m}");
    still_works(listener, &pki);
}

fn a_tls_client_to_a_plaintext_listener_is_refused_at_once_on_both_sides() {
    let pki = Pki::new();
    let listener = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let tls = pki.client();
    let (listener, s, c) =
        both_sides(listener, |a| Client::connect_tls_timeout(a, KEY, &tls, Duration::from_secs(60)));
    let m = auth_message(&c, "client");
    assert!(m.contains("does not use TLS"), "{m}");
    let m = auth_message(&s, "listener");
    assert!(m.contains("wants TLS"), "{m}");
    // The plaintext listener still takes plaintext clients.
    let (_l, s, c) = both_sides(listener, |a| Client::connect(a, KEY));
    c.unwrap().send(vec![3]).unwrap();
    assert_eq!(s.unwrap().recv().unwrap(), vec![3]);
}

fn a_wrong_key_inside_tls_is_still_refused() {
    let pki = Pki::new();
    let listener = Listener::bind_tls("127.0.0.1:0", KEY, &pki.server()).unwrap();
    let tls = pki.client();
    let (listener, s, c) = both_sides(listener, |a| Client::connect_tls(a, b"wrong", &tls));
    // The same errors as without TLS.
    let m = auth_message(&c, "client");
    assert!(m.contains("refused the handshake"), "{m}");
    let m = auth_message(&s, "listener");
    assert!(m.contains("authkey"), "{m}");
    still_works(listener, &pki);
}

fn bad_pem_is_a_clear_error() {
    let pki = Pki::new();
    let other = Pki::new();
    for r in [
        TlsServerConfig::from_pem("garbage", &pki.key),
        TlsServerConfig::from_pem(&pki.cert, "garbage"),
        // A key that is not the certificate's.
        TlsServerConfig::from_pem(&pki.cert, &other.key),
    ] {
        match r {
            Err(Error::Invalid(m)) => assert!(m.contains("certificate") || m.contains("key"), "{m}"),
            other => panic!("expected Error::Invalid, got {other:?}"),
        }
    }
    match TlsClientConfig::from_ca_pem(&pki.key) {
        Err(Error::Invalid(m)) => assert!(m.contains("no certificate"), "{m}"),
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
    assert!(matches!(TlsClientConfig::from_ca_file("/nonexistent/ca.pem"), Err(Error::Io { .. })));
    // TLS is for TCP.
    let unix = Address::unix_temp();
    assert!(matches!(Listener::bind_tls(&unix, KEY, &pki.server()), Err(Error::Invalid(_))));
    assert!(matches!(Client::connect_tls::<()>(&unix, KEY, &pki.client()), Err(Error::Invalid(_))));
}

fn a_large_message_crosses_both_ways() {
    let pki = Pki::new();
    let listener = Listener::bind_tls("127.0.0.1:0", KEY, &pki.server()).unwrap();
    let tls = pki.client();
    let (_l, s, c) = both_sides(listener, |a| Client::connect_tls(a, KEY, &tls));
    let (s, c) = (s.unwrap(), c.unwrap());
    let big: Vec<u8> = (0..24 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expect = big.clone();
    // Echoed back, then a second message while the first is still being read.
    let echo = std::thread::spawn(move || {
        let got = s.recv().unwrap();
        s.send(got).unwrap();
        s.send(vec![5; 8 << 20]).unwrap();
    });
    c.send(big).unwrap();
    assert_eq!(c.recv().unwrap(), expect);
    assert_eq!(c.recv().unwrap(), vec![5; 8 << 20]);
    echo.join().unwrap();
    // The listener's side closed: the client sees the end, not a hang.
    assert!(matches!(c.recv_timeout(Duration::from_secs(60)), Err(Error::Disconnected { .. })));
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// This process's TLS pump threads.
fn pumps() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm")).unwrap_or_default();
            comm.trim() == "mp-tls"
        })
        .count()
}

/// Waits (up to 30 s) until no pump thread is left, as happens once every TLS connection is
/// closed on both ends; true if so.
fn pumps_ended() -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    while pumps() > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    pumps() == 0
}

fn closed_connections_free_their_descriptors() {
    let pki = Pki::new();
    // The connections of the cases before end first (their pumps finish on their own).
    assert!(pumps_ended(), "pump threads of earlier cases are still running");
    let before = open_fds();
    {
        let listener = Listener::bind_tls("127.0.0.1:0", KEY, &pki.server()).unwrap();
        let tls = pki.client();
        let mut listener = listener;
        for i in 0..5u8 {
            let (l, s, c) = both_sides(listener, |a| Client::connect_tls(a, KEY, &tls));
            listener = l;
            let (s, c) = (s.unwrap(), c.unwrap());
            c.send(vec![i]).unwrap();
            assert_eq!(s.recv().unwrap(), vec![i]);
            // One side drops first, then the other.
            if i % 2 == 0 { drop(s) } else { drop(c) }
        }
        // A refused client too.
        let (l, _s, _c) = both_sides(listener, |a| Client::connect_timeout(a, KEY, Duration::from_secs(60)));
        drop(l);
    }
    // The pump threads end once both ends are closed, closing their sockets.
    assert!(pumps_ended(), "pump threads still running after their connections closed");
    assert_eq!(open_fds(), before, "descriptors left open after the connections closed");
}

/// A manager started with `pki`'s certificate on a free loopback port.
fn tls_manager(pki: &Pki) -> Manager {
    Manager::builder().address("127.0.0.1:0").authkey(KEY.to_vec()).tls(pki.server()).start().unwrap()
}

fn manager_auth_message(r: Result<Manager, Error>) -> String {
    match r {
        Err(Error::Auth(m)) => m,
        other => panic!("expected Error::Auth, got {other:?}"),
    }
}

fn a_tls_manager_serves_two_client_processes() {
    let pki = Pki::new();
    let mut m = tls_manager(&pki);
    assert!(m.address().is_tcp());
    let jobs = m.queue::<Option<u64>>().unwrap();
    let results = m.dict::<u64, (u64, u32)>().unwrap();
    m.shared().set("jobs", jobs.clone()).unwrap();
    m.shared().set("results", results.clone()).unwrap();
    for n in 0..40 {
        jobs.put(Some(n)).unwrap();
    }
    let mut clients: Vec<_> = (0..2)
        .map(|who| Process::new(take_jobs_over_tls, (m.address().to_string(), pki.ca.clone(), who)))
        .collect();
    clients.iter_mut().for_each(|p| p.start().unwrap());
    for _ in 0..2 {
        jobs.put(None).unwrap();
    }
    let done: u32 = clients.iter_mut().map(|p| p.join().unwrap()).sum();
    assert_eq!(done, 40);
    assert_eq!(results.len().unwrap(), 40);
    for n in 0..40 {
        assert_eq!(results.get(&n).unwrap().map(|r| r.0), Some(n * n));
    }
    for p in &clients {
        common::assert_reaped(p.pid().unwrap());
    }
    // This process reaches it too, by the name on its certificate, with the CA.
    let port = m.address().to_string().rsplit(':').next().unwrap().to_string();
    let c = Manager::connect_tls(format!("localhost:{port}"), KEY, &pki.client()).unwrap();
    let d: DictProxy<u64, (u64, u32)> = c.shared().get("results").unwrap().unwrap();
    assert_eq!(d.get(&7).unwrap().map(|r| r.0), Some(49));
    let pid = m.pid().unwrap();
    m.shutdown().unwrap();
    common::assert_reaped(pid);
}

fn proxies_of_a_tls_manager_reach_workers_over_tls() {
    let pki = Pki::new();
    let m = tls_manager(&pki);
    // From the owner (which trusts its server's certificate): the proxy carries that trust.
    let q = m.queue::<String>().unwrap();
    let mut p = Process::new(put_from_a_child, (q.clone(), "from the owner's proxy".to_string()));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(30)).unwrap(), "from the owner's proxy");
    // From a manager connected with the CA: the proxy carries the CA.
    m.shared().set("q", q.clone()).unwrap();
    let c = Manager::connect_tls(m.address(), KEY, &pki.client()).unwrap();
    let q2: QueueProxy<String> = c.shared().get("q").unwrap().unwrap();
    let json = serde_json::to_string(&q2).unwrap();
    assert!(json.contains("Cas"), "the CA travels with the proxy: {json}");
    let mut p = Process::new(put_from_a_child, (q2, "from a connected manager's proxy".to_string()));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(30)).unwrap(), "from a connected manager's proxy");
    // Stored in a plain manager and read back from there: the trust was stored with it.
    let plain = Manager::builder().address("127.0.0.1:0").authkey(KEY.to_vec()).start().unwrap();
    let shelf = plain.dict::<u8, QueueProxy<String>>().unwrap();
    shelf.insert(0, q.clone()).unwrap();
    let back = shelf.get(&0).unwrap().unwrap();
    let mut p = Process::new(put_from_a_child, (back, "through a plain manager".to_string()));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(30)).unwrap(), "through a plain manager");

    // A pool's worker on another host, whose environment has no TLS settings at all.
    let d = m.dict::<u64, u64>().unwrap();
    let pool = Pool::builder().processes(0).listen("127.0.0.1:0", KEY).build().unwrap();
    {
        let _host = Host::start(&pool.address().unwrap().to_string(), None);
        pool.wait_for_workers(1, Duration::from_secs(60)).unwrap();
        let done = pool.starmap(square_into, (0..10).map(|n| (d.clone(), n))).unwrap();
        assert_eq!(done, (0..10).collect::<Vec<_>>());
    }
    assert_eq!(d.len().unwrap(), 10);
    assert_eq!(d.get(&9).unwrap(), Some(81));
}

fn a_pinned_proxy_refuses_another_server_on_its_address() {
    let (a, b) = (Pki::new(), Pki::new());
    let (m1, m2) = (tls_manager(&a), tls_manager(&b));
    // The owner's proxy trusts exactly its manager's certificate...
    let l = m1.list::<u8>().unwrap();
    let json = serde_json::to_string(&l).unwrap();
    assert!(json.contains("Pinned"), "{json}");
    // ...so the same proxy pointed at another TLS server (same key, another certificate) is
    // refused before any request.
    let moved = json.replace(&m1.address().to_string(), &m2.address().to_string());
    let elsewhere: mp::ListProxy<u8> = serde_json::from_str(&moved).unwrap();
    match elsewhere.len() {
        Err(Error::Auth(m)) => assert!(m.contains("not the certificate"), "{m}"),
        other => panic!("expected Error::Auth about the certificate, got {other:?}"),
    }
    l.push(1).unwrap();
    assert_eq!(l.len().unwrap(), 1);
}

fn a_tls_manager_served_in_its_own_process_is_stopped_by_a_client() {
    let pki = Pki::new();
    let (rx, tx) = Pipe::new::<String>().unwrap();
    let mut p = Process::new(serve_tls_here, (pki.cert.clone(), pki.key.clone(), tx));
    p.start().unwrap();
    let addr = rx.recv().unwrap();
    let mut c = Manager::connect_tls(addr.as_str(), KEY, &pki.client()).unwrap();
    let l = c.list::<u8>().unwrap();
    l.push(1).unwrap();
    assert_eq!(l.len().unwrap(), 1);
    let m = manager_auth_message(Manager::connect(addr.as_str(), KEY));
    assert!(m.contains("uses TLS") && m.contains("Manager::connect_tls"), "{m}");
    c.shutdown().unwrap();
    assert_eq!(p.join().unwrap(), "stopped");
    common::assert_reaped(p.pid().unwrap());
}

fn plaintext_and_tls_managers_refuse_the_other_kind_at_once() {
    let pki = Pki::new();
    let tls = tls_manager(&pki);
    // Without TLS, to a TLS manager: Auth (not a timeout), naming what to call.
    let m = manager_auth_message(Manager::connect(tls.address(), KEY));
    assert!(m.contains("uses TLS") && m.contains("Manager::connect_tls"), "{m}");
    // With TLS, to a plaintext one: Auth, naming both ways out.
    let plain = Manager::builder().address("127.0.0.1:0").authkey(KEY.to_vec()).start().unwrap();
    let m = manager_auth_message(Manager::connect_tls(plain.address(), KEY, &pki.client()));
    assert!(m.contains("does not use TLS") && m.contains("Manager::connect") && m.contains(".tls("), "{m}");
    // Both still serve the right kind of client.
    let c = Manager::connect_tls(tls.address(), KEY, &pki.client()).unwrap();
    c.shared().set("x", 1u8).unwrap();
    assert_eq!(tls.shared().get::<u8>("x").unwrap(), Some(1));
    let c = Manager::connect(plain.address(), KEY).unwrap();
    c.shared().set("y", 2u8).unwrap();
    assert_eq!(plain.shared().get::<u8>("y").unwrap(), Some(2));
}

fn a_tls_manager_refuses_an_unknown_ca_a_wrong_name_and_a_wrong_key() {
    let pki = Pki::new();
    let m = tls_manager(&pki);
    m.shared().set("x", 5u8).unwrap();
    let msg = manager_auth_message(Manager::connect_tls(m.address(), KEY, &Pki::new().client()));
    assert!(msg.contains("not signed by a CA this client trusts"), "{msg}");
    let other_name = pki.client().server_name("manager.example").unwrap();
    let msg = manager_auth_message(Manager::connect_tls(m.address(), KEY, &other_name));
    assert!(msg.contains("not issued for manager.example"), "{msg}");
    let msg = manager_auth_message(Manager::connect_tls(m.address(), b"wrong", &pki.client()));
    assert!(msg.contains("authkey"), "{msg}");
    // The failed attempts spoil nothing: the right CA and key work from this process.
    let c = Manager::connect_tls(m.address(), KEY, &pki.client()).unwrap();
    assert_eq!(c.shared().get::<u8>("x").unwrap(), Some(5));
}

fn manager_tls_needs_a_tcp_address() {
    let pki = Pki::new();
    let invalid = |r: Result<(), Error>| match r {
        Err(Error::Invalid(m)) => assert!(m.contains("TCP address") && m.contains("Unix socket"), "{m}"),
        other => panic!("expected Error::Invalid, got {other:?}"),
    };
    invalid(Manager::builder().tls(pki.server()).start().map(drop));
    let unix = Address::unix_temp();
    invalid(Manager::builder().address(&unix).tls(pki.server()).start().map(drop));
    invalid(Manager::builder().address(&unix).tls(pki.server()).server().map(drop));
    invalid(Manager::builder().address(&unix).authkey(KEY.to_vec()).tls(pki.server()).serve());
    let local = Manager::new().unwrap();
    match Manager::connect_tls(local.address(), local.authkey(), &pki.client()) {
        Err(Error::Invalid(m)) => assert!(m.contains("Manager::connect"), "{m}"),
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

/// A worker host: this binary with `MP_CONNECT`, killed (with its workers) on drop.
struct Host {
    child: Child,
}

impl Host {
    fn start(addr: &str, ca: Option<&TempFile>) -> Host {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env("MP_CONNECT", addr)
            .env("MP_AUTHKEY", std::str::from_utf8(KEY).unwrap())
            .env("MP_WORKERS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(ca) = ca {
            cmd.env("MP_TLS_CA", &ca.0);
        }
        Host { child: cmd.spawn().unwrap() }
    }

    /// Waits (up to a minute) for the host to exit by itself; returns its code and stderr.
    fn exit(&mut self) -> (Option<i32>, String) {
        use std::io::Read;
        let end = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < end, "the host did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code(), err)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn a_pool_listening_over_tls_runs_a_map_on_a_worker_host() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let pool = Pool::builder().processes(0).listen_tls("127.0.0.1:0", KEY, &pki.server()).build().unwrap();
    let addr = pool.address().unwrap().to_string();
    {
        let _host = Host::start(&addr, Some(&ca));
        pool.wait_for_workers(1, Duration::from_secs(60)).unwrap();
        let out = pool.map(square, 0..2000u64).unwrap();
        assert_eq!(out, (0..2000u64).map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(pool.apply(square, 12).unwrap(), 144);
        let st = pool.stats();
        assert_eq!(st.workers.len(), 1, "{st:?}");
        assert!(st.workers[0].tasks > 0, "{st:?}");
    }
    // A host without MP_TLS_CA is refused at once and says what to set.
    let mut plain = Host::start(&addr, None);
    let (code, err) = plain.exit();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("MP_TLS_CA"), "{err}");
    // One that does not trust the pool's CA is refused too.
    let stranger = Pki::new().ca_file();
    let mut wrong = Host::start(&addr, Some(&stranger));
    let (code, err) = wrong.exit();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not signed by a CA"), "{err}");
}

#[mp::main]
fn main() {
    let cases: &[(&str, fn())] = &[
        ("smoke", smoke),
        ("the_certificate_name_is_checked", the_certificate_name_is_checked),
        (
            "a_certificate_from_another_ca_is_refused_on_both_sides",
            a_certificate_from_another_ca_is_refused_on_both_sides,
        ),
        (
            "a_plaintext_client_is_refused_at_once_on_both_sides",
            a_plaintext_client_is_refused_at_once_on_both_sides,
        ),
        (
            "a_tls_client_to_a_plaintext_listener_is_refused_at_once_on_both_sides",
            a_tls_client_to_a_plaintext_listener_is_refused_at_once_on_both_sides,
        ),
        ("a_wrong_key_inside_tls_is_still_refused", a_wrong_key_inside_tls_is_still_refused),
        ("bad_pem_is_a_clear_error", bad_pem_is_a_clear_error),
        ("a_large_message_crosses_both_ways", a_large_message_crosses_both_ways),
        ("closed_connections_free_their_descriptors", closed_connections_free_their_descriptors),
        (
            "a_pool_listening_over_tls_runs_a_map_on_a_worker_host",
            a_pool_listening_over_tls_runs_a_map_on_a_worker_host,
        ),
        // Managers keep idle connections (and their TLS pumps) for the process's lifetime:
        // after closed_connections_free_their_descriptors.
        ("a_tls_manager_serves_two_client_processes", a_tls_manager_serves_two_client_processes),
        ("proxies_of_a_tls_manager_reach_workers_over_tls", proxies_of_a_tls_manager_reach_workers_over_tls),
        (
            "a_pinned_proxy_refuses_another_server_on_its_address",
            a_pinned_proxy_refuses_another_server_on_its_address,
        ),
        (
            "a_tls_manager_served_in_its_own_process_is_stopped_by_a_client",
            a_tls_manager_served_in_its_own_process_is_stopped_by_a_client,
        ),
        (
            "plaintext_and_tls_managers_refuse_the_other_kind_at_once",
            plaintext_and_tls_managers_refuse_the_other_kind_at_once,
        ),
        (
            "a_tls_manager_refuses_an_unknown_ca_a_wrong_name_and_a_wrong_key",
            a_tls_manager_refuses_an_unknown_ca_a_wrong_name_and_a_wrong_key,
        ),
        ("manager_tls_needs_a_tcp_address", manager_tls_needs_a_tcp_address),
    ];
    common::run_cases("tests/tls.rs", cases);
}

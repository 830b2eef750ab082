//! Remote managers: a manager serving on TCP with an authkey, used by processes that
//! connect by address and key; a wrong key, a stalled handshake and a flood of
//! unauthenticated connections leave it serving; a server run in a process of its own
//! (`serve`) stopped by a client; fd-backed handles refused with a clear error.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use mp::{Address, Connection, DictProxy, Error, Manager, Pipe, Process, QueueProxy};

const KEY: &[u8] = b"remote-manager-test-key";

/// A client process: connects by address and key, takes jobs until `None`, records squares.
#[mp::worker]
fn take_jobs(addr: String, key: Vec<u8>, who: u32) -> u32 {
    let m = Manager::connect(addr.as_str(), &key).unwrap();
    common::take_jobs_from(&m, who)
}

/// Runs a manager server in this process on a free TCP port until a client stops it.
#[mp::worker]
fn serve_here(report: Connection<String>) -> String {
    let server = Manager::builder().address("127.0.0.1:0").authkey(KEY.to_vec()).server().unwrap();
    report.send(server.address().to_string()).unwrap();
    server.serve_forever().unwrap();
    "stopped".to_string()
}

/// Uses a queue proxy it was handed, in a process that never connected to its manager.
#[mp::worker]
fn put_from_a_child(q: QueueProxy<String>) {
    q.put("from a child".into()).unwrap();
}

/// A worker host for a listening pool: serves it with one worker process until it closes.
#[mp::worker]
fn host_workers(pool_addr: String) {
    mp::serve_worker(pool_addr.as_str(), b"pool-key", 1).unwrap();
}

/// Runs on a pool's worker host: records `n * n` through a proxy it was handed.
#[mp::worker]
fn square_into(d: DictProxy<u64, u64>, n: u64) -> u64 {
    d.insert(n, n * n).unwrap();
    n
}

fn tcp_manager() -> Manager {
    Manager::builder().address("127.0.0.1:0").authkey(KEY.to_vec()).start().unwrap()
}

fn host_port(m: &Manager) -> String {
    match m.address() {
        Address::Tcp(hp) => hp.clone(),
        other => panic!("expected a TCP address, got {other}"),
    }
}

#[mp::test]
fn smoke() {
    let m = tcp_manager();
    assert!(m.address().is_tcp());
    assert!(!m.address().to_string().ends_with(":0"), "the real port is reported");
    let d = m.dict::<String, u32>().unwrap();
    m.shared().set("d", d.clone()).unwrap();
    let c = Manager::connect(m.address(), KEY).unwrap();
    assert_eq!(c.pid(), None);
    let d2: DictProxy<String, u32> = c.shared().get("d").unwrap().unwrap();
    d2.insert("x".into(), 1).unwrap();
    assert_eq!(d.get("x").unwrap(), Some(1));
    // Dropping a connected manager does not stop the server.
    drop(c);
    assert_eq!(d.len().unwrap(), 1);
}

#[mp::test]
fn a_wrong_key_is_refused_and_the_server_keeps_serving() {
    let m = tcp_manager();
    let v = m.value(3u8).unwrap();
    for _ in 0..3 {
        match Manager::connect(m.address(), b"not the key") {
            Err(Error::Auth(msg)) => assert!(msg.contains("authkey"), "{msg}"),
            r => panic!("expected Error::Auth, got {r:?}"),
        }
    }
    // The right key still works, from this process and through a fresh connection.
    let c = Manager::connect(m.address(), KEY).unwrap();
    c.shared().set("after", 1u8).unwrap();
    assert_eq!(m.shared().get::<u8>("after").unwrap(), Some(1));
    assert_eq!(v.get().unwrap(), 3);
    // A Unix-socket manager checks the key too.
    let local = Manager::new().unwrap();
    assert!(matches!(Manager::connect(local.address(), b"wrong"), Err(Error::Auth(_))));
    assert_eq!(local.authkey(), mp::current_process().authkey(), "the program's key by default");
}

#[mp::test]
fn two_client_processes_connect_by_address_and_key() {
    let m = tcp_manager();
    let jobs = m.queue::<Option<u64>>().unwrap();
    let results = m.dict::<u64, (u64, u32)>().unwrap();
    m.shared().set("jobs", jobs.clone()).unwrap();
    m.shared().set("results", results.clone()).unwrap();
    for n in 0..40 {
        jobs.put(Some(n)).unwrap();
    }
    let mut clients: Vec<_> =
        (0..2).map(|who| Process::new(take_jobs, (m.address().to_string(), KEY.to_vec(), who))).collect();
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
}

#[mp::test]
fn proxies_from_a_connected_manager_pass_to_workers() {
    let m = tcp_manager();
    m.shared().set("q", m.queue::<String>().unwrap()).unwrap();
    let c = Manager::connect(m.address(), KEY).unwrap();
    let q: QueueProxy<String> = c.shared().get("q").unwrap().unwrap();
    // The child never connected: the proxy carries the address and the key.
    let mut p = Process::new(put_from_a_child, q.clone());
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(30)).unwrap(), "from a child");
}

#[mp::test]
fn proxies_reach_a_pools_workers_on_another_host() {
    let m = tcp_manager();
    let d = m.dict::<u64, u64>().unwrap();
    // Remote workers only: every task goes through the worker host, over TCP.
    let pool = mp::Pool::builder().processes(0).listen("127.0.0.1:0", b"pool-key").build().unwrap();
    let mut host = Process::new(host_workers, pool.address().unwrap().to_string());
    host.start().unwrap();
    pool.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    let done = pool.starmap(square_into, (0..10).map(|n| (d.clone(), n))).unwrap();
    assert_eq!(done, (0..10).collect::<Vec<_>>());
    assert_eq!(d.len().unwrap(), 10);
    assert_eq!(d.get(&9).unwrap(), Some(81));
    drop(pool);
    // The host exits once the pool stops listening.
    host.join_timeout(Duration::from_secs(30)).unwrap();
}

#[mp::test]
fn serve_runs_in_the_calling_process_until_a_client_stops_it() {
    let (rx, tx) = Pipe::new::<String>().unwrap();
    let mut p = Process::new(serve_here, tx);
    p.start().unwrap();
    let addr = rx.recv().unwrap();
    let mut c = Manager::connect(addr.as_str(), KEY).unwrap();
    let l = c.list::<u8>().unwrap();
    l.push(1).unwrap();
    assert_eq!(l.len().unwrap(), 1);
    assert!(matches!(Manager::connect(addr.as_str(), b"wrong"), Err(Error::Auth(_))));
    c.shutdown().unwrap();
    assert_eq!(p.join().unwrap(), "stopped");
    assert!(matches!(l.len(), Err(Error::Disconnected { .. })));
    assert!(matches!(Manager::builder().serve(), Err(Error::Invalid(_))), "serve needs an address");
}

#[mp::test]
fn a_connection_stalled_mid_handshake_does_not_block_others() {
    let m = tcp_manager();
    let mut stalled = TcpStream::connect(host_port(&m)).unwrap();
    // Read the challenge, answer nothing.
    let mut head = [0u8; 16];
    stalled.read_exact(&mut head).unwrap();
    let c = Manager::connect(m.address(), KEY).unwrap();
    let d = c.dict::<u8, u8>().unwrap();
    d.insert(1, 2).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(2));
    drop(stalled);
}

#[mp::test]
fn a_flood_of_unauthenticated_connections_is_bounded() {
    let m = tcp_manager();
    let hp = host_port(&m);
    // More than the listener keeps mid-handshake (DEFAULT_MAX_PENDING_HANDSHAKES).
    let n = mp::DEFAULT_MAX_PENDING_HANDSHAKES + 36;
    let mut silent: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(&hp).unwrap()).collect();
    let c = Manager::connect(m.address(), KEY).unwrap();
    let q = c.queue::<u32>().unwrap();
    q.put(5).unwrap();
    assert_eq!(q.get().unwrap(), 5);
    // The oldest 36 were closed by the server (it logs that on stderr), not kept.
    let closed = silent.iter_mut().take(36).map(closed_by_peer).filter(|&c| c).count();
    assert_eq!(closed, 36);
    // A flood of wrong keys: each refused (logged at most once a second), none kept.
    for _ in 0..50 {
        assert!(matches!(Manager::connect(m.address(), b"guess"), Err(Error::Auth(_))));
    }
    q.put(6).unwrap();
    assert_eq!(q.get().unwrap(), 6);
}

/// Reads a raw stream until the other side closes it; false if it stayed open 30 s.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[mp::test]
fn fd_backed_handles_cannot_be_stored() {
    let m = tcp_manager();
    let d = m.dict::<u8, mp::Lock>().unwrap();
    match d.insert(1, mp::Lock::new().unwrap()) {
        Err(Error::Codec { message, .. }) => assert!(message.contains("manager.lock()"), "{message}"),
        r => panic!("expected Error::Codec, got {r:?}"),
    }
    assert_eq!(d.len().unwrap(), 0);
}

#[mp::test]
fn keys_do_not_travel_where_the_receiver_has_them() {
    // The program's key (the default) is never written into a proxy: children inherit it.
    let local = Manager::new().unwrap();
    let json = serde_json::to_string(&local.queue::<u8>().unwrap()).unwrap();
    let key = serde_json::to_string(local.authkey()).unwrap();
    assert!(!json.contains(key.trim_matches(['[', ']'])), "{json}");
    // Another key travels with a proxy handed to a worker (see
    // proxies_from_a_connected_manager_pass_to_workers)...
    let m = tcp_manager();
    let q = m.queue::<u8>().unwrap();
    let json = serde_json::to_string(&q).unwrap();
    let key = serde_json::to_string(KEY).unwrap();
    assert!(json.contains(key.trim_matches(['[', ']'])));
    // ...but not inside its own manager: a stored proxy is read back by clients that hold it.
    let d = m.dict::<u8, QueueProxy<u8>>().unwrap();
    d.insert(0, q).unwrap();
    let back = d.get(&0).unwrap().unwrap();
    back.put(1).unwrap();
    assert_eq!(back.get().unwrap(), 1);
}

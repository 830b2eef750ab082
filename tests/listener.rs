//! `mp::Listener` / `mp::Client`: round trips over Unix and TCP with a child as the client,
//! both-way authentication (wrong key, key on one side only, empty key), stalled and flooding
//! peers, oversized frames, and fd-backed handles refused over TCP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use mp::{Address, Client, Connection, Error, Listener, Lock, Process};

/// Connects to `addr` with the program's inherited authkey and doubles what it is sent until
/// the listener hangs up; returns how many it doubled.
#[mp::worker]
fn doubler(addr: Address) -> u32 {
    let conn: Connection<u64> = Client::connect(&addr, mp::current_process().authkey()).unwrap();
    let mut n = 0;
    while let Ok(x) = conn.recv() {
        conn.send(2 * x).unwrap();
        n += 1;
    }
    n
}

/// Round trip through a child that connected on its own.
fn round_trip(addr: &str) {
    let listener = Listener::bind(addr, mp::current_process().authkey()).unwrap();
    let mut p = Process::new(doubler, listener.address().clone());
    p.start().unwrap();
    let conn = listener.accept::<u64>().unwrap();
    assert_eq!(conn.is_remote(), listener.address().is_tcp());
    for x in [1, 20, 300] {
        conn.send(x).unwrap();
        assert_eq!(conn.recv().unwrap(), 2 * x);
    }
    drop(conn);
    assert_eq!(p.join().unwrap(), 3);
    common::assert_reaped(p.pid().unwrap());
}

#[mp::test]
fn smoke() {
    round_trip(&Address::unix_temp().to_string());
    round_trip("127.0.0.1:0");
}

type Conn = Result<Connection<u8>, Error>;

/// Runs `accept` on a thread while the client connects here; returns (server, client) results.
fn both_sides(listener: Listener, client: impl FnOnce(&Address) -> Conn) -> (Listener, Conn, Conn) {
    let addr = listener.address().clone();
    let server = std::thread::spawn(move || {
        let r = listener.accept_timeout::<u8>(Duration::from_secs(30));
        (listener, r)
    });
    let c = client(&addr);
    let (listener, s) = server.join().unwrap();
    (listener, s, c)
}

#[mp::test]
fn wrong_key_fails_on_both_sides() {
    for addr in [Address::unix_temp().to_string(), "127.0.0.1:0".to_string()] {
        let listener = Listener::bind(addr.as_str(), b"right").unwrap();
        let (listener, s, c) = both_sides(listener, |a| Client::connect(a, b"wrong"));
        assert!(matches!(s, Err(Error::Auth(_))), "server: {s:?}");
        assert!(matches!(c, Err(Error::Auth(_))), "client: {c:?}");
        // The listener is still fine for a client with the right key.
        let (_l, s, c) = both_sides(listener, |a| Client::connect(a, b"right"));
        c.unwrap().send(5).unwrap();
        assert_eq!(s.unwrap().recv().unwrap(), 5);
    }
}

#[mp::test]
fn key_on_one_side_only_fails_fast_on_both() {
    // A generous handshake timeout: an Auth error (not a Timeout) shows nobody waited for it.
    let keyed = Listener::bind(Address::unix_temp(), b"k").unwrap();
    keyed.set_handshake_timeout(Duration::from_secs(60));
    let (_l, s, c) = both_sides(keyed, |a| Client::connect_unauthenticated(a));
    assert!(matches!(s, Err(Error::Auth(_))), "server: {s:?}");
    assert!(matches!(c, Err(Error::Auth(ref m)) if m.contains("has none")), "client: {c:?}");

    let open = Listener::bind_unauthenticated(Address::unix_temp()).unwrap();
    open.set_handshake_timeout(Duration::from_secs(60));
    let (_l, s, c) = both_sides(open, |a| Client::connect(a, b"k"));
    assert!(matches!(s, Err(Error::Auth(_))), "server: {s:?}");
    assert!(matches!(c, Err(Error::Auth(ref m)) if m.contains("listener has none")), "client: {c:?}");
}

#[mp::test]
fn a_tcp_listener_never_starts_without_a_key() {
    let e = Listener::bind_unauthenticated("127.0.0.1:0").unwrap_err();
    assert!(matches!(e, Error::Invalid(ref m) if m.contains("authkey")), "{e}");
}

#[mp::test]
fn an_empty_key_is_a_real_key() {
    let l = Listener::bind("127.0.0.1:0", b"").unwrap();
    let (l, s, c) = both_sides(l, |a| Client::connect(a, b""));
    c.unwrap().send(1).unwrap();
    assert_eq!(s.unwrap().recv().unwrap(), 1);
    let (l, s, c) = both_sides(l, |a| Client::connect(a, b"x"));
    assert!(matches!((&s, &c), (Err(Error::Auth(_)), Err(Error::Auth(_)))), "{s:?} {c:?}");

    let l2 = Listener::bind(Address::unix_temp(), b"").unwrap();
    let (_l2, s, c) = both_sides(l2, |a| Client::connect_unauthenticated(a));
    assert!(matches!((&s, &c), (Err(Error::Auth(_)), Err(Error::Auth(_)))), "{s:?} {c:?}");
    drop(l);
}

#[mp::test]
fn a_listener_that_never_answers_times_the_client_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let r = Client::connect_timeout::<u8>(addr, b"k", Duration::from_millis(200));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
}

#[mp::test]
fn a_unix_listener_with_a_full_backlog_times_the_client_out() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let dir = std::env::temp_dir().join(format!("mp-test-backlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("s");
    // A listener with the smallest backlog that never accepts: once it holds one connection,
    // a blocking connect waits for a free slot.
    let addr = SocketAddrUnix::new(&path).unwrap();
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&listener, &addr).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let mut queued = Vec::new();
    loop {
        let s =
            rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::NONBLOCK, None)
                .unwrap();
        match rustix::net::connect(&s, &addr) {
            Ok(()) => queued.push(s),
            Err(rustix::io::Errno::AGAIN) => break, // full
            Err(e) => panic!("connecting to fill the backlog: {e}"),
        }
        assert!(queued.len() < 100, "the backlog never filled");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        tx.send(Client::connect_timeout::<u8>(p.as_path(), b"k", Duration::from_millis(300))).unwrap()
    });
    let r = rx.recv_timeout(Duration::from_secs(30)).expect("connect_timeout returned");
    match r {
        Err(Error::Timeout { what, .. }) => assert!(what.contains("backlog"), "{what}"),
        other => panic!("expected a timeout naming the backlog, got {other:?}"),
    }
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
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
fn a_client_that_stalls_mid_handshake_is_closed() {
    let listener = Listener::bind("127.0.0.1:0", b"k").unwrap();
    listener.set_handshake_timeout(Duration::from_millis(100));
    let addr = listener.address().clone();
    let Address::Tcp(hp) = addr.clone() else { unreachable!() };
    let peer = std::thread::spawn(move || {
        let mut raw = TcpStream::connect(&hp).unwrap();
        let closed = closed_by_peer(&mut raw); // reads the challenge, answers nothing
        let good = Client::connect::<u8>(&addr, b"k").unwrap();
        good.send(9).unwrap();
        closed
    });
    let conn = listener.accept::<u8>().unwrap();
    assert_eq!(conn.recv().unwrap(), 9);
    assert!(peer.join().unwrap(), "the stalled peer was never closed");
}

#[mp::test]
fn silent_connections_are_bounded_and_do_not_block_a_good_client() {
    let listener = Listener::bind("127.0.0.1:0", b"k").unwrap();
    listener.set_max_pending_handshakes(4);
    let addr = listener.address().clone();
    let Address::Tcp(hp) = addr.clone() else { unreachable!() };
    let mut silent: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(&hp).unwrap()).collect();
    let good = std::thread::spawn(move || {
        let c = Client::connect::<u8>(&addr, b"k").unwrap();
        c.send(1).unwrap();
        c.recv().unwrap() // keep it open until the listener answers
    });
    let conn = listener.accept::<u8>().unwrap();
    assert_eq!(conn.recv().unwrap(), 1);
    conn.send(2).unwrap();
    assert_eq!(good.join().unwrap(), 2);
    // At most 4 were kept: the listener closed the other 16 (oldest first).
    let closed = silent.iter_mut().take(16).map(closed_by_peer).filter(|&c| c).count();
    assert_eq!(closed, 16);
}

#[mp::test]
fn garbage_and_absurd_lengths_are_errors_and_the_listener_lives_on() {
    let listener = Listener::bind("127.0.0.1:0", b"k").unwrap();
    let Address::Tcp(hp) = listener.address().clone() else { unreachable!() };
    // Not mp at all.
    let mut http = TcpStream::connect(&hp).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = listener.accept_timeout::<u8>(Duration::from_secs(30));
    assert!(matches!(r, Err(Error::Protocol(_))), "{r:?}");
    // An mp frame header announcing 1 TiB during the handshake: refused from the header.
    let mut big = TcpStream::connect(&hp).unwrap();
    let mut h = b"mp\x01\x06".to_vec();
    h.extend(0u32.to_le_bytes());
    h.extend((1u64 << 40).to_le_bytes());
    big.write_all(&h).unwrap();
    let r = listener.accept_timeout::<u8>(Duration::from_secs(30));
    assert!(matches!(r, Err(Error::Protocol(ref m)) if m.contains("exceeds")), "{r:?}");
    // A data frame before the handshake finished.
    let mut early = TcpStream::connect(&hp).unwrap();
    let mut h = b"mp\x01\x10".to_vec();
    h.extend(0u32.to_le_bytes());
    h.extend(1u64.to_le_bytes());
    h.push(0);
    early.write_all(&h).unwrap();
    let r = listener.accept_timeout::<u8>(Duration::from_secs(30));
    assert!(matches!(r, Err(Error::Protocol(_))), "{r:?}");
    let (_l, s, c) = both_sides(listener, |a| Client::connect(a, b"k"));
    c.unwrap().send(3).unwrap();
    assert_eq!(s.unwrap().recv().unwrap(), 3);
}

#[mp::test]
fn an_oversized_message_is_refused_and_the_connection_lives_on() {
    let listener = Listener::bind("127.0.0.1:0", b"k").unwrap();
    listener.set_max_message_size(1024);
    let addr = listener.address().clone();
    let t = std::thread::spawn(move || {
        let c = Client::connect::<Vec<u8>>(&addr, b"k").unwrap();
        c.send(vec![7; 1 << 20]).unwrap();
        c.send(vec![8; 10]).unwrap();
        c.recv().unwrap()
    });
    let conn = listener.accept::<Vec<u8>>().unwrap();
    let r = conn.recv();
    assert!(matches!(r, Err(Error::Protocol(ref m)) if m.contains("exceeds")), "{r:?}");
    assert_eq!(conn.recv().unwrap(), vec![8; 10]);
    conn.send(vec![1]).unwrap();
    assert_eq!(t.join().unwrap(), vec![1]);
}

#[mp::test]
fn a_lock_over_tcp_is_refused_naming_the_manager() {
    let listener = Listener::bind("127.0.0.1:0", b"k").unwrap();
    let addr = listener.address().clone();
    let t = std::thread::spawn(move || Client::connect::<Lock>(&addr, b"k").unwrap());
    let conn = listener.accept::<Lock>().unwrap();
    let _client = t.join().unwrap();
    let lock = Lock::new().unwrap();
    let err = conn.send(lock).unwrap_err();
    assert!(
        matches!(&err.error, Error::Codec { message, .. } if message.contains("Manager") && message.contains("TCP")),
        "{}",
        err.error
    );
    // The value came back, still working.
    let lock = err.into_inner();
    drop(lock.lock().unwrap());
}

#[mp::worker]
fn lock_it(lock: Lock) -> bool {
    lock.try_lock().unwrap().is_some()
}

#[mp::test]
fn a_lock_over_a_unix_listener_travels() {
    let listener = Listener::bind(Address::unix_temp(), b"k").unwrap();
    let addr = listener.address().clone();
    let t = std::thread::spawn(move || Client::connect::<Lock>(&addr, b"k").unwrap().recv().unwrap());
    let conn = listener.accept::<Lock>().unwrap();
    let lock = Lock::new().unwrap();
    conn.send(lock.clone()).unwrap();
    let theirs = t.join().unwrap();
    let _held = lock.lock().unwrap();
    let mut p = Process::new(lock_it, theirs);
    p.start().unwrap();
    assert!(!p.join().unwrap(), "the received lock is the same lock");
}

#[mp::test]
fn a_unix_listener_removes_its_path() {
    let addr = Address::unix_temp();
    let Address::Unix(path) = addr.clone() else { unreachable!() };
    let l = Listener::bind(&addr, b"k").unwrap();
    assert!(path.exists());
    drop(l);
    assert!(!path.exists());
    // And a plain Unix client that says nothing only costs the listener a timeout.
    let l = Listener::bind(&addr, b"k").unwrap();
    l.set_handshake_timeout(Duration::from_millis(50));
    let _raw = UnixStream::connect(&path).unwrap();
    let r = l.accept_timeout::<u8>(Duration::from_millis(300));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
}

#[mp::test]
fn accept_from_several_threads_keeps_each_timeout() {
    let listener = std::sync::Arc::new(Listener::bind("127.0.0.1:0", b"k").unwrap());
    let l2 = listener.clone();
    let waiting = std::thread::spawn(move || l2.accept::<u8>().unwrap().recv().unwrap());
    std::thread::sleep(Duration::from_millis(50)); // let it start waiting
    // The other thread holds the turn: this one still returns at its timeout.
    let r = listener.accept_timeout::<u8>(Duration::from_millis(50));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    Client::connect::<u8>(listener.address(), b"k").unwrap().send(4).unwrap();
    assert_eq!(waiting.join().unwrap(), 4);
}

#[mp::worker]
fn my_authkey() -> Vec<u8> {
    mp::current_process().authkey().to_vec()
}

#[mp::test]
fn children_inherit_the_program_authkey() {
    let mut p = Process::new(my_authkey, ());
    p.start().unwrap();
    let theirs = p.join().unwrap();
    assert_eq!(theirs.len(), 32);
    assert_eq!(theirs, mp::current_process().authkey());
}

#[mp::worker]
fn send_a_lock_back(conn: Connection<Lock>) -> (bool, String) {
    let err = conn.send(Lock::new().unwrap()).unwrap_err();
    (conn.is_remote(), err.error.to_string())
}

#[mp::test]
fn a_tcp_connection_passed_to_a_child_stays_remote() {
    let listener = Listener::bind("127.0.0.1:0", b"k").unwrap();
    let addr = listener.address().clone();
    let t = std::thread::spawn(move || Client::connect::<Lock>(&addr, b"k").unwrap());
    let conn = listener.accept::<Lock>().unwrap();
    let _client = t.join().unwrap();
    let mut p = Process::new(send_a_lock_back, conn);
    p.start().unwrap();
    let (remote, message) = p.join().unwrap();
    assert!(remote);
    assert!(message.contains("Manager"), "{message}");
}

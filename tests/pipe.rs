//! `mp::Pipe` / `Connection<T>`: values, bytes, EOF, timeouts, handles passed to children.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mp::{Connection, Error, Pipe, Process};

#[mp::worker]
fn echo(conn: Connection<String>) -> usize {
    let mut n = 0;
    while let Ok(s) = conn.recv() {
        conn.send(s.to_uppercase()).unwrap();
        n += 1;
    }
    n
}

#[mp::worker]
fn sum_len(conn: Connection<Vec<u8>>) -> (usize, u64) {
    let v = conn.recv().unwrap();
    (v.len(), v.iter().map(|&b| u64::from(b)).sum())
}

#[mp::worker]
fn forward(outer: Connection<Connection<u32>>) -> u32 {
    // Receive a Connection over a Connection, then use it.
    let inner = outer.recv().unwrap();
    let mut total = 0;
    while let Ok(x) = inner.recv() {
        total += x;
    }
    total
}

#[mp::worker]
fn say_and_exit(conn: Connection<u8>) {
    conn.send(1).unwrap();
}

#[mp::test]
fn smoke() {
    let (a, b) = Pipe::new::<String>().unwrap();
    a.send("ping".into()).unwrap();
    assert_eq!(b.recv().unwrap(), "ping");
    b.send("pong".into()).unwrap();
    assert_eq!(a.recv().unwrap(), "pong");
}

#[mp::test]
fn order_is_kept() {
    let (a, b) = Pipe::new::<u32>().unwrap();
    // A socket buffer holds a few hundred messages: send from another thread, as a
    // producer would.
    let producer = std::thread::spawn(move || {
        for i in 0..10_000 {
            a.send(i).unwrap();
        }
    });
    for i in 0..10_000 {
        assert_eq!(b.recv().unwrap(), i);
    }
    producer.join().unwrap();
}

#[mp::test]
fn connection_as_worker_argument() {
    let (ours, theirs) = Pipe::new::<String>().unwrap();
    let mut p = Process::new(echo, theirs);
    p.start().unwrap();
    for w in ["a", "bc", "def"] {
        ours.send(w.into()).unwrap();
        assert_eq!(ours.recv().unwrap(), w.to_uppercase());
    }
    drop(ours); // EOF for the child: it returns how many it echoed
    assert_eq!(p.join().unwrap(), 3);
}

#[mp::test]
fn eof_when_the_child_exits() {
    let (ours, theirs) = Pipe::new::<u8>().unwrap();
    let mut p = Process::new(say_and_exit, theirs);
    p.start().unwrap();
    assert_eq!(ours.recv().unwrap(), 1);
    p.join().unwrap();
    // The parent's copy of `theirs` was closed at start(): the child was the last holder.
    assert!(matches!(ours.recv(), Err(Error::Disconnected { .. })));
}

#[mp::test]
fn eof_when_the_other_end_is_dropped() {
    let (a, b) = Pipe::new::<u8>().unwrap();
    a.send(5).unwrap();
    drop(a);
    assert_eq!(b.recv().unwrap(), 5, "queued messages are still delivered");
    assert!(matches!(b.recv(), Err(Error::Disconnected { .. })));
    assert!(matches!(b.send(1), Err(mp::SendError { error: Error::Disconnected { .. }, value: 1 })));
}

#[mp::test]
fn connection_sent_over_a_connection() {
    let (outer_ours, outer_theirs) = Pipe::new::<Connection<u32>>().unwrap();
    let (data_tx, data_rx) = Pipe::new::<u32>().unwrap();
    let mut p = Process::new(forward, outer_theirs);
    p.start().unwrap();
    outer_ours.send(data_rx).unwrap();
    for x in 1..=10 {
        data_tx.send(x).unwrap();
    }
    drop(data_tx);
    assert_eq!(p.join().unwrap(), 55);
}

#[mp::test]
fn payload_of_256_mib_to_a_child() {
    let (ours, theirs) = Pipe::new::<Vec<u8>>().unwrap();
    let mut p = Process::new(sum_len, theirs);
    p.start().unwrap();
    let v: Vec<u8> = (0..256usize << 20).map(|i| (i % 251) as u8).collect();
    let expected: u64 = v.iter().map(|&b| u64::from(b)).sum();
    ours.send(v).unwrap();
    assert_eq!(p.join().unwrap(), (256 << 20, expected));
}

#[mp::test]
fn bytes_round_trip_and_kinds_do_not_mix() {
    let (a, b) = Pipe::new::<u32>().unwrap();
    a.send_bytes(&[1, 2, 3]).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), vec![1, 2, 3]);
    a.send_bytes(b"").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), Vec::<u8>::new());
    a.send_bytes(b"raw").unwrap();
    let e = b.recv().unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("recv_bytes"), "{e}");
    a.send(9).unwrap();
    assert_eq!(b.recv().unwrap(), 9, "the connection stays usable");
}

#[mp::test]
fn timeouts_and_poll() {
    let (a, b) = Pipe::new::<u32>().unwrap();
    assert!(!b.poll(Duration::ZERO).unwrap());
    let t0 = Instant::now();
    let e = b.recv_timeout(Duration::from_millis(100)).unwrap_err();
    assert!(matches!(e, Error::Timeout { after, .. } if after == Duration::from_millis(100)));
    assert!(t0.elapsed() >= Duration::from_millis(100));
    a.send(1).unwrap();
    assert!(b.poll(Duration::from_secs(5)).unwrap());
    assert_eq!(b.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
    drop(a);
    assert!(b.poll(Duration::ZERO).unwrap(), "a closed peer makes poll true");
}

/// The exact bytes mp writes for `value`.
fn frame_bytes(value: Vec<u8>) -> Vec<u8> {
    use std::io::Read;
    let (a, mut b) = UnixStream::pair().unwrap();
    let c: Connection<Vec<u8>> = a.into();
    c.send(value).unwrap();
    drop(c);
    let mut buf = Vec::new();
    b.read_to_end(&mut buf).unwrap();
    buf
}

#[mp::test]
fn a_timeout_mid_message_loses_nothing() {
    let (mut w, conn_end) = UnixStream::pair().unwrap();
    let conn: Connection<Vec<u8>> = conn_end.into();
    let frame = frame_bytes(vec![7u8; 100_000]);
    // Half a frame, a timeout, then the rest: the message arrives whole.
    w.write_all(&frame[..50_000]).unwrap();
    assert!(matches!(conn.recv_timeout(Duration::from_millis(50)), Err(Error::Timeout { .. })));
    w.write_all(&frame[50_000..]).unwrap();
    assert_eq!(conn.recv_timeout(Duration::from_secs(5)).unwrap(), vec![7u8; 100_000]);
}

#[mp::test]
fn simplex_directions() {
    let (rx, tx) = Pipe::simplex::<u8>().unwrap();
    tx.send(3).unwrap();
    assert_eq!(rx.recv().unwrap(), 3);
    let e = rx.send(1).unwrap_err();
    assert!(e.error.to_string().contains("can only receive"), "{e}");
    assert_eq!(e.into_inner(), 1, "a failed send hands the value back");
    assert!(tx.recv().unwrap_err().to_string().contains("can only send"));
}

#[mp::test]
fn closed_handles_say_so() {
    let (mut a, _b) = Pipe::new::<u8>().unwrap();
    a.close();
    assert!(a.is_closed());
    assert!(matches!(a.send(1), Err(mp::SendError { error: Error::Closed { .. }, .. })));
    assert!(matches!(a.recv(), Err(Error::Closed { .. })));
}

#[mp::test]
fn a_connection_cannot_be_serialized_elsewhere() {
    let (a, _b) = Pipe::new::<u8>().unwrap();
    // Another serde format, outside mp: refused with an explanation, not a panic.
    let e = serde_json::to_string(&a).unwrap_err().to_string();
    assert!(e.contains("only travel through mp"), "{e}");
}

#[mp::test]
fn a_quiet_pipe_burns_no_cpu_after_a_burst() {
    let (ours, theirs) = Pipe::new::<String>().unwrap();
    let mut p = Process::new(echo, theirs);
    p.start().unwrap();
    // A burst of round trips: both ends poll for the answer instead of sleeping.
    for i in 0..3_000 {
        ours.send(format!("m{i}")).unwrap();
        assert_eq!(ours.recv().unwrap(), format!("M{i}"));
    }
    // Then silence: the child waiting in recv must sleep, not poll.
    let pid = p.pid().unwrap();
    let before = common::cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = common::cpu_ticks(pid) - before;
    assert!(used <= 10, "an idle echo child used {used}0 ms of CPU in 1 s");
    drop(ours);
    assert_eq!(p.join().unwrap(), 3_000);
}

//! The wire format refuses bad input with clear errors and loses nothing.

use std::io::Write;
use std::os::unix::net::UnixStream;

use mp::{Connection, Error};

fn header(kind: u8, nfds: u32, len: u64) -> Vec<u8> {
    let mut h = b"mp\x01".to_vec();
    h.push(kind);
    h.extend(nfds.to_le_bytes());
    h.extend(len.to_le_bytes());
    h
}

const DATA: u8 = 16;

fn pair() -> (UnixStream, Connection<Vec<u8>>) {
    let (raw, end) = UnixStream::pair().unwrap();
    (raw, end.into())
}

#[mp::test]
fn smoke_a_hand_made_frame_decodes() {
    let (mut raw, conn) = pair();
    // postcard Vec<u8> [1, 2, 3]: varint length then the bytes.
    let mut f = header(DATA, 0, 4);
    f.extend([3, 1, 2, 3]);
    raw.write_all(&f).unwrap();
    assert_eq!(conn.recv().unwrap(), vec![1, 2, 3]);
}

#[mp::test]
fn bad_magic_is_a_protocol_error() {
    let (mut raw, conn) = pair();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let e = conn.recv().unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("bad magic"), "{e}");
}

#[mp::test]
fn truncated_header_and_payload() {
    let (mut raw, conn) = pair();
    raw.write_all(&header(DATA, 0, 10)[..7]).unwrap();
    drop(raw);
    let e = conn.recv().unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");

    let (mut raw, conn) = pair();
    let mut f = header(DATA, 0, 100);
    f.extend([0u8; 10]);
    raw.write_all(&f).unwrap();
    drop(raw);
    let e = conn.recv().unwrap_err();
    assert!(matches!(e, Error::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("10 of 100"), "{e}");
}

#[mp::test]
fn an_absurd_length_allocates_nothing_and_says_so() {
    let (mut raw, conn) = pair();
    raw.write_all(&header(DATA, 0, u64::MAX)).unwrap();
    let e = conn.recv().unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
}

#[mp::test]
fn an_oversized_frame_is_skipped_and_the_next_one_arrives() {
    let (mut raw, conn) = pair();
    conn.set_max_message_size(1000).unwrap();
    let mut big = header(DATA, 0, 5000);
    big.extend(vec![9u8; 5000]);
    raw.write_all(&big).unwrap();
    let mut ok = header(DATA, 0, 2);
    ok.extend([1, 42]);
    raw.write_all(&ok).unwrap();
    let e = conn.recv().unwrap_err();
    assert!(e.to_string().contains("5000 bytes"), "{e}");
    assert_eq!(conn.recv().unwrap(), vec![42]);
}

#[mp::test]
fn an_unknown_kind_is_skipped() {
    let (mut raw, conn) = pair();
    let mut f = header(200, 0, 3);
    f.extend([1, 2, 3]);
    raw.write_all(&f).unwrap();
    let mut ok = header(DATA, 0, 2);
    ok.extend([1, 7]);
    raw.write_all(&ok).unwrap();
    assert!(conn.recv().unwrap_err().to_string().contains("unknown frame kind 200"));
    assert_eq!(conn.recv().unwrap(), vec![7]);
}

#[mp::test]
fn an_undecodable_payload_names_the_type() {
    let (mut raw, end) = UnixStream::pair().unwrap();
    let conn: Connection<(u8, String)> = end.into();
    let mut f = header(DATA, 0, 3);
    f.extend([1, 200, 0xff]); // a String of 200 bytes that is not there
    raw.write_all(&f).unwrap();
    match conn.recv() {
        Err(Error::Codec { type_name, direction: mp::CodecDirection::Decode, .. }) => {
            assert!(type_name.contains("String"), "{type_name}");
        }
        other => panic!("expected a Codec error, got {other:?}"),
    }
    // Trailing garbage after a valid value is a type mismatch, not silently ignored.
    let mut f = header(DATA, 0, 4);
    f.extend([1, 1, b'a', 0]);
    raw.write_all(&f).unwrap();
    assert!(conn.recv().unwrap_err().to_string().contains("left over"));
}

#[mp::worker]
fn send_over_limit(c: Connection<Vec<u8>>) -> (bool, usize) {
    // The frame limit is per process: lower it in this child only.
    mp::set_max_frame_size(100);
    match c.send(vec![0; 1000]) {
        Err(e) => (e.error.to_string().contains("exceeds the frame limit of 100 bytes"), e.value.len()),
        Ok(()) => (false, 0),
    }
}

#[mp::worker]
fn big_result(limit: u64) -> Vec<u8> {
    mp::set_max_frame_size(limit);
    vec![1; 10_000]
}

#[mp::test]
fn a_result_over_the_limit_is_an_error_not_a_dead_worker() {
    let mut p = mp::Process::new(big_result, 1000);
    p.start().unwrap();
    let e = p.join().unwrap_err();
    assert!(e.to_string().contains("exceeds the frame limit"), "{e}");
}

#[mp::test]
fn a_value_over_the_limit_is_refused_before_sending() {
    let (ours, theirs) = mp::Pipe::new::<Vec<u8>>().unwrap();
    let mut p = mp::Process::new(send_over_limit, theirs);
    p.start().unwrap();
    let (clear_message, handed_back) = p.join().unwrap();
    assert!(clear_message, "the error names the limit");
    assert_eq!(handed_back, 1000, "the value comes back in SendError");
    assert!(matches!(ours.recv(), Err(Error::Disconnected { .. })), "nothing was written");
}

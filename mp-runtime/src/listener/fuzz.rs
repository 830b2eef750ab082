//! Entry points for the fuzz targets (`fuzz/`) and the randomized tests
//! (`tests/fuzz_inputs.rs`): garbage in, errors out, never a panic or a hang.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use super::client::client_handshake;
use super::handshake::{self, Handshake, Role, Status};
use super::{Drive, Pending, drive};
use crate::error::Error;
use crate::sys;
use crate::wire::FrameReader;

/// Writes `data` (at most what a socket buffer holds) into one end of a fresh socket pair
/// and closes that end for writing; returns (the other end, the writer, which stays open
/// as a peer that reads nothing).
fn fed(data: &[u8]) -> (OwnedFd, OwnedFd) {
    let (a, b) = sys::socketpair().expect("socketpair");
    let data = &data[..data.len().min(32 * 1024)];
    let _ = sys::send_nonblocking(b.as_fd(), &[data], &[]);
    let _ = rustix::net::shutdown(&b, rustix::net::Shutdown::Write);
    (a, b)
}

/// Reads frames from `data` until the stream ends; returns how many decoded.
pub fn frames(data: &[u8], limit: u64, remote: bool) -> usize {
    let (fd, _peer) = fed(data);
    let mut reader = FrameReader::new();
    reader.limit = Some(limit);
    reader.remote = remote;
    let deadline = Some(Instant::now() + Duration::from_secs(5));
    let mut ok = 0;
    for _ in 0..=data.len() + 2 {
        match reader.read(fd.as_fd(), deadline, "fuzz input") {
            Ok(_) => ok += 1,
            Err(Error::Disconnected { .. }) => return ok,
            Err(Error::Timeout { .. }) => panic!("the reader waited on a closed stream"),
            Err(_) => {}
        }
    }
    panic!("the reader made no progress on {} bytes", data.len());
}

/// Runs the listener's side of the handshake against a peer that sent `data`.
pub fn server_stream(data: &[u8], key: Option<&[u8]>) -> Result<(), Error> {
    let (handshake, _) = Handshake::new(Role::Server, key)?;
    let mut reader = FrameReader::new();
    reader.limit = Some(handshake::MAX_MESSAGE);
    let (fd, _peer) = fed(data);
    let mut p = Pending {
        fd,
        reader,
        handshake,
        deadline: Instant::now() + Duration::from_secs(5),
        peer: "fuzz input".into(),
    };
    for _ in 0..=data.len() + 2 {
        match drive(&mut p) {
            Drive::Waiting => {
                if !sys::wait_readable(p.fd.as_fd(), Some(p.deadline)).unwrap_or(false) {
                    panic!("the handshake waited on a closed stream");
                }
            }
            Drive::Done => return Ok(()),
            Drive::Dropped => return Err(Error::Disconnected { what: "fuzz".into() }),
            Drive::Failed(e) => return Err(e),
        }
    }
    panic!("the handshake made no progress");
}

/// Runs the client's side of the handshake against a listener that sent `data`.
pub fn client_stream(data: &[u8], key: Option<&[u8]>) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let (fd, _peer) = fed(data);
    match client_handshake::<()>(fd, false, key, deadline, "fuzz input") {
        Err(Error::Timeout { .. }) => panic!("the client waited on a closed stream"),
        r => r.map(drop),
    }
}

/// Feeds handshake messages to the state machine: the first byte picks the role and the
/// key, then each message is a length byte and that many bytes.
pub fn messages(data: &[u8]) {
    let Some((&sel, mut rest)) = data.split_first() else { return };
    let role = if sel & 1 == 0 { Role::Server } else { Role::Client };
    let key: Option<&[u8]> = match (sel >> 1) & 3 {
        0 => None,
        1 => Some(b""),
        _ => Some(b"key"),
    };
    let Ok((mut hs, _)) = Handshake::new(role, key) else { return };
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let step = hs.step(&tail[..n]);
        rest = &tail[n..];
        if !matches!(step.status, Status::Continue) {
            // After the end, anything more is an error too.
            assert!(matches!(hs.step(rest).status, Status::Failed(_)));
            return;
        }
    }
}

//! The authentication handshake, without I/O: a state machine fed one message at a time, so
//! the client drives it with blocking reads and the listener drives many at once from one
//! `poll` loop (and the fuzz target drives it with garbage). Protocol: `README.md` here.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::Error;

/// Version of this handshake and of what follows it (mp frames). A peer with another
/// version is refused with a message naming both.
pub(crate) const PROTOCOL_VERSION: u8 = 1;

/// The largest handshake message: anything longer is not ours, and is refused before its
/// payload is read.
pub(crate) const MAX_MESSAGE: u64 = 256;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const NOAUTH: &[u8] = b"#NOAUTH#";
const SHA256: &[u8] = b"{sha256}";
/// What a TLS listener sends in the clear (one `Auth` frame, then its version byte) before
/// TLS starts, so that a plaintext client fails at once with a clear error instead of waiting
/// for a challenge (a TLS server cannot speak first), and a TLS client can tell a plaintext
/// listener (whose first frame is its challenge) from a TLS one.
pub(crate) const STARTTLS: &[u8] = b"#STARTTLS#";
const NONCE_LEN: usize = 40;
const DIGEST_LEN: usize = 32;

/// Which end of the connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The accepting side: speaks first.
    Server,
    /// The connecting side.
    Client,
}

#[derive(Debug)]
enum State {
    /// Server: waiting for the answer to the challenge it sent.
    AwaitResponse {
        message: Vec<u8>,
    },
    /// Server: waiting for the client's own challenge.
    AwaitChallenge,
    /// Waiting for the peer's verdict on our answer (server: then done; client: then
    /// challenge the server).
    AwaitVerdict,
    /// Client: waiting for the server's answer to our challenge.
    AwaitServerResponse {
        message: Vec<u8>,
    },
    /// Client: waiting for the server's first message.
    AwaitHello,
    /// Server without a key: waiting for the client's `#NOAUTH#` acknowledgement.
    AwaitNoAuthAck,
    Done,
    Failed,
}

/// What to do after a step: maybe send a message, then go on, stop, or fail.
#[derive(Debug)]
pub(crate) struct Step {
    /// A message to send to the peer (before reporting a failure too, so the peer fails fast).
    pub send: Option<Vec<u8>>,
    pub status: Status,
}

#[derive(Debug)]
pub(crate) enum Status {
    /// Wait for the peer's next message.
    Continue,
    /// Authenticated (or, without keys on both sides, agreed): the connection is ready.
    Done,
    /// The connection must be closed with this error.
    Failed(Error),
}

/// One side of the handshake.
pub(crate) struct Handshake {
    role: Role,
    key: Option<Vec<u8>>,
    state: State,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Handshake").field("role", &self.role).field("state", &self.state).finish()
    }
}

impl Handshake {
    /// Starts a handshake; the server gets its first message to send.
    pub fn new(role: Role, key: Option<&[u8]>) -> Result<(Handshake, Option<Vec<u8>>), Error> {
        let key = key.map(<[u8]>::to_vec);
        match role {
            Role::Client => Ok((Handshake { role, key, state: State::AwaitHello }, None)),
            Role::Server => match key {
                Some(key) => {
                    let (out, message) = challenge()?;
                    Ok((
                        Handshake { role, key: Some(key), state: State::AwaitResponse { message } },
                        Some(out),
                    ))
                }
                None => {
                    let mut out = NOAUTH.to_vec();
                    out.push(PROTOCOL_VERSION);
                    Ok((Handshake { role, key: None, state: State::AwaitNoAuthAck }, Some(out)))
                }
            },
        }
    }

    /// Feeds the peer's next message.
    pub fn step(&mut self, msg: &[u8]) -> Step {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let step = self.advance(state, msg);
        if let Status::Done = step.status {
            self.state = State::Done;
        }
        step
    }

    fn advance(&mut self, state: State, msg: &[u8]) -> Step {
        let peer = match self.role {
            Role::Server => "the client",
            Role::Client => "the listener",
        };
        // A peer that gave up tells us why: report it as the failure it is.
        if let Some(reason) = msg.strip_prefix(FAILURE) {
            let reason = printable(reason);
            return fail_quietly(Error::Auth(format!("{peer} refused the handshake: {reason}")));
        }
        match state {
            State::AwaitHello => {
                if msg.starts_with(STARTTLS) {
                    return fail_quietly(Error::Auth(
                        "the listener uses TLS: connect with Client::connect_tls (the `tls` \
                         feature), or, for a worker host, set MP_TLS_CA to the CA that signed its \
                         certificate"
                            .into(),
                    ));
                }
                if let Some(rest) = msg.strip_prefix(NOAUTH) {
                    if let Err(e) = check_version(rest, peer) {
                        return fail_telling(e, "protocol version mismatch");
                    }
                    return match &self.key {
                        None => {
                            let mut ack = NOAUTH.to_vec();
                            ack.push(PROTOCOL_VERSION);
                            Step { send: Some(ack), status: Status::Done }
                        }
                        Some(_) => fail_telling(
                            Error::Auth(
                                "this client has an authkey but the listener has none: give both \
                                 sides the same key (Listener::bind with a key)"
                                    .into(),
                            ),
                            "the client has an authkey but the listener has none",
                        ),
                    };
                }
                let Some(message) = msg.strip_prefix(CHALLENGE) else {
                    return fail_telling(unexpected(peer, "a challenge"), "expected a challenge");
                };
                match &self.key {
                    None => fail_telling(
                        Error::Auth(
                            "the listener requires an authkey but this client has none: connect \
                             with Client::connect(addr, key) using the listener's key"
                                .into(),
                        ),
                        "the client has no authkey",
                    ),
                    Some(key) => match answer(key, message, peer) {
                        Ok(resp) => {
                            self.state = State::AwaitVerdict;
                            Step { send: Some(resp), status: Status::Continue }
                        }
                        Err(e) => fail_telling(e, "malformed or unsupported challenge"),
                    },
                }
            }
            State::AwaitResponse { message } => {
                let key = self.key.as_deref().unwrap_or_default();
                if verify(key, &message, msg) {
                    self.state = State::AwaitChallenge;
                    Step { send: Some(WELCOME.to_vec()), status: Status::Continue }
                } else {
                    fail_telling(
                        Error::Auth(
                            "the client's answer to the challenge does not match this listener's \
                             authkey: use the same key on both sides"
                                .into(),
                        ),
                        "digest received was wrong",
                    )
                }
            }
            State::AwaitChallenge => {
                let Some(message) = msg.strip_prefix(CHALLENGE) else {
                    return fail_telling(unexpected(peer, "a challenge"), "expected a challenge");
                };
                let key = self.key.as_deref().unwrap_or_default();
                match answer(key, message, peer) {
                    Ok(resp) => {
                        self.state = State::AwaitVerdict;
                        Step { send: Some(resp), status: Status::Continue }
                    }
                    Err(e) => fail_telling(e, "malformed or unsupported challenge"),
                }
            }
            State::AwaitVerdict => {
                if msg != WELCOME {
                    return fail_telling(unexpected(peer, "#WELCOME# or #FAILURE#"), "expected a verdict");
                }
                match self.role {
                    Role::Server => Step { send: None, status: Status::Done },
                    Role::Client => match challenge() {
                        Ok((out, message)) => {
                            self.state = State::AwaitServerResponse { message };
                            Step { send: Some(out), status: Status::Continue }
                        }
                        Err(e) => fail_telling(e, "the client could not make a challenge"),
                    },
                }
            }
            State::AwaitServerResponse { message } => {
                let key = self.key.as_deref().unwrap_or_default();
                if verify(key, &message, msg) {
                    Step { send: Some(WELCOME.to_vec()), status: Status::Done }
                } else {
                    fail_telling(
                        Error::Auth(
                            "the listener's answer to this client's challenge does not match the \
                             authkey: use the same key on both sides"
                                .into(),
                        ),
                        "digest received was wrong",
                    )
                }
            }
            State::AwaitNoAuthAck => match msg.strip_prefix(NOAUTH) {
                Some(rest) => match check_version(rest, peer) {
                    Ok(()) => Step { send: None, status: Status::Done },
                    Err(e) => fail_quietly(e),
                },
                None => fail_telling(unexpected(peer, "#NOAUTH#"), "expected #NOAUTH#"),
            },
            State::Done | State::Failed => {
                fail_quietly(Error::Protocol("a handshake message arrived after the handshake ended".into()))
            }
        }
    }
}

/// A fresh challenge: the bytes to send and the message the answer must authenticate.
fn challenge() -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| {
        Error::io("reading random bytes for an authentication challenge", std::io::Error::other(e))
    })?;
    let mut message = Vec::with_capacity(SHA256.len() + NONCE_LEN + 1);
    message.extend_from_slice(SHA256);
    message.extend_from_slice(&nonce);
    message.push(PROTOCOL_VERSION);
    let mut out = CHALLENGE.to_vec();
    out.extend_from_slice(&message);
    Ok((out, message))
}

/// The answer to a challenge `message` (the bytes after `#CHALLENGE#`).
fn answer(key: &[u8], message: &[u8], peer: &str) -> Result<Vec<u8>, Error> {
    let Some(rest) = message.strip_prefix(SHA256) else {
        return Err(Error::Auth(format!(
            "{peer} asked for a digest other than {{sha256}}, the only one mp speaks"
        )));
    };
    if rest.len() != NONCE_LEN + 1 {
        return Err(Error::Protocol(format!(
            "{peer}'s challenge has {} bytes after {{sha256}}, expected {}",
            rest.len(),
            NONCE_LEN + 1
        )));
    }
    check_version(&rest[NONCE_LEN..], peer)?;
    let mut out = SHA256.to_vec();
    out.extend_from_slice(&mac(key, message).finalize().into_bytes());
    Ok(out)
}

/// Whether `response` is `{sha256}` + HMAC(key, message), compared in constant time.
fn verify(key: &[u8], message: &[u8], response: &[u8]) -> bool {
    match response.strip_prefix(SHA256) {
        Some(digest) if digest.len() == DIGEST_LEN => mac(key, message).verify_slice(digest).is_ok(),
        _ => false,
    }
}

fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (an empty one included): this never fails.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(message);
    m
}

fn check_version(rest: &[u8], peer: &str) -> Result<(), Error> {
    match rest {
        [v] if *v == PROTOCOL_VERSION => Ok(()),
        [v] => Err(Error::Protocol(format!(
            "{peer} speaks mp protocol version {v}, this process speaks {PROTOCOL_VERSION}: run the \
             same mp version on both sides"
        ))),
        _ => Err(Error::Protocol(format!("{peer} sent a malformed protocol version"))),
    }
}

fn unexpected(peer: &str, wanted: &str) -> Error {
    Error::Protocol(format!(
        "{peer} sent an unexpected handshake message (wanted {wanted}); is it an mp Listener/Client \
         of the same version?"
    ))
}

/// Fails and tells the peer why, so it fails at once instead of waiting for a timeout.
fn fail_telling(error: Error, reason: &str) -> Step {
    let mut out = FAILURE.to_vec();
    out.extend_from_slice(reason.as_bytes());
    Step { send: Some(out), status: Status::Failed(error) }
}

fn fail_quietly(error: Error) -> Step {
    Step { send: None, status: Status::Failed(error) }
}

/// A peer's reason, made safe to print: printable ASCII, at most 100 characters.
fn printable(bytes: &[u8]) -> String {
    let s: String =
        bytes.iter().take(100).map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '?' }).collect();
    if s.is_empty() { "no reason given".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs both machines against each other in memory; returns (server, client) outcomes.
    fn run(server_key: Option<&[u8]>, client_key: Option<&[u8]>) -> (Result<(), Error>, Result<(), Error>) {
        let (mut s, first) = Handshake::new(Role::Server, server_key).unwrap();
        let (mut c, none) = Handshake::new(Role::Client, client_key).unwrap();
        assert!(none.is_none());
        let mut to_client = first;
        let mut to_server: Option<Vec<u8>> = None;
        let (mut s_out, mut c_out) = (None, None);
        for _ in 0..10 {
            if let (Some(m), None) = (to_client.take(), &c_out) {
                let st = c.step(&m);
                to_server = st.send;
                match st.status {
                    Status::Continue => {}
                    Status::Done => c_out = Some(Ok(())),
                    Status::Failed(e) => c_out = Some(Err(e)),
                }
            }
            if let (Some(m), None) = (to_server.take(), &s_out) {
                let st = s.step(&m);
                to_client = st.send;
                match st.status {
                    Status::Continue => {}
                    Status::Done => s_out = Some(Ok(())),
                    Status::Failed(e) => s_out = Some(Err(e)),
                }
            }
        }
        (s_out.expect("server finished"), c_out.expect("client finished"))
    }

    #[test]
    fn same_key_both_done() {
        let (s, c) = run(Some(b"k"), Some(b"k"));
        s.unwrap();
        c.unwrap();
        let (s, c) = run(Some(b""), Some(b""));
        s.unwrap();
        c.unwrap();
        let (s, c) = run(None, None);
        s.unwrap();
        c.unwrap();
    }

    #[test]
    fn mismatches_fail_on_both_sides() {
        for (sk, ck) in [
            (Some(&b"a"[..]), Some(&b"b"[..])),
            (Some(&b""[..]), None),
            (None, Some(&b""[..])),
            (Some(&b"a"[..]), Some(&b""[..])),
        ] {
            let (s, c) = run(sk, ck);
            assert!(matches!(s, Err(Error::Auth(_))), "{sk:?}/{ck:?}: server {s:?}");
            assert!(matches!(c, Err(Error::Auth(_))), "{sk:?}/{ck:?}: client {c:?}");
        }
    }

    #[test]
    fn another_protocol_version_is_named_and_refused() {
        let (_, first) = Handshake::new(Role::Server, Some(b"k")).unwrap();
        let mut challenge = first.unwrap();
        *challenge.last_mut().unwrap() = PROTOCOL_VERSION + 1;
        let (mut c, _) = Handshake::new(Role::Client, Some(b"k")).unwrap();
        let st = c.step(&challenge);
        assert!(st.send.is_some_and(|m| m.starts_with(FAILURE)), "the peer is told");
        let Status::Failed(Error::Protocol(m)) = st.status else { panic!("{:?}", st.status) };
        assert!(m.contains("version 2") && m.contains("same mp version"), "{m}");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for role in [Role::Server, Role::Client] {
            for msg in [&b""[..], b"#CHALLENGE#", b"#CHALLENGE#{sha256}", b"#FAILURE#\xff\x00", b"\x00"] {
                let (mut h, _) = Handshake::new(role, Some(b"k")).unwrap();
                let st = h.step(msg);
                assert!(matches!(st.status, Status::Failed(_)), "{role:?} {msg:?}: {st:?}");
                assert!(matches!(h.step(msg).status, Status::Failed(_)));
            }
        }
    }
}

//! `mp::Client`: connects to a [`Listener`](super::Listener) and runs the client's side of
//! the handshake with blocking reads under one deadline.

use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use super::handshake::{self, Handshake, Role, Status};
use super::{Address, DEFAULT_HANDSHAKE_TIMEOUT, IntoAddress, TlsClientConfig};
use crate::connection::Connection;
use crate::error::Error;
use crate::sys;
use crate::wire::{self, FrameReader, Kind};

/// Connects to a [`Listener`](super::Listener) (Python's `multiprocessing.connection.Client`).
///
/// # Examples
///
/// ```
/// let listener = mp::Listener::bind(mp::Address::unix_temp(), b"key").unwrap();
/// let addr = listener.address().clone();
/// let t = std::thread::spawn(move || listener.accept::<i32>().unwrap().recv().unwrap());
/// let conn = mp::Client::connect::<i32>(&addr, b"key").unwrap();
/// conn.send(42).unwrap();
/// assert_eq!(t.join().unwrap(), 42);
/// ```
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to the listener at `addr` and authenticates with `authkey` (both ways: the
    /// listener must prove it holds the key too). The handshake is bounded by
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]; a wrong key is [`Error::Auth`] at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = mp::Listener::bind("127.0.0.1:0", b"right").unwrap();
    /// let addr = l.address().clone();
    /// let t = std::thread::spawn(move || l.accept::<()>().map(|_| ()));
    /// let r = mp::Client::connect::<()>(&addr, b"wrong");
    /// assert!(matches!(r, Err(mp::Error::Auth(_))));
    /// assert!(matches!(t.join().unwrap(), Err(mp::Error::Auth(_))));
    /// ```
    pub fn connect<T>(addr: impl IntoAddress, authkey: impl AsRef<[u8]>) -> Result<Connection<T>, Error> {
        connect(addr.into_address()?, Some(authkey.as_ref()), None, None)
    }

    /// [`connect`](Self::connect) over TLS (feature `tls`), to a listener made with
    /// [`Listener::bind_tls`](super::Listener::bind_tls): the listener's certificate is
    /// checked against the CAs and the server name in `tls` (by default the host of `addr`),
    /// then the authkey handshake runs inside TLS. A certificate that does not check out is
    /// [`Error::Auth`] saying why; so is a listener without TLS, at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let server = mp::TlsServerConfig::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem()).unwrap();
    /// let listener = mp::Listener::bind_tls("127.0.0.1:0", b"k", &server).unwrap();
    /// let port = listener.address().to_string().rsplit(':').next().unwrap().to_string();
    /// let t = std::thread::spawn(move || listener.accept::<u8>().map(|c| c.recv().unwrap()));
    ///
    /// // The certificate names "localhost": connect by that name.
    /// let client = mp::TlsClientConfig::from_ca_pem(cert.cert.pem()).unwrap();
    /// let conn = mp::Client::connect_tls::<u8>(format!("localhost:{port}"), b"k", &client).unwrap();
    /// conn.send(5).unwrap();
    /// assert_eq!(t.join().unwrap().unwrap(), 5);
    /// ```
    #[cfg(feature = "tls")]
    pub fn connect_tls<T>(
        addr: impl IntoAddress,
        authkey: impl AsRef<[u8]>,
        tls: &TlsClientConfig,
    ) -> Result<Connection<T>, Error> {
        connect(addr.into_address()?, Some(authkey.as_ref()), None, Some(tls))
    }

    /// [`connect_tls`](Self::connect_tls), with `timeout` bounding the connection and both
    /// handshakes together ([`Error::Timeout`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let tls = mp::TlsClientConfig::from_ca_pem(ca.cert.pem()).unwrap();
    /// // A plain socket that never speaks: the handshake times out.
    /// let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let addr = silent.local_addr().unwrap();
    /// let r = mp::Client::connect_tls_timeout::<()>(addr, b"k", &tls, Duration::from_millis(50));
    /// assert!(matches!(r, Err(mp::Error::Timeout { .. })));
    /// ```
    #[cfg(feature = "tls")]
    pub fn connect_tls_timeout<T>(
        addr: impl IntoAddress,
        authkey: impl AsRef<[u8]>,
        tls: &TlsClientConfig,
        timeout: Duration,
    ) -> Result<Connection<T>, Error> {
        connect(addr.into_address()?, Some(authkey.as_ref()), Some(timeout), Some(tls))
    }

    /// [`connect`](Self::connect), with `timeout` bounding the connection and the handshake
    /// together ([`Error::Timeout`]), including the wait for a Unix listener whose backlog
    /// of unaccepted connections is full. (Without a timeout, that wait and the handshake
    /// are bounded by [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::DEFAULT_HANDSHAKE_TIMEOUT).)
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// // A plain socket that never speaks: the handshake times out.
    /// let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let addr = silent.local_addr().unwrap();
    /// let r = mp::Client::connect_timeout::<()>(addr, b"k", Duration::from_millis(50));
    /// assert!(matches!(r, Err(mp::Error::Timeout { .. })));
    /// ```
    pub fn connect_timeout<T>(
        addr: impl IntoAddress,
        authkey: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Connection<T>, Error> {
        connect(addr.into_address()?, Some(authkey.as_ref()), Some(timeout), None)
    }

    /// Connects without a key, to a listener made with
    /// [`Listener::bind_unauthenticated`](super::Listener::bind_unauthenticated). A listener that wants a key refuses it at once,
    /// with [`Error::Auth`] on both sides.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = mp::Listener::bind_unauthenticated(mp::Address::unix_temp()).unwrap();
    /// let addr = l.address().clone();
    /// let t = std::thread::spawn(move || l.accept::<u8>().unwrap().recv().unwrap());
    /// mp::Client::connect_unauthenticated::<u8>(&addr).unwrap().send(1).unwrap();
    /// assert_eq!(t.join().unwrap(), 1);
    /// ```
    pub fn connect_unauthenticated<T>(addr: impl IntoAddress) -> Result<Connection<T>, Error> {
        connect(addr.into_address()?, None, None, None)
    }
}

pub(crate) fn connect<T>(
    addr: Address,
    key: Option<&[u8]>,
    timeout: Option<Duration>,
    tls: Option<&TlsClientConfig>,
) -> Result<Connection<T>, Error> {
    if tls.is_some() && !addr.is_tcp() {
        return Err(Error::invalid(format!(
            "TLS is for TCP addresses; {addr} is a Unix socket path (use Client::connect)"
        )));
    }
    let start = Instant::now();
    let deadline = start + timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    let timed_out =
        |what: String| Error::Timeout { what, after: timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT) };
    let fd: OwnedFd = match &addr {
        // Without a timeout, a listener whose backlog stays full is waited for as long as a
        // handshake may take.
        Address::Unix(path) => match sys::connect_unix(path, deadline)
            .map_err(|e| Error::io(format!("connecting to {addr} (is a Listener there?)"), e))?
        {
            Some(fd) => fd,
            None => {
                return Err(timed_out(format!(
                    "connecting to {addr} (its backlog of unaccepted connections is full: is \
                     the listener accepting?)"
                )));
            }
        },
        Address::Tcp(hp) => {
            let mut last = None;
            let mut stream = None;
            for a in Address::resolve(hp)? {
                let r = match timeout {
                    Some(_) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(timed_out(format!("connecting to {addr}")));
                        }
                        TcpStream::connect_timeout(&a, left)
                    }
                    None => TcpStream::connect(a),
                };
                match r {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let s = match (stream, last) {
                (Some(s), _) => s,
                (None, Some(e)) if e.kind() == std::io::ErrorKind::TimedOut && timeout.is_some() => {
                    return Err(timed_out(format!("connecting to {addr}")));
                }
                (None, e) => {
                    let e = e.unwrap_or_else(|| std::io::Error::other("no address to try"));
                    return Err(Error::io(format!("connecting to {addr} (is a Listener there?)"), e));
                }
            };
            let _ = s.set_nodelay(true);
            s.into()
        }
    };
    // Without a timeout, the handshake is still bounded: its clock starts once connected.
    let deadline = if timeout.is_some() { deadline } else { Instant::now() + DEFAULT_HANDSHAKE_TIMEOUT };
    let what = format!("the handshake with the listener at {addr}");
    let fd = match tls {
        None => fd,
        Some(cfg) => match start_tls(cfg, &addr, fd, deadline, &what) {
            Err(Error::Timeout { what, .. }) => return Err(timed_out(what)),
            other => other?,
        },
    };
    match client_handshake(fd, addr.is_tcp(), key, deadline, &what) {
        Err(Error::Timeout { what, .. }) => Err(timed_out(what)),
        other => other,
    }
}

/// The client's side of the handshake on a connected socket.
pub(super) fn client_handshake<T>(
    fd: OwnedFd,
    remote: bool,
    key: Option<&[u8]>,
    deadline: Instant,
    what: &str,
) -> Result<Connection<T>, Error> {
    let mut reader = FrameReader::new();
    reader.limit = Some(handshake::MAX_MESSAGE);
    reader.remote = remote;
    let (mut hs, _) = Handshake::new(Role::Client, key)?;
    loop {
        let frame = match reader.read(fd.as_fd(), Some(deadline), what) {
            Ok(f) => f,
            Err(Error::Timeout { .. }) => return Err(no_answer(what)),
            Err(Error::Disconnected { .. }) => {
                return Err(Error::Disconnected {
                    what: format!(
                        "{what} (it closed the connection mid-handshake: a different mp version, \
                         or a listener with too many pending handshakes?)"
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        if frame.kind != Kind::Auth {
            return Err(Error::Protocol(format!(
                "{what}: a {:?} frame arrived before the handshake finished",
                frame.kind
            )));
        }
        let step = hs.step(&frame.payload);
        if let Some(msg) = &step.send {
            let sent = wire::send_parts(fd.as_fd(), Kind::Auth, &[msg], what);
            if let (Err(e), Status::Continue | Status::Done) = (sent, &step.status) {
                return Err(e);
            }
        }
        match step.status {
            Status::Continue => {}
            Status::Done => return Ok(Connection::from_handshake(fd, reader, remote, None)),
            Status::Failed(e) => return Err(e),
        }
    }
}

/// Reads the listener's announcement that TLS starts, then runs TLS; returns the local end of
/// the TLS pump. A listener without TLS (its first frame is a challenge) is told and refused.
#[cfg(feature = "tls")]
fn start_tls(
    cfg: &TlsClientConfig,
    addr: &Address,
    fd: OwnedFd,
    deadline: Instant,
    what: &str,
) -> Result<OwnedFd, Error> {
    let mut reader = FrameReader::new();
    reader.limit = Some(handshake::MAX_MESSAGE);
    reader.remote = true;
    let frame = match reader.read(fd.as_fd(), Some(deadline), what) {
        Err(Error::Timeout { .. }) => return Err(no_answer(what)),
        other => other?,
    };
    let starttls = frame.kind == Kind::Auth
        && frame.payload.strip_prefix(handshake::STARTTLS) == Some(&[handshake::PROTOCOL_VERSION][..]);
    if !starttls && frame.kind == Kind::Auth && frame.payload.starts_with(handshake::STARTTLS) {
        return Err(Error::Protocol(format!(
            "{what}: the listener speaks another version of the mp protocol ({:?}, this client {})",
            &frame.payload[handshake::STARTTLS.len()..],
            handshake::PROTOCOL_VERSION
        )));
    }
    if !starttls {
        let plain = frame.kind == Kind::Auth && frame.payload.starts_with(b"#");
        let reason = b"#FAILURE#the client wants TLS but this listener does not use it";
        let _ = wire::send_parts(fd.as_fd(), Kind::Auth, &[reason], what);
        return Err(if plain {
            Error::Auth(format!(
                "the listener at {addr} does not use TLS: connect with Client::connect (or give the \
                 listener a certificate with Listener::bind_tls / PoolBuilder::listen_tls)"
            ))
        } else {
            Error::Protocol(format!("{what}: the listener's first message is not an mp handshake"))
        });
    }
    if reader.has_buffered() {
        return Err(Error::Protocol(format!("{what}: the listener spoke before TLS started")));
    }
    super::tls::client(cfg, addr, std::net::TcpStream::from(fd), deadline)
}

#[cfg(not(feature = "tls"))]
fn start_tls(cfg: &TlsClientConfig, _: &Address, _: OwnedFd, _: Instant, _: &str) -> Result<OwnedFd, Error> {
    match *cfg {}
}

/// A listener that accepted the connection but never spoke (the caller fills in `after`).
fn no_answer(what: &str) -> Error {
    Error::Timeout {
        what: format!(
            "{what} (it accepted the connection but did not answer: is it an mp Listener, and is \
             it calling accept?)"
        ),
        after: Duration::ZERO,
    }
}

//! `mp::Listener` and `mp::Client` (Python's `multiprocessing.connection`): typed
//! [`Connection`]s between processes that were not started together, over a Unix socket or
//! TCP, authenticated with an HMAC challenge in both directions, optionally over TLS (feature
//! `tls`, `tls.rs`). Protocol: `README.md` here.

mod address;
mod client;
pub(crate) mod fuzz;
mod handshake;
#[cfg(feature = "tls")]
mod tls;

pub use address::{Address, IntoAddress};
pub use client::Client;
pub(crate) use client::connect;
#[cfg(feature = "tls")]
pub use tls::{TlsClientConfig, TlsServerConfig};

/// What a TLS client trusts, as plain data that can travel to another process: a manager
/// proxy carries it so that whoever receives the proxy can reach a TLS manager
/// (`../managers/README.md`). Certificates are public, so this may go anywhere a proxy goes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum TlsTrust {
    /// CA certificates (DER), and the name the listener's certificate must carry when it is
    /// not the host of the address connected to.
    Cas { cas: Vec<Vec<u8>>, server_name: Option<String> },
    /// Exactly this certificate (DER), whatever its issuer and names: what the owner of a
    /// manager started with TLS trusts (the certificate it gave its server).
    Pinned(Vec<u8>),
}

/// TLS settings where the `tls` feature is off: none can exist.
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug)]
pub(crate) enum TlsServerConfig {}
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug)]
pub(crate) enum TlsClientConfig {}

use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::error::Error;
use crate::sys;
use crate::wire::{self, FrameReader, HEADER_LEN, Kind};
use handshake::{Handshake, Role, Status};

/// How long a peer may take to finish the handshake unless told otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections may be mid-handshake at once on one listener unless told otherwise.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 64;

enum Socket {
    Tcp(TcpListener),
    /// The path is removed when the listener is dropped.
    Unix(UnixListener, PathBuf),
}

/// A connection accepted but not yet authenticated.
struct Pending {
    fd: OwnedFd,
    reader: FrameReader,
    handshake: Handshake,
    deadline: Instant,
    peer: String,
}

struct Settings {
    handshake_timeout: Duration,
    max_pending: usize,
    max_message_size: Option<u64>,
}

struct State {
    pending: Vec<Pending>,
    /// Connections closed to respect `max_pending` since the last log line, and when that was.
    evicted: u64,
    last_log: Option<Instant>,
}

/// Accepts authenticated [`Connection`]s on a Unix socket path or a TCP port (Python's
/// `multiprocessing.connection.Listener`).
///
/// Every connection starts with a handshake: the listener challenges the client with 40
/// random bytes and checks its HMAC-SHA256 under the shared authkey, then the client
/// challenges the listener the same way. A wrong key fails on both sides with
/// [`Error::Auth`]. Many handshakes run at once inside [`accept`](Self::accept), without a
/// thread each; a peer that stalls is closed after the handshake timeout, and at most
/// [`DEFAULT_MAX_PENDING_HANDSHAKES`] (configurable) are kept at once: a flood of silent
/// connections costs a bounded number of descriptors and never blocks a good client.
///
/// Over TCP, values holding OS handles (`Lock`, `Value`, `Connection`, `SharedMemory`...)
/// cannot be sent: share those through a Manager.
///
/// # Examples
///
/// ```
/// let listener = mp::Listener::bind("127.0.0.1:0", b"secret").unwrap();
/// let addr = listener.address().clone(); // the real port
/// let client = std::thread::spawn(move || {
///     let conn = mp::Client::connect::<String>(&addr, b"secret").unwrap();
///     conn.send("hello".to_string()).unwrap();
/// });
/// let conn = listener.accept::<String>().unwrap();
/// assert_eq!(conn.recv().unwrap(), "hello");
/// client.join().unwrap();
/// ```
pub struct Listener {
    socket: Socket,
    address: Address,
    key: Option<Vec<u8>>,
    /// TLS on every accepted connection (TCP only).
    tls: Option<TlsServerConfig>,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Whether a thread is inside `accept` (it holds `state` while it polls): others wait
    /// here, where a timeout can be honoured.
    busy: Mutex<bool>,
    turn: std::sync::Condvar,
}

/// Marks the listener free again when an `accept` returns, however it returns.
struct Turn<'a>(&'a Listener);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.0.turn.notify_one();
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.key.is_some())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Listens on `addr` (a Unix path or a TCP `host:port`; port 0 picks a free port),
    /// accepting only clients that hold `authkey`. Any bytes are a key, the empty string too;
    /// [`current_process().authkey()`](crate::ProcessInfo::authkey) is the key the processes
    /// of one mp program share.
    ///
    /// # Examples
    ///
    /// ```
    /// let addr = mp::Address::unix_temp();
    /// let listener = mp::Listener::bind(&addr, mp::current_process().authkey()).unwrap();
    /// assert_eq!(listener.address(), &addr);
    /// ```
    pub fn bind(addr: impl IntoAddress, authkey: impl AsRef<[u8]>) -> Result<Listener, Error> {
        Listener::open(addr.into_address()?, Some(authkey.as_ref().to_vec()), None)
    }

    /// [`bind`](Self::bind) over TLS (feature `tls`): every connection is encrypted and the
    /// listener proves its identity with the certificate in `tls`; the authkey handshake then
    /// runs inside TLS, so the key still decides who may connect. TCP only. Clients connect
    /// with [`Client::connect_tls`]; a plaintext client is refused at once with
    /// [`Error::Auth`] naming TLS, on both sides.
    ///
    /// # Examples
    ///
    /// ```
    /// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let server = mp::TlsServerConfig::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem()).unwrap();
    /// let client = mp::TlsClientConfig::from_ca_pem(cert.cert.pem()).unwrap().server_name("localhost").unwrap();
    ///
    /// let listener = mp::Listener::bind_tls("127.0.0.1:0", b"secret", &server).unwrap();
    /// let addr = listener.address().clone();
    /// let t = std::thread::spawn(move || {
    ///     mp::Client::connect_tls::<String>(&addr, b"secret", &client).unwrap().send("hi".into()).unwrap();
    /// });
    /// assert_eq!(listener.accept::<String>().unwrap().recv().unwrap(), "hi");
    /// t.join().unwrap();
    /// ```
    #[cfg(feature = "tls")]
    pub fn bind_tls(
        addr: impl IntoAddress,
        authkey: impl AsRef<[u8]>,
        tls: &TlsServerConfig,
    ) -> Result<Listener, Error> {
        let addr = addr.into_address()?;
        if !addr.is_tcp() {
            return Err(Error::invalid(format!(
                "TLS is for TCP addresses; {addr} is a Unix socket path (use Listener::bind)"
            )));
        }
        Listener::open(addr, Some(authkey.as_ref().to_vec()), Some(tls.clone()))
    }

    /// Whether connections to this listener use TLS (`bind_tls`, feature `tls`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!mp::Listener::bind("127.0.0.1:0", b"k").unwrap().is_tls());
    /// ```
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Listens on a Unix socket path without authentication: any local process that can open
    /// the path may connect (a client that brings a key is refused, quickly, on both sides).
    /// TCP is refused: a TCP listener never starts without a key.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = mp::Listener::bind_unauthenticated(mp::Address::unix_temp()).unwrap();
    /// assert!(mp::Listener::bind_unauthenticated("127.0.0.1:0").is_err());
    /// # drop(listener);
    /// ```
    pub fn bind_unauthenticated(addr: impl IntoAddress) -> Result<Listener, Error> {
        let addr = addr.into_address()?;
        if addr.is_tcp() {
            return Err(Error::invalid(format!(
                "refusing to listen on TCP {addr} without an authkey: anyone who reaches the port \
                 could send frames; use Listener::bind(addr, key) (mp::current_process().authkey() \
                 is shared by the processes of one program)"
            )));
        }
        Listener::open(addr, None, None)
    }

    fn open(addr: Address, key: Option<Vec<u8>>, tls: Option<TlsServerConfig>) -> Result<Listener, Error> {
        let (socket, address) = match &addr {
            Address::Tcp(hp) => {
                let addrs = Address::resolve(hp)?;
                let l = TcpListener::bind(&addrs[..])
                    .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
                let local = l.local_addr().map_err(|e| Error::io(format!("listening on {addr}"), e))?;
                (Socket::Tcp(l), Address::from(local))
            }
            Address::Unix(path) => {
                let l = UnixListener::bind(path).map_err(|e| {
                    let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                        " (a socket file is already there: another listener, or a stale file to remove)"
                    } else {
                        ""
                    };
                    Error::io(format!("listening on {addr}{hint}"), e)
                })?;
                (Socket::Unix(l, path.clone()), addr.clone())
            }
        };
        let set_nb = match &socket {
            Socket::Tcp(l) => l.set_nonblocking(true),
            Socket::Unix(l, _) => l.set_nonblocking(true),
        };
        set_nb.map_err(|e| Error::io(format!("listening on {address}"), e))?;
        Ok(Listener {
            socket,
            address,
            key,
            tls,
            settings: Mutex::new(Settings {
                handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
                max_pending: DEFAULT_MAX_PENDING_HANDSHAKES,
                max_message_size: None,
            }),
            state: Mutex::new(State { pending: Vec::new(), evicted: 0, last_log: None }),
            busy: Mutex::new(false),
            turn: std::sync::Condvar::new(),
        })
    }

    /// The address clients connect to; for TCP port 0, the port the OS picked.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = mp::Listener::bind("127.0.0.1:0", b"k").unwrap();
    /// assert!(!l.address().to_string().ends_with(":0"));
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// How long a connecting peer may take to finish the handshake before it is closed
    /// (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let l = mp::Listener::bind("127.0.0.1:0", b"k").unwrap();
    /// l.set_handshake_timeout(std::time::Duration::from_secs(2));
    /// ```
    pub fn set_handshake_timeout(&self, timeout: Duration) {
        self.settings().handshake_timeout = timeout;
    }

    /// How many connections may be mid-handshake at once (default
    /// [`DEFAULT_MAX_PENDING_HANDSHAKES`], at least 1). Past it the oldest is closed, with a
    /// log line on stderr: a flood of silent connections costs at most this many
    /// descriptors.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = mp::Listener::bind("127.0.0.1:0", b"k").unwrap();
    /// l.set_max_pending_handshakes(16);
    /// ```
    pub fn set_max_pending_handshakes(&self, n: usize) {
        self.settings().max_pending = n.max(1);
    }

    /// The largest message accepted connections take (default: the process-wide
    /// [`max_frame_size`](crate::max_frame_size)). A larger one is refused before anything
    /// is allocated for it, as [`Error::Protocol`], and skipped.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = mp::Listener::bind("127.0.0.1:0", b"k").unwrap();
    /// l.set_max_message_size(1 << 20);
    /// ```
    pub fn set_max_message_size(&self, bytes: u64) {
        self.settings().max_message_size = Some(bytes);
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the next client that passes the handshake. Several threads may call it: one
    /// at a time waits for connections, the others wait their turn.
    ///
    /// An error about one peer — [`Error::Auth`] (wrong or missing key), [`Error::Protocol`]
    /// (it is not an mp client of this version) — leaves the listener working: call `accept`
    /// again. Peers that hang up or stall mid-handshake are closed without an error.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = mp::Listener::bind("127.0.0.1:0", b"k").unwrap();
    /// let addr = l.address().clone();
    /// let t = std::thread::spawn(move || mp::Client::connect::<u32>(addr, b"k").unwrap().recv().unwrap());
    /// l.accept::<u32>().unwrap().send(7).unwrap();
    /// assert_eq!(t.join().unwrap(), 7);
    /// ```
    pub fn accept<T>(&self) -> Result<Connection<T>, Error> {
        self.accept_until(None, Duration::ZERO)
    }

    /// [`accept`](Self::accept), giving up with [`Error::Timeout`] after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = mp::Listener::bind("127.0.0.1:0", b"k").unwrap();
    /// let r = l.accept_timeout::<u32>(Duration::from_millis(10));
    /// assert!(matches!(r, Err(mp::Error::Timeout { .. })));
    /// ```
    pub fn accept_timeout<T>(&self, timeout: Duration) -> Result<Connection<T>, Error> {
        self.accept_until(Some(Instant::now() + timeout), timeout)
    }

    fn accept_until<T>(&self, deadline: Option<Instant>, timeout: Duration) -> Result<Connection<T>, Error> {
        let (timeout_hs, max_pending, limit) = {
            let s = self.settings();
            (s.handshake_timeout, s.max_pending, s.max_message_size)
        };
        let timed_out =
            || Error::Timeout { what: format!("accepting a connection on {}", self.address), after: timeout };
        // One thread accepts at a time; the others wait their turn, within their timeout.
        let _turn = {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            while *busy {
                busy = match deadline {
                    None => self.turn.wait(busy).unwrap_or_else(|p| p.into_inner()),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(timed_out());
                        }
                        self.turn.wait_timeout(busy, left).unwrap_or_else(|p| p.into_inner()).0
                    }
                };
            }
            *busy = true;
            Turn(self)
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            // Stalled peers go first: closing them frees their descriptors.
            st.pending.retain(|p| p.deadline > now);
            let wake = st.pending.iter().map(|p| p.deadline).min();
            let until = match (deadline, wake) {
                (Some(d), Some(w)) => Some(d.min(w)),
                (d, w) => d.or(w),
            };
            let mut fds = Vec::with_capacity(st.pending.len() + 1);
            fds.push((self.listen_fd(), false));
            fds.extend(st.pending.iter().map(|p| (p.fd.as_fd(), false)));
            let ready = sys::poll_many(&fds, until)
                .map_err(|e| Error::io(format!("waiting for connections on {}", self.address), e))?;
            let listen_ready = ready[0].0;
            let ready_pending: Vec<usize> =
                ready[1..].iter().enumerate().filter(|(_, r)| r.0).map(|(i, _)| i).collect();
            drop(fds);
            // Peers already accepted first, then new ones (which may push old ones out).
            for i in ready_pending.into_iter().rev() {
                match drive(&mut st.pending[i]) {
                    Drive::Waiting => {}
                    Drive::Dropped => {
                        st.pending.swap_remove(i);
                    }
                    Drive::Failed(e) => {
                        st.pending.swap_remove(i);
                        return Err(e);
                    }
                    Drive::Done => {
                        let p = st.pending.swap_remove(i);
                        return Ok(Connection::from_handshake(p.fd, p.reader, self.address.is_tcp(), limit));
                    }
                }
            }
            if listen_ready {
                self.take_new(&mut st, timeout_hs, max_pending)?;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(timed_out());
            }
        }
    }

    fn listen_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match &self.socket {
            Socket::Tcp(l) => l.as_fd(),
            Socket::Unix(l, _) => l.as_fd(),
        }
    }

    /// Accepts every connection waiting in the kernel and sends each its challenge.
    fn take_new(&self, st: &mut State, timeout: Duration, max_pending: usize) -> Result<(), Error> {
        loop {
            let accepted = match &self.socket {
                Socket::Tcp(l) => l.accept().map(|(s, peer)| {
                    let _ = s.set_nodelay(true);
                    (OwnedFd::from(s), peer.to_string())
                }),
                Socket::Unix(l, _) => {
                    l.accept().map(|(s, _)| (OwnedFd::from(s), "a local process".to_string()))
                }
            };
            let (fd, peer) = match accepted {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!(
                            "accepting a connection on {} (out of descriptors? {} handshakes are pending)",
                            self.address,
                            st.pending.len()
                        ),
                        e,
                    ));
                }
            };
            let fd = match &self.tls {
                None => fd,
                Some(cfg) => match start_tls(cfg, fd, Instant::now() + timeout) {
                    Some(near) => near,
                    None => continue, // gone already
                },
            };
            let (handshake, first) = Handshake::new(Role::Server, self.key.as_deref())?;
            if let Some(msg) = first {
                if send_now(fd.as_fd(), &msg).is_err() {
                    continue; // gone already
                }
            }
            if st.pending.len() >= max_pending {
                let oldest = (0..st.pending.len()).min_by_key(|&i| st.pending[i].deadline).unwrap_or(0);
                let old = st.pending.swap_remove(oldest);
                st.evicted += 1;
                let now = Instant::now();
                if st.last_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                    eprintln!(
                        "mp: listener {}: {max_pending} connections are already mid-handshake (the \
                         limit); closed the oldest, from {} ({} closed so far). Clients that connect \
                         and say nothing, or a flood? Raise the limit with \
                         Listener::set_max_pending_handshakes if these are real clients.",
                        self.address, old.peer, st.evicted
                    );
                    st.last_log = Some(now);
                }
            }
            let mut reader = FrameReader::new();
            reader.limit = Some(handshake::MAX_MESSAGE);
            reader.remote = self.address.is_tcp();
            st.pending.push(Pending { fd, reader, handshake, deadline: Instant::now() + timeout, peer });
        }
    }

    /// Closes the listener (dropping it does the same): pending handshakes are dropped and a
    /// Unix socket's path is removed.
    ///
    /// # Examples
    ///
    /// ```
    /// let addr = mp::Address::unix_temp();
    /// let l = mp::Listener::bind(&addr, b"k").unwrap();
    /// l.close();
    /// assert!(mp::Client::connect::<()>(&addr, b"k").is_err());
    /// ```
    pub fn close(self) {}
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Socket::Unix(_, path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

enum Drive {
    Waiting,
    Done,
    /// The peer hung up or broke off quietly: close it, nobody to tell.
    Dropped,
    Failed(Error),
}

/// Reads what a pending peer sent, without blocking, and answers it.
fn drive(p: &mut Pending) -> Drive {
    let what = format!("the handshake with {}", p.peer);
    loop {
        let frame = match p.reader.try_read(p.fd.as_fd(), &what) {
            Ok(Some(f)) => f,
            Ok(None) => return Drive::Waiting,
            Err(Error::Disconnected { .. } | Error::Io { .. }) => return Drive::Dropped,
            Err(e) => return Drive::Failed(e),
        };
        if frame.kind != Kind::Auth {
            return Drive::Failed(Error::Protocol(format!(
                "{} sent a {:?} frame before finishing the handshake",
                p.peer, frame.kind
            )));
        }
        let step = p.handshake.step(&frame.payload);
        if let Some(msg) = step.send {
            if send_now(p.fd.as_fd(), &msg).is_err() && !matches!(step.status, Status::Failed(_)) {
                return Drive::Dropped;
            }
        }
        match step.status {
            Status::Continue => {}
            Status::Done => return Drive::Done,
            Status::Failed(e) => {
                return Drive::Failed(match e {
                    Error::Auth(m) => Error::Auth(format!("{}: {m}", p.peer)),
                    other => other,
                });
            }
        }
    }
}

/// Announces TLS on an accepted TCP connection and hands it to a TLS pump; the local end it
/// returns then runs the handshake like any socket. `None` if the peer is gone already or
/// the pump cannot start (said on stderr: the listener goes on).
#[cfg(feature = "tls")]
fn start_tls(cfg: &TlsServerConfig, fd: OwnedFd, deadline: Instant) -> Option<OwnedFd> {
    let mut hello = handshake::STARTTLS.to_vec();
    hello.push(handshake::PROTOCOL_VERSION);
    send_now(fd.as_fd(), &hello).ok()?;
    match tls::server(cfg, std::net::TcpStream::from(fd), deadline) {
        Ok(near) => Some(near),
        Err(e) => {
            eprintln!("mp: a TLS connection could not start: {e}");
            None
        }
    }
}

#[cfg(not(feature = "tls"))]
fn start_tls(cfg: &TlsServerConfig, _: OwnedFd, _: Instant) -> Option<OwnedFd> {
    match *cfg {}
}

/// One handshake message as a whole `Auth` frame.
pub(crate) fn auth_frame(msg: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + msg.len());
    buf.resize(HEADER_LEN, 0);
    buf.extend_from_slice(msg);
    wire::seal_raw(&mut buf, Kind::Auth);
    buf
}

/// Sends a handshake message without blocking: it is tiny, so a socket that cannot take it
/// now belongs to a peer that is not reading.
fn send_now(fd: std::os::fd::BorrowedFd<'_>, msg: &[u8]) -> Result<(), Error> {
    let buf = auth_frame(msg);
    match sys::send_nonblocking(fd, &[&buf], &[]) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(_) => Err(Error::Protocol("the peer is not reading its handshake messages".into())),
        Err(e) => Err(Error::io("sending a handshake message", e)),
    }
}

//! Remote workers: the same binary, started on another host, serving a Pool that listens
//! (`Pool::builder().listen(addr, authkey)`).
//!
//! A *worker host* (`MP_CONNECT=host:port MP_AUTHKEY=… ./app`, or [`serve_worker`]) keeps
//! `processes` worker children connected to the pool: for each, it connects and
//! authenticates (a [`Client`](crate::Client)), then starts a child of its own whose channel *is* that
//! connection — the pool sends it `Setup` and tasks exactly as it does to a local child. The
//! host watches each child and its connection: a child that dies (segfault, abort, OOM) is
//! replaced by a fresh one on a fresh connection, and a connection the pool drops (its
//! `task_timeout` passed, or the pool closed) gets its child SIGKILLed, so a remote timeout
//! really kills. When the pool is gone (connections refused after it had accepted some), the
//! host exits. With `MP_TLS_CA` (feature `tls`), each connection is TLS, checking the pool's
//! certificate against that CA (and `MP_TLS_SERVER_NAME`, if set).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::error::Error;
use crate::listener::{self, Address, IntoAddress, TlsClientConfig};
use crate::spawn::{self, Child};
use crate::sys;
use crate::wire::FrameReader;

/// `host:port` (or a Unix socket path) of the pool to serve.
pub(crate) const ENV_CONNECT: &str = "MP_CONNECT";
/// The pool's authkey (the variable's bytes).
pub(crate) const ENV_AUTHKEY: &str = "MP_AUTHKEY";
/// Worker processes to keep connected (default: the CPU count).
pub(crate) const ENV_WORKERS: &str = "MP_WORKERS";
/// PEM file of the CA that signed the pool's certificate: connect over TLS (feature `tls`).
pub(crate) const ENV_TLS_CA: &str = "MP_TLS_CA";
/// The name the pool's certificate must carry, when not the host in `MP_CONNECT`.
pub(crate) const ENV_TLS_SERVER_NAME: &str = "MP_TLS_SERVER_NAME";
/// The variables a worker host reads; its children do not inherit them.
pub(crate) const ENV: [&str; 5] = [ENV_CONNECT, ENV_AUTHKEY, ENV_WORKERS, ENV_TLS_CA, ENV_TLS_SERVER_NAME];

/// How long a host keeps trying a pool that is not (yet) accepting, before it ever connected.
const FIRST_CONNECT_FOR: Duration = Duration::from_secs(30);
/// Pause between attempts to fill an empty seat.
const RETRY_EVERY: Duration = Duration::from_millis(200);
/// Bound on one connection attempt with its handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Called by `mp::init()`: under `MP_CONNECT`, serve that pool and exit instead of running
/// `main`.
pub(crate) fn serve_from_env() {
    let Some(addr) = std::env::var_os(ENV_CONNECT) else {
        return;
    };
    let addr = addr.to_string_lossy().into_owned();
    let Some(key) = std::env::var_os(ENV_AUTHKEY) else {
        eprintln!(
            "mp: {ENV_CONNECT} is set but {ENV_AUTHKEY} is not: a worker host needs the pool's authkey"
        );
        sys::exit(2);
    };
    let processes = match std::env::var(ENV_WORKERS) {
        Ok(v) => match v.parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("mp: {ENV_WORKERS}={v:?} is not a number of worker processes");
                sys::exit(2);
            }
        },
        Err(_) => crate::process::cpu_count(),
    };
    let key = std::os::unix::ffi::OsStrExt::as_bytes(key.as_os_str()).to_vec();
    let tls = match tls_from_env() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mp: worker host for the pool at {addr}: {e}");
            sys::exit(2);
        }
    };
    let served = addr.as_str().into_address().and_then(|a| serve(a, &key, processes, tls.as_ref()));
    match served {
        Ok(()) => sys::exit(0),
        Err(e) => {
            eprintln!("mp: worker host for the pool at {addr}: {e}");
            sys::exit(1)
        }
    }
}

/// `MP_TLS_CA` (and `MP_TLS_SERVER_NAME`): the TLS settings to reach the pool with.
#[cfg(feature = "tls")]
fn tls_from_env() -> Result<Option<TlsClientConfig>, Error> {
    let Some(ca) = std::env::var_os(ENV_TLS_CA) else {
        if std::env::var_os(ENV_TLS_SERVER_NAME).is_some() {
            return Err(Error::invalid(format!("{ENV_TLS_SERVER_NAME} is set but {ENV_TLS_CA} is not")));
        }
        return Ok(None);
    };
    let mut cfg = TlsClientConfig::from_ca_file(&ca)?;
    if let Ok(name) = std::env::var(ENV_TLS_SERVER_NAME) {
        cfg = cfg.server_name(&name)?;
    }
    Ok(Some(cfg))
}

#[cfg(not(feature = "tls"))]
fn tls_from_env() -> Result<Option<TlsClientConfig>, Error> {
    match std::env::var_os(ENV_TLS_CA) {
        None => Ok(None),
        Some(_) => Err(Error::invalid(format!(
            "{ENV_TLS_CA} is set but this program was built without mp's `tls` feature"
        ))),
    }
}

/// What a worker host says first on each connection, after the handshake: who the worker
/// child on it is, for the pool's errors and stats.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(crate) struct Hello {
    pub pid: u32,
    pub host: String,
}

/// One worker child and a watch on its connection.
struct Seat {
    child: Child,
    /// A duplicate of the child's socket, polled for the pool hanging up (never read).
    watch: OwnedFd,
}

/// Serves the pool listening at `addr` with `processes` worker children, until the pool
/// goes away: what `MP_CONNECT=addr MP_AUTHKEY=key MP_WORKERS=n ./app` does from
/// `mp::init()`. Returns `Ok` once the pool it served stops accepting; an `Err` if it never
/// accepted (nothing listening for 30 s, or a wrong key: [`Error::Auth`]).
///
/// A child that dies is replaced (on a new connection); a child whose connection the pool
/// drops — its `task_timeout` passed — is killed.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// // On each worker host, the same binary (or set MP_CONNECT / MP_AUTHKEY instead):
/// mp::serve_worker("pool-host:50000", b"secret", 8)?;
/// # Ok(()) }
/// ```
pub fn serve_worker(
    addr: impl IntoAddress,
    authkey: impl AsRef<[u8]>,
    processes: usize,
) -> Result<(), Error> {
    serve(addr.into_address()?, authkey.as_ref(), processes, None)
}

/// [`serve_worker`] for a pool that listens over TLS
/// ([`PoolBuilder::listen_tls`](crate::PoolBuilder::listen_tls)), feature `tls`: each
/// connection checks the pool's certificate against `tls` first. What `MP_TLS_CA=ca.pem`
/// (and `MP_TLS_SERVER_NAME`, when the certificate's name is not the host in
/// `MP_CONNECT`) does for `MP_CONNECT` hosts. A certificate that does not check out is
/// [`Error::Auth`], at once.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// // Serves until the pool closes; needs a pool listening with listen_tls at that address.
/// let tls = mp::TlsClientConfig::from_ca_file("/etc/mp/ca.pem")?;
/// mp::serve_worker_tls("pool-host:50000", b"secret", 8, &tls)?;
/// # Ok(()) }
/// ```
#[cfg(feature = "tls")]
pub fn serve_worker_tls(
    addr: impl IntoAddress,
    authkey: impl AsRef<[u8]>,
    processes: usize,
    tls: &TlsClientConfig,
) -> Result<(), Error> {
    serve(addr.into_address()?, authkey.as_ref(), processes, Some(tls))
}

fn serve(addr: Address, key: &[u8], processes: usize, tls: Option<&TlsClientConfig>) -> Result<(), Error> {
    if processes == 0 {
        return Err(Error::invalid("serve_worker needs at least one worker process"));
    }
    let mut seats: Vec<Option<Seat>> = (0..processes).map(|_| None).collect();
    let start = Instant::now();
    let mut ever_connected = false;
    loop {
        let mut waiting_for_pool = false;
        for i in 0..seats.len() {
            if seats[i].is_some() {
                continue;
            }
            match take_seat(&addr, key, tls) {
                Ok(seat) => {
                    seats[i] = Some(seat);
                    ever_connected = true;
                }
                Err(e @ Error::Auth(_)) => return Err(e),
                Err(e) if ever_connected && is_refused(&e) => {
                    // The pool stopped listening: it is done.
                    for seat in seats.iter().flatten() {
                        seat.child.kill_and_reap();
                    }
                    return Ok(());
                }
                Err(e) => {
                    if !ever_connected && start.elapsed() > FIRST_CONNECT_FOR {
                        return Err(e);
                    }
                    waiting_for_pool = true;
                    break;
                }
            }
        }
        let live: Vec<usize> = (0..seats.len()).filter(|&i| seats[i].is_some()).collect();
        let seat = |i: usize| seats[i].as_ref().expect("live seat");
        let exits: Vec<_> = live.iter().map(|&i| seat(i).child.pidfd()).collect();
        let watches: Vec<_> = live.iter().map(|&i| seat(i).watch.as_fd()).collect();
        let wait =
            if waiting_for_pool || live.len() < seats.len() { RETRY_EVERY } else { Duration::from_secs(1) };
        let (exited, hung_up) = sys::wait_exit_or_hangup(&exits, &watches, wait)
            .map_err(|e| Error::io("watching the worker children", e))?;
        for (k, &i) in live.iter().enumerate() {
            if exited[k] || hung_up[k] {
                let seat = seats[i].take().expect("live seat");
                // Ended on its own: reaped here. Connection dropped by the pool: killed.
                seat.child.kill_and_reap();
            }
        }
    }
}

/// Connects, authenticates, starts a child on the connection and introduces it. The child
/// waits for its `Setup` from the pool and writes nothing before, so the `Hello` written
/// here cannot interleave with it.
fn take_seat(addr: &Address, key: &[u8], tls: Option<&TlsClientConfig>) -> Result<Seat, Error> {
    let conn = listener::connect::<Hello>(addr.clone(), Some(key), Some(CONNECT_TIMEOUT), tls)?;
    let sock = conn.into_fd()?;
    let theirs = sock.try_clone().map_err(|e| Error::io("dup of a worker connection", e))?;
    let child = spawn::spawn_child_on(theirs)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let conn = Connection::<Hello>::from_handshake(sock, FrameReader::new(), true, None);
    if let Err(e) = conn.send(Hello { pid: child.pid, host }) {
        child.kill_and_reap();
        return Err(e.error);
    }
    Ok(Seat { child, watch: conn.into_fd()? })
}

fn is_refused(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if matches!(source.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound))
}

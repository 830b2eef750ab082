//! Proxy plumbing: the per-process client of a manager (a pool of connections) and
//! [`RawProxy`], the untyped handle every typed proxy wraps.
//!
//! References: the server counts, per object, the references held by each process (its
//! *session*) and by stored values. A proxy created here, or received in a reply, owns one
//! reference of this process's session; a proxy that arrived by value (a worker argument)
//! takes one on its first call. Clones share it; the last clone's drop gives it back. When a
//! process exits, its connections close and the server drops its session's references, so
//! a crashed process cannot pin objects forever.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::protocol::{Op, Reply, Request, Status, push_blob};
use super::transport::{self, Conn};
use crate::error::Error;
use crate::listener::{Address, TlsClientConfig, TlsTrust};
use crate::wire::codec;

/// Idle connections a process keeps per manager; more are opened while more threads call at
/// once, and closed again when they come back to a full pool.
const MAX_IDLE: usize = 16;

/// This process's side of one manager: its session id and idle connections. One per
/// manager address per process, shared by all proxies of that manager.
pub(crate) struct Client {
    pub addr: Address,
    pub authkey: Arc<[u8]>,
    /// What the manager's certificate is checked against, when it uses TLS.
    pub tls: Option<Arc<TlsTrust>>,
    /// The TLS configuration built from `tls`, on the first connection (or given by
    /// `Manager::connect_tls`).
    tls_config: OnceLock<TlsClientConfig>,
    session: u64,
    idle: Mutex<Vec<Conn>>,
    /// How long a call waits for its answer, in nanoseconds (`u64::MAX`: forever).
    call_timeout: AtomicU64,
    /// Connections whose call timed out: their answer may still come, so they are not used
    /// again until it did (and was thrown away). Kept open meanwhile: closing this process's
    /// last connection would end its session and drop its proxies' references.
    late: Mutex<Vec<Conn>>,
}

/// The call timeout a new client starts with: `MP_MANAGER_CALL_TIMEOUT` (seconds) from the
/// environment, else none.
fn default_call_timeout() -> u64 {
    static DEFAULT: OnceLock<u64> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var("MP_MANAGER_CALL_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(u64::MAX, |s| Duration::from_secs_f64(s).as_nanos().min(u64::MAX as u128 - 1) as u64)
    })
}

static CLIENTS: Mutex<Vec<Arc<Client>>> = Mutex::new(Vec::new());

/// The client of the manager at `addr` in this process, with `authkey` and `tls` (one per
/// address, key and TLS trust: a client that connected with a wrong key or CA does not spoil
/// the right one).
pub(crate) fn client(addr: &Address, authkey: &Arc<[u8]>, tls: Option<&Arc<TlsTrust>>) -> Arc<Client> {
    let mut all = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    let same_tls = |c: &Client| match (&c.tls, tls) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
        _ => false,
    };
    if let Some(c) = all.iter().find(|c| c.addr == *addr && *c.authkey == **authkey && same_tls(c)) {
        return c.clone();
    }
    let c = Arc::new(Client {
        addr: addr.clone(),
        authkey: authkey.clone(),
        tls: tls.cloned(),
        tls_config: OnceLock::new(),
        session: super::random_u64(),
        idle: Mutex::new(Vec::new()),
        call_timeout: AtomicU64::new(default_call_timeout()),
        late: Mutex::new(Vec::new()),
    });
    all.push(c.clone());
    c
}

/// Drops this process's client of a manager that was shut down (its proxies keep theirs).
pub(crate) fn forget_client(addr: &Address) {
    CLIENTS.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| c.addr != *addr);
}

/// Drops `c` from this process's clients if it never connected (a wrong key or address),
/// so it is not mistaken for the right one later.
pub(crate) fn forget_if_unused(c: &Arc<Client>) {
    let mut all = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    if c.idle.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
        all.retain(|x| !Arc::ptr_eq(x, c));
    }
}

/// A client of the manager at `addr` in this process, if there is one.
fn known(addr: &Address) -> Option<Arc<Client>> {
    CLIENTS.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|c| c.addr == *addr).cloned()
}

/// A reply, its result still encoded.
pub(crate) struct Answer {
    buf: Vec<u8>,
    at: usize,
    acquired: Vec<u64>,
    pub timed_out: bool,
}

impl Answer {
    /// The result as the server encoded it.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    /// Decodes the result; proxies inside it adopt the references the server took for us,
    /// and references nobody adopted are given back.
    pub fn decode<R: DeserializeOwned>(self, client: &Arc<Client>) -> Result<R, Error> {
        // Proxies of this manager inside the reply travel without their key: it is ours.
        let prev_from = FROM.with(|f| f.borrow_mut().replace(client.clone()));
        let r = self.decode_adopting(client);
        FROM.with(|f| *f.borrow_mut() = prev_from);
        r
    }

    fn decode_adopting<R: DeserializeOwned>(self, client: &Client) -> Result<R, Error> {
        if self.acquired.is_empty() {
            return codec::decode(&self.buf[self.at..]);
        }
        let prev = ACQUIRED.with(|a| a.borrow_mut().replace(self.acquired));
        let r = codec::decode(&self.buf[self.at..]);
        let left = ACQUIRED.with(|a| std::mem::replace(&mut *a.borrow_mut(), prev)).unwrap_or_default();
        for id in left {
            client.release(id);
        }
        r
    }
}

impl Client {
    /// Uses `cfg` for TLS (it is what `tls` says, with nothing to rebuild).
    #[cfg(feature = "tls")]
    pub fn set_tls_config(&self, cfg: &TlsClientConfig) {
        let _ = self.tls_config.set(cfg.clone());
    }

    fn tls_config(&self) -> Result<Option<&TlsClientConfig>, Error> {
        let Some(trust) = &self.tls else { return Ok(None) };
        if self.tls_config.get().is_none() {
            let _ = self.tls_config.set(transport::client_config(trust)?);
        }
        Ok(self.tls_config.get())
    }

    fn connect(&self) -> Result<Conn, Error> {
        // A stuck manager still completes the TCP or Unix connect (the kernel queues it):
        // the handshake is what waits, within the call timeout.
        let timeout = self.call_timeout().map(|t| t.min(crate::listener::DEFAULT_HANDSHAKE_TIMEOUT));
        let conn = transport::connect(&self.addr, &self.authkey, self.tls_config()?, timeout)?;
        let mut buf = Vec::with_capacity(32);
        let head =
            Request { obj: 0, acquire: false, op: Op::Hello { session: self.session }, refs: Vec::new() };
        codec::encode_into(&head, &mut buf)?;
        let answer = self.round_trip(&conn, &buf, false)?;
        answer.decode_adopting::<()>(self)?; // `()`: no proxies inside
        Ok(conn)
    }

    /// The call timeout of this process's calls to this manager (`None`: wait forever).
    pub fn set_call_timeout(&self, timeout: Option<Duration>) {
        let ns = timeout.map_or(u64::MAX, |t| t.as_nanos().min(u64::MAX as u128 - 1) as u64);
        self.call_timeout.store(ns, Ordering::Relaxed);
    }

    fn call_timeout(&self) -> Option<Duration> {
        let ns = self.call_timeout.load(Ordering::Relaxed);
        (ns != u64::MAX).then(|| Duration::from_nanos(ns))
    }

    /// One request and its answer. `blocking`: an operation the server may hold for one
    /// slice (a queue `get`, a lock): the call timeout starts after it.
    fn round_trip(&self, conn: &Conn, request: &[u8], blocking: bool) -> Result<Answer, Error> {
        let gone = |e: Error| match e {
            Error::Disconnected { .. } | Error::Io { .. } => {
                Error::Disconnected { what: format!("the manager at {} (shut down or exited)", self.addr) }
            }
            e => e,
        };
        conn.send_bytes(request).map_err(gone)?;
        let buf = match self.call_timeout() {
            None => conn.recv_bytes(),
            Some(t) => {
                let wait = if blocking { t + super::server::SLICE } else { t };
                conn.recv_bytes_timeout(wait).map_err(|e| match e {
                    Error::Timeout { .. } => Error::Timeout {
                        what: format!(
                            "a call to the manager at {} (no answer: is it stuck, or its host \
                             unreachable? the call may or may not have taken effect; \
                             Manager::set_call_timeout / MP_MANAGER_CALL_TIMEOUT)",
                            self.addr
                        ),
                        after: t,
                    },
                    e => e,
                })
            }
        }
        .map_err(gone)?;
        let (reply, rest) = codec::decode_prefix::<Reply>(&buf)?;
        let at = buf.len() - rest.len();
        match reply.status {
            Status::Ok => Ok(Answer { at, acquired: reply.acquired, timed_out: false, buf }),
            Status::TimedOut => Ok(Answer { at, acquired: Vec::new(), timed_out: true, buf }),
            Status::Err(e) => Err(e.into_error()),
        }
    }

    /// Sends one request and waits for its reply, on an idle connection (or a new one).
    pub fn request(&self, request: &[u8], blocking: bool) -> Result<Answer, Error> {
        let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn.or_else(|| self.late_answered()) {
            Some(c) => c,
            None => self.connect()?,
        };
        let r = self.round_trip(&conn, request, blocking);
        // Only a dead connection is dropped (the frame reader skips an oversized reply and
        // stays in step), or one whose answer is late (it would answer the next call).
        // Dropping live ones could close this process's last connection, and with it the
        // session that holds its proxies' references.
        if matches!(r, Err(Error::Timeout { .. })) {
            let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
            if late.len() >= MAX_IDLE {
                late.remove(0); // the newer ones still hold the session
            }
            late.push(conn);
        } else if !matches!(r, Err(Error::Disconnected { .. } | Error::Io { .. })) {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        r
    }

    /// A connection whose late answer has arrived (read and dropped here), to use again.
    fn late_answered(&self) -> Option<Conn> {
        let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
        let at = late.iter().position(|c| c.poll(Duration::ZERO).unwrap_or(false))?;
        let conn = late.remove(at);
        drop(late);
        // A closed connection reads as ready too: it is dropped.
        conn.recv_bytes().ok().map(|_| conn)
    }

    /// Gives back one reference of this session to `id` (not answered; best effort: if the
    /// manager is gone there is nothing left to release).
    pub fn release(&self, id: u64) {
        let mut buf = Vec::with_capacity(24);
        let head = Request { obj: id, acquire: false, op: Op::Release { count: 1 }, refs: Vec::new() };
        if codec::encode_into(&head, &mut buf).is_err() {
            return;
        }
        let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(conn) = conn.or_else(|| self.connect().ok()) else { return };
        if conn.send_bytes(&buf).is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }

    /// Opens a connection (or finds an idle one): checks the address and the key now.
    pub fn ping(&self) -> Result<(), Error> {
        let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => self.connect()?,
        };
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        Ok(())
    }

    /// Closes the idle connections (after the manager shut down).
    pub fn forget_connections(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

thread_local! {
    // Ids the server took references on for the reply being decoded on this thread.
    static ACQUIRED: RefCell<Option<Vec<u64>>> = const { RefCell::new(None) };
    // The client (manager, key and TLS trust) a reply being decoded on this thread came
    // through.
    static FROM: RefCell<Option<Arc<Client>>> = const { RefCell::new(None) };
    // While a request's blob is built on this thread: the manager it goes to, and the
    // proxies encoded so far (address, id).
    static ENCODED: RefCell<Option<Encoding>> = const { RefCell::new(None) };
}

struct Encoding {
    target: Arc<Client>,
    found: Vec<(Address, u64)>,
}

/// What a proxy is: where its manager is (and how to check its certificate, if it uses
/// TLS), which object, of which type.
struct Handle {
    addr: Address,
    authkey: Arc<[u8]>,
    tls: Option<Arc<TlsTrust>>,
    id: u64,
    type_name: String,
    client: OnceLock<Arc<Client>>,
    /// Whether this process's session holds the reference this handle owns.
    held: AtomicBool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.held.load(Ordering::Acquire) {
            self.client().release(self.id);
        }
    }
}

impl Handle {
    fn client(&self) -> &Arc<Client> {
        self.client.get_or_init(|| client(&self.addr, &self.authkey, self.tls.as_ref()))
    }
}

/// An untyped proxy: what the typed proxies (`DictProxy`, `#[mp::managed]`'s `…Proxy`) wrap.
/// Cloning is cheap (no message); it serializes as (address, key, TLS trust, id, type), where
/// the key is sent only when the receiver cannot already hold it (see [`KeyWire`]), and the
/// trust only for a manager that uses TLS (see [`TlsWire`]).
#[doc(hidden)]
#[derive(Clone)]
pub struct RawProxy(Arc<Handle>);

impl fmt::Debug for RawProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("type", &self.0.type_name)
            .field("id", &self.0.id)
            .field("manager", &self.0.addr)
            .finish()
    }
}

/// Arguments of one request: the blobs, and the proxies encoded inside them.
pub(crate) struct Args {
    pub buf: Vec<u8>,
    pub refs: Vec<(u32, u64)>,
    count: u32,
}

impl Args {
    pub fn new() -> Args {
        Args { buf: Vec::with_capacity(64), refs: Vec::new(), count: 0 }
    }

    /// Adds one blob of bytes already encoded (a value as the server stored it).
    pub fn push_raw(&mut self, raw: &[u8]) -> &mut Args {
        super::protocol::push_raw_blob(&mut self.buf, raw);
        self.count += 1;
        self
    }

    /// Adds one blob for the manager of `to`, noting the proxies of that manager inside it.
    pub fn push<T: Serialize + ?Sized>(&mut self, to: &Arc<Client>, value: &T) -> Result<&mut Args, Error> {
        let enc = Encoding { target: to.clone(), found: Vec::new() };
        let prev = ENCODED.with(|e| e.borrow_mut().replace(enc));
        let r = push_blob(&mut self.buf, value);
        let found = ENCODED.with(|e| std::mem::replace(&mut *e.borrow_mut(), prev)).map(|e| e.found);
        r?;
        for (a, id) in found.unwrap_or_default() {
            if a == to.addr {
                self.refs.push((self.count, id));
            }
        }
        self.count += 1;
        Ok(self)
    }
}

impl RawProxy {
    /// A proxy for a new object whose reference this process's session already holds.
    pub(crate) fn new_held(client: &Arc<Client>, id: u64, type_name: &str) -> RawProxy {
        let cell = OnceLock::new();
        let _ = cell.set(client.clone());
        RawProxy(Arc::new(Handle {
            addr: client.addr.clone(),
            authkey: client.authkey.clone(),
            tls: client.tls.clone(),
            id,
            type_name: type_name.to_string(),
            client: cell,
            held: AtomicBool::new(true),
        }))
    }

    /// A proxy to object `id` that holds no reference yet (its first call takes one).
    pub(crate) fn new_unheld(client: &Arc<Client>, id: u64, type_name: &str) -> RawProxy {
        let r = RawProxy::new_held(client, id, type_name);
        r.0.held.store(false, Ordering::Release);
        r
    }

    /// The client of this proxy's manager in this process (where its requests go).
    pub(crate) fn target(&self) -> &Arc<Client> {
        self.0.client()
    }

    /// Sends `op` with `args` and returns the answer (`timed_out` for a blocking op's slice).
    pub(crate) fn send(&self, op: Op<'_>, args: Option<Args>) -> Result<Answer, Error> {
        let held = self.0.held.load(Ordering::Acquire);
        let (blob_bytes, refs) = match args {
            Some(a) => (a.buf, a.refs),
            None => (Vec::new(), Vec::new()),
        };
        let head = Request { obj: self.0.id, acquire: !held, op, refs };
        let mut buf = Vec::with_capacity(24 + blob_bytes.len());
        codec::encode_into(&head, &mut buf)?;
        buf.extend_from_slice(&blob_bytes);
        let client = self.0.client();
        let blocking = matches!(head.op, Op::QueueGet { .. } | Op::LockAcquire { .. } | Op::EventWait { .. });
        let answer = client.request(&buf, blocking)?;
        // Two threads may both have taken the first reference: keep one.
        if !held && self.0.held.swap(true, Ordering::AcqRel) {
            client.release(self.0.id);
        }
        Ok(answer)
    }

    /// The client of this proxy's manager (to decode answers from `send`).
    pub(crate) fn client(&self) -> &Arc<Client> {
        self.0.client()
    }

    /// Sends `op` and decodes its result as `R`.
    pub(crate) fn call<R: DeserializeOwned>(&self, op: Op<'_>, args: Option<Args>) -> Result<R, Error> {
        let answer = self.send(op, args)?;
        answer.decode(self.0.client())
    }

    /// A blocking operation: asks again each time the server's slice runs out, until
    /// `timeout` (None: forever). `Ok(None)` when the timeout passed.
    pub(crate) fn call_blocking<R: DeserializeOwned>(
        &self,
        timeout: Option<Duration>,
        op: impl Fn(u64) -> Op<'static>,
        args: impl Fn() -> Result<Option<Args>, Error>,
    ) -> Result<Option<R>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let wait_ms = match deadline {
                None => u64::MAX,
                Some(d) => d.saturating_duration_since(Instant::now()).as_millis() as u64,
            };
            let answer = self.send(op(wait_ms), args()?)?;
            if !answer.timed_out {
                return answer.decode(self.0.client()).map(Some);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// Calls method `method` of a `#[mp::managed]` object.
    pub fn call_method<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        let mut a = Args::new();
        a.push(self.target(), args)?;
        self.call(Op::Call { method }, Some(a))
    }
}

/// How a proxy's authkey travels. The key goes only where the receiver cannot already hold
/// it, as in Python (whose proxies drop the key when pickled, except for a child being
/// spawned):
///
/// * `Program`: the key is this program's [`authkey`](crate::ProcessInfo::authkey), which
///   every process mp starts (here, or as a Pool's worker on another host) inherits: the
///   receiver uses its own.
/// * `Manager`: the proxy is inside a request to its own manager (stored in one of its
///   containers); whoever reads it back is that manager's authenticated client and has the
///   key. So a key never travels inside a manager's own traffic.
/// * `Bytes`: otherwise (another key, handed to a worker or through a Connection): the key
///   travels with the proxy, to the process the proxy is handed to.
#[derive(Serialize, Deserialize)]
enum KeyWire<'a> {
    Program,
    Manager,
    #[serde(borrow)]
    Bytes(&'a [u8]),
}

/// How a proxy's TLS settings travel: what the receiver checks the manager's certificate
/// against (certificates are public, so unlike the key this may go anywhere the proxy goes).
///
/// * `Plain`: the manager does not use TLS.
/// * `Manager`: as [`KeyWire::Manager`]: whoever reads the proxy back from its own manager
///   is that manager's client, with its own trust.
/// * `Trust`: otherwise: the CA certificates (and server name) this process checks the
///   manager with, or the one certificate the owner of a started manager pins.
#[derive(Serialize)]
enum TlsWire<'a> {
    Plain,
    Manager,
    Trust(&'a TlsTrust),
}

#[derive(Serialize)]
struct Wire<'a> {
    addr: &'a Address,
    key: KeyWire<'a>,
    tls: TlsWire<'a>,
    id: u64,
    type_name: &'a str,
}

impl Serialize for RawProxy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = &self.0;
        let to_own_manager = ENCODED.with(|e| match &mut *e.borrow_mut() {
            Some(enc) => {
                enc.found.push((h.addr.clone(), h.id));
                enc.target.addr == h.addr
            }
            None => false,
        });
        let key = if to_own_manager {
            KeyWire::Manager
        } else if *h.authkey == *crate::process::authkey() {
            KeyWire::Program
        } else {
            KeyWire::Bytes(&h.authkey)
        };
        let tls = match &h.tls {
            None => TlsWire::Plain,
            Some(_) if to_own_manager => TlsWire::Manager,
            Some(t) => TlsWire::Trust(t),
        };
        Wire { addr: &h.addr, key, tls, id: h.id, type_name: &h.type_name }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        enum OwnedKey {
            Program,
            Manager,
            Bytes(Vec<u8>),
        }
        #[derive(Deserialize)]
        enum OwnedTls {
            Plain,
            Manager,
            Trust(TlsTrust),
        }
        #[derive(Deserialize)]
        struct Owned {
            addr: Address,
            key: OwnedKey,
            tls: OwnedTls,
            id: u64,
            type_name: String,
        }
        let w = Owned::deserialize(d).map_err(|e| D::Error::custom(format!("a manager proxy: {e}")))?;
        // Key and trust of this process's client of the manager, for what the proxy left out
        // because it came from that manager: preferably the client the reply came through.
        let ours = || {
            FROM.with(|f| f.borrow().as_ref().filter(|c| c.addr == w.addr).cloned())
                .or_else(|| known(&w.addr))
        };
        let tls = match w.tls {
            OwnedTls::Plain => None,
            OwnedTls::Trust(t) => Some(shared_trust(t)),
            OwnedTls::Manager => ours().and_then(|c| c.tls.clone()),
        };
        let authkey: Arc<[u8]> = match w.key {
            OwnedKey::Program => crate::process::authkey().into(),
            OwnedKey::Bytes(k) => k.into(),
            OwnedKey::Manager => match ours() {
                Some(c) => c.authkey.clone(),
                None => {
                    return Err(D::Error::custom(codec::custom_error(format!(
                        "a proxy of the manager at {} arrived without its authkey (it was \
                             stored in that manager), and this process is not connected to it: \
                             read it through Manager::connect(address, authkey) (or \
                             Manager::connect_tls)",
                        w.addr
                    ))));
                }
            },
        };
        // Adopt a reference the server took for us in the reply being decoded, if any.
        let held = ACQUIRED.with(|a| match &mut *a.borrow_mut() {
            Some(ids) => match ids.iter().position(|&i| i == w.id) {
                Some(at) => {
                    ids.swap_remove(at);
                    true
                }
                None => false,
            },
            None => false,
        });
        Ok(RawProxy(Arc::new(Handle {
            addr: w.addr,
            authkey,
            tls,
            id: w.id,
            type_name: w.type_name,
            client: OnceLock::new(),
            held: AtomicBool::new(held),
        })))
    }
}

/// `trust` as the `Arc` a client of this process already holds, if one does (the clients
/// are found by it, and a proxy decoded many times should not keep many copies).
fn shared_trust(trust: TlsTrust) -> Arc<TlsTrust> {
    let all = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    let found = all.iter().filter_map(|c| c.tls.as_ref()).find(|t| ***t == trust).cloned();
    found.unwrap_or_else(|| Arc::new(trust))
}

/// Clone, Debug, Serialize and Deserialize of a typed proxy: those of its `RawProxy`.
macro_rules! typed_proxy {
    ($name:ident $(<$($t:ident),*>)?) => {
        impl$(<$($t),*>)? Clone for $name$(<$($t),*>)? {
            fn clone(&self) -> Self {
                Self { raw: self.raw.clone(), _t: std::marker::PhantomData }
            }
        }
        impl$(<$($t),*>)? std::fmt::Debug for $name$(<$($t),*>)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.raw).finish()
            }
        }
        impl$(<$($t),*>)? serde::Serialize for $name$(<$($t),*>)? {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.raw.serialize(s)
            }
        }
        impl<'de $($(, $t)*)?> serde::Deserialize<'de> for $name$(<$($t),*>)? {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self { raw: $crate::managers::proxy::RawProxy::deserialize(d)?, _t: std::marker::PhantomData })
            }
        }
        impl$(<$($t),*>)? $name$(<$($t),*>)? {
            pub(crate) fn from_raw(raw: $crate::managers::proxy::RawProxy) -> Self {
                Self { raw, _t: std::marker::PhantomData }
            }
        }
    };
}
pub(crate) use typed_proxy;

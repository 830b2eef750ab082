//! Managers: a server process holding shared objects, and typed proxies to them. See
//! `README.md` beside this file for the protocol and the reference counting.

mod dict;
mod event;
mod list;
mod lock;
pub(crate) mod managed;
mod namespace;
mod objects;
mod protocol;
pub(crate) mod proxy;
mod queue;
mod server;
mod transport;
mod value;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use dict::DictProxy;
pub use event::EventProxy;
pub use list::ListProxy;
pub use lock::{LockProxy, LockProxyGuard};
pub use managed::Managed;
pub use namespace::NamespaceProxy;
pub use queue::QueueProxy;
pub use value::ValueProxy;

use crate::connection::{Connection, Pipe};
use crate::error::Error;
#[cfg(feature = "tls")]
use crate::listener::TlsClientConfig;
use crate::listener::{Address, IntoAddress, TlsServerConfig};
use crate::process::{self, ChildOptions, Tracked};
use crate::registry::{Worker, WorkerEntry};
use crate::wire::codec;
use protocol::{ObjKind, Op, Request};
use proxy::{Args, Client, RawProxy};

/// Connections a manager serves at once unless told otherwise.
const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Random bytes from the kernel (authkeys, session ids, directory names).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok();
    if !ok {
        // No /dev/urandom (a bare chroot): time and pid still keep names apart.
        let seed = Instant::now().elapsed().as_nanos() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (seed.rotate_left(i as u32 * 8) & 0xff) as u8;
        }
    }
    b
}

pub(crate) fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes::<8>())
}

/// Options for [`Manager::builder`].
///
/// # Examples
///
/// ```
/// mp::init();
/// let manager = mp::Manager::builder().max_connections(16).authkey(b"secret".to_vec()).start().unwrap();
/// assert_eq!(manager.authkey(), b"secret");
/// ```
#[derive(Debug, Clone)]
pub struct ManagerBuilder {
    /// The address, or why it does not parse (reported by `start` / `server`).
    address: Option<Result<Address, String>>,
    authkey: Option<Vec<u8>>,
    max_connections: usize,
    tls: Option<TlsServerConfig>,
}

impl ManagerBuilder {
    /// Where the server listens: a TCP `host:port` (`"0.0.0.0:50000"` for other hosts, port
    /// 0 for any free port) or a Unix socket path. Default: a Unix socket in a fresh private
    /// (0700) directory.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let manager = mp::Manager::builder().address("127.0.0.1:0").authkey(b"k".to_vec()).start().unwrap();
    /// assert!(manager.address().is_tcp());
    /// ```
    pub fn address(mut self, addr: impl IntoAddress) -> Self {
        // A bad address is reported by `start` / `server`, which return `Result`.
        self.address = Some(addr.into_address().map_err(|e| e.to_string()));
        self
    }

    /// The key clients must prove they hold, checked both ways with an HMAC-SHA256 challenge
    /// on every connection (default: [`current_process().authkey()`](crate::ProcessInfo::authkey),
    /// the key every process of this program inherits, as in Python).
    pub fn authkey(mut self, key: Vec<u8>) -> Self {
        self.authkey = Some(key);
        self
    }

    /// How many connections the server serves at once (default 256); one is opened per
    /// process and per thread calling at the same time. Further ones are refused with an
    /// error naming this option.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Serve over TLS (feature `tls`) with this certificate and key: every connection is
    /// encrypted and the server proves its identity before the authkey handshake runs inside
    /// TLS. TCP addresses only (a Unix socket never leaves this host, and its private
    /// directory guards it): `start`, `server` and `serve` refuse anything else with
    /// [`Error::Invalid`].
    ///
    /// Other processes connect with [`Manager::connect_tls`]. The process that calls
    /// `start` trusts exactly this certificate (neither its CA nor its name is checked), so
    /// a self-signed one will do; proxies carry what their process trusts, so workers they
    /// are handed to connect over TLS too. A plaintext client is refused at once with
    /// [`Error::Auth`] naming `connect_tls`.
    ///
    /// # Examples
    ///
    /// ```
    /// #[mp::worker]
    /// fn add_one(v: mp::ValueProxy<u32>) {
    ///     v.set(v.get().unwrap() + 1).unwrap();
    /// }
    ///
    /// mp::init();
    /// // A self-signed certificate for the example (use your CA's in production).
    /// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let tls = mp::TlsServerConfig::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem()).unwrap();
    /// let manager =
    ///     mp::Manager::builder().address("127.0.0.1:0").authkey(b"k".to_vec()).tls(tls).start().unwrap();
    /// let v = manager.value(41u32).unwrap();
    /// let mut p = mp::Process::new(add_one, v.clone()); // the worker connects over TLS too
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(v.get().unwrap(), 42);
    /// // TLS is for TCP: the default address is a Unix socket.
    /// let tls = mp::TlsServerConfig::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem()).unwrap();
    /// assert!(matches!(mp::Manager::builder().tls(tls).start(), Err(mp::Error::Invalid(_))));
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    fn check(&self) -> Result<(Option<Address>, Arc<[u8]>), Error> {
        if self.max_connections == 0 {
            return Err(Error::invalid("Manager::builder().max_connections must be at least 1"));
        }
        let address = match &self.address {
            Some(Err(e)) => return Err(Error::invalid(format!("Manager::builder().address: {e}"))),
            Some(Ok(a)) => Some(a.clone()),
            None => None,
        };
        let authkey: Arc<[u8]> = match &self.authkey {
            Some(k) if k.is_empty() => return Err(Error::invalid("a manager's authkey must not be empty")),
            Some(k) => k.clone().into(),
            None => crate::process::authkey().into(),
        };
        if self.tls.is_some() && !address.as_ref().is_some_and(Address::is_tcp) {
            let which = match &address {
                Some(a) => format!("{a} is a Unix socket path"),
                None => "the default address is a Unix socket".to_string(),
            };
            return Err(Error::invalid(format!(
                "Manager::builder().tls(..) needs a TCP address, and {which}: TLS protects \
                 connections between hosts, and a Unix socket never leaves this one (its \
                 private directory guards it). Give .address(\"0.0.0.0:50000\"), or drop .tls(..)"
            )));
        }
        Ok((address, authkey))
    }

    /// Starts the manager process and waits until it listens.
    pub fn start(self) -> Result<Manager, Error> {
        let (address, authkey) = self.check()?;
        // The default: a socket in a directory only this user can enter.
        let (dir, address) = match address {
            Some(a) => (None, a),
            None => {
                let dir = private_dir()?;
                let a = Address::Unix(dir.join("manager.sock"));
                (Some(dir), a)
            }
        };
        let remove_dir = |dir: &Option<PathBuf>| {
            if let Some(d) = dir {
                let _ = std::fs::remove_dir_all(d);
            }
        };
        let (ours, theirs) = Pipe::new::<Result<Address, String>>()?;
        let args = ServeArgs {
            dir: dir.clone(),
            address,
            authkey: authkey.to_vec(),
            max_connections: self.max_connections,
            tls: self.tls.as_ref().map(transport::ServerTls::new),
            lifeline: theirs,
        };
        let started = process::task_frame::<ServeManager>(0, &args).and_then(|frame| {
            let opts = ChildOptions { daemon: true, one_shot: true, ..Default::default() };
            process::start_child(process::next_name("Manager"), opts, Some(frame))
        });
        drop(args);
        let (tracked, sock) = match started {
            Ok(x) => x,
            Err(e) => {
                remove_dir(&dir);
                return Err(e);
            }
        };
        // Not a child `cleanup_children` waits for: it ends when its lifeline closes.
        process::forget(&tracked);
        let child = ManagerChild { tracked, _sock: sock, lifeline: ours };
        let ready = child.lifeline.recv_timeout(Duration::from_secs(30));
        let failed = |e: Error| {
            child.tracked.child.kill_and_reap();
            remove_dir(&dir);
            e
        };
        let address = match ready {
            Ok(Ok(a)) => a,
            Ok(Err(msg)) => {
                return Err(failed(Error::invalid(format!("the manager could not start: {msg}"))));
            }
            Err(Error::Disconnected { .. }) => {
                let pid = child.tracked.child.pid;
                let exit = child.tracked.child.wait(Some(Instant::now() + Duration::from_secs(5)))?;
                return Err(failed(Error::WorkerDied {
                    worker: ServeManager::NAME.into(),
                    pid,
                    exit: exit.unwrap_or(crate::error::Exit::Unknown),
                    index: None,
                    peer: None,
                }));
            }
            Err(e) => return Err(failed(e)),
        };
        // The owner trusts the certificate it gave its server, whoever signed it.
        let trust = self.tls.as_ref().map(transport::pinned);
        let client = proxy::client(&address, &authkey, trust.as_ref());
        Ok(Manager { address, authkey, state: State::Owner { child: Box::new(child), dir }, client })
    }

    /// Listens in this process and returns the server, not yet serving (Python's
    /// `manager.get_server()`): read its [`address`](ManagerServer::address) (the real port
    /// for port 0), then call [`serve_forever`](ManagerServer::serve_forever).
    ///
    /// # Examples
    ///
    /// ```
    /// let server = mp::Manager::builder().address("127.0.0.1:0").authkey(b"k".to_vec()).server().unwrap();
    /// assert!(server.address().is_tcp());
    /// ```
    pub fn server(self) -> Result<ManagerServer, Error> {
        let (address, authkey) = self.check()?;
        let Some(address) = address else {
            return Err(Error::invalid(
                "Manager::builder().serve() needs an address to listen on, like .address(\"0.0.0.0:50000\") \
                 (Manager::new() starts a manager process on a private socket instead)",
            ));
        };
        let listener = transport::bind(&address, &authkey, self.tls.as_ref())?;
        let address = listener.address().clone();
        Ok(ManagerServer { listener, address, server: server::Server::new(self.max_connections) })
    }

    /// Serves in this process until a client calls [`Manager::shutdown`] on a connected
    /// manager (then returns `Ok`), or the process is killed: what a dedicated manager host
    /// runs. `builder().address(..).authkey(..).serve()` is `server()?.serve_forever()`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// mp::init();
    /// // On the host that holds the shared objects:
    /// mp::Manager::builder().address("0.0.0.0:50000").authkey(b"secret".to_vec()).serve().unwrap();
    /// ```
    pub fn serve(self) -> Result<(), Error> {
        self.server()?.serve_forever()
    }
}

/// A manager server running in the calling process (Python's `Server` from
/// `manager.get_server()`), made by [`ManagerBuilder::server`].
///
/// # Examples
///
/// ```
/// mp::init();
/// let server = mp::Manager::builder().address("127.0.0.1:0").authkey(b"k".to_vec()).server().unwrap();
/// let addr = server.address().clone();
/// let t = std::thread::spawn(move || server.serve_forever());
/// let mut m = mp::Manager::connect(&addr, b"k").unwrap();
/// m.shared().set("answer", 42u32).unwrap();
/// assert_eq!(m.shared().get::<u32>("answer").unwrap(), Some(42));
/// m.shutdown().unwrap(); // asks the server to stop
/// t.join().unwrap().unwrap();
/// ```
pub struct ManagerServer {
    listener: crate::listener::Listener,
    address: Address,
    server: Arc<server::Server>,
}

impl std::fmt::Debug for ManagerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerServer").field("address", &self.address).finish_non_exhaustive()
    }
}

impl ManagerServer {
    /// The address clients connect to (for TCP port 0, the port the OS picked).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Serves until a client calls [`Manager::shutdown`] on a manager it
    /// [connected](Manager::connect), then returns `Ok` (the listener is closed; a Unix
    /// socket's path removed; connections still open are served until their clients hang
    /// up or this process exits). Killing the process stops it too. Clients that fail the
    /// handshake are refused and logged on stderr (at most a line a second); the server
    /// carries on.
    pub fn serve_forever(self) -> Result<(), Error> {
        self.server.run(self.listener);
        Ok(())
    }
}

/// Makes `$TMPDIR/mp-manager-<random>` with mode 0700 (only this user can reach the socket).
fn private_dir() -> Result<PathBuf, Error> {
    use std::os::unix::fs::DirBuilderExt;
    let mut base = std::env::temp_dir();
    // A Unix socket path is limited to 107 bytes.
    if base.as_os_str().len() > 60 {
        base = PathBuf::from("/tmp");
    }
    let name: String = random_bytes::<8>().iter().map(|b| format!("{b:02x}")).collect();
    let dir = base.join(format!("mp-manager-{name}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("creating the manager's directory {}", dir.display()), e))?;
    Ok(dir)
}

struct ManagerChild {
    tracked: Arc<Tracked>,
    /// The child's bootstrap channel (kept open: its reply is never read).
    _sock: OwnedFd,
    /// Closing it stops the manager; the child says on it where it listens.
    lifeline: Connection<Result<Address, String>>,
}

/// How this `Manager` relates to its server.
enum State {
    /// We started the server process: shutting down stops it.
    Owner { child: Box<ManagerChild>, dir: Option<PathBuf> },
    /// We connected to a server someone else runs.
    Connected,
    /// After `shutdown`.
    Closed,
}

/// A manager: a server process holding shared objects (dicts, lists, queues, values, locks,
/// events, namespaces, and `#[mp::managed]` types) that any process reaches through typed
/// proxies (Python's `multiprocessing.Manager()`).
///
/// Proxies are ordinary values: pass them to workers as arguments, or store them inside other
/// managed containers, and they keep working. By default the server is a child process
/// listening on a Unix socket in a private (0700) directory; it exits, removing the
/// directory, on [`shutdown`](Self::shutdown), when the `Manager` is dropped, or when its
/// owner process exits in any way. After that, calls on proxies fail with
/// `Error::Disconnected`. Every connection is authenticated both ways with the
/// [`authkey`](Self::authkey) (HMAC-SHA256).
///
/// Remote use: [`Manager::builder()`](Self::builder)`.address("0.0.0.0:50000").authkey(key)`
/// then `.start()` (a child process serves on that address) or `.serve()` (this process
/// serves), and [`Manager::connect`]`(addr, key)` from other processes or hosts; objects are
/// found by name in the [`shared`](Self::shared) namespace. Across untrusted networks, add
/// `.tls(certificate)` to the builder and connect with `Manager::connect_tls` (feature
/// `tls`): proxies then reach the manager over TLS in every process they are handed to.
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn record(d: mp::DictProxy<u32, u32>, k: u32) {
///     d.insert(k, k * k).unwrap();
/// }
///
/// mp::init();
/// let manager = mp::Manager::new().unwrap();
/// let d = manager.dict::<u32, u32>().unwrap();
/// let mut p = mp::Process::new(record, (d.clone(), 7));
/// p.start().unwrap();
/// p.join().unwrap();
/// assert_eq!(d.get(&7).unwrap(), Some(49));
/// ```
pub struct Manager {
    address: Address,
    authkey: Arc<[u8]>,
    state: State,
    client: Arc<Client>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.address)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Starts a manager with the default options.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let manager = mp::Manager::new().unwrap();
    /// let l = manager.list::<i32>().unwrap();
    /// l.push(1).unwrap();
    /// assert_eq!(l.len().unwrap(), 1);
    /// ```
    pub fn new() -> Result<Manager, Error> {
        Manager::builder().start()
    }

    /// Options: address, authkey, connection limit, TLS (feature `tls`); then `start` or `serve`.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let m = mp::Manager::builder().authkey(b"key".to_vec()).start().unwrap();
    /// assert_eq!(m.authkey(), b"key");
    /// ```
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder { address: None, authkey: None, max_connections: DEFAULT_MAX_CONNECTIONS, tls: None }
    }

    /// Connects to a manager another process runs (Python's `BaseManager(address,
    /// authkey).connect()`), on this host or another, and checks the key both ways: a wrong
    /// one is [`Error::Auth`]. Nothing is created: find the server's objects by name in
    /// [`shared`](Self::shared). Dropping the returned `Manager` only disconnects it;
    /// [`shutdown`](Self::shutdown) asks the server to stop.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let owner = mp::Manager::builder().address("127.0.0.1:0").authkey(b"k".to_vec()).start().unwrap();
    /// owner.shared().set("jobs", owner.queue::<u32>().unwrap()).unwrap();
    /// let m = mp::Manager::connect(owner.address(), b"k").unwrap();
    /// let jobs: mp::QueueProxy<u32> = m.shared().get("jobs").unwrap().unwrap();
    /// jobs.put(7).unwrap();
    /// assert!(matches!(mp::Manager::connect(owner.address(), b"wrong"), Err(mp::Error::Auth(_))));
    /// ```
    pub fn connect(addr: impl IntoAddress, authkey: impl AsRef<[u8]>) -> Result<Manager, Error> {
        Manager::connect_with(addr.into_address()?, authkey.as_ref(), None)
    }

    /// [`connect`](Self::connect) over TLS (feature `tls`), to a manager given a certificate
    /// with [`ManagerBuilder::tls`]: its certificate is checked against the CAs and the
    /// server name in `tls` (by default the host of `addr`), then the authkey handshake
    /// runs inside TLS. A certificate that does not check out, or a manager without TLS, is
    /// [`Error::Auth`] at once, saying what to set.
    ///
    /// Proxies from this manager carry `tls`'s CA certificates (public, unlike the key), so
    /// a worker or any process they are handed to reaches the manager over TLS the same way.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let server = mp::TlsServerConfig::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem()).unwrap();
    /// let owner =
    ///     mp::Manager::builder().address("127.0.0.1:0").authkey(b"k".to_vec()).tls(server).start().unwrap();
    /// owner.shared().set("greeting", "hello".to_string()).unwrap();
    ///
    /// // The certificate names "localhost": connect by that name.
    /// let port = owner.address().to_string().rsplit(':').next().unwrap().to_string();
    /// let ca = mp::TlsClientConfig::from_ca_pem(cert.cert.pem()).unwrap();
    /// let m = mp::Manager::connect_tls(format!("localhost:{port}"), b"k", &ca).unwrap();
    /// assert_eq!(m.shared().get::<String>("greeting").unwrap().as_deref(), Some("hello"));
    /// // Without TLS: refused at once.
    /// assert!(matches!(mp::Manager::connect(owner.address(), b"k"), Err(mp::Error::Auth(_))));
    /// ```
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        addr: impl IntoAddress,
        authkey: impl AsRef<[u8]>,
        tls: &TlsClientConfig,
    ) -> Result<Manager, Error> {
        Manager::connect_with(addr.into_address()?, authkey.as_ref(), Some(tls))
    }

    fn connect_with(
        address: Address,
        authkey: &[u8],
        tls: Option<&crate::listener::TlsClientConfig>,
    ) -> Result<Manager, Error> {
        if tls.is_some() && !address.is_tcp() {
            return Err(Error::invalid(format!(
                "TLS is for TCP addresses; {address} is a Unix socket path (use Manager::connect)"
            )));
        }
        let authkey: Arc<[u8]> = authkey.into();
        let client = proxy::client(&address, &authkey, tls.map(transport::trust).as_ref());
        #[cfg(feature = "tls")]
        if let Some(cfg) = tls {
            client.set_tls_config(cfg);
        }
        // Connect now, so a wrong key, address or certificate fails here rather than at the
        // first call.
        if let Err(e) = client.ping() {
            proxy::forget_if_unused(&client);
            return Err(e);
        }
        Ok(Manager { address, authkey, state: State::Connected, client })
    }

    /// Where the server listens: its Unix socket (by default in a directory only this user
    /// can enter) or its TCP address, for [`Manager::connect`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::fs::PermissionsExt;
    /// mp::init();
    /// let manager = mp::Manager::new().unwrap();
    /// let mp::Address::Unix(path) = manager.address() else { unreachable!() };
    /// let dir = path.parent().unwrap();
    /// assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700);
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The key clients authenticate with.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let m = mp::Manager::new().unwrap();
    /// assert_eq!(m.authkey(), mp::current_process().authkey());
    /// ```
    pub fn authkey(&self) -> &[u8] {
        &self.authkey
    }

    /// The server process's pid (`None` after shutdown, and for a connected manager).
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let mut manager = mp::Manager::new().unwrap();
    /// assert!(manager.pid().is_some());
    /// manager.shutdown().unwrap();
    /// assert_eq!(manager.pid(), None);
    /// ```
    pub fn pid(&self) -> Option<u32> {
        match &self.state {
            State::Owner { child, .. } => Some(child.tracked.child.pid),
            _ => None,
        }
    }

    /// The manager's root namespace: named values (proxies too) that every client of this
    /// server sees. It is how processes that [connect](Self::connect) find the objects
    /// (Python registers `get_queue`-style callables for this). It lives as long as the
    /// server; the values stored in it keep their objects alive.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let m = mp::Manager::new().unwrap();
    /// m.shared().set("results", m.dict::<String, u64>().unwrap()).unwrap();
    /// let d: mp::DictProxy<String, u64> = m.shared().get("results").unwrap().unwrap();
    /// d.insert("a".into(), 1).unwrap();
    /// ```
    pub fn shared(&self) -> NamespaceProxy {
        NamespaceProxy::from_raw(RawProxy::new_unheld(&self.client, server::SHARED_ID, "namespace"))
    }

    fn create_raw<T: Serialize + ?Sized>(
        &self,
        kind: ObjKind<'_>,
        init: Option<&T>,
    ) -> Result<RawProxy, Error> {
        if matches!(self.state, State::Closed) {
            return Err(Error::Closed { what: "this Manager (shut down)" });
        }
        let mut args = Args::new();
        if let Some(v) = init {
            args.push(&self.client, v)?;
        }
        let mut buf = Vec::with_capacity(32 + args.buf.len());
        let head =
            Request { obj: 0, acquire: false, op: Op::Create { kind }, refs: std::mem::take(&mut args.refs) };
        codec::encode_into(&head, &mut buf)?;
        buf.extend_from_slice(&args.buf);
        let id: u64 = self.client.request(&buf, false)?.decode(&self.client)?;
        Ok(RawProxy::new_held(&self.client, id, kind.name()))
    }
    /// A new, empty dictionary (Python's `manager.dict()`).
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>, Error> {
        self.create_raw::<()>(ObjKind::Dict, None).map(DictProxy::from_raw)
    }

    /// A new, empty list (Python's `manager.list()`).
    pub fn list<T>(&self) -> Result<ListProxy<T>, Error> {
        self.create_raw::<()>(ObjKind::List, None).map(ListProxy::from_raw)
    }

    /// A new value holding `init` (Python's `manager.Value()`).
    pub fn value<T: Serialize>(&self, init: T) -> Result<ValueProxy<T>, Error> {
        self.create_raw(ObjKind::Value, Some(&init)).map(ValueProxy::from_raw)
    }

    /// A new, empty FIFO queue (Python's `manager.Queue()`).
    pub fn queue<T>(&self) -> Result<QueueProxy<T>, Error> {
        self.create_raw::<()>(ObjKind::Queue, None).map(QueueProxy::from_raw)
    }

    /// A new lock (Python's `manager.Lock()`).
    pub fn lock(&self) -> Result<LockProxy, Error> {
        self.create_raw::<()>(ObjKind::Lock, None).map(LockProxy::from_raw)
    }

    /// A new event, not set (Python's `manager.Event()`).
    pub fn event(&self) -> Result<EventProxy, Error> {
        self.create_raw::<()>(ObjKind::Event, None).map(EventProxy::from_raw)
    }

    /// A new, empty namespace (Python's `manager.Namespace()`).
    pub fn namespace(&self) -> Result<NamespaceProxy, Error> {
        self.create_raw::<()>(ObjKind::Namespace, None).map(NamespaceProxy::from_raw)
    }

    /// Moves `value` into the manager and returns its proxy; `T`'s `impl` block is marked
    /// `#[mp::managed]`, which generates the proxy type (`TProxy`) with `T`'s public methods.
    ///
    /// # Examples
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// pub struct Counter { n: i64 }
    ///
    /// #[mp::managed]
    /// impl Counter {
    ///     pub fn incr(&mut self, by: i64) -> i64 { self.n += by; self.n }
    ///     pub fn get(&self) -> i64 { self.n }
    /// }
    ///
    /// mp::init();
    /// let manager = mp::Manager::new().unwrap();
    /// let c: CounterProxy = manager.create(Counter { n: 0 }).unwrap();
    /// assert_eq!(c.incr(5).unwrap(), 5);
    /// assert_eq!(c.get().unwrap(), 5);
    /// ```
    pub fn create<T: Managed + Serialize>(&self, value: T) -> Result<T::Proxy, Error> {
        self.create_raw(ObjKind::User(T::NAME), Some(&value)).map(T::__proxy)
    }

    /// How long calls from this process to this manager wait for an answer (`None`, the
    /// default unless `MP_MANAGER_CALL_TIMEOUT` gives seconds: forever, as in Python). A call
    /// past it is `Error::Timeout`, and may or may not have taken effect: a manager that is
    /// stuck (a `#[mp::managed]` method that never returns, a stopped process) or whose host
    /// vanished from the network never closes the connection, so without a timeout such a
    /// call waits forever. Blocking calls (`QueueProxy::get`, `LockProxy::lock`, …) keep
    /// their own timeouts and get this one on top. It applies to every proxy of this manager
    /// in this process; other processes read `MP_MANAGER_CALL_TIMEOUT`.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let manager = mp::Manager::new().unwrap();
    /// manager.set_call_timeout(Some(std::time::Duration::from_secs(5)));
    /// let d = manager.dict::<u8, u8>().unwrap();
    /// d.insert(1, 2).unwrap();
    /// assert_eq!(d.get(&1).unwrap(), Some(2));
    /// ```
    pub fn set_call_timeout(&self, timeout: Option<Duration>) {
        self.client.set_call_timeout(timeout);
    }

    /// Stops the server. For a manager this process started: waits for the server process
    /// to exit (at most 5 s, then it is killed) and removes its socket directory. For a
    /// [connected](Self::connect) one: asks the server to stop (a
    /// [`serve`](ManagerBuilder::serve) returns). Later calls through any proxy fail with
    /// `Error::Disconnected`. Dropping a started `Manager` does the same; dropping a
    /// connected one does not stop the server.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let mut manager = mp::Manager::new().unwrap();
    /// let v = manager.value(1u8).unwrap();
    /// manager.shutdown().unwrap();
    /// assert!(matches!(v.get(), Err(mp::Error::Disconnected { .. })));
    /// ```
    pub fn shutdown(&mut self) -> Result<(), Error> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Closed => Ok(()),
            State::Connected => {
                let mut buf = Vec::with_capacity(16);
                let head = Request { obj: 0, acquire: false, op: Op::Shutdown, refs: Vec::new() };
                codec::encode_into(&head, &mut buf)?;
                match self.client.request(&buf, false) {
                    // The server may exit before its answer is written.
                    Ok(_) | Err(Error::Disconnected { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            State::Owner { child, dir } => {
                let ManagerChild { tracked, _sock, lifeline } = *child;
                // Closing the lifeline is the stop signal (the same as the owner exiting).
                drop(lifeline);
                let exited = tracked.child.wait(Some(Instant::now() + Duration::from_secs(5)));
                if !matches!(exited, Ok(Some(_))) {
                    tracked.child.kill_and_reap();
                }
                self.client.forget_connections();
                proxy::forget_client(&self.address);
                let Some(dir) = dir else { return Ok(()) };
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(Error::io(format!("removing the manager's directory {}", dir.display()), e))
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let State::Owner { .. } = self.state {
            let _ = self.shutdown();
        }
    }
}

/// What the manager child is started with.
#[derive(Serialize, Deserialize)]
struct ServeArgs {
    /// The private directory to remove on the way out (the default address).
    dir: Option<PathBuf>,
    address: Address,
    authkey: Vec<u8>,
    max_connections: usize,
    /// The certificate chain and key to serve with over TLS.
    tls: Option<transport::ServerTls>,
    lifeline: Connection<Result<Address, String>>,
}

/// The manager child's entry: an internal worker run once by the usual child bootstrap.
#[derive(Clone, Copy)]
struct ServeManager;

impl Worker for ServeManager {
    type Args = ServeArgs;
    type Output = ();
    const NAME: &'static str = "mp::manager::serve";
    fn call(&self, args: ServeArgs) {
        serve_child(args)
    }
}

fn dispatch_serve(args: &mut &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    crate::registry::dispatch(ServeManager, args, out)
}

inventory::submit! {
    WorkerEntry { name: ServeManager::NAME, file: file!(), line: line!(), dispatch: dispatch_serve }
}

fn serve_child(args: ServeArgs) -> ! {
    let ServeArgs { dir, address, authkey, max_connections, tls, lifeline } = args;
    let remove_dir = || {
        if let Some(d) = &dir {
            let _ = std::fs::remove_dir_all(d);
        }
    };
    // The lifeline, not the parent-death SIGKILL, tells us the owner is gone, so the socket
    // directory is removed on the way out.
    let _ = crate::sys::clear_parent_death_signal();
    let tls = tls.as_ref().map(transport::ServerTls::config).transpose();
    let listener = match tls.and_then(|tls| transport::bind(&address, &authkey, tls.as_ref())) {
        Ok(l) => l,
        Err(e) => {
            let _ = lifeline.send(Err(e.to_string()));
            remove_dir();
            crate::sys::exit(1)
        }
    };
    let bound = listener.address().clone();
    let server = server::Server::new(max_connections);
    let s = server.clone();
    let accept = std::thread::Builder::new().name("mp-manager-accept".into()).spawn(move || s.run(listener));
    let accept = match accept {
        Ok(t) => t,
        Err(e) => {
            let _ = lifeline.send(Err(format!("cannot start the accept thread: {e}")));
            remove_dir();
            crate::sys::exit(1)
        }
    };
    if lifeline.send(Ok(bound)).is_ok() {
        let s = server.clone();
        let _ = std::thread::Builder::new().name("mp-manager-lifeline".into()).spawn(move || {
            // Anything but a message means the owner closed its end or exited.
            while lifeline.recv().is_ok() {}
            s.stop();
        });
    } else {
        server.stop();
    }
    server.wait_stopped();
    // The accept loop notices within its slice and drops the listener (removing a Unix
    // socket's path).
    let _ = accept.join();
    remove_dir();
    crate::sys::exit(0)
}

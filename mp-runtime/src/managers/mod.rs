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
use std::path::{Path, PathBuf};
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
    authkey: Option<Vec<u8>>,
    max_connections: usize,
}

impl ManagerBuilder {
    /// The key clients must prove they hold (default: 32 random bytes).
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

    /// Starts the manager process and waits until it listens.
    pub fn start(self) -> Result<Manager, Error> {
        if self.max_connections == 0 {
            return Err(Error::invalid("Manager::builder().max_connections must be at least 1"));
        }
        let authkey: Arc<[u8]> = match self.authkey {
            Some(k) if k.is_empty() => return Err(Error::invalid("a manager's authkey must not be empty")),
            Some(k) => k.into(),
            None => random_bytes::<32>().to_vec().into(),
        };
        let dir = private_dir()?;
        let address = dir.join("manager.sock");
        let (ours, theirs) = Pipe::new::<Result<(), String>>()?;
        let args = ServeArgs {
            dir: dir.clone(),
            address: address.clone(),
            authkey: authkey.to_vec(),
            max_connections: self.max_connections,
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
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // Not a child `cleanup_children` waits for: it ends when its lifeline closes.
        process::forget(&tracked);
        let child = ManagerChild { tracked, _sock: sock, lifeline: ours };
        let ready = child.lifeline.recv_timeout(Duration::from_secs(30));
        let failed = |e: Error| {
            child.tracked.child.kill_and_reap();
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        match ready {
            Ok(Ok(())) => {}
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
        }
        let client = proxy::client(&address, &authkey);
        Ok(Manager { address, authkey, dir, child: Some(child), client })
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
    /// Closing it stops the manager; the child says on it when it listens.
    lifeline: Connection<Result<(), String>>,
}

/// A manager: a server process holding shared objects (dicts, lists, queues, values, locks,
/// events, namespaces, and `#[mp::managed]` types) that any process reaches through typed
/// proxies (Python's `multiprocessing.Manager()`).
///
/// Proxies are ordinary values: pass them to workers as arguments, or store them inside other
/// managed containers, and they keep working. The server is a child process listening on a
/// Unix socket in a private (0700) directory; it exits, removing the directory, on
/// [`shutdown`](Self::shutdown), when the `Manager` is dropped, or when its owner process
/// exits in any way. After that, calls on proxies fail with `Error::Disconnected`.
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
    address: PathBuf,
    authkey: Arc<[u8]>,
    dir: PathBuf,
    child: Option<ManagerChild>,
    client: Arc<Client>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.address)
            .field("pid", &self.child.as_ref().map(|c| c.tracked.child.pid))
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

    /// Options: authkey, connection limit.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder { authkey: None, max_connections: DEFAULT_MAX_CONNECTIONS }
    }

    /// The path of the server's socket, in a directory only this user can enter.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::fs::PermissionsExt;
    /// mp::init();
    /// let manager = mp::Manager::new().unwrap();
    /// let dir = manager.address().parent().unwrap();
    /// assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700);
    /// ```
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The key clients authenticate with.
    pub fn authkey(&self) -> &[u8] {
        &self.authkey
    }

    /// The server process's pid (`None` after shutdown).
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
        self.child.as_ref().map(|c| c.tracked.child.pid)
    }

    fn create_raw<T: Serialize + ?Sized>(
        &self,
        kind: ObjKind<'_>,
        init: Option<&T>,
    ) -> Result<RawProxy, Error> {
        if self.child.is_none() {
            return Err(Error::Closed { what: "this Manager (shut down)" });
        }
        let mut args = Args::new();
        if let Some(v) = init {
            args.push(&self.address, v)?;
        }
        let mut buf = Vec::with_capacity(32 + args.buf.len());
        let head =
            Request { obj: 0, acquire: false, op: Op::Create { kind }, refs: std::mem::take(&mut args.refs) };
        codec::encode_into(&head, &mut buf)?;
        buf.extend_from_slice(&args.buf);
        let id: u64 = self.client.request(&buf)?.decode(&self.client)?;
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

    /// Stops the server and waits for it to exit (at most 5 s, then it is killed); its
    /// socket directory is removed. Later calls through any proxy fail with
    /// `Error::Disconnected`. Dropping the `Manager` does the same.
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
        let Some(child) = self.child.take() else { return Ok(()) };
        let ManagerChild { tracked, _sock, lifeline } = child;
        // Closing the lifeline is the stop signal (the same as the owner exiting).
        drop(lifeline);
        let exited = tracked.child.wait(Some(Instant::now() + Duration::from_secs(5)));
        if !matches!(exited, Ok(Some(_))) {
            tracked.child.kill_and_reap();
        }
        self.client.forget_connections();
        proxy::forget_client(&self.address);
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing the manager's directory {}", self.dir.display()), e))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// What the manager child is started with.
#[derive(Serialize, Deserialize)]
struct ServeArgs {
    dir: PathBuf,
    address: PathBuf,
    authkey: Vec<u8>,
    max_connections: usize,
    lifeline: Connection<Result<(), String>>,
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
    let ServeArgs { dir, address, authkey, max_connections, lifeline } = args;
    // The lifeline, not the parent-death SIGKILL, tells us the owner is gone, so the socket
    // directory is removed on the way out.
    let _ = crate::sys::clear_parent_death_signal();
    let listener = match transport::bind(&address, &authkey) {
        Ok(l) => l,
        Err(e) => {
            let _ = lifeline.send(Err(e.to_string()));
            let _ = std::fs::remove_dir_all(&dir);
            crate::sys::exit(1)
        }
    };
    let server = server::Server::new(max_connections, authkey.into());
    let s = server.clone();
    let accept = std::thread::Builder::new().name("mp-manager-accept".into()).spawn(move || s.run(listener));
    if let Err(e) = accept {
        let _ = lifeline.send(Err(format!("cannot start the accept thread: {e}")));
        let _ = std::fs::remove_dir_all(&dir);
        crate::sys::exit(1)
    }
    if lifeline.send(Ok(())).is_ok() {
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
    let _ = std::fs::remove_dir_all(&dir);
    crate::sys::exit(0)
}

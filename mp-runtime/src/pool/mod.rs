//! `mp::Pool`: a process pool with Python's verbs, that survives its workers crashing.
//!
//! The pool's state lives in one manager thread ([`manager`]); the methods here encode the
//! inputs into tasks (chunks of items), hand them over, and decode the answers on the
//! caller's thread.

mod global;
mod listen;
mod manager;
mod progress;
mod results;

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use global::ParMap;
pub(crate) use manager::Attached;
pub use results::{AsyncResult, MapResult};

use crate::error::Error;
use crate::listener::{Address, IntoAddress, TlsServerConfig};
use crate::registry::Worker;
use crate::sys;
use crate::wire::codec;
use listen::Listening;
use manager::{Config, Inbox, Manager, Shared, Task};
use results::{Collector, Delivery};

/// Counters of a pool's life, from [`Pool::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Items answered with a value.
    pub tasks_completed: u64,
    /// Items answered with an error (panic, worker died, timeout).
    pub tasks_failed: u64,
    /// Workers started to replace ones that died or retired (`maxtasksperchild`).
    pub workers_respawned: u64,
    /// The live workers.
    pub workers: Vec<WorkerStats>,
}

/// One worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// The worker's pid.
    pub pid: u32,
    /// Tasks (chunks) it finished.
    pub tasks: u64,
    /// Time it spent running tasks, as seen from the parent.
    pub busy: Duration,
}

/// Options for a [`Pool`]; [`Pool::builder`] makes one.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// #[mp::worker]
/// fn square(x: i32) -> i32 { x * x }
///
/// mp::init();
/// let pool = mp::Pool::builder()
///     .processes(2)
///     .maxtasksperchild(1000)
///     .task_timeout(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// assert_eq!(pool.map(square, 1..4).unwrap(), vec![1, 4, 9]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    maxtasksperchild: Option<u64>,
    initializer: Option<(String, Result<Vec<u8>, String>)>,
    task_timeout: Option<Duration>,
    max_memory: Option<u64>,
    depth: Option<usize>,
    progress: bool,
    mpi: bool,
    listen: Option<ListenOn>,
}

/// Where a pool listens for worker hosts, and the key they must hold.
#[derive(Clone)]
struct ListenOn {
    addr: Result<Address, String>,
    key: Vec<u8>,
    tls: Option<TlsServerConfig>,
}

impl std::fmt::Debug for ListenOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ListenOn").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl PoolBuilder {
    /// Runs the pool's tasks on the other ranks of the MPI job this program was started in
    /// (`mpirun -n N ./app`, `srun`): rank 0 runs `main`, ranks 1..N-1 serve this pool.
    /// No local worker is started unless [`processes`](Self::processes) asks for some too.
    ///
    /// Under mpirun the default pool (`par_map`) is already this pool. The ranks serve one
    /// pool at a time: `build` fails while another pool (the default one, once used) holds
    /// them. It fails too, saying why, when the program was not started by an MPI launcher,
    /// when the job has a single rank, or when mp was built without its `mpi` feature.
    ///
    /// `maxtasksperchild` and `max_memory` are refused (a rank cannot be replaced, and a
    /// memory limit would stay on it). A rank that dies (segfault, abort, kill) makes MPI
    /// abort the whole job: that is MPI's contract, unlike a local pool, which replaces the
    /// worker. A panic in a task is
    /// only an `Error::Panic` for that item. At `task_timeout` the item fails and that rank
    /// leaves the pool (it cannot be killed without ending the job); when no rank is left,
    /// tasks fail with `Error::Disconnected` instead of waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// #[mp::worker]
    /// fn square(x: i32) -> i32 { x * x }
    ///
    /// mp::init();
    /// match mp::Pool::builder().mpi().build() {
    ///     Ok(pool) => assert_eq!(pool.map(square, 0..4).unwrap(), vec![0, 1, 4, 9]),
    ///     // Not started by mpirun (or built without the `mpi` feature): a clear error.
    ///     Err(e) => assert!(e.to_string().to_lowercase().contains("mpi"), "{e}"),
    /// }
    /// ```
    pub fn mpi(mut self) -> Self {
        self.mpi = true;
        self
    }

    /// Also runs tasks on *worker hosts*: the same binary started on other machines with
    /// `MP_CONNECT=<this address> MP_AUTHKEY=<authkey> ./app` (or calling
    /// [`serve_worker`](crate::serve_worker)) connects here, authenticates (HMAC-SHA256 both
    /// ways, see [`Listener`](crate::Listener)), and serves this pool with its `MP_WORKERS` (default: its CPU
    /// count) worker processes, next to the local ones ([`processes`](Self::processes); 0 for
    /// remote workers only). `addr` is `"host:port"` (port 0 picks one: see
    /// [`Pool::address`]) or a Unix socket path; a TCP listener always needs a key.
    ///
    /// A remote worker that dies or disconnects is handled like a local one that crashes:
    /// the item it was running fails with `Error::WorkerDied` (naming the host and pid), the
    /// rest of its tasks go back to the queue for the other workers, and its host starts a
    /// fresh worker. At `task_timeout` the connection is dropped and the host kills the
    /// worker. Arguments holding OS handles (a `Lock`, `Queue`, `Connection`...) cannot
    /// reach another host: such tasks run on local workers, or fail with `Error::Codec`
    /// naming the Manager alternative when there are none. A pool with only remote workers
    /// and none connected waits for one: see [`Pool::wait_for_workers`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), mp::Error> {
    /// mp::init();
    /// let pool = mp::Pool::builder().processes(1).listen("127.0.0.1:0", b"secret").build()?;
    /// let addr = pool.address().expect("a listening pool has an address");
    /// assert!(addr.to_string().starts_with("127.0.0.1:"));
    /// # Ok(()) }
    /// ```
    pub fn listen(mut self, addr: impl IntoAddress, authkey: impl AsRef<[u8]>) -> Self {
        self.listen = Some(ListenOn {
            addr: addr.into_address().map_err(|e| e.to_string()),
            key: authkey.as_ref().to_vec(),
            tls: None,
        });
        self
    }

    /// [`listen`](Self::listen) over TLS (feature `tls`; see
    /// [`Listener::bind_tls`](crate::Listener::bind_tls)): tasks and results travel encrypted
    /// and worker hosts check this pool's certificate, then its authkey as before. Hosts
    /// connect with `MP_TLS_CA=<CA PEM file>` next to `MP_CONNECT` / `MP_AUTHKEY` (and
    /// `MP_TLS_SERVER_NAME` when the certificate's name is not the host they connect to), or
    /// [`serve_worker_tls`](crate::serve_worker_tls). A host without TLS is refused at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), mp::Error> {
    /// mp::init();
    /// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let tls = mp::TlsServerConfig::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem())?;
    /// let pool = mp::Pool::builder().processes(1).listen_tls("127.0.0.1:0", b"secret", &tls).build()?;
    /// assert!(pool.address().is_some());
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn listen_tls(
        mut self,
        addr: impl IntoAddress,
        authkey: impl AsRef<[u8]>,
        tls: &TlsServerConfig,
    ) -> Self {
        self = self.listen(addr, authkey);
        if let Some(l) = &mut self.listen {
            l.tls = Some(tls.clone());
        }
        self
    }

    /// Shows a progress bar on stderr for every `map`/`imap` of this pool (hidden when stderr
    /// is not a terminal). Needs the `progress` feature.
    #[cfg(feature = "progress")]
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Number of worker processes (default: [`cpu_count`](crate::cpu_count), or
    /// `MP_PROCESSES`).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Replace a worker after it finished this many tasks (chunks), as Python's
    /// `maxtasksperchild`: bounds leaks in C code.
    pub fn maxtasksperchild(mut self, n: u64) -> Self {
        self.maxtasksperchild = Some(n);
        self
    }

    /// Runs `worker(args)` once in each worker process before its first task. If it
    /// panics, the pool cannot work: every task fails with that panic (instead of Python's
    /// endless respawning).
    pub fn initializer<W: Worker>(mut self, worker: W, args: W::Args) -> Self {
        let _ = worker;
        let mut buf = Vec::new();
        let encoded = codec::encode_into(&args, &mut buf).map(|()| buf).map_err(|e| e.to_string());
        self.initializer = Some((W::NAME.to_string(), encoded));
        self
    }

    /// A task running longer than this has its worker killed (SIGKILL: a hard limit, even
    /// for C code stuck in a loop) and is answered with `Error::Timeout`; a fresh worker
    /// takes its place.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Caps each worker's address space (RLIMIT_AS) at `bytes`. A task that allocates past
    /// it fails (Rust aborts on allocation failure: `Error::WorkerDied` with SIGABRT) and the
    /// worker is replaced.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// How many tasks are written ahead to each worker. By default it adapts: 8 while tasks
    /// take under 200 µs (hides the round trip for many tiny `apply_async` calls), else 2
    /// (one running, one waiting). 1 balances very uneven slow tasks best.
    pub fn prefetch(mut self, depth: usize) -> Self {
        self.depth = Some(depth);
        self
    }

    fn config(&self, attached: usize) -> Result<Config, Error> {
        let processes = match self.processes {
            Some(n) => n,
            // An MPI pool's workers are the ranks.
            None if self.mpi => 0,
            None => std::env::var("MP_PROCESSES")
                .ok()
                .map(|v| {
                    v.parse::<usize>().map_err(|_| {
                        Error::invalid(format!("MP_PROCESSES={v:?} is not a number of processes"))
                    })
                })
                .transpose()?
                .unwrap_or_else(crate::cpu_count),
        };
        if processes == 0 && attached == 0 && self.listen.is_none() {
            return Err(Error::invalid("a pool needs at least 1 process (processes(0) was given)"));
        }
        if self.maxtasksperchild == Some(0) {
            return Err(Error::invalid("maxtasksperchild must be at least 1 (or not set)"));
        }
        if self.task_timeout == Some(Duration::ZERO) {
            return Err(Error::invalid("task_timeout must be longer than zero"));
        }
        if self.max_memory.is_some_and(|m| m < 32 << 20) {
            return Err(Error::invalid("max_memory below 32 MiB leaves no room to start a worker"));
        }
        if self.depth == Some(0) {
            return Err(Error::invalid("prefetch must be at least 1"));
        }
        let initializer = match &self.initializer {
            None => None,
            Some((name, Ok(bytes))) => Some((name.clone(), bytes.clone())),
            Some((_, Err(e))) => {
                return Err(Error::invalid(format!("the initializer's arguments: {e}")));
            }
        };
        Ok(Config {
            processes,
            attached,
            maxtasksperchild: self.maxtasksperchild,
            task_timeout: self.task_timeout,
            initializer,
            max_memory: self.max_memory,
            depth: self.depth,
            progress: self.progress,
        })
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool, Error> {
        if self.mpi {
            // Options that need replaceable workers, or that would outlive the pool on a
            // rank (an address-space limit cannot be raised again), are refused.
            if self.maxtasksperchild.is_some() || self.max_memory.is_some() {
                return Err(Error::invalid(
                    "maxtasksperchild and max_memory do not apply to an MPI pool (a rank cannot be \
                     replaced, and a memory limit would stay on it for the rest of the job); use \
                     them on a local pool",
                ));
            }
            // Check the options before taking the ranks.
            self.config(1)?;
            let attached = crate::mpi::attach_ranks()?;
            return Pool::start(self.config(attached.len())?, attached, None);
        }
        let listen = match &self.listen {
            None => None,
            Some(ListenOn { addr: Err(e), .. }) => return Err(Error::invalid(format!("Pool::listen: {e}"))),
            Some(ListenOn { addr: Ok(a), key, tls }) => Some((a.clone(), key.clone(), tls.clone())),
        };
        Pool::start(self.config(0)?, Vec::new(), listen)
    }

    /// Builds the pool behind `par_map` and friends. An error if it already exists (it is
    /// created on first use).
    pub fn build_global(self) -> Result<(), Error> {
        global::set_global(self.build()?)
    }
}

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// One pool runs tasks of any `#[mp::worker]`. Results of `map` and `imap` keep the input
/// order. A task that panics is an `Error::Panic` for that item; a worker killed mid-task
/// (signal, segfault, abort, OOM, `exit`) is `Error::WorkerDied` for the task it held, a
/// fresh worker replaces it, and every other task completes.
///
/// Dropping the pool terminates it (never hangs, leaves no worker behind); call `close` then
/// `join` to let queued work finish first.
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn square(x: i32) -> i32 { x * x }
///
/// #[mp::worker]
/// fn add(a: i32, b: i32) -> i32 { a + b }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let pool = mp::Pool::new(2)?;
/// assert_eq!(pool.map(square, 0..5)?, vec![0, 1, 4, 9, 16]);
/// assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)])?, vec![3, 7]);
/// let lazy: Vec<i32> = pool.imap(square, 0..3)?.collect::<Result<_, _>>()?;
/// assert_eq!(lazy, vec![0, 1, 4]);
/// assert_eq!(pool.apply(square, 9)?, 81);
/// pool.close();
/// pool.join()?;
/// # Ok(()) }
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    manager: Mutex<Option<JoinHandle<()>>>,
    listening: Option<Listening>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("processes", &self.processes()).finish_non_exhaustive()
    }
}

/// CPython's automatic chunk size: about len / (4 x workers), rounded up.
fn auto_chunksize(len: usize, processes: usize) -> usize {
    len.div_ceil(processes * 4).max(1)
}

impl Pool {
    /// A pool of `processes` workers with default options.
    pub fn new(processes: usize) -> Result<Pool, Error> {
        Pool::builder().processes(processes).build()
    }

    /// Options: processes, maxtasksperchild, initializer, task_timeout, max_memory.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    fn start(
        config: Config,
        attached: Vec<Attached>,
        listen: Option<(Address, Vec<u8>, Option<TlsServerConfig>)>,
    ) -> Result<Pool, Error> {
        let wake = sys::eventfd().map_err(|e| Error::io("creating the pool's wake-up eventfd", e))?;
        let mut slots = Vec::with_capacity(config.processes + attached.len());
        for _ in 0..config.processes {
            slots.push(manager::spawn_worker(&config)?);
        }
        // After the children: the manager replaces only the first `processes` slots.
        for a in attached {
            slots.push(manager::attach_worker(&config, a)?);
        }
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox { listening: listen.is_some(), ..Inbox::default() }),
            remote_workers: AtomicU64::new(0),
            wake,
            stats: Mutex::new(PoolStats::default()),
            config,
        });
        let m = Manager::new(shared.clone(), slots);
        let handle = std::thread::Builder::new()
            .name("mp-pool".into())
            .spawn(move || m.run())
            .map_err(|e| Error::io("starting the pool's manager thread", e))?;
        let mut pool = Pool { shared, manager: Mutex::new(Some(handle)), listening: None };
        if let Some((addr, key, tls)) = listen {
            // On error, dropping `pool` terminates its workers.
            pool.listening = Some(Listening::start(addr, key, tls, pool.shared.clone())?);
        }
        Ok(pool)
    }

    /// The address a [`listen`](PoolBuilder::listen)ing pool accepts worker hosts on (with
    /// the real port when port 0 was asked for); `None` for other pools.
    pub fn address(&self) -> Option<&Address> {
        self.listening.as_ref().map(|l| &l.address)
    }

    /// Waits until `n` remote workers have connected to this listening pool since it
    /// started (replacements count too): `Error::Timeout` after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// # fn main() -> Result<(), mp::Error> {
    /// mp::init();
    /// let pool = mp::Pool::builder().processes(1).listen("127.0.0.1:0", b"k").build()?;
    /// // Nobody was started with MP_CONNECT: no worker host comes.
    /// assert!(pool.wait_for_workers(1, Duration::from_millis(50)).is_err());
    /// # Ok(()) }
    /// ```
    pub fn wait_for_workers(&self, n: u64, timeout: Duration) -> Result<(), Error> {
        let end = Instant::now() + timeout;
        while self.shared.remote_workers.load(Ordering::Relaxed) < n {
            if Instant::now() >= end {
                return Err(Error::Timeout {
                    what: format!("waiting for {n} remote workers to connect"),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// The number of worker processes (for an MPI pool, the ranks serving it).
    pub fn processes(&self) -> usize {
        self.shared.config.processes + self.shared.config.attached
    }

    /// Workers to spread a map over: the live ones (remote workers come and go), at least 1.
    fn workers_now(&self) -> usize {
        let live = self.shared.stats.lock().unwrap_or_else(|p| p.into_inner()).workers.len();
        live.max(self.processes()).max(1)
    }

    /// Counters: tasks done and failed, workers respawned, busy time per worker.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn submit(&self, tasks: Vec<Task>) -> Result<(), Error> {
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        if inbox.closed || inbox.terminate {
            return Err(Error::Closed { what: "this pool" });
        }
        // The manager drains the whole inbox once woken: only the first task needs a wake-up.
        let was_empty = inbox.tasks.is_empty();
        inbox.tasks.extend(tasks);
        drop(inbox);
        if was_empty {
            self.shared.notify();
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), Error> {
        let inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        if inbox.closed || inbox.terminate { Err(Error::Closed { what: "this pool" }) } else { Ok(()) }
    }

    /// Applies `worker` to every item, in parallel; the results in input order, or the first
    /// failure (its `index` names the input). The chunk size is chosen as CPython does.
    pub fn map<W: Worker, I: IntoIterator<Item = W::Args>>(
        &self,
        worker: W,
        items: I,
    ) -> Result<Vec<W::Output>, Error> {
        self.map_async_inner(worker, items.into_iter(), None)?.get()
    }

    /// [`map`](Self::map) with an explicit number of items per task.
    pub fn map_chunked<W: Worker, I: IntoIterator<Item = W::Args>>(
        &self,
        worker: W,
        items: I,
        chunksize: usize,
    ) -> Result<Vec<W::Output>, Error> {
        if chunksize == 0 {
            return Err(Error::invalid("chunksize must be at least 1"));
        }
        self.map_async_inner(worker, items.into_iter(), Some(chunksize))?.get()
    }

    /// [`map`](Self::map) for workers of several arguments: each item is the argument tuple.
    pub fn starmap<W: Worker, I: IntoIterator<Item = W::Args>>(
        &self,
        worker: W,
        items: I,
    ) -> Result<Vec<W::Output>, Error> {
        self.map(worker, items)
    }

    /// Starts a map and returns at once; [`MapResult::get`] waits for it.
    pub fn map_async<W: Worker, I: IntoIterator<Item = W::Args>>(
        &self,
        worker: W,
        items: I,
    ) -> Result<MapResult<W::Output>, Error> {
        self.map_async_inner(worker, items.into_iter(), None)
    }

    fn map_async_inner<W: Worker, I: Iterator<Item = W::Args>>(
        &self,
        worker: W,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<MapResult<W::Output>, Error> {
        let _ = worker;
        self.check_open()?;
        // The length decides the chunk size: take it from the iterator when it knows it.
        match items.size_hint() {
            (lo, Some(hi)) if lo == hi => self.submit_map::<W>(items, lo, chunksize),
            _ => {
                let v: Vec<W::Args> = items.collect();
                let n = v.len();
                self.submit_map::<W>(v.into_iter(), n, chunksize)
            }
        }
    }

    /// Encodes and submits `total` items chunk by chunk, so workers start while the rest is
    /// being encoded.
    fn submit_map<W: Worker>(
        &self,
        mut items: impl Iterator<Item = W::Args>,
        total: usize,
        chunksize: Option<usize>,
    ) -> Result<MapResult<W::Output>, Error> {
        let chunksize = chunksize.unwrap_or_else(|| auto_chunksize(total, self.workers_now()));
        let collector = Collector::new(true);
        let mut tasks = Vec::new();
        let mut first = 0;
        while first < total {
            let next = encode_tasks::<W>(&mut items, chunksize, first, &collector, &mut tasks)?;
            if next == first {
                break; // the iterator lied about its length
            }
            first = next;
            self.submit(std::mem::take(&mut tasks))?;
        }
        Ok(MapResult::new::<W>(collector, first, self.shared.config.progress))
    }

    /// Runs `worker(args)` in a worker and waits for the result.
    pub fn apply<W: Worker>(&self, worker: W, args: W::Args) -> Result<W::Output, Error> {
        self.apply_async(worker, args)?.get()
    }

    /// Runs `worker(args)` in a worker; the [`AsyncResult`] gives the result later.
    /// `get_timeout` on it returns `Error::Timeout` without cancelling the task.
    pub fn apply_async<W: Worker>(&self, worker: W, args: W::Args) -> Result<AsyncResult<W::Output>, Error> {
        let _ = worker;
        let collector = Collector::new(true);
        let mut tasks = Vec::with_capacity(1);
        encode_tasks::<W>(&mut std::iter::once(args), 1, 0, &collector, &mut tasks)?;
        self.submit(tasks)?;
        Ok(AsyncResult::new::<W>(collector))
    }

    /// A lazy, ordered map: pulls `items` as results are consumed (an endless iterator works,
    /// in bounded memory) and yields each item's result in input order.
    pub fn imap<W: Worker, I: IntoIterator<Item = W::Args>>(
        &self,
        worker: W,
        items: I,
    ) -> Result<IMap<'_, W, I::IntoIter>, Error> {
        self.imap_inner(worker, items.into_iter(), true, None)
    }

    /// [`imap`](Self::imap) with an explicit chunk size.
    pub fn imap_chunked<W: Worker, I: IntoIterator<Item = W::Args>>(
        &self,
        worker: W,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<'_, W, I::IntoIter>, Error> {
        if chunksize == 0 {
            return Err(Error::invalid("chunksize must be at least 1"));
        }
        self.imap_inner(worker, items.into_iter(), true, Some(chunksize))
    }

    /// Like [`imap`](Self::imap), but yields results as they complete (use
    /// [`IMap::next_indexed`] to learn each one's input index).
    pub fn imap_unordered<W: Worker, I: IntoIterator<Item = W::Args>>(
        &self,
        worker: W,
        items: I,
    ) -> Result<IMap<'_, W, I::IntoIter>, Error> {
        self.imap_inner(worker, items.into_iter(), false, None)
    }

    fn imap_inner<W: Worker, I: Iterator<Item = W::Args>>(
        &self,
        worker: W,
        items: I,
        ordered: bool,
        chunksize: Option<usize>,
    ) -> Result<IMap<'_, W, I>, Error> {
        let _ = worker;
        self.check_open()?;
        // A known length gets CPython's chunk size; an unknown one adapts to the task time.
        let (lo, hi) = items.size_hint();
        let (chunksize, fixed) = match (chunksize, hi) {
            (Some(c), _) => (c, true),
            (None, Some(h)) if h == lo => (auto_chunksize(h, self.workers_now()), true),
            (None, _) => (1, false),
        };
        let mut it = IMap {
            pool: self,
            input: items,
            exhausted: false,
            collector: Collector::new(ordered),
            ordered,
            chunksize,
            fixed,
            submitted: 0,
            consumed: 0,
            ready: VecDeque::new(),
            started: Instant::now(),
            bar: progress::Progress::new(self.shared.config.progress, if fixed { hi } else { None }, W::NAME),
            _w: PhantomData,
        };
        // Start working at once, as Python's imap does; later input is pulled as results
        // are consumed.
        it.top_up()?;
        Ok(it)
    }

    /// No new tasks; those already submitted finish. Then [`join`](Self::join).
    pub fn close(&self) {
        self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.shared.notify();
    }

    /// Kills the workers now; unfinished tasks are answered with `Error::Closed`.
    pub fn terminate(&self) {
        self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner()).terminate = true;
        self.shared.notify();
        self.join_manager();
    }

    /// Waits for the workers to finish and exit, after [`close`](Self::close) or
    /// [`terminate`](Self::terminate).
    pub fn join(&self) -> Result<(), Error> {
        {
            let inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
            if !inbox.closed && !inbox.terminate {
                return Err(Error::invalid("Pool::join() before close() or terminate()"));
            }
        }
        self.join_manager();
        Ok(())
    }

    fn join_manager(&self) {
        let handle = self.manager.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        if let Some(l) = &self.listening {
            l.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let finished =
            self.manager.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_none_or(|h| h.is_finished());
        if !finished {
            self.terminate();
        }
    }
}

/// Encodes up to `chunksize` items from `items` as tasks; returns the next job index.
/// An item whose arguments carry handles (a `Connection`…) becomes a task of its own.
fn encode_tasks<W: Worker>(
    items: &mut impl Iterator<Item = W::Args>,
    chunksize: usize,
    first: usize,
    collector: &Arc<Collector>,
    tasks: &mut Vec<Task>,
) -> Result<usize, Error> {
    let mut task = new_task::<W>(first, collector, chunksize);
    let mut next = first;
    let (r, _) = codec::collecting_fds(|| -> Result<(), Error> {
        for item in items.by_ref().take(chunksize) {
            let before = task.args.len();
            let pushed = codec::fds_pushed();
            codec::encode_into(&item, &mut task.args)?;
            if codec::fds_pushed() == pushed {
                task.count += 1;
            } else {
                let fds = codec::take_collected_fds();
                let args = task.args.split_off(before);
                let done = std::mem::replace(&mut task, new_task::<W>(next + 1, collector, chunksize));
                if done.items() > 0 {
                    tasks.push(done);
                }
                tasks.push(Task {
                    worker: W::NAME,
                    args,
                    count: 1,
                    skip: |b| Ok(b.len()), // one item: all of it
                    single: true,
                    fds,
                    first: next,
                    collector: collector.clone(),
                });
            }
            next += 1;
        }
        Ok(())
    });
    r?;
    if task.items() > 0 {
        tasks.push(task);
    }
    Ok(next)
}

/// The encoded length of the first `W::Args` in `bytes`.
fn skip_one<W: Worker>(bytes: &[u8]) -> Result<usize, Error> {
    let (_, rest) = codec::decode_prefix::<W::Args>(bytes)?;
    Ok(bytes.len() - rest.len())
}

fn new_task<W: Worker>(first: usize, collector: &Arc<Collector>, chunksize: usize) -> Task {
    Task {
        worker: W::NAME,
        args: Vec::with_capacity(chunksize.min(1 << 20) * std::mem::size_of::<W::Args>().max(1)),
        count: 0,
        skip: skip_one::<W>,
        single: false,
        fds: Vec::new(),
        first,
        collector: collector.clone(),
    }
}

/// The lazy iterator of [`Pool::imap`] (yields `Result<Output, Error>`) and
/// [`Pool::imap_unordered`]. Input is pulled as results are consumed, with a bounded
/// number of items in flight.
pub struct IMap<'p, W: Worker, I> {
    pool: &'p Pool,
    input: I,
    exhausted: bool,
    collector: Arc<Collector>,
    ordered: bool,
    chunksize: usize,
    fixed: bool,
    submitted: usize,
    consumed: usize,
    ready: VecDeque<(usize, Result<W::Output, Error>)>,
    started: Instant,
    bar: progress::Progress,
    _w: PhantomData<W>,
}

impl<W: Worker, I> std::fmt::Debug for IMap<'_, W, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("worker", &W::NAME)
            .field("submitted", &self.submitted)
            .field("consumed", &self.consumed)
            .finish()
    }
}

impl<W: Worker, I: Iterator<Item = W::Args>> IMap<'_, W, I> {
    /// Keeps enough work queued to occupy every worker, and no more.
    fn top_up(&mut self) -> Result<(), Error> {
        let window = self.pool.workers_now() * self.pool.shared.config.depth.unwrap_or(2) * 2;
        while !self.exhausted && self.submitted < self.consumed + window * self.chunksize {
            if !self.fixed {
                self.adapt();
            }
            let mut tasks = Vec::new();
            let next = encode_tasks::<W>(
                &mut self.input,
                self.chunksize,
                self.submitted,
                &self.collector,
                &mut tasks,
            )?;
            if next == self.submitted {
                self.exhausted = true;
                break;
            }
            self.submitted = next;
            self.pool.submit(tasks)?;
        }
        Ok(())
    }

    /// Unknown length: aim for chunks of about 10 ms of work per worker.
    fn adapt(&mut self) {
        let done = self.collector.received();
        if done == 0 {
            return;
        }
        let per_item = self.started.elapsed().as_secs_f64() * self.pool.workers_now() as f64 / done as f64;
        let target = if per_item > 0.0 { (0.01 / per_item) as usize } else { 4096 };
        self.chunksize = target.clamp(1, 4096);
    }

    fn next_result(&mut self) -> Option<(usize, Result<W::Output, Error>)> {
        if let Some(r) = self.ready.pop_front() {
            return Some(r);
        }
        if let Err(e) = self.top_up() {
            // Report the failure once, at the next index, then end.
            self.exhausted = true;
            let i = self.submitted;
            self.submitted += 1;
            self.consumed = self.submitted;
            return Some((i, Err(e)));
        }
        if self.consumed >= self.submitted {
            return None;
        }
        let d: Delivery =
            if self.ordered { self.collector.take_at(self.consumed) } else { self.collector.take_next() };
        let ready = &mut self.ready;
        let mut n = 0;
        d.decode::<W>(|i, r| {
            ready.push_back((i, r));
            n += 1;
        });
        self.consumed += n;
        self.bar.inc(n);
        self.ready.pop_front()
    }

    /// Like `next`, with the input index of the result (useful with `imap_unordered`).
    pub fn next_indexed(&mut self) -> Option<(usize, Result<W::Output, Error>)> {
        self.next_result()
    }
}

impl<W: Worker, I: Iterator<Item = W::Args>> Iterator for IMap<'_, W, I> {
    type Item = Result<W::Output, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_result().map(|(_, r)| r)
    }
}

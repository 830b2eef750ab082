//! `mp::Process`: one worker call in a child process, with Python's verbs.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bootstrap::{self, ReplyHead, Setup, TaskHead};
use crate::error::{Error, Exit};
use crate::registry::Worker;
use crate::spawn::{self, Child};
use crate::wire::{FrameReader, Kind, OutFrame, codec};

/// A child that mp started and has not yet seen reaped by everyone interested.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub child: Child,
    pub name: String,
    pub daemon: bool,
}

static CHILDREN: Mutex<Vec<Arc<Tracked>>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<Arc<Tracked>>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a child should behave (the parts of `Setup` its starter chooses).
#[derive(Default, Clone)]
pub(crate) struct ChildOptions {
    pub daemon: bool,
    pub one_shot: bool,
    pub initializer: Option<(String, Vec<u8>)>,
    pub max_memory: Option<u64>,
}

/// Starts a child, registers it, and sends its `Setup`. Shared by `Process` and `Pool`.
/// `first_task`, if any, goes out in the same write as the `Setup`.
pub(crate) fn start_child(
    name: String,
    opts: ChildOptions,
    first_task: Option<OutFrame>,
) -> Result<(Arc<Tracked>, OwnedFd), Error> {
    let ChildOptions { daemon, one_shot, initializer, max_memory } = opts;
    let (child, sock) = spawn::spawn_child()?;
    let tracked = Arc::new(Tracked { child, name, daemon });
    children().push(tracked.clone());
    let setup = Setup {
        name: tracked.name.clone(),
        parent_name: bootstrap::identity().name.clone(),
        daemon,
        one_shot,
        initializer,
        max_memory,
        authkey: authkey().to_vec(),
    };
    let mut frame = OutFrame::new(Kind::Setup);
    codec::encode_into(&setup, &mut frame.buf)?;
    let frames = match first_task {
        Some(task) => vec![frame, task],
        None => vec![frame],
    };
    if let Err(e) = crate::wire::send_frames(sock.as_fd(), frames, "a new child's channel") {
        tracked.child.kill_and_reap();
        forget(&tracked);
        return Err(e);
    }
    Ok((tracked, sock))
}

/// Encodes a task frame for worker `W`; the arguments' handles ride along.
pub(crate) fn task_frame<W: Worker>(id: u64, args: &W::Args) -> Result<OutFrame, Error> {
    let mut frame = OutFrame::new(Kind::Task);
    let head = TaskHead { id, worker: W::NAME.into(), items: 0 };
    codec::encode_into(&head, &mut frame.buf)?;
    frame.fds = codec::encode_with_fds(args, &mut frame.buf)?;
    Ok(frame)
}

/// Decodes a reply frame's payload into `W::Output` (or the worker's failure).
pub(crate) fn decode_reply<W: Worker>(
    payload: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<(u64, Result<W::Output, Error>), Error> {
    let (head, rest) = codec::decode_prefix::<ReplyHead>(payload)?;
    let r = match head.failure {
        Some(f) => Err(f.into_error(W::NAME)),
        None => codec::decode_with_fds::<W::Output>(rest, fds),
    };
    Ok((head.id, r))
}

/// Terminates daemonic children and waits for the others (Python's exit behaviour). Called
/// when `#[mp::main]` returns and when a child finishes.
#[doc(hidden)]
pub fn cleanup_children() {
    let list: Vec<Arc<Tracked>> = std::mem::take(&mut *children());
    for t in list.iter().filter(|t| t.daemon) {
        let _ = t.child.signal(15);
    }
    let grace = Instant::now() + Duration::from_secs(1);
    for t in list.iter().filter(|t| t.daemon) {
        if matches!(t.child.wait(Some(grace)), Ok(None)) {
            t.child.kill_and_reap();
        }
    }
    // Say who is being waited for when it takes a while: a silent hang at exit is the worst
    // way to learn that a non-daemonic child is blocked.
    let patience = Instant::now() + EXIT_JOIN_NOTICE;
    for t in list.iter().filter(|t| !t.daemon) {
        if matches!(t.child.wait(Some(patience)), Ok(None)) {
            eprintln!(
                "mp: the program is done but waits for its child process `{}` (pid {}) to exit, \
                 as Python does for non-daemonic processes; join or terminate it before \
                 returning, or start it with .daemon(true) to have it terminated at exit",
                t.name, t.child.pid
            );
            let _ = t.child.wait(None);
        }
    }
}

/// How long the exit hook waits for non-daemonic children before it says so.
const EXIT_JOIN_NOTICE: Duration = Duration::from_secs(3);

pub(crate) fn forget(t: &Arc<Tracked>) {
    children().retain(|c| !Arc::ptr_eq(c, t));
}

/// What `current_process()`, `parent_process()` and `active_children()` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `MainProcess` in the program's first process, the `Process`'s name in a child.
    pub name: String,
    /// The operating-system process id.
    pub pid: u32,
    /// Whether the process is terminated (not joined) when its parent finishes.
    pub daemon: bool,
}

impl ProcessInfo {
    /// The authentication key of this program (Python's `current_process().authkey`): 32
    /// random bytes made by the first process and inherited by every child mp starts, so a
    /// [`Listener`](crate::Listener) and [`Client`](crate::Client) in one program's
    /// processes (a Manager and its users) agree without configuration. It is the same for
    /// every process of the program, whichever `ProcessInfo` it is read from. Share it with
    /// processes on other machines through a channel you trust.
    ///
    /// # Examples
    ///
    /// ```
    /// let key = mp::current_process().authkey();
    /// assert_eq!(key.len(), 32);
    /// assert_eq!(key, mp::current_process().authkey());
    /// ```
    pub fn authkey(&self) -> &'static [u8] {
        authkey()
    }
}

static AUTHKEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// This program's authkey: inherited from the parent's `Setup`, or made on first use.
pub(crate) fn authkey() -> &'static [u8] {
    AUTHKEY.get_or_init(|| {
        let mut key = vec![0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // No OS randomness (never on a supported Linux): still a key unique to this run,
            // but say so, since it is guessable.
            eprintln!("mp: no OS randomness for the authkey; using a weak one (time and pid)");
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            for (i, b) in seed.bytes().enumerate() {
                key[i % 32] ^= b;
            }
        }
        key
    })
}

/// In a child: takes the key the parent sent in `Setup`.
pub(crate) fn inherit_authkey(key: Vec<u8>) {
    let _ = AUTHKEY.set(key);
}

/// This process, as mp names it.
///
/// # Examples
///
/// ```
/// mp::init();
/// let me = mp::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    let id = bootstrap::identity();
    ProcessInfo { name: id.name.clone(), pid: std::process::id(), daemon: id.daemon }
}

/// The process that started this one, or `None` in the main process.
///
/// # Examples
///
/// ```
/// mp::init();
/// assert!(mp::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    bootstrap::identity().parent.as_ref().map(|(name, pid)| ProcessInfo {
        name: name.clone(),
        pid: *pid,
        daemon: false,
    })
}

/// The children of this process that are still running (finished ones are reaped, as in
/// Python).
///
/// # Examples
///
/// ```
/// mp::init();
/// assert!(mp::active_children().is_empty());
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    let mut list = children();
    list.retain(|t| t.child.try_exit().is_none());
    list.iter().map(|t| ProcessInfo { name: t.name.clone(), pid: t.child.pid, daemon: t.daemon }).collect()
}

/// The number of CPUs this process may use (affinity and cgroup quotas included).
///
/// # Examples
///
/// ```
/// assert!(mp::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_name(prefix: &str) -> String {
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

struct Running {
    tracked: Arc<Tracked>,
    sock: OwnedFd,
    reader: FrameReader,
}

enum State {
    Created,
    Running(Running),
    /// Joined; the child may still be finishing its exit (kept for `exitcode`).
    Joined(Arc<Tracked>),
}

/// One call of a worker in a new child process: Python's `multiprocessing.Process`, except
/// that `join` hands back the worker's return value.
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn square(x: i32) -> i32 { x * x }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let mut p = mp::Process::new(square, 7).name("sq");
/// p.start()?;
/// assert!(p.pid().is_some());
/// assert_eq!(p.join()?, 49);
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok(()) }
/// ```
pub struct Process<W: Worker> {
    args: Option<W::Args>,
    name: String,
    daemon: bool,
    state: State,
    _worker: W,
}

impl<W: Worker> std::fmt::Debug for Process<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("worker", &W::NAME)
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("pid", &self.pid())
            .finish()
    }
}

impl<W: Worker> Process<W> {
    /// A process that will run `worker(args)` once started. Several arguments are a tuple.
    pub fn new(worker: W, args: W::Args) -> Self {
        Process {
            args: Some(args),
            name: next_name("Process"),
            daemon: false,
            state: State::Created,
            _worker: worker,
        }
    }

    /// Sets the name the child sees in `current_process().name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A daemon child is terminated, not waited for, when its parent finishes (and when this
    /// `Process` is dropped unjoined).
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// The process name.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// Whether it is a daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Starts the child and sends it the arguments. Handles among the arguments (a
    /// `Connection`…) move to the child; this process's copies close.
    pub fn start(&mut self) -> Result<(), Error> {
        if !matches!(self.state, State::Created) {
            return Err(Error::invalid(format!(
                "process `{}` was already started; a Process runs once, create a new one",
                self.name
            )));
        }
        let args = self.args.as_ref().expect("arguments present before start");
        // Encode first: a value that cannot be sent is an error before any process exists.
        let frame = task_frame::<W>(0, args)?;
        let opts = ChildOptions { daemon: self.daemon, one_shot: true, ..Default::default() };
        let (tracked, sock) = start_child(self.name.clone(), opts, Some(frame))?;
        self.args = None; // our copies of passed handles close now
        self.state = State::Running(Running { tracked, sock, reader: FrameReader::new() });
        Ok(())
    }

    /// Waits for the worker to finish and returns its result.
    ///
    /// A panic in the worker is `Error::Panic`; a child that died without answering
    /// (signal, `exit`, crash) is `Error::WorkerDied` with its exit code or signal.
    pub fn join(&mut self) -> Result<W::Output, Error> {
        self.join_until(None, None)
    }

    /// Like [`join`](Self::join), but gives up after `timeout` with `Error::Timeout`, leaving
    /// the child running (join again later, or `terminate` it).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// #[mp::worker]
    /// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
    ///
    /// mp::init();
    /// let mut p = mp::Process::new(nap, 5_000);
    /// p.start().unwrap();
    /// let e = p.join_timeout(Duration::from_millis(50)).unwrap_err();
    /// assert!(matches!(e, mp::Error::Timeout { .. }));
    /// assert!(p.is_alive());
    /// p.kill().unwrap();
    /// assert!(matches!(p.join(), Err(mp::Error::WorkerDied { .. })));
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<W::Output, Error> {
        self.join_until(Some(Instant::now() + timeout), Some(timeout))
    }

    fn join_until(
        &mut self,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<W::Output, Error> {
        let run = match &mut self.state {
            State::Created => {
                return Err(Error::invalid(format!(
                    "process `{}` was joined before start(); call start() first",
                    self.name
                )));
            }
            State::Joined(_) => {
                return Err(Error::invalid(format!(
                    "process `{}` was already joined and its result taken",
                    self.name
                )));
            }
            State::Running(r) => r,
        };
        let what = format!("process `{}` (pid {})", self.name, run.tracked.child.pid);
        let result = match run.reader.read(run.sock.as_fd(), deadline, &what) {
            Ok(frame) if frame.kind == Kind::Reply => {
                decode_reply::<W>(&frame.payload, frame.fds).map(|(_, r)| r)
            }
            Ok(frame) => {
                Err(Error::Protocol(format!("{what} sent a {:?} frame instead of its result", frame.kind)))
            }
            Err(Error::Timeout { .. }) => {
                return Err(Error::Timeout {
                    what: format!("join of {what}"),
                    after: timeout.unwrap_or_default(),
                });
            }
            Err(Error::Disconnected { .. }) => {
                // Gone without an answer: report how it ended.
                let exit = match run.tracked.child.wait(deadline)? {
                    Some(e) => e,
                    None => {
                        return Err(Error::Timeout {
                            what: format!("join of {what}"),
                            after: timeout.unwrap_or_default(),
                        });
                    }
                };
                Ok(Err(Error::WorkerDied {
                    worker: W::NAME.to_string(),
                    pid: run.tracked.child.pid,
                    exit,
                    index: None,
                    peer: None,
                }))
            }
            Err(e) => Err(e),
        };
        let tracked = run.tracked.clone();
        // The child exits right after answering; reap it (bounded by the caller's deadline).
        let reap_by = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(5));
        let _ = tracked.child.wait(Some(reap_by));
        if tracked.child.try_exit().is_some() {
            forget(&tracked);
        }
        self.state = State::Joined(tracked);
        result?
    }

    fn tracked(&self) -> Option<&Arc<Tracked>> {
        match &self.state {
            State::Created => None,
            State::Running(r) => Some(&r.tracked),
            State::Joined(t) => Some(t),
        }
    }

    /// The child's pid once started.
    pub fn pid(&self) -> Option<u32> {
        self.tracked().map(|t| t.child.pid)
    }

    /// Whether the child is running.
    pub fn is_alive(&self) -> bool {
        self.tracked().is_some_and(|t| t.child.try_exit().is_none())
    }

    /// The exit code once the child has ended: the code it exited with (0 after a normal
    /// return, 1 after a panic), or minus the signal that killed it. `None` while running.
    pub fn exitcode(&self) -> Option<i32> {
        self.tracked().and_then(|t| t.child.try_exit()).and_then(Exit::exitcode)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> Result<(), Error> {
        self.send_signal(15)
    }

    /// Sends SIGKILL.
    pub fn kill(&self) -> Result<(), Error> {
        self.send_signal(9)
    }

    fn send_signal(&self, sig: i32) -> Result<(), Error> {
        match self.tracked() {
            Some(t) => t.child.signal(sig),
            None => Err(Error::invalid(format!("process `{}` was not started", self.name))),
        }
    }
}

impl<W: Worker> Drop for Process<W> {
    fn drop(&mut self) {
        let t = match &self.state {
            State::Created => return,
            State::Running(r) => &r.tracked,
            State::Joined(t) => t,
        };
        if t.child.try_exit().is_some() {
            forget(t);
        } else if self.daemon {
            t.child.kill_and_reap();
            forget(t);
        }
        // A running non-daemon child stays tracked: it is joined when the program finishes.
    }
}

//! The child's side: `mp::init()`, and the loop a child runs instead of the user's `main`.
//!
//! Protocol (see `wire/README.md`): the parent sends one `Setup` frame, then `Task` frames;
//! the child answers each with one `Reply` frame, and exits after the first task when
//! `Setup::one_shot` is set, on `Shutdown`, or when the parent's end closes.

use std::borrow::Cow;
use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{CodecDirection, Error};
use crate::registry;
use crate::spawn::{self, CHILD_FD, ENV_FD, ENV_PARENT, ENV_STDOUT, STDOUT_FD};
use crate::sys;
use crate::wire::{self, FrameReader, Kind, OutFrame, codec};

/// First frame to a child.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Setup {
    /// The child's `current_process().name`.
    pub name: String,
    /// The parent's name, for `parent_process()`.
    pub parent_name: String,
    pub daemon: bool,
    /// Exit after answering one task (a `Process`), instead of serving until shut down.
    pub one_shot: bool,
    /// A worker (name, encoded arguments) run once before the first task (a pool's
    /// `initializer`).
    pub initializer: Option<(String, Vec<u8>)>,
    /// Address-space limit in bytes (RLIMIT_AS), set before any task runs.
    pub max_memory: Option<u64>,
    /// The program's authkey (`current_process().authkey()`), inherited by every child.
    pub authkey: Vec<u8>,
}

/// A `Progress` frame: item `item` of chunk task `id` has been running for a while.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Running {
    pub id: u64,
    pub item: u32,
}

/// Task id of the reply a pool worker sends when its initializer failed.
pub(crate) const INIT_FAILED: u64 = u64::MAX;

/// How often a worker running a chunk reports the items it finished, so a crash or timeout
/// loses at most this much work and the parent knows which item is running.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Header of a `Task` frame; the encoded arguments follow.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct TaskHead<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub worker: Cow<'a, str>,
    /// 0: one call, answered with one output. n > 0: a chunk of n argument sets, answered by
    /// `Reply` frames with `part` set, each holding the next items' outcomes.
    pub items: u32,
}

/// Header of a `Reply` frame; on success the encoded output follows.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ReplyHead {
    pub id: u64,
    pub failure: Option<Failure>,
    /// For chunks: which items this frame answers.
    pub part: Option<Part>,
}

/// The items of a chunk a `Reply` answers. After the header come the encoded outputs of the
/// items that succeeded, back to back; the others are listed in `failures`.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Part {
    /// Index within the chunk of the first item answered.
    pub start: u32,
    pub count: u32,
    /// Whether this is the chunk's last reply.
    pub last: bool,
    /// `(index within this part, why)` for the items without an output, in order.
    pub failures: Vec<(u32, Failure)>,
}

/// Why a task produced no value.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum Failure {
    Panic { message: String, location: Option<String>, backtrace: Option<String> },
    UnknownWorker { name: String },
    Codec { type_name: String, encode: bool, message: String },
    Other { message: String },
}

impl Failure {
    pub fn into_error(self, worker: &str) -> Error {
        match self {
            Failure::Panic { message, location, backtrace } => {
                Error::Panic { worker: worker.to_string(), message, location, backtrace, index: None }
            }
            Failure::UnknownWorker { name } => Error::UnknownWorker { name },
            Failure::Codec { type_name, encode, message } => Error::Codec {
                type_name,
                direction: if encode { CodecDirection::Encode } else { CodecDirection::Decode },
                message: format!("in the worker process: {message}"),
            },
            Failure::Other { message } => Error::invalid(message),
        }
    }

    fn from_error(e: Error) -> Failure {
        match e {
            Error::UnknownWorker { name } => Failure::UnknownWorker { name },
            Error::Codec { type_name, direction, message } => {
                Failure::Codec { type_name, encode: direction == CodecDirection::Encode, message }
            }
            other => Failure::Other { message: other.to_string() },
        }
    }
}

/// Who this process is, as `current_process()` reports it.
pub(crate) struct Identity {
    pub name: String,
    pub parent: Option<(String, u32)>,
    pub daemon: bool,
}

static IDENTITY: OnceLock<Identity> = OnceLock::new();

pub(crate) fn identity() -> &'static Identity {
    IDENTITY.get_or_init(|| Identity { name: "MainProcess".into(), parent: None, daemon: false })
}

/// Prepares this process for mp. Call it first in `main`; `#[mp::main]` and `#[mp::test]` do.
///
/// In the parent it returns at once. In a child started by mp it never returns: it runs the
/// worker it is sent and exits. Under `mpirun`/`srun` with the `mpi` feature it starts MPI;
/// rank 0 returns, and the other ranks never do: they serve rank 0's pools, then exit 0
/// when rank 0 exits. If two workers are registered under the same name, it prints
/// both locations and exits with code 2; use [`try_init`] to handle that yourself.
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn square(x: i32) -> i32 { x * x }
///
/// fn main() {
///     mp::init();
///     let mut p = mp::Process::new(square, 7);
///     p.start().unwrap();
///     assert_eq!(p.join().unwrap(), 49);
/// }
/// ```
pub fn init() {
    if let Err(e) = try_init() {
        eprintln!("mp: {e}");
        std::process::exit(2);
    }
}

/// [`init`] that reports a broken registry as an `Err` instead of exiting.
///
/// # Examples
///
/// ```
/// fn main() -> Result<(), mp::Error> {
///     mp::try_init()?;
///     Ok(())
/// }
/// ```
pub fn try_init() -> Result<(), Error> {
    registry::check()?;
    crate::managers::managed::check()?;
    wire::load_max_frame_from_env();
    if std::env::var_os(ENV_FD).is_some() {
        child_main();
    }
    // Under mpirun: ranks other than 0 serve tasks here and never return.
    crate::mpi::init_from_env()?;
    spawn::mark_initialized();
    // A worker host (MP_CONNECT): serves a remote pool and exits, never running `main`.
    crate::remote::serve_from_env();
    // As Python does at exit, even without #[mp::main]: terminate daemonic children and join
    // the others when `main` returns.
    sys::at_exit(exit_hook);
    Ok(())
}

extern "C" fn exit_hook() {
    // Never unwind into C.
    let _ = std::panic::catch_unwind(crate::process::cleanup_children);
    // Then release the MPI ranks (they finalize and exit 0) and finalize here.
    let _ = std::panic::catch_unwind(crate::mpi::finish);
}

#[doc(hidden)]
/// `#[mp::test]`: remembers which test to re-run in children, then `init()`.
pub fn test_init(full_path: &str) {
    // module_path!() starts with the crate name, which libtest's test names leave out.
    let name = full_path.split_once("::").map_or(full_path, |(_, rest)| rest);
    spawn::set_test_name(name.to_string());
    init();
}

fn child_main() -> ! {
    let parent: u32 = std::env::var(ENV_PARENT).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    // Arm the parent-death signal first, then check the parent is still the one that started
    // us: if it died in between, the signal will never come.
    let _ = sys::set_parent_death_kill();
    if sys::parent_pid() != parent {
        sys::exit(0);
    }
    if std::env::var_os(ENV_STDOUT).is_some() {
        if let Some(out) = sys::adopt_inherited(STDOUT_FD) {
            let _ = sys::redirect_stdout(out.as_fd());
        }
    }
    sys::remove_env(&[ENV_FD, ENV_PARENT, ENV_STDOUT]);
    let Some(sock) = sys::adopt_inherited_socket(CHILD_FD) else {
        eprintln!("mp: {ENV_FD} is set but descriptor {CHILD_FD} is not mp's socket; exiting");
        sys::exit(2);
    };
    let _ = sys::set_cloexec(sock.as_fd());
    install_panic_hook();
    spawn::mark_initialized();
    let code = serve(sock);
    crate::process::cleanup_children();
    sys::exit(code)
}

/// Answers tasks until told to stop; returns the exit code. Runs once in a child; an MPI
/// rank runs it once per pool it serves, each time on a fresh socket.
pub(crate) fn serve(sock: OwnedFd) -> i32 {
    // A previous session on this process may have ended inside a chunk.
    CUR_ID.store(0, Ordering::Relaxed);
    *HEARTBEAT_SOCK.lock().unwrap_or_else(|p| p.into_inner()) = sock.try_clone().ok();
    let code = serve_session(sock);
    // Let the socket close for real: the other end learns this session is over.
    *HEARTBEAT_SOCK.lock().unwrap_or_else(|p| p.into_inner()) = None;
    code
}

fn serve_session(sock: OwnedFd) -> i32 {
    let mut reader = FrameReader::new();
    let what = "the parent's channel";
    let setup: Setup = match reader.read(sock.as_fd(), None, what) {
        Ok(f) if f.kind == Kind::Setup => match codec::decode(&f.payload) {
            Ok(s) => s,
            Err(e) => return fatal(&e),
        },
        Ok(f) => {
            return fatal(&Error::Protocol(format!("expected Setup, got {:?}", f.kind)));
        }
        Err(Error::Disconnected { .. }) => return 0,
        Err(e) => return fatal(&e),
    };
    let one_shot = setup.one_shot;
    let parent_name = setup.parent_name;
    crate::process::inherit_authkey(setup.authkey);
    if let Some(bytes) = setup.max_memory {
        let lim = rustix::process::Rlimit { current: Some(bytes), maximum: Some(bytes) };
        if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::As, lim) {
            eprintln!("mp child {}: cannot set the memory limit: {e}", std::process::id());
        }
    }
    if let Some((name, args)) = &setup.initializer {
        let mut args = args.as_slice();
        if let Err(failure) = call(INIT_FAILED, name, &mut args, Vec::new()) {
            // Tell the pool why this worker cannot serve, then leave.
            let _ = failure_reply(INIT_FAILED, failure).send(sock.as_fd(), what);
            return 3;
        }
    }
    let _ = IDENTITY.set(Identity {
        name: setup.name,
        parent: Some((parent_name, sys::parent_pid())),
        daemon: setup.daemon,
    });
    loop {
        let frame = match reader.read(sock.as_fd(), None, what) {
            Ok(f) => f,
            Err(Error::Disconnected { .. }) => return 0,
            Err(e) => return fatal(&e),
        };
        match frame.kind {
            Kind::Task => {
                // The header is decoded once, here: it says whether this is a chunk.
                let (id, reply, panicked) = match codec::decode_prefix::<TaskHead<'_>>(&frame.payload) {
                    Ok((head, args)) if head.items > 0 => {
                        if let Err(e) = run_chunk(sock.as_fd(), &head, args) {
                            return fatal(&e);
                        }
                        continue;
                    }
                    Ok((head, mut args)) => match call(head.id, &head.worker, &mut args, frame.fds) {
                        Ok(reply) => (head.id, reply, false),
                        Err(failure) => {
                            let panicked = matches!(failure, Failure::Panic { .. });
                            (head.id, failure_reply(head.id, failure), panicked)
                        }
                    },
                    Err(e) => (0, failure_reply(0, Failure::from_error(e)), false),
                };
                match reply.send(sock.as_fd(), what) {
                    Ok(()) => {}
                    // A result over the frame limit: tell the parent instead of vanishing.
                    Err(Error::Protocol(message)) => {
                        if let Err(e) = failure_reply(id, Failure::Other { message }).send(sock.as_fd(), what)
                        {
                            return fatal(&e);
                        }
                    }
                    Err(e) => return fatal(&e),
                }
                if one_shot {
                    return i32::from(panicked);
                }
            }
            Kind::Shutdown => return 0,
            other => {
                return fatal(&Error::Protocol(format!("unexpected {other:?} frame in a child")));
            }
        }
    }
}

fn fatal(e: &Error) -> i32 {
    // The parent (or the pool an MPI rank served) is gone: nobody to tell.
    if matches!(e, Error::Disconnected { .. }) {
        return 0;
    }
    eprintln!("mp child {}: {e}", std::process::id());
    70
}

/// A `Reply` frame answering task `id` with `failure`.
pub(crate) fn failure_reply(id: u64, failure: Failure) -> OutFrame {
    let mut out = OutFrame::new(Kind::Reply);
    let head = ReplyHead { id, failure: Some(failure), part: None };
    codec::encode_into(&head, &mut out.buf).expect("a failure always encodes");
    out
}

/// Calls worker `name` on encoded `args`; the reply frame holds the encoded output.
fn call(id: u64, name: &str, args: &mut &[u8], fds: Vec<OwnedFd>) -> Result<OutFrame, Failure> {
    let entry = registry::lookup(name).map_err(Failure::from_error)?;
    let mut out = OutFrame::new(Kind::Reply);
    codec::encode_into(&ReplyHead { id, failure: None, part: None }, &mut out.buf)
        .map_err(Failure::from_error)?;
    let (result, out_fds) = codec::collecting_fds(|| {
        codec::with_fds(fds, || {
            IN_TASK.with(|t| t.set(true));
            let r = catch(|| (entry.dispatch)(args, &mut out.buf));
            IN_TASK.with(|t| t.set(false));
            r
        })
    });
    result.map(|()| {
        out.fds = out_fds;
        out
    })
}

/// Runs `f` catching a panic; the failure carries what the panic hook saw.
fn catch(f: impl FnOnce() -> Result<(), Error>) -> Result<(), Failure> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::from_error(e)),
        Err(payload) => Err(PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| Failure::Panic {
            message: panic_message(payload.as_ref()),
            location: None,
            backtrace: None,
        })),
    }
}

/// Runs `f` as a task on this thread (a manager's method call): a panic is caught and
/// reported as `Error::Panic` naming `what`, with what the panic hook saw.
pub(crate) fn run_task(what: &str, f: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
    IN_TASK.with(|t| t.set(true));
    let r = catch(f);
    IN_TASK.with(|t| t.set(false));
    r.map_err(|failure| failure.into_error(what))
}

/// Where a chunk's item loop stands; kept outside the loop so a panic can resume after it.
struct ChunkRun<'a> {
    id: u64,
    args: &'a [u8],
    body: Vec<u8>,
    failures: Vec<(u32, Failure)>,
    /// Next item to run, first item of the unreported part, items in that part.
    next: u32,
    start: u32,
    count: u32,
    /// Where the running item's output begins in `body`.
    at: usize,
    broken: Option<Failure>,
}

impl ChunkRun<'_> {
    /// Runs items until the end of the chunk; returns early only when a report cannot be
    /// sent. A panic unwinds out of here, leaving `next` on the item that panicked.
    fn run(
        &mut self,
        items: u32,
        entry: &Result<&'static registry::WorkerEntry, Failure>,
        sock: BorrowedFd<'_>,
    ) -> Result<(), Error> {
        while self.next < items {
            CUR_ITEM.store(self.next, Ordering::Relaxed);
            // One relaxed load per item: reading the clock here would cost more than tiny tasks.
            if self.count > 0 && FLUSH_DUE.load(Ordering::Relaxed) {
                FLUSH_DUE.store(false, Ordering::Relaxed);
                self.report(false, sock)?;
            }
            self.at = self.body.len();
            let outcome = match (entry, &self.broken) {
                (Err(f), _) | (_, Some(f)) => Err(f.clone()),
                (Ok(entry), None) => {
                    (entry.dispatch)(&mut self.args, &mut self.body).map_err(Failure::from_error)
                }
            };
            if let Err(failure) = outcome {
                self.fail_current(failure);
            }
            self.count += 1;
            self.next += 1;
        }
        Ok(())
    }

    fn fail_current(&mut self, failure: Failure) {
        // A decoding failure leaves the rest of the chunk unreadable: fail it all.
        if matches!(failure, Failure::Codec { encode: false, .. }) {
            self.broken = Some(failure.clone());
        }
        self.body.truncate(self.at);
        self.failures.push((self.count, failure));
    }

    fn report(&mut self, last: bool, sock: BorrowedFd<'_>) -> Result<(), Error> {
        let failures = std::mem::take(&mut self.failures);
        let part = Part { start: self.start, count: self.count, last, failures };
        flush(sock, self.id, part, &mut self.body, "the parent's channel")?;
        (self.start, self.count) = (self.next, 0);
        Ok(())
    }
}

/// Runs a chunk, reporting finished items every `FLUSH_EVERY` and at the end.
fn run_chunk(sock: BorrowedFd<'_>, head: &TaskHead<'_>, args: &[u8]) -> Result<(), Error> {
    let entry = registry::lookup(&head.worker).map_err(Failure::from_error);
    let mut run = ChunkRun {
        id: head.id,
        args,
        body: Vec::with_capacity(args.len() + 64),
        failures: Vec::new(),
        next: 0,
        start: 0,
        count: 0,
        at: 0,
        broken: None,
    };
    start_flush_ticker();
    CUR_ITEM.store(0, Ordering::Relaxed);
    CUR_ID.store(head.id, Ordering::Relaxed);
    // One catch_unwind around the loop, not one per item: after a panic, record it against
    // the item that panicked and resume with the next one.
    IN_TASK.with(|t| t.set(true));
    let result = loop {
        match std::panic::catch_unwind(AssertUnwindSafe(|| run.run(head.items, &entry, sock))) {
            Ok(r) => break r,
            Err(payload) => {
                let failure = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| Failure::Panic {
                    message: panic_message(payload.as_ref()),
                    location: None,
                    backtrace: None,
                });
                // `dispatch` consumed the item's arguments before calling the worker, so the
                // loop resumes at the next item's.
                run.fail_current(failure);
                run.count += 1;
                run.next += 1;
            }
        }
    };
    IN_TASK.with(|t| t.set(false));
    result?;
    run.report(true, sock)
}

static FLUSH_DUE: AtomicBool = AtomicBool::new(false);
/// The chunk task running now (0: none) and the index of its item running now.
static CUR_ID: AtomicU64 = AtomicU64::new(0);
static CUR_ITEM: AtomicU32 = AtomicU32::new(0);
/// Serializes writes to the parent between the worker and the ticker's heartbeats.
static SEND: Mutex<()> = Mutex::new(());
/// The ticker's own handle on the parent's socket (replaced when an MPI rank starts serving
/// another pool).
static HEARTBEAT_SOCK: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Every `FLUSH_EVERY`, for the whole life of a pool worker: raises `FLUSH_DUE`, and if one
/// item of a chunk has been running for a whole period, tells the parent which one (a
/// `Progress` frame), so a crash or timeout in it is pinned on that item alone.
fn start_flush_ticker() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new().name("mp-flush-ticker".into()).spawn(|| {
            let (mut seen, mut told) = ((0, 0), (0, u32::MAX));
            loop {
                std::thread::sleep(FLUSH_EVERY);
                FLUSH_DUE.store(true, Ordering::Relaxed);
                let _guard = SEND.lock().unwrap_or_else(|p| p.into_inner());
                let now = (CUR_ID.load(Ordering::Relaxed), CUR_ITEM.load(Ordering::Relaxed));
                if now.0 != 0 && now == seen && now != told {
                    if let Some(fd) = HEARTBEAT_SOCK.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                        let mut out = OutFrame::new(Kind::Progress);
                        let running = Running { id: now.0, item: now.1 };
                        if codec::encode_into(&running, &mut out.buf).is_ok() {
                            let _ = out.send(fd.as_fd(), "the parent's channel");
                        }
                    }
                    told = now;
                }
                seen = now;
            }
        });
    });
}

fn flush(sock: BorrowedFd<'_>, id: u64, part: Part, body: &mut Vec<u8>, what: &str) -> Result<(), Error> {
    let mut head = Vec::with_capacity(32);
    let last = part.last;
    codec::encode_into(&ReplyHead { id, failure: None, part: Some(part) }, &mut head)?;
    let _guard = SEND.lock().unwrap_or_else(|p| p.into_inner());
    if last {
        CUR_ID.store(0, Ordering::Relaxed); // under the lock: no heartbeat after this reply
    }
    // Header and outputs go out in one vectored write: the outputs are not copied.
    let r = wire::send_parts(sock, Kind::Reply, &[&head, body], what);
    body.clear();
    r
}

thread_local! {
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    // What the panic hook saw (message, location, backtrace) for the task on this thread.
    static PANIC: RefCell<Option<Failure>> = const { RefCell::new(None) };
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any> (a non-string panic payload)".to_string()
    }
}

/// The worker's own frames: those between the panic machinery and mp's dispatch, as Rust's
/// short backtraces do. `RUST_BACKTRACE=full` keeps every frame.
fn short_backtrace(full: &str) -> String {
    if std::env::var("RUST_BACKTRACE").is_ok_and(|v| v == "full") {
        return full.to_string();
    }
    // Split into frames: a frame starts at a line like "  12: symbol".
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in full.lines() {
        let t = line.trim_start();
        let is_head =
            t.split_once(':').is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match frames.last_mut() {
            Some(f) if !is_head => f.push(line),
            _ => frames.push(vec![line]),
        }
    }
    let symbol = |f: &Vec<&str>| f[0].split_once(':').map_or("", |(_, s)| s.trim()).to_string();
    let start =
        frames.iter().position(|f| symbol(f).contains("__rust_end_short_backtrace")).map_or(0, |i| i + 1);
    // Skip the panic machinery that follows the marker, up to the first frame outside std/core.
    let user_start = (start..frames.len())
        .find(|&i| {
            let s = symbol(&frames[i]);
            !(s.starts_with("std::")
                || s.starts_with("core::")
                || s.starts_with("__rustc")
                || s.starts_with("<") && s.contains("core::"))
        })
        .unwrap_or(start);
    let end = (user_start..frames.len())
        .find(|&i| symbol(&frames[i]).starts_with("mp_runtime::"))
        .unwrap_or(frames.len());
    let mut out: Vec<&str> = frames[user_start..end].iter().flatten().copied().collect();
    if out.is_empty() {
        return full.to_string();
    }
    out.push("note: frames of the panic machinery and of mp are hidden; RUST_BACKTRACE=full shows all");
    out.join("\n")
}

/// In a child, a panic inside a task is reported to the parent instead of printed here.
pub(crate) fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_TASK.with(|t| t.get()) {
            let message = panic_message(info.payload());
            let location = info.location().map(|l| l.to_string());
            let bt = std::backtrace::Backtrace::capture();
            let backtrace = (bt.status() == std::backtrace::BacktraceStatus::Captured)
                .then(|| short_backtrace(&bt.to_string()));
            PANIC.with(|p| *p.borrow_mut() = Some(Failure::Panic { message, location, backtrace }));
        } else {
            default(info);
        }
    }));
}

//! `mp::Error`: one enum for everything that can go wrong across a process boundary.

use std::fmt;
use std::io;
use std::time::Duration;

/// How a child process ended without answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit(code)` (or returned from `main`).
    Code(i32),
    /// It was killed by this signal (9 = SIGKILL, 11 = SIGSEGV, 6 = SIGABRT, 15 = SIGTERM).
    Signal(i32),
    /// Its status could not be read (it was reaped elsewhere).
    Unknown,
}

impl Exit {
    /// The exit code as Python reports it: the code, or minus the signal number.
    pub fn exitcode(self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(c),
            Exit::Signal(s) => Some(-s),
            Exit::Unknown => None,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => write!(f, "was killed by signal {s} ({})", signal_name(s)),
            Exit::Unknown => write!(f, "ended (status unavailable)"),
        }
    }
}

pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => "signal",
    }
}

/// Whether a value failed on its way out or on its way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecDirection {
    /// Serializing in the sending process.
    Encode,
    /// Deserializing in the receiving process.
    Decode,
}

/// Everything that can go wrong in mp. Match on the variant; `Display` says what to do next.
///
/// # Examples
///
/// ```
/// let e = mp::Error::Timeout { what: "join".into(), after: std::time::Duration::from_secs(1) };
/// assert!(matches!(e, mp::Error::Timeout { .. }));
/// assert!(e.to_string().contains("join"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The worker panicked. The process that ran it is fine (a pool keeps it). The message
    /// is one line; the child's backtrace (under `RUST_BACKTRACE`) is in `backtrace`, so an
    /// error per item of a map logs as one line each.
    #[error("worker `{worker}` panicked{}{}: {message}",
        index.map(|i| format!(" on input #{i}")).unwrap_or_default(),
        location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Panic {
        /// The worker's registered name.
        worker: String,
        /// The panic payload, when it was a string.
        message: String,
        /// `file:line:column` of the panic.
        location: Option<String>,
        /// The child's backtrace, captured when `RUST_BACKTRACE` is set.
        backtrace: Option<String>,
        /// The input's position, for pool maps.
        index: Option<usize>,
    },

    /// The process ended (exit, signal, crash) before it answered, or, for a worker that is
    /// not our child (an MPI rank), its connection ended (`exit` is then `Exit::Unknown`).
    #[error("worker `{worker}` (pid {pid}{}) {exit} before answering{}; \
             look for a crash (segfault, abort, OOM kill, std::process::exit) in that worker",
        peer.as_ref().map(|p| format!(", {p}")).unwrap_or_default(),
        index.map(|i| format!(" on input #{i}")).unwrap_or_default())]
    WorkerDied {
        /// The worker's registered name.
        worker: String,
        /// The pid of the process that died.
        pid: u32,
        /// How it ended.
        exit: Exit,
        /// The input's position, for pool maps.
        index: Option<usize>,
        /// Where the worker ran when it was not a child of ours ("MPI rank 2 on node7");
        /// `None` for local children.
        peer: Option<String>,
    },

    /// A blocking call did not finish in time. Nothing was lost: try again or give up.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The timeout that passed.
        after: Duration,
    },

    /// A [`Barrier`](crate::Barrier) was broken (Python's `BrokenBarrierError`): it was
    /// aborted, reset while parties waited, a party timed out or died while waiting, or its
    /// action panicked.
    #[error(
        "the barrier is broken (aborted, reset while parties waited, a party timed out or died \
             while waiting, or its action panicked); call reset() before using it again"
    )]
    BrokenBarrier,

    /// A queue stayed full until the timeout (Python's `queue.Full`): nothing was put, and
    /// a sending call hands the value back.
    #[error("the queue is full: wait longer (put, put_timeout), bound it higher, or consume faster")]
    Full,

    /// No message arrived before the timeout (Python's `queue.Empty`).
    #[error("the queue is empty: nothing arrived before the timeout")]
    Empty,

    /// The other end is gone (Python's `EOFError`): every copy of the peer was closed or its
    /// process exited.
    #[error("{what}: the other end is closed (all its handles were dropped or its process exited)")]
    Disconnected {
        /// What was being used.
        what: String,
    },

    /// The handle was closed (or the pool terminated) and cannot be used any more.
    #[error("{what} is closed; create a new one")]
    Closed {
        /// The closed object.
        what: &'static str,
    },

    /// A value could not be encoded or decoded.
    #[error("cannot {} a `{type_name}`: {message}", match direction {
        CodecDirection::Encode => "encode",
        CodecDirection::Decode => "decode",
    })]
    Codec {
        /// `std::any::type_name` of the value.
        type_name: String,
        /// On the way out, or on the way in.
        direction: CodecDirection,
        /// What serde or postcard said, and what to do about it.
        message: String,
    },

    /// An authentication key was rejected (reserved for managers and remote workers, which
    /// authenticate their connections).
    #[error("authentication failed: {0}")]
    Auth(String),

    /// A frame broke the wire protocol (bad magic, truncated, too large, unknown kind).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// No worker of that name is registered in the process that was asked to run it.
    #[error(
        "no worker named `{name}` is registered in this binary; is the crate defining it \
             linked in (add `use that_crate as _;`) and is it marked #[mp::worker]?"
    )]
    UnknownWorker {
        /// The name that was asked for.
        name: String,
    },

    /// A process was about to be started but `mp::init()` never ran.
    #[error(
        "mp::init() was not called: call it first thing in `main` (or use #[mp::main], or \
             #[mp::test] in tests) so child processes can run workers instead of your main"
    )]
    NotInitialized,

    /// An argument or an operation is not valid in the current state.
    #[error("{0}")]
    Invalid(String),

    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What mp was doing.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// Attaches an input index to `Panic` and `WorkerDied` (used by pool maps).
    pub fn with_index(mut self, i: usize) -> Self {
        match &mut self {
            Error::Panic { index, .. } | Error::WorkerDied { index, .. } => *index = Some(i),
            _ => {}
        }
        self
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

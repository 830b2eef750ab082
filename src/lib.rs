//! # mp — Python's `multiprocessing`, done properly in Rust
//!
//! Mark a plain function `#[mp::worker]` and it can run in another process: a fresh copy of
//! your own executable, started on the fast `posix_spawn` path, that finds the function by
//! name. Around that, mp gives you Python's vocabulary — [`Process`], [`Pool`], [`Pipe`] and
//! [`Connection`], queues, shared memory and locks, a [`Manager`], [`Listener`] and
//! [`Client`] — with Rust types and errors you can match on.
//!
//! Processes instead of threads buy you **isolation** (a segfault, abort or leak in a worker,
//! often in C code behind FFI, costs one task, not the program), **hard limits** (a process
//! can be killed on timeout), **non-thread-safe libraries** in parallel, and **scale-out**.
//!
//! ```
//! use mp::prelude::*;
//!
//! #[mp::worker]
//! fn square(x: i32) -> i32 { x * x }
//!
//! #[mp::main]
//! fn main() -> Result<(), mp::Error> {
//!     assert_eq!(square(4), 16);                // still a plain function
//!     let mut p = mp::Process::new(square, 7);  // runs in a child process
//!     p.start()?;
//!     assert_eq!(p.join()?, 49);                // the worker's return value
//!     Ok(())
//! }
//! ```
//!
//! ## Rules of the road
//!
//! * Call [`init()`] first in `main`, or use [`#[mp::main]`](main); in tests use
//!   [`#[mp::test]`](test). A child is your binary started again: `init()` is where it
//!   branches off to run the worker, so code before it runs in every child.
//! * Workers defined in a library crate are linked only if the binary names that crate:
//!   add `use that_crate as _;` if you use nothing else from it.
//! * `#[mp::worker] fn square` defines a unit struct `square` (so it can be passed around as
//!   a value): a local binding named `square` is shadowed by it, and where a plain `fn`
//!   pointer is needed write `*square` (for example `iter.map(*square)`).
//! * Arguments and results are encoded with postcard: types using `#[serde(flatten)]`,
//!   untagged enums or `serde_json::Value` are refused with `Error::Codec`.
//!
//! ## Cargo features
//!
//! * `progress`: progress bars for pool maps (`PoolBuilder::progress`).
//! * `mpi`: under `mpirun`/`srun`, rank 0 runs `main` and the default pool runs on the other
//!   ranks ([`PoolBuilder::mpi`]); needs an MPI library (Open MPI, MPICH) and libclang to
//!   build. Without it nothing of MPI is compiled.

#![deny(unsafe_code)]

pub mod prelude;

pub use mp_macros::{main, managed, test, worker};
pub use mp_runtime::serve_worker;
pub use mp_runtime::{
    Address, Client, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_PENDING_HANDSHAKES, IntoAddress, Listener,
};
pub use mp_runtime::{Array, ArrayGuard, ArrayInit, RawArray, SharedMemory};
pub use mp_runtime::{
    AsyncResult, CodecDirection, Connection, Error, Exit, IMap, MapResult, Pipe, Pool, PoolBuilder,
    PoolStats, Process, ProcessInfo, Result, SendError, Transferable, Worker, WorkerStats, active_children,
    cpu_count, current_process, init, max_frame_size, parent_process, registered_workers, set_max_frame_size,
    try_init,
};
pub use mp_runtime::{
    Barrier, BoundedSemaphore, Condition, ConditionGuard, Event, RLock, RLockGuard, Semaphore, SemaphoreGuard,
};
pub use mp_runtime::{
    DictProxy, EventProxy, ListProxy, LockProxy, LockProxyGuard, Managed, Manager, ManagerBuilder,
    ManagerServer, NamespaceProxy, QueueProxy, ValueProxy,
};
pub use mp_runtime::{JoinableQueue, Queue, QueueBuilder, SimpleQueue};
pub use mp_runtime::{Lock, LockGuard, Pod, RawValue, Value, ValueGuard};
#[cfg(feature = "tls")]
pub use mp_runtime::{TlsClientConfig, TlsServerConfig, serve_worker_tls};

#[doc(hidden)]
pub use mp_runtime::__private;

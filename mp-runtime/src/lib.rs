//! Runtime of [mp](https://docs.rs/mp): the worker registry, the child bootstrap, the wire
//! format, `Process` and `Pipe`. Use it through the `mp` crate.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod bootstrap;
mod connection;
mod error;
mod listener;
mod managers;
mod mpi;
mod pool;
mod process;
mod queues;
mod registry;
mod remote;
mod shared_memory;
mod spawn;
mod synchronize;
mod sys;
mod wire;

pub use bootstrap::{init, try_init};
pub use connection::{Connection, Pipe, SendError};
pub use error::{CodecDirection, Error, Exit, Result};
pub use listener::{
    Address, Client, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_PENDING_HANDSHAKES, IntoAddress, Listener,
};
#[cfg(feature = "tls")]
pub use listener::{TlsClientConfig, TlsServerConfig};
pub use managers::{
    DictProxy, EventProxy, ListProxy, LockProxy, LockProxyGuard, Managed, Manager, ManagerBuilder,
    ManagerServer, NamespaceProxy, QueueProxy, ValueProxy,
};
pub use pool::{AsyncResult, IMap, MapResult, ParMap, Pool, PoolBuilder, PoolStats, WorkerStats};
pub use process::{Process, ProcessInfo, active_children, cpu_count, current_process, parent_process};
pub use queues::{JoinableQueue, Queue, QueueBuilder, SimpleQueue};
pub use registry::{Transferable, Worker, registered_workers};
pub use remote::serve_worker;
#[cfg(feature = "tls")]
pub use remote::serve_worker_tls;
pub use shared_memory::{Array, ArrayGuard, ArrayInit, RawArray, SharedMemory};
pub use shared_memory::{Pod, RawValue, Value, ValueGuard};
pub use synchronize::{
    Barrier, BoundedSemaphore, Condition, ConditionGuard, Event, RLock, RLockGuard, Semaphore, SemaphoreGuard,
};
pub use synchronize::{Lock, LockGuard};
pub use wire::{max_frame_size, set_max_frame_size};

/// Items the macros' generated code names. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bootstrap::test_init;
    pub use crate::managers::managed::{ManagedEntry, MethodFn, call_method, create_value};
    pub use crate::managers::proxy::RawProxy;
    pub use crate::process::cleanup_children;
    pub use crate::registry::{DispatchFn, WorkerEntry, dispatch};
    pub use inventory;
    pub use serde;

    /// Dropped when `#[mp::main]`'s body returns (or unwinds): terminates daemonic children
    /// and joins the others, as Python does at exit.
    pub struct MainGuard(());

    impl MainGuard {
        /// Runs `mp::init()` and returns the guard.
        pub fn new() -> Self {
            crate::init();
            MainGuard(())
        }
    }

    impl Default for MainGuard {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Drop for MainGuard {
        fn drop(&mut self) {
            cleanup_children();
        }
    }

    /// Compile-time check that a worker's argument or result can cross processes.
    pub const fn assert_transferable<T: crate::Transferable>() {}
}

/// Internal hooks for the wire-format tests.
#[doc(hidden)]
pub mod __test_support {
    pub use crate::wire::set_max_frame_size;
}

/// Entry points for the fuzz targets (`fuzz/`) and the randomized robustness tests: each
/// feeds arbitrary bytes to a frame reader or a handshake and must end in an error, never a
/// panic or a hang. Not a public API.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::listener::fuzz::{client_stream, frames, messages, server_stream};
}

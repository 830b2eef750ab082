//! Synchronisation between processes: primitives in shared memory with futex waits, safe
//! against a holder that dies. The protocol is in README.md.

mod lock;
mod owner;

pub use lock::{Lock, LockGuard};

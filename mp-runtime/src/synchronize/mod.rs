//! Synchronisation between processes: primitives in shared memory with futex waits, safe
//! against a holder that dies. The protocol is in README.md.

mod barrier;
mod condition;
mod event;
mod lock;
mod owner;
mod rlock;
mod semaphore;
mod words;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
pub(crate) use words::{Words, sleep_on, wake_all};

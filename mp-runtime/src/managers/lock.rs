//! `LockProxy`: a lock held by a manager.

use std::marker::PhantomData;
use std::time::Duration;

use super::protocol::Op;
use super::proxy::{RawProxy, typed_proxy};
use crate::error::Error;

/// A proxy to a lock in a [`Manager`](crate::Manager) (Python's `manager.Lock()`). A
/// process that dies holding it releases it (its connections close). The shared-memory
/// [`Lock`](crate::Lock) is much faster on one machine.
///
/// # Examples
///
/// ```
/// mp::init();
/// let manager = mp::Manager::new().unwrap();
/// let lock = manager.lock().unwrap();
/// let guard = lock.lock().unwrap();
/// assert!(lock.is_locked().unwrap());
/// assert!(lock.try_lock().unwrap().is_none());
/// guard.unlock().unwrap();
/// assert!(!lock.is_locked().unwrap());
/// ```
pub struct LockProxy {
    raw: RawProxy,
    _t: PhantomData<()>,
}

typed_proxy!(LockProxy);

/// Holds a [`LockProxy`]; dropping it releases the lock (use [`unlock`](Self::unlock) to
/// see an error).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// mp::init();
/// let manager = mp::Manager::new().unwrap();
/// let lock = manager.lock().unwrap();
/// {
///     let _guard = lock.lock_timeout(Duration::from_secs(5)).unwrap();
///     assert!(lock.is_locked().unwrap());
/// } // released here
/// assert!(!lock.is_locked().unwrap());
/// ```
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct LockProxyGuard<'a> {
    lock: &'a LockProxy,
    held: bool,
}

impl LockProxyGuard<'_> {
    /// Releases the lock now, reporting a failure (the manager is gone).
    pub fn unlock(mut self) -> Result<(), Error> {
        self.held = false;
        self.lock.raw.call(Op::LockRelease, None)
    }
}

impl Drop for LockProxyGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            let _: Result<(), Error> = self.lock.raw.call(Op::LockRelease, None);
        }
    }
}

impl LockProxy {
    fn acquire(&self, timeout: Option<Duration>) -> Result<Option<LockProxyGuard<'_>>, Error> {
        let got: Option<()> =
            self.raw.call_blocking(timeout, |wait_ms| Op::LockAcquire { wait_ms }, || Ok(None))?;
        Ok(got.map(|()| LockProxyGuard { lock: self, held: true }))
    }

    /// Takes the lock, waiting as long as it takes.
    pub fn lock(&self) -> Result<LockProxyGuard<'_>, Error> {
        Ok(self.acquire(None)?.expect("an unbounded wait returns the lock"))
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> Result<Option<LockProxyGuard<'_>>, Error> {
        self.acquire(Some(Duration::ZERO))
    }

    /// [`lock`](Self::lock), giving up after `timeout` with `Error::Timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockProxyGuard<'_>, Error> {
        self.acquire(Some(timeout))?
            .ok_or_else(|| Error::Timeout { what: "locking a manager lock".into(), after: timeout })
    }

    /// Whether some process holds the lock now.
    pub fn is_locked(&self) -> Result<bool, Error> {
        self.raw.call(Op::LockLocked, None)
    }
}

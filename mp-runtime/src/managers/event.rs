//! `EventProxy`: an event flag held by a manager.

use std::marker::PhantomData;
use std::time::Duration;

use super::protocol::Op;
use super::proxy::{RawProxy, typed_proxy};
use crate::error::Error;

/// A proxy to an event in a [`Manager`](crate::Manager) (Python's `manager.Event()`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// mp::init();
/// let manager = mp::Manager::new().unwrap();
/// let ev = manager.event().unwrap();
/// assert!(matches!(ev.wait_timeout(Duration::from_millis(10)), Err(mp::Error::Timeout { .. })));
/// ev.set().unwrap();
/// ev.wait().unwrap();
/// assert!(ev.is_set().unwrap());
/// ```
pub struct EventProxy {
    raw: RawProxy,
    _t: PhantomData<()>,
}

typed_proxy!(EventProxy);

impl EventProxy {
    /// Sets the flag, waking every waiter.
    pub fn set(&self) -> Result<(), Error> {
        self.raw.call(Op::EventSet, None)
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<(), Error> {
        self.raw.call(Op::EventClear, None)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool, Error> {
        self.raw.call(Op::EventIsSet, None)
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<(), Error> {
        let set: Option<()> =
            self.raw.call_blocking(None, |wait_ms| Op::EventWait { wait_ms }, || Ok(None))?;
        set.ok_or_else(|| Error::invalid("an unbounded wait ended without the event"))
    }

    /// [`wait`](Self::wait), giving up after `timeout` with `Error::Timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), Error> {
        let set: Option<()> =
            self.raw.call_blocking(Some(timeout), |wait_ms| Op::EventWait { wait_ms }, || Ok(None))?;
        set.ok_or_else(|| Error::Timeout { what: "waiting for a manager event".into(), after: timeout })
    }
}

//! `QueueProxy`: a FIFO held by a manager.

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::Op;
use super::proxy::{Args, RawProxy, typed_proxy};
use crate::error::Error;

/// A proxy to an unbounded FIFO queue in a [`Manager`](crate::Manager) (Python's
/// `manager.Queue()`). A blocking `get` waits in the server without holding up other
/// clients; the shared-memory `mp::Queue` is faster on one machine, this one also
/// works where only the manager's socket is reachable.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// mp::init();
/// let manager = mp::Manager::new().unwrap();
/// let q = manager.queue::<u32>().unwrap();
/// q.put(1).unwrap();
/// q.put(2).unwrap();
/// assert_eq!(q.qsize().unwrap(), 2);
/// assert_eq!(q.get().unwrap(), 1);
/// assert_eq!(q.try_get().unwrap(), Some(2));
/// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(mp::Error::Timeout { .. })));
/// ```
pub struct QueueProxy<T> {
    raw: RawProxy,
    _t: PhantomData<fn() -> T>,
}

typed_proxy!(QueueProxy<T>);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    /// Appends `value`.
    pub fn put(&self, value: T) -> Result<(), Error> {
        let mut a = Args::new();
        a.push(self.raw.target(), &value)?;
        self.raw.call(Op::QueuePut, Some(a))
    }

    fn get_within(&self, timeout: Option<Duration>) -> Result<Option<T>, Error> {
        self.raw.call_blocking(timeout, |wait_ms| Op::QueueGet { wait_ms }, || Ok(None))
    }

    /// Removes and returns the oldest item, waiting for one.
    pub fn get(&self) -> Result<T, Error> {
        Ok(self.get_within(None)?.expect("an unbounded wait returns an item"))
    }

    /// [`get`](Self::get), giving up after `timeout` with `Error::Timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.get_within(Some(timeout))?
            .ok_or_else(|| Error::Timeout { what: "get from a manager queue".into(), after: timeout })
    }

    /// The oldest item if there is one, without waiting.
    pub fn try_get(&self) -> Result<Option<T>, Error> {
        self.get_within(Some(Duration::ZERO))
    }

    /// The number of items queued now.
    pub fn qsize(&self) -> Result<usize, Error> {
        self.raw.call(Op::QueueLen, None)
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.qsize()? == 0)
    }
}

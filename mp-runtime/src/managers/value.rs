//! `ValueProxy`: one value held by a manager.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::Op;
use super::proxy::{Args, RawProxy, typed_proxy};
use crate::error::Error;

/// A proxy to one value in a [`Manager`](crate::Manager) (Python's `manager.Value()`). Any
/// serde type works, unlike the shared-memory [`Value`](crate::Value); a read-modify-write
/// needs a [`LockProxy`](crate::LockProxy) or a `#[mp::managed]` type.
///
/// # Examples
///
/// ```
/// mp::init();
/// let manager = mp::Manager::new().unwrap();
/// let v = manager.value(String::from("start")).unwrap();
/// v.set("done".into()).unwrap();
/// assert_eq!(v.get().unwrap(), "done");
/// ```
pub struct ValueProxy<T> {
    raw: RawProxy,
    _t: PhantomData<fn() -> T>,
}

typed_proxy!(ValueProxy<T>);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The current value.
    pub fn get(&self) -> Result<T, Error> {
        self.raw.call(Op::ValueGet, None)
    }

    /// Replaces the value.
    pub fn set(&self, value: T) -> Result<(), Error> {
        let mut a = Args::new();
        a.push(self.raw.target(), &value)?;
        self.raw.call(Op::ValueSet, Some(a))
    }
}

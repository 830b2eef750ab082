//! `NamespaceProxy`: named values of any types held by a manager.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::Op;
use super::proxy::{Args, RawProxy, typed_proxy};
use crate::error::Error;

/// A proxy to a namespace in a [`Manager`](crate::Manager) (Python's `manager.Namespace()`):
/// values of any serde types under string names. Each read names the type it expects; for a
/// fixed set of typed fields with methods, use a `#[mp::managed]` struct instead.
///
/// # Examples
///
/// ```
/// mp::init();
/// let manager = mp::Manager::new().unwrap();
/// let ns = manager.namespace().unwrap();
/// ns.set("x", 10i64).unwrap();
/// ns.set("name", "run-1").unwrap();
/// assert_eq!(ns.get::<i64>("x").unwrap(), Some(10));
/// assert_eq!(ns.get::<String>("name").unwrap().as_deref(), Some("run-1"));
/// assert_eq!(ns.names().unwrap(), ["name", "x"]);
/// ```
pub struct NamespaceProxy {
    raw: RawProxy,
    _t: PhantomData<()>,
}

typed_proxy!(NamespaceProxy);

impl NamespaceProxy {
    /// The value under `name`, decoded as `T` (which must be the type it was set with).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        self.raw.call(Op::NsGet { name }, None)
    }

    /// Sets `name` to `value`.
    pub fn set<T: Serialize>(&self, name: &str, value: T) -> Result<(), Error> {
        let mut a = Args::new();
        a.push(self.raw.target(), &value)?;
        self.raw.call(Op::NsSet { name }, Some(a))
    }

    /// Removes `name`; whether it was there.
    pub fn remove(&self, name: &str) -> Result<bool, Error> {
        self.raw.call(Op::NsRemove { name }, None)
    }

    /// The names set, sorted.
    pub fn names(&self) -> Result<Vec<String>, Error> {
        self.raw.call(Op::NsNames, None)
    }
}

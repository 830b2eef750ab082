//! `ListProxy`: a `Vec` held by a manager.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::Op;
use super::proxy::{Args, RawProxy, typed_proxy};
use crate::error::Error;

/// A proxy to a list in a [`Manager`](crate::Manager) (Python's `manager.list()`).
///
/// # Examples
///
/// ```
/// mp::init();
/// let manager = mp::Manager::new().unwrap();
/// let l = manager.list::<String>().unwrap();
/// l.push("a".into()).unwrap();
/// l.extend(["b".to_string(), "c".to_string()]).unwrap();
/// l.set(0, "z".into()).unwrap();
/// assert_eq!(l.to_vec().unwrap(), ["z", "b", "c"]);
/// assert_eq!(l.pop().unwrap().as_deref(), Some("c"));
/// ```
pub struct ListProxy<T> {
    raw: RawProxy,
    _t: PhantomData<fn() -> T>,
}

typed_proxy!(ListProxy<T>);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    fn one(&self, value: &T) -> Result<Option<Args>, Error> {
        let mut a = Args::new();
        a.push(self.raw.target(), value)?;
        Ok(Some(a))
    }

    /// Appends `value`.
    pub fn push(&self, value: T) -> Result<(), Error> {
        self.raw.call(Op::ListPush, self.one(&value)?)
    }

    /// The item at `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Result<Option<T>, Error> {
        self.raw.call(Op::ListGet { index: index as u64 }, None)
    }

    /// Replaces the item at `index`; `Error::Invalid` past the end.
    pub fn set(&self, index: usize, value: T) -> Result<(), Error> {
        self.raw.call(Op::ListSet { index: index as u64 }, self.one(&value)?)
    }

    /// The number of items.
    pub fn len(&self) -> Result<usize, Error> {
        self.raw.call(Op::ListLen, None)
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    /// Removes and returns the last item.
    pub fn pop(&self) -> Result<Option<T>, Error> {
        self.raw.call(Op::ListPop, None)
    }

    /// Appends every item, in one round trip.
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<(), Error> {
        let mut a = Args::new();
        for v in items {
            a.push(self.raw.target(), &v)?;
        }
        self.raw.call(Op::ListExtend, Some(a))
    }

    /// A copy of every item (one round trip).
    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        self.raw.call(Op::ListToVec, None)
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<(), Error> {
        self.raw.call(Op::ListClear, None)
    }
}

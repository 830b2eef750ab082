//! `DictProxy`: a `HashMap` held by a manager.

use std::borrow::Borrow;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::Op;
use super::proxy::{Args, RawProxy, typed_proxy};
use crate::error::Error;

/// A proxy to a dictionary in a [`Manager`](crate::Manager) (Python's `manager.dict()`).
///
/// Every call is one round trip to the manager; clones, and copies passed to workers or
/// stored in other managed containers, all name the same dictionary. Keys are compared by
/// their encoding, which is equal for equal keys of ordinary types (integers, strings,
/// tuples and structs of them).
///
/// # Examples
///
/// ```
/// mp::init();
/// let manager = mp::Manager::new().unwrap();
/// let d = manager.dict::<String, i64>().unwrap();
/// assert_eq!(d.insert("a".into(), 1).unwrap(), None);
/// assert_eq!(d.get("a").unwrap(), Some(1));
/// assert_eq!(d.len().unwrap(), 1);
/// ```
pub struct DictProxy<K, V> {
    raw: RawProxy,
    _t: PhantomData<fn() -> (K, V)>,
}

typed_proxy!(DictProxy<K, V>);

fn key_args<Q: Serialize + ?Sized>(raw: &RawProxy, key: &Q) -> Result<Option<Args>, Error> {
    let mut a = Args::new();
    a.push(raw.target(), key)?;
    Ok(Some(a))
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// The value for `key`, if any.
    pub fn get<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>, Error>
    where
        K: Borrow<Q>,
    {
        self.raw.call(Op::DictGet, key_args(&self.raw, key)?)
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, Error> {
        let mut a = Args::new();
        a.push(self.raw.target(), &key)?.push(self.raw.target(), &value)?;
        self.raw.call(Op::DictInsert, Some(a))
    }

    /// Removes `key`; returns its value.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let manager = mp::Manager::new().unwrap();
    /// let d = manager.dict::<u32, String>().unwrap();
    /// d.insert(1, "one".into()).unwrap();
    /// assert_eq!(d.remove(&1).unwrap().as_deref(), Some("one"));
    /// assert!(!d.contains_key(&1).unwrap());
    /// ```
    pub fn remove<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>, Error>
    where
        K: Borrow<Q>,
    {
        self.raw.call(Op::DictRemove, key_args(&self.raw, key)?)
    }

    /// Whether `key` is present.
    pub fn contains_key<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<bool, Error>
    where
        K: Borrow<Q>,
    {
        self.raw.call(Op::DictContains, key_args(&self.raw, key)?)
    }

    /// The number of entries.
    pub fn len(&self) -> Result<usize, Error> {
        self.raw.call(Op::DictLen, None)
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    /// All keys, in no particular order.
    pub fn keys(&self) -> Result<Vec<K>, Error> {
        self.raw.call(Op::DictKeys, None)
    }

    /// All values, in no particular order.
    pub fn values(&self) -> Result<Vec<V>, Error> {
        self.raw.call(Op::DictValues, None)
    }

    /// All entries, in no particular order (one round trip).
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let manager = mp::Manager::new().unwrap();
    /// let d = manager.dict::<u8, u8>().unwrap();
    /// d.update([(1, 10), (2, 20)]).unwrap();
    /// let mut items = d.items().unwrap();
    /// items.sort();
    /// assert_eq!(items, vec![(1, 10), (2, 20)]);
    /// ```
    pub fn items(&self) -> Result<Vec<(K, V)>, Error> {
        self.raw.call(Op::DictItems, None)
    }

    /// Inserts every pair, in one round trip.
    pub fn update(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<(), Error> {
        let mut a = Args::new();
        for (k, v) in items {
            a.push(self.raw.target(), &k)?.push(self.raw.target(), &v)?;
        }
        self.raw.call(Op::DictUpdate, Some(a))
    }

    /// Replaces the value of `key` with `f(current value)` (`None`: absent) atomically, and
    /// returns the new value: a read-modify-write that no other process's update can slip
    /// into. (`get` then `insert` is two calls, and two processes can both read 4 and both
    /// write 5.) `f` runs here; when another process changed the value in between, the
    /// update is not made and `f` runs again on the value found (compare-and-swap), so `f`
    /// may run more than once and should only compute.
    ///
    /// The comparison is of the value's bytes as the manager stores them, never re-encoded,
    /// so any value type works.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[mp::worker]
    /// # fn count_words(counts: mp::DictProxy<String, u64>, text: String) {
    /// #     for w in text.split_whitespace() {
    /// #         counts.update_with(w.to_string(), |n| n.copied().unwrap_or(0) + 1).unwrap();
    /// #     }
    /// # }
    /// mp::init();
    /// let manager = mp::Manager::new().unwrap();
    /// let counts = manager.dict::<String, u64>().unwrap();
    /// // Two processes counting the same words at once: no update is lost.
    /// let mut ps: Vec<_> = (0..2)
    ///     .map(|_| mp::Process::new(count_words, (counts.clone(), "a b a ".repeat(50))))
    ///     .collect();
    /// ps.iter_mut().for_each(|p| p.start().unwrap());
    /// ps.iter_mut().for_each(|p| p.join().unwrap());
    /// assert_eq!(counts.get("a").unwrap(), Some(200));
    /// assert_eq!(counts.update_with("b".into(), |n| n.copied().unwrap_or(0) * 2).unwrap(), 200);
    /// ```
    pub fn update_with(&self, key: K, mut f: impl FnMut(Option<&V>) -> V) -> Result<V, Error> {
        let answer = self.raw.send(Op::DictGet, key_args(&self.raw, &key)?)?;
        // Kept as the server wrote it: the swap compares bytes.
        let mut expected = answer.bytes().to_vec();
        let mut current: Option<V> = answer.decode(self.raw.client())?;
        loop {
            let new = f(current.as_ref());
            let mut a = Args::new();
            a.push(self.raw.target(), &key)?.push_raw(&expected).push(self.raw.target(), &new)?;
            let answer = self.raw.send(Op::DictSwapIf, Some(a))?;
            let found = answer.bytes().get(1..).unwrap_or_default().to_vec();
            let (swapped, now): (bool, Option<V>) = answer.decode(self.raw.client())?;
            if swapped {
                return Ok(new);
            }
            (expected, current) = (found, now);
        }
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), Error> {
        self.raw.call(Op::DictClear, None)
    }
}

//! `mp::Value<T>` (a plain-old-data value in shared memory with a [`Lock`] beside it) and
//! `mp::RawValue<T>` (the same without the lock): Python's `Value` and `RawValue`.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::pod::{POD_ALIGN, Pod};
use super::region::Region;
use crate::error::Error;
use crate::synchronize::{Lock, LockGuard};
use crate::wire::codec;

/// Where a `Value`'s data sits in its region: after the lock word, aligned for any `Pod`.
const VALUE_OFFSET: usize = POD_ALIGN;

/// A value of a plain-old-data type in shared memory, with a [`Lock`] beside it: Python's
/// `multiprocessing.Value`.
///
/// Clones, and copies passed to workers (as arguments or through a
/// [`Connection`](crate::Connection)), are the *same* value: a `set` in one process is seen
/// by `get` in all. `T` is an integer, a float or an array of them ([`Pod`]).
///
/// [`get`](Value::get) and [`set`](Value::set) are single reads and writes: atomic for a
/// primitive of up to 8 bytes, but a read-modify-write such as
/// `counter.set(counter.get() + 1)` loses updates when processes race. Hold the lock for those:
/// [`with_lock`](Value::with_lock), [`lock`](Value::lock) (a guard that derefs to `T`), or
/// [`get_lock`](Value::get_lock) around several calls, as in Python.
///
/// Each `Value` is its own memfd and page: fine for a few counters and flags; many thousands
/// of them would use as many descriptors. Use [`RawValue`] when no lock is needed.
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn add_100(counter: mp::Value<i64>) {
///     for _ in 0..100 {
///         counter.with_lock(|v| *v += 1).unwrap();
///     }
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let counter = mp::Value::new(0i64)?;
/// let mut workers: Vec<_> = (0..4).map(|_| mp::Process::new(add_100, counter.clone())).collect();
/// for p in &mut workers {
///     p.start()?;
/// }
/// for p in &mut workers {
///     p.join()?;
/// }
/// assert_eq!(counter.get(), 400);
/// # Ok(()) }
/// ```
pub struct Value<T: Pod> {
    /// The lock word at offset 0 of the region; owns the region (an `Arc`).
    lock: Lock,
    /// The data, at `VALUE_OFFSET` in the same region.
    ptr: NonNull<T>,
}

// SAFETY: the data is only accessed through `Pod` atomic loads and stores, from any thread of
// any process; the region it lives in is kept alive by the lock's `Arc<Region>`.
unsafe impl<T: Pod> Send for Value<T> {}
// SAFETY: as for `Send`: `&Value` only performs atomic accesses.
unsafe impl<T: Pod> Sync for Value<T> {}

impl<T: Pod> Value<T> {
    /// A new shared value, initially `value`.
    ///
    /// # Examples
    ///
    /// ```
    /// let flags = mp::Value::new([0u8; 4])?;
    /// assert_eq!(flags.get(), [0, 0, 0, 0]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Value<T>, Error> {
        let region = Arc::new(Region::new("mp-value", VALUE_OFFSET + size_of::<T>())?);
        let v = Value::in_region(region)?;
        v.set(value);
        Ok(v)
    }

    fn in_region(region: Arc<Region>) -> Result<Value<T>, Error> {
        let needed = VALUE_OFFSET + size_of::<T>();
        if region.len() < needed {
            return Err(Error::invalid(format!(
                "a shared region of {} bytes cannot hold a {} ({needed} bytes with its lock)",
                region.len(),
                std::any::type_name::<Value<T>>()
            )));
        }
        // SAFETY: `VALUE_OFFSET + size_of::<T>() <= len` (checked above): in bounds.
        let ptr = unsafe { region.as_ptr().add(VALUE_OFFSET) }.cast::<T>();
        let lock = Lock::in_region(region, 0)?;
        Ok(Value { lock, ptr })
    }

    /// Reads the value (without the lock).
    ///
    /// # Examples
    ///
    /// ```
    /// let v = mp::Value::new(2.5f64)?;
    /// assert_eq!(v.get(), 2.5);
    /// # Ok::<(), mp::Error>(())
    /// ```
    #[inline]
    pub fn get(&self) -> T {
        // SAFETY: `ptr` is in bounds and POD_ALIGN-aligned inside the live region, and every
        // access to it is a `Pod` atomic access.
        unsafe { T::load(self.ptr.as_ptr()) }
    }

    /// Writes the value (without the lock).
    ///
    /// # Examples
    ///
    /// ```
    /// let v = mp::Value::new(0u32)?;
    /// v.set(7);
    /// assert_eq!(v.get(), 7);
    /// # Ok::<(), mp::Error>(())
    /// ```
    #[inline]
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`.
        unsafe { T::store(self.ptr.as_ptr(), value) }
    }

    /// The lock that guards this value (shared by every copy of it). Hold it around
    /// `get` and `set` to update the value without losing other processes' updates.
    ///
    /// # Examples
    ///
    /// ```
    /// let counter = mp::Value::new(0i64)?;
    /// {
    ///     let _guard = counter.get_lock().lock()?;
    ///     counter.set(counter.get() + 1);
    /// }
    /// assert_eq!(counter.get(), 1);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the lock and returns a guard that derefs to (a copy of) the value; changes are
    /// written back, and the lock released, when the guard drops — during a panic too.
    ///
    /// # Examples
    ///
    /// ```
    /// let counter = mp::Value::new(10u64)?;
    /// {
    ///     let mut v = counter.lock()?;
    ///     *v += 5;
    ///     assert_eq!(*v, 15);
    /// }
    /// assert_eq!(counter.get(), 15);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, Error> {
        let guard = self.lock.lock()?;
        Ok(ValueGuard { value: self, current: self.get(), guard })
    }

    /// [`lock`](Value::lock), waiting at most `timeout`: `Error::Timeout` if a live process
    /// still holds the lock then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let v = mp::Value::new(1u8)?;
    /// let held = v.lock()?;
    /// assert!(matches!(v.lock_timeout(Duration::from_millis(10)), Err(mp::Error::Timeout { .. })));
    /// drop(held);
    /// assert_eq!(*v.lock_timeout(Duration::from_millis(10))?, 1);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ValueGuard<'_, T>, Error> {
        let guard = self.lock.lock_timeout(timeout)?;
        Ok(ValueGuard { value: self, current: self.get(), guard })
    }

    /// Runs `f` on the value with the lock held, writes the result back, and returns what
    /// `f` returned.
    ///
    /// # Examples
    ///
    /// ```
    /// let counter = mp::Value::new(0i32)?;
    /// let after = counter.with_lock(|v| {
    ///     *v += 1;
    ///     *v
    /// })?;
    /// assert_eq!(after, 1);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn with_lock<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, Error> {
        let mut guard = self.lock()?;
        Ok(f(&mut guard))
    }
}

impl<T: Pod> Clone for Value<T> {
    /// Another handle on the same shared value.
    fn clone(&self) -> Self {
        Value { lock: self.lock.clone(), ptr: self.ptr }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Value").field(&self.get()).finish()
    }
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self.lock.region()).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let region = Region::deserialize(d)?;
        Value::in_region(Arc::new(region))
            .map_err(|e| D::Error::custom(codec::custom_error(format!("received a bad Value: {e}"))))
    }
}

/// The value of a [`Value`] with its lock held: derefs to a copy of it, written back (and the
/// lock released) on drop.
///
/// # Examples
///
/// ```
/// let v = mp::Value::new([1u8, 2])?;
/// let mut g = v.lock()?;
/// g[0] = 9;
/// assert!(!g.previous_owner_died());
/// drop(g);
/// assert_eq!(v.get(), [9, 2]);
/// # Ok::<(), mp::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    value: &'a Value<T>,
    current: T,
    guard: LockGuard<'a>,
}

impl<T: Pod> ValueGuard<'_, T> {
    /// True if the lock was taken over from a process that died holding it: the value may
    /// be what it wrote halfway through an update (see [`LockGuard::previous_owner_died`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let v = mp::Value::new(0u8)?;
    /// assert!(!v.lock()?.previous_owner_died());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn previous_owner_died(&self) -> bool {
        self.guard.previous_owner_died()
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.current
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.current
    }
}

impl<T: Pod> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        // Written back before `guard` (a field) drops and releases the lock.
        self.value.set(self.current);
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueGuard")
            .field("value", &self.current)
            .field("previous_owner_died", &self.previous_owner_died())
            .finish()
    }
}

/// A plain-old-data value in shared memory without a lock: Python's
/// `multiprocessing.RawValue` (or `Value(..., lock=False)`).
///
/// Like [`Value`], clones and copies passed to other processes are the same value, and
/// `get`/`set` are atomic per primitive of up to 8 bytes; with no lock, a read-modify-write
/// needs a [`Lock`] of your own, or must only ever happen in one process (a progress
/// counter that one worker writes and the parent reads, a stop flag).
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn report(progress: mp::RawValue<u32>) {
///     for i in 1..=10 {
///         progress.set(i);
///     }
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let progress = mp::RawValue::new(0u32)?;
/// let mut p = mp::Process::new(report, progress.clone());
/// p.start()?;
/// p.join()?;
/// assert_eq!(progress.get(), 10);
/// # Ok(()) }
/// ```
pub struct RawValue<T: Pod> {
    region: Arc<Region>,
    ptr: NonNull<T>,
}

// SAFETY: as for `Value`: only `Pod` atomic accesses, and the region is kept alive by the Arc.
unsafe impl<T: Pod> Send for RawValue<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Pod> Sync for RawValue<T> {}

impl<T: Pod> RawValue<T> {
    /// A new shared value, initially `value`.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = mp::RawValue::new(-3i16)?;
    /// assert_eq!(v.get(), -3);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new(value: T) -> Result<RawValue<T>, Error> {
        let v = RawValue::in_region(Arc::new(Region::new("mp-rawvalue", size_of::<T>())?))?;
        v.set(value);
        Ok(v)
    }

    fn in_region(region: Arc<Region>) -> Result<RawValue<T>, Error> {
        if region.len() < size_of::<T>() {
            return Err(Error::invalid(format!(
                "a shared region of {} bytes cannot hold a {}",
                region.len(),
                std::any::type_name::<RawValue<T>>()
            )));
        }
        // Offset 0 of a page-aligned mapping: aligned for any `Pod`.
        let ptr = region.as_ptr().cast::<T>();
        Ok(RawValue { region, ptr })
    }

    /// Reads the value.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = mp::RawValue::new([1.0f32, 2.0])?;
    /// assert_eq!(v.get(), [1.0, 2.0]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    #[inline]
    pub fn get(&self) -> T {
        // SAFETY: `ptr` is at offset 0 (page-aligned) of the live region, which holds at least
        // `size_of::<T>()` bytes; every access to it is a `Pod` atomic access.
        unsafe { T::load(self.ptr.as_ptr()) }
    }

    /// Writes the value.
    ///
    /// # Examples
    ///
    /// ```
    /// let stop = mp::RawValue::new(0u8)?;
    /// stop.set(1);
    /// assert_eq!(stop.get(), 1);
    /// # Ok::<(), mp::Error>(())
    /// ```
    #[inline]
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`.
        unsafe { T::store(self.ptr.as_ptr(), value) }
    }
}

impl<T: Pod> Clone for RawValue<T> {
    /// Another handle on the same shared value.
    fn clone(&self) -> Self {
        RawValue { region: self.region.clone(), ptr: self.ptr }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

impl<T: Pod> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (*self.region).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let region = Region::deserialize(d)?;
        RawValue::in_region(Arc::new(region))
            .map_err(|e| D::Error::custom(codec::custom_error(format!("received a bad RawValue: {e}"))))
    }
}

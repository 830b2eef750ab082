//! `mp::Array<T>` (a fixed-length array of plain-old-data in shared memory with a [`Lock`]
//! beside it) and `mp::RawArray<T>` (the same without the lock): Python's `Array` and
//! `RawArray`.
//!
//! Layout of the region (a sealed memfd, so its size cannot change under anyone):
//! offset 0 the lock word (`Array` only), offset 8 the length as a `u64` (written once, before
//! the region is shared), offset [`POD_ALIGN`] the elements.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::pod::{POD_ALIGN, Pod};
use super::region::Region;
use crate::error::Error;
use crate::synchronize::{Lock, LockGuard};
use crate::wire::codec;

/// Where the element count sits in the region.
const LEN_OFFSET: usize = 8;
/// Where the elements start: after the lock word and the length, aligned for any `Pod`.
const DATA_OFFSET: usize = POD_ALIGN;

mod sealed {
    /// What [`ArrayInit`](super::ArrayInit) needs; sealed so only mp implements it.
    pub trait Sealed<T> {
        /// The number of elements.
        fn len(&self) -> usize;
        /// The initial values, or `None` for zeroes.
        fn values(&self) -> Option<&[T]>;
    }
}

/// What [`Array::new`] and [`RawArray::new`] accept, as Python's `size_or_initializer`: a
/// length (`usize`: that many zeroes) or the initial values (`Vec<T>`, `&[T]`, `[T; N]`).
///
/// # Examples
///
/// ```
/// let zeroes: mp::Array<f64> = mp::Array::new(3)?;
/// assert_eq!(zeroes.to_vec(), [0.0; 3]);
/// let values = mp::Array::new(vec![1u8, 2, 3])?;
/// assert_eq!(values.to_vec(), [1, 2, 3]);
/// let from_array = mp::RawArray::new([7i64; 2])?;
/// assert_eq!(from_array.to_vec(), [7, 7]);
/// # Ok::<(), mp::Error>(())
/// ```
pub trait ArrayInit<T: Pod>: sealed::Sealed<T> {}

impl<T: Pod> sealed::Sealed<T> for usize {
    fn len(&self) -> usize {
        *self
    }
    fn values(&self) -> Option<&[T]> {
        None
    }
}
impl<T: Pod> ArrayInit<T> for usize {}

macro_rules! init_from_values {
    ($([$($generics:tt)*] $ty:ty),* $(,)?) => {$(
        impl<$($generics)*> sealed::Sealed<T> for $ty {
            fn len(&self) -> usize {
                self[..].len()
            }
            fn values(&self) -> Option<&[T]> {
                Some(&self[..])
            }
        }
        impl<$($generics)*> ArrayInit<T> for $ty {}
    )*};
}

init_from_values! {
    [T: Pod] Vec<T>,
    [T: Pod] &Vec<T>,
    [T: Pod] &[T],
    [T: Pod, const N: usize] [T; N],
    [T: Pod, const N: usize] &[T; N],
}

/// The elements of an array in a region: the part `Array` and `RawArray` share.
struct Slots<T: Pod> {
    region: Arc<Region>,
    first: NonNull<T>,
    len: usize,
}

// SAFETY: the elements are only accessed through `Pod` atomic loads and stores, from any
// thread of any process; the region is kept alive by the `Arc<Region>`.
unsafe impl<T: Pod> Send for Slots<T> {}
// SAFETY: as for `Send`: `&Slots` only performs atomic accesses.
unsafe impl<T: Pod> Sync for Slots<T> {}

impl<T: Pod> Clone for Slots<T> {
    fn clone(&self) -> Self {
        Slots { region: self.region.clone(), first: self.first, len: self.len }
    }
}

impl<T: Pod> Slots<T> {
    fn new(init: impl ArrayInit<T>, what: &str) -> Result<Slots<T>, Error> {
        let len = init.len();
        let bytes = len
            .checked_mul(size_of::<T>())
            .and_then(|b| b.checked_add(DATA_OFFSET))
            .filter(|&b| isize::try_from(b).is_ok())
            .ok_or_else(|| Error::invalid(format!("an {what} of {len} elements does not fit in memory")))?;
        let region = Arc::new(Region::new(what, bytes)?);
        // SAFETY: `LEN_OFFSET + 8 <= DATA_OFFSET <= bytes`, 8-aligned in a page-aligned
        // mapping; no other process has the region yet.
        unsafe { AtomicU64::from_ptr(region.as_ptr().add(LEN_OFFSET).cast().as_ptr()) }
            .store(len as u64, Ordering::Release);
        let slots = Slots::in_region(region, what)?;
        if let Some(values) = init.values() {
            for (i, &v) in values.iter().enumerate() {
                slots.store(i, v);
            }
        }
        Ok(slots)
    }

    /// The array in `region`, its length read (once) from the header and checked against
    /// the region's size.
    fn in_region(region: Arc<Region>, what: &str) -> Result<Slots<T>, Error> {
        if region.len() < DATA_OFFSET {
            return Err(Error::invalid(format!("a shared region of {} bytes is no {what}", region.len())));
        }
        // SAFETY: `LEN_OFFSET + 8 <= DATA_OFFSET <= len` (checked above), 8-aligned; the
        // word is only accessed atomically.
        let stored = unsafe { AtomicU64::from_ptr(region.as_ptr().add(LEN_OFFSET).cast().as_ptr()) }
            .load(Ordering::Acquire);
        let fits = usize::try_from(stored)
            .ok()
            .and_then(|n| n.checked_mul(size_of::<T>()))
            .and_then(|b| b.checked_add(DATA_OFFSET))
            .is_some_and(|end| end <= region.len());
        if !fits {
            return Err(Error::invalid(format!(
                "a shared region of {} bytes cannot hold an {what} of {stored} elements",
                region.len()
            )));
        }
        // SAFETY: `DATA_OFFSET <= len` (checked above): in bounds (or one past the end for an
        // empty array, which is never dereferenced).
        let first = unsafe { region.as_ptr().add(DATA_OFFSET) }.cast::<T>();
        Ok(Slots { region, first, len: stored as usize })
    }

    #[inline]
    fn load(&self, i: usize) -> T {
        debug_assert!(i < self.len);
        // SAFETY: `i < len` (callers check), so element `i` lies inside the region (checked
        // in `in_region`); it is POD_ALIGN-aligned plus a multiple of `size_of::<T>()`, as
        // `Pod::load` requires, and every access to it is a `Pod` atomic access.
        unsafe { T::load(self.first.as_ptr().add(i)) }
    }

    #[inline]
    fn store(&self, i: usize, v: T) {
        debug_assert!(i < self.len);
        // SAFETY: as in `load`.
        unsafe { T::store(self.first.as_ptr().add(i), v) }
    }

    fn check(&self, i: usize, what: &str) -> Result<(), Error> {
        if i < self.len {
            Ok(())
        } else {
            Err(Error::invalid(format!("index {i} is out of range for an {what} of length {}", self.len)))
        }
    }

    fn to_vec(&self) -> Vec<T> {
        (0..self.len).map(|i| self.load(i)).collect()
    }

    fn store_all(&self, values: &[T]) {
        for (i, &v) in values.iter().enumerate().take(self.len) {
            self.store(i, v);
        }
    }
}

/// A fixed-length array of a plain-old-data type in shared memory, with a [`Lock`] beside
/// it: Python's `multiprocessing.Array`.
///
/// Clones, and copies passed to workers (as arguments or through a
/// [`Connection`](crate::Connection)), are the *same* array. [`get`](Array::get) and
/// [`set`](Array::set) read and write one element without the lock (atomic for a primitive
/// of up to 8 bytes); an index past the end is an `Error::Invalid`, not a panic. To update
/// elements without losing other processes' updates, hold the lock:
/// [`with_lock`](Array::with_lock) and [`lock`](Array::lock) give a `&mut [T]` to work on,
/// and [`get_lock`](Array::get_lock) is the lock itself, as in Python.
///
/// `T` is an integer, a float or an array of them ([`Pod`]). Use [`RawArray`] when no lock
/// is needed.
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn add_one(a: mp::Array<u32>) {
///     for _ in 0..100 {
///         a.with_lock(|xs| xs.iter_mut().for_each(|x| *x += 1)).unwrap();
///     }
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let a: mp::Array<u32> = mp::Array::new(10)?;
/// let mut workers: Vec<_> = (0..3).map(|_| mp::Process::new(add_one, a.clone())).collect();
/// for p in &mut workers {
///     p.start()?;
/// }
/// for p in &mut workers {
///     p.join()?;
/// }
/// assert_eq!(a.to_vec(), vec![300; 10]);
/// # Ok(()) }
/// ```
pub struct Array<T: Pod> {
    /// The lock word at offset 0 of the region (which `slots` also holds).
    lock: Lock,
    slots: Slots<T>,
}

impl<T: Pod> Array<T> {
    /// A new shared array: `n` zeroes for a length `n`, or a copy of the values given.
    ///
    /// # Examples
    ///
    /// ```
    /// let zeroes: mp::Array<i32> = mp::Array::new(4)?;
    /// assert_eq!(zeroes.to_vec(), [0, 0, 0, 0]);
    /// let values = mp::Array::new([1.5f32, 2.5])?;
    /// assert_eq!(values.to_vec(), [1.5, 2.5]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new(len_or_values: impl ArrayInit<T>) -> Result<Array<T>, Error> {
        let slots = Slots::new(len_or_values, "mp-array")?;
        let lock = Lock::in_region(slots.region.clone(), 0)?;
        Ok(Array { lock, slots })
    }

    /// The number of elements.
    ///
    /// # Examples
    ///
    /// ```
    /// let a: mp::Array<u8> = mp::Array::new(7)?;
    /// assert_eq!(a.len(), 7);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.slots.len
    }

    /// Whether the array has no elements.
    ///
    /// # Examples
    ///
    /// ```
    /// let a: mp::Array<u8> = mp::Array::new(0)?;
    /// assert!(a.is_empty());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.slots.len == 0
    }

    /// Reads element `i` (without the lock); an `Error::Invalid` if `i >= len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = mp::Array::new(vec![10i64, 20])?;
    /// assert_eq!(a.get(1)?, 20);
    /// assert!(matches!(a.get(2), Err(mp::Error::Invalid(_))));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn get(&self, i: usize) -> Result<T, Error> {
        self.slots.check(i, "Array")?;
        Ok(self.slots.load(i))
    }

    /// Writes element `i` (without the lock); an `Error::Invalid` if `i >= len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a: mp::Array<u16> = mp::Array::new(2)?;
    /// a.set(0, 5)?;
    /// assert_eq!(a.to_vec(), [5, 0]);
    /// assert!(a.set(2, 1).is_err());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn set(&self, i: usize, value: T) -> Result<(), Error> {
        self.slots.check(i, "Array")?;
        self.slots.store(i, value);
        Ok(())
    }

    /// A copy of every element (without the lock: hold it for a consistent snapshot while
    /// others write).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = mp::Array::new(&[3u32, 1, 2][..])?;
    /// assert_eq!(a.to_vec(), [3, 1, 2]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        self.slots.to_vec()
    }

    /// The lock that guards this array (shared by every copy of it).
    ///
    /// # Examples
    ///
    /// ```
    /// let a: mp::Array<i32> = mp::Array::new(2)?;
    /// {
    ///     let _guard = a.get_lock().lock()?;
    ///     a.set(0, a.get(0)? + 1)?;
    ///     a.set(1, a.get(1)? - 1)?;
    /// }
    /// assert_eq!(a.to_vec(), [1, -1]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the lock and returns a guard that derefs to (a copy of) the elements as a
    /// `[T]`; changes are written back, and the lock released, when the guard drops — during
    /// a panic too. Every element is written back, so an unlocked [`set`](Array::set) by
    /// another process in the meantime is overwritten: update under the lock everywhere.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = mp::Array::new(vec![1u64, 2, 3])?;
    /// {
    ///     let mut xs = a.lock()?;
    ///     xs.reverse();
    ///     xs[0] += 10;
    /// }
    /// assert_eq!(a.to_vec(), [13, 2, 1]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>, Error> {
        let guard = self.lock.lock()?;
        Ok(ArrayGuard { array: self, current: self.to_vec(), guard })
    }

    /// [`lock`](Array::lock), waiting at most `timeout`: `Error::Timeout` if a live process
    /// still holds the lock then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let a: mp::Array<u8> = mp::Array::new(1)?;
    /// let held = a.lock()?;
    /// assert!(matches!(a.lock_timeout(Duration::from_millis(10)), Err(mp::Error::Timeout { .. })));
    /// drop(held);
    /// assert_eq!(a.lock_timeout(Duration::from_millis(10))?.len(), 1);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ArrayGuard<'_, T>, Error> {
        let guard = self.lock.lock_timeout(timeout)?;
        Ok(ArrayGuard { array: self, current: self.to_vec(), guard })
    }

    /// Runs `f` on the elements with the lock held, writes them back, and returns what `f`
    /// returned.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = mp::Array::new([1i32, 2, 3])?;
    /// let sum = a.with_lock(|xs| {
    ///     xs.iter_mut().for_each(|x| *x *= 2);
    ///     xs.iter().sum::<i32>()
    /// })?;
    /// assert_eq!(sum, 12);
    /// assert_eq!(a.to_vec(), [2, 4, 6]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn with_lock<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R, Error> {
        let mut guard = self.lock()?;
        Ok(f(&mut guard))
    }
}

impl<T: Pod> Clone for Array<T> {
    /// Another handle on the same shared array.
    fn clone(&self) -> Self {
        Array { lock: self.lock.clone(), slots: self.slots.clone() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Array").field(&self.to_vec()).finish()
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (*self.slots.region).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let region = Arc::new(Region::deserialize(d)?);
        let fail = |e: Error| D::Error::custom(codec::custom_error(format!("received a bad Array: {e}")));
        let slots = Slots::in_region(region, "Array").map_err(fail)?;
        let lock = Lock::in_region(slots.region.clone(), 0).map_err(fail)?;
        Ok(Array { lock, slots })
    }
}

/// The elements of an [`Array`] with its lock held: derefs to a copy of them as a `[T]`,
/// written back (and the lock released) on drop.
///
/// # Examples
///
/// ```
/// let a = mp::Array::new(vec![0u8; 3])?;
/// let mut g = a.lock()?;
/// g[2] = 9;
/// assert!(!g.previous_owner_died());
/// drop(g);
/// assert_eq!(a.to_vec(), [0, 0, 9]);
/// # Ok::<(), mp::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    array: &'a Array<T>,
    current: Vec<T>,
    guard: LockGuard<'a>,
}

impl<T: Pod> ArrayGuard<'_, T> {
    /// True if the lock was taken over from a process that died holding it: the elements
    /// may be half-updated (see [`LockGuard::previous_owner_died`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let a: mp::Array<u8> = mp::Array::new(1)?;
    /// assert!(!a.lock()?.previous_owner_died());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn previous_owner_died(&self) -> bool {
        self.guard.previous_owner_died()
    }
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.current
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.current
    }
}

impl<T: Pod> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        // Written back before `guard` (a field) drops and releases the lock.
        self.array.slots.store_all(&self.current);
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayGuard")
            .field("elements", &self.current)
            .field("previous_owner_died", &self.previous_owner_died())
            .finish()
    }
}

/// A fixed-length array of a plain-old-data type in shared memory without a lock: Python's
/// `multiprocessing.RawArray` (or `Array(..., lock=False)`).
///
/// Like [`Array`], clones and copies passed to other processes are the same array, and
/// `get`/`set` are atomic per primitive of up to 8 bytes; with no lock, a read-modify-write
/// needs a [`Lock`] of your own, or each element must have a single writer (workers filling
/// disjoint slices of a result, say).
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn fill(out: mp::RawArray<u64>, start: usize, end: usize) {
///     for i in start..end {
///         out.set(i, (i * i) as u64).unwrap();
///     }
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let out: mp::RawArray<u64> = mp::RawArray::new(8)?;
/// let mut a = mp::Process::new(fill, (out.clone(), 0, 4));
/// let mut b = mp::Process::new(fill, (out.clone(), 4, 8));
/// a.start()?;
/// b.start()?;
/// a.join()?;
/// b.join()?;
/// assert_eq!(out.to_vec(), [0, 1, 4, 9, 16, 25, 36, 49]);
/// # Ok(()) }
/// ```
pub struct RawArray<T: Pod> {
    slots: Slots<T>,
}

impl<T: Pod> RawArray<T> {
    /// A new shared array: `n` zeroes for a length `n`, or a copy of the values given.
    ///
    /// # Examples
    ///
    /// ```
    /// let a: mp::RawArray<i8> = mp::RawArray::new(3)?;
    /// assert_eq!(a.to_vec(), [0, 0, 0]);
    /// let b = mp::RawArray::new(vec![[1u8, 2], [3, 4]])?;
    /// assert_eq!(b.get(1)?, [3, 4]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new(len_or_values: impl ArrayInit<T>) -> Result<RawArray<T>, Error> {
        Ok(RawArray { slots: Slots::new(len_or_values, "mp-rawarray")? })
    }

    /// The number of elements.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = mp::RawArray::new([0u32; 5])?;
    /// assert_eq!(a.len(), 5);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.slots.len
    }

    /// Whether the array has no elements.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = mp::RawArray::<u32>::new(Vec::new())?;
    /// assert!(a.is_empty());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.slots.len == 0
    }

    /// Reads element `i`; an `Error::Invalid` if `i >= len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = mp::RawArray::new(vec![1.0f64, 2.0])?;
    /// assert_eq!(a.get(0)?, 1.0);
    /// assert!(a.get(5).is_err());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn get(&self, i: usize) -> Result<T, Error> {
        self.slots.check(i, "RawArray")?;
        Ok(self.slots.load(i))
    }

    /// Writes element `i`; an `Error::Invalid` if `i >= len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a: mp::RawArray<i16> = mp::RawArray::new(2)?;
    /// a.set(1, -4)?;
    /// assert_eq!(a.to_vec(), [0, -4]);
    /// assert!(a.set(2, 0).is_err());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn set(&self, i: usize, value: T) -> Result<(), Error> {
        self.slots.check(i, "RawArray")?;
        self.slots.store(i, value);
        Ok(())
    }

    /// A copy of every element.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = mp::RawArray::new([5u8, 6])?;
    /// assert_eq!(a.to_vec(), [5, 6]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        self.slots.to_vec()
    }
}

impl<T: Pod> Clone for RawArray<T> {
    /// Another handle on the same shared array.
    fn clone(&self) -> Self {
        RawArray { slots: self.slots.clone() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

impl<T: Pod> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (*self.slots.region).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let region = Arc::new(Region::deserialize(d)?);
        let slots = Slots::in_region(region, "RawArray")
            .map_err(|e| D::Error::custom(codec::custom_error(format!("received a bad RawArray: {e}"))))?;
        Ok(RawArray { slots })
    }
}

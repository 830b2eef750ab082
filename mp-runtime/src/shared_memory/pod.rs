//! `Pod`: the plain-old-data types a [`Value`](crate::Value) can hold, and how they are read
//! and written in memory that other processes write at the same time.

use std::sync::atomic::{AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

mod sealed {
    /// The access functions behind [`Pod`](super::Pod). Outside this crate the trait cannot
    /// be named, so `Pod` cannot be implemented for other types.
    pub trait Sealed: Copy {
        /// Reads `*src`, each primitive inside with one atomic load (Acquire).
        ///
        /// # Safety
        ///
        /// `src` is valid for reads of `Self` and aligned to `Self`'s size for a primitive (an
        /// array's elements then are too); every concurrent access to it goes through
        /// `load`/`store` of the same type.
        unsafe fn load(src: *const Self) -> Self;

        /// Writes `v` to `*dst`, each primitive inside with one atomic store (Release).
        ///
        /// # Safety
        ///
        /// As for [`load`](Sealed::load), with `dst` valid for writes.
        unsafe fn store(dst: *mut Self, v: Self);
    }
}

pub(crate) use sealed::Sealed;

/// Plain-old-data: a type every bit pattern of which is a valid value, so it can live in
/// shared memory that other processes write. Implemented for the integers (`u8`…`u128`,
/// `i8`…`i128`, `usize`, `isize`), `f32`, `f64`, and arrays of them (`[u32; 4]`,
/// `[[f64; 3]; 3]`). Sealed: other types cannot implement it.
///
/// Reads and writes of a `Pod` value in shared memory are atomic per primitive of up to 8
/// bytes: a `u64` is never seen half-written, but an array (or a `u128`, written as two
/// halves) may be seen with some elements old and some new unless its readers and writers
/// hold the value's lock.
///
/// `bool` and `char` are deliberately not `Pod`: only 2 of the 256 byte values are valid
/// `bool`s (and not every `u32` is a `char`), and a shared page may hold any bytes — another
/// process may have written them, or viewed the block as another type. Store a `u8` (`0`/`1`)
/// or a `u32` and convert. References, pointers and types with padding are not `Pod` either.
///
/// # Examples
///
/// ```
/// fn share<T: mp::Pod>(v: T) -> Result<mp::Value<T>, mp::Error> {
///     mp::Value::new(v)
/// }
/// assert_eq!(share(1.5f64)?.get(), 1.5);
/// assert_eq!(share([1u16, 2, 3])?.get(), [1, 2, 3]);
/// # Ok::<(), mp::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not plain-old-data (`mp::Pod`), so it cannot live in shared memory",
    label = "not `Pod`",
    note = "`Pod` types are the integers, `f32`, `f64` and arrays of them; for a `bool` or a `char` store \
            a `u8` or a `u32`; anything else travels through a `Connection` or a `Queue`"
)]
pub trait Pod: Sealed + Send + Sync + 'static {}

macro_rules! pod_primitive {
    ($($t:ty => $atomic:ty as $bits:ty),* $(,)?) => {$(
        const _: () = assert!(size_of::<$t>() == size_of::<$atomic>());

        impl Sealed for $t {
            #[inline]
            unsafe fn load(src: *const Self) -> Self {
                debug_assert!(src.cast::<$atomic>().is_aligned());
                // SAFETY: the caller guarantees `src` is valid and aligned to the type's size,
                // which equals the atomic's size and alignment; all concurrent accesses are
                // atomic accesses of this same width.
                let atomic = unsafe { <$atomic>::from_ptr(src.cast_mut().cast::<$bits>()) };
                let bits = atomic.load(Ordering::Acquire);
                <$t>::from_ne_bytes(bits.to_ne_bytes())
            }

            #[inline]
            unsafe fn store(dst: *mut Self, v: Self) {
                debug_assert!(dst.cast::<$atomic>().is_aligned());
                let bits = <$bits>::from_ne_bytes(v.to_ne_bytes());
                // SAFETY: as in `load`, with `dst` valid for writes.
                unsafe { <$atomic>::from_ptr(dst.cast::<$bits>()) }.store(bits, Ordering::Release);
            }
        }

        impl Pod for $t {}
    )*};
}

pod_primitive! {
    u8 => AtomicU8 as u8,
    u16 => AtomicU16 as u16,
    u32 => AtomicU32 as u32,
    u64 => AtomicU64 as u64,
    usize => AtomicUsize as usize,
    i8 => AtomicI8 as i8,
    i16 => AtomicI16 as i16,
    i32 => AtomicI32 as i32,
    i64 => AtomicI64 as i64,
    isize => AtomicIsize as isize,
    f32 => AtomicU32 as u32,
    f64 => AtomicU64 as u64,
}

/// 128-bit integers have no stable atomic type: they are accessed as two `u64` halves.
macro_rules! pod_wide {
    ($($t:ty),*) => {$(
        impl Sealed for $t {
            #[inline]
            unsafe fn load(src: *const Self) -> Self {
                let halves = src.cast::<[u64; 2]>();
                // SAFETY: `src` is valid and 16-byte aligned (the caller's contract), so it is
                // valid as two 8-aligned `u64`s, which are only ever accessed atomically.
                let h = unsafe { <[u64; 2]>::load(halves) };
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&h[0].to_ne_bytes());
                bytes[8..].copy_from_slice(&h[1].to_ne_bytes());
                <$t>::from_ne_bytes(bytes)
            }

            #[inline]
            unsafe fn store(dst: *mut Self, v: Self) {
                let bytes = v.to_ne_bytes();
                let lo = u64::from_ne_bytes(bytes[..8].try_into().expect("8 bytes"));
                let hi = u64::from_ne_bytes(bytes[8..].try_into().expect("8 bytes"));
                // SAFETY: as in `load`, with `dst` valid for writes.
                unsafe { <[u64; 2]>::store(dst.cast::<[u64; 2]>(), [lo, hi]) }
            }
        }

        impl Pod for $t {}
    )*};
}

pod_wide!(u128, i128);

impl<T: Pod, const N: usize> Sealed for [T; N] {
    #[inline]
    unsafe fn load(src: *const Self) -> Self {
        let first = src.cast::<T>();
        // SAFETY: element `i < N` lies inside `*src`; elements sit at multiples of their size
        // from an aligned start, so each is aligned as `T::load` requires.
        std::array::from_fn(|i| unsafe { T::load(first.add(i)) })
    }

    #[inline]
    unsafe fn store(dst: *mut Self, v: Self) {
        let first = dst.cast::<T>();
        for (i, x) in v.into_iter().enumerate() {
            // SAFETY: as in `load`, with `dst` valid for writes.
            unsafe { T::store(first.add(i), x) };
        }
    }
}

impl<T: Pod, const N: usize> Pod for [T; N] {}

/// The alignment every `Pod` value is placed at in a region: enough for any primitive's
/// atomic access (at most 8 bytes) and for `u128`'s natural alignment.
pub(crate) const POD_ALIGN: usize = 16;

const _: () = assert!(align_of::<u128>() <= POD_ALIGN && align_of::<AtomicU64>() <= POD_ALIGN);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Pod + PartialEq + std::fmt::Debug>(v: T) {
        #[repr(C, align(16))]
        struct Slot<T>(T);
        let mut slot = Slot(v);
        let p: *mut T = &mut slot.0;
        // SAFETY: `p` points at an aligned, live local accessed by this thread only.
        unsafe {
            assert_eq!(T::load(p), v);
            T::store(p, v);
            assert_eq!(T::load(p), v);
        }
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(0xABu8);
        round_trip(-5i16);
        round_trip(u32::MAX);
        round_trip(i64::MIN);
        round_trip(usize::MAX / 3);
        round_trip(-1.25f32);
        round_trip(f64::MAX);
        round_trip(u128::MAX - 12345);
        round_trip(i128::MIN + 1);
        round_trip([1u8, 2, 3]);
        round_trip([[1.5f64, 2.5], [3.5, -4.5]]);
        round_trip([7u128; 3]);
        round_trip([0u64; 0]);
    }
}

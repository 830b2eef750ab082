//! `Region`: an anonymous block of shared memory (a sealed memfd mapped `MAP_SHARED`), the
//! home of every `Lock` and `Value`. It travels to other processes as its descriptor; the
//! receiver maps the same file, so both see the same bytes.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::sys;
use crate::wire::codec;

/// A shared mapping of `len` bytes of a memfd, unmapped (and the descriptor closed) on drop.
///
/// The memory starts zeroed. `Region` hands out a raw pointer only: the types built on it
/// (`Lock`, `Value`) decide how the bytes are accessed, and they use atomics only, since
/// other processes read and write the same bytes at any time.
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: `Region` owns a mapping and a descriptor, both usable from any thread; it never
// reads or writes the mapped bytes itself.
unsafe impl Send for Region {}
// SAFETY: `&Region` only exposes the pointer and the length (reads of immutable fields).
unsafe impl Sync for Region {}

impl Region {
    /// Creates a zeroed region of `len` bytes (at least one). `name` shows in
    /// `/proc/<pid>/fd` as `memfd:<name>`.
    pub(crate) fn new(name: &str, len: usize) -> Result<Region, Error> {
        let len = len.max(1);
        let fd = sys::shm::memfd(name, len)
            .map_err(|e| Error::io(format!("creating a shared-memory region of {len} bytes"), e))?;
        Region::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Region, Error> {
        let ptr = sys::shm::map_shared(fd.as_fd(), len)
            .map_err(|e| Error::io(format!("mapping a shared-memory region of {len} bytes"), e))?;
        Ok(Region { ptr, len, fd })
    }

    /// The first byte. Valid for `len()` bytes as long as `self` lives; page-aligned.
    pub(crate) fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The usable length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `map` and unmapped only here; every
        // handle that points into it holds an `Arc<Region>`, so none is left when it drops.
        unsafe { sys::shm::unmap(self.ptr, self.len) };
        // `fd` closes after this.
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region").field("len", &self.len).field("fd", &self.fd).finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    fd: u32,
    len: u64,
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let dup = self.fd.try_clone().map_err(|e| {
            S::Error::custom(codec::custom_error(format!("cannot duplicate a shared-memory descriptor: {e}")))
        })?;
        let fd = codec::push_fd(dup, "shared-memory handle (Lock, Value)").map_err(S::Error::custom)?;
        Wire { fd, len: self.len as u64 }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let what = "shared-memory handle (Lock, Value)";
        let fd = codec::take_fd(w.fd, what).map_err(|m| D::Error::custom(codec::custom_error(m)))?;
        let fail = |m: String| D::Error::custom(codec::custom_error(m));
        let len = usize::try_from(w.len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| fail(format!("bad length {}", w.len)))?;
        // Only a sealed file of the announced size is mapped: a shorter or shrinkable one
        // would make accesses past its end SIGBUS.
        sys::shm::check_memfd(fd.as_fd(), len).map_err(|e| fail(format!("received a bad {what}: {e}")))?;
        Region::map(fd, len).map_err(|e| fail(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_and_shared_between_two_mappings() {
        let a = Region::new("mp-test", 100).unwrap();
        let b = Region::map(a.fd.try_clone().unwrap(), 100).unwrap();
        assert_ne!(a.as_ptr(), b.as_ptr());
        // SAFETY: both mappings are 100 bytes long and alive; this test is single-threaded.
        unsafe {
            assert_eq!(*b.as_ptr().as_ptr().add(99), 0);
            *a.as_ptr().as_ptr().add(99) = 7;
            assert_eq!(*b.as_ptr().as_ptr().add(99), 7);
        }
    }

    #[test]
    fn size_is_sealed() {
        let a = Region::new("mp-test", 10).unwrap();
        assert!(rustix::fs::ftruncate(&a.fd, 0).is_err());
        assert!(sys::shm::check_memfd(a.fd.as_fd(), 10).is_ok());
        assert!(sys::shm::check_memfd(a.fd.as_fd(), 1 << 20).is_err());
    }
}

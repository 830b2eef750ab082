//! `mp::SharedMemory`: a named block of shared memory in `/dev/shm` (POSIX `shm_open`), as
//! Python's `multiprocessing.shared_memory.SharedMemory`, with a resource tracker behind it.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::tracker::{self, Message};
use crate::error::Error;
use crate::sys;
use crate::wire::codec;

/// The longest name a block may have: a file name in `/dev/shm` (`NAME_MAX`).
const MAX_NAME: usize = 255;

/// A named block of shared memory: Python's `multiprocessing.shared_memory.SharedMemory`.
///
/// [`create`](SharedMemory::create) makes a block of a given size under a name in
/// `/dev/shm`; any process of the same user can [`attach`](SharedMemory::attach) to it by
/// that name, or receive a handle as a worker argument (clones and handles passed to workers
/// are the same block). Dropping the last handle in a process unmaps the block there (Python's
/// `close()`); [`unlink`](SharedMemory::unlink) removes the name, and the memory goes once
/// every process has dropped its handles.
///
/// # Reading and writing
///
/// Other processes may write the block at any moment, so handing out a plain `&[u8]` or
/// `&mut [u8]` would promise Rust an exclusiveness nobody can keep. The safe ways in are:
///
/// * [`read_at`](SharedMemory::read_at) and [`write_at`](SharedMemory::write_at): copy bytes
///   out of and into the block (bounds-checked, with atomic loads and stores, so a concurrent
///   writer makes the copy mix old and new bytes but never makes it undefined behaviour);
/// * [`as_slice`](SharedMemory::as_slice): a `&[AtomicU8]` view, for byte-wise access in
///   place;
/// * [`as_mut_slice`](SharedMemory::as_mut_slice) (`unsafe`): a plain `&mut [u8]` when you
///   can promise no one else touches the block meanwhile (for instance before any worker
///   starts, or while holding a [`Lock`](crate::Lock) that every user of the block takes).
///
/// For typed data shared with locking, [`Value`](crate::Value) and [`Array`](crate::Array)
/// are simpler; `SharedMemory` is for bytes under a name that other programs can find.
///
/// # Cleanup: the resource tracker
///
/// Each process that creates blocks starts one small helper process, its resource tracker.
/// When the creating process ends — returns, panics, or is killed, even by SIGKILL — the
/// tracker removes every block that process created and did not unlink, as soon as no process
/// maps it any more. So a crashed program leaves nothing in `/dev/shm`, and a block another
/// process still uses stays until that process lets it go. The design is described in
/// `shared_memory/tracker.rs`. As in Python, a block meant to outlive its creator for a later
/// `attach` must be mapped by some process meanwhile.
///
/// Creating a block therefore needs [`mp::init()`](crate::init) to have run (it starts the
/// tracker as an mp child process).
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn fill(shm: mp::SharedMemory) {
///     shm.write_at(0, b"hello from the child").unwrap();
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let shm = mp::SharedMemory::create("mp-doc-type", 64)?;
/// let mut p = mp::Process::new(fill, shm.clone());
/// p.start()?;
/// p.join()?;
/// let mut buf = [0u8; 20];
/// shm.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello from the child");
/// shm.unlink()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    inner: Arc<Mapping>,
}

/// One mapping of a named block, unmapped when the last handle on it drops.
struct Mapping {
    name: String,
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: `Mapping` owns a mapping and a descriptor, both usable from any thread; the bytes
// are only reached through atomics or through `unsafe` APIs whose callers vouch for them.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`; `&Mapping` reads immutable fields only.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `Mapping::new` and unmapped only here;
        // every handle that can reach it holds the `Arc<Mapping>`, so none is left.
        unsafe { sys::shm::unmap(self.ptr, self.len) };
    }
}

impl Mapping {
    fn new(name: String, fd: OwnedFd, len: usize) -> Result<Mapping, Error> {
        let ptr = sys::shm::map_shared(fd.as_fd(), len)
            .map_err(|e| Error::io(format!("mapping shared-memory block `{name}` ({len} bytes)"), e))?;
        Ok(Mapping { name, ptr, len, fd })
    }
}

/// Refuses names `shm_open` cannot take, saying why.
fn check_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::invalid(format!("bad shared-memory name {name:?}: {why}")));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if name.contains('/') {
        return bad("it contains `/` (give the bare name, as in Python: \"my-block\", not \"/my-block\")");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not names");
    }
    if name.len() > MAX_NAME {
        return bad(&format!("it is {} bytes long; at most {MAX_NAME} are allowed", name.len()));
    }
    Ok(())
}

impl SharedMemory {
    /// Creates a new block of `size` zero bytes named `name` (a file name in `/dev/shm`: no
    /// `/`, no NUL, at most 255 bytes), and registers it with this process's resource tracker.
    ///
    /// Errors: `Error::Invalid` for a bad name or a size of 0; `Error::Io` whose source has
    /// kind `AlreadyExists` if the name is taken (attach to it, or pick another name);
    /// `Error::NotInitialized` if [`mp::init()`](crate::init) did not run.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let shm = mp::SharedMemory::create("mp-doc-create", 4096)?;
    /// assert_eq!(shm.name(), "mp-doc-create");
    /// assert_eq!(shm.size(), 4096);
    ///
    /// let taken = mp::SharedMemory::create("mp-doc-create", 10).unwrap_err();
    /// assert!(matches!(&taken, mp::Error::Io { source, .. }
    ///     if source.kind() == std::io::ErrorKind::AlreadyExists));
    /// shm.unlink()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn create(name: &str, size: usize) -> Result<SharedMemory, Error> {
        check_name(name)?;
        if size == 0 {
            return Err(Error::invalid(format!(
                "cannot create shared-memory block `{name}` of size 0: the size must be at least 1 byte"
            )));
        }
        if isize::try_from(size).is_err() {
            return Err(Error::invalid(format!(
                "cannot create shared-memory block `{name}` of {size} bytes"
            )));
        }
        let fd = sys::shm::shm_create(name, size as u64).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::AlreadyExists => "; the name is taken: attach to it or pick another name",
                _ => "",
            };
            Error::io(format!("creating shared-memory block `{name}` of {size} bytes{hint}"), e)
        })?;
        let registered = sys::shm::file_id(fd.as_fd())
            .map_err(|e| Error::io(format!("inspecting shared-memory block `{name}`"), e))
            .and_then(|(dev, ino)| tracker::tell(Message::Register { name: name.to_string(), dev, ino }));
        let mapping = registered.and_then(|()| Mapping::new(name.to_string(), fd, size));
        match mapping {
            Ok(m) => Ok(SharedMemory { inner: Arc::new(m) }),
            Err(e) => {
                tracker::forget(name);
                let _ = sys::shm::shm_unlink(name);
                Err(e)
            }
        }
    }

    /// Creates a block of `size` bytes under a fresh unique name (Python's
    /// `SharedMemory(create=True, size=…)`); read it with [`name`](SharedMemory::name).
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let shm = mp::SharedMemory::new(100)?;
    /// assert!(shm.name().starts_with("mp-"));
    /// let again = mp::SharedMemory::attach(shm.name())?;
    /// assert_eq!(again.size(), 100);
    /// shm.unlink()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new(size: usize) -> Result<SharedMemory, Error> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("mp-{}-{n}-{nanos:08x}", std::process::id());
            match SharedMemory::create(&name, size) {
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                    continue;
                }
                other => return other,
            }
        }
    }

    /// Maps the existing block named `name`, whatever its creator (another process, another
    /// program). Attaching does not register the block with a tracker.
    ///
    /// Errors: `Error::Invalid` for a bad name or an empty block; `Error::Io` whose source has
    /// kind `NotFound` if no block has that name.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let shm = mp::SharedMemory::create("mp-doc-attach", 16)?;
    /// shm.write_at(0, &[1, 2, 3])?;
    /// let other = mp::SharedMemory::attach("mp-doc-attach")?;
    /// let mut buf = [0u8; 3];
    /// other.read_at(0, &mut buf)?;
    /// assert_eq!(buf, [1, 2, 3]);
    /// shm.unlink()?;
    ///
    /// let missing = mp::SharedMemory::attach("mp-doc-attach").unwrap_err();
    /// assert!(matches!(&missing, mp::Error::Io { source, .. }
    ///     if source.kind() == std::io::ErrorKind::NotFound));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn attach(name: &str) -> Result<SharedMemory, Error> {
        check_name(name)?;
        let (fd, size) = sys::shm::shm_open(name).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => "; no block has this name (not created yet, or unlinked)",
                _ => "",
            };
            Error::io(format!("attaching to shared-memory block `{name}`{hint}"), e)
        })?;
        let len =
            usize::try_from(size).ok().filter(|&l| l > 0 && isize::try_from(l).is_ok()).ok_or_else(|| {
                Error::invalid(format!("shared-memory block `{name}` has size {size}; cannot map it"))
            })?;
        Ok(SharedMemory { inner: Arc::new(Mapping::new(name.to_string(), fd, len)?) })
    }

    /// The block's name (without a leading `/`).
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let shm = mp::SharedMemory::create("mp-doc-name", 1)?;
    /// assert_eq!(shm.name(), "mp-doc-name");
    /// shm.unlink()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The block's size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let shm = mp::SharedMemory::new(12345)?;
    /// assert_eq!(shm.size(), 12345);
    /// shm.unlink()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn size(&self) -> usize {
        self.inner.len
    }

    fn check_range(&self, offset: usize, len: usize, what: &str) -> Result<(), Error> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(Error::invalid(format!(
                "cannot {what} {len} bytes at offset {offset} of shared-memory block `{}`: it has {} bytes",
                self.name(),
                self.size()
            ))),
        }
    }

    /// Copies `buf.len()` bytes starting at `offset` out of the block. An `Error::Invalid` if
    /// the range goes past the end.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let shm = mp::SharedMemory::new(8)?;
    /// let mut buf = [9u8; 4];
    /// shm.read_at(4, &mut buf)?;
    /// assert_eq!(buf, [0; 4]); // a new block is zeroed
    /// assert!(shm.read_at(6, &mut buf).is_err());
    /// shm.unlink()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        self.check_range(offset, buf.len(), "read")?;
        // SAFETY: `offset + buf.len() <= size` (checked), so the source range lies inside the
        // live mapping; `copy_out` only accesses it atomically.
        unsafe { copy_out(self.inner.ptr.as_ptr().add(offset), buf) };
        Ok(())
    }

    /// Copies `data` into the block starting at `offset`. An `Error::Invalid` if the range
    /// goes past the end.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let shm = mp::SharedMemory::new(8)?;
    /// shm.write_at(6, &[1, 2])?;
    /// assert!(shm.write_at(7, &[1, 2]).is_err());
    /// let mut all = [0u8; 8];
    /// shm.read_at(0, &mut all)?;
    /// assert_eq!(all, [0, 0, 0, 0, 0, 0, 1, 2]);
    /// shm.unlink()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), Error> {
        self.check_range(offset, data.len(), "write")?;
        // SAFETY: as in `read_at`, with the range inside a writable mapping.
        unsafe { copy_in(self.inner.ptr.as_ptr().add(offset), data) };
        Ok(())
    }

    /// The whole block as bytes that may change under you: each a separate atomic. Sound
    /// however other processes use the block.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    ///
    /// mp::init();
    /// let shm = mp::SharedMemory::new(4)?;
    /// let bytes = shm.as_slice();
    /// bytes[0].store(42, Ordering::Relaxed);
    /// bytes[1].fetch_add(1, Ordering::Relaxed);
    /// let mut buf = [0u8; 2];
    /// shm.read_at(0, &mut buf)?;
    /// assert_eq!(buf, [42, 1]);
    /// shm.unlink()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn as_slice(&self) -> &[AtomicU8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, alive as long as `self`;
        // `AtomicU8` has the size and alignment of `u8` and is `Sync`, so a shared slice of
        // them may be accessed concurrently from anywhere.
        unsafe { std::slice::from_raw_parts(self.inner.ptr.as_ptr().cast::<AtomicU8>(), self.inner.len) }
    }

    /// The whole block as a plain mutable byte slice.
    ///
    /// # Safety
    ///
    /// While the slice lives, nothing else may read or write the block: no other handle on it
    /// in this process (clones included) and no other process. Synchronise that yourself, for
    /// instance by holding a [`Lock`](crate::Lock) every user of the block takes, or by using
    /// the slice before any other process has the block. Otherwise use
    /// [`read_at`](SharedMemory::read_at)/[`write_at`](SharedMemory::write_at) or
    /// [`as_slice`](SharedMemory::as_slice).
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let mut shm = mp::SharedMemory::new(1024)?;
    /// // SAFETY: the block is brand new; no one else knows its name or has a handle yet.
    /// let bytes = unsafe { shm.as_mut_slice() };
    /// bytes.fill(7);
    /// let mut buf = [0u8; 1];
    /// shm.read_at(1023, &mut buf)?;
    /// assert_eq!(buf, [7]);
    /// shm.unlink()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, alive as long as `self`;
        // the caller guarantees nobody else accesses it while the slice lives, and `&mut self`
        // keeps this handle from making a second one.
        unsafe { std::slice::from_raw_parts_mut(self.inner.ptr.as_ptr(), self.inner.len) }
    }

    /// The first byte of the block, for code that manages its own synchronisation (valid for
    /// [`size`](SharedMemory::size) bytes while this handle lives).
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let shm = mp::SharedMemory::new(16)?;
    /// assert!(!shm.as_ptr().is_null());
    /// shm.unlink()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.ptr.as_ptr()
    }

    /// Removes the block's name (Python's `unlink()`): no one can attach to it any more, and
    /// the memory is freed once every process has dropped its handles. Handles that exist keep
    /// working. Call it once, from one process; an `Error::Io` (`NotFound`) if the name is
    /// already gone.
    ///
    /// # Examples
    ///
    /// ```
    /// mp::init();
    /// let shm = mp::SharedMemory::create("mp-doc-unlink", 8)?;
    /// shm.unlink()?;
    /// shm.write_at(0, &[1])?; // still mapped here
    /// assert!(mp::SharedMemory::attach("mp-doc-unlink").is_err());
    /// assert!(shm.unlink().is_err());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn unlink(&self) -> Result<(), Error> {
        tracker::forget(self.name());
        sys::shm::shm_unlink(self.name())
            .map_err(|e| Error::io(format!("unlinking shared-memory block `{}`", self.name()), e))
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory").field("name", &self.name()).field("size", &self.size()).finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    name: String,
    fd: u32,
    len: u64,
}

const WHAT: &str = "shared-memory block (SharedMemory)";

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let dup = self.inner.fd.try_clone().map_err(|e| {
            S::Error::custom(codec::custom_error(format!("cannot duplicate a shared-memory descriptor: {e}")))
        })?;
        let fd = codec::push_fd(dup, WHAT).map_err(S::Error::custom)?;
        Wire { name: self.inner.name.clone(), fd, len: self.inner.len as u64 }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let fail = |m: String| D::Error::custom(codec::custom_error(m));
        let fd = codec::take_fd(w.fd, WHAT).map_err(fail)?;
        let len = usize::try_from(w.len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| fail(format!("bad length {}", w.len)))?;
        // Map no more than the file holds: accesses past its end would SIGBUS.
        let size =
            sys::shm::file_size(fd.as_fd()).map_err(|e| fail(format!("received a bad {WHAT}: {e}")))?;
        if size < w.len {
            return Err(fail(format!("received a {WHAT} of {size} bytes, {} were announced", w.len)));
        }
        Mapping::new(w.name, fd, len)
            .map(|m| SharedMemory { inner: Arc::new(m) })
            .map_err(|e| fail(e.to_string()))
    }
}

/// Copies `dst.len()` bytes from `src`, with relaxed atomic loads (8 bytes at a time where
/// aligned).
///
/// # Safety
///
/// `src` is valid for reads of `dst.len()` bytes, and everyone else accesses them atomically
/// (or is another process, outside this program's memory model).
unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    let mut i = 0;
    while i < dst.len() {
        // SAFETY: `i < dst.len()`, so `src + i` is inside the caller's range.
        let p = unsafe { src.add(i) };
        if p.cast::<AtomicU64>().is_aligned() && dst.len() - i >= 8 {
            // SAFETY: 8 bytes from `p` are in range and `p` is 8-aligned.
            let word = unsafe { AtomicU64::from_ptr(p.cast_mut().cast()) }.load(Ordering::Relaxed);
            dst[i..i + 8].copy_from_slice(&word.to_ne_bytes());
            i += 8;
        } else {
            // SAFETY: one byte in range; `AtomicU8` needs no alignment.
            dst[i] = unsafe { AtomicU8::from_ptr(p.cast_mut()) }.load(Ordering::Relaxed);
            i += 1;
        }
    }
}

/// Copies `src` to `dst`, with relaxed atomic stores (8 bytes at a time where aligned).
///
/// # Safety
///
/// `dst` is valid for writes of `src.len()` bytes, and everyone else accesses them atomically
/// (or is another process).
unsafe fn copy_in(dst: *mut u8, src: &[u8]) {
    let mut i = 0;
    while i < src.len() {
        // SAFETY: `i < src.len()`, so `dst + i` is inside the caller's range.
        let p = unsafe { dst.add(i) };
        if p.cast::<AtomicU64>().is_aligned() && src.len() - i >= 8 {
            let word = u64::from_ne_bytes(src[i..i + 8].try_into().expect("8 bytes"));
            // SAFETY: 8 bytes from `p` are in range and `p` is 8-aligned.
            unsafe { AtomicU64::from_ptr(p.cast()) }.store(word, Ordering::Relaxed);
            i += 8;
        } else {
            // SAFETY: one byte in range; `AtomicU8` needs no alignment.
            unsafe { AtomicU8::from_ptr(p) }.store(src[i], Ordering::Relaxed);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", "a/b", "/a", "a\0b", ".", ".."] {
            assert!(matches!(check_name(bad), Err(Error::Invalid(_))), "{bad:?} accepted");
        }
        assert!(check_name(&"x".repeat(255)).is_ok());
        let long = check_name(&"x".repeat(256)).unwrap_err().to_string();
        assert!(long.contains("256 bytes"), "{long}");
    }

    #[test]
    fn copies_at_every_alignment() {
        let mut backing = [0u64; 8];
        let base = backing.as_mut_ptr().cast::<u8>();
        for start in 0..9 {
            for len in 0..40 {
                let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(7).wrapping_add(1)).collect();
                let mut out = vec![0u8; len];
                // SAFETY: `start + len <= 48 < 64` bytes of the local `backing`, used by this
                // thread only.
                unsafe {
                    copy_in(base.add(start), &data);
                    copy_out(base.add(start), &mut out);
                }
                assert_eq!(out, data, "start {start} len {len}");
            }
        }
    }
}

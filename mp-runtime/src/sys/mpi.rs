//! Non-blocking MPI sends of owned buffers (feature `mpi`).
//!
//! rsmpi ties a non-blocking send to a borrowed buffer and a scope; the bridge's sends start
//! and finish in different turns of its loop, so this wrapper owns the buffer instead and
//! frees it only once MPI reports the send complete.

use std::ptr::NonNull;

use ::mpi::Tag;
use ::mpi::point_to_point::Destination;
use ::mpi::request::{Request, StaticScope};
use ::mpi::topology::Process;

/// A send in flight, owning its bytes until MPI is done with them.
pub struct OwnedSend {
    request: Option<Request<'static, [u8]>>,
    buf: NonNull<[u8]>,
}

impl OwnedSend {
    /// Starts sending `data` to `to` with `tag` (`MPI_Isend`).
    pub fn start(to: &Process<'_>, tag: Tag, data: Vec<u8>) -> OwnedSend {
        let buf = NonNull::from(Box::leak(data.into_boxed_slice()));
        // SAFETY: `buf` was leaked from a Box just above and is freed only by `reclaim`, which
        // runs after the request completed; until then nothing writes to it, so a shared
        // 'static borrow is valid for as long as MPI reads it.
        let bytes: &'static [u8] = unsafe { buf.as_ref() };
        let request = to.immediate_send_with_tag(StaticScope, bytes, tag);
        OwnedSend { request: Some(request), buf }
    }

    /// Whether the send completed (`MPI_Test`); its buffer is freed then.
    pub fn test(&mut self) -> bool {
        match self.request.take() {
            None => true,
            Some(r) => match r.test() {
                Ok(_) => {
                    self.reclaim();
                    true
                }
                Err(r) => {
                    self.request = Some(r);
                    false
                }
            },
        }
    }

    /// Waits for the send to complete (`MPI_Wait`).
    pub fn wait(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(r) = self.request.take() {
            r.wait();
            self.reclaim();
        }
    }

    fn reclaim(&mut self) {
        let empty = NonNull::from(&mut [][..]);
        let buf = std::mem::replace(&mut self.buf, empty);
        // SAFETY: `buf` came from `Box::leak` in `start`, the request that read it has
        // completed (this runs only after `test` or `wait` said so), and `buf` was replaced
        // by an empty slice so it cannot be freed twice. An empty slice from `[]` never was
        // a Box: it is skipped.
        if !buf.is_empty() {
            drop(unsafe { Box::from_raw(buf.as_ptr()) });
        }
    }
}

impl Drop for OwnedSend {
    /// A send still in flight is waited for: MPI may still read the buffer, and rsmpi
    /// refuses to drop a pending request.
    fn drop(&mut self) {
        self.finish();
    }
}

//! Shared memory: anonymous regions (memfd + mmap) that travel to other processes as their
//! descriptor, and the values and arrays kept in them; named blocks in `/dev/shm` and the
//! resource tracker that removes them after a crash.

mod array;
mod named;
mod pod;
mod region;
mod tracker;
mod value;

pub use array::{Array, ArrayGuard, ArrayInit, RawArray};
pub use named::SharedMemory;
pub use pod::Pod;
pub(crate) use region::Region;
pub use value::{RawValue, Value, ValueGuard};

//! Shared memory: anonymous regions (memfd + mmap) that travel to other processes as their
//! descriptor, and the values kept in them.

mod pod;
mod region;
mod value;

pub use pod::Pod;
pub(crate) use region::Region;
pub use value::{RawValue, Value, ValueGuard};

//! `use mp::prelude::*;` brings the traits whose methods you call on workers.

pub use mp_runtime::Worker;

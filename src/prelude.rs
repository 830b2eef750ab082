//! `use mp::prelude::*;` brings the traits whose methods you call on workers:
//! `square.par_map(data)` ([`ParMap`]) and `square.call(args)` ([`Worker`]).

pub use mp_runtime::{ParMap, Worker};

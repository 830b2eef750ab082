//! The default pool behind `par_map`, and the `ParMap` extension trait on every worker.

use std::sync::Mutex;

use crate::error::Error;
use crate::pool::{IMap, Pool};
use crate::registry::Worker;

static GLOBAL: Mutex<Option<&'static Pool>> = Mutex::new(None);

/// The default pool, created on first use with `MP_PROCESSES` or `cpu_count()` workers; on
/// rank 0 of an MPI job (feature `mpi`), the other ranks.
pub(crate) fn global_pool() -> Result<&'static Pool, Error> {
    let mut g = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = *g {
        return Ok(p);
    }
    // Under mpirun, rank 0's default pool is served by the other ranks.
    let builder = if crate::mpi::serves_default_pool() { Pool::builder().mpi() } else { Pool::builder() };
    let pool: &'static Pool = Box::leak(Box::new(builder.build()?));
    *g = Some(pool);
    Ok(pool)
}

pub(super) fn set_global(pool: Pool) -> Result<(), Error> {
    let mut g = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
    if g.is_some() {
        return Err(Error::invalid(
            "the global pool already exists (build_global must run before the first par_map)",
        ));
    }
    *g = Some(Box::leak(Box::new(pool)));
    Ok(())
}

/// Parallel maps on any worker, run by the default pool (`use mp::prelude::*`).
///
/// The default pool has `cpu_count()` workers (or `MP_PROCESSES`), is created on first use,
/// and can be configured before that with
/// [`PoolBuilder::build_global`](crate::PoolBuilder::build_global).
///
/// # Examples
///
/// ```
/// use mp::prelude::*;
///
/// #[mp::worker]
/// fn square(x: i32) -> i32 { x * x }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// assert_eq!(square.par_map(0..5)?, vec![0, 1, 4, 9, 16]);
/// let mut any_order = square.par_map_unordered(0..5)?;
/// any_order.sort();
/// assert_eq!(any_order, vec![0, 1, 4, 9, 16]);
/// let first: Vec<i32> = square.par_imap(0..)?.take(3).collect::<Result<_, _>>()?;
/// assert_eq!(first, vec![0, 1, 4]);
/// # Ok(()) }
/// ```
pub trait ParMap: Worker {
    /// `Pool::map` on the default pool: results in input order, or the first failure.
    fn par_map<I: IntoIterator<Item = Self::Args>>(self, items: I) -> Result<Vec<Self::Output>, Error> {
        global_pool()?.map(self, items)
    }

    /// All results, in completion order; the first failure ends it.
    fn par_map_unordered<I: IntoIterator<Item = Self::Args>>(
        self,
        items: I,
    ) -> Result<Vec<Self::Output>, Error> {
        global_pool()?.imap_unordered(self, items)?.collect()
    }

    /// `Pool::imap` on the default pool: lazy, ordered, bounded memory.
    fn par_imap<I: IntoIterator<Item = Self::Args>>(
        self,
        items: I,
    ) -> Result<IMap<'static, Self, I::IntoIter>, Error> {
        global_pool()?.imap(self, items)
    }
}

impl<W: Worker> ParMap for W {}

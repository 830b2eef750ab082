//! Scale-out under an MPI launcher (`mpirun`, `srun`): rank 0 runs `main`, the other ranks
//! serve its pool. Everything MPI lives behind the `mpi` feature; without it, this module
//! only explains why `Pool::builder().mpi()` cannot work. See `README.md` beside this file.

#[cfg(feature = "mpi")]
mod bridge;

use crate::error::Error;
use crate::pool::Attached;

/// Called by `mp::init()`: under an MPI launcher (and with the feature), starts MPI. Rank 0
/// returns; the other ranks serve tasks from here on and never return.
pub(crate) fn init_from_env() -> Result<(), Error> {
    #[cfg(feature = "mpi")]
    if launched_by_mpi() {
        bridge::start()?;
    }
    Ok(())
}

/// The worker ranks, as attached workers for a new pool (rank 0 only).
pub(crate) fn attach_ranks() -> Result<Vec<Attached>, Error> {
    #[cfg(feature = "mpi")]
    {
        bridge::attach_ranks()
    }
    #[cfg(not(feature = "mpi"))]
    Err(Error::invalid(
        "Pool::builder().mpi(): mp was built without its `mpi` feature; enable it \
         (mp = { features = [\"mpi\"] }) and start the program with mpirun or srun",
    ))
}

/// Whether the default pool should be the MPI pool: this is rank 0 of a job of several
/// ranks, and MPI was started by `mp::init()`.
pub(crate) fn serves_default_pool() -> bool {
    #[cfg(feature = "mpi")]
    {
        bridge::has_worker_ranks()
    }
    #[cfg(not(feature = "mpi"))]
    false
}

/// At exit on rank 0: tells the worker ranks to finish, then finalizes MPI.
pub(crate) fn finish() {
    #[cfg(feature = "mpi")]
    bridge::finish();
}

/// Environment variables an MPI launcher sets in every rank: Open MPI's mpirun, PMIx (Open
/// MPI 5, `srun --mpi=pmix`), PMI (MPICH's hydra, `srun --mpi=pmi2`).
#[cfg(feature = "mpi")]
const LAUNCHER_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"];

#[cfg(feature = "mpi")]
fn launched_by_mpi() -> bool {
    LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some())
}

//! Python's "remote manager" story: one process serves a job queue and a result queue on a
//! TCP port; workers (here two processes on this host, on other hosts in real use) connect
//! by address and key, take jobs and put results.
//!
//! ```text
//! cargo run --example remote
//! ```
//!
//! On a real cluster the server side is a dedicated host running
//! `Manager::builder().address("0.0.0.0:50000").authkey(key).serve()`, and each worker host
//! runs the `worker` part with `Manager::connect("server-host:50000", key)`.

use mp::{Manager, Process, QueueProxy};

/// The key every side must hold (share it as you would a password; over untrusted networks,
/// tunnel the port: the handshake authenticates but does not encrypt).
const AUTHKEY: &[u8] = b"abracadabra";

/// A worker: connects to the server, finds its queues by name, squares jobs until `None`.
#[mp::worker]
fn worker(address: String, authkey: Vec<u8>) -> u32 {
    let manager = Manager::connect(address.as_str(), &authkey).expect("connect to the job server");
    let jobs: QueueProxy<Option<u64>> =
        manager.shared().get("jobs").unwrap().expect("the server published jobs");
    let results: QueueProxy<(u64, u64)> = manager.shared().get("results").unwrap().expect("and results");
    let mut done = 0;
    while let Some(n) = jobs.get().unwrap() {
        results.put((n, n * n)).unwrap();
        done += 1;
    }
    done
}

#[mp::main]
fn main() -> Result<(), mp::Error> {
    // The server: a manager process listening on a free TCP port of 127.0.0.1.
    let manager = Manager::builder().address("127.0.0.1:0").authkey(AUTHKEY.to_vec()).start()?;
    let jobs = manager.queue::<Option<u64>>()?;
    let results = manager.queue::<(u64, u64)>()?;
    manager.shared().set("jobs", jobs.clone())?;
    manager.shared().set("results", results.clone())?;
    println!("job server listening on {}", manager.address());

    let n_jobs = 100u64;
    for n in 0..n_jobs {
        jobs.put(Some(n))?;
    }
    // Two clients that know only the address and the key.
    let mut clients: Vec<_> =
        (0..2).map(|_| Process::new(worker, (manager.address().to_string(), AUTHKEY.to_vec()))).collect();
    for c in &mut clients {
        c.start()?;
        jobs.put(None)?; // one stop signal per client
    }
    let mut sum = 0;
    for _ in 0..n_jobs {
        let (_, square) = results.get()?;
        sum += square;
    }
    let mut done = 0;
    for c in &mut clients {
        done += c.join()?;
    }
    println!("remote: {} clients, {done} jobs, sum of squares = {sum}", clients.len());
    Ok(())
}

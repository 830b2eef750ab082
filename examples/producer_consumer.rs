//! Producers and consumers around queues: one producer process puts jobs on a bounded
//! `JoinableQueue`, four consumer processes take them, put results on a `Queue` and mark each
//! job done; the parent waits with `join()` and sums the results. Python's
//!
//! ```python
//! def consumer(jobs, results):
//!     while (n := jobs.get()) is not None:
//!         results.put((n, collatz_steps(n)))
//!         jobs.task_done()
//!     jobs.task_done()
//! ```
//!
//! ```text
//! cargo run --example producer_consumer
//! ```

use std::time::{Duration, Instant};

use mp::{JoinableQueue, Queue};

const JOBS: u64 = 20_000;
const CONSUMERS: usize = 4;

/// Steps for `n` to reach 1 under the Collatz map: a little CPU per job.
fn collatz_steps(mut n: u64) -> u32 {
    let mut steps = 0;
    while n != 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}

/// Puts jobs 1..=JOBS, then one `None` per consumer to stop it. The queue is bounded: when
/// consumers fall behind, `put` waits instead of piling jobs up in memory.
#[mp::worker]
fn producer(jobs: JoinableQueue<Option<u64>>) {
    for n in 1..=JOBS {
        jobs.put(Some(n)).expect("put a job");
    }
    for _ in 0..CONSUMERS {
        jobs.put(None).expect("put a stop");
    }
}

/// Takes jobs until `None`; returns how many it did.
#[mp::worker]
fn consumer(jobs: JoinableQueue<Option<u64>>, results: Queue<(u64, u32)>) -> u64 {
    let mut done = 0;
    while let Some(n) = jobs.get().expect("get a job") {
        results.put((n, collatz_steps(n))).expect("put a result");
        jobs.task_done().expect("one task_done per get");
        done += 1;
    }
    jobs.task_done().expect("the stop counts too");
    done
}

#[mp::main]
fn main() -> Result<(), mp::Error> {
    let start = Instant::now();
    let jobs = JoinableQueue::bounded(256)?;
    let results = Queue::new()?;
    let mut consumers: Vec<_> =
        (0..CONSUMERS).map(|_| mp::Process::new(consumer, (jobs.clone(), results.clone()))).collect();
    for c in &mut consumers {
        c.start()?;
    }
    let mut p = mp::Process::new(producer, jobs.clone());
    p.start()?;

    // Results arrive while the consumers work; take them as they come.
    let (mut count, mut total_steps, mut longest) = (0u64, 0u64, (0u64, 0u32));
    while count < JOBS {
        let (n, steps) = results.get_timeout(Duration::from_secs(60))?;
        count += 1;
        total_steps += u64::from(steps);
        if steps > longest.1 {
            longest = (n, steps);
        }
    }
    jobs.join_timeout(Duration::from_secs(60))?; // every job (and stop) was marked done
    p.join()?;
    let per_consumer: Vec<u64> = consumers.iter_mut().map(|c| c.join()).collect::<Result<_, _>>()?;
    assert_eq!(per_consumer.iter().sum::<u64>(), JOBS);
    assert_eq!(total_steps, (1..=JOBS).map(|n| u64::from(collatz_steps(n))).sum::<u64>());

    println!("jobs done: {count} by {CONSUMERS} consumers {per_consumer:?}");
    println!("longest chain below {JOBS}: {} takes {} steps", longest.0, longest.1);
    println!("total steps: {total_steps} (in {:?})", start.elapsed());
    Ok(())
}

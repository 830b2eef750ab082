//! A counter in shared memory: 8 processes add 1000 each, under the counter's lock, and the
//! total is exactly 8000. Python's
//!
//! ```python
//! def work(counter):
//!     for _ in range(1000):
//!         with counter.get_lock():
//!             counter.value += 1
//! ```
//!
//! ```text
//! cargo run --example shared_counter
//! ```

use std::time::Instant;

#[mp::worker]
fn work(counter: mp::Value<i64>, done: mp::Lock) {
    for _ in 0..1000 {
        // Python's `with counter.get_lock(): counter.value += 1`, in one call.
        counter.with_lock(|v| *v += 1).expect("the counter's lock");
    }
    // A Lock of its own guards the output, so lines from different processes never mix.
    let _guard = done.lock().expect("the output lock");
    println!("worker {} done", std::process::id());
}

#[mp::main]
fn main() -> Result<(), mp::Error> {
    let counter = mp::Value::new(0i64)?;
    let output = mp::Lock::new()?;
    let start = Instant::now();
    let mut workers: Vec<_> =
        (0..8).map(|_| mp::Process::new(work, (counter.clone(), output.clone()))).collect();
    for p in &mut workers {
        p.start()?;
    }
    for p in &mut workers {
        p.join()?;
    }
    let total = counter.get();
    println!("counter = {total} (8 processes x 1000 increments, in {:?})", start.elapsed());
    assert_eq!(total, 8000);
    Ok(())
}

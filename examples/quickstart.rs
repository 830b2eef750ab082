//! The Python docs' first example, in Rust: a worker run in a child process.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use mp::prelude::*;

/// Prints from the child: its stdout is the parent's.
#[mp::worker]
fn worker(num: i32) {
    println!("Worker: {num}");
}

#[mp::worker]
fn square(x: i32) -> i32 {
    x * x
}

#[mp::main]
fn main() -> Result<(), mp::Error> {
    let mut p = mp::Process::new(worker, 1);
    p.start()?;
    p.join()?; // prints "Worker: 1" from the child

    assert_eq!(square(3), 9); // still a plain function

    let mut p = mp::Process::new(square, 7).name("square-7");
    p.start()?;
    let answer = p.join()?;
    println!("square(7) = {answer} (computed in pid {}, exit code {:?})", p.pid().unwrap_or(0), p.exitcode());
    assert_eq!(answer, square.call(7));
    Ok(())
}

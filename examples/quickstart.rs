//! The Python docs' first example, in Rust: a worker run in a child process; then a
//! result back from a child, the default pool, and a Pipe end passed to a worker.
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

    let v = square.par_map(0..1000)?; // the default pool, input order kept
    println!("par_map: {} squares, the last {}", v.len(), v[999]);

    // A Connection is an ordinary worker argument: the child gets a working end.
    let (parent, child) = mp::Pipe::new::<String>()?;
    let mut p = mp::Process::new(shout, child);
    p.start()?;
    parent.send("hello".to_string())?;
    println!("{}", parent.recv()?);
    p.join()?;
    Ok(())
}

#[mp::worker]
fn shout(conn: mp::Connection<String>) {
    if let Ok(s) = conn.recv() {
        let _ = conn.send(s.to_uppercase());
    }
}

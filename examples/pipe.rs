//! The Python docs' Pipe example: a child sends a message through a Connection it was given
//! as an ordinary argument.
//!
//! ```text
//! cargo run --example pipe
//! ```

/// What the child sends: Python's `[42, None, 'hello']`, typed.
type Message = (i32, Option<i32>, String);

#[mp::worker]
fn f(mut conn: mp::Connection<Message>) {
    conn.send((42, None, "hello".to_string())).expect("parent is listening");
    conn.close();
}

#[mp::main]
fn main() -> Result<(), mp::Error> {
    let (parent_conn, child_conn) = mp::Pipe::new()?;
    let mut p = mp::Process::new(f, child_conn);
    p.start()?;
    println!("{:?}", parent_conn.recv()?); // prints "(42, None, "hello")"
    p.join()?;
    // The child's end closed with it: the pipe reports end-of-file, like Python's EOFError.
    assert!(matches!(parent_conn.recv(), Err(mp::Error::Disconnected { .. })));
    Ok(())
}

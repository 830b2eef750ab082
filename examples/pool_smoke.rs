use mp::prelude::*;
use std::time::Instant;

#[mp::worker]
fn square(x: i32) -> i32 {
    x * x
}

#[mp::main]
fn main() -> Result<(), mp::Error> {
    let pool = mp::Pool::new(2)?;
    println!("{:?}", pool.map(square, 0..10)?);
    let t = Instant::now();
    let v = pool.map(square, 0..1_000_000)?;
    println!("1e6 map: {:?} ({} items)", t.elapsed(), v.len());
    let t = Instant::now();
    let rs: Vec<_> = (0..10_000)
        .map(|i| pool.apply_async(square, i).unwrap())
        .collect();
    let s: i64 = rs.into_iter().map(|r| r.get().unwrap() as i64).sum();
    println!("1e4 apply_async: {:?} sum {s}", t.elapsed());
    let v: Vec<i32> = pool
        .imap(square, 0..)?
        .take(100)
        .collect::<Result<_, _>>()?;
    println!("imap endless: {}", v.len());
    println!("{:?}", square.par_map(vec![1, 2, 3])?);
    println!("{:?}", pool.stats());
    Ok(())
}

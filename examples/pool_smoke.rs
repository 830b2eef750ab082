//! Quick pool throughput check (development aid): `cargo run --release --example pool_smoke`.
use std::time::Instant;

#[mp::worker]
fn square(x: i32) -> i32 {
    x * x
}

#[mp::main]
fn main() -> Result<(), mp::Error> {
    let depth: usize = std::env::var("DEPTH").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let pool = mp::Pool::builder().processes(2).prefetch(depth).build()?;
    let what = std::env::args().nth(1).unwrap_or_default();
    for _ in 0..3 {
        if what != "apply" {
            let t = Instant::now();
            let v = pool.map(square, 0..1_000_000)?;
            let d = t.elapsed();
            println!("map 1e6: {d:?} = {:.1} M items/s ({})", 1e6 / d.as_secs_f64() / 1e6, v.len());
        }
        if what != "map" {
            let t = Instant::now();
            let rs: Vec<_> = (0..10_000).map(|i| pool.apply_async(square, i).unwrap()).collect();
            let s: i64 = rs.into_iter().map(|r| r.get().unwrap() as i64).sum();
            let d = t.elapsed();
            println!("apply_async 1e4: {d:?} = {:.0} k tasks/s (sum {s})", 1e4 / d.as_secs_f64() / 1e3);
        }
    }
    Ok(())
}

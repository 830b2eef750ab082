// A closure cannot run in another process: the error says to write a #[mp::worker] fn.
fn main() {
    mp::init();
    let pool = mp::Pool::new(2).unwrap();
    let k = 3;
    let _ = pool.map(|x: i32| x * k, 0..10);
}

#[mp::worker(name = 42)]
fn square(x: i32) -> i32 {
    x * x
}

fn main() {}

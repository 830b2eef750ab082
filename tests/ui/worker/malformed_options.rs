#[mp::worker(name)]
fn square(x: i32) -> i32 {
    x * x
}

fn main() {}

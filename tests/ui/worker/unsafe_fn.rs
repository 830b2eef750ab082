#[mp::worker]
unsafe fn poke(x: u64) -> u64 {
    x
}

fn main() {}

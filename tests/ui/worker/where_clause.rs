#[mp::worker]
fn double(x: u32) -> u32
where
    u32: Copy,
{
    x * 2
}

fn main() {}

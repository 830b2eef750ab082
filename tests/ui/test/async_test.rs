#[mp::test]
async fn spawns_a_child() {}

fn main() {}

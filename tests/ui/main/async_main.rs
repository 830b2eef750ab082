#[mp::main]
async fn main() {}

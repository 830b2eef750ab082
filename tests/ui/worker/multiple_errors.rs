#[mp::worker]
async fn process<T>(label: &str, item: T) -> usize {
    let _ = item;
    label.len()
}

fn main() {}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Counter {
    n: i64,
}

#[mp::managed]
impl Default for Counter {
    fn default() -> Self {
        Counter { n: 0 }
    }
}

fn main() {}

pub struct Report {
    pub total: u64,
}

#[mp::worker]
fn summarize(values: Vec<u64>) -> Report {
    Report {
        total: values.iter().sum(),
    }
}

fn main() {}

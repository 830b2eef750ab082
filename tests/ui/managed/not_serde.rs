// The managed type itself must cross processes.
pub struct Plain {
    n: i64,
}

#[mp::managed]
impl Plain {
    pub fn get(&self) -> i64 {
        self.n
    }
}

fn main() {}

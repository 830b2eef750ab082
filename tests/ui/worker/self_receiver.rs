struct Counter(u32);

impl Counter {
    #[mp::worker]
    fn get(&self) -> u32 {
        self.0
    }
}

fn main() {}

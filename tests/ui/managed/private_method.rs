// A private method of a #[mp::managed] type is not on its proxy.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Counter {
    n: i64,
}

#[mp::managed]
impl Counter {
    pub fn get(&self) -> i64 {
        self.n
    }

    fn wipe_counter(&mut self) {
        self.n = 0;
    }
}

fn use_it(c: CounterProxy) {
    let _ = c.get();
    let _ = c.wipe_counter();
}

fn main() {}

// `#[mp::managed(crate = "…", name = "…")]` for code that imports mp under another name.
extern crate mp as renamed;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Counter {
    n: i64,
}

#[renamed::managed(crate = "renamed", name = "app::Counter")]
impl Counter {
    pub fn get(&self) -> i64 {
        self.n
    }

    pub fn replaced(&mut self, with: Self) -> Self {
        std::mem::replace(self, with)
    }
}

fn main() {
    assert_eq!(<Counter as renamed::Managed>::NAME, "app::Counter");
    let _: fn(&CounterProxy) -> Result<i64, renamed::Error> = CounterProxy::get;
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Wrapper<T> {
    inner: T,
}

#[mp::managed]
impl<T> Wrapper<T> {
    pub fn get(&self) -> u8 {
        1
    }
}

fn main() {}

// Every mistake is reported at once, each at its own token.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Store {
    items: Vec<String>,
}

#[mp::managed]
impl Store {
    pub fn find(&self, name: &str) -> bool {
        self.items.iter().any(|i| i == name)
    }

    pub fn first<T: Default>(&self) -> T {
        T::default()
    }

    pub async fn later(&self) {}

    pub fn view(&self) -> &[String] {
        &self.items
    }
}

fn main() {}

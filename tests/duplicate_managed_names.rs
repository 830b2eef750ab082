//! Two `#[mp::managed]` types registered under one name are reported at start-up, naming
//! both places, as duplicate workers are.

#[derive(serde::Serialize, serde::Deserialize)]
pub struct First;

#[mp::managed(name = "shared::Type")]
impl First {
    pub fn one(&self) -> u8 {
        1
    }
}

mod other {
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Second;

    #[mp::managed(name = "shared::Type")]
    impl Second {
        pub fn two(&self) -> u8 {
            2
        }
    }
}

fn main() {
    let e = mp::try_init().expect_err("duplicate managed type names must be refused");
    let msg = e.to_string();
    assert!(msg.contains("`shared::Type`"), "{msg}");
    assert!(
        msg.contains("duplicate_managed_names.rs:7") && msg.contains("duplicate_managed_names.rs:18"),
        "{msg}"
    );
    assert!(msg.contains("name ="), "the message says how to fix it: {msg}");
    let _ = (First.one(), other::Second.two());
    println!("duplicate_managed_names: ok");
}

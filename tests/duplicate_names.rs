//! Two workers registered under one name are reported at start-up, naming both places.

#[mp::worker(name = "shared::name")]
fn first() -> u8 {
    1
}

mod other {
    #[mp::worker(name = "shared::name")]
    pub fn second() -> u8 {
        2
    }
}

fn main() {
    let e = mp::try_init().expect_err("duplicate worker names must be refused");
    let msg = e.to_string();
    assert!(msg.contains("`shared::name`"), "{msg}");
    assert!(msg.contains("duplicate_names.rs:3") && msg.contains("duplicate_names.rs:9"), "{msg}");
    assert!(msg.contains("name ="), "the message says how to fix it: {msg}");
    // Spawning is refused too: init never succeeded.
    let mut p = mp::Process::new(first, ());
    assert!(matches!(p.start(), Err(mp::Error::NotInitialized)));
    let _ = (first(), other::second());
    println!("duplicate_names: ok");
}

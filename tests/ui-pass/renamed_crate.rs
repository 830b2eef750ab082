// `#[mp::worker(crate = "…")]` for code that imports mp under another name.
extern crate mp as renamed;

use renamed::Worker;

#[renamed::worker(crate = "renamed")]
fn double(x: u64) -> u64 {
    x * 2
}

#[renamed::main(crate = "renamed")]
fn main() {
    assert_eq!(double(21), 42);
    assert_eq!(double.call(4), 8);
    assert_eq!(
        <double as Worker>::NAME,
        concat!(module_path!(), "::double")
    );
}

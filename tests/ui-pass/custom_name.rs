// `#[mp::worker(name = "…")]` registers the worker under a stable name of your choice.
#[mp::worker(name = "custom::name")]
fn w(a: i32, b: i32) -> i32 {
    a + b
}

fn main() {
    mp::init();
    assert_eq!(<w as mp::Worker>::NAME, "custom::name");
    assert!(mp::registered_workers().contains(&"custom::name"));
    assert_eq!(w(2, 3), 5);
}

//! Running mp's exit hook when `main` returns without `#[mp::main]`.

use std::sync::Once;

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

/// Registers `hook` to run when the process exits normally (returning from `main` or
/// `std::process::exit`), once, however often this is called.
pub fn at_exit(hook: extern "C" fn()) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `atexit` only stores the function pointer; `hook` is a plain `extern "C"`
        // function that never unwinds across the C boundary (callers catch panics inside it).
        unsafe { atexit(hook) };
    });
}

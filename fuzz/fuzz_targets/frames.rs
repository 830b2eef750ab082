//! The frame reader on arbitrary bytes: frames decode or fail with an error, and reading
//! always ends (no panic, no hang, no allocation driven by a lying length).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let limit = [16u64, 256, 1 << 20][usize::from(sel % 3)];
    mp_runtime::__fuzz::frames(rest, limit, sel & 4 != 0);
});

//! Both sides of the Listener/Client handshake on arbitrary bytes from the peer, and the
//! handshake state machine on arbitrary messages: always an error or success, never a panic
//! or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let key: Option<&[u8]> = match sel & 3 {
        0 => None,
        1 => Some(b""),
        _ => Some(b"key"),
    };
    mp_runtime::__fuzz::messages(data);
    let _ = mp_runtime::__fuzz::server_stream(rest, key);
    let _ = mp_runtime::__fuzz::client_stream(rest, key);
});

//! The one place that knows values are encoded with postcard.
//!
//! Handles that are file descriptors (a `Connection`, later queues and locks) serialize as an
//! index into a side table; the table travels with the frame as SCM_RIGHTS. The table lives in
//! a thread-local for the duration of one `encode`/`decode` call.

use std::cell::RefCell;
use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CodecDirection, Error};

thread_local! {
    // Descriptors of handles being encoded (sent with the frame) and decoded (received with
    // it). Two tables: a worker decodes its arguments and encodes its result in one call.
    static OUT: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static IN: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    // Descriptors pushed on this thread so far: a cheap "did that value carry any?" check.
    static PUSHED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    // Set while encoding for a TCP connection: handles refuse at once, naming the alternative.
    static REMOTE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    // Set while encoding a value to store in a Manager: handles refuse, naming its own kinds.
    static MANAGER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    // postcard drops custom error messages (it is no_std); ours are kept here.
    static LAST_CUSTOM: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// postcard flavor appending to an existing `Vec` (the frame header is already in it).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn codec_error<T: ?Sized>(direction: CodecDirection, e: postcard::Error) -> Error {
    let custom = LAST_CUSTOM.with(|c| c.borrow_mut().take());
    let message = match (e, custom) {
        (_, Some(msg)) => msg,
        (postcard::Error::WontImplement | postcard::Error::SerializeSeqLengthUnknown, _) => {
            "postcard cannot (de)serialize self-describing \
            constructs: #[serde(flatten)], #[serde(untagged)] enums, serde_json::Value and other \
            `deserialize_any` types; use plain structs and externally tagged enums"
                .to_string()
        }
        (postcard::Error::DeserializeUnexpectedEnd, _) => {
            "the data ended early: the sender and receiver disagree on the type (are both \
             sides the same binary and the same type?)"
                .to_string()
        }
        (e, None) => format!("{e}; check that both sides use the same type"),
    };
    Error::Codec { type_name: std::any::type_name::<T>().to_string(), direction, message }
}

/// Records the message of a custom serde error raised by one of mp's own handle types.
pub(crate) fn custom_error(msg: String) -> String {
    LAST_CUSTOM.with(|c| *c.borrow_mut() = Some(msg.clone()));
    msg
}

/// Appends the encoding of `value` to `out`. Descriptors it contains are refused.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    postcard::serialize_with_flavor(value, Append(out))
        .map_err(|e| codec_error::<T>(CodecDirection::Encode, e))
}

/// Appends the encoding of `value` to `out` and returns the descriptors it carries.
pub(crate) fn encode_with_fds<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<Vec<OwnedFd>, Error> {
    let (r, fds) = collecting_fds(|| encode_into(value, out));
    r.map(|()| fds)
}

/// Appends the encoding of `value` to `out` for a peer on another machine (TCP): a handle
/// inside it (anything backed by a file descriptor) is refused with an error that names the
/// Manager-backed alternative, instead of being sent.
pub(crate) fn encode_remote<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    // Reset even if a user's `Serialize` panics, so later local sends on this thread work.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            REMOTE.with(|r| r.set(false));
        }
    }
    REMOTE.with(|r| r.set(true));
    let _reset = Reset;
    encode_into(value, out)
}

/// Appends the encoding of `value` to `out` for a Manager's server (another process, maybe
/// on another machine): a handle inside it is refused with an error naming the manager's own
/// kinds of objects.
pub(crate) fn encode_for_manager<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            MANAGER.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(MANAGER.with(|r| r.replace(true)));
    encode_into(value, out)
}

/// Decodes a `T` from all of `bytes`; trailing bytes are an error (a type mismatch).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let (v, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| codec_error::<T>(CodecDirection::Decode, e))?;
    if !rest.is_empty() {
        return Err(Error::Codec {
            type_name: std::any::type_name::<T>().to_string(),
            direction: CodecDirection::Decode,
            message: format!("{} bytes were left over: the sender used a different type", rest.len()),
        });
    }
    Ok(v)
}

/// Decodes `count` values laid back to back in `bytes`, appending them to `out` (one
/// deserializer for all of them: the per-value set-up is measurable for tiny values).
pub(crate) fn decode_many<T: DeserializeOwned>(
    bytes: &[u8],
    count: usize,
    out: &mut Vec<T>,
) -> Result<(), Error> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    out.reserve(count);
    for _ in 0..count {
        out.push(T::deserialize(&mut de).map_err(|e| codec_error::<T>(CodecDirection::Decode, e))?);
    }
    Ok(())
}

/// Decodes a `T` from the front of `bytes`, returning the rest.
pub(crate) fn decode_prefix<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<(T, &'a [u8]), Error> {
    postcard::take_from_bytes::<T>(bytes).map_err(|e| codec_error::<T>(CodecDirection::Decode, e))
}

/// Decodes a `T` whose handles refer to `fds` (received with the frame).
pub(crate) fn decode_with_fds<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T, Error> {
    if fds.is_empty() {
        return decode(bytes);
    }
    with_fds(fds, || decode(bytes))
}

/// Runs `f` with `fds` as the descriptor table for handles decoded inside it.
pub(crate) fn with_fds<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    let prev = IN.with(|t| t.borrow_mut().replace(fds.into_iter().map(Some).collect()));
    let r = f();
    IN.with(|t| *t.borrow_mut() = prev);
    r
}

/// Runs `f` collecting the descriptors of handles encoded inside it.
pub(crate) fn collecting_fds<R>(f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let prev = OUT.with(|t| t.borrow_mut().replace(Vec::new()));
    let r = f();
    let fds = OUT.with(|t| std::mem::replace(&mut *t.borrow_mut(), prev));
    (r, fds.unwrap_or_default())
}

/// How many descriptors were pushed on this thread so far (compare before and after).
pub(crate) fn fds_pushed() -> u64 {
    PUSHED.with(|p| p.get())
}

/// Takes the descriptors collected so far by the enclosing `collecting_fds`.
pub(crate) fn take_collected_fds() -> Vec<OwnedFd> {
    OUT.with(|t| match &mut *t.borrow_mut() {
        Some(v) if !v.is_empty() => std::mem::take(v),
        _ => Vec::new(),
    })
}

/// Called by a handle's `Serialize`: hands `fd` to the frame being built, returns its index.
pub(crate) fn push_fd(fd: OwnedFd, what: &str) -> Result<u32, String> {
    if MANAGER.with(|r| r.get()) {
        return Err(custom_error(format!(
            "a {what} is backed by an OS handle (a file descriptor) and cannot be stored in or \
             sent through a Manager, whose server is another process (maybe on another machine); \
             use the manager's own objects instead (manager.lock(), manager.queue(), \
             manager.value(), manager.event()), or pass the {what} to workers as an argument"
        )));
    }
    if REMOTE.with(|r| r.get()) {
        return Err(custom_error(format!(
            "a {what} is backed by an OS handle (a file descriptor) and cannot travel over TCP to \
             another machine; share it through a Manager instead (mp::Manager: its proxies work \
             over TCP), or keep both processes on this machine and use a Unix-socket Listener"
        )));
    }
    OUT.with(|t| match &mut *t.borrow_mut() {
        Some(fds) => {
            PUSHED.with(|p| p.set(p.get() + 1));
            fds.push(fd);
            Ok((fds.len() - 1) as u32)
        }
        None => Err(custom_error(format!(
            "a {what} holds an OS handle and can only travel through mp itself (as a worker \
             argument or result, or through a Connection); it cannot be serialized with \
             another serde format"
        ))),
    })
}

/// Called by a handle's `Deserialize`: takes descriptor `i` of the frame being decoded.
pub(crate) fn take_fd(i: u32, what: &str) -> Result<OwnedFd, String> {
    IN.with(|t| match &mut *t.borrow_mut() {
        Some(fds) => fds
            .get_mut(i as usize)
            .and_then(Option::take)
            .ok_or_else(|| format!("the frame did not carry descriptor #{i} for a {what}")),
        None => Err(format!("a {what} can only be decoded by mp from a frame that carried its descriptor")),
    })
}

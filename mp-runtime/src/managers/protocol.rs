//! Request and reply frames between proxies and a manager server. See `README.md` here.

use serde::{Deserialize, Serialize};

use crate::error::{CodecDirection, Error};
use crate::wire::codec;

/// The head of every request; the operation's blobs follow (each a postcard byte string).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Request<'a> {
    /// The object called (0 for requests to the server itself).
    pub obj: u64,
    /// Take a reference for this process's session before the call (the first call of a
    /// proxy that arrived by value: a worker argument, or decoded outside a reply).
    pub acquire: bool,
    #[serde(borrow)]
    pub op: Op<'a>,
    /// `(blob index, object id)`: proxies of this manager encoded inside blob `index`. The
    /// stored value holds a reference on each, so a proxy kept in a dict stays live.
    pub refs: Vec<(u32, u64)>,
}

/// What kind of object `Create` makes.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjKind<'a> {
    Dict,
    List,
    Value,
    Queue,
    Lock,
    Event,
    Namespace,
    /// A `#[mp::managed]` type, by its registered name; blob 0 is the initial value.
    User(#[serde(borrow)] &'a str),
}

impl ObjKind<'_> {
    pub fn name(&self) -> &str {
        match self {
            ObjKind::Dict => "dict",
            ObjKind::List => "list",
            ObjKind::Value => "value",
            ObjKind::Queue => "queue",
            ObjKind::Lock => "lock",
            ObjKind::Event => "event",
            ObjKind::Namespace => "namespace",
            ObjKind::User(n) => n,
        }
    }
}

/// An operation. Blocking ones carry how long the server may wait (`wait_ms`); the server
/// waits at most one slice (`server::SLICE`) and answers `TimedOut`, the proxy asks again
/// until its own deadline, so a server thread never waits on a client that has gone.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Op<'a> {
    /// First request on a connection: which process (session) it belongs to.
    Hello {
        session: u64,
    },
    /// Stop the server (the manager's owner).
    Shutdown,
    Create {
        #[serde(borrow)]
        kind: ObjKind<'a>,
    },
    /// Drop `count` of this session's references to `obj`. Not answered.
    Release {
        count: u32,
    },
    /// A `#[mp::managed]` method; blob 0 is the argument tuple.
    Call {
        method: &'a str,
    },
    DictGet,
    DictInsert,
    DictRemove,
    DictContains,
    DictLen,
    DictKeys,
    DictValues,
    DictItems,
    /// Blobs: key, value, key, value…
    DictUpdate,
    DictClear,
    /// Blobs: key, the expected value as the server stores it (an encoded `Option<V>`, as
    /// `DictGet` answered it), the new value. Sets the key only while its value is still the
    /// expected one; answers `(swapped, Option<current value>)`, the current value when not
    /// swapped. What `DictProxy::update_with` retries on.
    DictSwapIf,
    ListPush,
    ListGet {
        index: u64,
    },
    ListSet {
        index: u64,
    },
    ListLen,
    ListPop,
    /// Blobs: the items.
    ListExtend,
    ListToVec,
    ListClear,
    ValueGet,
    ValueSet,
    QueuePut,
    QueueGet {
        wait_ms: u64,
    },
    QueueLen,
    LockAcquire {
        wait_ms: u64,
    },
    LockRelease,
    LockLocked,
    EventSet,
    EventClear,
    EventIsSet,
    EventWait {
        wait_ms: u64,
    },
    NsGet {
        name: &'a str,
    },
    NsSet {
        name: &'a str,
    },
    NsRemove {
        name: &'a str,
    },
    NsNames,
}

/// The head of every reply; on `Ok` the result follows, encoded so the proxy decodes it as
/// its Rust type directly (the server assembles it from stored encodings: `Option<V>` is a
/// 0/1 byte then `V`, `Vec<V>` a varint count then the items).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Reply {
    pub status: Status,
    /// Objects whose proxies are inside the result and on which the server took a reference
    /// for the caller's session: the decoded proxies own them.
    pub acquired: Vec<u64>,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Status {
    Ok,
    /// A blocking operation's slice ran out; ask again.
    TimedOut,
    Err(RemoteError),
}

/// An error raised in the server, sent back to the caller.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum RemoteError {
    Panic {
        method: String,
        message: String,
        location: Option<String>,
        backtrace: Option<String>,
    },
    Codec {
        type_name: String,
        message: String,
    },
    /// The object was released (no proxy or container held it any more).
    NoObject {
        id: u64,
    },
    /// A mistake in the call (an index out of range): reported, not logged.
    Invalid(String),
    /// Something a well-behaved proxy never asks (an unexposed method, an unknown type, an
    /// operation of another kind of object, a malformed request): reported and logged.
    Refused(String),
}

impl RemoteError {
    pub fn from_error(e: Error) -> RemoteError {
        match e {
            Error::Panic { worker, message, location, backtrace, .. } => {
                RemoteError::Panic { method: worker, message, location, backtrace }
            }
            Error::Codec { type_name, message, .. } => RemoteError::Codec { type_name, message },
            other => RemoteError::Invalid(other.to_string()),
        }
    }

    pub fn into_error(self) -> Error {
        match self {
            RemoteError::Panic { method, message, location, backtrace } => {
                Error::Panic { worker: method, message, location, backtrace, index: None }
            }
            RemoteError::Codec { type_name, message } => Error::Codec {
                type_name,
                direction: CodecDirection::Decode,
                message: format!("in the manager process: {message}"),
            },
            RemoteError::NoObject { id } => Error::Invalid(format!(
                "managed object #{id} no longer exists: every proxy to it was dropped (keep a proxy \
                 alive, or store it in a managed container, while other processes use it)"
            )),
            RemoteError::Invalid(m) | RemoteError::Refused(m) => Error::Invalid(format!("manager: {m}")),
        }
    }
}

/// Appends `value`'s encoding to `buf` as one blob (a length-prefixed byte string).
pub(crate) fn push_blob<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    let start = buf.len();
    codec::encode_for_manager(value, buf)?;
    let mut len = [0u8; 10];
    let prefix = varint(buf.len() - start, &mut len);
    buf.splice(start..start, prefix.iter().copied());
    Ok(())
}

/// Appends `raw` as a blob as it is (bytes already encoded, e.g. a value read back from the
/// server).
pub(crate) fn push_raw_blob(buf: &mut Vec<u8>, raw: &[u8]) {
    let mut len = [0u8; 10];
    buf.extend_from_slice(varint(raw.len(), &mut len));
    buf.extend_from_slice(raw);
}

/// postcard's varint for `usize` (LEB128), which prefixes sequences and byte strings.
pub(crate) fn varint(mut n: usize, out: &mut [u8; 10]) -> &[u8] {
    let mut i = 0;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out[i] = b;
            return &out[..=i];
        }
        out[i] = b | 0x80;
        i += 1;
    }
}

/// Splits the blobs that follow a request head.
pub(crate) fn blobs(mut rest: &[u8]) -> Result<Vec<&[u8]>, Error> {
    let mut v = Vec::new();
    while !rest.is_empty() {
        let (b, r) = codec::decode_prefix::<&[u8]>(rest)?;
        v.push(b);
        rest = r;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_varint_matches_postcard() {
        let mut buf = Vec::new();
        push_blob(&mut buf, &"key").unwrap();
        push_blob(&mut buf, &vec![7u64; 200]).unwrap();
        let b = blobs(&buf).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(codec::decode::<String>(b[0]).unwrap(), "key");
        assert_eq!(codec::decode::<Vec<u64>>(b[1]).unwrap(), vec![7u64; 200]);
        for n in [0usize, 1, 127, 128, 300, 1 << 20] {
            let mut out = [0u8; 10];
            let mut pc = Vec::new();
            codec::encode_into(&n, &mut pc).unwrap();
            assert_eq!(varint(n, &mut out), &pc[..]);
        }
    }
}

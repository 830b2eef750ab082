//! `mp::Pipe` and `Connection<T>`: typed, framed messages over a Unix socket pair, passable
//! to workers like any other argument.

use std::any::{Any, TypeId};
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::sys;
use crate::wire::{self, FrameReader, Kind, OutFrame, codec};

/// A failed send: the error, and the value, handed back so nothing is lost.
pub struct SendError<T> {
    /// The value that was not sent.
    pub value: T,
    /// Why.
    pub error: Error,
}

impl<T> SendError<T> {
    /// Takes the value back.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError").field("error", &self.error).finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send failed (the value is in SendError::value): {}", self.error)
    }
}

impl<T> std::error::Error for SendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<SendError<T>> for Error {
    fn from(e: SendError<T>) -> Error {
        e.error
    }
}

struct Inner {
    fd: OwnedFd,
    reader: Mutex<FrameReader>,
    writer: Mutex<()>,
    readable: bool,
    writable: bool,
    /// A TCP stream (from a `Listener` or `Client`): handles cannot travel on it.
    remote: bool,
}

/// One end of a [`Pipe`]: sends and receives values of type `T`.
///
/// Sending and receiving take `&self` (each direction is serialized internally), so a
/// `Connection` can be shared between threads. A `Connection` is itself `Serialize`: pass it
/// to a worker as an argument, or send it over another `Connection`, and the receiving
/// process gets a working end (the descriptor travels with SCM_RIGHTS).
///
/// # Examples
///
/// ```
/// let (a, b) = mp::Pipe::new::<String>().unwrap();
/// a.send("hello".to_string()).unwrap();
/// assert_eq!(b.recv().unwrap(), "hello");
/// drop(a);
/// assert!(matches!(b.recv(), Err(mp::Error::Disconnected { .. })));
/// ```
pub struct Connection<T> {
    inner: Option<Inner>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(i) => f
                .debug_struct("Connection")
                .field("fd", &i.fd)
                .field("readable", &i.readable)
                .field("writable", &i.writable)
                .field("remote", &i.remote)
                .finish(),
            None => f.write_str("Connection(closed)"),
        }
    }
}

/// Creates connected pairs of [`Connection`]s (Python's `multiprocessing.Pipe`).
#[derive(Debug)]
pub struct Pipe;

impl Pipe {
    /// A duplex pair: each end can send and receive.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = mp::Pipe::new::<i32>().unwrap();
    /// a.send(1).unwrap();
    /// b.send(2).unwrap();
    /// assert_eq!(b.recv().unwrap(), 1);
    /// assert_eq!(a.recv().unwrap(), 2);
    /// ```
    #[allow(clippy::new_ret_no_self)]
    pub fn new<T>() -> Result<(Connection<T>, Connection<T>), Error> {
        let (a, b) = sys::socketpair().map_err(|e| Error::io("creating a pipe", e))?;
        Ok((Connection::from_fd(a, true, true), Connection::from_fd(b, true, true)))
    }

    /// A one-way pair `(receiver, sender)`, like Python's `Pipe(duplex=False)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let (rx, tx) = mp::Pipe::simplex::<u8>().unwrap();
    /// tx.send(7).unwrap();
    /// assert_eq!(rx.recv().unwrap(), 7);
    /// assert!(rx.send(1).is_err()); // the receiving end cannot send
    /// ```
    pub fn simplex<T>() -> Result<(Connection<T>, Connection<T>), Error> {
        let (a, b) = sys::socketpair().map_err(|e| Error::io("creating a pipe", e))?;
        let _ = rustix::net::shutdown(&a, rustix::net::Shutdown::Write);
        let _ = rustix::net::shutdown(&b, rustix::net::Shutdown::Read);
        Ok((Connection::from_fd(a, true, false), Connection::from_fd(b, false, true)))
    }
}

/// Every connection polls briefly before it sleeps in a receive (`wire::Spin`): a round trip
/// whose answer comes within microseconds then costs no sleep and wake-up, the bulk of a
/// socket round trip; the window adapts to the waits, so an idle connection never polls.
/// `MP_BUSY_POLL=0` turns it off.
fn poll_before_sleeping(reader: &mut FrameReader) {
    if wire::busy_poll_enabled() {
        reader.spin = Some(Default::default());
    }
}

impl<T> From<std::os::unix::net::UnixStream> for Connection<T> {
    /// Wraps a connected Unix stream socket whose peer speaks mp frames (another
    /// `Connection`).
    fn from(s: std::os::unix::net::UnixStream) -> Self {
        Connection::from_fd(OwnedFd::from(s), true, true)
    }
}

impl<T> Connection<T> {
    fn from_fd(fd: OwnedFd, readable: bool, writable: bool) -> Self {
        let mut reader = FrameReader::new();
        poll_before_sleeping(&mut reader);
        Connection {
            inner: Some(Inner {
                fd,
                reader: Mutex::new(reader),
                writer: Mutex::new(()),
                readable,
                writable,
                remote: false,
            }),
            _t: PhantomData,
        }
    }

    /// A duplex connection over an authenticated socket, keeping the reader that did the
    /// handshake (it may hold the peer's first frames already). `remote`: a TCP stream.
    pub(crate) fn from_handshake(
        fd: OwnedFd,
        mut reader: FrameReader,
        remote: bool,
        limit: Option<u64>,
    ) -> Self {
        reader.limit = limit;
        reader.remote = remote;
        poll_before_sleeping(&mut reader);
        Connection {
            inner: Some(Inner {
                fd,
                reader: Mutex::new(reader),
                writer: Mutex::new(()),
                readable: true,
                writable: true,
                remote,
            }),
            _t: PhantomData,
        }
    }

    /// The socket, for a channel that will speak the child protocol on it (a remote pool
    /// worker). Refused if the handshake's reader already holds bytes of the next frame.
    pub(crate) fn into_fd(mut self) -> Result<OwnedFd, Error> {
        let inner = self.inner.take().ok_or(Error::Closed { what: "this Connection" })?;
        if inner.reader.lock().unwrap_or_else(|p| p.into_inner()).has_buffered() {
            return Err(Error::Protocol("the peer sent a frame before it was asked for one".into()));
        }
        Ok(inner.fd)
    }

    /// Whether this connection is a TCP stream (from a TCP [`Listener`](crate::Listener) or
    /// [`Client`](crate::Client)), over which values holding OS handles (Lock, Value,
    /// Connection, SharedMemory...) cannot be sent.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = mp::Pipe::new::<u8>().unwrap();
    /// assert!(!a.is_remote());
    /// ```
    pub fn is_remote(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.remote)
    }

    fn inner(&self, reading: bool) -> Result<&Inner, Error> {
        let inner = self.inner.as_ref().ok_or(Error::Closed { what: "this Connection" })?;
        match (reading, inner.readable, inner.writable) {
            (true, false, _) => Err(Error::invalid("this end of a simplex Pipe can only send")),
            (false, _, false) => Err(Error::invalid("this end of a simplex Pipe can only receive")),
            _ => Ok(inner),
        }
    }

    /// Closes this end now (dropping it does the same). Later calls return `Error::Closed`;
    /// the peer sees `Disconnected` once every copy of this end is closed.
    pub fn close(&mut self) {
        self.inner = None;
    }

    /// Sets the largest message this end accepts (default: [`max_frame_size`](crate::max_frame_size)).
    /// A larger incoming message is skipped and reported as `Error::Protocol`; the
    /// connection stays usable.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = mp::Pipe::new::<Vec<u8>>().unwrap();
    /// b.set_max_message_size(16).unwrap();
    /// a.send(vec![0; 100]).unwrap();
    /// a.send(vec![1]).unwrap();
    /// assert!(matches!(b.recv(), Err(mp::Error::Protocol(_))));
    /// assert_eq!(b.recv().unwrap(), vec![1]);
    /// ```
    pub fn set_max_message_size(&self, bytes: u64) -> Result<(), Error> {
        let inner = self.inner.as_ref().ok_or(Error::Closed { what: "this Connection" })?;
        inner.reader.lock().unwrap_or_else(|p| p.into_inner()).limit = Some(bytes);
        Ok(())
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_none()
    }

    /// Sends raw bytes without encoding (Python's `send_bytes`); receive them with
    /// [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = mp::Pipe::new::<()>().unwrap();
    /// a.send_bytes(b"raw").unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), b"raw");
    /// ```
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        let inner = self.inner(false)?;
        let _w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        wire::send_parts(inner.fd.as_fd(), Kind::Bytes, &[bytes], "a Connection")
    }

    /// Receives one message sent with [`send_bytes`](Self::send_bytes).
    pub fn recv_bytes(&self) -> Result<Vec<u8>, Error> {
        self.recv_frame(None, None, Kind::Bytes).map(|f| f.payload)
    }

    /// Receives one [`send_bytes`](Self::send_bytes) message into `buf` (replacing its
    /// contents), reusing its allocation: for repeated large messages this avoids mapping
    /// fresh memory each time (Python's `recv_bytes_into`). Returns the message length.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = mp::Pipe::new::<()>().unwrap();
    /// let mut buf = Vec::with_capacity(1 << 20);
    /// a.send_bytes(b"first").unwrap();
    /// assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 5);
    /// assert_eq!(buf, b"first");
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize, Error> {
        let inner = self.inner(true)?;
        let mut reader = inner.reader.lock().unwrap_or_else(|p| p.into_inner());
        reader.spare = Some(std::mem::take(buf));
        let r = reader.read(inner.fd.as_fd(), None, "a Connection");
        if let Some(v) = reader.spare.take() {
            *buf = v; // no frame was started: give the buffer back untouched
        }
        match r {
            Ok(f) if f.kind == Kind::Bytes => {
                *buf = f.payload;
                Ok(buf.len())
            }
            Ok(f) => Err(Error::Protocol(format!(
                "expected a Bytes message but a {:?} message arrived (send_bytes pairs with recv_bytes)",
                f.kind
            ))),
            Err(e) => Err(e),
        }
    }

    /// [`recv_bytes`](Self::recv_bytes) with a timeout.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.recv_frame(Some(Instant::now() + timeout), Some(timeout), Kind::Bytes).map(|f| f.payload)
    }

    /// Whether a message can be received without blocking, waiting up to `timeout` for one
    /// (`Duration::ZERO` just checks). True also when the peer is gone, so the next `recv`
    /// reports `Disconnected` at once.
    pub fn poll(&self, timeout: Duration) -> Result<bool, Error> {
        let inner = self.inner(true)?;
        if inner.reader.lock().unwrap_or_else(|p| p.into_inner()).has_buffered() {
            return Ok(true);
        }
        sys::wait_readable(inner.fd.as_fd(), Some(Instant::now() + timeout))
            .map_err(|e| Error::io("polling a Connection", e))
    }

    fn recv_frame(
        &self,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        want: Kind,
    ) -> Result<wire::Frame, Error> {
        let inner = self.inner(true)?;
        let mut reader = inner.reader.lock().unwrap_or_else(|p| p.into_inner());
        match reader.read(inner.fd.as_fd(), deadline, "a Connection") {
            Ok(f) if f.kind == want => Ok(f),
            Ok(f) => Err(Error::Protocol(format!(
                "expected a {want:?} message but a {:?} message arrived (send_bytes pairs with \
                 recv_bytes, send with recv)",
                f.kind
            ))),
            Err(Error::Timeout { what, .. }) => {
                Err(Error::Timeout { what, after: timeout.unwrap_or_default() })
            }
            Err(e) => Err(e),
        }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Connection<T> {
    /// Sends `value` to the other end. Handles inside it (other Connections) travel too.
    ///
    /// On failure the value comes back in [`SendError`]; `?` turns it into an `mp::Error`.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = mp::Pipe::new::<Vec<u32>>().unwrap();
    /// a.send(vec![1, 2, 3]).unwrap();
    /// assert_eq!(b.recv().unwrap(), vec![1, 2, 3]);
    /// ```
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        match self.try_send(&value) {
            Ok(()) => Ok(()),
            Err(error) => Err(SendError { value, error }),
        }
    }

    fn try_send(&self, value: &T) -> Result<(), Error> {
        let inner = self.inner(false)?;
        if let Some(bytes) = (value as &dyn Any).downcast_ref::<Vec<u8>>() {
            // Same bytes as serde would write (a varint length, then the bytes), without
            // serde's byte-at-a-time loop and without copying the buffer.
            let mut prefix = Vec::with_capacity(10);
            codec::encode_into(&bytes.len(), &mut prefix)?;
            let _w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            return wire::send_parts(inner.fd.as_fd(), Kind::Data, &[&prefix, bytes], "a Connection");
        }
        let mut frame = OutFrame::new(Kind::Data);
        if inner.remote {
            codec::encode_remote(value, &mut frame.buf)?;
        } else {
            frame.fds = codec::encode_with_fds(value, &mut frame.buf)?;
        }
        let _w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        frame.send(inner.fd.as_fd(), "a Connection")
    }

    /// Receives the next value, blocking until one arrives. `Error::Disconnected` when every
    /// copy of the other end is closed and nothing is left to read.
    pub fn recv(&self) -> Result<T, Error> {
        let f = self.recv_frame(None, None, Kind::Data)?;
        decode_value(f)
    }

    /// [`recv`](Self::recv), giving up after `timeout` with `Error::Timeout` (nothing is
    /// lost: a message that was arriving is kept for the next call).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, _b) = mp::Pipe::new::<i32>().unwrap();
    /// assert!(matches!(a.recv_timeout(Duration::from_millis(10)), Err(mp::Error::Timeout { .. })));
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, Error> {
        let f = self.recv_frame(Some(Instant::now() + timeout), Some(timeout), Kind::Data)?;
        decode_value(f)
    }
}

/// Decodes a received value; a `Vec<u8>` reuses the frame's buffer instead of being rebuilt
/// byte by byte.
fn decode_value<T: DeserializeOwned + 'static>(f: wire::Frame) -> Result<T, Error> {
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        let (len, rest) = codec::decode_prefix::<usize>(&f.payload)?;
        if rest.len() == len {
            let mut payload = f.payload;
            let skip = payload.len() - len;
            payload.drain(..skip);
            let boxed: Box<dyn Any> = Box::new(payload);
            if let Ok(v) = boxed.downcast::<T>() {
                return Ok(*v);
            }
        }
        return Err(Error::Codec {
            type_name: std::any::type_name::<T>().to_string(),
            direction: crate::error::CodecDirection::Decode,
            message: "the byte string's length does not match the frame".into(),
        });
    }
    codec::decode_with_fds(&f.payload, f.fds)
}

#[derive(Serialize, Deserialize)]
struct Wire {
    fd: u32,
    readable: bool,
    writable: bool,
    remote: bool,
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let inner = self
            .inner
            .as_ref()
            .ok_or_else(|| S::Error::custom(codec::custom_error("cannot send a closed Connection".into())))?;
        let dup = inner.fd.try_clone().map_err(|e| {
            S::Error::custom(codec::custom_error(format!("cannot duplicate a Connection: {e}")))
        })?;
        let fd = codec::push_fd(dup, "Connection").map_err(S::Error::custom)?;
        Wire { fd, readable: inner.readable, writable: inner.writable, remote: inner.remote }.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let fd = codec::take_fd(w.fd, "Connection").map_err(D::Error::custom)?;
        let mut c = Connection::from_fd(fd, w.readable, w.writable);
        if w.remote {
            if let Some(i) = &mut c.inner {
                i.remote = true;
                i.reader.get_mut().unwrap_or_else(|p| p.into_inner()).remote = true;
            }
        }
        Ok(c)
    }
}

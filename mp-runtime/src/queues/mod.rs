//! `Queue`, `JoinableQueue`, `SimpleQueue`: multi-producer, multi-consumer queues between
//! processes, on a ring in shared memory (see README.md for the protocol).

mod ring;

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use self::ring::{PutFail, Ring};
use crate::connection::SendError;
use crate::error::{CodecDirection, Error};
use crate::synchronize::Words;
use crate::wire::codec;

/// The ring's size unless [`QueueBuilder::buffer_size`] says otherwise.
const DEFAULT_BUFFER: usize = 16 << 20;

thread_local! {
    // Encoding and decoding buffers, reused across calls on this thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer is kept for the next call only if it stayed this small.
const SCRATCH_KEEP: usize = 1 << 20;

/// Runs `f` with this thread's scratch buffer (a fresh one if a call is already using it).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= SCRATCH_KEEP {
        SCRATCH.with(|s| *s.borrow_mut() = buf);
    }
    r
}

/// A first-in, first-out queue between processes: Python's `multiprocessing.Queue`.
///
/// Any number of processes put and get; each producer's messages come out in the order it
/// put them. A `Queue` is an ordinary argument: pass it (or a clone — clones are the same
/// queue) to a worker or send it through a [`Connection`](crate::Connection).
///
/// Messages live in a ring buffer in shared memory (16 MiB unless
/// [`buffer_size`](QueueBuilder::buffer_size) says otherwise; its pages are allocated as they
/// are first written). `put` copies the encoded value into the ring and returns: there is no
/// feeder thread, so nothing is lost when a process exits right after `put`, and no
/// `join_thread`/`cancel_join_thread` dance. Messages of any size up to
/// [`max_frame_size`](crate::max_frame_size) pass: one bigger than a ring fragment streams
/// through it while a consumer copies it out.
///
/// * Unbounded ([`new`](Queue::new)): `put` waits only if the ring's bytes are all taken by
///   messages nobody has read yet (Python would buffer them in the producer's memory instead).
/// * Bounded ([`bounded`](Queue::bounded)): at most `maxsize` messages; `put` waits for a
///   slot, `put_timeout`/`try_put` give up with [`Error::Full`] (Python's `queue.Full`).
/// * `get` waits for a message; `get_timeout`/`try_get` give up with [`Error::Empty`].
///
/// A process that dies in the middle of a `put` or a `get` does not wedge the queue: the
/// next producer or consumer takes over, a half-put message is dropped (it was never put), and
/// a message whose `get` was interrupted is lost with its process (as in Python). Values that
/// carry OS handles (a `Lock`, a `Connection`, another `Queue`) cannot be put: pass those as
/// worker arguments or through a `Connection`.
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn produce(q: mp::Queue<String>, n: usize) {
///     for i in 0..n {
///         q.put(format!("item {i}")).unwrap();
///     }
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let q = mp::Queue::new()?;
/// let mut p = mp::Process::new(produce, (q.clone(), 3));
/// p.start()?;
/// for i in 0..3 {
///     assert_eq!(q.get()?, format!("item {i}"));
/// }
/// p.join()?;
/// # Ok(()) }
/// ```
pub struct Queue<T> {
    ring: Option<Arc<Ring>>,
    _marker: PhantomData<fn(T) -> T>,
}

/// Options for a [`Queue`] (or a [`JoinableQueue`]): `Queue::builder().maxsize(100).build()`.
///
/// # Examples
///
/// ```
/// let q: mp::Queue<u64> = mp::Queue::builder().maxsize(2).buffer_size(1 << 20).build()?;
/// q.put(1)?;
/// q.put(2)?;
/// assert!(matches!(q.try_put(3), Err(e) if matches!(e.error, mp::Error::Full)));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct QueueBuilder<T> {
    maxsize: Option<usize>,
    buffer: usize,
    _marker: PhantomData<fn(T) -> T>,
}

impl<T> QueueBuilder<T> {
    /// At most `n` messages at a time (at least 1); `put` waits for a slot. Default: no limit.
    pub fn maxsize(mut self, n: usize) -> Self {
        self.maxsize = Some(n);
        self
    }

    /// The ring's size in bytes, rounded up to a power of two (64 KiB to 2 GiB; default
    /// 16 MiB). Unread messages must fit in it, or `put` waits; a bigger one streams.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer = bytes;
        self
    }

    fn ring(&self, joinable: bool) -> Result<Ring, Error> {
        let buffer = self.buffer.checked_next_power_of_two().unwrap_or(usize::MAX);
        if !(ring::MIN_CAPACITY..=ring::MAX_CAPACITY).contains(&buffer) {
            return Err(Error::invalid(format!(
                "a Queue's buffer_size must be between {} KiB and {} MiB, not {} bytes",
                ring::MIN_CAPACITY >> 10,
                ring::MAX_CAPACITY >> 20,
                self.buffer
            )));
        }
        let maxsize = match self.maxsize {
            Some(0) => {
                return Err(Error::invalid(
                    "a bounded Queue needs a maxsize of at least 1; use Queue::new() for an unbounded one",
                ));
            }
            Some(n) => n as u64,
            None => 0,
        };
        Ring::create(buffer, maxsize, joinable)
    }

    /// Creates the queue.
    pub fn build(self) -> Result<Queue<T>, Error> {
        Ok(Queue::from_ring(self.ring(false)?))
    }

    /// Creates a [`JoinableQueue`] with these options.
    ///
    /// # Examples
    ///
    /// ```
    /// let q: mp::JoinableQueue<u8> = mp::Queue::builder().maxsize(8).build_joinable()?;
    /// q.put(1)?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn build_joinable(self) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { queue: Queue::from_ring(self.ring(true)?) })
    }
}

impl<T> Queue<T> {
    fn from_ring(ring: Ring) -> Self {
        Queue { ring: Some(Arc::new(ring)), _marker: PhantomData }
    }

    /// Options: a message limit and the ring's size.
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder { maxsize: None, buffer: DEFAULT_BUFFER, _marker: PhantomData }
    }

    /// An unbounded queue (Python's `Queue()`).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::Queue::new()?;
    /// q.put("hello".to_string())?;
    /// assert_eq!(q.get()?, "hello");
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// A queue holding at most `maxsize` messages (Python's `Queue(maxsize)`); 0 is an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = mp::Queue::bounded(1)?;
    /// q.put(1)?;
    /// let full = q.put_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(full.error, mp::Error::Full));
    /// assert_eq!(full.into_inner(), 2); // nothing is lost
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn bounded(maxsize: usize) -> Result<Self, Error> {
        Self::builder().maxsize(maxsize).build()
    }

    fn ring(&self) -> Result<&Ring, Error> {
        self.ring.as_deref().ok_or(Error::Closed { what: "this Queue handle" })
    }

    /// How many messages are waiting (Python's `qsize()`). Exact at the moment it reads, and
    /// stale as soon as another process puts or gets; a message being read counts as taken.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::Queue::new()?;
    /// q.put(1u8)?;
    /// q.put(2u8)?;
    /// assert_eq!(q.qsize()?, 2);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn qsize(&self) -> Result<usize, Error> {
        Ok(self.ring()?.len() as usize)
    }

    /// Whether no message is waiting (as [`qsize`](Queue::qsize), as soon stale).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::Queue::<u8>::new()?;
    /// assert!(q.empty()?);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn empty(&self) -> Result<bool, Error> {
        Ok(self.ring()?.len() == 0)
    }

    /// Whether a bounded queue holds `maxsize` messages (never, for an unbounded one).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::Queue::bounded(1)?;
    /// q.put(0u8)?;
    /// assert!(q.full()?);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn full(&self) -> Result<bool, Error> {
        let ring = self.ring()?;
        Ok(ring.maxsize() > 0 && ring.len() >= ring.maxsize())
    }

    /// The message limit of a bounded queue, `None` for an unbounded one.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(mp::Queue::<u8>::bounded(3)?.maxsize(), Some(3));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        let m = self.ring.as_ref()?.maxsize();
        (m > 0).then_some(m as usize)
    }

    /// Closes this handle (Python's `close()`): it can no longer put or get, and gives its
    /// mapping back. Other handles, in this process or others, are unaffected; messages
    /// already put stay in the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut q = mp::Queue::new()?;
    /// q.put(1)?;
    /// q.close();
    /// assert!(q.is_closed());
    /// assert!(matches!(q.get(), Err(mp::Error::Closed { .. })));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn close(&mut self) {
        self.ring = None;
    }

    /// Whether [`close`](Queue::close) was called on this handle.
    pub fn is_closed(&self) -> bool {
        self.ring.is_none()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Queue<T> {
    /// Puts `value` at the end of the queue, waiting for a slot (bounded queue) or ring space
    /// as long as it takes. On failure the value comes back in [`SendError`]; `?` turns it
    /// into an `mp::Error`.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::Queue::new()?;
    /// q.put(vec![1.5f64, 2.5])?;
    /// assert_eq!(q.get()?, vec![1.5, 2.5]);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn put(&self, value: T) -> Result<(), SendError<T>> {
        self.put_until(value, None)
    }

    /// [`put`](Queue::put), giving up after `timeout` with [`Error::Full`] (the value comes
    /// back in the error).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = mp::Queue::bounded(1)?;
    /// q.put_timeout('a', Duration::from_secs(1))?;
    /// assert!(q.put_timeout('b', Duration::from_millis(1)).is_err());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.put_until(value, Instant::now().checked_add(timeout))
    }

    /// Puts `value` only if that needs no waiting (Python's `put_nowait`): [`Error::Full`]
    /// otherwise, with the value handed back.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::Queue::bounded(1)?;
    /// q.try_put(1)?;
    /// let e = q.try_put(2).unwrap_err();
    /// assert!(matches!(e.error, mp::Error::Full));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn try_put(&self, value: T) -> Result<(), SendError<T>> {
        self.put_until(value, Some(Instant::now()))
    }

    fn put_until(&self, value: T, deadline: Option<Instant>) -> Result<(), SendError<T>> {
        match self.try_put_ref(&value, deadline) {
            Ok(()) => Ok(()),
            Err(error) => Err(SendError { value, error }),
        }
    }

    fn try_put_ref(&self, value: &T, deadline: Option<Instant>) -> Result<(), Error> {
        let ring = self.ring()?;
        let put = |parts: &[&[u8]]| {
            let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
            if total > crate::wire::max_frame_size() {
                return Err(too_big_to_put::<T>(total));
            }
            ring.put(parts, deadline).map_err(|e| match e {
                PutFail::Full => Error::Full,
                PutFail::Error(e) => e,
            })
        };
        if let Some(bytes) = (value as &dyn Any).downcast_ref::<Vec<u8>>() {
            // The bytes serde would write (a varint length, then the bytes), without serde's
            // byte-at-a-time loop and without an intermediate copy.
            let mut prefix = Vec::with_capacity(10);
            codec::encode_into(&bytes.len(), &mut prefix)?;
            return put(&[&prefix, bytes]);
        }
        with_scratch(|buf| {
            let fds = codec::encode_with_fds(value, buf)?;
            if !fds.is_empty() {
                return Err(Error::Codec {
                    type_name: std::any::type_name::<T>().to_string(),
                    direction: CodecDirection::Encode,
                    message: "it holds an OS handle (a Lock, Value, Connection, Queue or shared \
                              memory), which cannot travel through a Queue's shared memory; pass \
                              it as a worker argument or send it through a Connection"
                        .into(),
                });
            }
            put(&[buf])
        })
    }

    /// Takes the next message, waiting as long as it takes.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::Queue::new()?;
    /// q.put((1, "one".to_string()))?;
    /// assert_eq!(q.get()?, (1, "one".to_string()));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn get(&self) -> Result<T, Error> {
        self.get_until(None)
    }

    /// [`get`](Queue::get), giving up with [`Error::Empty`] if no message starts arriving
    /// within `timeout` (one that has started is received whole).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = mp::Queue::<u8>::new()?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(mp::Error::Empty)));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.get_until(Instant::now().checked_add(timeout))
    }

    /// Takes a message if one is waiting (Python's `get_nowait`): [`Error::Empty`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::Queue::new()?;
    /// assert!(matches!(q.try_get(), Err(mp::Error::Empty)));
    /// q.put(7)?;
    /// assert_eq!(q.try_get()?, 7);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T, Error> {
        self.get_until(Some(Instant::now()))
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<T, Error> {
        let ring = self.ring()?;
        if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
            let mut out = Vec::new();
            if !ring.get(&mut out, true, deadline)? {
                return Err(Error::Empty);
            }
            let boxed: Box<dyn Any> = Box::new(out);
            return Ok(*boxed.downcast::<T>().expect("T is Vec<u8>"));
        }
        with_scratch(|buf| {
            if !ring.get(buf, false, deadline)? {
                return Err(Error::Empty);
            }
            codec::decode(buf)
        })
    }
}

fn too_big_to_put<T>(total: u64) -> Error {
    Error::Codec {
        type_name: std::any::type_name::<T>().to_string(),
        direction: CodecDirection::Encode,
        message: format!(
            "the value encodes to {total} bytes, over the {}-byte message limit; raise it with \
             mp::set_max_frame_size (or MP_MAX_FRAME_SIZE) in every process using the queue",
            crate::wire::max_frame_size()
        ),
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { ring: self.ring.clone(), _marker: PhantomData }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ring {
            Some(r) => r.fmt(f),
            None => f.write_str("Queue(closed)"),
        }
    }
}

/// A queue travels as its shared region's descriptor; the receiver maps the same ring.
impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ring = self.ring.as_ref().ok_or_else(|| {
            S::Error::custom(codec::custom_error("cannot send a closed Queue handle".into()))
        })?;
        ring.words().serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let words = Words::deserialize(d)?;
        let ring = Ring::open(words).map_err(|e| D::Error::custom(codec::custom_error(e.to_string())))?;
        Ok(Queue::from_ring(ring))
    }
}

/// A [`Queue`] that also counts unfinished tasks: Python's `multiprocessing.JoinableQueue`.
///
/// Every `put` adds a task; a consumer calls [`task_done`](JoinableQueue::task_done) once per
/// message it has processed, and [`join`](JoinableQueue::join) waits until every task put so
/// far is done. All of [`Queue`]'s methods are available (through `Deref`).
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn consume(q: mp::JoinableQueue<u32>) {
///     loop {
///         let n = q.get().unwrap();
///         q.task_done().unwrap();
///         if n == 0 {
///             break;
///         }
///     }
/// }
///
/// # fn main() -> Result<(), mp::Error> {
/// mp::init();
/// let q = mp::JoinableQueue::new()?;
/// let mut p = mp::Process::new(consume, q.clone());
/// p.start()?;
/// for n in [3, 2, 1, 0] {
///     q.put(n)?;
/// }
/// q.join()?; // all four were marked done
/// p.join()?;
/// # Ok(()) }
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> JoinableQueue<T> {
    /// An unbounded joinable queue (see [`Queue::builder`] for options).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::JoinableQueue::<i32>::new()?;
    /// q.join()?; // nothing was put: returns at once
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new() -> Result<Self, Error> {
        Queue::builder().build_joinable()
    }

    /// A joinable queue holding at most `maxsize` messages.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::JoinableQueue::bounded(1)?;
    /// q.put(1)?;
    /// assert!(q.full()?);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn bounded(maxsize: usize) -> Result<Self, Error> {
        Queue::builder().maxsize(maxsize).build_joinable()
    }

    fn ring(&self) -> Result<&Ring, Error> {
        self.queue.ring.as_deref().ok_or(Error::Closed { what: "this JoinableQueue handle" })
    }

    /// Marks one task done (Python's `task_done()`). Calling it more times than messages were
    /// put is an `Error::Invalid` and changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::JoinableQueue::new()?;
    /// q.put("job".to_string())?;
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.task_done().is_err()); // one too many
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<(), Error> {
        self.ring()?.task_done()
    }

    /// Waits until every task put so far is marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::JoinableQueue::new()?;
    /// q.put(1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// q.join()?;
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn join(&self) -> Result<(), Error> {
        self.ring()?.join(None)?;
        Ok(())
    }

    /// [`join`](JoinableQueue::join), giving up with `Error::Timeout` after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = mp::JoinableQueue::new()?;
    /// q.put(1)?;
    /// assert!(matches!(q.join_timeout(Duration::from_millis(10)), Err(mp::Error::Timeout { .. })));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), Error> {
        if self.ring()?.join(Instant::now().checked_add(timeout))? {
            Ok(())
        } else {
            Err(Error::Timeout {
                what: "waiting for a JoinableQueue's tasks to be done".into(),
                after: timeout,
            })
        }
    }

    /// Tasks put and not yet marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::JoinableQueue::new()?;
    /// q.put(1)?;
    /// assert_eq!(q.unfinished_tasks()?, 1);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn unfinished_tasks(&self) -> Result<usize, Error> {
        Ok(self.ring()?.unfinished() as usize)
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> DerefMut for JoinableQueue<T> {
    fn deref_mut(&mut self) -> &mut Queue<T> {
        &mut self.queue
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.queue).finish()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let queue = Queue::deserialize(d)?;
        if !queue.ring.as_ref().is_some_and(|r| r.is_joinable()) {
            return Err(D::Error::custom(codec::custom_error(
                "received a plain Queue where a JoinableQueue was expected".into(),
            )));
        }
        Ok(JoinableQueue { queue })
    }
}

/// The simplest queue: Python's `multiprocessing.SimpleQueue` (`put`, `get`, `empty`,
/// `close`). Unbounded, on the same shared-memory ring as [`Queue`].
///
/// # Examples
///
/// ```
/// let q = mp::SimpleQueue::new()?;
/// q.put([1u8, 2, 3])?;
/// assert!(!q.empty()?);
/// assert_eq!(q.get()?, [1, 2, 3]);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T> SimpleQueue<T> {
    /// A new empty queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::SimpleQueue::<String>::new()?;
    /// assert!(q.empty()?);
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn new() -> Result<Self, Error> {
        Ok(SimpleQueue { queue: Queue::new()? })
    }

    /// Whether no message is waiting.
    pub fn empty(&self) -> Result<bool, Error> {
        self.queue.empty()
    }

    /// Closes this handle (see [`Queue::close`]).
    pub fn close(&mut self) {
        self.queue.close()
    }

    /// Whether this handle was closed.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> SimpleQueue<T> {
    /// Puts `value` at the end (see [`Queue::put`]).
    pub fn put(&self, value: T) -> Result<(), SendError<T>> {
        self.queue.put(value)
    }

    /// Takes the next message, waiting as long as it takes.
    pub fn get(&self) -> Result<T, Error> {
        self.queue.get()
    }

    /// [`get`](SimpleQueue::get), giving up with [`Error::Empty`] after `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = mp::SimpleQueue::<u8>::new()?;
    /// assert!(q.get_timeout(std::time::Duration::from_millis(5)).is_err());
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.queue.get_timeout(timeout)
    }
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue { queue: self.queue.clone() }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimpleQueue").field(&self.queue).finish()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SimpleQueue { queue: Queue::deserialize(d)? })
    }
}

//! Where a pool's answers land: a `Collector` per job, filled by the manager thread with
//! still-encoded replies and drained (decoded) by the caller's thread.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bootstrap::Failure;
use crate::error::Error;
use crate::pool::progress::Progress;
use crate::registry::Worker;
use crate::wire::codec;

/// Answers for consecutive items of a job, as the manager received them.
pub(crate) enum Delivery {
    /// `count` items starting at job index `first`: the outputs of those not in `failures`
    /// (indices relative to `first`) back to back from `offset` on.
    Part { first: usize, count: usize, payload: Vec<u8>, offset: usize, failures: Vec<(u32, Failure)> },
    /// One item answered by a single-call reply (encoded output from `offset`, with its
    /// descriptors), or failed in the parent's view (worker died, timeout, pool closed).
    One { index: usize, result: Result<(Vec<u8>, usize, Vec<OwnedFd>), Error> },
}

impl Delivery {
    fn first(&self) -> usize {
        match self {
            Delivery::Part { first, .. } => *first,
            Delivery::One { index, .. } => *index,
        }
    }

    fn count(&self) -> usize {
        match self {
            Delivery::Part { count, .. } => *count,
            Delivery::One { .. } => 1,
        }
    }

    /// Decodes every item, in order, calling `f(index, result)`.
    pub fn decode<W: Worker>(self, mut f: impl FnMut(usize, Result<W::Output, Error>)) {
        match self {
            Delivery::One { index, result } => {
                let r = result.and_then(|(payload, offset, fds)| {
                    codec::decode_with_fds::<W::Output>(&payload[offset..], fds)
                });
                f(index, r.map_err(|e| e.with_index(index)));
            }
            Delivery::Part { first, count, payload, offset, failures } => {
                let mut rest = &payload[offset..];
                let mut failures = failures.into_iter().peekable();
                let mut broken: Option<String> = None;
                for k in 0..count {
                    let i = first + k;
                    if failures.peek().is_some_and(|(j, _)| *j as usize == k) {
                        let (_, failure) = failures.next().expect("peeked");
                        f(i, Err(failure.into_error(W::NAME).with_index(i)));
                        continue;
                    }
                    if let Some(msg) = &broken {
                        f(i, Err(Error::Protocol(msg.clone())));
                        continue;
                    }
                    match codec::decode_prefix::<W::Output>(rest) {
                        Ok((v, r)) => {
                            rest = r;
                            f(i, Ok(v));
                        }
                        Err(e) => {
                            // The outputs after an undecodable one cannot be located.
                            broken = Some(format!("a reply could not be decoded past input #{i}: {e}"));
                            f(i, Err(e.with_index(i)));
                        }
                    }
                }
            }
        }
    }
}

struct State {
    ordered: BTreeMap<usize, Delivery>,
    arrival: VecDeque<Delivery>,
    keep_order: bool,
    received: usize,
}

/// One job's answers. The manager pushes; the caller waits and takes.
pub(crate) struct Collector {
    state: Mutex<State>,
    cv: Condvar,
}

impl Collector {
    pub fn new(keep_order: bool) -> Arc<Collector> {
        Arc::new(Collector {
            state: Mutex::new(State {
                ordered: BTreeMap::new(),
                arrival: VecDeque::new(),
                keep_order,
                received: 0,
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, d: Delivery) {
        let mut s = self.lock();
        s.received += d.count();
        if s.keep_order {
            s.ordered.insert(d.first(), d);
        } else {
            s.arrival.push_back(d);
        }
        drop(s);
        self.cv.notify_all();
    }

    /// How many items have been answered.
    pub fn received(&self) -> usize {
        self.lock().received
    }

    /// Waits until `n` items are answered; false on timeout.
    pub fn wait_for(&self, n: usize, deadline: Option<Instant>) -> bool {
        let mut s = self.lock();
        while s.received < n {
            s = match deadline {
                None => self.cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.cv.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        true
    }

    /// Takes everything received so far, in index order.
    pub fn take_all(&self) -> Vec<Delivery> {
        let mut s = self.lock();
        let mut v: Vec<Delivery> = std::mem::take(&mut s.ordered).into_values().collect();
        v.extend(s.arrival.drain(..));
        v
    }

    /// Blocks for the delivery starting at `index` (ordered jobs).
    pub fn take_at(&self, index: usize) -> Delivery {
        let mut s = self.lock();
        loop {
            if let Some(d) = s.ordered.remove(&index) {
                return d;
            }
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Blocks for the next delivery in arrival order (unordered jobs).
    pub fn take_next(&self) -> Delivery {
        let mut s = self.lock();
        loop {
            if let Some(d) = s.arrival.pop_front() {
                return d;
            }
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The pending result of [`Pool::apply_async`](crate::Pool::apply_async).
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn square(x: i32) -> i32 { x * x }
///
/// mp::init();
/// let pool = mp::Pool::new(1).unwrap();
/// let r = pool.apply_async(square, 7).unwrap();
/// r.wait();
/// assert!(r.ready());
/// assert_eq!(r.get().unwrap(), 49);
/// ```
pub struct AsyncResult<T> {
    collector: Arc<Collector>,
    taken: bool,
    worker: &'static str,
    decode: fn(Delivery) -> Result<T, Error>,
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("worker", &self.worker).field("ready", &self.ready()).finish()
    }
}

fn decode_one<W: Worker>(d: Delivery) -> Result<W::Output, Error> {
    let mut out = None;
    d.decode::<W>(|_, r| out = Some(r));
    out.unwrap_or_else(|| Err(Error::Protocol("an empty reply".into())))
}

impl<T> AsyncResult<T> {
    pub(crate) fn new<W: Worker<Output = T>>(collector: Arc<Collector>) -> Self {
        AsyncResult { collector, taken: false, worker: W::NAME, decode: decode_one::<W> }
    }

    /// Whether the result has arrived.
    pub fn ready(&self) -> bool {
        self.collector.received() >= 1
    }

    /// Blocks until the result has arrived.
    pub fn wait(&self) {
        self.collector.wait_for(1, None);
    }

    /// Blocks until the result has arrived or `timeout` passed; true if it arrived.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.collector.wait_for(1, Some(Instant::now() + timeout))
    }

    /// Waits for and returns the result: the worker's value, or why there is none.
    pub fn get(mut self) -> Result<T, Error> {
        self.take(None)
    }

    /// Like [`get`](Self::get), but `Error::Timeout` after `timeout`. The task keeps running;
    /// call again later.
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<T, Error> {
        self.take(Some(timeout))
    }

    fn take(&mut self, timeout: Option<Duration>) -> Result<T, Error> {
        if self.taken {
            return Err(Error::invalid("this AsyncResult's value was already taken"));
        }
        if !self.collector.wait_for(1, timeout.map(|t| Instant::now() + t)) {
            return Err(Error::Timeout {
                what: format!("result of `{}`", self.worker),
                after: timeout.unwrap_or_default(),
            });
        }
        self.taken = true;
        let d = self.collector.take_all().pop().expect("one delivery");
        (self.decode)(d).map_err(strip_index)
    }
}

fn strip_index(e: Error) -> Error {
    match e {
        Error::Panic { worker, message, location, backtrace, .. } => {
            Error::Panic { worker, message, location, backtrace, index: None }
        }
        Error::WorkerDied { worker, pid, exit, peer, .. } => {
            Error::WorkerDied { worker, pid, exit, index: None, peer }
        }
        other => other,
    }
}

/// Decodes a whole ordered job into values, as the parts arrive (decoding overlaps the
/// workers' computing); the first failure (lowest index) wins.
pub(crate) fn collect_ordered<W: Worker>(
    progress: bool,
    collector: &Collector,
    total: usize,
) -> Result<Vec<W::Output>, Error> {
    let mut out = Vec::with_capacity(total);
    let mut first_err: Option<Error> = None;
    let mut next = 0;
    let bar = Progress::new(progress, Some(total), W::NAME);
    while next < total {
        let d = collector.take_at(next);
        next += d.count();
        bar.inc(d.count());
        // The common case, a part without failures: decode straight into the output.
        let d = match d {
            Delivery::Part { count, payload, offset, failures, .. }
                if failures.is_empty() && first_err.is_none() =>
            {
                if let Err(e) = codec::decode_many::<W::Output>(&payload[offset..], count, &mut out) {
                    first_err = Some(e.with_index(out.len()));
                }
                continue;
            }
            other => other,
        };
        d.decode::<W>(|_, r| match r {
            Ok(v) => out.push(v),
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        });
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The pending result of [`Pool::map_async`](crate::Pool::map_async).
pub struct MapResult<T> {
    collector: Arc<Collector>,
    total: usize,
    progress: bool,
    taken: bool,
    decode: fn(bool, &Collector, usize) -> Result<Vec<T>, Error>,
}

impl<T> std::fmt::Debug for MapResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapResult").field("total", &self.total).field("ready", &self.ready()).finish()
    }
}

impl<T> MapResult<T> {
    pub(crate) fn new<W: Worker<Output = T>>(
        collector: Arc<Collector>,
        total: usize,
        progress: bool,
    ) -> Self {
        MapResult { collector, total, progress, taken: false, decode: collect_ordered::<W> }
    }

    /// Whether every item has been answered.
    pub fn ready(&self) -> bool {
        self.collector.received() >= self.total
    }

    /// How many items have been answered so far.
    pub fn completed(&self) -> usize {
        self.collector.received()
    }

    /// Blocks until every item has been answered.
    pub fn wait(&self) {
        self.collector.wait_for(self.total, None);
    }

    /// Waits for all items; the results in input order, or the first failure.
    pub fn get(mut self) -> Result<Vec<T>, Error> {
        self.take()
    }

    /// Like [`get`](Self::get), but `Error::Timeout` after `timeout`; the map keeps running,
    /// so call again later.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// #[mp::worker]
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    ///
    /// mp::init();
    /// let pool = mp::Pool::new(2).unwrap();
    /// let mut m = pool.map_async(nap, vec![200, 200]).unwrap();
    /// assert!(matches!(m.get_timeout(Duration::from_millis(1)), Err(mp::Error::Timeout { .. })));
    /// assert_eq!(m.get_timeout(Duration::from_secs(30)).unwrap(), vec![200, 200]);
    /// ```
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<Vec<T>, Error> {
        if self.taken {
            return Err(Error::invalid("this MapResult's values were already taken"));
        }
        if !self.collector.wait_for(self.total, Some(Instant::now() + timeout)) {
            return Err(Error::Timeout { what: "map_async result".into(), after: timeout });
        }
        self.take()
    }

    fn take(&mut self) -> Result<Vec<T>, Error> {
        if std::mem::replace(&mut self.taken, true) {
            return Err(Error::invalid("this MapResult's values were already taken"));
        }
        (self.decode)(self.progress, &self.collector, self.total)
    }
}

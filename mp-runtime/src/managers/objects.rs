//! The objects a manager holds, and the operations of the builtin ones. Values are kept
//! encoded (the server never knows their Rust types); results are assembled from the stored
//! encodings in the layout the proxy decodes (see `protocol::Reply`).

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::managed;
use super::protocol::{ObjKind, Op, RemoteError, varint};
use super::server::{SLICE, Server};
use crate::wire::codec;

/// A stored value: its encoding, and the objects whose proxies it contains (it holds one
/// reference on each).
pub(crate) struct Slot {
    bytes: Vec<u8>,
    refs: Vec<u64>,
}

pub(crate) enum Object {
    Dict(Mutex<HashMap<Vec<u8>, Slot>>),
    List(Mutex<Vec<Slot>>),
    Value(Mutex<Slot>),
    Queue(Mutex<VecDeque<Slot>>, Condvar),
    /// The session holding it.
    Lock(Mutex<Option<u64>>, Condvar),
    Event(Mutex<bool>, Condvar),
    Namespace(Mutex<BTreeMap<String, Slot>>),
    /// A `#[mp::managed]` value and its registered type name.
    User(&'static str, Mutex<Box<dyn Any + Send>>),
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn slot_of(blobs: &[&[u8]], refs: &[(u32, u64)], i: usize) -> Slot {
    let refs = refs.iter().filter(|r| r.0 as usize == i).map(|r| r.1).collect();
    Slot { bytes: blobs[i].to_vec(), refs }
}

fn need(blobs: &[&[u8]], n: usize) -> Result<(), RemoteError> {
    if blobs.len() < n {
        return Err(RemoteError::Refused(format!("expected {n} argument(s), got {}", blobs.len())));
    }
    Ok(())
}

/// Makes a new object; blob 0 is the initial value of a `Value` or a user type.
pub(crate) fn create(kind: ObjKind<'_>, blobs: &[&[u8]], refs: &[(u32, u64)]) -> Result<Object, RemoteError> {
    Ok(match kind {
        ObjKind::Dict => Object::Dict(Mutex::new(HashMap::new())),
        ObjKind::List => Object::List(Mutex::new(Vec::new())),
        ObjKind::Value => {
            need(blobs, 1)?;
            Object::Value(Mutex::new(slot_of(blobs, refs, 0)))
        }
        ObjKind::Queue => Object::Queue(Mutex::new(VecDeque::new()), Condvar::new()),
        ObjKind::Lock => Object::Lock(Mutex::new(None), Condvar::new()),
        ObjKind::Event => Object::Event(Mutex::new(false), Condvar::new()),
        ObjKind::Namespace => Object::Namespace(Mutex::new(BTreeMap::new())),
        ObjKind::User(name) => {
            need(blobs, 1)?;
            let (name, value) = managed::create(name, blobs[0])?;
            Object::User(name, Mutex::new(value))
        }
    })
}

/// The working state of one operation.
pub(crate) struct Ctx<'a> {
    server: &'a Server,
    session: u64,
    id: u64,
    refs: &'a [(u32, u64)],
    blobs: Vec<&'a [u8]>,
    out: &'a mut Vec<u8>,
    /// References of values that left the object: dropped after the operation.
    dropped: Vec<u64>,
    /// References taken for the caller on proxies inside the result.
    acquired: Vec<u64>,
    /// Blobs made into stored values: the references of the others are dropped afterwards.
    stored: Vec<usize>,
    timed_out: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(
        server: &'a Server,
        session: u64,
        id: u64,
        refs: &'a [(u32, u64)],
        blobs: Vec<&'a [u8]>,
        out: &'a mut Vec<u8>,
    ) -> Ctx<'a> {
        Ctx {
            server,
            session,
            id,
            refs,
            blobs,
            out,
            dropped: Vec::new(),
            acquired: Vec::new(),
            stored: Vec::new(),
            timed_out: false,
        }
    }

    /// (references to drop, references acquired for the caller, timed out). After a
    /// successful operation, the references of blobs that were not stored (a key looked up,
    /// a method's arguments) are dropped too.
    pub fn finish(mut self, ok: bool) -> (Vec<u64>, Vec<u64>, bool) {
        if ok {
            let unstored = self.refs.iter().filter(|r| !self.stored.contains(&(r.0 as usize))).map(|r| r.1);
            self.dropped.extend(unstored);
        }
        (self.dropped, self.acquired, self.timed_out)
    }

    fn blob(&self, i: usize) -> Result<&'a [u8], RemoteError> {
        need(&self.blobs, i + 1)?;
        Ok(self.blobs[i])
    }

    /// Blob `i` as a value to store.
    fn slot(&mut self, i: usize) -> Result<Slot, RemoteError> {
        need(&self.blobs, i + 1)?;
        self.stored.push(i);
        Ok(slot_of(&self.blobs, self.refs, i))
    }

    /// Writes a stored value to the result. Called under the object's lock, so the value's
    /// references still keep the objects it names alive while the caller's are taken.
    fn give(&mut self, slot: &Slot) -> Result<(), RemoteError> {
        self.out.extend_from_slice(&slot.bytes);
        if !slot.refs.is_empty() {
            self.server.session_acquire(self.session, &slot.refs)?;
            self.acquired.extend_from_slice(&slot.refs);
        }
        Ok(())
    }

    /// Writes an `Option` of a stored value.
    fn give_opt(&mut self, slot: Option<&Slot>) -> Result<(), RemoteError> {
        match slot {
            None => self.out.push(0),
            Some(s) => {
                self.out.push(1);
                self.give(s)?;
            }
        }
        Ok(())
    }

    fn drop_slot(&mut self, slot: Option<Slot>) {
        if let Some(s) = slot {
            self.dropped.extend(s.refs);
        }
    }

    fn len(&mut self, n: usize) {
        let mut b = [0u8; 10];
        self.out.extend_from_slice(varint(n, &mut b));
    }

    fn put<T: Serialize>(&mut self, v: &T) -> Result<(), RemoteError> {
        codec::encode_into(v, self.out).map_err(RemoteError::from_error)
    }

    fn wrong(&self, kind: &str, op: &Op<'_>) -> RemoteError {
        RemoteError::Refused(format!("object #{} is a {kind}: it has no {op:?} operation", self.id))
    }
}

/// Waits on `cv` until `ready` or the wait (capped at one slice) runs out.
fn wait_until<'g, T>(
    mut g: MutexGuard<'g, T>,
    cv: &Condvar,
    wait_ms: u64,
    ready: impl Fn(&T) -> bool,
) -> MutexGuard<'g, T> {
    let end = Instant::now() + Duration::from_millis(wait_ms).min(SLICE);
    while !ready(&g) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        g = cv.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
    }
    g
}

/// Runs one operation on `obj`.
pub(crate) fn apply(obj: &Object, op: &Op<'_>, ctx: &mut Ctx<'_>) -> Result<(), RemoteError> {
    match obj {
        Object::Dict(m) => dict(m, op, ctx),
        Object::List(m) => list(m, op, ctx),
        Object::Value(m) => match op {
            Op::ValueGet => ctx.give(&lock(m)),
            Op::ValueSet => {
                let new = ctx.slot(0)?;
                let old = std::mem::replace(&mut *lock(m), new);
                ctx.drop_slot(Some(old));
                Ok(())
            }
            _ => Err(ctx.wrong("value", op)),
        },
        Object::Queue(m, cv) => match op {
            Op::QueuePut => {
                let s = ctx.slot(0)?;
                lock(m).push_back(s);
                cv.notify_one();
                Ok(())
            }
            Op::QueueGet { wait_ms } => {
                let mut q = wait_until(lock(m), cv, *wait_ms, |q| !q.is_empty());
                match q.pop_front() {
                    Some(s) => {
                        let r = ctx.give(&s);
                        ctx.drop_slot(Some(s));
                        r
                    }
                    None => {
                        ctx.timed_out = true;
                        Ok(())
                    }
                }
            }
            Op::QueueLen => {
                let n = lock(m).len();
                ctx.put(&n)
            }
            _ => Err(ctx.wrong("queue", op)),
        },
        Object::Lock(m, cv) => match op {
            Op::LockAcquire { wait_ms } => {
                let mut holder = wait_until(lock(m), cv, *wait_ms, |h| h.is_none());
                if holder.is_none() {
                    *holder = Some(ctx.session);
                } else {
                    ctx.timed_out = true;
                }
                Ok(())
            }
            Op::LockRelease => {
                let mut holder = lock(m);
                if holder.take().is_none() {
                    return Err(RemoteError::Invalid("release of a lock that is not locked".into()));
                }
                cv.notify_one();
                Ok(())
            }
            Op::LockLocked => {
                let locked = lock(m).is_some();
                ctx.put(&locked)
            }
            _ => Err(ctx.wrong("lock", op)),
        },
        Object::Event(m, cv) => match op {
            Op::EventSet => {
                *lock(m) = true;
                cv.notify_all();
                Ok(())
            }
            Op::EventClear => {
                *lock(m) = false;
                Ok(())
            }
            Op::EventIsSet => {
                let set = *lock(m);
                ctx.put(&set)
            }
            Op::EventWait { wait_ms } => {
                let set = wait_until(lock(m), cv, *wait_ms, |s| *s);
                ctx.timed_out = !*set;
                Ok(())
            }
            _ => Err(ctx.wrong("event", op)),
        },
        Object::Namespace(m) => match op {
            Op::NsGet { name } => {
                let ns = lock(m);
                ctx.give_opt(ns.get(*name))
            }
            Op::NsSet { name } => {
                let s = ctx.slot(0)?;
                let old = lock(m).insert(name.to_string(), s);
                ctx.drop_slot(old);
                Ok(())
            }
            Op::NsRemove { name } => {
                let old = lock(m).remove(*name);
                let found = old.is_some();
                ctx.drop_slot(old);
                ctx.put(&found)
            }
            Op::NsNames => {
                let names: Vec<String> = lock(m).keys().cloned().collect();
                ctx.put(&names)
            }
            _ => Err(ctx.wrong("namespace", op)),
        },
        Object::User(type_name, value) => match op {
            Op::Call { method } => {
                let f =
                    managed::method(type_name, method).map_err(|e| RemoteError::Refused(e.to_string()))?;
                let mut args = ctx.blob(0)?;
                let label = format!("{type_name}::{method}");
                let start = ctx.out.len();
                let mut v = lock(value);
                let r = crate::bootstrap::run_task(&label, || f(&mut **v, &mut args, ctx.out));
                if r.is_err() {
                    ctx.out.truncate(start);
                }
                r.map_err(RemoteError::from_error)
            }
            _ => Err(ctx.wrong(type_name, op)),
        },
    }
}

fn dict(m: &Mutex<HashMap<Vec<u8>, Slot>>, op: &Op<'_>, ctx: &mut Ctx<'_>) -> Result<(), RemoteError> {
    match op {
        Op::DictGet => {
            let key = ctx.blob(0)?;
            let d = lock(m);
            ctx.give_opt(d.get(key))
        }
        Op::DictInsert => {
            let (key, s) = (ctx.blob(0)?.to_vec(), ctx.slot(1)?);
            let old = lock(m).insert(key, s);
            ctx.give_opt(old.as_ref())?;
            ctx.drop_slot(old);
            Ok(())
        }
        Op::DictRemove => {
            let key = ctx.blob(0)?;
            let old = lock(m).remove(key);
            ctx.give_opt(old.as_ref())?;
            ctx.drop_slot(old);
            Ok(())
        }
        Op::DictContains => {
            let key = ctx.blob(0)?;
            let found = lock(m).contains_key(key);
            ctx.put(&found)
        }
        Op::DictLen => {
            let n = lock(m).len();
            ctx.put(&n)
        }
        Op::DictKeys => {
            let d = lock(m);
            ctx.len(d.len());
            for k in d.keys() {
                ctx.out.extend_from_slice(k);
            }
            Ok(())
        }
        Op::DictValues | Op::DictItems => {
            let d = lock(m);
            ctx.len(d.len());
            for (k, v) in d.iter() {
                if matches!(op, Op::DictItems) {
                    ctx.out.extend_from_slice(k);
                }
                ctx.give(v)?;
            }
            Ok(())
        }
        Op::DictUpdate => {
            if ctx.blobs.len() % 2 != 0 {
                return Err(RemoteError::Refused("update needs key/value pairs".into()));
            }
            ctx.stored.extend(0..ctx.blobs.len());
            let pairs: Vec<(Vec<u8>, Slot)> = (0..ctx.blobs.len() / 2)
                .map(|j| {
                    let mut s = slot_of(&ctx.blobs, ctx.refs, 2 * j + 1);
                    s.refs.extend(slot_of(&ctx.blobs, ctx.refs, 2 * j).refs);
                    (ctx.blobs[2 * j].to_vec(), s)
                })
                .collect();
            let mut d = lock(m);
            for (k, s) in pairs {
                let old = d.insert(k, s);
                ctx.drop_slot(old);
            }
            Ok(())
        }
        Op::DictSwapIf => {
            let (key, expected) = (ctx.blob(0)?, ctx.blob(1)?);
            need(&ctx.blobs, 3)?;
            let mut d = lock(m);
            let same = match (d.get(key), expected.split_first()) {
                (None, Some((0, rest))) => rest.is_empty(),
                (Some(s), Some((1, rest))) => s.bytes == rest,
                _ => false,
            };
            if !same {
                ctx.put(&false)?;
                return ctx.give_opt(d.get(key));
            }
            let s = ctx.slot(2)?;
            let old = d.insert(key.to_vec(), s);
            drop(d);
            ctx.put(&true)?;
            ctx.give_opt(None)?;
            ctx.drop_slot(old);
            Ok(())
        }
        Op::DictClear => {
            let old: Vec<Slot> = lock(m).drain().map(|(_, v)| v).collect();
            old.into_iter().for_each(|s| ctx.drop_slot(Some(s)));
            Ok(())
        }
        _ => Err(ctx.wrong("dict", op)),
    }
}

fn list(m: &Mutex<Vec<Slot>>, op: &Op<'_>, ctx: &mut Ctx<'_>) -> Result<(), RemoteError> {
    match op {
        Op::ListPush => {
            let s = ctx.slot(0)?;
            lock(m).push(s);
            Ok(())
        }
        Op::ListGet { index } => {
            let l = lock(m);
            ctx.give_opt(usize::try_from(*index).ok().and_then(|i| l.get(i)))
        }
        Op::ListSet { index } => {
            let s = ctx.slot(0)?;
            let mut l = lock(m);
            let len = l.len();
            match usize::try_from(*index).ok().and_then(|i| l.get_mut(i)) {
                Some(at) => {
                    let old = std::mem::replace(at, s);
                    drop(l);
                    ctx.drop_slot(Some(old));
                    Ok(())
                }
                None => {
                    Err(RemoteError::Invalid(format!("index {index} is out of range for a list of {len}")))
                }
            }
        }
        Op::ListLen => {
            let n = lock(m).len();
            ctx.put(&n)
        }
        Op::ListPop => {
            let old = lock(m).pop();
            ctx.give_opt(old.as_ref())?;
            ctx.drop_slot(old);
            Ok(())
        }
        Op::ListExtend => {
            ctx.stored.extend(0..ctx.blobs.len());
            let items: Vec<Slot> = (0..ctx.blobs.len()).map(|i| slot_of(&ctx.blobs, ctx.refs, i)).collect();
            lock(m).extend(items);
            Ok(())
        }
        Op::ListToVec => {
            let l = lock(m);
            ctx.len(l.len());
            for s in l.iter() {
                ctx.give(s)?;
            }
            Ok(())
        }
        Op::ListClear => {
            let old = std::mem::take(&mut *lock(m));
            old.into_iter().for_each(|s| ctx.drop_slot(Some(s)));
            Ok(())
        }
        _ => Err(ctx.wrong("list", op)),
    }
}

/// The references held by the values stored in `obj` (when it is freed).
pub(crate) fn contained_refs(obj: &Object) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut add = |s: &Slot| ids.extend_from_slice(&s.refs);
    match obj {
        Object::Dict(m) => lock(m).values().for_each(&mut add),
        Object::List(m) => lock(m).iter().for_each(&mut add),
        Object::Value(m) => add(&lock(m)),
        Object::Queue(m, _) => lock(m).iter().for_each(&mut add),
        Object::Namespace(m) => lock(m).values().for_each(&mut add),
        Object::Lock(..) | Object::Event(..) | Object::User(..) => {}
    }
    ids
}

/// Releases `obj` if it is a lock held by `session` (whose process is gone), so its death
/// never deadlocks the others.
pub(crate) fn release_locks_of(obj: &Object, session: u64) {
    if let Object::Lock(m, cv) = obj {
        let mut holder = lock(m);
        if *holder == Some(session) {
            *holder = None;
            cv.notify_one();
        }
    }
}

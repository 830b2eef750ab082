//! The manager server: the object table with its reference counts, the sessions (one per
//! client process), and one thread per connection.
//!
//! Lock order: an object's own mutex, then `sessions`, then `objects`. Freeing an object
//! locks its mutex (to find the references its stored values hold) only after `objects`
//! was released.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::objects::{self, Ctx, Object};
use super::protocol::{self, ObjKind, Op, RemoteError, Reply, Request, Status};
use super::transport::{self, Conn};
use crate::error::Error;
use crate::listener::Listener;
use crate::wire::codec;

/// The longest a server thread waits for a blocking operation before answering `TimedOut`
/// (the proxy asks again): a thread never waits long on a client that has gone.
pub(crate) const SLICE: Duration = Duration::from_millis(500);

/// How often the accept loop looks whether it was asked to stop.
const ACCEPT_SLICE: Duration = Duration::from_millis(200);

/// The id of the root namespace every server starts with (`Manager::shared`): it holds one
/// reference of its own, so it lives as long as the server.
pub(crate) const SHARED_ID: u64 = 1;

struct Entry {
    obj: Arc<Object>,
    /// References held by sessions and by stored values.
    refs: usize,
}

#[derive(Default)]
struct Session {
    conns: usize,
    /// References this session holds, per object.
    refs: HashMap<u64, usize>,
}

/// One manager's state. `run` serves a listener until the process exits; `stop` makes
/// `wait_stopped` return.
pub(crate) struct Server {
    objects: Mutex<HashMap<u64, Entry>>,
    sessions: Mutex<HashMap<u64, Session>>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    max_connections: usize,
    stopped: Mutex<bool>,
    stop_cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Logs a problem a client caused; the server carries on.
pub(crate) fn log(msg: impl std::fmt::Display) {
    eprintln!("mp manager (pid {}): {msg}", std::process::id());
}

/// What to do after handling a request.
enum After {
    Reply,
    Nothing,
    ReplyAndClose,
}

impl Server {
    pub fn new(max_connections: usize) -> Arc<Server> {
        let mut objects = HashMap::new();
        let shared = objects::create(ObjKind::Namespace, &[], &[]).expect("an empty namespace");
        objects.insert(SHARED_ID, Entry { obj: Arc::new(shared), refs: 1 });
        Arc::new(Server {
            objects: Mutex::new(objects),
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(SHARED_ID + 1),
            connections: AtomicUsize::new(0),
            max_connections,
            stopped: Mutex::new(false),
            stop_cv: Condvar::new(),
        })
    }

    pub fn stop(&self) {
        *lock(&self.stopped) = true;
        self.stop_cv.notify_all();
    }

    fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    pub fn wait_stopped(&self) {
        let mut s = lock(&self.stopped);
        while !*s {
            s = self.stop_cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Accepts connections, one thread each, up to `max_connections` at once, until `stop`;
    /// then drops the listener (a Unix socket's path is removed). Connections being served
    /// end when their clients hang up or the process exits.
    pub fn run(self: &Arc<Self>, listener: Listener) {
        let mut n: u64 = 0;
        let (mut refused, mut last_log) = (0u64, None::<std::time::Instant>);
        loop {
            if self.is_stopped() {
                return;
            }
            let conn = match transport::accept(&listener, ACCEPT_SLICE) {
                Ok(c) => c,
                Err(Error::Timeout { .. }) => continue,
                Err(e @ (Error::Auth(_) | Error::Protocol(_))) => {
                    // One peer's failure: the server carries on. At most one line a second,
                    // so a flood of bad clients cannot fill the log.
                    refused += 1;
                    let now = std::time::Instant::now();
                    if last_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                        let more = if refused > 1 {
                            format!(" ({} refused since the last such line)", refused - 1)
                        } else {
                            String::new()
                        };
                        log(format!("refused a connection: {e}{more}"));
                        last_log = Some(now);
                        refused = 0;
                    }
                    continue;
                }
                Err(e) => {
                    log(e);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            n += 1;
            if self.connections.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                let msg = format!(
                    "too many connections ({} open, the limit set with Manager::builder().max_connections)",
                    self.max_connections
                );
                log(format!("refused connection {n}: {msg}"));
                // Read the client's Hello first: closing a socket with unread data resets it,
                // and the client would see the reset instead of this reply.
                let _ = conn.recv_bytes_timeout(Duration::from_millis(100));
                let _ = conn.send_bytes(&error_reply(RemoteError::Invalid(msg)));
                continue;
            }
            let server = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("mp-manager-conn-{n}"))
                .spawn(move || server.serve_connection(conn, n));
            if let Err(e) = spawned {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                log(format!("cannot start a thread for connection {n}: {e}"));
            }
        }
    }

    fn serve_connection(self: Arc<Self>, conn: Conn, n: u64) {
        let mut session = None;
        let mut frame = Vec::new();
        let mut out = Vec::with_capacity(256);
        let mut payload = Vec::with_capacity(256);
        loop {
            match conn.recv_bytes_into(&mut frame) {
                Ok(_) => {}
                Err(Error::Disconnected { .. }) => break,
                Err(e) => {
                    // A broken stream cannot be resynchronised: drop this connection only.
                    log(format!("connection {n}: {e}; closing it"));
                    break;
                }
            }
            out.clear();
            payload.clear();
            let after = self.handle(&frame, &mut session, &mut out, &mut payload, n);
            if matches!(after, After::Reply | After::ReplyAndClose) && conn.send_bytes(&out).is_err() {
                break;
            }
            if matches!(after, After::ReplyAndClose) {
                break;
            }
        }
        if let Some(s) = session {
            self.leave_session(s);
        }
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    fn handle(
        &self,
        frame: &[u8],
        session: &mut Option<u64>,
        out: &mut Vec<u8>,
        payload: &mut Vec<u8>,
        n: u64,
    ) -> After {
        let (req, rest) = match codec::decode_prefix::<Request<'_>>(frame) {
            Ok(x) => x,
            Err(e) => {
                log(format!("connection {n}: a request that does not decode ({e})"));
                out.extend(error_reply(RemoteError::Refused(format!("bad request frame: {e}"))));
                return After::Reply;
            }
        };
        let s = match (*session, &req.op) {
            (None, Op::Hello { session: s }) => {
                lock(&self.sessions).entry(*s).or_default().conns += 1;
                *session = Some(*s);
                write_reply(out, Status::Ok, Vec::new(), &[]);
                return After::Reply;
            }
            (None, _) => {
                log(format!("connection {n}: the first request was not Hello; closing it"));
                out.extend(error_reply(RemoteError::Refused("the first request must be Hello".into())));
                return After::ReplyAndClose;
            }
            (Some(_), Op::Hello { .. }) => {
                out.extend(error_reply(RemoteError::Refused("Hello sent twice".into())));
                return After::Reply;
            }
            (Some(s), _) => s,
        };
        let r = match req.op {
            Op::Release { count } => {
                self.release(s, req.obj, count as usize);
                return After::Nothing;
            }
            Op::Shutdown => {
                self.stop();
                Ok((Status::Ok, Vec::new()))
            }
            _ => self.apply(s, &req, rest, payload),
        };
        match r {
            Ok((status, acquired)) => write_reply(out, status, acquired, payload),
            Err(e) => {
                if matches!(e, RemoteError::Refused(_)) {
                    log(format!(
                        "connection {n}: {:?} on object #{}: {}",
                        req.op,
                        req.obj,
                        e.clone().into_error()
                    ));
                }
                out.extend(error_reply(e));
            }
        }
        After::Reply
    }

    /// Runs an object operation (or `Create`); the result goes to `payload`.
    fn apply(
        &self,
        session: u64,
        req: &Request<'_>,
        rest: &[u8],
        payload: &mut Vec<u8>,
    ) -> Result<(Status, Vec<u64>), RemoteError> {
        let blobs = protocol::blobs(rest).map_err(|e| RemoteError::Refused(format!("bad arguments: {e}")))?;
        let incoming: Vec<u64> = req.refs.iter().map(|r| r.1).collect();
        if let Op::Create { kind } = req.op {
            self.incref_all(&incoming)?;
            return match objects::create(kind, &blobs, &req.refs) {
                Ok(obj) => {
                    if matches!(kind, ObjKind::User(_)) {
                        // A user type's fields are opaque: its initial value stores no references.
                        self.decref_all(incoming);
                    }
                    let id = self.insert(session, obj);
                    codec::encode_into(&id, payload).map_err(RemoteError::from_error)?;
                    Ok((Status::Ok, Vec::new()))
                }
                Err(e) => {
                    self.decref_all(incoming);
                    Err(e)
                }
            };
        }
        let obj = self.get(req.obj)?;
        if req.acquire {
            self.session_acquire(session, &[req.obj])?;
        }
        let r = self.incref_all(&incoming).and_then(|()| {
            let mut ctx = Ctx::new(self, session, req.obj, &req.refs, blobs, payload);
            let r = objects::apply(&obj, &req.op, &mut ctx);
            let (dropped, acquired, timed_out) = ctx.finish(r.is_ok());
            if r.is_err() {
                self.decref_all(incoming);
            }
            self.decref_all(dropped);
            r.map(|()| (if timed_out { Status::TimedOut } else { Status::Ok }, acquired))
        });
        // The proxy counts its reference as taken only on success: give it back otherwise.
        if r.is_err() && req.acquire {
            self.release(session, req.obj, 1);
        }
        r
    }

    fn get(&self, id: u64) -> Result<Arc<Object>, RemoteError> {
        lock(&self.objects).get(&id).map(|e| e.obj.clone()).ok_or(RemoteError::NoObject { id })
    }

    /// Stores a new object; the creating session holds its one reference.
    fn insert(&self, session: u64, obj: Object) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut sessions = lock(&self.sessions);
        lock(&self.objects).insert(id, Entry { obj: Arc::new(obj), refs: 1 });
        *sessions.entry(session).or_default().refs.entry(id).or_default() += 1;
        id
    }

    /// One more reference on each of `ids` (all or none: an unknown id is an error).
    fn incref_all(&self, ids: &[u64]) -> Result<(), RemoteError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut objects = lock(&self.objects);
        if let Some(&id) = ids.iter().find(|id| !objects.contains_key(id)) {
            return Err(RemoteError::NoObject { id });
        }
        for id in ids {
            objects.get_mut(id).expect("checked above").refs += 1;
        }
        Ok(())
    }

    /// A reference on each of `ids` for `session` (the caller owns them from now on).
    pub(crate) fn session_acquire(&self, session: u64, ids: &[u64]) -> Result<(), RemoteError> {
        let mut sessions = lock(&self.sessions);
        self.incref_all(ids)?;
        let s = sessions.entry(session).or_default();
        for &id in ids {
            *s.refs.entry(id).or_default() += 1;
        }
        Ok(())
    }

    fn release(&self, session: u64, id: u64, count: usize) {
        let n = {
            let mut sessions = lock(&self.sessions);
            let Some(held) = sessions.get_mut(&session).and_then(|s| s.refs.get_mut(&id)) else {
                return;
            };
            let n = count.min(*held);
            *held -= n;
            if *held == 0 {
                sessions.get_mut(&session).map(|s| s.refs.remove(&id));
            }
            n
        };
        self.decref_all(std::iter::repeat_n(id, n).collect());
    }

    /// Drops one reference per entry of `ids`; frees objects that reach zero, and with them
    /// the references their stored values held.
    fn decref_all(&self, mut ids: Vec<u64>) {
        while !ids.is_empty() {
            let mut freed = Vec::new();
            {
                let mut objects = lock(&self.objects);
                for id in ids.drain(..) {
                    if let Some(e) = objects.get_mut(&id) {
                        e.refs -= 1;
                        if e.refs == 0 {
                            freed.push(objects.remove(&id).expect("present").obj);
                        }
                    }
                }
            }
            for obj in freed {
                ids.extend(objects::contained_refs(&obj));
            }
        }
    }

    /// A connection of `session` closed; when it was its last, the process is gone: drop
    /// its references and release the locks it held.
    fn leave_session(&self, session: u64) {
        let refs = {
            let mut sessions = lock(&self.sessions);
            let Some(s) = sessions.get_mut(&session) else { return };
            s.conns -= 1;
            if s.conns > 0 {
                return;
            }
            sessions.remove(&session).map(|s| s.refs).unwrap_or_default()
        };
        let all: Vec<Arc<Object>> = lock(&self.objects).values().map(|e| e.obj.clone()).collect();
        for obj in all {
            objects::release_locks_of(&obj, session);
        }
        self.decref_all(refs.into_iter().flat_map(|(id, n)| std::iter::repeat_n(id, n)).collect());
    }
}

fn write_reply(out: &mut Vec<u8>, status: Status, acquired: Vec<u64>, payload: &[u8]) {
    codec::encode_into(&Reply { status, acquired }, out).expect("a reply head always encodes");
    out.extend_from_slice(payload);
}

fn error_reply(e: RemoteError) -> Vec<u8> {
    let mut out = Vec::new();
    write_reply(&mut out, Status::Err(e), Vec::new(), &[]);
    out
}

//! The resource tracker: removes the named shared-memory blocks a process created and did not
//! unlink once that process has ended — even by SIGKILL — and no process maps them any more.
//!
//! # Design
//!
//! The first [`SharedMemory::create`](crate::SharedMemory::create) in a process starts one
//! tracker: a copy of the executable started like any mp child, running the hidden worker
//! [`ResourceTracker`]. Its only argument is one end of a [`Connection`]; the creating process
//! keeps the other end, close-on-exec, for the rest of its life, and so does nobody else
//! (descriptors reach mp children only when passed explicitly).
//!
//! 1. The tracker first detaches itself: it clears the parent-death signal every mp child has
//!    (it must outlive its creator) and starts a session of its own (a Ctrl-C at the terminal
//!    does not reach it). Then it says `Ready`; `create` waits for that, so no block is ever
//!    registered with a tracker that could still die with its creator.
//! 2. `create` registers each block (name, device, inode) after making it; `unlink` unregisters
//!    it before removing the name.
//! 3. When the creator's end closes — the kernel closes it however the creator ends: return,
//!    `exit`, panic, SIGKILL — the tracker's `recv` fails. For every block still registered it
//!    then waits until no process maps the file (read from `/proc/*/maps`, every 100 ms) and
//!    removes the name, unless the name is gone or now belongs to another file (matched by
//!    device and inode). Then it exits.
//!
//! So a block outlives its creator only while some process still maps it, as Python's
//! `resource_tracker` intends. Limits: a block is untracked between its `shm_open` and its
//! registration (microseconds); processes of other users, whose maps cannot be read, are not
//! seen as users; and a block meant to outlive its creator for a later `attach` by a process
//! that does not map it yet is removed too (as in Python).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connection::{Connection, Pipe};
use crate::error::Error;
use crate::process::{self, ChildOptions, Tracked};
use crate::registry::{self, Worker, WorkerEntry};
use crate::sys;

/// How often the tracker looks for users of the blocks left behind.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// How long `create` waits for a new tracker to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the creating process tells its tracker.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Message {
    /// (tracker to creator) Detached: it will outlive the creator.
    Ready,
    /// A block was created: remove it when the creator is gone and nobody maps it.
    Register { name: String, dev: u64, ino: u64 },
    /// The block was unlinked (or is meant to outlive the creator): forget it.
    Unregister { name: String },
}

/// The hidden worker the tracker process runs.
#[derive(Clone, Copy)]
pub(crate) struct ResourceTracker;

impl Worker for ResourceTracker {
    type Args = Connection<Message>;
    type Output = ();
    const NAME: &'static str = "mp::resource_tracker";

    fn call(&self, conn: Connection<Message>) {
        run(conn);
    }
}

inventory::submit! {
    WorkerEntry {
        name: ResourceTracker::NAME,
        file: file!(),
        line: line!(),
        dispatch: |args, out| registry::dispatch(ResourceTracker, args, out),
    }
}

fn run(conn: Connection<Message>) -> ! {
    if let Err(e) = sys::shm::detach_from_parent() {
        // The creator sees no `Ready` and refuses to create blocks.
        eprintln!("mp resource tracker {}: cannot detach from its creator: {e}", std::process::id());
        sys::exit(1);
    }
    if conn.send(Message::Ready).is_err() {
        sys::exit(0);
    }
    let mut blocks: HashMap<String, (u64, u64)> = HashMap::new();
    loop {
        match conn.recv() {
            Ok(Message::Register { name, dev, ino }) => {
                blocks.insert(name, (dev, ino));
            }
            Ok(Message::Unregister { name }) => {
                blocks.remove(&name);
            }
            Ok(Message::Ready) => {}
            // The creator is gone (or sent garbage): clean up after it.
            Err(_) => break,
        }
    }
    drop(conn);
    while !blocks.is_empty() {
        blocks.retain(|name, &mut (dev, ino)| match sys::shm::shm_id(name) {
            Ok(Some(id)) if id == (dev, ino) => {
                if sys::shm::mapped_anywhere(dev, ino) {
                    return true;
                }
                let _ = sys::shm::shm_unlink(name);
                false
            }
            // Unlinked by someone else, or the name now belongs to another block.
            Ok(_) => false,
            Err(_) => false,
        });
        if !blocks.is_empty() {
            std::thread::sleep(SWEEP_INTERVAL);
        }
    }
    // Exit here rather than answer the task: the creator that would read the answer is gone.
    sys::exit(0)
}

/// This process's tracker: its connection, and the child (kept so it is not dropped).
struct Handle {
    conn: Connection<Message>,
    _child: Arc<Tracked>,
    _sock: std::os::fd::OwnedFd,
}

static TRACKER: Mutex<Option<Handle>> = Mutex::new(None);

fn start() -> Result<Handle, Error> {
    let (ours, theirs) = Pipe::new::<Message>()?;
    let frame = process::task_frame::<ResourceTracker>(0, &theirs)?;
    drop(theirs);
    let opts = ChildOptions { one_shot: true, ..Default::default() };
    let (child, sock) = process::start_child("mp-resource-tracker".into(), opts, Some(frame))?;
    // Not one of our children as far as `active_children` and the exit hook go: it must not
    // be joined (it ends after us) nor terminated (it cleans up after us).
    process::forget(&child);
    match ours.recv_timeout(START_TIMEOUT) {
        Ok(Message::Ready) => Ok(Handle { conn: ours, _child: child, _sock: sock }),
        Ok(other) => Err(Error::Protocol(format!("the resource tracker said {other:?} instead of Ready"))),
        Err(e) => {
            child.child.kill_and_reap();
            Err(Error::invalid(format!(
                "the shared-memory resource tracker (pid {}) did not start: {e}",
                child.child.pid
            )))
        }
    }
}

/// Sends `msg` to this process's tracker, starting it first if needed — or again, if the
/// one we had is gone (someone killed it; the blocks it knew are then untracked).
pub(crate) fn tell(msg: Message) -> Result<(), Error> {
    let mut slot = TRACKER.lock().unwrap_or_else(|p| p.into_inner());
    let msg = match slot.as_ref() {
        Some(handle) => match handle.conn.send(msg) {
            Ok(()) => return Ok(()),
            Err(e) => e.into_inner(),
        },
        None => msg,
    };
    let handle = slot.insert(start()?);
    handle.conn.send(msg).map_err(|e| {
        Error::invalid(format!("the shared-memory resource tracker is gone right after it started: {e}"))
    })
}

/// Forgets `name` if this process has a tracker (no tracker: nothing to forget).
pub(crate) fn forget(name: &str) {
    let slot = TRACKER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = slot.as_ref() {
        let _ = handle.conn.send(Message::Unregister { name: name.to_string() });
    }
}

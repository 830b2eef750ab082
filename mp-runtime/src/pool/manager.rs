//! The pool's manager thread: one event loop that owns every worker's socket.
//!
//! It polls the workers' sockets and a wake-up eventfd, writes task frames without blocking
//! (a worker busy with a big task never stalls the others, and a worker writing a big reply
//! can never deadlock against us writing it a task), reads replies into the jobs'
//! collectors, enforces `task_timeout`, replaces dead and retired workers, and re-queues the
//! tasks a dead worker had not started.
//!
//! Failure attribution: a worker runs its tasks in order, so when it dies the task at the
//! head of its in-flight queue is the one that was running. If that task is a chunk with
//! several unanswered items, they are re-queued one item per task, so the item that crashes
//! (or hangs) again is reported alone and the others complete: items of a crashed chunk run
//! at least once, and those after the last progress report may run twice.
//!
//! Attached workers: besides the children it starts, a pool can be handed connected sockets
//! whose far end speaks the child protocol but is not a child of ours (an MPI rank through
//! its bridge, later a remote host). Such a worker is never reaped nor respawned: when its
//! connection ends, its task fails with `WorkerDied { exit: Exit::Unknown, peer }`; at
//! `task_timeout` its task fails and the connection is dropped. When a pool has no worker
//! left and can start none (only attached workers, all gone), queued and new tasks fail at
//! once with `Error::Disconnected` instead of waiting.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bootstrap::{self, Failure, INIT_FAILED, Part, ReplyHead, Running, Setup, TaskHead};
use crate::error::{Error, Exit};
use crate::pool::results::{Collector, Delivery};
use crate::pool::{PoolStats, WorkerStats};
use crate::process::{self, ChildOptions, Tracked};
use crate::sys;
use crate::wire::{FrameReader, Kind, OutFrame, codec};

/// Work for the pool: one call, or a chunk of calls of the same worker.
pub(crate) struct Task {
    pub worker: &'static str,
    /// The items' encoded arguments, back to back.
    pub args: Vec<u8>,
    /// How many items `args` holds.
    pub count: usize,
    /// The encoded length of the first item in a byte string (item boundaries are only
    /// needed to split a chunk after a crash, so they are not stored).
    pub skip: fn(&[u8]) -> Result<usize, Error>,
    /// A single call whose arguments carry descriptors (sent as a one-call frame).
    pub single: bool,
    pub fds: Vec<OwnedFd>,
    /// Job index of item 0.
    pub first: usize,
    pub collector: Arc<Collector>,
}

impl Task {
    pub fn items(&self) -> usize {
        self.count
    }

    /// Byte offsets of the items from `from` on, and the end.
    fn offsets(&self, from: usize) -> Vec<usize> {
        let mut at = 0;
        let mut out = Vec::with_capacity(self.count + 1);
        for i in 0..self.count {
            if i >= from {
                out.push(at);
            }
            // A chunk we encoded ourselves always re-parses; stop rather than panic if not.
            match (self.skip)(&self.args[at..]) {
                Ok(n) => at += n,
                Err(_) => break,
            }
        }
        out.push(at);
        out
    }

    fn part(&self, first: usize, count: usize, range: std::ops::Range<usize>) -> Task {
        Task {
            worker: self.worker,
            args: self.args[range].to_vec(),
            count,
            skip: self.skip,
            single: self.single,
            fds: self.fds.iter().filter_map(|f| f.try_clone().ok()).collect(),
            first: self.first + first,
            collector: self.collector.clone(),
        }
    }

    /// Items `from..to`, as a task of their own.
    fn slice(&self, from: usize, to: usize) -> Task {
        let offs = self.offsets(from);
        self.part(from, to - from, offs[0]..offs[to - from])
    }

    /// Answers item `i` alone with `err`.
    fn fail_one(&self, i: usize, err: Error) {
        self.collector.push(Delivery::One { index: self.first + i, result: Err(err) });
    }

    /// The items from `from` on, as a task of their own.
    fn tail(&self, from: usize) -> Task {
        let offs = self.offsets(from);
        self.part(from, self.count - from, offs[0]..self.args.len())
    }

    /// One task per item, from `from` on.
    fn split(&self, from: usize) -> Vec<Task> {
        let offs = self.offsets(from);
        offs.windows(2).enumerate().map(|(k, w)| self.part(from + k, 1, w[0]..w[1])).collect()
    }

    fn frame(&self, id: u64) -> Result<OutFrame, Error> {
        let mut f = OutFrame::with_capacity(Kind::Task, self.args.len() + 64);
        let items = if self.single { 0 } else { self.items() as u32 };
        codec::encode_into(&TaskHead { id, worker: self.worker.into(), items }, &mut f.buf)?;
        f.buf.extend_from_slice(&self.args);
        for fd in &self.fds {
            f.fds.push(fd.try_clone().map_err(|e| Error::io("dup of a task's handle", e))?);
        }
        Ok(f)
    }

    /// Answers every unanswered item (from `from`) with an error made by `err(index)`.
    fn fail_from(&self, from: usize, err: impl Fn(usize) -> Error) {
        for i in from..self.items() {
            let index = self.first + i;
            self.collector.push(Delivery::One { index, result: Err(err(index)) });
        }
    }
}

/// What the API side and the manager share.
pub(crate) struct Shared {
    pub inbox: Mutex<Inbox>,
    /// Remote workers that connected so far (a listening pool).
    pub remote_workers: AtomicU64,
    pub wake: OwnedFd,
    pub stats: Mutex<PoolStats>,
    pub config: Config,
}

#[derive(Default)]
pub(crate) struct Inbox {
    pub tasks: VecDeque<Task>,
    /// Workers that connected to a listening pool, for the manager to take in.
    pub attach: Vec<Attached>,
    /// The pool listens for remote workers: it waits for one rather than failing tasks
    /// when it has none.
    pub listening: bool,
    pub closed: bool,
    pub terminate: bool,
}

impl Shared {
    pub fn notify(&self) {
        sys::eventfd_signal(self.wake.as_fd());
    }
}

#[derive(Clone)]
pub(crate) struct Config {
    /// Children to keep running (slots `0..processes`).
    pub processes: usize,
    /// Attached workers the pool started with (slots after the children).
    pub attached: usize,
    pub maxtasksperchild: Option<u64>,
    pub task_timeout: Option<Duration>,
    pub initializer: Option<(String, Vec<u8>)>,
    pub max_memory: Option<u64>,
    /// Tasks written ahead to a worker (1 running + the rest queued in its socket); `None`
    /// adapts to the task time.
    pub depth: Option<usize>,
    /// Draw progress bars for maps (feature `progress`).
    pub progress: bool,
}

struct InFlight {
    id: u64,
    task: Task,
    /// Items of the task answered so far.
    answered: usize,
}

/// Who is at the other end of a slot's socket.
enum Peer {
    /// A child we started: reaped, killed at `task_timeout`, replaced when it dies.
    Child(Arc<Tracked>),
    /// A worker that is not our child (see the module docs).
    Attached { pid: u32, label: String },
}

/// A socket connected to a worker that is not a child of ours, already past its transport's
/// handshake: the pool sends it `Setup` and tasks like any worker.
pub(crate) struct Attached {
    pub sock: OwnedFd,
    /// The worker's pid on its host, for stats and errors.
    pub pid: u32,
    /// Where it runs, for errors ("MPI rank 2 on node7").
    pub label: String,
}

/// A live worker process and our side of its socket.
pub(crate) struct Slot {
    peer: Peer,
    sock: OwnedFd,
    reader: FrameReader,
    writes: VecDeque<OutFrame>,
    /// Bytes of `writes[0]` already written.
    written: usize,
    inflight: VecDeque<InFlight>,
    /// When the head task started running (or last reported progress).
    since: Instant,
    tasks_done: u64,
    busy: Duration,
    killed_for_timeout: bool,
    retiring: bool,
    /// The item the worker said has been running for a while (from `Progress` frames).
    running: Option<Running>,
}

static WORKER_NO: AtomicU64 = AtomicU64::new(1);

pub(crate) fn spawn_worker(config: &Config) -> Result<Slot, Error> {
    let name = format!("PoolWorker-{}", WORKER_NO.fetch_add(1, Ordering::Relaxed));
    let opts = ChildOptions {
        daemon: true,
        one_shot: false,
        initializer: config.initializer.clone(),
        max_memory: config.max_memory,
    };
    let (tracked, sock) = process::start_child(name, opts, None)?;
    Ok(Slot::new(Peer::Child(tracked), sock))
}

/// A slot for an attached worker; its `Setup` is the first frame queued to it.
pub(crate) fn attach_worker(config: &Config, a: Attached) -> Result<Slot, Error> {
    let setup = Setup {
        name: format!("PoolWorker-{} ({})", WORKER_NO.fetch_add(1, Ordering::Relaxed), a.label),
        parent_name: bootstrap::identity().name.clone(),
        daemon: true,
        one_shot: false,
        initializer: config.initializer.clone(),
        max_memory: config.max_memory,
        authkey: process::authkey().to_vec(),
    };
    let mut frame = OutFrame::new(Kind::Setup);
    codec::encode_into(&setup, &mut frame.buf)?;
    let mut slot = Slot::new(Peer::Attached { pid: a.pid, label: a.label }, a.sock);
    slot.writes.push_back(frame);
    Ok(slot)
}

impl Slot {
    fn new(peer: Peer, sock: OwnedFd) -> Slot {
        Slot {
            peer,
            sock,
            reader: FrameReader::new(),
            writes: VecDeque::new(),
            written: 0,
            inflight: VecDeque::new(),
            since: Instant::now(),
            tasks_done: 0,
            busy: Duration::ZERO,
            killed_for_timeout: false,
            retiring: false,
            running: None,
        }
    }

    fn pid(&self) -> u32 {
        match &self.peer {
            Peer::Child(t) => t.child.pid,
            Peer::Attached { pid, .. } => *pid,
        }
    }

    fn label(&self) -> Option<&str> {
        match &self.peer {
            Peer::Child(_) => None,
            Peer::Attached { label, .. } => Some(label),
        }
    }

    /// How the worker ended: reaped for a child, unknowable for an attached worker.
    fn reap(&self) -> Exit {
        match &self.peer {
            Peer::Child(t) => reap(t),
            Peer::Attached { .. } => Exit::Unknown,
        }
    }

    fn kill(&self) {
        if let Peer::Child(t) = &self.peer {
            let _ = t.child.signal(9);
        }
    }
}

pub(crate) struct Manager {
    shared: Arc<Shared>,
    slots: Vec<Option<Slot>>,
    pending: VecDeque<Task>,
    next_id: u64,
    init_failure: Option<(String, Failure)>,
    /// Moving average of how long a task takes, as seen from here.
    avg_task: Duration,
    /// Remote workers may still connect (see `Inbox::listening`).
    listening: bool,
}

const SHORT_TASK: Duration = Duration::from_micros(200);

impl Manager {
    pub fn new(shared: Arc<Shared>, slots: Vec<Slot>) -> Self {
        {
            let mut st = shared.stats.lock().unwrap_or_else(|p| p.into_inner());
            for s in &slots {
                st.workers.push(WorkerStats { pid: s.pid(), ..Default::default() });
            }
        }
        Manager {
            shared,
            slots: slots.into_iter().map(Some).collect(),
            pending: VecDeque::new(),
            next_id: 1,
            init_failure: None,
            avg_task: Duration::from_millis(1),
            listening: false,
        }
    }

    pub fn run(mut self) {
        loop {
            let (closed, terminate, attach) = {
                let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
                self.pending.extend(inbox.tasks.drain(..));
                self.listening = inbox.listening;
                (inbox.closed, inbox.terminate, std::mem::take(&mut inbox.attach))
            };
            self.take_in(attach);
            if terminate {
                self.terminate();
                return;
            }
            if let Some((worker, failure)) = &self.init_failure {
                for t in self.pending.drain(..) {
                    t.fail_from(0, |_| failure.clone().into_error(worker));
                }
            }
            let busy =
                !self.pending.is_empty() || self.slots.iter().flatten().any(|s| !s.inflight.is_empty());
            if closed && !busy {
                self.shutdown();
                return;
            }
            self.respawn(busy || !closed);
            self.fail_if_no_worker();
            self.dispatch();
            self.poll_once();
        }
    }

    /// Adds workers that connected to a listening pool; forgets the slots of attached
    /// workers that are gone.
    fn take_in(&mut self, attach: Vec<Attached>) {
        let local = self.shared.config.processes.min(self.slots.len());
        let mut i = 0;
        self.slots.retain(|s| {
            let keep = i < local || s.is_some();
            i += 1;
            keep
        });
        for a in attach {
            match attach_worker(&self.shared.config, a) {
                Ok(slot) => {
                    let pid = slot.pid();
                    self.slots.push(Some(slot));
                    self.stats(|st| st.workers.push(WorkerStats { pid, ..Default::default() }));
                    // Counted once it can take tasks (`Pool::wait_for_workers`).
                    self.shared.remote_workers.fetch_add(1, Ordering::Relaxed);
                }
                // The worker's connection is dropped; its host starts another.
                Err(e) => eprintln!("mp: a remote worker could not be set up: {e}"),
            }
        }
    }

    /// A pool whose workers are all attached and all gone can never run anything: answer
    /// its tasks now rather than let callers wait forever (a listening pool waits for the
    /// next worker to connect instead).
    fn fail_if_no_worker(&mut self) {
        if self.listening || self.shared.config.processes > 0 || self.slots.iter().any(Option::is_some) {
            return;
        }
        for t in self.pending.drain(..) {
            t.fail_from(0, |_| Error::Disconnected {
                what: "the pool has no worker left (its attached workers all disconnected, and it \
                       starts none of its own); create a new pool"
                    .into(),
            });
        }
    }

    fn respawn(&mut self, wanted: bool) {
        if !wanted || self.init_failure.is_some() {
            return;
        }
        // Slots past `processes` hold attached workers, which are never replaced.
        for i in 0..self.shared.config.processes.min(self.slots.len()) {
            if self.slots[i].is_none() {
                match spawn_worker(&self.shared.config) {
                    Ok(s) => {
                        let pid = s.pid();
                        self.slots[i] = Some(s);
                        self.stats(|st| {
                            st.workers_respawned += 1;
                            st.workers.push(WorkerStats { pid, ..Default::default() });
                        });
                    }
                    Err(e) => {
                        // Could not start a replacement: fail the queued work rather than hang.
                        let msg = e.to_string();
                        for t in self.pending.drain(..) {
                            t.fail_from(0, |_| {
                                Error::invalid(format!("the pool cannot start a worker: {msg}"))
                            });
                        }
                        return;
                    }
                }
            }
        }
    }

    fn dispatch(&mut self) {
        // Short tasks: keep more queued at each worker, so the round trip to the manager is
        // hidden; long tasks: little, so work spreads evenly.
        let depth = self.shared.config.depth.unwrap_or(if self.avg_task < SHORT_TASK { 8 } else { 2 });
        let max = self.shared.config.maxtasksperchild;
        let has_children = self.shared.config.processes > 0;
        // Tasks whose arguments carry descriptors, kept for a local child.
        let mut local_only: Vec<Task> = Vec::new();
        // One task per worker per pass: a small map spreads over every worker instead of
        // filling the first one up to `depth`.
        let mut progressed = true;
        while progressed && !self.pending.is_empty() {
            progressed = false;
            for slot in self.slots.iter_mut().flatten() {
                if slot.inflight.len() >= depth || slot.retiring {
                    continue;
                }
                if let Some(m) = max
                    && slot.tasks_done + slot.inflight.len() as u64 >= m
                {
                    continue;
                }
                let Some(task) = self.pending.pop_front() else {
                    break;
                };
                progressed = true;
                if !task.fds.is_empty() && matches!(slot.peer, Peer::Attached { .. }) {
                    // Descriptors cannot cross a network (or MPI): only a child can take it.
                    if has_children {
                        local_only.push(task);
                    } else {
                        task.fail_from(0, |_| Error::Codec {
                            type_name: task.worker.to_string(),
                            direction: crate::error::CodecDirection::Encode,
                            message: "its arguments hold an OS handle (a Lock, Value, Queue, \
                                      Connection or SharedMemory), which cannot reach a worker \
                                      on another host or MPI rank; share state through a \
                                      Manager (mp::Manager) instead, or give the pool local \
                                      processes"
                                .into(),
                        });
                    }
                    continue;
                }
                let id = self.next_id;
                self.next_id += 1;
                match task.frame(id) {
                    Ok(f) => {
                        if slot.inflight.is_empty() {
                            slot.since = Instant::now();
                        }
                        slot.writes.push_back(f);
                        slot.inflight.push_back(InFlight { id, task, answered: 0 });
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        task.fail_from(0, |_| Error::invalid(msg.clone()));
                    }
                }
            }
        }
        for t in local_only.into_iter().rev() {
            self.pending.push_front(t);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.shared.config.task_timeout?;
        self.slots
            .iter()
            .flatten()
            .filter(|s| !s.inflight.is_empty() && !s.killed_for_timeout)
            .map(|s| s.since + timeout)
            .min()
    }

    fn poll_once(&mut self) {
        let live: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].is_some()).collect();
        let ready = {
            let mut fds = vec![(self.shared.wake.as_fd(), false)];
            for &i in &live {
                let s = self.slots[i].as_ref().expect("live slot");
                fds.push((s.sock.as_fd(), !s.writes.is_empty()));
            }
            match sys::poll_many(&fds, self.next_deadline()) {
                Ok(r) => r,
                Err(_) => return,
            }
        };
        if ready[0].0 {
            sys::eventfd_drain(self.shared.wake.as_fd());
        }
        for (k, &i) in live.iter().enumerate() {
            let (readable, writable) = ready[k + 1];
            if writable && let Err(()) = self.flush_writes(i) {
                self.worker_gone(i);
                continue;
            }
            if readable && let Err(()) = self.read_replies(i) {
                self.worker_gone(i);
            }
        }
        self.check_timeouts();
        self.retire_finished();
    }

    fn flush_writes(&mut self, i: usize) -> Result<(), ()> {
        let slot = self.slots[i].as_mut().expect("live slot");
        while let Some(front) = slot.writes.front_mut() {
            if slot.written == 0 {
                front.seal().map_err(|_| ())?;
            }
            let fds: Vec<_> =
                if slot.written == 0 { front.fds.iter().map(|f| f.as_fd()).collect() } else { Vec::new() };
            let n = sys::send_nonblocking(slot.sock.as_fd(), &[&front.buf[slot.written..]], &fds)
                .map_err(|_| ())?;
            if n == 0 {
                return Ok(()); // socket full: wait for POLLOUT
            }
            slot.written += n;
            if slot.written == front.buf.len() {
                slot.writes.pop_front();
                slot.written = 0;
            }
        }
        Ok(())
    }

    fn read_replies(&mut self, i: usize) -> Result<(), ()> {
        loop {
            let slot = self.slots[i].as_mut().expect("live slot");
            let frame = match slot.reader.try_read(slot.sock.as_fd(), "a pool worker") {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(_) => return Err(()),
            };
            match frame.kind {
                Kind::Reply => self.on_reply(i, frame.payload, frame.fds)?,
                Kind::Progress => {
                    let running = codec::decode::<Running>(&frame.payload).map_err(|_| ())?;
                    self.slots[i].as_mut().expect("live slot").running = Some(running);
                }
                _ => return Err(()),
            }
        }
    }

    fn on_reply(&mut self, i: usize, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<(), ()> {
        let (head, rest) = codec::decode_prefix::<ReplyHead>(&payload).map_err(|_| ())?;
        let offset = payload.len() - rest.len();
        if head.id == INIT_FAILED {
            let failure = head.failure.unwrap_or(Failure::Other { message: "initializer failed".into() });
            let name = self.shared.config.initializer.as_ref().map_or(String::new(), |(n, _)| n.clone());
            self.init_failure = Some((name, failure));
            return Err(()); // the worker exits; no replacement is started
        }
        let slot = self.slots[i].as_mut().expect("live slot");
        let Some(pos) = slot.inflight.iter().position(|f| f.id == head.id) else {
            return Err(());
        };
        let now = Instant::now();
        let (mut ok, mut failed) = (0u64, 0u64);
        let fl = &mut slot.inflight[pos];
        let collector = fl.task.collector.clone();
        let (delivery, finished) = match head.part {
            None => {
                let result = match head.failure {
                    Some(f) => {
                        failed += 1;
                        Err(f.into_error(fl.task.worker))
                    }
                    None => {
                        ok += 1;
                        Ok((payload, offset, fds))
                    }
                };
                (Delivery::One { index: fl.task.first, result }, true)
            }
            Some(Part { start, count, last, failures }) => {
                failed += failures.len() as u64;
                ok += u64::from(count) - failures.len() as u64;
                fl.answered = start as usize + count as usize;
                let first = fl.task.first + start as usize;
                (Delivery::Part { first, count: count as usize, payload, offset, failures }, last)
            }
        };
        let took = now - slot.since;
        slot.busy += took;
        slot.since = now;
        if finished {
            self.avg_task = (self.avg_task * 7 + took) / 8;
            slot.inflight.remove(pos);
            slot.tasks_done += 1;
        }
        let pid = slot.pid();
        let (busy, done) = (slot.busy, slot.tasks_done);
        // Counters first, so a caller that saw its results also sees them counted.
        self.stats(|st| {
            st.tasks_completed += ok;
            st.tasks_failed += failed;
            if let Some(w) = st.workers.iter_mut().find(|w| w.pid == pid) {
                w.tasks = done;
                w.busy = busy;
            }
        });
        collector.push(delivery);
        Ok(())
    }

    fn check_timeouts(&mut self) {
        let Some(timeout) = self.shared.config.task_timeout else {
            return;
        };
        let now = Instant::now();
        let mut dropped = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if !slot.inflight.is_empty() && !slot.killed_for_timeout && now >= slot.since + timeout {
                // A hard limit: the worker is killed, whatever the task is doing. An attached
                // worker cannot be killed from here: its connection is dropped instead.
                slot.killed_for_timeout = true;
                match slot.peer {
                    Peer::Child(_) => slot.kill(),
                    Peer::Attached { .. } => dropped.push(i),
                }
            }
        }
        for i in dropped {
            self.worker_gone(i);
        }
    }

    fn retire_finished(&mut self) {
        let Some(max) = self.shared.config.maxtasksperchild else {
            return;
        };
        for i in 0..self.slots.len() {
            // Attached workers are not ours to replace: they keep serving.
            let retire = self.slots[i].as_ref().is_some_and(|s| {
                s.tasks_done >= max && s.inflight.is_empty() && matches!(s.peer, Peer::Child(_))
            });
            if retire && let Some(slot) = self.slots[i].take() {
                // End of stream tells the worker to exit.
                let pid = slot.pid();
                let Slot { peer, sock, .. } = slot;
                drop(sock);
                if let Peer::Child(t) = &peer {
                    reap(t);
                }
                self.stats(|st| st.workers.retain(|w| w.pid != pid));
                self.slots[i] = None;
            }
        }
    }

    /// The worker's socket failed or closed: find out how it ended, answer the task it was
    /// running, and re-queue the rest.
    fn worker_gone(&mut self, i: usize) {
        let Some(slot) = self.slots[i].take() else {
            return;
        };
        let exit = slot.reap();
        let pid = slot.pid();
        let peer = slot.label().map(str::to_string);
        let timeout = self.shared.config.task_timeout.unwrap_or_default();
        let mut inflight = slot.inflight;
        self.stats(|st| st.workers.retain(|w| w.pid != pid));
        if let Some((worker, failure)) = &self.init_failure {
            // Nothing can run: answer everything with the initializer's failure.
            for fl in inflight {
                fl.task.fail_from(fl.answered, |_| failure.clone().into_error(worker));
            }
            return;
        }
        let mut requeue: Vec<Task> = Vec::new();
        if let Some(head) = inflight.pop_front() {
            let t = &head.task;
            let worker = t.worker;
            let killed_for_timeout = slot.killed_for_timeout;
            let fail = |index: usize| {
                if killed_for_timeout {
                    let how = match &peer {
                        None => format!("its worker, pid {pid}, was killed"),
                        Some(p) => format!("its worker, pid {pid} ({p}), was disconnected"),
                    };
                    Error::Timeout {
                        what: format!("input #{index} of `{worker}` ({how} at the pool's task_timeout)"),
                        after: timeout,
                    }
                } else {
                    Error::WorkerDied {
                        worker: worker.to_string(),
                        pid,
                        exit,
                        index: Some(index),
                        peer: peer.clone(),
                    }
                }
            };
            let left = t.items() - head.answered;
            // The worker said which item was running: only that one is answered with the
            // failure; the rest run again (those before it finished but were not reported).
            let culprit = slot
                .running
                .filter(|r| {
                    r.id == head.id && r.item as usize >= head.answered && (r.item as usize) < t.items()
                })
                .map(|r| r.item as usize);
            if left == 1 || (t.single && left > 0) {
                self.stats(|st| st.tasks_failed += left as u64);
                t.fail_from(head.answered, fail);
            } else if let Some(k) = culprit {
                self.stats(|st| st.tasks_failed += 1);
                t.fail_one(k, fail(t.first + k));
                if k > head.answered {
                    requeue.push(t.slice(head.answered, k));
                }
                if k + 1 < t.items() {
                    requeue.push(t.tail(k + 1));
                }
            } else if left > 1 {
                requeue.extend(t.split(head.answered));
            }
        }
        for fl in inflight {
            requeue.push(if fl.answered == 0 { fl.task } else { fl.task.tail(fl.answered) });
        }
        for t in requeue.into_iter().rev() {
            self.pending.push_front(t);
        }
    }

    fn terminate(&mut self) {
        self.abandon(|| Error::Closed { what: "the pool (terminated)" });
    }

    /// Kills every worker and answers every task still held with `err()`; later submissions
    /// are refused. Nothing waits forever on a pool that is gone.
    fn abandon(&mut self, err: impl Fn() -> Error) {
        for slot in self.slots.iter().flatten() {
            slot.kill();
        }
        for slot in self.slots.iter_mut().filter_map(Option::take) {
            slot.reap();
            for fl in slot.inflight {
                fl.task.fail_from(fl.answered, |_| err());
            }
        }
        for t in self.pending.drain(..) {
            t.fail_from(0, |_| err());
        }
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        inbox.terminate = true;
        for t in inbox.tasks.drain(..) {
            t.fail_from(0, |_| err());
        }
    }

    fn shutdown(&mut self) {
        // Closing the sockets makes every worker exit (an attached one goes back to its
        // transport); then reap our children.
        let slots: Vec<Slot> = self.slots.iter_mut().filter_map(Option::take).collect();
        let peers: Vec<Peer> = slots.into_iter().map(|s| s.peer).collect();
        for p in &peers {
            if let Peer::Child(t) = p {
                reap(t);
            }
        }
    }

    fn stats(&self, f: impl FnOnce(&mut PoolStats)) {
        f(&mut self.shared.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

impl Drop for Manager {
    /// Normally a no-op (terminate and shutdown leave nothing behind). If the loop ever
    /// panicked, this runs during unwinding: callers get an error instead of waiting forever.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.abandon(|| Error::invalid("the pool's manager thread failed; create a new pool"));
        }
    }
}

/// Waits briefly for a worker that is ending, kills it if it lingers, and forgets it.
fn reap(t: &Arc<Tracked>) -> Exit {
    let exit = match t.child.wait(Some(Instant::now() + Duration::from_secs(2))) {
        Ok(Some(e)) => e,
        _ => {
            t.child.kill_and_reap();
            t.child.try_exit().unwrap_or(Exit::Unknown)
        }
    };
    process::forget(t);
    exit
}

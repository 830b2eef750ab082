//! The bridge thread: moves frames between the pool's Unix sockets and MPI messages. It
//! initializes MPI, makes every MPI call of the process, and finalizes it (so the thread
//! level asked for is `Funneled`: one thread, the one that initialized MPI).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::mpi::Tag;
use ::mpi::point_to_point::Status;
use ::mpi::topology::{Process, SimpleCommunicator};
use ::mpi::traits::*;

use crate::bootstrap::{self, Failure, TaskHead};
use crate::error::Error;
use crate::pool::Attached;
use crate::sys;
use crate::sys::mpi::OwnedSend;
use crate::wire::{FrameReader, Kind, OutFrame, codec};

/// Control codes, in the low byte of a tag (frame kinds are 1..=17).
const HELLO: u8 = 200; // rank r -> 0, once: pid (u32 LE) then the host name
const DETACH: u8 = 201; // 0 -> r: the pool of this session is gone
const EXIT: u8 = 202; // 0 -> r: the job ends; finalize and exit 0
const GONE: u8 = 203; // r -> 0: this session's serve loop ended on its own
/// Sessions (one per pool a rank serves) are numbered modulo this, in the tag's high bits,
/// so a late frame of an old pool is never taken for the new one's.
const SESSIONS: u8 = 64;

fn tag(session: u8, code: u8) -> Tag {
    (Tag::from(session) << 8) | Tag::from(code)
}

fn untag(t: Tag) -> (u8, u8) {
    (((t >> 8) & 0xff) as u8, (t & 0xff) as u8)
}

/// Idle turns spent polling without sleeping (a few µs each), then sleeps from `MIN_NAP`
/// doubling to `MAX_NAP`. MPI has no descriptor to wait on: this bounds both the latency an
/// MPI message sees (≤ 1 ms) and the CPU an idle bridge burns (~1000 short wake-ups a
/// second). A local socket that becomes ready ends a sleep at once. Measured with
/// `benches/mpi.rs`: 200 spinning turns or none at all changed the ratio by less than noise.
const SPIN_TURNS: u32 = 50;
const MIN_NAP: Duration = Duration::from_micros(20);
const MAX_NAP: Duration = Duration::from_millis(1);

struct Rank0 {
    control: Mutex<Control>,
    wake: OwnedFd,
    thread: Mutex<Option<JoinHandle<()>>>,
    worker_ranks: usize,
}

#[derive(Default)]
struct Control {
    attach: Option<SyncSender<Result<Vec<Attached>, Error>>>,
    exit: bool,
}

static RANK0: OnceLock<Rank0> = OnceLock::new();

/// What the bridge thread reports once MPI is up: (rank, size), or why it failed.
type Ready = Result<(i32, i32), String>;

pub(super) fn start() -> Result<(), Error> {
    if RANK0.get().is_some() {
        return Ok(()); // mp::init() called again on rank 0
    }
    let wake = sys::eventfd().map_err(|e| Error::io("creating the MPI bridge's eventfd", e))?;
    let bridge_wake = wake.try_clone().map_err(|e| Error::io("dup of the MPI bridge's eventfd", e))?;
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Ready>(1);
    let (session_tx, session_rx) = mpsc::channel::<OwnedFd>();
    let thread = std::thread::Builder::new()
        .name("mp-mpi-bridge".into())
        .spawn(move || bridge_main(ready_tx, bridge_wake, session_tx))
        .map_err(|e| Error::io("starting the MPI bridge thread", e))?;
    match ready_rx.recv() {
        Ok(Ok((0, size))) => {
            let worker_ranks = usize::try_from(size - 1).unwrap_or(0);
            let rank0 = Rank0 {
                control: Mutex::new(Control::default()),
                wake,
                thread: Mutex::new(Some(thread)),
                worker_ranks,
            };
            let _ = RANK0.set(rank0);
            Ok(())
        }
        Ok(Ok(_)) => worker_rank_main(session_rx, thread),
        Ok(Err(message)) => Err(Error::invalid(message)),
        Err(_) => Err(Error::invalid("the MPI bridge thread failed while starting MPI")),
    }
}

pub(super) fn has_worker_ranks() -> bool {
    RANK0.get().is_some_and(|r| r.worker_ranks > 0)
}

pub(super) fn attach_ranks() -> Result<Vec<Attached>, Error> {
    let Some(rank0) = RANK0.get() else {
        return Err(Error::invalid(
            "Pool::builder().mpi(): this process is not rank 0 of an MPI job started by \
             mp::init() (no OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK in the environment, or \
             this is a worker); start the program with `mpirun -n 3 ./app` or \
             `srun --mpi=pmix -n 3 ./app`",
        ));
    };
    if rank0.worker_ranks == 0 {
        return Err(Error::invalid(
            "Pool::builder().mpi(): the MPI job has a single rank, so no rank is left to \
             serve the pool; start it with mpirun -n 2 or more",
        ));
    }
    // One request at a time: the bridge answers the one it finds.
    static ATTACHING: Mutex<()> = Mutex::new(());
    let _one = ATTACHING.lock().unwrap_or_else(|p| p.into_inner());
    let (tx, rx) = mpsc::sync_channel(1);
    rank0.control.lock().unwrap_or_else(|p| p.into_inner()).attach = Some(tx);
    sys::eventfd_signal(rank0.wake.as_fd());
    rx.recv().unwrap_or_else(|_| Err(Error::invalid("the MPI bridge thread is gone (MPI was finalized)")))
}

pub(super) fn finish() {
    let Some(rank0) = RANK0.get() else {
        return;
    };
    rank0.control.lock().unwrap_or_else(|p| p.into_inner()).exit = true;
    sys::eventfd_signal(rank0.wake.as_fd());
    let thread = rank0.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(t) = thread {
        let _ = t.join();
    }
}

/// A worker rank's main thread: serves each pool rank 0 attaches, one at a time. The
/// bridge thread ends the process once rank 0 says the job is over.
fn worker_rank_main(sessions: Receiver<OwnedFd>, bridge: JoinHandle<()>) -> ! {
    bootstrap::install_panic_hook();
    crate::spawn::mark_initialized();
    for sock in sessions {
        let _ = bootstrap::serve(sock);
    }
    // The bridge exits the process after MPI_Finalize; reaching this means it failed.
    let _ = bridge.join();
    eprintln!("mp: the MPI bridge thread of rank ended unexpectedly; exiting");
    sys::exit(70)
}

fn bridge_main(ready: SyncSender<Ready>, wake: OwnedFd, sessions: Sender<OwnedFd>) {
    let Some((universe, _level)) = ::mpi::initialize_with_threading(::mpi::Threading::Funneled) else {
        let _ = ready.send(Err("MPI was already initialized in this process; let mp::init() \
                                initialize it (call mp::init() first in main)"
            .into()));
        return;
    };
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    if rank == 0 {
        let links = (1..size).map(|r| Link::hello(&world, r)).collect();
        let _ = ready.send(Ok((rank, size)));
        rank0_loop(&world, links, &wake);
        drop(universe); // MPI_Finalize
    } else {
        let host = ::mpi::environment::processor_name().unwrap_or_default();
        let mut hello = std::process::id().to_le_bytes().to_vec();
        hello.extend_from_slice(host.as_bytes());
        world.process_at_rank(0).send_with_tag(&hello[..], tag(0, HELLO));
        let _ = ready.send(Ok((rank, size)));
        worker_loop(&world, sessions);
        drop(universe); // MPI_Finalize
        crate::process::cleanup_children();
        // From this thread: the main thread may be inside a task that never ends.
        sys::exit(0);
    }
}

/// Frames waiting to be written to a socket that may be full.
#[derive(Default)]
struct Outbox {
    frames: VecDeque<OutFrame>,
    written: usize,
}

impl Outbox {
    fn push(&mut self, kind: Kind, payload: &[u8]) {
        let mut f = OutFrame::with_capacity(kind, payload.len());
        f.buf.extend_from_slice(payload);
        self.frames.push_back(f);
    }

    /// Writes what the socket takes now.
    fn flush(&mut self, sock: BorrowedFd<'_>) -> Result<(), ()> {
        while let Some(front) = self.frames.front_mut() {
            if self.written == 0 {
                front.seal().map_err(|_| ())?;
            }
            let n = sys::send_nonblocking(sock, &[&front.buf[self.written..]], &[]).map_err(|_| ())?;
            if n == 0 {
                return Ok(());
            }
            self.written += n;
            if self.written == front.buf.len() {
                self.frames.pop_front();
                self.written = 0;
            }
        }
        Ok(())
    }
}

/// Sleeps between idle turns (see `SPIN_TURNS`), waking early when a socket is ready.
struct Backoff {
    idle: u32,
}

impl Backoff {
    fn turn(&mut self, worked: bool, fds: &[(BorrowedFd<'_>, bool)], forever: bool) {
        if worked {
            self.idle = 0;
            return;
        }
        self.idle = self.idle.saturating_add(1);
        let nap = if forever {
            None
        } else if self.idle < SPIN_TURNS {
            Some(Duration::ZERO)
        } else {
            let doublings = (self.idle - SPIN_TURNS).min(10);
            Some((MIN_NAP * (1 << doublings)).min(MAX_NAP))
        };
        let _ = sys::poll_many(fds, nap.map(|n| Instant::now() + n));
    }
}

/// Rank 0's view of one worker rank.
struct Link {
    rank: i32,
    pid: u32,
    host: String,
    session: u8,
    /// The bridge's end of the socket whose other end a pool holds as an attached worker.
    sock: Option<OwnedFd>,
    reader: FrameReader,
    out: Outbox,
    /// The rank said its session ended: close once the frames before that are written.
    gone: bool,
}

impl Link {
    fn hello(world: &SimpleCommunicator, rank: i32) -> Link {
        let (bytes, _) = world.process_at_rank(rank).receive_vec_with_tag::<u8>(tag(0, HELLO));
        let pid = bytes.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let host = String::from_utf8_lossy(bytes.get(4..).unwrap_or_default()).into_owned();
        Link {
            rank,
            pid,
            host,
            session: 0,
            sock: None,
            reader: FrameReader::new(),
            out: Outbox::default(),
            gone: false,
        }
    }

    fn close(&mut self) {
        self.sock = None;
        self.reader = FrameReader::new();
        self.out = Outbox::default();
        self.gone = false;
    }
}

fn rank0_loop(world: &SimpleCommunicator, mut links: Vec<Link>, wake: &OwnedFd) {
    let Some(rank0) = wait_for_rank0() else {
        return;
    };
    let mut sends: Vec<OwnedSend> = Vec::new();
    let mut backoff = Backoff { idle: 0 };
    loop {
        let mut worked = false;
        // Local side first: a pool dropped just before an attach request shows as EOF here.
        for link in &mut links {
            worked |= rank0_local(world, link, &mut sends);
        }
        let (attach, exit) = {
            let mut c = rank0.control.lock().unwrap_or_else(|p| p.into_inner());
            (c.attach.take(), c.exit)
        };
        if exit {
            drop(links); // the pools' sockets: nothing more goes to them
            finish_job(world, sends);
            return;
        }
        if let Some(reply) = attach {
            let _ = reply.send(attach_all(&mut links));
            worked = true;
        }
        while let Some(probed) = world.any_process().immediate_matched_probe() {
            let (data, status) = probed.matched_receive_vec::<u8>();
            rank0_from_mpi(&mut links, &status, data);
            worked = true;
        }
        sends.retain_mut(|s| !s.test());
        let mut fds = vec![(wake.as_fd(), false)];
        for link in &links {
            if let Some(s) = &link.sock {
                fds.push((s.as_fd(), !link.out.frames.is_empty()));
            }
        }
        backoff.turn(worked, &fds, links.is_empty());
        sys::eventfd_drain(wake.as_fd());
    }
}

/// Rank 0 at exit: tells every rank, and keeps receiving (and dropping) what they still
/// send until each acknowledges, so a rank never waits forever on a send to us before it
/// can finalize. Bounded: a rank that never answers is left to MPI_Finalize.
fn finish_job(world: &SimpleCommunicator, mut sends: Vec<OwnedSend>) {
    let ranks = world.size() - 1;
    for r in 1..=ranks {
        sends.push(OwnedSend::start(&world.process_at_rank(r), tag(0, EXIT), Vec::new()));
    }
    let (mut acks, give_up) = (0, Instant::now() + Duration::from_secs(10));
    let mut backoff = Backoff { idle: 0 };
    while acks < ranks && Instant::now() < give_up {
        let mut worked = false;
        while let Some(probed) = world.any_process().immediate_matched_probe() {
            let (_, status) = probed.matched_receive_vec::<u8>();
            acks += i32::from(untag(status.tag()).1 == EXIT);
            worked = true;
        }
        sends.retain_mut(|s| !s.test());
        backoff.turn(worked, &[], false);
    }
    sends.into_iter().for_each(OwnedSend::wait);
}

/// `RANK0` is set by the thread that started us right after our ready message.
fn wait_for_rank0() -> Option<&'static Rank0> {
    for _ in 0..10_000 {
        if let Some(r) = RANK0.get() {
            return Some(r);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Moves what the pool wrote for `link`'s rank to MPI, and what MPI brought to the pool.
fn rank0_local(world: &SimpleCommunicator, link: &mut Link, sends: &mut Vec<OwnedSend>) -> bool {
    let Some(sock) = &link.sock else {
        return false;
    };
    let mut worked = false;
    if link.out.flush(sock.as_fd()).is_err() {
        detach(world, link, sends);
        return true;
    }
    if link.gone && link.out.frames.is_empty() {
        link.close(); // the pool sees end of stream: its worker is gone
        return true;
    }
    while let Some(sock) = &link.sock {
        match link.reader.try_read(sock.as_fd(), "an MPI pool's worker channel") {
            Ok(Some(f)) => {
                worked = true;
                if !f.fds.is_empty() {
                    let why = "a handle (Connection, Queue, Lock, Value, SharedMemory...) cannot be \
                               passed to a worker on another MPI rank";
                    refuse(link, &f.payload, why);
                    continue;
                }
                if f.payload.len() > MAX_MESSAGE {
                    refuse(link, &f.payload, "a task over 2 GiB does not fit in one MPI message");
                    continue;
                }
                let to = world.process_at_rank(link.rank);
                sends.push(OwnedSend::start(&to, tag(link.session, f.kind as u8), f.payload));
            }
            Ok(None) => break,
            Err(_) => {
                detach(world, link, sends);
                return true;
            }
        }
    }
    worked
}

/// MPI counts are `int`: one message holds at most this many bytes.
const MAX_MESSAGE: usize = i32::MAX as usize;

/// A task that cannot cross to another host: answer it here, saying `why`.
fn refuse(link: &mut Link, payload: &[u8], why: &str) {
    let id = codec::decode_prefix::<TaskHead<'_>>(payload).map_or(0, |(h, _)| h.id);
    let message = format!(
        "{why} (MPI rank {} on {}): pass plain data, or use a local Pool for it",
        link.rank, link.host
    );
    let reply = bootstrap::failure_reply(id, Failure::Other { message });
    link.out.frames.push_back(reply);
}

/// The pool closed its end: tell the rank its session is over.
fn detach(world: &SimpleCommunicator, link: &mut Link, sends: &mut Vec<OwnedSend>) {
    sends.push(OwnedSend::start(&world.process_at_rank(link.rank), tag(link.session, DETACH), Vec::new()));
    link.close();
}

fn rank0_from_mpi(links: &mut [Link], status: &Status, data: Vec<u8>) {
    let (session, code) = untag(status.tag());
    let Some(link) = links.iter_mut().find(|l| l.rank == status.source_rank()) else {
        return;
    };
    if link.sock.is_none() || session != link.session {
        return; // a late frame of a pool that is gone
    }
    if code == GONE {
        link.gone = true;
    } else if let Some(kind) = Kind::from_u8(code) {
        link.out.push(kind, &data);
    }
}

/// New sessions on every rank for a new pool: one socket pair per rank.
fn attach_all(links: &mut [Link]) -> Result<Vec<Attached>, Error> {
    if links.iter().any(|l| l.sock.is_some()) {
        return Err(Error::invalid(
            "the MPI ranks already serve another pool (the default pool takes them on the first \
             par_map): use that pool, or drop the other one before building this one",
        ));
    }
    let mut out = Vec::with_capacity(links.len());
    for link in links.iter_mut() {
        let (mine, theirs) = sys::socketpair().map_err(|e| Error::io("socket pair for an MPI rank", e))?;
        link.close();
        link.session = (link.session + 1) % SESSIONS;
        link.sock = Some(mine);
        let label = format!("MPI rank {} on {}", link.rank, link.host);
        out.push(Attached { sock: theirs, pid: link.pid, label });
    }
    Ok(out)
}

/// A worker rank's side of its current session.
struct Session {
    id: u8,
    sock: OwnedFd,
    reader: FrameReader,
    out: Outbox,
}

fn worker_loop(world: &SimpleCommunicator, sessions: Sender<OwnedFd>) {
    let zero: Process<'_> = world.process_at_rank(0);
    let mut session: Option<Session> = None;
    let mut sends: Vec<OwnedSend> = Vec::new();
    let mut backoff = Backoff { idle: 0 };
    loop {
        let mut worked = false;
        while let Some(probed) = zero.immediate_matched_probe() {
            worked = true;
            let (data, status) = probed.matched_receive_vec::<u8>();
            let (id, code) = untag(status.tag());
            match code {
                EXIT => {
                    drop(session);
                    // Rank 0 keeps receiving until we acknowledge: our sends complete.
                    sends.into_iter().for_each(OwnedSend::wait);
                    zero.send_with_tag(&[0u8][..], tag(0, EXIT));
                    return;
                }
                DETACH => {
                    if session.as_ref().is_some_and(|s| s.id == id) {
                        session = None; // the serve loop sees end of stream
                    }
                }
                code => {
                    let Some(kind) = Kind::from_u8(code) else { continue };
                    if kind == Kind::Setup && session.as_ref().is_none_or(|s| s.id != id) {
                        // A new pool: a fresh socket for the main thread's serve loop.
                        let Ok((mine, theirs)) = sys::socketpair() else { continue };
                        if sessions.send(theirs).is_err() {
                            continue;
                        }
                        session = Some(Session {
                            id,
                            sock: mine,
                            reader: FrameReader::new(),
                            out: Outbox::default(),
                        });
                    }
                    if let Some(s) = session.as_mut().filter(|s| s.id == id) {
                        s.out.push(kind, &data);
                    }
                }
            }
        }
        if let Some(s) = session.as_mut() {
            if s.out.flush(s.sock.as_fd()).is_err() {
                // The serve loop closed its end (a failed initializer): drop what it will
                // never read, but still forward what it wrote before closing.
                s.out = Outbox::default();
            }
            let mut ended = false;
            while !ended {
                match s.reader.try_read(s.sock.as_fd(), "the MPI bridge's channel") {
                    Ok(Some(f)) => {
                        worked = true;
                        sends.push(OwnedSend::start(&zero, tag(s.id, f.kind as u8), f.payload));
                    }
                    Ok(None) => break,
                    Err(_) => ended = true,
                }
            }
            if ended {
                // The serve loop ended on its own (a failed initializer, a broken frame).
                sends.push(OwnedSend::start(&zero, tag(s.id, GONE), Vec::new()));
                session = None;
                worked = true;
            }
        }
        sends.retain_mut(|s| !s.test());
        let fds: Vec<(BorrowedFd<'_>, bool)> =
            session.iter().map(|s| (s.sock.as_fd(), !s.out.frames.is_empty())).collect();
        backoff.turn(worked, &fds, false);
    }
}

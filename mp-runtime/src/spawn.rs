//! Starting children: the same executable again, on the posix_spawn path, from one long-lived
//! runtime thread (the parent-death signal fires when the *spawning thread* exits, so a pool
//! first used from a short-lived thread must not lose its workers).

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::Pid;

use crate::error::{Error, Exit};
use crate::sys;

/// Environment marker: the descriptor number of the child's end of the socket.
pub(crate) const ENV_FD: &str = "MP_CHILD_FD";
/// Environment marker: the pid of the process that started the child.
pub(crate) const ENV_PARENT: &str = "MP_PARENT_PID";
/// Environment marker (test binaries only): where the child finds the real stdout.
pub(crate) const ENV_STDOUT: &str = "MP_CHILD_STDOUT_FD";
/// Where the child finds its socket.
pub(crate) const CHILD_FD: i32 = 3;
/// Where a re-run test binary finds the real stdout: libtest's own "running 1 test" header
/// goes to /dev/null, then `init()` puts this back on descriptor 1 for the worker's prints.
pub(crate) const STDOUT_FD: i32 = 4;

static INITIALIZED: AtomicBool = AtomicBool::new(false);
static TEST_NAME: OnceLock<String> = OnceLock::new();

pub(crate) fn mark_initialized() {
    INITIALIZED.store(true, Ordering::Release);
}

pub(crate) fn set_test_name(name: String) {
    let _ = TEST_NAME.set(name);
}

struct Request {
    args: Vec<CString>,
    env: Vec<CString>,
    ipc: OwnedFd,
    quiet_stdout: bool,
    reply: SyncSender<std::io::Result<Pid>>,
}

fn spawner() -> Result<&'static Sender<Request>, Error> {
    static SPAWNER: OnceLock<Result<Sender<Request>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("mp-spawner".into())
                .spawn(move || {
                    let exe = CString::new("/proc/self/exe").expect("no NUL");
                    let devnull = sys::dev_null();
                    // This thread lives as long as the process: children's parent-death
                    // signal is tied to it.
                    for req in rx {
                        let r = match &devnull {
                            Ok(null) => {
                                let null = null.as_raw_fd();
                                let mut dup2s = vec![(req.ipc.as_raw_fd(), CHILD_FD), (null, 0)];
                                if req.quiet_stdout {
                                    dup2s.extend([(1, STDOUT_FD), (null, 1)]);
                                }
                                sys::spawn(&exe, &req.args, &req.env, &dup2s)
                            }
                            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                        };
                        drop(req.ipc);
                        let _ = req.reply.send(r);
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("cannot start the mp spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| Error::invalid(e.clone()))
}

fn cstring(v: OsString) -> Option<CString> {
    CString::new(v.into_vec()).ok()
}

/// A started child process. Its exit status is read once and kept, so several owners (a
/// `Process`, `active_children`, the exit hook) never race on `waitpid`.
#[derive(Debug)]
pub(crate) struct Child {
    pub pid: u32,
    pidfd: OwnedFd,
    exit: Mutex<Option<Exit>>,
}

impl Child {
    /// The exit status, reaping the process if it has ended. Never blocks.
    pub fn try_exit(&self) -> Option<Exit> {
        let mut slot = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let pid = Pid::from_raw(self.pid as i32).expect("child pid is positive");
            match sys::try_wait(pid) {
                Ok(Some(st)) => {
                    *slot = Some(match (st.exit_status(), st.terminating_signal()) {
                        (Some(c), _) => Exit::Code(c),
                        (_, Some(s)) => Exit::Signal(s),
                        _ => Exit::Unknown,
                    })
                }
                Ok(None) => {}
                // Reaped by someone else (a user's waitpid(-1)): we will never know the code.
                Err(_) => *slot = Some(Exit::Unknown),
            }
        }
        *slot
    }

    /// Waits for the process to end, until `deadline`. `Ok(None)` on timeout.
    pub fn wait(&self, deadline: Option<Instant>) -> Result<Option<Exit>, Error> {
        loop {
            if let Some(e) = self.try_exit() {
                return Ok(Some(e));
            }
            let exited = sys::wait_readable(self.pidfd.as_fd(), deadline)
                .map_err(|e| Error::io(format!("waiting for pid {}", self.pid), e))?;
            if !exited {
                return Ok(None);
            }
        }
    }

    /// Sends `sig` unless the process was already reaped (so a recycled pid is never hit).
    pub fn signal(&self, sig: i32) -> Result<(), Error> {
        let slot = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        sys::pidfd_signal(self.pidfd.as_fd(), sig)
            .map_err(|e| Error::io(format!("sending signal {sig} to pid {}", self.pid), e))
    }

    /// The pidfd: readable once the process has ended.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// SIGKILL, then reap.
    pub fn kill_and_reap(&self) {
        let _ = self.signal(9);
        let _ = self.wait(Some(Instant::now() + Duration::from_secs(5)));
    }
}

/// Starts a child and returns it with the parent's end of its socket.
pub(crate) fn spawn_child() -> Result<(Child, OwnedFd), Error> {
    let (ours, theirs) = sys::socketpair().map_err(|e| Error::io("creating a socket pair", e))?;
    Ok((spawn_child_on(theirs)?, ours))
}

/// Starts a child whose channel is `sock` (a socket pair's end, or a remote pool's TCP
/// connection: the child reads its `Setup` from whoever is at the other end).
pub(crate) fn spawn_child_on(sock: OwnedFd) -> Result<Child, Error> {
    if !INITIALIZED.load(Ordering::Acquire) {
        return Err(Error::NotInitialized);
    }
    // dup2 onto the same number would keep close-on-exec set: keep the source above CHILD_FD.
    let theirs = sys::dup_cloexec_min(sock.as_fd(), 10).map_err(|e| Error::io("dup", e))?;
    drop(sock);

    let mut args: Vec<CString> = Vec::with_capacity(8);
    args.push(std::env::args_os().next().and_then(cstring).unwrap_or_else(|| c"mp-child".into()));
    if let Some(test) = TEST_NAME.get() {
        // A test binary: re-run exactly one #[mp::test]; its first statement is mp::init().
        for a in [test.as_str(), "--exact", "--nocapture", "--include-ignored", "--test-threads=1", "-q"] {
            args.push(CString::new(a).map_err(|_| Error::invalid("test name contains NUL"))?);
        }
    }
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != ENV_FD && k != ENV_PARENT && k != ENV_STDOUT)
        // A remote worker host's own settings are not its children's.
        .filter(|(k, _)| !crate::remote::ENV.contains(&k.to_str().unwrap_or_default()))
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{ENV_FD}={CHILD_FD}")).expect("no NUL"));
    env.push(CString::new(format!("{ENV_PARENT}={}", std::process::id())).expect("no NUL"));
    let quiet_stdout = TEST_NAME.get().is_some();
    if quiet_stdout {
        env.push(CString::new(format!("{ENV_STDOUT}={STDOUT_FD}")).expect("no NUL"));
    }

    let (reply, rx) = sync_channel(1);
    spawner()?
        .send(Request { args, env, ipc: theirs, quiet_stdout, reply })
        .map_err(|_| Error::invalid("the mp spawner thread is gone"))?;
    let pid = rx
        .recv()
        .map_err(|_| Error::invalid("the mp spawner thread is gone"))?
        .map_err(|e| Error::io("starting a child process (posix_spawn of /proc/self/exe)", e))?;
    // The pid is our unreaped child, so it cannot have been recycled yet.
    let pidfd = sys::pidfd_open(pid).map_err(|e| Error::io("pidfd_open", e))?;
    Ok(Child { pid: pid.as_raw_nonzero().get() as u32, pidfd, exit: Mutex::new(None) })
}

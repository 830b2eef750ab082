//! A pool that listens: worker hosts (`MP_CONNECT=addr MP_AUTHKEY=… ./app`, see
//! `remote.rs`) connect, authenticate, say who they are, and become attached workers.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::manager::{Attached, Shared};
use crate::error::Error;
use crate::listener::{Address, Listener, TlsServerConfig};
use crate::remote::Hello;

/// How often the accept loop looks whether the pool was closed.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// A host sends its `Hello` right after the handshake.
const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// The accepting side of a listening pool.
pub(crate) struct Listening {
    pub address: Address,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Listening {
    /// Binds `addr` now (so a bad address or a taken port is the builder's error) and accepts
    /// on a thread of its own until the pool closes.
    pub fn start(
        addr: Address,
        key: Vec<u8>,
        tls: Option<TlsServerConfig>,
        shared: Arc<Shared>,
    ) -> Result<Listening, Error> {
        let listener = match tls {
            None => Listener::bind(addr, &key)?,
            Some(tls) => bind_tls(addr, &key, &tls)?,
        };
        let address = listener.address().clone();
        let thread = std::thread::Builder::new()
            .name("mp-pool-listener".into())
            .spawn(move || accept_loop(listener, shared))
            .map_err(|e| Error::io("starting the pool's listener thread", e))?;
        Ok(Listening { address, thread: Mutex::new(Some(thread)) })
    }

    /// Waits for the accept loop to end (it does within `CHECK_EVERY` of the pool closing),
    /// so the address is free again and worker hosts see their connections refused.
    pub fn join(&self) {
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: Listener, shared: Arc<Shared>) {
    let mut n = 0u64;
    loop {
        {
            let inbox = shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
            if inbox.closed || inbox.terminate {
                return;
            }
        }
        let conn = match listener.accept_timeout::<Hello>(CHECK_EVERY) {
            Ok(c) => c,
            Err(Error::Timeout { .. }) => continue,
            // One bad peer (wrong key, garbage) is logged by the listener; keep accepting.
            Err(_) => continue,
        };
        let hello = match conn.recv_timeout(HELLO_WITHIN) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("mp: a worker host connected to the pool but did not introduce itself: {e}");
                continue;
            }
        };
        let Ok(sock) = conn.into_fd() else { continue };
        n += 1;
        let label = format!("remote worker #{n}, pid {} on {}", hello.pid, hello.host);
        shared.inbox.lock().unwrap_or_else(|p| p.into_inner()).attach.push(Attached {
            sock,
            pid: hello.pid,
            label,
        });
        shared.notify();
    }
}

#[cfg(feature = "tls")]
fn bind_tls(addr: Address, key: &[u8], tls: &TlsServerConfig) -> Result<Listener, Error> {
    Listener::bind_tls(addr, key, tls)
}

#[cfg(not(feature = "tls"))]
fn bind_tls(_: Address, _: &[u8], tls: &TlsServerConfig) -> Result<Listener, Error> {
    match *tls {}
}

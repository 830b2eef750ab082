//! Every connect and accept of the managers, in one file: `mp::Listener` / `mp::Client`, so
//! each connection runs the HMAC-SHA256 challenge in both directions before any request
//! (`../listener/README.md`).

use crate::connection::Connection;
use crate::error::Error;
use crate::listener::{Address, Client, Listener};

/// One connection between a proxy's process and the server: raw-bytes frames.
pub(crate) type Conn = Connection<()>;

/// Listens on `addr` (a Unix path inside the manager's private directory, or TCP), for
/// clients holding `authkey`. Pending handshakes are bounded by the listener's limits.
pub(crate) fn bind(addr: &Address, authkey: &[u8]) -> Result<Listener, Error> {
    Listener::bind(addr, authkey)
}

/// Waits for the next authenticated client. A peer that fails the handshake (wrong key, not
/// an mp client) is an `Err` about that peer only: the caller logs it and accepts again.
/// `Error::Timeout` after `timeout` (so the caller can notice it was asked to stop).
pub(crate) fn accept(listener: &Listener, timeout: std::time::Duration) -> Result<Conn, Error> {
    let conn = listener.accept_timeout::<()>(timeout)?;
    // Calls come in bursts from a client's loop: catch the next one without sleeping.
    conn.spin_before_blocking();
    Ok(conn)
}

/// Connects to the manager at `addr` and authenticates both ways. A manager that is gone
/// (socket removed or nobody listening) is `Error::Disconnected`; a wrong key `Error::Auth`.
pub(crate) fn connect(addr: &Address, authkey: &[u8]) -> Result<Conn, Error> {
    match Client::connect::<()>(addr, authkey) {
        Ok(c) => {
            // A reply usually comes within microseconds: catch it without sleeping.
            c.spin_before_blocking();
            Ok(c)
        }
        Err(Error::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            let hint = if addr.is_tcp() {
                "shut down or exited"
            } else {
                "shut down or exited; from another host, a manager must listen on TCP: \
                 Manager::builder().address(\"0.0.0.0:port\")"
            };
            Err(Error::Disconnected { what: format!("the manager at {addr} ({hint})") })
        }
        Err(Error::Auth(m)) => Err(Error::Auth(format!(
            "the manager at {addr}: {m} (connect with the key the manager was started with: \
             Manager::builder().authkey(..), by default mp::current_process().authkey())"
        ))),
        Err(e) => Err(e),
    }
}

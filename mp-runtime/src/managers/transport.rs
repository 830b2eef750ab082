//! Every connect and accept of the managers, in one file.
//!
//! TODO(listener): when `mp::Listener` / `mp::Client` land, replace the bodies here with
//! `Listener::bind(addr, authkey)`, `listener.accept::<()>()` and
//! `Client::connect::<()>(addr, authkey)`, which run the HMAC-SHA256 challenge both ways. Until
//! then the authkey is carried everywhere but NOT checked: access is limited by the socket
//! living in a private (0700) directory.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::connection::Connection;
use crate::error::Error;

/// One connection between a proxy's process and the server: raw-bytes frames.
pub(crate) type Conn = Connection<()>;

/// Listens on `path` (inside the manager's private directory).
pub(crate) fn bind(path: &Path, _authkey: &[u8]) -> Result<UnixListener, Error> {
    UnixListener::bind(path).map_err(|e| Error::io(format!("listening on {}", path.display()), e))
}

/// Waits for the next client.
pub(crate) fn accept(listener: &UnixListener, _authkey: &[u8]) -> Result<Conn, Error> {
    let (stream, _) = listener.accept().map_err(|e| Error::io("accepting a manager connection", e))?;
    Ok(Conn::from(stream))
}

/// Connects to the manager at `path`. A manager that is gone (socket removed or nobody
/// listening) is `Error::Disconnected`.
pub(crate) fn connect(path: &Path, _authkey: &[u8]) -> Result<Conn, Error> {
    match UnixStream::connect(path) {
        Ok(s) => Ok(Conn::from(s)),
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            Err(Error::Disconnected {
                what: format!("the manager at {} (shut down or exited)", path.display()),
            })
        }
        Err(e) => Err(Error::io(format!("connecting to the manager at {}", path.display()), e)),
    }
}

//! Every connect and accept of the managers, in one file: `mp::Listener` / `mp::Client`, so
//! each connection runs the HMAC-SHA256 challenge in both directions before any request
//! (`../listener/README.md`), inside TLS when the manager has a certificate (feature `tls`).
//! The TLS settings' conversions live here too, so the rest of the managers never needs the
//! feature.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::connection::Connection;
use crate::error::Error;
use crate::listener::{self, Address, Listener, TlsClientConfig, TlsServerConfig, TlsTrust};

/// One connection between a proxy's process and the server: raw-bytes frames.
pub(crate) type Conn = Connection<()>;

/// Listens on `addr` (a Unix path inside the manager's private directory, or TCP), for
/// clients holding `authkey`, over TLS with `tls`. Pending handshakes are bounded by the
/// listener's limits.
pub(crate) fn bind(addr: &Address, authkey: &[u8], tls: Option<&TlsServerConfig>) -> Result<Listener, Error> {
    match tls {
        None => Listener::bind(addr, authkey),
        #[cfg(feature = "tls")]
        Some(t) => Listener::bind_tls(addr, authkey, t),
        #[cfg(not(feature = "tls"))]
        Some(t) => match *t {},
    }
}

/// Waits for the next authenticated client. A peer that fails the handshake (wrong key, not
/// an mp client) is an `Err` about that peer only: the caller logs it and accepts again.
/// `Error::Timeout` after `timeout` (so the caller can notice it was asked to stop).
pub(crate) fn accept(listener: &Listener, timeout: std::time::Duration) -> Result<Conn, Error> {
    // Its receives poll briefly before sleeping, as every Connection's: calls come in
    // bursts from a client's loop.
    listener.accept_timeout::<()>(timeout)
}

/// Connects to the manager at `addr` and authenticates both ways, over TLS with `tls`. A
/// manager that is gone (socket removed or nobody listening) is `Error::Disconnected`; a
/// wrong key, a certificate that does not check out, or TLS on one side only `Error::Auth`.
pub(crate) fn connect(
    addr: &Address,
    authkey: &[u8],
    tls: Option<&TlsClientConfig>,
    timeout: Option<std::time::Duration>,
) -> Result<Conn, Error> {
    match listener::connect::<()>(addr.clone(), Some(authkey), timeout, tls) {
        // A reply usually comes within microseconds: the connection polls for it briefly
        // before sleeping, as every Connection does.
        Ok(c) => Ok(c),
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
        Err(Error::Auth(m)) => Err(Error::Auth(auth_message(addr, &m, tls.is_some()))),
        Err(e) => Err(e),
    }
}

/// An `Error::Auth` from the listener module, said in terms of managers. The listener's
/// messages for TLS on one side only are recognised by their text (`listener/handshake.rs`,
/// `listener/client.rs`; tests/tls.rs checks the result).
fn auth_message(addr: &Address, m: &str, tls: bool) -> String {
    if !tls && m.starts_with("the listener uses TLS") {
        return format!(
            "the manager at {addr} uses TLS: connect with Manager::connect_tls(address, key, \
             &mp::TlsClientConfig::from_ca_file(\"ca.pem\")?) (feature `tls`); its proxies then \
             reach it with TLS too, in every process they are handed to"
        );
    }
    if tls && m.contains("does not use TLS") {
        return format!(
            "the manager at {addr} does not use TLS: connect with Manager::connect (or give the \
             manager a certificate with Manager::builder().tls(..))"
        );
    }
    if m.contains("TLS") {
        // A certificate that does not check out: the message says what to set.
        return format!("the manager at {addr}: {m}");
    }
    format!(
        "the manager at {addr}: {m} (connect with the key the manager was started with: \
         Manager::builder().authkey(..), by default mp::current_process().authkey())"
    )
}

/// A server's certificate chain and key as they travel to a manager process it starts (over
/// the child's private socket pair, like the authkey).
#[derive(Serialize, Deserialize)]
pub(crate) struct ServerTls {
    cert_chain: Vec<u8>,
    key: Vec<u8>,
}

impl ServerTls {
    /// What the manager process needs to serve with `cfg`.
    pub fn new(cfg: &TlsServerConfig) -> ServerTls {
        #[cfg(feature = "tls")]
        {
            let pem = cfg.pem();
            ServerTls { cert_chain: pem.cert_chain.clone(), key: pem.key.clone() }
        }
        #[cfg(not(feature = "tls"))]
        match *cfg {}
    }

    /// The server configuration again, in the manager process.
    pub fn config(&self) -> Result<TlsServerConfig, Error> {
        #[cfg(feature = "tls")]
        {
            TlsServerConfig::from_pem(&self.cert_chain, &self.key)
        }
        #[cfg(not(feature = "tls"))]
        Err(Error::invalid("TLS settings for a manager, in a program built without mp's `tls` feature"))
    }
}

/// What the owner of a manager started with `cfg` trusts: exactly its certificate.
pub(crate) fn pinned(cfg: &TlsServerConfig) -> Arc<TlsTrust> {
    #[cfg(feature = "tls")]
    {
        Arc::new(TlsTrust::Pinned(cfg.pem().leaf.clone()))
    }
    #[cfg(not(feature = "tls"))]
    match *cfg {}
}

/// What a client configuration trusts, as data a proxy can carry.
pub(crate) fn trust(cfg: &TlsClientConfig) -> Arc<TlsTrust> {
    #[cfg(feature = "tls")]
    {
        cfg.trust().clone()
    }
    #[cfg(not(feature = "tls"))]
    match *cfg {}
}

/// A client configuration rebuilt from what a proxy carried.
pub(crate) fn client_config(trust: &TlsTrust) -> Result<TlsClientConfig, Error> {
    #[cfg(feature = "tls")]
    {
        TlsClientConfig::from_trust(trust)
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = trust;
        Err(Error::invalid(
            "a proxy of a manager that uses TLS, in a program built without mp's `tls` feature",
        ))
    }
}

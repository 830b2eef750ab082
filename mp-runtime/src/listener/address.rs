//! Where a [`Listener`](super::Listener) listens: a Unix socket path or a TCP `host:port`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A listening address: a Unix socket path (this machine, fast, handles can travel) or a TCP
/// `host:port` (other machines; an authkey is required).
///
/// Parsed from a string: `unix:PATH` or anything containing `/` is a Unix path;
/// otherwise `host:port` (`[::1]:port` for IPv6). Port 0 asks the OS for a free port;
/// [`Listener::address`](super::Listener::address) reports the one it got.
///
/// # Examples
///
/// ```
/// use mp::Address;
/// let tcp: Address = "127.0.0.1:0".parse().unwrap();
/// assert!(matches!(tcp, Address::Tcp(_)));
/// let unix: Address = "/tmp/mp-example.sock".parse().unwrap();
/// assert_eq!(unix, Address::Unix("/tmp/mp-example.sock".into()));
/// assert_eq!(unix.to_string(), "unix:/tmp/mp-example.sock");
/// assert!("no-port".parse::<Address>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Address {
    /// A Unix stream socket at this path.
    Unix(PathBuf),
    /// A TCP `host:port`, resolved when binding or connecting.
    Tcp(String),
}

impl Address {
    /// A fresh Unix socket path in the temporary directory, unique to this process (Python's
    /// `arbitrary_address('AF_UNIX')`).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = mp::Address::unix_temp();
    /// let b = mp::Address::unix_temp();
    /// assert_ne!(a, b);
    /// ```
    pub fn unix_temp() -> Address {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let mut salt = [0u8; 4];
        let _ = getrandom::fill(&mut salt);
        let name = format!(
            "mp-{}-{}-{:08x}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            u32::from_le_bytes(salt)
        );
        Address::Unix(std::env::temp_dir().join(name))
    }

    /// Whether this is a TCP address (where OS handles cannot travel).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(mp::Address::from(std::net::SocketAddr::from(([127, 0, 0, 1], 80))).is_tcp());
    /// ```
    pub fn is_tcp(&self) -> bool {
        matches!(self, Address::Tcp(_))
    }

    pub(crate) fn resolve(host_port: &str) -> Result<Vec<SocketAddr>, Error> {
        use std::net::ToSocketAddrs;
        let addrs: Vec<SocketAddr> = host_port
            .to_socket_addrs()
            .map_err(|e| Error::io(format!("resolving the address {host_port}"), e))?
            .collect();
        if addrs.is_empty() {
            return Err(Error::invalid(format!("the address {host_port} resolved to nothing")));
        }
        Ok(addrs)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(hp) => f.write_str(hp),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address, Error> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(Error::invalid("`unix:` needs a path after it, like unix:/tmp/app.sock"));
            }
            return Ok(Address::Unix(path.into()));
        }
        if s.contains('/') {
            return Ok(Address::Unix(s.into()));
        }
        let bad = || {
            Error::invalid(format!(
                "`{s}` is not an address: write host:port for TCP (127.0.0.1:5000, [::1]:5000, \
                 localhost:0) or a path for a Unix socket (/tmp/app.sock, unix:app.sock)"
            ))
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad()); // a bare IPv6 address needs brackets
        }
        Ok(Address::Tcp(s.to_string()))
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a.to_string())
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Unix(p)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Address {
        Address::Unix(p.to_path_buf())
    }
}

/// What [`Listener::bind`](super::Listener::bind) and [`Client::connect`](super::Client::connect)
/// accept as an address: an [`Address`], a string to parse, a `SocketAddr` or a path.
///
/// # Examples
///
/// ```
/// use mp::IntoAddress;
/// assert_eq!("127.0.0.1:1".into_address().unwrap(), mp::Address::Tcp("127.0.0.1:1".into()));
/// ```
pub trait IntoAddress {
    /// Converts, or explains what was wrong.
    fn into_address(self) -> Result<Address, Error>;
}

impl IntoAddress for Address {
    fn into_address(self) -> Result<Address, Error> {
        Ok(self)
    }
}

impl IntoAddress for &Address {
    fn into_address(self) -> Result<Address, Error> {
        Ok(self.clone())
    }
}

impl IntoAddress for &str {
    fn into_address(self) -> Result<Address, Error> {
        self.parse()
    }
}

impl IntoAddress for String {
    fn into_address(self) -> Result<Address, Error> {
        self.parse()
    }
}

impl IntoAddress for &String {
    fn into_address(self) -> Result<Address, Error> {
        self.parse()
    }
}

impl IntoAddress for SocketAddr {
    fn into_address(self) -> Result<Address, Error> {
        Ok(self.into())
    }
}

impl IntoAddress for PathBuf {
    fn into_address(self) -> Result<Address, Error> {
        Ok(Address::Unix(self))
    }
}

impl IntoAddress for &Path {
    fn into_address(self) -> Result<Address, Error> {
        Ok(Address::Unix(self.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!("localhost:0".parse::<Address>().unwrap(), Address::Tcp("localhost:0".into()));
        assert_eq!("[::1]:7".parse::<Address>().unwrap(), Address::Tcp("[::1]:7".into()));
        assert_eq!("unix:a.sock".parse::<Address>().unwrap(), Address::Unix("a.sock".into()));
        assert_eq!("./a.sock".parse::<Address>().unwrap(), Address::Unix("./a.sock".into()));
        for bad in ["", "host", ":80", "host:99999", "::1:80", "unix:", "host:x"] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
        let a: Address = "unix:/x".parse().unwrap();
        assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
    }
}

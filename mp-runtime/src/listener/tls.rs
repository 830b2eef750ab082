//! TLS for TCP connections (feature `tls`, rustls with the ring provider, TLS 1.3 only).
//!
//! The wire layer works on raw socket descriptors (sendmsg/recvmsg), so TLS sits beside it
//! rather than inside it: a TLS connection is a local socketpair whose far end a small pump
//! thread relays to and from the TLS session on the TCP socket, in one `poll` loop (both
//! directions, no busy loop). The [`Connection`](crate::Connection) holds the near end and
//! behaves exactly like a TCP one (remote: no descriptor passing). The HMAC handshake then
//! runs inside TLS: TLS gives confidentiality and the listener's identity, the authkey
//! still decides who may connect. Protocol: `README.md` here.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConnection, RootCertStore, ServerConnection};
use rustls::{Connection as Session, Error as TlsError};

use super::{Address, TlsTrust};
use crate::error::Error;
use crate::sys;

/// Plaintext read from the local socket per turn: at most this much is encrypted and queued
/// before the pump waits for the TCP socket to take it.
const CHUNK: usize = 16 * 1024;

/// Stack of a pump thread: rustls's handshake needs little; many may be pending at once.
const PUMP_STACK: usize = 256 * 1024;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener's side of TLS: its certificate chain and private key.
///
/// # Examples
///
/// ```
/// // A self-signed certificate for the example (use your CA's in production).
/// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let tls = mp::TlsServerConfig::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem()).unwrap();
/// let listener = mp::Listener::bind_tls("127.0.0.1:0", b"secret", &tls).unwrap();
/// # drop(listener);
/// ```
#[derive(Clone)]
pub struct TlsServerConfig {
    config: Arc<rustls::ServerConfig>,
    /// The PEM it was made from: a manager started with TLS gets it in its task arguments.
    pem: Arc<ServerPem>,
}

/// A listener's certificate chain and key as PEM, and its certificate (DER).
pub(crate) struct ServerPem {
    pub cert_chain: Vec<u8>,
    pub key: Vec<u8>,
    pub leaf: Vec<u8>,
}

impl std::fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsServerConfig").finish_non_exhaustive()
    }
}

impl TlsServerConfig {
    /// From PEM text: `cert_chain` holds the listener's certificate first, then any
    /// intermediates; `key` holds its private key (PKCS#8, PKCS#1 or SEC1). Bad PEM, a
    /// missing certificate or a key that does not match is [`Error::Invalid`].
    ///
    /// # Examples
    ///
    /// ```
    /// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let ok = mp::TlsServerConfig::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem());
    /// assert!(ok.is_ok());
    /// let bad = mp::TlsServerConfig::from_pem("not pem", cert.signing_key.serialize_pem());
    /// assert!(matches!(bad, Err(mp::Error::Invalid(_))));
    /// ```
    pub fn from_pem(cert_chain: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<TlsServerConfig, Error> {
        let (cert_chain, key) = (cert_chain.as_ref(), key.as_ref());
        let certs = certs_from_pem(cert_chain, "the listener's certificate chain")?;
        let pem = ServerPem { cert_chain: cert_chain.to_vec(), key: key.to_vec(), leaf: certs[0].to_vec() };
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
            Error::invalid(format!(
                "no private key in the PEM given for the listener ({e}): expected a \
                 '-----BEGIN PRIVATE KEY-----' (or RSA / EC PRIVATE KEY) block"
            ))
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::invalid(format!("TLS server configuration: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                Error::invalid(format!(
                    "the listener's certificate and key cannot be used together: {e} (is the key \
                     the one the certificate was issued for?)"
                ))
            })?;
        Ok(TlsServerConfig { config: Arc::new(config), pem: Arc::new(pem) })
    }

    /// The PEM this configuration was made from, and the listener's certificate.
    pub(crate) fn pem(&self) -> &ServerPem {
        &self.pem
    }

    /// [`from_pem`](Self::from_pem), reading both from files (a missing or unreadable file is
    /// [`Error::Io`] naming it).
    ///
    /// # Examples
    ///
    /// ```
    /// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let dir = std::env::temp_dir().join(format!("mp-doc-tls-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    /// std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    /// let tls = mp::TlsServerConfig::from_pem_files(dir.join("cert.pem"), dir.join("key.pem"));
    /// std::fs::remove_dir_all(&dir).unwrap();
    /// assert!(tls.is_ok());
    /// ```
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsServerConfig, Error> {
        TlsServerConfig::from_pem(read(cert_chain.as_ref())?, read(key.as_ref())?)
    }
}

/// The client's side of TLS: which certificate authorities it trusts, and optionally the
/// name the listener's certificate must carry (by default, the host of the address it
/// connects to).
///
/// # Examples
///
/// ```
/// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// // A self-signed certificate is its own authority.
/// let tls = mp::TlsClientConfig::from_ca_pem(cert.cert.pem()).unwrap().server_name("localhost").unwrap();
/// # drop(tls);
/// ```
#[derive(Clone)]
pub struct TlsClientConfig {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
    /// The same, as data another process can rebuild it from (a manager proxy carries it).
    trust: Arc<TlsTrust>,
}

impl std::fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClientConfig").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsClientConfig {
    /// Trusts the CA certificates in `ca` (PEM, one or more). Bad PEM or no certificate is
    /// [`Error::Invalid`].
    ///
    /// # Examples
    ///
    /// ```
    /// let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// assert!(mp::TlsClientConfig::from_ca_pem(ca.cert.pem()).is_ok());
    /// assert!(matches!(mp::TlsClientConfig::from_ca_pem("garbage"), Err(mp::Error::Invalid(_))));
    /// ```
    pub fn from_ca_pem(ca: impl AsRef<[u8]>) -> Result<TlsClientConfig, Error> {
        let cas = certs_from_pem(ca.as_ref(), "the CA certificates")?;
        TlsClientConfig::from_trust(&TlsTrust::Cas {
            cas: cas.iter().map(|c| c.to_vec()).collect(),
            server_name: None,
        })
    }

    /// Rebuilds a configuration from what it trusts (in a process a manager proxy was sent to).
    pub(crate) fn from_trust(trust: &TlsTrust) -> Result<TlsClientConfig, Error> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::invalid(format!("TLS client configuration: {e}")))?;
        let (config, server_name) = match trust {
            TlsTrust::Cas { cas, server_name } => {
                let mut roots = RootCertStore::empty();
                for cert in cas {
                    roots
                        .add(CertificateDer::from(cert.clone()))
                        .map_err(|e| Error::invalid(format!("a CA certificate cannot be used: {e}")))?;
                }
                let name = server_name.as_deref().map(parse_server_name).transpose()?;
                (builder.with_root_certificates(roots).with_no_client_auth(), name)
            }
            TlsTrust::Pinned(cert) => {
                let pin = Pinned { cert: cert.clone(), provider: provider() };
                (
                    builder.dangerous().with_custom_certificate_verifier(Arc::new(pin)).with_no_client_auth(),
                    None,
                )
            }
        };
        Ok(TlsClientConfig { config: Arc::new(config), server_name, trust: Arc::new(trust.clone()) })
    }

    /// What this configuration trusts, as data.
    pub(crate) fn trust(&self) -> &Arc<TlsTrust> {
        &self.trust
    }

    /// [`from_ca_pem`](Self::from_ca_pem), reading the file at `path`.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = mp::TlsClientConfig::from_ca_file("/nonexistent/ca.pem");
    /// assert!(matches!(r, Err(mp::Error::Io { .. })));
    /// ```
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<TlsClientConfig, Error> {
        TlsClientConfig::from_ca_pem(read(path.as_ref())?)
    }

    /// The DNS name (or IP address) the listener's certificate must be valid for, when it is
    /// not the host in the address connected to (a tunnel, an IP address, a load balancer).
    ///
    /// # Examples
    ///
    /// ```
    /// let ca = rcgen::generate_simple_self_signed(vec!["pool.internal".into()]).unwrap();
    /// let tls = mp::TlsClientConfig::from_ca_pem(ca.cert.pem()).unwrap();
    /// assert!(tls.clone().server_name("pool.internal").is_ok());
    /// assert!(tls.server_name("not a name!").is_err());
    /// ```
    pub fn server_name(mut self, name: &str) -> Result<TlsClientConfig, Error> {
        self.server_name = Some(parse_server_name(name)?);
        if let TlsTrust::Cas { cas, .. } = &*self.trust {
            let cas = cas.clone();
            self.trust = Arc::new(TlsTrust::Cas { cas, server_name: Some(name.to_string()) });
        }
        Ok(self)
    }
}

fn parse_server_name(name: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(name.to_string())
        .map_err(|e| Error::invalid(format!("{name:?} is not a DNS name or IP address: {e}")))
}

/// Trusts exactly one certificate: the owner of a manager started with TLS connects to its
/// server trusting the certificate it gave it, so neither its CA nor its name has to be
/// known. The server still proves it holds that certificate's key (the TLS 1.3
/// CertificateVerify signature, checked below as usual).
#[derive(Debug)]
struct Pinned {
    cert: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, TlsError> {
        if end_entity.as_ref() == self.cert.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(TlsError::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(
                io::Error::other(
                    "it is not the certificate this manager was started with (another server on \
                     its address?)",
                ),
            )))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("{what}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!(
            "{what}: no certificate in the PEM given (expected '-----BEGIN CERTIFICATE-----' blocks)"
        )));
    }
    Ok(certs)
}

/// The name to check the listener's certificate against: the configured one, else the
/// address's host.
fn server_name_for(cfg: &TlsClientConfig, addr: &Address) -> Result<ServerName<'static>, Error> {
    if let Some(n) = &cfg.server_name {
        return Ok(n.clone());
    }
    let Address::Tcp(hp) = addr else {
        return Err(Error::invalid(format!("TLS is for TCP addresses, not {addr}")));
    };
    let host = hp.rsplit_once(':').map_or(hp.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let (TlsTrust::Pinned(_), Err(_)) = (&*cfg.trust, ServerName::try_from(host)) {
        // A pinned certificate is not checked by name: any valid name will do.
        return Ok(ServerName::try_from("localhost").expect("a valid DNS name"));
    }
    ServerName::try_from(host.to_string()).map_err(|e| {
        Error::invalid(format!(
            "{host:?} cannot be checked against a certificate ({e}): give the name with \
             TlsClientConfig::server_name"
        ))
    })
}

/// The client's side: `tcp` is connected and the listener's STARTTLS frame was read. Runs the
/// TLS handshake here, bounded by `deadline`, then hands the session to a pump thread and
/// returns the local end to speak mp frames on.
pub(crate) fn client(
    cfg: &TlsClientConfig,
    addr: &Address,
    mut tcp: TcpStream,
    deadline: Instant,
) -> Result<OwnedFd, Error> {
    let name = server_name_for(cfg, addr)?;
    let shown = name.to_str().into_owned();
    let mut session = ClientConnection::new(cfg.config.clone(), name)
        .map_err(|e| Error::invalid(format!("TLS with {addr}: {e}")))?;
    let what = format!("the TLS handshake with the listener at {addr}");
    while session.is_handshaking() || session.wants_write() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout { what, after: Duration::ZERO });
        }
        let set = tcp.set_read_timeout(Some(left)).and_then(|()| tcp.set_write_timeout(Some(left)));
        set.map_err(|e| Error::io(what.clone(), e))?;
        if let Err(e) = session.complete_io(&mut tcp) {
            return Err(match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    Error::Timeout { what, after: Duration::ZERO }
                }
                _ => match e.get_ref().and_then(|i| i.downcast_ref::<TlsError>()) {
                    Some(t) => Error::Auth(format!("{what} failed: {t}{}", hint(t, &shown))),
                    None => Error::io(format!("{what} (the listener broke it off: its accept says why)"), e),
                },
            });
        }
    }
    let _ = tcp.set_read_timeout(None);
    let _ = tcp.set_write_timeout(None);
    start_pump(Session::Client(session), tcp, None, "the listener")
}

/// What to do about a TLS failure seen by the client.
fn hint(e: &TlsError, name: &str) -> String {
    match e {
        TlsError::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
        ) => " (the listener's certificate is not signed by a CA this client trusts: give its CA \
             to TlsClientConfig::from_ca_pem, or MP_TLS_CA for a worker host)"
            .into(),
        TlsError::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => format!(
            " (the listener's certificate is not issued for {name}: connect by the name it \
             carries, or set it with TlsClientConfig::server_name / MP_TLS_SERVER_NAME)"
        ),
        _ => String::new(),
    }
}

/// The listener's side: `tcp` was accepted and sent the STARTTLS frame. The TLS handshake
/// runs on the pump thread (the listener's `accept` keeps many handshakes going without
/// blocking); returns the local end at once. If TLS fails, the pump writes a `#FAILURE#`
/// handshake frame to the local end, so `accept` reports it as [`Error::Auth`].
pub(crate) fn server(cfg: &TlsServerConfig, tcp: TcpStream, deadline: Instant) -> Result<OwnedFd, Error> {
    let session =
        ServerConnection::new(cfg.config.clone()).map_err(|e| Error::invalid(format!("TLS session: {e}")))?;
    start_pump(Session::Server(session), tcp, Some(deadline), "the client")
}

fn start_pump(
    mut session: Session,
    tcp: TcpStream,
    handshake_deadline: Option<Instant>,
    peer: &'static str,
) -> Result<OwnedFd, Error> {
    let (near, far) =
        sys::socketpair().map_err(|e| Error::io("creating a TLS connection's socketpair", e))?;
    let local = UnixStream::from(far);
    let nb = tcp.set_nonblocking(true).and_then(|()| local.set_nonblocking(true));
    nb.map_err(|e| Error::io("setting up a TLS connection", e))?;
    // Backpressure is the pump's: it reads plaintext only when the TLS output is flushed.
    session.set_buffer_limit(None);
    let pump = Pump {
        session,
        tcp,
        local,
        to_local: Vec::new(),
        local_eof: false,
        local_gone: false,
        local_shut: false,
        tls_eof: false,
        close_sent: false,
        tcp_shut: false,
        handshake_deadline,
        peer,
    };
    std::thread::Builder::new()
        .name("mp-tls".into())
        .stack_size(PUMP_STACK)
        .spawn(move || pump.run())
        .map_err(|e| Error::io("starting a TLS connection's thread", e))?;
    Ok(near)
}

/// Relays plaintext between the local socket and the TLS session on the TCP socket.
struct Pump {
    session: Session,
    tcp: TcpStream,
    local: UnixStream,
    /// Decrypted bytes not yet taken by the local socket.
    to_local: Vec<u8>,
    /// The local side will send nothing more (it shut down or closed its end).
    local_eof: bool,
    /// The local end is closed: nothing can be delivered to it.
    local_gone: bool,
    /// We shut down the local socket's write side (after the TLS peer finished).
    local_shut: bool,
    /// The TLS peer will send nothing more (close_notify or TCP end of stream).
    tls_eof: bool,
    close_sent: bool,
    tcp_shut: bool,
    handshake_deadline: Option<Instant>,
    peer: &'static str,
}

impl Pump {
    fn run(mut self) {
        if let Err(reason) = self.relay() {
            if self.session.is_handshaking() {
                // Tell the local side (the listener's accept) why, as the peer's refusal.
                let mut msg = b"#FAILURE#".to_vec();
                msg.extend_from_slice(reason.as_bytes());
                let _ = self.local.write_all(&super::auth_frame(&msg));
            }
        }
        // Dropping both sockets closes them: the local end sees end of stream, the TCP peer
        // a FIN (or a reset if data was unread).
    }

    fn relay(&mut self) -> Result<(), String> {
        let mut buf = vec![0u8; CHUNK];
        if !self.session.is_handshaking() {
            // The client's handshake ran before the pump: anything it already decrypted.
            self.take_plaintext();
        }
        loop {
            self.flush_local();
            if self.tls_eof && self.to_local.is_empty() && !self.local_shut {
                let _ = self.local.shutdown(Shutdown::Write);
                self.local_shut = true;
            }
            if self.local_eof && !self.close_sent {
                self.session.send_close_notify();
                self.close_sent = true;
            }
            while self.session.wants_write() {
                match self.session.write_tls(&mut self.tcp) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("sending to {}: {e}", self.peer)),
                }
            }
            if self.close_sent && !self.session.wants_write() && !self.tcp_shut {
                let _ = self.tcp.shutdown(Shutdown::Write);
                self.tcp_shut = true;
            }
            let delivered = self.local_shut || self.local_gone;
            if self.tcp_shut && delivered {
                return Ok(());
            }
            if self.tls_eof && self.local_gone {
                return Ok(());
            }
            let handshaking = self.session.is_handshaking();
            if handshaking && self.handshake_deadline.is_some_and(|d| Instant::now() >= d) {
                return Err("the TLS handshake did not finish in time".into());
            }

            // What to wait for. The TCP socket with nothing to wait for is left out (its
            // hang-up would wake poll again and again); the local one is always watched for
            // hang-up, so a closed local end (a dropped Connection, a listener giving up on a
            // pending handshake) ends the pump, then it is left out.
            let tcp_in = !self.tls_eof && self.to_local.is_empty();
            let tcp_out = self.session.wants_write();
            let local_in = !self.local_eof && !handshaking && !self.session.wants_write();
            let local_out = !self.to_local.is_empty();
            let deadline = if handshaking { self.handshake_deadline } else { None };
            let (tcp_ready, local_ready) = wait(
                (tcp_in || tcp_out).then(|| (self.tcp.as_fd(), tcp_in, tcp_out)),
                (!self.local_gone).then(|| (self.local.as_fd(), local_in, local_out)),
                deadline,
            )
            .map_err(|e| format!("waiting on a TLS connection: {e}"))?;
            if local_ready && !local_in && !local_out {
                // Only a hang-up (or error) wakes a socket polled for nothing.
                self.local_gone = true;
                self.local_eof = true;
                self.to_local.clear();
                if handshaking {
                    return Ok(());
                }
            }

            if tcp_ready && tcp_in {
                self.read_tls()?;
            }
            if local_ready && local_in {
                match self.local.read(&mut buf) {
                    Ok(0) => self.local_eof = true,
                    Ok(n) => {
                        // Unbounded buffer (set above): takes everything.
                        let _ = self.session.writer().write_all(&buf[..n]);
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(_) => {
                        self.local_eof = true;
                        self.local_gone = true;
                    }
                }
            }
        }
    }

    /// Reads what the TCP socket has, decrypts it and queues the plaintext for the local side.
    fn read_tls(&mut self) -> Result<(), String> {
        let eof = match self.session.read_tls(&mut self.tcp) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                return Ok(());
            }
            Err(e) => {
                if self.session.is_handshaking() {
                    return Err(format!("{} broke off the TLS handshake: {e}", self.peer));
                }
                // A reset after the session: the peer is gone, as after an end of stream.
                true
            }
        };
        if let Err(e) = self.session.process_new_packets() {
            // Send the alert that describes it, if we can.
            let _ = self.session.write_tls(&mut self.tcp);
            return Err(format!("TLS: {e}{}", server_hint(&e)));
        }
        self.take_plaintext();
        if eof {
            if self.session.is_handshaking() {
                return Err(format!(
                    "{} closed the connection during the TLS handshake (a client without TLS, or \
                     one that does not trust this listener's certificate?)",
                    self.peer
                ));
            }
            self.tls_eof = true;
        }
        Ok(())
    }

    /// Moves what the session decrypted into `to_local`; notes the peer's end of stream.
    fn take_plaintext(&mut self) {
        let mut buf = [0u8; CHUNK];
        loop {
            match self.session.reader().read(&mut buf) {
                Ok(0) => {
                    self.tls_eof = true;
                    break;
                }
                Ok(n) => self.to_local.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // End of stream without close_notify.
                    self.tls_eof = true;
                    break;
                }
            }
        }
    }

    fn flush_local(&mut self) {
        let mut sent = 0;
        while sent < self.to_local.len() && !self.local_gone {
            match self.local.write(&self.to_local[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.local_gone = true;
                    self.local_eof = true;
                }
            }
        }
        if self.local_gone {
            self.to_local.clear();
        } else {
            self.to_local.drain(..sent);
        }
    }
}

/// The listener's reading of a failed TLS handshake.
fn server_hint(e: &TlsError) -> &'static str {
    match e {
        TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. } => {
            " (a client speaking without TLS? It must connect with Client::connect_tls)"
        }
        TlsError::AlertReceived(_) => " (the client rejected this listener's certificate or TLS settings)",
        _ => "",
    }
}

/// Waits until one of the (up to two) sockets is ready for what is asked, or `deadline`.
/// Returns (tcp ready, local ready); a hang-up or error counts as ready.
fn wait(
    tcp: Option<(std::os::fd::BorrowedFd<'_>, bool, bool)>,
    local: Option<(std::os::fd::BorrowedFd<'_>, bool, bool)>,
    deadline: Option<Instant>,
) -> io::Result<(bool, bool)> {
    let mut fds = Vec::with_capacity(2);
    let mut idx = [None, None];
    for (i, s) in [tcp, local].into_iter().enumerate() {
        if let Some((fd, r, w)) = s {
            idx[i] = Some(fds.len());
            fds.push((fd, r, w));
        }
    }
    let ready = sys::poll_rw(&fds, deadline)?;
    Ok((idx[0].is_some_and(|i| ready[i]), idx[1].is_some_and(|i| ready[i])))
}

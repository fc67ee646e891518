//! Mutual TLS for the dvipa server-stack protocol (`dvipa.v1.ServerStack`).
//!
//! Both ends authenticate with certificates issued by one deployment CA:
//!
//! - **Agent (client) side** — [`client_tls_config`] turns a [`PemBundle`] (CA, the agent's own
//!   certificate and key) into a tonic [`ClientTlsConfig`]. The agent's certificate must carry its
//!   stack name as a DNS subject-alternative name (and, by convention, as the common name).
//! - **Controller (server) side** — [`server_config`] builds a rustls `ServerConfig` that
//!   *requires* a client certificate chaining to the CA, and [`tls_incoming`] turns a TCP listener
//!   into a stream of TLS connections for `tonic::transport::Server::serve_with_incoming`.
//!   Handshakes run off the accept loop; every refused handshake is counted in [`TlsStats`] (and
//!   the `dvipa_tls_handshakes_total{result=...}` metric) by reason: no certificate, bad
//!   certificate, other. In an RPC handler, [`peer_name`] / [`peer_names`] return the verified
//!   names of the client certificate so the controller can check `Hello.stack` against them.
//! - **Other endpoints** — the same builders serve the controller's admin API: a [`TlsStats`]
//!   made with [`TlsStats::new`] logs and exports under its own [`StatsNames`], and
//!   [`allowed_name`] checks a verified certificate against an allow-list of names.
//! - **Tests** — [`testing::TestCa`] mints a throw-away CA and server/client certificates with
//!   rcgen (used by the agent's tests and the controller's).
//!
//! Layout: this file holds the config builders and the accept stream; `testing.rs` the rcgen CA.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
/// The rustls this crate uses (for matching its errors, e.g. in the CLI's messages).
pub use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_stream::wrappers::ReceiverStream;

pub use tokio_rustls::server::TlsStream;
pub use tonic::transport::ClientTlsConfig;

pub mod reload;
pub mod testing;

pub use reload::{
    RELOAD_FAILED_METRIC, RELOAD_INTERVAL, RELOADED_METRIC, ReloadSnapshot, Reloader,
    ServerReloader, WatchOptions, load_checked, reloading_server_config, watched_server_config,
};

/// How long a TLS handshake may take before the connection is dropped (and counted as refused).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: &'static str },
    #[error("{what}: invalid PEM: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("private key: no PEM private key found ({detail})")]
    NoPrivateKey { detail: String },
    #[error("CA certificate rejected: {0}")]
    BadCa(String),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: Box<TlsError>,
    },
    #[error("the private key {key} does not belong to the certificate {cert}: {detail}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("the certificate names {names:?}, not {want:?}")]
    WrongName { want: String, names: Vec<String> },
}

/// PEM texts of one party: the CA that signs the peers' certificates, and this party's own
/// certificate (chain) and private key.
#[derive(Clone)]
pub struct PemBundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The files it was read from ([`PemBundle::load`]); `None` for a bundle made in memory.
    /// Endpoints built from a bundle with a source follow its files ([`reload`]).
    pub source: Option<PemPaths>,
}

impl std::fmt::Debug for PemBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemBundle")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// Paths of the three PEM files of a [`PemBundle`].
#[derive(Debug, Clone)]
pub struct PemPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Largest PEM file read (1 MiB: a certificate chain is a few KiB).
pub const PEM_CAP: u64 = 1 << 20;

/// The file at `path` if it is a regular file of at most [`PEM_CAP`] bytes (a device, FIFO
/// or directory is refused before reading; a bigger file is refused without reading it all).
pub fn read_pem_file(path: &Path) -> io::Result<Vec<u8>> {
    dvipa_file::read_capped_as(path, PEM_CAP, "PEM")
}

fn read(path: &Path) -> Result<String, TlsError> {
    let e = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    String::from_utf8(read_pem_file(path).map_err(e)?)
        .map_err(|x| e(io::Error::new(io::ErrorKind::InvalidData, x.utf8_error())))
}

impl PemBundle {
    /// Reads the three files and checks that each holds what it should.
    pub fn load(paths: &PemPaths) -> Result<Self, TlsError> {
        let b = Self::load_unchecked(paths)?;
        b.validate()?;
        Ok(b)
    }

    /// Reads the three files without looking inside.
    pub fn load_unchecked(paths: &PemPaths) -> Result<Self, TlsError> {
        Ok(PemBundle {
            ca_pem: read(&paths.ca)?,
            cert_pem: read(&paths.cert)?,
            key_pem: read(&paths.key)?,
            source: Some(paths.clone()),
        })
    }

    /// Checks that the CA and certificate texts hold at least one certificate and the key text a
    /// private key.
    pub fn validate(&self) -> Result<(), TlsError> {
        certs(&self.ca_pem, "CA file")?;
        certs(&self.cert_pem, "certificate file")?;
        key(&self.key_pem)?;
        Ok(())
    }

    /// The DER of this party's own (first) certificate.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, TlsError> {
        Ok(certs(&self.cert_pem, "certificate file")?.swap_remove(0))
    }

    /// The DNS names of this party's own (first) certificate.
    pub fn cert_names(&self) -> Result<Vec<String>, TlsError> {
        let chain = certs(&self.cert_pem, "certificate file")?;
        Ok(cert_dns_names(&chain[0]))
    }

    /// Writes the bundle as `<prefix>-ca.pem`, `<prefix>.pem`, `<prefix>-key.pem` under `dir`
    /// (key mode 0600).
    pub fn write_files(&self, dir: &Path, prefix: &str) -> Result<PemPaths, TlsError> {
        use std::os::unix::fs::PermissionsExt;
        let paths = PemPaths {
            ca: dir.join(format!("{prefix}-ca.pem")),
            cert: dir.join(format!("{prefix}.pem")),
            key: dir.join(format!("{prefix}-key.pem")),
        };
        for (p, text) in [
            (&paths.ca, &self.ca_pem),
            (&paths.cert, &self.cert_pem),
            (&paths.key, &self.key_pem),
        ] {
            std::fs::write(p, text).map_err(|source| TlsError::Write {
                path: p.clone(),
                source,
            })?;
        }
        std::fs::set_permissions(&paths.key, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| TlsError::Write {
                path: paths.key.clone(),
                source,
            },
        )?;
        Ok(paths)
    }
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let v = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            detail: e.to_string(),
        })?;
    if v.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(v)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::NoPrivateKey {
        detail: e.to_string(),
    })
}

/// The agent's tonic TLS config: trust only the deployment CA, present the agent's certificate.
///
/// `server_name` overrides the name checked in the controller's certificate (default: the host of
/// the endpoint URI).
pub fn client_tls_config(
    bundle: &PemBundle,
    server_name: Option<&str>,
) -> Result<ClientTlsConfig, TlsError> {
    bundle.validate()?;
    let mut cfg = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&bundle.ca_pem))
        .identity(tonic::transport::Identity::from_pem(
            &bundle.cert_pem,
            &bundle.key_pem,
        ));
    if let Some(name) = server_name {
        cfg = cfg.domain_name(name);
    }
    Ok(cfg)
}

/// The controller's TLS config toward one P4Runtime server (a switch started with
/// simple_switch_grpc's `--grpc-server-ssl`): trust `ca`, present `identity` (certificate, key)
/// when the switch asks for client certificates (`--grpc-server-with-client-auth`), and expect
/// `server_name` in the switch's certificate (default: the host of its address). The files are
/// read (capped, regular files only) and checked on every call, so a caller that builds this
/// per connection follows rotated files.
pub fn p4runtime_client_tls(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    server_name: Option<&str>,
) -> Result<ClientTlsConfig, TlsError> {
    let ca_pem = read(ca)?;
    certs(&ca_pem, "CA file")?;
    let mut cfg =
        ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem));
    if let Some((cert, key_path)) = identity {
        let cert_pem = read(cert)?;
        let key_pem = read(key_path)?;
        certs(&cert_pem, "certificate file")?;
        key(&key_pem)?;
        cfg = cfg.identity(tonic::transport::Identity::from_pem(&cert_pem, &key_pem));
    }
    if let Some(name) = server_name {
        cfg = cfg.domain_name(name);
    }
    Ok(cfg)
}

/// Does a TLS handshake with `addr` as a client of `bundle` (trusting its CA, presenting its
/// certificate, expecting `server_name` in the peer's) and waits up to `wait` for the peer's
/// first bytes, to learn why a connection failed: with TLS 1.3 a server refuses a client
/// certificate only after the client has finished its handshake, and an HTTP/2 client that
/// sent its request meanwhile just sees the connection close. `Ok` = the peer accepted us
/// (or said nothing in time); `Err` = the handshake or the first read failed (a rustls error
/// inside, e.g. `received fatal alert: UnknownCA`).
pub async fn probe_handshake(
    bundle: &PemBundle,
    addr: &str,
    server_name: &str,
    wait: Duration,
) -> io::Result<()> {
    probe_handshake_with(
        &bundle.ca_pem,
        Some((&bundle.cert_pem, &bundle.key_pem)),
        addr,
        server_name,
        wait,
    )
    .await
}

/// [`probe_handshake`] from PEM texts, with or without a client certificate (`identity`:
/// certificate, key), e.g. to learn why etcd closed a connection.
pub async fn probe_handshake_with(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    addr: &str,
    server_name: &str,
    wait: Duration,
) -> io::Result<()> {
    use tokio::io::AsyncReadExt;
    let bad = |e: TlsError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem, "CA file").map_err(bad)? {
        roots
            .add(c)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, k)) => builder
            .with_client_auth_cert(
                certs(cert, "certificate file").map_err(bad)?,
                key(k).map_err(bad)?,
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(wait, tls.read(&mut buf)).await {
        Ok(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// The controller's rustls config: its own certificate, ALPN `h2`, and a verifier that requires
/// every client to present a certificate chaining to the CA in `bundle.ca_pem`.
pub fn server_config(bundle: &PemBundle) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&bundle.ca_pem, "CA file")? {
        roots.add(c).map_err(|e| TlsError::BadCa(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&bundle.cert_pem, "certificate file")?,
            key(&bundle.key_pem)?,
        )?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Names under which a [`TlsStats`] logs and exports its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsNames {
    /// The endpoint, in log lines (`agent`, `admin`).
    pub endpoint: &'static str,
    /// Counter of every handshake, labelled `result` (`accepted`, `no_cert`, `bad_cert`,
    /// `other`).
    pub handshakes_metric: &'static str,
    /// Optional counter of refused handshakes only, labelled `reason` (`no_cert`, `bad_cert`,
    /// `other`), for endpoints that count refusals from several layers under one name.
    pub refused_metric: Option<&'static str>,
}

impl Default for StatsNames {
    /// The agent endpoint's: `dvipa_tls_handshakes_total{result}`.
    fn default() -> Self {
        StatsNames {
            endpoint: "agent",
            handshakes_metric: "dvipa_tls_handshakes_total",
            refused_metric: None,
        }
    }
}

/// Counters of the TLS accept stream.
#[derive(Debug, Default)]
pub struct TlsStats {
    accepted: AtomicU64,
    refused_no_cert: AtomicU64,
    refused_bad_cert: AtomicU64,
    refused_other: AtomicU64,
    names: StatsNames,
}

/// A copy of [`TlsStats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TlsStatsSnapshot {
    /// Handshakes that completed with a verified client certificate.
    pub accepted: u64,
    /// The client presented no certificate.
    pub refused_no_cert: u64,
    /// The client's certificate was not accepted (unknown issuer, expired, wrong usage, ...).
    pub refused_bad_cert: u64,
    /// Any other handshake failure (protocol error, timeout, connection reset).
    pub refused_other: u64,
}

impl TlsStatsSnapshot {
    /// All refused handshakes.
    pub fn refused(&self) -> u64 {
        self.refused_no_cert + self.refused_bad_cert + self.refused_other
    }
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoCertificate,
    BadCertificate,
    Other,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_cert",
            Refusal::BadCertificate => "bad_cert",
            Refusal::Other => "other",
        }
    }

    /// Classifies an error returned by `TlsAcceptor::accept`.
    pub fn classify(err: &io::Error) -> Refusal {
        match err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::NoCertificatesPresented) => Refusal::NoCertificate,
            Some(rustls::Error::InvalidCertificate(_)) => Refusal::BadCertificate,
            _ => Refusal::Other,
        }
    }
}

impl TlsStats {
    /// Counters exported under `names` (the [`Default`] ones are the agent endpoint's).
    pub fn new(names: StatsNames) -> Self {
        TlsStats {
            names,
            ..TlsStats::default()
        }
    }

    /// The names it logs and exports under.
    pub fn names(&self) -> StatsNames {
        self.names
    }

    pub fn snapshot(&self) -> TlsStatsSnapshot {
        TlsStatsSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused_no_cert: self.refused_no_cert.load(Ordering::Relaxed),
            refused_bad_cert: self.refused_bad_cert.load(Ordering::Relaxed),
            refused_other: self.refused_other.load(Ordering::Relaxed),
        }
    }

    fn count_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(self.names.handshakes_metric, "result" => "accepted").increment(1);
    }

    fn count_refused(&self, r: Refusal) {
        let c = match r {
            Refusal::NoCertificate => &self.refused_no_cert,
            Refusal::BadCertificate => &self.refused_bad_cert,
            Refusal::Other => &self.refused_other,
        };
        c.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(self.names.handshakes_metric, "result" => r.label()).increment(1);
        if let Some(m) = self.names.refused_metric {
            metrics::counter!(m, "reason" => r.label()).increment(1);
        }
    }
}

/// Accepts TCP connections on `listener`, runs each TLS handshake in its own task (bounded by
/// [`HANDSHAKE_TIMEOUT`]) and yields the established ones. Refused handshakes are logged, counted
/// in `stats` and never reach the server. The accept task stops when the stream is dropped.
///
/// Use with `tonic::transport::Server::builder().add_service(..).serve_with_incoming(stream)`;
/// handlers then see the client certificate through [`peer_name`].
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    stats: Arc<TlsStats>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                match r {
                    Ok(Ok(tls)) => {
                        stats.count_accepted();
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        let why = Refusal::classify(&e);
                        stats.count_refused(why);
                        tracing::warn!(endpoint = stats.names.endpoint, %peer, reason = why.label(), error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        stats.count_refused(Refusal::Other);
                        tracing::warn!(endpoint = stats.names.endpoint, %peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The DNS names (subject alternative names) of a DER certificate.
pub fn cert_dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(der) {
        Ok(c) => c.valid_dns_names().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

/// The verified DNS names of the client certificate of the connection `req` came on (empty
/// without TLS or without a certificate).
pub fn peer_names<T>(req: &tonic::Request<T>) -> Vec<String> {
    req.peer_certs()
        .and_then(|c| c.first().map(cert_dns_names))
        .unwrap_or_default()
}

/// The first verified DNS name of the client certificate: by dvipa's convention, the stack name.
pub fn peer_name<T>(req: &tonic::Request<T>) -> Option<String> {
    peer_names(req).into_iter().next()
}

/// The first of `cert_names` (verified client certificate names, from [`peer_names`]) that is in
/// `allow`; `None` when no name is allowed (or there is no certificate).
pub fn allowed_name<'a>(cert_names: &'a [String], allow: &[String]) -> Option<&'a str> {
    cert_names
        .iter()
        .find(|n| allow.iter().any(|a| a == *n))
        .map(String::as_str)
}

/// Checks a claimed stack name (e.g. `Hello.stack`) against the client certificate's names
/// (from [`peer_names`], taken before `into_inner()`); a mismatch is `PERMISSION_DENIED`, no
/// certificate `UNAUTHENTICATED`.
pub fn require_peer_name(cert_names: &[String], claimed: &str) -> Result<(), tonic::Status> {
    if cert_names.is_empty() {
        return Err(tonic::Status::unauthenticated(
            "no verified client certificate on this connection",
        ));
    }
    if cert_names.iter().any(|n| n == claimed) {
        Ok(())
    } else {
        Err(tonic::Status::permission_denied(format!(
            "stack {claimed:?} does not match the client certificate {cert_names:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_must_be_small_regular_files() {
        let paths = |p: &str| PemPaths {
            ca: p.into(),
            cert: p.into(),
            key: p.into(),
        };
        let t = std::time::Instant::now();
        let e = PemBundle::load(&paths("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "reading /dev/zero: not a regular file (character device; a PEM file must be one)"
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let dir = std::env::temp_dir().join(format!("dvipa-pem-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'A'; PEM_CAP as usize + 1]).unwrap();
        let e = PemBundle::load(&paths(big.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            e.ends_with("1048577 bytes, over the PEM limit of 1048576 bytes"),
            "{e}"
        );
    }

    #[test]
    fn allowed_name_needs_one_listed_name() {
        let names = vec!["stack1".to_string(), "ops-alice".to_string()];
        let allow = vec!["ops-bob".to_string(), "ops-alice".to_string()];
        assert_eq!(allowed_name(&names, &allow), Some("ops-alice"));
        assert_eq!(allowed_name(&names[..1], &allow), None);
        assert_eq!(allowed_name(&[], &allow), None);
        assert_eq!(allowed_name(&names, &[]), None);
    }

    #[test]
    fn stats_names_default_to_the_agent_endpoint() {
        assert_eq!(
            TlsStats::default().names().handshakes_metric,
            "dvipa_tls_handshakes_total"
        );
        let s = TlsStats::new(StatsNames {
            endpoint: "admin",
            handshakes_metric: "x_total",
            refused_metric: Some("y_total"),
        });
        s.count_refused(Refusal::NoCertificate);
        s.count_accepted();
        let snap = s.snapshot();
        assert_eq!((snap.accepted, snap.refused()), (1, 1));
        assert_eq!(s.names().endpoint, "admin");
    }
}

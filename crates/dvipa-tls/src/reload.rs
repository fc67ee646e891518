//! Certificate rotation without restarts.
//!
//! A [`Reloader`] owns the material built from three PEM files ([`PemPaths`]) and swaps it when
//! the files change: [`Reloader::spawn_watch`] re-reads the files every [`RELOAD_INTERVAL`]
//! (content hash, so a rewrite within the same second is seen) and at once on SIGHUP. A reload
//! checks every file (each error names its file) and that the private key belongs to the
//! certificate; a failed reload keeps the previous material, logs the error and counts it
//! (`dvipa_tls_reload_failed_total{endpoint}`; successes `dvipa_tls_reload_total{endpoint}`).
//! The same broken content is counted once, not at every poll.
//!
//! - Server side: [`reloading_server_config`] builds one rustls `ServerConfig` whose
//!   certificate resolver and client-certificate verifier read the reloader's current material
//!   on every handshake, so new handshakes use new material while established connections are
//!   untouched. Session resumption is off: a resumed session would skip the client-certificate
//!   check against a rotated CA.
//! - Client side: [`Reloader::client`] keeps a tonic [`ClientTlsConfig`]; take
//!   [`Reloader::current`] for every new connection.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::{ClientTlsConfig, PemBundle, PemPaths, TlsError, certs, client_tls_config, key};

/// How often watched files are re-read.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Counter of successful reloads, labelled `endpoint`.
pub const RELOADED_METRIC: &str = "dvipa_tls_reload_total";
/// Counter of failed reloads (the old material stays in use), labelled `endpoint`.
pub const RELOAD_FAILED_METRIC: &str = "dvipa_tls_reload_failed_total";

/// How a [`Reloader`] watches its files.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Poll interval.
    pub interval: Duration,
    /// Also reload on SIGHUP.
    pub sighup: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            interval: RELOAD_INTERVAL,
            sighup: true,
        }
    }
}

/// Reload counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSnapshot {
    pub reloaded: u64,
    pub failed: u64,
}

type Build<T> = dyn Fn(&PemBundle) -> Result<T, TlsError> + Send + Sync;

/// Material of type `T` built from three PEM files, swapped when they change.
pub struct Reloader<T> {
    endpoint: &'static str,
    paths: PemPaths,
    build: Box<Build<T>>,
    current: RwLock<Arc<T>>,
    /// Hash of the files' contents (or read errors) last tried.
    seen: Mutex<u64>,
    reloaded: AtomicU64,
    failed: AtomicU64,
}

impl<T> std::fmt::Debug for Reloader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("endpoint", &self.endpoint)
            .field("paths", &self.paths)
            .field("reloaded", &self.reloaded.load(Ordering::Relaxed))
            .field("failed", &self.failed.load(Ordering::Relaxed))
            .finish()
    }
}

fn fingerprint(paths: &PemPaths) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in [&paths.ca, &paths.cert, &paths.key] {
        match crate::read_pem_file(p) {
            Ok(b) => b.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

fn in_file(path: &Path, e: TlsError) -> TlsError {
    match e {
        e @ TlsError::Read { .. } => e,
        e => TlsError::File {
            path: path.to_owned(),
            source: Box::new(e),
        },
    }
}

/// Reads the three files, checks each (errors name the file) and that the key belongs to the
/// certificate.
pub fn load_checked(paths: &PemPaths) -> Result<PemBundle, TlsError> {
    let b = PemBundle::load_unchecked(paths)?;
    certs(&b.ca_pem, "CA file").map_err(|e| in_file(&paths.ca, e))?;
    let chain = certs(&b.cert_pem, "certificate file").map_err(|e| in_file(&paths.cert, e))?;
    let k = key(&b.key_pem).map_err(|e| in_file(&paths.key, e))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, k, &provider).map_err(|e| TlsError::KeyMismatch {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        detail: e.to_string(),
    })?;
    Ok(b)
}

impl<T: Send + Sync + 'static> Reloader<T> {
    /// Loads the files once (an error here is a start-up error) and keeps what `build` makes.
    pub fn new(
        endpoint: &'static str,
        paths: PemPaths,
        build: impl Fn(&PemBundle) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, TlsError> {
        let seen = fingerprint(&paths);
        let first = build(&load_checked(&paths)?)?;
        Ok(Arc::new(Reloader {
            endpoint,
            paths,
            build: Box::new(build),
            current: RwLock::new(Arc::new(first)),
            seen: Mutex::new(seen),
            reloaded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }))
    }

    /// The material in use now.
    pub fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The watched files.
    pub fn paths(&self) -> &PemPaths {
        &self.paths
    }

    /// The endpoint label of its log lines and metrics.
    pub fn endpoint(&self) -> &'static str {
        self.endpoint
    }

    pub fn snapshot(&self) -> ReloadSnapshot {
        ReloadSnapshot {
            reloaded: self.reloaded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Re-reads the files now and swaps the material; on error the old material stays, the
    /// error is logged (naming the file) and counted.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint(&self.paths);
        match load_checked(&self.paths).and_then(|b| (self.build)(&b)) {
            Ok(t) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(t);
                self.reloaded.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(RELOADED_METRIC, "endpoint" => self.endpoint).increment(1);
                tracing::info!(endpoint = self.endpoint, cert = %self.paths.cert.display(),
                    "TLS material reloaded; new handshakes use it");
                Ok(())
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(RELOAD_FAILED_METRIC, "endpoint" => self.endpoint).increment(1);
                tracing::error!(endpoint = self.endpoint, error = %e,
                    "TLS reload failed; still using the previous certificate, key and CA");
                Err(e)
            }
        }
    }

    /// Reloads if the files' contents differ from the last ones tried; `true` if it tried.
    pub fn reload_if_changed(&self) -> bool {
        let now = fingerprint(&self.paths);
        if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return false;
        }
        let _ = self.reload();
        true
    }

    /// Watches the files (poll every `opts.interval`, and SIGHUP if asked) until the reloader
    /// is dropped. Call inside a tokio runtime; the SIGHUP handler is installed before this
    /// returns.
    pub fn spawn_watch(self: &Arc<Self>, opts: WatchOptions) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let mut hup = if opts.sighup {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(endpoint = self.endpoint, error = %e,
                        "cannot watch SIGHUP; TLS files are only polled");
                    None
                }
            }
        } else {
            None
        };
        let endpoint = self.endpoint;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(opts.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async { match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    } } => true,
                };
                let Some(r) = weak.upgrade() else { return };
                if forced {
                    tracing::info!(endpoint, "SIGHUP: reloading TLS files");
                    let _ = r.reload();
                } else {
                    r.reload_if_changed();
                }
            }
        })
    }
}

impl Reloader<ClientTlsConfig> {
    /// A client's (the agent's) TLS config from `paths`; `server_name` overrides the name checked
    /// in the server's certificate, and `require_name`, when set, must be among the names of the
    /// client certificate (a new certificate for another name is refused).
    pub fn client(
        endpoint: &'static str,
        paths: PemPaths,
        server_name: Option<String>,
        require_name: Option<String>,
    ) -> Result<Arc<Self>, TlsError> {
        let cert_path = paths.cert.clone();
        Reloader::new(endpoint, paths, move |b| {
            if let Some(want) = &require_name {
                let names = b.cert_names()?;
                if !names.iter().any(|n| n == want) {
                    return Err(TlsError::File {
                        path: cert_path.clone(),
                        source: Box::new(TlsError::WrongName {
                            want: want.clone(),
                            names,
                        }),
                    });
                }
            }
            client_tls_config(b, server_name.as_deref())
        })
    }
}

/// The server side's material: certificate + key, and the verifier of client certificates.
pub struct ServerMaterial {
    pub key: Arc<CertifiedKey>,
    pub verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for ServerMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMaterial")
            .field("cert_chain_len", &self.key.cert.len())
            .finish()
    }
}

/// A server's reloader.
pub type ServerReloader = Reloader<ServerMaterial>;

fn server_material(b: &PemBundle) -> Result<ServerMaterial, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&b.ca_pem, "CA file")? {
        roots.add(c).map_err(|e| TlsError::BadCa(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let key = CertifiedKey::from_der(
        certs(&b.cert_pem, "certificate file")?,
        key(&b.key_pem)?,
        &provider,
    )?;
    Ok(ServerMaterial {
        key: Arc::new(key),
        verifier,
    })
}

#[derive(Debug)]
struct Resolver(Arc<ServerReloader>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }
}

/// Delegates to the current material's verifier. Sends no CA name hints (they could not follow
/// a swap): clients present their one certificate anyway.
#[derive(Debug)]
struct Verifier(Arc<ServerReloader>);

impl ClientCertVerifier for Verifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().verifier.supported_verify_schemes()
    }
}

/// A server config (ALPN `h2`, client certificate required) whose certificate, key and client
/// CA come from `paths` and follow the files (see [`Reloader::spawn_watch`]).
pub fn reloading_server_config(
    endpoint: &'static str,
    paths: PemPaths,
) -> Result<(Arc<rustls::ServerConfig>, Arc<ServerReloader>), TlsError> {
    let reloader = Reloader::new(endpoint, paths, server_material)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(Verifier(reloader.clone())))
        .with_cert_resolver(Arc::new(Resolver(reloader.clone())));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption: a resumed session is not re-verified against a rotated CA.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok((Arc::new(cfg), reloader))
}

/// The server config for `bundle`: following its files (polled every [`RELOAD_INTERVAL`] and
/// on SIGHUP, watcher spawned here) when it was read from files ([`PemBundle::source`]), fixed
/// otherwise. Must run inside a tokio runtime.
pub fn watched_server_config(
    bundle: &PemBundle,
    endpoint: &'static str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    match &bundle.source {
        Some(paths) => {
            let (cfg, r) = reloading_server_config(endpoint, paths.clone())?;
            r.spawn_watch(WatchOptions::default());
            tracing::info!(
                endpoint,
                interval_s = RELOAD_INTERVAL.as_secs(),
                "TLS files watched for rotation (and SIGHUP)"
            );
            Ok(cfg)
        }
        None => crate::server_config(bundle),
    }
}

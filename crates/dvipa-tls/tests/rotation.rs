//! Certificate rotation: a server built with `reloading_server_config` serves a rotated
//! certificate and verifies clients against a rotated CA on new handshakes, keeps its material
//! when a reload fails (and counts the failure), and follows its files by polling and SIGHUP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dvipa_tls::testing::TestCa;
use dvipa_tls::{
    PemBundle, PemPaths, ServerReloader, TlsStats, TlsStatsSnapshot, WatchOptions,
    reloading_server_config, tls_incoming,
};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_stream::StreamExt;

struct Server {
    addr: std::net::SocketAddr,
    stats: Arc<TlsStats>,
    reloader: Arc<ServerReloader>,
}

async fn start(paths: &PemPaths) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(TlsStats::default());
    let (cfg, reloader) = reloading_server_config("test", paths.clone()).unwrap();
    let mut incoming = tls_incoming(listener, cfg, stats.clone());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(c) = incoming.next().await {
            held.push(c);
        }
    });
    Server {
        addr,
        stats,
        reloader,
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// Handshakes as `client` (trusting `client.ca_pem`) and returns the server's certificate, or
/// the client-side error (with TLS 1.3 a refused client certificate may only show on the server).
async fn handshake(addr: std::net::SocketAddr, client: &PemBundle) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(&client.ca_pem)).unwrap();
    let chain = CertificateDer::pem_slice_iter(client.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(cfg)).connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok(peer)
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_stats(s: &TlsStats, f: impl Fn(&TlsStatsSnapshot) -> bool) {
    wait_for("handshake counters", || f(&s.snapshot())).await;
}

#[tokio::test]
async fn rotated_server_certificate_is_served_and_a_bad_rotation_keeps_it() {
    let ca = TestCa::new("dvipa test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = ca.server_bundle(&["localhost"]).unwrap();
    let paths = a.write_files(dir.path(), "ctl").unwrap();
    let srv = start(&paths).await;
    let client = ca.client_bundle("stack1").unwrap();

    assert_eq!(
        handshake(srv.addr, &client).await.unwrap(),
        der(&a.cert_pem).to_vec()
    );

    // Rotate to B (same CA): the next handshake sees B.
    let b = ca.server_bundle(&["localhost"]).unwrap();
    b.write_files(dir.path(), "ctl").unwrap();
    srv.reloader.reload().unwrap();
    assert_eq!(
        handshake(srv.addr, &client).await.unwrap(),
        der(&b.cert_pem).to_vec()
    );
    assert_eq!(srv.reloader.snapshot().reloaded, 1);

    // A certificate file that is not PEM: refused, named, counted; B still served.
    std::fs::write(&paths.cert, "not a certificate\n").unwrap();
    let e = srv.reloader.reload().unwrap_err().to_string();
    assert!(e.contains(&paths.cert.display().to_string()), "{e}");
    assert_eq!(
        handshake(srv.addr, &client).await.unwrap(),
        der(&b.cert_pem).to_vec()
    );
    assert_eq!(srv.reloader.snapshot().failed, 1);
    // The same broken content is not tried (and counted) again at the next poll.
    assert!(!srv.reloader.reload_if_changed());

    // B's certificate with A's key: the key is refused, naming both files.
    std::fs::write(&paths.cert, &b.cert_pem).unwrap();
    std::fs::write(&paths.key, &a.key_pem).unwrap();
    assert!(srv.reloader.reload_if_changed());
    let e = srv.reloader.reload().unwrap_err().to_string();
    assert!(e.contains(&paths.key.display().to_string()), "{e}");
    assert!(e.contains("does not belong"), "{e}");
    assert_eq!(
        handshake(srv.addr, &client).await.unwrap(),
        der(&b.cert_pem).to_vec()
    );
    assert_eq!(
        srv.reloader.snapshot(),
        dvipa_tls::ReloadSnapshot {
            reloaded: 1,
            failed: 3
        }
    );
    // A missing CA file is a failure naming it.
    std::fs::remove_file(&paths.ca).unwrap();
    let e = srv.reloader.reload().unwrap_err().to_string();
    assert!(e.contains(&paths.ca.display().to_string()), "{e}");
    wait_stats(&srv.stats, |s| s.accepted == 4).await;
    assert_eq!(srv.stats.snapshot().refused(), 0);
}

#[tokio::test]
async fn rotated_client_ca_refuses_old_clients_and_accepts_new_ones() {
    let old_ca = TestCa::new("old CA").unwrap();
    let new_ca = TestCa::new("new CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = old_ca
        .server_bundle(&["localhost"])
        .unwrap()
        .write_files(dir.path(), "ctl")
        .unwrap();
    let srv = start(&paths).await;
    // Both clients trust the old CA for the server's certificate.
    let old_client = old_ca.client_bundle("stack1").unwrap();
    let mut new_client = new_ca.client_bundle("stack1").unwrap();
    new_client.ca_pem = old_ca.ca_pem().to_string();

    handshake(srv.addr, &old_client).await.unwrap();
    wait_stats(&srv.stats, |s| s.accepted == 1).await;
    let _ = handshake(srv.addr, &new_client).await;
    wait_stats(&srv.stats, |s| s.refused_bad_cert == 1).await;

    std::fs::write(&paths.ca, new_ca.ca_pem()).unwrap();
    srv.reloader.reload().unwrap();

    let _ = handshake(srv.addr, &old_client).await;
    wait_stats(&srv.stats, |s| s.refused_bad_cert == 2).await;
    handshake(srv.addr, &new_client).await.unwrap();
    wait_stats(&srv.stats, |s| s.accepted == 2).await;
    let s = srv.stats.snapshot();
    assert_eq!((s.accepted, s.refused_bad_cert, s.refused()), (2, 2, 2));
}

#[tokio::test]
async fn watcher_follows_the_files_by_polling_and_on_sighup() {
    let ca = TestCa::new("dvipa test CA").unwrap();
    let client = ca.client_bundle("stack1").unwrap();

    // Polling.
    let dir = tempfile::tempdir().unwrap();
    let paths = ca
        .server_bundle(&["localhost"])
        .unwrap()
        .write_files(dir.path(), "ctl")
        .unwrap();
    let srv = start(&paths).await;
    srv.reloader.spawn_watch(WatchOptions {
        interval: Duration::from_millis(50),
        sighup: false,
    });
    let c = ca.server_bundle(&["localhost"]).unwrap();
    c.write_files(dir.path(), "ctl").unwrap();
    let want = der(&c.cert_pem).to_vec();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if handshake(srv.addr, &client).await.unwrap() == want {
            break;
        }
        assert!(
            Instant::now() < until,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(srv.reloader.snapshot().reloaded >= 1);

    // SIGHUP (the poll interval is too long to matter).
    let dir2 = tempfile::tempdir().unwrap();
    let paths2 = ca
        .server_bundle(&["localhost"])
        .unwrap()
        .write_files(dir2.path(), "ctl")
        .unwrap();
    let srv2 = start(&paths2).await;
    srv2.reloader.spawn_watch(WatchOptions {
        interval: Duration::from_secs(3600),
        sighup: true,
    });
    let d = ca.server_bundle(&["localhost"]).unwrap();
    d.write_files(dir2.path(), "ctl").unwrap();
    let st = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    wait_for("the SIGHUP reload", || {
        srv2.reloader.snapshot().reloaded >= 1
    })
    .await;
    assert_eq!(
        handshake(srv2.addr, &client).await.unwrap(),
        der(&d.cert_pem).to_vec()
    );
}

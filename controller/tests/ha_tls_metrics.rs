//! A `dvipa controller` replica (in process, its own TOML with relative `[ha.tls]` paths) whose
//! client certificate etcd refuses: it never leads, `dvipa_ha_etcd_errors_total{reason="tls"}`
//! counts the refusals on the Prometheus endpoint; once the certificate files are replaced by
//! good ones (rotation), the next session uses them and the replica leads.
//! Its own process: the Prometheus recorder is global.

use dvipa::advertise::RecordingAdvertiser;
use dvipa::controller::Options;
use dvipa::demo::etcd::{Etcd, EtcdTls};
use dvipa_tls::testing::TestCa;
use std::time::{Duration, Instant};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_certificate_is_counted_and_a_rotated_good_one_leads() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("etcd CA").unwrap();
    let server = ca
        .server_bundle(&["127.0.0.1"])
        .unwrap()
        .write_files(dir.path(), "etcd-server")
        .unwrap();
    let etcdctl = ca
        .client_bundle("etcdctl")
        .unwrap()
        .write_files(dir.path(), "etcdctl")
        .unwrap();
    let etcd = Etcd::start_tls_in(
        &dir.path().join("etcd"),
        Some(EtcdTls {
            ca: server.ca.clone(),
            cert: server.cert,
            key: server.key,
            client_cert_auth: true,
            client: Some((etcdctl.cert, etcdctl.key)),
        }),
    )
    .unwrap();
    // The replica's certificate comes from another CA.
    let other = TestCa::new("another CA").unwrap();
    let bad = other.client_bundle("ctl-a").unwrap();
    std::fs::write(dir.path().join("ctl.pem"), &bad.cert_pem).unwrap();
    std::fs::write(dir.path().join("ctl.key"), &bad.key_pem).unwrap();
    let metrics_port = dvipa::demo::etcd::ports(1)[0];
    let cfg = common::unreachable_switch_config(
        dir.path(),
        &format!(
            "agent = {{ listen = \"127.0.0.1:0\" }}\nmetrics = {{ listen = \"127.0.0.1:{metrics_port}\" }}"
        ),
        &format!(
            "\n[ha]\netcd = {}\nelection = \"/dvipa/m/leader\"\nreplica = \"ctl-a\"\n\
             [ha.tls]\nca = \"etcd-server-ca.pem\"\ncert = \"ctl.pem\"\nkey = \"ctl.key\"\n",
            etcd.toml_list()
        ),
    );
    let opts = Options {
        insecure: true,
        resync: Duration::from_secs(3600),
        metrics: true,
        ..Options::default()
    };
    let ctl = common::start_with(&cfg, opts, RecordingAdvertiser::default()).await;
    let m = common::metrics_when(metrics_port, |m| {
        m.lines().any(|l| {
            l.starts_with("dvipa_ha_etcd_errors_total{reason=\"tls\"}")
                && l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()) >= Some(2.0)
        })
    })
    .await;
    assert!(m.contains("dvipa_ha_leader 0"), "{m}");
    let st = ctl.shared().ha().unwrap().now();
    assert!(!st.is_leader());
    let (reason, e) = ctl
        .shared()
        .ha()
        .unwrap()
        .state
        .borrow()
        .clone()
        .etcd_error
        .unwrap();
    println!("refused: reason {reason}: {e}");
    assert_eq!(reason, "tls");
    assert!(
        e.contains("etcd refused this replica's client certificate"),
        "{e}"
    );
    // Rotation: good files; the next session reads them.
    let good = ca.client_bundle("ctl-a").unwrap();
    std::fs::write(dir.path().join("ctl.pem"), &good.cert_pem).unwrap();
    std::fs::write(dir.path().join("ctl.key"), &good.key_pem).unwrap();
    let t0 = Instant::now();
    common::wait_until("leader after the rotation", 10, 20, || async {
        ctl.shared().ha().unwrap().now().is_leader()
    })
    .await;
    println!(
        "leader {:?} after the good certificate was written",
        t0.elapsed()
    );
    common::metrics_when(metrics_port, |m| m.contains("dvipa_ha_leader 1")).await;
    // The leader's owner store uses the rotated files too: the state is written to etcd.
    let shared = ctl.shared();
    common::wait_until("the HA state written", 10, 20, || async {
        shared.stats.get("ha_state_written") >= 1
    })
    .await;
    assert_eq!(shared.stats.get("ha_state_write_failed"), 0);
    ctl.shutdown().await;
}

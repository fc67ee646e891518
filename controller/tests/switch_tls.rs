//! The controller talks P4Runtime to a switch over mutual TLS (`[[switch]] tls`), and follows
//! rotated certificate files: with a client certificate the switch does not trust, the switch
//! stays down and every attempt is counted; once the files are replaced with a good certificate,
//! the next connection uses them and the switch comes up and is programmed, without a restart.
//!
//! ```text
//!  controller ──P4Runtime over mTLS (ctl-p4rt.pem, trusts switch-ca.pem)──► embedded switch
//!                                                   (sw.pem; requires clients-ca.pem)
//! ```
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dvipa::advertise::RecordingAdvertiser;
use dvipa::cli::{self, Common, OpCmd, Reply};
use dvipa_switch::Pipeline;
use dvipa_switch::server::SwitchServer;
use dvipa_tls::testing::TestCa;

async fn counter(admin: std::net::SocketAddr, name: &str) -> u64 {
    let c = Common::plaintext(format!("http://{admin}"));
    let Ok(Reply::Table(t)) = cli::run(&c, &OpCmd::Counters).await else {
        return 0;
    };
    t.rows
        .iter()
        .find(|r| r.cells[1] == name)
        .and_then(|r| r.cells[2].parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_the_switch_and_rotated_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let switch_ca = TestCa::new("switch CA").unwrap();
    let clients_ca = TestCa::new("controllers CA").unwrap();
    let rogue = TestCa::new("rogue CA").unwrap();
    std::fs::write(d.join("switch-ca.pem"), switch_ca.ca_pem()).unwrap();
    let write_client = |ca: &TestCa| {
        let b = ca.client_bundle("dvipa-controller").unwrap();
        std::fs::write(d.join("ctl-p4rt.key"), &b.key_pem).unwrap();
        std::fs::write(d.join("ctl-p4rt.pem"), &b.cert_pem).unwrap();
    };
    write_client(&rogue);

    // The switch: P4Runtime over TLS, client certificates of clients_ca required.
    let sw_id = switch_ca.server_bundle(&["localhost"]).unwrap();
    let sw = SwitchServer::new(0, Arc::new(Pipeline::new()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sw_addr = l.local_addr().unwrap();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &sw_id.cert_pem,
            &sw_id.key_pem,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(clients_ca.ca_pem()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(sw.service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );

    write_inputs(d, &[("sw1.profile", PROFILE)]);
    let cfg = write_toml(
        d,
        &format!(
            r#"
p4info = "{P4INFO}"
device_config = "device.json"
state_dir = ""
agent = {{ listen = "127.0.0.1:0", insecure = true }}
timers = {{ heartbeat_ms = 200, lease_ms = 1000, idle_timeout_ms = 600000, liveness_ms = 300 }}

[[switch]]
name = "SW1"
p4runtime = "{sw_addr}"
device_id = 0
profile = "sw1.profile"
tls = {{ ca = "switch-ca.pem", cert = "ctl-p4rt.pem", key = "ctl-p4rt.key", server_name = "localhost" }}

[[stack]]
name = "MVS1"
underlay = "10.0.0.1"
mac = "02:00:00:00:00:01"
ports = {{ SW1 = 2 }}
"#
        ),
    );
    let ctl = start_insecure(&cfg, RecordingAdvertiser::default()).await;
    let admin = ctl.admin_addr();

    // A client certificate of another CA: refused by the switch, counted, never up.
    wait_until("refused connections counted", 10, 50, || async {
        counter(admin, "switch_connect_failed").await >= 2
    })
    .await;
    assert!(
        !vipadyn(admin)
            .await
            .iter()
            .any(|r| r.0 == "SW1" && r.2 == "UP"),
        "up with an untrusted client certificate"
    );
    assert_eq!(sw.pipeline().tables().dvipa.len(), 0);

    // Rotate the files to a certificate of the clients' CA: the next connection uses them.
    let t = Instant::now();
    write_client(&clients_ca);
    wait_until("SW1 up over mutual TLS", 15, 50, || async {
        vipadyn(admin)
            .await
            .iter()
            .any(|r| r.0 == "SW1" && r.2 == "UP")
    })
    .await;
    wait_until("SW1 programmed over TLS", 10, 50, || async {
        sw.pipeline().tables().dvipa.len() == 1
    })
    .await;
    eprintln!(
        "switch TLS: rotated client certificate used {} ms after the files changed",
        t.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    ctl.shutdown().await;
}

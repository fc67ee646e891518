//! The CLI names the cause of a transport failure (issue 14, item 10): a controller
//! certificate from an unknown CA, a certificate name that does not match, a client
//! certificate the controller refuses, plain HTTP/2 to the TLS port, a port nothing listens
//! on — instead of `Unknown: transport error` or `Internal: h2 protocol error`.

use dvipa::advertise::RecordingAdvertiser;
use dvipa::cli::{self, Common, OpCmd};
use dvipa::controller::{self, Controller, Options};
use dvipa_tls::testing::TestCa;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;

fn tls_common(dir: &Path, admin: SocketAddr, name: &str, b: &dvipa_tls::PemBundle) -> Common {
    let p = b.write_files(dir, name).unwrap();
    Common {
        ca: Some(p.ca),
        cert: Some(p.cert),
        key: Some(p.key),
        server_name: Some("localhost".into()),
        ..Common::plaintext(admin.to_string())
    }
}

async fn err(c: &Common) -> String {
    let e = cli::run(c, &OpCmd::Counters).await.unwrap_err().to_string();
    eprintln!("{e}");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_name_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::ca_with_server_cert("admin CA", dir.path());
    let cfg = common::unreachable_switch_config(
        dir.path(),
        "agent = { listen = \"127.0.0.1:0\", insecure = true }\n\
         [admin]\nlisten = \"127.0.0.1:7071\"\n[admin.tls]\nca = \"ctl-ca.pem\"\n\
         cert = \"ctl.pem\"\nkey = \"ctl-key.pem\"\nallow = [\"ops-alice\"]\n",
        "",
    );
    let ctl = Controller::start(
        controller::load(&cfg).unwrap(),
        Options {
            resync: Duration::from_secs(3600),
            metrics: false,
            ..Options::default()
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(RecordingAdvertiser::default()),
    )
    .await
    .unwrap();
    let admin = ctl.admin_addr();
    let d = dir.path();
    let alice = ca.client_bundle("ops-alice").unwrap();
    // Works.
    cli::run(&tls_common(d, admin, "alice", &alice), &OpCmd::Counters)
        .await
        .unwrap();

    // The client's certificate is from a CA the controller does not trust.
    let other = TestCa::new("someone else").unwrap();
    let mut eve = other.client_bundle("ops-alice").unwrap();
    eve.ca_pem = ca.ca_pem().to_string();
    let e = err(&tls_common(d, admin, "eve", &eve)).await;
    assert!(
        e.contains("the controller refused our client certificate")
            && e.contains("not signed by a CA it trusts"),
        "{e}"
    );

    // The controller's certificate is from a CA the client does not trust.
    let mut wrong_trust = alice.clone();
    wrong_trust.ca_pem = other.ca_pem().to_string();
    let e = err(&tls_common(d, admin, "wt", &wrong_trust)).await;
    assert!(
        e.contains("the controller's certificate is not signed by the CA of --ca"),
        "{e}"
    );

    // The controller's certificate does not name the host.
    let mut c = tls_common(d, admin, "alice2", &alice);
    c.server_name = Some("ctl.example".into());
    let e = err(&c).await;
    assert!(
        e.contains("the controller's certificate does not name `ctl.example`"),
        "{e}"
    );

    // Plain HTTP/2 to the TLS port.
    let e = err(&Common::plaintext(format!("http://{admin}"))).await;
    assert!(
        (e.contains("the controller did not answer in plain HTTP/2")
            || e.contains("the controller answered with TLS, not plain HTTP/2"))
            && e.contains("the port needs TLS"),
        "{e}"
    );

    // Nothing listens there.
    let port = common::free_port();
    let e = err(&Common::plaintext(format!("http://127.0.0.1:{port}"))).await;
    assert!(e.contains("connection refused"), "{e}");
    ctl.shutdown().await;
}

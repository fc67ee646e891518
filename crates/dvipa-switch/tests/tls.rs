//! `dvipa-switch` serves P4Runtime over TLS with simple_switch_grpc's target options
//! (`--grpc-server-ssl`, `--grpc-server-cert`, `--grpc-server-key`, `--grpc-server-cacert`,
//! `--grpc-server-with-client-auth`): a client trusting its CA and presenting a certificate of
//! the clients' CA becomes primary; a client without a certificate, one from another CA, and a
//! plaintext client are refused.
//!
//! ```text
//!  test (p4rt::Session, TLS) ──127.0.0.1:PORT──► dvipa-switch --grpc-server-ssl … (binary)
//! ```

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dvipa_tls::testing::TestCa;
use p4rt::{ClientConfig, Mastership, Session};

struct Switch(Child);

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, port: u16, client_auth: bool) -> Switch {
    let mut args = vec![
        "--no-p4".to_string(),
        "--".into(),
        "--grpc-server-addr".into(),
        format!("127.0.0.1:{port}"),
        "--grpc-server-ssl".into(),
        "--grpc-server-cert".into(),
        dir.join("sw.pem").display().to_string(),
        "--grpc-server-key".into(),
        dir.join("sw.key").display().to_string(),
    ];
    if client_auth {
        args.extend([
            "--grpc-server-cacert".into(),
            dir.join("clients-ca.pem").display().to_string(),
            "--grpc-server-with-client-auth".into(),
        ]);
    }
    let sw = Switch(
        Command::new(env!("CARGO_BIN_EXE_dvipa-switch"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return sw;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("dvipa-switch did not listen on {port}");
}

fn client(port: u16, tls: Option<dvipa_tls::ClientTlsConfig>) -> ClientConfig {
    let mut c = ClientConfig::new(format!("127.0.0.1:{port}"), 0);
    c.connect_timeout = Duration::from_secs(2);
    c.tls = tls;
    c
}

/// CA of the switch's server certificate, CA of the controllers' client certificates, and a
/// third CA nobody trusts; files in `dir`.
fn pki(dir: &Path) -> (TestCa, TestCa, TestCa) {
    let server_ca = TestCa::new("switch CA").unwrap();
    let clients_ca = TestCa::new("controllers CA").unwrap();
    let rogue = TestCa::new("rogue CA").unwrap();
    let sw = server_ca
        .server_bundle(&["localhost", "127.0.0.1"])
        .unwrap();
    std::fs::write(dir.join("sw.pem"), &sw.cert_pem).unwrap();
    std::fs::write(dir.join("sw.key"), &sw.key_pem).unwrap();
    std::fs::write(dir.join("server-ca.pem"), server_ca.ca_pem()).unwrap();
    std::fs::write(dir.join("clients-ca.pem"), clients_ca.ca_pem()).unwrap();
    (server_ca, clients_ca, rogue)
}

fn tls_as(dir: &Path, ca: Option<&TestCa>, name: &str) -> dvipa_tls::ClientTlsConfig {
    let server_ca = dir.join("server-ca.pem");
    match ca {
        None => dvipa_tls::p4runtime_client_tls(&server_ca, None, Some("localhost")).unwrap(),
        Some(ca) => {
            let b = ca.client_bundle(name).unwrap();
            let (c, k) = (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}.key")),
            );
            std::fs::write(&c, &b.cert_pem).unwrap();
            std::fs::write(&k, &b.key_pem).unwrap();
            dvipa_tls::p4runtime_client_tls(&server_ca, Some((&c, &k)), Some("localhost")).unwrap()
        }
    }
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_of_the_clients_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (_, clients_ca, rogue) = pki(dir.path());
    let port = free_port();
    let _sw = start(dir.path(), port, true);

    let (s, _q) = Session::connect(client(
        port,
        Some(tls_as(dir.path(), Some(&clients_ca), "ctl")),
    ))
    .await
    .expect("a controller of the clients' CA is admitted");
    assert_eq!(s.mastership(), Mastership::Primary);
    assert_eq!(s.capabilities().await.unwrap(), "1.4.1");

    for (what, tls) in [
        ("no client certificate", Some(tls_as(dir.path(), None, "-"))),
        (
            "a certificate of another CA",
            Some(tls_as(dir.path(), Some(&rogue), "rogue")),
        ),
        ("plaintext", None),
    ] {
        let r = Session::connect(client(port, tls)).await;
        assert!(r.is_err(), "{what} was admitted");
    }
}

#[tokio::test]
async fn server_tls_without_client_auth() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let port = free_port();
    let _sw = start(dir.path(), port, false);
    let (s, _q) = Session::connect(client(port, Some(tls_as(dir.path(), None, "-"))))
        .await
        .expect("TLS without a client certificate");
    assert_eq!(s.mastership(), Mastership::Primary);
    // The switch's certificate must chain to the CA the client trusts.
    let other = TestCa::new("other").unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), other.ca_pem()).unwrap();
    let tls =
        dvipa_tls::p4runtime_client_tls(&dir.path().join("other-ca.pem"), None, Some("localhost"))
            .unwrap();
    assert!(Session::connect(client(port, Some(tls))).await.is_err());
    assert!(
        Session::connect(client(port, None)).await.is_err(),
        "plaintext"
    );
}

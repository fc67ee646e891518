//! The admin API's security, in process: mutual TLS with an allow-list of admin certificate
//! names (`[admin.tls]`), refused clients counted by reason, and a plaintext admin API on a
//! non-loopback address refused unless `admin.allow_insecure_remote` forces it. The switch is
//! not reachable (nothing here needs it).

use dvipa::advertise::RecordingAdvertiser;
use dvipa::cli::{self, Common, OpCmd, Reply, Report};
use dvipa::controller::{self, Controller, Options};
use dvipa_proto::v1 as pb;
use dvipa_proto::v1::admin_client::AdminClient;
use dvipa_tls::testing::TestCa;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod common;

/// A configuration in `dir` (plaintext agents from the TOML: `agent.insecure`) with `admin`
/// appended.
fn write_config(dir: &Path, admin: &str) -> PathBuf {
    common::unreachable_switch_config(
        dir,
        &format!("agent = {{ listen = \"127.0.0.1:0\", insecure = true }}\n{admin}"),
        "",
    )
}

async fn start(cfg: &Path, admin_bind: &str) -> Result<Controller, String> {
    let opts = Options {
        resync: Duration::from_secs(3600),
        metrics: false,
        ..Options::default()
    };
    Controller::start(
        controller::load(cfg).map_err(|e| e.to_string())?,
        opts,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind(admin_bind).await.unwrap(),
        Arc::new(RecordingAdvertiser::default()),
    )
    .await
    .map_err(|e| e.to_string())
}

/// The CLI's options for `bundle` (written under `dir` as `<name>*.pem`).
fn common(dir: &Path, admin: std::net::SocketAddr, name: &str, b: &dvipa_tls::PemBundle) -> Common {
    let p = b.write_files(dir, name).unwrap();
    Common {
        ca: Some(p.ca),
        cert: Some(p.cert),
        key: Some(p.key),
        server_name: Some("localhost".into()),
        ..Common::plaintext(admin.to_string())
    }
}

async fn counters(c: &Common) -> std::collections::BTreeMap<String, u64> {
    match cli::run(c, &OpCmd::Counters).await.unwrap() {
        Reply::Table(t) => t
            .rows
            .iter()
            .map(|r| (r.cells[1].clone(), r.cells[2].parse().unwrap()))
            .collect(),
        other => panic!("not a table: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mtls_admits_allowed_certificates_and_counts_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::ca_with_server_cert("admin CA", dir.path());
    let cfg = write_config(
        dir.path(),
        r#"
[admin]
listen = "127.0.0.1:7071"
[admin.tls]
ca = "ctl-ca.pem"
cert = "ctl.pem"
key = "ctl-key.pem"
allow = ["ops-alice", "ops-bob"]
"#,
    );
    let ctl = start(&cfg, "127.0.0.1:0").await.unwrap();
    let admin = ctl.admin_addr();

    // An allowed certificate: every subcommand works (the address gets https://).
    let alice = common(
        dir.path(),
        admin,
        "alice",
        &ca.client_bundle("ops-alice").unwrap(),
    );
    let t = match cli::run(
        &alice,
        &OpCmd::Netstat {
            report: Report::Vipadcfg,
        },
    )
    .await
    .unwrap()
    {
        Reply::Table(t) => t,
        other => panic!("{other:?}"),
    };
    assert!(
        cli::render_text(&t).contains("203.0.113.10"),
        "{}",
        cli::render_text(&t)
    );

    // A certificate of the same CA whose name is not in the allow-list: PERMISSION_DENIED.
    let mallory = common(
        dir.path(),
        admin,
        "mallory",
        &ca.client_bundle("ops-mallory").unwrap(),
    );
    let e = cli::run(&mallory, &OpCmd::Counters).await.unwrap_err();
    match &e {
        cli::CliError::Status(s) => {
            assert_eq!(s.code(), tonic::Code::PermissionDenied, "{e}");
            assert!(
                s.message().contains("ops-mallory") && s.message().contains("admin.tls.allow"),
                "{e}"
            );
        }
        other => panic!("{other}"),
    }

    // A certificate of another CA: the handshake is refused.
    let other_ca = TestCa::new("someone else").unwrap();
    let mut eve_bundle = other_ca.client_bundle("ops-alice").unwrap();
    eve_bundle.ca_pem = ca.ca_pem().to_string(); // she trusts the controller's CA
    let eve = common(dir.path(), admin, "eve", &eve_bundle);
    assert!(cli::run(&eve, &OpCmd::Counters).await.is_err());

    // TLS without a client certificate: refused.
    let no_cert = tonic::transport::Endpoint::from_shared(format!("https://{admin}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca.ca_pem()))
                .domain_name("localhost"),
        )
        .unwrap();
    let r = match no_cert.connect().await {
        Ok(ch) => AdminClient::new(ch)
            .counters(pb::CountersRequest {})
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(r.is_err(), "no client certificate was accepted");

    // Plaintext against the TLS endpoint: refused.
    assert!(
        cli::run(
            &Common::plaintext(format!("http://{admin}")),
            &OpCmd::Counters
        )
        .await
        .is_err()
    );

    // Mixed-up options are clear errors before any connection.
    let e = cli::run(
        &Common {
            key: None,
            ..alice.clone()
        },
        &OpCmd::Counters,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("--ca, --cert and --key"), "{e}");
    let e = cli::run(
        &Common {
            admin: format!("http://{admin}"),
            ..alice.clone()
        },
        &OpCmd::Counters,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("use https://"), "{e}");

    // Every refusal was counted, by reason (read with the allowed certificate). The server
    // counts a refused handshake when it has processed it: wait for that.
    let mut c = counters(&alice).await;
    for _ in 0..50 {
        if c["admin_refused_no_cert"] >= 1
            && c["admin_refused_bad_cert"] >= 1
            && c["admin_refused_other"] >= 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        c = counters(&alice).await;
    }
    assert_eq!(c["admin_refused_not_allowed"], 1, "{c:?}");
    // (a refused client may try more than once)
    assert!(c["admin_refused_no_cert"] >= 1, "{c:?}");
    assert!(c["admin_refused_bad_cert"] >= 1, "{c:?}");
    assert!(c["admin_refused_other"] >= 1, "plaintext client: {c:?}");
    assert!(c["admin_handshakes_accepted"] >= 3, "{c:?}");
    ctl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_admin_on_a_non_loopback_address_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();

    // The configuration itself is refused, naming the field.
    let cfg = write_config(dir.path(), "admin = { listen = \"0.0.0.0:7071\" }");
    let e = start(&cfg, "127.0.0.1:0").await.unwrap_err();
    assert!(
        e.contains("dvipa.toml:")
            && e.contains(": admin.listen: 0.0.0.0:7071 is not a loopback address")
            && e.contains("[admin.tls]")
            && e.contains("admin.allow_insecure_remote"),
        "{e}"
    );

    // A loopback configuration handed a listener on every address is refused too.
    let cfg = write_config(dir.path(), "");
    let e = start(&cfg, "0.0.0.0:0").await.unwrap_err();
    assert!(
        e.contains("admin.listen: 0.0.0.0:") && e.contains("is not a loopback address"),
        "{e}"
    );

    // Forced: it runs, plaintext.
    let cfg = write_config(
        dir.path(),
        "admin = { listen = \"0.0.0.0:7071\", allow_insecure_remote = true }",
    );
    let ctl = start(&cfg, "0.0.0.0:0").await.unwrap();
    let port = ctl.admin_addr().port();
    let r = cli::run(
        &Common::plaintext(format!("127.0.0.1:{port}")),
        &OpCmd::Netstat {
            report: Report::Vipadcfg,
        },
    )
    .await;
    assert!(matches!(r, Ok(Reply::Table(_))), "{r:?}");
    ctl.shutdown().await;
}

//! Certificate rotation at the controller's agent endpoint, in process: after the client CA
//! file is replaced (and SIGHUP), new handshakes are verified against the new CA — an agent
//! certificate from the old CA is refused, one from the new CA accepted — while the session
//! attached before the rotation carries on. The switch is not reachable (nothing here needs it).

use dvipa::advertise::RecordingAdvertiser;
use dvipa_proto::v1 as pb;
use dvipa_proto::v1::server_stack_client::ServerStackClient;
use dvipa_tls::PemBundle;
use dvipa_tls::testing::TestCa;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

mod common;

fn write_config(dir: &Path) -> std::path::PathBuf {
    common::unreachable_switch_config(
        dir,
        r#"agent = { listen = "127.0.0.1:0" }
tls = { ca = "ctl-ca.pem", cert = "ctl.pem", key = "ctl-key.pem" }"#,
        r#"
[[stack]]
name = "MVS2"
underlay = "10.0.0.2"
mac = "02:00:00:00:00:02"
ports = { SW1 = 3 }
"#,
    )
}

struct Session {
    tx: mpsc::Sender<pb::AgentMessage>,
    rx: tonic::Streaming<pb::ControllerMessage>,
}

/// Attaches as `stack` with `bundle` and waits for the Welcome.
async fn attach(addr: SocketAddr, bundle: &PemBundle, stack: &str) -> Result<Session, String> {
    let go = async {
        let tls = dvipa_tls::client_tls_config(bundle, Some("localhost")).unwrap();
        let ch = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::AgentMessage {
            seq: 1,
            msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
                stack: stack.into(),
                underlay_addr: u32::from(if stack == "MVS1" {
                    Ipv4Addr::new(10, 0, 0, 1)
                } else {
                    Ipv4Addr::new(10, 0, 0, 2)
                }),
                agent_version: "test".into(),
                epoch: 7,
            })),
        })
        .await
        .unwrap();
        let mut rx = ServerStackClient::new(ch)
            .attach(ReceiverStream::new(rx))
            .await
            .map_err(|e| format!("attach: {e}"))?
            .into_inner();
        match rx.message().await {
            Ok(Some(pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::Welcome(_)),
            })) => Ok(Session { tx, rx }),
            other => Err(format!("no Welcome: {other:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), go)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Sends an empty Report with `seq` and waits for its Ack on the same stream.
async fn report_acked(s: &mut Session, seq: u64) -> bool {
    s.tx.send(pb::AgentMessage {
        seq,
        msg: Some(pb::agent_message::Msg::Report(pb::Report::default())),
    })
    .await
    .unwrap();
    let wait = async {
        while let Ok(Some(m)) = s.rx.message().await {
            if let Some(pb::controller_message::Msg::Ack(a)) = m.msg
                && a.seq == seq
            {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or(false)
}

#[tokio::test]
async fn rotated_agent_ca_applies_to_new_handshakes_and_keeps_attached_sessions() {
    let old_ca = TestCa::new("old agent CA").unwrap();
    let new_ca = TestCa::new("new agent CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctl_files = old_ca
        .server_bundle(&["localhost", "127.0.0.1"])
        .unwrap()
        .write_files(dir.path(), "ctl")
        .unwrap();
    let cfg = write_config(dir.path());
    let ctl = common::start_controller(&cfg, RecordingAdvertiser::default()).await;
    let addr = ctl.agent_addr();
    // Both agents trust the old CA for the controller's certificate (not rotated here).
    let old_agent = old_ca.client_bundle("MVS1").unwrap();
    let old_agent2 = old_ca.client_bundle("MVS2").unwrap();
    let mut new_agent = new_ca.client_bundle("MVS2").unwrap();
    new_agent.ca_pem = old_ca.ca_pem().to_string();

    let mut attached = attach(addr, &old_agent, "MVS1").await.unwrap();
    assert!(
        attach(addr, &new_agent, "MVS2").await.is_err(),
        "a certificate from the new CA was accepted before the rotation"
    );

    std::fs::write(&ctl_files.ca, new_ca.ca_pem()).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let until = Instant::now() + Duration::from_secs(15);
    let new_session = loop {
        match attach(addr, &new_agent, "MVS2").await {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < until, "the new CA was never accepted: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(new_session);
    let refused = attach(addr, &old_agent2, "MVS2").await;
    assert!(
        refused.is_err(),
        "a certificate from the old CA was accepted after the rotation"
    );
    let t = ctl.shared().tls.snapshot();
    assert!(t.refused_bad_cert >= 2, "{t:?}");

    // The session attached before the rotation (old CA) is still served on its connection.
    assert!(
        report_acked(&mut attached, 2).await,
        "the pre-rotation session was dropped"
    );
    ctl.shutdown().await;
}

//! The agent endpoint refuses, names and counts (issue 14, item 9): a client certificate
//! that names more than one configured stack; NEWCONN items whose client is 0/8, 127/8,
//! multicast or broadcast (Ack item errors by reason, nothing pinned); and a Report over the
//! message limit, answered with `RESOURCE_EXHAUSTED` instead of an OK end of stream.
//! Controller in process, P4Runtime to an embedded switch, agents are tonic clients over mTLS.

use dvipa::advertise::RecordingAdvertiser;
use dvipa::cli::{self, Common, OpCmd, Reply};
use dvipa_proto::v1 as pb;
use dvipa_proto::v1::server_stack_client::ServerStackClient;
use dvipa_tls::PemBundle;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

mod common;

const DVIPA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn config(dir: &std::path::Path, p4rt: SocketAddr) -> std::path::PathBuf {
    let p4info = common::P4INFO;
    common::write_inputs(
        dir,
        &[(
            "sw1.profile",
            "VIPADYNAMIC\n  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 203.0.113.10\n  \
             VIPADISTRIBUTE 203.0.113.10 PORT 60 DESTIP 10.0.0.1, 10.0.0.2\nENDVIPADYNAMIC\n",
        )],
    );
    common::write_toml(
        dir,
        &format!(
            r#"p4info = "{p4info}"
device_config = "device.json"
state_dir = ""
agent = {{ listen = "127.0.0.1:0" }}
tls = {{ ca = "ctl-ca.pem", cert = "ctl.pem", key = "ctl-key.pem" }}
timers = {{ heartbeat_ms = 200, lease_ms = 5000, idle_timeout_ms = 600000, liveness_ms = 500 }}

[[switch]]
name = "SW1"
p4runtime = "{p4rt}"
device_id = 0
profile = "sw1.profile"

[[stack]]
name = "MVS1"
underlay = "10.0.0.1"
mac = "02:00:00:00:00:01"
ports = {{ SW1 = 2 }}

[[stack]]
name = "MVS2"
underlay = "10.0.0.2"
mac = "02:00:00:00:00:02"
ports = {{ SW1 = 3 }}
"#
        ),
    )
}

struct Agent {
    tx: mpsc::Sender<pb::AgentMessage>,
    rx: tonic::Streaming<pb::ControllerMessage>,
}

/// Attach + Hello as `stack` with `bundle`; the stream after Welcome, or the refusal.
async fn attach(addr: SocketAddr, bundle: &PemBundle, stack: &str) -> Result<Agent, tonic::Status> {
    let tls = dvipa_tls::client_tls_config(bundle, Some("localhost")).unwrap();
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::AgentMessage {
        seq: 1,
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            stack: stack.into(),
            underlay_addr: u32::from(Ipv4Addr::new(10, 0, 0, 1)),
            agent_version: "test".into(),
            epoch: 7,
        })),
    })
    .await
    .unwrap();
    let mut rx = ServerStackClient::new(ch)
        .attach(ReceiverStream::new(rx))
        .await?
        .into_inner();
    rx.message().await?.expect("welcome");
    Ok(Agent { tx, rx })
}

fn conn(client: Ipv4Addr, port: u32) -> pb::Conn {
    pb::Conn {
        client_addr: u32::from(client),
        client_port: port,
        dvipa: u32::from(DVIPA),
        dvipa_port: 60,
        protocol: 6,
        server_originated: false,
    }
}

impl Agent {
    async fn send(&self, seq: u64, r: pb::Report) {
        self.tx
            .send(pb::AgentMessage {
                seq,
                msg: Some(pb::agent_message::Msg::Report(r)),
            })
            .await
            .unwrap();
    }

    /// The next Ack (other messages skipped), or the stream's error status.
    async fn ack(&mut self) -> Result<pb::Ack, tonic::Status> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
                .await
                .expect("an answer in time")?;
            match m {
                None => return Err(tonic::Status::ok("stream ended with OK")),
                Some(pb::ControllerMessage {
                    msg: Some(pb::controller_message::Msg::Ack(a)),
                }) => return Ok(a),
                Some(_) => {}
            }
        }
    }
}

async fn counter(admin: SocketAddr, name: &str) -> u64 {
    let c = Common::plaintext(format!("http://{admin}"));
    let Ok(Reply::Table(t)) = cli::run(&c, &OpCmd::Counters).await else {
        panic!("counters");
    };
    t.rows
        .iter()
        .find(|r| r.cells[1] == name)
        .map(|r| r.cells[2].parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_stack_certificates_impossible_clients_and_oversized_reports_are_refused() {
    let (_sw, sw_addr) = common::switch().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = common::ca_with_server_cert("dvipa test CA", dir.path());
    let cfg = config(dir.path(), sw_addr);
    let ctl = common::start_controller(&cfg, RecordingAdvertiser::default()).await;
    let (agent_addr, admin) = (ctl.agent_addr(), ctl.admin_addr());

    // A certificate that names two configured stacks attaches as neither.
    let two = ca.client_bundle_names(&["MVS1", "MVS2"]).unwrap();
    for stack in ["MVS1", "MVS2"] {
        let e = attach(agent_addr, &two, stack)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("names several configured stacks"),
            "{}",
            e.message()
        );
    }
    assert_eq!(
        counter(admin, "rejected_cert_names_several_stacks").await,
        2
    );

    // NEWCONN from clients that cannot be: refused item by item, by reason.
    let mut a = attach(agent_addr, &ca.client_bundle("MVS1").unwrap(), "MVS1")
        .await
        .unwrap();
    let bad = ["0.0.0.7", "127.0.0.1", "224.0.0.1", "255.255.255.255"];
    a.send(
        2,
        pb::Report {
            srvstat: vec![pb::SrvStat {
                dvipa: u32::from(DVIPA),
                port: 60,
                protocol: 6,
                listening: true,
                weight: 0,
                draining: false,
            }],
            newconn: bad
                .iter()
                .enumerate()
                .map(|(i, c)| conn(c.parse().unwrap(), 40000 + i as u32))
                .chain([conn(Ipv4Addr::new(198, 51, 100, 7), 40100)])
                .collect(),
            ..Default::default()
        },
    )
    .await;
    let ack = a.ack().await.unwrap();
    let reasons: Vec<(u32, &str)> = ack
        .errors
        .iter()
        .map(|e| (e.index, e.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (0, "client_this_network"),
            (1, "client_loopback"),
            (2, "client_multicast"),
            (3, "client_broadcast")
        ]
    );
    for r in [
        "client_this_network",
        "client_loopback",
        "client_multicast",
        "client_broadcast",
    ] {
        assert_eq!(counter(admin, &format!("agent_item_refused_{r}")).await, 1);
    }

    // A Report over the 4 MiB message limit: a clear status, not an OK end of stream.
    let huge: Vec<pb::Conn> = (0..300_000u32)
        .map(|i| conn(Ipv4Addr::from(0xC633_0000 + i), 1024 + i % 60000))
        .collect();
    let bytes = prost::Message::encoded_len(&pb::Report {
        newconn: huge.clone(),
        ..Default::default()
    });
    eprintln!("oversized Report: {bytes} bytes");
    assert!(bytes > dvipa::agent::MAX_AGENT_MESSAGE);
    a.send(
        3,
        pb::Report {
            newconn: huge,
            ..Default::default()
        },
    )
    .await;
    let e = a.ack().await.expect_err("the session ends with an error");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("agent message too large") && e.message().contains("4194304 bytes"),
        "{}",
        e.message()
    );
    assert_eq!(counter(admin, "rejected_report_too_large").await, 1);
    ctl.shutdown().await;
}

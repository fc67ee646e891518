//! Set-up shared by the controller's integration tests: embedded switches in process, the
//! profile/TOML inputs, the controller started in process, waiting with a timeout, TLS
//! material and the `dvipa` binary. Each test file uses only some of it.
#![allow(dead_code)]

use dvipa::advertise::RecordingAdvertiser;
use dvipa::cli::{self, Common, OpCmd, Reply};
use dvipa::controller::{self, Controller, Options};
use dvipa_proto::v1 as pb;
use dvipa_proto::v1::server_stack_client::ServerStackClient;
use dvipa_switch::Pipeline;
use dvipa_switch::server::SwitchServer;
use dvipa_tls::testing::TestCa;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub const DVIPA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// SW1's profile: the DVIPA defined, distributed on port 60 to MVS1.
pub const PROFILE: &str = "\
VIPADYNAMIC
  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 203.0.113.10
  VIPADISTRIBUTE 203.0.113.10 PORT 60 DESTIP 10.0.0.1
ENDVIPADYNAMIC
";

/// The compiled P4Info the configurations point at.
pub const P4INFO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
);

/// An embedded switch serving P4Runtime on `addr` (until the test's runtime ends).
pub async fn switch_at(addr: SocketAddr) -> (SwitchServer, SocketAddr) {
    let sw = SwitchServer::new(0, Arc::new(Pipeline::new()));
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = l.local_addr().unwrap();
    let svc = sw.service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    (sw, addr)
}

/// An embedded switch serving P4Runtime on a free loopback port.
pub async fn switch() -> (SwitchServer, SocketAddr) {
    switch_at("127.0.0.1:0".parse().unwrap()).await
}

/// Writes `device.json` and each `(file name, profile text)` into `dir`.
pub fn write_inputs(dir: &Path, profiles: &[(&str, &str)]) {
    std::fs::write(dir.join("device.json"), b"{}").unwrap();
    for (name, text) in profiles {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Writes `text` as `dir/dvipa.toml` and returns its path.
pub fn write_toml(dir: &Path, text: &str) -> PathBuf {
    let cfg = dir.join("dvipa.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// SW1 and SW2 at `a1`/`a2` with the profiles `sw1`/`sw2`, one stack MVS1 on port 2 of
/// both; `extra`: top-level lines.
pub fn two_switch_config(
    dir: &Path,
    a1: SocketAddr,
    a2: SocketAddr,
    extra: &str,
    sw1: &str,
    sw2: &str,
) -> PathBuf {
    let p4info = P4INFO;
    write_inputs(dir, &[("sw1.profile", sw1), ("sw2.profile", sw2)]);
    let text = format!(
        r#"
controller_id = "test"
p4info = "{p4info}"
device_config = "device.json"
{extra}
agent = {{ listen = "127.0.0.1:0" }}
timers = {{ heartbeat_ms = 200, lease_ms = 1000, idle_timeout_ms = 600000, liveness_ms = 300 }}

[[switch]]
name = "SW1"
p4runtime = "{a1}"
device_id = 0
election_id = 10
profile = "sw1.profile"

[[switch]]
name = "SW2"
p4runtime = "{a2}"
device_id = 0
election_id = 10
profile = "sw2.profile"

[[stack]]
name = "MVS1"
underlay = "10.0.0.1"
mac = "02:00:00:00:00:01"
ports = {{ SW1 = 2, SW2 = 2 }}
"#
    );
    write_toml(dir, &text)
}

/// SW1 at an address nothing listens on (with [`PROFILE`]) and stack MVS1 on its port 2;
/// `top`: the agent (and TLS) lines, `rest`: anything after the `[[stack]]`.
pub fn unreachable_switch_config(dir: &Path, top: &str, rest: &str) -> PathBuf {
    let p4info = P4INFO;
    write_inputs(dir, &[("sw1.profile", PROFILE)]);
    write_toml(
        dir,
        &format!(
            r#"
p4info = "{p4info}"
device_config = "device.json"
state_dir = ""
{top}

[[switch]]
name = "SW1"
p4runtime = "127.0.0.1:1"
device_id = 0
profile = "sw1.profile"

[[stack]]
name = "MVS1"
underlay = "10.0.0.1"
mac = "02:00:00:00:00:01"
ports = {{ SW1 = 2 }}
{rest}"#
        ),
    )
}

/// A test CA named `name`, with a server certificate for `localhost` written into `dir` as
/// `ctl*.pem` (the controller's `tls` files).
pub fn ca_with_server_cert(name: &str, dir: &Path) -> TestCa {
    let ca = TestCa::new(name).unwrap();
    ca.server_bundle(&["localhost"])
        .unwrap()
        .write_files(dir, "ctl")
        .unwrap();
    ca
}

/// Starts the controller on `cfg` with `opts` and loopback agent and admin listeners.
pub async fn start_with(cfg: &Path, opts: Options, adv: RecordingAdvertiser) -> Controller {
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    Controller::start(
        controller::load(cfg).unwrap(),
        opts,
        bind().await,
        bind().await,
        Arc::new(adv),
    )
    .await
    .unwrap()
}

/// Starts the controller on `cfg` with loopback listeners, no periodic resync and no metrics.
pub async fn start_controller(cfg: &Path, adv: RecordingAdvertiser) -> Controller {
    let opts = Options {
        resync: Duration::from_secs(3600),
        metrics: false,
        ..Options::default()
    };
    start_with(cfg, opts, adv).await
}

/// [`start_controller`] with plaintext agents (`--insecure`).
pub async fn start_insecure(cfg: &Path, adv: RecordingAdvertiser) -> Controller {
    let opts = Options {
        insecure: true,
        resync: Duration::from_secs(3600),
        metrics: false,
        ..Options::default()
    };
    start_with(cfg, opts, adv).await
}

/// Polls `f` every `poll_ms` until it holds; fails the test after `secs`.
pub async fn wait_until<F, Fut>(what: &str, secs: u64, poll_ms: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(poll_ms)).await;
    }
}

/// MVS1's plaintext agent: connects, sends Hello and a SRVSTAT listening on DVIPA:60, and
/// opens Attach; returns the sender and the controller's stream (no heartbeats yet).
pub async fn plaintext_agent(
    addr: SocketAddr,
) -> (
    mpsc::Sender<pb::AgentMessage>,
    tonic::Streaming<pb::ControllerMessage>,
) {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(64);
    let hello = pb::agent_message::Msg::Hello(pb::Hello {
        stack: "MVS1".into(),
        underlay_addr: u32::from(Ipv4Addr::new(10, 0, 0, 1)),
        agent_version: "test".into(),
        epoch: 7,
    });
    let report = pb::agent_message::Msg::Report(pb::Report {
        srvstat: vec![pb::SrvStat {
            dvipa: u32::from(DVIPA),
            port: 60,
            protocol: 6,
            listening: true,
            weight: 0,
            draining: false,
        }],
        ..Default::default()
    });
    for (seq, msg) in [(1, hello), (2, report)] {
        tx.send(pb::AgentMessage {
            seq,
            msg: Some(msg),
        })
        .await
        .unwrap();
    }
    let stream = ServerStackClient::new(ch)
        .attach(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

/// One heartbeat message.
pub fn heartbeat() -> pb::AgentMessage {
    pb::AgentMessage {
        seq: 0,
        msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
            weight: 0,
        })),
    }
}

/// `netstat vipadyn`: (switch, status, switch state) per row.
pub async fn vipadyn(admin: SocketAddr) -> Vec<(String, String, String)> {
    let c = Common::plaintext(format!("http://{admin}"));
    let cmd = OpCmd::Netstat {
        report: cli::Report::Vipadyn,
    };
    let Ok(Reply::Table(t)) = cli::run(&c, &cmd).await else {
        return Vec::new();
    };
    let col = |n: &str| t.columns.iter().position(|c| c == n).unwrap();
    t.rows
        .iter()
        .map(|r| {
            (
                r.cells[col("SWITCH")].clone(),
                r.cells[col("STATUS")].clone(),
                r.cells[col("SWITCHSTATE")].clone(),
            )
        })
        .collect()
}

/// `GET path` over HTTP/1.0 from 127.0.0.1:`port`: the whole response, or "" when nothing
/// listens there (yet).
pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut b = String::new();
    s.read_to_string(&mut b).await.unwrap();
    b
}

/// Polls the Prometheus endpoint on `port` (every 200 ms, 10 s at the most) until `ready`
/// holds for its text, and returns that text.
pub async fn metrics_when(port: u16, ready: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let m = http_get(port, "/metrics").await;
        if ready(&m) {
            return m;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "metrics missing: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (10 s) for the advertise hook's line for the DVIPA on SW1 in `adv_file`.
pub async fn wait_advertised(adv_file: &Path) {
    let t0 = Instant::now();
    loop {
        let s = std::fs::read_to_string(adv_file).unwrap_or_default();
        if s.contains("SW1 203.0.113.10/24") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "advertise hook not run: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM to the `dvipa controller` child: it exits, with status 0, within 10 s.
pub async fn sigterm_and_wait(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let st = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("controller exits after SIGTERM")
        .unwrap();
    assert!(st.success(), "{st:?}");
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the `dvipa` binary (without the `DVIPA_ADMIN*` environment) to completion:
/// (success, stdout, stderr).
pub async fn dvipa(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvipa"))
        .args(args)
        .env_remove("DVIPA_ADMIN")
        .env_remove("DVIPA_ADMIN_CA")
        .env_remove("DVIPA_ADMIN_CERT")
        .env_remove("DVIPA_ADMIN_KEY")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

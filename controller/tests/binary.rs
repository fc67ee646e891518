//! The `dvipa` binary: `dvipa controller` against an in-process embedded switch, the operator
//! subcommands against its admin API, the advertise hook, the Prometheus endpoint, and a
//! graceful exit on SIGTERM.

use dvipa_switch::Pipeline;
use dvipa_switch::server::SwitchServer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROFILE: &str = "\
VIPADYNAMIC
  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 203.0.113.10
  VIPADISTRIBUTE 203.0.113.10 PORT 60 DESTIP 10.0.0.1
ENDVIPADYNAMIC
";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn dvipa(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvipa"))
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn http_get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut b = String::new();
    s.read_to_string(&mut b).await.unwrap();
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_binary_cli_metrics_and_sigterm() {
    let sw = SwitchServer::new(0, Arc::new(Pipeline::new()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sw_addr = l.local_addr().unwrap();
    let svc = sw.service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );

    let dir = tempfile::tempdir().unwrap();
    let ca = dvipa_tls::testing::TestCa::new("ca").unwrap();
    ca.server_bundle(&["localhost"])
        .unwrap()
        .write_files(dir.path(), "ctl")
        .unwrap();
    std::fs::write(dir.path().join("device.json"), b"{}").unwrap();
    std::fs::write(dir.path().join("sw1.profile"), PROFILE).unwrap();
    let (admin_port, metrics_port) = (free_port(), free_port());
    let p4info = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
    );
    let cfg = dir.path().join("dvipa.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
p4info = "{p4info}"
device_config = "device.json"
agent = {{ listen = "127.0.0.1:0" }}
metrics = {{ listen = "127.0.0.1:{metrics_port}" }}
tls = {{ ca = "ctl-ca.pem", cert = "ctl.pem", key = "ctl-key.pem" }}

[[switch]]
name = "SW1"
p4runtime = "{sw_addr}"
device_id = 0
profile = "sw1.profile"
routes = [{{ prefix = "0.0.0.0/0", port = 1, dmac = "02:00:00:00:fe:01", smac = "02:00:00:00:01:01" }}]

[[stack]]
name = "MVS1"
underlay = "10.0.0.1"
mac = "02:00:00:00:00:01"
ports = {{ SW1 = 2 }}
"#
        ),
    )
    .unwrap();
    let adv_file = dir.path().join("advertised");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvipa"))
        .args([
            "controller",
            "--config",
            cfg.to_str().unwrap(),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--advertise-cmd",
            &format!(
                "echo \"$DVIPA_SWITCH $DVIPA_ADDR/$DVIPA_PREFIX_LEN\" >> {}",
                adv_file.display()
            ),
            "--log-level",
            "warn",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The switch comes up (vipadyn over the admin API, as JSON).
    let t0 = Instant::now();
    loop {
        let (ok, out, _) = dvipa(&["--admin", &admin, "-o", "json", "netstat", "vipadyn"]).await;
        if ok {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            if v["rows"][0]["switchstate"] == "UP" {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "controller never saw the switch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Human table with z/OS-like columns.
    let (ok, out, err) = dvipa(&["--admin", &admin, "netstat", "vipadcfg"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("DVIPA") && out.contains("DESTIP") && out.contains("203.0.113.10/24"),
        "{out}"
    );

    // The switch's own table.
    let (ok, out, err) = dvipa(&[
        "--admin",
        &admin,
        "-o",
        "json",
        "table",
        "dump",
        "ipv4_route",
        "--switch",
        "SW1",
    ])
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 1, "{out}");
    assert!(
        v["rows"][0]["action"]
            .as_str()
            .unwrap()
            .contains("set_nexthop"),
        "{out}"
    );

    // Errors are clear and exit non-zero.
    let (ok, _, err) = dvipa(&["--admin", &admin, "switch", "down", "NOPE"]).await;
    assert!(!ok);
    assert!(err.contains("unknown switch `NOPE`"), "{err}");
    let (ok, _, err) = dvipa(&["--admin", &admin, "move", "192.0.2.1", "--to", "SW1"]).await;
    assert!(!ok);
    assert!(err.contains("unknown DVIPA 192.0.2.1"), "{err}");

    // The advertise hook ran for the DVIPA (once the switch was programmed).
    let t0 = Instant::now();
    loop {
        let s = std::fs::read_to_string(&adv_file).unwrap_or_default();
        if s.contains("SW1 203.0.113.10/24") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "advertise hook not run: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Prometheus endpoint.
    let t0 = Instant::now();
    loop {
        let m = http_get(metrics_port, "/metrics").await;
        if m.contains("dvipa_connections_pinned") && m.contains("dvipa_table_entries") {
            assert!(m.contains("dvipa_write_latency_seconds"), "{m}");
            assert!(m.contains("dvipa_switch_up{switch=\"SW1\"} 1"), "{m}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "metrics missing: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // SIGTERM: graceful exit with status 0.
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

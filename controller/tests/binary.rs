//! The `dvipa` binary: `dvipa controller` against an in-process embedded switch, the operator
//! subcommands against its admin API, the advertise hook, the Prometheus endpoint, and a
//! graceful exit on SIGTERM.

use std::time::{Duration, Instant};

mod common;

use common::{PROFILE, dvipa};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_binary_cli_metrics_and_sigterm() {
    let (_sw, sw_addr) = common::switch().await;

    let dir = tempfile::tempdir().unwrap();
    common::ca_with_server_cert("ca", dir.path());
    common::write_inputs(dir.path(), &[("sw1.profile", PROFILE)]);
    // Picked together (two distinct ports); the agent listens on another loopback address, so
    // the port the kernel gives it cannot be one of these.
    let (admin_port, metrics_port) = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let m = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            a.local_addr().unwrap().port(),
            m.local_addr().unwrap().port(),
        )
    };
    let p4info = common::P4INFO;
    let cfg = common::write_toml(
        dir.path(),
        &format!(
            r#"
p4info = "{p4info}"
device_config = "device.json"
agent = {{ listen = "127.0.0.2:0" }}
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
    );
    let adv_file = dir.path().join("advertised");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvipa"))
        .args([
            "controller",
            "--config",
            cfg.to_str().unwrap(),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--admin-insecure-tcp",
            "--admin-socket",
            dir.path().join("admin.sock").to_str().unwrap(),
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
    common::wait_advertised(&adv_file).await;

    // Prometheus endpoint.
    let m = common::metrics_when(metrics_port, |m| {
        m.contains("dvipa_connections_pinned") && m.contains("dvipa_table_entries")
    })
    .await;
    assert!(m.contains("dvipa_write_latency_seconds"), "{m}");
    assert!(m.contains("dvipa_switch_up{switch=\"SW1\"} 1"), "{m}");

    // SIGTERM: graceful exit with status 0.
    common::sigterm_and_wait(&mut child).await;
}

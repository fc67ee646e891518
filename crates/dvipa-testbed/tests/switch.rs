//! The testbed with real routing switches (the embedded switch, programmed with a few P4Runtime
//! writes by topologies/p4rt_program.py): TCP streams through sw1, then R's route moves to sw2
//! (the advertisement move) and sw1 is killed, with every connection still streaming.
//!
//! Skips (with a message) without root, without the switch binary (target/debug/dvipa-switch or
//! $DVIPA_SWITCH) or without the Python venv (.venv, for the P4Runtime writes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dvipa_testbed::conns::{ConnsConfig, ConnsRun};
use dvipa_testbed::echo::{EchoConfig, EchoServer};
use dvipa_testbed::netns;
use dvipa_testbed::skip::skip;
use dvipa_testbed::topo::{Testbed, TestbedConfig, leftovers};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    if !netns::is_root() {
        skip("needs root (network namespaces, veth)");
        return None;
    }
    let switch = std::env::var_os("DVIPA_SWITCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/debug/dvipa-switch"));
    if !switch.exists() {
        skip(format!(
            "no switch binary at {} (cargo build -p dvipa-switch)",
            switch.display()
        ));
        return None;
    }
    let py = repo().join(".venv/bin/python");
    if !py.exists() {
        skip(format!(
            "no {} (scripts/install-test-deps.sh)",
            py.display()
        ));
        return None;
    }
    Some((switch, py))
}

fn program(py: &Path, grpc: u16, device: u64, tb: &Testbed, port: u16) {
    let out = Command::new(py)
        .arg(repo().join("topologies/p4rt_program.py"))
        .args(["--addr", &format!("127.0.0.1:{grpc}")])
        .args(["--device-id", &device.to_string()])
        .args(["--dvipa", &tb.dvipa().to_string()])
        .args(["--port", &port.to_string()])
        .args(["--server-mac", &tb.server(1).mac])
        .args(["--server-port", "2"])
        .output()
        .expect("run p4rt_program.py");
    assert!(
        out.status.success(),
        "p4rt_program.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn streams_through_switches_and_survives_the_route_move() {
    let Some((switch, py)) = prerequisites() else {
        return;
    };
    let tb = Testbed::build(&TestbedConfig {
        servers: 2,
        ..TestbedConfig::default()
    })
    .expect("testbed");
    let prefix = tb.prefix.clone();
    let bin = switch.to_string_lossy().into_owned();
    let (g1, g2) = (
        netns::free_local_port().unwrap(),
        netns::free_local_port().unwrap(),
    );
    let mut sw1 = tb.spawn_switch(1, &bin, 1, g1, None).expect("sw1");
    let _sw2 = tb.spawn_switch(2, &bin, 2, g2, None).expect("sw2");
    let port = 8080;
    program(&py, g1, 1, &tb, port);
    program(&py, g2, 2, &tb, port);
    tb.add_dvipa_on_server(1, tb.dvipa()).unwrap();
    tb.advertise(1, tb.dvipa()).unwrap();
    let target = SocketAddr::new(tb.dvipa().into(), port);
    let echo = EchoServer::start(
        Some(&tb.server(1).ns),
        EchoConfig {
            listen: target,
            name: "srv1".into(),
            drain: Duration::ZERO,
            freebind: false,
        },
    )
    .expect("echo");
    let run = ConnsRun::start(
        Some(&tb.client.ns),
        ConnsConfig {
            target,
            conns: 100,
            duration: Duration::from_secs(60),
            chunk: 1000,
            ..ConnsConfig::default()
        },
    )
    .unwrap();
    run.wait_alive(100, Duration::from_secs(15))
        .expect("alive via sw1");
    std::thread::sleep(Duration::from_secs(1));
    let before = run.window();
    assert_eq!(
        before.resets + before.errors + before.corrupt,
        0,
        "{before:?}"
    );

    // advertisement move to sw2, then sw1 dies: connections keep streaming
    tb.advertise(2, tb.dvipa()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let killed = std::time::Instant::now();
    sw1.kill();
    let recovered = run
        .wait_all_progress_since(killed, Duration::from_secs(10))
        .expect("every connection progresses after the kill");
    eprintln!("all 100 connections progressed {recovered:?} after sw1 was killed");
    std::thread::sleep(Duration::from_secs(1));
    let after = run.window();
    assert_eq!(after.alive, 100, "{after:?}");
    assert_eq!(after.resets + after.errors + after.corrupt, 0, "{after:?}");
    assert!(after.bytes_rx > before.bytes_rx, "{after:?}");
    assert!(after.window_stall_ms < 1500, "{after:?}");
    eprintln!(
        "through sw1 then sw2: alive {} resets {} longest stall in the move {} ms",
        after.alive, after.resets, after.window_stall_ms
    );
    let report = run.stop().unwrap();
    assert_eq!(report.summary.servers.get("srv1"), Some(&100));
    drop(echo);
    drop(tb);
    assert!(leftovers(&prefix).is_empty(), "{:?}", leftovers(&prefix));
}

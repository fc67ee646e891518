//! End-to-end tests of the testbed (root only; they skip with a message otherwise): the cluster
//! without a switch, the DVIPA on srv1 only and routed by R straight to srv1, echo + streaming
//! clients across it, and complete removal afterwards.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::Duration;

use dvipa_testbed::conns::{ConnsConfig, ConnsRun};
use dvipa_testbed::echo::{EchoConfig, EchoServer};
use dvipa_testbed::netns;
use dvipa_testbed::topo::{Testbed, TestbedConfig, leftovers};

fn root_or_skip(test: &str) -> bool {
    if netns::is_root() {
        true
    } else {
        dvipa_testbed::skip::skip(format!("{test}: needs root (network namespaces, veth)"));
        false
    }
}

fn direct_testbed(servers: usize) -> Testbed {
    let tb = Testbed::build(&TestbedConfig {
        servers,
        ..TestbedConfig::default()
    })
    .expect("build testbed");
    tb.add_dvipa_on_server(1, tb.dvipa())
        .expect("dvipa on srv1");
    tb.route_dvipa_to_server(tb.dvipa(), 1).expect("route");
    tb
}

#[test]
fn streams_across_the_direct_path_in_process_and_cleans_up() {
    if !root_or_skip("streams_across_the_direct_path_in_process_and_cleans_up") {
        return;
    }
    let tb = direct_testbed(2);
    let prefix = tb.prefix.clone();
    assert_eq!(tb.dvipa_route(tb.dvipa()).unwrap(), Some(0));
    let target = SocketAddr::new(tb.dvipa().into(), 8080);
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
    netns::wait_tcp_connect(&tb.client.ns, target, Duration::from_secs(5)).expect("reachable");

    let run = ConnsRun::start(
        Some(&tb.client.ns),
        ConnsConfig {
            target,
            conns: 200,
            duration: Duration::from_secs(30),
            probe_rate: 5.0,
            ..ConnsConfig::default()
        },
    )
    .expect("conns");
    let s = run.wait_alive(200, Duration::from_secs(10)).expect("alive");
    assert_eq!(s.servers.get("srv1"), Some(&200), "{s:?}");
    std::thread::sleep(Duration::from_secs(2));
    let w = run.window();
    assert_eq!(w.alive, 200, "{w:?}");
    assert_eq!(
        w.resets + w.failed_connects + w.errors + w.corrupt,
        0,
        "{w:?}"
    );
    assert!(w.bytes_rx > 200 * 100 * 10, "{w:?}");
    assert!(w.window_stall_ms < 1000, "{w:?}");
    assert!(w.probes_ok > 0 && w.probes_failed == 0, "{w:?}");

    // graceful stop of the application: every connection ends with FIN, none is reset
    let stats = echo.stop_graceful().expect("stop");
    assert!(stats.accepted >= 200, "{stats:?}");
    std::thread::sleep(Duration::from_millis(500));
    let report = run.stop().expect("report");
    let s = &report.summary;
    assert_eq!(s.resets, 0, "{s:?}");
    assert_eq!(s.closed, 200, "{s:?}");
    assert!(
        report
            .per_conn
            .iter()
            .all(|c| c.server.as_deref() == Some("srv1"))
    );

    drop(tb);
    assert!(leftovers(&prefix).is_empty(), "{:?}", leftovers(&prefix));
}

#[test]
fn binaries_across_the_direct_path() {
    if !root_or_skip("binaries_across_the_direct_path") {
        return;
    }
    let tb = direct_testbed(1);
    let prefix = tb.prefix.clone();
    let target = format!("{}:9000", tb.dvipa());
    let _echo = netns::spawn_in(
        &tb.server(1).ns,
        &[
            env!("CARGO_BIN_EXE_dvipa-echo"),
            "--listen",
            &target,
            "--name",
            "srv1",
        ],
    )
    .expect("echo");
    netns::wait_tcp_listen(&tb.server(1).ns, 9000, Duration::from_secs(5)).expect("listen");
    let mut conns = netns::spawn_in_piped(
        &tb.client.ns,
        &[
            env!("CARGO_BIN_EXE_dvipa-conns"),
            "--target",
            &target,
            "--conns",
            "100",
            "--duration-secs",
            "3",
            "--strict",
            "--per-conn",
            "--quiet",
        ],
    )
    .expect("conns");
    let out = conns.child_mut().unwrap().stdout.take().unwrap();
    let mut ticks = 0;
    let mut summary = None;
    for line in BufReader::new(out).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).expect("json line");
        match v["event"].as_str() {
            Some("tick") => ticks += 1,
            Some("summary") => summary = Some(v),
            e => panic!("unexpected event {e:?}"),
        }
    }
    let st = conns.wait_timeout(Duration::from_secs(15)).expect("exits");
    assert!(st.success(), "dvipa-conns --strict failed: {summary:?}");
    let s = summary.expect("summary line");
    assert!(ticks >= 2, "ticks {ticks}");
    assert_eq!(s["alive"], 100);
    assert_eq!(s["resets"], 0);
    assert_eq!(s["servers"]["srv1"], 100);
    assert_eq!(s["per_conn"].as_array().unwrap().len(), 100);
    drop(_echo);
    drop(tb);
    assert!(leftovers(&prefix).is_empty(), "{:?}", leftovers(&prefix));
}

#[test]
fn torn_down_even_when_the_test_panics() {
    if !root_or_skip("torn_down_even_when_the_test_panics") {
        return;
    }
    let prefix = dvipa_testbed::topo::fresh_prefix();
    let p2 = prefix.clone();
    let r = std::panic::catch_unwind(move || {
        let tb = Testbed::build(&TestbedConfig {
            prefix: Some(p2),
            servers: 1,
            switches: 1,
            ..TestbedConfig::default()
        })
        .unwrap();
        // a process inside one of its namespaces must not keep anything alive
        let _sleeper = netns::spawn_in(&tb.server(1).ns, &["sleep", "600"]).unwrap();
        std::mem::forget(_sleeper);
        assert!(!leftovers(&tb.prefix).is_empty());
        panic!("boom");
    });
    assert!(r.is_err());
    assert!(leftovers(&prefix).is_empty(), "{:?}", leftovers(&prefix));
    remove_logs(&prefix); // kept on purpose by a panicking drop
}

/// The testbed's log dir, which a panicking drop or a signal-driven teardown keeps.
fn remove_logs(prefix: &str) {
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("dvipa-testbed-{prefix}")));
}

#[test]
fn advertise_and_withdraw_hooks_move_the_route() {
    if !root_or_skip("advertise_and_withdraw_hooks_move_the_route") {
        return;
    }
    let tb = Testbed::build(&TestbedConfig {
        servers: 1,
        ..TestbedConfig::default()
    })
    .unwrap();
    let d = tb.dvipa();
    assert_eq!(tb.dvipa_route(d).unwrap(), None);
    tb.advertise(1, d).unwrap();
    assert_eq!(tb.dvipa_route(d).unwrap(), Some(1));
    netns::run(&["sh", "-c", &tb.advertise_cmd(2, d)]).unwrap();
    assert_eq!(tb.dvipa_route(d).unwrap(), Some(2));
    // a late withdraw by the old owner leaves the new owner's route alone
    tb.withdraw(1, d).unwrap();
    assert_eq!(tb.dvipa_route(d).unwrap(), Some(2));
    tb.withdraw(2, d).unwrap();
    assert_eq!(tb.dvipa_route(d).unwrap(), None);
    // the controller's env-dispatching hooks
    let hook = |cmd: String, sw: &str| {
        let st = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .env("DVIPA_SWITCH", sw)
            .env("DVIPA_ADDR", d.to_string())
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    hook(tb.advertise_hook(), "sw2");
    assert_eq!(tb.dvipa_route(d).unwrap(), Some(2));
    hook(tb.advertise_hook(), "sw1");
    assert_eq!(tb.dvipa_route(d).unwrap(), Some(1));
    hook(tb.withdraw_hook(), "sw2");
    assert_eq!(tb.dvipa_route(d).unwrap(), Some(1));
    hook(tb.withdraw_hook(), "sw1");
    assert_eq!(tb.dvipa_route(d).unwrap(), None);
    // agents reach the controller's leg in the root namespace, and it is the ctl veth (not a
    // switch port) that answers ARP for it
    let l = std::net::TcpListener::bind((tb.ctl.ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    netns::wait_tcp_connect(&tb.server(1).ns, addr, Duration::from_secs(5)).unwrap();
    let neigh = netns::exec_in(
        &tb.server(1).ns,
        &["ip", "neigh", "show", &tb.ctl.ip.to_string()],
    )
    .unwrap();
    assert!(neigh.contains(&tb.ctl.mac), "{neigh}");
    // switch ports exist in the root namespace without addresses
    for sw in &tb.switches {
        let out = netns::ip(&["-o", "addr", "show", "dev", &sw.uplink_if]).unwrap();
        assert!(!out.contains("inet"), "{out}");
    }
}

#[test]
fn dvipa_testbed_up_removes_everything_on_sigterm() {
    if !root_or_skip("dvipa_testbed_up_removes_everything_on_sigterm") {
        return;
    }
    let prefix = dvipa_testbed::topo::fresh_prefix();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dvipa-testbed"))
        .args(["up", "--servers", "1", "--direct", "--prefix", &prefix])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let desc: serde_json::Value = serde_json::Deserializer::from_reader(BufReader::new(stdout))
        .into_iter()
        .next()
        .expect("a JSON description")
        .unwrap();
    assert_eq!(desc["prefix"], prefix.as_str());
    assert_eq!(desc["servers"][0]["ns"], format!("{prefix}-srv1"));
    assert!(!leftovers(&prefix).is_empty());
    // a process in one of its namespaces, like an agent
    let _ = netns::exec_in(&format!("{prefix}-srv1"), &["true"]);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130));
    assert!(leftovers(&prefix).is_empty(), "{:?}", leftovers(&prefix));
    remove_logs(&prefix);
}

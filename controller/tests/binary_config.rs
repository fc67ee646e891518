//! The `dvipa` binary and the TOML-only deployment: `[admin]` (listen, mutual TLS with an
//! allow-list), `[advertise]` hooks and `agent.insecure` in the file, the command-line flags as
//! overrides, `check-config` printing the effective values, field-named errors, and the
//! insecure-mode warning and gauge.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

mod common;

use common::{PROFILE, dvipa};

/// `dvipa.toml` + profile in `dir`; `top` goes before the tables, `rest` after `[[stack]]`.
fn write_config(dir: &Path, p4rt: &str, top: &str, rest: &str) -> PathBuf {
    let p4info = common::P4INFO;
    common::write_inputs(dir, &[("sw1.profile", PROFILE)]);
    common::write_toml(
        dir,
        &format!(
            r#"p4info = "{p4info}"
device_config = "device.json"
state_dir = ""
{top}
[[switch]]
name = "SW1"
p4runtime = "{p4rt}"
device_id = 0
profile = "sw1.profile"
routes = [{{ prefix = "0.0.0.0/0", port = 1, dmac = "02:00:00:00:fe:01", smac = "02:00:00:00:01:01" }}]

[[stack]]
name = "MVS1"
underlay = "10.0.0.1"
mac = "02:00:00:00:00:01"
ports = {{ SW1 = 2 }}
{rest}"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_effective_values_flags_override_and_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let top = r#"agent = { listen = "127.0.0.1:7070", insecure = true }
timers = { resync_ms = 7000 }
advertise = { advertise_cmd = "/usr/local/bin/adv", withdraw_cmd = "/usr/local/bin/wdr" }
"#;
    let admin = r#"
[admin]
listen = "0.0.0.0:7443"
[admin.tls]
ca = "admin-ca.pem"
cert = "ctl.pem"
key = "ctl-key.pem"
allow = ["ops-alice", "ops-bob"]
"#;
    let cfg = write_config(dir.path(), "127.0.0.1:1", top, admin);
    let c = cfg.to_str().unwrap();

    // Every new field, as the controller would run with it.
    let (ok, out, err) = dvipa(&["check-config", "-c", c]).await;
    assert!(ok, "{err}");
    let line = |k: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(k))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("admin.listen"), "0.0.0.0:7443");
    assert_eq!(line("admin.tls.allow"), "ops-alice,ops-bob");
    assert_eq!(line("admin.tls.ca"), "admin-ca.pem");
    assert_eq!(line("agent.insecure"), "true");
    assert_eq!(line("advertise.advertise_cmd"), "/usr/local/bin/adv");
    assert_eq!(line("advertise.withdraw_cmd"), "/usr/local/bin/wdr");
    assert_eq!(line("timers.resync_ms"), "7000");
    assert!(
        out.contains("warning:")
            && out.contains("agent.insecure: the agent endpoint runs WITHOUT TLS"),
        "{out}"
    );
    assert!(
        out.contains("admin.tls.ca: admin-ca.pem does not exist"),
        "{out}"
    );

    // The controller's flags override the file; JSON for scripts.
    let (ok, out, err) = dvipa(&[
        "-o",
        "json",
        "check-config",
        "-c",
        c,
        "--admin-listen",
        "127.0.0.1:9999",
        "--insecure=false",
        "--advertise-cmd",
        "adv2",
        "--resync-secs",
        "5",
    ])
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["settings"];
    assert_eq!(s["admin.listen"], "127.0.0.1:9999", "{out}");
    assert_eq!(s["agent.insecure"], "false", "{out}");
    assert_eq!(s["advertise.advertise_cmd"], "adv2", "{out}");
    assert_eq!(s["advertise.withdraw_cmd"], "/usr/local/bin/wdr", "{out}");
    assert_eq!(s["timers.resync_ms"], "5000", "{out}");
    assert_eq!(s["admin.tls.allow"], "ops-alice,ops-bob", "{out}");

    // Bad values: file:line:column and the field.
    let bad = write_config(
        dir.path(),
        "127.0.0.1:1",
        "",
        "\n[admin]\nlisten = \"localhost:7071\"\n",
    );
    let (ok, _, err) = dvipa(&["check-config", "-c", bad.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(
        err.contains("dvipa.toml:19:10: admin.listen: `localhost:7071` is not a listen address"),
        "{err}"
    );
    let bad = write_config(
        dir.path(),
        "127.0.0.1:1",
        "",
        "\n[advertise]\nadvertise_cmd = true\n",
    );
    let (ok, _, err) = dvipa(&["check-config", "-c", bad.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(
        err.contains("dvipa.toml:19:17: advertise.advertise_cmd: invalid type: boolean"),
        "{err}"
    );
    let bad = write_config(dir.path(), "127.0.0.1:1", "", "\n[admin]\nlissen = \"x\"\n");
    let (ok, _, err) = dvipa(&["check-config", "-c", bad.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(
        err.contains("dvipa.toml:19:1: admin: unknown field `lissen`"),
        "{err}"
    );

    // A plaintext admin API on a non-loopback address: refused, naming the field (and the
    // flag when it came from the command line) — check-config and the controller alike.
    let plain = write_config(
        dir.path(),
        "127.0.0.1:1",
        "agent = { listen = \"127.0.0.1:0\", insecure = true }\n",
        "",
    );
    let p = plain.to_str().unwrap();
    let (ok, _, err) = dvipa(&["check-config", "-c", p, "--admin-listen", "0.0.0.0:7071"]).await;
    assert!(!ok);
    assert!(
        err.contains(
            "dvipa.toml: admin.listen (--admin-listen): 0.0.0.0:7071 is not a loopback address"
        ),
        "{err}"
    );
    let (ok, _, err) = dvipa(&["controller", "-c", p, "--admin-listen", "0.0.0.0:0"]).await;
    assert!(!ok);
    assert!(
        err.contains("admin.listen (--admin-listen): 0.0.0.0:0 is not a loopback address")
            && err.contains("allow_insecure_remote"),
        "{err}"
    );
    // --insecure and [tls] exclude each other.
    let tls = write_config(
        dir.path(),
        "127.0.0.1:1",
        "agent = { listen = \"127.0.0.1:0\" }\ntls = { ca = \"a\", cert = \"b\", key = \"c\" }\n",
        "",
    );
    let (ok, _, err) = dvipa(&["check-config", "-c", tls.to_str().unwrap(), "--insecure"]).await;
    assert!(!ok);
    assert!(
        err.contains("agent.insecure (--insecure): plaintext agents"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_runs_from_the_toml_alone_with_admin_mtls_hooks_and_insecure_agents() {
    let (_sw, sw_addr) = common::switch().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = common::ca_with_server_cert("admin CA", dir.path());
    let ops = ca
        .client_bundle("ops-alice")
        .unwrap()
        .write_files(dir.path(), "alice")
        .unwrap();
    let intruder = ca
        .client_bundle("intruder")
        .unwrap()
        .write_files(dir.path(), "intruder")
        .unwrap();
    // Two distinct free ports, and the agent listener on another loopback address, so that the
    // port the agent gets from the kernel can never be the admin or metrics port picked here.
    let (admin_port, metrics_port) = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let m = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            a.local_addr().unwrap().port(),
            m.local_addr().unwrap().port(),
        )
    };
    let adv_file = dir.path().join("advertised");
    let top = format!(
        r#"agent = {{ listen = "127.0.0.2:0", insecure = true }}
metrics = {{ listen = "127.0.0.1:{metrics_port}" }}
advertise = {{ advertise_cmd = "echo \"$DVIPA_SWITCH $DVIPA_ADDR/$DVIPA_PREFIX_LEN\" >> {}" }}
"#,
        adv_file.display()
    );
    let admin = format!(
        r#"
[admin]
socket = "admin.sock"
listen = "127.0.0.1:{admin_port}"
tls = {{ ca = "ctl-ca.pem", cert = "ctl.pem", key = "ctl-key.pem", allow = ["ops-alice"] }}
"#
    );
    let cfg = write_config(dir.path(), &sw_addr.to_string(), &top, &admin);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvipa"))
        .args([
            "controller",
            "-c",
            cfg.to_str().unwrap(),
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });

    let admin = format!("127.0.0.1:{admin_port}");
    let with = |cert: &PathBuf, key: &PathBuf, ca: &PathBuf, rest: &[&str]| {
        let mut v: Vec<String> = [
            "--admin",
            admin.as_str(),
            "--server-name",
            "localhost",
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: Vec<String>| async move {
        let r: Vec<&str> = v.iter().map(String::as_str).collect();
        dvipa(&r).await
    };

    // The operator's certificate: the switch comes up (admin listen address from the TOML).
    let t0 = Instant::now();
    loop {
        let (ok, out, err) = run(with(
            &ops.cert,
            &ops.key,
            &ops.ca,
            &["-o", "json", "netstat", "vipadyn"],
        ))
        .await;
        if ok {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            if v["rows"][0]["switchstate"] == "UP" {
                break;
            }
        }
        if t0.elapsed() >= Duration::from_secs(20) {
            let _ = child.start_kill();
            let log = log.await.unwrap_or_default();
            panic!("controller never answered / saw the switch up: {err}\ncontroller log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No certificate (plaintext), and a certificate not in the allow-list: refused.
    let (ok, _, err) = dvipa(&["--admin", &admin, "counters"]).await;
    assert!(!ok, "plaintext admin client accepted");
    assert!(err.starts_with("dvipa: "), "{err}");
    let (ok, _, err) = run(with(
        &intruder.cert,
        &intruder.key,
        &intruder.ca,
        &["counters"],
    ))
    .await;
    assert!(!ok);
    assert!(
        err.contains("PermissionDenied") && err.contains("admin.tls.allow"),
        "{err}"
    );
    let (ok, out, err) = run(with(
        &ops.cert,
        &ops.key,
        &ops.ca,
        &["-o", "json", "counters"],
    ))
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let count = |name: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["value"].as_str())
            .unwrap_or("0")
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(count("admin_refused_not_allowed"), 1, "{out}");
    assert!(count("admin_refused_other") >= 1, "{out}");
    let (ok, _, err) = dvipa(&[
        "--admin",
        &admin,
        "--cert",
        ops.cert.to_str().unwrap(),
        "counters",
    ])
    .await;
    assert!(!ok && err.contains("--ca, --cert and --key"), "{err}");

    // A mutating command over mutual TLS is audited with the certificate's name.
    let (ok, _, err) = run(with(
        &ops.cert,
        &ops.key,
        &ops.ca,
        &["move", "192.0.2.1", "--to", "SW1"],
    ))
    .await;
    assert!(!ok && err.contains("unknown DVIPA 192.0.2.1"), "{err}");

    // The advertise hook from the TOML ran.
    common::wait_advertised(&adv_file).await;

    // Gauges: plaintext agents, mutual TLS on the admin API; refused admin clients counted.
    let m = common::metrics_when(metrics_port, |m| {
        m.contains("dvipa_admin_refused_total{reason=\"not_allowed\"} 1")
            && m.contains("dvipa_admin_refused_total{reason=\"other\"}")
            && m.contains("dvipa_admin_commands_total{command=\"move\",result=\"refused\"} 1")
    })
    .await;
    assert!(m.contains("dvipa_agent_insecure 1"), "{m}");
    assert!(m.contains("dvipa_admin_tls 1"), "{m}");

    common::sigterm_and_wait(&mut child).await;
    let log = log.await.unwrap();
    assert!(
        log.contains("INSECURE") && log.contains("WITHOUT TLS"),
        "no insecure-mode warning: {log}"
    );
    assert!(
        log.contains("admin request refused") && log.contains("intruder"),
        "{log}"
    );
    assert!(
        log.contains("TLS handshake refused endpoint=\"admin\""),
        "{log}"
    );
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("dvipa::audit")).collect();
    assert!(
        audit.len() == 1
            && audit[0].contains("who=\"cert=ops-alice\"")
            && audit[0].contains("what=\"move 192.0.2.1 --to SW1\"")
            && audit[0].contains("result=\"refused\""),
        "{audit:?}"
    );
}

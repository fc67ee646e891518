//! The local admin endpoint: a Unix socket only its owner (root) — or its group with
//! `admin.group` — can use, the peer's uid in the audit line of every mutating command, the
//! commands counted, and plaintext TCP refused at start without the explicit opt-in.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

mod common;

use common::dvipa;

const NOBODY: u32 = 65534;

/// `dvipa ARGS` as uid/gid `NOBODY`: (success, stderr).
async fn dvipa_as_nobody(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvipa"))
        .args(args)
        .env_remove("DVIPA_ADMIN")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A temporary directory others may traverse (so only the socket's own mode keeps them out).
fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn config(dir: &Path, admin: &str) -> std::path::PathBuf {
    common::unreachable_switch_config(
        dir,
        &format!("agent = {{ listen = \"127.0.0.1:0\", insecure = true }}\n{admin}"),
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_socket_is_root_only_and_mutating_commands_are_audited_with_the_uid() {
    let dir = open_dir();
    let cfg = config(dir.path(), "[admin]\nsocket = \"admin.sock\"\n");
    let sock = dir.path().join("admin.sock");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvipa"))
        .args([
            "controller",
            "-c",
            cfg.to_str().unwrap(),
            "--log-level",
            "info",
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
    let admin = format!("unix:{}", sock.display());
    let t0 = Instant::now();
    while !dvipa(&["--admin", &admin, "counters"]).await.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "socket never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600, "mode {:o}", m.mode());
    assert_eq!(m.uid(), 0);

    // nobody cannot connect, so cannot change routing (it could with TCP on loopback).
    let (ok, err) = dvipa_as_nobody(&["--admin", &admin, "switch", "down", "SW1"]).await;
    assert!(!ok, "nobody took a switch down");
    assert!(
        err.contains("Permission denied") || err.contains("permission denied"),
        "{err}"
    );
    let (ok, _) = dvipa_as_nobody(&["--admin", &admin, "counters"]).await;
    assert!(!ok, "nobody read the counters");

    // root can; one audit line per mutating command, with the uid, what and the result.
    let (ok, out, err) = dvipa(&["--admin", &admin, "switch", "down", "SW1"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("SW1"), "{out}");
    let (ok, _, err) = dvipa(&["--admin", &admin, "move", "192.0.2.1", "--to", "SW1"]).await;
    assert!(!ok);
    assert!(err.contains("unknown DVIPA 192.0.2.1"), "{err}");
    // Read-only commands are not audited.
    assert!(dvipa(&["--admin", &admin, "netstat", "vipadyn"]).await.0);
    let (ok, out, err) = dvipa(&["--admin", &admin, "-o", "json", "counters"]).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let counter = |n: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .map(|r| r["value"].as_str().unwrap().to_string())
    };
    assert_eq!(
        counter("admin_audit_maintenance_ok").as_deref(),
        Some("1"),
        "{out}"
    );
    assert_eq!(
        counter("admin_audit_move_refused").as_deref(),
        Some("1"),
        "{out}"
    );

    // SIGTERM: the controller stops and removes its socket.
    let pid = child.id().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let st = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "{st:?}");
    let log = log.await.unwrap();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("dvipa::audit")).collect();
    eprintln!("audit lines:\n{}", audit.join("\n"));
    assert_eq!(audit.len(), 2, "{log}");
    assert!(
        audit[0].contains("who=\"uid=0 gid=0 pid=")
            && audit[0].contains("what=\"switch down SW1\"")
            && audit[0].contains("result=\"ok\""),
        "{}",
        audit[0]
    );
    assert!(
        audit[1].contains("who=\"uid=0 gid=0 pid=")
            && audit[1].contains("what=\"move 192.0.2.1 --to SW1\"")
            && audit[1].contains("result=\"refused\"")
            && audit[1].contains("unknown DVIPA 192.0.2.1"),
        "{}",
        audit[1]
    );
    assert!(
        log.contains("admin connection on the Unix socket") && log.contains("uid=0"),
        "{log}"
    );
    assert!(!sock.exists(), "socket left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_group_opens_the_socket_to_that_group_only() {
    let dir = open_dir();
    let sock = dir.path().join("g.sock");
    let u = dvipa::admin_local::bind_socket(&sock, Some("nogroup")).unwrap();
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!(m.mode() & 0o777, 0o660, "mode {:o}", m.mode());
    assert_eq!(m.gid(), NOBODY);
    let cfg = config(dir.path(), "");
    let opts = dvipa::controller::Options {
        resync: Duration::from_secs(3600),
        metrics: false,
        ..Default::default()
    };
    let ctl = dvipa::controller::Controller::start(
        dvipa::controller::load(&cfg).unwrap(),
        opts,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        u,
        std::sync::Arc::new(dvipa::advertise::RecordingAdvertiser::default()),
    )
    .await
    .unwrap();
    assert_eq!(ctl.admin_socket(), Some(sock.as_path()));
    assert_eq!(ctl.admin_tcp(), None);
    // A member of the group (nobody/nogroup) may use it now.
    let admin = format!("unix:{}", sock.display());
    let (ok, err) = dvipa_as_nobody(&["--admin", &admin, "counters"]).await;
    assert!(ok, "{err}");
    // A second controller on the same socket is refused; the first keeps it.
    let e = dvipa::admin_local::bind_socket(&sock, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another process"), "{e}");
    assert!(dvipa(&["--admin", &admin, "counters"]).await.0);
    ctl.shutdown().await;
    // A stale socket (a controller killed with SIGKILL) is replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let u = dvipa::admin_local::bind_socket(&stale, None).unwrap();
    assert_eq!(std::fs::metadata(&stale).unwrap().mode() & 0o777, 0o600);
    drop(u);
    // A file that is not a socket is never replaced.
    let file = dir.path().join("file.sock");
    std::fs::write(&file, b"x").unwrap();
    let e = dvipa::admin_local::bind_socket(&file, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    // An unknown group is a clear start-up error.
    let e = dvipa::admin_local::bind_socket(&dir.path().join("x.sock"), Some("no-such-group-h3"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("admin.group") && e.contains("no-such-group-h3"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_tcp_admin_is_refused_at_start_without_the_opt_in() {
    let dir = open_dir();
    let cfg = config(dir.path(), "[admin]\nsocket = \"admin.sock\"\n");
    let c = cfg.to_str().unwrap();
    let port = common::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let (ok, _, err) = dvipa(&["controller", "-c", c, "--admin-listen", &listen]).await;
    assert!(!ok, "plaintext TCP admin started");
    assert!(
        err.contains("admin.listen (--admin-listen)")
            && err.contains("a TCP admin endpoint needs [admin.tls]")
            && err.contains("admin.insecure_tcp = true"),
        "{err}"
    );
    let in_toml = config(
        dir.path(),
        &format!("[admin]\nsocket = \"admin.sock\"\nlisten = \"{listen}\"\n"),
    );
    let (ok, _, err) = dvipa(&["check-config", "-c", in_toml.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(err.contains("admin.listen: 127.0.0.1:"), "{err}");

    // With the opt-in it serves both, and says so.
    let cfg = config(dir.path(), "[admin]\nsocket = \"admin.sock\"\n");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvipa"))
        .args([
            "controller",
            "-c",
            cfg.to_str().unwrap(),
            "--admin-listen",
            &listen,
            "--admin-insecure-tcp",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !dvipa(&["--admin", &listen, "counters"]).await.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "TCP admin never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sock = format!("unix:{}", dir.path().join("admin.sock").display());
    assert!(dvipa(&["--admin", &sock, "counters"]).await.0);
    child.kill().await.unwrap();
}

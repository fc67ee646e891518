//! Failure detection time (issue 13), the `detect` section: the controller's real
//! switch driver (`dvipa::switch`, with its liveness probe, keep-alive and TCP_USER_TIMEOUT)
//! against a real `dvipa-switch` process (no data ports, P4Runtime on 127.0.0.1), one fault at
//! a time: SIGKILL (the stream ends), SIGSTOP (a frozen process: the kernel still accepts and
//! ACKs, nothing answers), and, as root with iptables, an iptables DROP of the controller's
//! packets to the switch's port (path loss). Detection = fault → the core sees the switch
//! down. Between samples the fault is undone (restart, SIGCONT, rule removed) and the switch
//! must be up again. `liveness_ms` 300 as in the demo; the switch's keep-alive is 100 ms.

use crate::Size;
use crate::embedded;
use crate::harness;
use crate::report::{Better, Figure};
use dvipa::shared::Shared;
use dvipa::switch::{self, DriverConfig};
use dvipa_core::core::{CoreOptions, SwitchLiveness};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const LIVENESS_MS: u64 = 300;

/// A `dvipa-switch` process, killed when dropped.
struct SwitchProc {
    child: Child,
}

impl SwitchProc {
    fn start(bin: &std::path::Path, port: u16) -> anyhow::Result<SwitchProc> {
        let child = Command::new(bin)
            .args(["--no-p4", "--device-id", "1", "--log-level", "warn"])
            .args(["--grpc-keepalive-ms", &(LIVENESS_MS / 3).to_string()])
            .args(["--", "--grpc-server-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(10),
                "dvipa-switch does not listen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(SwitchProc { child })
    }

    fn signal(&self, sig: i32) {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status();
    }
}

impl Drop for SwitchProc {
    fn drop(&mut self) {
        self.signal(18); // a stopped process must run to die
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn iptables(op: &str, port: u16) -> bool {
    Command::new("iptables")
        .args([op, "OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport"])
        .arg(port.to_string())
        .args(["-j", "DROP"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn state(shared: &Shared) -> Option<SwitchLiveness> {
    shared.with_core(|c| c.liveness("SW1"))
}

async fn wait_state(shared: &Shared, want: SwitchLiveness, timeout: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if state(shared) == Some(want) {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Runs the section.
pub fn run(size: Size) -> anyhow::Result<Vec<Figure>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(figures(size))
}

/// The detection figures (empty with a note when `dvipa-switch` is not built).
async fn figures(size: Size) -> anyhow::Result<Vec<Figure>> {
    let bin = std::env::current_exe()?.with_file_name("dvipa-switch");
    if !bin.exists() {
        println!(
            "detect: skipped: no {} (cargo build --release -p dvipa-switch)",
            bin.display()
        );
        return Ok(Vec::new());
    }
    let samples = if size == Size::Smoke { 3 } else { 12 };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let schema = Arc::new(embedded::schema()?);
    let core = harness::core(false, false, CoreOptions::default().max_batch)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (adv_tx, mut adv_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move { while adv_rx.recv().await.is_some() {} });
    let shared = Arc::new(Shared::new(
        core,
        HashMap::from([("SW1".to_string(), tx)]),
        adv_tx,
    ));
    let p4info = schema.p4info().clone();
    let liveness = Duration::from_millis(LIVENESS_MS);
    let dc = DriverConfig {
        name: "SW1".into(),
        addr: format!("127.0.0.1:{port}"),
        device_id: 1,
        election_id: 1,
        cookie: switch::cookie(&p4info, b"{}"),
        p4info,
        device_config: b"{}".to_vec(),
        idle_timeout_ns: 300_000_000_000,
        liveness,
        probe: liveness / 3,
        keepalive: liveness / 3,
        tcp_user_timeout: liveness,
        connect_timeout: liveness,
        election_id_range: 16,
        resync: Duration::from_secs(3600),
        tls: None,
        capabilities: dvipa_core::config::Capabilities {
            digest_acks: true,
            idle_notifications: true,
        },
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut sw = SwitchProc::start(&bin, port)?;
    let driver = tokio::spawn(switch::run(dc, schema, shared.clone(), rx, stop_rx));
    let up = Duration::from_secs(10);
    anyhow::ensure!(
        wait_state(&shared, SwitchLiveness::Up, up).await.is_some(),
        "the switch never came up"
    );
    let root = unsafe { libc_geteuid() } == 0;
    // path loss needs iptables (root): tried with one insert + delete
    let can_drop = root && iptables("-I", port) && iptables("-D", port);
    let mut kill = Vec::new();
    let mut freeze = Vec::new();
    let mut path = Vec::new();
    // the faults land at different points of the probe cycle (every liveness_ms / 3)
    let phase = |i: u64| Duration::from_millis(20 + (i * 37) % (LIVENESS_MS / 3));
    for i in 0..samples {
        tokio::time::sleep(phase(i)).await;
        // kill: the stream ends; SwitchDown after liveness_ms; a new process takes its place
        let t = Instant::now();
        sw.signal(9);
        let d = wait_state(&shared, SwitchLiveness::Down, up).await;
        kill.push(d.map(|_| t.elapsed()).unwrap_or(up).as_secs_f64() * 1e3);
        drop(sw);
        sw = SwitchProc::start(&bin, port)?;
        wait_state(&shared, SwitchLiveness::Up, up).await;
        tokio::time::sleep(phase(i + 1)).await;
        // freeze
        let t = Instant::now();
        sw.signal(19);
        let d = wait_state(&shared, SwitchLiveness::Down, up).await;
        freeze.push(d.map(|_| t.elapsed()).unwrap_or(up).as_secs_f64() * 1e3);
        sw.signal(18);
        wait_state(&shared, SwitchLiveness::Up, up).await;
        tokio::time::sleep(phase(i + 2)).await;
        // path loss
        if can_drop {
            let t = Instant::now();
            iptables("-I", port);
            let d = wait_state(&shared, SwitchLiveness::Down, up).await;
            path.push(d.map(|_| t.elapsed()).unwrap_or(up).as_secs_f64() * 1e3);
            tokio::time::sleep(Duration::from_millis(200)).await;
            iptables("-D", port);
            wait_state(&shared, SwitchLiveness::Up, up).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = stop.send(true);
    let _ = driver.await;
    drop(sw);
    let mut out = Vec::new();
    for (what, v) in [
        ("SIGKILL (stream ends)", &mut kill),
        ("SIGSTOP (frozen process)", &mut freeze),
        ("iptables DROP ctl->switch (path loss)", &mut path),
    ] {
        if v.is_empty() {
            println!("detect: {what} skipped (needs root and iptables)");
            continue;
        }
        let n = v.len();
        let (min, median, max) = stats(v);
        out.push(
            Figure::new(
                "detect",
                format!("detection, {what}, liveness 300 ms"),
                median,
                "ms",
                Better::Lower,
            )
            .goal_met(
                max <= (LIVENESS_MS + 200) as f64,
                "max ≤ liveness_ms + 200 ms",
            )
            .note(format!(
                "median of {n}, min {min:.0} ms, max {max:.0} ms: fault -> the core sees the switch \
                 down"
            )),
        );
    }
    Ok(out)
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

//! CRT idle timeouts across a controller change (controller restart, HA leader kill): a pinned
//! connection that goes idle while no controller acts on idle-timeout notifications is removed
//! by the next (new) leader; a connection with packets flowing across the same change is kept.
//!
//! The embedded switches either repeat a notification about once a second while the entry
//! stays idle (bmv2's behaviour, the default) or send it once per idle period whether or not a
//! primary receives it (the P4Runtime specification's reading, `set_idle_notify_once`). With
//! repeats the next primary hears the notification again; sent once, only the controller's own
//! read of `time_since_last_hit` after its first full read finds the entry
//! (`controller/src/switch/takeover.rs`). The time from the change to the removal is printed.

use dvipa::advertise::RecordingAdvertiser;
use dvipa::cli::{self, Common, OpCmd, Reply};
use dvipa::controller::Controller;
use dvipa_switch::Verdict;
use dvipa_switch::server::SwitchServer;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
mod etcd;

use common::{DVIPA, PROFILE, plaintext_agent};

const PORT_MVS1: u16 = 2;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
/// The CRT idle timeout of these tests.
const IDLE: Duration = Duration::from_millis(1000);
/// The stale connection (idle through the change) and the active one (packets flowing).
const STALE: u16 = 41001;
const ACTIVE: u16 = 41002;

const PROFILE_SW2: &str = "\
VIPADYNAMIC
  VIPABACKUP 50 203.0.113.10
ENDVIPADYNAMIC
";

fn tcp_frame(sport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 9, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&CLIENT.octets());
    f.extend_from_slice(&DVIPA.octets());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&60u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

fn pinned(sw: &SwitchServer, sport: u16) -> bool {
    sw.pipeline()
        .tables()
        .crt
        .iter()
        .any(|(k, _)| k.sport == sport)
}

/// Two embedded switches (SW1 routes the DVIPA, SW2 is its backup), notifying idle entries
/// once (`once`) or repeatedly.
async fn switches(once: bool) -> [(SwitchServer, SocketAddr); 2] {
    let s1 = common::switch().await;
    let s2 = common::switch().await;
    s1.0.set_idle_notify_once(once);
    s2.0.set_idle_notify_once(once);
    [s1, s2]
}

/// The two-switch config with a 1 s CRT idle timeout and `extra` appended.
fn config(dir: &Path, a1: SocketAddr, a2: SocketAddr, extra: &str) -> std::path::PathBuf {
    let cfg = common::two_switch_config(
        dir,
        a1,
        a2,
        "state_dir = \"\"\nhot_standby = true",
        PROFILE,
        PROFILE_SW2,
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "idle_timeout_ms = 600000",
        &format!("idle_timeout_ms = {}", IDLE.as_millis()),
    );
    std::fs::write(&cfg, format!("{text}\n{extra}")).unwrap();
    cfg
}

/// A controller with MVS1's agent attached (heartbeats until the task is aborted).
async fn start(cfg: &Path) -> (Controller, tokio::task::JoinHandle<()>) {
    start_opts(cfg, false).await
}

/// [`start`], serving metrics when `metrics` (one controller per test process: the recorder
/// is global).
async fn start_opts(cfg: &Path, metrics: bool) -> (Controller, tokio::task::JoinHandle<()>) {
    let opts = dvipa::controller::Options {
        insecure: true,
        resync: Duration::from_secs(3600),
        metrics,
        ..Default::default()
    };
    let ctl = common::start_with(cfg, opts, RecordingAdvertiser::default()).await;
    let (tx, stream) = plaintext_agent(ctl.agent_addr()).await;
    let hb = tokio::spawn(async move {
        let _keep = stream;
        loop {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if tx.send(common::heartbeat()).await.is_err() {
                return;
            }
        }
    });
    (ctl, hb)
}

async fn counter(admin: SocketAddr, name: &str) -> u64 {
    let c = Common::plaintext(format!("http://{admin}"));
    let Reply::Table(t) = cli::run(&c, &OpCmd::Counters).await.unwrap() else {
        panic!("counters is a table")
    };
    t.rows
        .iter()
        .filter(|r| r.cells[1] == name)
        .map(|r| r.cells[2].parse::<u64>().unwrap())
        .sum()
}

async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::wait_until(what, 20, 10, f).await
}

/// Pins STALE and ACTIVE on SW1 (SYN + handshake ACK digests; no agent confirms them, so an
/// idle timeout removes them).
async fn pin_both(sw: &SwitchServer) {
    eventually("SW1 forwards the DVIPA's SYNs to MVS1", || async {
        sw.inject(1, &tcp_frame(40999, SYN)).0 == Verdict::Forward(PORT_MVS1)
    })
    .await;
    for p in [STALE, ACTIVE] {
        assert_eq!(
            sw.inject(1, &tcp_frame(p, SYN)).0,
            Verdict::Forward(PORT_MVS1)
        );
        assert_eq!(
            sw.inject(1, &tcp_frame(p, ACK)).0,
            Verdict::Forward(PORT_MVS1)
        );
    }
    eventually("both connections pinned on SW1", || async {
        pinned(sw, STALE) && pinned(sw, ACTIVE)
    })
    .await;
}

/// Packets of ACTIVE every 100 ms until aborted.
fn pump(sw: SwitchServer) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (v, _) = sw.inject(1, &tcp_frame(ACTIVE, ACK));
            assert_eq!(v, Verdict::Forward(PORT_MVS1), "ACTIVE still to MVS1");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// After `changed`, STALE goes within idle + 10 s; ACTIVE stays. Returns the time to removal.
async fn stale_removed_active_kept(sw: &SwitchServer, changed: Instant) -> Duration {
    let t0 = Instant::now();
    while pinned(sw, STALE) {
        assert!(
            t0.elapsed() < IDLE + Duration::from_secs(10),
            "the connection idle through the controller change is still pinned {:?} later",
            changed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = changed.elapsed();
    // A few more idle periods: the active connection stays.
    tokio::time::sleep(IDLE * 2).await;
    assert!(pinned(sw, ACTIVE), "the active connection was removed");
    assert!(!pinned(sw, STALE));
    took
}

async fn restart_scenario(once: bool) {
    let [(s1, a1), (_s2, a2)] = switches(once).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), a1, a2, "");
    let (ctl, hb) = start(&cfg).await;
    pin_both(&s1).await;
    let p = pump(s1.clone());

    // The controller goes away; STALE idles past its timeout with no controller connected.
    ctl.kill();
    hb.abort();
    tokio::time::sleep(IDLE + Duration::from_millis(700)).await;
    assert!(
        pinned(&s1, STALE),
        "nothing removes it without a controller"
    );

    // The new controller serves metrics in the notify-once case.
    let metrics_port = once.then(|| dvipa::demo::etcd::ports(1)[0]);
    if let Some(port) = metrics_port {
        let text = std::fs::read_to_string(&cfg).unwrap().replacen(
            "agent = {",
            &format!("metrics = {{ listen = \"127.0.0.1:{port}\" }}\nagent = {{"),
            1,
        );
        std::fs::write(&cfg, text).unwrap();
    }
    let changed = Instant::now();
    let (ctl, hb) = start_opts(&cfg, metrics_port.is_some()).await;
    let admin = ctl.admin_addr();
    let took = stale_removed_active_kept(&s1, changed).await;
    let after = counter(admin, "switch_idle_after_takeover").await;
    let notified = counter(admin, "switch_idle_notifications").await;
    let why = format!(
        "idle reports: removed {}, from a switch not routing the DVIPA {}, from a switch not up {}",
        counter(admin, "idle_removed").await,
        counter(admin, "idle_from_standby_ignored").await,
        counter(admin, "idle_from_switch_not_up").await
    );
    println!(
        "controller restart, notifications {}: stale CRT entry removed {:.0} ms after the new \
         controller started (idle timeout {} ms); idle found by the takeover read: {after}, \
         notifications received: {notified}; {why}",
        if once { "sent once" } else { "repeated" },
        took.as_secs_f64() * 1e3,
        IDLE.as_millis()
    );
    if let Some(port) = metrics_port {
        assert!(after >= 1, "found by the takeover read, not a notification");
        let m = common::metrics_when(port, |m| {
            m.contains("dvipa_crt_idle_after_takeover_total{switch=\"SW1\"}")
        })
        .await;
        assert!(
            m.lines().any(|l| l
                .strip_prefix("dvipa_crt_idle_after_takeover_total{switch=\"SW1\"} ")
                .is_some_and(|v| v.trim().parse::<f64>().unwrap() >= 1.0)),
            "{m}"
        );
    }
    assert!(counter(admin, "idle_removed").await >= 1);
    p.abort();
    hb.abort();
    ctl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_idle_entry_removed_when_the_switch_repeats_notifications() {
    restart_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_idle_entry_removed_when_the_switch_notifies_once() {
    restart_scenario(true).await;
}

async fn ha_scenario(once: bool) {
    let etcd = etcd::Etcd::start();
    let [(s1, a1), (_s2, a2)] = switches(once).await;
    let mut rs = Vec::new();
    for name in ["ctl-a", "ctl-b"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            a1,
            a2,
            &format!(
                "[ha]\netcd = {}\nelection = \"/dvipa/idle/leader\"\nlease_ms = 2000\nreplica = \"{name}\"\n",
                etcd.toml_list()
            ),
        );
        let (ctl, hb) = start(&cfg).await;
        rs.push((Some(ctl), hb, dir));
    }
    let is_leader = |c: &Controller| c.shared().ha().unwrap().now().is_leader();
    eventually("a leader", || async {
        rs.iter().any(|r| r.0.as_ref().is_some_and(is_leader))
    })
    .await;
    let l = (0..2)
        .find(|&i| rs[i].0.as_ref().is_some_and(is_leader))
        .unwrap();
    let f = 1 - l;
    pin_both(&s1).await;
    let p = pump(s1.clone());

    // The leader dies at once: STALE's timeout falls between the two leaders (lease 2 s), when
    // the follower's backup session is the switch's primary.
    let killed = Instant::now();
    rs[l].0.take().unwrap().kill();
    rs[l].1.abort();
    let follower = rs[f].0.as_ref().unwrap();
    eventually("the follower leads", || async { is_leader(follower) }).await;
    let led = Instant::now();
    let took = stale_removed_active_kept(&s1, led).await;
    let admin = follower.admin_addr();
    let after = counter(admin, "switch_idle_after_takeover").await;
    println!(
        "HA leader kill, notifications {}: new leader {:.0} ms after the kill; stale CRT entry \
         removed {:.0} ms after the leader change (idle timeout {} ms); idle found by the \
         takeover read: {after}",
        if once { "sent once" } else { "repeated" },
        (led - killed).as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3,
        IDLE.as_millis()
    );
    assert!(led - killed > IDLE, "the timeout fell between the leaders");
    if once {
        assert!(after >= 1, "found by the takeover read, not a notification");
    }
    p.abort();
    for r in &mut rs {
        r.1.abort();
        if let Some(c) = r.0.take() {
            c.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_leader_kill_idle_entry_removed_when_the_switch_repeats_notifications() {
    ha_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_leader_kill_idle_entry_removed_when_the_switch_notifies_once() {
    ha_scenario(true).await;
}

//! The persisted DVIPA owner (`state_dir`, `owners.toml`): an operator's move survives a
//! controller restart, and a persisted owner that is down or unknown falls back to the
//! configured one. Controller + embedded switches in process (P4Runtime on loopback) + a
//! plaintext agent stream.

use dvipa::advertise::RecordingAdvertiser;
use dvipa::cli::{self, Common, OpCmd, Reply};
use dvipa_core::config::OwnerState;
use dvipa_proto::v1 as pb;
use dvipa_switch::Verdict;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod common;

use common::{
    DVIPA, PROFILE as PROFILE_SW1, plaintext_agent, start_insecure as start, switch, vipadyn,
};

const PORT_MVS1: u16 = 2;

const PROFILE_SW2: &str = "\
VIPADYNAMIC
  VIPABACKUP 50 203.0.113.10
ENDVIPADYNAMIC
";

/// SW1 (owner) and SW2 (backup) at `a1`/`a2`, one stack MVS1; `extra`: top-level lines.
fn config(dir: &Path, a1: SocketAddr, a2: SocketAddr, extra: &str) -> PathBuf {
    common::two_switch_config(dir, a1, a2, extra, PROFILE_SW1, PROFILE_SW2)
}

/// MVS1's agent: Hello, then a SRVSTAT listening on DVIPA:60, then heartbeats. Dropping the
/// returned sender (and aborting the task) ends the stream.
async fn agent(
    addr: SocketAddr,
) -> (
    mpsc::Sender<pb::AgentMessage>,
    tokio::task::JoinHandle<()>,
    tonic::Streaming<pb::ControllerMessage>,
) {
    let (tx, stream) = plaintext_agent(addr).await;
    let hbtx = tx.clone();
    let hb = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if hbtx.send(common::heartbeat()).await.is_err() {
                return;
            }
        }
    });
    (tx, hb, stream)
}

async fn active(admin: SocketAddr) -> String {
    vipadyn(admin)
        .await
        .into_iter()
        .find(|r| r.1 == "ACTIVE")
        .map(|r| r.0)
        .unwrap_or_default()
}

async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::wait_until(what, 15, 50, f).await
}

fn persisted(path: &Path) -> Vec<(Ipv4Addr, String, bool)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    OwnerState::parse("owners.toml", &text)
        .unwrap()
        .dvipas
        .into_iter()
        .map(|d| (d.addr, d.owner, d.admin_pinned))
        .collect()
}

fn advertised_on(adv: &RecordingAdvertiser, switch: &str) -> bool {
    adv.log
        .lock()
        .iter()
        .any(|c| c.advertise && c.dvipa == DVIPA && c.switch == switch)
}

fn syn(sport: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 9, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&[198, 51, 100, 7]);
    f.extend_from_slice(&DVIPA.octets());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&60u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

/// Hot standby keeps the DVIPA's entries on both switches, so their tables cannot tell a
/// restarted controller which one routed it: the persisted owner does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_move_survives_a_controller_restart_in_hot_standby() {
    let (s1, a1) = switch().await;
    let (s2, a2) = switch().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), a1, a2, "hot_standby = true");
    let state = dir.path().join("state").join("owners.toml");
    let adv = RecordingAdvertiser::default();
    let ctl = start(&cfg, adv.clone()).await;
    assert_eq!(ctl.owner_state_path(), Some(state.as_path()));
    let admin = ctl.admin_addr();
    let ag = agent(ctl.agent_addr()).await;
    eventually("both switches up and programmed, SW1 routes", || async {
        let r = vipadyn(admin).await;
        r.len() == 2
            && r.iter().all(|x| x.2 == "UP")
            && active(admin).await == "SW1"
            && s1.pipeline().tables().dvipa.len() == 1
            && s2.pipeline().tables().dvipa.len() == 1
    })
    .await;
    eventually("the configured owner persisted", || async {
        persisted(&state) == vec![(DVIPA, "SW1".to_string(), false)]
    })
    .await;

    let c = Common::plaintext(format!("http://{admin}"));
    let mv = OpCmd::Move {
        dvipa: DVIPA,
        to: "SW2".into(),
    };
    let r = cli::run(&c, &mv).await.unwrap();
    assert!(
        matches!(r, Reply::Message(ref m) if m.contains("SW2")),
        "{r:?}"
    );
    // On disk before the reply.
    assert_eq!(persisted(&state), vec![(DVIPA, "SW2".to_string(), true)]);
    eventually("advertised from SW2", || async {
        advertised_on(&adv, "SW2")
    })
    .await;
    ag.1.abort();
    drop(ag);
    ctl.shutdown().await;

    // The restarted controller keeps the move and never advertises SW1.
    let adv2 = RecordingAdvertiser::default();
    let ctl = start(&cfg, adv2.clone()).await;
    let admin = ctl.admin_addr();
    let ag = agent(ctl.agent_addr()).await;
    eventually(
        "restarted: both switches up, advertised from SW2",
        || async {
            let r = vipadyn(admin).await;
            r.len() == 2 && r.iter().all(|x| x.2 == "UP") && advertised_on(&adv2, "SW2")
        },
    )
    .await;
    // Past the start-up hold (lease 1 s + liveness 0.3 s) and its fall-back check.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(active(admin).await, "SW2");
    assert!(!advertised_on(&adv2, "SW1"), "{:?}", adv2.log.lock());
    assert_eq!(persisted(&state), vec![(DVIPA, "SW2".to_string(), true)]);
    let (v, _) = s2.inject(1, &syn(42001));
    assert_eq!(v, Verdict::Forward(PORT_MVS1));
    ag.1.abort();
    drop(ag);
    ctl.shutdown().await;
}

/// A persisted owner that does not answer at start-up, or is not configured for the DVIPA,
/// is not restored: the DVIPA starts on its configured owner, and that is persisted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_owner_that_is_down_or_unknown_falls_back_to_the_configured_owner() {
    let (_s1, a1) = switch().await;
    // SW2's address: nothing listens there.
    let a2 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), a1, a2, "state_dir = \"var\"");
    let state = dir.path().join("var").join("owners.toml");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    for owner in ["SW2", "SW9"] {
        std::fs::write(
            &state,
            format!("[[dvipa]]\naddr = \"{DVIPA}\"\nowner = \"{owner}\"\nadmin_pinned = true\n"),
        )
        .unwrap();
        let adv = RecordingAdvertiser::default();
        let ctl = start(&cfg, adv.clone()).await;
        let admin = ctl.admin_addr();
        let ag = agent(ctl.agent_addr()).await;
        eventually(
            &format!("persisted {owner}: SW1 routes and advertises"),
            || async { active(admin).await == "SW1" && advertised_on(&adv, "SW1") },
        )
        .await;
        eventually("the fall-back persisted", || async {
            persisted(&state) == vec![(DVIPA, "SW1".to_string(), false)]
        })
        .await;
        assert!(!advertised_on(&adv, "SW2"));
        ag.1.abort();
        drop(ag);
        ctl.shutdown().await;
    }
}

/// A persisted owner that accepts TCP (so it is restored) but never becomes a usable
/// P4Runtime switch: after the start-up hold the DVIPA goes to its configured owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_owner_that_never_comes_up_falls_back_after_the_start_up_hold() {
    let (_s1, a1) = switch().await;
    // SW2's address accepts TCP and then says nothing (no HTTP/2, no P4Runtime).
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a2 = mute.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = mute.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), a1, a2, "");
    let state = dir.path().join("state").join("owners.toml");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(
        &state,
        format!("[[dvipa]]\naddr = \"{DVIPA}\"\nowner = \"SW2\"\nadmin_pinned = true\n"),
    )
    .unwrap();
    let adv = RecordingAdvertiser::default();
    let t0 = Instant::now();
    let ctl = start(&cfg, adv.clone()).await;
    let admin = ctl.admin_addr();
    let ag = agent(ctl.agent_addr()).await;
    eventually("SW1 routes and advertises", || async {
        active(admin).await == "SW1" && advertised_on(&adv, "SW1")
    })
    .await;
    // Restored first: the fall-back waits for the start-up hold (lease 1 s + liveness 0.3 s).
    assert!(
        t0.elapsed() >= Duration::from_millis(1300),
        "{:?}",
        t0.elapsed()
    );
    eventually("the fall-back persisted", || async {
        persisted(&state) == vec![(DVIPA, "SW1".to_string(), false)]
    })
    .await;
    ag.1.abort();
    drop(ag);
    ctl.shutdown().await;
}

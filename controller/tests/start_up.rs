//! A controller started while the primary switch of a DVIPA is dead: after the start-up hold
//! (`lease_ms` + `liveness_ms`) the ranked backup is programmed and advertises the DVIPA;
//! when the primary is started later it takes the DVIPA back, connections included.
//! Controller + embedded switches in process (P4Runtime on loopback) + a plaintext agent.

use dvipa::advertise::RecordingAdvertiser;
use dvipa_proto::v1 as pb;
use dvipa_switch::Verdict;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod common;

use common::{
    DVIPA, PROFILE as PROFILE_SW1, plaintext_agent, start_insecure as start, switch_at, vipadyn,
};

const PORT_MVS1: u16 = 2;
/// lease_ms + liveness_ms of [`config`].
const HOLD: Duration = Duration::from_millis(1000 + 300);

const PROFILE_SW2: &str = "\
VIPADYNAMIC
  VIPABACKUP 50 203.0.113.10
  VIPADISTRIBUTE 203.0.113.10 PORT 60 DESTIP 10.0.0.1
ENDVIPADYNAMIC
";

/// SW1 (primary) and SW2 (backup) at `a1`/`a2`, one stack MVS1, no persisted owners.
fn config(dir: &Path, a1: SocketAddr, a2: SocketAddr) -> PathBuf {
    common::two_switch_config(dir, a1, a2, "state_dir = \"\"", PROFILE_SW1, PROFILE_SW2)
}

/// MVS1's agent: Hello, a SRVSTAT listening on DVIPA:60, then heartbeats.
async fn agent(addr: SocketAddr) -> (mpsc::Sender<pb::AgentMessage>, tokio::task::JoinHandle<()>) {
    let (tx, mut stream) = plaintext_agent(addr).await;
    let hbtx = tx.clone();
    let hb = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(150)) => {}
                m = stream.message() => {
                    if !matches!(m, Ok(Some(_))) {
                        return;
                    }
                    continue;
                }
            }
            if hbtx.send(common::heartbeat()).await.is_err() {
                return;
            }
        }
    });
    (tx, hb)
}

async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::wait_until(what, 15, 10, f).await
}

/// Index of the first advertise (`true`) or withdraw (`false`) of the DVIPA on `switch`.
fn adv_index(adv: &RecordingAdvertiser, switch: &str, advertise: bool) -> Option<usize> {
    adv.log
        .lock()
        .iter()
        .position(|c| c.advertise == advertise && c.dvipa == DVIPA && c.switch == switch)
}

fn frame(sport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 9, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&[198, 51, 100, 7]);
    f.extend_from_slice(&DVIPA.octets());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&60u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_dead_at_start_up_loses_its_dvipa_to_the_backup_and_takes_it_back() {
    // SW1's address: nothing listens there until SW1 is started below.
    let a1 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (s2, a2) = switch_at("127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), a1, a2);
    let adv = RecordingAdvertiser::default();
    let t0 = Instant::now();
    let ctl = start(&cfg, adv.clone()).await;
    let admin = ctl.admin_addr();
    let ag = agent(ctl.agent_addr()).await;

    // Within the hold: SW2 is up, SW1 not known yet, nothing advertised.
    eventually("SW2 up", || async {
        vipadyn(admin)
            .await
            .iter()
            .any(|r| r.0 == "SW2" && r.2 == "UP")
    })
    .await;
    assert!(adv.log.lock().is_empty(), "{:?}", adv.log.lock());

    eventually("the DVIPA advertised by SW2", || async {
        adv_index(&adv, "SW2", true).is_some()
    })
    .await;
    let takeover = t0.elapsed();
    eprintln!("primary dead at start-up: advertised by the backup after {takeover:?}");
    assert!(takeover >= HOLD, "before the end of the hold: {takeover:?}");
    assert!(
        takeover < HOLD + Duration::from_secs(2),
        "hold {HOLD:?} + detection: {takeover:?}"
    );
    let rows = vipadyn(admin).await;
    assert!(
        rows.contains(&("SW1".into(), "BACKUP".into(), "DOWN".into()))
            && rows.contains(&("SW2".into(), "ACTIVE".into(), "UP".into())),
        "{rows:?}"
    );
    assert!(adv_index(&adv, "SW1", true).is_none());
    // SW2 is programmed: a new connection is forwarded to MVS1 and pinned once its handshake
    // ACK follows the SYN.
    let (v, _) = s2.inject(1, &frame(42001, 0x02));
    assert_eq!(v, Verdict::Forward(PORT_MVS1));
    let (v, _) = s2.inject(1, &frame(42001, 0x10));
    assert_eq!(v, Verdict::Forward(PORT_MVS1));
    eventually("the connection pinned on SW2", || async {
        s2.pipeline()
            .tables()
            .crt
            .iter()
            .any(|(k, _)| k.sport == 42001)
    })
    .await;

    // SW1 comes up (empty): takeback, the connection programmed on SW1 before the
    // advertisement moves, then SW2 withdrawn and cleaned.
    let t1 = Instant::now();
    let (s1, _) = switch_at(a1).await;
    eventually("the DVIPA advertised by SW1", || async {
        adv_index(&adv, "SW1", true).is_some()
    })
    .await;
    let takeback = t1.elapsed();
    eprintln!("primary started: advertised by the primary after {takeback:?}");
    assert!(
        takeback < Duration::from_secs(3),
        "takeback after {takeback:?}"
    );
    assert!(
        s1.pipeline()
            .tables()
            .crt
            .iter()
            .any(|(k, _)| k.sport == 42001)
    );
    let (v, _) = s1.inject(1, &frame(42001, 0x10));
    assert_eq!(v, Verdict::Forward(PORT_MVS1));
    eventually("SW2 withdrawn after SW1 advertised", || async {
        adv_index(&adv, "SW2", false).is_some()
    })
    .await;
    assert!(adv_index(&adv, "SW1", true) < adv_index(&adv, "SW2", false));
    eventually("SW2's entries of the DVIPA removed", || async {
        let t = s2.pipeline().tables();
        t.dvipa.is_empty() && t.crt.is_empty()
    })
    .await;
    let rows = vipadyn(admin).await;
    assert!(
        rows.contains(&("SW1".into(), "ACTIVE".into(), "UP".into())),
        "{rows:?}"
    );
    ag.1.abort();
    drop(ag);
    ctl.shutdown().await;
}

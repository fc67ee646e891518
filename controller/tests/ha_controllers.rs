//! Three controller replicas with `[ha]` on a real 3-member etcd, two embedded switches
//! (P4Runtime on loopback, each in its own thread so it can be killed), one agent stream per
//! replica (issue 17, scenarios 1 and 5 in process):
//!
//! - one leader; only it is primary on the switches, with the election id `(term << 64) | 10`;
//!   the followers hold backup sessions (term 0) and read through them (`dvipa table dump`),
//!   never sending a Write; followers refuse `dvipa move` naming the leader, and answer
//!   `counters` with their role;
//! - the leader is killed (its tasks end at once, no resignation): a new leader within
//!   `lease_ms` + 1 s, writing to the switches with a higher election id; the old leader's id
//!   is refused by the switch (fencing); a pinned connection keeps its CRT entry and is still
//!   forwarded; a new connection after the change is pinned;
//! - an operator move on the new leader, then that leader killed: the move holds on the third;
//! - the routing switch is killed: the third replica takes over on the other switch.
//!
//! The figures (election, first write with the new id) are printed.

use dvipa::advertise::RecordingAdvertiser;
use dvipa::cli::{self, Common, OpCmd, Reply, TableCmd};
use dvipa::controller::Controller;
use dvipa::ha::{HaState, election_id};
use dvipa_switch::server::SwitchServer;
use dvipa_switch::{Pipeline, Verdict};
use p4rt::{ClientConfig, Mastership, Session};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
mod etcd;

use common::{DVIPA, PROFILE, plaintext_agent, start_insecure, vipadyn};

const LEASE_MS: u64 = 2000;
const PORT_MVS1: u16 = 2;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

const PROFILE_SW2: &str = "\
VIPADYNAMIC
  VIPABACKUP 50 203.0.113.10
ENDVIPADYNAMIC
";

/// An embedded switch on its own runtime thread; `stop` kills it (connections drop).
struct ThreadSwitch {
    sw: SwitchServer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadSwitch {
    fn start() -> (ThreadSwitch, SocketAddr) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let sw = SwitchServer::new(0, Arc::new(Pipeline::new()));
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send((sw.clone(), l.local_addr().unwrap())).unwrap();
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(sw.service())
                        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
                );
                let _ = stop_rx.await;
            });
            rt.shutdown_background();
        });
        let (sw, addr) = rx.recv().unwrap();
        let ts = ThreadSwitch {
            sw,
            stop: Some(stop),
            thread: Some(thread),
        };
        (ts, addr)
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
            self.thread.take().unwrap().join().unwrap();
        }
    }
}

impl Drop for ThreadSwitch {
    fn drop(&mut self) {
        self.stop();
    }
}

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

struct Replica {
    name: String,
    ctl: Option<Controller>,
    admin: SocketAddr,
    adv: RecordingAdvertiser,
    hb: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn state(&self) -> HaState {
        self.ctl.as_ref().unwrap().shared().ha().unwrap().now()
    }
    fn alive(&self) -> bool {
        self.ctl.is_some()
    }
}

async fn start_replica(name: &str, a1: SocketAddr, a2: SocketAddr, etcd: &etcd::Etcd) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::two_switch_config(
        dir.path(),
        a1,
        a2,
        "state_dir = \"\"\nhot_standby = true",
        PROFILE,
        PROFILE_SW2,
    );
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[ha]\netcd = {}\nelection = \"/dvipa/it/leader\"\nlease_ms = {LEASE_MS}\nreplica = \"{name}\"\n",
        etcd.toml_list()
    ));
    std::fs::write(&cfg, text).unwrap();
    let adv = RecordingAdvertiser::default();
    let ctl = start_insecure(&cfg, adv.clone()).await;
    // The stack's agent attaches to every replica (docs/ha.md).
    let (tx, _stream) = plaintext_agent(ctl.agent_addr()).await;
    let hb = tokio::spawn(async move {
        let _keep = _stream;
        loop {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if tx.send(common::heartbeat()).await.is_err() {
                return;
            }
        }
    });
    Replica {
        name: name.into(),
        admin: ctl.admin_addr(),
        ctl: Some(ctl),
        adv,
        hb,
        _dir: dir,
    }
}

/// The one live leader (fails on two).
fn leader(rs: &[Replica]) -> Option<usize> {
    let l: Vec<usize> = (0..rs.len())
        .filter(|&i| rs[i].alive() && rs[i].state().is_leader())
        .collect();
    assert!(l.len() <= 1, "two leaders: {l:?}");
    l.first().copied()
}

async fn wait_leader(rs: &[Replica], within: Duration) -> usize {
    let t0 = Instant::now();
    loop {
        if let Some(l) = leader(rs) {
            return l;
        }
        assert!(t0.elapsed() < within, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::wait_until(what, 15, 20, f).await
}

/// A backup session (election id 1) that reports the switch's primary election id.
async fn observer(addr: SocketAddr) -> (Session, tokio::sync::watch::Receiver<Mastership>) {
    let mut cc = ClientConfig::new(addr.to_string(), 0);
    cc.election_id = 1;
    let (s, _q) = Session::connect(cc).await.unwrap();
    let m = s.watch_mastership();
    (s, m)
}

fn primary_id(m: &tokio::sync::watch::Receiver<Mastership>) -> Option<u128> {
    match *m.borrow() {
        Mastership::Backup {
            primary_election_id,
        } => primary_election_id,
        _ => None,
    }
}

async fn active(admin: SocketAddr) -> String {
    vipadyn(admin)
        .await
        .into_iter()
        .find(|r| r.1 == "ACTIVE")
        .map(|r| r.0)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_twice_then_the_routing_switch_nothing_is_lost() {
    let etcd = etcd::Etcd::start();
    let (mut s1, a1) = ThreadSwitch::start();
    let (mut s2, a2) = ThreadSwitch::start();
    let mut rs = Vec::new();
    for n in ["ctl-a", "ctl-b", "ctl-c"] {
        rs.push(start_replica(n, a1, a2, &etcd).await);
    }
    let l = wait_leader(&rs, Duration::from_secs(15)).await;
    let term = rs[l].state().term;
    let (_o1, m1) = observer(a1).await;
    eventually(
        "SW1 primary: the leader's term-carrying election id",
        || async { primary_id(&m1) == Some(election_id(term, 10)) },
    )
    .await;
    let admin = rs[l].admin;
    eventually(
        "both switches up on the leader, SW1 routes and is programmed",
        || async {
            let r = vipadyn(admin).await;
            r.len() == 2
                && r.iter().all(|x| x.2 == "UP")
                && active(admin).await == "SW1"
                && s1.sw.pipeline().tables().dvipa.len() == 1
        },
    )
    .await;

    // Followers hold backup sessions: the switch lists both (term 0, not the observer's 1).
    eventually(
        "SW1 and SW2 hold both followers' backup sessions",
        || async {
            [&s1.sw, &s2.sw].iter().all(|sw| {
                let ids = sw.controllers();
                let backups = ids
                    .iter()
                    .filter(|i| i.is_some_and(|i| i >> 64 == 0 && i > 1))
                    .count();
                backups == 2 && ids.contains(&Some(election_id(term, 10)))
            })
        },
    )
    .await;

    // Followers: read-only answers with role, mutating commands refused naming the leader.
    let f = (l + 1) % 3;
    let c = Common::plaintext(format!("http://{}", rs[f].admin));
    // The follower's own view: it holds both backup sessions (the switches list an id as soon
    // as it arbitrates, a moment before the follower's driver has its session).
    eventually(
        "the follower shows BACKUP-SESSION for both switches",
        || async {
            let r = vipadyn(rs[f].admin).await;
            r.len() == 2 && r.iter().all(|x| x.2 == "BACKUP-SESSION")
        },
    )
    .await;
    // A follower reads the switch through its backup session: the entry the leader wrote.
    let dump = OpCmd::Table {
        cmd: TableCmd::Dump {
            table: "dvipa".into(),
            switch: "SW1".into(),
        },
    };
    let Reply::Table(t) = cli::run(&c, &dump).await.unwrap() else {
        panic!("table dump is a table")
    };
    assert_eq!(t.rows.len(), 1, "{t:?}");
    let r = vipadyn(rs[f].admin).await;
    assert!(
        r.len() == 2 && r.iter().all(|x| x.2 == "BACKUP-SESSION"),
        "{r:?}"
    );
    let mv = |to: &str| OpCmd::Move {
        dvipa: DVIPA,
        to: to.into(),
    };
    let err = cli::run(&c, &mv("SW2")).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("leader {}", rs[l].name)) && err.contains("follower"),
        "{err}"
    );
    let Reply::Table(t) = cli::run(&c, &OpCmd::Counters).await.unwrap() else {
        panic!("counters is a table")
    };
    assert!(
        t.rows
            .iter()
            .any(|r| r.cells == ["ha", "role", "follower"].map(String::from)),
        "{t:?}"
    );
    assert!(
        t.title.contains(&format!("leader {}", rs[l].name)),
        "{}",
        t.title
    );

    // A connection pinned by the first leader.
    assert_eq!(
        s1.sw.inject(1, &tcp_frame(41001, SYN)).0,
        Verdict::Forward(PORT_MVS1)
    );
    assert_eq!(
        s1.sw.inject(1, &tcp_frame(41001, ACK)).0,
        Verdict::Forward(PORT_MVS1)
    );
    eventually("41001 pinned on SW1", || async { pinned(&s1.sw, 41001) }).await;

    // --- scenario 1: SIGKILL the leader ---
    let old_id = election_id(term, 10);
    let dead = rs[l].ctl.take().unwrap();
    rs[l].hb.abort();
    let t0 = Instant::now();
    dead.kill();
    let l2 = wait_leader(&rs, Duration::from_millis(LEASE_MS + 5000)).await;
    let elected = t0.elapsed();
    let term2 = rs[l2].state().term;
    eventually("SW1 primary is the new leader", || async {
        primary_id(&m1) == Some(election_id(term2, 10))
    })
    .await;
    let writing = t0.elapsed();
    println!(
        "leader {} killed: {} elected after {elected:?} (term {term} -> {term2}), primary on SW1 \
         with the new election id after {writing:?}",
        rs[l].name, rs[l2].name
    );
    assert!(
        elected <= Duration::from_millis(LEASE_MS + 1000),
        "{elected:?}"
    );
    assert!(term2 > term);
    // Fencing: the old leader's election id cannot write any more.
    let mut cc = ClientConfig::new(a1.to_string(), 0);
    cc.election_id = old_id;
    let (stale, _q) = Session::connect(cc).await.unwrap();
    let e = stale
        .write(vec![p4rt::proto::p4::v1::Update::default()])
        .await
        .expect_err("a Write with the deposed leader's election id");
    assert!(
        e.to_string().contains("PermissionDenied") || e.to_string().contains("primary"),
        "{e}"
    );
    drop(stale);
    // The pinned connection is untouched and still forwarded; a new one is pinned.
    assert!(pinned(&s1.sw, 41001));
    assert_eq!(
        s1.sw.inject(1, &tcp_frame(41001, ACK)).0,
        Verdict::Forward(PORT_MVS1)
    );
    let admin2 = rs[l2].admin;
    eventually("the new leader has both switches up", || async {
        let r = vipadyn(admin2).await;
        r.len() == 2 && r.iter().all(|x| x.2 == "UP") && active(admin2).await == "SW1"
    })
    .await;
    assert_eq!(
        s1.sw.inject(1, &tcp_frame(41002, SYN)).0,
        Verdict::Forward(PORT_MVS1)
    );
    assert_eq!(
        s1.sw.inject(1, &tcp_frame(41002, ACK)).0,
        Verdict::Forward(PORT_MVS1)
    );
    eventually("NEWCONN after the change pinned", || async {
        pinned(&s1.sw, 41002)
    })
    .await;
    assert!(pinned(&s1.sw, 41001), "the old pin survived the reconcile");

    // --- scenario 5: a move on the leader, then the leader killed: the move holds ---
    let c2 = Common::plaintext(format!("http://{admin2}"));
    let r = cli::run(&c2, &mv("SW2")).await.unwrap();
    assert!(
        matches!(r, Reply::Message(ref m) if m.contains("SW2")),
        "{r:?}"
    );
    eventually("SW2 routes", || async { active(admin2).await == "SW2" }).await;
    let dead = rs[l2].ctl.take().unwrap();
    rs[l2].hb.abort();
    let t0 = Instant::now();
    dead.kill();
    let l3 = wait_leader(&rs, Duration::from_millis(LEASE_MS + 5000)).await;
    println!(
        "leader {} killed: {} elected after {:?}",
        rs[l2].name,
        rs[l3].name,
        t0.elapsed()
    );
    let admin3 = rs[l3].admin;
    eventually(
        "the third leader has both switches up, SW2 still routes",
        || async {
            let r = vipadyn(admin3).await;
            r.len() == 2 && r.iter().all(|x| x.2 == "UP") && active(admin3).await == "SW2"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(active(admin3).await, "SW2", "the move held");
    let adv3 = rs[l3].adv.log.lock().clone();
    assert!(
        adv3.iter().all(|c| !c.advertise || c.switch == "SW2"),
        "the third leader advertised elsewhere: {adv3:?}"
    );
    assert!(
        pinned(&s2.sw, 41001) && pinned(&s2.sw, 41002),
        "hot standby mirrors the pins"
    );

    // --- then the routing switch dies: the new leader takes over on SW1 ---
    s2.stop();
    eventually("takeover by SW1 on the third leader", || async {
        active(admin3).await == "SW1"
    })
    .await;
    assert_eq!(
        s1.sw.inject(1, &tcp_frame(41001, ACK)).0,
        Verdict::Forward(PORT_MVS1)
    );
    assert_eq!(
        s1.sw.inject(1, &tcp_frame(41003, SYN)).0,
        Verdict::Forward(PORT_MVS1)
    );
    assert!(pinned(&s1.sw, 41001) && pinned(&s1.sw, 41002));
    // No follower ever sent a Write (every writer's id carries a leader's term).
    for sw in [&s1.sw, &s2.sw] {
        let w = sw.stats().writer_election_ids.lock().clone();
        assert!(!w.is_empty() && w.iter().all(|i| i >> 64 >= 1), "{w:?}");
    }
    for r in &mut rs {
        r.hb.abort();
        if let Some(c) = r.ctl.take() {
            c.shutdown().await;
        }
    }
    s1.stop();
}

/// The failover figure over 10 kills: SIGKILL-like end of the leader → the next leader is
/// primary on the switch with its own election id (it can write). Each killed replica is
/// started again, so three always run. Prints every kill and min / median / max.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_time_over_10_kills() {
    let etcd = etcd::Etcd::start();
    let (mut s1, a1) = ThreadSwitch::start();
    let (mut s2, a2) = ThreadSwitch::start();
    let mut rs = Vec::new();
    for n in ["ctl-a", "ctl-b", "ctl-c"] {
        rs.push(start_replica(n, a1, a2, &etcd).await);
    }
    let (_o1, m1) = observer(a1).await;
    let mut took = Vec::new();
    let mut promote = Vec::new();
    for kill in 0..10 {
        let l = wait_leader(&rs, Duration::from_secs(15)).await;
        let term = rs[l].state().term;
        eventually("the leader is primary on SW1", || async {
            primary_id(&m1) == Some(election_id(term, 10))
        })
        .await;
        let name = rs[l].name.clone();
        let dead = rs[l].ctl.take().unwrap();
        rs[l].hb.abort();
        let t0 = Instant::now();
        dead.kill();
        let mut writing = None;
        let mut elected = None;
        while t0.elapsed() < Duration::from_secs(10) {
            if elected.is_none() && leader(&rs).is_some() {
                elected = Some(t0.elapsed());
            }
            if let Some(id) = primary_id(&m1)
                && id >> 64 > u128::from(term)
            {
                writing = Some(t0.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let d = writing.expect("no new primary on SW1 within 10 s");
        let e = elected.unwrap_or(d);
        println!(
            "kill {kill}: {name} (term {term}) -> new leader elected after {e:?}, primary on SW1 \
             after {d:?} (+{:?})",
            d.saturating_sub(e)
        );
        promote.push(d.saturating_sub(e));
        assert!(d <= Duration::from_millis(LEASE_MS + 1000), "{d:?}");
        took.push(d);
        rs[l] = start_replica(&name, a1, a2, &etcd).await;
    }
    took.sort();
    promote.sort();
    println!(
        "elected -> primary (the new leader's backup session dropped, primary session up), \
         10 kills: min {:?}, median {:?}, max {:?}",
        promote[0], promote[5], promote[9]
    );
    println!(
        "leader failover (kill -> new leader primary on the switch), 10 kills, lease_ms {LEASE_MS}: \
         min {:?}, median {:?}, max {:?}",
        took[0], took[5], took[9]
    );
    for r in &mut rs {
        r.hb.abort();
        if let Some(c) = r.ctl.take() {
            c.shutdown().await;
        }
    }
    s1.stop();
    s2.stop();
}

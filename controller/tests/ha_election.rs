//! The HA election on a real 3-member etcd (issue 17): one leader; a killed leader is replaced
//! within `lease_ms` + 1 s by one with a higher term; a leader cut from etcd steps down on its
//! own clock before anyone else is elected; all of etcd stopped for 10 s: the leader steps
//! down, and a leader is back within seconds of etcd's return. Figures are printed.

use dvipa::ha::{HaState, Role, election};
use dvipa_core::config::HaCfg;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

mod etcd;

const LEASE_MS: u64 = 2000;

struct Replica {
    name: String,
    rx: watch::Receiver<HaState>,
    task: tokio::task::JoinHandle<()>,
    _shutdown: watch::Sender<bool>,
}

fn cfg(name: &str, endpoints: Vec<String>, election: &str) -> HaCfg {
    HaCfg {
        etcd: endpoints,
        election: election.into(),
        lease_ms: LEASE_MS,
        replica: name.into(),
        advertise_admin: None,
        ..Default::default()
    }
}

fn spawn(name: &str, endpoints: Vec<String>, election: &str) -> Replica {
    let (tx, rx) = watch::channel(HaState::new(name));
    let (sd, sd_rx) = watch::channel(false);
    let task = tokio::spawn(election::run(
        cfg(name, endpoints, election),
        Some(format!("{name}-admin")),
        tx,
        sd_rx,
    ));
    Replica {
        name: name.into(),
        rx,
        task,
        _shutdown: sd,
    }
}

fn leaders(rs: &[Replica]) -> Vec<usize> {
    (0..rs.len())
        .filter(|&i| rs[i].rx.borrow().role == Role::Leader && !rs[i].task.is_finished())
        .collect()
}

async fn one_leader(rs: &[Replica], within: Duration) -> usize {
    let t0 = Instant::now();
    loop {
        let l = leaders(rs);
        assert!(l.len() <= 1, "two leaders at once: {l:?}");
        if l.len() == 1 {
            return l[0];
        }
        assert!(t0.elapsed() < within, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_lease_plus_1s_by_a_higher_term() {
    let etcd = etcd::Etcd::start();
    let rs: Vec<Replica> = ["ctl-a", "ctl-b", "ctl-c"]
        .iter()
        .map(|n| spawn(n, etcd.endpoints(), "/dvipa/t1/leader"))
        .collect();
    let mut alive: Vec<Replica> = rs;
    let mut l = one_leader(&alive, Duration::from_secs(10)).await;
    // The followers learn who leads (and its admin address).
    tokio::time::sleep(Duration::from_millis(LEASE_MS / 2)).await;
    let leader_name = alive[l].name.clone();
    for (i, r) in alive.iter().enumerate() {
        if i != l {
            let s = r.rx.borrow().clone();
            assert_eq!(
                s.leader.as_deref(),
                Some(leader_name.as_str()),
                "{}",
                s.describe()
            );
            assert_eq!(s.leader_admin, Some(format!("{leader_name}-admin")));
        }
    }
    for round in 0..2 {
        let term = alive[l].rx.borrow().term;
        // SIGKILL-like: the task and its keep-alive vanish; the lease is not revoked.
        let dead = alive.remove(l);
        dead.task.abort();
        let t0 = Instant::now();
        l = one_leader(&alive, Duration::from_millis(LEASE_MS + 5000)).await;
        let took = t0.elapsed();
        let new_term = alive[l].rx.borrow().term;
        println!(
            "round {round}: {} killed (term {term}); {} leader after {took:?} (term {new_term})",
            dead.name, alive[l].name
        );
        assert!(new_term > term, "term {new_term} after {term}");
        assert!(
            took <= Duration::from_millis(LEASE_MS + 1000),
            "new leader after {took:?}, more than lease_ms + 1 s"
        );
    }
}

/// A TCP relay to one etcd member that can be cut (a black hole: connections stay open,
/// nothing passes), as a partition between one replica and etcd.
struct Relay {
    port: u16,
    cut: watch::Sender<bool>,
}

async fn relay(to: u16) -> Relay {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (cut, cut_rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let Ok((mut a, _)) = l.accept().await else {
                return;
            };
            let mut cut = cut_rx.clone();
            tokio::spawn(async move {
                if *cut.borrow() {
                    // Cut: accepted, never answered.
                    let _ = cut.changed().await;
                    return;
                }
                let Ok(mut b) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    return;
                };
                let cut_now = async {
                    while !*cut.borrow_and_update() {
                        if cut.changed().await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                    _ = cut_now => {
                        // Black hole: hold both ends silently until the test ends.
                        std::future::pending::<()>().await;
                    }
                }
                let _ = a.flush().await;
            });
        }
    });
    Relay { port, cut }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_etcd_steps_down_before_another_is_elected() {
    let etcd = etcd::Etcd::start();
    let mut relays = Vec::new();
    let mut rs = Vec::new();
    for (i, n) in ["ctl-a", "ctl-b", "ctl-c"].iter().enumerate() {
        let r = relay(etcd.members[i].client).await;
        rs.push(spawn(
            n,
            vec![format!("http://127.0.0.1:{}", r.port)],
            "/dvipa/t2/leader",
        ));
        relays.push(r);
    }
    let l = one_leader(&rs, Duration::from_secs(10)).await;
    let term = rs[l].rx.borrow().term;
    let t0 = Instant::now();
    relays[l].cut.send_replace(true);
    // Watch both: the cut leader's step-down and the next election.
    let (mut stepped, mut elected) = (None, None);
    while elected.is_none() {
        let now = t0.elapsed();
        if stepped.is_none() && rs[l].rx.borrow().role == Role::Follower {
            stepped = Some(now);
        }
        for (i, r) in rs.iter().enumerate() {
            let s = r.rx.borrow();
            if i != l && s.role == Role::Leader {
                elected = Some((now, r.name.clone(), s.term));
            }
        }
        assert!(
            !(elected.is_some() && rs[l].rx.borrow().role == Role::Leader),
            "split brain: the cut leader still leads while another was elected"
        );
        assert!(now < Duration::from_secs(15), "no new leader within 15 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stepped = stepped.expect("the cut leader never stepped down");
    let (at, who, new_term) = elected.unwrap();
    let reasons = rs[l].rx.borrow().step_downs.clone();
    println!(
        "cut at 0: {} stepped down after {stepped:?} ({reasons:?}); {who} elected after {at:?} \
         (term {new_term}); margin {:?}",
        rs[l].name,
        at - stepped
    );
    assert!(
        stepped <= Duration::from_millis(LEASE_MS),
        "stepped down after {stepped:?}"
    );
    assert_eq!(reasons.get("lease_not_renewed"), Some(&1), "{reasons:?}");
    assert!(new_term > term);
    assert!(at > stepped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_for_10s_the_leader_steps_down_and_a_leader_is_back_soon_after() {
    let etcd = etcd::Etcd::start();
    let rs: Vec<Replica> = ["ctl-a", "ctl-b", "ctl-c"]
        .iter()
        .map(|n| spawn(n, etcd.endpoints(), "/dvipa/t4/leader"))
        .collect();
    let l = one_leader(&rs, Duration::from_secs(10)).await;
    let t0 = Instant::now();
    etcd.freeze();
    while rs[l].rx.borrow().role == Role::Leader {
        assert!(
            t0.elapsed() < Duration::from_millis(LEASE_MS),
            "still leading after the lease"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stepped = t0.elapsed();
    while t0.elapsed() < Duration::from_secs(10) {
        assert!(leaders(&rs).is_empty(), "a leader while etcd is down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    etcd.thaw();
    let t1 = Instant::now();
    let l2 = one_leader(&rs, Duration::from_secs(15)).await;
    let back = t1.elapsed();
    println!(
        "etcd stopped 10 s: {} stepped down after {stepped:?}; {} leader {back:?} after etcd's return",
        rs[l].name, rs[l2].name
    );
    assert!(back < Duration::from_secs(10), "leader back after {back:?}");
}

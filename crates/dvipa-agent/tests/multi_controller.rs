//! One agent attached to two controllers (`--controller A --controller B`, as with HA
//! replicas): both get the full state and every SRVSTAT/NEWCONN/TERMCONN; one controller's death
//! does not disturb the other's session (no reconnect, no re-report, reports keep flowing); the
//! dead one is re-attached with a full re-report when it returns. A differing VIPA list from one
//! controller is counted.
//!
//! Runs in its own network namespace (root and `ip` needed; otherwise skipped with a message):
//! the in-process agent puts the DVIPA on the namespace's `lo`, and real TCP sockets there are
//! what it reports.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvipa_agent::{Agent, AgentConfig};
use dvipa_proto::v1::server_stack_server::{ServerStack, ServerStackServer};
use dvipa_proto::v1::{
    Ack, AgentMessage, ControllerMessage, Report, Vipa, VipaList, Welcome, agent_message,
    controller_message,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const DVIPA: Ipv4Addr = Ipv4Addr::new(10, 250, 7, 10);
const PORT: u16 = 8080;
const STACK: &str = "s1";

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn vipa_list(version: u64, dvipas: &[Ipv4Addr]) -> VipaList {
    VipaList {
        version,
        vipas: dvipas
            .iter()
            .map(|d| Vipa {
                dvipa: u32::from(*d),
                prefix_len: 32,
                ports: vec![],
                candidates: vec![STACK.into()],
                all_stacks: false,
                owner: "sw1".into(),
                backups: vec![],
                distmethod: "roundrobin".into(),
            })
            .collect(),
    }
}

/// What one fake controller saw: per Attach session, the listeners and connections built from
/// its reports, as a controller's core would.
#[derive(Default)]
struct SessionView {
    listeners: BTreeSet<(u32, u32)>,
    /// (client addr, client port, dvipa port)
    conns: BTreeSet<(u32, u32, u32)>,
    newconns: u64,
    termconns: u64,
}

#[derive(Clone)]
struct FakeCtl {
    sessions: Arc<Mutex<Vec<SessionView>>>,
    heartbeats: Arc<AtomicU64>,
    /// `true` ends every stream (the controller died).
    dead: watch::Receiver<bool>,
    list: VipaList,
}

fn cmsg(m: controller_message::Msg) -> Result<ControllerMessage, Status> {
    Ok(ControllerMessage { msg: Some(m) })
}

fn apply(v: &mut SessionView, r: &Report) {
    for s in &r.srvstat {
        if s.listening {
            v.listeners.insert((s.dvipa, s.port));
        } else {
            v.listeners.remove(&(s.dvipa, s.port));
        }
    }
    for c in &r.termconn {
        v.termconns += 1;
        v.conns
            .remove(&(c.client_addr, c.client_port, c.dvipa_port));
    }
    for c in &r.newconn {
        v.newconns += 1;
        if !c.server_originated {
            v.conns.insert((c.client_addr, c.client_port, c.dvipa_port));
        }
    }
}

#[tonic::async_trait]
impl ServerStack for FakeCtl {
    type AttachStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn attach(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let idx = {
            let mut s = self.sessions.lock().unwrap();
            s.push(SessionView::default());
            s.len() - 1
        };
        let me = self.clone();
        let mut dead = self.dead.clone();
        tokio::spawn(async move {
            let _ = tx
                .send(cmsg(controller_message::Msg::Welcome(Welcome {
                    controller_id: "fake".into(),
                    heartbeat_interval_ms: 100,
                    lease_ms: 1000,
                })))
                .await;
            let _ = tx
                .send(cmsg(controller_message::Msg::VipaList(me.list.clone())))
                .await;
            loop {
                let m = tokio::select! {
                    _ = dead.wait_for(|d| *d) => return,
                    m = inbound.message() => m,
                };
                let Ok(Some(m)) = m else { return };
                match m.msg {
                    Some(agent_message::Msg::Report(r)) => {
                        apply(&mut me.sessions.lock().unwrap()[idx], &r);
                        let _ = tx
                            .send(cmsg(controller_message::Msg::Ack(Ack {
                                seq: m.seq,
                                errors: vec![],
                            })))
                            .await;
                    }
                    Some(agent_message::Msg::Heartbeat(_)) => {
                        me.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A fake controller on `port` (0 = any); `kill` ends its streams and its listener.
struct Ctl {
    port: u16,
    fake: FakeCtl,
    kill: watch::Sender<bool>,
}

impl Ctl {
    async fn start(port: u16, list: VipaList) -> Ctl {
        // A restart on the same port waits for the old server's graceful shutdown.
        let t0 = Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if t0.elapsed() > Duration::from_secs(10) => panic!("bind {port}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let port = listener.local_addr().unwrap().port();
        let (kill, dead) = watch::channel(false);
        let fake = FakeCtl {
            sessions: Arc::default(),
            heartbeats: Arc::default(),
            dead: dead.clone(),
            list,
        };
        let mut stop = dead;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ServerStackServer::new(fake.clone()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move {
                        let _ = stop.wait_for(|d| *d).await;
                    },
                ),
        );
        Ctl { port, fake, kill }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn n_sessions(&self) -> usize {
        self.fake.sessions.lock().unwrap().len()
    }

    fn last<T>(&self, f: impl FnOnce(&SessionView) -> T) -> T {
        f(self.fake.sessions.lock().unwrap().last().unwrap())
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t0.elapsed()
}

/// A client from 127.0.0.1 (not a DVIPA, so only the server side is reported).
fn connect() -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    s.connect(&SocketAddr::from((DVIPA, PORT)).into()).unwrap();
    s.into()
}

fn key(c: &TcpStream) -> (u32, u32, u32) {
    let SocketAddr::V4(l) = c.local_addr().unwrap() else {
        unreachable!()
    };
    (u32::from(*l.ip()), u32::from(l.port()), u32::from(PORT))
}

#[test]
fn two_controllers_both_get_reports_and_one_dying_leaves_the_other_alone() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("ip").arg("-V").output().is_err() {
        dvipa_testbed::skip::skip("needs root and `ip` (a network namespace)");
        return;
    }
    let ns = format!("dvag-{}-multi", std::process::id());
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    ip(&["netns", "add", &ns]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    let path = format!("/var/run/netns/{ns}");
    let r = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        use std::os::fd::AsRawFd;
        // SAFETY: a valid namespace fd; only this thread changes namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario())
    })
    .join();
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    r.expect("scenario");
}

async fn scenario() {
    let a = Ctl::start(0, vipa_list(1, &[DVIPA])).await;
    let b = Ctl::start(0, vipa_list(7, &[DVIPA])).await;
    let mut cfg = AgentConfig::new(STACK, Ipv4Addr::new(10, 0, 0, 1), &a.url());
    cfg.controllers.push(b.url());
    cfg.arp_sysctls = false;
    cfg.poll_interval = Duration::from_millis(50);
    cfg.backoff_initial = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(200);
    let agent = Agent::new(cfg).await.unwrap();
    let links = agent.link_stats();
    let stats = agent.stats();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(agent.run(async {
        let _ = stop_rx.await;
    }));

    // Both attach; the DVIPA goes on lo once; a listener and a connection reach both.
    eventually("both sessions", || {
        a.n_sessions() == 1 && b.n_sessions() == 1
    })
    .await;
    let listener = {
        let t0 = Instant::now();
        loop {
            match TcpListener::bind((DVIPA, PORT)) {
                Ok(l) => break l,
                Err(_) if t0.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("the agent did not put {DVIPA} on lo: {e}"),
            }
        }
    };
    let c1 = connect();
    let (_s1, _) = listener.accept().unwrap();
    let k1 = key(&c1);
    let lst = (u32::from(DVIPA), u32::from(PORT));
    for c in [&a, &b] {
        eventually("SRVSTAT and NEWCONN on both", || {
            c.last(|v| v.listeners.contains(&lst) && v.conns.contains(&k1))
        })
        .await;
    }

    // A dies. B's session carries on: a new connection and a closed one reach it on the same
    // session, and its heartbeats continue.
    let hb_b = b.fake.heartbeats.load(Ordering::Relaxed);
    let _ = a.kill.send(true);
    let killed = Instant::now();
    eventually("A's link down", || {
        !links[0].connected.load(Ordering::Relaxed)
    })
    .await;
    let c2 = connect();
    let (_s2, _) = listener.accept().unwrap();
    let k2 = key(&c2);
    drop(c1);
    drop(_s1);
    let seen = eventually("NEWCONN and TERMCONN on B after A's death", || {
        b.last(|v| v.conns.contains(&k2) && !v.conns.contains(&k1))
    })
    .await;
    eprintln!(
        "after A's death ({} ms ago): B got NEWCONN+TERMCONN in {} ms on its first session",
        killed.elapsed().as_millis(),
        seen.as_millis()
    );
    eventually("B's heartbeats continue", || {
        b.fake.heartbeats.load(Ordering::Relaxed) >= hb_b + 3
    })
    .await;
    assert_eq!(b.n_sessions(), 1, "B's session was not disturbed");
    assert!(links[1].connected.load(Ordering::Relaxed));
    assert_eq!(links[1].session_failures.load(Ordering::Relaxed), 0);
    // A is retried with backoff meanwhile (its listener is gone: connects fail).
    eventually("A retried", || {
        links[0].session_failures.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert_eq!(a.n_sessions(), 1);

    // A returns on the same port: a new session with a full re-report of the current state
    // (the new connection, not the closed one); B still on its first session.
    let a2 = Ctl::start(a.port, vipa_list(2, &[DVIPA])).await;
    let back = eventually("A re-attached with the current state", || {
        a2.n_sessions() == 1 && a2.last(|v| v.listeners.contains(&lst) && v.conns.contains(&k2))
    })
    .await;
    eprintln!(
        "A restarted: re-attached with a full re-report in {} ms",
        back.as_millis()
    );
    assert!(!a2.last(|v| v.conns.contains(&k1)));
    assert_eq!(b.n_sessions(), 1);
    assert_eq!(
        b.last(|v| (v.newconns, v.termconns)),
        (2, 1),
        "B saw each connection event exactly once"
    );

    // Replicas normally agree; a list from B that differs from A's is counted.
    assert_eq!(stats.vipa_list_conflicts.load(Ordering::Relaxed), 0);
    let b2 = b; // keep B's server alive; kill it and restart with another list
    let _ = b2.kill.send(true);
    let b3 = Ctl::start(
        b2.port,
        vipa_list(8, &[DVIPA, Ipv4Addr::new(10, 250, 7, 11)]),
    )
    .await;
    eventually("B re-attached", || b3.n_sessions() == 1).await;
    eventually("the differing list counted", || {
        stats.vipa_list_conflicts.load(Ordering::Relaxed) >= 1
    })
    .await;

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("agent stops")
        .unwrap()
        .unwrap();
}

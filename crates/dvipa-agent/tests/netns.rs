//! End-to-end tests of the `dvipa-agent` binary with real kernel sockets.
//!
//! Each test makes its own network namespace, starts an in-process fake controller (a tonic
//! `ServerStack` server behind dvipa-tls mutual TLS, listening on 127.0.0.1 *inside* the
//! namespace), and runs the agent binary with `ip netns exec`. Test sockets (listeners, clients)
//! are created inside the namespace from a thread that has `setns`-ed into it.
//!
//! Needs root and `ip`; otherwise every test prints why and passes as skipped.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvipa_proto::v1::server_stack_server::{ServerStack, ServerStackServer};
use dvipa_proto::v1::{
    Ack, AgentMessage, ControllerMessage, Hello, ItemError, Report, Vipa, VipaList, Welcome,
    agent_message, controller_message,
};
use dvipa_tls::testing::TestCa;
use dvipa_tls::{PemPaths, TlsStats, peer_names, require_peer_name, server_config, tls_incoming};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const DVIPA: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 10);
const STACK: &str = "s1";
const POLL_MS: u64 = 100;

// ---------------------------------------------------------------- environment

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespace tests skipped".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("`ip` (iproute2) not found: network namespace tests skipped".into()),
    }
}

macro_rules! require_netns {
    () => {
        if let Some(why) = skip_reason() {
            dvipa_testbed::skip::skip(why);
            return;
        }
    };
}

fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A network namespace that is deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("dvag-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// Runs `f` on a thread that has joined the namespace; sockets it creates belong to it.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread")
    }

    fn lo_addrs(&self) -> String {
        ip(&["-n", &self.name, "-4", "addr", "show", "dev", "lo"])
    }

    fn sysctl(&self, key: &str) -> String {
        self.run({
            let key = key.to_string();
            move || std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap()
        })
        .trim()
        .to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

// ---------------------------------------------------------------- fake controller

/// The controller's view of the stack, built from reports exactly as a controller would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct View {
    /// (dvipa, port, proto) -> draining
    listeners: BTreeMap<(u32, u32, u32), bool>,
    /// (client, client_port, dvipa, dvipa_port) -> server_originated
    conns: BTreeMap<(u32, u32, u32, u32), bool>,
}

impl View {
    fn apply(&mut self, r: &Report) {
        for s in &r.srvstat {
            let k = (s.dvipa, s.port, s.protocol);
            if s.listening {
                self.listeners.insert(k, s.draining);
            } else {
                self.listeners.remove(&k);
            }
        }
        for c in &r.termconn {
            self.conns
                .remove(&(c.client_addr, c.client_port, c.dvipa, c.dvipa_port));
        }
        for c in &r.newconn {
            self.conns.insert(
                (c.client_addr, c.client_port, c.dvipa, c.dvipa_port),
                c.server_originated,
            );
        }
    }
}

#[derive(Default)]
struct CtlState {
    hellos: Vec<Hello>,
    /// (received at, session epoch, report)
    reports: Vec<(Instant, u64, Report)>,
    heartbeats: usize,
    heartbeat_weights: Vec<u32>,
    view: View,
    building: Option<View>,
    /// Epochs whose full sync completed.
    synced: Vec<u64>,
    sessions: Vec<mpsc::Sender<Result<ControllerMessage, Status>>>,
    seq_errors: usize,
}

#[derive(Clone)]
struct FakeCtl {
    st: Arc<Mutex<CtlState>>,
    vipas: Arc<Mutex<VipaList>>,
    /// SRVSTATs on this port are refused in the Ack (as a controller would refuse a port
    /// that is not distributed).
    refuse_port: Arc<Mutex<Option<u32>>>,
}

fn cmsg(m: controller_message::Msg) -> Result<ControllerMessage, Status> {
    Ok(ControllerMessage { msg: Some(m) })
}

#[tonic::async_trait]
impl ServerStack for FakeCtl {
    type AttachStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn attach(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let cert_names = peer_names(&req);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let me = self.clone();
        tokio::spawn(async move {
            let hello = match inbound.message().await {
                Ok(Some(AgentMessage {
                    seq: 1,
                    msg: Some(agent_message::Msg::Hello(h)),
                })) => h,
                _ => {
                    let _ = tx
                        .send(Err(Status::invalid_argument("first message must be Hello")))
                        .await;
                    return;
                }
            };
            if let Err(st) = require_peer_name(&cert_names, &hello.stack) {
                let _ = tx.send(Err(st)).await;
                return;
            }
            let epoch = hello.epoch;
            let list = me.vipas.lock().unwrap().clone();
            let _ = tx
                .send(cmsg(controller_message::Msg::Welcome(Welcome {
                    controller_id: "fake".into(),
                    heartbeat_interval_ms: 300,
                    lease_ms: 1000,
                })))
                .await;
            let _ = tx.send(cmsg(controller_message::Msg::VipaList(list))).await;
            {
                let mut st = me.st.lock().unwrap();
                st.hellos.push(hello);
                st.sessions.push(tx.clone());
            }
            let mut last_seq = 1;
            while let Ok(Some(m)) = inbound.message().await {
                let now = Instant::now();
                {
                    let mut st = me.st.lock().unwrap();
                    if m.seq != last_seq + 1 {
                        st.seq_errors += 1;
                    }
                    last_seq = m.seq;
                    match &m.msg {
                        Some(agent_message::Msg::Report(r)) => {
                            st.reports.push((now, epoch, r.clone()));
                            if r.full_sync {
                                let b = st.building.get_or_insert_with(View::default);
                                b.apply(r);
                                if r.sync_done {
                                    st.view = st.building.take().unwrap();
                                    st.synced.push(epoch);
                                }
                            } else {
                                st.view.apply(r);
                            }
                        }
                        Some(agent_message::Msg::Heartbeat(h)) => {
                            st.heartbeats += 1;
                            st.heartbeat_weights.push(h.weight);
                        }
                        _ => st.seq_errors += 1,
                    }
                }
                if let Some(agent_message::Msg::Report(r)) = &m.msg {
                    let refuse = *me.refuse_port.lock().unwrap();
                    let errors = r
                        .srvstat
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| Some(s.port) == refuse)
                        .map(|(i, _)| ItemError {
                            list: "srvstat".into(),
                            index: i as u32,
                            reason: "not_in_destip".into(),
                            detail: "test refusal".into(),
                        })
                        .collect();
                    let _ = tx
                        .send(cmsg(controller_message::Msg::Ack(Ack {
                            seq: m.seq,
                            errors,
                        })))
                        .await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Controller {
    ctl: FakeCtl,
    url: String,
    tls: Arc<TlsStats>,
    ca: TestCa,
    dir: tempfile::TempDir,
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

impl Controller {
    async fn start(ns: &Netns) -> Controller {
        let ca = TestCa::new("dvipa test CA").unwrap();
        let server = ca.server_bundle(&["127.0.0.1"]).unwrap();
        let std_listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
        let tls = Arc::new(TlsStats::default());
        let ctl = FakeCtl {
            st: Arc::default(),
            vipas: Arc::new(Mutex::new(vipa_list(1, &[DVIPA]))),
            refuse_port: Arc::default(),
        };
        let incoming = tls_incoming(listener, server_config(&server).unwrap(), tls.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ServerStackServer::new(ctl.clone()))
                .serve_with_incoming(incoming),
        );
        Controller {
            ctl,
            url: format!("https://127.0.0.1:{port}"),
            tls,
            ca,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn agent_files(&self, name: &str) -> PemPaths {
        self.ca
            .client_bundle(name)
            .unwrap()
            .write_files(self.dir.path(), name)
            .unwrap()
    }

    fn control_socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    fn st<T>(&self, f: impl FnOnce(&CtlState) -> T) -> T {
        f(&self.ctl.st.lock().unwrap())
    }

    async fn push_vipas(&self, list: VipaList) {
        *self.ctl.vipas.lock().unwrap() = list.clone();
        let sessions = self.st(|s| s.sessions.clone());
        for tx in sessions {
            let _ = tx
                .send(cmsg(controller_message::Msg::VipaList(list.clone())))
                .await;
        }
    }

    /// Waits until `f` holds (checked every 2 ms); panics with `what` after `timeout`.
    async fn wait(&self, what: &str, timeout: Duration, f: impl Fn(&CtlState) -> bool) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.st(&f) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let view = self.st(|s| format!("{:?} hellos={}", s.view, s.hellos.len()));
        panic!("timed out waiting for {what}; controller view: {view}");
    }

    /// The first report at or after `since` containing a SRVSTAT matching `pred`.
    fn srvstat_at(
        &self,
        since: Instant,
        pred: impl Fn(&dvipa_proto::v1::SrvStat) -> bool,
    ) -> Option<Instant> {
        self.st(|s| {
            s.reports
                .iter()
                .find(|(t, _, r)| *t >= since && r.srvstat.iter().any(&pred))
                .map(|(t, _, _)| *t)
        })
    }
}

// ---------------------------------------------------------------- agent process

struct AgentProc {
    child: Child,
    log: PathBuf,
}

impl AgentProc {
    fn start(ns: &Netns, ctl: &Controller, files: &PemPaths, extra: &[&str]) -> AgentProc {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = ctl.dir.path().join(format!("agent-{n}.log"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_dvipa-agent")])
            .args([
                "--stack",
                STACK,
                "--underlay",
                "192.0.2.1",
                "--controller",
                &ctl.url,
            ])
            .arg("--ca")
            .arg(&files.ca)
            .arg("--cert")
            .arg(&files.cert)
            .arg("--key")
            .arg(&files.key)
            .args(["--poll-ms", &POLL_MS.to_string()])
            .arg("--control-socket")
            .arg(ctl.control_socket())
            .args(extra)
            .env("RUST_LOG", "dvipa_agent=debug,info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        AgentProc {
            child: cmd.spawn().expect("spawn agent"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
        self.kill9();
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dvipa-agent"))
        .args(args)
        .output()
        .unwrap()
}

/// Waits until the agent has put the DVIPA on lo (with its label).
async fn wait_dvipa_on_lo(ns: &Netns, agent: &AgentProc) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let out = ns.lo_addrs();
        if out.contains(&format!("{DVIPA}/32")) {
            assert!(
                out.contains("lo:dvipa"),
                "address without the agent's label: {out}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("DVIPA never appeared on lo; agent log:\n{}", agent.log());
}

fn tcp_listen(ns: &Netns, addr: Ipv4Addr, port: u16) -> TcpListener {
    ns.run(move || TcpListener::bind(SocketAddr::from((addr, port))).unwrap())
}

/// Connects from `src` (port chosen by the kernel) to `dst` inside the namespace.
fn tcp_connect(ns: &Netns, src: Ipv4Addr, dst: SocketAddr) -> TcpStream {
    ns.run(move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from((src, 0)).into()).unwrap();
        s.connect(&dst.into()).unwrap();
        s.into()
    })
}

fn key(c: &TcpStream, server_side: bool) -> (u32, u32, u32, u32) {
    // (client, client_port, dvipa, dvipa_port) as the controller keys connections.
    let (l, p) = (c.local_addr().unwrap(), c.peer_addr().unwrap());
    let (dv, cl) = if server_side { (l, p) } else { (p, l) };
    let v4 = |a: SocketAddr| match a {
        SocketAddr::V4(a) => u32::from(*a.ip()),
        _ => panic!("v6"),
    };
    (v4(cl), u32::from(cl.port()), v4(dv), u32::from(dv.port()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_and_connections_are_reported() {
    require_netns!();
    let ns = Netns::new("life");
    let ctl = Controller::start(&ns).await;
    let files = ctl.agent_files(STACK);
    let agent = AgentProc::start(&ns, &ctl, &files, &[]);
    ctl.wait("first full sync", Duration::from_secs(10), |s| {
        !s.synced.is_empty()
    })
    .await;
    wait_dvipa_on_lo(&ns, &agent).await;
    assert_eq!(ns.sysctl("net/ipv4/conf/all/arp_ignore"), "1");
    assert_eq!(ns.sysctl("net/ipv4/conf/all/arp_announce"), "2");
    assert_eq!(ns.sysctl("net/ipv4/conf/lo/arp_ignore"), "1");
    let tls = ctl.tls.snapshot();
    assert_eq!((tls.accepted, tls.refused()), (1, 0));

    // listen() -> SRVSTAT up, several times to measure the latency.
    let mut lat = Vec::new();
    // Each listen() happens at a different phase of the agent's poll timer (the loop would
    // otherwise lock onto the phase right after a dump and always measure the worst case).
    for (i, port) in (8000..8010u16).enumerate() {
        tokio::time::sleep(Duration::from_millis((i as u64 * 37) % POLL_MS)).await;
        let t0 = Instant::now();
        let l = tcp_listen(&ns, DVIPA, port);
        let want = (u32::from(DVIPA), u32::from(port), 6);
        ctl.wait("SRVSTAT up", Duration::from_secs(5), |s| {
            s.view.listeners.contains_key(&want)
        })
        .await;
        let at = ctl
            .srvstat_at(t0, |s| s.port == u32::from(port) && s.listening)
            .unwrap();
        lat.push(at - t0);
        // close() -> SRVSTAT down
        let t1 = Instant::now();
        drop(l);
        ctl.wait("SRVSTAT down", Duration::from_secs(5), |s| {
            !s.view.listeners.contains_key(&want)
        })
        .await;
        let down = ctl
            .srvstat_at(t1, |s| s.port == u32::from(port) && !s.listening)
            .unwrap();
        if port == 8000 {
            println!("close() -> SRVSTAT down: {:?}", down - t1);
        }
    }
    println!(
        "listen() -> SRVSTAT latency over {} listeners (poll {POLL_MS} ms): min {:?}, median {:?}, max {:?}",
        lat.len(),
        lat.iter().min().unwrap(),
        median(lat.clone()),
        lat.iter().max().unwrap()
    );
    assert!(
        median(lat) < Duration::from_millis(POLL_MS * 3),
        "listen() -> SRVSTAT far slower than the polling interval"
    );

    // A wildcard listener counts for the DVIPA.
    let wild = tcp_listen(&ns, Ipv4Addr::UNSPECIFIED, 8080);
    let wkey = (u32::from(DVIPA), 8080, 6);
    ctl.wait("wildcard SRVSTAT up", Duration::from_secs(5), |s| {
        s.view.listeners.contains_key(&wkey)
    })
    .await;

    // Accepted connection -> NEWCONN (inbound); closing it -> TERMCONN.
    let client = tcp_connect(&ns, Ipv4Addr::LOCALHOST, SocketAddr::from((DVIPA, 8080)));
    let (server, _) = wild.accept().unwrap();
    let k = key(&server, true);
    assert_eq!(k, key(&client, false));
    ctl.wait("NEWCONN inbound", Duration::from_secs(5), |s| {
        s.view.conns.get(&k) == Some(&false)
    })
    .await;
    drop(server);
    drop(client);
    ctl.wait("TERMCONN inbound", Duration::from_secs(5), |s| {
        !s.view.conns.contains_key(&k)
    })
    .await;

    // A connection the server opens from the DVIPA -> NEWCONN server_originated.
    let peer = tcp_listen(&ns, Ipv4Addr::LOCALHOST, 0);
    let peer_addr = peer.local_addr().unwrap();
    let out = tcp_connect(&ns, DVIPA, peer_addr);
    let (peer_side, _) = peer.accept().unwrap();
    let ko = key(&out, true);
    ctl.wait("NEWCONN server-originated", Duration::from_secs(5), |s| {
        s.view.conns.get(&ko) == Some(&true)
    })
    .await;
    drop(out);
    drop(peer_side);
    ctl.wait("TERMCONN server-originated", Duration::from_secs(5), |s| {
        !s.view.conns.contains_key(&ko)
    })
    .await;

    // Drain through the CLI: SRVSTAT draining=true, listener still up; undrain reverts.
    let sock = ctl.control_socket();
    let sock = sock.to_str().unwrap();
    let o = cli(&["drain", "--port", "8080", "--socket", sock]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 listener"));
    ctl.wait("draining", Duration::from_secs(5), |s| {
        s.view.listeners.get(&wkey) == Some(&true)
    })
    .await;
    let o = cli(&["undrain", "--port", "8080", "--socket", sock]);
    assert!(o.status.success());
    ctl.wait("undrained", Duration::from_secs(5), |s| {
        s.view.listeners.get(&wkey) == Some(&false)
    })
    .await;
    let o = cli(&["drain", "--port", "0", "--socket", sock]);
    assert!(!o.status.success(), "port 0 accepted");
    let o = cli(&["status", "--socket", sock]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["stack"], STACK);
    assert_eq!(status["stats"]["ack_errors"], 0);

    // Heartbeats flow, sequence numbers are consecutive.
    ctl.wait("heartbeat", Duration::from_secs(3), |s| s.heartbeats > 0)
        .await;
    assert_eq!(ctl.st(|s| s.seq_errors), 0);
    drop(wild);
    ctl.wait("wildcard SRVSTAT down", Duration::from_secs(5), |s| {
        s.view.listeners.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_re_reports_the_same_state() {
    require_netns!();
    let ns = Netns::new("restart");
    let ctl = Controller::start(&ns).await;
    let files = ctl.agent_files(STACK);
    let mut agent = AgentProc::start(&ns, &ctl, &files, &[]);
    ctl.wait("first full sync", Duration::from_secs(10), |s| {
        s.synced.len() == 1
    })
    .await;
    wait_dvipa_on_lo(&ns, &agent).await;

    let l = tcp_listen(&ns, DVIPA, 443);
    let c1 = tcp_connect(&ns, Ipv4Addr::LOCALHOST, SocketAddr::from((DVIPA, 443)));
    let (s1, _) = l.accept().unwrap();
    let peer = tcp_listen(&ns, Ipv4Addr::LOCALHOST, 0);
    let out = tcp_connect(&ns, DVIPA, peer.local_addr().unwrap());
    let (peer_side, _) = peer.accept().unwrap();
    ctl.wait(
        "listener and two connections",
        Duration::from_secs(5),
        |s| s.view.listeners.len() == 1 && s.view.conns.len() == 2,
    )
    .await;
    let before = ctl.st(|s| s.view.clone());

    agent.kill9();
    // The kernel state outlives the agent: DVIPA still on lo, sockets still open.
    assert!(ns.lo_addrs().contains(&format!("{DVIPA}/32")));
    let _agent2 = AgentProc::start(&ns, &ctl, &files, &[]);
    ctl.wait("second full sync", Duration::from_secs(10), |s| {
        s.synced.len() == 2
    })
    .await;
    let (after, epochs) = ctl.st(|s| {
        (
            s.view.clone(),
            s.hellos.iter().map(|h| h.epoch).collect::<Vec<_>>(),
        )
    });
    assert_ne!(
        epochs[0], epochs[1],
        "a restarted agent must announce a new epoch"
    );
    assert_eq!(before, after, "state changed across the restart");
    assert_eq!(
        ctl.st(|s| s.view.conns.values().filter(|&&so| so).count()),
        1,
        "server-originated flag lost"
    );
    assert_eq!(ns.lo_addrs().matches(&format!("{DVIPA}/32")).count(), 1);
    drop((s1, c1, out, peer_side));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vipa_list_changes_move_addresses_on_lo_but_never_foreign_ones() {
    require_netns!();
    let ns = Netns::new("vipas");
    // Someone else's address on lo, also listed as a DVIPA later.
    ip(&["-n", &ns.name, "addr", "add", "10.250.0.20/32", "dev", "lo"]);
    let ctl = Controller::start(&ns).await;
    let files = ctl.agent_files(STACK);
    let agent = AgentProc::start(&ns, &ctl, &files, &["--no-destroy-events"]);
    ctl.wait("first full sync", Duration::from_secs(10), |s| {
        !s.synced.is_empty()
    })
    .await;
    wait_dvipa_on_lo(&ns, &agent).await;
    let foreign = Ipv4Addr::new(10, 250, 0, 20);
    let new = Ipv4Addr::new(10, 250, 0, 30);
    ctl.push_vipas(vipa_list(2, &[new, foreign])).await;
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ns.lo_addrs();
        if out.contains(&format!("{new}/32")) && !out.contains(&format!("{DVIPA}/32")) {
            break;
        }
        assert!(
            Instant::now() < end,
            "lo never followed the VIPA list: {out}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ctl.push_vipas(vipa_list(3, &[])).await;
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ns.lo_addrs();
        if !out.contains(&format!("{new}/32")) {
            assert!(
                out.contains(&format!("{foreign}/32")),
                "foreign address removed: {out}"
            );
            break;
        }
        assert!(Instant::now() < end, "agent address never removed: {out}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A listener on an address that is no longer a DVIPA is not reported.
    let _l = tcp_listen(&ns, foreign, 99);
    tokio::time::sleep(Duration::from_millis(POLL_MS * 3)).await;
    assert!(ctl.st(|s| s.view.listeners.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vipas_that_are_host_or_subnet_addresses_bad_prefixes_or_over_the_cap_are_refused() {
    require_netns!();
    let ns = Netns::new("refuse");
    // An interface of the host with 198.51.100.7/24 (and the underlay on it too).
    ip(&[
        "-n", &ns.name, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    ip(&[
        "-n",
        &ns.name,
        "addr",
        "add",
        "198.51.100.7/24",
        "dev",
        "d0",
    ]);
    ip(&["-n", &ns.name, "addr", "add", "192.0.2.1/32", "dev", "d0"]);
    ip(&["-n", &ns.name, "link", "set", "d0", "up"]);
    let ctl = Controller::start(&ns).await;
    let files = ctl.agent_files(STACK);
    let agent = AgentProc::start(
        &ns,
        &ctl,
        &files,
        &["--no-destroy-events", "--max-vipas", "3"],
    );
    wait_dvipa_on_lo(&ns, &agent).await;
    let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let refused = [
        "192.0.2.1",
        "198.51.100.7",
        "198.51.100.0",
        "198.51.100.255",
    ];
    let extra = ["10.250.0.11", "10.250.0.12", "10.250.0.13", "10.250.0.14"];
    let all: Vec<Ipv4Addr> = std::iter::once(DVIPA)
        .chain(refused.iter().map(|s| a(s)))
        .chain(extra.iter().map(|s| a(s)))
        .collect();
    let mut list = vipa_list(2, &all);
    list.vipas.push(Vipa {
        prefix_len: 99,
        ..vipa_list(2, &[a("10.250.0.1")]).vipas[0].clone()
    });
    ctl.push_vipas(list).await;
    let sock = ctl.control_socket();
    let end = Instant::now() + Duration::from_secs(5);
    let v = loop {
        let o = cli(&["status", "--socket", sock.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v["stats"]["vipa_refused"]["over_cap"] == 2 {
            break v;
        }
        assert!(Instant::now() < end, "refusals not counted: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let r = &v["stats"]["vipa_refused"];
    assert_eq!(r["host_address"], 2, "{v}");
    assert_eq!(r["subnet_address"], 2, "{v}");
    assert_eq!(r["prefix_len"], 1, "{v}");
    let out = ns.lo_addrs();
    // The lowest three of the acceptable VIPAs are installed, nothing else.
    for d in [DVIPA, a("10.250.0.11"), a("10.250.0.12")] {
        assert!(out.contains(&format!("{d}/32")), "{d} missing: {out}");
    }
    for d in refused
        .iter()
        .chain(&["10.250.0.13", "10.250.0.14", "10.250.0.1"])
    {
        assert!(!out.contains(&format!("{d}/32")), "{d} installed: {out}");
    }
    let log = agent.log();
    assert!(
        log.contains(
            "VIPA 198.51.100.255: it is the broadcast address of the local subnet \
                      198.51.100.0/24 of d0"
        ),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_wrong_or_missing_certificate_is_refused() {
    require_netns!();
    let ns = Netns::new("badcert");
    let ctl = Controller::start(&ns).await;
    // Certificate from another CA (the agent still trusts the real CA for the controller).
    let rogue = TestCa::new("rogue CA").unwrap();
    let mut bad = rogue.client_bundle(STACK).unwrap();
    bad.ca_pem = ctl.ca.ca_pem().to_string();
    let bad_files = bad.write_files(ctl.dir.path(), "rogue").unwrap();
    let agent = AgentProc::start(&ns, &ctl, &bad_files, &[]);
    let end = Instant::now() + Duration::from_secs(10);
    while ctl.tls.snapshot().refused_bad_cert < 2 {
        assert!(
            Instant::now() < end,
            "rogue agent not refused; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ctl.tls.snapshot().accepted, 0);
    assert!(
        ctl.st(|s| s.hellos.is_empty()),
        "a rogue agent got to say Hello"
    );
    drop(agent);

    // A valid certificate for another stack name: the agent refuses to start.
    let other = ctl.agent_files("s2");
    let mut agent = AgentProc::start(&ns, &ctl, &other, &[]);
    let status = agent.child.wait().unwrap();
    assert!(!status.success());
    assert!(
        agent.log().contains("not for stack \"s1\""),
        "{}",
        agent.log()
    );
    assert!(ctl.st(|s| s.hellos.is_empty()));
    drop(agent);

    // No certificate at all: the agent refuses to start unless --insecure is given.
    let o = cli(&[
        "--stack",
        STACK,
        "--underlay",
        "192.0.2.1",
        "--controller",
        &ctl.url,
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--cert") && err.contains("--insecure"),
        "{err}"
    );
}

#[test]
fn missing_files_are_reported_clearly() {
    let o = cli(&[
        "--stack",
        STACK,
        "--underlay",
        "192.0.2.1",
        "--controller",
        "https://127.0.0.1:1",
        "--ca",
        "/nonexistent/ca.pem",
        "--cert",
        "/nonexistent/c.pem",
        "--key",
        "/nonexistent/k.pem",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_and_udp_listeners_count() {
    require_netns!();
    let ns = Netns::new("dual");
    let ctl = Controller::start(&ns).await;
    let files = ctl.agent_files(STACK);
    let agent = AgentProc::start(&ns, &ctl, &files, &[]);
    ctl.wait("first full sync", Duration::from_secs(10), |s| {
        !s.synced.is_empty()
    })
    .await;
    wait_dvipa_on_lo(&ns, &agent).await;

    // [::]:8443 without IPV6_V6ONLY accepts IPv4: it listens on DVIPA:8443.
    let v6 = ns.run(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        s.set_only_v6(false).unwrap();
        s.bind(&"[::]:8443".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(16).unwrap();
        TcpListener::from(s)
    });
    // [::]:8444 with IPV6_V6ONLY does not.
    let _v6only = ns.run(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        s.set_only_v6(true).unwrap();
        s.bind(&"[::]:8444".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(16).unwrap();
        TcpListener::from(s)
    });
    // A UDP socket bound to the DVIPA.
    let _udp = ns.run(|| std::net::UdpSocket::bind(SocketAddr::from((DVIPA, 5353))).unwrap());
    let k6 = (u32::from(DVIPA), 8443, 6);
    let ku = (u32::from(DVIPA), 5353, 17);
    ctl.wait("dual-stack and UDP SRVSTAT", Duration::from_secs(5), |s| {
        s.view.listeners.contains_key(&k6) && s.view.listeners.contains_key(&ku)
    })
    .await;
    // An IPv4 connection accepted on the dual-stack socket is reported with IPv4 addresses.
    let client = tcp_connect(&ns, Ipv4Addr::LOCALHOST, SocketAddr::from((DVIPA, 8443)));
    let want = key(&client, false);
    let (_server, _) = v6.accept().unwrap();
    ctl.wait(
        "NEWCONN on the dual-stack socket",
        Duration::from_secs(5),
        |s| s.view.conns.get(&want) == Some(&false),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(POLL_MS * 2)).await;
    assert!(
        !ctl.st(|s| s.view.listeners.contains_key(&(u32::from(DVIPA), 8444, 6))),
        "an IPV6_V6ONLY listener was counted for the DVIPA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_ack_errors_and_graceful_shutdown() {
    require_netns!();
    let ns = Netns::new("misc");
    let ctl = Controller::start(&ns).await;
    *ctl.ctl.refuse_port.lock().unwrap() = Some(9999);
    let files = ctl.agent_files(STACK);
    let mut agent = AgentProc::start(
        &ns,
        &ctl,
        &files,
        &["--weight", "7", "--metrics-listen", "127.0.0.1:9464"],
    );
    ctl.wait("first full sync", Duration::from_secs(10), |s| {
        !s.synced.is_empty()
    })
    .await;
    wait_dvipa_on_lo(&ns, &agent).await;

    let _ok = tcp_listen(&ns, DVIPA, 9000);
    let _refused = tcp_listen(&ns, DVIPA, 9999);
    ctl.wait("SRVSTATs", Duration::from_secs(5), |s| {
        s.view.listeners.len() == 2
    })
    .await;
    let weights: Vec<u32> = ctl.st(|s| {
        s.reports
            .iter()
            .flat_map(|(_, _, r)| r.srvstat.iter().map(|x| x.weight))
            .collect()
    });
    assert!(weights.iter().all(|&w| w == 7), "{weights:?}");
    ctl.wait("heartbeat", Duration::from_secs(3), |s| s.heartbeats > 0)
        .await;
    assert!(ctl.st(|s| s.heartbeat_weights.iter().all(|&w| w == 7)));

    // The refused SRVSTAT is logged with the item and counted.
    let sock = ctl.control_socket();
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let o = cli(&["status", "--socket", sock.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v["stats"]["ack_errors"] == 1 {
            break;
        }
        assert!(Instant::now() < end, "ack error not counted: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and exported to Prometheus.
    let metrics = ns.run(|| {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect("127.0.0.1:9464").unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    });
    assert!(
        metrics.contains("dvipa_agent_ack_errors_total 1"),
        "{metrics}"
    );
    let log = agent.log();
    assert!(
        log.contains("not_in_destip") && log.contains(&format!("SRVSTAT {DVIPA}:9999")),
        "{log}"
    );

    // SIGTERM: a clean, quick exit; the DVIPA stays on lo (existing connections keep working).
    let pid = agent.child.id() as i32;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = agent.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "agent ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(!sock.exists(), "control socket left behind");
    assert!(ns.lo_addrs().contains(&format!("{DVIPA}/32")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_session_reconnects_and_re_reports_with_the_same_epoch() {
    require_netns!();
    let ns = Netns::new("kick");
    let ctl = Controller::start(&ns).await;
    let files = ctl.agent_files(STACK);
    let agent = AgentProc::start(&ns, &ctl, &files, &[]);
    ctl.wait("first full sync", Duration::from_secs(10), |s| {
        s.synced.len() == 1
    })
    .await;
    wait_dvipa_on_lo(&ns, &agent).await;
    let l = tcp_listen(&ns, DVIPA, 7000);
    let c = tcp_connect(&ns, Ipv4Addr::LOCALHOST, SocketAddr::from((DVIPA, 7000)));
    let (s, _) = l.accept().unwrap();
    ctl.wait("listener and connection", Duration::from_secs(5), |s| {
        s.view.listeners.len() == 1 && s.view.conns.len() == 1
    })
    .await;
    let before = ctl.st(|s| s.view.clone());
    // The controller drops the session with an error.
    let tx = ctl.st(|s| s.sessions[0].clone());
    tx.send(Err(Status::unavailable("controller restarting")))
        .await
        .unwrap();
    drop(tx);
    ctl.wait("re-sync after reconnect", Duration::from_secs(10), |s| {
        s.synced.len() == 2
    })
    .await;
    let epochs: Vec<u64> = ctl.st(|s| s.hellos.iter().map(|h| h.epoch).collect());
    assert_eq!(epochs.len(), 2);
    assert_eq!(epochs[0], epochs[1], "same process, same epoch");
    assert_eq!(ctl.st(|s| s.view.clone()), before);
    assert!(
        agent.log().contains("controller restarting"),
        "{}",
        agent.log()
    );
    drop((c, s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_connections_are_batched() {
    require_netns!();
    let ns = Netns::new("burst");
    let ctl = Controller::start(&ns).await;
    let files = ctl.agent_files(STACK);
    let agent = AgentProc::start(&ns, &ctl, &files, &["--max-batch", "50"]);
    ctl.wait("first full sync", Duration::from_secs(10), |s| {
        !s.synced.is_empty()
    })
    .await;
    wait_dvipa_on_lo(&ns, &agent).await;
    const N: usize = 300;
    let l = tcp_listen(&ns, DVIPA, 6000);
    let t0 = Instant::now();
    let pairs: Vec<(TcpStream, TcpStream)> = ns.run(move || {
        (0..N)
            .map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
                    .unwrap();
                s.connect(&SocketAddr::from((DVIPA, 6000)).into()).unwrap();
                let (srv, _) = l.accept().unwrap();
                (s.into(), srv)
            })
            .collect()
    });
    ctl.wait("all NEWCONNs", Duration::from_secs(10), |s| {
        s.view.conns.len() == N
    })
    .await;
    let up = t0.elapsed();
    let t1 = Instant::now();
    drop(pairs);
    ctl.wait("all TERMCONNs", Duration::from_secs(10), |s| {
        s.view.conns.is_empty()
    })
    .await;
    println!(
        "{N} connections: all NEWCONNs after {up:?}, all TERMCONNs {:?} after close",
        t1.elapsed()
    );
    let (sizes, incremental): (Vec<usize>, usize) = ctl.st(|s| {
        let sizes = s
            .reports
            .iter()
            .map(|(_, _, r)| r.srvstat.len() + r.newconn.len() + r.termconn.len())
            .collect();
        let inc = s
            .reports
            .iter()
            .filter(|(_, _, r)| !r.full_sync && !r.newconn.is_empty())
            .count();
        (sizes, inc)
    });
    assert!(
        sizes.iter().all(|&n| n <= 50),
        "batch over the limit: {sizes:?}"
    );
    assert!(
        incremental >= N / 50,
        "expected >= {} NEWCONN batches, got {incremental}",
        N / 50
    );
}

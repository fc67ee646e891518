//! Certificate rotation on the agent side: an in-process agent (no loopback or sysctl changes,
//! sock_diag of the test's own namespace) whose client certificate is rotated keeps its current
//! session, and presents the new certificate when it reconnects. A rotation to a certificate for
//! another stack is refused and counted, and the agent keeps the one it has.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvipa_agent::{Agent, AgentConfig};
use dvipa_proto::v1::server_stack_server::{ServerStack, ServerStackServer};
use dvipa_proto::v1::{
    Ack, AgentMessage, ControllerMessage, VipaList, Welcome, agent_message, controller_message,
};
use dvipa_tls::testing::TestCa;
use dvipa_tls::{Reloader, TlsStats, server_config, tls_incoming};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const STACK: &str = "s1";

/// One Attach stream as the fake controller saw it.
struct Session {
    /// DER of the client certificate the agent presented.
    cert: Vec<u8>,
    heartbeats: Arc<AtomicU64>,
    /// Dropping or firing it ends the stream.
    end: Option<oneshot::Sender<()>>,
}

#[derive(Clone, Default)]
struct FakeCtl {
    sessions: Arc<Mutex<Vec<Session>>>,
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
        let cert = req
            .peer_certs()
            .and_then(|c| c.first().map(|d| d.as_ref().to_vec()))
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let (end_tx, mut end_rx) = oneshot::channel();
        let heartbeats = Arc::new(AtomicU64::new(0));
        self.sessions.lock().unwrap().push(Session {
            cert,
            heartbeats: heartbeats.clone(),
            end: Some(end_tx),
        });
        tokio::spawn(async move {
            let _ = tx
                .send(cmsg(controller_message::Msg::Welcome(Welcome {
                    controller_id: "fake".into(),
                    heartbeat_interval_ms: 50,
                    lease_ms: 1000,
                })))
                .await;
            let _ = tx
                .send(cmsg(controller_message::Msg::VipaList(VipaList {
                    version: 1,
                    vipas: vec![],
                })))
                .await;
            loop {
                let m = tokio::select! {
                    _ = &mut end_rx => return,
                    m = inbound.message() => m,
                };
                let Ok(Some(m)) = m else { return };
                match m.msg {
                    Some(agent_message::Msg::Report(_)) => {
                        let _ = tx
                            .send(cmsg(controller_message::Msg::Ack(Ack {
                                seq: m.seq,
                                errors: vec![],
                            })))
                            .await;
                    }
                    Some(agent_message::Msg::Heartbeat(_)) => {
                        heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rotated_client_certificate_is_used_on_reconnect() {
    let ca = TestCa::new("dvipa test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ctl = FakeCtl::default();
    let server = ca.server_bundle(&["127.0.0.1"]).unwrap();
    let incoming = tls_incoming(
        listener,
        server_config(&server).unwrap(),
        Arc::new(TlsStats::default()),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ServerStackServer::new(ctl.clone()))
            .serve_with_incoming(incoming),
    );

    let first = ca.client_bundle(STACK).unwrap();
    let paths = first.write_files(dir.path(), STACK).unwrap();
    let tls = Reloader::client("agent", paths.clone(), None, Some(STACK.into())).unwrap();
    let mut cfg = AgentConfig::new(
        STACK,
        Ipv4Addr::new(10, 0, 0, 1),
        &format!("https://127.0.0.1:{port}"),
    );
    cfg.tls_reload = Some(tls.clone());
    cfg.manage_loopback = false;
    cfg.arp_sysctls = false;
    cfg.destroy_events = false;
    cfg.backoff_initial = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(200);
    let agent = Agent::new(cfg).await.unwrap();
    let stats = agent.stats();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(agent.run(async {
        let _ = stop_rx.await;
    }));

    let n_sessions = || ctl.sessions.lock().unwrap().len();
    eventually("the first session", || n_sessions() == 1).await;
    let cert_of = |i: usize| ctl.sessions.lock().unwrap()[i].cert.clone();
    assert_eq!(cert_of(0), first.cert_der().unwrap().as_ref());

    // Rotate the files to a new certificate (new key) for the same stack.
    let second = ca.client_bundle(STACK).unwrap();
    second.write_files(dir.path(), STACK).unwrap();
    tls.reload().unwrap();

    // The established session carries on (heartbeats keep arriving on it).
    let hb = ctl.sessions.lock().unwrap()[0].heartbeats.clone();
    let seen = hb.load(Ordering::Relaxed);
    eventually("heartbeats on the first session after the reload", || {
        hb.load(Ordering::Relaxed) >= seen + 3
    })
    .await;
    assert_eq!(n_sessions(), 1);

    // The controller ends the stream: the agent reconnects with the new certificate.
    drop(ctl.sessions.lock().unwrap()[0].end.take());
    eventually("the second session", || n_sessions() == 2).await;
    assert_eq!(cert_of(1), second.cert_der().unwrap().as_ref());
    assert_ne!(cert_of(0), cert_of(1));

    // A certificate for another stack is refused and counted; the next session still presents
    // the second certificate.
    ca.client_bundle("other-stack")
        .unwrap()
        .write_files(dir.path(), STACK)
        .unwrap();
    let e = tls.reload().unwrap_err().to_string();
    assert!(e.contains(&paths.cert.display().to_string()), "{e}");
    assert_eq!(
        (tls.snapshot().reloaded, tls.snapshot().failed),
        (1, 1),
        "{tls:?}"
    );
    drop(ctl.sessions.lock().unwrap()[1].end.take());
    eventually("the third session", || n_sessions() == 3).await;
    assert_eq!(cert_of(2), second.cert_der().unwrap().as_ref());
    assert!(stats.sessions.load(Ordering::Relaxed) >= 3);

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("agent stops")
        .unwrap()
        .unwrap();
}

//! A tonic `ServerStack` server built with dvipa-tls accepts an agent with a CA-signed client
//! certificate (and sees its stack name), and refuses and counts agents with a certificate from
//! another CA or with none.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dvipa_proto::v1::server_stack_client::ServerStackClient;
use dvipa_proto::v1::server_stack_server::{ServerStack, ServerStackServer};
use dvipa_proto::v1::{
    AgentMessage, ControllerMessage, Hello, Welcome, agent_message, controller_message,
};
use dvipa_tls::testing::TestCa;
use dvipa_tls::{PemBundle, TlsStats, client_tls_config, peer_name, server_config, tls_incoming};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// Answers every Attach with a Welcome whose controller_id is the client certificate's name.
struct NameEcho;

#[tonic::async_trait]
impl ServerStack for NameEcho {
    type AttachStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

    async fn attach(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let name = peer_name(&req).ok_or_else(|| Status::unauthenticated("no client cert"))?;
        let welcome = ControllerMessage {
            msg: Some(controller_message::Msg::Welcome(Welcome {
                controller_id: name,
                heartbeat_interval_ms: 1000,
                lease_ms: 3000,
            })),
        };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(welcome)))))
    }
}

async fn start_server(bundle: &PemBundle) -> (String, Arc<TlsStats>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(TlsStats::default());
    let incoming = tls_incoming(listener, server_config(bundle).unwrap(), stats.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ServerStackServer::new(NameEcho))
            .serve_with_incoming(incoming),
    );
    (format!("https://127.0.0.1:{}", addr.port()), stats)
}

/// Attaches with a Hello and returns the Welcome's controller_id.
async fn attach(url: &str, tls: ClientTlsConfig) -> Result<String, String> {
    let ch: Channel = Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let hello = AgentMessage {
        seq: 1,
        msg: Some(agent_message::Msg::Hello(Hello {
            stack: "stack1".into(),
            underlay_addr: 1,
            agent_version: "test".into(),
            epoch: 7,
        })),
    };
    let mut client = ServerStackClient::new(ch);
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client.attach(tokio_stream::iter(vec![hello]).chain(tokio_stream::pending())),
    )
    .await
    .map_err(|_| "timeout".to_string())?
    .map_err(|e| format!("attach: {e}"))?;
    let mut s = resp.into_inner();
    match s.next().await {
        Some(Ok(ControllerMessage {
            msg: Some(controller_message::Msg::Welcome(w)),
        })) => Ok(w.controller_id),
        other => Err(format!("no welcome: {other:?}")),
    }
}

async fn wait_for(stats: &TlsStats, f: impl Fn(&dvipa_tls::TlsStatsSnapshot) -> bool) {
    for _ in 0..100 {
        if f(&stats.snapshot()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("stats never matched: {:?}", stats.snapshot());
}

#[tokio::test]
async fn good_certificate_is_accepted_and_named() {
    let ca = TestCa::new("dvipa test CA").unwrap();
    let (url, stats) = start_server(&ca.server_bundle(&["localhost", "127.0.0.1"]).unwrap()).await;
    let agent = ca.client_bundle("stack1").unwrap();
    let name = attach(&url, client_tls_config(&agent, None).unwrap()).await;
    assert_eq!(name.as_deref(), Ok("stack1"));
    let s = stats.snapshot();
    assert_eq!((s.accepted, s.refused()), (1, 0));
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused_and_counted() {
    let ca = TestCa::new("dvipa test CA").unwrap();
    let rogue = TestCa::new("rogue CA").unwrap();
    let (url, stats) = start_server(&ca.server_bundle(&["127.0.0.1"]).unwrap()).await;
    // The rogue certificate is presented, but the agent trusts the real CA for the server.
    let mut bad = rogue.client_bundle("stack1").unwrap();
    bad.ca_pem = ca.ca_pem().to_string();
    let r = attach(&url, client_tls_config(&bad, None).unwrap()).await;
    assert!(r.is_err(), "rogue certificate was accepted: {r:?}");
    wait_for(&stats, |s| s.refused_bad_cert == 1).await;
    assert_eq!(stats.snapshot().accepted, 0);
}

#[tokio::test]
async fn missing_certificate_is_refused_and_counted() {
    let ca = TestCa::new("dvipa test CA").unwrap();
    let (url, stats) = start_server(&ca.server_bundle(&["127.0.0.1"]).unwrap()).await;
    let no_identity =
        ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca.ca_pem()));
    let r = attach(&url, no_identity).await;
    assert!(r.is_err(), "certificate-less client was accepted: {r:?}");
    wait_for(&stats, |s| s.refused_no_cert == 1).await;
    assert_eq!(stats.snapshot().accepted, 0);
}

#[tokio::test]
async fn agent_refuses_a_controller_signed_by_another_ca() {
    let ca = TestCa::new("dvipa test CA").unwrap();
    let rogue = TestCa::new("rogue CA").unwrap();
    let (url, _stats) = start_server(&rogue.server_bundle(&["127.0.0.1"]).unwrap()).await;
    let agent = ca.client_bundle("stack1").unwrap();
    let r = attach(&url, client_tls_config(&agent, None).unwrap()).await;
    assert!(r.is_err(), "agent trusted a rogue controller: {r:?}");
}

#[test]
fn claimed_stack_must_match_the_certificate() {
    use dvipa_tls::require_peer_name;
    let names = vec!["stack1".to_string()];
    assert!(require_peer_name(&names, "stack1").is_ok());
    let e = require_peer_name(&names, "stack2").unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("stack2"));
    let e = require_peer_name(&[], "stack1").unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}

#[test]
fn bundle_files_round_trip_and_bad_files_are_clear_errors() {
    let ca = TestCa::new("dvipa test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = ca
        .client_bundle("stack9")
        .unwrap()
        .write_files(dir.path(), "stack9")
        .unwrap();
    let loaded = PemBundle::load(&paths).unwrap();
    assert_eq!(loaded.cert_names().unwrap(), vec!["stack9".to_string()]);
    assert!(loaded.cert_pem.contains("BEGIN CERTIFICATE"));
    // A key file given as the certificate is refused with a clear message.
    let mut swapped = paths.clone();
    swapped.cert = paths.key.clone();
    let err = PemBundle::load(&swapped).unwrap_err().to_string();
    assert!(err.contains("certificate file"), "{err}");
    let mut missing = paths.clone();
    missing.ca = dir.path().join("nope.pem");
    let err = PemBundle::load(&missing).unwrap_err().to_string();
    assert!(err.contains("nope.pem"), "{err}");
}

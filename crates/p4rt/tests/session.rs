//! Session behaviour against an in-process mock P4Runtime server: arbitration outcomes, strict
//! and non-strict deletes, per-update errors, digest acks only on confirmation, reconnect after
//! the server goes away, and config validation.
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p4rt::client::{encode_write_errors, from_uint128};
use p4rt::proto::p4::v1 as p4;
use p4rt::proto::p4::v1::p4_runtime_server::{P4Runtime, P4RuntimeServer};
use p4rt::{ClientConfig, ClientError, Mastership, Session, SessionEvent, delete, insert};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

type Resp<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the mock saw and what it holds.
#[derive(Default)]
struct State {
    highest_election: u128,
    acks: Vec<(u32, u64)>,
    entries: Vec<p4::TableEntry>,
    send_digest: bool,
    /// Writes with more updates are refused whole (RESOURCE_EXHAUSTED, nothing applied).
    refuse_above: Option<usize>,
    /// Writes with more updates are applied but a failure is answered without details.
    details_up_to: Option<usize>,
    /// Per-update error messages this long (bytes).
    message_len: usize,
    /// Write RPCs received.
    writes: usize,
}

#[derive(Clone)]
struct Mock(Arc<Mutex<State>>, tokio::sync::broadcast::Sender<()>);

impl Default for Mock {
    fn default() -> Self {
        Mock(Arc::default(), tokio::sync::broadcast::channel(4).0)
    }
}

impl Mock {
    /// Ends every open StreamChannel with UNAVAILABLE (as a device shutting down does).
    fn kill_streams(&self) {
        let _ = self.1.send(());
    }
}

#[tonic::async_trait]
impl P4Runtime for Mock {
    async fn write(&self, req: Request<p4::WriteRequest>) -> Resp<p4::WriteResponse> {
        let req = req.into_inner();
        let mut st = self.0.lock().unwrap();
        if from_uint128(&req.election_id.unwrap_or_default()) != st.highest_election {
            return Err(Status::permission_denied("not primary"));
        }
        st.writes += 1;
        if st.refuse_above.is_some_and(|m| req.updates.len() > m) {
            return Err(Status::resource_exhausted("too many updates in one Write"));
        }
        let mut errs = Vec::new();
        for u in &req.updates {
            let Some(p4::entity::Entity::TableEntry(e)) =
                u.entity.as_ref().and_then(|e| e.entity.clone())
            else {
                errs.push(p4::Error::default());
                continue;
            };
            let pos = st.entries.iter().position(|x| x.r#match == e.r#match);
            let code = match (u.r#type, pos) {
                (t, None) if t == p4::update::Type::Insert as i32 => {
                    st.entries.push(e);
                    0
                }
                (t, Some(_)) if t == p4::update::Type::Insert as i32 => 6,
                (t, Some(i)) if t == p4::update::Type::Delete as i32 => {
                    st.entries.remove(i);
                    0
                }
                _ => 5,
            };
            errs.push(p4::Error {
                canonical_code: code,
                message: if code == 0 {
                    String::new()
                } else {
                    format!("code {code} {}", "x".repeat(st.message_len))
                },
                ..Default::default()
            });
        }
        if errs.iter().all(|e| e.canonical_code == 0) {
            return Ok(Response::new(p4::WriteResponse {}));
        }
        if st.details_up_to.is_some_and(|m| req.updates.len() > m) {
            return Err(Status::unknown("some updates failed (no details)"));
        }
        Err(Status::with_details(
            tonic::Code::Unknown,
            "write failed",
            encode_write_errors(&errs).into(),
        ))
    }

    type ReadStream = BoxStream<p4::ReadResponse>;
    async fn read(&self, _req: Request<p4::ReadRequest>) -> Resp<Self::ReadStream> {
        let entities = self
            .0
            .lock()
            .unwrap()
            .entries
            .iter()
            .map(|e| p4::Entity {
                entity: Some(p4::entity::Entity::TableEntry(e.clone())),
            })
            .collect();
        let s = tokio_stream::iter(vec![Ok(p4::ReadResponse { entities })]);
        Ok(Response::new(Box::pin(s)))
    }

    async fn set_forwarding_pipeline_config(
        &self,
        _req: Request<p4::SetForwardingPipelineConfigRequest>,
    ) -> Resp<p4::SetForwardingPipelineConfigResponse> {
        Ok(Response::new(p4::SetForwardingPipelineConfigResponse {}))
    }

    async fn get_forwarding_pipeline_config(
        &self,
        _req: Request<p4::GetForwardingPipelineConfigRequest>,
    ) -> Resp<p4::GetForwardingPipelineConfigResponse> {
        Err(Status::failed_precondition("no pipeline"))
    }

    type StreamChannelStream = BoxStream<p4::StreamMessageResponse>;
    async fn stream_channel(
        &self,
        req: Request<Streaming<p4::StreamMessageRequest>>,
    ) -> Resp<Self::StreamChannelStream> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let state = self.0.clone();
        let mut kill = self.1.subscribe();
        tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(m)) => m,
                        _ => break,
                    },
                    _ = kill.recv() => {
                        let _ = tx.send(Err(Status::unavailable("shutting down"))).await;
                        break;
                    }
                };
                use p4::stream_message_request::Update;
                match m.update {
                    Some(Update::Arbitration(mut a)) => {
                        let id = from_uint128(&a.election_id.unwrap_or_default());
                        let (code, digest) = {
                            let mut st = state.lock().unwrap();
                            if id > st.highest_election {
                                st.highest_election = id;
                            }
                            let primary = st.highest_election;
                            a.election_id = Some(p4rt::client::to_uint128(primary));
                            (if id == primary { 0 } else { 6 }, st.send_digest)
                        };
                        a.status = Some(p4rt::proto::google::rpc::Status {
                            code,
                            ..Default::default()
                        });
                        let r = p4::StreamMessageResponse {
                            update: Some(p4::stream_message_response::Update::Arbitration(a)),
                        };
                        let _ = tx.send(Ok(r)).await;
                        if digest {
                            let d = p4::DigestList {
                                digest_id: 7,
                                list_id: 1,
                                ..Default::default()
                            };
                            let r = p4::StreamMessageResponse {
                                update: Some(p4::stream_message_response::Update::Digest(d)),
                            };
                            let _ = tx.send(Ok(r)).await;
                        }
                    }
                    Some(Update::DigestAck(a)) => {
                        state.lock().unwrap().acks.push((a.digest_id, a.list_id));
                    }
                    _ => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn capabilities(
        &self,
        _req: Request<p4::CapabilitiesRequest>,
    ) -> Resp<p4::CapabilitiesResponse> {
        Ok(Response::new(p4::CapabilitiesResponse {
            p4runtime_api_version: "1.4.1".into(),
        }))
    }
}

/// A running mock server; dropping it stops the server.
struct Served {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves `mock` on `addr` (port 0 = any) until `stop` fires.
async fn serve(mock: Mock, addr: SocketAddr) -> Served {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let bound = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(P4RuntimeServer::new(mock))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Served {
        addr: bound,
        stop,
        task,
    }
}

fn cfg(addr: SocketAddr, election_id: u128) -> ClientConfig {
    let mut c = ClientConfig::new(addr.to_string(), 1);
    c.election_id = election_id;
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

fn entry(port: u8) -> p4::TableEntry {
    p4::TableEntry {
        table_id: 1,
        r#match: vec![p4::FieldMatch {
            field_id: 1,
            field_match_type: Some(p4::field_match::FieldMatchType::Exact(
                p4::field_match::Exact { value: vec![port] },
            )),
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn higher_election_id_is_primary_lower_is_backup() {
    let srv = serve(Mock::default(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = srv.addr;
    let (a, _qa) = Session::connect(cfg(addr, 10)).await.unwrap();
    assert_eq!(a.mastership(), Mastership::Primary);
    let (b, _qb) = Session::connect(cfg(addr, 5)).await.unwrap();
    assert_eq!(
        b.mastership(),
        Mastership::Backup {
            primary_election_id: Some(10)
        }
    );
    // the backup's writes are refused by the device; the whole RPC fails
    let e = b.write(vec![insert(entry(1))]).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
    a.write(vec![insert(entry(1))]).await.unwrap();
    assert_eq!(a.capabilities().await.unwrap(), "1.4.1");
}

#[tokio::test]
async fn per_update_errors_and_delete_modes() {
    let srv = serve(Mock::default(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = srv.addr;
    let (s, _q) = Session::connect(cfg(addr, 1)).await.unwrap();
    let r = s
        .write_detailed(vec![insert(entry(1)), insert(entry(1)), insert(entry(2))])
        .await
        .unwrap();
    assert!(r[0].is_ok() && r[2].is_ok());
    let e = r[1].as_ref().unwrap_err();
    assert_eq!((e.index, e.code), (1, tonic::Code::AlreadyExists));
    // batched: failed indexes refer to the whole list
    let err = s
        .write_batched(
            vec![insert(entry(3)), insert(entry(4)), insert(entry(3))],
            2,
        )
        .await
        .unwrap_err();
    match err {
        ClientError::Write { failed, total } => {
            assert_eq!(total, 3);
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].index, 2);
        }
        other => panic!("{other}"),
    }
    // non-strict: deleting a missing entry is fine
    s.write(vec![delete(entry(9))]).await.unwrap();
    drop(s);
    let mut c = cfg(addr, 2);
    c.strict_delete = true;
    let (strict, _q) = Session::connect(c).await.unwrap();
    let e = strict.write(vec![delete(entry(9))]).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Write { failed, .. } if failed[0].code == tonic::Code::NotFound),
        "{e}"
    );
    let read = strict
        .read_all(vec![p4rt::entity::all_tables()])
        .await
        .unwrap();
    assert_eq!(read.len(), 4, "entries 1, 2, 3, 4");
}

/// A Write whose 1,500 per-update errors (200-byte messages: a ~500 KB trailer, far over hyper's
/// default 16 KiB header limit, which made h2 tear down the connection and the session with it)
/// is answered update by update, and the session stays primary.
#[tokio::test]
async fn large_per_update_error_details_do_not_lose_the_session() {
    let mock = Mock::default();
    mock.0.lock().unwrap().message_len = 200;
    let srv = serve(mock.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let (s, _q) = Session::connect(cfg(srv.addr, 1)).await.unwrap();
    let first: Vec<_> = (0..1500u16).map(|i| insert(entry16(i))).collect();
    assert!(
        s.write_detailed(first.clone())
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    let r = s.write_detailed(first).await.unwrap();
    assert_eq!(r.len(), 1500);
    assert!(
        r.iter()
            .all(|r| r.as_ref().unwrap_err().code == tonic::Code::AlreadyExists)
    );
    assert_eq!(s.mastership(), Mastership::Primary);
    assert_eq!(
        mock.0.lock().unwrap().writes,
        2,
        "each batch answered by one Write (no split needed to read its details)"
    );
    s.write(vec![insert(entry16(2000))]).await.unwrap();
}

/// Batches over `max_write_updates` go out as several Writes; a Write answered as a whole
/// without details (here: refused for its size, or failed without details) is retried in halves
/// until every update has its own answer, and the answers keep the caller's indexes.
#[tokio::test]
async fn writes_are_capped_and_detail_less_answers_are_split() {
    let mock = Mock::default();
    let srv = serve(mock.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let mut c = cfg(srv.addr, 1);
    c.max_write_updates = 100;
    let (s, _q) = Session::connect(c).await.unwrap();
    let ups: Vec<_> = (0..250u16).map(|i| insert(entry16(i))).collect();
    assert!(
        s.write_detailed(ups)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    assert_eq!(
        mock.0.lock().unwrap().writes,
        3,
        "250 updates in Writes of 100"
    );
    assert_eq!(mock.0.lock().unwrap().entries.len(), 250);

    // The device refuses Writes over 40 updates whole: 100 -> 50 + 50 -> 25 x 4.
    {
        let mut st = mock.0.lock().unwrap();
        st.refuse_above = Some(40);
        st.writes = 0;
    }
    let ups: Vec<_> = (250..350u16).map(|i| insert(entry16(i))).collect();
    assert!(
        s.write_detailed(ups)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    assert_eq!(mock.0.lock().unwrap().entries.len(), 350);
    assert_eq!(mock.0.lock().unwrap().writes, 1 + 2 + 4);

    // Failures answered without details: the split finds exactly which ones failed.
    {
        let mut st = mock.0.lock().unwrap();
        st.refuse_above = None;
        st.details_up_to = Some(1);
    }
    // Updates 3 and 8 are MODIFYs of entries that do not exist (NOT_FOUND); the INSERTs are
    // applied by the first attempt and answer ALREADY_EXISTS when retried (which callers take as
    // done).
    let ups: Vec<_> = (0..10u16)
        .map(|i| {
            if i == 3 || i == 8 {
                p4rt::modify(entry16(5000 + i))
            } else {
                insert(entry16(1000 + i))
            }
        })
        .collect();
    let r = s.write_detailed(ups).await.unwrap();
    assert_eq!(r.len(), 10);
    let not_found: Vec<usize> = r
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|e| e.code == tonic::Code::NotFound)
        .map(|e| e.index)
        .collect();
    assert_eq!(not_found, vec![3, 8]);
    for (i, r) in r.iter().enumerate() {
        if i != 3 && i != 8 {
            assert!(
                match r {
                    Ok(()) => true,
                    Err(e) => e.code == tonic::Code::AlreadyExists,
                },
                "update {i}: {r:?}"
            );
        }
    }
    assert_eq!(mock.0.lock().unwrap().entries.len(), 358);
    assert_eq!(s.mastership(), Mastership::Primary);
}

fn entry16(v: u16) -> p4::TableEntry {
    p4::TableEntry {
        table_id: 1,
        r#match: vec![p4::FieldMatch {
            field_id: 1,
            field_match_type: Some(p4::field_match::FieldMatchType::Exact(
                p4::field_match::Exact {
                    value: v.to_be_bytes().to_vec(),
                },
            )),
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn digest_is_acked_only_when_the_caller_confirms() {
    let mock = Mock::default();
    mock.0.lock().unwrap().send_digest = true;
    let srv = serve(mock.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = srv.addr;
    let (_s, mut q) = Session::connect(cfg(addr, 1)).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), q.digests.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.list.digest_id, d.list.list_id), (7, 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        mock.0.lock().unwrap().acks.is_empty(),
        "no ack before confirmation"
    );
    d.ack().await.unwrap();
    for _ in 0..50 {
        if !mock.0.lock().unwrap().acks.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mock.0.lock().unwrap().acks, vec![(7, 1)]);
}

#[tokio::test]
async fn reconnects_and_rearbitrates_after_server_restart() {
    let mock = Mock::default();
    let srv = serve(mock.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = srv.addr;
    let (s, _q) = Session::connect(cfg(addr, 3)).await.unwrap();
    let mut events = s.events();
    let mut role = s.watch_mastership();
    // the device goes away: streams end, the server stops and its port closes
    mock.kill_streams();
    let _ = srv.stop.send(());
    tokio::time::timeout(Duration::from_secs(5), srv.task)
        .await
        .expect("server stops")
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        role.wait_for(|m| *m == Mastership::Disconnected),
    )
    .await
    .expect("disconnect noticed")
    .unwrap();
    let _srv2 = serve(mock, addr).await;
    s.wait_primary(Duration::from_secs(10)).await.unwrap();
    assert!(s.reconnects() >= 1);
    let mut saw_closed = false;
    while let Ok(ev) = events.try_recv() {
        saw_closed |= matches!(ev, SessionEvent::StreamClosed { .. });
    }
    assert!(saw_closed, "StreamClosed event published");
    s.write(vec![insert(entry(1))]).await.unwrap();
}

#[tokio::test]
async fn request_log_has_one_text_entry_per_request() {
    let srv = serve(Mock::default(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(srv.addr, 4).log_to_dir(dir.path());
    let path = c.request_log.clone().unwrap();
    assert!(path.to_string_lossy().ends_with("-dev1.log"), "{path:?}");
    let (s, _q) = Session::connect(c).await.unwrap();
    s.write(vec![insert(entry(42))]).await.unwrap();
    s.read_all(vec![p4rt::entity::all_tables()]).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let rpcs: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| l.split_once("] ").unwrap().1)
        .collect();
    assert_eq!(rpcs, ["StreamChannel", "Write", "Read"], "{text}");
    assert!(text.contains("election_id"), "{text}");
    assert!(text.contains("low: 4"), "{text}");
    assert!(
        text.contains("value: \"*\""),
        "exact value 42 = '*': {text}"
    );
}

#[tokio::test]
async fn bad_config_and_unreachable_device_are_errors() {
    let e = Session::connect(cfg("127.0.0.1:9".parse().unwrap(), 0))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("election_id must be > 0"), "{e}");
    // a port nobody listens on
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let e = Session::connect(cfg(addr, 1)).await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
}

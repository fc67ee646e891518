//! The P4Runtime server in-process over loopback with a tonic client, using the project's P4Info
//! (`p4src/p4c-out/bmv2/dvipa.p4info.txtpb`), resolved by name like any client would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dvipa_switch::server::SwitchServer;
use dvipa_switch::{Pipeline, Verdict};
use p4rt::Schema;
use p4rt::codec::encode_u128;
use p4rt::proto::google::rpc;
use p4rt::proto::p4::config::v1 as cfg;
use p4rt::proto::p4::v1 as p4;
use p4rt::proto::p4::v1::p4_runtime_client::P4RuntimeClient;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const VIPA: [u8; 4] = [10, 0, 0, 100];
const CLIENT: [u8; 4] = [10, 0, 0, 1];

fn p4info() -> cfg::P4Info {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
    );
    Schema::from_file(path).unwrap().p4info().clone()
}

struct Harness {
    server: SwitchServer,
    addr: std::net::SocketAddr,
    schema: Schema,
}

async fn start() -> Harness {
    start_with(dvipa_switch::server::ServerOptions::default()).await
}

async fn start_with(opts: dvipa_switch::server::ServerOptions) -> Harness {
    start_with_info(opts, p4info()).await
}

/// The TNA P4Info (`pipe.`-prefixed, `p4src/tna/`), for the stratum-bfrt flavour.
fn tna_p4info() -> cfg::P4Info {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../p4src/tna/dvipa.p4info.txtpb"
    );
    Schema::from_file(path).unwrap().p4info().clone()
}

async fn start_with_info(opts: dvipa_switch::server::ServerOptions, info: cfg::P4Info) -> Harness {
    let server = SwitchServer::with_options(0, Arc::new(Pipeline::new()), opts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = server.service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    Harness {
        server,
        addr,
        schema: Schema::from_p4info(info).unwrap(),
    }
}

struct Ctl {
    client: P4RuntimeClient<Channel>,
    tx: mpsc::Sender<p4::StreamMessageRequest>,
    rx: tonic::Streaming<p4::StreamMessageResponse>,
    /// Election id sent in requests (`None`: unset).
    eid: Option<u64>,
    /// Role name sent in requests (empty: default role).
    role: String,
}

impl Harness {
    async fn client(&self) -> P4RuntimeClient<Channel> {
        P4RuntimeClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Opens a stream and arbitrates with `eid`; returns the first arbitration answer's status code.
    async fn controller(&self, eid: u64) -> (Ctl, i32) {
        let (c, a) = self.controller_in("", Some(eid)).await;
        (c, a.status.unwrap().code)
    }

    /// Opens a stream and arbitrates for `role` with `eid`; returns the first arbitration answer.
    async fn controller_in(
        &self,
        role: &str,
        eid: Option<u64>,
    ) -> (Ctl, p4::MasterArbitrationUpdate) {
        let mut client = self.client().await;
        let (tx, rx) = mpsc::channel(16);
        tx.send(arb_in(role, eid)).await.unwrap();
        let mut rx = client
            .stream_channel(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let a = next_arb(&mut rx).await;
        (
            Ctl {
                client,
                tx,
                rx,
                eid,
                role: role.into(),
            },
            a,
        )
    }

    /// Opens a stream, sends `first`, and returns the status the server ends the stream with.
    async fn refused(&self, first: p4::StreamMessageRequest) -> tonic::Status {
        let mut c = self.client().await;
        let (tx, rx) = mpsc::channel(4);
        tx.send(first).await.unwrap();
        let mut s = c
            .stream_channel(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let r = tokio::time::timeout(Duration::from_secs(5), s.message()).await;
        r.expect("no answer").expect_err("the stream was not ended")
    }

    fn table(&self, name: &str) -> &cfg::Table {
        self.schema.table(name).unwrap()
    }

    fn field(&self, table: &str, f: &str) -> u32 {
        self.schema.match_field(self.table(table), f).unwrap().id
    }

    fn exact(&self, table: &str, f: &str, v: u128, bits: u32) -> p4::FieldMatch {
        p4::FieldMatch {
            field_id: self.field(table, f),
            field_match_type: Some(p4::field_match::FieldMatchType::Exact(
                p4::field_match::Exact {
                    value: encode_u128(v, bits).unwrap(),
                },
            )),
        }
    }

    fn action(&self, name: &str, params: &[(&str, u128)]) -> Option<p4::TableAction> {
        let a = self.schema.action(name).unwrap();
        Some(p4::TableAction {
            r#type: Some(p4::table_action::Type::Action(p4::Action {
                action_id: a.preamble.as_ref().unwrap().id,
                params: params
                    .iter()
                    .map(|(n, v)| {
                        let p = self.schema.action_param(a, n).unwrap();
                        p4::action::Param {
                            param_id: p.id,
                            value: encode_u128(*v, p.bitwidth as u32).unwrap(),
                        }
                    })
                    .collect(),
            })),
        })
    }

    fn target_entry(&self, tid: u128, port: u128) -> p4::TableEntry {
        p4::TableEntry {
            table_id: self
                .table("IngressImpl.target")
                .preamble
                .as_ref()
                .unwrap()
                .id,
            r#match: vec![self.exact("IngressImpl.target", "meta.target_id", tid, 16)],
            action: self.action(
                "IngressImpl.forward_l2",
                &[("dmac", 0x0200_0000_0101), ("port", port)],
            ),
            ..Default::default()
        }
    }

    fn dpt_entry(&self, service: u128, slot: u128, tid: u128) -> p4::TableEntry {
        p4::TableEntry {
            table_id: self.table("IngressImpl.dpt").preamble.as_ref().unwrap().id,
            r#match: vec![
                self.exact("IngressImpl.dpt", "meta.service_id", service, 16),
                self.exact("IngressImpl.dpt", "meta.slot", slot, 16),
            ],
            action: self.action("IngressImpl.to_target", &[("target_id", tid)]),
            ..Default::default()
        }
    }

    fn dvipa_entry(&self, service: u128) -> p4::TableEntry {
        p4::TableEntry {
            table_id: self
                .table("IngressImpl.dvipa")
                .preamble
                .as_ref()
                .unwrap()
                .id,
            r#match: vec![
                self.exact(
                    "IngressImpl.dvipa",
                    "hdr.ipv4.dstAddr",
                    u32::from_be_bytes(VIPA).into(),
                    32,
                ),
                self.exact("IngressImpl.dvipa", "hdr.ipv4.protocol", 6, 8),
            ],
            priority: 1,
            action: self.action(
                "IngressImpl.distribute",
                &[("service_id", service), ("method", 0)],
            ),
            ..Default::default()
        }
    }

    fn crt_entry(&self, sport: u128, tid: u128, idle_ns: i64) -> p4::TableEntry {
        let t = "IngressImpl.crt";
        p4::TableEntry {
            table_id: self.table(t).preamble.as_ref().unwrap().id,
            r#match: vec![
                self.exact(t, "hdr.ipv4.srcAddr", u32::from_be_bytes(CLIENT).into(), 32),
                self.exact(t, "hdr.ipv4.dstAddr", u32::from_be_bytes(VIPA).into(), 32),
                self.exact(t, "hdr.ipv4.protocol", 6, 8),
                self.exact(t, "meta.l4_sport", sport, 16),
                self.exact(t, "meta.l4_dport", 80, 16),
            ],
            action: self.action("IngressImpl.to_target", &[("target_id", tid)]),
            idle_timeout_ns: idle_ns,
            ..Default::default()
        }
    }
}

fn arb(eid: u64) -> p4::StreamMessageRequest {
    arb_in("", Some(eid))
}

/// Arbitration for `role` (empty: default role, role unset) with `eid` (`None`: unset).
fn arb_in(role: &str, eid: Option<u64>) -> p4::StreamMessageRequest {
    p4::StreamMessageRequest {
        update: Some(p4::stream_message_request::Update::Arbitration(
            p4::MasterArbitrationUpdate {
                device_id: 0,
                role: (!role.is_empty()).then(|| p4::Role {
                    name: role.into(),
                    ..Default::default()
                }),
                election_id: eid.map(|low| p4::Uint128 { high: 0, low }),
                status: None,
            },
        )),
    }
}

async fn next_msg(
    rx: &mut tonic::Streaming<p4::StreamMessageResponse>,
    timeout: Duration,
) -> Option<p4::stream_message_response::Update> {
    tokio::time::timeout(timeout, rx.message())
        .await
        .ok()
        .and_then(|r| r.ok().flatten())
        .and_then(|m| m.update)
}

async fn next_arb(
    rx: &mut tonic::Streaming<p4::StreamMessageResponse>,
) -> p4::MasterArbitrationUpdate {
    loop {
        match next_msg(rx, Duration::from_secs(5)).await {
            Some(p4::stream_message_response::Update::Arbitration(a)) => return a,
            Some(_) => continue,
            None => panic!("no arbitration update"),
        }
    }
}

impl Ctl {
    async fn set_pipeline(&mut self, info: cfg::P4Info, cookie: u64) -> Result<(), tonic::Status> {
        self.set_pipeline_dc(info, b"{}".to_vec(), cookie).await
    }

    async fn set_pipeline_dc(
        &mut self,
        info: cfg::P4Info,
        device_config: Vec<u8>,
        cookie: u64,
    ) -> Result<(), tonic::Status> {
        self.client
            .set_forwarding_pipeline_config(p4::SetForwardingPipelineConfigRequest {
                device_id: 0,
                role: self.role.clone(),
                election_id: self.eid.map(|low| p4::Uint128 { high: 0, low }),
                action: p4::set_forwarding_pipeline_config_request::Action::VerifyAndCommit as i32,
                config: Some(p4::ForwardingPipelineConfig {
                    p4info: Some(info),
                    p4_device_config: device_config,
                    cookie: Some(p4::forwarding_pipeline_config::Cookie { cookie }),
                }),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    async fn write(
        &mut self,
        updates: Vec<(p4::update::Type, p4::entity::Entity)>,
    ) -> Result<(), tonic::Status> {
        self.client
            .write(p4::WriteRequest {
                device_id: 0,
                role: self.role.clone(),
                election_id: self.eid.map(|low| p4::Uint128 { high: 0, low }),
                updates: updates
                    .into_iter()
                    .map(|(t, e)| p4::Update {
                        r#type: t as i32,
                        entity: Some(p4::Entity { entity: Some(e) }),
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    async fn read(&mut self, e: p4::entity::Entity) -> Vec<p4::entity::Entity> {
        let mut s = self
            .client
            .read(p4::ReadRequest {
                device_id: 0,
                role: self.role.clone(),
                entities: vec![p4::Entity { entity: Some(e) }],
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = s.message().await.unwrap() {
            out.extend(r.entities.into_iter().filter_map(|e| e.entity));
        }
        out
    }
}

use p4::entity::Entity as E;
use p4::update::Type::{Delete, Insert, Modify};

/// Per-update canonical codes from a failed Write's `grpc-status-details-bin`.
fn update_messages(s: &tonic::Status) -> Vec<String> {
    let st = rpc::Status::decode(s.details()).unwrap();
    st.details
        .iter()
        .map(|a| p4::Error::decode(a.value.as_slice()).unwrap().message)
        .collect()
}

fn update_codes(s: &tonic::Status) -> Vec<i32> {
    let st = rpc::Status::decode(s.details()).unwrap();
    st.details
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, "type.googleapis.com/p4.v1.Error");
            p4::Error::decode(a.value.as_slice())
                .unwrap()
                .canonical_code
        })
        .collect()
}

fn syn(sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xfe])
        .ipv4(CLIENT, VIPA, 64)
        .tcp(sport, 80, 1, 1000)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

#[tokio::test]
async fn arbitration_primary_is_highest_election_id() {
    let h = start().await;
    let (mut a, code_a) = h.controller(1).await;
    assert_eq!(code_a, tonic::Code::Ok as i32);
    let (mut b, code_b) = h.controller(5).await;
    assert_eq!(code_b, tonic::Code::Ok as i32);
    // A is told it lost primary to election id 5.
    let upd = next_arb(&mut a.rx).await;
    assert_eq!(upd.status.unwrap().code, tonic::Code::AlreadyExists as i32);
    assert_eq!(upd.election_id.unwrap().low, 5);
    // Writes from a backup are refused.
    let err = a.set_pipeline(p4info(), 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    b.set_pipeline(p4info(), 1).await.unwrap();
    let err = a
        .write(vec![(Insert, E::TableEntry(h.target_entry(1, 2)))])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // A third controller reusing id 5 is rejected.
    let mut c = h.client().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(arb(5)).await.unwrap();
    let mut crx = c
        .stream_channel(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let e = crx.message().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // When B leaves, A becomes primary and can write.
    drop(b);
    let upd = next_arb(&mut a.rx).await;
    assert_eq!(upd.status.unwrap().code, tonic::Code::Ok as i32);
    a.write(vec![(Insert, E::TableEntry(h.target_entry(1, 2)))])
        .await
        .unwrap();
}

fn code_of(a: &p4::MasterArbitrationUpdate) -> tonic::Code {
    tonic::Code::from_i32(a.status.as_ref().unwrap().code)
}

fn eid_of(a: &p4::MasterArbitrationUpdate) -> Option<u64> {
    a.election_id.as_ref().map(|e| e.low)
}

fn role_of(a: &p4::MasterArbitrationUpdate) -> Option<&str> {
    a.role.as_ref().map(|r| r.name.as_str())
}

/// No arbitration update arrives on `rx` within `d` (other messages are skipped).
async fn no_arb(rx: &mut tonic::Streaming<p4::StreamMessageResponse>, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(m) = tokio::time::timeout_at(deadline, rx.message()).await {
        if let Ok(Some(p4::StreamMessageResponse {
            update: Some(p4::stream_message_response::Update::Arbitration(a)),
        })) = m
        {
            panic!("unexpected arbitration update {a:?}");
        }
    }
}

#[tokio::test]
async fn roles_have_their_own_primary_and_backups() {
    let h = start().await;
    // Role "dvipa": A (5) primary, B (3) backup told the primary's id; the answers name the role.
    let (mut a, arb_a) = h.controller_in("dvipa", Some(5)).await;
    assert_eq!(code_of(&arb_a), tonic::Code::Ok);
    assert_eq!(role_of(&arb_a), Some("dvipa"));
    assert_eq!(eid_of(&arb_a), Some(5));
    let (mut b, arb_b) = h.controller_in("dvipa", Some(3)).await;
    assert_eq!(code_of(&arb_b), tonic::Code::AlreadyExists);
    assert_eq!(role_of(&arb_b), Some("dvipa"));
    assert_eq!(eid_of(&arb_b), Some(5));
    // The default role and role "stats" arbitrate independently: D (1) is the default role's
    // primary although A's id is higher; S reuses A's id 5 in another role.
    let (mut d, arb_d) = h.controller_in("", Some(1)).await;
    assert_eq!(code_of(&arb_d), tonic::Code::Ok);
    assert_eq!(role_of(&arb_d), None);
    let (mut s, arb_s) = h.controller_in("stats", Some(5)).await;
    assert_eq!(code_of(&arb_s), tonic::Code::Ok);
    // A's id is taken within "dvipa" only.
    let e = h.refused(arb_in("dvipa", Some(5))).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Nobody else was told anything: B joining as a backup only answers B.
    no_arb(&mut a.rx, Duration::from_millis(100)).await;
    no_arb(&mut d.rx, Duration::from_millis(1)).await;

    // Writes and pipeline pushes: the backup of "dvipa" is refused, every role's primary is not.
    let err = b.set_pipeline(p4info(), 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    a.set_pipeline(p4info(), 1).await.unwrap();
    let err = b
        .write(vec![(Insert, E::TableEntry(h.target_entry(1, 2)))])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("role \"dvipa\""),
        "{}",
        err.message()
    );
    a.write(vec![(Insert, E::TableEntry(h.target_entry(1, 2)))])
        .await
        .unwrap();
    d.write(vec![(Insert, E::TableEntry(h.target_entry(2, 2)))])
        .await
        .unwrap();
    s.write(vec![(Insert, E::TableEntry(h.target_entry(3, 2)))])
        .await
        .unwrap();
    // The writer is identified by (device, role, election id): D's id in role "dvipa", or a role
    // without controllers, is not a primary.
    let mut raw = h.client().await;
    for role in ["dvipa", "nobody"] {
        let err = raw
            .write(p4::WriteRequest {
                device_id: 0,
                role: role.into(),
                election_id: Some(p4::Uint128 { high: 0, low: 1 }),
                updates: vec![p4::Update {
                    r#type: Insert as i32,
                    entity: Some(p4::Entity {
                        entity: Some(E::TableEntry(h.target_entry(4, 2))),
                    }),
                }],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        if role == "nobody" {
            assert!(err.message().contains("no primary"), "{}", err.message());
        }
    }
    // Reads work for any role, backups included, and see every role's writes.
    let t = h.table("IngressImpl.target").preamble.as_ref().unwrap().id;
    let read = b
        .read(E::TableEntry(p4::TableEntry {
            table_id: t,
            ..Default::default()
        }))
        .await;
    assert_eq!(read.len(), 3);

    // A leaves: B becomes the primary of "dvipa" and is told so; other roles hear nothing.
    drop(a);
    let upd = next_arb(&mut b.rx).await;
    assert_eq!(code_of(&upd), tonic::Code::Ok);
    assert_eq!(eid_of(&upd), Some(3));
    assert_eq!(role_of(&upd), Some("dvipa"));
    b.write(vec![(Delete, E::TableEntry(h.target_entry(1, 2)))])
        .await
        .unwrap();
    no_arb(&mut d.rx, Duration::from_millis(100)).await;
    no_arb(&mut s.rx, Duration::from_millis(1)).await;
}

#[tokio::test]
async fn role_arbitration_rules() {
    let h = start().await;
    // A client without an election id never becomes primary: alone it hears NOT_FOUND, with no
    // election id since there never was a primary.
    let (mut n, arb_n) = h.controller_in("dvipa", None).await;
    assert_eq!(code_of(&arb_n), tonic::Code::NotFound);
    assert_eq!(eid_of(&arb_n), None);
    let err = n.set_pipeline(p4info(), 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // A second one without an id is fine (only set ids must be unique).
    let (_n2, arb_n2) = h.controller_in("dvipa", None).await;
    assert_eq!(code_of(&arb_n2), tonic::Code::NotFound);
    // P (2) becomes primary; the id-less backups are told ALREADY_EXISTS with P's id.
    let (mut p, arb_p) = h.controller_in("dvipa", Some(2)).await;
    assert_eq!(code_of(&arb_p), tonic::Code::Ok);
    let upd = next_arb(&mut n.rx).await;
    assert_eq!(code_of(&upd), tonic::Code::AlreadyExists);
    assert_eq!(eid_of(&upd), Some(2));
    // Q (1) joins as a backup, then re-arbitrates with 7 on the same stream and takes over: P is
    // told ALREADY_EXISTS with 7, Q OK.
    let (mut q, arb_q) = h.controller_in("dvipa", Some(1)).await;
    assert_eq!(code_of(&arb_q), tonic::Code::AlreadyExists);
    q.tx.send(arb_in("dvipa", Some(7))).await.unwrap();
    q.eid = Some(7);
    let upd = next_arb(&mut q.rx).await;
    assert_eq!((code_of(&upd), eid_of(&upd)), (tonic::Code::Ok, Some(7)));
    let upd = next_arb(&mut p.rx).await;
    assert_eq!(
        (code_of(&upd), eid_of(&upd)),
        (tonic::Code::AlreadyExists, Some(7))
    );
    q.set_pipeline(p4info(), 1).await.unwrap();
    let err = p
        .write(vec![(Insert, E::TableEntry(h.target_entry(1, 2)))])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Changing the role on a live stream ends it with FAILED_PRECONDITION.
    p.tx.send(arb_in("other", Some(2))).await.unwrap();
    let e = loop {
        match tokio::time::timeout(Duration::from_secs(5), p.rx.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Err(e)) => break e,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    // Q and P gone: the id-less backup hears NOT_FOUND with the highest id seen (7).
    drop(q);
    let upd = loop {
        let u = next_arb(&mut n.rx).await;
        if code_of(&u) == tonic::Code::NotFound {
            break u;
        }
    };
    assert_eq!(eid_of(&upd), Some(7));
    // Role configs are not supported: refused with INVALID_ARGUMENT and a clear message.
    let mut with_config = arb_in("dvipa", Some(9));
    if let Some(p4::stream_message_request::Update::Arbitration(a)) = &mut with_config.update {
        a.role.as_mut().unwrap().config = Some(prost_types::Any {
            type_url: "type.googleapis.com/example.RoleConfig".into(),
            value: vec![],
        });
    }
    let e = h.refused(with_config).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("role configs are not supported"),
        "{}",
        e.message()
    );
    // Another device id: NOT_FOUND.
    let mut other_dev = arb_in("dvipa", Some(9));
    if let Some(p4::stream_message_request::Update::Arbitration(a)) = &mut other_dev.update {
        a.device_id = 42;
    }
    assert_eq!(h.refused(other_dev).await.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn digests_and_idle_notifications_go_to_every_role_primary() {
    let h = start().await;
    let (mut a, _) = h.controller_in("dvipa", Some(5)).await;
    let (mut b, _) = h.controller_in("dvipa", Some(3)).await;
    let (mut d, _) = h.controller_in("", Some(1)).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    let learn = h
        .schema
        .digest("learn_t")
        .unwrap()
        .preamble
        .as_ref()
        .unwrap()
        .id;
    let mut ups = vec![
        (Insert, E::TableEntry(h.target_entry(1, 2))),
        (Insert, E::TableEntry(h.dvipa_entry(7))),
        (Insert, E::TableEntry(h.crt_entry(4444, 1, 200_000_000))),
        (
            Insert,
            E::DigestEntry(p4::DigestEntry {
                digest_id: learn,
                config: Some(p4::digest_entry::Config {
                    max_timeout_ns: 0,
                    max_list_size: 1,
                    ack_timeout_ns: 1_000_000_000,
                }),
            }),
        ),
    ];
    for slot in 0..256 {
        ups.push((Insert, E::TableEntry(h.dpt_entry(7, slot, 1))));
    }
    a.write(ups).await.unwrap();
    h.server.inject(1, &syn(3000));
    // The primaries of "dvipa" and of the default role each get the digest list and the idle
    // notification; the backup gets neither.
    for rx in [&mut a.rx, &mut d.rx] {
        let (mut digest, mut idle) = (false, false);
        while !(digest && idle) {
            match next_msg(rx, Duration::from_secs(3)).await {
                Some(p4::stream_message_response::Update::Digest(l)) => {
                    assert_eq!(l.data.len(), 1);
                    digest = true;
                }
                Some(p4::stream_message_response::Update::IdleTimeoutNotification(n)) => {
                    assert_eq!(n.table_entry[0].r#match, h.crt_entry(4444, 1, 0).r#match);
                    idle = true;
                }
                m => panic!("{m:?}"),
            }
        }
    }
    assert!(
        next_msg(&mut b.rx, Duration::from_millis(300))
            .await
            .is_none()
    );
    // PacketOut is answered with a StreamError carrying it: UNIMPLEMENTED for the primary (no CPU
    // port), PERMISSION_DENIED for a backup.
    let po = p4::PacketOut {
        payload: b"x".to_vec(),
        metadata: vec![],
    };
    for (c, code) in [
        (&mut a, tonic::Code::Unimplemented),
        (&mut b, tonic::Code::PermissionDenied),
    ] {
        c.tx.send(p4::StreamMessageRequest {
            update: Some(p4::stream_message_request::Update::Packet(po.clone())),
        })
        .await
        .unwrap();
        let err = loop {
            match next_msg(&mut c.rx, Duration::from_secs(3)).await {
                Some(p4::stream_message_response::Update::Error(e)) => break e,
                Some(_) => continue,
                None => panic!("no stream error"),
            }
        };
        assert_eq!(err.canonical_code, code as i32);
        assert_eq!(
            err.details,
            Some(p4::stream_error::Details::PacketOut(p4::PacketOutError {
                packet_out: Some(po.clone())
            }))
        );
    }
}

#[tokio::test]
async fn pipeline_config_resolution_and_cookie() {
    let h = start().await;
    let (mut a, _) = h.controller(1).await;
    // Writes before a pipeline is installed fail with FAILED_PRECONDITION.
    let e = a
        .write(vec![(Insert, E::TableEntry(h.target_entry(1, 2)))])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    // Another program (no crt table, no digest) is rejected with a message naming every
    // mismatch at once (the contract's check, as the controller's).
    let mut other = p4info();
    other
        .tables
        .retain(|t| t.preamble.as_ref().unwrap().name != "IngressImpl.crt");
    other.digests.clear();
    let e = a.set_pipeline(other, 1).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("table `IngressImpl.crt`"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("digest `learn_t`"), "{}", e.message());
    // Different numeric ids than the committed P4Info still resolve by name.
    let mut renumbered = p4info();
    for t in &mut renumbered.tables {
        t.preamble.as_mut().unwrap().id += 0x100;
    }
    a.set_pipeline(renumbered.clone(), 42).await.unwrap();
    let got = a
        .client
        .get_forwarding_pipeline_config(p4::GetForwardingPipelineConfigRequest {
            device_id: 0,
            response_type: p4::get_forwarding_pipeline_config_request::ResponseType::CookieOnly
                as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(got.cookie.unwrap().cookie, 42);
    assert!(got.p4info.is_none());
    let got = a
        .client
        .get_forwarding_pipeline_config(p4::GetForwardingPipelineConfigRequest {
            device_id: 0,
            response_type: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(got.p4info.unwrap(), renumbered);
}

#[tokio::test]
async fn write_errors_are_per_update_and_read_wildcards() {
    let h = start().await;
    let (mut a, _) = h.controller(1).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    a.write(vec![
        (Insert, E::TableEntry(h.target_entry(1, 2))),
        (Insert, E::TableEntry(h.dpt_entry(7, 3, 1))),
    ])
    .await
    .unwrap();
    let mut too_wide = h.target_entry(9, 2);
    too_wide.r#match[0] = h.exact("IngressImpl.target", "meta.target_id", 0x1_0000, 17);
    let mut missing_field = h.dpt_entry(7, 4, 1);
    missing_field.r#match.pop();
    let mut noaction_entry = h.dpt_entry(7, 5, 1);
    noaction_entry.action = h.action("NoAction", &[]);
    let e = a
        .write(vec![
            (Insert, E::TableEntry(h.target_entry(1, 3))), // duplicate
            (Insert, E::TableEntry(h.target_entry(2, 3))), // fine
            (Delete, E::TableEntry(h.target_entry(77, 3))), // absent
            (Modify, E::TableEntry(h.target_entry(78, 3))), // absent
            (Insert, E::TableEntry(too_wide)),
            (Insert, E::TableEntry(missing_field)),
            (Insert, E::TableEntry(noaction_entry)), // @defaultonly
        ])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unknown);
    use tonic::Code as C;
    assert_eq!(
        update_codes(&e),
        vec![
            C::AlreadyExists as i32,
            C::Ok as i32,
            C::NotFound as i32,
            C::NotFound as i32,
            C::InvalidArgument as i32,
            C::InvalidArgument as i32,
            C::InvalidArgument as i32,
        ]
    );
    // The width error names the field by its P4Info id and name.
    let id = h.field("IngressImpl.target", "meta.target_id");
    let msgs = update_messages(&e);
    assert!(
        msgs[4].contains(&format!("match field {id} (meta.target_id): ")),
        "{msgs:?}"
    );
    let mut wide_dst = h.crt_entry(1000, 1, 0);
    let dst = h.field("IngressImpl.crt", "hdr.ipv4.dstAddr");
    let i = wide_dst
        .r#match
        .iter()
        .position(|m| m.field_id == dst)
        .unwrap();
    wide_dst.r#match[i] = h.exact("IngressImpl.crt", "hdr.ipv4.dstAddr", 1 << 32, 33);
    let e = a
        .write(vec![(Insert, E::TableEntry(wide_dst))])
        .await
        .unwrap_err();
    let msgs = update_messages(&e);
    assert!(
        msgs[0].starts_with(&format!(
            "IngressImpl.crt: match field {dst} (hdr.ipv4.dstAddr): "
        )),
        "{msgs:?}"
    );
    eprintln!("width error: {}", msgs[0]);
    // Wildcard read of all tables: 2 targets + 1 dpt entry, with their contents.
    let all = a.read(E::TableEntry(p4::TableEntry::default())).await;
    assert_eq!(all.len(), 3);
    let targets = a
        .read(E::TableEntry(p4::TableEntry {
            table_id: h.table("IngressImpl.target").preamble.as_ref().unwrap().id,
            ..Default::default()
        }))
        .await;
    let mut got: Vec<p4::TableEntry> = targets
        .into_iter()
        .map(|e| match e {
            E::TableEntry(t) => t,
            _ => panic!(),
        })
        .collect();
    got.sort_by_key(|t| t.r#match[0].clone().encode_to_vec());
    assert_eq!(got, vec![h.target_entry(1, 2), h.target_entry(2, 3)]);
    // Default entry read.
    let d = a
        .read(E::TableEntry(p4::TableEntry {
            table_id: h.table("IngressImpl.target").preamble.as_ref().unwrap().id,
            is_default_action: true,
            ..Default::default()
        }))
        .await;
    match &d[0] {
        E::TableEntry(t) => assert_eq!(t.action, h.action("IngressImpl.drop", &[])),
        _ => panic!(),
    }
}

/// Fills `target` (4,096 entries), then writes a Modify and one INSERT too many; returns the
/// Write's error.
async fn overfill_target(h: &Harness) -> tonic::Status {
    let (mut a, _) = h.controller(1).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    let size = h.table("IngressImpl.target").size as u128;
    for chunk in 0..size / 512 {
        let ups: Vec<_> = (chunk * 512..(chunk + 1) * 512)
            .map(|i| (Insert, E::TableEntry(h.target_entry(i, 1))))
            .collect();
        a.write(ups).await.unwrap();
    }
    a.write(vec![
        (Modify, E::TableEntry(h.target_entry(0, 3))),
        (Insert, E::TableEntry(h.target_entry(size, 1))),
    ])
    .await
    .unwrap_err()
}

fn update_errors(s: &tonic::Status) -> Vec<p4::Error> {
    rpc::Status::decode(s.details())
        .unwrap()
        .details
        .iter()
        .map(|a| p4::Error::decode(a.value.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn table_full_is_resource_exhausted() {
    let h = start().await;
    let e = overfill_target(&h).await;
    assert_eq!(e.code(), tonic::Code::Unknown);
    assert_eq!(
        update_codes(&e),
        vec![0, tonic::Code::ResourceExhausted as i32]
    );
}

/// `--flavor bmv2`: a full table is answered as simple_switch_grpc answers it (observed on bmv2
/// 1.15 / PI f96af95): gRPC UNKNOWN, per update canonical code UNKNOWN, bmv2's message and space.
#[tokio::test]
async fn table_full_bmv2_flavor_answers_like_simple_switch_grpc() {
    use dvipa_switch::server::{Flavor, ServerOptions};
    let h = start_with(ServerOptions {
        flavor: Flavor::Bmv2,
        ..Default::default()
    })
    .await;
    let e = overfill_target(&h).await;
    assert_eq!(e.code(), tonic::Code::Unknown);
    let errs = update_errors(&e);
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].canonical_code, 0);
    assert_eq!(errs[1].canonical_code, tonic::Code::Unknown as i32);
    assert_eq!(errs[1].message, "Error when adding match entry to target");
    assert_eq!(errs[1].space, "ALL-sswitch-p4org");
    assert_eq!(errs[1].code, 0);
}

/// A Write larger than the switch's per-Write limit is refused whole with a status naming the
/// limit, and nothing of it is applied (an answer with one error per update would not fit in a
/// client's header limit).
#[tokio::test]
async fn oversized_write_is_refused_whole() {
    use dvipa_switch::server::ServerOptions;
    let h = start_with(ServerOptions {
        max_write_updates: 100,
        ..Default::default()
    })
    .await;
    let (mut a, _) = h.controller(1).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    let ups: Vec<_> = (0..101u128)
        .map(|i| (Insert, E::TableEntry(h.target_entry(i, 1))))
        .collect();
    let e = a.write(ups).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("limit of 100 updates"),
        "{}",
        e.message()
    );
    assert_eq!(h.server.pipeline().tables().target.len(), 0);
    assert_eq!(
        h.server
            .stats()
            .writes_too_large
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // At the limit it is applied.
    let ups: Vec<_> = (0..100u128)
        .map(|i| (Insert, E::TableEntry(h.target_entry(i, 1))))
        .collect();
    a.write(ups).await.unwrap();
    assert_eq!(h.server.pipeline().tables().target.len(), 100);
}

#[tokio::test]
async fn digests_batch_dedupe_ack_and_counters() {
    let h = start().await;
    let (mut a, _) = h.controller(1).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    let mut ups = vec![
        (Insert, E::TableEntry(h.target_entry(1, 2))),
        (Insert, E::TableEntry(h.dvipa_entry(7))),
    ];
    for slot in 0..256 {
        ups.push((Insert, E::TableEntry(h.dpt_entry(7, slot, 1))));
    }
    a.write(ups).await.unwrap();
    let learn = h
        .schema
        .digest("learn_t")
        .unwrap()
        .preamble
        .as_ref()
        .unwrap()
        .id;
    // Without a DigestEntry nothing is delivered.
    assert!(matches!(
        h.server.inject(1, &syn(1000)).0,
        Verdict::Forward(2)
    ));
    assert!(
        next_msg(&mut a.rx, Duration::from_millis(300))
            .await
            .is_none()
    );
    a.write(vec![(
        Insert,
        E::DigestEntry(p4::DigestEntry {
            digest_id: learn,
            config: Some(p4::digest_entry::Config {
                max_timeout_ns: 50_000_000,
                max_list_size: 10,
                ack_timeout_ns: 60_000_000_000,
            }),
        }),
    )])
    .await
    .unwrap();
    for sport in 2000..2005 {
        h.server.inject(1, &syn(sport));
    }
    h.server.inject(1, &syn(2000)); // duplicate of an unacked digest: suppressed
    let list = match next_msg(&mut a.rx, Duration::from_secs(2)).await {
        Some(p4::stream_message_response::Update::Digest(d)) => d,
        m => panic!("{m:?}"),
    };
    assert_eq!(list.digest_id, learn);
    assert_eq!(list.data.len(), 5);
    let first = match &list.data[0].data {
        Some(p4::p4_data::Data::Struct(s)) => s.members.clone(),
        d => panic!("{d:?}"),
    };
    let bits: Vec<Vec<u8>> = first
        .iter()
        .map(|m| match &m.data {
            Some(p4::p4_data::Data::Bitstring(b)) => b.clone(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(bits[0], vec![10, 0, 0, 1]);
    assert_eq!(bits[1], vec![10, 0, 0, 100]);
    assert_eq!(bits[2], vec![6]);
    assert_eq!(bits[3], 2000u16.to_be_bytes().to_vec());
    assert_eq!(bits[4], vec![80]);
    assert_eq!(bits[5], vec![7]);
    assert_eq!(bits[6], vec![1]);
    assert_eq!(bits[7], vec![0]);
    assert!(
        next_msg(&mut a.rx, Duration::from_millis(200))
            .await
            .is_none()
    );
    // After the ack the same connection is reported again.
    a.tx.send(p4::StreamMessageRequest {
        update: Some(p4::stream_message_request::Update::DigestAck(
            p4::DigestListAck {
                digest_id: learn,
                list_id: list.list_id,
            },
        )),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.server.inject(1, &syn(2000));
    match next_msg(&mut a.rx, Duration::from_secs(2)).await {
        Some(p4::stream_message_response::Update::Digest(d)) => assert_eq!(d.data.len(), 1),
        m => panic!("{m:?}"),
    }
    // Counters: service_counter[7] saw 7 packets; target 1's direct counter 7 as well.
    let sc = h
        .schema
        .counter("IngressImpl.service_counter")
        .unwrap()
        .preamble
        .as_ref()
        .unwrap()
        .id;
    let c = a
        .read(E::CounterEntry(p4::CounterEntry {
            counter_id: sc,
            index: Some(p4::Index { index: 7 }),
            data: None,
        }))
        .await;
    match &c[0] {
        E::CounterEntry(c) => assert_eq!(c.data.unwrap().packet_count, 8),
        _ => panic!(),
    }
    let dc = a
        .read(E::DirectCounterEntry(p4::DirectCounterEntry {
            table_entry: Some(p4::TableEntry {
                table_id: h.table("IngressImpl.target").preamble.as_ref().unwrap().id,
                ..Default::default()
            }),
            data: None,
        }))
        .await;
    match &dc[0] {
        E::DirectCounterEntry(c) => {
            let d = c.data.unwrap();
            assert_eq!(d.packet_count, 8);
            assert_eq!(d.byte_count, 8 * syn(1).len() as i64);
        }
        _ => panic!(),
    }
}

/// `--flavor stratum-bfrt` (issue 16): only a BfPipelineConfig for the TNA P4Info is accepted;
/// digests come without a DigestEntry, are never held for an ack (the same flow digests again),
/// a DigestListAck changes nothing; no idle-timeout notification is sent.
#[tokio::test]
async fn stratum_bfrt_flavor_takes_a_bf_pipeline_config_acks_digests_itself_and_never_notifies_idle()
 {
    use dvipa_switch::server::{Flavor, ServerOptions};
    use p4rt::tofino::{Compiled, Format};
    let opts = ServerOptions {
        flavor: Flavor::StratumBfrt,
        ..Default::default()
    };
    let h = start_with_info(opts, tna_p4info()).await;
    let (mut a, _) = h.controller(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../p4src/tna/dvipa.p4info.txtpb"
    ))
    .unwrap();
    p4rt::tofino::write_stand_in_output(tmp.path(), &text, "dvipa").unwrap();
    let compiled = Compiled::from_dir(tmp.path(), None).unwrap();
    let bf = compiled.pack(Format::BfPipelineConfig).unwrap();
    // Refused: a bmv2 JSON, a PI-packed config, the v1model P4Info, another program's bfrt.json.
    let e = a
        .set_pipeline_dc(tna_p4info(), b"{}".to_vec(), 1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("p4_device_config"), "{}", e.message());
    let pi = compiled.pack(Format::Pi).unwrap();
    let e = a.set_pipeline_dc(tna_p4info(), pi, 1).await.unwrap_err();
    assert!(e.message().contains("PI-packed"), "{}", e.message());
    let e = a
        .set_pipeline_dc(p4info(), bf.clone(), 1)
        .await
        .unwrap_err();
    assert!(
        e.message().contains("not `pipe.`-prefixed"),
        "{}",
        e.message()
    );
    let mut other = compiled.clone();
    other.bfrt = br#"{"tables":[{"name":"pipe.Ingress.forward"}]}"#.to_vec();
    let e = a
        .set_pipeline_dc(
            tna_p4info(),
            other.pack(Format::BfPipelineConfig).unwrap(),
            1,
        )
        .await
        .unwrap_err();
    assert!(
        e.message()
            .contains("does not describe pipe.IngressImpl.dvipa"),
        "{}",
        e.message()
    );
    a.set_pipeline_dc(tna_p4info(), bf, 1).await.unwrap();

    let mut ups = vec![
        (Insert, E::TableEntry(h.target_entry(1, 2))),
        (Insert, E::TableEntry(h.dvipa_entry(7))),
        (Insert, E::TableEntry(h.crt_entry(5555, 1, 200_000_000))),
    ];
    for slot in 0..256 {
        ups.push((Insert, E::TableEntry(h.dpt_entry(7, slot, 1))));
    }
    a.write(ups).await.unwrap();
    let learn = h.schema.digest_layout("learn_t").unwrap().id;
    let mut digests = 0;
    for round in 0..3 {
        // No DigestEntry written: the server digests anyway; never acked by us.
        h.server.inject(1, &syn(3000));
        let list = loop {
            match next_msg(&mut a.rx, Duration::from_secs(2)).await {
                Some(p4::stream_message_response::Update::Digest(d)) => break d,
                Some(p4::stream_message_response::Update::IdleTimeoutNotification(_)) => {
                    panic!("stratum-bfrt sends no idle notifications")
                }
                Some(_) => continue,
                None => panic!("round {round}: no digest list"),
            }
        };
        assert_eq!(list.digest_id, learn);
        assert_eq!(list.data.len(), 1);
        digests += 1;
        if round == 1 {
            // An ack is ignored (nothing changes).
            a.tx.send(p4::StreamMessageRequest {
                update: Some(p4::stream_message_request::Update::DigestAck(
                    p4::DigestListAck {
                        digest_id: learn,
                        list_id: list.list_id,
                    },
                )),
            })
            .await
            .unwrap();
        }
    }
    assert_eq!(
        digests, 3,
        "the same flow digests again: nothing waits for an ack"
    );
    // The CRT entry (idle timeout 200 ms) stays silent for 1.5 s.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        if let Some(p4::stream_message_response::Update::IdleTimeoutNotification(_)) =
            next_msg(&mut a.rx, Duration::from_millis(200)).await
        {
            panic!("stratum-bfrt sends no idle notifications");
        }
    }
}

#[tokio::test]
async fn idle_timeout_notifies_and_repeats_while_idle() {
    let h = start().await;
    let (mut a, _) = h.controller(1).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    let t0 = Instant::now();
    a.write(vec![
        (Insert, E::TableEntry(h.crt_entry(5555, 1, 300_000_000))),
        (Insert, E::TableEntry(h.crt_entry(5556, 1, 0))),
    ])
    .await
    .unwrap();
    let n = match next_msg(&mut a.rx, Duration::from_secs(3)).await {
        Some(p4::stream_message_response::Update::IdleTimeoutNotification(n)) => n,
        m => panic!("{m:?}"),
    };
    let first = t0.elapsed();
    assert!(
        first >= Duration::from_millis(300) && first < Duration::from_millis(900),
        "{first:?}"
    );
    assert_eq!(n.table_entry.len(), 1);
    assert_eq!(n.table_entry[0].r#match, h.crt_entry(5555, 1, 0).r#match);
    match next_msg(&mut a.rx, Duration::from_secs(3)).await {
        Some(p4::stream_message_response::Update::IdleTimeoutNotification(n)) => {
            assert_eq!(n.table_entry.len(), 1);
        }
        m => panic!("{m:?}"),
    }
    let second = t0.elapsed() - first;
    assert!(second >= Duration::from_millis(900), "{second:?}");
    // Deleting the entry stops them.
    a.write(vec![(Delete, E::TableEntry(h.crt_entry(5555, 1, 0)))])
        .await
        .unwrap();
    assert!(
        next_msg(&mut a.rx, Duration::from_millis(1500))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn idle_notify_once_sends_one_per_idle_period_even_with_no_primary() {
    let h = start().await;
    h.server.set_idle_notify_once(true);
    let (mut a, _) = h.controller(1).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    a.write(vec![(
        Insert,
        E::TableEntry(h.crt_entry(5555, 1, 300_000_000)),
    )])
    .await
    .unwrap();
    match next_msg(&mut a.rx, Duration::from_secs(3)).await {
        Some(p4::stream_message_response::Update::IdleTimeoutNotification(n)) => {
            assert_eq!(n.table_entry.len(), 1);
        }
        m => panic!("{m:?}"),
    }
    // Not repeated while the entry stays idle.
    assert!(
        next_msg(&mut a.rx, Duration::from_millis(1500))
            .await
            .is_none()
    );
    // A MODIFY starts a new idle period: one more.
    a.write(vec![(
        Modify,
        E::TableEntry(h.crt_entry(5555, 1, 300_000_000)),
    )])
    .await
    .unwrap();
    match next_msg(&mut a.rx, Duration::from_secs(3)).await {
        Some(p4::stream_message_response::Update::IdleTimeoutNotification(_)) => {}
        m => panic!("{m:?}"),
    }
    // A new entry idles with no primary connected: its notification is spent then, and the
    // next primary hears nothing.
    a.write(vec![(
        Insert,
        E::TableEntry(h.crt_entry(5556, 1, 300_000_000)),
    )])
    .await
    .unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (mut b, _) = h.controller(2).await;
    assert!(
        next_msg(&mut b.rx, Duration::from_millis(1500))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn digest_lists_respect_max_list_size_and_timeout() {
    let h = start().await;
    let (mut a, _) = h.controller(1).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    let mut ups = vec![
        (Insert, E::TableEntry(h.target_entry(1, 2))),
        (Insert, E::TableEntry(h.dvipa_entry(7))),
    ];
    for slot in 0..256 {
        ups.push((Insert, E::TableEntry(h.dpt_entry(7, slot, 1))));
    }
    let learn = h
        .schema
        .digest("learn_t")
        .unwrap()
        .preamble
        .as_ref()
        .unwrap()
        .id;
    ups.push((
        Insert,
        E::DigestEntry(p4::DigestEntry {
            digest_id: learn,
            config: Some(p4::digest_entry::Config {
                max_timeout_ns: 200_000_000,
                max_list_size: 2,
                ack_timeout_ns: 1_000_000_000,
            }),
        }),
    ));
    a.write(ups).await.unwrap();
    let t0 = Instant::now();
    for sport in 3000..3005 {
        h.server.inject(1, &syn(sport));
    }
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    while sizes.iter().sum::<usize>() < 5 {
        match next_msg(&mut a.rx, Duration::from_secs(2)).await {
            Some(p4::stream_message_response::Update::Digest(d)) => {
                sizes.push(d.data.len());
                ids.push(d.list_id);
            }
            m => panic!("{m:?}"),
        }
    }
    // Two full lists at once, the remainder when max_timeout_ns expires.
    assert_eq!(sizes, vec![2, 2, 1]);
    assert!(
        t0.elapsed() >= Duration::from_millis(180),
        "{:?}",
        t0.elapsed()
    );
    ids.dedup();
    assert_eq!(ids.len(), 3, "list ids are distinct");
    // Reading the DigestEntry returns its config.
    let d = a
        .read(E::DigestEntry(p4::DigestEntry {
            digest_id: learn,
            config: None,
        }))
        .await;
    match &d[0] {
        E::DigestEntry(d) => assert_eq!(d.config.unwrap().max_list_size, 2),
        _ => panic!(),
    }
    // Not acknowledged: after ack_timeout_ns the same connection is reported again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.server.inject(1, &syn(3000));
    match next_msg(&mut a.rx, Duration::from_secs(2)).await {
        Some(p4::stream_message_response::Update::Digest(d)) => assert_eq!(d.data.len(), 1),
        m => panic!("{m:?}"),
    }
}

#[tokio::test]
async fn syn_pending_register_cells_over_p4runtime() {
    use dvipa_switch::pipeline::{syn_pending_cell, syn_pending_index, syn_pending_tag};
    let h = start().await;
    let (mut a, _) = h.controller(1).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    let mut ups = vec![
        (Insert, E::TableEntry(h.target_entry(1, 2))),
        (Insert, E::TableEntry(h.target_entry(2, 3))),
        (Insert, E::TableEntry(h.dvipa_entry(7))),
    ];
    for slot in 0..256 {
        ups.push((Insert, E::TableEntry(h.dpt_entry(7, slot, 1))));
    }
    a.write(ups).await.unwrap();
    let reg_id = |name: &str| {
        h.schema
            .register(name)
            .unwrap()
            .preamble
            .as_ref()
            .unwrap()
            .id
    };
    let pending = reg_id("IngressImpl.syn_pending");
    let cell_of = |sport: u16| {
        let (c, v) = (u32::from_be_bytes(CLIENT), u32::from_be_bytes(VIPA));
        (
            syn_pending_index(c, v, 6, sport, 80) as i64,
            syn_pending_cell(syn_pending_tag(c, v, 6, sport, 80), 1),
        )
    };
    let entry = |index: i64, value: u128, bits: u32| p4::RegisterEntry {
        register_id: pending,
        index: Some(p4::Index { index }),
        data: Some(p4::P4Data {
            data: Some(p4::p4_data::Data::Bitstring(
                encode_u128(value, bits).unwrap(),
            )),
        }),
    };
    let read_cell = async |a: &mut Ctl, index: i64| {
        let got = a.read(E::RegisterEntry(entry(index, 0, 32))).await;
        match &got[..] {
            [E::RegisterEntry(r)] => match r.data.as_ref().and_then(|d| d.data.as_ref()) {
                Some(p4::p4_data::Data::Bitstring(b)) => {
                    p4rt::codec::decode_u128(b, 32).unwrap() as u32
                }
                d => panic!("{d:?}"),
            },
            g => panic!("{g:?}"),
        }
    };
    let ack = |sport: u16| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xfe])
            .ipv4(CLIENT, VIPA, 64)
            .tcp(sport, 80, 1, 1000)
            .ack(1)
            .write(&mut v, &[])
            .unwrap();
        v
    };

    // A SYN's cell reads back as tag ++ target (32 bits).
    assert!(matches!(
        h.server.inject(1, &syn(6000)).0,
        Verdict::Forward(2)
    ));
    let (i6, c6) = cell_of(6000);
    assert_eq!(read_cell(&mut a, i6).await, c6);
    // A cell written over P4Runtime with the flow's tag is what its ACK follows.
    let (i5, c5) = cell_of(5000);
    assert!(matches!(
        h.server.inject(1, &ack(5000)).0,
        Verdict::Forward(2)
    ));
    let to_t2 = u128::from((c5 & 0xffff_0000) | 2);
    a.write(vec![(Modify, E::RegisterEntry(entry(i5, to_t2, 32)))])
        .await
        .unwrap();
    assert_eq!(u128::from(read_cell(&mut a, i5).await), to_t2);
    assert!(matches!(
        h.server.inject(1, &ack(5000)).0,
        Verdict::Forward(3)
    ));
    // With another tag in the cell the ACK takes the slot again.
    let other_tag = u128::from((c5 ^ 0x0001_0000) & 0xffff_0000 | 2);
    a.write(vec![(Modify, E::RegisterEntry(entry(i5, other_tag, 32)))])
        .await
        .unwrap();
    assert!(matches!(
        h.server.inject(1, &ack(5000)).0,
        Verdict::Forward(2)
    ));
    // Wider than 32 bits, or an index past 65535: INVALID_ARGUMENT.
    let e = a
        .write(vec![
            (Modify, E::RegisterEntry(entry(i5, 1 << 32, 33))),
            (Modify, E::RegisterEntry(entry(65536, 1, 32))),
        ])
        .await
        .unwrap_err();
    use tonic::Code as C;
    assert_eq!(
        update_codes(&e),
        vec![C::InvalidArgument as i32, C::InvalidArgument as i32]
    );
    // All cells of one register, and of all registers (id 0): syn_pending then rr_state.
    let all = a
        .read(E::RegisterEntry(p4::RegisterEntry {
            register_id: pending,
            ..Default::default()
        }))
        .await;
    assert_eq!(all.len(), 65536);
    let every = a.read(E::RegisterEntry(p4::RegisterEntry::default())).await;
    assert_eq!(every.len(), 65536 + 1024);
}

#[tokio::test]
async fn entry_metadata_over_the_cap_is_refused_per_update_and_counted() {
    use dvipa_switch::server::MAX_ENTRY_METADATA;
    let h = start().await;
    let (mut a, _) = h.controller(1).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    let with_meta = |sport: u128, n: usize| {
        let mut e = h.crt_entry(sport, 1, 0);
        e.metadata = vec![0xab; n];
        E::TableEntry(e)
    };
    let e = a
        .write(vec![
            (Insert, with_meta(1, MAX_ENTRY_METADATA)), // at the cap: stored
            (Insert, with_meta(2, MAX_ENTRY_METADATA + 1)),
            (Insert, with_meta(3, 8 << 20)), // 8 MiB
            (Insert, with_meta(4, 0)),
        ])
        .await
        .unwrap_err();
    use tonic::Code as C;
    assert_eq!(
        update_codes(&e),
        vec![
            C::Ok as i32,
            C::InvalidArgument as i32,
            C::InvalidArgument as i32,
            C::Ok as i32
        ]
    );
    let st = rpc::Status::decode(e.details()).unwrap();
    let msg = p4::Error::decode(st.details[1].value.as_slice())
        .unwrap()
        .message;
    assert_eq!(
        msg,
        format!(
            "IngressImpl.crt: metadata is {} bytes, over the switch's cap of {MAX_ENTRY_METADATA} bytes",
            MAX_ENTRY_METADATA + 1
        )
    );
    // A modify cannot grow it past the cap either.
    let e = a
        .write(vec![(Modify, with_meta(1, 4096))])
        .await
        .unwrap_err();
    assert_eq!(update_codes(&e), vec![C::InvalidArgument as i32]);
    let refused = h
        .server
        .stats()
        .metadata_refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 3);
    // Only the two accepted entries are stored, the first with its 1 KiB intact.
    let crt = a
        .read(E::TableEntry(p4::TableEntry {
            table_id: h.table("IngressImpl.crt").preamble.as_ref().unwrap().id,
            ..Default::default()
        }))
        .await;
    let mut metas: Vec<usize> = crt
        .iter()
        .map(|e| match e {
            E::TableEntry(t) => t.metadata.len(),
            _ => panic!(),
        })
        .collect();
    metas.sort();
    assert_eq!(metas, vec![0, MAX_ENTRY_METADATA]);
    eprintln!("metadata cap {MAX_ENTRY_METADATA} B: {refused} updates refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_of_a_full_crt_with_maximal_metadata_comes_in_several_responses() {
    use dvipa_switch::server::{MAX_ENTRY_METADATA, READ_RESPONSE_BYTES};
    let h = start().await;
    let (mut a, _) = h.controller(1).await;
    a.set_pipeline(p4info(), 1).await.unwrap();
    let crt_id = h.table("IngressImpl.crt").preamble.as_ref().unwrap().id;
    let size = h.table("IngressImpl.crt").size as u128;
    let t0 = Instant::now();
    for chunk in 0..size / 1024 {
        let ups: Vec<_> = (chunk * 1024..(chunk + 1) * 1024)
            .map(|sport| {
                let mut e = h.crt_entry(sport, 1, 0);
                e.metadata = vec![sport as u8; MAX_ENTRY_METADATA];
                (Insert, E::TableEntry(e))
            })
            .collect();
        a.write(ups).await.unwrap();
    }
    let filled = t0.elapsed();
    // A plain client with tonic's default 4 MiB receive limit reads the whole table.
    let t0 = Instant::now();
    let mut s = a
        .client
        .read(p4::ReadRequest {
            device_id: 0,
            entities: vec![p4::Entity {
                entity: Some(E::TableEntry(p4::TableEntry {
                    table_id: crt_id,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (mut responses, mut entries, mut bytes, mut largest) = (0usize, 0usize, 0usize, 0usize);
    let mut sports = std::collections::HashSet::new();
    while let Some(r) = s
        .message()
        .await
        .expect("a Read of a full crt must not fail")
    {
        let len = r.encoded_len();
        responses += 1;
        bytes += len;
        largest = largest.max(len);
        entries += r.entities.len();
        for e in r.entities {
            if let Some(E::TableEntry(t)) = e.entity {
                assert_eq!(t.metadata.len(), MAX_ENTRY_METADATA);
                sports.insert(t.r#match[3].clone().encode_to_vec());
            }
        }
    }
    eprintln!(
        "full crt: {entries} entries x {MAX_ENTRY_METADATA} B metadata written in {filled:?}; \
         read in {responses} ReadResponses, {bytes} B total, largest {largest} B, in {:?}",
        t0.elapsed()
    );
    assert_eq!(entries as u128, size);
    assert_eq!(sports.len() as u128, size, "every entry exactly once");
    assert!(responses > 1, "{responses}");
    assert!(largest <= READ_RESPONSE_BYTES, "{largest}");
}

/// A TCP relay to `to` whose forwarding can be frozen: both directions stop for good and the
/// sockets stay open, as with a controller that was frozen or cut off without a reset.
async fn freezable_relay(
    to: std::net::SocketAddr,
    frozen: Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    async fn pump(
        mut r: tokio::net::tcp::OwnedReadHalf,
        mut w: tokio::net::tcp::OwnedWriteHalf,
        frozen: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16384];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.load(Relaxed) {
                // hold both sockets, forward nothing
                std::future::pending::<()>().await;
            }
            if w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((a, _)) = l.accept().await {
            let b = tokio::net::TcpStream::connect(to).await.unwrap();
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            tokio::spawn(pump(ar, bw, frozen.clone()));
            tokio::spawn(pump(br, aw, frozen.clone()));
        }
    });
    addr
}

/// Server keep-alive of the dead-stream test (`None`: off, to see the test fail).
const KEEPALIVE: Option<Duration> = Some(Duration::from_millis(100));

/// Issue 13: a controller whose session went half-open (it stopped answering, its connection
/// stays open) used to keep its election id on the switch forever, so the controller's new
/// session was refused with "election id … is already used". With the server's HTTP/2
/// keep-alive (`SwitchServer::serve`, K = 100 ms) the dead stream is dropped after its pings go
/// unanswered for 3 K, and a new session with the same id becomes primary. The refusal itself
/// reaches the client as `ClientError::StreamRefused` at once, not as an arbitration timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_stops_answering_loses_its_stream_and_its_election_id() {
    use p4rt::{ClientConfig, ClientError, Session};
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = SwitchServer::new(0, Arc::new(Pipeline::new()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(server.serve(l, KEEPALIVE, None, std::future::pending()));
    let frozen = Arc::new(AtomicBool::new(false));
    let via = freezable_relay(addr, frozen.clone()).await;
    let mut ca = ClientConfig::new(via.to_string(), 0);
    ca.keepalive = None;
    let (a, _qa) = Session::connect(ca).await.unwrap();
    a.wait_primary(Duration::from_secs(5)).await.unwrap();

    let mut cb = ClientConfig::new(addr.to_string(), 0);
    cb.connect_timeout = Duration::from_secs(5);
    let t = Instant::now();
    let e = Session::connect(cb.clone()).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::StreamRefused { code: Some(tonic::Code::InvalidArgument), message }
            if message.contains("already used")),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the refusal came after {:?} (the connect timeout is 5 s)",
        t.elapsed()
    );

    frozen.store(true, Ordering::Relaxed);
    let t = Instant::now();
    let took = loop {
        match Session::connect(cb.clone()).await {
            Ok((b, _qb)) => {
                b.wait_primary(Duration::from_secs(2)).await.unwrap();
                break t.elapsed();
            }
            Err(ClientError::StreamRefused { .. }) => {
                assert!(
                    t.elapsed() < Duration::from_secs(3),
                    "the switch still holds the stream of a controller that stopped answering \
                     3 s ago"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    eprintln!("the dead stream was dropped and its election id reused after {took:?}");
    drop(a);
}

//! P4Runtime server (tonic) in front of a [`Pipeline`].
//!
//! - [`program`]: the contract's objects resolved by name in the pushed P4Info, and the conversion
//!   between P4Runtime entities and the typed tables;
//! - [`SwitchServer`]: the `P4Runtime` service: pipeline config (+ cookie), arbitration per
//!   (device, role name) (primary = highest election id among the role's open streams; role
//!   configs are refused), Write with per-update `p4.v1.Error` details, Read with wildcards,
//!   counters, registers, digest config;
//! - a digest task batching `learn_t` digests into `DigestList`s per the `DigestEntry` config and
//!   an idle-timeout task notifying the primaries of idle `crt` entries (repeating about once a
//!   second while they stay idle, as bmv2 does). Without role configs every role has full
//!   pipeline access, so each role's primary receives them.
//!
//! Over the project's ~800-line guide on purpose for now: arbitration, writes, reads, stream and the service; split into server/ submodules in issue 15.

pub mod flavor;
pub mod program;

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use p4rt::proto::google::rpc;
use p4rt::proto::p4::v1 as p4;
use p4rt::proto::p4::v1::p4_runtime_server::{P4Runtime, P4RuntimeServer};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::pipeline::{Learn, Output, Pipeline, Verdict};
use crate::tables::{Counter, EntryMeta, SelectAction, TableError, Tables};
pub use flavor::{Flavor, ServerOptions};
use program::{Act, EntityError, Key, Program, TableKind};

type StreamTx = mpsc::Sender<Result<p4::StreamMessageResponse, Status>>;

/// Interval of the idle-timeout sweep.
const IDLE_SWEEP: Duration = Duration::from_millis(100);
/// Repeat period of idle notifications for an entry that stays idle (bmv2: about 1 s).
const IDLE_REPEAT_NS: u64 = 1_000_000_000;
/// Largest `TableEntry.metadata` stored, in bytes. A peer-controlled size: without a cap five
/// entries of 60 MB grew the switch by 250 MB and made `Read` fail (issue 14). PI
/// (simple_switch_grpc) keeps the bytes unbounded, limited only by its 4 MiB gRPC message; the
/// controller writes none. An update above the cap fails alone with INVALID_ARGUMENT naming the
/// cap and is counted ([`ServerStats::metadata_refused`]).
pub const MAX_ENTRY_METADATA: usize = 1024;
/// A Read's answer is split into `ReadResponse`s of at most this many encoded bytes (one
/// entity larger than this goes alone), well under gRPC's default 4 MiB message limit, so a
/// full table never fails with OUT_OF_RANGE whatever the client's limit.
pub const READ_RESPONSE_BYTES: usize = 1 << 20;

/// A live controller: a StreamChannel that sent an accepted `MasterArbitrationUpdate`.
struct Controller {
    conn: u64,
    /// Role name; empty = the default role.
    role: String,
    /// `None`: no election id was sent. Such a client is lower than any election id and never
    /// becomes primary (P4Runtime spec, arbitration).
    election_id: Option<u128>,
    tx: StreamTx,
}

/// `DigestEntry.Config` in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestConfig {
    /// Flush a list at the latest this long after its first digest (0 = at once).
    pub max_timeout_ns: i64,
    /// At most this many digests per list (0 = no limit).
    pub max_list_size: i32,
    /// Digests in an unacknowledged list are not re-sent before this.
    pub ack_timeout_ns: i64,
}

#[derive(Default)]
struct State {
    program: Option<Arc<Program>>,
    config: Option<p4::ForwardingPipelineConfig>,
    saved: Option<(Arc<Program>, p4::ForwardingPipelineConfig)>,
    controllers: Vec<Controller>,
    /// Highest election id seen per role (answered as `election_id` while a role has no primary).
    highest_election: HashMap<String, u128>,
    digest: Option<DigestConfig>,
}

impl State {
    /// The primary of `role`: its live controller with the highest election id (bmv2/PI rule:
    /// when the primary leaves, the next highest live controller takes over).
    fn primary(&self, role: &str) -> Option<&Controller> {
        self.controllers
            .iter()
            .filter(|c| c.role == role && c.election_id.is_some())
            .max_by_key(|c| c.election_id)
    }

    /// Identity of `role`'s primary, to detect primary changes.
    fn primary_key(&self, role: &str) -> Option<(u64, Option<u128>)> {
        self.primary(role).map(|p| (p.conn, p.election_id))
    }

    /// The primary of every role that has one: where digests and idle notifications go (no role
    /// config is supported, so every role has full pipeline access and receives them).
    fn primaries(&self) -> impl Iterator<Item = &Controller> {
        self.controllers
            .iter()
            .filter(|c| self.primary(&c.role).is_some_and(|p| p.conn == c.conn))
    }
}

fn role_desc(role: &str) -> String {
    if role.is_empty() {
        "the default role".into()
    } else {
        format!("role {role:?}")
    }
}

/// Checks the role fields of a unary request: the deprecated numeric role id is not supported.
fn check_role_fields(role_id: u64) -> Result<(), Status> {
    if role_id != 0 {
        return Err(Status::unimplemented(
            "numeric role ids (deprecated role_id) are not supported; name the role in `role`",
        ));
    }
    Ok(())
}

enum DigestMsg {
    Learn(Learn),
    Ack(u64),
    Reset,
}

/// Server counters.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Digests dropped because the digest queue was full.
    pub digest_queue_drops: AtomicU64,
    /// Digests dropped because no DigestEntry was configured.
    pub digests_unconfigured: AtomicU64,
    /// Digests suppressed as duplicates of an unacknowledged one.
    pub digests_suppressed: AtomicU64,
    /// DigestLists sent.
    pub digest_lists: AtomicU64,
    /// Idle notifications sent.
    pub idle_notifications: AtomicU64,
    /// Stream messages dropped because a controller's stream was full or closed.
    pub stream_drops: AtomicU64,
    /// Writes refused whole for having more than `max_write_updates` updates.
    pub writes_too_large: AtomicU64,
    /// Table updates refused because their metadata exceeded [`MAX_ENTRY_METADATA`].
    pub metadata_refused: AtomicU64,
    /// `ReadResponse` messages sent (a Read's answer may take several).
    pub read_responses: AtomicU64,
}

struct Inner {
    device_id: u64,
    enabled: Arc<AtomicBool>,
    pipeline: Arc<Pipeline>,
    state: Mutex<State>,
    next_conn: AtomicU64,
    digest_tx: mpsc::Sender<DigestMsg>,
    stats: ServerStats,
    opts: ServerOptions,
}

/// Write batches of at least this many updates are applied on a blocking thread.
const BLOCKING_WRITE: usize = 256;

/// Entities per `ReadResponse` of a Read.
const READ_CHUNK: usize = 1024;

/// The P4Runtime service of the embedded switch. Cheap to clone.
#[derive(Clone)]
pub struct SwitchServer {
    inner: Arc<Inner>,
}

/// Handle the data path uses to hand digests to the server.
#[derive(Clone)]
pub struct DigestSink {
    inner: Arc<Inner>,
}

impl DigestSink {
    /// Queues digests (never blocks; a full queue drops and counts).
    pub fn push(&self, digests: &mut Vec<Learn>) {
        for l in digests.drain(..) {
            if self.inner.digest_tx.try_send(DigestMsg::Learn(l)).is_err() {
                self.inner
                    .stats
                    .digest_queue_drops
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// An election id as sent: `None` when the field is unset.
fn election_of(e: &Option<p4::Uint128>) -> Option<u128> {
    e.as_ref()
        .map(|e| (u128::from(e.high) << 64) | u128::from(e.low))
}

fn uint128(v: u128) -> p4::Uint128 {
    p4::Uint128 {
        high: (v >> 64) as u64,
        low: v as u64,
    }
}

fn now_unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn send(stats: &ServerStats, tx: &StreamTx, m: p4::stream_message_response::Update) {
    if tx
        .try_send(Ok(p4::StreamMessageResponse { update: Some(m) }))
        .is_err()
    {
        stats.stream_drops.fetch_add(1, Ordering::Relaxed);
    }
}

impl SwitchServer {
    /// A server for `pipeline`; spawns the digest and idle-timeout tasks on the current runtime.
    pub fn new(device_id: u64, pipeline: Arc<Pipeline>) -> Self {
        Self::with_options(device_id, pipeline, ServerOptions::default())
    }

    /// A server answering as `opts.flavor` does, with its Write limits.
    pub fn with_options(device_id: u64, pipeline: Arc<Pipeline>, opts: ServerOptions) -> Self {
        let (digest_tx, digest_rx) = mpsc::channel(65536);
        let inner = Arc::new(Inner {
            device_id,
            enabled: Arc::new(AtomicBool::new(false)),
            pipeline,
            state: Mutex::new(State::default()),
            next_conn: AtomicU64::new(1),
            digest_tx,
            stats: ServerStats::default(),
            opts,
        });
        tokio::spawn(digest_task(Arc::downgrade(&inner), digest_rx));
        tokio::spawn(idle_task(Arc::downgrade(&inner)));
        SwitchServer { inner }
    }

    /// The tonic service.
    pub fn service(&self) -> P4RuntimeServer<SwitchServer> {
        P4RuntimeServer::new(self.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// The connections of `listener` with Nagle's algorithm off, for
    /// `Server::serve_with_incoming*` (tonic's own `tcp_nodelay` applies only to listeners it
    /// binds itself). With Nagle on, the small frames of a Write's answer wait for the client's
    /// delayed ACK: every few Writes took 40 ms instead of 3 ms.
    pub fn incoming(
        listener: tokio::net::TcpListener,
    ) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        Self::incoming_with(listener, None)
    }

    /// [`SwitchServer::incoming`] with `TCP_USER_TIMEOUT` set on every connection: a
    /// controller whose host vanished (its ACKs no longer come) is dropped after
    /// `user_timeout` instead of the kernel's ~15 min of retransmissions, together with the
    /// HTTP/2 keep-alive of the server (see `dvipa-switch --grpc-keepalive-ms`).
    pub fn incoming_with(
        listener: tokio::net::TcpListener,
        user_timeout: Option<std::time::Duration>,
    ) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        use tokio_stream::StreamExt;
        tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |s| {
            let s = s?;
            s.set_nodelay(true)?;
            if let Some(t) = user_timeout {
                socket2::SockRef::from(&s).set_tcp_user_timeout(Some(t))?;
            }
            Ok(s)
        })
    }

    /// Serves P4Runtime on `listener` until `shutdown`, with Nagle off and, with `keepalive`
    /// = K, an HTTP/2 PING on every connection every K: a connection whose ping stays
    /// unanswered for 3 K is closed (its StreamChannel ends, a controller that vanished loses
    /// its election id), and `TCP_USER_TIMEOUT` = 3 K on the sockets.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        keepalive: Option<std::time::Duration>,
        tls: Option<tonic::transport::ServerTlsConfig>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let timeout = keepalive.map(|k| k * 3);
        let mut builder = tonic::transport::Server::builder();
        if let Some(t) = tls {
            builder = builder.tls_config(t)?;
        }
        builder
            .http2_keepalive_interval(keepalive)
            .http2_keepalive_timeout(timeout)
            .add_service(self.service())
            .serve_with_incoming_shutdown(Self::incoming_with(listener, timeout), shutdown)
            .await
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.inner.pipeline
    }

    /// Server counters.
    pub fn stats(&self) -> &ServerStats {
        &self.inner.stats
    }

    /// Handle for the data path's digests.
    pub fn digest_sink(&self) -> DigestSink {
        DigestSink {
            inner: self.inner.clone(),
        }
    }

    /// In-process packet injection: runs the pipeline on a frame, queues its digests, and returns
    /// the verdict and output frame.
    pub fn inject(&self, in_port: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut out = Output::default();
        let v = self.inner.pipeline.process(in_port, frame, &mut out);
        self.digest_sink().push(&mut out.digests);
        (v, out.frame)
    }

    /// Flag set once a pipeline config is committed (the data path forwards only then).
    pub fn enabled_flag(&self) -> Arc<AtomicBool> {
        self.inner.enabled.clone()
    }

    /// Whether a pipeline config is installed.
    pub fn has_program(&self) -> bool {
        self.inner.state.lock().program.is_some()
    }

    fn program(&self) -> Result<Arc<Program>, Status> {
        self.inner
            .state
            .lock()
            .program
            .clone()
            .ok_or_else(|| Status::failed_precondition("no forwarding pipeline config installed"))
    }

    fn check_device(&self, device_id: u64) -> Result<(), Status> {
        if device_id != self.inner.device_id {
            return Err(Status::not_found(format!(
                "device id {device_id} is not this switch (device id {})",
                self.inner.device_id
            )));
        }
        Ok(())
    }

    fn check_primary(&self, role: &str, election_id: &Option<p4::Uint128>) -> Result<(), Status> {
        let st = self.inner.state.lock();
        let id = election_of(election_id);
        match st.primary(role) {
            Some(p) if id.is_some() && p.election_id == id => Ok(()),
            Some(p) => Err(Status::permission_denied(format!(
                "election id {} is not the primary's ({}) for {}",
                id.map_or("(unset)".to_string(), |i| i.to_string()),
                p.election_id.unwrap_or(0),
                role_desc(role)
            ))),
            None => Err(Status::permission_denied(format!(
                "no primary controller for {}: open a StreamChannel and send a \
                 MasterArbitrationUpdate with this role and election id first",
                role_desc(role)
            ))),
        }
    }

    /// The `MasterArbitrationUpdate` a live controller is sent (spec, "Client Arbitration
    /// Notifications"): OK for the role's primary, ALREADY_EXISTS for its backups, NOT_FOUND when
    /// the role has no primary; `election_id` is the primary's, else the highest seen (unset if
    /// none).
    fn arbitration_update(
        st: &State,
        device_id: u64,
        c: &Controller,
    ) -> p4::stream_message_response::Update {
        let primary = st.primary(&c.role);
        let (code, msg) = match primary {
            Some(p) if p.conn == c.conn => (tonic::Code::Ok, "primary".to_string()),
            Some(_) => (
                tonic::Code::AlreadyExists,
                format!(
                    "backup: a controller with a higher election id is primary for {}",
                    role_desc(&c.role)
                ),
            ),
            None => (
                tonic::Code::NotFound,
                format!("backup: {} has no primary", role_desc(&c.role)),
            ),
        };
        let election_id = primary
            .and_then(|p| p.election_id)
            .or_else(|| st.highest_election.get(&c.role).copied());
        p4::stream_message_response::Update::Arbitration(p4::MasterArbitrationUpdate {
            device_id,
            role: (!c.role.is_empty()).then(|| p4::Role {
                name: c.role.clone(),
                ..Default::default()
            }),
            election_id: election_id.map(uint128),
            status: Some(rpc::Status {
                code: code as i32,
                message: msg,
                details: vec![],
            }),
        })
    }

    /// Sends the arbitration update to every live controller of `role`.
    fn notify_role(&self, st: &State, role: &str) {
        for c in st.controllers.iter().filter(|c| c.role == role) {
            send(
                &self.inner.stats,
                &c.tx,
                Self::arbitration_update(st, self.inner.device_id, c),
            );
        }
    }

    /// Applies a `MasterArbitrationUpdate` received on stream `conn` (spec, "Rules for Handling
    /// MasterArbitrationUpdate Messages"). An `Err` terminates the stream with that status.
    #[allow(deprecated)] // Role.id is refused by name
    fn handle_arbitration(
        &self,
        conn: u64,
        tx: &StreamTx,
        a: p4::MasterArbitrationUpdate,
    ) -> Result<(), Status> {
        let role = a.role.clone().unwrap_or_default();
        let id = election_of(&a.election_id);
        let mut st = self.inner.state.lock();
        let live = st.controllers.iter().position(|c| c.conn == conn);
        if let Some(i) = live {
            if a.device_id != self.inner.device_id {
                return Err(Status::failed_precondition(format!(
                    "device id {} does not match this stream's device id {}",
                    a.device_id, self.inner.device_id
                )));
            }
            if role.name != st.controllers[i].role {
                return Err(Status::failed_precondition(format!(
                    "this stream is for {}; to change roles, open a new StreamChannel",
                    role_desc(&st.controllers[i].role)
                )));
            }
        } else {
            self.check_device(a.device_id)?;
        }
        if role.id != 0 && role.name.is_empty() {
            return Err(Status::unimplemented(
                "numeric role ids (deprecated Role.id) are not supported; set Role.name",
            ));
        }
        if role.config.is_some() {
            return Err(Status::invalid_argument(format!(
                "role configs are not supported by dvipa-switch ({} sent Role.config of type \
                 {:?}); leave Role.config unset: every role has full pipeline access",
                role_desc(&role.name),
                role.config
                    .as_ref()
                    .map(|c| c.type_url.as_str())
                    .unwrap_or("")
            )));
        }
        let role = role.name;
        if let Some(id) = id
            && st
                .controllers
                .iter()
                .any(|c| c.role == role && c.election_id == Some(id) && c.conn != conn)
        {
            return Err(Status::invalid_argument(format!(
                "election id {id} is already used by another controller of {}",
                role_desc(&role)
            )));
        }
        let before = st.primary_key(&role);
        match live {
            Some(i) => st.controllers[i].election_id = id,
            None => st.controllers.push(Controller {
                conn,
                role: role.clone(),
                election_id: id,
                tx: tx.clone(),
            }),
        }
        if let Some(id) = id {
            let h = st.highest_election.entry(role.clone()).or_insert(id);
            *h = (*h).max(id);
        }
        let after = st.primary_key(&role);
        info!(
            conn,
            role = %role,
            election_id = ?id,
            primary = after.is_some_and(|(c, _)| c == conn),
            "arbitration"
        );
        if before != after {
            self.notify_role(&st, &role);
        } else if let Some(c) = st.controllers.iter().find(|c| c.conn == conn) {
            send(
                &self.inner.stats,
                tx,
                Self::arbitration_update(&st, self.inner.device_id, c),
            );
        }
        Ok(())
    }

    fn disconnect(&self, conn: u64) {
        let mut st = self.inner.state.lock();
        let Some(i) = st.controllers.iter().position(|c| c.conn == conn) else {
            return;
        };
        let role = st.controllers[i].role.clone();
        let before = st.primary_key(&role);
        st.controllers.remove(i);
        let after = st.primary_key(&role);
        info!(conn, role = %role, "controller stream closed");
        if before != after {
            self.notify_role(&st, &role);
        }
    }

    /// Whether stream `conn` is its role's primary.
    fn is_primary_conn(&self, conn: u64) -> bool {
        let st = self.inner.state.lock();
        st.controllers
            .iter()
            .find(|c| c.conn == conn)
            .and_then(|c| st.primary(&c.role))
            .is_some_and(|p| p.conn == conn)
    }

    // ----- Write -----

    fn write_update(&self, prog: &Program, u: &p4::Update) -> Result<(), EntityError> {
        use p4::entity::Entity as E;
        use p4::update::Type as U;
        let op = U::try_from(u.r#type).unwrap_or(U::Unspecified);
        if op == U::Unspecified {
            return Err(EntityError::Invalid("update type UNSPECIFIED".into()));
        }
        let Some(ent) = u.entity.as_ref().and_then(|e| e.entity.as_ref()) else {
            return Err(EntityError::Invalid("update without entity".into()));
        };
        let p = &self.inner.pipeline;
        match ent {
            E::TableEntry(te) => self.write_table(prog, op, te),
            E::DigestEntry(d) => {
                if d.digest_id != prog.learn {
                    return Err(EntityError::NotFound(format!(
                        "unknown digest id {}",
                        d.digest_id
                    )));
                }
                let mut st = self.inner.state.lock();
                let cfg = d.config.unwrap_or_default();
                let cfg = DigestConfig {
                    max_timeout_ns: cfg.max_timeout_ns,
                    max_list_size: cfg.max_list_size,
                    ack_timeout_ns: cfg.ack_timeout_ns,
                };
                if cfg.max_timeout_ns < 0 || cfg.max_list_size < 0 || cfg.ack_timeout_ns < 0 {
                    return Err(EntityError::Invalid(
                        "digest config values must not be negative".into(),
                    ));
                }
                match (op, st.digest.is_some()) {
                    (U::Insert, true) => {
                        return Err(EntityError::AlreadyExists(
                            "digest learn_t already configured".into(),
                        ));
                    }
                    (U::Modify, false) | (U::Delete, false) => {
                        return Err(EntityError::NotFound(
                            "digest learn_t is not configured".into(),
                        ));
                    }
                    (U::Delete, true) => st.digest = None,
                    _ => st.digest = Some(cfg),
                }
                Ok(())
            }
            E::CounterEntry(c) => {
                if op != U::Modify {
                    return Err(EntityError::Invalid(
                        "counter entries can only be modified".into(),
                    ));
                }
                if c.counter_id != prog.service_counter {
                    return Err(EntityError::NotFound(format!(
                        "unknown counter id {}",
                        c.counter_id
                    )));
                }
                let d = c.data.unwrap_or_default();
                match &c.index {
                    None => p
                        .service_counter
                        .iter()
                        .for_each(|x| x.set(d.packet_count as u64, d.byte_count as u64)),
                    Some(i) => cell(&p.service_counter, i.index)?
                        .set(d.packet_count as u64, d.byte_count as u64),
                }
                Ok(())
            }
            E::DirectCounterEntry(dc) => {
                if op != U::Modify {
                    return Err(EntityError::Invalid(
                        "direct counter entries can only be modified".into(),
                    ));
                }
                let te = dc.table_entry.as_ref().ok_or_else(|| {
                    EntityError::Invalid("direct counter entry without table entry".into())
                })?;
                let (kind, t) = prog.table(te.table_id).ok_or_else(|| {
                    EntityError::NotFound(format!("unknown table id {}", te.table_id))
                })?;
                if t.direct_counter == 0 {
                    return Err(EntityError::Invalid(format!(
                        "{} has no direct counter",
                        t.name
                    )));
                }
                let key = prog.decode_key(kind, t, te)?;
                let d = dc.data.unwrap_or_default();
                let tables = p.tables();
                let c = entry_counter(&tables, &key)
                    .ok_or_else(|| EntityError::NotFound(format!("{}: entry not found", t.name)))?;
                c.set(d.packet_count as u64, d.byte_count as u64);
                Ok(())
            }
            E::RegisterEntry(r) => {
                if op != U::Modify {
                    return Err(EntityError::Invalid(
                        "register entries can only be modified".into(),
                    ));
                }
                if r.register_id == prog.syn_pending {
                    let v = match r.data.as_ref().and_then(|d| d.data.as_ref()) {
                        Some(p4::p4_data::Data::Bitstring(b)) => p4rt::codec::decode_u128(b, 32)
                            .map_err(|e| EntityError::Invalid(format!("syn_pending value: {e}")))?
                            as u32,
                        _ => {
                            return Err(EntityError::Invalid(
                                "syn_pending data must be a bitstring".into(),
                            ));
                        }
                    };
                    match &r.index {
                        None => p
                            .syn_pending
                            .iter()
                            .for_each(|x| x.store(v, Ordering::Relaxed)),
                        Some(i) => {
                            let idx = usize::try_from(i.index)
                                .ok()
                                .filter(|i| *i < p.syn_pending.len())
                                .ok_or_else(|| {
                                    EntityError::Invalid(format!(
                                        "syn_pending index {} out of range",
                                        i.index
                                    ))
                                })?;
                            p.syn_pending[idx].store(v, Ordering::Relaxed);
                        }
                    }
                    return Ok(());
                }
                if r.register_id != prog.rr_state {
                    return Err(EntityError::NotFound(format!(
                        "unknown register id {}",
                        r.register_id
                    )));
                }
                let v = match r.data.as_ref().and_then(|d| d.data.as_ref()) {
                    Some(p4::p4_data::Data::Bitstring(b)) => p4rt::codec::decode_u128(b, 32)
                        .map_err(|e| EntityError::Invalid(format!("rr_state value: {e}")))?
                        as u32,
                    _ => {
                        return Err(EntityError::Invalid(
                            "rr_state data must be a bitstring".into(),
                        ));
                    }
                };
                match &r.index {
                    None => p
                        .rr_state
                        .iter()
                        .for_each(|x| x.store(v, Ordering::Relaxed)),
                    Some(i) => {
                        let idx = usize::try_from(i.index)
                            .ok()
                            .filter(|i| *i < p.rr_state.len())
                            .ok_or_else(|| {
                                EntityError::Invalid(format!(
                                    "rr_state index {} out of range",
                                    i.index
                                ))
                            })?;
                        p.rr_state[idx].store(v, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
            _ => Err(EntityError::Unimplemented(
                "entity type not supported by this program".into(),
            )),
        }
    }

    #[allow(deprecated)] // controller_metadata is echoed back as stored, like PI does
    fn write_table(
        &self,
        prog: &Program,
        op: p4::update::Type,
        te: &p4::TableEntry,
    ) -> Result<(), EntityError> {
        use p4::update::Type as U;
        let (kind, t) = prog
            .table(te.table_id)
            .ok_or_else(|| EntityError::NotFound(format!("unknown table id {}", te.table_id)))?;
        if te.metadata.len() > MAX_ENTRY_METADATA {
            self.inner
                .stats
                .metadata_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(EntityError::Invalid(format!(
                "{}: metadata is {} bytes, over the switch's cap of {MAX_ENTRY_METADATA} bytes",
                t.name,
                te.metadata.len()
            )));
        }
        let p = &self.inner.pipeline;
        if te.is_default_action {
            if op != U::Modify {
                return Err(EntityError::Invalid(format!(
                    "{}: the default entry can only be modified",
                    t.name
                )));
            }
            if !te.r#match.is_empty() {
                return Err(EntityError::Invalid(format!(
                    "{}: the default entry has no match",
                    t.name
                )));
            }
            let act = match &te.action {
                None => None,
                Some(a) => Some(prog.decode_action(kind, t, Some(a), true)?),
            };
            let mut tables = p.tables_mut();
            set_default(&mut tables, kind, act);
            return Ok(());
        }
        if te.idle_timeout_ns < 0 {
            return Err(EntityError::Invalid("idle_timeout_ns is negative".into()));
        }
        if te.idle_timeout_ns != 0 && kind != TableKind::Crt {
            return Err(EntityError::Invalid(format!(
                "{} does not support idle timeout",
                t.name
            )));
        }
        let key = prog.decode_key(kind, t, te)?;
        let meta = EntryMeta {
            controller_metadata: te.controller_metadata,
            metadata: te.metadata.clone(),
            idle_timeout_ns: te.idle_timeout_ns,
        };
        let now = p.now_ns();
        match op {
            U::Insert | U::Modify => {
                let act = prog.decode_action(kind, t, te.action.as_ref(), false)?;
                let mut tables = p.tables_mut();
                let r = if op == U::Insert {
                    insert(&mut tables, key, act, meta, now)
                } else {
                    modify(&mut tables, key, act, meta, now)
                };
                r.map_err(EntityError::from)
            }
            U::Delete => {
                let mut tables = p.tables_mut();
                delete(&mut tables, key).map_err(EntityError::from)
            }
            U::Unspecified => Err(EntityError::Invalid("update type UNSPECIFIED".into())),
        }
    }

    // ----- Read -----

    fn read_entity(
        &self,
        prog: &Program,
        ent: &p4::entity::Entity,
        out: &mut Vec<p4::Entity>,
    ) -> Result<(), Status> {
        use p4::entity::Entity as E;
        let p = &self.inner.pipeline;
        let wrap = |e: E| p4::Entity { entity: Some(e) };
        match ent {
            E::TableEntry(te) => {
                let ids: Vec<u32> = if te.table_id == 0 {
                    prog.table_ids().to_vec()
                } else {
                    vec![te.table_id]
                };
                let tables = p.tables();
                let now = p.now_ns();
                for id in ids {
                    let (kind, t) = prog
                        .table(id)
                        .ok_or_else(|| Status::not_found(format!("unknown table id {id}")))?;
                    if te.is_default_action {
                        let mut e = p4::TableEntry {
                            table_id: t.id,
                            is_default_action: true,
                            ..Default::default()
                        };
                        e.action = Some(prog.encode_action(&default_of(&tables, kind)));
                        out.push(wrap(E::TableEntry(e)));
                        continue;
                    }
                    let filter = if te.r#match.is_empty() {
                        None
                    } else {
                        Some(
                            prog.decode_key(kind, t, te)
                                .map_err(|e| Status::invalid_argument(e.to_string()))?,
                        )
                    };
                    for_each_entry(
                        &tables,
                        kind,
                        filter,
                        &mut |key, act, meta, counter, last_hit| {
                            let mut e = prog.entry(t, &key, &act, meta);
                            if te.counter_data.is_some() && t.direct_counter != 0 {
                                let (pk, by) = counter.get();
                                e.counter_data = Some(p4::CounterData {
                                    byte_count: by as i64,
                                    packet_count: pk as i64,
                                });
                            }
                            if te.time_since_last_hit.is_some() && kind == TableKind::Crt {
                                e.time_since_last_hit = Some(p4::table_entry::IdleTimeout {
                                    elapsed_ns: now.saturating_sub(last_hit) as i64,
                                });
                            }
                            out.push(wrap(E::TableEntry(e)));
                        },
                    );
                }
            }
            E::DirectCounterEntry(dc) => {
                let te = dc.table_entry.clone().unwrap_or_default();
                let ids: Vec<u32> = if te.table_id == 0 {
                    vec![prog.crt.id, prog.target.id]
                } else {
                    vec![te.table_id]
                };
                let tables = p.tables();
                for id in ids {
                    let (kind, t) = prog
                        .table(id)
                        .ok_or_else(|| Status::not_found(format!("unknown table id {id}")))?;
                    if t.direct_counter == 0 {
                        return Err(Status::invalid_argument(format!(
                            "{} has no direct counter",
                            t.name
                        )));
                    }
                    let filter = if te.r#match.is_empty() {
                        None
                    } else {
                        Some(
                            prog.decode_key(kind, t, &te)
                                .map_err(|e| Status::invalid_argument(e.to_string()))?,
                        )
                    };
                    for_each_entry(
                        &tables,
                        kind,
                        filter,
                        &mut |key, _act, _meta, counter, _| {
                            let mut e = p4::TableEntry::default();
                            prog.encode_key(t, &key, &mut e);
                            let (pk, by) = counter.get();
                            out.push(wrap(E::DirectCounterEntry(p4::DirectCounterEntry {
                                table_entry: Some(e),
                                data: Some(p4::CounterData {
                                    byte_count: by as i64,
                                    packet_count: pk as i64,
                                }),
                            })));
                        },
                    );
                }
            }
            E::CounterEntry(c) => {
                if c.counter_id != 0 && c.counter_id != prog.service_counter {
                    return Err(Status::not_found(format!(
                        "unknown counter id {}",
                        c.counter_id
                    )));
                }
                let one = |i: usize, x: &Counter| {
                    let (pk, by) = x.get();
                    wrap(E::CounterEntry(p4::CounterEntry {
                        counter_id: prog.service_counter,
                        index: Some(p4::Index { index: i as i64 }),
                        data: Some(p4::CounterData {
                            byte_count: by as i64,
                            packet_count: pk as i64,
                        }),
                    }))
                };
                match &c.index {
                    None => {
                        out.extend(p.service_counter.iter().enumerate().map(|(i, x)| one(i, x)))
                    }
                    Some(ix) => {
                        let x = cell(&p.service_counter, ix.index)
                            .map_err(|e| Status::invalid_argument(e.to_string()))?;
                        out.push(one(ix.index as usize, x));
                    }
                }
            }
            E::RegisterEntry(r) => {
                if r.register_id != 0
                    && r.register_id != prog.rr_state
                    && r.register_id != prog.syn_pending
                {
                    return Err(Status::not_found(format!(
                        "unknown register id {}",
                        r.register_id
                    )));
                }
                if r.register_id == 0 || r.register_id == prog.syn_pending {
                    let one = |i: usize| {
                        let v = p.syn_pending[i].load(Ordering::Relaxed);
                        wrap(E::RegisterEntry(p4::RegisterEntry {
                            register_id: prog.syn_pending,
                            index: Some(p4::Index { index: i as i64 }),
                            data: Some(p4::P4Data {
                                data: Some(p4::p4_data::Data::Bitstring(
                                    p4rt::codec::encode_u128(v.into(), 32)
                                        .unwrap_or_else(|_| vec![0]),
                                )),
                            }),
                        }))
                    };
                    match &r.index {
                        None => out.extend((0..p.syn_pending.len()).map(one)),
                        Some(ix) => {
                            let i = usize::try_from(ix.index)
                                .ok()
                                .filter(|i| *i < p.syn_pending.len())
                                .ok_or_else(|| {
                                    Status::invalid_argument(format!(
                                        "syn_pending index {} out of range",
                                        ix.index
                                    ))
                                })?;
                            out.push(one(i));
                        }
                    }
                    if r.register_id == prog.syn_pending {
                        return Ok(());
                    }
                }
                let one = |i: usize| {
                    let v = p.rr_state[i].load(Ordering::Relaxed);
                    wrap(E::RegisterEntry(p4::RegisterEntry {
                        register_id: prog.rr_state,
                        index: Some(p4::Index { index: i as i64 }),
                        data: Some(p4::P4Data {
                            data: Some(p4::p4_data::Data::Bitstring(
                                p4rt::codec::encode_u128(v.into(), 32).unwrap_or_else(|_| vec![0]),
                            )),
                        }),
                    }))
                };
                match &r.index {
                    None => out.extend((0..p.rr_state.len()).map(one)),
                    Some(ix) => {
                        let i = usize::try_from(ix.index)
                            .ok()
                            .filter(|i| *i < p.rr_state.len())
                            .ok_or_else(|| {
                                Status::invalid_argument(format!(
                                    "rr_state index {} out of range",
                                    ix.index
                                ))
                            })?;
                        out.push(one(i));
                    }
                }
            }
            E::DigestEntry(d) => {
                if d.digest_id != 0 && d.digest_id != prog.learn {
                    return Err(Status::not_found(format!(
                        "unknown digest id {}",
                        d.digest_id
                    )));
                }
                if let Some(c) = self.inner.state.lock().digest {
                    out.push(wrap(E::DigestEntry(p4::DigestEntry {
                        digest_id: prog.learn,
                        config: Some(p4::digest_entry::Config {
                            max_timeout_ns: c.max_timeout_ns,
                            max_list_size: c.max_list_size,
                            ack_timeout_ns: c.ack_timeout_ns,
                        }),
                    })));
                }
            }
            _ => {
                return Err(Status::unimplemented(
                    "entity type not supported by this program",
                ));
            }
        }
        Ok(())
    }
}

fn cell(c: &[Counter], index: i64) -> Result<&Counter, EntityError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| c.get(i))
        .ok_or_else(|| {
            EntityError::Invalid(format!("counter index {index} out of range 0..{}", c.len()))
        })
}

fn entry_counter<'a>(t: &'a Tables, key: &Key) -> Option<&'a Counter> {
    match key {
        Key::Crt(k) => t.crt.get(k).map(|e| &e.counter),
        Key::Target(k) => t.target.get(k).map(|e| &e.counter),
        _ => None,
    }
}

fn insert(t: &mut Tables, key: Key, act: Act, meta: EntryMeta, now: u64) -> Result<(), TableError> {
    match (key, act) {
        (Key::Dvipa(k), Act::Dvipa(a)) => t.dvipa.insert(k, a, meta),
        (Key::Crt(k), Act::Select(a)) => t.crt.insert(k, a, meta, now),
        (Key::Dpt(k), Act::Select(a)) => t.dpt.insert(k, a, meta, now),
        (Key::Target(k), Act::Target(a)) => t.target.insert(k, a, meta, now),
        (Key::Route(k), Act::Route(a)) => t.route.insert(k, a, meta),
        _ => Err(TableError::InvalidKey {
            table: "?",
            reason: "action does not belong to the table".into(),
        }),
    }
}

fn modify(t: &mut Tables, key: Key, act: Act, meta: EntryMeta, now: u64) -> Result<(), TableError> {
    match (key, act) {
        (Key::Dvipa(k), Act::Dvipa(a)) => t.dvipa.modify(&k, a, meta),
        (Key::Crt(k), Act::Select(a)) => t.crt.modify(&k, a, meta, now),
        (Key::Dpt(k), Act::Select(a)) => t.dpt.modify(&k, a, meta, now),
        (Key::Target(k), Act::Target(a)) => t.target.modify(&k, a, meta, now),
        (Key::Route(k), Act::Route(a)) => t.route.modify(&k, a, meta),
        _ => Err(TableError::InvalidKey {
            table: "?",
            reason: "action does not belong to the table".into(),
        }),
    }
}

fn delete(t: &mut Tables, key: Key) -> Result<(), TableError> {
    match key {
        Key::Dvipa(k) => t.dvipa.delete(&k),
        Key::Crt(k) => t.crt.delete(&k).map(|_| ()),
        Key::Dpt(k) => t.dpt.delete(&k).map(|_| ()),
        Key::Target(k) => t.target.delete(&k).map(|_| ()),
        Key::Route(k) => t.route.delete(&k),
    }
}

fn set_default(t: &mut Tables, kind: TableKind, act: Option<Act>) {
    match (kind, act) {
        (TableKind::Dvipa, Some(Act::Dvipa(a))) => t.dvipa.default_action = a,
        (TableKind::Dvipa, _) => t.dvipa.default_action = crate::tables::DvipaAction::NoAction,
        (TableKind::Crt, Some(Act::Select(a))) => t.crt.default_action = a,
        (TableKind::Crt, _) => t.crt.reset_default(),
        (TableKind::Dpt, Some(Act::Select(a))) => t.dpt.default_action = a,
        (TableKind::Dpt, _) => t.dpt.reset_default(),
        (TableKind::Target, Some(Act::Target(a))) => t.target.default_action = a,
        (TableKind::Target, _) => t.target.reset_default(),
        (TableKind::Route, Some(Act::Route(a))) => t.route.default_action = a,
        (TableKind::Route, _) => t.route.default_action = crate::tables::RouteAction::Drop,
    }
}

fn default_of(t: &Tables, kind: TableKind) -> Act {
    match kind {
        TableKind::Dvipa => Act::Dvipa(t.dvipa.default_action),
        TableKind::Crt => Act::Select(t.crt.default_action),
        TableKind::Dpt => Act::Select(t.dpt.default_action),
        TableKind::Target => Act::Target(t.target.default_action),
        TableKind::Route => Act::Route(t.route.default_action),
    }
}

type Visit<'a> = dyn FnMut(Key, Act, &EntryMeta, &Counter, u64) + 'a;

fn for_each_entry(t: &Tables, kind: TableKind, filter: Option<Key>, f: &mut Visit<'_>) {
    let ok = |k: &Key| filter.is_none_or(|x| x == *k);
    match kind {
        TableKind::Dvipa => {
            for (k, e) in t.dvipa.iter() {
                let key = Key::Dvipa(*k);
                if ok(&key) {
                    f(key, Act::Dvipa(e.action), &e.meta, &e.counter, 0);
                }
            }
        }
        TableKind::Crt => match filter {
            Some(Key::Crt(k)) => {
                if let Some(e) = t.crt.get(&k) {
                    f(
                        Key::Crt(k),
                        Act::Select(e.action),
                        &e.meta,
                        &e.counter,
                        e.last_hit_ns.load(Ordering::Relaxed),
                    );
                }
            }
            _ => {
                for (k, e) in t.crt.iter() {
                    f(
                        Key::Crt(*k),
                        Act::Select(e.action),
                        &e.meta,
                        &e.counter,
                        e.last_hit_ns.load(Ordering::Relaxed),
                    );
                }
            }
        },
        TableKind::Dpt => match filter {
            Some(Key::Dpt(k)) => {
                if let Some(e) = t.dpt.get(&k) {
                    f(Key::Dpt(k), Act::Select(e.action), &e.meta, &e.counter, 0);
                }
            }
            _ => {
                for (k, e) in t.dpt.iter() {
                    f(Key::Dpt(*k), Act::Select(e.action), &e.meta, &e.counter, 0);
                }
            }
        },
        TableKind::Target => {
            for (k, e) in t.target.iter() {
                let key = Key::Target(*k);
                if ok(&key) {
                    f(key, Act::Target(e.action), &e.meta, &e.counter, 0);
                }
            }
        }
        TableKind::Route => {
            for (k, e) in t.route.iter() {
                let key = Key::Route(k);
                if ok(&key) {
                    f(key, Act::Route(e.action), &e.meta, &e.counter, 0);
                }
            }
        }
    }
}

/// Splits a Read's entities into `ReadResponse`s of at most `limit` encoded bytes each (an
/// entity larger than `limit` goes alone); at least one response, empty when nothing matched.
fn split_read(
    entities: Vec<p4::Entity>,
    limit: usize,
    max_entities: usize,
) -> Vec<p4::ReadResponse> {
    let mut parts = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for e in entities {
        // Field 1, length-delimited: tag byte + length varint + the entity.
        let len = e.encoded_len();
        let one = 1 + prost::length_delimiter_len(len) + len;
        if !cur.is_empty() && (size + one > limit || cur.len() >= max_entities) {
            parts.push(p4::ReadResponse {
                entities: std::mem::take(&mut cur),
            });
            size = 0;
        }
        size += one;
        cur.push(e);
    }
    if !cur.is_empty() || parts.is_empty() {
        parts.push(p4::ReadResponse { entities: cur });
    }
    parts
}

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl P4Runtime for SwitchServer {
    async fn write(
        &self,
        request: Request<p4::WriteRequest>,
    ) -> Result<Response<p4::WriteResponse>, Status> {
        let req = request.into_inner();
        self.check_device(req.device_id)?;
        #[allow(deprecated)]
        check_role_fields(req.role_id)?;
        self.check_primary(&req.role, &req.election_id)?;
        if req.atomicity != p4::write_request::Atomicity::ContinueOnError as i32 {
            return Err(Status::unimplemented(
                "only CONTINUE_ON_ERROR atomicity is supported",
            ));
        }
        let max = self.inner.opts.max_write_updates;
        if req.updates.len() > max {
            self.inner
                .stats
                .writes_too_large
                .fetch_add(1, Ordering::Relaxed);
            return Err(Status::resource_exhausted(format!(
                "Write of {} updates exceeds this switch's limit of {max} updates per Write; \
                 nothing was applied (split it into several Writes)",
                req.updates.len()
            )));
        }
        let prog = self.program()?;
        let n = req.updates.len();
        let results: Vec<Result<(), EntityError>> = if n >= BLOCKING_WRITE {
            // a big batch runs off the runtime's thread, so liveness probes (Capabilities)
            // and keep-alive pings are answered meanwhile
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                req.updates
                    .iter()
                    .map(|u| this.write_update(&prog, u))
                    .collect()
            })
            .await
            .map_err(|e| Status::internal(format!("write task: {e}")))?
        } else {
            req.updates
                .iter()
                .map(|u| self.write_update(&prog, u))
                .collect()
        };
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed == 0 {
            return Ok(Response::new(p4::WriteResponse {}));
        }
        let flavor = self.inner.opts.flavor;
        let details: Vec<prost_types::Any> =
            results.iter().map(|r| flavor.update_error(r)).collect();
        let message = format!("{failed} of {n} updates failed");
        debug!(%message, "write");
        let st = rpc::Status {
            code: tonic::Code::Unknown as i32,
            message: message.clone(),
            details,
        };
        Err(Status::with_details(
            tonic::Code::Unknown,
            message,
            st.encode_to_vec().into(),
        ))
    }

    type ReadStream = BoxStream<p4::ReadResponse>;

    async fn read(
        &self,
        request: Request<p4::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let req = request.into_inner();
        self.check_device(req.device_id)?;
        let prog = self.program()?;
        // off the runtime's thread (a wildcard read of a big CRT takes a while), so liveness
        // probes and keep-alive pings are answered meanwhile
        let this = self.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for e in &req.entities {
                let ent = e
                    .entity
                    .as_ref()
                    .ok_or_else(|| Status::invalid_argument("read of an empty entity"))?;
                this.read_entity(&prog, ent, &mut out)?;
            }
            Ok::<_, Status>(out)
        })
        .await
        .map_err(|e| Status::internal(format!("read task: {e}")))??;
        // Streamed in parts of at most READ_RESPONSE_BYTES and READ_CHUNK entries: each message
        // stays under any client's message limit, and each is encoded on its own, so a big table
        // does not hold the runtime's thread (liveness probes, pings) for the whole encoding.
        let parts = split_read(out, READ_RESPONSE_BYTES, READ_CHUNK);
        self.inner
            .stats
            .read_responses
            .fetch_add(parts.len() as u64, Ordering::Relaxed);
        Ok(Response::new(Box::pin(tokio_stream::iter(
            parts.into_iter().map(Ok),
        ))))
    }

    async fn set_forwarding_pipeline_config(
        &self,
        request: Request<p4::SetForwardingPipelineConfigRequest>,
    ) -> Result<Response<p4::SetForwardingPipelineConfigResponse>, Status> {
        use p4::set_forwarding_pipeline_config_request::Action as A;
        let req = request.into_inner();
        self.check_device(req.device_id)?;
        #[allow(deprecated)]
        check_role_fields(req.role_id)?;
        self.check_primary(&req.role, &req.election_id)?;
        let action = A::try_from(req.action).unwrap_or(A::Unspecified);
        if action == A::Commit {
            let mut st = self.inner.state.lock();
            let (prog, cfg) = st
                .saved
                .take()
                .ok_or_else(|| Status::failed_precondition("COMMIT without a saved config"))?;
            st.program = Some(prog);
            st.config = Some(cfg);
            st.digest = None;
            drop(st);
            self.inner.pipeline.reset();
            self.inner.enabled.store(true, Ordering::Relaxed);
            let _ = self.inner.digest_tx.try_send(DigestMsg::Reset);
            return Ok(Response::new(p4::SetForwardingPipelineConfigResponse {}));
        }
        let cfg = req.config.ok_or_else(|| {
            Status::invalid_argument("SetForwardingPipelineConfig without config")
        })?;
        let info = cfg
            .p4info
            .clone()
            .ok_or_else(|| Status::invalid_argument("config has no p4info"))?;
        self.inner
            .opts
            .flavor
            .check_pipeline(&info, &cfg.p4_device_config)
            .map_err(Status::invalid_argument)?;
        let prog = Arc::new(Program::resolve(info).map_err(Status::invalid_argument)?);
        match action {
            A::Unspecified => Err(Status::invalid_argument("action UNSPECIFIED")),
            A::Verify => Ok(Response::new(p4::SetForwardingPipelineConfigResponse {})),
            A::VerifyAndSave => {
                self.inner.state.lock().saved = Some((prog, cfg));
                Ok(Response::new(p4::SetForwardingPipelineConfigResponse {}))
            }
            A::VerifyAndCommit | A::ReconcileAndCommit | A::Commit => {
                let mut st = self.inner.state.lock();
                let same = st.config.as_ref().is_some_and(|c| c.p4info == cfg.p4info);
                st.program = Some(prog);
                st.config = Some(cfg);
                if !(action == A::ReconcileAndCommit && same) {
                    st.digest = None;
                    drop(st);
                    self.inner.pipeline.reset();
                    let _ = self.inner.digest_tx.try_send(DigestMsg::Reset);
                }
                self.inner.enabled.store(true, Ordering::Relaxed);
                info!("forwarding pipeline config installed");
                Ok(Response::new(p4::SetForwardingPipelineConfigResponse {}))
            }
        }
    }

    async fn get_forwarding_pipeline_config(
        &self,
        request: Request<p4::GetForwardingPipelineConfigRequest>,
    ) -> Result<Response<p4::GetForwardingPipelineConfigResponse>, Status> {
        use p4::get_forwarding_pipeline_config_request::ResponseType as T;
        let req = request.into_inner();
        self.check_device(req.device_id)?;
        let st = self.inner.state.lock();
        let Some(c) = st.config.as_ref() else {
            return Ok(Response::new(p4::GetForwardingPipelineConfigResponse {
                config: Some(p4::ForwardingPipelineConfig::default()),
            }));
        };
        let t = T::try_from(req.response_type).unwrap_or(T::All);
        let out = p4::ForwardingPipelineConfig {
            p4info: if matches!(t, T::All | T::P4infoAndCookie) {
                c.p4info.clone()
            } else {
                None
            },
            p4_device_config: if matches!(t, T::All | T::DeviceConfigAndCookie) {
                c.p4_device_config.clone()
            } else {
                vec![]
            },
            cookie: c.cookie,
        };
        Ok(Response::new(p4::GetForwardingPipelineConfigResponse {
            config: Some(out),
        }))
    }

    type StreamChannelStream = BoxStream<p4::StreamMessageResponse>;

    async fn stream_channel(
        &self,
        request: Request<Streaming<p4::StreamMessageRequest>>,
    ) -> Result<Response<Self::StreamChannelStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4096);
        let conn = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        tokio::spawn(async move {
            let mut arbitrated = false;
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        debug!(conn, error = %e, "stream error");
                        break;
                    }
                };
                use p4::stream_message_request::Update as U;
                match msg.update {
                    Some(U::Arbitration(a)) => match this.handle_arbitration(conn, &tx, a) {
                        Ok(()) => arbitrated = true,
                        Err(s) => {
                            info!(conn, code = ?s.code(), message = s.message(), "arbitration refused");
                            let _ = tx.send(Err(s)).await;
                            break;
                        }
                    },
                    Some(_) if !arbitrated => {
                        let _ = tx
                            .send(Err(Status::failed_precondition(
                                "the first stream message must be a MasterArbitrationUpdate",
                            )))
                            .await;
                        break;
                    }
                    Some(U::DigestAck(a)) => {
                        let _ = this.inner.digest_tx.send(DigestMsg::Ack(a.list_id)).await;
                    }
                    Some(U::Packet(p)) => {
                        // Spec: a PacketOut the server cannot process is answered with a
                        // StreamError carrying the PacketOut.
                        let (code, message) = if this.is_primary_conn(conn) {
                            warn!(
                                conn,
                                "PacketOut is not supported by this program (no CPU port); dropped"
                            );
                            (
                                tonic::Code::Unimplemented,
                                "PacketOut is not supported: the dvipa program has no CPU port",
                            )
                        } else {
                            (
                                tonic::Code::PermissionDenied,
                                "PacketOut from a backup controller: only the primary may send",
                            )
                        };
                        let err = p4::StreamError {
                            canonical_code: code as i32,
                            message: message.into(),
                            space: "dvipa-switch".into(),
                            code: 0,
                            details: Some(p4::stream_error::Details::PacketOut(
                                p4::PacketOutError {
                                    packet_out: Some(p),
                                },
                            )),
                        };
                        send(
                            &this.inner.stats,
                            &tx,
                            p4::stream_message_response::Update::Error(err),
                        );
                    }
                    _ => {}
                }
            }
            this.disconnect(conn);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn capabilities(
        &self,
        _r: Request<p4::CapabilitiesRequest>,
    ) -> Result<Response<p4::CapabilitiesResponse>, Status> {
        Ok(Response::new(p4::CapabilitiesResponse {
            // The protos are P4Runtime 1.4.1 (role names, as implemented here, are 1.4).
            p4runtime_api_version: "1.4.1".into(),
        }))
    }
}

// ----- digest batching -----

/// A configured duration in ns, clamped to one day (so deadlines never overflow).
fn cfg_duration(ns: i64) -> Duration {
    Duration::from_nanos(ns.clamp(0, 86_400_000_000_000) as u64)
}

struct Unacked {
    learns: Vec<Learn>,
    sent: Instant,
}

async fn digest_task(inner: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<DigestMsg>) {
    let mut batch: Vec<Learn> = Vec::new();
    let mut batch_start = Instant::now();
    let mut outstanding: HashSet<Learn> = HashSet::new();
    let mut unacked: HashMap<u64, Unacked> = HashMap::new();
    let mut next_list: u64 = 1;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let flavor = strong.opts.flavor;
        let cfg = flavor.digest_config(strong.state.lock().digest);
        drop(strong);
        // Next deadline: batch flush or ack expiry.
        let mut deadline: Option<Instant> = None;
        if let Some(c) = cfg {
            if !batch.is_empty() {
                deadline = Some(batch_start + cfg_duration(c.max_timeout_ns));
            }
            if let Some(oldest) = unacked.values().map(|u| u.sent).min() {
                let d = oldest + cfg_duration(c.ack_timeout_ns);
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        }
        let wait = deadline.unwrap_or_else(|| Instant::now() + Duration::from_millis(200));
        let msg = tokio::select! {
            m = rx.recv() => match m { Some(m) => Some(m), None => return },
            _ = tokio::time::sleep_until(wait.into()) => None,
        };
        let Some(inner) = inner.upgrade() else { return };
        let mut msgs = Vec::new();
        if let Some(m) = msg {
            msgs.push(m);
            while msgs.len() < 4096 {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
        }
        let cfg = flavor.digest_config(inner.state.lock().digest);
        for m in msgs {
            match m {
                DigestMsg::Reset => {
                    batch.clear();
                    outstanding.clear();
                    unacked.clear();
                }
                DigestMsg::Ack(_) if flavor.acks_digests_itself() => {}
                DigestMsg::Ack(id) => {
                    if let Some(u) = unacked.remove(&id) {
                        for l in u.learns {
                            outstanding.remove(&l);
                        }
                    }
                }
                DigestMsg::Learn(l) => {
                    let Some(c) = cfg else {
                        inner
                            .stats
                            .digests_unconfigured
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if !outstanding.insert(l) {
                        inner
                            .stats
                            .digests_suppressed
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if batch.is_empty() {
                        batch_start = Instant::now();
                    }
                    batch.push(l);
                    if c.max_list_size > 0 && batch.len() >= c.max_list_size as usize {
                        flush(&inner, &mut batch, &mut unacked, &mut next_list);
                    }
                }
            }
        }
        let now = Instant::now();
        match cfg {
            None => {
                batch.clear();
                outstanding.clear();
                unacked.clear();
            }
            Some(c) => {
                if !batch.is_empty() && now >= batch_start + cfg_duration(c.max_timeout_ns) {
                    flush(&inner, &mut batch, &mut unacked, &mut next_list);
                }
                if flavor.acks_digests_itself() {
                    // Acked by the server at once: never re-sent; a flow's next packet
                    // digests again.
                    for (_, u) in unacked.drain() {
                        for l in &u.learns {
                            outstanding.remove(l);
                        }
                    }
                }
                let ack = cfg_duration(c.ack_timeout_ns);
                unacked.retain(|_, u| {
                    if now >= u.sent + ack {
                        for l in &u.learns {
                            outstanding.remove(l);
                        }
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }
}

fn flush(
    inner: &Inner,
    batch: &mut Vec<Learn>,
    unacked: &mut HashMap<u64, Unacked>,
    next_list: &mut u64,
) {
    let learns = std::mem::take(batch);
    let id = *next_list;
    *next_list += 1;
    let st = inner.state.lock();
    let Some(prog) = st.program.as_ref() else {
        return;
    };
    let list = p4::DigestList {
        digest_id: prog.learn,
        list_id: id,
        data: learns.iter().map(Program::encode_learn).collect(),
        timestamp: now_unix_ns(),
    };
    let mut sent = false;
    for p in st.primaries() {
        send(
            &inner.stats,
            &p.tx,
            p4::stream_message_response::Update::Digest(list.clone()),
        );
        sent = true;
    }
    if sent {
        inner.stats.digest_lists.fetch_add(1, Ordering::Relaxed);
    }
    unacked.insert(
        id,
        Unacked {
            learns,
            sent: Instant::now(),
        },
    );
}

// ----- idle timeout -----

async fn idle_task(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(IDLE_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each idle entry was last notified. Kept here rather than in the entry (keeps a CRT
    // entry within one cache line with its key); a refresh (MODIFY or hit) moves the entry's
    // last-hit time past its notification, which re-arms it.
    let mut notified: HashMap<crate::tables::CrtKey, u64, crate::tables::Hasher> =
        HashMap::default();
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.opts.flavor.sends_idle_notifications() {
            continue;
        }
        let (prog, txs) = {
            let st = inner.state.lock();
            let txs: Vec<StreamTx> = st.primaries().map(|p| p.tx.clone()).collect();
            match st.program.clone() {
                Some(p) if !txs.is_empty() => (p, txs),
                _ => continue,
            }
        };
        let now = inner.pipeline.now_ns();
        notified.retain(|_, t| now.saturating_sub(*t) < IDLE_REPEAT_NS);
        let mut entries = Vec::new();
        {
            // Only inline fields of each entry are read until one is found idle: the scan holds
            // the tables shared, which holds up every Write (and the data path behind a waiting
            // writer), so it must not take a cache miss per entry.
            let tables = inner.pipeline.tables();
            for (k, e) in tables.crt.iter() {
                let timeout = e.idle_timeout_ns;
                if timeout <= 0 {
                    continue;
                }
                let last = e.last_hit_ns.load(Ordering::Relaxed);
                if now.saturating_sub(last) < timeout as u64 {
                    continue;
                }
                if notified.get(k).is_some_and(|&n| n > last) {
                    continue;
                }
                notified.insert(*k, now);
                let act = match e.action {
                    SelectAction::ToTarget(t) => Act::Select(SelectAction::ToTarget(t)),
                    SelectAction::NoAction => Act::Select(SelectAction::NoAction),
                };
                entries.push(prog.entry(&prog.crt, &Key::Crt(*k), &act, &e.meta));
            }
        }
        if !entries.is_empty() {
            debug!(n = entries.len(), "idle timeout notification");
            inner
                .stats
                .idle_notifications
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            let n = p4::IdleTimeoutNotification {
                table_entry: entries,
                timestamp: now_unix_ns(),
            };
            for tx in &txs {
                send(
                    &inner.stats,
                    tx,
                    p4::stream_message_response::Update::IdleTimeoutNotification(n.clone()),
                );
            }
        }
    }
}

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
//!
//! Layout: `mod.rs` the service (pipeline config, the `P4Runtime` trait's methods) and shared
//! state; `arbitration.rs`; `write.rs`; `read.rs`; `stream.rs` (digest batching, idle
//! notifications); [`program`] and [`flavor`].

mod arbitration;
pub mod flavor;
pub mod program;
mod read;
mod stream;
mod write;

use arbitration::*;
use read::*;
use stream::*;

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

/// How many distinct writer election ids [`ServerStats::writer_election_ids`] keeps.
pub const MAX_WRITER_IDS: usize = 64;

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
    /// Pipeline commits that emptied the tables (SetForwardingPipelineConfig COMMIT,
    /// VERIFY_AND_COMMIT, or RECONCILE_AND_COMMIT with another P4Info).
    pub pipeline_resets: AtomicU64,
    /// The election ids that sent a Write RPC, whatever its outcome (the first
    /// [`MAX_WRITER_IDS`] distinct ones): which controllers tried to write.
    pub writer_election_ids: Mutex<std::collections::BTreeSet<u128>>,
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
    /// Idle notifications sent once per idle period ([`SwitchServer::set_idle_notify_once`]).
    idle_once: AtomicBool,
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
        if let Some(id) = election_of(&req.election_id) {
            let mut w = self.inner.stats.writer_election_ids.lock();
            if w.len() < MAX_WRITER_IDS {
                w.insert(id);
            }
        }
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
            let saved = self.inner.state.lock().saved.take();
            let (prog, cfg) = saved
                .ok_or_else(|| Status::failed_precondition("COMMIT without a saved config"))?;
            self.install(prog, cfg, false);
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
                self.install(prog, cfg, action == A::ReconcileAndCommit);
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

impl SwitchServer {
    /// Makes `prog`/`cfg` the running pipeline. The tables, digest config and pending digests
    /// are emptied (counted in `pipeline_resets`) unless `reconcile` and the P4Info is the one
    /// already running (RECONCILE_AND_COMMIT keeps the forwarding state).
    fn install(&self, prog: Arc<Program>, cfg: p4::ForwardingPipelineConfig, reconcile: bool) {
        let mut st = self.inner.state.lock();
        let same = st.config.as_ref().is_some_and(|c| c.p4info == cfg.p4info);
        st.program = Some(prog);
        st.config = Some(cfg);
        if !(reconcile && same) {
            st.digest = None;
            drop(st);
            self.inner.pipeline.reset();
            self.inner
                .stats
                .pipeline_resets
                .fetch_add(1, Ordering::Relaxed);
            let _ = self.inner.digest_tx.try_send(DigestMsg::Reset);
        }
        self.inner.enabled.store(true, Ordering::Relaxed);
    }

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
            idle_once: AtomicBool::new(false),
        });
        tokio::spawn(digest_task(Arc::downgrade(&inner), digest_rx));
        tokio::spawn(idle_task(Arc::downgrade(&inner)));
        SwitchServer { inner }
    }

    /// Idle-timeout notifications as the P4Runtime specification reads: one per entry and idle
    /// period (again only after the entry was hit), sent whether or not a primary is there to
    /// receive it. The default repeats them about once a second while the entry stays idle and
    /// only while a primary exists, as bmv2 does.
    pub fn set_idle_notify_once(&self, once: bool) {
        self.inner.idle_once.store(once, Ordering::Relaxed);
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

    /// The election ids of the live controllers (streams that arbitrated), any role; `None`:
    /// a controller that sent no election id.
    pub fn controllers(&self) -> Vec<Option<u128>> {
        let st = self.inner.state.lock();
        st.controllers.iter().map(|c| c.election_id).collect()
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
}

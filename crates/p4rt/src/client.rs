//! Async P4Runtime session (tokio + tonic) for one (device_id, role).
//!
//! [`Session::connect`] opens the gRPC channel, starts the StreamChannel task (which sends
//! `MasterArbitrationUpdate` first, re-arbitrates after every reconnect, and dispatches
//! digests, idle-timeout notifications, packet-ins and stream errors into bounded queues), and
//! waits for the first arbitration outcome. Mastership is published on a `watch` channel,
//! connection and arbitration changes on a `broadcast` channel. Unary RPCs carry the election id
//! and role as P4Runtime requires.
//!
//! Over the project's ~800-line guide on purpose: the session and its StreamChannel task share
//! the arbitration state machine; the RPCs that use it (write splitting, reads, pipeline) sit
//! beside it.
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p4rt_proto::google::rpc;
use p4rt_proto::p4::config::v1 as cfg;
use p4rt_proto::p4::v1 as p4;
use p4rt_proto::p4::v1::p4_runtime_client::P4RuntimeClient;
use prost::Message;
use thiserror::Error;
use tokio::sync::{Mutex, broadcast, mpsc, watch};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::transport::{Channel, Endpoint};

use crate::reqlog::RequestLog;

/// Errors of the client layer.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The configuration is invalid.
    #[error("invalid P4Runtime client config: {0}")]
    Config(String),
    /// Could not connect the gRPC channel.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Address.
        addr: String,
        /// Cause.
        source: tonic::transport::Error,
    },
    /// An RPC failed as a whole.
    #[error("{rpc} failed: {code:?}: {message}")]
    Rpc {
        /// RPC name.
        rpc: &'static str,
        /// gRPC code.
        code: tonic::Code,
        /// Message.
        message: String,
    },
    /// Some updates of a Write failed (the others succeeded unless the device rolled back).
    #[error("write: {} of {total} updates failed; first: {}", failed.len(), failed.first().map(|f| f.to_string()).unwrap_or_default())]
    Write {
        /// The failed updates.
        failed: Vec<UpdateError>,
        /// Updates in the batch.
        total: usize,
    },
    /// The device ended the stream before answering the first arbitration (e.g. INVALID_ARGUMENT
    /// "election id … is already used by another controller": a dead session of ours may
    /// still hold it).
    #[error("stream refused by the device: {code:?}: {message}")]
    StreamRefused {
        /// gRPC code (`None`: the stream ended without a status).
        code: Option<tonic::Code>,
        /// Message.
        message: String,
    },
    /// No arbitration answer arrived in time.
    #[error("no arbitration response within {0:?}")]
    ArbitrationTimeout(Duration),
    /// The session is shut down or the stream is down.
    #[error("stream channel is not connected")]
    NotConnected,
    /// The request log could not be opened.
    #[error("cannot open request log {path}: {source}")]
    Log {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl ClientError {
    fn rpc(rpc: &'static str, s: tonic::Status) -> Self {
        ClientError::Rpc {
            rpc,
            code: s.code(),
            message: s.message().to_string(),
        }
    }

    /// The gRPC code of a failed RPC (or of a refused stream), if this is one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rpc { code, .. } => Some(*code),
            ClientError::StreamRefused { code, .. } => *code,
            _ => None,
        }
    }
}

/// One failed update of a batched Write, decoded from a `p4.v1.Error`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("update #{index}: {code:?}: {message}")]
pub struct UpdateError {
    /// Index of the update in the batch.
    pub index: usize,
    /// Canonical code of the update.
    pub code: tonic::Code,
    /// Message from the device.
    pub message: String,
    /// Error space of `app_code` (target-specific).
    pub space: String,
    /// Target-specific code.
    pub app_code: i32,
}

/// Mastership of this session for its (device_id, role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mastership {
    /// The stream is not up (connecting, reconnecting or shut down).
    Disconnected,
    /// This client is the primary: writes are accepted.
    Primary,
    /// Another client (with the given election id) is primary.
    Backup {
        /// Election id of the current primary, if the device reported one.
        primary_election_id: Option<u128>,
    },
    /// There is no primary for the role (device answered NOT_FOUND).
    NoPrimary,
}

/// Events published on the session's broadcast channel.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The StreamChannel is open and arbitration was sent.
    StreamOpened,
    /// An arbitration answer changed the mastership.
    Mastership(Mastership),
    /// The stream ended; a reconnect follows after `retry_in`.
    StreamClosed {
        /// Why.
        reason: String,
        /// Backoff before the next attempt.
        retry_in: Duration,
    },
    /// A queue was full and a stream message was dropped (digests are re-sent by the device
    /// after their ack timeout; idle-timeout notifications repeat).
    Dropped {
        /// "digest", "idle_timeout", "packet_in" or "stream_error".
        queue: &'static str,
    },
}

/// Session configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// gRPC address, `host:port` or `http://host:port`.
    pub addr: String,
    /// P4Runtime device id.
    pub device_id: u64,
    /// Role name; empty = the default (full access) role.
    pub role: String,
    /// Election id (> 0); the highest id among a role's clients is primary.
    pub election_id: u128,
    /// Timeout for the initial connection and for the first arbitration answer.
    pub connect_timeout: Duration,
    /// Per-RPC timeout for unary RPCs.
    pub rpc_timeout: Duration,
    /// First reconnect delay; doubled per failure up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Maximum reconnect delay.
    pub backoff_max: Duration,
    /// HTTP/2 keep-alive ping interval, so a device that vanishes without closing the
    /// connection is noticed (the stream fails and the session reconnects); `None` = off.
    pub keepalive: Option<Duration>,
    /// How long an unanswered keep-alive ping may wait before the connection is closed
    /// (`None`: the ping interval).
    pub keepalive_timeout: Option<Duration>,
    /// `TCP_USER_TIMEOUT` of the connection's socket: data (or a FIN) unacknowledged for this
    /// long aborts the connection, so a peer that vanished fails fast instead of after the
    /// kernel's ~15 min of retransmissions; `None` = the kernel default.
    pub tcp_user_timeout: Option<Duration>,
    /// Capacity of each stream dispatch queue.
    pub queue_capacity: usize,
    /// NOT_FOUND on DELETE counts as success when false (non-strict mode).
    pub strict_delete: bool,
    /// Append every request in text format to this file.
    pub request_log: Option<PathBuf>,
    /// Most updates sent in one Write RPC; [`Session::write_detailed`] splits larger batches.
    /// Bounded so the answer's per-update details (one `p4.v1.Error` per update in the
    /// trailers) fit in [`MAX_HEADER_LIST_SIZE`].
    pub max_write_updates: usize,
    /// Most encoded bytes of updates in one Write RPC (split likewise).
    pub max_write_bytes: usize,
    /// TLS to the device (`None`: plaintext). With a client identity it is mutual TLS
    /// (simple_switch_grpc's `--grpc-server-with-client-auth`).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The HTTP/2 header-list size this client accepts (SETTINGS_MAX_HEADER_LIST_SIZE). A Write's
/// per-update errors arrive in one trailer (`grpc-status-details-bin`, base64): about 100–200
/// bytes per failed update. hyper's default of 16 KiB holds about 100, and a larger trailer makes
/// h2 tear down the whole connection (and with it the P4Runtime stream and mastership). 16 MiB
/// holds [`DEFAULT_MAX_WRITE_UPDATES`] failed updates with messages of several KiB each.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 << 20;

/// Default for [`ClientConfig::max_write_updates`].
pub const DEFAULT_MAX_WRITE_UPDATES: usize = 2000;

/// Default for [`ClientConfig::max_write_bytes`] (1 MiB: well under gRPC's usual 4 MiB message
/// limit on servers).
pub const DEFAULT_MAX_WRITE_BYTES: usize = 1 << 20;

/// gRPC codes of a Write answered as a whole without per-update details for which splitting the
/// batch can tell which updates failed (the request reached the device and was judged). Others
/// (UNAVAILABLE, PERMISSION_DENIED for a non-primary, FAILED_PRECONDITION without a pipeline,
/// DEADLINE_EXCEEDED, CANCELLED …) are about the session, not the updates.
fn splittable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::ResourceExhausted
            | tonic::Code::InvalidArgument
            | tonic::Code::OutOfRange
            | tonic::Code::AlreadyExists
            | tonic::Code::NotFound
            | tonic::Code::Internal
    )
}

impl ClientConfig {
    /// Defaults for `addr` and `device_id`: default role, election id 1, 5 s connect timeout,
    /// 30 s RPC timeout, 100 ms..5 s backoff, 10 s keep-alive, queues of 1024, non-strict
    /// deletes, no request log.
    pub fn new(addr: impl Into<String>, device_id: u64) -> Self {
        ClientConfig {
            addr: addr.into(),
            device_id,
            role: String::new(),
            election_id: 1,
            connect_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            keepalive: Some(Duration::from_secs(10)),
            keepalive_timeout: None,
            tcp_user_timeout: None,
            queue_capacity: 1024,
            strict_delete: false,
            request_log: None,
            max_write_updates: DEFAULT_MAX_WRITE_UPDATES,
            max_write_bytes: DEFAULT_MAX_WRITE_BYTES,
            tls: None,
        }
    }

    /// Logs requests to `dir/p4rt-<addr>-dev<device_id>.log` (one file per switch).
    pub fn log_to_dir(mut self, dir: impl AsRef<std::path::Path>) -> Self {
        let addr: String = self
            .addr
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.request_log = Some(
            dir.as_ref()
                .join(format!("p4rt-{addr}-dev{}.log", self.device_id)),
        );
        self
    }

    fn validate(&self) -> Result<(), ClientError> {
        if self.election_id == 0 {
            return Err(ClientError::Config(
                "election_id must be > 0 (0 means \"no election id\" in P4Runtime)".into(),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ClientError::Config("queue_capacity must be > 0".into()));
        }
        if self.max_write_updates == 0 || self.max_write_bytes == 0 {
            return Err(ClientError::Config(
                "max_write_updates and max_write_bytes must be > 0".into(),
            ));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(ClientError::Config(
                "backoff_initial must be > 0 and <= backoff_max".into(),
            ));
        }
        Ok(())
    }

    fn uri(&self) -> String {
        if self.addr.contains("://") {
            self.addr.clone()
        } else if self.tls.is_some() {
            format!("https://{}", self.addr)
        } else {
            format!("http://{}", self.addr)
        }
    }
}

/// Splits a u128 into the P4Runtime `Uint128`.
pub fn to_uint128(v: u128) -> p4::Uint128 {
    p4::Uint128 {
        high: (v >> 64) as u64,
        low: v as u64,
    }
}

/// Joins a P4Runtime `Uint128`.
pub fn from_uint128(v: &p4::Uint128) -> u128 {
    (u128::from(v.high) << 64) | u128::from(v.low)
}

/// A digest list delivered to the caller; call [`DigestDelivery::ack`] once the learned
/// entries are written, so the device may send the next list for the same data.
#[derive(Debug)]
pub struct DigestDelivery {
    /// The list as received.
    pub list: p4::DigestList,
    inner: Arc<Inner>,
}

impl DigestDelivery {
    /// Sends `DigestListAck(digest_id, list_id)` on the current stream.
    pub async fn ack(self) -> Result<(), ClientError> {
        let ack = p4::DigestListAck {
            digest_id: self.list.digest_id,
            list_id: self.list.list_id,
        };
        self.inner
            .send_stream(p4::stream_message_request::Update::DigestAck(ack))
            .await
    }
}

/// Receivers of the stream dispatch queues.
#[derive(Debug)]
pub struct StreamQueues {
    /// Digest lists (ack each one after processing).
    pub digests: mpsc::Receiver<DigestDelivery>,
    /// Idle-timeout notifications.
    pub idle_timeouts: mpsc::Receiver<p4::IdleTimeoutNotification>,
    /// Packet-ins.
    pub packets: mpsc::Receiver<p4::PacketIn>,
    /// Stream errors reported by the device.
    pub errors: mpsc::Receiver<p4::StreamError>,
}

#[derive(Debug)]
struct Senders {
    digests: mpsc::Sender<DigestDelivery>,
    idle_timeouts: mpsc::Sender<p4::IdleTimeoutNotification>,
    packets: mpsc::Sender<p4::PacketIn>,
    errors: mpsc::Sender<p4::StreamError>,
}

#[derive(Debug)]
struct Inner {
    cfg: ClientConfig,
    channel: Channel,
    stream_tx: Mutex<Option<mpsc::Sender<p4::StreamMessageRequest>>>,
    mastership: watch::Sender<Mastership>,
    events: broadcast::Sender<SessionEvent>,
    log: Option<RequestLog>,
    reconnects: AtomicU64,
    /// Code and message of the last stream end (for [`ClientError::StreamRefused`]).
    last_close: std::sync::Mutex<Option<(Option<tonic::Code>, String)>>,
}

impl Inner {
    async fn send_stream(&self, u: p4::stream_message_request::Update) -> Result<(), ClientError> {
        let msg = p4::StreamMessageRequest { update: Some(u) };
        if let Some(l) = &self.log {
            l.log("StreamChannel", "p4.v1.StreamMessageRequest", &msg);
        }
        let tx = self.stream_tx.lock().await.clone();
        match tx {
            Some(tx) => tx.send(msg).await.map_err(|_| ClientError::NotConnected),
            None => Err(ClientError::NotConnected),
        }
    }

    fn client(&self) -> P4RuntimeClient<Channel> {
        P4RuntimeClient::new(self.channel.clone())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    fn request<T>(&self, rpc: &str, type_name: &str, msg: T) -> tonic::Request<T>
    where
        T: Message,
    {
        if let Some(l) = &self.log {
            l.log(rpc, type_name, &msg);
        }
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.cfg.rpc_timeout);
        r
    }
}

/// Whether a pipeline push happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineOutcome {
    /// The device already ran a pipeline with this cookie; nothing was sent.
    AlreadyInstalled,
    /// The pipeline was pushed with VERIFY_AND_COMMIT.
    Pushed,
}

/// A P4Runtime session with one device for one role.
#[derive(Debug)]
pub struct Session {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<p4::Entity, ClientError>> + Send>>;

impl Session {
    /// Connects, opens the stream, arbitrates, and waits for the first arbitration answer.
    pub async fn connect(cfg: ClientConfig) -> Result<(Session, StreamQueues), ClientError> {
        cfg.validate()?;
        let mut endpoint = Endpoint::from_shared(cfg.uri())
            .map_err(|e| ClientError::Config(format!("address {:?}: {e}", cfg.addr)))?
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_max_header_list_size(MAX_HEADER_LIST_SIZE);
        if let Some(t) = &cfg.tls {
            endpoint = endpoint
                .tls_config(t.clone())
                .map_err(|e| ClientError::Config(format!("TLS to {}: {e}", cfg.addr)))?;
        }
        if let Some(k) = cfg.keepalive {
            endpoint = endpoint
                .http2_keep_alive_interval(k)
                .keep_alive_timeout(cfg.keepalive_timeout.unwrap_or(k))
                .keep_alive_while_idle(true);
        }
        let channel = endpoint
            .connect_with_connector(crate::connector::tcp(
                cfg.connect_timeout,
                cfg.tcp_user_timeout,
            ))
            .await
            .map_err(|source| ClientError::Connect {
                addr: cfg.addr.clone(),
                source,
            })?;
        let log = match &cfg.request_log {
            Some(p) => Some(RequestLog::create(p).map_err(|source| ClientError::Log {
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        let cap = cfg.queue_capacity;
        let (dtx, drx) = mpsc::channel(cap);
        let (itx, irx) = mpsc::channel(cap);
        let (ptx, prx) = mpsc::channel(cap);
        let (etx, erx) = mpsc::channel(cap);
        let (mtx, mut mrx) = watch::channel(Mastership::Disconnected);
        let (events, _) = broadcast::channel(256);
        let inner = Arc::new(Inner {
            cfg,
            channel,
            stream_tx: Mutex::new(None),
            mastership: mtx,
            events,
            log,
            reconnects: AtomicU64::new(0),
            last_close: std::sync::Mutex::new(None),
        });
        let (shutdown, srx) = watch::channel(false);
        let senders = Senders {
            digests: dtx,
            idle_timeouts: itx,
            packets: ptx,
            errors: etx,
        };
        let mut ev = inner.events.subscribe();
        tokio::spawn(stream_task(inner.clone(), senders, srx));
        let timeout = inner.cfg.connect_timeout;
        // The first arbitration answer, or the stream's end before it (a refusal is reported
        // as such rather than retried by the stream task until the timeout).
        let first = async {
            loop {
                tokio::select! {
                    r = mrx.wait_for(|m| *m != Mastership::Disconnected) => {
                        return r.map(|_| ()).map_err(|_| ClientError::NotConnected);
                    }
                    e = ev.recv() => match e {
                        Ok(SessionEvent::StreamClosed { .. }) => {
                            let (code, message) = inner
                                .last_close
                                .lock()
                                .expect("last_close lock")
                                .clone()
                                .unwrap_or((None, "stream closed".into()));
                            return Err(ClientError::StreamRefused { code, message });
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(ClientError::NotConnected);
                        }
                    },
                }
            }
        };
        match tokio::time::timeout(timeout, first).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = shutdown.send(true);
                return Err(e);
            }
            Err(_) => {
                let _ = shutdown.send(true);
                return Err(ClientError::ArbitrationTimeout(timeout));
            }
        }
        Ok((
            Session { inner, shutdown },
            StreamQueues {
                digests: drx,
                idle_timeouts: irx,
                packets: prx,
                errors: erx,
            },
        ))
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// Current mastership.
    pub fn mastership(&self) -> Mastership {
        *self.inner.mastership.borrow()
    }

    /// A watch receiver of the mastership.
    pub fn watch_mastership(&self) -> watch::Receiver<Mastership> {
        self.inner.mastership.subscribe()
    }

    /// A receiver of session events.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// How many times the stream was re-opened after a drop.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Waits until this session is primary.
    pub async fn wait_primary(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut rx = self.watch_mastership();
        tokio::time::timeout(timeout, rx.wait_for(|m| *m == Mastership::Primary))
            .await
            .map_err(|_| ClientError::ArbitrationTimeout(timeout))?
            .map_err(|_| ClientError::NotConnected)?;
        Ok(())
    }

    /// The device's P4Runtime API version.
    pub async fn capabilities(&self) -> Result<String, ClientError> {
        let req = self.inner.request(
            "Capabilities",
            "p4.v1.CapabilitiesRequest",
            p4::CapabilitiesRequest {},
        );
        let r = self
            .inner
            .client()
            .capabilities(req)
            .await
            .map_err(|s| ClientError::rpc("Capabilities", s))?;
        Ok(r.into_inner().p4runtime_api_version)
    }

    /// A liveness probe: one `Capabilities` RPC (standard P4Runtime, answered by every target
    /// without touching the pipeline) with its own deadline. `Ok` when the device answered, even
    /// with an error status (its server is alive); `Err` when no answer came (deadline, the
    /// connection is broken or cannot be made).
    pub async fn probe(&self, deadline: Duration) -> Result<(), ClientError> {
        let mut req = self.inner.request(
            "Capabilities",
            "p4.v1.CapabilitiesRequest",
            p4::CapabilitiesRequest {},
        );
        req.set_timeout(deadline);
        match self.inner.client().capabilities(req).await {
            Ok(_) => Ok(()),
            Err(s)
                if !matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                        | tonic::Code::Unknown
                ) =>
            {
                Ok(())
            }
            Err(s) => Err(ClientError::rpc("Capabilities", s)),
        }
    }

    /// The cookie of the installed pipeline (GetForwardingPipelineConfig COOKIE_ONLY);
    /// `None` when the device has no pipeline or reports no cookie.
    pub async fn pipeline_cookie(&self) -> Result<Option<u64>, ClientError> {
        let req = self.inner.request(
            "GetForwardingPipelineConfig",
            "p4.v1.GetForwardingPipelineConfigRequest",
            p4::GetForwardingPipelineConfigRequest {
                device_id: self.inner.cfg.device_id,
                response_type: p4::get_forwarding_pipeline_config_request::ResponseType::CookieOnly
                    as i32,
            },
        );
        match self
            .inner
            .client()
            .get_forwarding_pipeline_config(req)
            .await
        {
            Ok(r) => Ok(r
                .into_inner()
                .config
                .and_then(|c| c.cookie)
                .map(|c| c.cookie)),
            // no pipeline installed yet (bmv2 answers FAILED_PRECONDITION)
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::NotFound
                ) =>
            {
                Ok(None)
            }
            Err(s) => Err(ClientError::rpc("GetForwardingPipelineConfig", s)),
        }
    }

    /// Installs the pipeline with VERIFY_AND_COMMIT unless the device already runs one with
    /// the same `cookie`.
    pub async fn set_pipeline(
        &self,
        p4info: cfg::P4Info,
        device_config: Vec<u8>,
        cookie: u64,
    ) -> Result<PipelineOutcome, ClientError> {
        if self.pipeline_cookie().await? == Some(cookie) {
            return Ok(PipelineOutcome::AlreadyInstalled);
        }
        self.push_pipeline(p4info, device_config, cookie).await?;
        Ok(PipelineOutcome::Pushed)
    }

    /// Unconditional SetForwardingPipelineConfig VERIFY_AND_COMMIT.
    pub async fn push_pipeline(
        &self,
        p4info: cfg::P4Info,
        device_config: Vec<u8>,
        cookie: u64,
    ) -> Result<(), ClientError> {
        let msg = p4::SetForwardingPipelineConfigRequest {
            device_id: self.inner.cfg.device_id,
            role: self.inner.cfg.role.clone(),
            election_id: Some(to_uint128(self.inner.cfg.election_id)),
            action: p4::set_forwarding_pipeline_config_request::Action::VerifyAndCommit as i32,
            config: Some(p4::ForwardingPipelineConfig {
                p4info: Some(p4info),
                p4_device_config: device_config,
                cookie: Some(p4::forwarding_pipeline_config::Cookie { cookie }),
            }),
            ..Default::default()
        };
        let req = self.inner.request(
            "SetForwardingPipelineConfig",
            "p4.v1.SetForwardingPipelineConfigRequest",
            msg,
        );
        self.inner
            .client()
            .set_forwarding_pipeline_config(req)
            .await
            .map_err(|s| ClientError::rpc("SetForwardingPipelineConfig", s))?;
        Ok(())
    }

    /// Writes one batch; per-update outcome (`Err` for failed updates), in order. The outer
    /// error is for RPC-level failures (session lost, not primary, no pipeline …).
    ///
    /// The batch goes out in Writes of at most `max_write_updates` updates and
    /// `max_write_bytes` encoded bytes, one after the other. A Write answered as a whole
    /// without per-update details (a device that does not send them, or a limit on its side)
    /// is split in halves and retried until every update has its own answer; retrying is safe
    /// because the updates are applied independently (CONTINUE_ON_ERROR): an INSERT that had
    /// been applied answers ALREADY_EXISTS, a DELETE NOT_FOUND (success unless strict).
    pub async fn write_detailed(
        &self,
        updates: Vec<p4::Update>,
    ) -> Result<Vec<Result<(), UpdateError>>, ClientError> {
        let n = updates.len();
        let max_n = self.inner.cfg.max_write_updates.max(1);
        let max_b = self.inner.cfg.max_write_bytes.max(1);
        let mut out = Vec::with_capacity(n);
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        for u in updates {
            let len = u.encoded_len() + 4;
            if !chunk.is_empty() && (chunk.len() >= max_n || bytes + len > max_b) {
                self.write_split(std::mem::take(&mut chunk), out.len(), &mut out)
                    .await?;
                bytes = 0;
            }
            bytes += len;
            chunk.push(u);
        }
        if !chunk.is_empty() {
            self.write_split(chunk, out.len(), &mut out).await?;
        }
        Ok(out)
    }

    /// One Write; on an answer without per-update details, the two halves separately.
    /// `base`: index of `updates[0]` in the caller's batch (for [`UpdateError::index`]).
    fn write_split<'a>(
        &'a self,
        updates: Vec<p4::Update>,
        base: usize,
        out: &'a mut Vec<Result<(), UpdateError>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send + 'a>> {
        Box::pin(async move {
            let n = updates.len();
            // Kept for the rare split: one encoded buffer is far cheaper than a deep clone of
            // every update (one allocation instead of several per update).
            let mut kept = Vec::new();
            if n > 1 {
                for u in &updates {
                    u.encode_length_delimited(&mut kept)
                        .expect("a Vec grows as needed");
                }
            }
            let kind0 = p4::Update {
                r#type: updates[0].r#type,
                entity: None,
            };
            let status = match self.write_once(updates).await {
                Ok(rs) => {
                    out.extend(rs.into_iter().map(|r| {
                        r.map_err(|mut e| {
                            e.index += base;
                            e
                        })
                    }));
                    return Ok(());
                }
                Err(s) => s,
            };
            if !splittable(status.code()) {
                return Err(ClientError::rpc("Write", status));
            }
            if n == 1 {
                // The RPC's status is the one update's answer.
                let e = UpdateError {
                    index: base,
                    code: status.code(),
                    message: status.message().to_string(),
                    space: String::new(),
                    app_code: 0,
                };
                out.push(self.non_strict(&kind0, Err(e)));
                return Ok(());
            }
            let mut buf = kept.as_slice();
            let mut updates = Vec::with_capacity(n);
            while !buf.is_empty() {
                updates.push(
                    p4::Update::decode_length_delimited(&mut buf)
                        .expect("decoding what was just encoded"),
                );
            }
            tracing::debug!(
                updates = n,
                code = ?status.code(),
                "Write answered without per-update details: retrying in halves"
            );
            let mut first = updates;
            let second = first.split_off(n / 2);
            self.write_split(first, base, out).await?;
            self.write_split(second, base + n / 2, out).await
        })
    }

    /// One Write RPC: per-update outcomes, or the status of a Write answered as a whole
    /// without (decodable) per-update details.
    async fn write_once(
        &self,
        updates: Vec<p4::Update>,
    ) -> Result<Vec<Result<(), UpdateError>>, tonic::Status> {
        let n = updates.len();
        let kinds: Vec<p4::Update> = updates
            .iter()
            .map(|u| p4::Update {
                r#type: u.r#type,
                entity: None,
            })
            .collect();
        let msg = p4::WriteRequest {
            device_id: self.inner.cfg.device_id,
            role: self.inner.cfg.role.clone(),
            election_id: Some(to_uint128(self.inner.cfg.election_id)),
            updates,
            atomicity: p4::write_request::Atomicity::ContinueOnError as i32,
            ..Default::default()
        };
        let req = self.inner.request("Write", "p4.v1.WriteRequest", msg);
        let status = match self.inner.client().write(req).await {
            Ok(_) => return Ok(vec![Ok(()); n]),
            Err(s) => s,
        };
        let per_update = decode_write_errors(&status, n).ok_or(status)?;
        Ok(per_update
            .into_iter()
            .zip(&kinds)
            .map(|(r, u)| self.non_strict(u, r))
            .collect())
    }

    /// NOT_FOUND on a DELETE is success unless `strict_delete`.
    fn non_strict(&self, u: &p4::Update, r: Result<(), UpdateError>) -> Result<(), UpdateError> {
        match r {
            Err(e)
                if u.r#type == p4::update::Type::Delete as i32
                    && !self.inner.cfg.strict_delete
                    && e.code == tonic::Code::NotFound =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Writes one batch; `Err(ClientError::Write)` lists the failed updates.
    pub async fn write(&self, updates: Vec<p4::Update>) -> Result<(), ClientError> {
        let total = updates.len();
        let failed: Vec<UpdateError> = self
            .write_detailed(updates)
            .await?
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ClientError::Write { failed, total })
        }
    }

    /// Writes `updates` in batches of `batch_size`; failed update indexes refer to `updates`.
    pub async fn write_batched(
        &self,
        updates: Vec<p4::Update>,
        batch_size: usize,
    ) -> Result<(), ClientError> {
        let total = updates.len();
        let mut failed = Vec::new();
        let mut base = 0;
        let mut it = updates.into_iter().peekable();
        while it.peek().is_some() {
            let batch: Vec<p4::Update> = it.by_ref().take(batch_size.max(1)).collect();
            let len = batch.len();
            for r in self.write_detailed(batch).await? {
                if let Err(mut e) = r {
                    e.index += base;
                    failed.push(e);
                }
            }
            base += len;
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ClientError::Write { failed, total })
        }
    }

    /// Reads entities (wildcards allowed) as a stream.
    pub async fn read(&self, entities: Vec<p4::Entity>) -> Result<ReadStream, ClientError> {
        let msg = p4::ReadRequest {
            device_id: self.inner.cfg.device_id,
            role: self.inner.cfg.role.clone(),
            entities,
        };
        let req = self.inner.request("Read", "p4.v1.ReadRequest", msg);
        let stream = self
            .inner
            .client()
            .read(req)
            .await
            .map_err(|s| ClientError::rpc("Read", s))?
            .into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut stream = stream;
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        for e in resp.entities {
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => return,
                    Err(s) => {
                        let _ = tx.send(Err(ClientError::rpc("Read", s))).await;
                        return;
                    }
                }
            }
        });
        let flat = ReceiverStream::new(rx);
        Ok(Box::pin(flat))
    }

    /// Reads entities and collects them.
    pub async fn read_all(
        &self,
        entities: Vec<p4::Entity>,
    ) -> Result<Vec<p4::Entity>, ClientError> {
        let mut s = self.read(entities).await?;
        let mut out = Vec::new();
        while let Some(e) = s.next().await {
            out.push(e?);
        }
        Ok(out)
    }

    /// Sends a packet-out on the stream.
    pub async fn packet_out(&self, packet: p4::PacketOut) -> Result<(), ClientError> {
        self.inner
            .send_stream(p4::stream_message_request::Update::Packet(packet))
            .await
    }
}

/// Decodes per-update errors of a failed Write from `grpc-status-details-bin`
/// (`google.rpc.Status` whose details are one `p4.v1.Error` per update). `None` when the status
/// carries no such details (the RPC failed as a whole).
pub fn decode_write_errors(
    status: &tonic::Status,
    n_updates: usize,
) -> Option<Vec<Result<(), UpdateError>>> {
    if status.details().is_empty() {
        return None;
    }
    let st = rpc::Status::decode(status.details()).ok()?;
    if st.details.len() != n_updates {
        return None;
    }
    let mut out = Vec::with_capacity(n_updates);
    for (index, any) in st.details.iter().enumerate() {
        if !any.type_url.ends_with("/p4.v1.Error") && any.type_url != "p4.v1.Error" {
            return None;
        }
        let e = p4::Error::decode(any.value.as_slice()).ok()?;
        if e.canonical_code == 0 {
            out.push(Ok(()));
        } else {
            out.push(Err(UpdateError {
                index,
                code: tonic::Code::from_i32(e.canonical_code),
                message: e.message,
                space: e.space,
                app_code: e.code,
            }));
        }
    }
    Some(out)
}

/// Builds the `grpc-status-details-bin` payload for per-update results (server side).
pub fn encode_write_errors(results: &[p4::Error]) -> Vec<u8> {
    let st = rpc::Status {
        code: tonic::Code::Unknown as i32,
        message: "one or more updates failed".into(),
        details: results
            .iter()
            .map(|e| prost_types::Any {
                type_url: "type.googleapis.com/p4.v1.Error".into(),
                value: e.encode_to_vec(),
            })
            .collect(),
    };
    st.encode_to_vec()
}

fn mastership_of(inner: &Inner, a: &p4::MasterArbitrationUpdate) -> Mastership {
    let code = a.status.as_ref().map(|s| s.code).unwrap_or(0);
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => Mastership::Primary,
        tonic::Code::NotFound => Mastership::NoPrimary,
        _ => Mastership::Backup {
            primary_election_id: a.election_id.as_ref().map(from_uint128).filter(|id| {
                // the device reports the primary's id; ignore an echo of our own
                *id != inner.cfg.election_id
            }),
        },
    }
}

fn arbitration(cfg: &ClientConfig) -> p4::StreamMessageRequest {
    p4::StreamMessageRequest {
        update: Some(p4::stream_message_request::Update::Arbitration(
            p4::MasterArbitrationUpdate {
                device_id: cfg.device_id,
                role: if cfg.role.is_empty() {
                    None
                } else {
                    Some(p4::Role {
                        name: cfg.role.clone(),
                        ..Default::default()
                    })
                },
                election_id: Some(to_uint128(cfg.election_id)),
                status: None,
            },
        )),
    }
}

async fn stream_task(inner: Arc<Inner>, senders: Senders, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = inner.cfg.backoff_initial;
    let mut first = true;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if !first {
            inner.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let (code, reason) = tokio::select! {
            r = run_stream(&inner, &senders, &mut backoff) => r,
            _ = shutdown.changed() => (None, "session shut down".to_string()),
        };
        *inner.last_close.lock().expect("last_close lock") = Some((code, reason.clone()));
        *inner.stream_tx.lock().await = None;
        inner.mastership.send_replace(Mastership::Disconnected);
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            break;
        }
        match crate::ratelimit::check(&format!("stream closed {}", inner.cfg.addr)) {
            Some(suppressed) => {
                tracing::warn!(addr = %inner.cfg.addr, %reason, retry_in = ?backoff, suppressed, "P4Runtime stream closed")
            }
            None => {
                tracing::debug!(addr = %inner.cfg.addr, %reason, retry_in = ?backoff, "P4Runtime stream closed")
            }
        }
        let _ = inner.events.send(SessionEvent::StreamClosed {
            reason,
            retry_in: backoff,
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => break,
        }
        backoff = (backoff * 2).min(inner.cfg.backoff_max);
    }
    *inner.stream_tx.lock().await = None;
    inner.mastership.send_replace(Mastership::Disconnected);
}

/// Runs one StreamChannel until it ends; returns the gRPC code (if any) and the reason.
async fn run_stream(
    inner: &Arc<Inner>,
    s: &Senders,
    backoff: &mut Duration,
) -> (Option<tonic::Code>, String) {
    let (tx, rx) = mpsc::channel(inner.cfg.queue_capacity.max(16));
    let arb = arbitration(&inner.cfg);
    if let Some(l) = &inner.log {
        l.log("StreamChannel", "p4.v1.StreamMessageRequest", &arb);
    }
    if tx.send(arb).await.is_err() {
        return (None, "stream sender closed".into());
    }
    let mut client = inner.client();
    let mut resp = match client.stream_channel(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            return (
                Some(e.code()),
                format!("StreamChannel: {:?}: {}", e.code(), e.message()),
            );
        }
    };
    *inner.stream_tx.lock().await = Some(tx);
    let _ = inner.events.send(SessionEvent::StreamOpened);
    use p4::stream_message_response::Update as U;
    loop {
        let msg = match resp.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return (None, "stream ended by the device".into()),
            Err(e) => {
                return (
                    Some(e.code()),
                    format!("stream error: {:?}: {}", e.code(), e.message()),
                );
            }
        };
        match msg.update {
            Some(U::Arbitration(a)) => {
                let m = mastership_of(inner, &a);
                *backoff = inner.cfg.backoff_initial;
                let changed = inner.mastership.send_replace(m) != m;
                if changed {
                    tracing::info!(addr = %inner.cfg.addr, mastership = ?m, "P4Runtime arbitration");
                    let _ = inner.events.send(SessionEvent::Mastership(m));
                }
            }
            Some(U::Digest(list)) => {
                let d = DigestDelivery {
                    list,
                    inner: inner.clone(),
                };
                if s.digests.try_send(d).is_err() {
                    let _ = inner.events.send(SessionEvent::Dropped { queue: "digest" });
                }
            }
            Some(U::IdleTimeoutNotification(n)) => {
                if s.idle_timeouts.try_send(n).is_err() {
                    let _ = inner.events.send(SessionEvent::Dropped {
                        queue: "idle_timeout",
                    });
                }
            }
            Some(U::Packet(p)) => {
                if s.packets.try_send(p).is_err() {
                    let _ = inner
                        .events
                        .send(SessionEvent::Dropped { queue: "packet_in" });
                }
            }
            Some(U::Error(e)) => {
                tracing::warn!(addr = %inner.cfg.addr, code = e.canonical_code, message = %e.message, "P4Runtime stream error");
                if s.errors.try_send(e).is_err() {
                    let _ = inner.events.send(SessionEvent::Dropped {
                        queue: "stream_error",
                    });
                }
            }
            Some(U::Other(_)) | None => {}
        }
    }
}

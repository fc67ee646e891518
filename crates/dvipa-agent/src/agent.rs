//! The agent's run loop: one controller session at a time over `ServerStack.Attach`, with
//! reconnect and exponential backoff.
//!
//! A session: Hello (seq 1) → Welcome → VIPA list (applied to `lo` and the tracker) → a full
//! re-report (`full_sync` batches, `sync_done` on the last) → then, until the stream breaks:
//! a sock_diag dump every poll interval (and right after a kernel socket-destroy event), whose
//! differences go out as Report batches; a Heartbeat whenever nothing was sent for the Welcome's
//! interval; VIPA list updates; Acks (refused items are logged with the item and counted); drain
//! orders from the control socket.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvipa_proto::v1::server_stack_client::ServerStackClient;
use dvipa_proto::v1::{
    AgentMessage, ControllerMessage, Heartbeat, Hello, ItemError, Report, VipaList, agent_message,
    controller_message,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::diag::{DestroyWatch, DiagError, SockDiag};
use crate::lo::{Loopback, set_arp_sysctls};
use crate::model::Snapshot;
use crate::tracker::{Delta, Drain, Tracker, VipaSet};

/// Agent settings (the CLI fills these in).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Stack name; with TLS it must match the client certificate's name.
    pub stack: String,
    /// Underlay ("XCF") address of this server.
    pub underlay: Ipv4Addr,
    /// Controller endpoint, `https://host:port` (or `http://` with `tls: None`).
    pub controller: String,
    /// `None` = plaintext (only with `--insecure`) unless `tls_reload` is set.
    pub tls: Option<ClientTlsConfig>,
    /// TLS material that follows its files (certificate rotation): when set, every new
    /// connection takes its current config, and it wins over `tls`.
    pub tls_reload: Option<Arc<dvipa_tls::Reloader<ClientTlsConfig>>>,
    pub poll_interval: Duration,
    /// Configured weight for SRVSTAT and Heartbeat (0 = none).
    pub weight: u32,
    /// Most items (SRVSTAT + NEWCONN + TERMCONN) per Report.
    pub max_batch: usize,
    /// Most VIPAs taken from a VIPA list (the rest are refused and counted).
    pub max_vipas: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Add/remove DVIPAs on `lo`.
    pub manage_loopback: bool,
    /// Set the ARP sysctls (under `proc_sys`).
    pub arp_sysctls: bool,
    pub proc_sys: PathBuf,
    /// Re-dump immediately on kernel socket-destroy events.
    pub destroy_events: bool,
    /// How long to wait for Welcome and the first VIPA list.
    pub handshake_timeout: Duration,
}

impl AgentConfig {
    /// Defaults for everything but the identity and the endpoint.
    pub fn new(stack: &str, underlay: Ipv4Addr, controller: &str) -> Self {
        AgentConfig {
            stack: stack.to_string(),
            underlay,
            controller: controller.to_string(),
            tls: None,
            tls_reload: None,
            poll_interval: Duration::from_millis(100),
            weight: 0,
            max_batch: 512,
            max_vipas: DEFAULT_MAX_VIPAS as usize,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            manage_loopback: true,
            arp_sysctls: true,
            proc_sys: PathBuf::from("/proc/sys"),
            destroy_events: true,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Default of [`AgentConfig::max_vipas`] (`--max-vipas`).
pub const DEFAULT_MAX_VIPAS: u64 = 1024;

/// Fatal agent errors (everything else is logged, counted and retried).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid controller endpoint {url}: {detail}")]
    Endpoint { url: String, detail: String },
    #[error(transparent)]
    Diag(#[from] DiagError),
    #[error(transparent)]
    Loopback(#[from] crate::lo::LoError),
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("controller refused the stream: {0}")]
    Refused(tonic::Status),
    #[error("stream: {0}")]
    Stream(tonic::Status),
    #[error("controller closed the stream")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error(transparent)]
    Diag(#[from] DiagError),
}

/// Counters, shared with the control socket.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub connected: AtomicBool,
    pub sessions: AtomicU64,
    pub session_failures: AtomicU64,
    pub polls: AtomicU64,
    pub destroy_wakeups: AtomicU64,
    pub diag_errors: AtomicU64,
    pub reports_sent: AtomicU64,
    pub items_sent: AtomicU64,
    pub heartbeats_sent: AtomicU64,
    pub ack_errors: AtomicU64,
    pub vipa_list_errors: AtomicU64,
    pub loopback_errors: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub control_bad_requests: AtomicU64,
    /// VIPA list entries refused, by reason ([`crate::tracker::VipaEntryError::reason`]).
    pub vipa_refused: Mutex<BTreeMap<&'static str, u64>>,
}

macro_rules! bump {
    ($stats:expr, $field:ident) => {
        bump!($stats, $field, 1)
    };
    ($stats:expr, $field:ident, $n:expr) => {{
        $stats.$field.fetch_add($n as u64, Ordering::Relaxed);
        metrics::counter!(concat!("dvipa_agent_", stringify!($field), "_total"))
            .increment($n as u64);
    }};
}

impl AgentStats {
    pub fn to_json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "sessions": g(&self.sessions),
            "session_failures": g(&self.session_failures),
            "polls": g(&self.polls),
            "destroy_wakeups": g(&self.destroy_wakeups),
            "diag_errors": g(&self.diag_errors),
            "reports_sent": g(&self.reports_sent),
            "items_sent": g(&self.items_sent),
            "heartbeats_sent": g(&self.heartbeats_sent),
            "ack_errors": g(&self.ack_errors),
            "vipa_list_errors": g(&self.vipa_list_errors),
            "loopback_errors": g(&self.loopback_errors),
            "protocol_errors": g(&self.protocol_errors),
            "control_bad_requests": g(&self.control_bad_requests),
            "vipa_refused": self.vipa_refused.lock().map(|m| m.clone()).unwrap_or_default(),
        })
    }
}

/// A request from the control socket.
#[derive(Debug)]
pub enum Control {
    /// Drain (`on`) or undrain a port.
    Drain {
        drain: Drain,
        on: bool,
        reply: oneshot::Sender<String>,
    },
    /// The agent's state as JSON.
    Status { reply: oneshot::Sender<String> },
}

/// The agent: owns the kernel observers, the tracker and the session loop.
///
/// Network namespaces: the sock_diag and rtnetlink sockets are opened by [`Agent::new`] in the
/// calling thread's namespace, but the ARP sysctls are written by whichever runtime thread runs
/// the session. To run an agent in-process inside another namespace, call `new` and `run` on a
/// thread that has `setns`-ed into it, with a current-thread tokio runtime. (The binary runs in
/// one namespace as a whole, e.g. under `ip netns exec`.)
pub struct Agent {
    cfg: AgentConfig,
    epoch: u64,
    tracker: Tracker,
    diag: Arc<Mutex<SockDiag>>,
    destroy: Option<AsyncFd<DestroyWatch>>,
    lo: Option<Loopback>,
    sysctls_done: bool,
    stats: Arc<AgentStats>,
    control: mpsc::Receiver<Control>,
    control_tx: mpsc::Sender<Control>,
    last_poll: Instant,
    /// How long the last dump took (event-driven dumps are spaced by a multiple of it).
    last_dump_cost: Duration,
}

fn new_epoch() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 40) | 1
}

fn describe(report: Option<&Report>, e: &ItemError) -> String {
    let i = e.index as usize;
    let item = report.and_then(|r| match e.list.as_str() {
        "srvstat" => r.srvstat.get(i).map(|s| {
            format!(
                "SRVSTAT {}:{} proto {} listening={}",
                Ipv4Addr::from(s.dvipa),
                s.port,
                s.protocol,
                s.listening
            )
        }),
        "newconn" | "termconn" => {
            let l = if e.list == "newconn" {
                &r.newconn
            } else {
                &r.termconn
            };
            l.get(i).map(|c| {
                format!(
                    "{} {}:{} -> {}:{}",
                    e.list.to_uppercase(),
                    Ipv4Addr::from(c.client_addr),
                    c.client_port,
                    Ipv4Addr::from(c.dvipa),
                    c.dvipa_port
                )
            })
        }
        _ => None,
    });
    item.unwrap_or_else(|| format!("{}[{}]", e.list, e.index))
}

/// An open Attach stream.
struct Session {
    tx: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<ControllerMessage>,
    seq: u64,
    heartbeat: Duration,
    last_sent: Instant,
    pending: BTreeMap<u64, Report>,
}

/// Reports kept until acked, to name refused items in logs.
const PENDING_MAX: usize = 256;

impl Session {
    async fn send(&mut self, msg: agent_message::Msg) -> Result<u64, SessionError> {
        self.seq += 1;
        let seq = self.seq;
        self.tx
            .send(AgentMessage {
                seq,
                msg: Some(msg),
            })
            .await
            .map_err(|_| SessionError::Closed)?;
        self.last_sent = Instant::now();
        Ok(seq)
    }

    async fn send_report(&mut self, r: Report, stats: &AgentStats) -> Result<(), SessionError> {
        let items = r.srvstat.len() + r.newconn.len() + r.termconn.len();
        let seq = self.send(agent_message::Msg::Report(r.clone())).await?;
        self.pending.insert(seq, r);
        while self.pending.len() > PENDING_MAX {
            self.pending.pop_first();
        }
        bump!(stats, reports_sent);
        bump!(stats, items_sent, items);
        Ok(())
    }

    async fn send_delta(
        &mut self,
        d: Delta,
        max: usize,
        stats: &AgentStats,
    ) -> Result<(), SessionError> {
        if d.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            srvstat = d.srvstat.len(),
            newconn = d.newconn.len(),
            termconn = d.termconn.len(),
            "reporting changes"
        );
        for r in d.into_reports(max) {
            self.send_report(r, stats).await?;
        }
        Ok(())
    }

    async fn next(
        &mut self,
        what: &'static str,
        t: Duration,
    ) -> Result<ControllerMessage, SessionError> {
        match tokio::time::timeout(t, self.inbound.message()).await {
            Err(_) => Err(SessionError::Timeout(what)),
            Ok(Err(s)) => Err(SessionError::Stream(s)),
            Ok(Ok(None)) => Err(SessionError::Closed),
            Ok(Ok(Some(m))) => Ok(m),
        }
    }
}

impl Agent {
    /// Opens the kernel observers in the calling thread's network namespace.
    pub async fn new(cfg: AgentConfig) -> Result<Self, AgentError> {
        let tls = cfg.tls.is_some() || cfg.tls_reload.is_some();
        if tls != cfg.controller.starts_with("https://") {
            return Err(AgentError::Endpoint {
                url: cfg.controller.clone(),
                detail: if tls {
                    "TLS is configured: use an https:// URL".into()
                } else {
                    "without TLS (--insecure) use an http:// URL".into()
                },
            });
        }
        Endpoint::from_shared(cfg.controller.clone()).map_err(|e| AgentError::Endpoint {
            url: cfg.controller.clone(),
            detail: e.to_string(),
        })?;
        let diag = SockDiag::new()?;
        let destroy = if cfg.destroy_events {
            // SAFETY: DestroyWatch owns its netlink socket and neither closes nor replaces the
            // fd while the AsyncFd holds it.
            let registered = DestroyWatch::new()
                .and_then(|w| unsafe { AsyncFd::register(w) }.map_err(std::io::Error::from));
            match registered {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "socket-destroy events unavailable; polling only");
                    None
                }
            }
        } else {
            None
        };
        let lo = if cfg.manage_loopback {
            Some(Loopback::new().await?)
        } else {
            None
        };
        let (control_tx, control) = mpsc::channel(16);
        Ok(Agent {
            epoch: new_epoch(),
            tracker: Tracker::new(cfg.weight),
            diag: Arc::new(Mutex::new(diag)),
            destroy,
            lo,
            sysctls_done: false,
            stats: Arc::default(),
            control,
            control_tx,
            last_poll: Instant::now(),
            last_dump_cost: Duration::ZERO,
            cfg,
        })
    }

    pub fn stats(&self) -> Arc<AgentStats> {
        self.stats.clone()
    }

    /// A sender for control requests (the control socket uses it).
    pub fn control(&self) -> mpsc::Sender<Control> {
        self.control_tx.clone()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A dump for the incremental loop: a failure is logged and counted, the socket reopened,
    /// and the tick skipped (the next one re-dumps), so one bad dump does not end the session.
    async fn poll(&mut self) -> Option<Snapshot> {
        match self.snapshot().await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "sock_diag dump failed; reopening the socket");
                match SockDiag::new() {
                    Ok(d) => self.diag = Arc::new(Mutex::new(d)),
                    Err(e) => tracing::error!(error = %e, "cannot reopen the sock_diag socket"),
                }
                None
            }
        }
    }

    async fn snapshot(&mut self) -> Result<Snapshot, DiagError> {
        let diag = self.diag.clone();
        let start = Instant::now();
        let r = tokio::task::spawn_blocking(move || {
            let mut d = diag.lock().unwrap_or_else(|p| p.into_inner());
            d.snapshot()
        })
        .await
        .unwrap_or_else(|e| {
            Err(DiagError::Socket(std::io::Error::other(format!(
                "dump task failed: {e}"
            ))))
        });
        self.last_poll = Instant::now();
        self.last_dump_cost = start.elapsed();
        bump!(self.stats, polls);
        if r.is_err() {
            bump!(self.stats, diag_errors);
        }
        r
    }

    /// Runs sessions until `shutdown` resolves.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let mut backoff = self.cfg.backoff_initial;
        loop {
            let mut welcomed = false;
            let r = self.session(&mut shutdown, &mut welcomed).await;
            self.stats.connected.store(false, Ordering::Relaxed);
            match r {
                Ok(()) => {
                    tracing::info!("shut down");
                    return Ok(());
                }
                Err(e) => {
                    bump!(self.stats, session_failures);
                    if welcomed {
                        backoff = self.cfg.backoff_initial;
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "controller session ended");
                }
            }
            // Wait out the backoff, still serving control requests.
            let until = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = &mut shutdown => { tracing::info!("shut down"); return Ok(()); }
                    _ = tokio::time::sleep_until(until) => break,
                    Some(c) = self.control.recv() => { let _ = self.handle_control(c); }
                }
            }
            backoff = (backoff * 2).min(self.cfg.backoff_max);
        }
    }

    fn status_json(&self) -> String {
        let v = self.tracker.vipas();
        serde_json::json!({
            "stack": self.cfg.stack,
            "epoch": self.epoch,
            "vipa_list_version": v.version,
            "dvipas": v.addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "listeners": self.tracker.listeners().iter().map(|(k, s)| serde_json::json!({
                "dvipa": k.dvipa.to_string(), "port": k.port, "proto": k.proto.to_string(),
                "draining": s.draining, "weight": s.weight,
            })).collect::<Vec<_>>(),
            "connections": self.tracker.connections().len(),
            "drains": self.tracker.drains().iter().map(|d| serde_json::json!({
                "dvipa": d.dvipa.map(|a| a.to_string()), "port": d.port,
            })).collect::<Vec<_>>(),
            "stats": self.stats.to_json(),
            "tls_reload": self.cfg.tls_reload.as_ref().map(|r| {
                let n = r.snapshot();
                serde_json::json!({ "reloaded": n.reloaded, "failed": n.failed })
            }),
        })
        .to_string()
    }

    /// Applies a control request; returns the delta to report.
    fn handle_control(&mut self, c: Control) -> Delta {
        match c {
            Control::Status { reply } => {
                let _ = reply.send(self.status_json());
                Delta::default()
            }
            Control::Drain { drain, on, reply } => {
                let d = self.tracker.set_drain(drain, on);
                let what = if on { "draining" } else { "undrained" };
                tracing::info!(port = drain.port, dvipa = ?drain.dvipa, changed = d.srvstat.len(), "{what}");
                let _ = reply.send(format!(
                    "ok: {what} port {}{}; {} listener(s) affected",
                    drain.port,
                    drain.dvipa.map(|a| format!(" on {a}")).unwrap_or_default(),
                    d.srvstat.len()
                ));
                d
            }
        }
    }

    async fn apply_vipa_list(&mut self, list: &VipaList) -> Delta {
        let (mut set, mut errors) = VipaSet::from_list(list, &self.cfg.stack);
        let host = match &self.lo {
            Some(lo) => match lo.host_addresses().await {
                Ok(h) => h,
                Err(e) => {
                    bump!(self.stats, loopback_errors);
                    tracing::error!(error = %e, "listing the host's addresses failed");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        errors.extend(set.refuse_local(self.cfg.underlay, &host, self.cfg.max_vipas));
        for e in &errors {
            bump!(self.stats, vipa_list_errors);
            if let Ok(mut m) = self.stats.vipa_refused.lock() {
                *m.entry(e.reason()).or_default() += 1;
            }
            metrics::counter!("dvipa_agent_vipa_refused_total", "reason" => e.reason())
                .increment(1);
            tracing::warn!(error = %e, reason = e.reason(), "VIPA list entry refused");
        }
        let addrs = set.addresses();
        tracing::info!(version = list.version, dvipas = ?addrs, "VIPA list");
        if let Some(lo) = &self.lo {
            match lo.sync(&addrs).await {
                Ok(ch) => {
                    if !ch.added.is_empty() || !ch.removed.is_empty() {
                        tracing::info!(added = ?ch.added, removed = ?ch.removed, "loopback updated");
                    }
                    if !ch.foreign.is_empty() {
                        tracing::info!(addrs = ?ch.foreign, "DVIPA already on lo (not ours); left alone");
                    }
                }
                Err(e) => {
                    bump!(self.stats, loopback_errors);
                    tracing::error!(error = %e, "loopback update failed");
                }
            }
        }
        if self.cfg.arp_sysctls && !self.sysctls_done && !addrs.is_empty() {
            match set_arp_sysctls(&self.cfg.proc_sys) {
                Ok(()) => self.sysctls_done = true,
                Err(e) => {
                    bump!(self.stats, loopback_errors);
                    tracing::error!(error = %e, "setting ARP sysctls failed");
                }
            }
        }
        self.tracker.set_vipas(set)
    }

    fn handle_ack(&mut self, s: &mut Session, seq: u64, errors: &[ItemError]) {
        let report = s.pending.get(&seq);
        for e in errors {
            bump!(self.stats, ack_errors);
            metrics::counter!("dvipa_agent_ack_item_errors_total", "reason" => e.reason.clone())
                .increment(1);
            tracing::warn!(
                seq,
                item = %describe(report, e),
                reason = %e.reason,
                detail = %e.detail,
                "controller refused an item"
            );
        }
        s.pending = s.pending.split_off(&(seq + 1));
    }

    async fn session(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        welcomed: &mut bool,
    ) -> Result<(), SessionError> {
        let mut ep = Endpoint::from_shared(self.cfg.controller.clone())
            .map_err(|e| SessionError::Connect(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        // A rotated certificate is picked up here, for the next connection; an established
        // session keeps the one it was made with.
        let tls = match &self.cfg.tls_reload {
            Some(r) => Some(ClientTlsConfig::clone(&r.current())),
            None => self.cfg.tls.clone(),
        };
        if let Some(tls) = tls {
            ep = ep
                .tls_config(tls)
                .map_err(|e| SessionError::Connect(e.to_string()))?;
        }
        let channel = tokio::select! {
            _ = shutdown.as_mut() => return Ok(()),
            r = ep.connect() => r.map_err(|e| SessionError::Connect(format!("{e:?}")))?,
        };
        bump!(self.stats, sessions);
        let (tx, rx) = mpsc::channel::<AgentMessage>(1024);
        tx.send(AgentMessage {
            seq: 1,
            msg: Some(agent_message::Msg::Hello(Hello {
                stack: self.cfg.stack.clone(),
                underlay_addr: u32::from(self.cfg.underlay),
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                epoch: self.epoch,
            })),
        })
        .await
        .map_err(|_| SessionError::Closed)?;
        let mut client = ServerStackClient::new(channel);
        let inbound = tokio::time::timeout(
            self.cfg.handshake_timeout,
            client.attach(ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| SessionError::Timeout("the Attach response"))?
        .map_err(SessionError::Refused)?
        .into_inner();
        let mut s = Session {
            tx,
            inbound,
            seq: 1,
            heartbeat: Duration::from_secs(1),
            last_sent: Instant::now(),
            pending: BTreeMap::new(),
        };

        // Welcome, then the VIPA list.
        let t = self.cfg.handshake_timeout;
        match s.next("Welcome", t).await?.msg {
            Some(controller_message::Msg::Welcome(w)) => {
                if w.heartbeat_interval_ms > 0 {
                    s.heartbeat = Duration::from_millis(u64::from(w.heartbeat_interval_ms));
                }
                tracing::info!(controller = %w.controller_id, heartbeat_ms = s.heartbeat.as_millis() as u64, epoch = self.epoch, "attached");
            }
            other => {
                bump!(self.stats, protocol_errors);
                return Err(SessionError::Protocol(format!(
                    "expected Welcome, got {other:?}"
                )));
            }
        }
        *welcomed = true;
        self.stats.connected.store(true, Ordering::Relaxed);
        loop {
            match s.next("the VIPA list", t).await?.msg {
                Some(controller_message::Msg::VipaList(l)) => {
                    self.apply_vipa_list(&l).await;
                    break;
                }
                Some(controller_message::Msg::Ack(a)) => self.handle_ack(&mut s, a.seq, &a.errors),
                other => {
                    bump!(self.stats, protocol_errors);
                    tracing::warn!(msg = ?other, "unexpected message before the VIPA list");
                }
            }
        }

        // Full re-report of the current kernel state.
        let snap = self.snapshot().await?;
        self.tracker.observe(snap);
        let full = self.tracker.full_reports(self.cfg.max_batch);
        tracing::info!(
            listeners = self.tracker.listeners().len(),
            connections = self.tracker.connections().len(),
            batches = full.len(),
            "full re-report"
        );
        for r in full {
            s.send_report(r, &self.stats).await?;
        }

        let mut tick = tokio::time::interval(self.cfg.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        loop {
            let hb_at = tokio::time::Instant::from_std(s.last_sent + s.heartbeat);
            let destroy = self.destroy.as_ref();
            let destroyed = async move {
                match destroy {
                    Some(fd) => fd.readable().await.map(|mut g| {
                        let n = g.get_inner().drain().unwrap_or(1);
                        g.clear_ready();
                        n
                    }),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.as_mut() => {
                    drop(s);
                    return Ok(());
                }
                m = s.inbound.message() => match m {
                    Err(st) => return Err(SessionError::Stream(st)),
                    Ok(None) => return Err(SessionError::Closed),
                    Ok(Some(m)) => match m.msg {
                        Some(controller_message::Msg::VipaList(l)) => {
                            let d = self.apply_vipa_list(&l).await;
                            s.send_delta(d, self.cfg.max_batch, &self.stats).await?;
                        }
                        Some(controller_message::Msg::Ack(a)) => self.handle_ack(&mut s, a.seq, &a.errors),
                        Some(controller_message::Msg::Welcome(_)) | None => {
                            bump!(self.stats, protocol_errors);
                            tracing::warn!("unexpected controller message ignored");
                        }
                    },
                },
                _ = tick.tick() => {
                    if let Some(snap) = self.poll().await {
                        let d = self.tracker.observe(snap);
                        s.send_delta(d, self.cfg.max_batch, &self.stats).await?;
                    }
                }
                r = destroyed => {
                    if let Ok(n) = r && n > 0 {
                        bump!(self.stats, destroy_wakeups);
                        // Rate-limit event-driven dumps under connection churn: at most one
                        // per 2 ms, and at most 20% of the time dumping.
                        let since = self.last_poll.elapsed();
                        let gap = Duration::from_millis(2).max(self.last_dump_cost * 4);
                        if since < gap {
                            tokio::time::sleep(gap - since).await;
                        }
                        if let Some(snap) = self.poll().await {
                            let d = self.tracker.observe(snap);
                            s.send_delta(d, self.cfg.max_batch, &self.stats).await?;
                        }
                    }
                }
                Some(c) = self.control.recv() => {
                    let d = self.handle_control(c);
                    s.send_delta(d, self.cfg.max_batch, &self.stats).await?;
                }
                _ = tokio::time::sleep_until(hb_at) => {
                    s.send(agent_message::Msg::Heartbeat(Heartbeat { weight: self.cfg.weight })).await?;
                    bump!(self.stats, heartbeats_sent);
                }
            }
        }
    }
}

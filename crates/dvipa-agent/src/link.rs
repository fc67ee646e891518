//! One link per configured controller (`--controller A --controller B ...`): a task that keeps
//! one `ServerStack.Attach` session to that controller, reconnecting with its own exponential
//! backoff, independently of the other links.
//!
//! The link does the handshake (Hello → Welcome → first VIPA list), sends the Reports the agent
//! loop queues for it, its own Heartbeats when nothing was sent for the Welcome's interval, and
//! handles Acks (refused items are logged with the item and counted). VIPA list updates go to
//! the agent loop (`FromLink`), which owns the tracker and the kernel observers: one sock_diag
//! dump feeds every controller.
//!
//! What one controller costs, bounded: one HTTP/2 channel, a queue of at most [`LINK_QUEUE`]
//! Reports (each at most `max_batch` items) from the agent loop, and at most [`PENDING_MAX`]
//! unacked Reports kept to name refused items. A link whose queue is full (its controller does
//! not read) is cut by the agent loop and reconnects with a full re-report, so a slow
//! controller never stalls the others or grows memory.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dvipa_proto::v1::server_stack_client::ServerStackClient;
use dvipa_proto::v1::{
    AgentMessage, ControllerMessage, Heartbeat, Hello, ItemError, Report, VipaList, agent_message,
    controller_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::agent::{AgentConfig, AgentStats};

/// Most Reports queued from the agent loop to one controller before that link is cut and
/// re-synced.
pub const LINK_QUEUE: usize = 256;
/// Reports kept until acked, to name refused items in logs (per link).
pub const PENDING_MAX: usize = 256;
/// Most controllers one agent attaches to.
pub const MAX_CONTROLLERS: usize = 16;

/// What a link tells the agent loop.
#[derive(Debug)]
pub(crate) enum FromLink {
    /// Link `idx` is attached: its first VIPA list, and the queue for its Reports (the agent
    /// loop sends the full re-report into it first).
    Up {
        idx: usize,
        list: VipaList,
        to: mpsc::Sender<Report>,
    },
    /// A VIPA list update from link `idx`.
    VipaList { idx: usize, list: VipaList },
    /// Link `idx`'s session ended.
    Down { idx: usize },
}

/// Per-controller counters (the control socket's `status` shows them under `controllers`).
#[derive(Debug, Default)]
pub struct LinkStats {
    pub url: String,
    pub connected: AtomicBool,
    pub sessions: AtomicU64,
    pub session_failures: AtomicU64,
    /// Sessions cut because this controller did not take its Reports fast enough.
    pub fell_behind: AtomicU64,
    pub reports_sent: AtomicU64,
    pub heartbeats_sent: AtomicU64,
}

impl LinkStats {
    pub fn new(url: &str) -> Self {
        LinkStats {
            url: url.to_string(),
            ..Default::default()
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "url": self.url,
            "connected": self.connected.load(Ordering::Relaxed),
            "sessions": g(&self.sessions),
            "session_failures": g(&self.session_failures),
            "fell_behind": g(&self.fell_behind),
            "reports_sent": g(&self.reports_sent),
            "heartbeats_sent": g(&self.heartbeats_sent),
        })
    }
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
    #[error("the agent cut this session (its report queue was full, or the kernel dump failed)")]
    Cut,
    #[error("the agent is stopping")]
    Stopping,
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

/// One controller's link task.
pub(crate) struct Link {
    pub idx: usize,
    pub cfg: Arc<AgentConfig>,
    pub epoch: u64,
    pub stats: Arc<AgentStats>,
    pub link: Arc<LinkStats>,
    pub events: mpsc::Sender<FromLink>,
}

impl Link {
    /// Sessions with backoff until the agent loop goes away.
    pub async fn run(self) {
        let mut backoff = self.cfg.backoff_initial;
        loop {
            let mut up = false;
            let r = self.session(&mut up).await;
            self.link.connected.store(false, Ordering::Relaxed);
            if up
                && self
                    .events
                    .send(FromLink::Down { idx: self.idx })
                    .await
                    .is_err()
            {
                return;
            }
            match r {
                Err(SessionError::Stopping) | Ok(()) => return,
                Err(e) => {
                    bump!(self.stats, session_failures);
                    self.link.session_failures.fetch_add(1, Ordering::Relaxed);
                    if up {
                        backoff = self.cfg.backoff_initial;
                    }
                    tracing::warn!(controller = %self.link.url, error = %e, retry_in = ?backoff,
                        "controller session ended");
                }
            }
            tokio::time::sleep(backoff).await;
            if self.events.is_closed() {
                return;
            }
            backoff = (backoff * 2).min(self.cfg.backoff_max);
        }
    }

    fn handle_ack(&self, s: &mut Session, seq: u64, errors: &[ItemError]) {
        let report = s.pending.get(&seq);
        for e in errors {
            bump!(self.stats, ack_errors);
            metrics::counter!("dvipa_agent_ack_item_errors_total", "reason" => e.reason.clone())
                .increment(1);
            tracing::warn!(
                controller = %self.link.url,
                seq,
                item = %describe(report, e),
                reason = %e.reason,
                detail = %e.detail,
                "controller refused an item"
            );
        }
        s.pending = s.pending.split_off(&(seq + 1));
    }

    async fn session(&self, up: &mut bool) -> Result<(), SessionError> {
        let cfg = &self.cfg;
        let url = &self.link.url;
        let mut ep = Endpoint::from_shared(url.clone())
            .map_err(|e| SessionError::Connect(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        // A rotated certificate is picked up here, for the next connection; an established
        // session keeps the one it was made with.
        let tls = match &cfg.tls_reload {
            Some(r) => Some(ClientTlsConfig::clone(&r.current())),
            None => cfg.tls.clone(),
        };
        if let Some(tls) = tls {
            ep = ep
                .tls_config(tls)
                .map_err(|e| SessionError::Connect(e.to_string()))?;
        }
        let channel = tokio::select! {
            _ = self.events.closed() => return Err(SessionError::Stopping),
            r = ep.connect() => r.map_err(|e| SessionError::Connect(format!("{e:?}")))?,
        };
        bump!(self.stats, sessions);
        self.link.sessions.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<AgentMessage>(1024);
        tx.send(AgentMessage {
            seq: 1,
            msg: Some(agent_message::Msg::Hello(Hello {
                stack: cfg.stack.clone(),
                underlay_addr: u32::from(cfg.underlay),
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                epoch: self.epoch,
            })),
        })
        .await
        .map_err(|_| SessionError::Closed)?;
        let mut client = ServerStackClient::new(channel);
        let inbound = tokio::time::timeout(
            cfg.handshake_timeout,
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
        let t = cfg.handshake_timeout;
        match s.next("Welcome", t).await?.msg {
            Some(controller_message::Msg::Welcome(w)) => {
                if w.heartbeat_interval_ms > 0 {
                    s.heartbeat = Duration::from_millis(u64::from(w.heartbeat_interval_ms));
                }
                tracing::info!(controller = %url, id = %w.controller_id,
                    heartbeat_ms = s.heartbeat.as_millis() as u64, epoch = self.epoch, "attached");
            }
            other => {
                bump!(self.stats, protocol_errors);
                return Err(SessionError::Protocol(format!(
                    "expected Welcome, got {other:?}"
                )));
            }
        }
        let list = loop {
            match s.next("the VIPA list", t).await?.msg {
                Some(controller_message::Msg::VipaList(l)) => break l,
                Some(controller_message::Msg::Ack(a)) => self.handle_ack(&mut s, a.seq, &a.errors),
                other => {
                    bump!(self.stats, protocol_errors);
                    tracing::warn!(controller = %url, msg = ?other, "unexpected message before the VIPA list");
                }
            }
        };
        let (to, mut reports) = mpsc::channel::<Report>(LINK_QUEUE);
        self.events
            .send(FromLink::Up {
                idx: self.idx,
                list,
                to,
            })
            .await
            .map_err(|_| SessionError::Stopping)?;
        *up = true;
        self.link.connected.store(true, Ordering::Relaxed);

        loop {
            let hb_at = tokio::time::Instant::from_std(s.last_sent + s.heartbeat);
            tokio::select! {
                m = s.inbound.message() => match m {
                    Err(st) => return Err(SessionError::Stream(st)),
                    Ok(None) => return Err(SessionError::Closed),
                    Ok(Some(m)) => match m.msg {
                        Some(controller_message::Msg::VipaList(list)) => {
                            self.events
                                .send(FromLink::VipaList { idx: self.idx, list })
                                .await
                                .map_err(|_| SessionError::Stopping)?;
                        }
                        Some(controller_message::Msg::Ack(a)) => self.handle_ack(&mut s, a.seq, &a.errors),
                        Some(controller_message::Msg::Welcome(_)) | None => {
                            bump!(self.stats, protocol_errors);
                            tracing::warn!(controller = %url, "unexpected controller message ignored");
                        }
                    },
                },
                r = reports.recv() => match r {
                    None if self.events.is_closed() => return Err(SessionError::Stopping),
                    None => return Err(SessionError::Cut),
                    Some(r) => {
                        let items = r.srvstat.len() + r.newconn.len() + r.termconn.len();
                        let seq = s.send(agent_message::Msg::Report(r.clone())).await?;
                        s.pending.insert(seq, r);
                        while s.pending.len() > PENDING_MAX {
                            s.pending.pop_first();
                        }
                        bump!(self.stats, reports_sent);
                        bump!(self.stats, items_sent, items);
                        self.link.reports_sent.fetch_add(1, Ordering::Relaxed);
                    }
                },
                _ = tokio::time::sleep_until(hb_at) => {
                    s.send(agent_message::Msg::Heartbeat(Heartbeat { weight: cfg.weight })).await?;
                    bump!(self.stats, heartbeats_sent);
                    self.link.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

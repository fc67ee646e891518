//! The agent's run loop: one session per configured controller over `ServerStack.Attach`
//! (each a [`crate::link`] task reconnecting with its own backoff), fed by one set of kernel
//! observers.
//!
//! A session: Hello (seq 1) → Welcome → VIPA list (applied to `lo` and the tracker) → a full
//! re-report to that controller (`full_sync` batches, `sync_done` on the last) → then, until
//! the stream breaks: the differences of a sock_diag dump every poll interval (and right after
//! a kernel socket-destroy event) go out as Report batches to every attached controller; a
//! Heartbeat whenever nothing was sent for the Welcome's interval; VIPA list updates; Acks
//! (refused items are logged with the item and counted); drain orders from the control socket.
//!
//! VIPA lists from several controllers: replicas compute the list from the same configuration,
//! so they agree. If they differ (a replica with another configuration, or an update that
//! reached one replica first), the list received last is applied, and every list whose DVIPAs
//! differ from another attached controller's last list is logged (naming both controllers) and
//! counted (`vipa_list_conflicts`, `dvipa_agent_vipa_list_conflicts_total`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dvipa_proto::v1::{Report, VipaList};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::diag::{DestroyWatch, DiagError, SockDiag};
use crate::link::{FromLink, LINK_QUEUE, Link, LinkStats, MAX_CONTROLLERS};
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
    /// Controller endpoints, `https://host:port` (or `http://` with `tls: None`): one session
    /// to each (at most [`crate::link::MAX_CONTROLLERS`]).
    pub controllers: Vec<String>,
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
            controllers: vec![controller.to_string()],
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
    /// VIPA lists whose DVIPAs differ from another attached controller's last list.
    pub vipa_list_conflicts: AtomicU64,
    /// VIPA list entries refused, by reason ([`crate::tracker::VipaEntryError::reason`]).
    pub vipa_refused: Mutex<BTreeMap<&'static str, u64>>,
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
            "vipa_list_conflicts": g(&self.vipa_list_conflicts),
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
    /// One per configured controller, in `cfg.controllers` order.
    links: Vec<LinkState>,
}

/// The agent loop's side of one controller link.
struct LinkState {
    stats: Arc<LinkStats>,
    /// The attached session's Report queue (`None` while not attached).
    to: Option<mpsc::Sender<Report>>,
    /// The DVIPAs of the last VIPA list this controller sent (for conflict detection).
    dvipas: Option<BTreeSet<Ipv4Addr>>,
}

fn new_epoch() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 40) | 1
}

impl Agent {
    /// Opens the kernel observers in the calling thread's network namespace.
    pub async fn new(cfg: AgentConfig) -> Result<Self, AgentError> {
        let tls = cfg.tls.is_some() || cfg.tls_reload.is_some();
        if cfg.controllers.is_empty() || cfg.controllers.len() > MAX_CONTROLLERS {
            return Err(AgentError::Endpoint {
                url: cfg.controllers.join(","),
                detail: format!(
                    "give 1 to {MAX_CONTROLLERS} controllers, not {}",
                    cfg.controllers.len()
                ),
            });
        }
        for (i, url) in cfg.controllers.iter().enumerate() {
            if tls != url.starts_with("https://") {
                return Err(AgentError::Endpoint {
                    url: url.clone(),
                    detail: if tls {
                        "TLS is configured: use an https:// URL".into()
                    } else {
                        "without TLS (--insecure) use an http:// URL".into()
                    },
                });
            }
            Endpoint::from_shared(url.clone()).map_err(|e| AgentError::Endpoint {
                url: url.clone(),
                detail: e.to_string(),
            })?;
            if cfg.controllers[..i].contains(url) {
                return Err(AgentError::Endpoint {
                    url: url.clone(),
                    detail: "given twice".into(),
                });
            }
        }
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
            links: cfg
                .controllers
                .iter()
                .map(|u| LinkState {
                    stats: Arc::new(LinkStats::new(u)),
                    to: None,
                    dvipas: None,
                })
                .collect(),
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

    /// Per-controller counters, in `--controller` order.
    pub fn link_stats(&self) -> Vec<Arc<LinkStats>> {
        self.links.iter().map(|l| l.stats.clone()).collect()
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

    /// Runs one session per controller until `shutdown` resolves.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let (ev_tx, mut events) = mpsc::channel::<FromLink>(64);
        let cfg = Arc::new(self.cfg.clone());
        let tasks = AbortOnDrop(
            self.links
                .iter()
                .enumerate()
                .map(|(idx, l)| {
                    tokio::spawn(
                        Link {
                            idx,
                            cfg: cfg.clone(),
                            epoch: self.epoch,
                            stats: self.stats.clone(),
                            link: l.stats.clone(),
                            events: ev_tx.clone(),
                        }
                        .run(),
                    )
                })
                .collect(),
        );
        drop(ev_tx);
        let mut tick = tokio::time::interval(self.cfg.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let attached = self.links.iter().any(|l| l.to.is_some());
            self.stats.connected.store(attached, Ordering::Relaxed);
            let destroy = self.destroy.as_ref().filter(|_| attached);
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
                    drop(tasks);
                    tracing::info!("shut down");
                    return Ok(());
                }
                Some(ev) = events.recv() => self.link_event(ev).await,
                // Without an attached controller nothing is reported; the next session
                // starts with a fresh dump and a full re-report.
                _ = tick.tick(), if attached => {
                    if let Some(snap) = self.poll().await {
                        let d = self.tracker.observe(snap);
                        self.broadcast(d);
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
                            self.broadcast(d);
                        }
                    }
                }
                Some(c) = self.control.recv() => {
                    let d = self.handle_control(c);
                    self.broadcast(d);
                }
            }
        }
    }

    async fn link_event(&mut self, ev: FromLink) {
        match ev {
            FromLink::Up { idx, list, to } => {
                let d = self.apply_vipa_list(idx, &list).await;
                self.broadcast(d);
                // A fresh dump: its changes go to the controllers already attached, then the
                // new one gets the full state.
                let snap = match self.snapshot().await {
                    Ok(s) => s,
                    Err(e) => {
                        // Dropping `to` ends that session; it reconnects with backoff.
                        tracing::error!(error = %e, controller = %self.links[idx].stats.url,
                            "sock_diag dump failed; cannot re-report to this controller");
                        return;
                    }
                };
                let d = self.tracker.observe(snap);
                self.broadcast(d);
                let full = self.tracker.full_reports(self.cfg.max_batch);
                tracing::info!(
                    controller = %self.links[idx].stats.url,
                    listeners = self.tracker.listeners().len(),
                    connections = self.tracker.connections().len(),
                    batches = full.len(),
                    "full re-report"
                );
                self.links[idx].to = Some(to);
                for r in full {
                    self.send_to(idx, r);
                }
            }
            FromLink::VipaList { idx, list } => {
                let d = self.apply_vipa_list(idx, &list).await;
                self.broadcast(d);
            }
            FromLink::Down { idx } => {
                self.links[idx].to = None;
                self.links[idx].dvipas = None;
            }
        }
    }

    /// Queues `r` for controller `idx`; a full queue cuts that session (it re-syncs when it
    /// reconnects), so one slow controller neither stalls the others nor grows memory.
    fn send_to(&mut self, idx: usize, r: Report) {
        let l = &mut self.links[idx];
        let Some(to) = &l.to else { return };
        match to.try_send(r) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                l.stats.fell_behind.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dvipa_agent_controller_fell_behind_total").increment(1);
                tracing::warn!(controller = %l.stats.url, queue = LINK_QUEUE,
                    "controller does not take its reports; cutting the session to re-sync");
                l.to = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => l.to = None,
        }
    }

    /// Sends a delta to every attached controller.
    fn broadcast(&mut self, d: Delta) {
        if d.is_empty() {
            return;
        }
        tracing::debug!(
            srvstat = d.srvstat.len(),
            newconn = d.newconn.len(),
            termconn = d.termconn.len(),
            "reporting changes"
        );
        let reports = d.into_reports(self.cfg.max_batch);
        for idx in 0..self.links.len() {
            for r in &reports {
                self.send_to(idx, r.clone());
            }
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
            "controllers": self.links.iter().map(|l| l.stats.to_json()).collect::<Vec<_>>(),
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

    async fn apply_vipa_list(&mut self, from: usize, list: &VipaList) -> Delta {
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
        let url = &self.links[from].stats.url;
        tracing::info!(controller = %url, version = list.version, dvipas = ?addrs, "VIPA list");
        for (j, l) in self.links.iter().enumerate() {
            if let Some(other) = &l.dvipas
                && j != from
                && l.to.is_some()
                && *other != addrs
            {
                bump!(self.stats, vipa_list_conflicts);
                tracing::warn!(controller = %url, other = %l.stats.url, dvipas = ?addrs,
                    other_dvipas = ?other, "controllers send different VIPA lists; applying the latest");
            }
        }
        self.links[from].dvipas = Some(addrs.clone());
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
}

/// Aborts the link tasks when the agent loop ends.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

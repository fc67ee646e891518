//! One driver task per configured switch.
//!
//! The driver connects a [`p4rt::Session`] (the switch's election id), and every time it
//! becomes primary it sets the pipeline (skipped when the cookie matches), enables the
//! `learn_t` digest (`DigestEntry`) and tells the core `SwitchUp`; the core then asks for a
//! read of the five tables, diffs them with its desired state and sends minimal write batches,
//! which the driver translates and writes, reporting per-update outcomes back. Several write
//! batches may be in flight at once (the core only sends batches that commute); digest lists
//! keep flowing to the core meanwhile and are acked only when the core says their CRT entries
//! are written. Reads wait for the writes in flight.
//! Idle-timeout notifications go to the core. Losing primary (stream down, another master) for
//! longer than `liveness_ms` is reported as `SwitchDown`. The switch is re-read periodically
//! (and on `dvipa reconcile`), so entries changed behind the controller's back are repaired.
//!
//! Liveness the controller measures itself: every session runs a probe task that sends a
//! P4Runtime `Capabilities` RPC every `probe_ms` (standard P4Runtime, so bmv2 and Stratum
//! answer it too). When no probe was answered for `liveness_ms` (a frozen switch process, a
//! path that silently drops packets), the session is dropped as if its stream had ended, and
//! since primary was last known at the last answer, `SwitchDown` follows at once: the switch is
//! down `liveness_ms` after it stopped answering. Every await of the session (pipeline set-up,
//! reads, digest acks) is raced against the probe, so a call that hangs cannot hide a dead
//! switch. The connection's HTTP/2 keep-alive and `TCP_USER_TIMEOUT` come from the same
//! `[timers]`, so the socket of a dead peer fails fast as well.
//!
//! Election id after a half-open session: a switch that still holds a dead stream of this
//! controller refuses the new one with "election id … is already used". The driver retries
//! with its backoff and a rate-limited warning; when the refused id is the one its own
//! previous session used (so the holder is that dead session) and the refusal has lasted one
//! probe interval (a stream that is merely closing, e.g. a thawed switch that has not read the
//! old connection's end yet, is gone by then), it moves to the next id of the switch's
//! `election_id_range`, which makes the new session primary.
//!
//! Reconnection: when the stream ends the driver drops the session and connects a new one
//! itself, first after [`RETRY_INITIAL`], then with the delay doubled per failed attempt up to
//! [`retry_cap`] (half the detection time, 100 ms..1 s), so a switch that comes back is
//! found within that cap while one that stays down sees a few cheap connection attempts per
//! second (each refused at once, or bounded by the connect timeout). The delay starts over
//! after a session that was primary. A switch that never comes up is not reported down by the
//! driver: the core treats it as down after its start-up hold (`lease_ms` + `liveness_ms`).
//!
//! Layout: this file is the driver (session loop, setup, reads, commands, digests, idle
//! notifications); `writer.rs` the write path, `render.rs` the text of `table dump`,
//! `liveness.rs` the probes.
//!
//! Over the project's ~800-line guide on purpose: the driver's session loop (connect, arbitrate,
//! liveness, digests, reads, reconcile) is one state machine; its write path (`writer`), table
//! rendering (`render`), counter ageing (`ageing`), CRT ageing after a controller change
//! (`takeover`), probe (`liveness`) and the HA follower's backup session (`backup`) are
//! submodules.

use crate::shared::Shared;
use crate::translate;
use dvipa_contract::{self as contract, learn};
use dvipa_core::core::{Event, WriteOutcome};
use dvipa_core::entries::{Key, Update, Value};
use dvipa_proto::v1 as pb;
use p4rt::proto::p4::config::v1 as cfg;
use p4rt::proto::p4::v1 as p4;
use p4rt::{ClientConfig, Mastership, Schema, Session, StreamQueues};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

mod ageing;
mod backup;
pub use backup::held_key;
mod liveness;
use liveness::{Probe, election_id_in_use};

/// A repeated warning: logged at most once per [`p4rt::ratelimit::PERIOD`] per switch and
/// message, with `suppressed` = the lines left out since (those go to the debug level).
macro_rules! warn_limited {
    ($sw:expr, $msg:literal, $($field:tt)*) => {
        match p4rt::ratelimit::check(&format!("{} {}", $sw, $msg)) {
            Some(suppressed) => tracing::warn!(switch = %$sw, suppressed, $($field)* $msg),
            None => tracing::debug!(switch = %$sw, $($field)* $msg),
        }
    };
}

// after the macro: the modules below use it
mod render;
mod takeover;
mod writer;

/// How long a digest list waits for the core's ack before it is forgotten.
pub const PENDING_DIGEST_TTL: Duration = Duration::from_secs(30);

/// First reconnect delay after a session ended or a connection attempt failed.
pub const RETRY_INITIAL: Duration = Duration::from_millis(50);

/// Longest delay between two connection attempts: half the detection time, 100 ms..1 s.
pub fn retry_cap(liveness: Duration) -> Duration {
    (liveness / 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// While a switch stays unreachable, a warning is logged at most this often (every attempt
/// is counted in `switch_connect_failed`).
const UNREACHABLE_LOG_EVERY: Duration = p4rt::ratelimit::PERIOD;

/// Stream messages (digest lists) buffered while the driver is busy: a burst of new
/// connections must not overflow it (a dropped list is only re-sent after the ack timeout).
const STREAM_QUEUE: usize = 16384;

pub use crate::cmd::SwitchCmd;

/// Static settings of one driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Switch name.
    pub name: String,
    /// P4Runtime address.
    pub addr: String,
    /// Device id.
    pub device_id: u64,
    /// Election id.
    pub election_id: u64,
    /// P4Info pushed with the pipeline.
    pub p4info: cfg::P4Info,
    /// Device config (bmv2 JSON).
    pub device_config: Vec<u8>,
    /// Pipeline cookie.
    pub cookie: u64,
    /// Idle timeout programmed on CRT entries.
    pub idle_timeout_ns: i64,
    /// Primary lost (or no probe answered) longer than this → `SwitchDown`.
    pub liveness: Duration,
    /// Liveness probe interval.
    pub probe: Duration,
    /// HTTP/2 keep-alive interval (an unanswered ping closes the connection after `liveness`).
    pub keepalive: Duration,
    /// `TCP_USER_TIMEOUT` of the P4Runtime socket.
    pub tcp_user_timeout: Duration,
    /// Bound of one connection attempt.
    pub connect_timeout: Duration,
    /// Election ids usable for this switch: `election_id .. election_id + election_id_range`.
    pub election_id_range: u64,
    /// Periodic re-read of the switch.
    pub resync: Duration,
    /// P4Runtime over TLS (paths resolved); the files are read for every new connection.
    pub tls: Option<dvipa_core::config::SwitchTlsCfg>,
    /// What the switch's P4Runtime server does (digest acks, idle notifications).
    pub capabilities: dvipa_core::config::Capabilities,
}

/// FNV-1a over the P4Info and device config: the pipeline cookie.
pub fn cookie(p4info: &cfg::P4Info, device_config: &[u8]) -> u64 {
    use prost::Message;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p4info.encode_to_vec().iter().chain(device_config) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

struct Driver {
    cfg: DriverConfig,
    schema: Arc<Schema>,
    shared: Arc<Shared>,
    /// Digest lists handed to the core, waiting for its ack (with their arrival time).
    pending: HashMap<u64, (Instant, p4rt::DigestDelivery)>,
    up: bool,
    /// When primary was lost (stream down, another master): `SwitchDown` after `liveness`.
    /// Kept across sessions (a reconnect is not a recovery until the switch is primary again).
    lost_at: Option<tokio::time::Instant>,
    /// Write batches in flight: task → (batch id, number of updates).
    writes: JoinSet<(u64, Vec<WriteOutcome>)>,
    write_ids: HashMap<tokio::task::Id, (u64, usize)>,
    /// The election id sessions use now (raised within the range after a half-open session).
    election_id: u64,
    /// The election id of the last session that connected (a refusal of that id means a dead
    /// session of ours holds it).
    connected_id: Option<u64>,
    /// Since when the switch refuses `election_id` as already used.
    refused_since: Option<Instant>,
    /// Rate limit of the "table full" warning, shared by the write tasks.
    full_log: FullLog,
    /// `[ha]`: the term this replica leads, which the session's election id carries.
    ha_term: u64,
    /// CRT ageing by counter reads when the server sends no idle notifications.
    ageing: ageing::CounterAgeing,
    /// Primary since the last successful full read: the next one is followed by the CRT idle
    /// read of `takeover`.
    age_after_read: bool,
}

pub use writer::TABLE_FULL_LOG_EVERY;
use writer::{FullLog, Writer};

/// The contract's short name of a key's table (`crt`, `dpt`, …), for counters and labels.
fn table_short(k: &Key) -> &'static str {
    let t = contract::table_name(k);
    t.rsplit('.').next().unwrap_or(t)
}

/// How a session ended.
enum Ended {
    /// Shutdown (or the command channel closed).
    Shutdown,
    /// The session is unusable; `primary`: it had been primary (its switch was up).
    Lost { primary: bool },
}

/// Runs the driver until `shutdown` turns true.
pub async fn run(
    cfg: DriverConfig,
    schema: Arc<Schema>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<SwitchCmd>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg_election_id = cfg.election_id;
    let mut d = Driver {
        cfg,
        schema,
        shared,
        pending: HashMap::new(),
        up: false,
        lost_at: None,
        writes: JoinSet::new(),
        write_ids: HashMap::new(),
        election_id: cfg_election_id,
        connected_id: None,
        refused_since: None,
        full_log: Arc::default(),
        ha_term: 0,
        ageing: ageing::CounterAgeing::default(),
        age_after_read: false,
    };
    let cap = retry_cap(d.cfg.liveness);
    let mut backoff = RETRY_INITIAL;
    let mut failures = 0u64;
    let mut warn_unreachable = p4rt::ratelimit::RateLimit::new(UNREACHABLE_LOG_EVERY);
    let mut warn_refused = p4rt::ratelimit::RateLimit::new(UNREACHABLE_LOG_EVERY);
    loop {
        // HA (docs/ha.md): the leader connects with its term in the election id; a follower
        // holds a backup session (term 0), reads only (`backup`).
        if let Some(mut ha) = d.shared.ha_rx() {
            d.ha_term = loop {
                let s = ha.borrow_and_update().clone();
                if s.is_leader() {
                    // A new term: the core may still hold this switch up from an earlier term;
                    // unless it becomes primary within the detection time, it is down.
                    if s.term != d.ha_term && d.up && d.lost_at.is_none() {
                        d.lost_at = Some(tokio::time::Instant::now());
                    }
                    break s.term;
                }
                if !d.follow(&mut ha, &mut rx, &mut shutdown).await {
                    return;
                }
            };
        }
        let cc = match d.client_config(crate::ha::election_id(d.ha_term, d.election_id)) {
            Ok(cc) => cc,
            Err(e) => {
                d.count("tls_files_failed");
                if let Some(suppressed) = warn_unreachable.check() {
                    tracing::warn!(switch = %d.cfg.name, error = %e, suppressed, "P4Runtime TLS files unusable; retrying");
                }
                let until = tokio::time::Instant::now() + cap;
                if !d
                    .wait_unconnected(until, &mut rx, &mut shutdown, "TLS files unusable")
                    .await
                {
                    return;
                }
                continue;
            }
        };
        let connect = Session::connect(cc);
        tokio::pin!(connect);
        let connected = loop {
            let deadline = d.liveness_deadline();
            tokio::select! {
                r = &mut connect => break r,
                _ = shutdown.changed() => return,
                _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => d.liveness_expired(),
                c = rx.recv() => match c {
                    Some(c) => d.unreachable(c, "not connected"),
                    None => return,
                },
            }
        };
        match connected {
            Ok((session, queues)) => {
                if failures > 0 {
                    tracing::info!(switch = %d.cfg.name, failed_attempts = failures, election_id = d.election_id, "P4Runtime connected");
                }
                failures = 0;
                warn_unreachable.reset();
                warn_refused.reset();
                d.connected_id = Some(d.election_id);
                d.refused_since = None;
                let ended = d
                    .session_loop(session, queues, &mut rx, &mut shutdown)
                    .await;
                // Write tasks hold the session: end them now, so the old session (and its own
                // stream reconnect) is gone before a new one arbitrates with the same id.
                d.writes = JoinSet::new();
                d.write_ids.clear();
                match ended {
                    Ended::Shutdown => return,
                    Ended::Lost { primary: true } => {
                        d.lost_primary();
                        backoff = RETRY_INITIAL;
                    }
                    Ended::Lost { primary: false } => {}
                }
            }
            Err(e) if election_id_in_use(&e) => {
                d.count("arbitration_refused");
                failures += 1;
                d.refused(&e, &mut warn_refused);
            }
            Err(e) => {
                d.count("connect_failed");
                failures += 1;
                d.refused_since = None;
                if let Some(suppressed) = warn_unreachable.check() {
                    tracing::warn!(switch = %d.cfg.name, error = %e, failed_attempts = failures, suppressed, retry_max = ?cap, "P4Runtime connect failed");
                } else {
                    tracing::debug!(switch = %d.cfg.name, error = %e, "P4Runtime connect failed");
                }
            }
        }
        let until = tokio::time::Instant::now() + backoff;
        backoff = (backoff * 2).min(cap);
        if !d
            .wait_unconnected(until, &mut rx, &mut shutdown, "not connected")
            .await
        {
            return;
        }
    }
}

impl Driver {
    /// The session settings with `election_id` (TLS files are read per connection: rotated
    /// files are used by the next one).
    fn client_config(&self, election_id: u128) -> Result<ClientConfig, String> {
        let mut cc = ClientConfig::new(self.cfg.addr.clone(), self.cfg.device_id);
        cc.election_id = election_id;
        cc.connect_timeout = self.cfg.connect_timeout;
        cc.keepalive = Some(self.cfg.keepalive);
        cc.keepalive_timeout = Some(self.cfg.liveness);
        cc.tcp_user_timeout = Some(self.cfg.tcp_user_timeout);
        // The session's own stream reconnect (the driver replaces a session whose stream
        // ended, so this only bounds a reconnect racing that).
        cc.backoff_initial = RETRY_INITIAL;
        cc.backoff_max = retry_cap(self.cfg.liveness);
        cc.queue_capacity = STREAM_QUEUE;
        if let Some(t) = &self.cfg.tls {
            let c = dvipa_tls::p4runtime_client_tls(
                &t.ca,
                t.cert.as_deref().zip(t.key.as_deref()),
                t.server_name.as_deref(),
            )
            .map_err(|e| e.to_string())?;
            cc.tls = Some(c);
        }
        Ok(cc)
    }

    /// Waits until `until` without a session: commands are answered as unreachable (`why`) and
    /// the liveness deadline still fires. False on shutdown or when the command channel closed.
    async fn wait_unconnected(
        &mut self,
        until: tokio::time::Instant,
        rx: &mut mpsc::UnboundedReceiver<SwitchCmd>,
        shutdown: &mut watch::Receiver<bool>,
        why: &str,
    ) -> bool {
        loop {
            let deadline = self.liveness_deadline();
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                _ = shutdown.changed() => return false,
                _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => self.liveness_expired(),
                c = rx.recv() => match c {
                    Some(c) => self.unreachable(c, why),
                    None => return false,
                },
            }
        }
    }

    fn count(&self, what: &str) {
        self.shared.stats.add(&format!("switch_{what}"), 1);
    }

    /// When primary, lost at `lost_at`, is to be reported lost.
    fn liveness_deadline(&self) -> Option<tokio::time::Instant> {
        self.lost_at.map(|t| t + self.cfg.liveness)
    }

    fn liveness_expired(&mut self) {
        self.lost_at = None;
        self.down();
    }

    fn lost_primary(&mut self) {
        if self.lost_at.is_none() {
            self.lost_at = Some(tokio::time::Instant::now());
        }
    }

    fn down(&mut self) {
        if self.up {
            self.up = false;
            self.pending.clear();
            tracing::warn!(switch = %self.cfg.name, "switch down");
            metrics::gauge!("dvipa_switch_up", "switch" => self.cfg.name.clone()).set(0.0);
            self.shared.event(Event::SwitchDown {
                switch: self.cfg.name.clone(),
            });
        }
    }

    /// A command that cannot be carried out now (the core re-syncs on the next SwitchUp).
    fn unreachable(&mut self, c: SwitchCmd, why: &str) {
        match c {
            SwitchCmd::Dump { reply, .. } => {
                let _ = reply.send(Err(why.to_string()));
            }
            SwitchCmd::Snapshot { reply } => {
                let _ = reply.send(Err(why.to_string()));
            }
            _ => self.count("cmd_dropped_unreachable"),
        }
    }

    /// Runs one session until it ends (stream lost, setup failed) or shutdown.
    async fn session_loop(
        &mut self,
        session: Session,
        mut q: StreamQueues,
        rx: &mut mpsc::UnboundedReceiver<SwitchCmd>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        let session = Arc::new(session);
        let mut probe = Probe::start(session.clone(), self.cfg.probe, self.cfg.liveness);
        // Writes of an earlier session are not answered any more (the core forgets them on
        // the next SwitchUp).
        self.writes = JoinSet::new();
        self.write_ids.clear();
        let mut mastership = session.watch_mastership();
        let mut primary = false;
        let mut resync = tokio::time::interval(self.cfg.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        let age_by_counters = !self.cfg.capabilities.idle_notifications;
        let idle = Duration::from_nanos(self.cfg.idle_timeout_ns.max(0) as u64);
        let mut age_tick = tokio::time::interval(ageing::interval(idle));
        age_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.ageing.reset();
        // First pass: act on the current mastership.
        mastership.mark_changed();
        let ha_lost = crate::ha::lost(self.shared.ha_rx(), self.ha_term);
        tokio::pin!(ha_lost);
        loop {
            let liveness_deadline = self.liveness_deadline();
            tokio::select! {
                _ = shutdown.changed() => return Ended::Shutdown,
                _ = &mut ha_lost => {
                    // Stepped down: no write of this session may reach the switch any more.
                    // The follower's core keeps its view of the switch (nothing is written
                    // meanwhile); a new term checks the switch again (see `run`).
                    tracing::warn!(switch = %self.cfg.name, term = self.ha_term, "not the leader any more: session dropped");
                    self.count("ha_session_dropped");
                    self.lost_at = None;
                    return Ended::Lost { primary: false };
                }
                last_ok = &mut probe.0 => {
                    let last_ok = last_ok.unwrap_or_else(|_| tokio::time::Instant::now());
                    return self.unresponsive(last_ok, primary);
                }
                ch = mastership.changed() => {
                    if ch.is_err() {
                        // The session is gone: start over with a new one.
                        if primary {
                            self.lost_primary();
                        }
                        return Ended::Lost { primary };
                    }
                    let m = *mastership.borrow_and_update();
                    if m == Mastership::Primary && !primary {
                        let set_up = match probe.or_dead(self.setup(&session)).await {
                            Ok(r) => r,
                            Err(last_ok) => return self.unresponsive(last_ok, primary),
                        };
                        match set_up {
                            Ok(()) => {
                                primary = true;
                                self.lost_at = None;
                                self.pending.clear();
                                self.up = true;
                                self.age_after_read = true;
                                metrics::gauge!("dvipa_switch_up", "switch" => self.cfg.name.clone()).set(1.0);
                                tracing::info!(switch = %self.cfg.name, "switch up (primary, pipeline set, digest enabled)");
                                self.shared.event(Event::SwitchUp { switch: self.cfg.name.clone() });
                            }
                            Err(e) => {
                                self.count("setup_failed");
                                warn_limited!(self.cfg.name, "switch setup failed", error = %e,);
                                // Not usable without its pipeline and digest.
                                self.lost_at = None;
                                self.down();
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                return Ended::Lost { primary: false };
                            }
                        }
                    } else if m == Mastership::Disconnected {
                        // The stream ended: a new session, at once (the switch may be back
                        // already), rather than this session's own reconnect backoff.
                        if primary {
                            tracing::warn!(switch = %self.cfg.name, "lost primary (stream ended)");
                            self.lost_primary();
                        }
                        return Ended::Lost { primary };
                    } else if m != Mastership::Primary && primary {
                        primary = false;
                        tracing::warn!(switch = %self.cfg.name, mastership = ?m, "lost primary");
                        self.lost_primary();
                    } else if let Mastership::Backup { primary_election_id } = m
                        && self.lost_at.is_none()
                        && !self.up
                    {
                        tracing::warn!(switch = %self.cfg.name, ?primary_election_id, "another controller is primary");
                    }
                }
                _ = async { tokio::time::sleep_until(liveness_deadline.unwrap()).await }, if liveness_deadline.is_some() => {
                    self.liveness_expired();
                }
                c = rx.recv() => {
                    let Some(c) = c else { return Ended::Shutdown };
                    if primary {
                        if let Err(last_ok) = probe.or_dead(self.command(&session, c)).await {
                            return self.unresponsive(last_ok, primary);
                        }
                    } else {
                        self.unreachable(c, "not primary");
                    }
                }
                d = q.digests.recv(), if primary => {
                    let Some(d) = d else { return Ended::Lost { primary } };
                    if let Err(last_ok) = probe.or_dead(self.digest(d)).await {
                        return self.unresponsive(last_ok, primary);
                    }
                }
                i = q.idle_timeouts.recv(), if primary => {
                    if let Some(i) = i { self.idle(i) } else { return Ended::Lost { primary } }
                }
                w = self.writes.join_next_with_id(), if !self.writes.is_empty() => {
                    if let Some(w) = w {
                        self.write_done(w);
                    }
                }
                _ = age_tick.tick(), if primary && age_by_counters => {
                    if let Err(last_ok) = probe.or_dead(self.age(&session, idle)).await {
                        return self.unresponsive(last_ok, primary);
                    }
                }
                _ = resync.tick(), if primary => {
                    if let Err(last_ok) = probe.or_dead(self.command(&session, SwitchCmd::Read)).await {
                        return self.unresponsive(last_ok, primary);
                    }
                }
            }
        }
    }

    async fn setup(&self, s: &Session) -> Result<(), String> {
        let out = s
            .set_pipeline(
                self.cfg.p4info.clone(),
                self.cfg.device_config.clone(),
                self.cfg.cookie,
            )
            .await
            .map_err(|e| format!("pipeline: {e}"))?;
        self.count(&format!("pipeline_{out:?}").to_lowercase());
        let de = self
            .schema
            .digest_entry(
                learn::NAME,
                learn::MAX_TIMEOUT_NS,
                learn::MAX_LIST_SIZE,
                learn::ACK_TIMEOUT_NS,
            )
            .map_err(|e| e.to_string())?;
        let r = s
            .write_detailed(vec![p4rt::insert(de)])
            .await
            .map_err(|e| format!("digest entry: {e}"))?;
        match r.into_iter().next() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) if e.code == tonic::Code::AlreadyExists => s
                .write(vec![p4rt::modify(de)])
                .await
                .map_err(|e| format!("digest entry modify: {e}")),
            Some(Err(e)) => Err(format!("digest entry: {e}")),
            None => Err("digest entry: no result".into()),
        }
    }

    async fn read_tables(&self, s: &Session) -> Result<(Vec<(Key, Value)>, Vec<String>), String> {
        let mut ents = Vec::new();
        for t in contract::TABLE_NAMES {
            let w = self.schema.table_wildcard(t).map_err(|e| e.to_string())?;
            ents.push(p4rt::IntoEntity::into_entity(w));
        }
        let got = s.read_all(ents).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for e in got {
            let Some(p4::entity::Entity::TableEntry(te)) = e.entity else {
                continue;
            };
            if te.is_default_action {
                continue;
            }
            match self
                .schema
                .decode_table_entry(&te)
                .map_err(translate::TranslateError::from)
                .and_then(|d| translate::from_decoded_lenient(&d))
            {
                Ok((k, v, foreign)) => {
                    if foreign {
                        self.count("entries_foreign_action");
                    }
                    out.push((k, v));
                }
                Err(e) => bad.push(e.to_string()),
            }
        }
        Ok((out, bad))
    }

    /// A write task ended: its outcomes go to the core.
    fn write_done(
        &mut self,
        w: Result<(tokio::task::Id, (u64, Vec<WriteOutcome>)), tokio::task::JoinError>,
    ) {
        let (batch, results) = match w {
            Ok((id, r)) => {
                self.write_ids.remove(&id);
                r
            }
            Err(e) => {
                // Cancelled or panicked: every update failed (the core diffs them again).
                self.count("write_task_failed");
                let Some((batch, n)) = self.write_ids.remove(&e.id()) else {
                    return;
                };
                (batch, vec![WriteOutcome::Other(e.to_string()); n])
            }
        };
        self.shared.event(Event::WriteResult {
            switch: self.cfg.name.clone(),
            batch,
            results,
        });
    }

    /// Waits for every write in flight and reports it.
    async fn drain_writes(&mut self) {
        while let Some(w) = self.writes.join_next_with_id().await {
            self.write_done(w);
        }
    }

    /// One full read for the core; true when it was read.
    async fn read(&mut self, s: &Session) -> bool {
        match self.read_tables(s).await {
            Ok((entries, bad)) => {
                if !bad.is_empty() {
                    self.shared
                        .stats
                        .add("switch_entries_undecodable", bad.len() as u64);
                    warn_limited!(self.cfg.name, "entries not understood", first = %bad[0], n = bad.len(),);
                }
                self.count("reads");
                self.shared.event(Event::SwitchRead {
                    switch: self.cfg.name.clone(),
                    entries,
                });
                true
            }
            Err(e) => {
                self.count("read_failed");
                warn_limited!(self.cfg.name, "read failed", error = %e,);
                false
            }
        }
    }

    async fn command(&mut self, s: &Arc<Session>, c: SwitchCmd) {
        match c {
            SwitchCmd::Write { batch, updates } => {
                let w = Writer {
                    name: self.cfg.name.clone(),
                    schema: self.schema.clone(),
                    shared: self.shared.clone(),
                    idle_timeout_ns: self.cfg.idle_timeout_ns,
                    full_log: self.full_log.clone(),
                };
                let n = updates.len();
                let s = s.clone();
                let h = self.writes.spawn(async move {
                    let results = w.write(&s, &updates).await;
                    (batch, results)
                });
                self.write_ids.insert(h.id(), (batch, n));
            }
            SwitchCmd::Read | SwitchCmd::Resync => {
                self.drain_writes().await;
                if self.read(s).await && std::mem::take(&mut self.age_after_read) {
                    self.age_after_takeover(s).await;
                }
            }
            SwitchCmd::Ack { list_id } => match self.pending.remove(&list_id) {
                Some(_) if !self.cfg.capabilities.digest_acks => {
                    // The server acks digests itself (Stratum-bfrt) and ignores ours.
                    self.count("digest_ack_not_needed");
                }
                Some((_, d)) => {
                    if let Err(e) = d.ack().await {
                        self.count("digest_ack_failed");
                        warn_limited!(self.cfg.name, "digest ack failed", error = %e,);
                    } else {
                        self.count("digest_acked");
                    }
                }
                None => self.count("digest_ack_unknown_list"),
            },
            SwitchCmd::Dump { table, reply } => {
                let _ = reply.send(self.dump(s, &table).await);
            }
            SwitchCmd::Snapshot { reply } => {
                let r = self
                    .read_tables(s)
                    .await
                    .map(|(e, bad)| (e.into_iter().collect(), bad));
                let _ = reply.send(r);
            }
        }
    }

    async fn digest(&mut self, d: p4rt::DigestDelivery) {
        metrics::counter!("dvipa_digests_received_total", "switch" => self.cfg.name.clone())
            .increment(1);
        self.count("digest_lists");
        let (_name, recs) = match self.schema.decode_digest_list(&d.list) {
            Ok(x) => x,
            Err(e) => {
                self.count("digest_undecodable");
                warn_limited!(self.cfg.name, "digest list not understood; acked and dropped", error = %e,);
                let _ = d.ack().await;
                return;
            }
        };
        // By id, not by name: TNA names the digest after its instance (docs/tofino.md).
        if self
            .schema
            .digest(learn::NAME)
            .map(|x| x.preamble.as_ref().map(|p| p.id))
            .ok()
            != Some(Some(d.list.digest_id))
        {
            self.count("digest_unknown");
            let _ = d.ack().await;
            return;
        }
        let mut items = Vec::with_capacity(recs.len());
        for r in &recs {
            match translate::digest_item(r) {
                Ok(i) => items.push(i),
                Err(e) => {
                    self.count("digest_item_undecodable");
                    warn_limited!(self.cfg.name, "digest item not understood", error = %e,);
                }
            }
        }
        metrics::counter!("dvipa_digest_items_total", "switch" => self.cfg.name.clone())
            .increment(items.len() as u64);
        let list_id = d.list.list_id;
        // Lists the core dropped (e.g. while the switch was syncing) are never acked: the switch
        // re-sends their digests after its ack timeout. Forget them after a while.
        let before = self.pending.len();
        self.pending
            .retain(|_, (t, _)| t.elapsed() < PENDING_DIGEST_TTL);
        if self.pending.len() < before {
            self.shared.stats.add(
                "switch_digest_unacked_forgotten",
                (before - self.pending.len()) as u64,
            );
        }
        self.pending.insert(list_id, (Instant::now(), d));
        self.shared.event(Event::Digest {
            switch: self.cfg.name.clone(),
            list_id,
            items,
        });
    }

    fn idle(&self, i: p4::IdleTimeoutNotification) {
        let mut conns = Vec::new();
        for te in &i.table_entry {
            // Notifications may carry the match only: the lenient decoder needs just the key.
            match self
                .schema
                .decode_table_entry(te)
                .map_err(translate::TranslateError::from)
                .and_then(|d| translate::from_decoded_lenient(&d))
            {
                Ok((Key::Crt(c), _, _)) => conns.push(c),
                Ok(_) => self.count("idle_not_crt"),
                Err(_) => self.count("idle_undecodable"),
            }
        }
        self.count("idle_notifications");
        if !conns.is_empty() {
            self.shared.event(Event::IdleTimeout {
                switch: self.cfg.name.clone(),
                conns,
            });
        }
    }

    /// One CRT read with direct counters for ageing ([`ageing`]); idle connections go to the
    /// core as an idle timeout.
    async fn age(&mut self, s: &Session, idle: Duration) {
        let mut w = match self.schema.table_wildcard(contract::crt::NAME) {
            Ok(w) => w,
            Err(e) => {
                warn_limited!(self.cfg.name, "CRT ageing read not built", error = %e,);
                return;
            }
        };
        w.counter_data = Some(p4::CounterData::default());
        let got = match s.read_all(vec![p4rt::IntoEntity::into_entity(w)]).await {
            Ok(g) => g,
            Err(e) => {
                self.count("ageing_read_failed");
                warn_limited!(self.cfg.name, "CRT ageing read failed", error = %e,);
                return;
            }
        };
        let mut read = Vec::with_capacity(got.len());
        for e in got {
            let Some(p4::entity::Entity::TableEntry(te)) = e.entity else {
                continue;
            };
            let packets = te.counter_data.as_ref().map_or(0, |c| c.packet_count) as u64;
            match self
                .schema
                .decode_table_entry(&te)
                .map_err(translate::TranslateError::from)
                .and_then(|d| translate::from_decoded_lenient(&d))
            {
                Ok((Key::Crt(c), _, _)) => read.push((c, packets)),
                _ => self.count("ageing_undecodable"),
            }
        }
        self.count("ageing_reads");
        let conns = self.ageing.observe(Instant::now(), idle, read);
        if !conns.is_empty() {
            self.shared
                .stats
                .add("switch_ageing_idle_conns", conns.len() as u64);
            self.shared.event(Event::IdleTimeout {
                switch: self.cfg.name.clone(),
                conns,
            });
        }
    }

    async fn dump(&self, s: &Session, table: &str) -> Result<pb::AdminTable, String> {
        let w = self
            .schema
            .table_wildcard(table)
            .map_err(|e| e.to_string())?;
        let tname = p4rt::schema::name_of(
            &self
                .schema
                .table(table)
                .map_err(|e| e.to_string())?
                .preamble,
        )
        .to_string();
        let got = s
            .read_all(vec![p4rt::IntoEntity::into_entity(w)])
            .await
            .map_err(|e| e.to_string())?;
        let mut rows = render::rows(&self.schema, got)?;
        rows.sort_by(|a, b| a.cells.cmp(&b.cells));
        Ok(pb::AdminTable {
            title: format!("{tname} on {} ({} entries)", self.cfg.name, rows.len()),
            columns: vec![
                "match".into(),
                "action".into(),
                "priority".into(),
                "idle_timeout_ns".into(),
            ],
            rows,
        })
    }
}

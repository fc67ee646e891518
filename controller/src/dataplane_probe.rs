//! Data-plane liveness (`[liveness.dataplane]`, issue 13): a switch whose P4Runtime answers but
//! which forwards nothing is marked down through the same `SwitchDown` as a switch that stopped
//! answering.
//!
//! The probe runs in the controller process (it needs the core's view of which switch routes the
//! DVIPA, and marks switches down in the core directly; a separate daemon would need a new API
//! and would be one more thing that can fail). Every `probe_ms` it sends one UDP datagram per
//! flow per path to `dvipa:port`. A path is a way out of this host that reaches the DVIPA
//! through one switch only: a local source address (policy routing by source at the router), an
//! `SO_MARK` (fwmark rules), or a device. The switch distributes the probe like any UDP to the
//! DVIPA; the server's agent (`dvipa-agent --dataplane-echo`) sends it straight back (format in
//! `dvipa_agent::echo`: 24 bytes, "DVPL", version 1, kind, path, flow, sequence, nonce).
//!
//! Rules:
//! - **Down**: while a switch routes the DVIPA (the core's advertised switch), is up, and the
//!   probed UDP service has a target in its slots (without one the switch is right to drop the
//!   probes), no echo through it for `down_after_ms` (counted from the later of the last echo
//!   and the moment these conditions began) ⇒ `SwitchDown` (the core takes over as for any
//!   lost switch).
//!   A backup is probed too (counted) but not marked down: a cold backup holds no entries for
//!   the DVIPA, so its silence means nothing.
//! - **Up**: a switch marked down keeps the tables it had (the controller does not write to a
//!   down switch), so the probes keep exercising its data path. After `up_after` probe rounds in
//!   a row with an echo it is up again (`SwitchUp`: read, reconciled, then taken back).
//! - **Probation**: a new P4Runtime session of a switch marked down (it was restarted or
//!   reconnected; its tables may be empty, so no probe could ever pass) releases the mark: the
//!   switch comes back as usual and is watched again (a still broken data path is marked down
//!   again `down_after_ms` after it routes the DVIPA). Counted `dataplane.<sw>.probation`.
//! - A stall of this process longer than a probe interval restarts the grace period (the
//!   echoes may be waiting unread).
//!
//! Bounds: `paths × flows` sockets (≤ 64 × 16), one datagram of 24 bytes per socket per
//! `probe_ms`, one round record per path for `down_after_ms / probe_ms` rounds (at most 256),
//! echoes queued at most [`ECHO_QUEUE`]. Counters (shell stats, `dvipa counters`):
//! `dataplane.<sw>.sent`, `.answered`, `.lost` (no echo within `down_after_ms`), `.marked_down`,
//! `.marked_up`, `.probation`; `dataplane.echo_malformed`, `dataplane.echo_dropped`; metric
//! `dvipa_dataplane_probes_total{switch, result}`, gauge `dvipa_dataplane_down{switch}` (1 while
//! marked down).

pub use crate::dataplane_gate::{Gate, GateSw};
use crate::shared::Shared;
use dvipa_core::dataplane_cfg::DataplaneCfg;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Echoes queued from the sockets to the probe loop at the most (more are dropped, counted).
pub const ECHO_QUEUE: usize = 4096;
const PROBE_LEN: usize = 24;
const MAGIC: &[u8; 4] = b"DVPL";
const KIND_PROBE: u8 = 1;
const KIND_ECHO: u8 = 2;
/// Round records kept per path at the most.
const MAX_ROUNDS: usize = 256;

struct Round {
    seq: u64,
    answers: u8,
}

struct PathState {
    switch: String,
    rounds: VecDeque<Round>,
    last_echo: Option<Instant>,
    /// Since when the switch routes the DVIPA (and is watched).
    armed_since: Option<Instant>,
    /// Rounds in a row with at least one echo (the last completed ones).
    ok_in_row: u32,
}

/// What the check decided for a path.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Nothing,
    /// Mark down: no echo for this long.
    Down(Duration),
    /// Mark up: this many answered rounds in a row.
    Up(u32),
}

impl PathState {
    fn new(switch: &str, keep: usize) -> PathState {
        PathState {
            switch: switch.to_string(),
            rounds: VecDeque::with_capacity(keep),
            last_echo: None,
            armed_since: None,
            ok_in_row: 0,
        }
    }

    /// A new round `seq` is sent: the previous one is complete (it had a probe interval to be
    /// answered). Returns the probes of the round that fell off the record unanswered.
    fn round(&mut self, seq: u64, flows: u8, keep: usize) -> u64 {
        let prev_ok = self.rounds.back().is_some_and(|r| r.answers > 0);
        self.ok_in_row = if prev_ok {
            self.ok_in_row.saturating_add(1)
        } else {
            0
        };
        let mut lost = 0;
        while self.rounds.len() >= keep {
            if let Some(old) = self.rounds.pop_front() {
                lost += u64::from(flows.saturating_sub(old.answers));
            }
        }
        self.rounds.push_back(Round { seq, answers: 0 });
        lost
    }

    /// An echo of round `seq`: counted when the round is on record and not yet fully answered.
    fn echo(&mut self, seq: u64, flows: u8, now: Instant) -> bool {
        match self.rounds.iter_mut().find(|r| r.seq == seq) {
            Some(r) if r.answers < flows => {
                r.answers += 1;
                self.last_echo = Some(now);
                true
            }
            _ => false,
        }
    }

    /// The check: `watched` = the switch routes the DVIPA, its session is up and the service
    /// has a target; `dp_down` = it is marked down; `stalled` = this process did not run for
    /// longer than a probe interval.
    fn verdict(
        &mut self,
        now: Instant,
        dp_down: bool,
        watched: bool,
        stalled: bool,
        down_after: Duration,
        up_after: u32,
    ) -> Verdict {
        if dp_down {
            self.armed_since = None;
            return if self.ok_in_row >= up_after {
                Verdict::Up(self.ok_in_row)
            } else {
                Verdict::Nothing
            };
        }
        if !watched {
            self.armed_since = None;
            return Verdict::Nothing;
        }
        let armed = self.armed_since.get_or_insert(now);
        if stalled {
            *armed = now;
        }
        let since = self.last_echo.map_or(*armed, |l| l.max(*armed));
        let silent = now.duration_since(since);
        if silent >= down_after {
            self.ok_in_row = 0;
            Verdict::Down(silent)
        } else {
            Verdict::Nothing
        }
    }
}

/// The probe's sockets and state (built at start-up so that a bad path is a start error).
pub struct Prober {
    cfg: DataplaneCfg,
    sockets: Vec<(usize, u8, std::net::UdpSocket)>,
    nonce: u64,
}

fn probe_bytes(path: u8, flow: u8, seq: u64, nonce: u64) -> [u8; PROBE_LEN] {
    let mut p = [0u8; PROBE_LEN];
    p[..4].copy_from_slice(MAGIC);
    p[4] = 1;
    p[5] = KIND_PROBE;
    p[6] = path;
    p[7] = flow;
    p[8..16].copy_from_slice(&seq.to_be_bytes());
    p[16..24].copy_from_slice(&nonce.to_be_bytes());
    p
}

/// (path, flow, seq) of a valid echo of ours.
fn parse_echo(b: &[u8], nonce: u64) -> Option<(u8, u8, u64)> {
    if b.len() != PROBE_LEN || &b[..4] != MAGIC || b[4] != 1 || b[5] != KIND_ECHO {
        return None;
    }
    if u64::from_be_bytes(b[16..24].try_into().ok()?) != nonce {
        return None;
    }
    Some((b[6], b[7], u64::from_be_bytes(b[8..16].try_into().ok()?)))
}

impl Prober {
    /// Opens `flows` sockets per path (bound to the path's source, with its mark and device).
    pub fn new(cfg: DataplaneCfg) -> Result<Prober, String> {
        let mut sockets = Vec::new();
        for (i, p) in cfg.paths.iter().enumerate() {
            for f in 0..cfg.flows {
                let what = format!("liveness.dataplane.path[{i}] (switch {})", p.switch);
                let s = std::net::UdpSocket::bind(SocketAddr::from((p.source, 0)))
                    .map_err(|e| format!("{what}: cannot bind {}: {e}", p.source))?;
                let r = socket2::SockRef::from(&s);
                if p.mark != 0 {
                    r.set_mark(p.mark)
                        .map_err(|e| format!("{what}: SO_MARK {}: {e}", p.mark))?;
                }
                if let Some(d) = &p.device {
                    r.bind_device(Some(d.as_bytes()))
                        .map_err(|e| format!("{what}: SO_BINDTODEVICE {d}: {e}"))?;
                }
                s.set_nonblocking(true)
                    .map_err(|e| format!("{what}: {e}"))?;
                sockets.push((i, f, s));
            }
        }
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 32);
        Ok(Prober {
            cfg,
            sockets,
            nonce,
        })
    }

    /// Runs until shutdown.
    pub async fn run(self, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
        let cfg = self.cfg;
        let nonce = self.nonce;
        let to = SocketAddr::from((cfg.dvipa, cfg.port));
        let (tx, mut rx) = mpsc::channel::<(u8, u8, u64)>(ECHO_QUEUE);
        let mut recv_tasks = tokio::task::JoinSet::new();
        let mut send: Vec<(usize, u8, Arc<tokio::net::UdpSocket>)> = Vec::new();
        for (i, f, s) in self.sockets {
            let s = match tokio::net::UdpSocket::from_std(s) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::error!(error = %e, "data-plane probe: socket not usable; probe off");
                    return;
                }
            };
            send.push((i, f, s.clone()));
            let (tx, shared) = (tx.clone(), shared.clone());
            recv_tasks.spawn(async move {
                let mut buf = [0u8; PROBE_LEN + 1];
                loop {
                    let Ok((n, _)) = s.recv_from(&mut buf).await else {
                        // e.g. a queued ICMP error: never a busy loop
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    match parse_echo(&buf[..n], nonce) {
                        Some((p, fl, seq)) if usize::from(p) == i && fl == f => {
                            if tx.try_send((p, fl, seq)).is_err() {
                                shared.stats.add("dataplane.echo_dropped", 1);
                            }
                        }
                        _ => shared.stats.add("dataplane.echo_malformed", 1),
                    }
                }
            });
        }
        drop(tx);
        let probe = cfg.probe();
        let down_after = cfg.down_after();
        let keep = ((cfg.down_after_ms / cfg.probe_ms) as usize + 1).clamp(2, MAX_ROUNDS);
        let mut paths: Vec<PathState> = cfg
            .paths
            .iter()
            .map(|p| PathState::new(&p.switch, keep))
            .collect();
        let count = |sw: &str, what: &'static str, n: u64| {
            if n > 0 {
                shared.stats.add(&format!("dataplane.{sw}.{what}"), n);
                metrics::counter!("dvipa_dataplane_probes_total", "switch" => sw.to_string(), "result" => what)
                    .increment(n);
            }
        };
        let mut send_tick = tokio::time::interval(probe);
        send_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let check_every = (probe / 5).clamp(Duration::from_millis(2), Duration::from_millis(50));
        let mut check_tick = tokio::time::interval(check_every);
        check_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_check = Instant::now();
        let mut seq: u64 = 0;
        tracing::info!(dvipa = %cfg.dvipa, port = cfg.port, probe_ms = cfg.probe_ms,
            down_after_ms = cfg.down_after_ms, paths = cfg.paths.len(), flows = cfg.flows,
            "data-plane probe running");
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = send_tick.tick() => {
                    seq += 1;
                    for ps in &mut paths {
                        let lost = ps.round(seq, cfg.flows, keep);
                        count(&ps.switch, "lost", lost);
                    }
                    for (i, f, s) in &send {
                        let b = probe_bytes(*i as u8, *f, seq, nonce);
                        // a full socket buffer or an unreachable route is a lost probe
                        let _ = s.try_send_to(&b, to);
                    }
                    for ps in &paths {
                        count(&ps.switch, "sent", u64::from(cfg.flows));
                    }
                }
                e = rx.recv() => {
                    let Some((p, _f, s)) = e else { return };
                    let Some(ps) = paths.get_mut(usize::from(p)) else { continue };
                    if ps.echo(s, cfg.flows, Instant::now()) {
                        count(&ps.switch, "answered", 1);
                    }
                }
                _ = check_tick.tick() => {
                    let now = Instant::now();
                    let stalled = now.duration_since(last_check) > probe.max(check_every * 2);
                    last_check = now;
                    let (routing, has_target) = shared.with_core(|c| {
                        let has_target = c
                            .service_of(cfg.dvipa, cfg.port, dvipa_core::entries::UDP)
                            .and_then(|id| c.services().get(usize::from(id)))
                            .is_some_and(|s| s.active && s.fill.iter().any(Option::is_some));
                        (c.advertised(cfg.dvipa).map(str::to_owned), has_target)
                    });
                    for ps in &mut paths {
                        let (dp_down, ctl_up) = shared.dataplane_state(&ps.switch);
                        let watched = ctl_up
                            && has_target
                            && routing.as_deref() == Some(ps.switch.as_str());
                        match ps.verdict(now, dp_down, watched, stalled, down_after, cfg.up_after) {
                            Verdict::Nothing => {}
                            Verdict::Up(rounds) => {
                                if shared.dataplane_mark(&ps.switch, false) {
                                    count(&ps.switch, "marked_up", 1);
                                    metrics::gauge!("dvipa_dataplane_down", "switch" => ps.switch.clone()).set(0.0);
                                    tracing::warn!(switch = %ps.switch, rounds,
                                        "data path answers the probe again: switch no longer marked down");
                                }
                            }
                            Verdict::Down(silent) => {
                                if shared.dataplane_mark(&ps.switch, true) {
                                    count(&ps.switch, "marked_down", 1);
                                    metrics::gauge!("dvipa_dataplane_down", "switch" => ps.switch.clone()).set(1.0);
                                    tracing::warn!(switch = %ps.switch, dvipa = %cfg.dvipa,
                                        silent_ms = silent.as_millis() as u64,
                                        "data path not answering the probe: switch marked down");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The DVIPA of `[liveness.dataplane]` must be one the cluster routes (`file:line:col:
/// liveness.dataplane.dvipa: …` otherwise; `src` is the TOML text).
pub fn check_dvipa(
    cfg: &DataplaneCfg,
    dvipas: &[Ipv4Addr],
    file: &str,
    src: &str,
) -> Result<(), String> {
    if dvipas.contains(&cfg.dvipa) {
        return Ok(());
    }
    let field = "liveness.dataplane.dvipa";
    let at = dvipa_core::validate::field_pos(src, field)
        .map(|(l, c)| format!("{file}:{l}:{c}: "))
        .unwrap_or_else(|| format!("{file}: "));
    Err(format!(
        "{at}{field}: {} is not a DVIPA of the profiles (they define {})",
        cfg.dvipa,
        dvipas
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvipa_core::core::Event;

    #[test]
    fn echoes_are_ours_only() {
        let mut p = probe_bytes(1, 2, 99, 7);
        assert!(parse_echo(&p, 7).is_none(), "a probe is not an echo");
        p[5] = KIND_ECHO;
        assert_eq!(parse_echo(&p, 7), Some((1, 2, 99)));
        assert!(parse_echo(&p, 8).is_none(), "another prober's nonce");
        assert!(parse_echo(&p[..23], 7).is_none());
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_watched_path_without_echoes_is_down_after_down_after_and_up_after_answered_rounds() {
        let t0 = Instant::now();
        let (flows, keep, down_after) = (4, 4, MS(300));
        let mut p = PathState::new("sw1", keep);
        // echoes keep it alive
        for seq in 1..=5 {
            p.round(seq, flows, keep);
            assert!(p.echo(seq, flows, t0 + MS(seq * 100)));
        }
        let at = |ms| t0 + MS(ms);
        assert_eq!(
            p.verdict(at(500), false, true, false, down_after, 3),
            Verdict::Nothing
        );
        // silence: not down before down_after since the last echo (at 500 ms)
        for seq in 6..=8 {
            p.round(seq, flows, keep);
        }
        assert_eq!(
            p.verdict(at(799), false, true, false, down_after, 3),
            Verdict::Nothing
        );
        assert_eq!(
            p.verdict(at(800), false, true, false, down_after, 3),
            Verdict::Down(MS(300))
        );
        // marked down: up only after 3 answered rounds in a row
        for seq in 9..=11 {
            // rounds 5..=7 leave the record: 3 (one echo of 4) and 4 probes unanswered
            let lost = p.round(seq, flows, keep);
            assert_eq!(lost, if seq == 9 { 3 } else { 4 }, "round {seq}");
            p.echo(seq, flows, at(seq * 100));
        }
        assert_eq!(
            p.verdict(at(1100), true, false, false, down_after, 3),
            Verdict::Nothing
        );
        p.round(12, flows, keep);
        assert_eq!(
            p.verdict(at(1200), true, false, false, down_after, 3),
            Verdict::Up(3)
        );
    }

    #[test]
    fn an_unwatched_path_is_never_down_and_a_stall_restarts_the_grace() {
        let t0 = Instant::now();
        let at = |ms| t0 + MS(ms);
        let mut p = PathState::new("sw2", 4);
        // a backup (or no target in the slots): silent for ever, never down
        for ms in [0, 1000, 5000] {
            assert_eq!(
                p.verdict(at(ms), false, false, false, MS(300), 3),
                Verdict::Nothing
            );
        }
        // it starts routing the DVIPA at 5 s: the grace counts from then
        assert_eq!(
            p.verdict(at(5000), false, true, false, MS(300), 3),
            Verdict::Nothing
        );
        assert_eq!(
            p.verdict(at(5299), false, true, false, MS(300), 3),
            Verdict::Nothing
        );
        // this process stalled: the echoes may be waiting unread, the grace starts over
        assert_eq!(
            p.verdict(at(5299), false, true, true, MS(300), 3),
            Verdict::Nothing
        );
        assert_eq!(
            p.verdict(at(5500), false, true, false, MS(300), 3),
            Verdict::Nothing
        );
        assert_eq!(
            p.verdict(at(5599), false, true, false, MS(300), 3),
            Verdict::Down(MS(300))
        );
        // an echo of a round not on record, or beyond `flows`, does not count
        assert!(!p.echo(77, 4, at(5600)));
        p.round(1, 1, 4);
        assert!(p.echo(1, 1, at(5600)));
        assert!(!p.echo(1, 1, at(5600)), "a duplicate");
    }

    #[test]
    fn the_gate_hides_a_marked_switch_and_a_new_session_releases_it() {
        let up = |s: &str| Event::SwitchUp { switch: s.into() };
        let down = |s: &str| Event::SwitchDown { switch: s.into() };
        let mut g = Gate::default();
        assert_eq!(g.observe(&up("sw1")), None);
        assert!(matches!(
            g.mark("sw1", true),
            Some(Event::SwitchDown { .. })
        ));
        assert!(g.mark("sw1", true).is_none(), "marked once");
        assert!(matches!(g.mark("sw1", false), Some(Event::SwitchUp { .. })));
        // marked while the session is down: nothing for the core now
        g.observe(&down("sw1"));
        assert!(g.mark("sw1", true).is_none());
        assert!(g.dp_down("sw1"));
        // the next session releases the mark (probation)
        assert_eq!(g.observe(&up("sw1")).as_deref(), Some("sw1"));
        assert!(!g.dp_down("sw1") && g.ctl_up("sw1"));
    }
}

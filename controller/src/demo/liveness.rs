//! The failure-detection steps of `dvipa demo --failures` (issue 13): a frozen primary
//! (SIGSTOP for `--freeze-secs`, then SIGCONT) and a dropped controller→primary P4Runtime path
//! (an iptables DROP of the controller's packets to sw1's gRPC port on 127.0.0.1 for 5 s,
//! `--drop-cycles` times in a row, without and with `ss -K` of the controller's socket).
//!
//! Asserted per step: the DVIPA moves to sw2 within `liveness_ms` + 200 ms of the fault;
//! after a freeze every connection moves data again within 1 s; the takeback to sw1 comes
//! after the fault ends (within 1 s of the path healing); the advertise hook log shows each
//! move as "advertise new, withdraw old" with no advertisement of sw1 before it thawed; 0
//! resets, every connection alive. The detection time (fault → the controller's "switch
//! down") is printed from the controller's log.

use super::{Scenario, StepFig, wait_for};
use anyhow::{Context, Result, bail};
use dvipa_testbed::conns::ConnsRun;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

/// An iptables rule in the root namespace's OUTPUT chain, removed when dropped.
struct DropRule {
    spec: Vec<String>,
}

impl DropRule {
    /// Drops TCP packets to 127.0.0.1:`port` (the controller → switch direction only; the
    /// switch's packets to the controller have `port` as their source).
    fn insert(port: u16) -> Result<DropRule> {
        let spec: Vec<String> = [
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "127.0.0.1",
            "--dport",
            &port.to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = Command::new("iptables")
            .arg("-I")
            .args(&spec)
            .output()
            .context("run iptables (scripts/install-test-deps.sh installs it)")?;
        if !out.status.success() {
            bail!(
                "iptables -I {}: {}",
                spec.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(DropRule { spec })
    }
}

impl Drop for DropRule {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(&self.spec).output();
    }
}

/// Whether the fault-injection tools are here (`iptables`, `ss`).
pub(super) fn tools_missing() -> Option<&'static str> {
    for t in ["iptables", "ss"] {
        let ok = Command::new(t)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Some(t);
        }
    }
    None
}

/// Seconds since the Unix epoch of a `2026-12-04T21:50:00.123456Z` log timestamp.
pub(super) fn parse_ts(s: &str) -> Option<f64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // days from civil (proleptic Gregorian), Howard Hinnant's algorithm
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Scenario<'_> {
    fn bound_ms(&self) -> u64 {
        self.args.liveness_ms + 200
    }

    /// The first controller log line with `what` about `sw` at or after `since`: ms after it.
    pub(super) fn log_event_ms(&self, what: &str, sw: &str, since: SystemTime) -> Option<u64> {
        let text = std::fs::read_to_string(&self.ctl.log).ok()?;
        let since = unix(since);
        text.lines()
            .filter(|l| l.contains(what) && l.contains(&format!("switch={sw}")))
            .filter_map(|l| parse_ts(l.split_whitespace().next()?))
            .find(|&t| t >= since)
            .map(|t| ((t - since) * 1000.0).round() as u64)
    }

    /// How often the controller raised its election id for sw1 since `since`.
    fn raises_since(&self, since: SystemTime) -> usize {
        std::fs::read_to_string(&self.ctl.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("raising the election id") && l.contains("switch=sw1"))
            .filter_map(|l| parse_ts(l.split_whitespace().next()?))
            .filter(|&t| t >= unix(since))
            .count()
    }

    /// When the hook `what` (e.g. `advertise sw2`) first ran at or after `since`, in ms after
    /// `since`: the controller's advertisement time (the hook logs just before it changes the
    /// route), independent of how fast this process polls the router under load.
    pub(super) fn hook_ms(&self, since: SystemTime, what: &str) -> Option<u64> {
        self.hooks_since(since)
            .into_iter()
            .find(|(_, w)| w == what)
            .map(|(t, _)| t)
    }

    /// `polled` (the route seen by polling the router) replaced by the hook log's time of `what`
    /// when there is one; both are reported.
    pub(super) fn advert_ms(
        &self,
        fig: &mut StepFig,
        since: SystemTime,
        what: &str,
        polled: Option<u64>,
    ) -> Option<u64> {
        let hook = self.hook_ms(since, what);
        fig.extra.push(format!(
            "{what}: hook ran after {} ms, route seen by polling after {} ms",
            super::ms(hook),
            super::ms(polled)
        ));
        hook.or(polled)
    }

    /// Hook log entries (`advertise sw2`, `withdraw sw1`, ...) at or after `since`, with
    /// their time in ms after `since`.
    pub(super) fn hooks_since(&self, since: SystemTime) -> Vec<(u64, String)> {
        let since = unix(since);
        std::fs::read_to_string(self.tb.log_dir.join("hooks.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (t, what) = l.split_once(' ')?;
                let t: f64 = t.parse().ok()?;
                (t >= since).then(|| (((t - since) * 1000.0).round() as u64, what.to_string()))
            })
            .collect()
    }

    /// The hook log since `since` must be exactly `want` (a move = advertise the new switch,
    /// then withdraw the old one; nothing else in between).
    pub(super) fn check_hooks(&self, fig: &mut StepFig, since: SystemTime, want: &[&str]) {
        // the withdraw hook runs just after the advertise hook: give it a moment
        let _ = wait_for(Duration::from_secs(2), || {
            Ok(self.hooks_since(since).len() >= want.len())
        });
        let got = self.hooks_since(since);
        let names: Vec<&str> = got.iter().map(|(_, w)| w.as_str()).collect();
        fig.extra.push(format!(
            "advertise hook log: {}",
            got.iter()
                .map(|(t, w)| format!("+{t} ms {w}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if names != want {
            fig.fail(format!("advertise hook order {names:?}, expected {want:?}"));
        }
    }

    pub(super) fn check_bound(&self, fig: &mut StepFig, what: &str, ms: Option<u64>, bound: u64) {
        match ms {
            Some(v) if v <= bound => {}
            Some(v) => fig.fail(format!("{what} took {v} ms (bound {bound} ms)")),
            None => fig.fail(format!("{what}: not seen")),
        }
    }

    /// Freeze sw1 (SIGSTOP) for `--freeze-secs`, then thaw it (SIGCONT).
    pub(super) fn step_freeze(&mut self, run: &ConnsRun, step: u8) -> StepFig {
        let (mut fig, before) = self.begin(run, step, "freeze sw1 (SIGSTOP), then thaw it");
        let wall = SystemTime::now();
        let t = Instant::now();
        let Some(sw) = self.switches[0].as_mut() else {
            fig.fail("sw1 is not running".into());
            return fig;
        };
        if let Err(e) = sw.signal(SIGSTOP) {
            fig.fail(format!("SIGSTOP sw1: {e:#}"));
            return fig;
        }
        self.p.say("sw1 frozen (SIGSTOP)");
        self.wait_route(&mut fig, 2, t, "takeover");
        let polled = fig.takeover_ms;
        fig.takeover_ms = self.advert_ms(&mut fig, wall, "advertise sw2", polled);
        self.wait_progress(run, &mut fig, t);
        let detect = self.log_event_ms("switch down", "sw1", wall);
        fig.extra.push(format!(
            "detection (freeze -> controller's \"switch down\"): {} ms; liveness_ms {}",
            super::ms(detect),
            self.args.liveness_ms
        ));
        let (over, recovered) = (fig.takeover_ms, fig.recovered_ms);
        self.check_bound(&mut fig, "takeover", over, self.bound_ms());
        self.check_bound(&mut fig, "every connection moving again", recovered, 1000);
        let freeze = Duration::from_secs(self.args.freeze_secs);
        if let Some(left) = freeze.checked_sub(t.elapsed()) {
            std::thread::sleep(left);
        }
        let thaw_wall = SystemTime::now();
        let thaw = Instant::now();
        if let Some(sw) = self.switches[0].as_mut()
            && let Err(e) = sw.signal(SIGCONT)
        {
            fig.fail(format!("SIGCONT sw1: {e:#}"));
        }
        self.p.say(&format!(
            "sw1 thawed (SIGCONT) after {} ms",
            t.elapsed().as_millis()
        ));
        let back = wait_for(Duration::from_secs(10), || Ok(self.route()? == Some(1)));
        match back {
            Ok(_) => {
                let polled = Some(thaw.elapsed().as_millis() as u64);
                let ms = super::ms(self.advert_ms(&mut fig, thaw_wall, "advertise sw1", polled));
                fig.extra.push(format!("takeback after the thaw: {ms} ms"));
                self.p.say(&format!(
                    "takeback: the DVIPA is advertised by sw1 {ms} ms after the thaw"
                ));
            }
            Err(_) => fig.fail("takeback: sw1 does not advertise within 10 s of the thaw".into()),
        }
        self.wait_progress(run, &mut fig, thaw);
        if let Some(up) = self.log_event_ms("switch up", "sw1", thaw_wall) {
            fig.extra.push(format!(
                "sw1 up again (re-arbitrated, set up) {up} ms after the thaw"
            ));
        }
        self.check_hooks(
            &mut fig,
            wall,
            &[
                "advertise sw2",
                "withdraw sw1",
                "advertise sw1",
                "withdraw sw2",
            ],
        );
        // sw1 is advertised only after it thawed (and was reconciled)
        if let Some((at, _)) = self
            .hooks_since(wall)
            .iter()
            .find(|(_, w)| w == "advertise sw1")
        {
            let thawed_at = thaw_wall
                .duration_since(wall)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            if *at < thawed_at {
                fig.fail(format!(
                    "sw1 advertised {at} ms after the freeze, before its thaw at {thawed_at} ms"
                ));
            }
        }
        self.check_new_conns(&mut fig, None);
        self.end(run, &mut fig, &before, before.alive);
        fig
    }

    /// Drops the controller's packets to sw1's P4Runtime port for 5 s, `--drop-cycles` times;
    /// with `reset`, the controller's socket is also killed (`ss -K`) when the drop starts.
    pub(super) fn step_path_drop(&mut self, run: &ConnsRun, step: u8, reset: bool) -> StepFig {
        let name = if reset {
            "drop ctl->sw1 P4Runtime 5 s + ss -K (xN)"
        } else {
            "drop ctl->sw1 P4Runtime 5 s (xN)"
        };
        let (mut fig, before) = self.begin(run, step, name);
        let wall = SystemTime::now();
        self.drop_cycles(&mut fig, reset, self.args.drop_cycles);
        // sw1's server keep-alive dropped the dead stream itself: no refusal, no raise
        let raised = self.raises_since(wall);
        if raised > 0 {
            fig.fail(format!(
                "the controller had to raise its election id {raised} times: sw1 kept the dead \
                 stream despite its keep-alive"
            ));
        }
        self.wait_progress(run, &mut fig, Instant::now());
        self.end(run, &mut fig, &before, before.alive);
        fig
    }

    /// sw1 restarted without its server keep-alive (like simple_switch_grpc, which keeps a
    /// dead controller's stream until TCP gives up): after each path drop with `ss -K` the
    /// switch refuses the controller's election id as already used, and the controller
    /// recovers by raising its id within `election_id_range`.
    pub(super) fn step_no_keepalive(&mut self, run: &ConnsRun, step: u8) -> StepFig {
        let (mut fig, before) =
            self.begin(run, step, "sw1 w/o keep-alive: drop + ss -K, id raised");
        let wall = SystemTime::now();
        if let Some(mut sw) = self.switches[0].take() {
            sw.kill();
        }
        if wait_for(Duration::from_secs(20), || Ok(self.route()? == Some(2))).is_err() {
            fig.fail("sw2 did not take over after sw1 was killed".into());
        }
        self.switch_keepalive_off = true;
        let t = Instant::now();
        if let Err(e) = self.spawn_switch(1) {
            fig.fail(format!("restart sw1: {e:#}"));
        }
        if wait_for(Duration::from_secs(20), || Ok(self.route()? == Some(1))).is_err() {
            fig.fail("sw1 (restarted without keep-alive) did not take back".into());
        }
        self.p.say(&format!(
            "sw1 restarted with --grpc-keepalive-ms 0; took back after {} ms",
            t.elapsed().as_millis()
        ));
        self.wait_progress(run, &mut fig, t);
        let cycles = self.args.drop_cycles.min(2);
        self.drop_cycles(&mut fig, true, cycles);
        let raised = self.raises_since(wall);
        fig.extra.push(format!(
            "election id raised {raised} times in {cycles} half-open sessions"
        ));
        if raised != cycles as usize {
            fig.fail(format!(
                "the controller raised its election id {raised} times, expected {cycles}"
            ));
        }
        self.wait_progress(run, &mut fig, Instant::now());
        self.end(run, &mut fig, &before, before.alive);
        fig
    }

    /// `cycles` drops of the controller's packets to sw1's P4Runtime port for 5 s each.
    fn drop_cycles(&mut self, fig: &mut StepFig, reset: bool, cycles: u32) {
        let port = self.grpc[0];
        let mut detect = Vec::new();
        let mut takeover = Vec::new();
        let mut takeback = Vec::new();
        for cycle in 1..=cycles {
            let wall = SystemTime::now();
            let t = Instant::now();
            let rule = match DropRule::insert(port) {
                Ok(r) => r,
                Err(e) => {
                    fig.fail(format!("{e:#}"));
                    break;
                }
            };
            if reset {
                let dport = format!(":{port}");
                let r = Command::new("ss")
                    .args(["-K", "dst", "127.0.0.1", "dport", "=", &dport])
                    .output();
                if !r.is_ok_and(|o| o.status.success()) {
                    fig.fail("ss -K failed".into());
                }
            }
            let moved = wait_for(Duration::from_secs(5), || Ok(self.route()? == Some(2)));
            let over = moved.ok().map(|_| t.elapsed().as_millis() as u64);
            let over = self.hook_ms(wall, "advertise sw2").or(over);
            self.check_bound(
                fig,
                &format!("cycle {cycle}: takeover"),
                over,
                self.bound_ms(),
            );
            if let Some(left) = Duration::from_secs(5).checked_sub(t.elapsed()) {
                std::thread::sleep(left);
            }
            drop(rule);
            let healed = Instant::now();
            let healed_wall = SystemTime::now();
            let back = wait_for(Duration::from_secs(10), || Ok(self.route()? == Some(1)));
            let back = back.ok().map(|_| healed.elapsed().as_millis() as u64);
            let back = self.hook_ms(healed_wall, "advertise sw1").or(back);
            self.check_bound(fig, &format!("cycle {cycle}: takeback"), back, 1000);
            let d = self.log_event_ms("switch down", "sw1", wall);
            self.p.say(&format!(
                "cycle {cycle}: detection {} ms, takeover {} ms, takeback {} ms after healing",
                super::ms(d),
                super::ms(over),
                super::ms(back)
            ));
            detect.extend(d);
            takeover.extend(over);
            takeback.extend(back);
            self.check_hooks(
                fig,
                wall,
                &[
                    "advertise sw2",
                    "withdraw sw1",
                    "advertise sw1",
                    "withdraw sw2",
                ],
            );
            // settle before the next cycle (the hook log of a cycle must not leak into the next)
            std::thread::sleep(Duration::from_millis(300));
        }
        fig.takeover_ms = takeover.iter().max().copied();
        fig.extra.push(format!(
            "{cycles} cycles: detection ms {detect:?}, takeover ms {takeover:?}, takeback after \
             healing ms {takeback:?}"
        ));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_timestamps_parse_to_unix_seconds() {
        assert_eq!(super::parse_ts("1970-01-01T00:00:01.5Z"), Some(1.5));
        let t = super::parse_ts("2026-12-04T21:50:00.250000Z").unwrap();
        assert!((t - 1_796_421_000.25).abs() < 1e-6, "{t}");
    }
}

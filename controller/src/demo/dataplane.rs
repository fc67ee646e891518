//! Step 11 of `dvipa demo --failures --dataplane` (issue 13): data-plane loss. The router's
//! packets to sw1 are dropped (an iptables `FORWARD -o up1 -j DROP` in the router namespace)
//! while sw1's P4Runtime keeps answering; only the controller's data-plane probe
//! (`[liveness.dataplane]`) can see it.
//!
//! Set-up (`--dataplane`): `distribute_udp = true`; probe sources 10.77.L.241 (sw1) and .242
//! (sw2) on the controller's LAN leg, each with a root-namespace rule `from SRC lookup T`
//! (T = 20000 + L: the DVIPA via the router's LAN address) and a router rule `from SRC lookup
//! 10i` (the DVIPA via switch i); the agents answer with `--dataplane-echo 8080`.
//!
//! Asserted per cycle (`--drop-cycles`): the DVIPA moves to sw2 within `--dataplane-ms` +
//! 300 ms of the fault; no takeback while the path is broken (2 s); after the rule is removed,
//! the takeback comes only after the controller logged that sw1's data path answers again, and
//! within 3 s; the hook log is "advertise sw2, withdraw sw1, advertise sw1, withdraw sw2"; at
//! the end 0 resets and every connection alive. Then probation: the path is broken again, sw1
//! is marked down and restarted (empty tables, so no probe could pass): its new session
//! releases the mark, it is taken back, marked down again, and taken back once the path heals
//! (hook log in that order). The detection time (fault → the controller's
//! "data path not answering") is printed per cycle with min/median/max.

use super::{Scenario, StepFig, wait_for};
use anyhow::{Result, bail};
use dvipa_core::dataplane_cfg::{DataplaneCfg, DataplanePath};
use dvipa_testbed::conns::ConnsRun;
use dvipa_testbed::netns;
use dvipa_testbed::topo::Testbed;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// The probe source of switch `i` (1-based): 10.77.L.(240+i).
pub(super) fn source(tb: &Testbed, i: usize) -> Ipv4Addr {
    let o = tb.lan_net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 240 + i as u8)
}

fn table(tb: &Testbed) -> u32 {
    20_000 + u32::from(tb.lan_net.octets()[2])
}

/// The `[liveness.dataplane]` section of the demo's configuration.
pub(super) fn config(tb: &Testbed, dvipa: Ipv4Addr, port: u16, down_after: u64) -> DataplaneCfg {
    DataplaneCfg {
        dvipa,
        port,
        probe_ms: (down_after / 3).max(10),
        down_after_ms: down_after,
        up_after: 3,
        flows: 4,
        paths: tb
            .switches
            .iter()
            .map(|sw| DataplanePath {
                switch: sw.name.clone(),
                source: source(tb, sw.index),
                mark: 0,
                device: None,
            })
            .collect(),
    }
}

/// The root-namespace policy rules of the probe sources, removed when dropped (the
/// addresses and the table's routes go with the testbed's ctl link).
pub(super) struct ProbeRoutes {
    rules: Vec<Vec<String>>,
}

impl Drop for ProbeRoutes {
    fn drop(&mut self) {
        for r in &self.rules {
            let mut argv: Vec<&str> = vec!["rule", "del"];
            argv.extend(r.iter().map(String::as_str));
            let _ = netns::ip(&argv);
        }
    }
}

/// Sets up the paths: each switch's probe source, the rule that sends it to the router, and
/// the router's rule that sends it through that switch.
pub(super) fn probe_routes(tb: &Testbed, dvipa: Ipv4Addr) -> Result<ProbeRoutes> {
    let t = table(tb).to_string();
    let mut pr = ProbeRoutes { rules: Vec::new() };
    netns::ip(&[
        "route",
        "replace",
        &format!("{dvipa}/32"),
        "via",
        &tb.router.lan_ip.to_string(),
        "dev",
        &tb.ctl.ifname,
        "table",
        &t,
    ])?;
    for sw in &tb.switches {
        let src = source(tb, sw.index).to_string();
        netns::ip(&["addr", "add", &format!("{src}/32"), "dev", &tb.ctl.ifname])?;
        let rule: Vec<String> = ["from", &src, "lookup", &t, "pref", &t]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut argv: Vec<&str> = vec!["rule", "add"];
        argv.extend(rule.iter().map(String::as_str));
        netns::ip(&argv)?;
        pr.rules.push(rule);
        let rt = (100 + sw.index).to_string();
        tb.sh(
            &tb.router.ns,
            &format!(
                "ip rule add from {src} lookup {rt} pref 100 && \
                 ip route replace {dvipa}/32 via {} dev {} table {rt}",
                sw.next_hop, sw.router_if
            ),
        )?;
    }
    Ok(pr)
}

/// An iptables rule in the router namespace that drops what it forwards to switch 1.
struct ForwardDrop {
    ns: String,
    ifname: String,
}

impl ForwardDrop {
    fn iptables(ns: &str, op: &str, ifname: &str) -> Result<()> {
        let argv = netns::ns_argv(ns, &["iptables", op, "FORWARD", "-o", ifname, "-j", "DROP"]);
        let out = Command::new(&argv[0]).args(&argv[1..]).output()?;
        if !out.status.success() {
            bail!(
                "{}: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn insert(tb: &Testbed, i: usize) -> Result<ForwardDrop> {
        let ifname = tb.switch(i).router_if.clone();
        Self::iptables(&tb.router.ns, "-I", &ifname)?;
        Ok(ForwardDrop {
            ns: tb.router.ns.clone(),
            ifname,
        })
    }
}

impl Drop for ForwardDrop {
    fn drop(&mut self) {
        let _ = Self::iptables(&self.ns, "-D", &self.ifname);
    }
}

/// Times (ms after `since`) of the controller log lines with `what` about sw1.
fn log_times(log: &std::path::Path, what: &str, since: SystemTime) -> Vec<u64> {
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what) && l.contains("switch=sw1"))
        .filter_map(|l| super::liveness::parse_ts(l.split_whitespace().next()?))
        .filter(|&t| t >= since)
        .map(|t| ((t - since) * 1000.0).round() as u64)
        .collect()
}

fn spread(v: &[u64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    format!(
        "median {} ms, min {} ms, max {} ms ({} samples)",
        s[s.len() / 2],
        s[0],
        s[s.len() - 1],
        s.len()
    )
}

impl Scenario<'_> {
    /// sw1 restarted (empty tables) while marked down: its new session releases the mark
    /// (probation), it is taken back, its data path is still broken, so it is marked down
    /// again; once the path heals it comes back for good.
    fn probation(&mut self, fig: &mut StepFig) {
        let wall = SystemTime::now();
        let t = Instant::now();
        let rule = match ForwardDrop::insert(&self.tb, 1) {
            Ok(r) => r,
            Err(e) => return fig.fail(format!("probation: cannot break sw1's data path: {e:#}")),
        };
        self.wait_route(fig, 2, t, "probation: takeover");
        if let Some(mut c) = self.switches[0].take() {
            c.kill();
        }
        let restart = Instant::now();
        if let Err(e) = self.spawn_switch(1) {
            return fig.fail(format!("probation: restart sw1: {e:#}"));
        }
        self.p
            .say("probation: sw1 restarted (empty tables) while marked down, path still broken");
        let want = [
            "advertise sw2",
            "withdraw sw1",
            "advertise sw1",
            "withdraw sw2",
            "advertise sw2",
            "withdraw sw1",
        ];
        let seen = wait_for(Duration::from_secs(15), || {
            Ok(self.hooks_since(wall).len() >= want.len())
        });
        let downs = log_times(&self.ctl.log, "data path not answering the probe", wall);
        let released = log_times(&self.ctl.log, "released on probation", wall);
        if seen.is_err() || downs.len() < 2 || released.is_empty() {
            fig.fail(format!(
                "probation: expected a release, a takeback and a second mark down; hooks {:?}, \
                 marked down at {downs:?} ms, released at {released:?} ms",
                self.hooks_since(wall)
            ));
        } else {
            fig.extra.push(format!(
                "probation: sw1 restarted {} ms after the fault, released on probation at {} ms, \
                 marked down again at {} ms (after the fault)",
                restart.duration_since(t).as_millis(),
                released[0],
                downs[1]
            ));
        }
        let heal_wall = SystemTime::now();
        let heal = Instant::now();
        drop(rule);
        match wait_for(Duration::from_secs(10), || Ok(self.route()? == Some(1))) {
            Ok(_) => {
                let polled = Some(heal.elapsed().as_millis() as u64);
                let b = self.advert_ms(fig, heal_wall, "advertise sw1", polled);
                fig.extra.push(format!(
                    "probation: takeback {} ms after the path healed",
                    super::ms(b)
                ));
            }
            Err(_) => fig.fail("probation: sw1 not taken back within 10 s of healing".into()),
        }
        let mut all = want.to_vec();
        all.extend(["advertise sw1", "withdraw sw2"]);
        self.check_hooks(fig, wall, &all);
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Step 11: sw1's data path broken (router → sw1 dropped) while its P4Runtime answers.
    pub(super) fn step_dataplane(&mut self, run: &ConnsRun, step: u8) -> StepFig {
        let (mut fig, before) = self.begin(
            run,
            step,
            "data-plane loss of sw1 (router -> sw1 dropped, P4Runtime up)",
        );
        let bound = self.args.dataplane_ms + 300;
        let (mut detect, mut over, mut back, mut moving) = (vec![], vec![], vec![], vec![]);
        for cycle in 1..=self.args.drop_cycles {
            let wall = SystemTime::now();
            let t = Instant::now();
            let rule = match ForwardDrop::insert(&self.tb, 1) {
                Ok(r) => r,
                Err(e) => {
                    fig.fail(format!("cannot break sw1's data path: {e:#}"));
                    return fig;
                }
            };
            self.wait_route(&mut fig, 2, t, &format!("cycle {cycle}: takeover"));
            let polled = fig.takeover_ms;
            let took = self.advert_ms(&mut fig, wall, "advertise sw2", polled);
            self.check_bound(&mut fig, &format!("cycle {cycle}: takeover"), took, bound);
            over.extend(took);
            let d = self.log_event_ms("data path not answering the probe", "sw1", wall);
            detect.extend(d);
            self.wait_progress(run, &mut fig, t);
            moving.extend(fig.recovered_ms);
            // still broken: no takeback
            std::thread::sleep(Duration::from_secs(2).saturating_sub(t.elapsed()));
            if self.route().ok().flatten() != Some(2)
                || self
                    .hooks_since(wall)
                    .iter()
                    .any(|(_, w)| w == "advertise sw1")
            {
                fig.fail(format!(
                    "cycle {cycle}: sw1 taken back while its data path was still broken"
                ));
            }
            let heal_wall = SystemTime::now();
            let heal = Instant::now();
            drop(rule);
            match wait_for(Duration::from_secs(10), || Ok(self.route()? == Some(1))) {
                Ok(_) => {
                    let polled = Some(heal.elapsed().as_millis() as u64);
                    let b = self.advert_ms(&mut fig, heal_wall, "advertise sw1", polled);
                    self.check_bound(&mut fig, &format!("cycle {cycle}: takeback"), b, 3000);
                    back.extend(b);
                    let answered =
                        self.log_event_ms("data path answers the probe again", "sw1", heal_wall);
                    match (answered, b) {
                        (Some(a), Some(b)) if a <= b => fig.extra.push(format!(
                            "cycle {cycle}: detection {} ms, takeover {} ms; healed: probes \
                             answered again after {a} ms, takeback after {b} ms",
                            super::ms(d),
                            super::ms(took)
                        )),
                        _ => fig.fail(format!(
                            "cycle {cycle}: takeback ({b:?} ms) not after the probes answered \
                             again ({answered:?} ms)"
                        )),
                    }
                }
                Err(_) => fig.fail(format!(
                    "cycle {cycle}: sw1 does not advertise within 10 s of the path healing"
                )),
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
            self.wait_progress(run, &mut fig, heal);
            std::thread::sleep(Duration::from_millis(500));
        }
        self.probation(&mut fig);
        fig.extra.push(format!(
            "detection (router -> sw1 dropped -> controller's \"data path not answering\"): {}; \
             dataplane down_after_ms {}",
            spread(&detect),
            self.args.dataplane_ms
        ));
        fig.extra
            .push(format!("takeover (hook): {}", spread(&over)));
        fig.extra
            .push(format!("takeback after healing (hook): {}", spread(&back)));
        fig.extra.push(format!(
            "every connection moving again after the fault: {}",
            spread(&moving)
        ));
        fig.takeover_ms = over.iter().max().copied();
        if let Ok(c) = self.ctl.op(&["counters"]) {
            let lines: Vec<&str> = c.lines().filter(|l| l.contains("dataplane")).collect();
            fig.extra
                .push(format!("controller counters: {}", lines.join("; ")));
        }
        self.end(run, &mut fig, &before, before.alive);
        fig
    }
}

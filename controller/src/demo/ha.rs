//! `dvipa demo --ha` (issue 17): three controller replicas elected through a 3-member etcd
//! on loopback, one agent per server attached to every replica (`--controller` three times:
//! attach-to-all, docs/ha.md). While the connections stream: step 21 SIGKILLs the leader (a new leader within `lease_ms` + 1 s, new
//! connections served), step 22 stops all of etcd for 10 s, steps 1 and 2 kill and restart the
//! primary switch under the new leader, step 23 partitions the leader from etcd (through a
//! relay per replica), step 24 kills the leader and the primary switch together (double
//! fault), step 25 moves the DVIPA by command and kills the leader (the move holds). 0 resets
//! in every step.

use super::{Ctl, Progress, Scenario, StepFig, wait_for};
use anyhow::{Context, Result, anyhow};
use dvipa_core::config::{Config, HaCfg};
use dvipa_testbed::conns::ConnsRun;
use dvipa_testbed::netns;
use dvipa_testbed::topo::Testbed;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The election lease of the demo's replicas.
pub const LEASE_MS: u64 = 2000;

/// Replica names; the first is the scenario's own [`Ctl`].
pub const REPLICAS: [&str; 3] = ["ctl-a", "ctl-b", "ctl-c"];

/// The HA part of a scenario.
pub(super) struct Ha {
    /// The replicas other than the scenario's `ctl` (swapped with it when the leader changes).
    pub others: Vec<Ctl>,
    /// Agent ports of the other replicas.
    pub agent_ports: Vec<u16>,
    /// Each replica's path to etcd (index = [`REPLICAS`]).
    pub relays: Vec<Relay>,
    /// Started before the first replica, stopped last (on drop).
    pub _etcd: super::etcd::Etcd,
}

/// The `[ha]` section of replica `name`, which reaches etcd through its relay on `port`.
pub(super) fn section(port: u16, name: &str) -> HaCfg {
    HaCfg {
        etcd: vec![format!("http://127.0.0.1:{port}")],
        election: "/dvipa/demo/leader".into(),
        lease_ms: LEASE_MS,
        replica: name.into(),
        advertise_admin: None,
        ..Default::default()
    }
}

/// A TCP relay from 127.0.0.1:`port` to one etcd member, one per replica, so a replica can be
/// partitioned from etcd alone (step 23): when cut, bytes are read and dropped and new
/// connections are held unanswered (a black hole, like a silently dropping path).
pub(super) struct Relay {
    /// The relay's port (the replica's `[ha] etcd`).
    pub port: u16,
    cut: Arc<AtomicBool>,
}

impl Relay {
    /// Relays to 127.0.0.1:`to` from a kernel-chosen port.
    pub fn start(to: u16) -> Result<Relay> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for a in l.incoming().flatten() {
                let c = c.clone();
                std::thread::spawn(move || {
                    if c.load(Ordering::SeqCst) {
                        // Held open, never answered, until the partition heals.
                        while c.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        return;
                    }
                    let Ok(b) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                        return;
                    };
                    let _ = (a.set_nodelay(true), b.set_nodelay(true));
                    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
                        return;
                    };
                    let c2 = c.clone();
                    std::thread::spawn(move || pipe(a2, b2, &c2));
                    pipe(b, a, &c);
                });
            }
        });
        Ok(Relay { port, cut })
    }

    /// Cuts (true) or heals (false) the path.
    pub fn set_cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
    }
}

/// Copies `from` → `to`, dropping what arrives while `cut`.
fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream, cut: &AtomicBool) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !cut.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// The timestamp (RFC 3339, so ordered as text) of the last line of `log` containing `what`.
fn last_line(log: &Path, what: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find(|l| l.contains(what))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

/// A shell counter of a replica (`dvipa counters`), 0 when absent.
fn shell_counter(c: &Ctl, name: &str) -> u64 {
    c.op(&["counters", "-o", "json"])
        .ok()
        .and_then(|o| serde_json::from_str::<serde_json::Value>(o.trim()).ok())
        .and_then(|v| {
            v["rows"].as_array()?.iter().find_map(|r| {
                (r["name"] == name)
                    .then(|| r["value"].as_str()?.parse::<u64>().ok())
                    .flatten()
            })
        })
        .unwrap_or(0)
}

/// Which replica a [`Ctl`] is (its admin socket names it; the first's is `admin.sock`).
fn replica_index(c: &Ctl) -> usize {
    (1..REPLICAS.len())
        .find(|&i| c.admin.contains(&format!("admin-{}.sock", REPLICAS[i])))
        .unwrap_or(0)
}

/// Starts etcd in `dir/etcd`.
pub(super) fn start_etcd(dir: &Path, p: &Progress) -> Result<super::etcd::Etcd> {
    let e = super::etcd::Etcd::start_in(&dir.join("etcd"))?;
    p.say(&format!("etcd up: 3 members {:?}", e.endpoints()));
    Ok(e)
}

/// Replica `i`'s controller: the configuration of the first with its own agent port and name,
/// its own admin socket and log.
pub(super) fn replica(
    first: &Ctl,
    tb: &Testbed,
    first_cfg: &Config,
    i: usize,
    relays: &[Relay],
    dir: &Path,
) -> Result<(Ctl, u16)> {
    let port = netns::free_local_port()?;
    let name = REPLICAS[i];
    let mut own = first_cfg.clone();
    own.agent.listen.set_port(port);
    own.ha = Some(section(relays[i].port, name));
    let text = tb.config_toml(&own);
    let cfg = dir.join(format!("dvipa-{name}.toml"));
    std::fs::write(&cfg, text)?;
    let sock = dir.join(format!("admin-{name}.sock"));
    let mut argv = first.argv.clone();
    for a in argv.iter_mut() {
        if a.ends_with("dvipa.toml") {
            *a = cfg.display().to_string();
        } else if a.ends_with("admin.sock") {
            *a = sock.display().to_string();
        }
    }
    Ok((
        Ctl {
            exe: first.exe.clone(),
            admin: format!("unix:{}", sock.display()),
            argv,
            log: dir.join(format!("controller-{name}.log")),
            child: None,
        },
        port,
    ))
}

/// `(role, term)` of a replica from its `counters`.
fn role(c: &Ctl) -> Option<(String, u64)> {
    let out = c.op(&["counters", "-o", "json"]).ok()?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
    let cell = |name: &str| {
        v["rows"].as_array()?.iter().find_map(|r| {
            (r["layer"] == "ha" && r["name"] == name)
                .then(|| r["value"].as_str().map(str::to_string))
                .flatten()
        })
    };
    Some((cell("role")?, cell("term")?.parse().ok()?))
}

impl Scenario<'_> {
    /// Starts replicas 2 and 3 (after the first is leader and the cluster ready); the agents,
    /// started with every replica's address, attach to them on their own.
    pub(super) fn start_ha_followers(&mut self) -> Result<()> {
        let ha = self.ha.as_mut().ok_or_else(|| anyhow!("not --ha"))?;
        for c in ha.others.iter_mut() {
            c.start()?;
            wait_for(Duration::from_secs(20), || {
                Ok(c.op(&["netstat", "vipadcfg"]).is_ok())
            })
            .with_context(|| format!("replica {} does not answer", c.admin))?;
        }
        let ready = wait_for(Duration::from_secs(20), || {
            Ok(ha.others.iter().all(|c| {
                c.rows("vdpt").is_ok_and(|r| {
                    r.iter()
                        .filter(|x| x.get("rdy").is_some_and(|v| v == "Y"))
                        .count()
                        >= super::SERVERS
                })
            }))
        });
        self.p.say(&format!(
            "replicas {} and {} up as followers, their agents attached ({})",
            REPLICAS[1],
            REPLICAS[2],
            match ready {
                Ok(d) => format!("their DPT view warm after {} ms", d.as_millis()),
                Err(_) => "their DPT view NOT warm within 20 s".into(),
            }
        ));
        Ok(())
    }

    /// The replica that leads now, if any (the scenario's `ctl` becomes it).
    fn find_leader(&mut self) -> Option<u64> {
        if let Some(r) = role(&self.ctl).filter(|r| r.0 == "leader") {
            return Some(r.1);
        }
        let ha = self.ha.as_mut()?;
        let i = ha
            .others
            .iter()
            .position(|c| role(c).is_some_and(|(r, _)| r == "leader"))?;
        std::mem::swap(&mut self.ctl, &mut ha.others[i]);
        role(&self.ctl).map(|r| r.1)
    }

    /// Step 22: all of etcd stopped (SIGSTOP) for 10 s while the connections stream: the
    /// leader steps down, forwarding goes on, new connections succeed during the outage, and
    /// a leader is back soon after etcd returns.
    pub(super) fn step_etcd_down(&mut self, run: &ConnsRun) -> StepFig {
        let (mut fig, before) = self.begin(run, 22, "stop all of etcd for 10 s");
        let Some(ha) = self.ha.as_ref() else {
            fig.fail("not --ha".into());
            return fig;
        };
        let t = Instant::now();
        ha._etcd.freeze();
        self.p.say("etcd frozen (SIGSTOP on its 3 members)");
        let stepped = wait_for(Duration::from_millis(LEASE_MS + 2000), || {
            Ok(role(&self.ctl).is_some_and(|r| r.0 == "follower"))
        });
        match stepped {
            Ok(_) => {
                let ms = t.elapsed().as_millis();
                self.p
                    .say(&format!("the leader stepped down after {ms} ms"));
                fig.extra
                    .push(format!("leader stepped down {ms} ms after etcd stopped"));
            }
            Err(_) => fig.fail("the leader did not step down without etcd".into()),
        }
        // New connections during the outage: served by the slots without a controller.
        self.check_new_conns(&mut fig, None);
        let left = Duration::from_secs(10).saturating_sub(t.elapsed());
        std::thread::sleep(left);
        if let Some(ha) = self.ha.as_ref() {
            ha._etcd.thaw();
        }
        let back = Instant::now();
        self.p.say("etcd thawed after 10 s");
        let mut term = None;
        while back.elapsed() < Duration::from_secs(15) && term.is_none() {
            term = self.find_leader();
            std::thread::sleep(Duration::from_millis(20));
        }
        match term {
            Some(term) => {
                let ms = back.elapsed().as_millis();
                fig.takeover_ms = Some(ms as u64);
                self.p.say(&format!(
                    "leader again after {ms} ms: {} (term {term})",
                    self.ctl.admin
                ));
                fig.extra.push(format!(
                    "leader {} again {ms} ms after etcd's return (term {term})",
                    self.ctl.admin
                ));
            }
            None => fig.fail("no leader within 15 s of etcd's return".into()),
        }
        let up = wait_for(Duration::from_secs(10), || {
            Ok(self
                .ctl
                .rows("vipadyn")?
                .iter()
                .filter(|r| r.get("switchstate").is_some_and(|s| s == "UP"))
                .count()
                >= 1)
        });
        if up.is_err() {
            fig.fail("no switch up on the leader within 10 s of its election".into());
        }
        self.check_new_conns(&mut fig, None);
        self.dump("vipadyn");
        self.end(run, &mut fig, &before, before.alive);
        fig
    }

    /// SIGKILLs the leader (at `t`), finds the next one among the others and makes it the
    /// scenario's `ctl`; records the time and the terms in `fig`. False when none was elected.
    fn kill_leader_and_elect(&mut self, fig: &mut StepFig, t: Instant) -> bool {
        let Some(ha) = self.ha.as_mut() else {
            fig.fail("not --ha".into());
            return false;
        };
        let term = role(&self.ctl).map(|r| r.1).unwrap_or(0);
        if let Some(mut c) = self.ctl.child.take() {
            c.kill();
        }
        self.p.say(&format!(
            "leader {} killed (SIGKILL, term {term})",
            self.ctl.admin
        ));
        let mut found = None;
        while t.elapsed() < Duration::from_millis(LEASE_MS + 5000) && found.is_none() {
            found = ha
                .others
                .iter()
                .position(|c| role(c).is_some_and(|(r, _)| r == "leader"));
            std::thread::sleep(Duration::from_millis(20));
        }
        let Some(i) = found else {
            fig.fail("no new leader within lease_ms + 5 s".into());
            return false;
        };
        let took = t.elapsed();
        std::mem::swap(&mut self.ctl, &mut ha.others[i]);
        let new_term = role(&self.ctl).map(|r| r.1).unwrap_or(0);
        fig.extra.push(format!(
            "new leader {} after {} ms (term {term} -> {new_term})",
            self.ctl.admin,
            took.as_millis()
        ));
        self.p.say(&format!(
            "new leader {} after {} ms (term {new_term})",
            self.ctl.admin,
            took.as_millis()
        ));
        if took > Duration::from_millis(LEASE_MS + 1000) {
            fig.fail(format!(
                "new leader after {took:?}: more than lease_ms + 1 s"
            ));
        }
        if new_term <= term {
            fig.fail(format!("term {new_term} after {term}"));
        }
        true
    }

    /// Step 23: the leader partitioned from etcd (not from the switches) for 5 s: it steps
    /// down on its own clock and drops its switch sessions before another replica is elected
    /// (so no Write of it can reach a switch after the new leader arbitrates), the route never
    /// flaps, 0 resets; after healing it follows.
    pub(super) fn step_partition(&mut self, run: &ConnsRun) -> StepFig {
        let (mut fig, before) = self.begin(run, 23, "partition the leader from etcd for 5 s");
        let Some(ha) = self.ha.as_ref() else {
            fig.fail("not --ha".into());
            return fig;
        };
        let route0 = self.route().ok().flatten();
        let me = replica_index(&self.ctl);
        let dropped0 = shell_counter(&self.ctl, "switch_ha_session_dropped");
        let t = Instant::now();
        ha.relays[me].set_cut(true);
        self.p.say(&format!("{} cut from etcd", REPLICAS[me]));
        let (mut stepped, mut elected, mut flaps) = (None, None, 0);
        while t.elapsed() < Duration::from_secs(5) {
            if stepped.is_none() && role(&self.ctl).is_some_and(|r| r.0 == "follower") {
                stepped = Some(t.elapsed());
            }
            if elected.is_none()
                && let Some(i) = ha
                    .others
                    .iter()
                    .position(|c| role(c).is_some_and(|(r, _)| r == "leader"))
            {
                elected = Some((t.elapsed(), i));
            }
            if self.route().ok().flatten() != route0 {
                flaps += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        ha.relays[me].set_cut(false);
        let dropped = shell_counter(&self.ctl, "switch_ha_session_dropped") - dropped0;
        match (stepped, elected) {
            (Some(s), Some((e, i))) => {
                let msg = format!(
                    "cut leader seen as follower after {} ms (switch sessions dropped: {dropped}), {} seen \
                     as leader after {} ms (admin polling, ~100 ms granularity)",
                    s.as_millis(),
                    REPLICAS[replica_index(&ha.others[i])],
                    e.as_millis(),
                );
                self.p.say(&msg);
                fig.extra.push(msg);
                fig.takeover_ms = Some(e.as_millis() as u64);
                // Exact order from the replicas' own logs (the admin polling above is coarse).
                let down = last_line(&self.ctl.log, "stepping down");
                let up = last_line(&ha.others[i].log, "elected leader");
                fig.extra
                    .push(format!("logs: step-down {down:?}, election {up:?}"));
                match (down, up) {
                    (Some(d), Some(u)) if d < u => {}
                    (d, u) => fig.fail(format!(
                        "the cut leader did not step down before the election: {d:?} / {u:?}"
                    )),
                }
                if dropped < 2 {
                    fig.fail(format!(
                        "{dropped} switch sessions dropped by the cut leader"
                    ));
                }
                // The new leader is the scenario's controller from now on.
                if let Some(ha) = self.ha.as_mut() {
                    std::mem::swap(&mut self.ctl, &mut ha.others[i]);
                }
            }
            (s, e) => fig.fail(format!("stepped down: {s:?}, new leader: {e:?}")),
        }
        if flaps > 0 {
            fig.fail(format!(
                "the route changed {flaps} times during the partition"
            ));
        }
        self.check_new_conns(&mut fig, None);
        self.end(run, &mut fig, &before, before.alive);
        fig
    }

    /// Step 24 (double fault): the leader and the primary switch sw1 SIGKILLed together; the
    /// next leader takes over on sw2.
    pub(super) fn step_double_fault(&mut self, run: &ConnsRun) -> StepFig {
        let (mut fig, before) = self.begin(run, 24, "SIGKILL the leader + primary switch sw1");
        let t = Instant::now();
        if let Some(mut sw) = self.switches[0].take() {
            sw.kill();
        }
        self.p.say("sw1 killed (SIGKILL)");
        if !self.kill_leader_and_elect(&mut fig, t) {
            return fig;
        }
        self.wait_route(&mut fig, 2, t, "takeover by the new leader");
        self.wait_progress(run, &mut fig, t);
        self.check_new_conns(&mut fig, None);
        self.dump("vipadyn");
        self.end(run, &mut fig, &before, before.alive);
        fig
    }

    /// Step 25 (operator move, then the leader killed): the killed replicas and sw1 are
    /// started again (sw1 takes the DVIPA back), an operator moves it to sw2 on the leader, the
    /// leader is SIGKILLed: the next leader keeps it on sw2 (the move is in etcd) rather than
    /// handing it back to its primary sw1.
    pub(super) fn step_move_then_kill(&mut self, run: &ConnsRun) -> StepFig {
        let (mut fig, before) = self.begin(run, 25, "move to sw2, then SIGKILL the leader");
        if self.switches[0].is_none()
            && let Err(e) = self.spawn_switch(1)
        {
            fig.fail(format!("restart sw1: {e:#}"));
            return fig;
        }
        let Some(ha) = self.ha.as_mut() else {
            fig.fail("not --ha".into());
            return fig;
        };
        for c in ha.others.iter_mut() {
            if !c.is_running()
                && let Err(e) = c.start()
            {
                fig.fail(format!("restart {}: {e:#}", c.admin));
            }
        }
        let ha = self.ha.as_ref().expect("--ha");
        let warm = wait_for(Duration::from_secs(30), || {
            Ok(self.route()? == Some(1)
                && ha.others.iter().all(|c| {
                    c.rows("vdpt").is_ok_and(|r| {
                        r.iter()
                            .filter(|x| x.get("rdy").is_some_and(|v| v == "Y"))
                            .count()
                            >= super::SERVERS
                    })
                }))
        });
        match warm {
            Ok(d) => self.p.say(&format!(
                "sw1 back and routing, every replica running with a warm view ({} ms)",
                d.as_millis()
            )),
            Err(_) => {
                fig.fail("sw1 not routing or a restarted replica not warm within 30 s".into());
                return fig;
            }
        }
        let t = Instant::now();
        let d = self.dvipa.to_string();
        match self.ctl.op(&["move", &d, "--to", "sw2"]) {
            Ok(m) => self
                .p
                .say(&format!("dvipa move {d} --to sw2: {}", m.trim())),
            Err(e) => fig.fail(format!("{e:#}")),
        }
        self.wait_route(&mut fig, 2, t, "move");
        let t = Instant::now();
        if !self.kill_leader_and_elect(&mut fig, t) {
            return fig;
        }
        // The new leader keeps the operator's placement.
        let hold = Instant::now();
        let mut moved_back = 0;
        while hold.elapsed() < Duration::from_secs(3) {
            if self.route().ok().flatten() != Some(2) {
                moved_back += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let active = self
            .ctl
            .rows("vipadyn")
            .ok()
            .and_then(|r| {
                r.iter()
                    .find(|x| x.get("status").is_some_and(|s| s == "ACTIVE"))
                    .and_then(|x| x.get("switch").cloned())
            })
            .unwrap_or_default();
        fig.extra.push(format!(
            "after the kill: route on sw2 for 3 s ({moved_back} samples elsewhere), the new \
             leader routes it by {active}"
        ));
        if moved_back > 0 || active != "sw2" {
            fig.fail(format!(
                "the move did not hold: {moved_back} route samples off sw2, active {active:?}"
            ));
        }
        self.check_new_conns(&mut fig, None);
        self.dump("vipadyn");
        self.end(run, &mut fig, &before, before.alive);
        fig
    }

    /// Step 21: SIGKILL the leader.
    pub(super) fn step_kill_leader(&mut self, run: &ConnsRun) -> StepFig {
        let (mut fig, before) = self.begin(run, 21, "SIGKILL the leading controller replica");
        let t = Instant::now();
        if !self.kill_leader_and_elect(&mut fig, t) {
            return fig;
        }
        fig.takeover_ms = fig.extra.last().and(Some(t.elapsed().as_millis() as u64));
        // The new leader writes: the switches come up on it.
        let up = wait_for(Duration::from_secs(10), || {
            Ok(self
                .ctl
                .rows("vipadyn")?
                .iter()
                .all(|r| r.get("switchstate").is_some_and(|s| s == "UP")))
        });
        match up {
            Ok(_) => fig.extra.push(format!(
                "both switches up on the new leader {} ms after the kill",
                t.elapsed().as_millis()
            )),
            Err(_) => fig.fail("the switches are not up on the new leader within 10 s".into()),
        }
        self.check_new_conns(&mut fig, None);
        self.dump("vipadyn");
        self.end(run, &mut fig, &before, before.alive);
        fig
    }
}

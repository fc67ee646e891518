//! The demo over BGP (`--advertise bgp`, or `auto` when gobgpd and bird are installed): BIRD 2
//! in the router namespace peers with a gobgpd the demo starts, the controller runs with
//! `[advertise] mode = "bgp"` and drives gobgpd, and R's kernel routes come from BIRD. The
//! router's BGP table (`birdc show route`) is printed before and after the takeover.

use anyhow::{Result, bail};
use dvipa_core::config::{AdvertiseCfg, AdvertiseMode, BgpCfg};
use dvipa_testbed::bgp::{self, BgpRouter};
use dvipa_testbed::topo::Testbed;

/// How the demo advertises the DVIPA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Advertise {
    /// BGP when gobgpd and bird are installed (and not `--failures`, whose checks read the
    /// hooks' log), the hooks otherwise.
    Auto,
    /// GoBGP + BIRD (fails when they are not installed).
    Bgp,
    /// `ip route` hooks in the router namespace.
    Hooks,
}

/// Whether this run uses BGP.
pub fn wanted(a: Advertise, failures: bool) -> Result<bool> {
    match a {
        Advertise::Hooks => Ok(false),
        Advertise::Auto => Ok(bgp::available() && !failures),
        Advertise::Bgp if !bgp::available() => {
            bail!("--advertise bgp needs gobgpd and bird (scripts/install-test-deps.sh)")
        }
        Advertise::Bgp => Ok(true),
    }
}

/// The `[advertise]` section (mode bgp, `[advertise.bgp]`) for this testbed and speaker.
pub fn advertise(tb: &Testbed, r: &BgpRouter) -> AdvertiseCfg {
    AdvertiseCfg {
        mode: AdvertiseMode::Bgp,
        bgp: Some(BgpCfg {
            gobgp: r.api.to_string(),
            next_hop: tb
                .switches
                .iter()
                .map(|s| (s.name.clone(), s.next_hop))
                .collect(),
            backups: true,
            med_step: 100,
            reconcile_ms: 500,
        }),
        ..AdvertiseCfg::default()
    }
}

/// Prints R's BGP table, indented.
pub fn show(r: &BgpRouter, when: &str) {
    println!("    birdc show route (router R, {when}):");
    for l in r.show_route().lines() {
        println!("      {l}");
    }
}

/// Prints the `bgp` rows of `dvipa counters` (the controller's view of the speaker).
pub fn counters(table: &str) {
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("bgp"))
        .collect();
    println!("    dvipa counters, layer bgp:");
    for l in rows {
        println!(
            "      {}",
            l.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
}

/// Step 12 (`--kill-controller-with-primary`, BGP and hot standby): the controller and the
/// primary switch die together (both SIGKILLed, the primary's link to R goes down with it).
/// Nobody withdraws sw1's path; R, which has sw2's pre-announced path (ADD-PATH), drops sw1's
/// when its next hop becomes unreachable, and sw2 (programmed by hot standby before the
/// controller died) carries every connection. Figures: event → R's route via sw2, event →
/// every connection moving data again. The controller stays down: this is the last step.
pub(super) fn step_controller_with_primary(
    sc: &mut super::Scenario<'_>,
    run: &dvipa_testbed::conns::ConnsRun,
) -> super::StepFig {
    let (mut fig, before) = sc.begin(
        run,
        12,
        "controller and primary sw1 die together (BGP backups)",
    );
    if sc.bgp.is_none() || !sc.args.hot_standby {
        fig.fail("needs --advertise bgp and --hot-standby".into());
        sc.end(run, &mut fig, &before, before.alive);
        return fig;
    }
    let uplink = sc.tb.switch(1).uplink_if.clone();
    let t = std::time::Instant::now();
    if let Some(mut c) = sc.ctl.child.take() {
        c.kill();
    }
    if let Some(mut sw) = sc.switches[0].take() {
        sw.kill();
    }
    if let Err(e) = dvipa_testbed::netns::ip(&["link", "set", &uplink, "down"]) {
        fig.fail(format!("link down {uplink}: {e:#}"));
    }
    sc.p.say("controller and sw1 killed (SIGKILL), sw1's uplink down");
    sc.wait_route(&mut fig, 2, t, "controller + primary dead");
    sc.wait_progress(run, &mut fig, t);
    if let Some(r) = &sc.bgp {
        show(r, "after the controller and sw1 died");
    }
    sc.end(run, &mut fig, &before, before.alive);
    fig
}

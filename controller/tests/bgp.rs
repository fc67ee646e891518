//! `[advertise] mode = "bgp"` against real daemons (root; skipped without gobgpd and bird,
//! which scripts/install-test-deps.sh installs): the testbed's router namespace runs BIRD 2,
//! peering with a gobgpd the test starts; the controller's [`BgpAdvertiser`] announces the DVIPA
//! and the test watches R's kernel routing table (BIRD installs what it learns there).
//!
//! For eBGP and iBGP: announce via sw1 (sw2 pre-announced with MED 100, not sent), move to sw2
//! (R's FIB follows, time printed), a restarted controller's reconcile keeps the routes, gobgpd
//! killed and restarted empty (the reconciler announces everything again), a move while gobgpd
//! is down (fails, then the reconciler announces the new owner), withdraw (R's route goes).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dvipa::advertise::{AdvCmd, Advertiser};
use dvipa::bgp::BgpAdvertiser;
use dvipa::bgp::paths::Plan;
use dvipa_testbed::{Testbed, TestbedConfig};

fn wait_route(tb: &Testbed, d: Ipv4Addr, want: Option<usize>, since: Instant) -> Duration {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if tb.dvipa_route(d).unwrap() == want {
            return since.elapsed();
        }
        assert!(
            Instant::now() < until,
            "R's route for {d} is {:?}, not {want:?}, after 15 s",
            tb.dvipa_route(d)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn cmd(advertise: bool, sw: &str, dvipa: Ipv4Addr) -> AdvCmd {
    AdvCmd {
        advertise,
        switch: sw.into(),
        dvipa,
        prefix_len: 32,
    }
}

fn run(ibgp: bool) {
    let kind = if ibgp { "iBGP" } else { "eBGP" };
    let tb = Testbed::build(&TestbedConfig {
        servers: 1,
        switches: 2,
        dvipas: 1,
        ..TestbedConfig::default()
    })
    .unwrap();
    let mut bgp = tb.start_bgp(ibgp).unwrap();
    let d = tb.dvipa();
    let plan = Plan {
        switches: tb
            .switches
            .iter()
            .map(|s| (s.name.clone(), (s.index as u32, s.next_hop)))
            .collect(),
        backups: [((d, 32), vec!["sw2".to_string()])].into_iter().collect(),
        pre_announce: true,
        med_step: 100,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let adv = BgpAdvertiser::connect_lazy(
        &bgp.api.to_string(),
        plan.clone(),
        Duration::from_millis(200),
    )
    .unwrap();
    let st = adv.status();

    // 1. announce via sw1: R routes to sw1; sw2 sits in GoBGP's RIB with MED 100, not sent.
    let t = Instant::now();
    rt.block_on(adv.apply(&cmd(true, "sw1", d))).unwrap();
    let first = wait_route(&tb, d, Some(1), t);
    rt.block_on(adv.reconcile()).unwrap();
    let v = st.view();
    assert!(v.reachable);
    assert_eq!(v.peers.len(), 1, "{v:?}");
    assert_eq!(v.peers[0].state, "ESTABLISHED");
    assert_eq!(st.state_of((d, 32), "sw1"), "SENT");
    assert_eq!(st.state_of((d, 32), "sw2"), "SENT med=100");
    let table = bgp.show_route();
    eprintln!("{kind}: birdc show route with sw1 primary:\n{table}");
    assert!(
        table.contains(&tb.switch(1).next_hop.to_string()),
        "{table}"
    );

    // 2. takeover: the core's advertise on sw2, then withdraw on sw1.
    let t = Instant::now();
    rt.block_on(adv.apply(&cmd(true, "sw2", d))).unwrap();
    rt.block_on(adv.apply(&cmd(false, "sw1", d))).unwrap();
    let moved = wait_route(&tb, d, Some(2), t);
    rt.block_on(adv.reconcile()).unwrap();
    assert_eq!(st.state_of((d, 32), "sw2"), "SENT");
    assert_eq!(
        st.state_of((d, 32), "sw1"),
        "-",
        "the old primary is not pre-announced"
    );
    // takeback
    let t = Instant::now();
    rt.block_on(adv.apply(&cmd(true, "sw1", d))).unwrap();
    rt.block_on(adv.apply(&cmd(false, "sw2", d))).unwrap();
    let back = wait_route(&tb, d, Some(1), t);
    eprintln!(
        "{kind}: apply → R's FIB: first announcement {} ms, takeover {} ms, takeback {} ms",
        first.as_millis(),
        moved.as_millis(),
        back.as_millis()
    );

    // A controller that restarts reconciles before its core has decided: the routes stay.
    let fresh =
        BgpAdvertiser::connect_lazy(&bgp.api.to_string(), plan.clone(), Duration::from_secs(1))
            .unwrap();
    rt.block_on(fresh.reconcile()).unwrap();
    assert_eq!(fresh.status().state_of((d, 32), "sw1"), "SENT");
    assert_eq!(fresh.status().state_of((d, 32), "sw2"), "SENT med=100");
    assert_eq!(fresh.status().counters().get("repairs"), None);
    assert_eq!(tb.dvipa_route(d).unwrap(), Some(1));

    // The controller and the primary die together: nobody withdraws sw1's path, but R has
    // sw2's path too (ADD-PATH) and drops sw1's when its next hop becomes unreachable (the
    // primary's link to R goes down with the switch box).
    let up1 = tb.switch(1).uplink_if.clone();
    let t = Instant::now();
    dvipa_testbed::netns::ip(&["link", "set", &up1, "down"]).unwrap();
    let dead = wait_route(&tb, d, Some(2), t);
    let t = Instant::now();
    dvipa_testbed::netns::ip(&["link", "set", &up1, "up"]).unwrap();
    let alive = wait_route(&tb, d, Some(1), t);
    eprintln!(
        "{kind}: controller gone + sw1's link down → R via the pre-announced sw2 in {} ms; \
         link up → back to sw1 in {} ms",
        dead.as_millis(),
        alive.as_millis()
    );

    // 3. gobgpd dies: BIRD drops the route; a new gobgpd is empty until the reconciler runs.
    bgp.kill_gobgpd();
    wait_route(&tb, d, None, Instant::now());
    bgp.restart_gobgpd().unwrap();
    bgp.wait_established(Duration::from_secs(15)).unwrap();
    let t = Instant::now();
    let _attached = {
        let h = adv.spawn_reconciler();
        scopeguard(h)
    };
    let again = wait_route(&tb, d, Some(1), t);
    eprintln!(
        "{kind}: gobgpd restarted: route back {} ms after the session came up",
        again.as_millis()
    );
    rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(5);
        while st.counters().get("repairs").copied().unwrap_or(0) < 2 {
            assert!(
                Instant::now() < until,
                "no repair counted: {:?}",
                st.counters()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        st.state_of((d, 32), "sw2"),
        "SENT med=100",
        "{:?}\n{}",
        st.view(),
        bgp.show_route()
    );
    assert_eq!(tb.dvipa_route(d).unwrap(), Some(1));

    // A move while gobgpd is down fails (counted by the caller), loses nothing: the
    // reconciler announces the new owner once gobgpd is back.
    bgp.kill_gobgpd();
    wait_route(&tb, d, None, Instant::now());
    let e = rt.block_on(adv.apply(&cmd(true, "sw2", d))).unwrap_err();
    eprintln!("{kind}: move with gobgpd down: {e}");
    assert!(
        e.to_string().contains("gobgpd ListPath") && e.to_string().contains("not reachable"),
        "{e}"
    );
    rt.block_on(adv.apply(&cmd(false, "sw1", d))).unwrap();
    bgp.restart_gobgpd().unwrap();
    bgp.wait_established(Duration::from_secs(15)).unwrap();
    wait_route(&tb, d, Some(2), Instant::now());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(st.state_of((d, 32), "sw2"), "SENT");
    assert_eq!(st.state_of((d, 32), "sw1"), "-");

    // 4. withdraw on the routing switch: everything goes.
    rt.block_on(adv.apply(&cmd(false, "sw2", d))).unwrap();
    wait_route(&tb, d, None, Instant::now());
    rt.block_on(adv.reconcile()).unwrap();
    assert_eq!(st.state_of((d, 32), "sw2"), "-");
    drop(bgp);
}

/// Aborts the task when dropped.
struct Abort(tokio::task::JoinHandle<()>);
impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}
fn scopeguard(h: tokio::task::JoinHandle<()>) -> Abort {
    Abort(h)
}

fn skip() -> bool {
    let why = if !dvipa_testbed::is_root() {
        "needs root (network namespaces)"
    } else if !dvipa_testbed::bgp::available() {
        "gobgpd and bird are not installed (scripts/install-test-deps.sh)"
    } else {
        return false;
    };
    dvipa_testbed::skip::skip(why);
    true
}

#[test]
fn ebgp_announce_move_gobgpd_restart_and_withdraw_reach_the_routers_fib() {
    if !skip() {
        run(false);
    }
}

#[test]
fn ibgp_announce_move_gobgpd_restart_and_withdraw_reach_the_routers_fib() {
    if !skip() {
        run(true);
    }
}

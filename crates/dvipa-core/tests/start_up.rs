//! A controller started while a DVIPA's primary switch is dead: the primary gets the start-up
//! hold (`lease_ms` + `liveness_ms`, 3 s + 0.5 s in the figure 4 fixture) to come up; after
//! it the highest-ranked live backup takes the DVIPA (fig. 9), and the primary takes it back
//! when it comes up (fig. 10). Simulated time.
mod common;
use common::*;
use dvipa_core::core::{Action, DigestItem, Event, SwitchLiveness};
use dvipa_core::entries::{ConnKey, Key, TCP};
use dvipa_core::sim::Sim;
use std::net::Ipv4Addr;

/// The start-up hold of the fixture: lease 3000 ms + liveness 500 ms.
const HOLD_MS: u64 = 3500;

fn adv(sw: &str, v: Ipv4Addr) -> impl Fn(&Action) -> bool + '_ {
    move |a| matches!(a, Action::Advertise { switch, dvipa, .. } if switch == sw && *dvipa == v)
}

fn wdr(sw: &str, v: Ipv4Addr) -> impl Fn(&Action) -> bool + '_ {
    move |a| matches!(a, Action::Withdraw { switch, dvipa, .. } if switch == sw && *dvipa == v)
}

/// Moves time by `ms` in 100 ms steps, every stack heartbeating (leases stay alive).
fn run_for(s: &mut Sim, ms: u64) {
    for _ in 0..ms / 100 {
        s.advance(100);
        for st in ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"] {
            s.event(Event::AgentHeartbeat {
                stack: st.into(),
                weight: 0,
            });
        }
    }
}

/// One SYN digest for DVA1 on `sw`, pinned to the target of slot 0.
fn pin_one(s: &mut Sim, sw: &str, sport: u16) -> ConnKey {
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    let target = s.switches[sw].tables[&Key::Dpt {
        service: svc,
        slot: 0,
    }]
        .target()
        .unwrap();
    let c = ConnKey::new(Ipv4Addr::new(198, 51, 100, 9), sport, DVA1, 60, TCP);
    s.event(Event::Digest {
        switch: sw.into(),
        list_id: u64::from(sport),
        items: vec![DigestItem {
            conn: c,
            service: svc,
            target,
            not_syn: false,
        }],
    });
    c
}

#[test]
fn a_primary_that_never_comes_up_loses_its_dvipa_to_the_backup_after_the_start_up_hold() {
    let mut s = sim();
    // MVS1 (DVA1's primary) is dead at start-up; MVS5 (its backup, rank 10) comes up.
    s.switch_up("MVS5", true);
    attach_fig4(&mut s);
    assert_eq!(s.core.advertised(DVB1), Some("MVS5"));
    run_for(&mut s, HOLD_MS - 100);
    // Within the hold nothing moves: the primary may still be starting.
    assert_eq!(s.core.liveness("MVS1"), Some(SwitchLiveness::Unknown));
    assert_eq!(s.core.owner(DVA1), Some("MVS1"));
    assert_eq!(s.core.advertised(DVA1), None);
    assert!(!has_dvipa(&s.switches["MVS5"].tables, DVA1));

    run_for(&mut s, 100);
    assert_eq!(s.core.liveness("MVS1"), Some(SwitchLiveness::Down));
    assert_eq!(s.core.owner(DVA1), Some("MVS5"));
    assert_eq!(s.core.advertised(DVA1), Some("MVS5"));
    assert!(has_dvipa(&s.switches["MVS5"].tables, DVA1));
    assert_eq!(s.core.counters()["switch_not_up_after_start_up_hold"], 1);
    assert!(
        s.core
            .transitions(DVA1)
            .iter()
            .any(|t| t.what == "takeover (MVS1 not up after the start-up hold): MVS1 -> MVS5"),
        "{:?}",
        s.core.transitions(DVA1)
    );
    // Nothing to withdraw: it was never advertised.
    assert!(s.outputs(wdr("MVS1", DVA1)).is_empty());
    // Connections arrive through MVS5.
    let c = pin_one(&mut s, "MVS5", 40000);
    let target = s.core.crt()[&c].target;

    // The primary comes up (empty tables): takeback, with the connection kept.
    s.out.clear();
    s.out_at.clear();
    run_for(&mut s, 1000);
    s.switch_up("MVS1", true);
    assert_eq!(s.core.owner(DVA1), Some("MVS1"));
    assert_eq!(s.core.advertised(DVA1), Some("MVS1"));
    let t1 = &s.switches["MVS1"].tables;
    assert_eq!(t1[&Key::Crt(c)].target(), Some(target));
    // Advertised on MVS1 before MVS5 is withdrawn, and MVS5 is cleaned afterwards.
    let a = s.out.iter().position(adv("MVS1", DVA1)).expect("advertise");
    let w = s.out.iter().position(wdr("MVS5", DVA1)).expect("withdraw");
    assert!(a < w);
    assert!(!has_dvipa(&s.switches["MVS5"].tables, DVA1));
    assert!(crt_of(&s.switches["MVS5"].tables, DVA1).is_empty());
    assert_eq!(s.core.counters()["takeback"], 1);
    // MVS5's own DVIPA never moved.
    assert_eq!(s.core.advertised(DVB1), Some("MVS5"));
}

#[test]
fn a_primary_that_comes_up_within_the_start_up_hold_keeps_its_dvipa() {
    let mut s = sim();
    s.switch_up("MVS5", true);
    attach_fig4(&mut s);
    run_for(&mut s, HOLD_MS - 100);
    s.switch_up("MVS1", true);
    run_for(&mut s, 2000);
    assert_eq!(s.core.liveness("MVS1"), Some(SwitchLiveness::Up));
    assert_eq!(s.core.advertised(DVA1), Some("MVS1"));
    assert!(s.outputs(adv("MVS5", DVA1)).is_empty());
    assert!(!s.core.counters().contains_key("takeover"));
    assert!(
        !s.core
            .counters()
            .contains_key("switch_not_up_after_start_up_hold")
    );
}

/// Connected but not read yet (Syncing) at the end of the hold: alive, only slow.
#[test]
fn a_switch_that_is_syncing_at_the_end_of_the_hold_is_not_down() {
    let mut s = sim();
    s.switch_up("MVS5", true);
    attach_fig4(&mut s);
    run_for(&mut s, HOLD_MS - 100);
    // SwitchUp without the read answered yet.
    s.core.handle(
        s.now,
        Event::SwitchUp {
            switch: "MVS1".into(),
        },
    );
    while let Some(a) = s.core.poll_action() {
        if !matches!(a, Action::ReadSwitch { .. }) {
            s.out.push(a);
        }
    }
    s.now = s.now.plus(1000);
    s.core.handle_timeout(s.now);
    assert_eq!(s.core.liveness("MVS1"), Some(SwitchLiveness::Syncing));
    assert_eq!(s.core.owner(DVA1), Some("MVS1"));
    assert!(s.outputs(adv("MVS5", DVA1)).is_empty());
}

/// The same with every switch dead at start-up: nothing is advertised, and the first switch
/// of the chain that comes up routes the DVIPA.
#[test]
fn with_every_switch_dead_the_first_that_comes_up_routes() {
    let mut s = sim();
    attach_fig4(&mut s);
    run_for(&mut s, HOLD_MS + 500);
    assert_eq!(s.core.liveness("MVS1"), Some(SwitchLiveness::Down));
    assert_eq!(s.core.liveness("MVS5"), Some(SwitchLiveness::Down));
    assert!(
        s.outputs(|a| matches!(a, Action::Advertise { .. }))
            .is_empty()
    );
    s.switch_up("MVS5", true);
    assert_eq!(s.core.advertised(DVA1), Some("MVS5"));
    assert_eq!(s.core.advertised(DVB1), Some("MVS5"));
    s.switch_up("MVS1", true);
    assert_eq!(s.core.advertised(DVA1), Some("MVS1"));
}

/// An HA follower's core: it never sees a switch come up (the leader drives them), so its own
/// start-up hold marks them all down; agents are attached to it.
fn follower() -> Sim {
    let mut s = sim();
    attach_fig4(&mut s);
    run_for(&mut s, HOLD_MS + 100);
    assert_eq!(s.core.liveness("MVS1"), Some(SwitchLiveness::Down));
    assert_eq!(s.core.liveness("MVS5"), Some(SwitchLiveness::Down));
    s.out.clear();
    s.out_at.clear();
    s
}

/// Promotion (controller HA): the operator's move of DVA1 to its backup MVS5, restored from
/// etcd, holds although MVS1 (DVA1's primary) answers the new leader first: DVA1 is never
/// advertised on MVS1 (the race `ha_controllers.rs` saw as "the third leader advertised
/// elsewhere").
#[test]
fn a_promoted_follower_keeps_a_restored_move_while_its_switches_come_up_in_any_order() {
    let mut s = follower();
    s.core.restore_owner(DVA1, "MVS5", true).unwrap();
    let now = s.now;
    s.core.restart_as_leader(now);
    s.run();
    assert_eq!(s.core.liveness("MVS1"), Some(SwitchLiveness::Unknown));
    s.switch_up("MVS1", false);
    run_for(&mut s, 300);
    assert_eq!(s.core.owner(DVA1), Some("MVS5"));
    assert!(s.outputs(adv("MVS1", DVA1)).is_empty(), "{:?}", s.out);
    s.switch_up("MVS5", false);
    run_for(&mut s, 2000);
    assert_eq!(s.core.advertised(DVA1), Some("MVS5"));
    assert!(s.outputs(adv("MVS1", DVA1)).is_empty(), "{:?}", s.out);
    assert!(!s.core.counters().contains_key("takeover"));
}

/// ... but a restored owner that does not come up within `2 × liveness_ms` of the promotion
/// (it died with the old leader) is down, and its DVIPA goes to the live switch of its chain.
#[test]
fn a_promoted_follower_takes_over_from_a_restored_owner_that_never_comes_up() {
    let mut s = follower();
    s.core.restore_owner(DVA1, "MVS5", true).unwrap();
    let now = s.now;
    s.core.restart_as_leader(now);
    s.run();
    s.switch_up("MVS1", false);
    // liveness_ms is 500 in the fixture: down at 1000 ms after the promotion.
    run_for(&mut s, 900);
    assert_eq!(s.core.owner(DVA1), Some("MVS5"));
    run_for(&mut s, 200);
    assert_eq!(s.core.liveness("MVS5"), Some(SwitchLiveness::Down));
    assert_eq!(s.core.owner(DVA1), Some("MVS1"));
    assert_eq!(s.core.advertised(DVA1), Some("MVS1"));
}

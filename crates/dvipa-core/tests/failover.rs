//! Ownership and failover decisions on simulated time, named after the design's figures:
//! takeover (fig. 9), takeback (fig. 10), moveable DVIPAs (figs. 11–12), hot standby,
//! maintenance and controller restart. Every write batch is checked by the simulation for
//! entries naming missing targets.
mod common;
use common::*;
use dvipa_core::core::{Action, Core, CoreOptions, DigestItem, Event, MoveError, Report};
use dvipa_core::entries::{ConnKey, Key, TCP, UpdateKind};
use dvipa_core::sim::Sim;
use std::net::Ipv4Addr;

/// Both routing switches up, stacks attached, connections pinned on both DVIPAs: SYN digests
/// on the routing switch plus server-reported connections.
fn running(hot_standby: bool) -> Sim {
    let mut s = sim_with(|t| {
        if hot_standby {
            t.replace("hot_standby = false", "hot_standby = true")
        } else {
            t
        }
    });
    s.switch_up("MVS1", true);
    s.switch_up("MVS5", true);
    attach_fig4(&mut s);
    for (sw, v) in [("MVS1", DVA1), ("MVS5", DVB1)] {
        let svc = s.core.service_of(v, 60, TCP).unwrap();
        let items: Vec<DigestItem> = (0..40u16)
            .map(|i| {
                let conn = ConnKey::new(
                    Ipv4Addr::new(198, 51, 100, 1 + (i % 7) as u8),
                    20000 + i,
                    v,
                    60,
                    TCP,
                );
                let target = s.switches[sw].tables[&Key::Dpt {
                    service: svc,
                    slot: i * 5,
                }]
                    .target()
                    .unwrap();
                DigestItem {
                    conn,
                    service: svc,
                    target,
                    not_syn: false,
                }
            })
            .collect();
        s.event(Event::Digest {
            switch: sw.into(),
            list_id: 1,
            items,
        });
    }
    let mut c = conn(30000, DVA1);
    c.server_originated = true;
    assert!(
        report(
            &mut s,
            "MVS2",
            Report {
                seq: 90,
                newconn: vec![c],
                ..Default::default()
            }
        )
        .is_empty()
    );
    assert_eq!(s.core.crt().len(), 81);
    assert_eq!(s.core.advertised(DVA1), Some("MVS1"));
    assert_eq!(s.core.advertised(DVB1), Some("MVS5"));
    s
}

fn core_crt(s: &Sim, v: Ipv4Addr) -> std::collections::BTreeMap<ConnKey, u16> {
    s.core
        .crt()
        .iter()
        .filter(|(k, _)| k.dvipa() == v)
        .map(|(k, e)| (*k, e.target))
        .collect()
}

/// Index of the last write to `sw` that touched `v`'s CRT entries (+1 = writes done then).
fn last_crt_write(s: &Sim, sw: &str, v: Ipv4Addr, kind: Option<UpdateKind>) -> usize {
    s.write_log
        .iter()
        .rposition(|(n, u)| {
            n == sw
                && u.iter().any(|u| {
                    matches!(u.key, Key::Crt(c) if c.dvipa() == v)
                        && kind.is_none_or(|k| u.kind == k)
                })
        })
        .map(|i| i + 1)
        .unwrap_or(0)
}

fn adv(sw: &str, v: Ipv4Addr) -> impl Fn(&Action) -> bool + '_ {
    move |a| matches!(a, Action::Advertise { switch, dvipa, .. } if switch == sw && *dvipa == v)
}

fn wdr(sw: &str, v: Ipv4Addr) -> impl Fn(&Action) -> bool + '_ {
    move |a| matches!(a, Action::Withdraw { switch, dvipa, .. } if switch == sw && *dvipa == v)
}

#[test]
fn fig9_takeover() {
    let mut s = running(false);
    let before = core_crt(&s, DVA1);
    assert_eq!(before.len(), 41);
    assert!(
        !has_dvipa(&s.switches["MVS5"].tables, DVA1),
        "MVS5 is a cold backup of DVA1"
    );
    s.out.clear();
    s.out_at.clear();
    let w0 = s.write_log.len();

    s.switch_down("MVS1");

    assert_eq!(s.core.owner(DVA1), Some("MVS5"));
    assert_eq!(s.core.advertised(DVA1), Some("MVS5"));
    // Every existing connection is programmed on MVS5, unchanged.
    let t5 = &s.switches["MVS5"].tables;
    assert_eq!(crt_of(t5, DVA1), before);
    assert_eq!(core_crt(&s, DVA1), before);
    // New connections use MVS5's own VIPADISTRIBUTE for DVA1 (XCF2, XCF3, XCF4): of those,
    // MVS2 and MVS4 listen. MVS1's pinned connections stay on MVS1 (target 1).
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    assert_eq!(
        dpt_targets(t5, svc).keys().copied().collect::<Vec<_>>(),
        vec![2, 4]
    );
    assert!(before.values().any(|t| *t == 1));
    // Advertise only after the CRT program reached MVS5, then withdraw the failed one.
    let a = s.emitted_at(adv("MVS5", DVA1)).expect("advertise");
    assert!(a >= last_crt_write(&s, "MVS5", DVA1, None) && a > w0);
    assert!(s.out.iter().position(adv("MVS5", DVA1)) < s.out.iter().position(wdr("MVS1", DVA1)));
    // DVB1 (MVS5's own) did not move.
    assert_eq!(s.core.owner(DVB1), Some("MVS5"));
    // Stacks hear about the new owner.
    let lists: Vec<_> = s
        .outputs(|a| matches!(a, Action::SendVipaList { .. }))
        .into_iter()
        .filter_map(|a| match a {
            Action::SendVipaList { stack, list } => Some((
                stack.clone(),
                list.vipas.iter().find(|v| v.dvipa == DVA1)?.owner.clone(),
            )),
            _ => None,
        })
        .collect();
    for st in ["MVS1", "MVS2", "MVS3", "MVS4"] {
        assert!(
            lists.contains(&(st.to_string(), "MVS5".to_string())),
            "{st}: {lists:?}"
        );
    }
    assert!(
        s.core
            .transitions(DVA1)
            .iter()
            .any(|t| t.what == "takeover (MVS1 down): MVS1 -> MVS5")
    );
    // Re-reports (NEWCONN for existing connections) reconcile without errors or changes.
    let mine: Vec<_> = before
        .iter()
        .filter(|(_, t)| **t == 2)
        .map(|(k, _)| dvipa_core::core::ConnReport {
            client: k.client(),
            client_port: k.sport.into(),
            dvipa: DVA1,
            dvipa_port: 60,
            protocol: 6,
            server_originated: false,
        })
        .collect();
    let errs = report(
        &mut s,
        "MVS2",
        Report {
            seq: 1,
            srvstat: vec![listen(DVA1, 60), listen(DVB1, 60)],
            newconn: mine,
            full_sync: true,
            sync_done: true,
            ..Default::default()
        },
    );
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(crt_of(&s.switches["MVS5"].tables, DVA1), before);
    assert_eq!(s.core.counters()["takeover"], 1);
    println!(
        "cold takeover: {} write batches, {} updates",
        s.write_log.len() - w0,
        s.write_log[w0..].iter().map(|w| w.1.len()).sum::<usize>()
    );
}

#[test]
fn fig10_takeback() {
    let mut s = running(false);
    s.switch_down("MVS1");
    let before = core_crt(&s, DVA1);
    s.out.clear();
    s.out_at.clear();
    // MVS1 restarts with empty tables.
    s.switch_up("MVS1", true);
    assert_eq!(s.core.owner(DVA1), Some("MVS1"));
    assert_eq!(s.core.advertised(DVA1), Some("MVS1"));
    let t1 = &s.switches["MVS1"].tables;
    assert_eq!(crt_of(t1, DVA1), before, "the primary is programmed fully");
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    assert_eq!(
        dpt_targets(t1, svc).keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 4],
        "MVS1's own DESTIP list again"
    );
    // Order: program MVS1 → advertise MVS1 → withdraw MVS5 → clean MVS5.
    let a = s.emitted_at(adv("MVS1", DVA1)).expect("advertise");
    assert!(a >= last_crt_write(&s, "MVS1", DVA1, Some(UpdateKind::Insert)));
    assert!(s.out.iter().position(adv("MVS1", DVA1)) < s.out.iter().position(wdr("MVS5", DVA1)));
    let first_cleanup = s
        .write_log
        .iter()
        .position(|(n, u)| {
            n == "MVS5"
                && u.iter().any(|u| {
                    u.kind == UpdateKind::Delete
                        && matches!(u.key, Key::Crt(c) if c.dvipa() == DVA1)
                })
        })
        .expect("MVS5 cleans up");
    assert!(
        first_cleanup >= a,
        "cleanup ({first_cleanup}) before advertisement moved ({a})"
    );
    let t5 = &s.switches["MVS5"].tables;
    assert!(!has_dvipa(t5, DVA1) && crt_of(t5, DVA1).is_empty());
    assert!(has_dvipa(t5, DVB1), "MVS5 keeps its own DVIPA");
    assert_eq!(s.core.counters()["takeback"], 1);
}

#[test]
fn fig11_12_moveable_admin_move_keeps_connections() {
    let mut s = running(false);
    let before = core_crt(&s, DVB1);
    s.out.clear();
    s.out_at.clear();
    s.event(Event::AdminMove {
        dvipa: DVB1,
        to: "MVS1".into(),
    });
    assert_eq!(s.core.owner(DVB1), Some("MVS1"));
    assert_eq!(s.core.advertised(DVB1), Some("MVS1"));
    assert_eq!(crt_of(&s.switches["MVS1"].tables, DVB1), before);
    assert!(crt_of(&s.switches["MVS5"].tables, DVB1).is_empty());
    assert!(s.out.iter().position(adv("MVS1", DVB1)) < s.out.iter().position(wdr("MVS5", DVB1)));
    // The operator's move sticks: MVS5 bouncing does not take DVB1 back.
    s.switch_down("MVS5");
    s.switch_up("MVS5", false);
    assert_eq!(s.core.owner(DVB1), Some("MVS1"));
    // Moving it home clears the pin.
    s.event(Event::AdminMove {
        dvipa: DVB1,
        to: "MVS5".into(),
    });
    assert_eq!(s.core.advertised(DVB1), Some("MVS5"));
    assert_eq!(crt_of(&s.switches["MVS5"].tables, DVB1), before);
    // Moving to a switch that is down is refused and counted.
    s.switch_down("MVS1");
    s.event(Event::AdminMove {
        dvipa: DVB1,
        to: "MVS1".into(),
    });
    assert_eq!(s.core.owner(DVB1), Some("MVS5"));
    assert_eq!(s.core.counters()["admin_move_target_not_up"], 1);
}

/// `Core::admin_move` says what happened (the admin API no longer diffs counters), and every
/// ownership change is announced once with `Action::OwnersChanged` (the controller persists on
/// it instead of polling).
#[test]
fn admin_move_returns_its_outcome_and_ownership_changes_are_announced() {
    let mut s = running(false);
    let announced = |s: &Sim| {
        s.out
            .iter()
            .filter(|a| matches!(a, Action::OwnersChanged))
            .count()
    };
    s.out.clear();
    s.out_at.clear();
    let now = s.now;
    assert_eq!(s.core.admin_move(now, DVB1, "MVS1"), Ok(()));
    s.run();
    assert_eq!(s.core.owner(DVB1), Some("MVS1"));
    assert_eq!(announced(&s), 1);
    // Moving it where it is: accepted, nothing changes, nothing announced.
    assert_eq!(s.core.admin_move(now, DVB1, "MVS1"), Ok(()));
    s.run();
    assert_eq!(announced(&s), 1);
    let other = Ipv4Addr::new(198, 51, 100, 99);
    assert_eq!(
        s.core.admin_move(now, other, "MVS1"),
        Err(MoveError::UnknownDvipa(other))
    );
    assert_eq!(
        s.core.admin_move(now, DVB1, "MVS9"),
        Err(MoveError::UnknownSwitch("MVS9".into()))
    );
    // A takeover is announced too; a move to the switch that is down is refused and counted.
    s.switch_down("MVS1");
    assert_ne!(s.core.owner(DVB1), Some("MVS1"));
    assert_eq!(announced(&s), 2);
    let err = s.core.admin_move(now, DVB1, "MVS1").unwrap_err();
    assert_eq!(err, MoveError::TargetNotUp("MVS1".into()));
    assert_eq!(
        err.to_string(),
        "switch `MVS1` is not up (or is in maintenance)"
    );
    s.run();
    assert_eq!(announced(&s), 2);
    assert_eq!(s.core.counters()["admin_move_target_not_up"], 1);
    assert_eq!(s.core.counters()["admin_move_unknown_dvipa"], 1);
}

#[test]
fn maintenance_moves_dvipas_gracefully() {
    let mut s = running(false);
    let before = core_crt(&s, DVA1);
    s.event(Event::AdminMaintenance {
        switch: "MVS1".into(),
        on: true,
    });
    assert!(s.core.in_maintenance("MVS1") && !s.core.in_maintenance("MVS5"));
    assert_eq!(s.core.advertised(DVA1), Some("MVS5"));
    assert_eq!(crt_of(&s.switches["MVS5"].tables, DVA1), before);
    assert!(
        crt_of(&s.switches["MVS1"].tables, DVA1).is_empty(),
        "the switch in maintenance is cleaned"
    );
    assert!(
        s.core
            .transitions(DVA1)
            .iter()
            .any(|t| t.what.contains("takeover (MVS1 maintenance)"))
    );
    s.event(Event::AdminMaintenance {
        switch: "MVS1".into(),
        on: false,
    });
    assert!(!s.core.in_maintenance("MVS1"));
    assert_eq!(s.core.advertised(DVA1), Some("MVS1"));
}

#[test]
fn hot_standby_mirrors_crt_and_takeover_is_only_the_advertisement() {
    let mut s = running(true);
    // The backups hold the other switch's DVIPA, CRT included, all the time.
    assert_eq!(crt_of(&s.switches["MVS1"].tables, DVB1), core_crt(&s, DVB1));
    assert_eq!(crt_of(&s.switches["MVS5"].tables, DVA1), core_crt(&s, DVA1));
    // Mirrored as it changes.
    let c = conn(31000, DVB1);
    assert!(
        report(
            &mut s,
            "MVS3",
            Report {
                seq: 91,
                newconn: vec![c],
                ..Default::default()
            }
        )
        .is_empty()
    );
    assert!(s.switches["MVS1"].tables.contains_key(&Key::Crt(key(&c))));
    assert!(
        report(
            &mut s,
            "MVS3",
            Report {
                seq: 92,
                termconn: vec![c],
                ..Default::default()
            }
        )
        .is_empty()
    );
    assert!(!s.switches["MVS1"].tables.contains_key(&Key::Crt(key(&c))));
    // MVS5 (DVB1's primary, whose backup MVS1 uses the same distribution) fails: nothing to
    // write on MVS1 for DVB1, the advertisement moves at once.
    let w0 = s.write_log.len();
    s.switch_down("MVS5");
    assert_eq!(s.core.advertised(DVB1), Some("MVS1"));
    let dvb1_updates: usize = s.write_log[w0..]
        .iter()
        .filter(|(n, _)| n == "MVS1")
        .flat_map(|(_, u)| u.iter())
        .filter(|u| match u.key {
            Key::Crt(c) => c.dvipa() == DVB1,
            Key::Dvipa { addr, .. } => addr == DVB1,
            _ => false,
        })
        .count();
    assert_eq!(dvb1_updates, 0);
    println!(
        "hot-standby takeover: {} write batches ({} updates) before the advertisement",
        s.write_log.len() - w0,
        s.write_log[w0..].iter().map(|w| w.1.len()).sum::<usize>()
    );
}

#[test]
fn idle_reports_count_only_from_the_switch_the_dvipas_packets_reach() {
    let mut s = running(true);
    // A DVA1 connection pinned by digest (no agent confirms it): mirrored on MVS5, where no
    // packet of DVA1 arrives while MVS1 routes it, so MVS5's copy is idle by design.
    let k = ConnKey::new(Ipv4Addr::new(198, 51, 100, 1), 20000, DVA1, 60, TCP);
    let k2 = ConnKey::new(Ipv4Addr::new(198, 51, 100, 2), 20001, DVA1, 60, TCP);
    assert!(s.switches["MVS5"].tables.contains_key(&Key::Crt(k)));
    s.event(Event::IdleTimeout {
        switch: "MVS5".into(),
        conns: vec![k],
    });
    assert!(
        s.core.crt().contains_key(&k),
        "kept: MVS5 does not route DVA1"
    );
    assert_eq!(s.core.counters()["idle_from_standby_ignored"], 1);
    // From the routing switch it is removed, from both switches.
    s.event(Event::IdleTimeout {
        switch: "MVS1".into(),
        conns: vec![k],
    });
    assert!(!s.core.crt().contains_key(&k));
    assert!(!s.switches["MVS5"].tables.contains_key(&Key::Crt(k)));
    // MVS1 fails: DVA1 is advertised from MVS5, whose idle reports now count.
    s.switch_down("MVS1");
    assert_eq!(s.core.advertised(DVA1), Some("MVS5"));
    s.event(Event::IdleTimeout {
        switch: "MVS5".into(),
        conns: vec![k2],
    });
    assert!(!s.core.crt().contains_key(&k2));
    assert_eq!(s.core.counters()["idle_removed"], 2);
}

#[test]
fn after_a_restart_a_pin_found_idle_is_not_adopted_again_from_a_standby_copy() {
    let s = running(true);
    let hot = |t: String| t.replace("hot_standby = false", "hot_standby = true");
    let k = ConnKey::new(Ipv4Addr::new(198, 51, 100, 1), 20000, DVA1, 60, TCP);
    let mut r = Sim::new(Core::new(cluster(hot), CoreOptions::default()).unwrap());
    for (n, t) in &s.switches {
        r.switches.get_mut(n).unwrap().tables = t.tables.clone();
    }
    // DVA1's routing switch is read first; its takeover read finds the connection idle.
    r.switch_up("MVS1", false);
    assert!(r.core.crt().contains_key(&k), "adopted");
    r.event(Event::IdleTimeout {
        switch: "MVS1".into(),
        conns: vec![k],
    });
    assert!(!r.core.crt().contains_key(&k));
    // The hot-standby copy on MVS5 is read next: not adopted again, and deleted.
    r.switch_up("MVS5", false);
    assert!(
        !r.core.crt().contains_key(&k),
        "re-adopted from the standby copy"
    );
    assert_eq!(r.core.counters()["crt_not_adopted_idle"], 1);
    assert!(!r.switches["MVS5"].tables.contains_key(&Key::Crt(k)));
    assert!(!r.switches["MVS1"].tables.contains_key(&Key::Crt(k)));
}

#[test]
fn controller_restart_rebuilds_from_the_switches_without_disturbing_them() {
    let s = running(false);
    let crt_len = s.core.crt().len();
    let tables: Vec<_> = s
        .switches
        .iter()
        .map(|(n, t)| (n.clone(), t.tables.clone()))
        .collect();
    // A new controller process: same configuration, switches keep forwarding.
    let restarted = || {
        let mut r = Sim::new(Core::new(cluster(|t| t), CoreOptions::default()).unwrap());
        for (n, t) in &tables {
            r.switches.get_mut(n).unwrap().tables = t.clone();
        }
        r.switch_up("MVS5", false);
        r.switch_up("MVS1", false);
        r
    };
    let mut r = restarted();
    assert_eq!(r.core.crt().len(), crt_len, "CRT adopted from the switches");
    assert_eq!(r.core.counters()["crt_adopted_from_switch"], crt_len as u64);
    // Before any agent re-attached: not one update (DPT kept during the start-up hold).
    assert_eq!(r.write_log.len(), 0, "{:?}", r.write_log);
    // Agents re-attach in a different order than before: the fill is the adopted one.
    for st in ["MVS5", "MVS4", "MVS3", "MVS2", "MVS1"] {
        hello(&mut r, st);
    }
    for (st, v) in [
        ("MVS5", DVB1),
        ("MVS4", DVA1),
        ("MVS3", DVB1),
        ("MVS2", DVB1),
        ("MVS2", DVA1),
        ("MVS1", DVA1),
    ] {
        assert!(
            report(
                &mut r,
                st,
                Report {
                    seq: 1,
                    srvstat: vec![listen(v, 60)],
                    ..Default::default()
                }
            )
            .is_empty()
        );
    }
    for (n, t) in &tables {
        assert_eq!(
            &r.switches[n].tables, t,
            "{n} is exactly as before the restart"
        );
    }
    assert_eq!(r.write_log.len(), 0);

    // If no agent comes back within one lease, the adopted targets leave the slots, but the
    // pinned connections stay.
    let mut r = restarted();
    r.advance(3000);
    let svc = r.core.service_of(DVA1, 60, TCP).unwrap();
    assert!(dpt_targets(&r.switches["MVS1"].tables, svc).is_empty());
    assert_eq!(crt_of(&r.switches["MVS1"].tables, DVA1).len(), 41);
}

#[test]
fn fig11_12_viparange_vipa_moves_to_the_stack_that_binds_last() {
    let c = cluster_with(
        |t| t,
        |p| {
            p.replace("ENDVIPADYNAMIC", "  VIPARANGE DEFINE MOVEABLE NONDISRUPTIVE 255.255.255.0 198.18.0.0\nENDVIPADYNAMIC")
        },
    );
    let mut s = Sim::new(Core::new(c, CoreOptions::default()).unwrap());
    s.switch_up("MVS1", true);
    for st in ["MVS2", "MVS3"] {
        hello(&mut s, st);
    }
    let vb: Ipv4Addr = "198.18.0.7".parse().unwrap();
    // APP B on MVS3 binds to a VIPA of the range: the VIPA becomes routable through MVS1.
    assert!(
        report(
            &mut s,
            "MVS3",
            Report {
                seq: 1,
                srvstat: vec![listen(vb, 8080)],
                ..Default::default()
            }
        )
        .is_empty()
    );
    assert_eq!(s.core.owner(vb), Some("MVS1"));
    assert_eq!(s.core.advertised(vb), Some("MVS1"));
    let svc = s.core.service_of(vb, 8080, TCP).unwrap();
    assert_eq!(s.core.service_of(vb, 443, TCP), Some(svc), "all ports");
    let t1 = &s.switches["MVS1"].tables;
    assert!(t1.contains_key(&Key::Dvipa {
        addr: vb,
        proto: TCP,
        port: None
    }));
    assert_eq!(
        dpt_targets(t1, svc),
        std::collections::BTreeMap::from([(3, 256)])
    );
    // A connection to MVS3, then APP B on MVS2 binds: new connections go to MVS2, the
    // existing one stays routed to MVS3.
    let k = ConnKey::new("198.51.100.50".parse().unwrap(), 4000, vb, 8080, TCP);
    s.event(Event::Digest {
        switch: "MVS1".into(),
        list_id: 1,
        items: vec![DigestItem {
            conn: k,
            service: svc,
            target: 3,
            not_syn: false,
        }],
    });
    assert!(
        report(
            &mut s,
            "MVS2",
            Report {
                seq: 1,
                srvstat: vec![listen(vb, 8080)],
                ..Default::default()
            }
        )
        .is_empty()
    );
    let t1 = &s.switches["MVS1"].tables;
    assert_eq!(
        dpt_targets(t1, svc),
        std::collections::BTreeMap::from([(2, 256)])
    );
    assert_eq!(t1[&Key::Crt(k)].target(), Some(3));
    // MVS2 stops listening: back to MVS3, next in line.
    let mut stop = listen(vb, 8080);
    stop.listening = false;
    assert!(
        report(
            &mut s,
            "MVS2",
            Report {
                seq: 2,
                srvstat: vec![stop],
                ..Default::default()
            }
        )
        .is_empty()
    );
    assert_eq!(
        dpt_targets(&s.switches["MVS1"].tables, svc),
        std::collections::BTreeMap::from([(3, 256)])
    );
    // Every stack learns the VIPA and its routing switch.
    assert!(
        s.core
            .vipa_list_for("MVS4")
            .iter()
            .any(|v| v.dvipa == vb && v.owner == "MVS1" && v.all_stacks)
    );
    assert!(
        s.core.transitions(vb)[0]
            .what
            .starts_with("activated in VIPARANGE 198.18.0.0/24 of MVS1")
    );
    // Addresses outside every VIPA and range stay unknown.
    let errs = report(
        &mut s,
        "MVS2",
        Report {
            seq: 3,
            srvstat: vec![listen("198.19.0.1".parse().unwrap(), 80)],
            ..Default::default()
        },
    );
    assert_eq!(errs[0].reason, "unknown_dvipa");
}

/// A restarted controller over the switches of `s` (tables kept), both switches connecting at
/// once, optionally with ownership restored from what the old controller persisted.
fn restart(s: &Sim, restore: bool, hot: bool) -> Sim {
    let c = cluster(|t| {
        if hot {
            t.replace("hot_standby = false", "hot_standby = true")
        } else {
            t
        }
    });
    let mut core = Core::new(c, CoreOptions::default()).unwrap();
    if restore {
        for (v, sw, pinned) in s.core.ownership() {
            core.restore_owner(v, &sw, pinned).unwrap();
        }
    }
    let mut r = Sim::new(core);
    for (n, t) in &s.switches {
        let sw = r.switches.get_mut(n).unwrap();
        sw.tables = t.tables.clone();
        sw.up = true;
    }
    for n in ["MVS5", "MVS1"] {
        r.core.handle(r.now, Event::SwitchUp { switch: n.into() });
    }
    r.run();
    r
}

#[test]
fn restart_after_an_admin_move_keeps_the_dvipa_where_the_switches_show_it() {
    let mut s = running(false);
    s.event(Event::AdminMove {
        dvipa: DVB1,
        to: "MVS1".into(),
    });
    let before = core_crt(&s, DVB1);
    let mut r = restart(&s, false, false);
    assert_eq!(r.core.owner(DVB1), Some("MVS1"));
    assert_eq!(r.core.advertised(DVB1), Some("MVS1"));
    assert!(
        r.outputs(adv("MVS5", DVB1)).is_empty(),
        "never advertised on its configured owner"
    );
    assert_eq!(crt_of(&r.switches["MVS1"].tables, DVB1), before);
    let crt_deletes = r
        .write_log
        .iter()
        .flat_map(|(_, u)| u.iter())
        .filter(|u| u.kind == UpdateKind::Delete && matches!(u.key, Key::Crt(_)))
        .count();
    assert_eq!(crt_deletes, 0);
    assert_eq!(r.core.counters()["owner_inferred_from_switch"], 1);
    // Still pinned by the operator: MVS5 bouncing does not pull it back.
    r.switch_down("MVS5");
    r.switch_up("MVS5", false);
    assert_eq!(r.core.owner(DVB1), Some("MVS1"));
    // ownership() is what a shell persists; bad restores are refused.
    assert!(
        r.core
            .ownership()
            .contains(&(DVB1, "MVS1".to_string(), true))
    );
    let mut c = Core::new(cluster(|t| t), CoreOptions::default()).unwrap();
    let e = c
        .restore_owner(DVB1, "MVS9", false)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "cannot restore the owner of 203.0.113.20: no switch named `MVS9`"
    );
}

#[test]
fn restart_in_hot_standby_needs_the_persisted_owner() {
    let mut s = running(true);
    s.event(Event::AdminMove {
        dvipa: DVB1,
        to: "MVS1".into(),
    });
    assert_eq!(s.core.advertised(DVB1), Some("MVS1"));
    // Both switches hold DVB1 (hot standby): the tables cannot tell who routes it.
    let r = restart(&s, false, true);
    assert_eq!(
        r.core.owner(DVB1),
        Some("MVS5"),
        "ambiguous: falls back to the configured owner"
    );
    // With the persisted ownership the restart changes nothing.
    let r = restart(&s, true, true);
    assert_eq!(r.core.owner(DVB1), Some("MVS1"));
    assert!(r.outputs(adv("MVS5", DVB1)).is_empty());
    for n in ["MVS1", "MVS5"] {
        assert_eq!(
            crt_of(&r.switches[n].tables, DVB1),
            core_crt(&s, DVB1),
            "{n}"
        );
    }
}

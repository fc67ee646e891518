//! Events in, actions out: SRVSTAT → DPT and slots, SYN digest → CRT on the switch (digest acked
//! after the write), TERMCONN, NEWCONN, per-item validation, leases, idle timeouts, full tables.
mod common;
use common::*;
use dvipa_core::core::{Action, DigestItem, Event, Origin, Report};
use dvipa_core::entries::{ConnKey, Key, TCP, Value};

fn syn(s: &mut dvipa_core::sim::Sim, client_port: u16, list_id: u64) -> ConnKey {
    let k = ConnKey::new("198.51.100.7".parse().unwrap(), client_port, DVA1, 60, TCP);
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    // The switch's choice: the slot's target.
    let t = s.switches["MVS1"].tables[&Key::Dpt {
        service: svc,
        slot: client_port % 256,
    }]
        .target()
        .unwrap();
    s.event(Event::Digest {
        switch: "MVS1".into(),
        list_id,
        items: vec![DigestItem {
            conn: k,
            service: svc,
            target: t,
            not_syn: false,
        }],
    });
    k
}

#[test]
fn srvstat_fills_dpt_and_syn_digest_pins_on_switch() {
    let mut s = sim();
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let t = &s.switches["MVS1"].tables;
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    assert_eq!(
        t[&Key::Dvipa {
            addr: DVA1,
            proto: TCP,
            port: Some(60)
        }],
        Value::Distribute {
            service: svc,
            method: 1
        }
    );
    // 256 slots over MVS1, MVS2, MVS4 (target ids 1, 2, 4): 85/85/86.
    let d = dpt_targets(t, svc);
    assert_eq!(d.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
    assert!(
        d.values().all(|n| (85..=86).contains(n)) && d.values().sum::<usize>() == 256,
        "{d:?}"
    );
    // MVS1 routes DVA1 only: DVB1 is MVS5's.
    assert!(!has_dvipa(t, DVB1));
    // Advertised once programmed.
    assert_eq!(s.core.advertised(DVA1), Some("MVS1"));

    let k = syn(&mut s, 4242, 77);
    let pinned = s.core.crt()[&k];
    assert_eq!(pinned.origin, Origin::SynDigest);
    assert_eq!(
        s.switches["MVS1"].tables[&Key::Crt(k)],
        Value::ToTarget {
            target: pinned.target
        }
    );
    // The digest list is acked (ordering against the write: see the next test).
    assert_eq!(
        s.outputs(|a| matches!(a, Action::AckDigest { list_id: 77, .. }))
            .len(),
        1
    );

    // TERMCONN from the target stack removes it from the CRT and the switch.
    let stack = s.core.stack_name(pinned.target).unwrap().to_string();
    let mut c = conn(4242, DVA1);
    let errs = report(
        &mut s,
        &stack,
        Report {
            seq: 20,
            termconn: vec![c],
            ..Default::default()
        },
    );
    assert!(errs.is_empty(), "{errs:?}");
    assert!(!s.core.crt().contains_key(&k));
    assert!(!s.switches["MVS1"].tables.contains_key(&Key::Crt(k)));

    // NEWCONN for a server-originated connection pins it to the reporting stack.
    c.client_port = 5555;
    c.server_originated = true;
    let errs = report(
        &mut s,
        "MVS4",
        Report {
            seq: 21,
            newconn: vec![c],
            ..Default::default()
        },
    );
    assert!(errs.is_empty(), "{errs:?}");
    let e = s.core.crt()[&key(&c)];
    assert_eq!(
        (e.target, e.origin, e.server_originated()),
        (4, Origin::NewConn, true)
    );
    assert_eq!(
        s.switches["MVS1"].tables[&Key::Crt(key(&c))],
        Value::ToTarget { target: 4 }
    );
}

#[test]
fn digest_is_acked_only_after_the_write_succeeded() {
    let mut s = sim();
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    let k = ConnKey::new("198.51.100.9".parse().unwrap(), 1000, DVA1, 60, TCP);
    s.core.handle(
        s.now,
        Event::Digest {
            switch: "MVS1".into(),
            list_id: 5,
            items: vec![DigestItem {
                conn: k,
                service: svc,
                target: 2,
                not_syn: false,
            }],
        },
    );
    // Not run yet: a write is pending and no ack was emitted.
    let mut pending = Vec::new();
    while let Some(a) = s.core.poll_action() {
        pending.push(a);
    }
    assert!(pending.iter().any(|a| matches!(a, Action::Write { updates, .. } if updates.iter().any(|u| u.key == Key::Crt(k)))));
    assert!(
        !pending
            .iter()
            .any(|a| matches!(a, Action::AckDigest { .. })),
        "{pending:?}"
    );
    let Some(Action::Write { batch, updates, .. }) = pending
        .into_iter()
        .find(|a| matches!(a, Action::Write { .. }))
    else {
        unreachable!()
    };
    s.core.handle(
        s.now,
        Event::WriteResult {
            switch: "MVS1".into(),
            batch,
            results: vec![dvipa_core::core::WriteOutcome::Ok; updates.len()],
        },
    );
    assert_eq!(
        s.core.poll_action(),
        Some(Action::AckDigest {
            switch: "MVS1".into(),
            list_id: 5
        })
    );
}

#[test]
fn newconn_from_impossible_client_addresses_is_refused_by_reason_and_not_pinned() {
    let mut s = sim();
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let crt_before = s.core.crt().clone();
    let clients = ["0.1.2.3", "127.0.0.1", "224.0.0.1", "255.255.255.255"];
    let newconn: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, a)| ConnReportExt::with_client(conn(7100 + i as u16, DVA1), a))
        .collect();
    let errs = report(
        &mut s,
        "MVS2",
        Report {
            seq: 40,
            newconn,
            ..Default::default()
        },
    );
    let got: Vec<&str> = errs.iter().map(|e| e.reason).collect();
    assert_eq!(
        got,
        vec![
            "client_this_network",
            "client_loopback",
            "client_multicast",
            "client_broadcast"
        ]
    );
    assert_eq!(
        errs[3].detail,
        "client address 255.255.255.255 cannot be a TCP/UDP peer (broadcast)"
    );
    assert_eq!(s.core.crt(), &crt_before, "nothing pinned");
    // A real client still goes in.
    let errs = report(
        &mut s,
        "MVS2",
        Report {
            seq: 41,
            newconn: vec![conn(7200, DVA1)],
            ..Default::default()
        },
    );
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(s.core.crt().len(), crt_before.len() + 1);
}

trait ConnReportExt {
    fn with_client(self, a: &str) -> Self;
}

impl ConnReportExt for dvipa_core::core::ConnReport {
    fn with_client(mut self, a: &str) -> Self {
        self.client = a.parse().unwrap();
        self
    }
}

#[test]
fn report_items_are_validated_one_by_one_and_bad_ones_change_nothing() {
    let mut s = sim();
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let c = conn(7000, DVA1);
    assert!(
        report(
            &mut s,
            "MVS2",
            Report {
                seq: 30,
                newconn: vec![c],
                ..Default::default()
            }
        )
        .is_empty()
    );
    let crt_before = s.core.crt().clone();
    let tables_before = s.switches["MVS1"].tables.clone();
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    let dpt_before = s.core.services()[svc as usize].dpt.clone();
    let mut unknown = conn(7001, "192.0.2.99".parse().unwrap());
    unknown.dvipa_port = 60;
    let mut bad_port = conn(7002, DVA1);
    bad_port.dvipa_port = 70000;
    let errs = report(
        &mut s,
        "MVS2",
        Report {
            seq: 31,
            srvstat: vec![listen("192.0.2.99".parse().unwrap(), 60), listen(DVA1, 61)],
            newconn: vec![c, unknown, bad_port],
            termconn: vec![conn(7003, DVA1)],
            ..Default::default()
        },
    );
    let got: Vec<(&str, u32, &str)> = errs.iter().map(|e| (e.list, e.index, e.reason)).collect();
    assert_eq!(
        got,
        vec![
            ("srvstat", 0, "unknown_dvipa"),
            ("srvstat", 1, "unknown_port"),
            ("newconn", 0, "duplicate"),
            ("newconn", 1, "unknown_dvipa"),
            ("newconn", 2, "invalid"),
            ("termconn", 0, "late"),
        ]
    );
    // MVS5 is in no DESTIP list of DVA1; TERMCONN of another stack's connection.
    let errs = report(
        &mut s,
        "MVS5",
        Report {
            seq: 32,
            srvstat: vec![listen(DVA1, 60)],
            newconn: vec![conn(7004, DVA1)],
            ..Default::default()
        },
    );
    assert_eq!(
        errs.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec!["not_in_destip", "not_in_destip"]
    );
    let errs = report(
        &mut s,
        "MVS4",
        Report {
            seq: 33,
            termconn: vec![c],
            ..Default::default()
        },
    );
    assert_eq!(errs[0].reason, "not_owner");
    assert!(
        errs[0].detail.contains("pinned to `MVS2`"),
        "{}",
        errs[0].detail
    );
    assert_eq!(s.core.crt(), &crt_before);
    assert_eq!(s.switches["MVS1"].tables, tables_before);
    assert_eq!(s.core.services()[svc as usize].dpt, dpt_before);
    let c = s.core.counters();
    assert_eq!(
        (
            c["not_in_destip"],
            c["duplicate"],
            c["late"],
            c["unknown_dvipa"]
        ),
        (2, 1, 1, 2)
    );
    // A report before Hello.
    s.event(Event::AgentReport {
        stack: "MVS9".into(),
        report: Report {
            seq: 1,
            ..Default::default()
        },
    });
    assert!(
        matches!(s.out.last(), Some(Action::AgentAck { errors, .. }) if errors[0].reason == "no_hello")
    );
    // Hello with the wrong underlay address is refused.
    s.event(Event::AgentHello {
        stack: "MVS3".into(),
        underlay: "10.9.9.9".parse().unwrap(),
        epoch: 2,
    });
    assert!(
        matches!(s.out.last(), Some(Action::AgentRejected { reason, .. }) if reason.contains("10.0.0.3"))
    );
}

#[test]
fn lease_expiry_takes_targets_out_of_slots_but_keeps_pinned_connections() {
    let mut s = sim();
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let c = conn(8000, DVA1);
    assert!(
        report(
            &mut s,
            "MVS4",
            Report {
                seq: 40,
                newconn: vec![c],
                ..Default::default()
            }
        )
        .is_empty()
    );
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    // Everyone but MVS4 keeps heartbeating.
    for _ in 0..4 {
        s.advance(1000);
        for st in ["MVS1", "MVS2"] {
            s.event(Event::AgentHeartbeat {
                stack: st.into(),
                weight: 0,
            });
        }
    }
    let d = dpt_targets(&s.switches["MVS1"].tables, svc);
    assert_eq!(
        d.keys().copied().collect::<Vec<_>>(),
        vec![1, 2],
        "MVS4 left the slots"
    );
    assert_eq!(d.values().sum::<usize>(), 256);
    assert_eq!(
        s.switches["MVS1"].tables[&Key::Crt(key(&c))],
        Value::ToTarget { target: 4 }
    );
    let (at, why) = s.core.stale_reason(&key(&c)).unwrap();
    assert_eq!((at.0, why), (3000, "lease_expired"));
    assert!(s.core.counters()["lease_expired"] >= 1);
}

#[test]
fn idle_timeout_deletes_unless_the_agent_reported_the_connection() {
    let mut s = sim();
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let k1 = syn(&mut s, 9001, 1);
    let c2 = conn(9002, DVA1);
    assert!(
        report(
            &mut s,
            "MVS2",
            Report {
                seq: 50,
                newconn: vec![c2],
                ..Default::default()
            }
        )
        .is_empty()
    );
    s.event(Event::IdleTimeout {
        switch: "MVS1".into(),
        conns: vec![k1, key(&c2)],
    });
    assert!(!s.core.crt().contains_key(&k1));
    assert!(!s.switches["MVS1"].tables.contains_key(&Key::Crt(k1)));
    assert!(s.switches["MVS1"].tables.contains_key(&Key::Crt(key(&c2))));
    assert_eq!(
        (
            s.core.counters()["idle_removed"],
            s.core.counters()["idle_kept_alive"]
        ),
        (1, 1)
    );
}

#[test]
fn crt_full_is_counted_and_the_connection_stays_on_the_slot_path() {
    let mut s = sim();
    s.switches.get_mut("MVS1").unwrap().crt_capacity = Some(1);
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let k1 = syn(&mut s, 100, 1);
    let k2 = syn(&mut s, 101, 2);
    assert!(s.switches["MVS1"].tables.contains_key(&Key::Crt(k1)));
    assert!(!s.switches["MVS1"].tables.contains_key(&Key::Crt(k2)));
    assert!(s.core.crt().contains_key(&k2), "the core still knows it");
    assert_eq!(s.core.counters()["crt_overflow"], 1);
    // Both digest lists acked, and nothing is retried forever.
    assert_eq!(
        s.outputs(|a| matches!(a, Action::AckDigest { .. })).len(),
        2
    );
    let writes = s.switches["MVS1"].writes;
    s.advance(10);
    assert_eq!(s.switches["MVS1"].writes, writes);
}

#[test]
fn full_sync_drops_what_was_not_rereported() {
    let mut s = sim();
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let (a, b) = (conn(1, DVA1), conn(2, DVA1));
    assert!(
        report(
            &mut s,
            "MVS2",
            Report {
                seq: 60,
                newconn: vec![a, b],
                ..Default::default()
            }
        )
        .is_empty()
    );
    s.advance(2000);
    // Agent restarts: re-reports only `a`, and no longer listens.
    s.event(Event::AgentHello {
        stack: "MVS2".into(),
        underlay: underlay("MVS2"),
        epoch: 9,
    });
    let errs = report(
        &mut s,
        "MVS2",
        Report {
            seq: 1,
            newconn: vec![a],
            full_sync: true,
            sync_done: true,
            ..Default::default()
        },
    );
    assert!(errs.is_empty(), "{errs:?}");
    assert!(s.core.crt().contains_key(&key(&a)));
    assert!(!s.core.crt().contains_key(&key(&b)));
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    assert!(!s.core.target_ready(svc, 2));
    assert_eq!(s.core.stale_reason(&key(&a)).unwrap().1, "not_rereported");
}

#[test]
fn vipa_lists_name_candidates_owner_and_backups() {
    let mut s = sim();
    hello(&mut s, "MVS3");
    let Some(Action::SendVipaList { list, .. }) = s
        .out
        .iter()
        .rev()
        .find(|a| matches!(a, Action::SendVipaList { stack, .. } if stack == "MVS3"))
        .cloned()
    else {
        panic!()
    };
    // MVS3 is a candidate of DVB1 (ALL) and of DVA1 only through MVS5's own list: it still
    // learns DVA1 (to re-report after a takeover), with MVS1's current list.
    let dvas: Vec<_> = list
        .vipas
        .iter()
        .map(|v| (v.dvipa, v.owner.as_str(), v.backups.clone()))
        .collect();
    assert_eq!(
        dvas,
        vec![
            (DVA1, "MVS1", vec!["MVS5".to_string()]),
            (DVB1, "MVS5", vec!["MVS1".to_string()])
        ]
    );
    assert!(list.vipas[1].all_stacks);
}

#[test]
fn failed_writes_are_counted_and_not_retried_forever() {
    let mut s = sim();
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let c = conn(6100, DVA1);
    assert!(
        report(
            &mut s,
            "MVS2",
            Report {
                seq: 70,
                newconn: vec![c],
                ..Default::default()
            }
        )
        .is_empty()
    );
    // TERMCONN: the switch answers the delete with an internal error.
    s.core.handle(
        s.now,
        Event::AgentReport {
            stack: "MVS2".into(),
            report: Report {
                seq: 71,
                termconn: vec![c],
                ..Default::default()
            },
        },
    );
    let mut writes = 0;
    while let Some(a) = s.core.poll_action() {
        if let Action::Write {
            switch,
            batch,
            updates,
        } = a
        {
            writes += 1;
            let results =
                vec![dvipa_core::core::WriteOutcome::Other("INTERNAL".into()); updates.len()];
            s.core.handle(
                s.now,
                Event::WriteResult {
                    switch,
                    batch,
                    results,
                },
            );
        }
        if writes > 10 {
            break;
        }
    }
    assert_eq!(writes, 1, "one attempt, no retry loop");
    assert_eq!(s.core.counters()["crt_delete_failed"], 1);
    assert!(!s.core.crt().contains_key(&key(&c)));
}

#[test]
fn crt_full_entries_are_retried_when_deletes_free_space() {
    let mut s = sim();
    s.switches.get_mut("MVS1").unwrap().crt_capacity = Some(1);
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let k1 = syn(&mut s, 100, 1);
    let k2 = syn(&mut s, 101, 2);
    assert!(!s.switches["MVS1"].tables.contains_key(&Key::Crt(k2)));
    assert_eq!(s.core.counters()["crt_overflow"], 1);
    // k1 goes idle (never reported by its stack): its delete frees the slot k2 waits for.
    s.event(Event::IdleTimeout {
        switch: "MVS1".into(),
        conns: vec![k1],
    });
    let t = &s.switches["MVS1"].tables;
    assert!(!t.contains_key(&Key::Crt(k1)));
    assert!(
        t.contains_key(&Key::Crt(k2)),
        "k2 written once there was room"
    );
    assert_eq!(s.core.counters()["crt_overflow_retried"], 1);
    assert_eq!(s.core.installed("MVS1"), s.core.desired("MVS1"));
}

#[test]
fn digests_arriving_while_the_switch_syncs_are_pinned_after_its_read() {
    let mut s = sim();
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    let k = ConnKey::new("198.51.100.7".parse().unwrap(), 4242, DVA1, 60, TCP);
    let t = s.switches["MVS1"].tables[&Key::Dpt {
        service: svc,
        slot: 4242 % 256,
    }]
        .target()
        .unwrap();
    // The switch reconnects; a digest list comes before the core has read its tables.
    s.core.handle(
        s.now,
        Event::SwitchUp {
            switch: "MVS1".into(),
        },
    );
    s.core.handle(
        s.now,
        Event::Digest {
            switch: "MVS1".into(),
            list_id: 77,
            items: vec![DigestItem {
                conn: k,
                service: svc,
                target: t,
                not_syn: false,
            }],
        },
    );
    assert!(!s.core.crt().contains_key(&k), "not pinned before the read");
    s.run();
    assert_eq!(s.core.counters()["digest_buffered_syncing"], 1);
    assert!(!s.core.counters().contains_key("digest_from_switch_not_up"));
    assert_eq!(s.core.crt()[&k].target(), t);
    assert!(s.switches["MVS1"].tables.contains_key(&Key::Crt(k)));
    // Acked after the entry was written.
    let ack = s
        .emitted_at(|a| matches!(a, Action::AckDigest { list_id: 77, .. }))
        .expect("acked");
    let written = s
        .write_log
        .iter()
        .position(|(_, ups)| ups.iter().any(|u| u.key == Key::Crt(k)))
        .expect("written");
    assert!(written < ack);
}

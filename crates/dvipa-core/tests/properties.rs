//! Property tests over random event sequences (switch failures and returns, operator moves,
//! agents attaching, listening, reporting and ending connections, SYN digests, idle timeouts,
//! time passing). After every step:
//! - no switch ever holds an entry naming a missing target (checked by the simulation on every
//!   write batch);
//! - failover events (switch down/up, moves, maintenance) never change the CRT;
//! - every pinned connection whose target is not ready has a recorded reason;
//! - every up switch holds exactly what the core wants it to hold, and the switch advertising a
//!   DVIPA holds its dvipa entries and all its pinned connections.
//!
//! The second property runs the same sequences with small batches and several batches in
//! flight per switch, answered in a random order and interleaved with the next events (the
//! simulation checks the phase order of every batch written).
mod common;
use common::*;
use dvipa_core::core::{ConnReport, Core, CoreOptions, DigestItem, Event, Report};
use dvipa_core::entries::{ConnKey, Key, TCP};
use dvipa_core::sim::Sim;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const SWITCHES: [&str; 2] = ["MVS1", "MVS5"];
const STACKS: [&str; 5] = ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"];
const VIPAS: [Ipv4Addr; 2] = [DVA1, DVB1];

#[derive(Debug, Clone)]
enum Op {
    Down(usize),
    Up(usize, bool),
    Move(usize, usize),
    Maintenance(usize, bool),
    Hello(usize),
    Listen(usize, usize, bool),
    NewConn(usize, usize, u16),
    TermConn(usize, usize, u16),
    Syn(usize, u16),
    Idle(usize, u16),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..2usize).prop_map(Op::Down),
        2 => (0..2usize, any::<bool>()).prop_map(|(s, w)| Op::Up(s, w)),
        1 => (0..2usize, 0..2usize).prop_map(|(v, s)| Op::Move(v, s)),
        1 => (0..2usize, any::<bool>()).prop_map(|(s, on)| Op::Maintenance(s, on)),
        2 => (0..5usize).prop_map(Op::Hello),
        3 => (0..5usize, 0..2usize, any::<bool>()).prop_map(|(s, v, l)| Op::Listen(s, v, l)),
        3 => (0..5usize, 0..2usize, 0..20u16).prop_map(|(s, v, p)| Op::NewConn(s, v, p)),
        2 => (0..5usize, 0..2usize, 0..20u16).prop_map(|(s, v, p)| Op::TermConn(s, v, p)),
        4 => (0..2usize, 0..40u16).prop_map(|(v, p)| Op::Syn(v, p)),
        1 => (0..2usize, 0..40u16).prop_map(|(v, p)| Op::Idle(v, p)),
        2 => (100..4000u64).prop_map(Op::Advance),
    ]
}

fn creport(v: usize, p: u16) -> ConnReport {
    ConnReport {
        client: Ipv4Addr::new(198, 51, 100, 1),
        client_port: 1000 + u32::from(p),
        dvipa: VIPAS[v],
        dvipa_port: 60,
        protocol: 6,
        server_originated: p.is_multiple_of(2),
    }
}

fn check(s: &dvipa_core::sim::Sim, step: &Op) -> Result<(), TestCaseError> {
    for (k, e) in s.core.crt() {
        let t = e.target;
        prop_assert!((1..=5).contains(&t), "{k}: bad target {t}");
        if let Some((_, why)) = s.core.stale_reason(k) {
            prop_assert_ne!(why, "unrecorded", "{} after {:?}", k, step);
        }
    }
    for sw in SWITCHES {
        let sim = &s.switches[sw];
        if !sim.up || s.core.liveness(sw) != Some(dvipa_core::core::SwitchLiveness::Up) {
            continue;
        }
        let desired = s.core.desired(sw).unwrap();
        prop_assert_eq!(
            &sim.tables,
            &desired,
            "switch {} differs from the core after {:?}",
            sw,
            step
        );
        prop_assert_eq!(&s.core.installed(sw).unwrap(), &desired);
    }
    for v in VIPAS {
        if let Some(sw) = s.core.advertised(v)
            && s.switches[sw].up
            && s.core.owner(v) == Some(sw)
        {
            let t = &s.switches[sw].tables;
            prop_assert!(
                has_dvipa(t, v),
                "{} advertised on {} without its dvipa entry",
                v,
                sw
            );
            for k in s.core.crt().keys().filter(|k| k.dvipa() == v) {
                prop_assert!(
                    t.contains_key(&Key::Crt(*k)),
                    "{} advertised on {} without {}",
                    v,
                    sw,
                    k
                );
            }
        }
    }
    Ok(())
}

/// Applies one step.
fn step(s: &mut Sim, seq: u64, o: &Op) -> Result<(), TestCaseError> {
    let crt_before = s.core.crt().clone();
    match *o {
        Op::Down(i) => s.switch_down(SWITCHES[i]),
        Op::Up(i, wipe) => s.switch_up(SWITCHES[i], wipe),
        Op::Move(v, i) => s.event(Event::AdminMove {
            dvipa: VIPAS[v],
            to: SWITCHES[i].into(),
        }),
        Op::Maintenance(i, on) => s.event(Event::AdminMaintenance {
            switch: SWITCHES[i].into(),
            on,
        }),
        Op::Hello(st) => hello(s, STACKS[st]),
        Op::Listen(st, v, l) => {
            let mut x = listen(VIPAS[v], 60);
            x.listening = l;
            s.event(Event::AgentReport {
                stack: STACKS[st].into(),
                report: Report {
                    seq,
                    srvstat: vec![x],
                    ..Default::default()
                },
            });
        }
        Op::NewConn(st, v, p) => s.event(Event::AgentReport {
            stack: STACKS[st].into(),
            report: Report {
                seq,
                newconn: vec![creport(v, p)],
                ..Default::default()
            },
        }),
        Op::TermConn(st, v, p) => s.event(Event::AgentReport {
            stack: STACKS[st].into(),
            report: Report {
                seq,
                termconn: vec![creport(v, p)],
                ..Default::default()
            },
        }),
        Op::Syn(v, p) => {
            let Some(owner) = s.core.owner(VIPAS[v]).map(str::to_string) else {
                return Ok(());
            };
            if !s.switches[&owner].up {
                return Ok(());
            }
            let svc = s.core.service_of(VIPAS[v], 60, TCP).unwrap();
            let conn = ConnKey::new(Ipv4Addr::new(198, 51, 100, 2), 5000 + p, VIPAS[v], 60, TCP);
            let slot = (u32::from(p) * 7 % 256) as u16;
            let Some(target) = s.switches[&owner]
                .tables
                .get(&Key::Dpt { service: svc, slot })
                .and_then(|v| v.target())
            else {
                return Ok(());
            };
            s.event(Event::Digest {
                switch: owner,
                list_id: seq,
                items: vec![DigestItem {
                    conn,
                    service: svc,
                    target,
                    not_syn: false,
                }],
            });
        }
        Op::Idle(v, p) => {
            let Some(owner) = s.core.owner(VIPAS[v]).map(str::to_string) else {
                return Ok(());
            };
            let conn = ConnKey::new(Ipv4Addr::new(198, 51, 100, 2), 5000 + p, VIPAS[v], 60, TCP);
            s.event(Event::IdleTimeout {
                switch: owner,
                conns: vec![conn],
            });
        }
        Op::Advance(ms) => s.advance(ms),
    }
    if matches!(
        o,
        Op::Down(_) | Op::Up(..) | Op::Move(..) | Op::Maintenance(..)
    ) {
        prop_assert_eq!(
            s.core.crt(),
            &crt_before,
            "failover step {:?} changed the CRT",
            o
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_event_sequences_keep_the_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut s = sim();
        s.switch_up("MVS1", true);
        s.switch_up("MVS5", true);
        for (seq, o) in (101u64..).zip(ops.iter()) {
            step(&mut s, seq, o)?;
            check(&s, o)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn writes_in_flight_answered_out_of_order_keep_the_invariants(
        ops in proptest::collection::vec((op(), 0..4usize, any::<u64>()), 1..60),
    ) {
        let opts = CoreOptions { max_batch: 2, max_in_flight: 3 };
        let mut s = Sim::new(Core::new(cluster(|t| t), opts).unwrap());
        s.hold_writes = true;
        s.switch_up("MVS1", true);
        s.switch_up("MVS5", true);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut pick = move |seed: u64, n: usize| {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(seed | 1);
            (rng >> 33) as usize % n
        };
        s.release_all(|n| pick(1, n));
        for (seq, (o, keep, seed)) in (101u64..).zip(ops.iter()) {
            step(&mut s, seq, o)?;
            // Answer all but `keep` of the writes in flight, in a random order; the rest stay
            // in flight across the next event.
            while s.held.len() > *keep {
                let i = pick(*seed, s.held.len());
                s.release(i);
            }
            if s.held.is_empty() {
                check(&s, o)?;
            }
        }
        s.release_all(|n| pick(7, n));
        check(&s, &Op::Advance(0))?;
    }
}

#[test]
fn several_batches_are_in_flight_at_once() {
    let opts = CoreOptions {
        max_batch: 2,
        max_in_flight: 3,
    };
    let mut s = Sim::new(Core::new(cluster(|t| t), opts).unwrap());
    s.hold_writes = true;
    s.switch_up("MVS1", true);
    s.release_all(|_| 0);
    attach_fig4(&mut s);
    s.release_all(|_| 0);
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    let items: Vec<DigestItem> = (0..10u16)
        .map(|p| DigestItem {
            conn: ConnKey::new(Ipv4Addr::new(198, 51, 100, 2), 7000 + p, DVA1, 60, TCP),
            service: svc,
            target: 1,
            not_syn: false,
        })
        .collect();
    s.event(Event::Digest {
        switch: "MVS1".into(),
        list_id: 1,
        items: items.clone(),
    });
    assert_eq!(s.held.len(), 3, "three CRT batches of two in flight");
    // Answered newest first; the list is acked only when all ten entries are written.
    s.release_all(|n| n - 1);
    assert_eq!(s.max_outstanding, 3);
    let acks = s
        .outputs(|a| matches!(a, dvipa_core::core::Action::AckDigest { list_id: 1, .. }))
        .len();
    assert_eq!(acks, 1);
    for it in &items {
        assert!(s.switches["MVS1"].tables.contains_key(&Key::Crt(it.conn)));
    }
}

#[test]
fn a_reconnect_while_a_changed_entry_is_in_flight_still_writes_it() {
    let opts = CoreOptions {
        max_batch: 2,
        max_in_flight: 3,
    };
    let mut s = Sim::new(Core::new(cluster(|t| t), opts).unwrap());
    s.hold_writes = true;
    s.switch_up("MVS1", true);
    s.release_all(|_| 0);
    attach_fig4(&mut s);
    s.release_all(|_| 0);
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    let item = DigestItem {
        conn: ConnKey::new(Ipv4Addr::new(198, 51, 100, 2), 7100, DVA1, 60, TCP),
        service: svc,
        target: 1,
        not_syn: false,
    };
    s.event(Event::Digest {
        switch: "MVS1".into(),
        list_id: 1,
        items: vec![item],
    });
    assert_eq!(s.held.len(), 1, "its insert is in flight");
    // The same connection again while its insert is in flight, then the session breaks: the
    // write is lost and the switch is read again.
    s.event(Event::Digest {
        switch: "MVS1".into(),
        list_id: 2,
        items: vec![item],
    });
    s.switch_up("MVS1", false);
    s.release_all(|_| 0);
    assert!(s.switches["MVS1"].tables.contains_key(&Key::Crt(item.conn)));
    assert_eq!(s.core.installed("MVS1"), s.core.desired("MVS1"));
}

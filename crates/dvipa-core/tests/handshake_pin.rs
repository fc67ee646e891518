//! `pin_on = "handshake"` (the default): a connection reported by SYN digest is pinned only when
//! its first non-SYN packet (the handshake's ACK) is reported with the SYN's target, so spoofed
//! SYNs (a SYN flood) never reach the CRT; the SYNs waiting are bounded in count and age.
mod common;
use common::*;
use dvipa_core::core::{Action, DigestItem, Event, Report};
use dvipa_core::entries::{ConnKey, Key, TCP};
use dvipa_core::syn_seen::SYN_SEEN_CAP;
use std::net::Ipv4Addr;

/// The figure-4 cluster with the default pin policy.
fn handshake_sim() -> dvipa_core::sim::Sim {
    sim_with(|t| t.replace("pin_on = \"syn\"\n", ""))
}

fn item(k: ConnKey, svc: u16, target: u16, not_syn: bool) -> DigestItem {
    DigestItem {
        conn: k,
        service: svc,
        target,
        not_syn,
    }
}

fn digest(s: &mut dvipa_core::sim::Sim, list_id: u64, items: Vec<DigestItem>) {
    s.event(Event::Digest {
        switch: "MVS1".into(),
        list_id,
        items,
    });
}

fn acked(s: &dvipa_core::sim::Sim, list: u64) -> bool {
    s.emitted_at(|a| matches!(a, Action::AckDigest { list_id, .. } if *list_id == list))
        .is_some()
}

/// Ready cluster; returns the service of DVA1:60 and the target of slot 0.
fn setup(s: &mut dvipa_core::sim::Sim) -> (u16, u16) {
    s.switch_up("MVS1", true);
    attach_fig4(s);
    let svc = s.core.service_of(DVA1, 60, TCP).unwrap();
    let t = s.switches["MVS1"].tables[&Key::Dpt {
        service: svc,
        slot: 0,
    }]
        .target()
        .unwrap();
    (svc, t)
}

#[test]
fn a_syn_alone_is_not_pinned_and_its_digest_is_acked() {
    let mut s = handshake_sim();
    let (svc, t) = setup(&mut s);
    let k = ConnKey::new("198.51.100.7".parse().unwrap(), 1000, DVA1, 60, TCP);
    digest(&mut s, 1, vec![item(k, svc, t, false)]);
    assert!(!s.core.crt().contains_key(&k));
    assert!(!s.switches["MVS1"].tables.contains_key(&Key::Crt(k)));
    assert!(
        acked(&s, 1),
        "a list with nothing to write is acked at once"
    );
    assert_eq!(s.core.counters()["digest_syn_recorded"], 1);
    assert_eq!(s.core.syns_waiting(), 1);
}

#[test]
fn the_handshake_ack_pins_with_the_syn_target_and_is_acked_after_the_write() {
    let mut s = handshake_sim();
    let (svc, t) = setup(&mut s);
    let k = ConnKey::new("198.51.100.7".parse().unwrap(), 1001, DVA1, 60, TCP);
    digest(&mut s, 1, vec![item(k, svc, t, false)]);
    s.advance(5);
    digest(&mut s, 2, vec![item(k, svc, t, true)]);
    assert_eq!(s.core.crt()[&k].target(), t);
    assert_eq!(s.core.counters()["crt_pinned_handshake"], 1);
    assert!(s.switches["MVS1"].tables.contains_key(&Key::Crt(k)));
    let ack = s
        .emitted_at(|a| matches!(a, Action::AckDigest { list_id: 2, .. }))
        .expect("acked");
    let written = s
        .write_log
        .iter()
        .position(|(_, ups)| ups.iter().any(|u| u.key == Key::Crt(k)))
        .expect("written");
    assert!(written < ack);
    assert_eq!(s.core.syns_waiting(), 0);
}

#[test]
fn a_non_syn_without_its_syn_or_with_another_target_is_not_pinned() {
    let mut s = handshake_sim();
    let (svc, t) = setup(&mut s);
    let other = if t == 1 { 2 } else { 1 };
    // Mid-connection packet nobody reported.
    let a = ConnKey::new("198.51.100.7".parse().unwrap(), 1002, DVA1, 60, TCP);
    digest(&mut s, 1, vec![item(a, svc, t, true)]);
    // SYN to t, then its ACK reported with another target (the slots moved and its
    // syn_pending cell was overwritten): not pinned by guess.
    let b = ConnKey::new("198.51.100.7".parse().unwrap(), 1003, DVA1, 60, TCP);
    digest(&mut s, 2, vec![item(b, svc, t, false)]);
    digest(&mut s, 3, vec![item(b, svc, other, true)]);
    assert!(s.core.crt().is_empty());
    assert_eq!(s.core.counters()["digest_not_syn_unpinned"], 1);
    assert_eq!(s.core.counters()["digest_not_syn_target_changed"], 1);
    // The server's NEWCONN pins it all the same.
    let mut c = conn(1003, DVA1);
    c.client = "198.51.100.7".parse().unwrap();
    let owner = s.core.stack_name(t).unwrap().to_string();
    assert!(
        report(
            &mut s,
            &owner,
            Report {
                seq: 50,
                newconn: vec![c],
                ..Default::default()
            }
        )
        .is_empty()
    );
    assert_eq!(s.core.crt()[&b].target(), t);
}

#[test]
fn an_ack_after_the_syn_ttl_is_not_pinned() {
    let mut s = handshake_sim();
    let (svc, t) = setup(&mut s);
    let k = ConnKey::new("198.51.100.7".parse().unwrap(), 1004, DVA1, 60, TCP);
    digest(&mut s, 1, vec![item(k, svc, t, false)]);
    s.advance(dvipa_core::syn_seen::SYN_SEEN_TTL_MS + 500);
    digest(&mut s, 2, vec![item(k, svc, t, true)]);
    assert!(s.core.crt().is_empty());
}

/// 200,000 spoofed SYNs (distinct sources, never followed by an ACK) with real handshakes mixed
/// in: the CRT holds exactly the real connections, the SYNs waiting stay at the cap, and every
/// flood digest list is acked.
#[test]
fn a_syn_flood_never_reaches_the_crt_and_memory_is_bounded() {
    let mut s = handshake_sim();
    let (svc, t) = setup(&mut s);
    let mut real = Vec::new();
    let mut list = 10u64;
    for burst in 0..200u32 {
        let items: Vec<DigestItem> = (0..1000u32)
            .map(|i| {
                let n = burst * 1000 + i;
                let src = Ipv4Addr::from(0x0b00_0000 | n);
                item(
                    ConnKey::new(src, (n % 60000) as u16 + 1024, DVA1, 60, TCP),
                    svc,
                    t,
                    false,
                )
            })
            .collect();
        digest(&mut s, list, items);
        list += 1;
        // A real client completes its handshake in the middle of the flood.
        if burst % 20 == 0 {
            let k = ConnKey::new(
                "198.51.100.99".parse().unwrap(),
                2000 + burst as u16,
                DVA1,
                60,
                TCP,
            );
            digest(&mut s, list, vec![item(k, svc, t, false)]);
            list += 1;
            s.advance(1);
            digest(&mut s, list, vec![item(k, svc, t, true)]);
            list += 1;
            real.push(k);
        }
        s.advance(10);
    }
    assert_eq!(s.core.crt().len(), real.len());
    for k in &real {
        assert!(s.switches["MVS1"].tables.contains_key(&Key::Crt(*k)));
    }
    assert!(s.core.syns_waiting() <= SYN_SEEN_CAP);
    let c = s.core.counters();
    assert_eq!(c["digest_syn_recorded"], 200_000 + real.len() as u64);
    assert!(
        c["syn_seen_evicted"] + c.get("syn_seen_expired").copied().unwrap_or(0)
            >= 200_000 - SYN_SEEN_CAP as u64
    );
    for l in 10..list {
        assert!(acked(&s, l), "list {l} not acked");
    }
}

#[test]
fn the_syn_policy_still_pins_at_the_syn() {
    let mut s = sim();
    let (svc, t) = setup(&mut s);
    let k = ConnKey::new("198.51.100.7".parse().unwrap(), 1005, DVA1, 60, TCP);
    digest(&mut s, 1, vec![item(k, svc, t, false)]);
    assert_eq!(s.core.crt()[&k].target(), t);
    assert_eq!(s.core.counters()["crt_pinned_syn"], 1);
}

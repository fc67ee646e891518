//! Frames in, frames out: every table and branch of the dvipa pipeline, with exact output bytes.
//! Input and expected frames are built with etherparse (an independent IPv4 checksum).

use dvipa_switch::pipeline::{
    FLAG_NOT_SYN, crc16, slot_hash, syn_pending_cell, syn_pending_index, syn_pending_tag,
};
use dvipa_switch::tables::{
    CrtKey, DptKey, DvipaAction, DvipaKey, EntryMeta, RouteAction, RouteKey, SelectAction,
    TargetAction,
};
use dvipa_switch::{DropReason, Learn, Output, Pipeline, Verdict};
use etherparse::{IpNumber, Ipv4Header, PacketBuilder};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SWITCH_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const SERVER1_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x01];
const SERVER2_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x02];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 0x01];
const CLIENT: [u8; 4] = [10, 0, 0, 1];
const VIPA: [u8; 4] = [10, 0, 0, 100];
const PAYLOAD: &[u8] = b"hello dvipa";

fn ip(a: [u8; 4]) -> u32 {
    u32::from_be_bytes(a)
}

enum Tcp {
    Syn,
    SynAck,
    Ack,
}

fn tcp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, kind: Tcp, ttl: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SWITCH_MAC)
        .ipv4(src, dst, ttl)
        .tcp(sport, dport, 1000, 64240);
    let b = match kind {
        Tcp::Syn => b.syn(),
        Tcp::SynAck => b.syn().ack(1),
        Tcp::Ack => b.ack(1),
    };
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).unwrap();
    v
}

fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, ttl: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, SWITCH_MAC)
        .ipv4(src, dst, ttl)
        .udp(sport, dport)
        .write(&mut v, PAYLOAD)
        .unwrap();
    v
}

/// Applies `f` to the IPv4 header at offset `off` and rewrites it with a fresh checksum.
fn edit_ipv4(frame: &[u8], off: usize, f: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
    let (mut h, _) = Ipv4Header::from_slice(&frame[off..]).unwrap();
    f(&mut h);
    let mut out = frame[..off].to_vec();
    h.write(&mut out).unwrap();
    out.extend_from_slice(&frame[off + h.header_len()..]);
    out
}

fn macs(frame: &[u8], dmac: [u8; 6], smac: [u8; 6]) -> Vec<u8> {
    let mut v = frame.to_vec();
    v[0..6].copy_from_slice(&dmac);
    v[6..12].copy_from_slice(&smac);
    v
}

struct Sw {
    p: Pipeline,
    out: Output,
}

impl Sw {
    fn new() -> Self {
        Sw {
            p: Pipeline::new(),
            out: Output::default(),
        }
    }
    fn send(&mut self, frame: &[u8]) -> Verdict {
        self.p.process(1, frame, &mut self.out)
    }
    fn expect_out(&mut self, frame: &[u8], port: u16, expected: &[u8]) {
        assert_eq!(self.send(frame), Verdict::Forward(port));
        assert_eq!(hex(&self.out.frame), hex(expected));
    }
    fn digests(&mut self) -> Vec<Learn> {
        std::mem::take(&mut self.out.digests)
    }
    /// A DVIPA service 7 on VIPA:80/TCP and VIPA:any/UDP, two L2 targets and one IP-in-IP target,
    /// every slot of service 7 on target 1 except slot 162 (hash of the test tuple) on target 2.
    fn with_service(method: u8) -> Self {
        let sw = Sw::new();
        {
            let mut t = sw.p.tables_mut();
            let m = EntryMeta::default();
            t.dvipa
                .insert(
                    DvipaKey {
                        dst: ip(VIPA),
                        proto: 6,
                        dport: 80,
                        dport_mask: 0xffff,
                        priority: 10,
                    },
                    DvipaAction::Distribute {
                        service_id: 7,
                        method,
                    },
                    m.clone(),
                )
                .unwrap();
            t.dvipa
                .insert(
                    DvipaKey {
                        dst: ip(VIPA),
                        proto: 17,
                        dport: 0,
                        dport_mask: 0,
                        priority: 1,
                    },
                    DvipaAction::Distribute {
                        service_id: 7,
                        method,
                    },
                    m.clone(),
                )
                .unwrap();
            for slot in 0..256u16 {
                let tid = if slot == 162 { 2 } else { 1 };
                t.dpt
                    .insert(
                        DptKey {
                            service_id: 7,
                            slot,
                        },
                        SelectAction::ToTarget(tid),
                        m.clone(),
                        0,
                    )
                    .unwrap();
            }
            t.target
                .insert(
                    1,
                    TargetAction::ForwardL2 {
                        dmac: SERVER1_MAC,
                        port: 2,
                    },
                    m.clone(),
                    0,
                )
                .unwrap();
            t.target
                .insert(
                    2,
                    TargetAction::ForwardL2 {
                        dmac: SERVER2_MAC,
                        port: 3,
                    },
                    m.clone(),
                    0,
                )
                .unwrap();
            t.target
                .insert(
                    3,
                    TargetAction::EncapIpip {
                        outer_src: ip([192, 168, 0, 1]),
                        outer_dst: ip([192, 168, 5, 9]),
                    },
                    m.clone(),
                    0,
                )
                .unwrap();
            t.route
                .insert(
                    RouteKey {
                        prefix: ip([192, 168, 5, 0]),
                        len: 24,
                    },
                    RouteAction::SetNexthop {
                        dmac: ROUTER_MAC,
                        smac: SWITCH_MAC,
                        port: 4,
                    },
                    m,
                )
                .unwrap();
        }
        sw
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn slot_hash_matches_reference_crc32() {
    // Reference values from zlib's crc32 over the 13-byte tuple.
    assert_eq!(slot_hash(ip(CLIENT), ip(VIPA), 6, 12345, 80), 162);
    assert_eq!(slot_hash(ip([192, 168, 1, 7]), ip(VIPA), 17, 5353, 53), 69);
}

#[test]
fn non_ipv4_and_malformed_frames_are_dropped_with_reason() {
    let mut sw = Sw::with_service(0);
    let mut arp = vec![0u8; 42];
    arp[12] = 0x08;
    arp[13] = 0x06;
    assert_eq!(sw.send(&arp), Verdict::Drop(DropReason::NotIpv4(0x0806)));
    let syn = tcp_frame(CLIENT, 12345, VIPA, 80, Tcp::Syn, 64);
    assert!(matches!(
        sw.send(&syn[..40]),
        Verdict::Drop(DropReason::Parser(_))
    ));
    let mut bad = syn.clone();
    bad[14] = 0x65;
    assert!(matches!(
        sw.send(&bad),
        Verdict::Drop(DropReason::Parser(_))
    ));
    assert!(matches!(sw.send(&[]), Verdict::Drop(DropReason::Parser(_))));
    let s = &sw.p.stats;
    assert_eq!(s.drop_parser.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(
        s.drop_not_ipv4.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(sw.digests().is_empty());
}

#[test]
fn syn_miss_selects_hash_slot_digests_and_forwards_l2() {
    let mut sw = Sw::with_service(0);
    let syn = tcp_frame(CLIENT, 12345, VIPA, 80, Tcp::Syn, 64);
    // Slot 162 -> target 2 -> SERVER2_MAC on port 3; TTL and smac untouched.
    let mut expected = syn.clone();
    expected[0..6].copy_from_slice(&SERVER2_MAC);
    sw.expect_out(&syn, 3, &expected);
    assert_eq!(
        sw.digests(),
        vec![Learn {
            src_addr: ip(CLIENT),
            dst_addr: ip(VIPA),
            protocol: 6,
            src_port: 12345,
            dst_port: 80,
            service_id: 7,
            target_id: 2,
            flags: 0,
        }]
    );
    // Another client port hashes elsewhere -> target 1 on port 2.
    let syn2 = tcp_frame(CLIENT, 12346, VIPA, 80, Tcp::Syn, 64);
    assert_ne!(slot_hash(ip(CLIENT), ip(VIPA), 6, 12346, 80), 162);
    let mut expected2 = syn2.clone();
    expected2[0..6].copy_from_slice(&SERVER1_MAC);
    sw.expect_out(&syn2, 2, &expected2);
    assert_eq!(sw.digests()[0].target_id, 1);
    assert_eq!(sw.p.service_counter[7].get(), (2, (syn.len() * 2) as u64));
}

#[test]
fn not_syn_flags_for_unpinned_tcp_and_udp_is_syn_like() {
    let mut sw = Sw::with_service(0);
    sw.send(&tcp_frame(CLIENT, 12345, VIPA, 80, Tcp::Ack, 64));
    assert_eq!(sw.digests()[0].flags, FLAG_NOT_SYN);
    sw.send(&tcp_frame(CLIENT, 12345, VIPA, 80, Tcp::SynAck, 64));
    assert_eq!(sw.digests()[0].flags, FLAG_NOT_SYN);
    let udp = udp_frame(CLIENT, 5000, VIPA, 53, 64);
    let v = sw.send(&udp);
    assert!(matches!(v, Verdict::Forward(_)));
    let d = sw.digests();
    assert_eq!((d[0].flags, d[0].protocol, d[0].dst_port), (0, 17, 53));
}

#[test]
fn crt_hit_pins_connection_without_digest_and_counts() {
    let mut sw = Sw::with_service(0);
    let key = CrtKey {
        src: ip(CLIENT),
        dst: ip(VIPA),
        proto: 6,
        sport: 12345,
        dport: 80,
    };
    sw.p.tables_mut()
        .crt
        .insert(key, SelectAction::ToTarget(1), EntryMeta::default(), 0)
        .unwrap();
    let pkt = tcp_frame(CLIENT, 12345, VIPA, 80, Tcp::Ack, 64);
    let mut expected = pkt.clone();
    expected[0..6].copy_from_slice(&SERVER1_MAC);
    sw.expect_out(&pkt, 2, &expected); // the hash slot would say target 2
    sw.expect_out(&pkt, 2, &expected);
    assert!(sw.digests().is_empty());
    let t = sw.p.tables();
    assert_eq!(
        t.crt.get(&key).unwrap().counter.get(),
        (2, 2 * pkt.len() as u64)
    );
    assert_eq!(
        t.target.get(&1).unwrap().counter.get(),
        (2, 2 * pkt.len() as u64)
    );
    assert!(
        t.crt
            .get(&key)
            .unwrap()
            .last_hit_ns
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

#[test]
fn dpt_miss_drops() {
    let mut sw = Sw::with_service(0);
    sw.p.tables_mut()
        .dpt
        .delete(&DptKey {
            service_id: 7,
            slot: 162,
        })
        .unwrap();
    assert_eq!(
        sw.send(&tcp_frame(CLIENT, 12345, VIPA, 80, Tcp::Syn, 64)),
        Verdict::Drop(DropReason::NoTarget {
            service_id: 7,
            slot: 162
        })
    );
    assert!(sw.digests().is_empty());
}

#[test]
fn round_robin_handshake_follows_the_syn_target_before_crt_entry() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut sw = Sw::with_service(1);
    // Even slots on target 1 (port 2), odd slots on target 2 (port 3).
    {
        let mut t = sw.p.tables_mut();
        for slot in (1..256u16).step_by(2) {
            t.dpt
                .modify(
                    &DptKey {
                        service_id: 7,
                        slot,
                    },
                    SelectAction::ToTarget(2),
                    EntryMeta::default(),
                    0,
                )
                .unwrap();
        }
    }
    let (c, d, e) = (41000u16, 41001u16, 41002u16);
    let idx = |sport| syn_pending_index(ip(CLIENT), ip(VIPA), 6, sport, 80);
    let tag = |sport| syn_pending_tag(ip(CLIENT), ip(VIPA), 6, sport, 80);
    assert!(idx(c) != idx(d) && idx(c) != idx(e) && idx(d) != idx(e));
    let fwd =
        |sw: &mut Sw, sport, kind| match sw.send(&tcp_frame(CLIENT, sport, VIPA, 80, kind, 64)) {
            Verdict::Forward(p) => p,
            v => panic!("{v:?}"),
        };

    // SYN of C: slot 0 -> target 1; its choice is recorded.
    assert_eq!(fwd(&mut sw, c, Tcp::Syn), 2);
    assert_eq!(
        sw.p.syn_pending[idx(c)].load(Relaxed),
        syn_pending_cell(tag(c), 1)
    );
    assert_eq!(sw.digests()[0].flags, 0);
    // ACK of C, no CRT entry yet: the SYN's target, round robin not advanced.
    assert_eq!(fwd(&mut sw, c, Tcp::Ack), 2);
    assert_eq!(sw.p.rr_state[7].load(Relaxed), 1);
    let dg = sw.digests();
    assert_eq!(dg.len(), 1);
    assert_eq!((dg[0].target_id, dg[0].flags), (1, FLAG_NOT_SYN));
    assert_eq!(fwd(&mut sw, c, Tcp::Ack), 2);
    // SYN of another connection D still advances: slot 1 -> target 2; its ACK follows.
    assert_eq!(fwd(&mut sw, d, Tcp::Syn), 3);
    assert_eq!(sw.p.rr_state[7].load(Relaxed), 2);
    assert_eq!(fwd(&mut sw, d, Tcp::Ack), 3);
    assert_eq!(fwd(&mut sw, c, Tcp::Ack), 2);
    // An ACK with no recorded choice falls back to the next slot (2 -> target 1), records nothing.
    assert_eq!(fwd(&mut sw, e, Tcp::Ack), 2);
    assert_eq!(sw.p.rr_state[7].load(Relaxed), 3);
    assert_eq!(sw.p.syn_pending[idx(e)].load(Relaxed), 0);
    // Hashed selection records its SYN's choice the same way.
    let mut h = Sw::with_service(0);
    assert_eq!(fwd(&mut h, c, Tcp::Syn), 2);
    assert_eq!(
        h.p.syn_pending[idx(c)].load(Relaxed),
        syn_pending_cell(tag(c), 1)
    );
    assert_eq!(
        h.p.syn_pending
            .iter()
            .filter(|x| x.load(Relaxed) != 0)
            .count(),
        1
    );
}

#[test]
fn round_robin_walks_slots_per_service() {
    let mut sw = Sw::with_service(1);
    // rr_state starts at 0: slots 0, 1, ... ; make slot 1 point at target 2.
    sw.p.tables_mut()
        .dpt
        .modify(
            &DptKey {
                service_id: 7,
                slot: 1,
            },
            SelectAction::ToTarget(2),
            EntryMeta::default(),
            0,
        )
        .unwrap();
    let mut ports = Vec::new();
    for i in 0..4 {
        match sw.send(&tcp_frame(CLIENT, 40000 + i, VIPA, 80, Tcp::Syn, 64)) {
            Verdict::Forward(p) => ports.push(p),
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(ports, vec![2, 3, 2, 2]);
    assert_eq!(
        sw.p.rr_state[7].load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

#[test]
fn target_drop_and_target_miss_default_drop() {
    let mut sw = Sw::with_service(0);
    sw.p.tables_mut()
        .target
        .modify(&2, TargetAction::Drop, EntryMeta::default(), 0)
        .unwrap();
    let syn = tcp_frame(CLIENT, 12345, VIPA, 80, Tcp::Syn, 64);
    assert_eq!(sw.send(&syn), Verdict::Drop(DropReason::TargetDrop(2)));
    // The digest is still generated (the P4 digests before applying target).
    assert_eq!(sw.digests().len(), 1);
    sw.p.tables_mut().target.delete(&2).unwrap();
    assert_eq!(sw.send(&syn), Verdict::Drop(DropReason::TargetDrop(2)));
    // A port-511 forward is a drop too.
    sw.p.tables_mut()
        .target
        .insert(
            2,
            TargetAction::ForwardL2 {
                dmac: SERVER2_MAC,
                port: 511,
            },
            EntryMeta::default(),
            0,
        )
        .unwrap();
    assert_eq!(sw.send(&syn), Verdict::Drop(DropReason::DropPort));
}

#[test]
fn encap_ipip_builds_outer_header_and_routes_it() {
    let mut sw = Sw::with_service(0);
    sw.p.tables_mut()
        .target
        .modify(
            &2,
            TargetAction::EncapIpip {
                outer_src: ip([192, 168, 0, 1]),
                outer_dst: ip([192, 168, 5, 9]),
            },
            EntryMeta::default(),
            0,
        )
        .unwrap();
    let mut syn = tcp_frame(CLIENT, 12345, VIPA, 80, Tcp::Syn, 64);
    syn[15] = 0xb8; // DSCP EF, copied to the outer header
    let syn = edit_ipv4(&syn, 14, |_| {});
    let inner_total = u16::from_be_bytes([syn[16], syn[17]]);
    let mut outer = Ipv4Header::new(
        inner_total,
        63,
        IpNumber(4),
        [192, 168, 0, 1],
        [192, 168, 5, 9],
    )
    .unwrap();
    outer.dont_fragment = true;
    outer.dscp = etherparse::IpDscp::try_new(0xb8 >> 2).unwrap();
    let mut expected = macs(&syn[..14], ROUTER_MAC, SWITCH_MAC);
    outer.write(&mut expected).unwrap();
    expected.extend_from_slice(&syn[14..]); // inner untouched, TTL 64
    sw.expect_out(&syn, 4, &expected);
    assert_eq!(sw.digests()[0].target_id, 2);

    // Outer route missing -> route default drop.
    sw.p.tables_mut()
        .route
        .delete(&RouteKey {
            prefix: ip([192, 168, 5, 0]),
            len: 24,
        })
        .unwrap();
    assert_eq!(
        sw.send(&syn),
        Verdict::Drop(DropReason::RouteDrop(ip([192, 168, 5, 9])))
    );
}

#[test]
fn plain_routing_decrements_ttl_with_lpm_and_fixes_checksum() {
    let mut sw = Sw::with_service(0);
    {
        let mut t = sw.p.tables_mut();
        t.route
            .insert(
                RouteKey { prefix: 0, len: 0 },
                RouteAction::SetNexthop {
                    dmac: SERVER1_MAC,
                    smac: SWITCH_MAC,
                    port: 9,
                },
                EntryMeta::default(),
            )
            .unwrap();
    }
    let dst = [192, 168, 5, 77];
    let pkt = udp_frame(CLIENT, 1, dst, 2, 10);
    let expected = macs(
        &edit_ipv4(&pkt, 14, |h| h.time_to_live = 9),
        ROUTER_MAC,
        SWITCH_MAC,
    );
    sw.expect_out(&pkt, 4, &expected);
    // Default route for anything else.
    let pkt = udp_frame(CLIENT, 1, [8, 8, 8, 8], 2, 10);
    let expected = macs(
        &edit_ipv4(&pkt, 14, |h| h.time_to_live = 9),
        SERVER1_MAC,
        SWITCH_MAC,
    );
    sw.expect_out(&pkt, 9, &expected);
    // A wrong input checksum is corrected (VerifyChecksum is empty, ComputeChecksum recomputes).
    let mut bad = pkt.clone();
    bad[24] ^= 0xff;
    sw.expect_out(&bad, 9, &expected);
    // TTL 1 and 0 are dropped.
    assert_eq!(
        sw.send(&udp_frame(CLIENT, 1, dst, 2, 1)),
        Verdict::Drop(DropReason::TtlExpired)
    );
    assert_eq!(
        sw.send(&udp_frame(CLIENT, 1, dst, 2, 0)),
        Verdict::Drop(DropReason::TtlExpired)
    );
    // A TCP packet to the VIPA on a port without a dvipa entry is just routed (miss).
    let miss = tcp_frame(CLIENT, 1, VIPA, 81, Tcp::Syn, 5);
    let expected = macs(
        &edit_ipv4(&miss, 14, |h| h.time_to_live = 4),
        SERVER1_MAC,
        SWITCH_MAC,
    );
    sw.expect_out(&miss, 9, &expected);
    assert!(sw.digests().is_empty());
}

#[test]
fn route_miss_drops_and_non_first_fragment_bypasses_dvipa() {
    let mut sw = Sw::with_service(0);
    assert_eq!(
        sw.send(&udp_frame(CLIENT, 1, [8, 8, 8, 8], 2, 10)),
        Verdict::Drop(DropReason::RouteDrop(ip([8, 8, 8, 8])))
    );
    // A non-first fragment to the VIPA has no L4 header -> routed, not distributed.
    sw.p.tables_mut()
        .route
        .insert(
            RouteKey {
                prefix: ip(VIPA),
                len: 32,
            },
            RouteAction::SetNexthop {
                dmac: SERVER1_MAC,
                smac: SWITCH_MAC,
                port: 6,
            },
            EntryMeta::default(),
        )
        .unwrap();
    let frag = edit_ipv4(&udp_frame(CLIENT, 1, VIPA, 53, 10), 14, |h| {
        h.fragment_offset = etherparse::IpFragOffset::try_new(8).unwrap();
    });
    let expected = macs(
        &edit_ipv4(&frag, 14, |h| h.time_to_live = 9),
        SERVER1_MAC,
        SWITCH_MAC,
    );
    sw.expect_out(&frag, 6, &expected);
    assert!(sw.digests().is_empty());
}

#[test]
fn ipv4_options_are_kept_and_checksummed() {
    let mut sw = Sw::with_service(0);
    let syn = tcp_frame(CLIENT, 12345, VIPA, 80, Tcp::Syn, 64);
    // Insert 8 bytes of options (NOP NOP NOP NOP, router alert would be 4; use NOPs + EOL).
    let with_opts = {
        let (mut h, _) = Ipv4Header::from_slice(&syn[14..]).unwrap();
        h.options = (&[1u8, 1, 1, 1, 1, 1, 1, 0][..]).try_into().unwrap();
        h.total_len += 8;
        let mut v = syn[..14].to_vec();
        h.write(&mut v).unwrap();
        v.extend_from_slice(&syn[34..]);
        v
    };
    let mut expected = with_opts.clone();
    expected[0..6].copy_from_slice(&SERVER2_MAC);
    sw.expect_out(&with_opts, 3, &expected);
    let d = sw.digests();
    assert_eq!((d[0].src_port, d[0].dst_port), (12345, 80));
}

#[test]
fn payload_and_trailing_padding_pass_through() {
    let mut sw = Sw::with_service(0);
    let mut syn = tcp_frame(CLIENT, 12345, VIPA, 80, Tcp::Syn, 64);
    syn.extend_from_slice(&[0u8; 6]); // Ethernet padding beyond totalLen
    let mut expected = syn.clone();
    expected[0..6].copy_from_slice(&SERVER2_MAC);
    sw.expect_out(&syn, 3, &expected);
}

#[test]
fn default_action_set_nexthop_is_a_default_route_with_ttl_rule() {
    let mut sw = Sw::new();
    sw.p.tables_mut().route.default_action = RouteAction::SetNexthop {
        dmac: ROUTER_MAC,
        smac: SWITCH_MAC,
        port: 5,
    };
    let pkt = udp_frame(CLIENT, 1, [8, 8, 4, 4], 2, 10);
    let expected = macs(
        &edit_ipv4(&pkt, 14, |h| h.time_to_live = 9),
        ROUTER_MAC,
        SWITCH_MAC,
    );
    sw.expect_out(&pkt, 5, &expected);
    assert_eq!(
        sw.send(&udp_frame(CLIENT, 1, [8, 8, 4, 4], 2, 1)),
        Verdict::Drop(DropReason::TtlExpired)
    );
}

#[test]
fn dvipa_default_action_noaction_is_a_miss() {
    let mut sw = Sw::new();
    // No dvipa entry, no route -> dropped by ipv4_route's default.
    assert_eq!(
        sw.send(&tcp_frame(CLIENT, 1, VIPA, 80, Tcp::Syn, 64)),
        Verdict::Drop(DropReason::RouteDrop(ip(VIPA)))
    );
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes: a verdict, never a panic; parser failures are counted as such.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut sw = Sw::with_service(0);
            let _ = sw.send(&data);
        }

        /// A valid SYN with a few bytes flipped or cut: whatever comes out carries a correct IPv4
        /// checksum and keeps the frame length (or adds exactly one outer header).
        #[test]
        fn mutated_frames_keep_invariants(
            flips in proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
            cut in 0usize..80,
            encap in any::<bool>(),
        ) {
            let mut sw = Sw::with_service(0);
            if encap {
                sw.p.tables_mut().target.modify(&1, TargetAction::EncapIpip {
                    outer_src: ip([192, 168, 0, 1]), outer_dst: ip([192, 168, 5, 9]) },
                    EntryMeta::default(), 0).unwrap();
            }
            let mut f = tcp_frame(CLIENT, 777, VIPA, 80, Tcp::Syn, 64);
            for (i, b) in flips {
                if i < f.len() { f[i] ^= b; }
            }
            f.truncate(f.len().saturating_sub(cut));
            if let Verdict::Forward(_) = sw.send(&f) {
                let out = &sw.out.frame;
                prop_assert!(out.len() == f.len() || out.len() == f.len() + 20);
                let ihl = usize::from(out[14] & 0x0f) * 4;
                prop_assert_eq!(dvipa_switch::packet::ipv4_checksum(&out[14..14 + ihl]),
                    u16::from_be_bytes([out[24], out[25]]));
            }
        }
    }
}

/// Points every slot of service 7 at `target`.
fn move_all_slots(sw: &Sw, target: u16) {
    let mut t = sw.p.tables_mut();
    for slot in 0..256u16 {
        t.dpt
            .modify(
                &DptKey {
                    service_id: 7,
                    slot,
                },
                SelectAction::ToTarget(target),
                EntryMeta::default(),
                0,
            )
            .unwrap();
    }
}

#[test]
fn hash_handshake_follows_the_syn_target_when_slots_move_before_crt_entry() {
    // The SYN picks a slot's target and is digested; before the controller's CRT entry lands, the
    // controller moves every slot to another target (a server joined). The ACK and the first data
    // must still reach the SYN's target, not the slot's new one (which would answer RST).
    let mut sw = Sw::with_service(0);
    move_all_slots(&sw, 1);
    let syn = tcp_frame(CLIENT, 40000, VIPA, 80, Tcp::Syn, 64);
    assert_eq!(sw.send(&syn), Verdict::Forward(2));
    assert_eq!(sw.digests()[0].target_id, 1);
    move_all_slots(&sw, 2);
    let ack = tcp_frame(CLIENT, 40000, VIPA, 80, Tcp::Ack, 64);
    assert_eq!(sw.send(&ack), Verdict::Forward(2));
    assert_eq!(sw.send(&ack), Verdict::Forward(2));
    // The NOT_SYN digest carries the target the packet was forwarded to.
    let dg = sw.digests();
    assert_eq!(dg.len(), 2);
    assert!(
        dg.iter()
            .all(|d| (d.target_id, d.flags) == (1, FLAG_NOT_SYN))
    );
    // Another connection (no SYN seen) takes the slots as they are now.
    let other = tcp_frame(CLIENT, 40001, VIPA, 80, Tcp::Ack, 64);
    assert_eq!(sw.send(&other), Verdict::Forward(3));
    // A new SYN of a new connection also takes the slots as they are now.
    let syn2 = tcp_frame(CLIENT, 40002, VIPA, 80, Tcp::Syn, 64);
    assert_eq!(sw.send(&syn2), Verdict::Forward(3));
}

#[test]
fn syn_pending_hashes_match_reference_values() {
    // bmv2's crc16 is CRC-16/ARC: check value 0xBB3D. Tuple values from an independent bitwise
    // CRC-16/ARC (poly 0xA001 reflected) and zlib's crc32 in Python.
    assert_eq!(crc16(b"123456789"), 0xbb3d);
    assert_eq!(syn_pending_tag(ip(CLIENT), ip(VIPA), 6, 12345, 80), 31336);
    assert_eq!(syn_pending_index(ip(CLIENT), ip(VIPA), 6, 12345, 80), 3746);
    let udp = (ip([192, 168, 1, 7]), ip(VIPA), 17, 5353, 53);
    assert_eq!(syn_pending_tag(udp.0, udp.1, udp.2, udp.3, udp.4), 44360);
    assert_eq!(syn_pending_index(udp.0, udp.1, udp.2, udp.3, udp.4), 25157);
}

/// A client address and port whose flow to VIPA:80/TCP shares `sport`'s syn_pending index (from
/// CLIENT) but not its tag.
fn colliding_flow(sport: u16) -> ([u8; 4], u16) {
    let idx = syn_pending_index(ip(CLIENT), ip(VIPA), 6, sport, 80);
    let tag = syn_pending_tag(ip(CLIENT), ip(VIPA), 6, sport, 80);
    for host in 2..=255u8 {
        for p in 1024..=u16::MAX {
            let a = [10, 0, 1, host];
            if syn_pending_index(ip(a), ip(VIPA), 6, p, 80) == idx
                && syn_pending_tag(ip(a), ip(VIPA), 6, p, 80) != tag
            {
                return (a, p);
            }
        }
    }
    panic!("no colliding flow found");
}

#[test]
fn syn_pending_tag_keeps_colliding_flows_apart() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut sw = Sw::with_service(0);
    move_all_slots(&sw, 1);
    let (a_port, (b_addr, b_port)) = (40000u16, colliding_flow(40000));
    let idx = syn_pending_index(ip(CLIENT), ip(VIPA), 6, a_port, 80);
    let a = |kind| tcp_frame(CLIENT, a_port, VIPA, 80, kind, 64);
    let b = |kind| tcp_frame(b_addr, b_port, VIPA, 80, kind, 64);

    // A's SYN records (tag A, target 1); then the slots move to target 2.
    assert_eq!(sw.send(&a(Tcp::Syn)), Verdict::Forward(2));
    move_all_slots(&sw, 2);
    // B shares A's cell but not its tag: B's ACK (no SYN seen) takes the slots, not A's target.
    assert_eq!(sw.send(&b(Tcp::Ack)), Verdict::Forward(3));
    let dg = sw.digests();
    assert_eq!((dg[1].target_id, dg[1].flags), (2, FLAG_NOT_SYN));
    // A still follows its own SYN.
    assert_eq!(sw.send(&a(Tcp::Ack)), Verdict::Forward(2));
    // B's SYN overwrites the cell (the documented collision): A, whose tag no longer matches,
    // falls back to the slots — the wrong server here, only because the slots moved.
    assert_eq!(sw.send(&b(Tcp::Syn)), Verdict::Forward(3));
    let b_tag = syn_pending_tag(ip(b_addr), ip(VIPA), 6, b_port, 80);
    assert_eq!(
        sw.p.syn_pending[idx].load(Relaxed),
        syn_pending_cell(b_tag, 2)
    );
    assert_eq!(sw.send(&a(Tcp::Ack)), Verdict::Forward(3));
    // B follows its own choice after the next slot move.
    move_all_slots(&sw, 1);
    assert_eq!(sw.send(&b(Tcp::Ack)), Verdict::Forward(3));
    // Round robin checks the tag the same way: B's ACK on a cell holding A's choice takes the
    // next round-robin slot, not A's target.
    let mut rr = Sw::with_service(1);
    assert_eq!(rr.send(&a(Tcp::Syn)), Verdict::Forward(2)); // slot 0 -> target 1
    move_all_slots(&rr, 2);
    assert_eq!(rr.send(&b(Tcp::Ack)), Verdict::Forward(3));
    assert_eq!(rr.p.rr_state[7].load(Relaxed), 2);
    assert_eq!(rr.send(&a(Tcp::Ack)), Verdict::Forward(2));
    assert_eq!(rr.p.rr_state[7].load(Relaxed), 2);
}

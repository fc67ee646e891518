//! In-process pipeline throughput on one core (no I/O): how many frames per second
//! `Pipeline::process_with` handles for a CRT hit, a SYN (slot hash + dpt + digest), an IP-in-IP
//! encapsulation and a plain routed packet.
//!
//! ```text
//! cargo run --release -p dvipa-switch --example pipeline_bench
//! ```

use std::time::Instant;

use dvipa_switch::tables::{
    CrtKey, DptKey, DvipaAction, DvipaKey, EntryMeta, RouteAction, RouteKey, SelectAction,
    TargetAction,
};
use dvipa_switch::{Output, Pipeline, Verdict};

fn frame(dst: [u8; 4], sport: u16, syn: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], dst, 64)
        .tcp(sport, 80, 1, 64000);
    let b = if syn { b.syn() } else { b.ack(1) };
    b.write(&mut v, &[0u8; 18]).unwrap();
    v
}

fn main() {
    let p = Pipeline::new();
    {
        let mut t = p.tables_mut();
        let m = EntryMeta::default();
        t.dvipa
            .insert(
                DvipaKey {
                    dst: 0x0a00_0064,
                    proto: 6,
                    dport: 80,
                    dport_mask: 0xffff,
                    priority: 1,
                },
                DvipaAction::Distribute {
                    service_id: 1,
                    method: 0,
                },
                m.clone(),
            )
            .unwrap();
        t.dvipa
            .insert(
                DvipaKey {
                    dst: 0x0a00_0065,
                    proto: 6,
                    dport: 80,
                    dport_mask: 0xffff,
                    priority: 1,
                },
                DvipaAction::Distribute {
                    service_id: 2,
                    method: 0,
                },
                m.clone(),
            )
            .unwrap();
        for slot in 0..256 {
            t.dpt
                .insert(
                    DptKey {
                        service_id: 1,
                        slot,
                    },
                    SelectAction::ToTarget(1),
                    m.clone(),
                    0,
                )
                .unwrap();
            t.dpt
                .insert(
                    DptKey {
                        service_id: 2,
                        slot,
                    },
                    SelectAction::ToTarget(2),
                    m.clone(),
                    0,
                )
                .unwrap();
        }
        t.target
            .insert(
                1,
                TargetAction::ForwardL2 {
                    dmac: [2, 0, 0, 0, 0, 3],
                    port: 2,
                },
                m.clone(),
                0,
            )
            .unwrap();
        t.target
            .insert(
                2,
                TargetAction::EncapIpip {
                    outer_src: 0x0a00_00fe,
                    outer_dst: 0xc0a8_0001,
                },
                m.clone(),
                0,
            )
            .unwrap();
        t.route
            .insert(
                RouteKey { prefix: 0, len: 0 },
                RouteAction::SetNexthop {
                    dmac: [2, 0, 0, 0, 0, 4],
                    smac: [2, 0, 0, 0, 0, 5],
                    port: 3,
                },
                m.clone(),
            )
            .unwrap();
        // 60,000 pinned connections, as a busy CRT would hold.
        for sport in 1000..61000u16 {
            t.crt
                .insert(
                    CrtKey {
                        src: 0x0a00_0001,
                        dst: 0x0a00_0064,
                        proto: 6,
                        sport,
                        dport: 80,
                    },
                    SelectAction::ToTarget(1),
                    m.clone(),
                    0,
                )
                .unwrap();
        }
    }
    let cases: [(&str, Vec<Vec<u8>>); 5] = [
        (
            "CRT hit (60k entries)",
            (1000..61000)
                .step_by(7)
                .map(|s| frame([10, 0, 0, 100], s, false))
                .collect(),
        ),
        (
            "SYN: hash slot + dpt + digest",
            (0..4096)
                .map(|s| frame([10, 0, 0, 100], 61000 + s, true))
                .collect(),
        ),
        (
            "ACK, no CRT: syn_pending + digest",
            (0..4096)
                .map(|s| frame([10, 0, 0, 100], 61000 + s, false))
                .collect(),
        ),
        (
            "SYN + IP-in-IP encap + route",
            (0..4096)
                .map(|s| frame([10, 0, 0, 101], 61000 + s, true))
                .collect(),
        ),
        (
            "plain routed (dvipa miss)",
            (0..4096).map(|s| frame([8, 8, 8, 8], s, false)).collect(),
        ),
    ];
    let mut out = Output::default();
    for (name, frames) in cases {
        let n = 3_000_000usize;
        let t0 = Instant::now();
        let mut fwd = 0u64;
        let mut i = 0;
        while i < n {
            let tables = p.tables();
            let now = p.now_ns();
            for _ in 0..64 {
                let f = &frames[i % frames.len()];
                if let Verdict::Forward(_) = p.process_with(&tables, now, 1, f, &mut out) {
                    fwd += 1;
                }
                i += 1;
            }
            out.digests.clear();
        }
        let dt = t0.elapsed().as_secs_f64();
        println!(
            "{name:<32}: {:>6.2} Mpps ({:.0} ns/packet, {fwd} forwarded)",
            n as f64 / dt / 1e6,
            dt * 1e9 / n as f64
        );
    }
}

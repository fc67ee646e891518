//! criterion micro-benchmarks of hot functions: slot selection (the switch's slot hash + DPT
//! lookup) and the controller's slot fill, the CRT maps (the switch's exact table and the
//! controller's 5-tuple map), and the P4Runtime codec (CRT entry build/encode/decode, digest
//! decode).
//!
//! `cargo bench -p dvipa-bench` (add `-- --quick` for a short run).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dvipa_core::entries::{ConnKey, TCP};
use dvipa_core::slots::{N_SLOTS, weighted_fill};
use dvipa_switch::pipeline::slot_hash;
use dvipa_switch::tables::{CrtKey, DptKey, EntryMeta, ExactTable, SelectAction};
use p4rt::Schema;
use p4rt::proto::p4::v1 as p4;
use prost::Message;
use std::collections::HashMap;
use std::hint::black_box;
use std::net::Ipv4Addr;

const P4INFO: &str = include_str!("../../../p4src/p4c-out/bmv2/dvipa.p4info.txtpb");
const VIPA: u32 = 0xCB00_710A;

fn key(i: u32) -> CrtKey {
    CrtKey {
        src: 0x0A40_0000 | (i >> 14),
        dst: VIPA,
        proto: 6,
        sport: 1024 + (i & 0x3fff) as u16,
        dport: 80,
    }
}

fn slots(c: &mut Criterion) {
    let mut dpt: ExactTable<DptKey, SelectAction> =
        ExactTable::new("IngressImpl.dpt", 262_144, SelectAction::NoAction);
    for s in 0..N_SLOTS as u16 {
        dpt.insert(
            DptKey {
                service_id: 1,
                slot: s,
            },
            SelectAction::ToTarget(1 + s % 4),
            EntryMeta::default(),
            0,
        )
        .unwrap();
    }
    let mut i = 0u32;
    c.bench_function("switch: slot hash + dpt lookup", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let k = key(i);
            let slot = slot_hash(k.src, k.dst, k.proto, k.sport, k.dport);
            black_box(dpt.lookup(
                &DptKey {
                    service_id: 1,
                    slot,
                },
                0,
                64,
                false,
            ))
        })
    });
    let ts: Vec<(u16, u32)> = (1..=100).map(|t| (t, 1)).collect();
    let f0 = weighted_fill(7, &ts, &[None; N_SLOTS]);
    let mut join = ts.clone();
    join.push((101, 1));
    c.bench_function("controller: slot fill, 100 targets, one joins", |b| {
        b.iter(|| black_box(weighted_fill(7, black_box(&join), &f0)))
    });
}

fn crt_maps(c: &mut Criterion) {
    const N: u32 = 65_536;
    let mut t: ExactTable<CrtKey, SelectAction> =
        ExactTable::new("IngressImpl.crt", N as usize + 1, SelectAction::NoAction);
    for i in 0..N {
        t.insert(key(i), SelectAction::ToTarget(1), EntryMeta::default(), 0)
            .unwrap();
    }
    let mut i = 0u32;
    c.bench_function("switch: crt lookup (hit, 64k entries, counted)", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(t.lookup(&key(i), 1, 64, true))
        })
    });
    c.bench_function("switch: crt insert + delete (64k entries)", |b| {
        b.iter(|| {
            let k = key(N + 1);
            t.insert(k, SelectAction::ToTarget(2), EntryMeta::default(), 0)
                .unwrap();
            black_box(t.delete(&k).is_ok())
        })
    });
    let conn = |i: u32| {
        let k = key(i);
        ConnKey::new(
            Ipv4Addr::from(k.src),
            k.sport,
            Ipv4Addr::from(k.dst),
            80,
            TCP,
        )
    };
    let mut m: HashMap<ConnKey, u16> = (0..N).map(|i| (conn(i), 1)).collect();
    c.bench_function("controller: 5-tuple map lookup (64k, std HashMap)", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(m.get(&conn(i)).copied())
        })
    });
    c.bench_function("controller: 5-tuple map insert + remove (64k)", |b| {
        b.iter(|| {
            m.insert(conn(N + 1), 2);
            black_box(m.remove(&conn(N + 1)))
        })
    });
}

fn codec(c: &mut Criterion) {
    let s = Schema::from_text(P4INFO).unwrap();
    let build = |i: u32| {
        let k = key(i);
        s.table_entry("IngressImpl.crt")
            .exact("hdr.ipv4.srcAddr", k.src)
            .exact("hdr.ipv4.dstAddr", k.dst)
            .exact("hdr.ipv4.protocol", k.proto)
            .exact("meta.l4_sport", k.sport)
            .exact("meta.l4_dport", k.dport)
            .action("IngressImpl.to_target")
            .param("target_id", 3u16)
            .build()
            .unwrap()
    };
    let mut i = 0u32;
    c.bench_function("p4rt: build + encode crt entry", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(build(i).encode_to_vec())
        })
    });
    let bytes = build(5).encode_to_vec();
    c.bench_function("p4rt: decode + resolve crt entry", |b| {
        b.iter(|| {
            let e = p4::TableEntry::decode(black_box(&bytes[..])).unwrap();
            black_box(s.decode_table_entry(&e).unwrap())
        })
    });
    let data: Vec<p4::P4Data> = (0..100u32)
        .map(|i| {
            let k = key(i);
            s.encode_digest(
                "learn_t",
                &[
                    ("src_addr", k.src.into()),
                    ("dst_addr", k.dst.into()),
                    ("protocol", 6),
                    ("src_port", k.sport.into()),
                    ("dst_port", 80),
                    ("service_id", 1),
                    ("target_id", 2),
                    ("flags", 0),
                ],
            )
            .unwrap()
        })
        .collect();
    let list = p4::DigestList {
        digest_id: s.digest("learn_t").unwrap().preamble.as_ref().unwrap().id,
        list_id: 1,
        data,
        timestamp: 0,
    };
    c.bench_function("p4rt: decode digest list of 100 learn_t", |b| {
        b.iter_batched(
            || list.clone(),
            |l| black_box(s.decode_digest_list(&l).unwrap()),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, slots, crt_maps, codec);
criterion_main!(benches);

//! The per-packet debug trace (its own test binary: tracing's callsite cache is process-wide).

use dvipa_switch::tables::{
    DptKey, DvipaAction, DvipaKey, EntryMeta, RouteAction, RouteKey, SelectAction, TargetAction,
};
use dvipa_switch::{Output, Pipeline};
use etherparse::PacketBuilder;

fn tcp_syn() -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xfe])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 100], 64)
        .tcp(12345, 80, 1, 1000)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

fn udp(dst: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xfe])
        .ipv4([10, 0, 0, 1], dst, 10)
        .udp(1, 2)
        .write(&mut v, &[])
        .unwrap();
    v
}

/// At debug level every packet is traced table by table (like bmv2's --log-console).
#[test]
fn debug_trace_names_table_hits_and_misses() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let b2 = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || b2.clone())
        .finish();
    tracing::subscriber::set_global_default(sub).unwrap();
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
                    service_id: 7,
                    method: 0,
                },
                m.clone(),
            )
            .unwrap();
        t.dpt
            .insert(
                DptKey {
                    service_id: 7,
                    slot: 162,
                },
                SelectAction::ToTarget(2),
                m.clone(),
                0,
            )
            .unwrap();
        t.target
            .insert(
                2,
                TargetAction::ForwardL2 {
                    dmac: [2, 0, 0, 0, 1, 2],
                    port: 3,
                },
                m.clone(),
                0,
            )
            .unwrap();
        t.route
            .insert(
                RouteKey {
                    prefix: 0x0a00_0000,
                    len: 8,
                },
                RouteAction::SetNexthop {
                    dmac: [2; 6],
                    smac: [3; 6],
                    port: 4,
                },
                m,
            )
            .unwrap();
    }
    let mut out = Output::default();
    p.process(1, &tcp_syn(), &mut out);
    p.process(1, &udp([8, 8, 8, 8]), &mut out);
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    for needle in [
        "dvipa hit",
        "crt miss, dpt hit, digest",
        "slot=162",
        "target_id=2",
        "dvipa miss",
        "ipv4_route miss",
        "verdict=Drop(RouteDrop",
        "verdict=Forward(3)",
    ] {
        assert!(log.contains(needle), "{needle:?} not in trace:\n{log}");
    }
}

//! Fuzzes the parser and the whole pipeline: any bytes on any port must yield a verdict, never a
//! panic, and a forwarded frame is the input with at most one 20-byte header added.
#![no_main]

use std::sync::OnceLock;

use dvipa_switch::packet;
use dvipa_switch::tables::{
    DptKey, DvipaAction, DvipaKey, EntryMeta, RouteAction, RouteKey, SelectAction, TargetAction,
};
use dvipa_switch::{Output, Pipeline, Verdict};
use libfuzzer_sys::fuzz_target;

fn pipeline() -> &'static Pipeline {
    static P: OnceLock<Pipeline> = OnceLock::new();
    P.get_or_init(|| {
        let p = Pipeline::new();
        {
            let mut t = p.tables_mut();
            let m = EntryMeta::default();
            for (proto, method) in [(6u8, 0u8), (17, 1)] {
                t.dvipa
                    .insert(
                        DvipaKey { dst: 0x0a00_0064, proto, dport: 0, dport_mask: 0, priority: 1 },
                        DvipaAction::Distribute { service_id: u16::from(proto), method },
                        m.clone(),
                    )
                    .unwrap();
            }
            for slot in 0..256u16 {
                for service_id in [6u16, 17] {
                    t.dpt
                        .insert(DptKey { service_id, slot }, SelectAction::ToTarget(slot % 3), m.clone(), 0)
                        .unwrap();
                }
            }
            t.target.insert(0, TargetAction::ForwardL2 { dmac: [2, 0, 0, 0, 0, 1], port: 1 }, m.clone(), 0).unwrap();
            t.target.insert(1, TargetAction::EncapIpip { outer_src: 1, outer_dst: 0x0a01_0001 }, m.clone(), 0).unwrap();
            t.route
                .insert(RouteKey { prefix: 0, len: 0 }, RouteAction::SetNexthop { dmac: [2; 6], smac: [3; 6], port: 2 }, m)
                .unwrap();
        }
        p
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = packet::parse(data);
    let mut out = Output::default();
    let v = pipeline().process(1, data, &mut out);
    if let Verdict::Forward(_) = v {
        assert!(out.frame.len() == data.len() || out.frame.len() == data.len() + 20);
    }
});

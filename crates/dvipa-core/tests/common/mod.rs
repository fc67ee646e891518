//! Shared fixtures: the design's figure 4 cluster on simulated switches.
#![allow(dead_code)]
use dvipa_core::config::Cluster;
use dvipa_core::core::{Action, ConnReport, Core, CoreOptions, Event, Report, SrvStat};
use dvipa_core::entries::{ConnKey, Key, TCP, Tables};
use dvipa_core::sim::Sim;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const DVA1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const DVB1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);

pub fn cluster(toml_edit: impl Fn(String) -> String) -> Cluster {
    cluster_with(toml_edit, |p| p)
}

/// Like [`cluster`], also editing MVS1's profile text.
pub fn cluster_with(
    toml_edit: impl Fn(String) -> String,
    mvs1_edit: impl Fn(String) -> String,
) -> Cluster {
    let profiles = BTreeMap::from([
        (
            "MVS1".into(),
            (
                "mvs1.profile".into(),
                mvs1_edit(include_str!("../fixtures/mvs1.profile").into()),
            ),
        ),
        (
            "MVS5".into(),
            (
                "mvs5.profile".into(),
                include_str!("../fixtures/mvs5.profile").into(),
            ),
        ),
    ]);
    // These tests drive the write pipeline with single SYN digests, so they pin at the SYN
    // unless the edit says otherwise. The default, pinning once the handshake completed, is
    // tested in tests/handshake_pin.rs.
    let toml = toml_edit(format!(
        "pin_on = \"syn\"\n{}",
        include_str!("../fixtures/figure4.toml")
    ));
    Cluster::build("figure4.toml", &toml, &profiles).unwrap()
}

pub fn sim_with(toml_edit: impl Fn(String) -> String) -> Sim {
    Sim::new(Core::new(cluster(toml_edit), CoreOptions::default()).unwrap())
}

pub fn sim() -> Sim {
    sim_with(|s| s)
}

pub fn underlay(stack: &str) -> Ipv4Addr {
    let n: u8 = stack.trim_start_matches("MVS").parse().unwrap();
    Ipv4Addr::new(10, 0, 0, n)
}

pub fn hello(s: &mut Sim, stack: &str) {
    s.event(Event::AgentHello {
        stack: stack.into(),
        underlay: underlay(stack),
        epoch: 1,
    });
}

pub fn listen(dvipa: Ipv4Addr, port: u32) -> SrvStat {
    SrvStat {
        dvipa,
        port,
        protocol: 6,
        listening: true,
        weight: 0,
        draining: false,
    }
}

pub fn conn(client_port: u16, dvipa: Ipv4Addr) -> ConnReport {
    ConnReport {
        client: Ipv4Addr::new(198, 51, 100, 7),
        client_port: client_port.into(),
        dvipa,
        dvipa_port: 60,
        protocol: 6,
        server_originated: false,
    }
}

pub fn key(c: &ConnReport) -> ConnKey {
    ConnKey::new(
        c.client,
        c.client_port as u16,
        c.dvipa,
        c.dvipa_port as u16,
        TCP,
    )
}

pub fn report(s: &mut Sim, stack: &str, r: Report) -> Vec<dvipa_core::core::ItemError> {
    s.event(Event::AgentReport {
        stack: stack.into(),
        report: r.clone(),
    });
    match s.out.iter().rev().find(
        |a| matches!(a, Action::AgentAck { stack: st, seq, .. } if st == stack && *seq == r.seq),
    ) {
        Some(Action::AgentAck { errors, .. }) => errors.clone(),
        _ => panic!("no ack for {stack} seq {}", r.seq),
    }
}

/// Stacks attach and listen on DVA1:60 / DVB1:60 as in the design's example.
pub fn attach_fig4(s: &mut Sim) {
    for st in ["MVS1", "MVS2", "MVS3", "MVS4", "MVS5"] {
        hello(s, st);
    }
    // APP A on MVS1, MVS2, MVS4 (DVA1); APP B on MVS2, MVS3, MVS5 (DVB1).
    for (st, v) in [
        ("MVS1", DVA1),
        ("MVS2", DVA1),
        ("MVS4", DVA1),
        ("MVS2", DVB1),
        ("MVS3", DVB1),
        ("MVS5", DVB1),
    ] {
        let errs = report(
            s,
            st,
            Report {
                seq: 10,
                srvstat: vec![listen(v, 60)],
                ..Default::default()
            },
        );
        assert!(errs.is_empty(), "{errs:?}");
    }
}

pub fn dpt_targets(t: &Tables, service: u16) -> BTreeMap<u16, usize> {
    let mut m = BTreeMap::new();
    for (k, v) in t {
        if let Key::Dpt { service: s, .. } = k
            && *s == service
        {
            *m.entry(v.target().unwrap()).or_insert(0) += 1;
        }
    }
    m
}

pub fn crt_of(t: &Tables, dvipa: Ipv4Addr) -> BTreeMap<ConnKey, u16> {
    t.iter()
        .filter_map(|(k, v)| match k {
            Key::Crt(c) if c.dvipa() == dvipa => Some((*c, v.target().unwrap())),
            _ => None,
        })
        .collect()
}

pub fn has_dvipa(t: &Tables, dvipa: Ipv4Addr) -> bool {
    t.keys()
        .any(|k| matches!(k, Key::Dvipa { addr, .. } if *addr == dvipa))
}

//! Tests of [`super`].

use super::*;
use crate::model::Connection;
use dvipa_proto::v1::Vipa;

const D1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const D2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);

fn vipa(d: Ipv4Addr, ports: &[u32], candidates: &[&str], all: bool) -> Vipa {
    Vipa {
        dvipa: u32::from(d),
        prefix_len: 32,
        ports: ports.to_vec(),
        candidates: candidates.iter().map(|s| s.to_string()).collect(),
        all_stacks: all,
        ..Default::default()
    }
}

fn tracker(vipas: Vec<Vipa>) -> Tracker {
    let mut t = Tracker::new(0);
    let (set, errs) = VipaSet::from_list(&VipaList { version: 1, vipas }, "s1");
    assert!(errs.is_empty(), "{errs:?}");
    assert!(t.set_vipas(set).is_empty());
    t
}

fn tcp_l(addr: Ipv4Addr, port: u16) -> Listener {
    Listener {
        proto: Proto::Tcp,
        addr,
        port,
    }
}

fn snap(listeners: &[Listener], conns: &[Connection]) -> Snapshot {
    Snapshot {
        listeners: listeners.iter().copied().collect(),
        connections: conns.iter().copied().collect(),
    }
}

fn up(d: &Delta) -> Vec<(Ipv4Addr, u32, bool)> {
    d.srvstat
        .iter()
        .map(|s| (Ipv4Addr::from(s.dvipa), s.port, s.listening))
        .collect()
}

#[test]
fn vipa_list_keeps_only_candidate_entries_and_reports_bad_ones() {
    let list = VipaList {
        version: 4,
        vipas: vec![
            vipa(D1, &[80], &["s1", "s2"], false),
            vipa(D2, &[], &["s2"], false),
            vipa(Ipv4Addr::new(10, 1, 0, 3), &[], &[], true),
            vipa(Ipv4Addr::new(10, 1, 0, 4), &[70000], &["s1"], false),
            vipa(Ipv4Addr::UNSPECIFIED, &[], &["s1"], false),
            vipa(Ipv4Addr::new(224, 0, 0, 1), &[], &["s1"], false),
        ],
    };
    let (set, errs) = VipaSet::from_list(&list, "s1");
    assert_eq!(set.version, 4);
    assert_eq!(
        set.addresses().into_iter().collect::<Vec<_>>(),
        vec![D1, Ipv4Addr::new(10, 1, 0, 3)]
    );
    assert_eq!(set.vipas[&D1], Ports::Listed([80].into()));
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(matches!(
        errs[0],
        VipaEntryError::BadPort { port: 70000, .. }
    ));
}

#[test]
fn vipas_of_this_host_its_subnets_bad_prefix_and_over_cap_are_refused() {
    let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let mut bad_prefix = vipa(a("10.9.9.9"), &[], &["s1"], false);
    bad_prefix.prefix_len = 99;
    let list = VipaList {
        version: 1,
        vipas: [
            "192.0.2.1",     // the underlay
            "198.51.100.7",  // on eth0
            "198.51.100.0",  // eth0's network
            "198.51.100.63", // eth0's broadcast (/26)
            "198.51.100.64", // next subnet: fine
            "203.0.113.10",  // on lo without the agent's label: accepted (left alone)
            "203.0.113.11",  // on lo, ours
            "203.0.113.12",
            "203.0.113.13",
        ]
        .into_iter()
        .map(|d| vipa(a(d), &[], &["s1"], false))
        .chain([bad_prefix])
        .collect(),
    };
    let (mut set, errs) = VipaSet::from_list(&list, "s1");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].reason(), "prefix_len");
    assert_eq!(
        errs[0].to_string(),
        "VIPA entry 9 (10.9.9.9): prefix length 99 is over 32"
    );
    let h = |addr: &str, prefix_len, iface: &str, on_lo, ours| HostAddr {
        addr: a(addr),
        prefix_len,
        iface: iface.into(),
        ours,
        on_lo,
    };
    let host = [
        h("198.51.100.7", 26, "eth0", false, false),
        h("127.0.0.1", 8, "lo", true, false),
        h("203.0.113.10", 32, "lo", true, false),
        h("203.0.113.11", 32, "lo:dvipa", true, true),
    ];
    let errs = set.refuse_local(a("192.0.2.1"), &host, 4);
    let why: Vec<(String, &str)> = errs.iter().map(|e| (e.to_string(), e.reason())).collect();
    assert_eq!(
        why,
        vec![
            (
                "VIPA 192.0.2.1: it is an address of this host (the agent's --underlay \
                 address); not installed"
                    .to_string(),
                "host_address"
            ),
            (
                "VIPA 198.51.100.0: it is the network address of the local subnet \
                 198.51.100.0/26 of eth0; not installed"
                    .to_string(),
                "subnet_address"
            ),
            (
                "VIPA 198.51.100.7: it is an address of this host (configured on eth0); \
                 not installed"
                    .to_string(),
                "host_address"
            ),
            (
                "VIPA 198.51.100.63: it is the broadcast address of the local subnet \
                 198.51.100.0/26 of eth0; not installed"
                    .to_string(),
                "subnet_address"
            ),
            (
                "VIPA 203.0.113.13: over the agent's limit of 4 VIPAs (--max-vipas); not \
                 installed"
                    .to_string(),
                "over_cap"
            ),
        ]
    );
    assert_eq!(
        set.addresses().into_iter().collect::<Vec<_>>(),
        vec![
            a("198.51.100.64"),
            a("203.0.113.10"),
            a("203.0.113.11"),
            a("203.0.113.12")
        ]
    );
}

#[test]
fn listener_up_then_down() {
    let mut t = tracker(vec![vipa(D1, &[80], &["s1"], false)]);
    let d = t.observe(snap(&[tcp_l(D1, 80)], &[]));
    assert_eq!(up(&d), vec![(D1, 80, true)]);
    assert!(
        t.observe(snap(&[tcp_l(D1, 80)], &[])).is_empty(),
        "no change, no report"
    );
    let d = t.observe(snap(&[], &[]));
    assert_eq!(up(&d), vec![(D1, 80, false)]);
}

#[test]
fn wildcard_listener_counts_for_every_dvipa_but_only_distributed_ports() {
    let mut t = tracker(vec![
        vipa(D1, &[80], &["s1"], false),
        vipa(D2, &[], &["s1"], false),
    ]);
    let d = t.observe(snap(
        &[
            tcp_l(Ipv4Addr::UNSPECIFIED, 80),
            tcp_l(Ipv4Addr::UNSPECIFIED, 22),
        ],
        &[],
    ));
    // D1 distributes only 80; D2 distributes all ports.
    assert_eq!(up(&d), vec![(D1, 80, true), (D2, 22, true), (D2, 80, true)]);
}

#[test]
fn listener_on_other_address_or_port_is_ignored() {
    let mut t = tracker(vec![vipa(D1, &[80], &["s1"], false)]);
    let d = t.observe(snap(
        &[tcp_l(Ipv4Addr::new(127, 0, 0, 1), 80), tcp_l(D1, 81)],
        &[],
    ));
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn udp_wildcard_needs_an_explicit_port() {
    let mut t = tracker(vec![
        vipa(D1, &[53], &["s1"], false),
        vipa(D2, &[], &["s1"], false),
    ]);
    let udp = |addr, port| Listener {
        proto: Proto::Udp,
        addr,
        port,
    };
    let d = t.observe(snap(
        &[
            udp(Ipv4Addr::UNSPECIFIED, 53),
            udp(Ipv4Addr::UNSPECIFIED, 40000),
            udp(D2, 5000),
        ],
        &[],
    ));
    assert_eq!(up(&d), vec![(D1, 53, true), (D2, 5000, true)]);
    assert!(d.srvstat.iter().all(|s| s.protocol == 17));
}

#[test]
fn connections_new_and_terminated_with_direction() {
    let mut t = tracker(vec![vipa(D1, &[], &["s1"], false)]);
    let inbound = Connection {
        local: D1,
        local_port: 80,
        remote: CLIENT,
        remote_port: 5555,
        syn_sent: false,
    };
    let outbound = Connection {
        local: D1,
        local_port: 41000,
        remote: CLIENT,
        remote_port: 443,
        syn_sent: false,
    };
    let other = Connection {
        local: Ipv4Addr::new(127, 0, 0, 1),
        ..inbound
    };
    let d = t.observe(snap(&[tcp_l(D1, 80)], &[inbound, outbound, other]));
    assert_eq!(d.newconn.len(), 2);
    let by_port = |p: u32| d.newconn.iter().find(|c| c.dvipa_port == p).unwrap();
    assert!(!by_port(80).server_originated);
    assert!(by_port(41000).server_originated);
    assert_eq!(by_port(80).client_addr, u32::from(CLIENT));
    assert_eq!(by_port(80).client_port, 5555);

    // The listener goes away; the accepted connection stays inbound, then ends.
    let d = t.observe(snap(&[], &[inbound]));
    assert_eq!(up(&d), vec![(D1, 80, false)]);
    assert_eq!(d.termconn.len(), 1);
    assert_eq!(d.termconn[0].dvipa_port, 41000);
    assert!(d.termconn[0].server_originated);
    let d = t.observe(snap(&[], &[]));
    assert_eq!(d.termconn.len(), 1);
    assert!(!d.termconn[0].server_originated);
    assert!(t.connections().is_empty());
}

#[test]
fn syn_sent_is_server_originated_even_on_a_listening_port() {
    let mut t = tracker(vec![vipa(D1, &[80], &["s1"], false)]);
    let c = Connection {
        local: D1,
        local_port: 80,
        remote: CLIENT,
        remote_port: 80,
        syn_sent: true,
    };
    let d = t.observe(snap(&[tcp_l(D1, 80)], &[c]));
    assert!(d.newconn[0].server_originated);
    // Established later: same connection, no new report.
    let est = Connection {
        syn_sent: false,
        ..c
    };
    assert!(t.observe(snap(&[tcp_l(D1, 80)], &[est])).is_empty());
}

#[test]
fn drain_resends_srvstat_with_draining() {
    let mut t = tracker(vec![
        vipa(D1, &[80], &["s1"], false),
        vipa(D2, &[80], &["s1"], false),
    ]);
    t.observe(snap(&[tcp_l(Ipv4Addr::UNSPECIFIED, 80)], &[]));
    let d = t.set_drain(
        Drain {
            dvipa: Some(D2),
            port: 80,
        },
        true,
    );
    assert_eq!(d.srvstat.len(), 1);
    assert!(d.srvstat[0].listening && d.srvstat[0].draining);
    assert_eq!(Ipv4Addr::from(d.srvstat[0].dvipa), D2);
    let d = t.set_drain(
        Drain {
            dvipa: Some(D2),
            port: 80,
        },
        false,
    );
    assert!(!d.srvstat[0].draining);
    let d = t.set_drain(
        Drain {
            dvipa: None,
            port: 80,
        },
        true,
    );
    assert_eq!(d.srvstat.len(), 2);
}

#[test]
fn vipa_removed_forgets_silently_and_vipa_added_reports_existing_sockets() {
    let mut t = tracker(vec![vipa(D1, &[], &["s1"], false)]);
    t.observe(snap(&[tcp_l(Ipv4Addr::UNSPECIFIED, 80)], &[]));
    let (set, _) = VipaSet::from_list(
        &VipaList {
            version: 2,
            vipas: vec![vipa(D2, &[], &["s1"], false)],
        },
        "s1",
    );
    let d = t.set_vipas(set);
    assert_eq!(
        up(&d),
        vec![(D2, 80, true)],
        "only the new DVIPA is reported"
    );
    assert_eq!(t.listeners().len(), 1);
}

#[test]
fn full_sync_re_reports_state_in_marked_batches() {
    let mut t = tracker(vec![vipa(D1, &[], &["s1"], false)]);
    let mut conns = Vec::new();
    for p in 0..5u16 {
        conns.push(Connection {
            local: D1,
            local_port: 80,
            remote: CLIENT,
            remote_port: 1000 + p,
            syn_sent: false,
        });
    }
    t.observe(snap(&[tcp_l(D1, 80)], &conns));
    let r = t.full_reports(4);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|r| r.full_sync));
    assert_eq!(
        r.iter().map(|r| r.sync_done).collect::<Vec<_>>(),
        vec![false, true]
    );
    let total: usize = r.iter().map(|r| r.srvstat.len() + r.newconn.len()).sum();
    assert_eq!(total, 6);
    // Empty state still ends the sync.
    let r = Tracker::new(0).full_reports(4);
    assert_eq!(r.len(), 1);
    assert!(r[0].full_sync && r[0].sync_done);
}

#[test]
fn batches_respect_the_item_limit_and_keep_everything() {
    let d = Delta {
        srvstat: vec![SrvStat::default(); 3],
        newconn: vec![Conn::default(); 7],
        termconn: vec![Conn::default(); 2],
    };
    let r = d.into_reports(5);
    assert_eq!(r.len(), 3);
    let sizes: Vec<usize> = r
        .iter()
        .map(|r| r.srvstat.len() + r.newconn.len() + r.termconn.len())
        .collect();
    assert_eq!(sizes, vec![5, 5, 2]);
    assert!(Delta::default().into_reports(5).is_empty());
}

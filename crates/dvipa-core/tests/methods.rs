//! Distribution methods end to end (profile → core → switch DPT): WEIGHTEDACTIVE (configured
//! weights), SERVERWLM (agent-reported weights), HOTSTANDBY (preferred, then ranked backups),
//! and draining targets.
use dvipa_core::config::Cluster;
use dvipa_core::core::{ConnReport, Core, CoreOptions, Event, Report, SrvStat};
use dvipa_core::entries::{Key, TCP, Tables, Value};
use dvipa_core::sim::Sim;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const PROFILE: &str = "
VIPADYNAMIC
  VIPADEFINE 255.255.255.0 192.0.2.1 192.0.2.2 192.0.2.3
  VIPADISTRIBUTE DISTMETHOD WEIGHTEDACTIVE 192.0.2.1 PORT 80 DESTIP 10.1.0.1 WEIGHT 3 10.1.0.2 WEIGHT 1
  VIPADISTRIBUTE DISTMETHOD HOTSTANDBY 192.0.2.2 PORT 80
                 DESTIP 10.1.0.1 BACKUP 10 10.1.0.2 PREFERRED 10.1.0.3 BACKUP 50
  VIPADISTRIBUTE DISTMETHOD SERVERWLM 192.0.2.3 PORT 80 DESTIP ALL
ENDVIPADYNAMIC
";

const TOML: &str = r#"
p4info = "x.p4info.txtpb"
device_config = "x.json"
agent = { listen = "127.0.0.1:7070" }
[[switch]]
name = "SW1"
p4runtime = "127.0.0.1:9559"
device_id = 1
profile = "sw1.profile"
[[stack]]
name = "A"
underlay = "10.1.0.1"
mac = "02:00:00:00:00:0a"
ports = { SW1 = 1 }
[[stack]]
name = "B"
underlay = "10.1.0.2"
mac = "02:00:00:00:00:0b"
ports = { SW1 = 2 }
[[stack]]
name = "C"
underlay = "10.1.0.3"
mac = "02:00:00:00:00:0c"
ports = { SW1 = 3 }
"#;

fn setup() -> Sim {
    let profiles = BTreeMap::from([(
        "SW1".to_string(),
        ("sw1.profile".to_string(), PROFILE.to_string()),
    )]);
    let c = Cluster::build("m.toml", TOML, &profiles).unwrap();
    let mut s = Sim::new(Core::new(c, CoreOptions::default()).unwrap());
    s.switch_up("SW1", true);
    for (st, n) in [("A", 1), ("B", 2), ("C", 3)] {
        s.event(Event::AgentHello {
            stack: st.into(),
            underlay: Ipv4Addr::new(10, 1, 0, n),
            epoch: 1,
        });
    }
    s
}

fn srv(s: &mut Sim, stack: &str, v: u8, weight: u32, listening: bool, draining: bool) {
    let st = SrvStat {
        dvipa: Ipv4Addr::new(192, 0, 2, v),
        port: 80,
        protocol: 6,
        listening,
        weight,
        draining,
    };
    s.event(Event::AgentReport {
        stack: stack.into(),
        report: Report {
            seq: 1,
            srvstat: vec![st],
            ..Default::default()
        },
    });
}

fn slots(s: &Sim, v: u8) -> BTreeMap<u16, usize> {
    let svc = s
        .core
        .service_of(Ipv4Addr::new(192, 0, 2, v), 80, TCP)
        .unwrap();
    let t: &Tables = &s.switches["SW1"].tables;
    let mut m = BTreeMap::new();
    for (k, val) in t {
        if let Key::Dpt { service, .. } = k
            && *service == svc
        {
            *m.entry(val.target().unwrap()).or_insert(0) += 1;
        }
    }
    m
}

fn method(s: &Sim, v: u8) -> u8 {
    match s.switches["SW1"].tables[&Key::Dvipa {
        addr: Ipv4Addr::new(192, 0, 2, v),
        proto: TCP,
        port: Some(80),
    }] {
        Value::Distribute { method, .. } => method,
        _ => panic!(),
    }
}

#[test]
fn weightedactive_uses_configured_weights() {
    let mut s = setup();
    srv(&mut s, "A", 1, 0, true, false);
    srv(&mut s, "B", 1, 0, true, false);
    assert_eq!(slots(&s, 1), BTreeMap::from([(1, 192), (2, 64)]));
    assert_eq!(method(&s, 1), 1, "weighted round robin over the slots");
}

#[test]
fn serverwlm_uses_reported_weights() {
    let mut s = setup();
    srv(&mut s, "A", 3, 1, true, false);
    srv(&mut s, "B", 3, 3, true, false);
    srv(&mut s, "C", 3, 0, true, false);
    s.event(Event::AgentHeartbeat {
        stack: "C".into(),
        weight: 4,
    });
    assert_eq!(slots(&s, 3), BTreeMap::from([(1, 32), (2, 96), (3, 128)]));
    assert_eq!(method(&s, 3), 0, "hash over the slots");
    // A weight change moves only what it must.
    srv(&mut s, "B", 3, 1, true, false);
    assert_eq!(slots(&s, 3), BTreeMap::from([(1, 43), (2, 43), (3, 170)]));
}

#[test]
fn hotstandby_prefers_then_falls_back_by_rank() {
    let mut s = setup();
    for st in ["A", "B", "C"] {
        srv(&mut s, st, 2, 0, true, false);
    }
    assert_eq!(
        slots(&s, 2),
        BTreeMap::from([(2, 256)]),
        "all to the preferred B"
    );
    // B drains: its connections stay, new ones go to the highest-ranked backup C (50).
    let c = ConnReport {
        client: Ipv4Addr::new(198, 51, 100, 1),
        client_port: 999,
        dvipa: Ipv4Addr::new(192, 0, 2, 2),
        dvipa_port: 80,
        protocol: 6,
        server_originated: false,
    };
    s.event(Event::AgentReport {
        stack: "B".into(),
        report: Report {
            seq: 2,
            newconn: vec![c],
            ..Default::default()
        },
    });
    srv(&mut s, "B", 2, 0, true, true);
    assert_eq!(slots(&s, 2), BTreeMap::from([(3, 256)]));
    assert_eq!({ s.core.crt().values().next().unwrap().target }, 2);
    assert_eq!(
        s.core
            .stale_reason(s.core.crt().keys().next().unwrap())
            .unwrap()
            .1,
        "draining"
    );
    // C stops listening: backup A (10).
    srv(&mut s, "C", 2, 0, false, false);
    assert_eq!(slots(&s, 2), BTreeMap::from([(1, 256)]));
    // B back: preferred again.
    srv(&mut s, "B", 2, 0, true, false);
    assert_eq!(slots(&s, 2), BTreeMap::from([(2, 256)]));
    // Nobody ready: no DPT entries (the switch drops new connections), CRT untouched.
    for st in ["A", "B"] {
        srv(&mut s, st, 2, 0, false, false);
    }
    assert!(slots(&s, 2).is_empty());
    assert_eq!(s.core.crt().len(), 1);
}

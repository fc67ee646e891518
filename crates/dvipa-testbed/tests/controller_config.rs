//! The generated controller configuration and profiles parse with dvipa-core (no root needed:
//! the testbed is only described, never built).

use std::collections::BTreeMap;

use dvipa_core::config::{Cluster, Config};
use dvipa_testbed::topo::{ControllerParams, Testbed};

#[test]
fn generated_config_and_profiles_are_accepted_by_dvipa_core() {
    let tb = Testbed::describe_only("dvcfg01", 3, 2, 1, 9);
    let toml = tb.controller_toml(&ControllerParams {
        p4info: "dvipa.p4info.txtpb".into(),
        device_config: "dvipa.json".into(),
        agent_port: 7070,
        grpc_ports: vec![50001, 50002],
        profiles: vec!["sw1.profile".into(), "sw2.profile".into()],
        hot_standby: false,
    });
    let profiles: BTreeMap<String, (String, String)> = (1..=2)
        .map(|i| {
            (
                format!("sw{i}"),
                (format!("sw{i}.profile"), tb.profile_text(i, 1, 8080)),
            )
        })
        .collect();
    // the text is the typed configuration, serialized
    let parsed = Config::parse("testbed.toml", &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(
        parsed,
        tb.controller_config(&ControllerParams {
            p4info: "dvipa.p4info.txtpb".into(),
            device_config: "dvipa.json".into(),
            agent_port: 7070,
            grpc_ports: vec![50001, 50002],
            profiles: vec!["sw1.profile".into(), "sw2.profile".into()],
            hot_standby: false,
        })
    );
    println!("{toml}");
    let cluster = Cluster::build("testbed.toml", &toml, &profiles)
        .unwrap_or_else(|e| panic!("{e:?}\n{toml}\n{profiles:?}"));
    assert_eq!(cluster.config.switches.len(), 2);
    assert_eq!(cluster.config.stacks.len(), 3);
    assert_eq!(cluster.vipas.len(), 1);
    let v = &cluster.vipas[0];
    assert_eq!(v.addr, tb.dvipa());
    assert_eq!(v.owner, "sw1");
    assert_eq!(v.backups.len(), 1);
    assert_eq!(v.backups[0].switch, "sw2");
}

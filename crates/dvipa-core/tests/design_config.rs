//! The effective VIPA list of the design's figure 4 (MVS1 + MVS5 profiles, five stacks).
use dvipa_core::config::{Cluster, ConfigError};
use dvipa_core::profile::DistMethod;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const DVA1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const DVB1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
const TOML: &str = include_str!("fixtures/figure4.toml");

fn profiles() -> BTreeMap<String, (String, String)> {
    BTreeMap::from([
        (
            "MVS1".into(),
            (
                "mvs1.profile".into(),
                include_str!("fixtures/mvs1.profile").into(),
            ),
        ),
        (
            "MVS5".into(),
            (
                "mvs5.profile".into(),
                include_str!("fixtures/mvs5.profile").into(),
            ),
        ),
    ])
}

fn names(d: &dvipa_core::config::Distribution) -> Vec<&str> {
    d.candidates.iter().map(|c| c.stack.as_str()).collect()
}

#[test]
fn figure4_effective_vipa_list() {
    let c = Cluster::build("figure4.toml", TOML, &profiles()).unwrap();
    assert_eq!(c.vipas.len(), 2);
    let a = c.vipa(DVA1).unwrap();
    assert_eq!(a.owner, "MVS1");
    assert_eq!(a.dist.len(), 1);
    assert_eq!(a.dist[0].ports, vec![60]);
    assert_eq!(a.dist[0].method, DistMethod::RoundRobin);
    assert_eq!(names(&a.dist[0]), vec!["MVS1", "MVS2", "MVS4"]);
    assert_eq!(a.backups.len(), 1);
    assert_eq!(
        (a.backups[0].switch.as_str(), a.backups[0].rank),
        ("MVS5", 10)
    );
    // MVS5 has its own VIPADISTRIBUTE for DVA1: it is used when MVS5 routes DVA1.
    assert_eq!(names(&a.dist_for("MVS5")[0]), vec!["MVS2", "MVS3", "MVS4"]);
    assert_eq!(names(&a.dist_for("MVS1")[0]), vec!["MVS1", "MVS2", "MVS4"]);

    let b = c.vipa(DVB1).unwrap();
    assert_eq!(b.owner, "MVS5");
    assert!(b.dist[0].all_stacks);
    assert_eq!(names(&b.dist[0]).len(), 5);
    assert_eq!(
        (b.backups[0].switch.as_str(), b.backups[0].rank),
        ("MVS1", 30)
    );
    // MVS1 has no VIPADISTRIBUTE for DVB1: it keeps the primary's list.
    assert!(b.backups[0].own.is_empty());
    assert!(b.dist_for("MVS1")[0].all_stacks);

    let t = c.render_table();
    assert!(t.contains("203.0.113.10/24"), "{t}");
    assert!(t.contains("MVS5(own)"), "{t}");
    assert!(t.contains("MVS1(30)"), "{t}");
}

#[test]
fn toml_errors_name_line_and_column() {
    let bad = TOML.replace("device_id = 5", "device_id = \"five\"");
    let e = Cluster::build("figure4.toml", &bad, &profiles()).unwrap_err();
    match &e.0[0] {
        ConfigError::Toml {
            file,
            line,
            col,
            msg,
        } => {
            assert_eq!((file.as_str(), *line, *col), ("figure4.toml", 32, 13));
            assert!(msg.contains("expected u64"), "{msg}");
        }
        other => panic!("{other}"),
    }
    let bad = TOML.replace("lease_ms = 3000", "lease_ms = 3000\nbogus = 1");
    let e = Cluster::build("figure4.toml", &bad, &profiles()).unwrap_err();
    assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
}

#[test]
fn validation_errors_name_the_field() {
    let bad = TOML.replace(
        "ports = { MVS1 = 5, MVS5 = 5 }",
        "ports = { MVS1 = 5, MVS9 = 5 }",
    );
    let e = Cluster::build("figure4.toml", &bad, &profiles())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("figure4.toml:62:9: stack[3].ports: no port for switch `MVS5`"),
        "{e}"
    );
    assert!(
        e.contains("figure4.toml:62:28: stack[3].ports.MVS9: no switch named `MVS9`"),
        "{e}"
    );
    let bad = TOML.replace("underlay = \"10.0.0.4\"", "underlay = \"10.0.0.2\"");
    let e = Cluster::build("figure4.toml", &bad, &profiles())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "figure4.toml:60:12: stack[3].underlay: 10.0.0.2 is already the underlay address of \
             stack `MVS2`"
        ),
        "{e}"
    );
}

#[test]
fn cross_profile_errors() {
    // DESTIP naming an address that is no configured stack.
    let mut p = profiles();
    p.get_mut("MVS5").unwrap().1 =
        include_str!("fixtures/mvs5.profile").replace("10.0.0.3 ", "10.0.0.9 ");
    let e = Cluster::build("figure4.toml", TOML, &p)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "mvs5.profile:7:49: DESTIP 10.0.0.9 is not the underlay address of any configured [[stack]]"
    );
    // Two switches defining DVA1.
    let mut p = profiles();
    p.get_mut("MVS5").unwrap().1 = include_str!("fixtures/mvs5.profile").replace(
        "VipaB 10 203.0.113.10",
        "VipaDef 255.255.255.0 203.0.113.10",
    );
    let e = Cluster::build("figure4.toml", TOML, &p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mvs5.profile:6:3: VIPA 203.0.113.10 is also VIPADEFINEd at mvs1.profile:4:3"),
        "{e}"
    );
    // A backup of a VIPA nobody defines.
    let mut p = profiles();
    p.get_mut("MVS1").unwrap().1 = include_str!("fixtures/mvs1.profile")
        .replace("VIPABACKUP 30 203.0.113.20", "VIPABACKUP 30 203.0.113.99");
    let e = Cluster::build("figure4.toml", TOML, &p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mvs1.profile:7:3: VIPABACKUP 203.0.113.99: no switch's profile VIPADEFINEs it"),
        "{e}"
    );
}

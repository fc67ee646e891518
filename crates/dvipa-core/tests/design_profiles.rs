//! The design document's own figure 4 example (MVS1 and MVS5), parsed from the fixtures.
use dvipa_core::profile::{DestIp, DistMethod, parse_profile};
use std::net::Ipv4Addr;

const DVA1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const DVB1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);

fn xcf(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

fn dests(d: &DestIp) -> Vec<Ipv4Addr> {
    match d {
        DestIp::All => vec![],
        DestIp::List(l) => l.iter().map(|e| e.addr).collect(),
    }
}

#[test]
fn mvs1_profile() {
    let p = parse_profile("mvs1.profile", include_str!("fixtures/mvs1.profile")).unwrap();
    assert_eq!(p.defines.len(), 1);
    assert_eq!(p.defines[0].addrs, vec![DVA1]);
    assert_eq!(p.defines[0].prefix_len, 24);
    assert_eq!(p.distributes.len(), 1);
    let d = &p.distributes[0];
    assert_eq!(
        (d.addr, d.ports.clone(), d.method),
        (DVA1, vec![60], DistMethod::RoundRobin)
    );
    assert_eq!(dests(&d.dest), vec![xcf(1), xcf(2), xcf(4)]);
    assert_eq!(p.backup_rank(DVB1).map(|r| r.0), Some(30));
    assert!(p.defined(DVB1).is_none());
}

#[test]
fn mvs5_profile_with_abbreviations() {
    let p = parse_profile("mvs5.profile", include_str!("fixtures/mvs5.profile")).unwrap();
    assert_eq!(p.defines[0].addrs, vec![DVB1]);
    let dvb1: Vec<_> = p.distributes_of(DVB1).collect();
    assert_eq!(dvb1.len(), 1);
    assert_eq!(dvb1[0].dest, DestIp::All);
    assert_eq!(p.backup_rank(DVA1).map(|r| r.0), Some(10));
    let dva1: Vec<_> = p.distributes_of(DVA1).collect();
    assert_eq!(dests(&dva1[0].dest), vec![xcf(2), xcf(3), xcf(4)]);
}

#[test]
fn malformed_profile_reports_every_error_with_position() {
    let src = include_str!("fixtures/mvs1.profile")
        .replace("PORT 60", "PORT 70000")
        .replace("VIPABACKUP 30", "VIPABACKUP thirty");
    let e = parse_profile("bad.profile", &src).unwrap_err();
    let lines: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        lines,
        vec![
            "bad.profile:5:36: a port number must be 1–65535, found 70000".to_string(),
            "bad.profile:7:14: expected a backup rank, found `thirty`".to_string(),
        ]
    );
}

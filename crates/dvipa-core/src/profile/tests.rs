//! Tests of [`super`].

use super::*;

#[test]
fn abbreviations() {
    assert!(keyword_matches("vipadef", "VIPADEFine"));
    assert!(keyword_matches("VIPADEFINE", "VIPADEFine"));
    assert!(keyword_matches("VipaDist", "VIPADISTribute"));
    assert!(!keyword_matches("VIPADE", "VIPADEFine"));
    assert!(!keyword_matches("VIPADEFX", "VIPADEFine"));
    assert!(keyword_matches("move", "MOVEable"));
    assert!(!keyword_matches("mov", "MOVEable"));
    assert!(keyword_matches("distm", "DISTMethod"));
}

#[test]
fn statement_continues_over_lines_with_comments() {
    let src = "vipadyn ; start\n vipadef\n  255.255.255.0 ; mask\n 10.1.1.1\n  10.1.1.2\n vipadist 10.1.1.1 port 60\n 61, 62 destip 192.168.1.1,\n 192.168.1.2\nendvipadyn\n";
    let p = parse_profile("t", src).unwrap();
    assert_eq!(p.defines[0].addrs.len(), 2);
    assert_eq!(p.defines[0].prefix_len, 24);
    assert_eq!(p.distributes[0].ports, vec![60, 61, 62]);
    assert!(matches!(&p.distributes[0].dest, DestIp::List(l) if l.len() == 2));
}

#[test]
fn errors_name_line_column_and_expectation() {
    let src = "VIPADYNAMIC\n  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 10.1.1.1\n  VIPADISTRIBUTE 10.1.1.1 PORT 60 DESTIP bogus\n  VIPABACKUP 300 10.2.2.2\nENDVIPADYNAMIC\n";
    let e = parse_profile("mvs1.prof", src).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains(
            "mvs1.prof:3:42: expected a DESTIP underlay (XCF) address or ALL, found `bogus`"
        ),
        "{s}"
    );
    assert!(
        s.contains("mvs1.prof:4:14: a backup rank must be 1–254, found 300"),
        "{s}"
    );
    assert_eq!(e.0.len(), 2);
}

#[test]
fn missing_end_and_outside_statement() {
    let e = parse_profile("f", "VIPADEFINE 255.0.0.0 10.0.0.1\nVIPADYNAMIC\n").unwrap_err();
    assert_eq!(e.0[0].loc, Loc { line: 1, col: 1 });
    assert!(e.0[0].msg.starts_with("expected VIPADYNAMIC"));
    assert!(e.0.last().unwrap().msg.contains("expected ENDVIPADYNAMIC"));
}

#[test]
fn semantic_errors() {
    let src = "VIPADYN\nVIPADEFINE 255.255.255.0 10.1.1.1 10.1.2.1\nVIPADIST 10.9.9.9 DESTIP ALL\nVIPADIST DISTM HOTSTANDBY 10.1.1.1 DESTIP 1.1.1.1 BACKUP 3\nENDVIPADYN\n";
    let e = parse_profile("f", src).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("f:2:35: VIPA 10.1.2.1 is not in the subnet 10.1.1.0/24"),
        "{s}"
    );
    assert!(s.contains("needs exactly one PREFERRED"), "{s}");
    assert!(
        s.contains("f:3:1: VIPADISTRIBUTE 10.9.9.9: the DVIPA must first appear"),
        "{s}"
    );
}

#[test]
fn methods_weights_and_roles() {
    let src = "VIPADYNAMIC\nVIPADEFINE 255.255.255.255 10.1.1.1 \nVIPADEFINE 255.255.255.255 10.1.1.2\n\
               VIPADISTRIBUTE DEFINE DISTMETHOD WEIGHTEDACTIVE 10.1.1.1 PORT 80 DESTIP 1.1.1.1 WEIGHT 3 1.1.1.2 WEIGHT 1\n\
               VIPADIST DISTM HOTSTANDBY 10.1.1.2 DESTIP 1.1.1.1 PREF 1.1.1.2 BACKUP 20\n\
               VIPARANGE DEFINE MOVEABLE NONDISRUPTIVE 255.255.255.0 10.5.5.0\nENDVIPADYNAMIC";
    let p = parse_profile("f", src).unwrap();
    assert_eq!(p.distributes[0].method, DistMethod::WeightedActive);
    let DestIp::List(l) = &p.distributes[0].dest else {
        panic!()
    };
    assert_eq!(l[0].weight, Some(3));
    let DestIp::List(l) = &p.distributes[1].dest else {
        panic!()
    };
    assert_eq!(l[1].role, Some(StandbyRole::Backup(20)));
    assert!(p.ranges[0].contains("10.5.5.77".parse().unwrap()));
    let e = parse_profile("f", "VIPADYN\nVIPADEF 255.255.255.255 10.1.1.1\nVIPADIST 10.1.1.1 DESTIP 1.1.1.1 WEIGHT 2\nENDVIPADYN").unwrap_err();
    assert!(
        e.to_string()
            .contains("f:3:34: WEIGHT is only valid with DISTMETHOD WEIGHTEDACTIVE"),
        "{e}"
    );
}

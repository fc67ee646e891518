//! Name resolution, entry building and digest decoding against the project's dvipa P4Info
//! (`p4src/p4c-out/bmv2/dvipa.p4info.txtpb`), using the names of `docs/pipeline-contract.md`.
use std::net::Ipv4Addr;

use p4rt::proto::p4::v1 as p4;
use p4rt::{MacAddr, MatchValue, ObjectKind, Schema, SchemaError};

/// (table, [(match field, kind, bitwidth)])
type TableSpec<'a> = (&'a str, &'a [(&'a str, &'a str, i32)]);

fn schema() -> Schema {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
    );
    Schema::from_file(path).expect("dvipa P4Info loads")
}

#[test]
fn every_contract_table_resolves_with_its_match_fields() {
    let s = schema();
    let tables: &[TableSpec] = &[
        (
            "IngressImpl.dvipa",
            &[
                ("hdr.ipv4.dstAddr", "exact", 32),
                ("hdr.ipv4.protocol", "exact", 8),
                ("meta.l4_dport", "ternary", 16),
            ],
        ),
        (
            "IngressImpl.crt",
            &[
                ("hdr.ipv4.srcAddr", "exact", 32),
                ("hdr.ipv4.dstAddr", "exact", 32),
                ("hdr.ipv4.protocol", "exact", 8),
                ("meta.l4_sport", "exact", 16),
                ("meta.l4_dport", "exact", 16),
            ],
        ),
        (
            "IngressImpl.dpt",
            &[("meta.service_id", "exact", 16), ("meta.slot", "exact", 16)],
        ),
        ("IngressImpl.target", &[("meta.target_id", "exact", 16)]),
        ("IngressImpl.ipv4_route", &[("meta.route_dst", "lpm", 32)]),
    ];
    for (fq, fields) in tables {
        let short = fq.rsplit('.').next().unwrap();
        let t = s.table(fq).unwrap();
        let t2 = s.table(short).unwrap();
        assert_eq!(t.preamble, t2.preamble, "{short} resolves to {fq}");
        assert_eq!(
            s.id(ObjectKind::Table, short).unwrap(),
            t.preamble.as_ref().unwrap().id
        );
        assert_eq!(t.match_fields.len(), fields.len(), "{fq}");
        for (name, kind, bits) in *fields {
            let f = s.match_field(t, name).unwrap();
            assert_eq!(p4rt::schema::match_kind_name(f), *kind, "{fq} {name}");
            assert_eq!(f.bitwidth, *bits, "{fq} {name}");
        }
    }
    let crt = s.table("crt").unwrap();
    assert_eq!(crt.idle_timeout_behavior, 1, "crt is NOTIFY_CONTROL");
    assert_eq!(
        p4rt::schema::name_of(&s.direct_counter_of(crt).unwrap().preamble),
        "IngressImpl.crt_counter"
    );
    let target = s.table("target").unwrap();
    assert_eq!(
        p4rt::schema::name_of(&s.direct_counter_of(target).unwrap().preamble),
        "IngressImpl.target_counter"
    );
}

#[test]
fn every_contract_action_resolves_with_its_params() {
    let s = schema();
    let actions: &[(&str, &[(&str, i32)])] = &[
        (
            "IngressImpl.distribute",
            &[("service_id", 16), ("method", 8)],
        ),
        ("IngressImpl.to_target", &[("target_id", 16)]),
        ("IngressImpl.forward_l2", &[("dmac", 48), ("port", 9)]),
        (
            "IngressImpl.encap_ipip",
            &[("outer_src", 32), ("outer_dst", 32)],
        ),
        (
            "IngressImpl.set_nexthop",
            &[("dmac", 48), ("smac", 48), ("port", 9)],
        ),
        ("IngressImpl.drop", &[]),
        ("NoAction", &[]),
    ];
    for (fq, params) in actions {
        let a = s.action(fq).unwrap();
        assert_eq!(a.params.len(), params.len(), "{fq}");
        for (p, bits) in *params {
            assert_eq!(s.action_param(a, p).unwrap().bitwidth, *bits, "{fq}.{p}");
        }
    }
    assert!(s.action("to_target").is_ok());
}

#[test]
fn externs_and_digest_resolve() {
    let s = schema();
    let c = s.counter("service_counter").unwrap();
    assert_eq!(c.size, 1024);
    assert!(s.direct_counter("IngressImpl.crt_counter").is_ok());
    assert!(s.direct_counter("target_counter").is_ok());
    assert_eq!(s.register("rr_state").unwrap().size, 1024);
    let d = s.digest_layout("learn_t").unwrap();
    let members: Vec<(&str, u32)> = d.members.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    assert_eq!(
        members,
        [
            ("src_addr", 32),
            ("dst_addr", 32),
            ("protocol", 8),
            ("src_port", 16),
            ("dst_port", 16),
            ("service_id", 16),
            ("target_id", 16),
            ("flags", 8)
        ]
    );
}

#[test]
fn unknown_and_ambiguous_names_list_candidates() {
    let s = schema();
    let e = s.table("crtt").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("unknown table \"crtt\""), "{msg}");
    assert!(msg.contains("IngressImpl.crt"), "{msg}");
    // both dvipa and crt have a hdr.ipv4.dstAddr; within one table `dstAddr` is unique
    let crt = s.table("crt").unwrap();
    assert_eq!(
        s.match_field(crt, "srcAddr").unwrap().name,
        "hdr.ipv4.srcAddr"
    );
    let e = s.match_field(crt, "slot").unwrap_err();
    assert!(matches!(e, SchemaError::UnknownMatchField { .. }));
    assert!(e.to_string().contains("meta.l4_sport"), "{e}");
    let a = s.action("forward_l2").unwrap();
    let e = s.action_param(a, "mac").unwrap_err();
    assert!(e.to_string().contains("dmac, port"), "{e}");
}

#[test]
fn crt_entry_builds_and_decodes() {
    let s = schema();
    let src = Ipv4Addr::new(192, 168, 1, 10);
    let e = s
        .table_entry("crt")
        .exact("hdr.ipv4.srcAddr", src)
        .exact("hdr.ipv4.dstAddr", Ipv4Addr::new(10, 0, 0, 1))
        .exact("hdr.ipv4.protocol", 6u8)
        .exact("meta.l4_sport", 40000u16)
        .exact("meta.l4_dport", 80)
        .action("to_target")
        .param("target_id", 7)
        .idle_timeout_ns(500_000_000)
        .build()
        .unwrap();
    assert_eq!(e.table_id, s.id(ObjectKind::Table, "crt").unwrap());
    assert_eq!(e.r#match.len(), 5);
    let Some(p4::field_match::FieldMatchType::Exact(x)) = &e.r#match[0].field_match_type else {
        panic!("exact")
    };
    assert_eq!(x.value, vec![192, 168, 1, 10]);
    let d = s.decode_table_entry(&e).unwrap();
    assert_eq!(d.table, "IngressImpl.crt");
    assert_eq!(d.exact_ipv4("srcAddr").unwrap(), src);
    assert_eq!(d.exact_u128("meta.l4_dport").unwrap(), 80);
    let a = d.action.unwrap();
    assert_eq!(a.name, "IngressImpl.to_target");
    assert_eq!(a.param_u128("target_id").unwrap(), 7);
    assert_eq!(d.idle_timeout_ns, 500_000_000);
}

#[test]
fn entry_rules_are_enforced() {
    let s = schema();
    // missing exact field
    let e = s
        .table_entry("dpt")
        .exact("meta.service_id", 1)
        .action("to_target")
        .param("target_id", 1)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("meta.slot is missing"), "{e}");
    // value too wide for bit<9>
    let e = s
        .table_entry("target")
        .exact("meta.target_id", 3)
        .action("forward_l2")
        .param("dmac", "02:00:00:00:00:01".parse::<MacAddr>().unwrap())
        .param("port", 512)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("bit<9>"), "{e}");
    // missing parameter
    let e = s
        .table_entry("target")
        .exact("meta.target_id", 3)
        .action("forward_l2")
        .param("port", 1)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("dmac is missing"), "{e}");
    // action of another table
    let e = s
        .table_entry("dpt")
        .exact("meta.service_id", 1)
        .exact("meta.slot", 2)
        .action("set_nexthop")
        .build()
        .unwrap_err();
    assert!(matches!(e, SchemaError::ActionNotInTable { .. }), "{e}");
    // NoAction is DEFAULT_ONLY in dvipa tables
    let e = s
        .table_entry("dpt")
        .exact("meta.service_id", 1)
        .exact("meta.slot", 2)
        .action("NoAction")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("in entries"), "{e}");
    // wrong match kind
    let e = s
        .table_entry("ipv4_route")
        .exact("meta.route_dst", 1)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("is lpm, not exact"), "{e}");
    // ternary table needs a priority
    let e = s
        .table_entry("dvipa")
        .exact("hdr.ipv4.dstAddr", Ipv4Addr::new(10, 0, 0, 1))
        .exact("hdr.ipv4.protocol", 6)
        .ternary("meta.l4_dport", 80, 0xffff)
        .action("distribute")
        .param("service_id", 1)
        .param("method", 0)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("priority > 0"), "{e}");
    // exact table must not have one
    let e = s
        .table_entry("target")
        .exact("meta.target_id", 3)
        .priority(5)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("priority must be 0"), "{e}");
    // idle timeout only on NOTIFY_CONTROL tables
    let e = s
        .table_entry("target")
        .exact("meta.target_id", 3)
        .idle_timeout_ns(1)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("idle timeout"), "{e}");
}

#[test]
fn ternary_and_lpm_are_canonical() {
    let s = schema();
    // port omitted: mask 0 means the field is left out
    let e = s
        .table_entry("dvipa")
        .exact("hdr.ipv4.dstAddr", Ipv4Addr::new(10, 0, 0, 1))
        .exact("hdr.ipv4.protocol", 6)
        .ternary("meta.l4_dport", 0, 0)
        .priority(1)
        .action("distribute")
        .param("service_id", 1)
        .param("method", 1)
        .build()
        .unwrap();
    assert_eq!(e.r#match.len(), 2);
    let e = s
        .table_entry("dvipa")
        .exact("hdr.ipv4.dstAddr", Ipv4Addr::new(10, 0, 0, 1))
        .exact("hdr.ipv4.protocol", 6)
        .ternary("meta.l4_dport", 0x1f00, 0xff00)
        .priority(1)
        .action("distribute")
        .param("service_id", 1)
        .param("method", 1)
        .build()
        .unwrap();
    let d = s.decode_table_entry(&e).unwrap();
    assert_eq!(
        d.matches[2].2,
        MatchValue::Ternary {
            value: vec![0x1f, 0],
            mask: vec![0xff, 0]
        }
    );
    let e = s
        .table_entry("dvipa")
        .exact("hdr.ipv4.dstAddr", Ipv4Addr::new(10, 0, 0, 1))
        .exact("hdr.ipv4.protocol", 6)
        .ternary("meta.l4_dport", 0x1f01, 0xff00)
        .priority(1)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("outside mask"), "{e}");
    let r = s
        .table_entry("ipv4_route")
        .lpm("meta.route_dst", Ipv4Addr::new(10, 1, 0, 0), 16)
        .action("set_nexthop")
        .param("dmac", MacAddr([2, 0, 0, 0, 0, 1]))
        .param("smac", MacAddr([2, 0, 0, 0, 0, 2]))
        .param("port", 2)
        .build()
        .unwrap();
    let Some(p4::field_match::FieldMatchType::Lpm(l)) = &r.r#match[0].field_match_type else {
        panic!("lpm")
    };
    assert_eq!((l.value.clone(), l.prefix_len), (vec![10, 1, 0, 0], 16));
    let e = s
        .table_entry("ipv4_route")
        .lpm("meta.route_dst", Ipv4Addr::new(10, 1, 0, 1), 16)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("beyond prefix /16"), "{e}");
    let e = s
        .table_entry("ipv4_route")
        .lpm("meta.route_dst", Ipv4Addr::new(10, 1, 0, 1), 33)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("exceeds bit<32>"), "{e}");
    // default action entry
    let d = s
        .table_entry("ipv4_route")
        .default_action()
        .action("drop")
        .build()
        .unwrap();
    assert!(d.is_default_action && d.r#match.is_empty());
}

#[test]
fn digest_encode_decode_round_trip() {
    let s = schema();
    let data = s
        .encode_digest(
            "learn_t",
            &[
                (
                    "src_addr",
                    u128::from(u32::from(Ipv4Addr::new(192, 168, 1, 10))),
                ),
                (
                    "dst_addr",
                    u128::from(u32::from(Ipv4Addr::new(10, 0, 0, 1))),
                ),
                ("protocol", 6),
                ("src_port", 40000),
                ("dst_port", 80),
                ("service_id", 3),
                ("target_id", 0),
                ("flags", 1),
            ],
        )
        .unwrap();
    let id = s.digest_layout("learn_t").unwrap().id;
    let list = p4::DigestList {
        digest_id: id,
        list_id: 9,
        data: vec![data],
        timestamp: 0,
    };
    let (name, recs) = s.decode_digest_list(&list).unwrap();
    assert_eq!(name, "learn_t");
    let r = &recs[0];
    assert_eq!(r.ipv4("src_addr").unwrap(), Ipv4Addr::new(192, 168, 1, 10));
    assert_eq!(r.u128("src_port").unwrap(), 40000);
    assert_eq!(r.bytes("target_id").unwrap(), &[0], "zero is one 0x00 byte");
    assert_eq!(r.u128("flags").unwrap(), 1);
    assert!(r.u128("nope").is_err());
    let e = s.encode_digest("learn_t", &[("src_addr", 1)]).unwrap_err();
    assert!(e.to_string().contains("dst_addr is missing"), "{e}");
    // a member wider than declared is rejected on decode
    let mut bad = list.clone();
    if let Some(p4::p4_data::Data::Struct(st)) = &mut bad.data[0].data {
        st.members[2].data = Some(p4::p4_data::Data::Bitstring(vec![1, 0]));
    }
    let e = s.decode_digest_list(&bad).unwrap_err();
    assert!(e.to_string().contains("protocol"), "{e}");
}

#[test]
fn counter_register_and_digest_entries() {
    let s = schema();
    let c = s.counter_entry("service_counter", Some(5)).unwrap();
    assert_eq!(c.index.unwrap().index, 5);
    assert!(s.counter_entry("service_counter", Some(1024)).is_err());
    assert!(
        s.counter_entry("service_counter", None)
            .unwrap()
            .index
            .is_none()
    );
    assert!(s.register_entry("rr_state", Some(1023)).is_ok());
    let d = s
        .digest_entry("learn_t", 1_000_000, 10, 1_000_000_000)
        .unwrap();
    assert_eq!(d.config.unwrap().max_list_size, 10);
    let w = s.table_wildcard("crt").unwrap();
    assert!(s.direct_counter_entry(w).is_ok());
    let w = s.table_wildcard("dpt").unwrap();
    assert!(
        s.direct_counter_entry(w).is_err(),
        "dpt has no direct counter"
    );
}

#[test]
fn binary_and_text_loading_agree() {
    use prost::Message;
    let s = schema();
    let bin = s.p4info().encode_to_vec();
    let b = Schema::from_binary(&bin).unwrap();
    assert_eq!(b.p4info(), s.p4info());
    assert!(matches!(
        Schema::from_text("tables { preamble { id: 1 name: \"x\" } bogus: 3 }"),
        Err(SchemaError::Text(_))
    ));
    let dup =
        "tables { preamble { id: 5 name: \"a\" } } actions { preamble { id: 5 name: \"b\" } }";
    assert!(matches!(
        Schema::from_text(dup),
        Err(SchemaError::Invalid(_))
    ));
}

#[test]
fn ambiguous_suffix_is_an_error() {
    let text = r#"
tables { preamble { id: 1 name: "IngressImpl.t" } }
tables { preamble { id: 2 name: "EgressImpl.t" } }
"#;
    let s = Schema::from_text(text).unwrap();
    let e = s.table("t").unwrap_err();
    assert!(matches!(e, SchemaError::Ambiguous { .. }));
    assert!(e.to_string().contains("IngressImpl.t, EgressImpl.t"), "{e}");
    assert!(s.table("EgressImpl.t").is_ok());
}

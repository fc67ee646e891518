//! The generated types and the exported descriptor set agree with the P4Runtime spec names,
//! and a P4Info in text format parses through the descriptor set.
use p4rt_proto::p4::config::v1 as cfg;
use p4rt_proto::p4::v1 as p4;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

fn pool() -> DescriptorPool {
    DescriptorPool::decode(p4rt_proto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

#[test]
fn descriptor_set_has_spec_field_numbers() {
    let pool = pool();
    let cases = [
        ("p4.v1.WriteRequest", "role", 6),
        ("p4.v1.WriteRequest", "election_id", 3),
        ("p4.v1.TableEntry", "idle_timeout_ns", 9),
        ("p4.v1.TableEntry", "meter_counter_data", 12),
        ("p4.v1.StreamMessageResponse", "error", 6),
        (
            "p4.v1.StreamMessageResponse",
            "idle_timeout_notification",
            4,
        ),
        ("p4.v1.FieldMatch", "optional", 7),
        ("p4.v1.P4Data", "enum_value", 12),
        ("p4.config.v1.P4Info", "type_info", 200),
        ("p4.config.v1.Table", "idle_timeout_behavior", 9),
        ("google.rpc.Status", "details", 3),
    ];
    for (msg, field, num) in cases {
        let m = pool
            .get_message_by_name(msg)
            .unwrap_or_else(|| panic!("{msg} missing"));
        let f = m
            .get_field_by_name(field)
            .unwrap_or_else(|| panic!("{msg}.{field} missing"));
        assert_eq!(f.number(), num, "{msg}.{field}");
    }
    let svc = pool.get_service_by_name("p4.v1.P4Runtime").unwrap();
    let mut methods: Vec<String> = svc.methods().map(|m| m.name().to_string()).collect();
    methods.sort();
    assert_eq!(
        methods,
        [
            "Capabilities",
            "GetForwardingPipelineConfig",
            "Read",
            "SetForwardingPipelineConfig",
            "StreamChannel",
            "Write"
        ]
    );
}

#[test]
fn p4info_text_format_round_trips_through_prost() {
    let text = r#"
pkg_info { arch: "v1model" }
tables {
  preamble { id: 33554433 name: "IngressImpl.crt" alias: "crt" }
  match_fields { id: 1 name: "hdr.ipv4.srcAddr" bitwidth: 32 match_type: EXACT }
  action_refs { id: 16777217 }
  direct_resource_ids: 318767105
  size: 65536
  idle_timeout_behavior: NOTIFY_CONTROL
}
actions {
  preamble { id: 16777217 name: "IngressImpl.to_target" alias: "to_target" }
  params { id: 1 name: "target_id" bitwidth: 16 }
}
"#;
    let desc = pool().get_message_by_name("p4.config.v1.P4Info").unwrap();
    let dynm = DynamicMessage::parse_text_format(desc, text).expect("text parses");
    let info = cfg::P4Info::decode(dynm.encode_to_vec().as_slice()).expect("binary decodes");
    let t = &info.tables[0];
    assert_eq!(t.preamble.as_ref().unwrap().name, "IngressImpl.crt");
    assert_eq!(t.match_fields[0].bitwidth, 32);
    assert_eq!(
        t.match_fields[0].r#match,
        Some(cfg::match_field::Match::MatchType(
            cfg::match_field::MatchType::Exact as i32
        ))
    );
    assert_eq!(
        t.idle_timeout_behavior,
        cfg::table::IdleTimeoutBehavior::NotifyControl as i32
    );
    assert_eq!(info.actions[0].params[0].name, "target_id");
}

#[test]
fn stream_message_encodes_with_spec_tags() {
    // arbitration is field 1 of StreamMessageRequest: tag byte 0x0a; device_id is field 1 inside.
    let m = p4::StreamMessageRequest {
        update: Some(p4::stream_message_request::Update::Arbitration(
            p4::MasterArbitrationUpdate {
                device_id: 7,
                election_id: Some(p4::Uint128 { high: 0, low: 1 }),
                ..Default::default()
            },
        )),
    };
    let b = m.encode_to_vec();
    assert_eq!(b, vec![0x0a, 0x06, 0x08, 0x07, 0x1a, 0x02, 0x10, 0x01]);
}

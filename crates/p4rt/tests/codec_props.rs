//! Property tests of the value codec: canonical form, width checks, round trips.
use p4rt::codec::{self, P4Value};
use proptest::prelude::*;

proptest! {
    #[test]
    fn round_trip_and_canonical(v in any::<u128>(), extra in 0u32..8) {
        let needed = 128 - v.leading_zeros();
        let w = needed.max(1) + extra;
        let b = codec::encode_u128(v, w).unwrap();
        prop_assert!(codec::is_canonical(&b));
        prop_assert_eq!(b.len(), (needed.max(1) as usize).div_ceil(8));
        prop_assert_eq!(codec::decode_u128(&b, w).unwrap(), v);
    }

    #[test]
    fn too_wide_is_an_error(v in 1u128.., shrink in 1u32..8) {
        let needed = 128 - v.leading_zeros();
        prop_assume!(needed > shrink);
        let err = codec::encode_u128(v, needed - shrink).is_err();
        prop_assert!(err);
    }

    #[test]
    fn padded_input_decodes_like_canonical(v in any::<u64>(), pad in 0usize..4) {
        let mut b = vec![0u8; pad];
        b.extend_from_slice(&v.to_be_bytes());
        prop_assert_eq!(codec::decode_u128(&b, 64).unwrap(), u128::from(v));
        prop_assert_eq!(codec::check(&b, 64).unwrap(), v.encode(64).unwrap());
    }
}

fn dvipa() -> p4rt::Schema {
    p4rt::Schema::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
    ))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever 5-tuple and target go into a CRT entry come back out of its decoding.
    #[test]
    fn crt_entry_round_trip(src in any::<u32>(), dst in any::<u32>(), proto in any::<u8>(),
                            sport in any::<u16>(), dport in any::<u16>(), target in any::<u16>()) {
        let s = dvipa();
        let e = s.table_entry("crt")
            .exact("hdr.ipv4.srcAddr", src)
            .exact("hdr.ipv4.dstAddr", std::net::Ipv4Addr::from(dst))
            .exact("hdr.ipv4.protocol", proto)
            .exact("meta.l4_sport", sport)
            .exact("meta.l4_dport", dport)
            .action("to_target")
            .param("target_id", target)
            .build()
            .unwrap();
        for m in &e.r#match {
            if let Some(p4rt::proto::p4::v1::field_match::FieldMatchType::Exact(x)) = &m.field_match_type {
                prop_assert!(codec::is_canonical(&x.value));
            }
        }
        let d = s.decode_table_entry(&e).unwrap();
        prop_assert_eq!(d.exact_u128("hdr.ipv4.srcAddr").unwrap(), u128::from(src));
        prop_assert_eq!(d.exact_ipv4("hdr.ipv4.dstAddr").unwrap(), std::net::Ipv4Addr::from(dst));
        prop_assert_eq!(d.exact_u128("hdr.ipv4.protocol").unwrap(), u128::from(proto));
        prop_assert_eq!(d.exact_u128("meta.l4_sport").unwrap(), u128::from(sport));
        prop_assert_eq!(d.exact_u128("meta.l4_dport").unwrap(), u128::from(dport));
        prop_assert_eq!(d.action.unwrap().param_u128("target_id").unwrap(), u128::from(target));
    }

    /// A 9-bit port parameter accepts exactly 0..=511.
    #[test]
    fn port_param_width(port in 0u32..2048) {
        let s = dvipa();
        let r = s.table_entry("target")
            .exact("meta.target_id", 1u16)
            .action("forward_l2")
            .param("dmac", p4rt::MacAddr([2, 0, 0, 0, 0, 1]))
            .param("port", port)
            .build();
        prop_assert_eq!(r.is_ok(), port < 512);
    }
}

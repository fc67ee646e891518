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

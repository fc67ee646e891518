//! `IngressImpl.ipv4_route`: underlay routes (LPM) for IP-in-IP targets.

use crate::TableSpec;
use p4rt::proto::p4::config::v1::match_field::MatchType as M;

/// Table name.
pub const NAME: &str = "IngressImpl.ipv4_route";
/// Route destination.
pub const F_ROUTE_DST: &str = "meta.route_dst";

/// Shape.
pub const SPEC: TableSpec = TableSpec {
    name: NAME,
    fields: &[(F_ROUTE_DST, M::Lpm, 32)],
    actions: &[crate::actions::SET_NEXTHOP, crate::actions::DROP],
    direct_counter: None,
};

#[cfg(feature = "entries")]
pub(crate) use enc::{decode_key, encode_key};

#[cfg(feature = "entries")]
mod enc {
    use super::*;
    use crate::entries::{DecodeError, shape};
    use dvipa_core::config::Prefix;
    use dvipa_core::entries::Key;
    use p4rt::{DecodedEntry, MatchValue, TableEntryBuilder};
    use std::net::Ipv4Addr;

    pub(crate) fn encode_key(b: TableEntryBuilder<'_>, prefix: Prefix) -> TableEntryBuilder<'_> {
        b.lpm(F_ROUTE_DST, prefix.addr, u32::from(prefix.len))
    }

    /// The key of a decoded `ipv4_route` entry (no match = the default route).
    pub(crate) fn decode_key(e: &DecodedEntry) -> Result<Key, DecodeError> {
        let prefix = match e.matches.iter().find(|m| m.0 == F_ROUTE_DST) {
            None => Prefix {
                addr: Ipv4Addr::UNSPECIFIED,
                len: 0,
            },
            Some((_, w, MatchValue::Lpm { value, prefix_len })) => Prefix {
                addr: p4rt::codec::decode_ipv4(value, *w).map_err(|x| shape(e, x.to_string()))?,
                len: *prefix_len as u8,
            },
            Some(other) => return Err(shape(e, format!("route match {other:?}"))),
        };
        Ok(Key::Route { prefix })
    }
}

//! `IngressImpl.dvipa`: DVIPA + protocol (+ port) → the service and its distribution method.

use crate::TableSpec;
use p4rt::proto::p4::config::v1::match_field::MatchType as M;

/// Table name.
pub const NAME: &str = "IngressImpl.dvipa";
/// Destination address (the DVIPA).
pub const F_DST: &str = "hdr.ipv4.dstAddr";
/// IP protocol.
pub const F_PROTO: &str = "hdr.ipv4.protocol";
/// Destination port (ternary: all ports when absent).
pub const F_DPORT: &str = "meta.l4_dport";

/// Shape.
pub const SPEC: TableSpec = TableSpec {
    name: NAME,
    fields: &[
        (F_DST, M::Exact, 32),
        (F_PROTO, M::Exact, 8),
        (F_DPORT, M::Ternary, 16),
    ],
    actions: &[crate::actions::DISTRIBUTE, crate::actions::NO_ACTION],
    direct_counter: None,
};

#[cfg(feature = "entries")]
pub(crate) use enc::{decode_key, encode_key};

#[cfg(feature = "entries")]
mod enc {
    use super::*;
    use crate::entries::{DecodeError, shape, u16_of};
    use dvipa_core::entries::Key;
    use p4rt::{DecodedEntry, MatchValue, TableEntryBuilder};
    use std::net::Ipv4Addr;

    pub(crate) fn encode_key<'s>(
        b: TableEntryBuilder<'s>,
        addr: Ipv4Addr,
        proto: u8,
        port: Option<u16>,
        priority: i32,
    ) -> TableEntryBuilder<'s> {
        let b = b.exact(F_DST, addr).exact(F_PROTO, proto);
        match port {
            Some(p) => b.ternary(F_DPORT, p, 0xffffu16),
            None => b,
        }
        .priority(priority)
    }

    /// The key of a decoded `dvipa` entry.
    pub(crate) fn decode_key(e: &DecodedEntry) -> Result<Key, DecodeError> {
        let port = match e.matches.iter().find(|m| m.0 == F_DPORT) {
            None => None,
            Some((_, w, MatchValue::Ternary { value, mask })) => {
                let m = p4rt::codec::decode_u128(mask, *w).unwrap_or(0);
                if m != 0xffff {
                    return Err(shape(
                        e,
                        format!("port mask {m:#x} is neither 0 nor 0xffff"),
                    ));
                }
                let v = p4rt::codec::decode_u128(value, *w).unwrap_or(0);
                Some(u16_of(v, e, "port")?)
            }
            Some(other) => return Err(shape(e, format!("port match {other:?}"))),
        };
        Ok(Key::Dvipa {
            addr: e.exact_ipv4(F_DST)?,
            proto: e.exact_u128(F_PROTO)? as u8,
            port,
        })
    }
}

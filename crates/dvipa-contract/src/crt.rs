//! `IngressImpl.crt`: the connection routing table, 5-tuple → target (idle timeout, direct
//! counter).

use crate::TableSpec;
use p4rt::proto::p4::config::v1::match_field::MatchType as M;

/// Table name.
pub const NAME: &str = "IngressImpl.crt";
/// Client address.
pub const F_SRC: &str = "hdr.ipv4.srcAddr";
/// DVIPA.
pub const F_DST: &str = "hdr.ipv4.dstAddr";
/// IP protocol.
pub const F_PROTO: &str = "hdr.ipv4.protocol";
/// Client port.
pub const F_SPORT: &str = "meta.l4_sport";
/// DVIPA port.
pub const F_DPORT: &str = "meta.l4_dport";

/// Shape.
pub const SPEC: TableSpec = TableSpec {
    name: NAME,
    fields: &[
        (F_SRC, M::Exact, 32),
        (F_DST, M::Exact, 32),
        (F_PROTO, M::Exact, 8),
        (F_SPORT, M::Exact, 16),
        (F_DPORT, M::Exact, 16),
    ],
    actions: &[crate::actions::TO_TARGET, crate::actions::NO_ACTION],
    direct_counter: Some(crate::counters::CRT),
};

#[cfg(feature = "entries")]
pub(crate) use enc::{decode_key, encode_key};

#[cfg(feature = "entries")]
mod enc {
    use super::*;
    use crate::entries::{DecodeError, u16_of};
    use dvipa_core::entries::{ConnKey, Key};
    use p4rt::{DecodedEntry, TableEntryBuilder};

    pub(crate) fn encode_key<'s>(
        b: TableEntryBuilder<'s>,
        c: &ConnKey,
        idle_timeout_ns: i64,
    ) -> TableEntryBuilder<'s> {
        let (src, dst, proto, sport, dport) = (c.src, c.dst, c.proto, c.sport, c.dport);
        let b = b
            .exact(F_SRC, src)
            .exact(F_DST, dst)
            .exact(F_PROTO, proto)
            .exact(F_SPORT, sport)
            .exact(F_DPORT, dport);
        if idle_timeout_ns > 0 {
            b.idle_timeout_ns(idle_timeout_ns)
        } else {
            b
        }
    }

    /// The key of a decoded `crt` entry.
    pub(crate) fn decode_key(e: &DecodedEntry) -> Result<Key, DecodeError> {
        Ok(Key::Crt(ConnKey {
            src: e.exact_u128(F_SRC)? as u32,
            dst: e.exact_u128(F_DST)? as u32,
            proto: e.exact_u128(F_PROTO)? as u8,
            sport: u16_of(e.exact_u128(F_SPORT)?, e, "sport")?,
            dport: u16_of(e.exact_u128(F_DPORT)?, e, "dport")?,
        }))
    }
}

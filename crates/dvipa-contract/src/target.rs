//! `IngressImpl.target`: target id → how to reach the stack (L2 or IP-in-IP), direct counter.

use crate::TableSpec;
use p4rt::proto::p4::config::v1::match_field::MatchType as M;

/// Table name.
pub const NAME: &str = "IngressImpl.target";
/// Target id.
pub const F_TARGET: &str = "meta.target_id";

/// Shape.
pub const SPEC: TableSpec = TableSpec {
    name: NAME,
    fields: &[(F_TARGET, M::Exact, 16)],
    actions: &[
        crate::actions::FORWARD_L2,
        crate::actions::ENCAP_IPIP,
        crate::actions::DROP,
    ],
    direct_counter: Some(crate::counters::TARGET),
};

#[cfg(feature = "entries")]
pub(crate) use enc::{decode_key, encode_key};

#[cfg(feature = "entries")]
mod enc {
    use super::*;
    use crate::entries::{DecodeError, u16_of};
    use dvipa_core::entries::Key;
    use p4rt::{DecodedEntry, TableEntryBuilder};

    pub(crate) fn encode_key(b: TableEntryBuilder<'_>, target: u16) -> TableEntryBuilder<'_> {
        b.exact(F_TARGET, target)
    }

    /// The key of a decoded `target` entry.
    pub(crate) fn decode_key(e: &DecodedEntry) -> Result<Key, DecodeError> {
        Ok(Key::Target {
            target: u16_of(e.exact_u128(F_TARGET)?, e, "target")?,
        })
    }
}

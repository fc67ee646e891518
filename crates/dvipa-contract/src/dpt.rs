//! `IngressImpl.dpt`: the distribution table, (service, slot) → target.

use crate::TableSpec;
use p4rt::proto::p4::config::v1::match_field::MatchType as M;

/// Table name.
pub const NAME: &str = "IngressImpl.dpt";
/// Service id.
pub const F_SERVICE: &str = "meta.service_id";
/// Slot.
pub const F_SLOT: &str = "meta.slot";

/// Shape.
pub const SPEC: TableSpec = TableSpec {
    name: NAME,
    fields: &[(F_SERVICE, M::Exact, 16), (F_SLOT, M::Exact, 16)],
    actions: &[crate::actions::TO_TARGET, crate::actions::NO_ACTION],
    direct_counter: None,
};

#[cfg(feature = "entries")]
pub(crate) use enc::{decode_key, encode_key};

#[cfg(feature = "entries")]
mod enc {
    use super::*;
    use crate::entries::{DecodeError, u16_of};
    use dvipa_core::entries::Key;
    use p4rt::{DecodedEntry, TableEntryBuilder};

    pub(crate) fn encode_key(
        b: TableEntryBuilder<'_>,
        service: u16,
        slot: u16,
    ) -> TableEntryBuilder<'_> {
        b.exact(F_SERVICE, service).exact(F_SLOT, slot)
    }

    /// The key of a decoded `dpt` entry.
    pub(crate) fn decode_key(e: &DecodedEntry) -> Result<Key, DecodeError> {
        Ok(Key::Dpt {
            service: u16_of(e.exact_u128(F_SERVICE)?, e, "service")?,
            slot: u16_of(e.exact_u128(F_SLOT)?, e, "slot")?,
        })
    }
}

//! The `learn_t` digest: a new connection the switch pinned by itself (first packet), and the
//! digest settings every client of the contract writes.

/// Digest name.
pub const NAME: &str = "learn_t";
/// Members (name, bits), in order.
pub const MEMBERS: [(&str, u32); 8] = [
    ("src_addr", 32),
    ("dst_addr", 32),
    ("protocol", 8),
    ("src_port", 16),
    ("dst_port", 16),
    ("service_id", 16),
    ("target_id", 16),
    ("flags", 8),
];
/// `flags` bit 0: the packet was not a SYN (a mid-stream packet of an unknown connection).
pub const FLAG_NOT_SYN: u128 = 1;
/// `DigestEntry.config.max_timeout_ns`: a list is sent at most 1 ms after its first digest.
pub const MAX_TIMEOUT_NS: i64 = 1_000_000;
/// `DigestEntry.config.max_list_size`.
pub const MAX_LIST_SIZE: i32 = 100;
/// `DigestEntry.config.ack_timeout_ns`: an unacked list is sent again after 1 s.
pub const ACK_TIMEOUT_NS: i64 = 1_000_000_000;

#[cfg(feature = "entries")]
pub use enc::digest_item;

#[cfg(feature = "entries")]
mod enc {
    use super::*;
    use crate::entries::DecodeError;
    use dvipa_core::core::DigestItem;
    use dvipa_core::entries::ConnKey;

    /// One decoded `learn_t` digest message as a core digest item.
    pub fn digest_item(r: &p4rt::DigestRecord) -> Result<DigestItem, DecodeError> {
        let g = |m: &str| r.u128(m);
        Ok(DigestItem {
            conn: ConnKey {
                src: g(MEMBERS[0].0)? as u32,
                dst: g(MEMBERS[1].0)? as u32,
                proto: g(MEMBERS[2].0)? as u8,
                sport: g(MEMBERS[3].0)? as u16,
                dport: g(MEMBERS[4].0)? as u16,
            },
            service: g(MEMBERS[5].0)? as u16,
            target: g(MEMBERS[6].0)? as u16,
            not_syn: g(MEMBERS[7].0)? & FLAG_NOT_SYN != 0,
        })
    }
}

/// The `DigestEntry` that enables `learn_t` with the contract's settings.
pub fn digest_entry(
    schema: &p4rt::Schema,
) -> Result<p4rt::proto::p4::v1::DigestEntry, p4rt::SchemaError> {
    schema.digest_entry(NAME, MAX_TIMEOUT_NS, MAX_LIST_SIZE, ACK_TIMEOUT_NS)
}

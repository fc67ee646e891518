//! The P4 pipeline contract (`docs/pipeline-contract.md`) in one place: every P4Info name the
//! controller, the embedded switch and the benchmarks use, the shape each object must have, one
//! [`check`] of a P4Info that reports **every** mismatch at once, and (feature `entries`, on by
//! default) the encodings between the core's typed entries and P4Runtime entities.
//!
//! Layout (one module per P4 object, dendrite style):
//! - [`dvipa`], [`crt`], [`dpt`], [`target`], [`route`]: one table each — its name, match
//!   fields ([`TableSpec`]), and with `entries` its key encoding and `decode_key`;
//! - [`actions`]: the actions with their parameters, and with `entries` the value encoding and
//!   `decode_value`;
//! - [`learn`]: the `learn_t` digest (members, flags, the digest settings every client uses),
//!   and with `entries` its decoding;
//! - [`counters`]: the indirect and direct counters and the switch's registers;
//! - `check.rs`: [`check`] and [`Mismatches`];
//! - `entries.rs` (feature `entries`): [`table_entry`], [`to_p4_update`], [`decode`],
//!   [`decode_lenient`], [`digest_item`].
//!
//! Names are looked up with [`resolve_name`]: the exact name, or a unique `.`-suffix match (a
//! TNA P4Info prefixes names with `pipe.`).

pub mod actions;
mod check;
pub mod counters;
pub mod crt;
pub mod dpt;
pub mod dvipa;
#[cfg(feature = "entries")]
mod entries;
pub mod learn;
pub mod route;
pub mod target;

pub use check::{Mismatches, check};
#[cfg(feature = "entries")]
pub use entries::{
    DecodeError, decode, decode_key, decode_lenient, digest_item, foreign_value, table_entry,
    table_name, to_p4_update,
};

use p4rt::proto::p4::config::v1::match_field::MatchType;

/// A match field of a contract table: (name, kind, bits).
pub type FieldSpec = (&'static str, MatchType, i32);

/// A contract table: its name, match fields in order, actions and direct counter.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    /// P4Info name.
    pub name: &'static str,
    /// Match fields, in P4Info order.
    pub fields: &'static [FieldSpec],
    /// Actions the table must allow.
    pub actions: &'static [&'static str],
    /// Its direct counter, if it has one.
    pub direct_counter: Option<&'static str>,
}

/// The five tables, in contract order.
pub const TABLES: [&TableSpec; 5] = [
    &dvipa::SPEC,
    &crt::SPEC,
    &dpt::SPEC,
    &target::SPEC,
    &route::SPEC,
];

/// The five table names, in contract order.
pub const TABLE_NAMES: [&str; 5] = [dvipa::NAME, crt::NAME, dpt::NAME, target::NAME, route::NAME];

/// Which of `contract` names a P4Info name is: the exact name, or the one name it ends with
/// after a `.` (`pipe.IngressImpl.crt` → `IngressImpl.crt`) when exactly one does.
pub fn resolve_name<'a>(p4info_name: &str, contract: &[&'a str]) -> Option<&'a str> {
    if let Some(n) = contract.iter().find(|n| **n == p4info_name) {
        return Some(n);
    }
    let mut hits = contract.iter().filter(|n| {
        p4info_name.len() > n.len()
            && p4info_name.ends_with(**n)
            && p4info_name.as_bytes()[p4info_name.len() - n.len() - 1] == b'.'
    });
    match (hits.next(), hits.next()) {
        (Some(n), None) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_exactly_or_by_a_unique_dot_suffix() {
        assert_eq!(
            resolve_name("IngressImpl.crt", &TABLE_NAMES),
            Some(crt::NAME)
        );
        assert_eq!(
            resolve_name("pipe.IngressImpl.crt", &TABLE_NAMES),
            Some(crt::NAME)
        );
        assert_eq!(resolve_name("pipe.IngressImplcrt", &TABLE_NAMES), None);
        assert_eq!(resolve_name("XIngressImpl.crt", &TABLE_NAMES), None);
        assert_eq!(resolve_name("a.b", &["b", "x.b"]), Some("b"));
        assert_eq!(resolve_name("y.x.b", &["b", "x.b"]), None, "ambiguous");
    }
}

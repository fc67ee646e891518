//! The core's typed entries (`dvipa_core::entries`) ↔ P4Runtime entities.

use crate::{TABLE_NAMES, actions, crt, dpt, dvipa, route, target};
use dvipa_core::config::Mac;
use dvipa_core::entries::{Key, Update, UpdateKind, Value};
use p4rt::proto::p4::v1 as p4;
use p4rt::{DecodedEntry, Schema, SchemaError};

/// An entity that does not map to or from the core's typed entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The schema refused a name or value.
    #[error("P4 schema: {0}")]
    Schema(String),
    /// An entry of a contract table that does not fit the contract's shape.
    #[error("unexpected {table} entry: {detail}")]
    Shape {
        /// Table.
        table: String,
        /// What is wrong.
        detail: String,
    },
}

impl From<SchemaError> for DecodeError {
    fn from(e: SchemaError) -> Self {
        DecodeError::Schema(e.to_string())
    }
}

pub(crate) fn shape(e: &DecodedEntry, detail: impl Into<String>) -> DecodeError {
    DecodeError::Shape {
        table: e.table.clone(),
        detail: detail.into(),
    }
}

pub(crate) fn u16_of(v: u128, e: &DecodedEntry, what: &str) -> Result<u16, DecodeError> {
    u16::try_from(v).map_err(|_| shape(e, format!("{what} {v} does not fit 16 bits")))
}

/// The contract table a key belongs to.
pub fn table_name(key: &Key) -> &'static str {
    match key {
        Key::Dvipa { .. } => dvipa::NAME,
        Key::Dpt { .. } => dpt::NAME,
        Key::Target { .. } => target::NAME,
        Key::Route { .. } => route::NAME,
        Key::Crt(_) => crt::NAME,
    }
}

/// The table entry (match + action) of a typed key and value; CRT entries get
/// `crt_idle_timeout_ns` when it is positive.
pub fn table_entry(
    schema: &Schema,
    key: &Key,
    value: &Value,
    crt_idle_timeout_ns: i64,
) -> Result<p4::TableEntry, DecodeError> {
    let b = schema.table_entry(table_name(key));
    let b = match key {
        Key::Dvipa { addr, proto, port } => {
            dvipa::encode_key(b, *addr, *proto, *port, key.priority())
        }
        Key::Dpt { service, slot } => dpt::encode_key(b, *service, *slot),
        Key::Target { target } => target::encode_key(b, *target),
        Key::Route { prefix } => route::encode_key(b, *prefix),
        Key::Crt(c) => crt::encode_key(b, c, crt_idle_timeout_ns),
    };
    Ok(actions::encode_value(b, value).build()?)
}

/// A core update as a P4Runtime update. A delete carries only the match (no action, no idle
/// timeout), as P4Runtime asks.
pub fn to_p4_update(
    schema: &Schema,
    u: &Update,
    crt_idle_timeout_ns: i64,
) -> Result<p4::Update, DecodeError> {
    let mut e = table_entry(schema, &u.key, &u.value, crt_idle_timeout_ns)?;
    Ok(match u.kind {
        UpdateKind::Insert => p4rt::insert(e),
        UpdateKind::Modify => p4rt::modify(e),
        UpdateKind::Delete => {
            e.action = None;
            e.idle_timeout_ns = 0;
            p4rt::delete(e)
        }
    })
}

/// The key of a decoded contract-table entry (its action is not looked at).
pub fn decode_key(e: &DecodedEntry) -> Result<Key, DecodeError> {
    match crate::resolve_name(&e.table, &TABLE_NAMES) {
        Some(dvipa::NAME) => dvipa::decode_key(e),
        Some(dpt::NAME) => dpt::decode_key(e),
        Some(target::NAME) => target::decode_key(e),
        Some(route::NAME) => route::decode_key(e),
        Some(crt::NAME) => crt::decode_key(e),
        _ => Err(DecodeError::Shape {
            table: e.table.clone(),
            detail: "not a contract table".into(),
        }),
    }
}

/// A decoded contract-table entry as a typed key and value.
pub fn decode(e: &DecodedEntry) -> Result<(Key, Value), DecodeError> {
    let key = decode_key(e)?;
    Ok((key, actions::decode_value(e)?))
}

/// The value reported to the core for an entry whose key is understood but whose action is
/// not (e.g. `NoAction` written by someone else): it never equals a desired value, so the
/// reconciler overwrites or deletes the entry.
pub fn foreign_value(k: &Key) -> Value {
    match k {
        Key::Dvipa { .. } => Value::Distribute {
            service: u16::MAX,
            method: u8::MAX,
        },
        Key::Dpt { .. } | Key::Crt(_) => Value::ToTarget { target: 0 },
        Key::Target { .. } => Value::ForwardL2 {
            dmac: Mac([0; 6]),
            port: 511,
        },
        Key::Route { .. } => Value::SetNexthop {
            dmac: Mac([0; 6]),
            smac: Mac([0; 6]),
            port: 511,
        },
    }
}

/// Like [`decode`], but an entry whose key is understood and whose action is not is returned
/// with [`foreign_value`] and `true`.
pub fn decode_lenient(e: &DecodedEntry) -> Result<(Key, Value, bool), DecodeError> {
    let key = decode_key(e)?;
    match actions::decode_value(e) {
        Ok(v) => Ok((key, v, false)),
        Err(_) => Ok((key, foreign_value(&key), true)),
    }
}

pub use crate::learn::digest_item;

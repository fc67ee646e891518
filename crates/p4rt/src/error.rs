//! Error types of the schema layer (the codec has [`crate::codec::CodecError`], the client
//! [`crate::client::ClientError`]).
use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use crate::codec::CodecError;

/// Kind of a P4Info object, used in name-resolution errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// Match-action table.
    Table,
    /// Action.
    Action,
    /// Action profile / selector.
    ActionProfile,
    /// Indexed counter.
    Counter,
    /// Direct counter.
    DirectCounter,
    /// Indexed meter.
    Meter,
    /// Direct meter.
    DirectMeter,
    /// Register.
    Register,
    /// Digest.
    Digest,
    /// Controller packet metadata header (packet_in / packet_out).
    ControllerPacketMetadata,
    /// Parser value set.
    ValueSet,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Table => "table",
            ObjectKind::Action => "action",
            ObjectKind::ActionProfile => "action profile",
            ObjectKind::Counter => "counter",
            ObjectKind::DirectCounter => "direct counter",
            ObjectKind::Meter => "meter",
            ObjectKind::DirectMeter => "direct meter",
            ObjectKind::Register => "register",
            ObjectKind::Digest => "digest",
            ObjectKind::ControllerPacketMetadata => "controller packet metadata",
            ObjectKind::ValueSet => "value set",
        })
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(", ")
    }
}

/// Errors of P4Info loading, name resolution and entity building.
#[derive(Debug, Error)]
pub enum SchemaError {
    /// Reading a P4Info file failed.
    #[error("cannot read P4Info file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The P4Info text format did not parse.
    #[error("invalid P4Info text format: {0}")]
    Text(String),
    /// The P4Info binary did not decode.
    #[error("invalid P4Info binary: {0}")]
    Binary(#[from] prost::DecodeError),
    /// The P4Info is internally inconsistent.
    #[error("inconsistent P4Info: {0}")]
    Invalid(String),
    /// No object of that kind has that name (or suffix).
    #[error("unknown {kind} {name:?}; known: {}", list(.candidates))]
    Unknown {
        /// Kind looked up.
        kind: ObjectKind,
        /// Name given.
        name: String,
        /// Fully qualified names of all objects of that kind.
        candidates: Vec<String>,
    },
    /// A short name matches several objects.
    #[error("ambiguous {kind} name {name:?}: matches {}", list(.matches))]
    Ambiguous {
        /// Kind looked up.
        kind: ObjectKind,
        /// Name given.
        name: String,
        /// Fully qualified names it matches.
        matches: Vec<String>,
    },
    /// No object of that kind has that id.
    #[error("unknown {kind} id {id}")]
    UnknownId {
        /// Kind looked up.
        kind: ObjectKind,
        /// Id given.
        id: u32,
    },
    /// A table has no match field of that name.
    #[error("table {table} has no match field {name:?}; fields: {}", list(.candidates))]
    UnknownMatchField {
        /// Table.
        table: String,
        /// Name given.
        name: String,
        /// Its match fields.
        candidates: Vec<String>,
    },
    /// An action has no parameter of that name.
    #[error("action {action} has no parameter {name:?}; parameters: {}", list(.candidates))]
    UnknownParam {
        /// Action.
        action: String,
        /// Name given.
        name: String,
        /// Its parameters.
        candidates: Vec<String>,
    },
    /// A digest struct has no member of that name.
    #[error("digest {digest} has no member {name:?}; members: {}", list(.candidates))]
    UnknownMember {
        /// Digest.
        digest: String,
        /// Name given.
        name: String,
        /// Its members.
        candidates: Vec<String>,
    },
    /// The action is not one of the table's actions (or not allowed in this position).
    #[error("action {action} is not allowed {position} of table {table}; allowed: {}", list(.allowed))]
    ActionNotInTable {
        /// Table.
        table: String,
        /// Action.
        action: String,
        /// "in entries" or "as default action".
        position: &'static str,
        /// Actions allowed there.
        allowed: Vec<String>,
    },
    /// The match kind used does not match the declared kind.
    #[error("match field {field} of table {table} is {declared}, not {used}")]
    MatchKind {
        /// Table.
        table: String,
        /// Field.
        field: String,
        /// Declared kind.
        declared: String,
        /// Kind used.
        used: &'static str,
    },
    /// A field, parameter or member was given twice.
    #[error("{what} {name} given twice")]
    Duplicate {
        /// "match field", "parameter", ...
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A required value is missing.
    #[error("{0}")]
    Missing(String),
    /// A value violates a P4Runtime rule (priority, mask, prefix, ...).
    #[error("{0}")]
    Rule(String),
    /// A value does not fit its field.
    #[error("{context}: {source}")]
    Value {
        /// Which field.
        context: String,
        /// Codec error.
        source: CodecError,
    },
}

/// Result alias for schema operations.
pub type Result<T, E = SchemaError> = std::result::Result<T, E>;

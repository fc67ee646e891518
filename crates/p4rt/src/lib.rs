//! P4Runtime v1 client library for dvipa.
//!
//! Layout:
//! - [`codec`]: `bit<W>` values (integers, [`MacAddr`], IPv4/IPv6, bytes) ↔ canonical P4Runtime
//!   bytestrings, with bit-width checks. No I/O.
//! - [`schema`]: [`Schema`], a loaded P4Info (text or binary) resolving tables, actions, params,
//!   match fields, digests, counters and registers by fully qualified name, alias or unique
//!   suffix. No I/O besides the file loaders.
//! - [`entity`]: [`TableEntryBuilder`] (entries by name, checked like a server would),
//!   decoders for entries and digests ([`DecodedEntry`], [`DigestRecord`]), and helpers for
//!   digest, counter, direct-counter and register entities. No I/O.
//! - [`client`]: [`Session`], the async P4Runtime client for one (device_id, role):
//!   arbitration (mastership on `watch`, [`SessionEvent`]s on `broadcast`), pipeline push with
//!   cookie, batched writes with per-update errors, streamed reads, stream dispatch queues
//!   ([`StreamQueues`]), reconnect with backoff.
//! - [`reqlog`]: [`RequestLog`], every request in protobuf text format to one file per switch.
//! - [`error`]: [`SchemaError`] and [`ObjectKind`].
//!
//! The schema and codec are independent of the network client, so a P4Runtime *server* (the
//! embedded switch) can use them too.
pub mod client;
pub mod codec;
pub mod entity;
pub mod error;
pub mod reqlog;
pub mod schema;

pub use client::{
    ClientConfig, ClientError, DigestDelivery, Mastership, PipelineOutcome, Session, SessionEvent,
    StreamQueues, UpdateError,
};
pub use codec::{CodecError, MacAddr, P4Value};
pub use entity::{
    DecodedAction, DecodedEntry, DigestRecord, IntoEntity, MatchValue, TableEntryBuilder, delete,
    insert, modify,
};
pub use error::{ObjectKind, SchemaError};
pub use p4rt_proto as proto;
pub use reqlog::RequestLog;
pub use schema::{DigestLayout, Schema};

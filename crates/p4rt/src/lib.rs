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
//!
//! Tests: `tests/schema_dvipa.rs` (every contract name on the dvipa P4Info), `tests/codec_props.rs`
//! (proptest), `tests/session.rs` (mock server in-process); the interop test against the official
//! Python bindings is `scripts/interop-test.sh` (driver: `examples/interop_client.rs`, server and
//! checks: `interop/interop.py`; the same scenario against a real `dvipa-switch`:
//! `interop/switch_interop.py`); `interop/bench.sh` prints write throughput.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::Ipv4Addr;
//! use p4rt::{ClientConfig, Schema, Session, insert};
//!
//! let schema = Schema::from_file("p4src/p4c-out/bmv2/dvipa.p4info.txtpb")?;
//! let mut cfg = ClientConfig::new("127.0.0.1:9559", 0);
//! cfg.election_id = 1;
//! let (session, mut queues) = Session::connect(cfg).await?;
//! session.wait_primary(std::time::Duration::from_secs(5)).await?;
//! session.set_pipeline(schema.p4info().clone(), std::fs::read("dvipa.json")?, 42).await?;
//! session
//!     .write(vec![insert(schema.digest_entry("learn_t", 1_000_000, 10, 1_000_000_000)?)])
//!     .await?;
//! let crt = schema
//!     .table_entry("crt")
//!     .exact("hdr.ipv4.srcAddr", Ipv4Addr::new(192, 168, 1, 10))
//!     .exact("hdr.ipv4.dstAddr", Ipv4Addr::new(10, 0, 0, 1))
//!     .exact("hdr.ipv4.protocol", 6u8)
//!     .exact("meta.l4_sport", 40000u16)
//!     .exact("meta.l4_dport", 80u16)
//!     .action("to_target")
//!     .param("target_id", 7u16)
//!     .build()?;
//! session.write(vec![insert(crt)]).await?;
//! if let Some(digest) = queues.digests.recv().await {
//!     let (_name, records) = schema.decode_digest_list(&digest.list)?;
//!     // ... write the CRT entries for `records`, then:
//!     digest.ack().await?;
//! }
//! # Ok(()) }
//! ```
pub mod client;
pub mod codec;
mod connector;
pub mod entity;
pub mod error;
pub mod ratelimit;
pub mod reqlog;
pub mod schema;
pub mod tofino;

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
pub use schema::{DigestLayout, P4INFO_CAP, Schema};

//! dvipa-switch: the embedded software switch of dvipa.
//!
//! It runs the pipeline of `p4src/dvipa.p4` (see `docs/pipeline-contract.md`) natively, table for
//! table, so the controller can program it over P4Runtime exactly as it programs bmv2.
//!
//! Layout:
//! - [`packet`]: the parser (`ParserImpl`) over byte slices, and the IPv4 checksum;
//! - [`tables`]: the five tables with typed keys and actions, direct counters, last-hit times;
//! - [`pipeline`]: `IngressImpl` + deparser: [`Pipeline::process`] turns one input frame into a
//!   [`Verdict`] (output port or drop reason), the output frame and `learn_t` digests;
//! - [`io`]: AF_PACKET ports (TPACKET_V3 RX ring, batched `sendmmsg` TX) and the data-path loop;
//! - [`server`]: the P4Runtime server (tonic) programming the pipeline, with digests and idle
//!   timeouts.
#![warn(missing_docs)]

pub mod io;
pub mod packet;
pub mod pipeline;
pub mod server;
pub mod tables;

pub use pipeline::{DropReason, Learn, Output, Pipeline, Verdict};

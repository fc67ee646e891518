//! Which real P4Runtime server the embedded switch answers like, where real servers differ, and
//! the limits of one Write.
//!
//! The P4Runtime specification asks for `RESOURCE_EXHAUSTED` when an INSERT finds its table
//! full, and that is what the embedded switch answers by default ([`Flavor::Standard`]).
//! bmv2's `simple_switch_grpc` (PI server, seen with bmv2 1.15 and PI f96af95; see
//! `../shared/notes/bmv2-facts.md`) answers the same condition with gRPC `UNKNOWN` and, per
//! failed update, a `p4.v1.Error` whose canonical code is `UNKNOWN` (2), message `Error when
//! adding match entry to target`, space `ALL-sswitch-p4org`, code 0. [`Flavor::Bmv2`] answers
//! exactly that, so a controller's handling of bmv2 is tested without bmv2.

use p4rt::proto::p4::v1 as p4;
use prost::Message;

use super::program::EntityError;

/// Message bmv2's PI server gives a failed INSERT into a full table (and other target-side
/// add failures).
pub const BMV2_ADD_FAILED: &str = "Error when adding match entry to target";
/// Error space of bmv2's simple_switch PI server.
pub const BMV2_SPACE: &str = "ALL-sswitch-p4org";

/// Updates accepted in one Write by default. A Write answers one `p4.v1.Error` per update in its
/// status details (about 40 bytes for an OK update, 100–150 for a failed one, before base64); a
/// client must hold them in one HTTP/2 header block, so an unbounded Write would produce answers
/// no client can read (gRPC C core's hard limit is 16 KiB by default, this project's client
/// allows 16 MiB). 10,000 updates answer in at most about 2 MiB.
pub const DEFAULT_MAX_WRITE_UPDATES: usize = 10_000;

/// The server whose answers the embedded switch gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flavor {
    /// The P4Runtime specification: a full table is `RESOURCE_EXHAUSTED`.
    #[default]
    Standard,
    /// bmv2's `simple_switch_grpc`: a full table is `UNKNOWN`, "Error when adding match entry to
    /// target", space `ALL-sswitch-p4org`.
    Bmv2,
}

impl Flavor {
    /// Parses a `--flavor` value.
    pub fn parse(s: &str) -> Result<Flavor, String> {
        match s {
            "standard" | "p4runtime" => Ok(Flavor::Standard),
            "bmv2" => Ok(Flavor::Bmv2),
            _ => Err(format!(
                "unknown flavor {s:?}: expected \"standard\" (P4Runtime spec answers) or \"bmv2\" \
                 (simple_switch_grpc's answers)"
            )),
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Standard => "standard",
            Flavor::Bmv2 => "bmv2",
        }
    }

    /// The `p4.v1.Error` of one update's outcome, as this flavor's server writes it.
    pub(crate) fn update_error(self, r: &Result<(), EntityError>) -> prost_types::Any {
        let e = match (self, r) {
            (_, Ok(())) => p4::Error {
                canonical_code: tonic::Code::Ok as i32,
                space: "dvipa-switch".into(),
                ..Default::default()
            },
            (Flavor::Bmv2, Err(EntityError::Exhausted(_))) => p4::Error {
                canonical_code: tonic::Code::Unknown as i32,
                message: BMV2_ADD_FAILED.into(),
                space: BMV2_SPACE.into(),
                code: 0,
                details: None,
            },
            (_, Err(e)) => p4::Error {
                canonical_code: e.code() as i32,
                message: e.to_string(),
                space: "dvipa-switch".into(),
                code: 0,
                details: None,
            },
        };
        prost_types::Any {
            type_url: "type.googleapis.com/p4.v1.Error".into(),
            value: e.encode_to_vec(),
        }
    }
}

/// Settings of a [`super::SwitchServer`].
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Whose answers to give.
    pub flavor: Flavor,
    /// A Write with more updates is refused whole (`RESOURCE_EXHAUSTED`, nothing applied).
    pub max_write_updates: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            flavor: Flavor::Standard,
            max_write_updates: DEFAULT_MAX_WRITE_UPDATES,
        }
    }
}

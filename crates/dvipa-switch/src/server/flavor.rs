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
//!
//! [`Flavor::StratumBfrt`] behaves like Stratum's `stratum_bfrt` serving a Tofino (issue 16):
//! it takes only a `BfPipelineConfig` device config (checked: a profile with a context and a
//! binary, and a `bfrt.json` describing every table of the P4Info given with it), serves the TNA
//! P4Info (`pipe.`-prefixed tables), acks digests itself (a DigestListAck is ignored, a list is
//! never re-sent) and sends digests whatever the DigestEntry config says, and sends no
//! idle-timeout notifications. The data path stays the v1model program's (the contract).

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
    /// Stratum's `stratum_bfrt` on a Tofino: BfPipelineConfig device config, TNA P4Info, digests
    /// acked by the server, no idle-timeout notifications.
    StratumBfrt,
}

/// The digest batching `stratum_bfrt` uses whatever the DigestEntry says (the SDE's learn
/// filter): lists flushed within 1 ms, up to 64 digests.
pub const BFRT_DIGEST_CONFIG: super::DigestConfig = super::DigestConfig {
    max_timeout_ns: 1_000_000,
    max_list_size: 64,
    ack_timeout_ns: 0,
};

impl Flavor {
    /// Parses a `--flavor` value.
    pub fn parse(s: &str) -> Result<Flavor, String> {
        match s {
            "standard" | "p4runtime" => Ok(Flavor::Standard),
            "bmv2" => Ok(Flavor::Bmv2),
            "stratum-bfrt" => Ok(Flavor::StratumBfrt),
            _ => Err(format!(
                "unknown flavor {s:?}: expected \"standard\" (P4Runtime spec answers), \"bmv2\" \
                 (simple_switch_grpc's answers) or \"stratum-bfrt\" (Stratum on a Tofino)"
            )),
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Standard => "standard",
            Flavor::Bmv2 => "bmv2",
            Flavor::StratumBfrt => "stratum-bfrt",
        }
    }

    /// True when the server acks digest lists itself (ignores DigestListAck, never re-sends).
    pub fn acks_digests_itself(self) -> bool {
        self == Flavor::StratumBfrt
    }

    /// True when the server sends idle-timeout notifications.
    pub fn sends_idle_notifications(self) -> bool {
        self != Flavor::StratumBfrt
    }

    /// The digest config in force: the client's, or the server's own.
    pub(crate) fn digest_config(
        self,
        configured: Option<super::DigestConfig>,
    ) -> Option<super::DigestConfig> {
        match self {
            Flavor::StratumBfrt => Some(BFRT_DIGEST_CONFIG),
            _ => configured,
        }
    }

    /// Checks a SetForwardingPipelineConfig's P4Info and device config as this flavor's server
    /// would; the error is the INVALID_ARGUMENT message.
    pub fn check_pipeline(
        self,
        p4info: &p4rt::proto::p4::config::v1::P4Info,
        device_config: &[u8],
    ) -> Result<(), String> {
        if self != Flavor::StratumBfrt {
            return Ok(());
        }
        use p4rt::tofino::{Compiled, Format};
        let (format, c) =
            Compiled::unpack(device_config).map_err(|e| format!("p4_device_config: {e}"))?;
        if format != Format::BfPipelineConfig {
            return Err(
                "p4_device_config: PI-packed; stratum_bfrt takes only a BfPipelineConfig".into(),
            );
        }
        let tables: Vec<&str> = p4info
            .tables
            .iter()
            .filter_map(|t| t.preamble.as_ref().map(|p| p.name.as_str()))
            .collect();
        if let Some(t) = tables.iter().find(|t| !t.starts_with("pipe.")) {
            return Err(format!(
                "p4info: table {t:?} is not `pipe.`-prefixed: not the TNA P4Info \
                 (p4src/tna/dvipa.p4info.txtpb)"
            ));
        }
        let missing = c
            .missing_tables(tables.iter().copied())
            .map_err(|e| format!("p4_device_config: {e}"))?;
        if !missing.is_empty() {
            return Err(format!(
                "p4_device_config: bfruntime_info does not describe {} (compiled from another \
                 program?)",
                missing.join(", ")
            ));
        }
        Ok(())
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

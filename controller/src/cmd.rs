//! The messages the shell's tasks send each other (a leaf: it imports no other module of the
//! shell): commands to a switch driver, advertise/withdraw requests, an agent's outbound queue.

use dvipa_core::entries::{Tables, Update};
use dvipa_proto::v1 as pb;
use std::net::Ipv4Addr;
use tokio::sync::{mpsc, oneshot};

/// Commands to a driver (from the core's actions and from admin requests).
#[derive(Debug)]
pub enum SwitchCmd {
    /// Write a batch and report [`dvipa_core::core::Event::WriteResult`].
    Write {
        /// Batch id.
        batch: u64,
        /// Updates.
        updates: Vec<Update>,
    },
    /// Read the five tables and report [`dvipa_core::core::Event::SwitchRead`].
    Read,
    /// Ack a digest list.
    Ack {
        /// List id.
        list_id: u64,
    },
    /// Read one table for `table dump`.
    Dump {
        /// Table name (as resolved by the schema).
        table: String,
        /// Answer.
        reply: oneshot::Sender<Result<pb::AdminTable, String>>,
    },
    /// Read the five tables as typed entries (for `diff`); undecodable entries are listed.
    Snapshot {
        /// Answer.
        reply: oneshot::Sender<Result<(Tables, Vec<String>), String>>,
    },
    /// Re-read the switch and let the core reconcile it now.
    Resync,
}

/// One advertise/withdraw request of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvCmd {
    /// true = advertise, false = withdraw.
    pub advertise: bool,
    /// Switch that (stops to) attract the DVIPA's traffic.
    pub switch: String,
    /// DVIPA.
    pub dvipa: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
}

/// Outbound half of an agent's stream: bounded by [`crate::shared::AGENT_QUEUE`].
pub type AgentTx = mpsc::Sender<Result<pb::ControllerMessage, tonic::Status>>;

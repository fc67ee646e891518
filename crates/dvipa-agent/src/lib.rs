//! dvipa-agent: the server-stack side of dvipa (a Linux server's part of the Sysplex
//! Distributor design).
//!
//! The agent takes the controller's VIPA list, brings each DVIPA this stack is a candidate
//! target for up on `lo` as a non-advertised /32, watches the kernel's sockets, and reports
//! SRVSTAT (a listener on DVIPA:port appeared/disappeared), NEWCONN and TERMCONN (connections
//! whose local address is a DVIPA, inbound and server-originated) over
//! `dvipa.v1.ServerStack/Attach` (see `proto/dvipa/v1/agent.proto`).
//!
//! Layout:
//! - [`model`]: what a kernel snapshot holds (listeners, connections).
//! - [`diag`]: sock_diag netlink dumps → [`model::Snapshot`]; socket-destroy event watch.
//! - [`tracker`]: the VIPA set, drains, and the snapshot differ that produces reports and
//!   full re-reports.
//! - [`lo`]: DVIPAs on `lo` via rtnetlink; ARP sysctls.
//! - [`agent`]: the agent loop: kernel observers and tracker, VIPA lists applied, deltas sent
//!   to every attached controller, full re-report to each controller that (re)attaches.
//! - [`link`]: one session per controller (`--controller A --controller B`: Hello/Welcome/VIPA
//!   list/reports/heartbeats/acks, reconnect with its own backoff), bounded per controller.
//! - [`control`]: the local control socket (drain, undrain, status).
//! - [`echo`]: the data-plane probe echo (`--dataplane-echo`, the controller's
//!   `[liveness.dataplane]`).
//!
//! What is event-driven and what is polled: the kernel offers no notification for `listen()` or
//! for a connection becoming established, so new listeners and new connections are found by a
//! sock_diag dump every poll interval (default 100 ms). Socket *destruction* is broadcast by the
//! kernel on the sock_diag destroy groups; the agent subscribes (when it has CAP_NET_ADMIN) and
//! re-dumps at once, so closed listeners (SRVSTAT down) and ended connections (TERMCONN) are
//! reported within milliseconds. VIPA list changes, drain orders and controller messages are
//! handled as they arrive.

/// Counts in [`agent::AgentStats`] and the `dvipa_agent_<field>_total` metric.
macro_rules! bump {
    ($stats:expr, $field:ident) => {
        bump!($stats, $field, 1)
    };
    ($stats:expr, $field:ident, $n:expr) => {{
        $stats
            .$field
            .fetch_add($n as u64, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!(concat!("dvipa_agent_", stringify!($field), "_total"))
            .increment($n as u64);
    }};
}

pub mod agent;
pub mod control;
pub mod diag;
pub mod echo;
pub mod link;
pub mod lo;
pub mod model;
pub mod tracker;

pub use agent::{Agent, AgentConfig, AgentError, AgentStats, Control};

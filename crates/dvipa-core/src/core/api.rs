//! The core's interface: [`Event`]s in, [`Action`]s out, the reports agents send, the
//! rows the getters show ([`Service`], [`DptEntry`], [`CrtEntry`]), errors and options.

use super::*;

/// Simulated or real time in milliseconds since an arbitrary epoch (the shell decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    /// `self + ms`.
    pub fn plus(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }
}

/// Why a reported connection's client address cannot be a real peer (the item is refused
/// with this reason, counted as `agent_item_refused_<reason>`): 0.0.0.0/8, 127.0.0.0/8,
/// multicast, the limited broadcast address.
pub fn bad_client(a: Ipv4Addr) -> Option<&'static str> {
    if a.octets()[0] == 0 {
        Some("client_this_network")
    } else if a.is_loopback() {
        Some("client_loopback")
    } else if a.is_multicast() {
        Some("client_multicast")
    } else if a.is_broadcast() {
        Some("client_broadcast")
    } else {
        None
    }
}

/// Pipeline contract `MAX_SERVICES`.
pub const MAX_SERVICES: usize = 1024;

/// Why a connection is in the CRT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Origin {
    /// The switch reported the first packet (SYN digest) and picked the slot's target.
    SynDigest,
    /// A server stack reported it (NEWCONN), e.g. a server-originated connection.
    NewConn,
    /// Re-reported by a stack in a full sync (after a takeover, takeback or reconnect).
    Takeover,
    /// Read back from a switch (controller restart).
    SwitchRead,
}

pub(super) const F_CONFIRMED: u8 = 1;

pub(super) const F_SERVER_ORIG: u8 = 2;

/// One CRT row (packed to 10 bytes: the CRT can hold 65,536 connections per switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct CrtEntry {
    /// Target id.
    pub target: u16,
    /// Service id.
    pub service: u16,
    /// Why it is pinned.
    pub origin: Origin,
    pub(super) flags: u8,
    /// When it was pinned (seconds of [`Time`]).
    pub(super) pinned_s: u32,
}

impl CrtEntry {
    /// Target id (by value: the struct is packed, so take fields by value, not by reference).
    pub fn target(&self) -> u16 {
        self.target
    }
    /// Service id.
    pub fn service(&self) -> u16 {
        self.service
    }
    /// When it was pinned, in seconds of [`Time`].
    pub fn pinned_secs(&self) -> u32 {
        self.pinned_s
    }
    /// The target stack's agent has reported this connection (NEWCONN or re-report).
    pub fn confirmed(&self) -> bool {
        self.flags & F_CONFIRMED != 0
    }
    /// The server opened it.
    pub fn server_originated(&self) -> bool {
        self.flags & F_SERVER_ORIG != 0
    }
}

/// DPT row: one target of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DptEntry {
    /// An application listens (last SRVSTAT).
    pub listening: bool,
    /// Weight reported in SRVSTAT (0 = none).
    pub reported_weight: u32,
    /// Keep existing connections, take no new ones.
    pub draining: bool,
    /// Connections pinned to it over time.
    pub total_conns: u64,
    /// Connections pinned now.
    pub active_conns: u32,
    /// When and why it last stopped being ready (recorded at the transition).
    pub not_ready: Option<(Time, &'static str)>,
    /// Learnt from a switch's DPT after a controller restart, not yet confirmed by the
    /// stack: counts as ready during the start-up hold (one lease) so forwarding is undisturbed.
    pub adopted: bool,
}

/// One service: DVIPA + port (None = all ports) + protocol.
#[derive(Debug, Clone)]
pub struct Service {
    /// Stable id (0-based, = `service_id` on the switch).
    pub id: u16,
    /// Index into [`Cluster::vipas`].
    pub vipa: usize,
    /// DVIPA.
    pub dvipa: Ipv4Addr,
    /// Port or all.
    pub port: Option<u16>,
    /// 6 or 17.
    pub proto: Proto,
    /// Distributed under the current owner's VIPADISTRIBUTE.
    pub active: bool,
    /// Method under the current owner.
    pub method: DistMethod,
    /// Candidate target ids under the current owner, with configured weight and role.
    pub candidates: Vec<(u16, u32, Option<StandbyRole>)>,
    /// Every target id any VIPADISTRIBUTE of the DVIPA names (owner's and backups').
    pub any_candidates: BTreeSet<u16>,
    /// DPT rows by target id.
    pub dpt: BTreeMap<u16, DptEntry>,
    /// Current slot fill.
    pub fill: Fill,
    /// Last non-empty fill (tie-breaker for the next fill, so slots come back where they were).
    pub hint: Fill,
}

/// Liveness of a switch as the core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchLiveness {
    /// Not heard of yet. At start-up a switch gets a hold of `lease_ms` + `liveness_ms` to come
    /// up; one still `Unknown` after it is treated as [`SwitchLiveness::Down`] (its DVIPAs go to
    /// the highest-ranked live backup, and come back by takeback when it comes up).
    Unknown,
    /// Connected; waiting for the read of its tables.
    Syncing,
    /// Connected and synced.
    Up,
    /// Lost.
    Down,
}

/// A transition in a DVIPA's ownership (for `netstat vipadyn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// When.
    pub at: Time,
    /// What happened, e.g. `takeover MVS1 -> MVS5 (MVS1 down)`.
    pub what: String,
}

/// One entry of a VIPA list sent to a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipaEntry {
    /// DVIPA.
    pub dvipa: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Ports (empty = all).
    pub ports: Vec<u16>,
    /// Candidate stack names (empty with `all_stacks`).
    pub candidates: Vec<String>,
    /// DESTIP ALL.
    pub all_stacks: bool,
    /// Switch routing it now.
    pub owner: String,
    /// Ranked backups (highest first), excluding the owner.
    pub backups: Vec<String>,
    /// Distribution method.
    pub distmethod: DistMethod,
}

/// A VIPA list for one stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipaList {
    /// Increases with every change.
    pub version: u64,
    /// Entries.
    pub vipas: Vec<VipaEntry>,
}

/// SRVSTAT (numbers as on the wire, validated here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrvStat {
    /// DVIPA.
    pub dvipa: Ipv4Addr,
    /// Port.
    pub port: u32,
    /// 6 or 17.
    pub protocol: u32,
    /// Listening or stopped.
    pub listening: bool,
    /// Reported weight (0 = configured).
    pub weight: u32,
    /// Draining.
    pub draining: bool,
}

/// NEWCONN / TERMCONN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnReport {
    /// Client (remote) address.
    pub client: Ipv4Addr,
    /// Client port.
    pub client_port: u32,
    /// DVIPA (local address).
    pub dvipa: Ipv4Addr,
    /// DVIPA port.
    pub dvipa_port: u32,
    /// 6 or 17.
    pub protocol: u32,
    /// Server opened it.
    pub server_originated: bool,
}

/// One batch from an agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// AgentMessage.seq.
    pub seq: u64,
    /// SRVSTATs.
    pub srvstat: Vec<SrvStat>,
    /// NEWCONNs.
    pub newconn: Vec<ConnReport>,
    /// TERMCONNs.
    pub termconn: Vec<ConnReport>,
    /// Part of a full re-report.
    pub full_sync: bool,
    /// Last batch of a full re-report.
    pub sync_done: bool,
}

/// A refused item of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// "srvstat", "newconn" or "termconn" (or "report").
    pub list: &'static str,
    /// Index in that list.
    pub index: u32,
    /// Machine-readable reason.
    pub reason: &'static str,
    /// Human detail.
    pub detail: String,
}

/// One member of a `learn_t` digest list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestItem {
    /// 5-tuple.
    pub conn: ConnKey,
    /// service_id the switch used.
    pub service: u16,
    /// target_id of the chosen slot.
    pub target: u16,
    /// NOT_SYN: a TCP non-SYN that missed the CRT.
    pub not_syn: bool,
}

/// Result of one update of a write batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Done.
    Ok,
    /// Insert of an entry that exists (fine).
    AlreadyExists,
    /// Modify/delete of an entry that does not exist.
    NotFound,
    /// Table full.
    ResourceExhausted,
    /// Anything else.
    Other(String),
}

/// Inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The switch's P4Runtime session is up (master, pipeline set).
    SwitchUp {
        /// Switch name.
        switch: String,
    },
    /// The switch is lost (stream/channel down longer than the detection time).
    SwitchDown {
        /// Switch name.
        switch: String,
    },
    /// Answer to [`Action::ReadSwitch`]: every entry of the five tables.
    SwitchRead {
        /// Switch name.
        switch: String,
        /// Entries.
        entries: Vec<(Key, Value)>,
    },
    /// Answer to [`Action::Write`]: one outcome per update, in order.
    WriteResult {
        /// Switch name.
        switch: String,
        /// Batch id.
        batch: u64,
        /// Outcomes.
        results: Vec<WriteOutcome>,
    },
    /// A `learn_t` digest list.
    Digest {
        /// Switch name.
        switch: String,
        /// DigestList.list_id (echoed by the ack).
        list_id: u64,
        /// Members.
        items: Vec<DigestItem>,
    },
    /// CRT idle-timeout notification.
    IdleTimeout {
        /// Switch name.
        switch: String,
        /// Idle connections.
        conns: Vec<ConnKey>,
    },
    /// Agent Hello.
    AgentHello {
        /// Stack name.
        stack: String,
        /// Its underlay address.
        underlay: Ipv4Addr,
        /// Agent process epoch.
        epoch: u64,
    },
    /// Agent Report batch.
    AgentReport {
        /// Stack name.
        stack: String,
        /// The batch.
        report: Report,
    },
    /// Agent Heartbeat.
    AgentHeartbeat {
        /// Stack name.
        stack: String,
        /// SERVERWLM weight (0 = none).
        weight: u32,
    },
    /// The agent's stream closed (the lease keeps running).
    AgentGone {
        /// Stack name.
        stack: String,
    },
    /// Operator: move a DVIPA to a switch (non-disruptively).
    AdminMove {
        /// DVIPA.
        dvipa: Ipv4Addr,
        /// Target switch.
        to: String,
    },
    /// Operator: take a switch out of (or back into) service; its DVIPAs move gracefully.
    AdminMaintenance {
        /// Switch name.
        switch: String,
        /// true = maintenance on.
        on: bool,
    },
}

/// Outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Read all entries of the five tables and answer with [`Event::SwitchRead`].
    ReadSwitch {
        /// Switch name.
        switch: String,
    },
    /// One P4Runtime WriteRequest; answer with [`Event::WriteResult`].
    Write {
        /// Switch name.
        switch: String,
        /// Batch id.
        batch: u64,
        /// Updates (all of one phase).
        updates: Vec<Update>,
    },
    /// Ack a digest list (its CRT entries are written).
    AckDigest {
        /// Switch name.
        switch: String,
        /// DigestList.list_id.
        list_id: u64,
    },
    /// Send a Welcome to a new agent session.
    Welcome {
        /// Stack.
        stack: String,
        /// Heartbeat interval.
        heartbeat_ms: u64,
        /// Lease.
        lease_ms: u64,
    },
    /// Send (or re-send) a VIPA list to a stack.
    SendVipaList {
        /// Stack.
        stack: String,
        /// The list.
        list: VipaList,
    },
    /// Ack a report batch, with the refused items.
    AgentAck {
        /// Stack.
        stack: String,
        /// AgentMessage.seq.
        seq: u64,
        /// Refused items.
        errors: Vec<ItemError>,
    },
    /// Refuse an agent session (close the stream with this reason).
    AgentRejected {
        /// Stack as claimed.
        stack: String,
        /// Why.
        reason: String,
    },
    /// Start advertising the DVIPA from this switch (routing hook / BGP).
    Advertise {
        /// Switch.
        switch: String,
        /// DVIPA.
        dvipa: Ipv4Addr,
        /// Prefix length.
        prefix_len: u8,
    },
    /// Stop advertising the DVIPA from this switch.
    Withdraw {
        /// Switch.
        switch: String,
        /// DVIPA.
        dvipa: Ipv4Addr,
        /// Prefix length.
        prefix_len: u8,
    },
    /// The routing switch (or operator pin) of a DVIPA changed, or a DVIPA was added: persist
    /// [`Core::ownership`] now (queued at the end of a [`Core::handle`] /
    /// [`Core::handle_timeout`] / [`Core::admin_move`] call that changed it).
    OwnersChanged,
}

/// Errors building a [`Core`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// Too many services for the switch.
    #[error("{0} services exceed the pipeline's MAX_SERVICES ({MAX_SERVICES})")]
    TooManyServices(usize),
    /// Too many stacks for 16-bit target ids.
    #[error("{0} stacks exceed the 16-bit target id space")]
    TooManyStacks(usize),
    /// A restored owner that does not fit the configuration.
    #[error("cannot restore the owner of {dvipa}: {why}")]
    Restore {
        /// DVIPA.
        dvipa: Ipv4Addr,
        /// What is wrong.
        why: String,
    },
}

/// Why an operator move ([`Core::admin_move`]) was refused. Each refusal also counts
/// `admin_move_<reason>` (or `unknown_switch`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    /// Not a configured (or activated VIPARANGE) DVIPA.
    #[error("{0} is not a DVIPA")]
    UnknownDvipa(Ipv4Addr),
    /// No switch of that name.
    #[error("no switch named `{0}`")]
    UnknownSwitch(String),
    /// The switch is not up and synced, or is in maintenance.
    #[error("switch `{0}` is not up (or is in maintenance)")]
    TargetNotUp(String),
}

impl MoveError {
    /// The counter the refusal increments.
    pub fn counter(&self) -> &'static str {
        match self {
            MoveError::UnknownDvipa(_) => "admin_move_unknown_dvipa",
            MoveError::UnknownSwitch(_) => "unknown_switch",
            MoveError::TargetNotUp(_) => "admin_move_target_not_up",
        }
    }
}

/// Tunables of the core.
#[derive(Debug, Clone, Copy)]
pub struct CoreOptions {
    /// Most updates in one write batch.
    pub max_batch: usize,
    /// Most CRT batches of one phase in flight per switch at once (1 = one batch at a time).
    pub max_in_flight: usize,
}

impl Default for CoreOptions {
    fn default() -> Self {
        CoreOptions {
            max_batch: 2000,
            max_in_flight: 4,
        }
    }
}

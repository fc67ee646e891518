//! The controller state machine: events in, actions out (quinn-proto style).
//!
//! The I/O shell owns the sockets and the clock. It feeds every input to
//! [`Core::handle`] with the current time, calls [`Core::handle_timeout`] when
//! [`Core::poll_timeout`] says so, and drains [`Core::poll_action`] after each call, carrying
//! out each [`Action`] (a P4Runtime write, a digest ack, a VIPA list to an agent, an
//! advertisement hook …) and reporting the outcome back as an [`Event`].
//!
//! State: services (DVIPA + port + protocol, stable ids), targets (one per configured stack,
//! stable ids), the DPT (per service and target: listening, weight, draining, connection
//! counts), the CRT (5-tuple → target with the origin of the pin), per-DVIPA ownership (routing
//! switch, ranked backups, advertisement) and, per switch, what the core believes the switch
//! holds. Batches follow the reconciler's phases ([`crate::entries`]): a batch is only sent
//! after every batch of an earlier phase was confirmed. Up to [`CoreOptions::max_in_flight`]
//! CRT batches of the same phase (inserts/modifies, or deletes) may be in flight per switch at
//! once, with disjoint keys (so they commute); any other batch is alone in flight.
//!
//! CRT work is a queue per switch: a key is marked dirty when its pin changes and is diffed
//! (desired vs installed) when the queue reaches it, so a flush costs O(batch), not O(dirty).
//!
//! Over the project's ~800-line guide on purpose for now: the whole controller state machine; split into core/ (api, timers, services, crt, switch_sync, ownership, agents) in issue 15.

use crate::config::{Cluster, EffectiveVipa, Encap, Timers};
use crate::entries::{
    self, ConnKey, Key, PHASES, Proto, TCP, Tables, UDP, Update, UpdateKind, Value,
};
use crate::profile::{DistMethod, StandbyRole};
use crate::slots::{self, Fill, N_SLOTS};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;

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

const F_CONFIRMED: u8 = 1;
const F_SERVER_ORIG: u8 = 2;

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
    flags: u8,
    /// When it was pinned (seconds of [`Time`]).
    pinned_s: u32,
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

#[derive(Debug)]
struct SwitchState {
    name: String,
    live: SwitchLiveness,
    /// Has been up (connected) at least once since this core started.
    seen_up: bool,
    maintenance: bool,
    read_once: bool,
    held_at_start: BTreeSet<usize>,
    installed: Tables,
    installed_crt: HashMap<ConnKey, u16>,
    /// CRT keys not known to be in sync (not yet diffed, or diffed to a delete that waits for
    /// its phase). Keys in a batch in flight are not in it unless changed again meanwhile.
    crt_dirty: HashSet<ConnKey>,
    /// Order in which dirty keys are diffed (may hold stale or repeated keys: skipped).
    crt_queue: VecDeque<ConnKey>,
    /// Dirty keys diffed to a CRT delete (phase 6), waiting for phases 1–5 to be done.
    crt_deferred: HashSet<ConnKey>,
    /// CRT keys of the batches in flight.
    crt_in_flight: HashSet<ConnKey>,
    structural_dirty: bool,
    /// Batches written and not answered yet, oldest first.
    in_flight: VecDeque<Batch>,
    overflow: HashMap<ConnKey, &'static str>,
    failed: BTreeMap<Key, String>,
    /// Digest lists waiting for their CRT entries: (list id, connections, how many of them
    /// were seen settled so far).
    pending_digests: Vec<(u64, Vec<ConnKey>, usize)>,
    /// Digest lists that arrived while the switch was syncing (replayed after its read).
    syncing_digests: Vec<(u64, Vec<DigestItem>)>,
}

#[derive(Debug)]
struct Batch {
    id: u64,
    phase: usize,
    updates: Vec<Update>,
}

/// Phase of CRT inserts/modifies.
const CRT_UPSERT: usize = 1;
/// Phase of CRT deletes.
const CRT_DELETE: usize = 6;
/// Smallest batch a CRT backlog is split into across free window slots.
const MIN_SPREAD_BATCH: usize = 100;

impl SwitchState {
    /// Queue `k` for a diff on this switch.
    fn mark_dirty(&mut self, k: ConnKey) {
        if self.crt_dirty.insert(k) || self.crt_deferred.contains(&k) {
            self.crt_queue.push_back(k);
        }
    }

    /// Forget every write in flight (the switch went away or a new session starts).
    fn forget_in_flight(&mut self) {
        self.in_flight.clear();
        self.crt_in_flight.clear();
    }

    /// Whether the queue still holds a key that may need an insert/modify (drops stale keys
    /// and keys in flight from its front: the latter are queued again when their batch ends).
    fn crt_queue_pending(&mut self) -> bool {
        while let Some(k) = self.crt_queue.front() {
            if self.crt_dirty.contains(k) && !self.crt_in_flight.contains(k) {
                return true;
            }
            self.crt_queue.pop_front();
        }
        false
    }
}

/// The CRT entry `k` should have on a switch that programs `programmed` (None = no entry).
fn desired_crt_of(
    crt: &HashMap<ConnKey, CrtEntry>,
    services: &[Service],
    overflow: &HashMap<ConnKey, &'static str>,
    programmed: &BTreeSet<usize>,
    k: &ConnKey,
) -> Option<Value> {
    let e = crt.get(k)?;
    if overflow.contains_key(k) {
        return None;
    }
    programmed
        .contains(&services[e.service as usize].vipa)
        .then_some(Value::ToTarget { target: e.target })
}

#[derive(Debug, Clone)]
struct SyncRound {
    started: Time,
    listeners: HashSet<(u16, u16)>,
    conns: HashSet<ConnKey>,
}

#[derive(Debug)]
struct StackState {
    name: String,
    underlay: Ipv4Addr,
    session: Option<u64>,
    lease_until: Option<Time>,
    alive: bool,
    attached_ever: bool,
    lease_expired_at: Option<Time>,
    wlm_weight: u32,
    sync: Option<SyncRound>,
    last_list: Option<Vec<VipaEntry>>,
}

/// A transition in a DVIPA's ownership (for `netstat vipadyn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// When.
    pub at: Time,
    /// What happened, e.g. `takeover MVS1 -> MVS5 (MVS1 down)`.
    pub what: String,
}

#[derive(Debug)]
struct VipaState {
    owner: usize,
    retiring: Vec<usize>,
    advertised: Option<usize>,
    admin_pinned: bool,
    restored: bool,
    transitions: Vec<Transition>,
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

/// The controller core.
#[derive(Debug)]
pub struct Core {
    cluster: Cluster,
    timers: Timers,
    opts: CoreOptions,
    services: Vec<Service>,
    svc_index: HashMap<(u32, Option<u16>, Proto), u16>,
    stacks: Vec<StackState>,
    stack_index: HashMap<String, u16>,
    vipas: Vec<VipaState>,
    crt: HashMap<ConnKey, CrtEntry>,
    /// SYNs reported and not pinned yet (`pin_on = "handshake"`).
    syn_seen: crate::syn_seen::SynSeen,
    switches: Vec<SwitchState>,
    sw_index: HashMap<String, usize>,
    actions: VecDeque<Action>,
    counters: BTreeMap<&'static str, u64>,
    next_batch: u64,
    list_version: u64,
    now: Time,
    hold_until: Option<Time>,
    hold_done: bool,
    /// End of the switches' start-up hold (`lease_ms` + `liveness_ms` after the first call):
    /// a switch not heard of by then is treated as down.
    switch_hold_until: Option<Time>,
    switch_hold_done: bool,
    range_vipas: BTreeSet<usize>,
}

fn method_code(m: DistMethod) -> u8 {
    match m {
        DistMethod::RoundRobin | DistMethod::WeightedActive => 1,
        DistMethod::ServerWlm | DistMethod::HotStandby => 0,
    }
}

impl Core {
    /// Build the core from a validated cluster. Target ids are `1 + index` of `[[stack]]`;
    /// service ids follow the sorted (DVIPA, port, protocol) order — both stable for a given
    /// configuration.
    pub fn new(cluster: Cluster, opts: CoreOptions) -> Result<Core, CoreError> {
        if cluster.config.stacks.len() >= u16::MAX as usize {
            return Err(CoreError::TooManyStacks(cluster.config.stacks.len()));
        }
        let stacks: Vec<StackState> = cluster
            .config
            .stacks
            .iter()
            .map(|s| StackState {
                name: s.name.clone(),
                underlay: s.underlay,
                session: None,
                lease_until: None,
                alive: false,
                attached_ever: false,
                lease_expired_at: None,
                wlm_weight: 0,
                sync: None,
                last_list: None,
            })
            .collect();
        let stack_index: HashMap<String, u16> = stacks
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i as u16 + 1))
            .collect();
        let switches: Vec<SwitchState> = cluster
            .config
            .switches
            .iter()
            .map(|s| SwitchState {
                name: s.name.clone(),
                live: SwitchLiveness::Unknown,
                seen_up: false,
                maintenance: false,
                read_once: false,
                held_at_start: BTreeSet::new(),
                installed: Tables::new(),
                installed_crt: HashMap::new(),
                crt_dirty: HashSet::new(),
                crt_queue: VecDeque::new(),
                crt_deferred: HashSet::new(),
                crt_in_flight: HashSet::new(),
                structural_dirty: true,
                in_flight: VecDeque::new(),
                overflow: HashMap::new(),
                failed: BTreeMap::new(),
                pending_digests: Vec::new(),
                syncing_digests: Vec::new(),
            })
            .collect();
        let sw_index: HashMap<String, usize> = switches
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let protos: Vec<Proto> = if cluster.config.distribute_udp {
            vec![TCP, UDP]
        } else {
            vec![TCP]
        };
        let mut keys: BTreeSet<(Ipv4Addr, Option<u16>, Proto, usize)> = BTreeSet::new();
        for (vi, v) in cluster.vipas.iter().enumerate() {
            let all = std::iter::once(&v.dist).chain(v.backups.iter().map(|b| &b.own));
            for dists in all {
                for d in dists {
                    let ports: Vec<Option<u16>> = if d.ports.is_empty() {
                        vec![None]
                    } else {
                        d.ports.iter().map(|p| Some(*p)).collect()
                    };
                    for p in ports {
                        for pr in &protos {
                            keys.insert((v.addr, p, *pr, vi));
                        }
                    }
                }
            }
        }
        if keys.len() > MAX_SERVICES {
            return Err(CoreError::TooManyServices(keys.len()));
        }
        let mut services = Vec::new();
        let mut svc_index = HashMap::new();
        for (i, (addr, port, proto, vi)) in keys.into_iter().enumerate() {
            let v = &cluster.vipas[vi];
            let mut any = BTreeSet::new();
            for d in std::iter::once(&v.dist)
                .chain(v.backups.iter().map(|b| &b.own))
                .flatten()
            {
                for c in &d.candidates {
                    any.insert(stack_index[&c.stack]);
                }
            }
            svc_index.insert((u32::from(addr), port, proto), i as u16);
            services.push(Service {
                id: i as u16,
                vipa: vi,
                dvipa: addr,
                port,
                proto,
                active: false,
                method: DistMethod::RoundRobin,
                candidates: Vec::new(),
                any_candidates: any,
                dpt: BTreeMap::new(),
                fill: [None; N_SLOTS],
                hint: [None; N_SLOTS],
            });
        }
        let vipas = cluster
            .vipas
            .iter()
            .map(|v| VipaState {
                owner: sw_index[&v.owner],
                retiring: Vec::new(),
                advertised: None,
                admin_pinned: false,
                restored: false,
                transitions: Vec::new(),
            })
            .collect();
        let timers = cluster.config.timers;
        let mut core = Core {
            cluster,
            timers,
            opts,
            services,
            svc_index,
            stacks,
            stack_index,
            vipas,
            crt: HashMap::new(),
            syn_seen: Default::default(),
            switches,
            sw_index,
            actions: VecDeque::new(),
            counters: BTreeMap::new(),
            next_batch: 1,
            list_version: 0,
            now: Time(0),
            hold_until: None,
            hold_done: false,
            switch_hold_until: None,
            switch_hold_done: false,
            range_vipas: BTreeSet::new(),
        };
        for vi in 0..core.vipas.len() {
            core.activate_services(vi);
        }
        core.refill_all();
        Ok(core)
    }

    // ----- public API -------------------------------------------------------------------

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Core::handle_timeout`] must be called next (earliest lease expiry).
    pub fn poll_timeout(&self) -> Option<Time> {
        self.stacks
            .iter()
            .filter(|s| s.alive)
            .filter_map(|s| s.lease_until)
            .chain(self.hold_until.filter(|_| !self.hold_done))
            .chain(self.switch_hold_until.filter(|_| !self.switch_hold_done))
            .min()
    }

    /// Expire leases due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        let mut changed = false;
        match self.hold_until {
            None => {
                self.hold_until = Some(self.now.plus(self.timers.lease_ms));
                self.switch_hold_until = Some(
                    self.now
                        .plus(self.timers.lease_ms)
                        .plus(self.timers.liveness_ms),
                );
            }
            Some(h) if !self.hold_done && h <= self.now => {
                // Start-up hold over: adopted targets whose stacks never attached leave the slots.
                self.hold_done = true;
                changed = true;
                for s in &mut self.services {
                    for d in s.dpt.values_mut().filter(|d| d.adopted) {
                        d.not_ready = Some((h, "not_reattached"));
                    }
                }
            }
            _ => {}
        }
        for s in &mut self.stacks {
            if s.alive && s.lease_until.is_some_and(|t| t <= now) {
                s.alive = false;
                s.lease_expired_at = Some(now);
                changed = true;
                *self.counters.entry("lease_expired").or_default() += 1;
            }
        }
        if changed {
            self.note_not_ready_for_dead_stacks(now);
            self.structural_change();
        }
        if !self.switch_hold_done && self.switch_hold_until.is_some_and(|h| h <= self.now) {
            // Switches' start-up hold over: one never heard of is down (the shell only reports
            // a switch down after it was up), so its DVIPAs go to their live backups.
            self.switch_hold_done = true;
            let never: Vec<usize> = (0..self.switches.len())
                .filter(|&si| self.switches[si].live == SwitchLiveness::Unknown)
                .collect();
            for si in never {
                self.count("switch_not_up_after_start_up_hold");
                self.mark_down(si);
            }
        }
        self.flush_all();
    }

    /// Feed one event.
    pub fn handle(&mut self, now: Time, ev: Event) {
        self.handle_timeout(now);
        match ev {
            Event::SwitchUp { switch } => self.on_switch_up(&switch),
            Event::SwitchDown { switch } => self.on_switch_down(&switch),
            Event::SwitchRead { switch, entries } => self.on_switch_read(&switch, entries),
            Event::WriteResult {
                switch,
                batch,
                results,
            } => self.on_write_result(&switch, batch, results),
            Event::Digest {
                switch,
                list_id,
                items,
            } => self.on_digest(&switch, list_id, items),
            Event::IdleTimeout { switch, conns } => self.on_idle(&switch, conns),
            Event::AgentHello {
                stack,
                underlay,
                epoch,
            } => self.on_hello(&stack, underlay, epoch),
            Event::AgentReport { stack, report } => self.on_report(&stack, report),
            Event::AgentHeartbeat { stack, weight } => self.on_heartbeat(&stack, weight),
            Event::AgentGone { stack } => {
                if let Some(t) = self.stack_id(&stack) {
                    self.stacks[t as usize - 1].session = None;
                }
            }
            Event::AdminMove { dvipa, to } => self.on_admin_move(dvipa, &to),
            Event::AdminMaintenance { switch, on } => {
                if let Some(&si) = self.sw_index.get(&switch) {
                    self.switches[si].maintenance = on;
                    self.elect();
                } else {
                    self.count("unknown_switch");
                }
            }
        }
        self.flush_all();
    }

    /// Counters (name → value): rejected items by reason, digests, writes, failovers …
    pub fn counters(&self) -> &BTreeMap<&'static str, u64> {
        &self.counters
    }

    /// The cluster configuration. `cluster().vipas` is the effective VIPA list, including
    /// VIPAs a stack activated inside a VIPARANGE (appended, `prefix_len` 32, HOTSTANDBY-style:
    /// the stack that bound last gets the new connections).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Services (index = service id).
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Service id for an inbound 5-tuple.
    pub fn service_of(&self, dvipa: Ipv4Addr, port: u16, proto: Proto) -> Option<u16> {
        let a = u32::from(dvipa);
        self.svc_index
            .get(&(a, Some(port), proto))
            .or_else(|| self.svc_index.get(&(a, None, proto)))
            .copied()
    }

    /// Target id of a stack.
    pub fn stack_id(&self, stack: &str) -> Option<u16> {
        self.stack_index.get(stack).copied()
    }

    /// Stack name of a target id.
    pub fn stack_name(&self, target: u16) -> Option<&str> {
        self.stacks
            .get((target as usize).wrapping_sub(1))
            .map(|s| s.name.as_str())
    }

    /// The CRT.
    pub fn crt(&self) -> &HashMap<ConnKey, CrtEntry> {
        &self.crt
    }

    /// Switches on which `conn` could not be pinned (its CRT insert found the table full or
    /// failed; it is retried when deletes free room), with the reason. Such a connection keeps
    /// working through the slots and `syn_pending` until then.
    pub fn unpinned_on(&self, conn: &ConnKey) -> Vec<(&str, &'static str)> {
        self.switches
            .iter()
            .filter_map(|sw| sw.overflow.get(conn).map(|why| (sw.name.as_str(), *why)))
            .collect()
    }

    /// SYNs reported and waiting for their handshake (bounded; `pin_on = "handshake"`).
    pub fn syns_waiting(&self) -> usize {
        self.syn_seen.len()
    }

    /// How many CRT entries could not be written to `switch` (table full or write error).
    pub fn unpinned_count(&self, switch: &str) -> usize {
        self.sw_index
            .get(switch)
            .map_or(0, |&i| self.switches[i].overflow.len())
    }

    /// Whether `target` is a current actual target (ready) of `service`.
    pub fn target_ready(&self, service: u16, target: u16) -> bool {
        let s = &self.services[service as usize];
        s.dpt.get(&target).is_some_and(|d| self.ready(target, d))
    }

    /// Why a pinned connection's target would not get new connections, as recorded when it
    /// happened (`None` = the target is ready).
    pub fn stale_reason(&self, conn: &ConnKey) -> Option<(Time, &'static str)> {
        let e = self.crt.get(conn)?;
        let svc = &self.services[e.service as usize];
        let st = &self.stacks[e.target as usize - 1];
        if !st.alive {
            return st
                .lease_expired_at
                .map(|t| (t, "lease_expired"))
                .or(Some((Time(0), "never_attached")));
        }
        match svc.dpt.get(&{ e.target }) {
            Some(d) if self.ready(e.target, d) => {
                if svc.active && !svc.candidates.iter().any(|c| c.0 == e.target) {
                    Some((Time(0), "not_candidate_of_current_owner"))
                } else {
                    None
                }
            }
            Some(d) => d.not_ready.or(Some((Time(0), "unrecorded"))),
            None => Some((Time(0), "no_srvstat")),
        }
    }

    /// Current routing switch of a DVIPA.
    pub fn owner(&self, dvipa: Ipv4Addr) -> Option<&str> {
        let vi = self.vipa_index(dvipa)?;
        Some(&self.switches[self.vipas[vi].owner].name)
    }

    /// Switch currently advertising a DVIPA.
    pub fn advertised(&self, dvipa: Ipv4Addr) -> Option<&str> {
        let vi = self.vipa_index(dvipa)?;
        self.vipas[vi]
            .advertised
            .map(|s| self.switches[s].name.as_str())
    }

    /// Ownership transitions of a DVIPA.
    pub fn transitions(&self, dvipa: Ipv4Addr) -> &[Transition] {
        self.vipa_index(dvipa)
            .map(|vi| self.vipas[vi].transitions.as_slice())
            .unwrap_or(&[])
    }

    /// Liveness of a switch.
    pub fn liveness(&self, switch: &str) -> Option<SwitchLiveness> {
        self.sw_index.get(switch).map(|&i| self.switches[i].live)
    }

    /// What the core believes `switch` holds (all five tables).
    pub fn installed(&self, switch: &str) -> Option<Tables> {
        let sw = &self.switches[*self.sw_index.get(switch)?];
        let mut t = sw.installed.clone();
        for (k, v) in &sw.installed_crt {
            t.insert(Key::Crt(*k), Value::ToTarget { target: *v });
        }
        Some(t)
    }

    /// What `switch` should hold according to the core state.
    pub fn desired(&self, switch: &str) -> Option<Tables> {
        let si = *self.sw_index.get(switch)?;
        let mut t = self.desired_noncrt(si);
        let programmed = self.programmed_vipas(si);
        for (k, e) in &self.crt {
            if programmed.contains(&self.services[e.service as usize].vipa)
                && !self.switches[si].overflow.contains_key(k)
            {
                t.insert(Key::Crt(*k), Value::ToTarget { target: e.target });
            }
        }
        Some(t)
    }

    /// The VIPA list a stack gets now.
    pub fn vipa_list_for(&self, stack: &str) -> Vec<VipaEntry> {
        let Some(tid) = self.stack_id(stack) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (vi, v) in self.cluster.vipas.iter().enumerate() {
            let vs = &self.vipas[vi];
            let owner = &self.switches[vs.owner].name;
            let named = std::iter::once(&v.dist)
                .chain(v.backups.iter().map(|b| &b.own))
                .flatten()
                .any(|d| {
                    d.candidates
                        .iter()
                        .any(|c| self.stack_index[&c.stack] == tid)
                });
            if !named {
                continue;
            }
            let backups: Vec<String> = self
                .chain(vi)
                .into_iter()
                .filter(|s| *s != vs.owner)
                .map(|s| self.switches[s].name.clone())
                .collect();
            for d in v.dist_for(owner) {
                out.push(VipaEntry {
                    dvipa: v.addr,
                    prefix_len: v.prefix_len,
                    ports: d.ports.clone(),
                    candidates: if d.all_stacks {
                        Vec::new()
                    } else {
                        d.candidates.iter().map(|c| c.stack.clone()).collect()
                    },
                    all_stacks: d.all_stacks,
                    owner: owner.clone(),
                    backups: backups.clone(),
                    distmethod: d.method,
                });
            }
        }
        out
    }

    // ----- internals: helpers -----------------------------------------------------------

    fn count(&mut self, what: &'static str) {
        *self.counters.entry(what).or_default() += 1;
    }

    fn count_n(&mut self, what: &'static str, n: u64) {
        *self.counters.entry(what).or_default() += n;
    }

    fn vipa_index(&self, a: Ipv4Addr) -> Option<usize> {
        self.cluster.vipas.iter().position(|v| v.addr == a)
    }

    fn ready(&self, target: u16, d: &DptEntry) -> bool {
        let st = &self.stacks[target as usize - 1];
        d.listening
            && !d.draining
            && (st.alive || (d.adopted && !st.attached_ever && self.in_hold()))
    }

    fn in_hold(&self) -> bool {
        !self.hold_done && self.hold_until.is_some_and(|h| self.now < h)
    }

    /// Primary + backups by rank, as switch indexes.
    fn chain(&self, vi: usize) -> Vec<usize> {
        let v: &EffectiveVipa = &self.cluster.vipas[vi];
        std::iter::once(&v.owner)
            .chain(v.backups.iter().map(|b| &b.switch))
            .map(|n| self.sw_index[n])
            .collect()
    }

    fn activate_services(&mut self, vi: usize) {
        let v = &self.cluster.vipas[vi];
        let owner = &self.switches[self.vipas[vi].owner].name;
        let dists = v.dist_for(owner).to_vec();
        let keep_roles = self.range_vipas.contains(&vi);
        for s in self.services.iter_mut().filter(|s| s.vipa == vi) {
            let old_roles: HashMap<u16, Option<StandbyRole>> =
                s.candidates.iter().map(|c| (c.0, c.2)).collect();
            s.active = false;
            s.candidates.clear();
            for d in &dists {
                let covers = match s.port {
                    None => d.ports.is_empty(),
                    Some(p) => d.ports.contains(&p),
                };
                if covers {
                    s.active = true;
                    s.method = d.method;
                    s.candidates = d
                        .candidates
                        .iter()
                        .map(|c| {
                            let t = self.stack_index[&c.stack];
                            let role = if keep_roles {
                                old_roles.get(&t).copied().flatten()
                            } else {
                                c.role
                            };
                            (t, c.weight, role)
                        })
                        .collect();
                }
            }
        }
    }

    fn refill_all(&mut self) {
        for i in 0..self.services.len() {
            let fill = self.compute_fill(i);
            let s = &mut self.services[i];
            s.fill = fill;
            if fill.iter().any(|x| x.is_some()) {
                s.hint = fill;
            }
        }
    }

    fn compute_fill(&self, i: usize) -> Fill {
        let s = &self.services[i];
        if !s.active {
            return [None; N_SLOTS];
        }
        let ready: Vec<(u16, u32, Option<StandbyRole>)> = s
            .candidates
            .iter()
            .copied()
            .filter(|(t, _, _)| s.dpt.get(t).is_some_and(|d| self.ready(*t, d)))
            .collect();
        match s.method {
            DistMethod::HotStandby => {
                let best = ready
                    .iter()
                    .max_by_key(|(t, _, r)| {
                        let rank = match r {
                            Some(StandbyRole::Preferred) => 255u16,
                            Some(StandbyRole::Backup(b)) => u16::from(*b),
                            None => 0,
                        };
                        (rank, std::cmp::Reverse(*t))
                    })
                    .map(|x| x.0);
                slots::single_fill(best)
            }
            m => {
                let ts: Vec<(u16, u32)> = ready
                    .iter()
                    .map(|(t, w, _)| {
                        let w = match m {
                            DistMethod::WeightedActive => *w,
                            DistMethod::ServerWlm => {
                                let d = s.dpt[t];
                                let st = &self.stacks[*t as usize - 1];
                                if d.reported_weight > 0 {
                                    d.reported_weight
                                } else if st.wlm_weight > 0 {
                                    st.wlm_weight
                                } else {
                                    1
                                }
                            }
                            _ => 1,
                        };
                        (*t, w)
                    })
                    .collect();
                slots::weighted_fill(s.id, &ts, &s.hint)
            }
        }
    }

    fn note_not_ready_for_dead_stacks(&mut self, now: Time) {
        for s in &mut self.services {
            for (t, d) in s.dpt.iter_mut() {
                if !self.stacks[*t as usize - 1].alive && d.listening && d.not_ready.is_none() {
                    d.not_ready = Some((now, "lease_expired"));
                }
            }
        }
    }

    fn structural_change(&mut self) {
        self.refill_all();
        for sw in &mut self.switches {
            sw.structural_dirty = true;
        }
    }

    fn programmed_vipas(&self, si: usize) -> BTreeSet<usize> {
        let sw = &self.switches[si];
        let mut out = BTreeSet::new();
        for (vi, vs) in self.vipas.iter().enumerate() {
            let hot_backup = self.cluster.config.hot_standby
                && sw.live == SwitchLiveness::Up
                && self.chain(vi).contains(&si);
            if vs.owner == si || vs.retiring.contains(&si) || hot_backup {
                out.insert(vi);
            }
        }
        out
    }

    fn desired_noncrt(&self, si: usize) -> Tables {
        let cfg = &self.cluster.config;
        let swc = &cfg.switches[si];
        let mut t = Tables::new();
        for r in &swc.routes {
            t.insert(
                Key::Route { prefix: r.prefix },
                Value::SetNexthop {
                    dmac: r.dmac,
                    smac: r.smac,
                    port: r.port,
                },
            );
        }
        for (i, st) in cfg.stacks.iter().enumerate() {
            let v = match st.encap {
                Encap::L2 => match (st.mac, st.ports.get(&swc.name)) {
                    (Some(dmac), Some(port)) => Value::ForwardL2 { dmac, port: *port },
                    _ => continue,
                },
                Encap::Ipip => match swc.tunnel_src {
                    Some(outer_src) => Value::EncapIpip {
                        outer_src,
                        outer_dst: st.underlay,
                    },
                    None => continue,
                },
            };
            t.insert(
                Key::Target {
                    target: i as u16 + 1,
                },
                v,
            );
        }
        let programmed = self.programmed_vipas(si);
        for s in &self.services {
            if !s.active || !programmed.contains(&s.vipa) {
                continue;
            }
            t.insert(
                Key::Dvipa {
                    addr: s.dvipa,
                    proto: s.proto,
                    port: s.port,
                },
                Value::Distribute {
                    service: s.id,
                    method: method_code(s.method),
                },
            );
            for (slot, tg) in s.fill.iter().enumerate() {
                if let Some(tg) = tg {
                    t.insert(
                        Key::Dpt {
                            service: s.id,
                            slot: slot as u16,
                        },
                        Value::ToTarget { target: *tg },
                    );
                }
            }
        }
        t
    }

    fn mark_conn_dirty(&mut self, k: ConnKey) {
        // Switches that are not up get everything marked when their tables are read.
        for sw in &mut self.switches {
            if sw.live == SwitchLiveness::Up {
                sw.mark_dirty(k);
            }
        }
    }

    fn mark_vipa_conns_dirty(&mut self, vi: usize, si: usize) {
        let keys: Vec<ConnKey> = self
            .crt
            .iter()
            .filter(|(_, e)| self.services[e.service as usize].vipa == vi)
            .map(|(k, _)| *k)
            .collect();
        let sw = &mut self.switches[si];
        for k in keys {
            sw.mark_dirty(k);
        }
        let stale: Vec<ConnKey> = sw.installed_crt.keys().copied().collect();
        for k in stale {
            sw.mark_dirty(k);
        }
        sw.structural_dirty = true;
    }

    fn pin(&mut self, k: ConnKey, target: u16, service: u16, origin: Origin, flags: u8) {
        let e = CrtEntry {
            target,
            service,
            origin,
            flags,
            pinned_s: (self.now.0 / 1000) as u32,
        };
        if let Some(old) = self.crt.insert(k, e) {
            self.unaccount(&old);
        }
        let now = self.now;
        let d = self.services[service as usize]
            .dpt
            .entry(target)
            .or_insert_with(|| DptEntry {
                not_ready: Some((now, "no_srvstat")),
                ..DptEntry::default()
            });
        d.total_conns += 1;
        d.active_conns += 1;
        self.mark_conn_dirty(k);
    }

    fn unaccount(&mut self, e: &CrtEntry) {
        if let Some(d) = self.services[e.service as usize].dpt.get_mut(&{ e.target }) {
            d.active_conns = d.active_conns.saturating_sub(1);
        }
    }

    fn unpin(&mut self, k: &ConnKey) -> Option<CrtEntry> {
        let e = self.crt.remove(k)?;
        self.unaccount(&e);
        self.mark_conn_dirty(*k);
        for sw in &mut self.switches {
            sw.overflow.remove(k);
        }
        Some(e)
    }

    // ----- switches ---------------------------------------------------------------------

    fn switch_idx(&mut self, name: &str) -> Option<usize> {
        let r = self.sw_index.get(name).copied();
        if r.is_none() {
            self.count("unknown_switch");
        }
        r
    }

    fn on_switch_up(&mut self, name: &str) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        let sw = &mut self.switches[si];
        sw.live = SwitchLiveness::Syncing;
        sw.seen_up = true;
        sw.forget_in_flight();
        // The read that follows marks every connection again (keys that waited for a batch
        // of the old session would otherwise stay dirty and never be queued).
        sw.crt_dirty.clear();
        sw.crt_queue.clear();
        sw.crt_deferred.clear();
        sw.pending_digests.clear();
        sw.syncing_digests.clear();
        self.actions.push_back(Action::ReadSwitch {
            switch: name.to_string(),
        });
    }

    fn on_switch_down(&mut self, name: &str) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        if self.switches[si].live == SwitchLiveness::Down {
            return;
        }
        self.count("switch_down");
        self.mark_down(si);
    }

    /// `si` is lost (or never came up): forget what it holds, and elect new owners.
    fn mark_down(&mut self, si: usize) {
        let sw = &mut self.switches[si];
        sw.live = SwitchLiveness::Down;
        sw.forget_in_flight();
        sw.pending_digests.clear();
        sw.syncing_digests.clear();
        sw.installed.clear();
        sw.installed_crt.clear();
        sw.crt_dirty.clear();
        sw.crt_queue.clear();
        sw.crt_deferred.clear();
        sw.overflow.clear();
        sw.failed.clear();
        for vs in &mut self.vipas {
            vs.retiring.retain(|s| *s != si);
        }
        self.elect();
        // Hot-standby backups drop/gain DVIPAs with liveness.
        for sw in &mut self.switches {
            sw.structural_dirty = true;
        }
    }

    fn on_switch_read(&mut self, name: &str, entries: Vec<(Key, Value)>) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        if self.switches[si].live == SwitchLiveness::Down {
            self.count("read_from_down_switch");
            return;
        }
        let mut installed = Tables::new();
        let mut installed_crt = HashMap::new();
        for (k, v) in entries {
            match (k, v) {
                (Key::Crt(c), Value::ToTarget { target }) => {
                    installed_crt.insert(c, target);
                }
                (k, v) => {
                    installed.insert(k, v);
                }
            }
        }
        // Adopt connections the core does not know (controller restart) for DVIPAs this
        // switch routes: forwarding continues undisturbed. Only from the first read of a switch
        // since this core started; afterwards the core's own CRT is authoritative (a returning
        // switch's stale entries are removed, not adopted).
        let first_read = !std::mem::replace(&mut self.switches[si].read_once, true);
        // Controller restart: DVIPAs this switch holds stay on it (as if retiring) until their
        // owner is programmed and advertised, and its connections are adopted.
        let restart = first_read && self.in_hold();
        let held: BTreeSet<usize> = if restart {
            (0..self.cluster.vipas.len())
                .filter(|vi| {
                    let a = self.cluster.vipas[*vi].addr;
                    self.chain(*vi).contains(&si)
                        && installed
                            .keys()
                            .any(|k| matches!(k, Key::Dvipa { addr, .. } if *addr == a))
                })
                .collect()
        } else {
            BTreeSet::new()
        };
        for &vi in &held {
            if self.vipas[vi].owner != si && !self.vipas[vi].retiring.contains(&si) {
                self.vipas[vi].retiring.push(si);
            }
        }
        self.switches[si].held_at_start = held.clone();
        let owned: BTreeSet<usize> = self
            .vipas
            .iter()
            .enumerate()
            .filter(|(vi, v)| first_read && (v.owner == si || held.contains(vi)))
            .map(|(i, _)| i)
            .collect();
        let mut adopt = Vec::new();
        for (c, t) in &installed_crt {
            if self.crt.contains_key(c) {
                continue;
            }
            let Some(svc) = self.service_of(c.dvipa(), c.dport, c.proto) else {
                continue;
            };
            if owned.contains(&self.services[svc as usize].vipa)
                && (*t as usize) >= 1
                && (*t as usize) <= self.stacks.len()
            {
                adopt.push((*c, *t, svc));
            }
        }
        for (c, t, svc) in adopt {
            self.pin(c, t, svc, Origin::SwitchRead, 0);
            self.count("crt_adopted_from_switch");
        }
        // Adopt the slot fill too (controller restart): it becomes the tie-breaker, and its
        // targets count as ready until their stacks attach or the start-up hold ends.
        for (k, v) in &installed {
            let (Key::Dpt { service, slot }, Some(t)) = (k, v.target()) else {
                continue;
            };
            let (svc, slot) = (*service as usize, *slot as usize);
            if svc >= self.services.len()
                || slot >= N_SLOTS
                || t == 0
                || t as usize > self.stacks.len()
                || !owned.contains(&self.services[svc].vipa)
                || self.services[svc].hint.iter().any(|x| x.is_some())
                    && self.services[svc].hint[slot].is_some()
            {
                continue;
            }
            self.services[svc].hint[slot] = Some(t);
            if !self.stacks[t as usize - 1].attached_ever {
                let d = self.services[svc].dpt.entry(t).or_default();
                if !d.listening {
                    d.listening = true;
                    d.adopted = true;
                    self.count("dpt_adopted_from_switch");
                }
            }
        }
        self.refill_all();
        let sw = &mut self.switches[si];
        sw.live = SwitchLiveness::Up;
        sw.installed = installed;
        for k in installed_crt.keys() {
            sw.mark_dirty(*k);
        }
        sw.installed_crt = installed_crt;
        sw.structural_dirty = true;
        sw.failed.clear();
        sw.overflow.clear();
        let all: Vec<ConnKey> = self.crt.keys().copied().collect();
        let sw = &mut self.switches[si];
        for k in all {
            sw.mark_dirty(k);
        }
        if restart {
            self.infer_owners();
        }
        self.elect();
        for sw in &mut self.switches {
            sw.structural_dirty = true;
        }
        // Digest lists that came while the switch was syncing.
        let buffered = std::mem::take(&mut self.switches[si].syncing_digests);
        for (list_id, items) in buffered {
            self.on_digest(name, list_id, items);
        }
    }

    fn on_write_result(&mut self, name: &str, batch: u64, results: Vec<WriteOutcome>) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        let sw = &mut self.switches[si];
        let Some(pos) = sw.in_flight.iter().position(|b| b.id == batch) else {
            self.count("write_result_unexpected");
            return;
        };
        let updates = sw
            .in_flight
            .remove(pos)
            .map(|b| b.updates)
            .unwrap_or_default();
        let mut counts: Vec<&'static str> = Vec::new();
        let mut freed = 0usize;
        for (i, u) in updates.iter().enumerate() {
            let r = results
                .get(i)
                .cloned()
                .unwrap_or_else(|| WriteOutcome::Other("no result".into()));
            let ok_apply = match (&r, u.kind) {
                (WriteOutcome::Ok, _) => true,
                (WriteOutcome::AlreadyExists, UpdateKind::Insert) => {
                    counts.push("write_already_exists");
                    true
                }
                (WriteOutcome::NotFound, UpdateKind::Delete) => true,
                (WriteOutcome::NotFound, UpdateKind::Modify) => {
                    // Gone behind our back: forget it so the next pass inserts it.
                    counts.push("write_not_found");
                    match u.key {
                        Key::Crt(c) => {
                            sw.installed_crt.remove(&c);
                        }
                        k => {
                            sw.installed.remove(&k);
                        }
                    }
                    false
                }
                (WriteOutcome::ResourceExhausted, _) => {
                    counts.push("write_resource_exhausted");
                    match u.key {
                        Key::Crt(c) => {
                            counts.push("crt_overflow");
                            sw.overflow.insert(c, "RESOURCE_EXHAUSTED");
                        }
                        k => {
                            sw.failed.insert(k, "RESOURCE_EXHAUSTED".into());
                        }
                    }
                    false
                }
                (r, _) => {
                    counts.push("write_error");
                    let msg = format!("{r:?}");
                    match (u.key, u.kind) {
                        (Key::Crt(c), UpdateKind::Delete) => {
                            // Do not retry forever; the next read of the switch finds it.
                            counts.push("crt_delete_failed");
                            sw.installed_crt.remove(&c);
                        }
                        (Key::Crt(c), _) => {
                            sw.overflow.insert(c, "write_error");
                        }
                        (k, _) => {
                            sw.failed.insert(k, msg);
                        }
                    }
                    false
                }
            };
            if let Key::Crt(c) = u.key {
                sw.crt_in_flight.remove(&c);
                if !ok_apply || sw.crt_dirty.contains(&c) {
                    // Failed (diff again: overflow, not found …) or changed while in flight.
                    sw.crt_dirty.remove(&c);
                    sw.mark_dirty(c);
                }
            }
            if ok_apply {
                match (u.key, u.kind) {
                    (Key::Crt(c), UpdateKind::Delete) => {
                        if sw.installed_crt.remove(&c).is_some() && r == WriteOutcome::Ok {
                            freed += 1;
                        }
                    }
                    (Key::Crt(c), _) => {
                        if let Value::ToTarget { target } = u.value {
                            sw.installed_crt.insert(c, target);
                        }
                    }
                    (k, UpdateKind::Delete) => {
                        sw.installed.remove(&k);
                    }
                    (k, _) => {
                        sw.installed.insert(k, u.value);
                    }
                }
            }
        }
        // CRT deletes made room: retry as many entries that found the table full.
        if freed > 0 && !sw.overflow.is_empty() {
            let retry: Vec<ConnKey> = sw
                .overflow
                .iter()
                .filter(|(_, why)| **why == "RESOURCE_EXHAUSTED")
                .map(|(k, _)| *k)
                .take(freed)
                .collect();
            for k in retry {
                sw.overflow.remove(&k);
                sw.mark_dirty(k);
                counts.push("crt_overflow_retried");
            }
        }
        for c in counts {
            self.count(c);
        }
        self.count("write_batches_done");
    }

    fn on_digest(&mut self, name: &str, list_id: u64, items: Vec<DigestItem>) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        match self.switches[si].live {
            SwitchLiveness::Up => {}
            SwitchLiveness::Syncing => {
                // Pinned once the switch's tables are read (acked after their entries).
                self.switches[si].syncing_digests.push((list_id, items));
                self.count("digest_buffered_syncing");
                return;
            }
            _ => {
                self.count("digest_from_switch_not_up");
                return;
            }
        }
        let mut conns = Vec::new();
        for it in items {
            self.count("digest_items");
            let Some(svc) = self.service_of(it.conn.dvipa(), it.conn.dport, it.conn.proto) else {
                self.count("digest_unknown_service");
                continue;
            };
            if svc != it.service {
                self.count("digest_service_mismatch");
                continue;
            }
            if it.target == 0 || it.target as usize > self.stacks.len() {
                self.count("digest_unknown_target");
                continue;
            }
            if self.crt.contains_key(&it.conn) {
                // Already pinned (NEWCONN first, or a repeated digest): keep the pin; make sure
                // it is on this switch.
                self.count(if it.not_syn {
                    "digest_not_syn_known"
                } else {
                    "digest_duplicate"
                });
                self.switches[si].mark_dirty(it.conn);
                conns.push(it.conn);
                continue;
            }
            let handshake = self.cluster.config.pin_on == crate::config::PinOn::Handshake;
            if it.not_syn {
                // The handshake's ACK of a SYN reported with the same target: pin it.
                // Anything else is a mid-connection packet nobody reported: do not guess a
                // pin; the owning stack's NEWCONN (re-report) will pin it.
                match self.syn_seen.take(&it.conn, self.now.0) {
                    Some(s) if handshake && s.target == it.target && s.service == svc => {
                        self.pin(it.conn, it.target, svc, Origin::SynDigest, 0);
                        self.count("crt_pinned_handshake");
                        conns.push(it.conn);
                    }
                    Some(_) => self.count("digest_not_syn_target_changed"),
                    None => self.count("digest_not_syn_unpinned"),
                }
                continue;
            }
            if handshake && it.conn.proto == 6 {
                // A SYN: remembered (bounded) until its handshake completes; the switch keeps
                // the choice in syn_pending for the handshake's packets meanwhile.
                let (evicted, expired) = self.syn_seen.insert(
                    it.conn,
                    crate::syn_seen::SeenSyn {
                        target: it.target,
                        service: svc,
                        at: self.now.0,
                    },
                );
                self.count("digest_syn_recorded");
                if evicted > 0 {
                    self.count_n("syn_seen_evicted", evicted as u64);
                }
                if expired > 0 {
                    self.count_n("syn_seen_expired", expired as u64);
                }
                continue;
            }
            self.pin(it.conn, it.target, svc, Origin::SynDigest, 0);
            self.count("crt_pinned_syn");
            conns.push(it.conn);
        }
        self.switches[si].pending_digests.push((list_id, conns, 0));
    }

    fn on_idle(&mut self, name: &str, conns: Vec<ConnKey>) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        if self.switches[si].live != SwitchLiveness::Up {
            self.count("idle_from_switch_not_up");
            return;
        }
        for c in conns {
            match self.crt.get(&c) {
                Some(e) if e.confirmed() && self.stacks[e.target as usize - 1].alive => {
                    self.count("idle_kept_alive");
                }
                Some(_) => {
                    self.unpin(&c);
                    self.count("idle_removed");
                }
                None => {
                    self.switches[si].mark_dirty(c);
                    self.count("idle_unknown");
                }
            }
        }
    }

    fn flush_all(&mut self) {
        for si in 0..self.switches.len() {
            self.flush(si);
        }
        self.advertise_converged();
        self.push_vipa_lists();
    }

    fn flush(&mut self, si: usize) {
        if self.switches[si].live != SwitchLiveness::Up {
            return;
        }
        while self.send_next(si) {}
        self.ack_settled(si);
    }

    /// Non-CRT updates by phase (all empty when nothing structural changed).
    fn structural_phases(&mut self, si: usize) -> Vec<Vec<Update>> {
        let mut phases: Vec<Vec<Update>> = vec![Vec::new(); PHASES];
        if !self.switches[si].structural_dirty {
            return phases;
        }
        let desired = self.desired_noncrt(si);
        let sw = &self.switches[si];
        let p = entries::reconcile(&desired, &sw.installed);
        for (i, ups) in p.into_iter().enumerate() {
            phases[i].extend(ups.into_iter().filter(|u| !sw.failed.contains_key(&u.key)));
        }
        if phases.iter().all(|p| p.is_empty()) {
            self.switches[si].structural_dirty = false;
        }
        phases
    }

    /// Sends the next batch to switch `si` if the phase order and the window allow one.
    /// Returns true when it sent one (or queued work again and should be asked once more).
    fn send_next(&mut self, si: usize) -> bool {
        let window = self.opts.max_in_flight.max(1);
        let sw = &self.switches[si];
        if sw.in_flight.len() >= window {
            return false;
        }
        let flying = sw.in_flight.front().map(|b| b.phase);
        if flying.is_some_and(|p| p != CRT_UPSERT && p != CRT_DELETE) {
            // A structural batch is alone in flight.
            return false;
        }
        let mut st = self.structural_phases(si);
        let s_min = st.iter().position(|p| !p.is_empty());
        if s_min == Some(0) {
            // Targets and routes first (CRT entries may name a new target).
            if flying.is_none() {
                let p = std::mem::take(&mut st[0]);
                self.send(si, 0, p);
                return true;
            }
            return false;
        }
        match flying {
            None | Some(CRT_UPSERT) => {
                let b = self.take_crt_upserts(si);
                if !b.is_empty() {
                    self.send(si, CRT_UPSERT, b);
                    return true;
                }
                if flying.is_some() {
                    // Later phases wait until every CRT insert is confirmed.
                    return false;
                }
            }
            _ => {
                if self.switches[si].crt_queue_pending() {
                    // Inserts come after the deletes in flight are confirmed.
                    return false;
                }
            }
        }
        if let Some(p) = s_min.filter(|p| *p < CRT_DELETE) {
            if flying.is_none() {
                let b = std::mem::take(&mut st[p]);
                self.send(si, p, b);
                return true;
            }
            return false;
        }
        let (b, requeued) = self.take_crt_deletes(si);
        if !b.is_empty() {
            self.send(si, CRT_DELETE, b);
            return true;
        }
        if requeued {
            return true;
        }
        if let Some(p) = s_min.filter(|p| *p > CRT_DELETE)
            && flying.is_none()
        {
            let b = std::mem::take(&mut st[p]);
            self.send(si, p, b);
            return true;
        }
        false
    }

    /// Up to `max_batch` CRT inserts/modifies from the front of the dirty queue (keys that
    /// diff to a delete are set aside for phase 6, keys in sync are dropped). A backlog smaller
    /// than a full batch per free window slot is spread over the free slots (batches of at
    /// least [`MIN_SPREAD_BATCH`]), so it is written by concurrent Writes, not one long one.
    fn take_crt_upserts(&mut self, si: usize) -> Vec<Update> {
        let programmed = self.programmed_vipas(si);
        let free = self
            .opts
            .max_in_flight
            .max(1)
            .saturating_sub(self.switches[si].in_flight.len())
            .max(1);
        let spread = self.switches[si]
            .crt_queue
            .len()
            .div_ceil(free)
            .max(MIN_SPREAD_BATCH);
        let max = self.opts.max_batch.min(spread).max(1);
        let (crt, services) = (&self.crt, &self.services);
        let sw = &mut self.switches[si];
        let mut out = Vec::new();
        while out.len() < max {
            let Some(k) = sw.crt_queue.pop_front() else {
                break;
            };
            if !sw.crt_dirty.contains(&k) || sw.crt_in_flight.contains(&k) {
                // Stale, or queued again when its batch ends.
                continue;
            }
            let d = desired_crt_of(crt, services, &sw.overflow, &programmed, &k);
            let a = sw
                .installed_crt
                .get(&k)
                .map(|t| Value::ToTarget { target: *t });
            match entries::diff_one(Key::Crt(k), d.as_ref(), a.as_ref()) {
                None => {
                    sw.crt_dirty.remove(&k);
                    sw.crt_deferred.remove(&k);
                }
                Some(u) if u.kind == UpdateKind::Delete => {
                    sw.crt_deferred.insert(k);
                }
                Some(u) => {
                    sw.crt_deferred.remove(&k);
                    out.push(u);
                }
            }
        }
        if sw.crt_dirty.is_empty() && sw.crt_dirty.capacity() > 1024 {
            sw.crt_dirty.shrink_to(0);
            sw.crt_queue.shrink_to(0);
        }
        out
    }

    /// Up to `max_batch` CRT deletes set aside earlier, diffed again; keys that now need an
    /// insert go back to the queue (the second value says whether any did).
    fn take_crt_deletes(&mut self, si: usize) -> (Vec<Update>, bool) {
        let programmed = self.programmed_vipas(si);
        let max = self.opts.max_batch.max(1);
        let (crt, services) = (&self.crt, &self.services);
        let sw = &mut self.switches[si];
        let cand: Vec<ConnKey> = sw.crt_deferred.iter().take(max).copied().collect();
        let mut out = Vec::new();
        let mut requeued = false;
        for k in cand {
            sw.crt_deferred.remove(&k);
            if !sw.crt_dirty.contains(&k) || sw.crt_in_flight.contains(&k) {
                continue;
            }
            let d = desired_crt_of(crt, services, &sw.overflow, &programmed, &k);
            let a = sw
                .installed_crt
                .get(&k)
                .map(|t| Value::ToTarget { target: *t });
            match entries::diff_one(Key::Crt(k), d.as_ref(), a.as_ref()) {
                None => {
                    sw.crt_dirty.remove(&k);
                }
                Some(u) if u.kind == UpdateKind::Delete => out.push(u),
                Some(_) => {
                    sw.crt_queue.push_back(k);
                    requeued = true;
                }
            }
        }
        if sw.crt_deferred.is_empty() && sw.crt_deferred.capacity() > 1024 {
            sw.crt_deferred.shrink_to(0);
        }
        (out, requeued)
    }

    fn send(&mut self, si: usize, phase: usize, mut updates: Vec<Update>) {
        updates.sort_unstable_by_key(|u| u.key);
        let sw = &mut self.switches[si];
        for u in &updates {
            if let Key::Crt(c) = u.key {
                sw.crt_dirty.remove(&c);
                sw.crt_in_flight.insert(c);
            }
        }
        let id = self.next_batch;
        self.next_batch += 1;
        sw.in_flight.push_back(Batch {
            id,
            phase,
            updates: updates.clone(),
        });
        self.count("write_batches");
        let sw = &self.switches[si];
        self.actions.push_back(Action::Write {
            switch: sw.name.clone(),
            batch: id,
            updates,
        });
    }

    /// Acks the digest lists whose connections are all settled on switch `si`.
    fn ack_settled(&mut self, si: usize) {
        let SwitchState {
            name,
            pending_digests,
            crt_dirty,
            crt_in_flight,
            ..
        } = &mut self.switches[si];
        let actions = &mut self.actions;
        pending_digests.retain_mut(|(id, conns, seen)| {
            while let Some(c) = conns.get(*seen) {
                if crt_dirty.contains(c) || crt_in_flight.contains(c) {
                    return true;
                }
                *seen += 1;
            }
            actions.push_back(Action::AckDigest {
                switch: name.clone(),
                list_id: *id,
            });
            false
        });
    }

    /// Everything `si` must hold for DVIPA `vi` is written: no batch in flight, no
    /// dvipa/dpt/target/route work left, no CRT entry of that DVIPA waiting (entries of other
    /// DVIPAs do not hold the advertisement back).
    fn converged(&self, si: usize, vi: usize) -> bool {
        let sw = &self.switches[si];
        sw.live == SwitchLiveness::Up
            && sw.in_flight.is_empty()
            && !sw.structural_dirty
            && sw.crt_dirty.iter().all(|k| {
                self.crt
                    .get(k)
                    .is_none_or(|e| self.services[e.service as usize].vipa != vi)
            })
    }

    fn advertise_converged(&mut self) {
        let mut again = false;
        for vi in 0..self.vipas.len() {
            let vs = &self.vipas[vi];
            if vs.advertised == Some(vs.owner) || !self.converged(vs.owner, vi) {
                continue;
            }
            if self.in_hold()
                && self.chain(vi).iter().any(|&s| {
                    let sw = &self.switches[s];
                    sw.live == SwitchLiveness::Syncing && !sw.read_once
                })
            {
                // Restart: a connected switch that may hold this DVIPA is not read yet.
                continue;
            }
            let v = &self.cluster.vipas[vi];
            let (dvipa, prefix_len) = (v.addr, v.prefix_len);
            let owner = vs.owner;
            let old = vs.advertised;
            self.actions.push_back(Action::Advertise {
                switch: self.switches[owner].name.clone(),
                dvipa,
                prefix_len,
            });
            self.count("advertise");
            if let Some(o) = old {
                self.actions.push_back(Action::Withdraw {
                    switch: self.switches[o].name.clone(),
                    dvipa,
                    prefix_len,
                });
                self.count("withdraw");
            }
            let retiring = std::mem::take(&mut self.vipas[vi].retiring);
            self.vipas[vi].advertised = Some(owner);
            let now = self.now;
            self.vipas[vi].transitions.push(Transition {
                at: now,
                what: format!("advertised on {}", self.switches[owner].name),
            });
            // The old routing switches now clean up the DVIPA's entries.
            for r in retiring {
                self.mark_vipa_conns_dirty(vi, r);
                again = true;
            }
        }
        if again {
            for si in 0..self.switches.len() {
                self.flush(si);
            }
        }
    }

    // ----- ownership ---------------------------------------------------------------------

    fn eligible(&self, si: usize) -> bool {
        let sw = &self.switches[si];
        sw.live == SwitchLiveness::Up && !sw.maintenance
    }

    /// Decide every DVIPA's routing switch: takeover when the owner is lost (or in
    /// maintenance), takeback when the primary is back (unless an operator moved it).
    fn elect(&mut self) {
        for vi in 0..self.vipas.len() {
            let chain = self.chain(vi);
            let vs = &self.vipas[vi];
            let owner = vs.owner;
            let primary = chain[0];
            let owner_lost = matches!(self.switches[owner].live, SwitchLiveness::Down)
                || self.switches[owner].maintenance;
            if owner_lost {
                if let Some(&n) = chain.iter().find(|&&s| s != owner && self.eligible(s)) {
                    let why = if self.switches[owner].maintenance {
                        "maintenance"
                    } else if !self.switches[owner].seen_up {
                        "not up after the start-up hold"
                    } else {
                        "down"
                    };
                    self.change_owner(
                        vi,
                        n,
                        &format!("takeover ({} {why})", self.switches[owner].name),
                    );
                    if n == primary {
                        // Back on its primary: an operator's pin to the lost switch is over.
                        self.vipas[vi].admin_pinned = false;
                    }
                    self.count("takeover");
                }
            } else if !vs.admin_pinned && owner != primary && self.eligible(primary) {
                self.change_owner(vi, primary, "takeback (primary back)");
                self.count("takeback");
            }
        }
    }

    fn change_owner(&mut self, vi: usize, to: usize, why: &str) {
        let from = self.vipas[vi].owner;
        if from == to {
            return;
        }
        if self.switches[from].live == SwitchLiveness::Up
            && !self.vipas[vi].retiring.contains(&from)
        {
            self.vipas[vi].retiring.push(from);
        }
        self.vipas[vi].retiring.retain(|s| *s != to);
        self.vipas[vi].owner = to;
        let now = self.now;
        let what = format!(
            "{why}: {} -> {}",
            self.switches[from].name, self.switches[to].name
        );
        self.vipas[vi]
            .transitions
            .push(Transition { at: now, what });
        self.activate_services(vi);
        self.mark_vipa_conns_dirty(vi, to);
        self.structural_change();
    }

    /// Activate a VIPA of a VIPARANGE as a (non-distributed, moveable) DVIPA routed by the
    /// switch whose profile has the range: all ports, every stack a candidate, new connections
    /// to the stack that bound last.
    fn ensure_range_vipa(&mut self, a: Ipv4Addr) {
        if self.vipa_index(a).is_some() {
            return;
        }
        let Some((sw, range)) = self
            .cluster
            .ranges
            .iter()
            .find(|(_, r)| r.contains(a))
            .cloned()
        else {
            return;
        };
        let protos: Vec<Proto> = if self.cluster.config.distribute_udp {
            vec![TCP, UDP]
        } else {
            vec![TCP]
        };
        if self.services.len() + protos.len() > MAX_SERVICES {
            self.count("range_vipa_no_service_id");
            return;
        }
        let file = self
            .cluster
            .profiles
            .get(&sw)
            .map(|p| p.file.clone())
            .unwrap_or_default();
        let candidates: Vec<crate::config::Candidate> = self
            .stacks
            .iter()
            .map(|s| crate::config::Candidate {
                stack: s.name.clone(),
                weight: 1,
                role: None,
            })
            .collect();
        self.cluster.vipas.push(EffectiveVipa {
            addr: a,
            prefix_len: 32,
            owner: sw.clone(),
            backups: Vec::new(),
            dist: vec![crate::config::Distribution {
                file,
                loc: range.loc,
                ports: Vec::new(),
                method: DistMethod::HotStandby,
                all_stacks: true,
                candidates,
            }],
        });
        let vi = self.cluster.vipas.len() - 1;
        let owner = self.sw_index[&sw];
        self.vipas.push(VipaState {
            owner,
            retiring: Vec::new(),
            advertised: None,
            admin_pinned: false,
            restored: false,
            transitions: vec![Transition {
                at: self.now,
                what: format!(
                    "activated in VIPARANGE {}/{} of {sw}",
                    range.network, range.prefix_len
                ),
            }],
        });
        self.range_vipas.insert(vi);
        let all: BTreeSet<u16> = (1..=self.stacks.len() as u16).collect();
        for pr in protos {
            let id = self.services.len() as u16;
            self.svc_index.insert((u32::from(a), None, pr), id);
            self.services.push(Service {
                id,
                vipa: vi,
                dvipa: a,
                port: None,
                proto: pr,
                active: false,
                method: DistMethod::HotStandby,
                candidates: Vec::new(),
                any_candidates: all.clone(),
                dpt: BTreeMap::new(),
                fill: [None; N_SLOTS],
                hint: [None; N_SLOTS],
            });
        }
        self.activate_services(vi);
        self.count("range_vipa_activated");
        self.structural_change();
    }

    /// Controller restart without a restored owner: when a DVIPA's configured owner was read
    /// and holds none of it while another switch of its chain does, that switch is routing it
    /// (an operator move or a takeover before the restart): keep it there.
    fn infer_owners(&mut self) {
        for vi in 0..self.vipas.len() {
            let o = self.vipas[vi].owner;
            if self.vipas[vi].restored
                || !self.switches[o].read_once
                || self.switches[o].held_at_start.contains(&vi)
            {
                continue;
            }
            let chain = self.chain(vi);
            let holder = chain.iter().copied().find(|&s| {
                self.switches[s].read_once && self.switches[s].held_at_start.contains(&vi)
            });
            if let Some(h) = holder {
                self.vipas[vi].restored = true;
                self.vipas[vi].admin_pinned = h != chain[0];
                self.change_owner(vi, h, "found on the switch after a controller restart");
                self.count("owner_inferred_from_switch");
            }
        }
    }

    /// Ownership to persist across controller restarts: `(dvipa, routing switch, pinned by an
    /// operator move)`.
    pub fn ownership(&self) -> Vec<(Ipv4Addr, String, bool)> {
        self.vipas
            .iter()
            .enumerate()
            .map(|(vi, v)| {
                (
                    self.cluster.vipas[vi].addr,
                    self.switches[v.owner].name.clone(),
                    v.admin_pinned,
                )
            })
            .collect()
    }

    /// Restore persisted ownership (call before the first event of a restarted controller).
    /// Without it, a restart keeps a DVIPA where the switches' tables show it unambiguously.
    pub fn restore_owner(
        &mut self,
        dvipa: Ipv4Addr,
        switch: &str,
        admin_pinned: bool,
    ) -> Result<(), CoreError> {
        let err = |why: String| CoreError::Restore { dvipa, why };
        let vi = self
            .vipa_index(dvipa)
            .ok_or_else(|| err("not a configured DVIPA".into()))?;
        let si = *self
            .sw_index
            .get(switch)
            .ok_or_else(|| err(format!("no switch named `{switch}`")))?;
        if !self.chain(vi).contains(&si) {
            return Err(err(format!("`{switch}` neither defines nor backs it up")));
        }
        let v = &mut self.vipas[vi];
        v.restored = true;
        v.admin_pinned = admin_pinned;
        v.owner = si;
        v.transitions.push(Transition {
            at: self.now,
            what: format!("restored owner {switch}"),
        });
        self.activate_services(vi);
        self.structural_change();
        Ok(())
    }

    fn on_admin_move(&mut self, dvipa: Ipv4Addr, to: &str) {
        let Some(vi) = self.vipa_index(dvipa) else {
            self.count("admin_move_unknown_dvipa");
            return;
        };
        let Some(&si) = self.sw_index.get(to) else {
            self.count("unknown_switch");
            return;
        };
        if !self.eligible(si) {
            self.count("admin_move_target_not_up");
            return;
        }
        let primary = self.chain(vi)[0];
        self.vipas[vi].admin_pinned = si != primary;
        self.change_owner(vi, si, "admin move");
        self.count("admin_move");
    }

    // ----- agents ------------------------------------------------------------------------

    fn renew(&mut self, t: u16) {
        let lease = self.timers.lease_ms;
        let now = self.now;
        let st = &mut self.stacks[t as usize - 1];
        st.lease_until = Some(now.plus(lease));
        if !st.alive {
            st.alive = true;
            self.structural_change();
        }
    }

    fn on_hello(&mut self, stack: &str, underlay: Ipv4Addr, epoch: u64) {
        let Some(t) = self.stack_id(stack) else {
            self.count("agent_rejected_unknown_stack");
            self.actions.push_back(Action::AgentRejected {
                stack: stack.into(),
                reason: format!("stack `{stack}` is not configured"),
            });
            return;
        };
        let configured = self.stacks[t as usize - 1].underlay;
        if configured != underlay {
            self.count("agent_rejected_underlay_mismatch");
            self.actions.push_back(Action::AgentRejected {
                stack: stack.into(),
                reason: format!(
                    "stack `{stack}` has underlay address {configured} in the configuration, hello says {underlay}"
                ),
            });
            return;
        }
        let st = &mut self.stacks[t as usize - 1];
        st.attached_ever = true;
        st.session = Some(epoch);
        st.sync = None;
        st.last_list = None;
        self.actions.push_back(Action::Welcome {
            stack: stack.into(),
            heartbeat_ms: self.timers.heartbeat_ms,
            lease_ms: self.timers.lease_ms,
        });
        self.count("agent_hello");
        self.renew(t);
    }

    fn on_heartbeat(&mut self, stack: &str, weight: u32) {
        let Some(t) = self.session_stack(stack) else {
            return;
        };
        let st = &mut self.stacks[t as usize - 1];
        if st.wlm_weight != weight {
            st.wlm_weight = weight;
            self.structural_change();
        }
        self.renew(t);
    }

    fn session_stack(&mut self, stack: &str) -> Option<u16> {
        match self.stack_id(stack) {
            Some(t) if self.stacks[t as usize - 1].session.is_some() => Some(t),
            _ => {
                self.count("agent_message_without_hello");
                None
            }
        }
    }

    fn on_report(&mut self, stack: &str, r: Report) {
        let Some(t) = self.session_stack(stack) else {
            self.actions.push_back(Action::AgentAck {
                stack: stack.into(),
                seq: r.seq,
                errors: vec![ItemError {
                    list: "report",
                    index: 0,
                    reason: "no_hello",
                    detail: "a Hello must come first".into(),
                }],
            });
            return;
        };
        self.renew(t);
        // A VIPA inside a VIPARANGE becomes a DVIPA when a stack binds to it (figs. 11–12).
        let addrs: BTreeSet<Ipv4Addr> = r
            .srvstat
            .iter()
            .map(|s| s.dvipa)
            .chain(r.newconn.iter().map(|c| c.dvipa))
            .collect();
        for a in addrs {
            self.ensure_range_vipa(a);
        }
        let mut errors = Vec::new();
        if r.full_sync && self.stacks[t as usize - 1].sync.is_none() {
            self.stacks[t as usize - 1].sync = Some(SyncRound {
                started: self.now,
                listeners: HashSet::new(),
                conns: HashSet::new(),
            });
        }
        let mut structural = false;
        for (i, s) in r.srvstat.iter().enumerate() {
            let mut err = |reason: &'static str, detail: String| {
                errors.push(ItemError {
                    list: "srvstat",
                    index: i as u32,
                    reason,
                    detail,
                })
            };
            let (port, proto) = match (u16::try_from(s.port), u8::try_from(s.protocol)) {
                (Ok(p), Ok(pr)) if p != 0 && (pr == TCP || pr == UDP) => (p, pr),
                _ => {
                    err(
                        "invalid",
                        format!("port {} / protocol {} out of range", s.port, s.protocol),
                    );
                    continue;
                }
            };
            let Some(svc) = self.service_of(s.dvipa, port, proto) else {
                if self.vipa_index(s.dvipa).is_some() {
                    err(
                        "unknown_port",
                        format!("{}:{port} is not a distributed port", s.dvipa),
                    );
                } else {
                    err("unknown_dvipa", format!("{} is not a DVIPA", s.dvipa));
                }
                continue;
            };
            let service = &mut self.services[svc as usize];
            if !service.any_candidates.contains(&t) {
                err(
                    "not_in_destip",
                    format!("stack `{stack}` is not in the DESTIP list of {}", s.dvipa),
                );
                continue;
            }
            let now = self.now;
            let d = service.dpt.entry(t).or_default();
            let was_ready = d.listening && !d.draining;
            d.listening = s.listening;
            d.adopted = false;
            d.draining = s.draining;
            d.reported_weight = s.weight;
            let is_ready = d.listening && !d.draining;
            if !is_ready && (was_ready || d.not_ready.is_none()) {
                d.not_ready = Some((
                    now,
                    if s.listening {
                        "draining"
                    } else {
                        "not_listening"
                    },
                ));
            } else if is_ready {
                d.not_ready = None;
            }
            structural = true;
            if let Some(sync) = &mut self.stacks[t as usize - 1].sync {
                sync.listeners.insert((svc, t));
            }
            if s.listening
                && !s.draining
                && self.range_vipas.contains(&self.services[svc as usize].vipa)
            {
                // Moveable VIPA: the stack that bound last gets the new connections; the
                // earlier ones keep theirs (pinned) and stay next in line.
                let cands = &mut self.services[svc as usize].candidates;
                if !cands
                    .iter()
                    .any(|c| c.0 == t && c.2 == Some(StandbyRole::Preferred))
                {
                    for c in cands.iter_mut() {
                        c.2 = if c.0 == t {
                            Some(StandbyRole::Preferred)
                        } else {
                            match c.2 {
                                Some(StandbyRole::Preferred) => Some(StandbyRole::Backup(254)),
                                Some(StandbyRole::Backup(r)) => {
                                    Some(StandbyRole::Backup(r.saturating_sub(1).max(1)))
                                }
                                None => None,
                            }
                        };
                    }
                }
            }
        }
        let full = r.full_sync;
        for (i, c) in r.newconn.iter().enumerate() {
            match self.conn_key(c) {
                Err((reason, detail)) => errors.push(ItemError {
                    list: "newconn",
                    index: i as u32,
                    reason,
                    detail,
                }),
                Ok((k, svc)) => {
                    if !self.services[svc as usize].any_candidates.contains(&t) {
                        errors.push(ItemError {
                            list: "newconn",
                            index: i as u32,
                            reason: "not_in_destip",
                            detail: format!(
                                "stack `{stack}` is not in the DESTIP list of {}",
                                c.dvipa
                            ),
                        });
                        continue;
                    }
                    if let Some(sync) = &mut self.stacks[t as usize - 1].sync {
                        sync.conns.insert(k);
                    }
                    let flags = F_CONFIRMED
                        | if c.server_originated {
                            F_SERVER_ORIG
                        } else {
                            0
                        };
                    match self.crt.get(&k).copied() {
                        Some(e) if e.target == t => {
                            if e.confirmed() && !full {
                                errors.push(ItemError {
                                    list: "newconn",
                                    index: i as u32,
                                    reason: "duplicate",
                                    detail: format!("{k} is already pinned to `{stack}`"),
                                });
                            } else {
                                let e2 = self.crt.get_mut(&k).expect("present");
                                e2.flags |= flags;
                                self.count("crt_confirmed");
                                // A takeover/takeback: make sure the new owner has it.
                                self.mark_conn_dirty(k);
                            }
                        }
                        Some(e) => {
                            let other_alive = self.stacks[e.target as usize - 1].alive;
                            if e.confirmed() && other_alive {
                                errors.push(ItemError {
                                    list: "newconn",
                                    index: i as u32,
                                    reason: "conflict",
                                    detail: format!(
                                        "{k} is pinned to `{}`, which reported it too",
                                        self.stacks[e.target as usize - 1].name
                                    ),
                                });
                            } else {
                                // The stack holding the socket is authoritative.
                                self.pin(
                                    k,
                                    t,
                                    svc,
                                    if full {
                                        Origin::Takeover
                                    } else {
                                        Origin::NewConn
                                    },
                                    flags,
                                );
                                self.count("crt_repinned_by_agent");
                            }
                        }
                        None => {
                            self.pin(
                                k,
                                t,
                                svc,
                                if full {
                                    Origin::Takeover
                                } else {
                                    Origin::NewConn
                                },
                                flags,
                            );
                            self.count(if full {
                                "crt_pinned_rereport"
                            } else {
                                "crt_pinned_newconn"
                            });
                        }
                    }
                }
            }
        }
        for (i, c) in r.termconn.iter().enumerate() {
            match self.conn_key(c) {
                Err((reason, detail)) => errors.push(ItemError {
                    list: "termconn",
                    index: i as u32,
                    reason,
                    detail,
                }),
                Ok((k, _)) => match self.crt.get(&k) {
                    None => errors.push(ItemError {
                        list: "termconn",
                        index: i as u32,
                        reason: "late",
                        detail: format!("{k} is not in the CRT (already ended or never pinned)"),
                    }),
                    Some(e) if e.target != t => errors.push(ItemError {
                        list: "termconn",
                        index: i as u32,
                        reason: "not_owner",
                        detail: format!(
                            "{k} is pinned to `{}`, not `{stack}`",
                            self.stacks[e.target as usize - 1].name
                        ),
                    }),
                    Some(_) => {
                        self.unpin(&k);
                        self.count("crt_removed_termconn");
                    }
                },
            }
        }
        if r.sync_done {
            if let Some(sync) = self.stacks[t as usize - 1].sync.take() {
                for s in &mut self.services {
                    if let Some(d) = s.dpt.get_mut(&t)
                        && d.listening
                        && !sync.listeners.contains(&(s.id, t))
                    {
                        d.listening = false;
                        d.not_ready = Some((sync.started, "not_rereported"));
                        structural = true;
                    }
                }
                let start_s = (sync.started.0 / 1000) as u32;
                let gone: Vec<ConnKey> = self
                    .crt
                    .iter()
                    .filter(|(k, e)| {
                        e.target == t && e.pinned_s < start_s && !sync.conns.contains(k)
                    })
                    .map(|(k, _)| *k)
                    .collect();
                for k in gone {
                    self.unpin(&k);
                    self.count("crt_removed_not_rereported");
                }
            } else {
                errors.push(ItemError {
                    list: "report",
                    index: 0,
                    reason: "sync_done_without_full_sync",
                    detail: "sync_done set on a batch without a full re-report".into(),
                });
            }
        }
        for e in &errors {
            *self.counters.entry(e.reason).or_default() += 1;
        }
        self.count("agent_reports");
        if structural {
            self.structural_change();
        }
        self.actions.push_back(Action::AgentAck {
            stack: stack.into(),
            seq: r.seq,
            errors,
        });
    }

    fn conn_key(&self, c: &ConnReport) -> Result<(ConnKey, u16), (&'static str, String)> {
        let (cp, dp, pr) = match (
            u16::try_from(c.client_port),
            u16::try_from(c.dvipa_port),
            u8::try_from(c.protocol),
        ) {
            (Ok(cp), Ok(dp), Ok(pr)) if cp != 0 && dp != 0 && (pr == TCP || pr == UDP) => {
                (cp, dp, pr)
            }
            _ => {
                return Err((
                    "invalid",
                    format!(
                        "ports {}/{} or protocol {} out of range",
                        c.client_port, c.dvipa_port, c.protocol
                    ),
                ));
            }
        };
        if let Some(reason) = bad_client(c.client) {
            return Err((
                reason,
                format!(
                    "client address {} cannot be a TCP/UDP peer ({})",
                    c.client,
                    reason.trim_start_matches("client_")
                ),
            ));
        }
        let Some(svc) = self.service_of(c.dvipa, dp, pr) else {
            return Err(if self.vipa_index(c.dvipa).is_some() {
                (
                    "unknown_port",
                    format!("{}:{dp} is not a distributed port", c.dvipa),
                )
            } else {
                ("unknown_dvipa", format!("{} is not a DVIPA", c.dvipa))
            });
        };
        Ok((ConnKey::new(c.client, cp, c.dvipa, dp, pr), svc))
    }

    fn push_vipa_lists(&mut self) {
        for i in 0..self.stacks.len() {
            if self.stacks[i].session.is_none() {
                continue;
            }
            let name = self.stacks[i].name.clone();
            let list = self.vipa_list_for(&name);
            if self.stacks[i].last_list.as_ref() != Some(&list) {
                self.list_version += 1;
                self.stacks[i].last_list = Some(list.clone());
                self.actions.push_back(Action::SendVipaList {
                    stack: name,
                    list: VipaList {
                        version: self.list_version,
                        vipas: list,
                    },
                });
            }
        }
    }
}

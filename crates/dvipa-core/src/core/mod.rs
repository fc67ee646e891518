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
//! Layout (one job a module; all are `impl Core` blocks over the state defined here or in the
//! module that owns it):
//! - `api.rs`: [`Event`], [`Action`], agent reports, rows, errors, options —
//!   re-exported here;
//! - `timers.rs`: start-up holds, stack leases, [`Core::poll_timeout`] / [`Core::handle_timeout`];
//! - `services.rs`: which services an owner distributes, target readiness, slot fill;
//! - `crt.rs`: pins, unpins, SYN digests, idle timeouts;
//! - `switch_sync.rs`: the per-switch write pipeline (installed vs desired, batches by phase);
//! - `ownership.rs`: election, operator moves ([`MoveError`]), maintenance, advertisement, restore;
//! - `agents.rs`: sessions, leases, report batches (SRVSTAT, NEWCONN, TERMCONN, sync rounds),
//!   VIPA lists;
//! - `idx.rs`: [`TargetId`], `SwitchIdx`, `VipaIdx` and the `IdVec` each indexes (stacks,
//!   switches, DVIPAs are never indexed by a raw `usize`).

use crate::config::{Cluster, EffectiveVipa, Encap, Timers};
use crate::entries::{
    self, ConnKey, Key, PHASES, Proto, TCP, Tables, UDP, Update, UpdateKind, Value,
};
use crate::profile::{DistMethod, StandbyRole};
use crate::slots::{self, Fill, N_SLOTS};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;

mod agents;
mod api;
mod crt;
mod idx;
mod ownership;
mod services;
mod switch_sync;
mod timers;

use agents::*;
pub use api::*;
pub use idx::TargetId;
use idx::{IdVec, SwitchIdx, VipaIdx};
use ownership::*;
use services::*;
use switch_sync::*;
use timers::*;

/// The controller core.
#[derive(Debug)]
pub struct Core {
    cluster: Cluster,
    timers: Timers,
    opts: CoreOptions,
    services: Vec<Service>,
    svc_index: HashMap<(u32, Option<u16>, Proto), u16>,
    stacks: IdVec<TargetId, StackState>,
    stack_index: HashMap<String, u16>,
    vipas: IdVec<VipaIdx, VipaState>,
    crt: HashMap<ConnKey, CrtEntry>,
    /// Pins removed as idle during the start-up hold: not adopted again from another switch's
    /// first read (a hot-standby copy of a stale entry). At most one per CRT key; emptied once
    /// the hold is over.
    idle_in_hold: HashSet<ConnKey>,
    /// SYNs reported and not pinned yet (`pin_on = "handshake"`).
    syn_seen: crate::syn_seen::SynSeen,
    switches: IdVec<SwitchIdx, SwitchState>,
    sw_index: HashMap<String, SwitchIdx>,
    actions: VecDeque<Action>,
    counters: BTreeMap<&'static str, u64>,
    next_batch: u64,
    list_version: u64,
    now: Time,
    /// The start-up holds and the stacks' leases.
    timer_table: TimerTable,
    range_vipas: BTreeSet<VipaIdx>,
    /// Bumped on every ownership change (owner, operator pin, new DVIPA).
    owners_gen: u64,
    /// `owners_gen` when [`Action::OwnersChanged`] was last queued.
    owners_reported: u64,
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
        let sw_index: HashMap<String, SwitchIdx> = switches
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), SwitchIdx(i)))
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
            stacks: IdVec::new(stacks),
            stack_index,
            vipas: IdVec::new(vipas),
            crt: HashMap::new(),
            idle_in_hold: HashSet::new(),
            syn_seen: Default::default(),
            switches: IdVec::new(switches),
            sw_index,
            actions: VecDeque::new(),
            counters: BTreeMap::new(),
            next_batch: 1,
            list_version: 0,
            now: Time(0),
            timer_table: TimerTable::default(),
            range_vipas: BTreeSet::new(),
            owners_gen: 0,
            owners_reported: 0,
        };
        for vi in core.vipas.ids() {
            core.activate_services(vi);
        }
        core.refill_all();
        Ok(core)
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
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
                    self.stacks[TargetId(t)].session = None;
                }
            }
            Event::AdminMove { dvipa, to } => {
                if let Err(e) = self.try_admin_move(dvipa, &to) {
                    self.count(e.counter());
                }
            }
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
        self.note_owners();
    }

    /// Whether `switch` is marked down for maintenance ([`Event::AdminMaintenance`]).
    pub fn in_maintenance(&self, switch: &str) -> bool {
        self.sw_index
            .get(switch)
            .is_some_and(|&si| self.switches[si].maintenance)
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
        let st = &self.stacks[TargetId(e.target)];
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
            if programmed.contains(&VipaIdx(self.services[e.service as usize].vipa))
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
        for vi in self.vipas.ids() {
            let v = &self.cluster.vipas[vi.0];
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

    fn count(&mut self, what: &'static str) {
        *self.counters.entry(what).or_default() += 1;
    }

    fn count_n(&mut self, what: &'static str, n: u64) {
        *self.counters.entry(what).or_default() += n;
    }

    fn vipa_index(&self, a: Ipv4Addr) -> Option<VipaIdx> {
        self.cluster
            .vipas
            .iter()
            .position(|v| v.addr == a)
            .map(VipaIdx)
    }
}

//! The snapshot differ: turns consecutive kernel [`Snapshot`]s plus the VIPA list into the
//! connection administration messages (SRVSTAT, NEWCONN, TERMCONN), and remembers what it has
//! reported so that a reconnect can re-report everything (`full_sync`).
//!
//! Rules:
//! - A listener counts for `DVIPA:port` when it is bound to the DVIPA or to the wildcard address
//!   and the port is distributed for that DVIPA (a VIPA with no port list distributes all ports).
//!   UDP wildcard sockets count only for explicitly listed ports, since every UDP client socket
//!   is a wildcard-bound "listener" on an ephemeral port.
//! - A TCP connection counts when its local address is a DVIPA. It is *server-originated* when
//!   it was seen in SYN_SENT, or when nothing listens on its local port and the port is not an
//!   explicitly distributed one. The classification is kept for the connection's lifetime.
//! - When a DVIPA leaves the VIPA list its listeners and connections are forgotten silently:
//!   the controller has already dropped them.
//!
//! Tests live in `tracker/tests.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use dvipa_proto::v1::{Conn, Report, SrvStat, VipaList};

use crate::model::{Listener, Proto, Snapshot};

/// Ports a DVIPA distributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    All,
    Listed(BTreeSet<u16>),
}

impl Ports {
    fn contains(&self, port: u16) -> bool {
        match self {
            Ports::All => true,
            Ports::Listed(s) => s.contains(&port),
        }
    }
    fn lists(&self, port: u16) -> bool {
        matches!(self, Ports::Listed(s) if s.contains(&port))
    }
}

/// The DVIPAs this stack is a candidate target for, from the controller's VIPA list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VipaSet {
    pub version: u64,
    pub vipas: BTreeMap<Ipv4Addr, Ports>,
}

/// A VIPA list entry the agent could not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipaEntryError {
    #[error("VIPA entry {index}: address 0 is not a valid DVIPA")]
    ZeroAddress { index: usize },
    #[error("VIPA entry {index} ({dvipa}): port {port} out of range")]
    BadPort {
        index: usize,
        dvipa: Ipv4Addr,
        port: u32,
    },
    #[error("VIPA entry {index} ({dvipa}): not a unicast address")]
    NotUnicast { index: usize, dvipa: Ipv4Addr },
    #[error("VIPA entry {index} ({dvipa}): prefix length {prefix_len} is over 32")]
    PrefixLen {
        index: usize,
        dvipa: Ipv4Addr,
        prefix_len: u32,
    },
    #[error("VIPA {dvipa}: it is an address of this host ({what}); not installed")]
    HostAddress { dvipa: Ipv4Addr, what: String },
    #[error("VIPA {dvipa}: it is the {what} address of the local subnet {subnet}; not installed")]
    SubnetAddress {
        dvipa: Ipv4Addr,
        what: &'static str,
        subnet: String,
    },
    #[error("VIPA {dvipa}: over the agent's limit of {max} VIPAs (--max-vipas); not installed")]
    OverCap { dvipa: Ipv4Addr, max: usize },
}

impl VipaEntryError {
    /// The counter label (`dvipa_agent_vipa_refused_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            VipaEntryError::ZeroAddress { .. } | VipaEntryError::NotUnicast { .. } => "not_unicast",
            VipaEntryError::BadPort { .. } => "bad_port",
            VipaEntryError::PrefixLen { .. } => "prefix_len",
            VipaEntryError::HostAddress { .. } => "host_address",
            VipaEntryError::SubnetAddress { .. } => "subnet_address",
            VipaEntryError::OverCap { .. } => "over_cap",
        }
    }
}

/// An IPv4 address configured on this host (what a VIPA must not be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Interface name (or label).
    pub iface: String,
    /// On the loopback device with the agent's own label (a DVIPA it installed itself).
    pub ours: bool,
    /// On the loopback device (without the agent's label: someone else's address, possibly
    /// a DVIPA configured by hand, which the agent leaves alone and accepts).
    pub on_lo: bool,
}

impl VipaSet {
    /// Removes the VIPAs this host must not install and returns why each went: the underlay
    /// address, any address of a non-loopback interface, the network or broadcast address of
    /// such an interface's subnet (prefix ≤ 30), and the VIPAs beyond `max_vipas` (the highest
    /// addresses go).
    pub fn refuse_local(
        &mut self,
        underlay: Ipv4Addr,
        host: &[HostAddr],
        max_vipas: usize,
    ) -> Vec<VipaEntryError> {
        let mut errors = Vec::new();
        let addrs: Vec<Ipv4Addr> = self.vipas.keys().copied().collect();
        for dvipa in addrs {
            let err = if dvipa == underlay {
                Some(VipaEntryError::HostAddress {
                    dvipa,
                    what: "the agent's --underlay address".into(),
                })
            } else if let Some(h) = host.iter().find(|h| h.addr == dvipa && !h.on_lo) {
                Some(VipaEntryError::HostAddress {
                    dvipa,
                    what: format!("configured on {}", h.iface),
                })
            } else {
                host.iter()
                    .filter(|h| !h.on_lo && h.prefix_len <= 30)
                    .find_map(|h| {
                        let m = u32::MAX.checked_shl(32 - h.prefix_len as u32).unwrap_or(0);
                        let net = u32::from(h.addr) & m;
                        let subnet =
                            format!("{}/{} of {}", Ipv4Addr::from(net), h.prefix_len, h.iface);
                        if u32::from(dvipa) == net {
                            Some(("network", subnet))
                        } else if u32::from(dvipa) == net | !m {
                            Some(("broadcast", subnet))
                        } else {
                            None
                        }
                    })
                    .map(|(what, subnet)| VipaEntryError::SubnetAddress {
                        dvipa,
                        what,
                        subnet,
                    })
            };
            if let Some(e) = err {
                self.vipas.remove(&dvipa);
                errors.push(e);
            }
        }
        while self.vipas.len() > max_vipas {
            let (dvipa, _) = self.vipas.pop_last().expect("non-empty");
            errors.push(VipaEntryError::OverCap {
                dvipa,
                max: max_vipas,
            });
        }
        errors
    }
}

impl VipaSet {
    /// The DVIPAs of `list` for which `stack` is a candidate (listed, or `all_stacks`). Bad
    /// entries are skipped and returned as errors; the rest of the list still applies.
    pub fn from_list(list: &VipaList, stack: &str) -> (VipaSet, Vec<VipaEntryError>) {
        let mut set = VipaSet {
            version: list.version,
            vipas: BTreeMap::new(),
        };
        let mut errors = Vec::new();
        'entries: for (index, v) in list.vipas.iter().enumerate() {
            if !(v.all_stacks || v.candidates.iter().any(|c| c == stack)) {
                continue;
            }
            if v.dvipa == 0 {
                errors.push(VipaEntryError::ZeroAddress { index });
                continue;
            }
            let dvipa = Ipv4Addr::from(v.dvipa);
            if dvipa.is_multicast()
                || dvipa.is_broadcast()
                || dvipa.is_loopback()
                || dvipa.octets()[0] == 0
                || dvipa.octets()[0] >= 240
            {
                errors.push(VipaEntryError::NotUnicast { index, dvipa });
                continue;
            }
            if v.prefix_len > 32 {
                errors.push(VipaEntryError::PrefixLen {
                    index,
                    dvipa,
                    prefix_len: v.prefix_len,
                });
                continue;
            }
            let ports = if v.ports.is_empty() {
                Ports::All
            } else {
                let mut s = BTreeSet::new();
                for &p in &v.ports {
                    match u16::try_from(p) {
                        Ok(p) if p != 0 => {
                            s.insert(p);
                        }
                        _ => {
                            errors.push(VipaEntryError::BadPort {
                                index,
                                dvipa,
                                port: p,
                            });
                            continue 'entries;
                        }
                    }
                }
                Ports::Listed(s)
            };
            // The same DVIPA twice: merge the port lists (All wins).
            let merged = match (set.vipas.remove(&dvipa), ports) {
                (None, p) => p,
                (Some(Ports::All), _) | (_, Ports::All) => Ports::All,
                (Some(Ports::Listed(mut a)), Ports::Listed(b)) => {
                    a.extend(b);
                    Ports::Listed(a)
                }
            };
            set.vipas.insert(dvipa, merged);
        }
        (set, errors)
    }

    pub fn addresses(&self) -> BTreeSet<Ipv4Addr> {
        self.vipas.keys().copied().collect()
    }
}

/// Key of a SRVSTAT: who listens where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SrvKey {
    pub dvipa: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
}

/// The reported attributes of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SrvVal {
    pub weight: u32,
    pub draining: bool,
}

/// Key of a NEWCONN/TERMCONN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey {
    pub dvipa: Ipv4Addr,
    pub dvipa_port: u16,
    pub client: Ipv4Addr,
    pub client_port: u16,
}

/// A drain order: stop new connections to `port` (on one DVIPA, or all when `dvipa` is None).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Drain {
    pub dvipa: Option<Ipv4Addr>,
    pub port: u16,
}

/// Changes to report, not yet split into batches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    pub srvstat: Vec<SrvStat>,
    pub newconn: Vec<Conn>,
    pub termconn: Vec<Conn>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.srvstat.is_empty() && self.newconn.is_empty() && self.termconn.is_empty()
    }

    pub fn len(&self) -> usize {
        self.srvstat.len() + self.newconn.len() + self.termconn.len()
    }

    /// Splits into Reports of at most `max_items` items each (SRVSTATs first, then TERMCONNs,
    /// then NEWCONNs). An empty delta gives no reports.
    pub fn into_reports(self, max_items: usize) -> Vec<Report> {
        let max = max_items.max(1);
        let mut out: Vec<Report> = Vec::new();
        let mut cur = Report::default();
        let mut n = 0usize;
        let flush = |cur: &mut Report, n: &mut usize, out: &mut Vec<Report>| {
            if *n > 0 {
                out.push(std::mem::take(cur));
                *n = 0;
            }
        };
        for s in self.srvstat {
            cur.srvstat.push(s);
            n += 1;
            if n == max {
                flush(&mut cur, &mut n, &mut out);
            }
        }
        for c in self.termconn {
            cur.termconn.push(c);
            n += 1;
            if n == max {
                flush(&mut cur, &mut n, &mut out);
            }
        }
        for c in self.newconn {
            cur.newconn.push(c);
            n += 1;
            if n == max {
                flush(&mut cur, &mut n, &mut out);
            }
        }
        flush(&mut cur, &mut n, &mut out);
        out
    }
}

fn srvstat(k: &SrvKey, v: &SrvVal, listening: bool) -> SrvStat {
    SrvStat {
        dvipa: u32::from(k.dvipa),
        port: u32::from(k.port),
        protocol: k.proto.number(),
        listening,
        weight: v.weight,
        draining: v.draining,
    }
}

fn conn(k: &ConnKey, server_originated: bool) -> Conn {
    Conn {
        client_addr: u32::from(k.client),
        client_port: u32::from(k.client_port),
        dvipa: u32::from(k.dvipa),
        dvipa_port: u32::from(k.dvipa_port),
        protocol: Proto::Tcp.number(),
        server_originated,
    }
}

/// The agent's view: the VIPA set, local settings, and what has been reported.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    vipas: VipaSet,
    weight: u32,
    drains: BTreeSet<Drain>,
    reported_srv: BTreeMap<SrvKey, SrvVal>,
    reported_conns: BTreeMap<ConnKey, bool>,
    last: Snapshot,
}

impl Tracker {
    pub fn new(weight: u32) -> Self {
        Tracker {
            weight,
            ..Default::default()
        }
    }

    pub fn vipas(&self) -> &VipaSet {
        &self.vipas
    }

    pub fn drains(&self) -> &BTreeSet<Drain> {
        &self.drains
    }

    /// Listeners reported as up, with their attributes.
    pub fn listeners(&self) -> &BTreeMap<SrvKey, SrvVal> {
        &self.reported_srv
    }

    /// Connections reported, with their server-originated flag.
    pub fn connections(&self) -> &BTreeMap<ConnKey, bool> {
        &self.reported_conns
    }

    /// Installs a new VIPA set. State of DVIPAs that left the set is dropped without reports;
    /// the returned delta covers listeners and connections that now count (new DVIPAs, new
    /// ports) or stopped counting (ports no longer distributed), using the last snapshot.
    pub fn set_vipas(&mut self, vipas: VipaSet) -> Delta {
        self.reported_srv
            .retain(|k, _| vipas.vipas.contains_key(&k.dvipa));
        self.reported_conns
            .retain(|k, _| vipas.vipas.contains_key(&k.dvipa));
        self.vipas = vipas;
        let last = std::mem::take(&mut self.last);
        self.observe(last)
    }

    /// Adds (true) or removes (false) a drain order; returns the resulting SRVSTAT changes.
    pub fn set_drain(&mut self, d: Drain, on: bool) -> Delta {
        if on {
            self.drains.insert(d);
        } else {
            self.drains.remove(&d);
        }
        let last = std::mem::take(&mut self.last);
        self.observe(last)
    }

    fn draining(&self, dvipa: Ipv4Addr, port: u16) -> bool {
        self.drains
            .iter()
            .any(|d| d.port == port && d.dvipa.is_none_or(|a| a == dvipa))
    }

    fn listener_keys(&self, l: &Listener) -> Vec<SrvKey> {
        let counts = |ports: &Ports| match l.proto {
            Proto::Tcp => ports.contains(l.port),
            // A UDP socket bound to the DVIPA itself is deliberate; a wildcard one only counts
            // on explicitly distributed ports.
            Proto::Udp => {
                if l.addr.is_unspecified() {
                    ports.lists(l.port)
                } else {
                    ports.contains(l.port)
                }
            }
        };
        if l.addr.is_unspecified() {
            self.vipas
                .vipas
                .iter()
                .filter(|(_, p)| counts(p))
                .map(|(&dvipa, _)| SrvKey {
                    dvipa,
                    port: l.port,
                    proto: l.proto,
                })
                .collect()
        } else {
            match self.vipas.vipas.get(&l.addr) {
                Some(p) if counts(p) => vec![SrvKey {
                    dvipa: l.addr,
                    port: l.port,
                    proto: l.proto,
                }],
                _ => Vec::new(),
            }
        }
    }

    /// Compares `snap` with what was reported and returns the changes (and records them as
    /// reported).
    pub fn observe(&mut self, snap: Snapshot) -> Delta {
        let mut want_srv: BTreeMap<SrvKey, SrvVal> = BTreeMap::new();
        for l in &snap.listeners {
            for k in self.listener_keys(l) {
                let v = SrvVal {
                    weight: self.weight,
                    draining: self.draining(k.dvipa, k.port),
                };
                want_srv.insert(k, v);
            }
        }
        // Ports with a TCP listener per DVIPA, for classifying connections (a listener that is
        // not distributed still makes its port an "inbound" port).
        let tcp_listening = |dvipa: Ipv4Addr, port: u16| {
            snap.listeners.iter().any(|l| {
                l.proto == Proto::Tcp
                    && l.port == port
                    && (l.addr == dvipa || l.addr.is_unspecified())
            })
        };
        let mut want_conns: BTreeMap<ConnKey, bool> = BTreeMap::new();
        for c in &snap.connections {
            let Some(ports) = self.vipas.vipas.get(&c.local) else {
                continue;
            };
            let k = ConnKey {
                dvipa: c.local,
                dvipa_port: c.local_port,
                client: c.remote,
                client_port: c.remote_port,
            };
            let so = match self.reported_conns.get(&k) {
                Some(&so) => so,
                None => {
                    c.syn_sent
                        || !(ports.lists(c.local_port) || tcp_listening(c.local, c.local_port))
                }
            };
            // A connection seen twice in one snapshot (SYN_SENT and ESTABLISHED sockets never
            // share a key in practice) keeps the first classification.
            want_conns.entry(k).or_insert(so);
        }

        let mut d = Delta::default();
        for (k, v) in &self.reported_srv {
            if !want_srv.contains_key(k) {
                d.srvstat.push(srvstat(k, v, false));
            }
        }
        for (k, v) in &want_srv {
            if self.reported_srv.get(k) != Some(v) {
                d.srvstat.push(srvstat(k, v, true));
            }
        }
        for (k, &so) in &self.reported_conns {
            if !want_conns.contains_key(k) {
                d.termconn.push(conn(k, so));
            }
        }
        for (k, &so) in &want_conns {
            if !self.reported_conns.contains_key(k) {
                d.newconn.push(conn(k, so));
            }
        }
        self.reported_srv = want_srv;
        self.reported_conns = want_conns;
        self.last = snap;
        d
    }

    /// A full re-report of the reported state: every batch has `full_sync`, the last one
    /// `sync_done`. Always at least one Report (an empty state still ends a sync).
    pub fn full_reports(&self, max_items: usize) -> Vec<Report> {
        let d = Delta {
            srvstat: self
                .reported_srv
                .iter()
                .map(|(k, v)| srvstat(k, v, true))
                .collect(),
            newconn: self
                .reported_conns
                .iter()
                .map(|(k, &so)| conn(k, so))
                .collect(),
            termconn: Vec::new(),
        };
        let mut reports = d.into_reports(max_items);
        if reports.is_empty() {
            reports.push(Report::default());
        }
        for r in &mut reports {
            r.full_sync = true;
        }
        if let Some(r) = reports.last_mut() {
            r.sync_done = true;
        }
        reports
    }
}

#[cfg(test)]
mod tests;

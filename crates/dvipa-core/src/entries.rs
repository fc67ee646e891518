//! Typed switch table entries (the pipeline contract's five tables), independent of any
//! P4Runtime encoding, and the reconciler: desired vs actual → ordered minimal updates.
//!
//! Update order (phases, each written and confirmed before the next is sent): a live
//! connection must never be without an entry, and nothing may reference a target entry that
//! is not there yet:
//!
//! | phase | updates |
//! |---|---|
//! | 0 | `target`, `ipv4_route` insert/modify |
//! | 1 | `crt` insert/modify (pin connections before their slots move) |
//! | 2 | `dpt` insert/modify |
//! | 3 | `dvipa` insert/modify (traffic enters only when everything behind it exists) |
//! | 4 | `dvipa` delete |
//! | 5 | `dpt` delete |
//! | 6 | `crt` delete |
//! | 7 | `target`, `ipv4_route` delete |

use crate::config::{Mac, Prefix};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// Transport protocol number.
pub type Proto = u8;
/// TCP.
pub const TCP: Proto = 6;
/// UDP.
pub const UDP: Proto = 17;

/// A connection's 5-tuple as the switch sees inbound packets (client → DVIPA).
/// Packed to 13 bytes: the CRT holds up to 65,536 of them per switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C, packed)]
pub struct ConnKey {
    /// Client address.
    pub src: u32,
    /// DVIPA.
    pub dst: u32,
    /// Client port.
    pub sport: u16,
    /// DVIPA port.
    pub dport: u16,
    /// 6 or 17.
    pub proto: Proto,
}

impl ConnKey {
    /// Build from addresses.
    pub fn new(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, proto: Proto) -> Self {
        ConnKey {
            src: src.into(),
            dst: dst.into(),
            sport,
            dport,
            proto,
        }
    }
    /// DVIPA.
    pub fn dvipa(&self) -> Ipv4Addr {
        self.dst.into()
    }
    /// Client address.
    pub fn client(&self) -> Ipv4Addr {
        self.src.into()
    }
}

impl fmt::Display for ConnKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.proto {
            TCP => "tcp",
            UDP => "udp",
            _ => "?",
        };
        write!(
            f,
            "{p} {}:{} -> {}:{}",
            self.client(),
            { self.sport },
            self.dvipa(),
            { self.dport }
        )
    }
}

/// Match key of one entry (which table and which row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `IngressImpl.dvipa`: dst, protocol, port (None = ternary mask 0, all ports).
    Dvipa {
        /// DVIPA.
        addr: Ipv4Addr,
        /// Protocol.
        proto: Proto,
        /// Port or all.
        port: Option<u16>,
    },
    /// `IngressImpl.dpt`.
    Dpt {
        /// Service id.
        service: u16,
        /// Slot 0–255.
        slot: u16,
    },
    /// `IngressImpl.target`.
    Target {
        /// Target id.
        target: u16,
    },
    /// `IngressImpl.ipv4_route`.
    Route {
        /// Prefix.
        prefix: Prefix,
    },
    /// `IngressImpl.crt`.
    Crt(ConnKey),
}

// The P4 names of these tables are the contract's (`dvipa_contract::table_name`), not the
// core's.
impl Key {
    /// Ternary priority for `dvipa` entries: a specific port beats the all-ports entry.
    pub fn priority(&self) -> i32 {
        match self {
            Key::Dvipa { port: Some(_), .. } => 20,
            Key::Dvipa { port: None, .. } => 10,
            _ => 0,
        }
    }
}

/// Action and parameters of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Value {
    /// `IngressImpl.distribute(service_id, method)`; method 0 = hash slot, 1 = round robin.
    Distribute {
        /// Service id.
        service: u16,
        /// Slot selection.
        method: u8,
    },
    /// `IngressImpl.to_target(target_id)` (dpt and crt).
    ToTarget {
        /// Target id.
        target: u16,
    },
    /// `IngressImpl.forward_l2(dmac, port)`.
    ForwardL2 {
        /// Stack MAC.
        dmac: Mac,
        /// Egress port.
        port: u16,
    },
    /// `IngressImpl.encap_ipip(outer_src, outer_dst)`.
    EncapIpip {
        /// Tunnel source (the switch).
        outer_src: Ipv4Addr,
        /// Tunnel destination (the stack's underlay address).
        outer_dst: Ipv4Addr,
    },
    /// `IngressImpl.set_nexthop(dmac, smac, port)`.
    SetNexthop {
        /// Next hop MAC.
        dmac: Mac,
        /// Own MAC.
        smac: Mac,
        /// Egress port.
        port: u16,
    },
}

impl Value {
    /// The target an entry sends to (dpt/crt).
    pub fn target(&self) -> Option<u16> {
        match self {
            Value::ToTarget { target } => Some(*target),
            _ => None,
        }
    }
}

/// Insert / modify / delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateKind {
    /// New entry.
    Insert,
    /// Change the action of an existing entry.
    Modify,
    /// Remove.
    Delete,
}

/// One table update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    /// Insert / modify / delete.
    pub kind: UpdateKind,
    /// Which entry.
    pub key: Key,
    /// The action (for delete: the value being removed).
    pub value: Value,
}

/// A switch's tables as a map.
pub type Tables = BTreeMap<Key, Value>;

/// The phase (see module docs) an update belongs to.
pub fn phase(u: &Update) -> usize {
    let del = u.kind == UpdateKind::Delete;
    match (u.key, del) {
        (Key::Target { .. } | Key::Route { .. }, false) => 0,
        (Key::Crt(_), false) => 1,
        (Key::Dpt { .. }, false) => 2,
        (Key::Dvipa { .. }, false) => 3,
        (Key::Dvipa { .. }, true) => 4,
        (Key::Dpt { .. }, true) => 5,
        (Key::Crt(_), true) => 6,
        (Key::Target { .. } | Key::Route { .. }, true) => 7,
    }
}

/// Number of phases.
pub const PHASES: usize = 8;

/// The update (if any) that turns `actual` into `desired` for one key.
pub fn diff_one(key: Key, desired: Option<&Value>, actual: Option<&Value>) -> Option<Update> {
    match (desired, actual) {
        (Some(d), None) => Some(Update {
            kind: UpdateKind::Insert,
            key,
            value: *d,
        }),
        (Some(d), Some(a)) if d != a => Some(Update {
            kind: UpdateKind::Modify,
            key,
            value: *d,
        }),
        (None, Some(a)) => Some(Update {
            kind: UpdateKind::Delete,
            key,
            value: *a,
        }),
        _ => None,
    }
}

/// Desired vs actual → the minimal updates, grouped by phase (index = phase). Applying the
/// phases in order to `actual` gives `desired`, and no intermediate state has a `crt`/`dpt`
/// entry naming a target entry that is absent (if none did before).
pub fn reconcile(desired: &Tables, actual: &Tables) -> Vec<Vec<Update>> {
    let mut phases = vec![Vec::new(); PHASES];
    let mut a = actual.iter().peekable();
    let mut d = desired.iter().peekable();
    loop {
        let next = match (d.peek(), a.peek()) {
            (None, None) => break,
            (Some((dk, _)), None) => **dk,
            (None, Some((ak, _))) => **ak,
            (Some((dk, _)), Some((ak, _))) => (**dk).min(**ak),
        };
        let dv = d.next_if(|(k, _)| **k == next).map(|x| x.1);
        let av = a.next_if(|(k, _)| **k == next).map(|x| x.1);
        if let Some(u) = diff_one(next, dv, av) {
            phases[phase(&u)].push(u);
        }
    }
    phases
}

/// Apply updates to a table view (as a switch would, ignoring errors).
pub fn apply(tables: &mut Tables, updates: &[Update]) {
    for u in updates {
        match u.kind {
            UpdateKind::Insert | UpdateKind::Modify => {
                tables.insert(u.key, u.value);
            }
            UpdateKind::Delete => {
                tables.remove(&u.key);
            }
        }
    }
}

/// Entries whose action names a target entry that `tables` does not hold.
pub fn dangling(tables: &Tables) -> Vec<Key> {
    tables
        .iter()
        .filter(|(_, v)| {
            v.target()
                .is_some_and(|t| !tables.contains_key(&Key::Target { target: t }))
        })
        .map(|(k, _)| *k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = Key> {
        prop_oneof![
            (0u8..3, proptest::option::of(1u16..4)).prop_map(|(a, port)| Key::Dvipa {
                addr: Ipv4Addr::new(10, 0, 0, a),
                proto: TCP,
                port
            }),
            (0u16..3, 0u16..8).prop_map(|(service, slot)| Key::Dpt { service, slot }),
            (0u32..6, 0u16..3).prop_map(|(src, sport)| Key::Crt(ConnKey {
                src,
                dst: 1,
                sport,
                dport: 80,
                proto: TCP
            })),
        ]
    }

    /// A consistent table: every dpt/crt target exists.
    fn tables() -> impl Strategy<Value = Tables> {
        (
            proptest::collection::btree_set(1u16..6, 1..4),
            proptest::collection::vec((key(), 0usize..10), 0..30),
        )
            .prop_map(|(targets, rows)| {
                let ts: Vec<u16> = targets.iter().copied().collect();
                let mut t = Tables::new();
                for id in &ts {
                    t.insert(
                        Key::Target { target: *id },
                        Value::ForwardL2 {
                            dmac: Mac([2, 0, 0, 0, 0, *id as u8]),
                            port: *id,
                        },
                    );
                }
                for (k, i) in rows {
                    let v = match k {
                        Key::Dvipa { .. } => Value::Distribute {
                            service: i as u16 % 3,
                            method: 0,
                        },
                        _ => Value::ToTarget {
                            target: ts[i % ts.len()],
                        },
                    };
                    t.insert(k, v);
                }
                t
            })
    }

    proptest! {
        #[test]
        fn reconcile_then_apply_gives_desired(desired in tables(), actual in tables()) {
            let phases = reconcile(&desired, &actual);
            let mut cur = actual.clone();
            for p in &phases {
                apply(&mut cur, p);
                // After every phase: no entry names a missing target.
                prop_assert!(dangling(&cur).is_empty(), "dangling after a phase: {:?}", dangling(&cur));
            }
            prop_assert_eq!(&cur, &desired);
            // Minimal: one update per differing key and none for equal keys.
            let n: usize = phases.iter().map(|p| p.len()).sum();
            let differing = desired.keys().chain(actual.keys()).collect::<std::collections::BTreeSet<_>>()
                .into_iter().filter(|k| desired.get(k) != actual.get(k)).count();
            prop_assert_eq!(n, differing);
            // A connection that stays desired is never deleted.
            for p in &phases {
                for u in p {
                    if u.kind == UpdateKind::Delete {
                        prop_assert!(!desired.contains_key(&u.key));
                    }
                }
            }
        }
    }
}

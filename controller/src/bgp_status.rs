//! The BGP view shared with the admin API and metrics ([`BgpStatus`]), kept by the advertiser
//! ([`crate::bgp`]) and held by the shell's [`Shared`](crate::shared::Shared). A leaf module
//! (no `crate::shared`), so the shell's state and the advertiser do not import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::stats::Stats;

/// A DVIPA prefix.
pub type Prefix = (Ipv4Addr, u8);

/// One BGP peer of the speaker as GoBGP reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Neighbor address.
    pub address: String,
    /// Its AS.
    pub asn: u32,
    /// Session state (`ESTABLISHED`, `ACTIVE`, ...).
    pub state: String,
    /// Session flaps GoBGP counted.
    pub flops: u32,
}

/// What BGP says, refreshed by every reconcile.
#[derive(Debug, Clone, Default)]
pub struct BgpView {
    /// gobgpd answered the last reconcile.
    pub reachable: bool,
    /// Last error talking to gobgpd.
    pub last_error: Option<String>,
    /// Peers.
    pub peers: Vec<PeerView>,
    /// DVIPA → switch → MED of the local path in GoBGP's RIB (its view of the announcements).
    pub rib: BTreeMap<Prefix, BTreeMap<String, u32>>,
    /// DVIPA → next hops GoBGP has sent to established peers (ADJ-RIB-OUT).
    pub sent: BTreeMap<Prefix, BTreeSet<Ipv4Addr>>,
}

/// The BGP state shared with the admin API and metrics.
#[derive(Debug, Default)]
pub struct BgpStatus {
    pub(crate) view: parking_lot::Mutex<BgpView>,
    /// Switch → the next hop of its paths (from the advertiser's plan).
    pub(crate) next_hops: parking_lot::Mutex<BTreeMap<String, Ipv4Addr>>,
    pub(crate) counters: Stats,
}

impl BgpStatus {
    /// The last view.
    pub fn view(&self) -> BgpView {
        self.view.lock().clone()
    }
    /// `ADVERTISED` of `switch` for `prefix` from BGP's view: `SENT` (GoBGP sent this switch's
    /// path, MED 0, to an established peer), `SENT med=N` (a backup's path sent too: a peer with
    /// ADD-PATH receives every path), `RIB med=N` (in GoBGP's RIB, not sent: a backup without
    /// ADD-PATH, or no session), `-` (not in GoBGP's RIB).
    pub fn state_of(&self, prefix: Prefix, switch: &str) -> String {
        let v = self.view.lock();
        let nh = self.next_hops.lock().get(switch).copied();
        let sent = nh.is_some_and(|nh| v.sent.get(&prefix).is_some_and(|s| s.contains(&nh)));
        match (v.rib.get(&prefix).and_then(|m| m.get(switch)), sent) {
            (Some(0), true) => "SENT".into(),
            (Some(med), true) => format!("SENT med={med}"),
            (None, true) => "SENT (not in RIB?)".into(),
            (Some(med), false) => format!("RIB med={med}"),
            (None, false) => "-".into(),
        }
    }
    /// Counters (`bgp` layer of `dvipa counters`): paths added/deleted, reconciles, repairs,
    /// errors, and `peer_<address>_established` (0/1).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut m = self.counters.snapshot();
        let v = self.view.lock();
        m.insert("gobgp_reachable".into(), u64::from(v.reachable));
        for p in &v.peers {
            m.insert(
                format!("peer_{}_established", p.address),
                u64::from(p.state == "ESTABLISHED"),
            );
            m.insert(format!("peer_{}_flops", p.address), u64::from(p.flops));
        }
        m
    }
}

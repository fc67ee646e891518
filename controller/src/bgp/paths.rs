//! Pure part of the BGP advertiser: which paths a DVIPA should have in GoBGP's RIB (the intent),
//! how one is encoded for GoBGP's API, and how GoBGP's paths are read back.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use gobgp_api::apipb::{self, Family, Path, family};
use gobgp_api::{any, unpack};

pub use crate::bgp_status::Prefix;

/// One path dvipa puts in GoBGP's RIB: the DVIPA via one switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// NEXT_HOP: the switch's address toward the router.
    pub next_hop: Ipv4Addr,
    /// MULTI_EXIT_DISC: 0 for the routing switch, `med_step × place` for a backup.
    pub med: u32,
}

/// How a DVIPA is announced, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Switch → (path identifier, next hop). Identifiers are 1-based, in `[[switch]]` order, so
    /// each switch's path of a prefix is a distinct path of GoBGP's local RIB.
    pub switches: BTreeMap<String, (u32, Ipv4Addr)>,
    /// DVIPA → its VIPABACKUP switches, highest rank first.
    pub backups: BTreeMap<Prefix, Vec<String>>,
    /// Pre-announce backups.
    pub pre_announce: bool,
    /// MED per backup place.
    pub med_step: u32,
}

impl Plan {
    /// The paths `prefix` should have while `primary` routes it (none routes it: no paths).
    /// The primary gets MED 0; with `pre_announce`, each other backup gets
    /// `med_step × (place in the backup list, 1-based)`.
    pub fn desired(&self, prefix: Prefix, primary: Option<&str>) -> BTreeMap<String, Want> {
        let mut out = BTreeMap::new();
        let Some(p) = primary else { return out };
        if let Some(&(_, nh)) = self.switches.get(p) {
            out.insert(
                p.to_string(),
                Want {
                    next_hop: nh,
                    med: 0,
                },
            );
        }
        if self.pre_announce {
            for (i, b) in self.backups.get(&prefix).into_iter().flatten().enumerate() {
                if b == p {
                    continue;
                }
                if let Some(&(_, nh)) = self.switches.get(b) {
                    let med = self.med_step.saturating_mul(i as u32 + 1).max(1);
                    out.entry(b.clone()).or_insert(Want { next_hop: nh, med });
                }
            }
        }
        out
    }

    /// The switch whose path carries `identifier`.
    pub fn switch_of_id(&self, identifier: u32) -> Option<&str> {
        self.switches
            .iter()
            .find(|(_, (id, _))| *id == identifier)
            .map(|(n, _)| n.as_str())
    }

    /// The switch announced with next hop `nh`.
    pub fn switch_of_next_hop(&self, nh: Ipv4Addr) -> Option<&str> {
        self.switches
            .iter()
            .find(|(_, (_, h))| *h == nh)
            .map(|(n, _)| n.as_str())
    }
}

/// IPv4 unicast.
pub fn ipv4_unicast() -> Family {
    Family {
        afi: family::Afi::Ip as i32,
        safi: family::Safi::Unicast as i32,
    }
}

/// The GoBGP path of `prefix` via one switch: ORIGIN IGP, NEXT_HOP, MED, path identifier `id`.
pub fn path(prefix: Prefix, id: u32, w: Want) -> Path {
    Path {
        nlri: Some(any(
            "IPAddressPrefix",
            &apipb::IpAddressPrefix {
                prefix_len: u32::from(prefix.1),
                prefix: prefix.0.to_string(),
            },
        )),
        pattrs: vec![
            any("OriginAttribute", &apipb::OriginAttribute { origin: 0 }),
            any(
                "NextHopAttribute",
                &apipb::NextHopAttribute {
                    next_hop: w.next_hop.to_string(),
                },
            ),
            any(
                "MultiExitDiscAttribute",
                &apipb::MultiExitDiscAttribute { med: w.med },
            ),
        ],
        family: Some(ipv4_unicast()),
        identifier: id,
        ..Default::default()
    }
}

/// What a GoBGP path says, as far as dvipa cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Prefix of the NLRI.
    pub prefix: Prefix,
    /// NEXT_HOP.
    pub next_hop: Option<Ipv4Addr>,
    /// MED (absent = none sent).
    pub med: Option<u32>,
    /// GoBGP's best path of the prefix.
    pub best: bool,
    /// Path identifier.
    pub identifier: u32,
    /// Originated locally (through the API), not learnt from a peer.
    pub local: bool,
}

/// Reads a GoBGP path; `None` if its NLRI is not an IPv4 prefix.
pub fn seen(p: &Path) -> Option<Seen> {
    let n: apipb::IpAddressPrefix = unpack(p.nlri.as_ref()?, "IPAddressPrefix")?;
    let addr: Ipv4Addr = n.prefix.parse().ok()?;
    let len = u8::try_from(n.prefix_len).ok().filter(|l| *l <= 32)?;
    let mut s = Seen {
        prefix: (addr, len),
        next_hop: None,
        med: None,
        best: p.best,
        identifier: p.identifier,
        // GoBGP reports no neighbor (empty, or the text of a nil address) for local paths.
        local: p.neighbor_ip.is_empty()
            || p.neighbor_ip == "<nil>"
            || p.neighbor_ip
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_unspecified()),
    };
    for a in &p.pattrs {
        if let Some(h) = unpack::<apipb::NextHopAttribute>(a, "NextHopAttribute") {
            s.next_hop = h.next_hop.parse().ok();
        } else if let Some(m) = unpack::<apipb::MultiExitDiscAttribute>(a, "MultiExitDiscAttribute")
        {
            s.med = Some(m.med);
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(pre: bool) -> Plan {
        let ip = |d| Ipv4Addr::new(10, 0, d, 2);
        Plan {
            switches: [("A", 1, ip(1)), ("B", 2, ip(2)), ("C", 3, ip(3))]
                .into_iter()
                .map(|(n, id, h)| (n.to_string(), (id, h)))
                .collect(),
            backups: [(
                (Ipv4Addr::new(10, 9, 9, 9), 32),
                vec!["B".to_string(), "C".to_string()],
            )]
            .into_iter()
            .collect(),
            pre_announce: pre,
            med_step: 100,
        }
    }
    const P: Prefix = (Ipv4Addr::new(10, 9, 9, 9), 32);

    #[test]
    fn the_primary_gets_med_0_and_backups_a_worse_med_by_rank() {
        let p = plan(true);
        let d = p.desired(P, Some("A"));
        let meds: Vec<_> = d.iter().map(|(n, w)| (n.as_str(), w.med)).collect();
        assert_eq!(meds, [("A", 0), ("B", 100), ("C", 200)]);
        // B took over: B primary, C still backup at its place, A (the failed one) not announced.
        let d = p.desired(P, Some("B"));
        let meds: Vec<_> = d.iter().map(|(n, w)| (n.as_str(), w.med)).collect();
        assert_eq!(meds, [("B", 0), ("C", 200)]);
        assert_eq!(d["B"].next_hop, Ipv4Addr::new(10, 0, 2, 2));
        assert!(p.desired(P, None).is_empty());
        let d = plan(false).desired(P, Some("A"));
        assert_eq!(d.keys().collect::<Vec<_>>(), ["A"]);
    }

    #[test]
    fn a_path_reads_back_as_it_was_written() {
        let w = Want {
            next_hop: Ipv4Addr::new(10, 0, 2, 2),
            med: 100,
        };
        let p = path(P, 2, w);
        let s = seen(&p).unwrap();
        assert_eq!(
            s,
            Seen {
                prefix: P,
                next_hop: Some(w.next_hop),
                med: Some(100),
                best: false,
                identifier: 2,
                local: true,
            }
        );
        let mut learnt = p.clone();
        learnt.neighbor_ip = "10.77.1.1".into();
        assert!(!seen(&learnt).unwrap().local);
        let mut bad = p;
        bad.nlri = Some(any("NextHopAttribute", &apipb::NextHopAttribute::default()));
        assert!(seen(&bad).is_none());
    }
}

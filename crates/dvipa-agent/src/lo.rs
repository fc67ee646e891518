//! Loopback management: the DVIPAs of this stack as non-advertised /32 addresses on `lo`, through
//! rtnetlink (no `ip` commands), and the ARP sysctls that keep the server from answering ARP for
//! them.
//!
//! Ownership: the agent labels every address it adds `lo:dvipa` ([`LABEL`]). On each VIPA list it
//! adds missing DVIPAs and removes only `lo:dvipa` addresses that are no longer listed. The label
//! lives in the kernel, so ownership survives an agent restart; addresses configured by anyone
//! else (without the label) are never removed, and a DVIPA already present without the label is
//! left as it is.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

/// The label of addresses owned by the agent.
pub const LABEL: &str = "lo:dvipa";

/// Failure of a loopback or sysctl operation.
#[derive(Debug, thiserror::Error)]
pub enum LoError {
    #[error("rtnetlink connection: {0}")]
    Connection(std::io::Error),
    #[error("loopback device `lo` not found")]
    NoLoopback,
    #[error("rtnetlink {op}: {source}")]
    Netlink {
        op: String,
        source: rtnetlink::Error,
    },
    #[error("writing {path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
}

/// One IPv4 address on `lo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoAddr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub label: String,
}

/// What a [`Loopback::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoChange {
    pub added: Vec<Ipv4Addr>,
    pub removed: Vec<Ipv4Addr>,
    /// Wanted DVIPAs that were already configured by someone else (left alone).
    pub foreign: Vec<Ipv4Addr>,
}

/// An rtnetlink handle bound to the loopback device of the namespace it was created in.
pub struct Loopback {
    handle: rtnetlink::Handle,
    index: u32,
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LoError {
    let op = op.into();
    move |source| LoError::Netlink { op, source }
}

impl Loopback {
    /// Opens an rtnetlink connection (in the calling thread's network namespace; the connection
    /// task is spawned on the current tokio runtime) and looks up `lo`.
    pub async fn new() -> Result<Self, LoError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LoError::Connection)?;
        tokio::spawn(conn);
        let mut links = handle.link().get().match_name("lo").execute();
        let link = links
            .try_next()
            .await
            .map_err(|e| match e {
                rtnetlink::Error::NetlinkError(ref m) if m.raw_code() == -libc::ENODEV => {
                    LoError::NoLoopback
                }
                e => LoError::Netlink {
                    op: "get link lo".into(),
                    source: e,
                },
            })?
            .ok_or(LoError::NoLoopback)?;
        Ok(Loopback {
            handle,
            index: link.header.index,
        })
    }

    /// The IPv4 addresses on `lo`.
    pub async fn addresses(&self) -> Result<Vec<LoAddr>, LoError> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl("get addresses"))? {
            if m.header.family != AddressFamily::Inet || m.header.index != self.index {
                continue;
            }
            let mut addr = None;
            let mut label = String::new();
            for a in &m.attributes {
                match a {
                    AddressAttribute::Local(IpAddr::V4(v)) => addr = Some(*v),
                    AddressAttribute::Address(IpAddr::V4(v)) if addr.is_none() => addr = Some(*v),
                    AddressAttribute::Label(l) => label = l.clone(),
                    _ => {}
                }
            }
            if let Some(addr) = addr {
                out.push(LoAddr {
                    addr,
                    prefix_len: m.header.prefix_len,
                    label,
                });
            }
        }
        Ok(out)
    }

    /// Every IPv4 address of the namespace (all interfaces), for refusing VIPAs that are
    /// the host's own addresses or its subnets' network/broadcast addresses.
    pub async fn host_addresses(&self) -> Result<Vec<crate::tracker::HostAddr>, LoError> {
        let mut links = std::collections::BTreeMap::new();
        let mut ls = self.handle.link().get().execute();
        while let Some(l) = ls.try_next().await.map_err(nl("get links"))? {
            let name = l.attributes.iter().find_map(|a| match a {
                netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            links.insert(l.header.index, name.unwrap_or_default());
        }
        let mut s = self.handle.address().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl("get addresses"))? {
            if m.header.family != AddressFamily::Inet {
                continue;
            }
            let mut addr = None;
            let mut label = String::new();
            for a in &m.attributes {
                match a {
                    AddressAttribute::Local(IpAddr::V4(v)) => addr = Some(*v),
                    AddressAttribute::Address(IpAddr::V4(v)) if addr.is_none() => addr = Some(*v),
                    AddressAttribute::Label(l) => label = l.clone(),
                    _ => {}
                }
            }
            if let Some(addr) = addr {
                let on_lo = m.header.index == self.index;
                out.push(crate::tracker::HostAddr {
                    addr,
                    prefix_len: m.header.prefix_len,
                    iface: links
                        .get(&m.header.index)
                        .cloned()
                        .unwrap_or_else(|| format!("if{}", m.header.index)),
                    ours: on_lo && label == LABEL,
                    on_lo,
                });
            }
        }
        Ok(out)
    }

    /// Makes the agent-owned addresses on `lo` equal to `wanted`.
    pub async fn sync(&self, wanted: &BTreeSet<Ipv4Addr>) -> Result<LoChange, LoError> {
        let present = self.addresses().await?;
        let mut change = LoChange::default();
        for a in &present {
            if a.label == LABEL && !wanted.contains(&a.addr) {
                let mut msg = AddressMessage::default();
                msg.header.family = AddressFamily::Inet;
                msg.header.prefix_len = a.prefix_len;
                msg.header.index = self.index;
                msg.attributes
                    .push(AddressAttribute::Local(IpAddr::V4(a.addr)));
                msg.attributes
                    .push(AddressAttribute::Address(IpAddr::V4(a.addr)));
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl(format!("del {}/{} dev lo", a.addr, a.prefix_len)))?;
                change.removed.push(a.addr);
            }
        }
        for &w in wanted {
            match present.iter().find(|a| a.addr == w) {
                Some(a) if a.label == LABEL => {}
                Some(_) => change.foreign.push(w),
                None => {
                    let mut req = self.handle.address().add(self.index, IpAddr::V4(w), 32);
                    req.message_mut()
                        .attributes
                        .push(AddressAttribute::Label(LABEL.into()));
                    req.execute()
                        .await
                        .map_err(nl(format!("add {w}/32 dev lo label {LABEL}")))?;
                    change.added.push(w);
                }
            }
        }
        Ok(change)
    }
}

/// The ARP sysctls for a DVIPA on loopback: answer ARP only for addresses of the receiving
/// interface (`arp_ignore=1`) and never use a loopback address as ARP source (`arp_announce=2`).
pub const ARP_SYSCTLS: [(&str, &str); 4] = [
    ("net/ipv4/conf/all/arp_ignore", "1"),
    ("net/ipv4/conf/lo/arp_ignore", "1"),
    ("net/ipv4/conf/all/arp_announce", "2"),
    ("net/ipv4/conf/lo/arp_announce", "2"),
];

/// Writes [`ARP_SYSCTLS`] under `proc_sys` (normally `/proc/sys`). /proc/sys/net belongs to the
/// network namespace of the writing thread.
pub fn set_arp_sysctls(proc_sys: &Path) -> Result<(), LoError> {
    for (key, value) in ARP_SYSCTLS {
        let path = proc_sys.join(key);
        std::fs::write(&path, value).map_err(|source| LoError::Sysctl {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_are_written_under_the_given_root() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["all", "lo"] {
            std::fs::create_dir_all(dir.path().join("net/ipv4/conf").join(d)).unwrap();
        }
        set_arp_sysctls(dir.path()).unwrap();
        let read = |k: &str| std::fs::read_to_string(dir.path().join(k)).unwrap();
        assert_eq!(read("net/ipv4/conf/all/arp_ignore"), "1");
        assert_eq!(read("net/ipv4/conf/lo/arp_announce"), "2");
    }

    #[test]
    fn missing_sysctl_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = set_arp_sysctls(dir.path()).unwrap_err().to_string();
        assert!(err.contains("arp_ignore"), "{err}");
    }
}

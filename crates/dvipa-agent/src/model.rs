//! What the kernel shows: one [`Snapshot`] of the sockets that matter to the agent.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

/// Transport protocol of a socket (the numbers are the IP protocol numbers used on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u32 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A socket that receives new work on `addr:port`: a TCP socket in LISTEN, or an unconnected
/// bound UDP socket. `addr` is `0.0.0.0` for a wildcard bind (including a dual-stack `[::]`
/// socket without `IPV6_V6ONLY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listener {
    pub proto: Proto,
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// A TCP connection (any state from SYN_SENT up to, but not including, TIME_WAIT/CLOSE).
/// Addresses of IPv4 connections on dual-stack IPv6 sockets are unmapped to IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Connection {
    pub local: Ipv4Addr,
    pub local_port: u16,
    pub remote: Ipv4Addr,
    pub remote_port: u16,
    /// The socket was seen in SYN_SENT, i.e. this host opened it (an active open).
    pub syn_sent: bool,
}

/// All listeners and TCP connections of the network namespace at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub listeners: BTreeSet<Listener>,
    pub connections: BTreeSet<Connection>,
}

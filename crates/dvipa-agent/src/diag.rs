//! Kernel observation through `NETLINK_SOCK_DIAG` (inet_diag dumps).
//!
//! [`SockDiag::snapshot`] dumps TCP sockets (LISTEN and SYN_SENT..LAST_ACK/CLOSING) and unconnected
//! UDP sockets of both address families and folds them into a [`Snapshot`]: IPv4-mapped IPv6
//! addresses are unmapped, a dual-stack `[::]` listener (not `IPV6_V6ONLY`) becomes a wildcard
//! IPv4 listener, pure IPv6 sockets are ignored. TIME_WAIT sockets are not connections any more.
//!
//! The kernel has no event for listen(); it does broadcast socket *destruction* on the
//! `SKNLGRP_INET*_DESTROY` groups (CAP_NET_ADMIN). [`DestroyWatch`] subscribes to them so that a
//! closed listener or connection triggers an immediate re-dump instead of waiting for the next
//! poll tick.
//!
//! The netlink sockets are created when these objects are made, in the network namespace of the
//! calling thread, and stay bound to that namespace.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::*;
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};

use crate::model::{Connection, Listener, Proto, Snapshot};

/// Failure of a sock_diag dump.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("sock_diag socket: {0}")]
    Socket(io::Error),
    #[error("sock_diag {what} dump: kernel error: {source}")]
    Kernel {
        what: &'static str,
        source: io::Error,
    },
    #[error("sock_diag {what} dump: undecodable message: {detail}")]
    Decode { what: &'static str, detail: String },
}

/// One netlink socket for inet_diag dumps.
pub struct SockDiag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

const TCP_STATE_LISTEN: u8 = 10;
const TCP_STATE_CLOSE: u8 = 7;

fn tcp_states() -> StateFlags {
    StateFlags::LISTEN
        | StateFlags::SYN_SENT
        | StateFlags::ESTABLISHED
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

/// Unmaps an address reported by the kernel to IPv4; `None` for real IPv6 addresses.
fn v4(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => {
            if a.is_unspecified() {
                Some(Ipv4Addr::UNSPECIFIED)
            } else {
                a.to_ipv4_mapped()
            }
        }
    }
}

impl SockDiag {
    /// Opens the socket (in the calling thread's network namespace).
    pub fn new() -> Result<Self, DiagError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DiagError::Socket)?;
        socket.bind_auto().map_err(DiagError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(DiagError::Socket)?;
        Ok(SockDiag {
            socket,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Dumps everything and folds it into one snapshot.
    pub fn snapshot(&mut self) -> Result<Snapshot, DiagError> {
        let mut snap = Snapshot::default();
        for family in [AF_INET, AF_INET6] {
            self.dump(family, IPPROTO_TCP, tcp_states(), &mut snap)?;
            self.dump(family, IPPROTO_UDP, StateFlags::CLOSE, &mut snap)?;
        }
        Ok(snap)
    }

    fn dump(
        &mut self,
        family: u8,
        protocol: u8,
        states: StateFlags,
        snap: &mut Snapshot,
    ) -> Result<(), DiagError> {
        let what = match (family, protocol) {
            (AF_INET, IPPROTO_TCP) => "tcp4",
            (AF_INET, _) => "udp4",
            (_, IPPROTO_TCP) => "tcp6",
            _ => "udp6",
        };
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        hdr.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol,
                extensions: ExtensionFlags::empty(),
                states,
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            })
            .into(),
        );
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.socket
            .send(&out, 0)
            .map_err(|source| DiagError::Kernel { what, source })?;

        loop {
            self.buf.clear();
            let n = self
                .socket
                .recv(&mut self.buf, 0)
                .map_err(|source| DiagError::Kernel { what, source })?;
            let data = &self.buf[..n.min(self.buf.len())];
            let mut off = 0usize;
            while off + 16 <= data.len() {
                let len = NetlinkBuffer::new(&data[off..]).length() as usize;
                if len < 16 || off + len > data.len() {
                    return Err(DiagError::Decode {
                        what,
                        detail: format!("bad netlink length {len} at {off}"),
                    });
                }
                let bytes = &data[off..off + len];
                off += (len + 3) & !3;
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(bytes).map_err(|e| {
                    DiagError::Decode {
                        what,
                        detail: e.to_string(),
                    }
                })?;
                if msg.header.sequence_number != self.seq {
                    continue; // a leftover of an earlier, aborted dump
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return Err(DiagError::Kernel {
                            what,
                            source: e.to_io(),
                        });
                    }
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let v6only = r.nlas.iter().any(|n| matches!(n, Nla::SkV6Only(true)));
                        fold(protocol, r.header.state, &r.header.socket_id, v6only, snap);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Adds one dumped socket to the snapshot.
fn fold(protocol: u8, state: u8, id: &SocketId, v6only: bool, snap: &mut Snapshot) {
    let (Some(local), remote) = (v4(id.source_address), v4(id.destination_address)) else {
        return;
    };
    if id.source_address.is_ipv6() && local.is_unspecified() && v6only {
        return; // [::] with IPV6_V6ONLY: IPv6 only
    }
    let proto = if protocol == IPPROTO_TCP {
        Proto::Tcp
    } else {
        Proto::Udp
    };
    match (proto, state) {
        (Proto::Tcp, TCP_STATE_LISTEN) => {
            snap.listeners.insert(Listener {
                proto,
                addr: local,
                port: id.source_port,
            });
        }
        // Unconnected bound UDP socket (port 0 = not bound yet).
        (Proto::Udp, TCP_STATE_CLOSE) if id.source_port != 0 => {
            snap.listeners.insert(Listener {
                proto,
                addr: local,
                port: id.source_port,
            });
        }
        (Proto::Tcp, _) => {
            let Some(remote) = remote else { return };
            if local.is_unspecified() {
                return;
            }
            snap.connections.insert(Connection {
                local,
                local_port: id.source_port,
                remote,
                remote_port: id.destination_port,
                syn_sent: state == TCP_SYN_SENT,
            });
        }
        _ => {}
    }
}

/// Kernel socket-destroy notifications (sock_diag broadcast groups).
pub struct DestroyWatch {
    socket: Socket,
}

const SKNLGRP_INET_TCP_DESTROY: u32 = 1;
const SKNLGRP_INET_UDP_DESTROY: u32 = 2;
const SKNLGRP_INET6_TCP_DESTROY: u32 = 3;
const SKNLGRP_INET6_UDP_DESTROY: u32 = 4;

impl DestroyWatch {
    /// Subscribes to the TCP and UDP destroy groups of both families (needs CAP_NET_ADMIN and a
    /// kernel >= 4.9). Non-blocking.
    pub fn new() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        for g in [
            SKNLGRP_INET_TCP_DESTROY,
            SKNLGRP_INET_UDP_DESTROY,
            SKNLGRP_INET6_TCP_DESTROY,
            SKNLGRP_INET6_UDP_DESTROY,
        ] {
            socket.add_membership(g)?;
        }
        socket.set_non_blocking(true)?;
        Ok(DestroyWatch { socket })
    }

    /// Reads and discards all pending notifications; returns how many datagrams there were.
    /// An `ENOBUFS` (overflow) counts as one: something was destroyed.
    pub fn drain(&self) -> io::Result<usize> {
        let mut n = 0;
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            match self.socket.recv(&mut buf, 0) {
                Ok(_) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => n += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for DestroyWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    // sock_diag dumps need no privileges: these run in the test's own namespace.

    #[test]
    fn dump_shows_listeners_connections_and_udp_sockets() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (srv, _) = l.accept().unwrap();
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let snap = SockDiag::new().unwrap().snapshot().unwrap();
        assert!(snap.listeners.contains(&Listener {
            proto: Proto::Tcp,
            addr: Ipv4Addr::LOCALHOST,
            port
        }));
        assert!(snap.listeners.contains(&Listener {
            proto: Proto::Udp,
            addr: Ipv4Addr::LOCALHOST,
            port: u.local_addr().unwrap().port()
        }));
        let cport = c.local_addr().unwrap().port();
        let accepted = snap
            .connections
            .iter()
            .find(|x| x.local_port == port && x.remote_port == cport)
            .expect("accepted connection in the dump");
        assert_eq!(accepted.remote, Ipv4Addr::LOCALHOST);
        assert!(!accepted.syn_sent);
        drop((c, srv));
    }

    #[test]
    fn closed_sockets_leave_the_dump() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut d = SockDiag::new().unwrap();
        let has = |s: &Snapshot| s.listeners.iter().any(|x| x.port == port);
        assert!(has(&d.snapshot().unwrap()));
        drop(l);
        assert!(!has(&d.snapshot().unwrap()));
    }

    #[test]
    fn v4_mapped_and_wildcard_v6_addresses_unmap() {
        assert_eq!(
            v4("::ffff:10.0.0.1".parse().unwrap()),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(v4("::".parse().unwrap()), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(v4("2001:db8::1".parse().unwrap()), None);
    }
}

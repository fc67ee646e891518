//! `IngressImpl` and the deparser of `p4src/dvipa.p4`, natively.
//!
//! [`Pipeline::process`] takes one frame and yields a [`Verdict`] (output port or drop reason), the
//! output frame (in [`Output::frame`], a reused buffer: no allocation once it has grown) and any
//! `learn_t` digests. Tables sit behind one `RwLock`; the data path holds it shared (per packet, or
//! per batch with [`Pipeline::process_with`]) while counters, last-hit times and the registers
//! (`rr_state`, `syn_pending`) are atomics, so the control plane only takes the lock exclusively to change entries.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tracing::{Level, debug};

use crate::packet::{self, ETH_LEN, IPV4_LEN, L4, PROTO_IPIP, Parsed, ParserError};
use crate::tables::{
    Counter, CrtKey, DptKey, DvipaAction, RouteAction, SelectAction, Tables, TargetAction,
};

/// Number of slots per service.
pub const N_SLOTS: u32 = 256;
/// Size of `service_counter` and `rr_state`.
pub const MAX_SERVICES: usize = 1024;
/// Size of `syn_pending` (cells).
pub const SYN_PENDING_SIZE: u32 = 65536;
/// v1model's drop port.
pub const DROP_PORT: u16 = 511;
/// `flags` bit 0 of `learn_t`.
pub const FLAG_NOT_SYN: u8 = 1;

/// One `learn_t` digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Learn {
    /// Client IPv4.
    pub src_addr: u32,
    /// DVIPA.
    pub dst_addr: u32,
    /// 6 or 17.
    pub protocol: u8,
    /// Client port.
    pub src_port: u16,
    /// DVIPA port.
    pub dst_port: u16,
    /// Service from `distribute`.
    pub service_id: u16,
    /// The target the packet was sent to (the chosen slot's, or its SYN's from `syn_pending`).
    pub target_id: u16,
    /// Bit 0 = NOT_SYN.
    pub flags: u8,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// The parser failed.
    #[error("parser error: {0}")]
    Parser(ParserError),
    /// Not an IPv4 frame.
    #[error("not IPv4 (EtherType {0:#06x})")]
    NotIpv4(u16),
    /// The service's slot has no target (`dpt` miss).
    #[error("dpt miss: service {service_id} slot {slot} has no target")]
    NoTarget {
        /// Service.
        service_id: u16,
        /// Slot.
        slot: u16,
    },
    /// `target` ran `drop` (entry or default).
    #[error("target {0}: drop")]
    TargetDrop(u16),
    /// `ipv4_route` ran `drop` (entry or default).
    #[error("ipv4_route: drop for {0:#010x}")]
    RouteDrop(u32),
    /// TTL of the routed header was <= 1.
    #[error("TTL expired")]
    TtlExpired,
    /// Egress port is the drop port 511.
    #[error("egress port 511")]
    DropPort,
}

/// Fate of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send [`Output::frame`] out of this port.
    Forward(u16),
    /// Dropped.
    Drop(DropReason),
}

/// Reusable per-caller output buffers.
#[derive(Debug, Default)]
pub struct Output {
    /// The output frame of the last packet (valid when the verdict is `Forward`).
    pub frame: Vec<u8>,
    /// Digests generated; appended to, the caller drains it.
    pub digests: Vec<Learn>,
}

/// Data-path statistics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Packets processed.
    pub rx: AtomicU64,
    /// Packets forwarded.
    pub forwarded: AtomicU64,
    /// Drops: parser error.
    pub drop_parser: AtomicU64,
    /// Drops: not IPv4.
    pub drop_not_ipv4: AtomicU64,
    /// Drops: dpt miss.
    pub drop_no_target: AtomicU64,
    /// Drops: target drop.
    pub drop_target: AtomicU64,
    /// Drops: route drop.
    pub drop_route: AtomicU64,
    /// Drops: TTL.
    pub drop_ttl: AtomicU64,
    /// Drops: port 511.
    pub drop_port: AtomicU64,
    /// Digests generated.
    pub digests: AtomicU64,
}

impl Stats {
    fn count_drop(&self, r: &DropReason) {
        let c = match r {
            DropReason::Parser(_) => &self.drop_parser,
            DropReason::NotIpv4(_) => &self.drop_not_ipv4,
            DropReason::NoTarget { .. } => &self.drop_no_target,
            DropReason::TargetDrop(_) => &self.drop_target,
            DropReason::RouteDrop(_) => &self.drop_route,
            DropReason::TtlExpired => &self.drop_ttl,
            DropReason::DropPort => &self.drop_port,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The 13 bytes every flow hash of the contract covers: src, dst, proto, sport, dport (network
/// order).
#[inline]
fn flow_bytes(src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> [u8; 13] {
    let mut b = [0u8; 13];
    b[0..4].copy_from_slice(&src.to_be_bytes());
    b[4..8].copy_from_slice(&dst.to_be_bytes());
    b[8] = proto;
    b[9..11].copy_from_slice(&sport.to_be_bytes());
    b[11..13].copy_from_slice(&dport.to_be_bytes());
    b
}

/// The contract's CRC-32 over the flow bytes.
#[inline]
fn flow_crc(src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> u32 {
    crc32fast::hash(&flow_bytes(src, dst, proto, sport, dport))
}

/// bmv2's `crc16` (v1model `HashAlgorithm.crc16`): CRC-16/ARC — polynomial 0x8005, input and
/// output reflected, init 0, xorout 0 — as a reflected table (polynomial 0xA001).
const CRC16_TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xA001
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-16/ARC of `b` (bmv2's `crc16`; check value 0xBB3D for `b"123456789"`).
#[inline]
pub fn crc16(b: &[u8]) -> u16 {
    let mut c = 0u16;
    for &x in b {
        c = (c >> 8) ^ CRC16_TABLE[usize::from((c as u8) ^ x)];
    }
    c
}

/// The `syn_pending` index of a flow: the slot hash's CRC-32, modulo 65536.
#[inline]
pub fn syn_pending_index(src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> usize {
    (flow_crc(src, dst, proto, sport, dport) % SYN_PENDING_SIZE) as usize
}

/// The `syn_pending` tag of a flow: CRC-16/ARC of the same 13 bytes (a second, independent
/// hash: flows that share an index almost always differ here).
#[inline]
pub fn syn_pending_tag(src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> u16 {
    crc16(&flow_bytes(src, dst, proto, sport, dport))
}

/// A `syn_pending` cell: tag in bits 31..16, target in bits 15..0 (0 = empty).
#[inline]
pub fn syn_pending_cell(tag: u16, target_id: u16) -> u32 {
    (u32::from(tag) << 16) | u32::from(target_id)
}

/// The slot hash of the contract: CRC-32 over src, dst, proto, sport, dport (13 bytes, network
/// order), modulo 256.
#[inline]
pub fn slot_hash(src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> u16 {
    (flow_crc(src, dst, proto, sport, dport) % N_SLOTS) as u16
}

/// The whole pipeline state.
#[derive(Debug)]
pub struct Pipeline {
    tables: RwLock<Tables>,
    /// `IngressImpl.service_counter`.
    pub service_counter: Box<[Counter]>,
    /// `IngressImpl.rr_state`.
    pub rr_state: Box<[AtomicU32]>,
    /// `IngressImpl.syn_pending`: the target chosen for a flow's SYN (or UDP packet) and the
    /// flow's tag ([`syn_pending_cell`]), for the packets that follow before its CRT entry lands.
    pub syn_pending: Box<[AtomicU32]>,
    /// Statistics.
    pub stats: Stats,
    epoch: Instant,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}
#[inline]
fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Pipeline {
    /// Empty tables, zeroed externs.
    pub fn new() -> Self {
        Pipeline {
            tables: RwLock::new(Tables::default()),
            service_counter: (0..MAX_SERVICES).map(|_| Counter::default()).collect(),
            rr_state: (0..MAX_SERVICES).map(|_| AtomicU32::new(0)).collect(),
            syn_pending: (0..SYN_PENDING_SIZE).map(|_| AtomicU32::new(0)).collect(),
            stats: Stats::default(),
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the pipeline was created (the clock of last-hit times); never 0.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Shared access to the tables (data path, reads).
    pub fn tables(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read()
    }

    /// Exclusive access to the tables (control plane writes).
    pub fn tables_mut(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables.write()
    }

    /// Empties all tables and zeroes the externs (a new forwarding pipeline config).
    pub fn reset(&self) {
        self.tables.write().clear();
        for c in self.service_counter.iter() {
            c.set(0, 0);
        }
        for r in self.rr_state.iter() {
            r.store(0, Ordering::Relaxed);
        }
        for r in self.syn_pending.iter() {
            r.store(0, Ordering::Relaxed);
        }
    }

    /// Processes one frame that arrived on `in_port`.
    pub fn process(&self, in_port: u16, frame: &[u8], out: &mut Output) -> Verdict {
        let now = self.now_ns();
        let t = self.tables.read();
        self.process_with(&t, now, in_port, frame, out)
    }

    /// Processes one frame with tables already locked (batching) and a given clock value.
    pub fn process_with(
        &self,
        t: &Tables,
        now_ns: u64,
        in_port: u16,
        frame: &[u8],
        out: &mut Output,
    ) -> Verdict {
        self.stats.rx.fetch_add(1, Ordering::Relaxed);
        let v = self.ingress(t, now_ns, in_port, frame, out);
        match &v {
            Verdict::Forward(_) => {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Drop(r) => self.stats.count_drop(r),
        }
        if tracing::enabled!(Level::DEBUG) {
            debug!(in_port, len = frame.len(), verdict = ?v, "packet done");
        }
        v
    }

    fn ingress(
        &self,
        t: &Tables,
        now: u64,
        in_port: u16,
        frame: &[u8],
        out: &mut Output,
    ) -> Verdict {
        let trace = tracing::enabled!(Level::DEBUG);
        let p = match packet::parse(frame) {
            Err(e) => return Verdict::Drop(DropReason::Parser(e)),
            Ok(Parsed::NotIpv4(et)) => return Verdict::Drop(DropReason::NotIpv4(et)),
            Ok(Parsed::Ipv4(p)) => p,
        };
        let ip = ETH_LEN;
        let src = be32(frame, ip + 12);
        let dst = be32(frame, ip + 16);
        let proto = frame[ip + 9];
        let (sport, dport, tcp_flags) = match p.l4 {
            L4::Tcp(o) => (be16(frame, o), be16(frame, o + 2), Some(frame[o + 13])),
            L4::Udp(o) => (be16(frame, o), be16(frame, o + 2), None),
            L4::None => (0, 0, None),
        };
        let len = frame.len();

        let dv = if p.l4 != L4::None {
            t.dvipa.lookup(dst, proto, dport)
        } else {
            None
        };
        if trace {
            debug!(in_port, src = %std::net::Ipv4Addr::from(src), dst = %std::net::Ipv4Addr::from(dst),
                proto, sport, dport, "dvipa {}", if dv.is_some() { "hit" } else { "miss" });
        }
        let Some(dv) = dv else {
            out.frame.clear();
            out.frame.extend_from_slice(frame);
            return route(t, &mut out.frame, ip, dst, trace);
        };
        let (service_id, method) = match dv {
            DvipaAction::Distribute { service_id, method } => (service_id, method),
            DvipaAction::NoAction => (0, 0),
        };
        if let Some(c) = self.service_counter.get(usize::from(service_id)) {
            c.count(len);
        }
        let key = CrtKey {
            src,
            dst,
            proto,
            sport,
            dport,
        };
        let mut target_id = 0u16;
        match t.crt.lookup(&key, now, len, true) {
            Some(a) => {
                if let SelectAction::ToTarget(tid) = a {
                    target_id = tid;
                }
                if trace {
                    debug!(target_id, "crt hit");
                }
            }
            None => {
                if let SelectAction::ToTarget(tid) = t.crt.default_action {
                    target_id = tid;
                }
                let not_syn = match tcp_flags {
                    Some(f) => !(f & 0x02 != 0 && f & 0x10 == 0),
                    None => false,
                };
                // A SYN (or UDP packet) selects from the slots and records (tag, target) in
                // syn_pending; any other TCP packet first follows its flow's recorded choice when
                // the cell's tag is the flow's (no slot, no dpt, rr_state unchanged).
                let fb = flow_bytes(src, dst, proto, sport, dport);
                let crc = crc32fast::hash(&fb);
                let pending_idx = (crc % SYN_PENDING_SIZE) as usize;
                let pending_tag = crc16(&fb);
                let mut pending = 0u16;
                if not_syn {
                    let cell = self.syn_pending[pending_idx].load(Ordering::Relaxed);
                    if (cell >> 16) as u16 == pending_tag {
                        pending = cell as u16;
                    }
                }
                let mut slot = 0u16;
                if pending == 0 {
                    slot = if method == 0 {
                        (crc % N_SLOTS) as u16
                    } else {
                        match self.rr_state.get(usize::from(service_id)) {
                            Some(r) => (r.fetch_add(1, Ordering::Relaxed) & 0xff) as u16,
                            None => 0,
                        }
                    };
                }
                let chosen = if pending != 0 {
                    target_id = pending;
                    true
                } else {
                    let dk = DptKey { service_id, slot };
                    match t.dpt.lookup(&dk, now, len, false) {
                        Some(a) => {
                            if let SelectAction::ToTarget(tid) = a {
                                target_id = tid;
                            }
                            if !not_syn {
                                self.syn_pending[pending_idx].store(
                                    syn_pending_cell(pending_tag, target_id),
                                    Ordering::Relaxed,
                                );
                            }
                            true
                        }
                        None => false,
                    }
                };
                match chosen {
                    true => {
                        let l = Learn {
                            src_addr: src,
                            dst_addr: dst,
                            protocol: proto,
                            src_port: sport,
                            dst_port: dport,
                            service_id,
                            target_id,
                            flags: if not_syn { FLAG_NOT_SYN } else { 0 },
                        };
                        out.digests.push(l);
                        self.stats.digests.fetch_add(1, Ordering::Relaxed);
                        if trace && pending != 0 {
                            debug!(
                                service_id,
                                target_id,
                                flags = l.flags,
                                "crt miss, syn_pending hit, digest"
                            );
                        } else if trace {
                            debug!(
                                service_id,
                                slot,
                                target_id,
                                flags = l.flags,
                                "crt miss, dpt hit, digest"
                            );
                        }
                    }
                    false => {
                        if trace {
                            debug!(service_id, slot, "crt miss, dpt miss");
                        }
                        return Verdict::Drop(DropReason::NoTarget { service_id, slot });
                    }
                }
            }
        }
        let ta = t
            .target
            .lookup(&target_id, now, len, true)
            .unwrap_or(t.target.default_action);
        if trace {
            debug!(target_id, action = ?ta, "target");
        }
        match ta {
            TargetAction::Drop => Verdict::Drop(DropReason::TargetDrop(target_id)),
            TargetAction::ForwardL2 { dmac, port } => {
                out.frame.clear();
                out.frame.extend_from_slice(frame);
                out.frame[0..6].copy_from_slice(&dmac);
                packet::fix_ipv4_checksum(&mut out.frame[ip..ip + p.ip_hdr_len]);
                egress(port)
            }
            TargetAction::EncapIpip {
                outer_src,
                outer_dst,
            } => {
                let f = &mut out.frame;
                f.clear();
                f.reserve(frame.len() + IPV4_LEN);
                f.extend_from_slice(&frame[..ETH_LEN]);
                let inner_len = be16(frame, ip + 2);
                let mut o = [0u8; IPV4_LEN];
                o[0] = 0x45;
                o[1] = frame[ip + 1];
                o[2..4].copy_from_slice(&inner_len.wrapping_add(IPV4_LEN as u16).to_be_bytes());
                o[6] = 0x40; // DF
                o[8] = 64;
                o[9] = PROTO_IPIP;
                o[12..16].copy_from_slice(&outer_src.to_be_bytes());
                o[16..20].copy_from_slice(&outer_dst.to_be_bytes());
                f.extend_from_slice(&o);
                f.extend_from_slice(&frame[ETH_LEN..]);
                let inner = ETH_LEN + IPV4_LEN;
                packet::fix_ipv4_checksum(&mut f[inner..inner + p.ip_hdr_len]);
                route(t, f, ETH_LEN, outer_dst, trace)
            }
        }
    }
}

#[inline]
fn egress(port: u16) -> Verdict {
    if port == DROP_PORT {
        Verdict::Drop(DropReason::DropPort)
    } else {
        Verdict::Forward(port)
    }
}

/// `ipv4_route` on the IPv4 header at `ip` of `f` (already the output frame), then the checksum.
#[inline]
fn route(t: &Tables, f: &mut [u8], ip: usize, route_dst: u32, trace: bool) -> Verdict {
    let hit = t.route.lookup(route_dst);
    if trace {
        debug!(route_dst = %std::net::Ipv4Addr::from(route_dst), "ipv4_route {}", if hit.is_some() { "hit" } else { "miss" });
    }
    match hit.unwrap_or(t.route.default_action) {
        RouteAction::Drop => Verdict::Drop(DropReason::RouteDrop(route_dst)),
        RouteAction::SetNexthop { dmac, smac, port } => {
            // As in dvipa.p4 (switch on action_run): the TTL rule goes with set_nexthop, whether it
            // ran for an entry or as the table's default action.
            let ttl = f[ip + 8];
            if ttl <= 1 {
                return Verdict::Drop(DropReason::TtlExpired);
            }
            f[ip + 8] = ttl - 1;
            f[0..6].copy_from_slice(&dmac);
            f[6..12].copy_from_slice(&smac);
            let hl = usize::from(f[ip] & 0x0f) * 4;
            packet::fix_ipv4_checksum(&mut f[ip..ip + hl]);
            egress(port)
        }
    }
}

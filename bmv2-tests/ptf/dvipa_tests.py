"""Packet tests of the dvipa pipeline (docs/pipeline-contract.md), for bmv2 and the embedded switch.

Run through bmv2-tests/run.sh, which starts the switch, wires the ports and passes the test
parameters. Every test pushes the pipeline afresh (empty tables, zeroed counters and registers),
programs what it needs over P4Runtime by P4Info name, sends packets and expects exactly the listed
packets on exactly the listed ports (and nothing else).

Topology shared by all tests (switch ports = PTF ports):

                       +--------------------------------+
   clients ---- port 1 |                                | port 2 ---- server S1 (MAC S1_MAC)
   (via router         |     DUT: dvipa switch          | port 3 ---- server S2 / next hop NH3
    CLIENT_GW_MAC)     |     MAC SW_MAC                 | port 4 ---- server S3 / next hop NH4
                       +--------------------------------+             (underlay 10.99.0.0/16)

Targets: 1 = forward_l2(S1_MAC, port 2), 2 = forward_l2(S2_MAC, port 3),
         3 = forward_l2(S3_MAC, port 4), 9 = encap_ipip(10.99.0.1 -> 10.99.1.7).
"""
import os
import queue
import struct
import sys
import time
import zlib

import grpc
import ptf
from ptf import testutils
from ptf.base_tests import BaseTest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import p4rt  # noqa: E402
from p4rt import ip, mac  # noqa: E402

SW_MAC = "00:00:00:00:05:01"
CLIENT_GW_MAC = "00:00:00:00:0c:01"
S1_MAC = "00:00:00:00:51:01"
S2_MAC = "00:00:00:00:52:02"
S3_MAC = "00:00:00:00:53:03"
NH3_MAC = "00:00:00:00:e3:03"
NH4_MAC = "00:00:00:00:e4:04"

CLIENT = "192.0.2.10"
CLIENT2 = "198.51.100.20"
DVIPA1 = "10.1.1.1"
DVIPA2 = "10.1.1.2"
IPIP_SRC = "10.99.0.1"
IPIP_DST = "10.99.1.7"

T_S1, T_S2, T_S3, T_IPIP = 1, 2, 3, 9
TARGET_PORT = {T_S1: 2, T_S2: 3, T_S3: 4}
TARGET_MAC = {T_S1: S1_MAC, T_S2: S2_MAC, T_S3: S3_MAC}

N_SLOTS = 256
SYN_PENDING_SIZE = 65536
PROTO_TCP, PROTO_UDP = 6, 17
RESOURCE_EXHAUSTED = 8  # google.rpc.Code
UNKNOWN = 2  # google.rpc.Code
# simple_switch_grpc's answer to an INSERT into a full table (bmv2 1.15, PI f96af95).
BMV2_ADD_FAILED = ("Error when adding match entry to target", "ALL-sswitch-p4org")

DVIPA_T = "IngressImpl.dvipa"
CRT_T = "IngressImpl.crt"
DPT_T = "IngressImpl.dpt"
TARGET_T = "IngressImpl.target"
ROUTE_T = "IngressImpl.ipv4_route"

_switch = None


def switch():
    """One P4Runtime connection for the whole run (primary once, pipeline pushed per test)."""
    global _switch
    if _switch is None:
        params = testutils.test_params_get()
        sw = p4rt.Switch(params["grpc_addr"], params["p4info"])
        sw.wait_ready(timeout=30)
        sw.connect()
        _switch = sw
    return _switch


def device_config():
    path = testutils.test_params_get().get("device_config", "")
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    return b""


def slot_of(src, dst, proto, sport, dport):
    """The contract's slot hash: crc32 (IEEE, as zlib computes it) of the 13-byte 5-tuple, mod 256."""
    data = struct.pack("!IIBHH", ip(src), ip(dst), proto, sport, dport)
    return zlib.crc32(data) % N_SLOTS


def flow_bytes(src, dst, proto, sport, dport):
    return struct.pack("!IIBHH", ip(src), ip(dst), proto, sport, dport)


def crc16(data):
    """v1model HashAlgorithm.crc16 as bmv2 computes it: CRC-16/ARC (poly 0x8005 reflected = 0xA001,
    init 0, no final xor; crc16(b"123456789") == 0xBB3D)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def syn_pending_cell(src, dst, proto, sport, dport):
    """(index, tag) of a flow in syn_pending: crc32 mod 65536 and crc16 of the 13-byte 5-tuple."""
    data = flow_bytes(src, dst, proto, sport, dport)
    return zlib.crc32(data) % SYN_PENDING_SIZE, crc16(data)


def colliding_flow(src, dst, proto, sport, dport):
    """(client address, port) of another flow to dst:dport with the same syn_pending index as the
    given one but a different tag (brute force over 10.9.0.x clients)."""
    idx, tag = syn_pending_cell(src, dst, proto, sport, dport)
    for host in range(2, 255):
        other = "10.9.0.%d" % host
        for port in range(1024, 65536):
            data = flow_bytes(other, dst, proto, port, dport)
            if zlib.crc32(data) % SYN_PENDING_SIZE == idx and crc16(data) != tag:
                return other, port
    raise AssertionError("no colliding flow found")


def frozen(pkt):
    """A packet rebuilt from its bytes (lengths and checksums fixed as they are on the wire)."""
    return Ether(bytes(pkt))


def tcp_pkt(src=CLIENT, dst=DVIPA1, sport=40000, dport=80, flags="S", ttl=64, payload=b"dvipa",
            tos=0, ip_id=1, options=None):
    ip_layer = IP(src=src, dst=dst, ttl=ttl, tos=tos, id=ip_id)
    if options is not None:
        ip_layer.options = options
    return frozen(Ether(dst=SW_MAC, src=CLIENT_GW_MAC) / ip_layer
                  / TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=0 if "A" not in flags else 5000)
                  / Raw(payload))


def udp_pkt(src=CLIENT, dst=DVIPA1, sport=40000, dport=53, ttl=64, payload=b"dvipa-udp"):
    return frozen(Ether(dst=SW_MAC, src=CLIENT_GW_MAC) / IP(src=src, dst=dst, ttl=ttl, id=1)
                  / UDP(sport=sport, dport=dport) / Raw(payload))


def l2_forwarded(pkt, target):
    """What forward_l2 makes of pkt: only the destination MAC (the first 6 bytes) changes; built on
    the raw bytes, so nothing else can be re-serialised differently."""
    return Ether(bytes.fromhex(TARGET_MAC[target].replace(":", "")) + bytes(pkt)[6:])


def routed(pkt, dmac, smac=SW_MAC):
    """What set_nexthop makes of pkt: MACs rewritten, TTL - 1, IPv4 checksum recomputed."""
    out = Ether(bytes(pkt))
    out[Ether].dst = dmac
    out[Ether].src = smac
    out[IP].ttl -= 1
    del out[IP].chksum
    return frozen(out)


def match_values(entry):
    """{field id: (kind, ints...)} of a TableEntry's match, independent of whether the bytestrings are
    canonical or padded to the field width (servers may send either)."""
    out = {}
    for m in entry.match:
        kind = m.WhichOneof("field_match_type")
        f = getattr(m, kind)
        if kind == "exact":
            out[m.field_id] = (kind, p4rt.decode(f.value))
        elif kind == "lpm":
            out[m.field_id] = (kind, p4rt.decode(f.value), f.prefix_len)
        elif kind == "ternary":
            out[m.field_id] = (kind, p4rt.decode(f.value), p4rt.decode(f.mask))
        else:
            out[m.field_id] = (kind, m.SerializeToString())
    return out


def ones_complement_ok(header):
    """True when an IPv4 header (bytes) checksums to 0xffff, i.e. its checksum field is right."""
    total = 0
    for i in range(0, len(header), 2):
        total += (header[i] << 8) | header[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


class DvipaTest(BaseTest):
    """Fresh pipeline per test plus helpers that program the tables by P4Info name."""

    def setUp(self):
        BaseTest.setUp(self)
        self.dataplane = ptf.dataplane_instance
        self.sw = switch()
        self.sw.set_pipeline(device_config())
        self.sw.drain()
        self.dataplane.flush()

    def tearDown(self):
        self.sw.drain()
        BaseTest.tearDown(self)

    # -- table programming -------------------------------------------------------------------

    def add_service(self, dvipa, proto, port, service_id, method=0, priority=10):
        """port None = all ports (PORT omitted): the ternary l4_dport with mask 0."""
        dport = (0, 0) if port is None else (port, 0xFFFF)
        self.sw.insert(DVIPA_T, {"hdr.ipv4.dstAddr": ip(dvipa), "hdr.ipv4.protocol": proto,
                                 "meta.l4_dport": dport},
                       "IngressImpl.distribute", {"service_id": service_id, "method": method},
                       priority=priority)

    def set_slots(self, service_id, targets, update=False):
        """targets: list of N_SLOTS target ids, slot i -> targets[i]."""
        assert len(targets) == N_SLOTS
        entries = [self.sw.table_entry(DPT_T, {"meta.service_id": service_id, "meta.slot": s},
                                       "IngressImpl.to_target", {"target_id": t})
                   for s, t in enumerate(targets)]
        kind = p4rt.p4runtime_pb2.Update.MODIFY if update else p4rt.p4runtime_pb2.Update.INSERT
        self.sw.write_entries(entries, kind)

    def add_l2_targets(self):
        for t in (T_S1, T_S2, T_S3):
            self.sw.insert(TARGET_T, {"meta.target_id": t}, "IngressImpl.forward_l2",
                           {"dmac": mac(TARGET_MAC[t]), "port": TARGET_PORT[t]})

    def add_route(self, prefix, plen, dmac, port, smac=SW_MAC):
        self.sw.insert(ROUTE_T, {"meta.route_dst": (ip(prefix), plen)}, "IngressImpl.set_nexthop",
                       {"dmac": mac(dmac), "smac": mac(smac), "port": port})

    def crt_match(self, src, dst, proto, sport, dport):
        return {"hdr.ipv4.srcAddr": ip(src), "hdr.ipv4.dstAddr": ip(dst),
                "hdr.ipv4.protocol": proto, "meta.l4_sport": sport, "meta.l4_dport": dport}

    # -- packets -----------------------------------------------------------------------------

    def send(self, pkt, port=1):
        testutils.send_packet(self, port, bytes(pkt))

    def expect(self, pkt, port):
        testutils.verify_packet(self, pkt, port)

    def expect_nothing_else(self):
        testutils.verify_no_other_packets(self)

    def expect_dropped(self, pkt, port=1, why=""):
        self.send(pkt, port)
        result = testutils.dp_poll(self, device_number=0, timeout=ptf.ptfutils.default_negative_timeout)
        if isinstance(result, self.dataplane.PollSuccess):
            self.fail("expected the packet to be dropped (%s), but it came out of port %r:\n%s"
                      % (why, result.port, result.format()))


class DvipaMatchPerPort(DvipaTest):
    """DVIPA 10.1.1.1 TCP port 80 is service 1 (all slots -> target 1 on port 2).

    client --p1--> [DUT] --p2--> S1      SYN to 10.1.1.1:80   -> port 2, only dst MAC changed
                         --p3--> NH3     SYN to 10.1.1.1:81   -> routed (10.1.1.0/24 via port 3)
                                         UDP to 10.1.1.1:80   -> routed (service is TCP only)
                                         ICMP echo to 10.1.1.1 -> routed (no L4 ports: no dvipa lookup)
    service_counter[1] counts the one packet that matched dvipa.
    """

    def runTest(self):
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=1)
        self.set_slots(1, [T_S1] * N_SLOTS)
        self.add_l2_targets()
        self.add_route("10.1.1.0", 24, NH3_MAC, 3)

        syn80 = tcp_pkt(dport=80, sport=40001)
        self.send(syn80)
        self.expect(l2_forwarded(syn80, T_S1), 2)

        syn81 = tcp_pkt(dport=81, sport=40002)
        self.send(syn81)
        self.expect(routed(syn81, NH3_MAC), 3)

        udp80 = udp_pkt(dport=80, sport=40003)
        self.send(udp80)
        self.expect(routed(udp80, NH3_MAC), 3)

        icmp = frozen(Ether(dst=SW_MAC, src=CLIENT_GW_MAC) / IP(src=CLIENT, dst=DVIPA1, ttl=64)
                      / ICMP(type=8, id=7, seq=1) / Raw(b"ping"))
        self.send(icmp)
        self.expect(routed(icmp, NH3_MAC), 3)
        self.expect_nothing_else()

        self.assertEqual(self.sw.read_counter("IngressImpl.service_counter", 1), (1, len(syn80)))
        self.assertEqual(self.sw.read_counter("IngressImpl.service_counter", 0), (0, 0))


class DvipaAllPortsWildcard(DvipaTest):
    """DVIPA 10.1.1.2, TCP, PORT omitted (l4_dport mask 0) is service 2 -> target 2 (port 3); on
    the same DVIPA an exact entry for port 443 (higher priority) is service 3 -> target 3 (port 4).

    client --p1--> [DUT] --p3--> S2      SYNs to 10.1.1.2:22, :8080, :65535, :0 -> port 3
                         --p4--> S3      SYN to 10.1.1.2:443                    -> port 4
    """

    def runTest(self):
        self.add_service(DVIPA2, PROTO_TCP, None, service_id=2, priority=1)
        self.add_service(DVIPA2, PROTO_TCP, 443, service_id=3, priority=10)
        self.set_slots(2, [T_S2] * N_SLOTS)
        self.set_slots(3, [T_S3] * N_SLOTS)
        self.add_l2_targets()

        for i, dport in enumerate((22, 8080, 65535, 0)):
            pkt = tcp_pkt(dst=DVIPA2, dport=dport, sport=41000 + i)
            self.send(pkt)
            self.expect(l2_forwarded(pkt, T_S2), 3)
        pkt = tcp_pkt(dst=DVIPA2, dport=443, sport=41010)
        self.send(pkt)
        self.expect(l2_forwarded(pkt, T_S3), 4)
        self.expect_nothing_else()
        self.assertEqual(self.sw.read_counter("IngressImpl.service_counter", 2)[0], 4)
        self.assertEqual(self.sw.read_counter("IngressImpl.service_counter", 3)[0], 1)


class RoutingAndTtl(DvipaTest):
    """Plain router path (no dvipa entries): longest prefix wins, TTL - 1, MACs rewritten.

    client --p1--> [DUT] --p3--> NH3     10.0.0.0/8      (TCP to 10.5.5.5, TTL 64 -> 63)
                         --p4--> NH4     10.2.0.0/16     (UDP to 10.2.3.4, TTL 2 -> 1)
                                 dropped: TTL 1, TTL 0, no route (172.16.0.1), ARP (not IPv4)
    """

    def runTest(self):
        self.add_route("10.0.0.0", 8, NH3_MAC, 3)
        self.add_route("10.2.0.0", 16, NH4_MAC, 4)

        p = tcp_pkt(dst="10.5.5.5", ttl=64)
        self.send(p)
        self.expect(routed(p, NH3_MAC), 3)
        exp = routed(p, NH3_MAC)
        self.assertEqual(exp[IP].ttl, 63)
        self.assertTrue(ones_complement_ok(bytes(exp[IP])[:20]))

        p = udp_pkt(dst="10.2.3.4", ttl=2)
        self.send(p)
        self.expect(routed(p, NH4_MAC), 4)
        self.expect_nothing_else()

        self.expect_dropped(tcp_pkt(dst="10.5.5.5", ttl=1), why="TTL 1 expires")
        self.expect_dropped(tcp_pkt(dst="10.5.5.5", ttl=0), why="TTL 0")
        self.expect_dropped(tcp_pkt(dst="172.16.0.1"), why="no route (default drop)")
        arp = Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_GW_MAC) / ARP(hwsrc=CLIENT_GW_MAC, psrc=CLIENT, pdst="10.5.5.5")
        self.expect_dropped(arp, why="not IPv4")


class SlotSpreadByWeight(DvipaTest):
    """Service 1 (hash method) with slots weighted 3:1 -- slot i -> target 2 if i % 4 == 3 else 1.
    200 SYNs from 192.0.2.10 ports 10000..10199 to 10.1.1.1:80; each must leave on the port of the
    target of slot crc32(5-tuple) % 256 (the contract's hash), and the split must follow the weights.

    client --p1--> [DUT] --p2--> S1 (weight 3)
                         --p3--> S2 (weight 1)
    """

    def runTest(self):
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=1)
        slots = [T_S2 if i % 4 == 3 else T_S1 for i in range(N_SLOTS)]
        self.set_slots(1, slots)
        self.add_l2_targets()

        counts = {T_S1: 0, T_S2: 0}
        used_slots = set()
        for sport in range(10000, 10200):
            slot = slot_of(CLIENT, DVIPA1, PROTO_TCP, sport, 80)
            used_slots.add(slot)
            target = slots[slot]
            counts[target] += 1
            pkt = tcp_pkt(sport=sport, dport=80)
            self.send(pkt)
            self.expect(l2_forwarded(pkt, target), TARGET_PORT[target])
        self.expect_nothing_else()
        self.assertGreater(len(used_slots), 100, "the hash should spread 200 flows over the slots")
        share = counts[T_S1] / 200.0
        self.assertTrue(0.65 <= share <= 0.85, "target 1 got %.2f of the SYNs, weight says 0.75" % share)


class RoundRobinMethod(DvipaTest):
    """Service 5 (method 1 = round robin) with slot i -> target (i % 3) + 1, and service 6 (round
    robin too) with every slot -> target 3. rr_state starts at 0 on a fresh pipeline and advances
    per service, whatever the 5-tuple.

    client --p1--> [DUT] --p2/p3/p4--> S1, S2, S3
    7 SYNs of 7 connections to service 5 (interleaved with 2 to service 6):
      targets 1,2,3,1,2,3,1 -> ports 2,3,4,2,3,4,2; service 6's SYNs -> port 4 and do not move
      service 5's position.
    """

    def runTest(self):
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=5, method=1)
        self.add_service(DVIPA2, PROTO_TCP, 80, service_id=6, method=1)
        self.set_slots(5, [(i % 3) + 1 for i in range(N_SLOTS)])
        self.set_slots(6, [T_S3] * N_SLOTS)
        self.add_l2_targets()

        for n in range(7):
            if n in (2, 5):
                other = tcp_pkt(dst=DVIPA2, sport=30000 + n)
                self.send(other)
                self.expect(l2_forwarded(other, T_S3), 4)
            pkt = tcp_pkt(sport=20000 + 7 * n)  # spread-out source ports: the hash is not used
            target = (n % 3) + 1
            self.send(pkt)
            self.expect(l2_forwarded(pkt, target), TARGET_PORT[target])
        self.expect_nothing_else()


class RoundRobinHandshakeFollowsSyn(DvipaTest):
    """Round robin and the handshake race: the ACK of a connection arrives before the controller
    has written its CRT entry (no controller here: there is never a CRT entry). Service 5 (method 1)
    with slot i -> target (i % 3) + 1; syn_pending (crc32 of the 5-tuple mod 65536, tagged with its
    crc16) remembers the target of each SYN.

    client --p1--> [DUT] --p2/p3/p4--> S1, S2, S3
      SYN C  -> target 1 (port 2)     ACK C  -> target 1 again (not the next slot's target 2),
      ACK C  -> target 1              digest flags 1 (NOT_SYN), target_id 1
      SYN D  -> target 2 (port 3): round robin still advances for new connections
      ACK D  -> target 2, ACK C -> target 1
      ACK E (no SYN seen) -> next slot's target 3 (port 4): today's fallback
    """

    def runTest(self):
        self.sw.enable_digest("learn_t")
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=5, method=1)
        self.set_slots(5, [(i % 3) + 1 for i in range(N_SLOTS)])
        self.add_l2_targets()
        c, d, e = 21000, 21007, 21014
        pending = {syn_pending_cell(CLIENT, DVIPA1, PROTO_TCP, sport, 80)[0] for sport in (c, d, e)}
        self.assertEqual(len(pending), 3, "test flows must not share a syn_pending cell")

        steps = [(c, "S", T_S1), (c, "A", T_S1), (c, "PA", T_S1), (d, "S", T_S2), (d, "A", T_S2),
                 (c, "A", T_S1), (e, "A", T_S3)]
        for sport, flags, target in steps:
            pkt = tcp_pkt(sport=sport, flags=flags)
            self.send(pkt)
            self.expect(l2_forwarded(pkt, target), TARGET_PORT[target])
        self.expect_nothing_else()

        # Identical digests are suppressed until acked or ack_timeout (P4Runtime), so compare the
        # distinct ones: C's repeated non-SYN packets all report target 1.
        got = self.sw.collect_digests(len(steps) + 1, timeout=2.0)
        want = {(ip(CLIENT), ip(DVIPA1), PROTO_TCP, sport, 80, 5, target, 0 if flags == "S" else 1)
                for sport, flags, target in steps}
        fields = ("src_addr", "dst_addr", "protocol", "src_port", "dst_port", "service_id",
                  "target_id", "flags")
        self.assertEqual({tuple(x[f] for f in fields) for x in got}, want)


class SlotMoveBeforeCrtEntry(DvipaTest):
    """The handshake race with a hashed service: the controller changes the slots (a server joined)
    after a SYN was digested but before its CRT entry was written (no controller here: there is
    never a CRT entry). syn_pending (index crc32(5-tuple) % 65536, tag crc16(5-tuple)) remembers
    each SYN's target; a flow follows a cell only when the tag is its own.

    client --p1--> [DUT] --p2/p3/p4--> S1, S2, S3      service 6 (method 0), all slots -> target 1
      SYN A (192.0.2.10:40000)          -> target 1 (port 2)
      -- every slot MODIFYed to target 2 --
      ACK A, data A                     -> target 1 (port 2): A's SYN, not the slot (digests NOT_SYN,
                                           target_id 1)
      ACK B (same cell as A, other tag) -> target 2 (port 3): the slot, not A's choice
      SYN C, ACK C                      -> target 2 (port 3): new connections take the new slots
      SYN B                             -> target 2; overwrites A's cell (the documented collision)
      ACK A                             -> target 2 (port 3): A's tag no longer matches, slots
      -- every slot MODIFYed to target 3 --
      ACK B                             -> target 2 (port 3): B follows its own SYN
    """

    def runTest(self):
        self.sw.enable_digest("learn_t")
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=6, method=0)
        self.set_slots(6, [T_S1] * N_SLOTS)
        self.add_l2_targets()
        a, c = 40000, 40002
        b_src, b = colliding_flow(CLIENT, DVIPA1, PROTO_TCP, a, 80)
        cells = {syn_pending_cell(CLIENT, DVIPA1, PROTO_TCP, sport, 80)[0] for sport in (a, c)}
        self.assertEqual(len(cells), 2, "A and C must not share a syn_pending cell")

        def step(src, sport, flags, target):
            pkt = tcp_pkt(src=src, sport=sport, flags=flags)
            self.send(pkt)
            self.expect(l2_forwarded(pkt, target), TARGET_PORT[target])
            return (ip(src), sport, target, 0 if flags == "S" else 1)

        want = {step(CLIENT, a, "S", T_S1)}
        self.set_slots(6, [T_S2] * N_SLOTS, update=True)
        want |= {step(CLIENT, a, "A", T_S1), step(CLIENT, a, "PA", T_S1),
                 step(b_src, b, "A", T_S2), step(CLIENT, c, "S", T_S2), step(CLIENT, c, "A", T_S2),
                 step(b_src, b, "S", T_S2), step(CLIENT, a, "A", T_S2)}
        self.set_slots(6, [T_S3] * N_SLOTS, update=True)
        want |= {step(b_src, b, "A", T_S2)}
        self.expect_nothing_else()

        # Identical digests are suppressed until acked or ack_timeout (P4Runtime): compare the
        # distinct ones. Each NOT_SYN digest carries the target its packet was forwarded to.
        got = self.sw.collect_digests(len(want) + 1, timeout=2.0)
        fields = ("src_addr", "src_port", "target_id", "flags")
        self.assertEqual({tuple(x[f] for f in fields) for x in got}, want)
        self.assertEqual({(x["dst_addr"], x["protocol"], x["dst_port"], x["service_id"])
                          for x in got}, {(ip(DVIPA1), PROTO_TCP, 80, 6)})


class DigestContent(DvipaTest):
    """learn_t digests of unpinned packets (no CRT entries) to service 4 (all slots -> target 2).

    client --p1--> [DUT] --p3--> S2
      SYN           192.0.2.10:40100 -> 10.1.1.1:80   flags 0
      ACK           192.0.2.10:40101 -> 10.1.1.1:80   flags 1 (NOT_SYN: unpinned)
      SYN+ACK       192.0.2.10:40102 -> 10.1.1.1:80   flags 1
      UDP           198.51.100.20:5353 -> 10.1.1.1:53 flags 0 (first UDP packet = like a SYN)
    Every packet is still forwarded to the slot's target.
    """

    def runTest(self):
        self.sw.enable_digest("learn_t")
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=4)
        self.add_service(DVIPA1, PROTO_UDP, 53, service_id=4)
        self.set_slots(4, [T_S2] * N_SLOTS)
        self.add_l2_targets()

        cases = [
            (tcp_pkt(sport=40100, flags="S"), 0),
            (tcp_pkt(sport=40101, flags="A"), 1),
            (tcp_pkt(sport=40102, flags="SA"), 1),
            (udp_pkt(src=CLIENT2, sport=5353, dport=53), 0),
        ]
        for pkt, _ in cases:
            self.send(pkt)
            self.expect(l2_forwarded(pkt, T_S2), 3)
        self.expect_nothing_else()

        got = self.sw.collect_digests(len(cases) + 1, timeout=2.0)
        want = []
        for pkt, flags in cases:
            l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
            want.append({"src_addr": ip(pkt[IP].src), "dst_addr": ip(pkt[IP].dst),
                         "protocol": pkt[IP].proto, "src_port": l4.sport, "dst_port": l4.dport,
                         "service_id": 4, "target_id": T_S2, "flags": flags})
        key = lambda d: (d["src_addr"], d["src_port"])  # noqa: E731
        self.assertEqual(sorted(got, key=key), sorted(want, key=key))


class CrtOverridesSlots(DvipaTest):
    """Per-connection consistency: a pinned connection keeps its target after the slots change.

    client --p1--> [DUT] --p2--> S1   connection A (192.0.2.10:42000 -> 10.1.1.1:80), pinned to 1
                         --p3--> S2   after all slots of service 1 move to target 2:
      A's ACK      -> port 2 (CRT hit, no digest), crt_counter of A's entry = 1 packet
      B's SYN (192.0.2.10:42001) -> port 3 (slots), digest {B, target 2}
    """

    def runTest(self):
        self.sw.enable_digest("learn_t")
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=1)
        self.set_slots(1, [T_S1] * N_SLOTS)
        self.add_l2_targets()

        syn_a = tcp_pkt(sport=42000, flags="S")
        self.send(syn_a)
        self.expect(l2_forwarded(syn_a, T_S1), 2)
        first = self.sw.collect_digests(1, timeout=3.0)
        self.assertEqual([(d["src_port"], d["target_id"], d["flags"]) for d in first],
                         [(42000, T_S1, 0)])

        match_a = self.crt_match(CLIENT, DVIPA1, PROTO_TCP, 42000, 80)
        self.sw.insert(CRT_T, match_a, "IngressImpl.to_target", {"target_id": T_S1})
        self.set_slots(1, [T_S2] * N_SLOTS, update=True)

        ack_a = tcp_pkt(sport=42000, flags="A", payload=b"GET / HTTP/1.0\r\n\r\n")
        self.send(ack_a)
        self.expect(l2_forwarded(ack_a, T_S1), 2)
        syn_b = tcp_pkt(sport=42001, flags="S")
        self.send(syn_b)
        self.expect(l2_forwarded(syn_b, T_S2), 3)
        self.expect_nothing_else()

        later = self.sw.collect_digests(2, timeout=1.5)
        self.assertEqual([(d["src_port"], d["target_id"], d["flags"]) for d in later],
                         [(42001, T_S2, 0)], "only B is unpinned; A's ACK hit the CRT")
        self.assertEqual(self.sw.read_direct_counter(CRT_T, match_a), (1, len(ack_a)))
        self.assertEqual(self.sw.read_direct_counter(TARGET_T, {"meta.target_id": T_S1})[0], 2)


class CrtIdleTimeout(DvipaTest):
    """A CRT entry inserted with idle_timeout_ns = 500 ms and never hit is reported in an
    IdleTimeoutNotification; an entry without a timeout is not. No packets are sent.

    controller --P4Runtime--> [DUT]:  crt A (idle 500 ms), crt B (no timeout)
    [DUT] --stream--> controller:     IdleTimeoutNotification naming A (and never B)
    """

    def runTest(self):
        if testutils.test_params_get().get("idle_notifications", "1") == "0":
            print("SKIPPED: this server sends no idle-timeout notifications (stratum-bfrt)")
            return
        self._run()

    def _run(self):
        match_a = self.crt_match(CLIENT, DVIPA1, PROTO_TCP, 43000, 80)
        match_b = self.crt_match(CLIENT, DVIPA1, PROTO_TCP, 43001, 80)
        self.sw.insert(CRT_T, match_a, "IngressImpl.to_target", {"target_id": T_S1},
                       idle_timeout_ns=500_000_000)
        self.sw.insert(CRT_T, match_b, "IngressImpl.to_target", {"target_id": T_S1})
        key_a = match_values(self.sw.table_entry(CRT_T, match_a))
        key_b = match_values(self.sw.table_entry(CRT_T, match_b))
        crt_id = self.sw.p4info.table(CRT_T).preamble.id

        deadline = time.monotonic() + 5.0
        seen_a = False
        while time.monotonic() < deadline and not seen_a:
            try:
                note = self.sw.idle_timeouts.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            for e in note.table_entry:
                self.assertEqual(e.table_id, crt_id)
                key = match_values(e)
                self.assertNotEqual(key, key_b, "entry B has no idle timeout but was reported")
                if key == key_a:
                    seen_a = True
        self.assertTrue(seen_a, "no IdleTimeoutNotification for the idle CRT entry within 5 s")


class ForwardL2Bytes(DvipaTest):
    """forward_l2 output, byte for byte: only the destination MAC changes (TTL, checksum, IP options
    and payload untouched), and target_counter counts it.

    client --p1--> [DUT] --p2--> S1   SYN to 10.1.1.1:80 (TTL 7, TOS 0x28)
                         --p2--> S1   SYN with 4 bytes of IPv4 options (ihl 6)
                         --p2--> S1   SYN with TTL 1 (no TTL check on this path)
    """

    def runTest(self):
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=1)
        self.set_slots(1, [T_S1] * N_SLOTS)
        self.add_l2_targets()

        pkt = tcp_pkt(sport=44000, ttl=7, tos=0x28, ip_id=0xBEEF)
        self.send(pkt)
        self.expect(l2_forwarded(pkt, T_S1), 2)

        opt = tcp_pkt(sport=44001, options=[IPOption_NOP()] * 4)
        self.assertEqual(opt[IP].ihl, 6)
        self.send(opt)
        self.expect(l2_forwarded(opt, T_S1), 2)

        ttl1 = tcp_pkt(sport=44002, ttl=1)  # forward_l2 is not routing: TTL is neither checked nor changed
        self.send(ttl1)
        self.expect(l2_forwarded(ttl1, T_S1), 2)
        self.expect_nothing_else()
        self.assertEqual(self.sw.read_direct_counter(TARGET_T, {"meta.target_id": T_S1}),
                         (3, len(pkt) + len(opt) + len(ttl1)))


class EncapIpipBytes(DvipaTest):
    """encap_ipip output, byte for byte, then routed by the outer destination.

    client --p1--> [DUT] --p4--> NH4 (route 10.99.0.0/16)
      in : Ether / IP(192.0.2.10 -> 10.1.1.1, TTL 64, TOS 0x28) / TCP SYN :80
      out: Ether(dst NH4, src SW) / IP(10.99.0.1 -> 10.99.1.7, ver 4, ihl 5, TOS 0x28,
           len = inner + 20, id 0, DF, frag 0, TTL 63 (64 - 1 by the route), proto 4, checksum ok)
           / the inner IPv4 packet unchanged (TTL 64, its checksum untouched)
    A second service whose IP-in-IP target has no route for its underlay address: dropped.
    """

    def runTest(self):
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=1)
        self.add_service(DVIPA2, PROTO_TCP, 80, service_id=2)
        self.set_slots(1, [T_IPIP] * N_SLOTS)
        self.set_slots(2, [10] * N_SLOTS)
        self.sw.insert(TARGET_T, {"meta.target_id": T_IPIP}, "IngressImpl.encap_ipip",
                       {"outer_src": ip(IPIP_SRC), "outer_dst": ip(IPIP_DST)})
        self.sw.insert(TARGET_T, {"meta.target_id": 10}, "IngressImpl.encap_ipip",
                       {"outer_src": ip(IPIP_SRC), "outer_dst": ip("172.31.0.1")})
        self.add_route("10.99.0.0", 16, NH4_MAC, 4)

        pkt = tcp_pkt(sport=45000, tos=0x28, ttl=64, ip_id=0x4242, payload=b"x" * 33)
        inner = bytes(pkt[IP])
        outer = IP(version=4, ihl=5, tos=0x28, len=len(inner) + 20, id=0, flags="DF", frag=0,
                   ttl=63, proto=4, src=IPIP_SRC, dst=IPIP_DST)
        expected = frozen(Ether(dst=NH4_MAC, src=SW_MAC, type=0x0800) / outer / Raw(inner))
        out_ip = bytes(expected)[14:34]
        self.assertTrue(ones_complement_ok(out_ip))
        self.assertEqual(out_ip[:10], bytes.fromhex("4528") + (len(inner) + 20).to_bytes(2, "big")
                         + bytes.fromhex("0000 4000 3f04".replace(" ", "")))

        self.send(pkt)
        self.expect(expected, 4)
        self.expect_nothing_else()
        self.expect_dropped(tcp_pkt(dst=DVIPA2, sport=45001), why="no route to 172.31.0.1")


def full_table_answer(err):
    """Which of the two known answers to an INSERT into a full table `err` is: "resource_exhausted"
    (the P4Runtime specification: gRPC RESOURCE_EXHAUSTED, or UNKNOWN with a per-update
    RESOURCE_EXHAUSTED), "bmv2" (simple_switch_grpc: UNKNOWN with a per-update UNKNOWN, message
    "Error when adding match entry to target", space ALL-sswitch-p4org), or None."""
    if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "resource_exhausted"
    if err.code != grpc.StatusCode.UNKNOWN or not err.update_errors:
        return None
    code, message, space = err.update_errors[-1]
    if code == RESOURCE_EXHAUSTED:
        return "resource_exhausted"
    if code == UNKNOWN and (message, space) == BMV2_ADD_FAILED:
        return "bmv2"
    return None


class TableFull(DvipaTest):
    """ipv4_route holds 1024 entries (ROUTE_SIZE): the 1025th INSERT fails, and the switch keeps
    forwarding with the entries it has. The failure is answered either as the P4Runtime spec says
    (RESOURCE_EXHAUSTED) or as simple_switch_grpc does (UNKNOWN, "Error when adding match entry to
    target"); the test says which it saw, and the test parameter `full_answer` (set by run.sh from
    the target and `--flavor`) names the one this target must give.

    controller --P4Runtime--> [DUT]: 1024 x /32 routes 10.200.x.y via port 3; then one more
    client --p1--> [DUT] --p3--> NH3   TCP to 10.200.0.5 still routed (TTL - 1)
    """

    def runTest(self):
        entries = [self.sw.table_entry(ROUTE_T, {"meta.route_dst": (ip("10.200.0.0") + i, 32)},
                                       "IngressImpl.set_nexthop",
                                       {"dmac": mac(NH3_MAC), "smac": mac(SW_MAC), "port": 3})
                   for i in range(1024)]
        self.sw.write_entries(entries)
        with self.assertRaises(p4rt.P4RuntimeError) as ctx:
            self.add_route("10.201.0.1", 32, NH3_MAC, 3)
        err = ctx.exception
        seen = full_table_answer(err)
        sys.stderr.write("\nTableFull: the full table was answered as %s (%s)\n" % (seen, err))
        want = testutils.test_params_get().get("full_answer", "any")
        self.assertIsNotNone(seen, "want RESOURCE_EXHAUSTED or bmv2's UNKNOWN answer, got %s" % err)
        if want != "any":
            self.assertEqual(seen, want, "this target must answer a full table as %s" % want)
        self.assertEqual(len(self.sw.read_table(ROUTE_T)), 1024)

        p = tcp_pkt(dst="10.200.0.5", sport=46000)
        self.send(p)
        self.expect(routed(p, NH3_MAC), 3)
        self.expect_dropped(tcp_pkt(dst="10.201.0.1"), why="the route that did not fit")
        self.expect_nothing_else()


class MalformedPackets(DvipaTest):
    """Malformed or unusual packets never crash the switch and go where the P4 program says.

    client --p1--> [DUT] --p2--> S1   (service 1: 10.1.1.1:80 -> target 1)
                         --p3--> NH3  (route 10.0.0.0/8)
      dropped (parser error): Ethernet only with type IPv4; 10 bytes of IPv4; IPv4 + 8 bytes of TCP
        to the DVIPA; ihl 15 with no room for the options; ihl 4; version 6 in an IPv4 frame
      routed: a non-first fragment to 10.1.1.1:80 (fragOffset != 0: no L4 parse, not a service)
      routed with options: TTL - 1 and a checksum over header + options (ihl 15, 40 bytes)
      to the DVIPA with options: forwarded to target 1 unchanged but for the MAC
      afterwards a normal SYN still goes to S1
    """

    def runTest(self):
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=1)
        self.set_slots(1, [T_S1] * N_SLOTS)
        self.add_l2_targets()
        self.add_route("10.0.0.0", 8, NH3_MAC, 3)
        eth = bytes(Ether(dst=SW_MAC, src=CLIENT_GW_MAC, type=0x0800))
        good = tcp_pkt(sport=47000)
        ip_hdr = bytes(good[IP])[:20]
        tcp_hdr = bytes(good[TCP])[:20]

        self.expect_dropped(Ether(eth), why="no IPv4 header at all")
        self.expect_dropped(Ether(eth + ip_hdr[:10]), why="truncated IPv4")
        self.expect_dropped(Ether(eth + ip_hdr + tcp_hdr[:8]), why="truncated TCP")
        ihl15 = bytes([0x4F]) + ip_hdr[1:]
        self.expect_dropped(Ether(eth + ihl15 + tcp_hdr[:12]), why="ihl 15, options cut off")
        ihl4 = bytes([0x44]) + ip_hdr[1:]
        self.expect_dropped(Ether(eth + ihl4 + tcp_hdr), why="ihl 4 < 5")
        v6 = bytes([0x65]) + ip_hdr[1:]
        self.expect_dropped(Ether(eth + v6 + tcp_hdr), why="version 6")

        frag = frozen(Ether(dst=SW_MAC, src=CLIENT_GW_MAC)
                      / IP(src=CLIENT, dst=DVIPA1, proto=6, frag=100, ttl=20) / Raw(tcp_hdr + b"tail"))
        self.send(frag)
        self.expect(routed(frag, NH3_MAC), 3)

        opts = [IPOption_NOP()] * 40
        routed_opt = tcp_pkt(dst="10.7.7.7", sport=47001, options=opts)
        self.assertEqual(routed_opt[IP].ihl, 15)
        self.send(routed_opt)
        exp = routed(routed_opt, NH3_MAC)
        self.assertTrue(ones_complement_ok(bytes(exp[IP])[:60]))
        self.expect(exp, 3)

        dvipa_opt = tcp_pkt(sport=47002, options=[IPOption_NOP()] * 4)
        self.send(dvipa_opt)
        self.expect(l2_forwarded(dvipa_opt, T_S1), 2)

        self.send(good)
        self.expect(l2_forwarded(good, T_S1), 2)
        self.expect_nothing_else()


class ServiceWithoutTarget(DvipaTest):
    """dpt miss and target miss both drop; the service counter still counts the packets.

    client --p1--> [DUT]   service 1 (10.1.1.1:80) has no slots       -> dropped
                           service 2 (10.1.1.2:80) slots -> target 7, no target entry -> dropped
    """

    def runTest(self):
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=1)
        self.add_service(DVIPA2, PROTO_TCP, 80, service_id=2)
        self.set_slots(2, [7] * N_SLOTS)
        self.add_route("10.0.0.0", 8, NH3_MAC, 3)  # must not be used for service traffic
        self.expect_dropped(tcp_pkt(sport=48000), why="no current actual target (dpt miss)")
        self.expect_dropped(tcp_pkt(dst=DVIPA2, sport=48001), why="target 7 unknown (target miss)")
        self.assertEqual(self.sw.read_counter("IngressImpl.service_counter", 1)[0], 1)
        self.assertEqual(self.sw.read_counter("IngressImpl.service_counter", 2)[0], 1)


class DropEntriesAndDefaultRoute(DvipaTest):
    """`drop` as an entry action (a blackhole route, a target being taken out) and a table default
    changed over P4Runtime (ipv4_route's default set to set_nexthop = a default route).

    client --p1--> [DUT] --p4--> NH4    default action: set_nexthop(NH4, port 4)
      TCP to 172.16.5.5   -> port 4 by the default action (TTL - 1)
      TCP to 10.66.1.1    -> dropped (10.66.0.0/16 -> drop beats the default)
      SYN to 10.1.1.1:80  -> dropped (service 1's slots -> target 3, whose entry is drop)
    """

    def runTest(self):
        self.sw.set_default(ROUTE_T, "IngressImpl.set_nexthop",
                            {"dmac": mac(NH4_MAC), "smac": mac(SW_MAC), "port": 4})
        self.sw.insert(ROUTE_T, {"meta.route_dst": (ip("10.66.0.0"), 16)}, "IngressImpl.drop")
        self.add_service(DVIPA1, PROTO_TCP, 80, service_id=1)
        self.set_slots(1, [T_S3] * N_SLOTS)
        self.sw.insert(TARGET_T, {"meta.target_id": T_S3}, "IngressImpl.drop")

        p = tcp_pkt(dst="172.16.5.5", sport=49000)
        self.send(p)
        self.expect(routed(p, NH4_MAC), 4)
        self.expect_nothing_else()
        self.expect_dropped(tcp_pkt(dst="10.66.1.1", sport=49001), why="blackhole route")
        self.expect_dropped(tcp_pkt(sport=49002), why="target 3 is drop")
        self.assertEqual(self.sw.read_direct_counter(TARGET_T, {"meta.target_id": T_S3})[0], 1)

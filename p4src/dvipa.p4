/* -*- P4_16 -*- */
/*
 * dvipa.p4 -- the routing switch of a dynamic routable VIPA (Sysplex Distributor on a P4 switch).
 *
 * Architecture: v1model (p4c --target bmv2 --arch v1model, simple_switch_grpc).
 * The program implements docs/pipeline-contract.md exactly; p4src/README.md explains it.
 *
 *   ParserImpl -> VerifyChecksumImpl -> IngressImpl -> EgressImpl -> ComputeChecksumImpl -> DeparserImpl
 *
 * Ingress, in one line: a packet to a DVIPA:port (table dvipa) follows its pinned connection
 * (table crt, the Current Routing Table) or, when unpinned, its SYN's recorded choice (register
 * syn_pending, non-SYN TCP packets) or the slot its 5-tuple hashes to (or the service's round-robin
 * position) in the service's slot table (table dpt, the Destination Port Table's current actual
 * targets), is reported to the controller by a learn_t digest, and is sent
 * to the chosen target (table target: MAC rewrite, or IP-in-IP then routed).  Everything else is
 * routed by longest prefix (table ipv4_route).
 */
#include <core.p4>
#include <v1model.p4>

/* ----------------------------------------------------------------------------------------------
 * Sizes (the contract's "Constants")
 * -------------------------------------------------------------------------------------------- */
const bit<32> N_SLOTS      = 256;     /* slots per service in dpt; slot = value mod N_SLOTS      */
const bit<32> MAX_SERVICES = 1024;    /* service ids 0..1023: service_counter, rr_state cells   */
const bit<32> CRT_SIZE     = 65536;   /* pinned connections                                      */
const bit<32> DVIPA_SIZE   = 1024;    /* (DVIPA, protocol, port-set) entries                     */
const bit<32> DPT_SIZE     = 262144;  /* MAX_SERVICES * N_SLOTS                                  */
const bit<32> TARGET_SIZE  = 4096;    /* targets                                                 */
const bit<32> ROUTE_SIZE   = 1024;    /* IPv4 prefixes                                           */
const bit<32> SYN_PENDING_SIZE = 65536; /* syn_pending cells: (tag, target) of unpinned flows   */
const bit<32> SYN_PENDING_TAGS = 65536; /* tag = crc16 of the 5-tuple mod this (all 16 bits)    */

const bit<16> ETHERTYPE_IPV4  = 0x0800;
const bit<8>  IP_PROTO_IPIP   = 4;
const bit<8>  IP_PROTO_TCP    = 6;
const bit<8>  IP_PROTO_UDP    = 17;
const bit<8>  IPIP_TTL        = 64;
const bit<16> IPV4_BASE_BYTES = 20;

const bit<8>  METHOD_HASH        = 0;   /* distribute(method): slot from the 5-tuple crc32      */
const bit<8>  METHOD_ROUND_ROBIN = 1;   /* distribute(method): slot from rr_state[service_id]   */
const bit<8>  LEARN_FLAG_NOT_SYN = 1;   /* learn_t.flags bit 0                                   */
const bit<32> LEARN_RECEIVER     = 1;   /* digest receiver id (ignored by bmv2/P4Runtime)        */

/* Parser errors beyond core.p4's (PacketTooShort etc.): set by verify() in parse_ipv4. */
error {
    IPv4BadVersion,
    IPv4BadIHL
}

/* ----------------------------------------------------------------------------------------------
 * Headers
 * -------------------------------------------------------------------------------------------- */
typedef bit<48> mac_addr_t;
typedef bit<32> ipv4_addr_t;
typedef bit<9>  port_t;

header ethernet_t {
    mac_addr_t dstAddr;
    mac_addr_t srcAddr;
    bit<16>    etherType;
}

header ipv4_t {
    bit<4>      version;
    bit<4>      ihl;
    bit<8>      diffserv;
    bit<16>     totalLen;
    bit<16>     identification;
    bit<3>      flags;
    bit<13>     fragOffset;
    bit<8>      ttl;
    bit<8>      protocol;
    bit<16>     hdrChecksum;
    ipv4_addr_t srcAddr;
    ipv4_addr_t dstAddr;
}

/* IPv4 options: (ihl - 5) 32-bit words, at most 10 words = 320 bits. */
header ipv4_options_t {
    varbit<320> options;
}

/* TCP base header; TCP options are payload to this program. */
header tcp_t {
    bit<16> srcPort;
    bit<16> dstPort;
    bit<32> seqNo;
    bit<32> ackNo;
    bit<4>  dataOffset;
    bit<4>  res;
    bit<1>  CWR;
    bit<1>  ECE;
    bit<1>  URG;
    bit<1>  ACK;
    bit<1>  PSH;
    bit<1>  RST;
    bit<1>  SYN;
    bit<1>  FIN;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgentPtr;
}

header udp_t {
    bit<16> srcPort;
    bit<16> dstPort;
    bit<16> len;
    bit<16> checksum;
}

/* Deparse order. */
struct headers_t {
    ethernet_t     ethernet;
    ipv4_t         outer_ipv4;    /* valid only after encap_ipip */
    ipv4_t         ipv4;
    ipv4_options_t ipv4_options;
    tcp_t          tcp;
    udp_t          udp;
}

/* Digest to the controller: one per packet that found no CRT entry and got a target from dpt
 * (or from syn_pending).
 * P4Runtime delivers it as a P4Data struct whose members are these fields, in this order. */
struct learn_t {
    ipv4_addr_t src_addr;     /* client                                                         */
    ipv4_addr_t dst_addr;     /* DVIPA                                                          */
    bit<8>      protocol;     /* 6 or 17                                                        */
    bit<16>     src_port;     /* client port                                                    */
    bit<16>     dst_port;     /* DVIPA port                                                     */
    bit<16>     service_id;   /* from distribute                                                */
    bit<16>     target_id;    /* the target it was sent to: the slot's, or syn_pending's        */
    bit<8>      flags;        /* bit 0 NOT_SYN: TCP, not a SYN, and unpinned                    */
}

struct metadata_t {
    bit<16>     l4_sport;     /* tcp or udp source port, else 0                                 */
    bit<16>     l4_dport;     /* tcp or udp destination port, else 0                            */
    ipv4_addr_t route_dst;    /* the address ipv4_route looks up (outer dst after encap_ipip)   */
    bit<16>     service_id;
    bit<8>      method;
    bit<16>     slot;
    bit<16>     target_id;
    bit<1>      encap;        /* 1 after encap_ipip                                             */
    learn_t     learn;
}

/* ----------------------------------------------------------------------------------------------
 * Parser
 * -------------------------------------------------------------------------------------------- */
parser ParserImpl(packet_in packet,
                  out headers_t hdr,
                  inout metadata_t meta,
                  inout standard_metadata_t standard_metadata) {
    state start {
        packet.extract(hdr.ethernet);
        transition select(hdr.ethernet.etherType) {
            ETHERTYPE_IPV4: parse_ipv4;
            default: accept;           /* not IPv4: ingress drops it */
        }
    }

    state parse_ipv4 {
        packet.extract(hdr.ipv4);
        verify(hdr.ipv4.version == 4w4, error.IPv4BadVersion);
        verify(hdr.ipv4.ihl >= 4w5, error.IPv4BadIHL);
        transition select(hdr.ipv4.ihl) {
            4w5: parse_l4;
            default: parse_ipv4_options;
        }
    }

    state parse_ipv4_options {
        /* (ihl - 5) words of 32 bits; ihl <= 15, so at most 320 bits (the varbit's maximum). */
        packet.extract(hdr.ipv4_options, ((bit<32>)hdr.ipv4.ihl - 32w5) * 32w32);
        transition parse_l4;
    }

    state parse_l4 {
        /* Only a first (or unfragmented) fragment carries the L4 header. */
        transition select(hdr.ipv4.fragOffset, hdr.ipv4.protocol) {
            (13w0, IP_PROTO_TCP): parse_tcp;
            (13w0, IP_PROTO_UDP): parse_udp;
            default: accept;
        }
    }

    state parse_tcp {
        packet.extract(hdr.tcp);
        transition accept;
    }

    state parse_udp {
        packet.extract(hdr.udp);
        transition accept;
    }
}

/* Bad IPv4 checksums are not dropped (the contract): nothing to verify. */
control VerifyChecksumImpl(inout headers_t hdr, inout metadata_t meta) {
    apply { }
}

/* ----------------------------------------------------------------------------------------------
 * Ingress
 * -------------------------------------------------------------------------------------------- */
control IngressImpl(inout headers_t hdr,
                    inout metadata_t meta,
                    inout standard_metadata_t standard_metadata) {

    counter(MAX_SERVICES, CounterType.packets_and_bytes) service_counter;
    direct_counter(CounterType.packets_and_bytes) crt_counter;
    direct_counter(CounterType.packets_and_bytes) target_counter;
    register<bit<32>>(MAX_SERVICES) rr_state;
    /* Every method: the target chosen for a flow's SYN (or UDP packet) with the flow's tag, so
     * that the packets that follow it before its crt entry lands go to the same target even if the
     * slots (or the round-robin position) moved in between. Index = 5-tuple crc32 mod
     * SYN_PENDING_SIZE; cell = tag (crc16 of the 5-tuple) ++ target_id, bits 31..16 and 15..0;
     * target 0 = empty (target ids are >= 1). A colliding SYN overwrites the cell; the earlier
     * flow's tag then no longer matches and it falls back to the slots (best effort). */
    register<bit<32>>(SYN_PENDING_SIZE) syn_pending;

    action drop() {
        mark_to_drop(standard_metadata);
    }

    /* A service: one (DVIPA, protocol, port-set) of a VIPADISTRIBUTE statement. */
    action distribute(bit<16> service_id, bit<8> method) {
        meta.service_id = service_id;
        meta.method = method;
    }

    /* The connection's (crt) or the slot's (dpt) current actual target. */
    action to_target(bit<16> target_id) {
        meta.target_id = target_id;
    }

    /* Direct server return on a shared segment: the target holds the DVIPA on a loopback. Only
     * the destination MAC changes; the IPv4 header (TTL included) is left as it is. */
    action forward_l2(mac_addr_t dmac, port_t port) {
        hdr.ethernet.dstAddr = dmac;
        standard_metadata.egress_spec = port;
    }

    /* IP-in-IP (protocol 4) toward the target's underlay address; ipv4_route then routes the outer
     * header. The outer checksum is computed in ComputeChecksumImpl. */
    action encap_ipip(ipv4_addr_t outer_src, ipv4_addr_t outer_dst) {
        hdr.outer_ipv4.setValid();
        hdr.outer_ipv4.version = 4w4;
        hdr.outer_ipv4.ihl = 4w5;
        hdr.outer_ipv4.diffserv = hdr.ipv4.diffserv;
        hdr.outer_ipv4.totalLen = hdr.ipv4.totalLen + IPV4_BASE_BYTES;
        hdr.outer_ipv4.identification = 16w0;
        hdr.outer_ipv4.flags = 3w0b010;          /* DF */
        hdr.outer_ipv4.fragOffset = 13w0;
        hdr.outer_ipv4.ttl = IPIP_TTL;
        hdr.outer_ipv4.protocol = IP_PROTO_IPIP;
        hdr.outer_ipv4.hdrChecksum = 16w0;
        hdr.outer_ipv4.srcAddr = outer_src;
        hdr.outer_ipv4.dstAddr = outer_dst;
        meta.encap = 1w1;
    }

    /* Next hop of a routed packet; the TTL check and decrement follow in the apply block. */
    action set_nexthop(mac_addr_t dmac, mac_addr_t smac, port_t port) {
        hdr.ethernet.srcAddr = smac;
        hdr.ethernet.dstAddr = dmac;
        standard_metadata.egress_spec = port;
    }

    /* DVIPA:port -> service. PORT omitted in the configuration = l4_dport mask 0. */
    table dvipa {
        key = {
            hdr.ipv4.dstAddr  : exact;
            hdr.ipv4.protocol : exact;
            meta.l4_dport     : ternary;
        }
        actions = {
            distribute;
            @defaultonly NoAction;
        }
        default_action = NoAction();
        size = DVIPA_SIZE;
    }

    /* Current Routing Table: pinned connections. Idle entries are reported to the controller. */
    table crt {
        key = {
            hdr.ipv4.srcAddr  : exact;
            hdr.ipv4.dstAddr  : exact;
            hdr.ipv4.protocol : exact;
            meta.l4_sport     : exact;
            meta.l4_dport     : exact;
        }
        actions = {
            to_target;
            @defaultonly NoAction;
        }
        default_action = NoAction();
        size = CRT_SIZE;
        support_timeout = true;
        counters = crt_counter;
    }

    /* Slot table: N_SLOTS slots per service, filled by the controller from the DPT (weights,
     * server-reported weights, standby and draining are all slot contents). */
    table dpt {
        key = {
            meta.service_id : exact;
            meta.slot       : exact;
        }
        actions = {
            to_target;
            @defaultonly NoAction;
        }
        default_action = NoAction();
        size = DPT_SIZE;
    }

    table target {
        key = {
            meta.target_id : exact;
        }
        actions = {
            forward_l2;
            encap_ipip;
            drop;
        }
        default_action = drop();
        size = TARGET_SIZE;
        counters = target_counter;
    }

    table ipv4_route {
        key = {
            meta.route_dst : lpm;
        }
        actions = {
            set_nexthop;
            drop;
        }
        default_action = drop();
        size = ROUTE_SIZE;
    }

    apply {
        meta.l4_sport = 16w0;
        meta.l4_dport = 16w0;
        meta.route_dst = 32w0;
        meta.service_id = 16w0;
        meta.method = 8w0;
        meta.slot = 16w0;
        meta.target_id = 16w0;
        meta.encap = 1w0;
        bool do_route = false;

        if (standard_metadata.parser_error != error.NoError) {
            drop();                               /* truncated or malformed headers */
        } else if (!hdr.ipv4.isValid()) {
            drop();                               /* IPv4 router only */
        } else {
            meta.route_dst = hdr.ipv4.dstAddr;
            if (hdr.tcp.isValid()) {
                meta.l4_sport = hdr.tcp.srcPort;
                meta.l4_dport = hdr.tcp.dstPort;
            } else if (hdr.udp.isValid()) {
                meta.l4_sport = hdr.udp.srcPort;
                meta.l4_dport = hdr.udp.dstPort;
            }

            bool is_service = false;
            if (hdr.tcp.isValid() || hdr.udp.isValid()) {
                if (dvipa.apply().hit) {
                    is_service = true;
                }
            }

            if (is_service) {
                service_counter.count((bit<32>)meta.service_id);
                bool have_target = true;
                if (!crt.apply().hit) {
                    /* A TCP SYN (SYN=1, ACK=0) or a UDP packet selects from the slots and records
                     * (tag, target) in syn_pending; any other TCP packet first follows the recorded
                     * choice of its flow when the cell's tag is the flow's (no slot, no dpt,
                     * rr_state unchanged). */
                    bool not_syn = false;
                    if (hdr.tcp.isValid()) {
                        if (hdr.tcp.SYN == 1w0 || hdr.tcp.ACK == 1w1) {
                            not_syn = true;
                        }
                    }
                    bit<32> pending_idx;
                    bit<16> pending_tag;
                    hash(pending_idx, HashAlgorithm.crc32, (bit<32>)0,
                         { hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, hdr.ipv4.protocol,
                           meta.l4_sport, meta.l4_dport },
                         SYN_PENDING_SIZE);
                    hash(pending_tag, HashAlgorithm.crc16, (bit<16>)0,
                         { hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, hdr.ipv4.protocol,
                           meta.l4_sport, meta.l4_dport },
                         SYN_PENDING_TAGS);
                    bit<16> pending = 0;
                    if (not_syn) {
                        bit<32> cell;
                        syn_pending.read(cell, pending_idx);
                        if (cell[31:16] == pending_tag) {
                            pending = cell[15:0];       /* 0 = empty cell */
                        }
                    }
                    if (pending == 16w0) {
                        if (meta.method == METHOD_HASH) {
                            hash(meta.slot, HashAlgorithm.crc32, (bit<16>)0,
                                 { hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, hdr.ipv4.protocol,
                                   meta.l4_sport, meta.l4_dport },
                                 N_SLOTS);
                        } else {
                            bit<32> rr_pos;
                            rr_state.read(rr_pos, (bit<32>)meta.service_id);
                            meta.slot = (bit<16>)(rr_pos & (N_SLOTS - 1));
                            rr_state.write((bit<32>)meta.service_id, rr_pos + 1);
                        }
                    }
                    bool chosen = false;
                    if (pending != 16w0) {
                        meta.target_id = pending;
                        chosen = true;
                    } else if (dpt.apply().hit) {
                        chosen = true;
                        if (!not_syn) {
                            bit<32> new_cell = pending_tag ++ meta.target_id;
                            syn_pending.write(pending_idx, new_cell);
                        }
                    }
                    if (chosen) {
                        meta.learn.src_addr = hdr.ipv4.srcAddr;
                        meta.learn.dst_addr = hdr.ipv4.dstAddr;
                        meta.learn.protocol = hdr.ipv4.protocol;
                        meta.learn.src_port = meta.l4_sport;
                        meta.learn.dst_port = meta.l4_dport;
                        meta.learn.service_id = meta.service_id;
                        meta.learn.target_id = meta.target_id;
                        meta.learn.flags = 8w0;
                        if (not_syn) {
                            meta.learn.flags = LEARN_FLAG_NOT_SYN;
                        }
                        digest<learn_t>(LEARN_RECEIVER, meta.learn);
                    } else {
                        have_target = false;
                        drop();                   /* the service has no current actual target */
                    }
                }
                if (have_target) {
                    target.apply();               /* forward_l2 | encap_ipip | drop */
                    if (meta.encap == 1w1) {
                        meta.route_dst = hdr.outer_ipv4.dstAddr;
                        do_route = true;
                    }
                }
            } else {
                do_route = true;                  /* the switch is a plain router too */
            }
        }

        /* One ipv4_route application for both the plain router path and the encapsulated path.
         * The TTL rule goes with the action set_nexthop, also when it runs as the table's default
         * (a default route set by the controller), hence action_run rather than hit. */
        if (do_route) {
            switch (ipv4_route.apply().action_run) {
                set_nexthop: {
                    if (meta.encap == 1w1) {
                        if (hdr.outer_ipv4.ttl <= 8w1) {
                            drop();
                        } else {
                            hdr.outer_ipv4.ttl = hdr.outer_ipv4.ttl - 8w1;
                        }
                    } else {
                        if (hdr.ipv4.ttl <= 8w1) {
                            drop();
                        } else {
                            hdr.ipv4.ttl = hdr.ipv4.ttl - 8w1;
                        }
                    }
                }
            }
        }
    }
}

control EgressImpl(inout headers_t hdr,
                   inout metadata_t meta,
                   inout standard_metadata_t standard_metadata) {
    apply { }
}

/* ----------------------------------------------------------------------------------------------
 * Checksums: csum16 of every valid IPv4 header, options included. The options header is a
 * separate varbit header; the two conditional updates of ipv4.hdrChecksum keep an invalid
 * options header out of the field list (varbit fields in update_checksum are allowed by
 * v1model.p4 and exercised by p4c's checksum1-bmv2.p4 test on bmv2).
 * -------------------------------------------------------------------------------------------- */
control ComputeChecksumImpl(inout headers_t hdr, inout metadata_t meta) {
    apply {
        update_checksum(
            hdr.outer_ipv4.isValid(),
            { hdr.outer_ipv4.version,
              hdr.outer_ipv4.ihl,
              hdr.outer_ipv4.diffserv,
              hdr.outer_ipv4.totalLen,
              hdr.outer_ipv4.identification,
              hdr.outer_ipv4.flags,
              hdr.outer_ipv4.fragOffset,
              hdr.outer_ipv4.ttl,
              hdr.outer_ipv4.protocol,
              hdr.outer_ipv4.srcAddr,
              hdr.outer_ipv4.dstAddr },
            hdr.outer_ipv4.hdrChecksum,
            HashAlgorithm.csum16);
        update_checksum(
            hdr.ipv4.isValid() && !hdr.ipv4_options.isValid(),
            { hdr.ipv4.version,
              hdr.ipv4.ihl,
              hdr.ipv4.diffserv,
              hdr.ipv4.totalLen,
              hdr.ipv4.identification,
              hdr.ipv4.flags,
              hdr.ipv4.fragOffset,
              hdr.ipv4.ttl,
              hdr.ipv4.protocol,
              hdr.ipv4.srcAddr,
              hdr.ipv4.dstAddr },
            hdr.ipv4.hdrChecksum,
            HashAlgorithm.csum16);
        update_checksum(
            hdr.ipv4.isValid() && hdr.ipv4_options.isValid(),
            { hdr.ipv4.version,
              hdr.ipv4.ihl,
              hdr.ipv4.diffserv,
              hdr.ipv4.totalLen,
              hdr.ipv4.identification,
              hdr.ipv4.flags,
              hdr.ipv4.fragOffset,
              hdr.ipv4.ttl,
              hdr.ipv4.protocol,
              hdr.ipv4.srcAddr,
              hdr.ipv4.dstAddr,
              hdr.ipv4_options.options },
            hdr.ipv4.hdrChecksum,
            HashAlgorithm.csum16);
    }
}

control DeparserImpl(packet_out packet, in headers_t hdr) {
    apply {
        packet.emit(hdr.ethernet);
        packet.emit(hdr.outer_ipv4);
        packet.emit(hdr.ipv4);
        packet.emit(hdr.ipv4_options);
        packet.emit(hdr.tcp);
        packet.emit(hdr.udp);
    }
}

V1Switch(ParserImpl(),
         VerifyChecksumImpl(),
         IngressImpl(),
         EgressImpl(),
         ComputeChecksumImpl(),
         DeparserImpl()) main;

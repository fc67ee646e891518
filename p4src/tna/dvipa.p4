/* -*- P4_16 -*- */
/*
 * p4src/tna/dvipa.p4 -- the dvipa pipeline for the Tofino Native Architecture (Tofino 1, tna.p4).
 *
 * The same program as ../dvipa.p4 (v1model) and the same contract (docs/pipeline-contract.md):
 * same tables, actions, match fields, parameters and digest struct, so the controller's name map
 * resolves against this program's P4Info (names carry the `pipe.` prefix of the Pipeline
 * instance; actions do not). p4src/tna/README.md explains every TNA-specific part beside its
 * v1model counterpart, the sizes, what a Tofino 2 (t2na) build changes, and which constructs are
 * still unverified by the Tofino compiler.
 *
 *   IngressParser -> IngressImpl -> IngressDeparser  (egress bypassed: EgressParser/Egress/
 *                                                     EgressDeparser are empty)
 *
 * Compile (outside the project's machines):
 *   p4c --target tofino --arch tna --std p4-16 -o out/ \
 *       --p4runtime-files out/p4info.txtpb --p4runtime-force-std-externs p4src/tna/dvipa.p4
 */
#include <core.p4>
#include <tna.p4>

/* ----------------------------------------------------------------------------------------------
 * Sizes (README.md "Sizes": stage and SRAM reasoning)
 * -------------------------------------------------------------------------------------------- */
const bit<32> N_SLOTS      = 256;
const bit<32> MAX_SERVICES = 1024;
const bit<32> CRT_SIZE     = 262144;  /* pinned connections (v1model: 65536)                     */
const bit<32> DVIPA_SIZE   = 1024;
const bit<32> DPT_SIZE     = 262144;  /* MAX_SERVICES * N_SLOTS                                  */
const bit<32> TARGET_SIZE  = 4096;
const bit<32> ROUTE_SIZE   = 1024;
const bit<32> SYN_PENDING_SIZE = 65536;

const bit<16> ETHERTYPE_IPV4  = 0x0800;
const bit<8>  IP_PROTO_IPIP   = 4;
const bit<8>  IP_PROTO_TCP    = 6;
const bit<8>  IP_PROTO_UDP    = 17;
const bit<8>  IPIP_TTL        = 64;
const bit<16> IPV4_BASE_BYTES = 20;

const bit<8>  METHOD_HASH        = 0;
const bit<8>  LEARN_FLAG_NOT_SYN = 1;
const bit<3>  DIGEST_TYPE_LEARN  = 1;   /* ig_dprsr_md.digest_type value of learn_t              */

/* ----------------------------------------------------------------------------------------------
 * Headers: the v1model names (the P4Info match fields are `hdr.ipv4.dstAddr` etc.)
 * -------------------------------------------------------------------------------------------- */
typedef bit<48> mac_addr_t;
typedef bit<32> ipv4_addr_t;

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

/* IPv4 options without varbit (Tofino has none): one 32-bit word per stack element, (ihl - 5)
 * elements, at most 10 (ihl 15). v1model: one varbit<320> header. */
header ipv4_option_word_t {
    bit<32> word;
}

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
    ethernet_t             ethernet;
    ipv4_t                 outer_ipv4;    /* valid only after encap_ipip */
    ipv4_t                 ipv4;
    ipv4_option_word_t[10] ipv4_options;
    tcp_t                  tcp;
    udp_t                  udp;
}

/* The digest struct: members, order and widths exactly as the contract's learn_t. */
struct learn_t {
    ipv4_addr_t src_addr;
    ipv4_addr_t dst_addr;
    bit<8>      protocol;
    bit<16>     src_port;
    bit<16>     dst_port;
    bit<16>     service_id;
    bit<16>     target_id;
    bit<8>      flags;
}

/* syn_pending cell: a paired 2 x 16-bit register (v1model: one bit<32>, tag ++ target). */
struct syn_cell_t {
    bit<16> tag;
    bit<16> target;
}

/* Named `meta` in IngressImpl, so the P4Info match fields are `meta.l4_dport` etc. as on v1model. */
struct metadata_t {
    bit<16>     l4_sport;
    bit<16>     l4_dport;
    ipv4_addr_t route_dst;
    bit<16>     service_id;
    bit<8>      method;
    bit<16>     slot;
    bit<16>     target_id;
    bit<1>      encap;
    bit<1>      ipv4_bad;     /* version != 4 or ihl < 5 (v1model: verify() -> parser_error)    */
    bit<32>     flow_crc32;   /* CRC-32 of the 5-tuple: slot (low 8 bits), syn_pending index    */
    bit<16>     pending_tag;  /* CRC-16/ARC of the 5-tuple                                      */
    learn_t     learn;
}

struct egress_metadata_t { }

/* ----------------------------------------------------------------------------------------------
 * Ingress parser
 * -------------------------------------------------------------------------------------------- */
parser IngressParser(packet_in pkt,
                     out headers_t hdr,
                     out metadata_t meta,
                     out ingress_intrinsic_metadata_t ig_intr_md) {
    state start {
        pkt.extract(ig_intr_md);
        pkt.advance(PORT_METADATA_SIZE);
        meta.ipv4_bad = 0;
        transition parse_ethernet;
    }

    state parse_ethernet {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.etherType) {
            ETHERTYPE_IPV4: parse_ipv4;
            default: accept;
        }
    }

    /* No verify() on Tofino: a bad version or IHL is a metadata flag that ingress drops on. The
     * select enters the option chain at the state that extracts exactly (ihl - 5) words. */
    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        transition select(hdr.ipv4.version, hdr.ipv4.ihl) {
            (4w4, 4w5):  parse_l4;
            (4w4, 4w6):  parse_opt_1;
            (4w4, 4w7):  parse_opt_2;
            (4w4, 4w8):  parse_opt_3;
            (4w4, 4w9):  parse_opt_4;
            (4w4, 4w10): parse_opt_5;
            (4w4, 4w11): parse_opt_6;
            (4w4, 4w12): parse_opt_7;
            (4w4, 4w13): parse_opt_8;
            (4w4, 4w14): parse_opt_9;
            (4w4, 4w15): parse_opt_10;
            default: bad_ipv4;
        }
    }

    state bad_ipv4 {
        meta.ipv4_bad = 1;
        transition accept;
    }

    state parse_opt_10 { pkt.extract(hdr.ipv4_options.next); transition parse_opt_9; }
    state parse_opt_9  { pkt.extract(hdr.ipv4_options.next); transition parse_opt_8; }
    state parse_opt_8  { pkt.extract(hdr.ipv4_options.next); transition parse_opt_7; }
    state parse_opt_7  { pkt.extract(hdr.ipv4_options.next); transition parse_opt_6; }
    state parse_opt_6  { pkt.extract(hdr.ipv4_options.next); transition parse_opt_5; }
    state parse_opt_5  { pkt.extract(hdr.ipv4_options.next); transition parse_opt_4; }
    state parse_opt_4  { pkt.extract(hdr.ipv4_options.next); transition parse_opt_3; }
    state parse_opt_3  { pkt.extract(hdr.ipv4_options.next); transition parse_opt_2; }
    state parse_opt_2  { pkt.extract(hdr.ipv4_options.next); transition parse_opt_1; }
    state parse_opt_1  { pkt.extract(hdr.ipv4_options.next); transition parse_l4; }

    state parse_l4 {
        transition select(hdr.ipv4.fragOffset, hdr.ipv4.protocol) {
            (13w0, IP_PROTO_TCP): parse_tcp;
            (13w0, IP_PROTO_UDP): parse_udp;
            default: accept;
        }
    }

    state parse_tcp {
        pkt.extract(hdr.tcp);
        transition accept;
    }

    state parse_udp {
        pkt.extract(hdr.udp);
        transition accept;
    }
}

/* ----------------------------------------------------------------------------------------------
 * Ingress
 * -------------------------------------------------------------------------------------------- */
control IngressImpl(inout headers_t hdr,
                    inout metadata_t meta,
                    in ingress_intrinsic_metadata_t ig_intr_md,
                    in ingress_intrinsic_metadata_from_parser_t ig_prsr_md,
                    inout ingress_intrinsic_metadata_for_deparser_t ig_dprsr_md,
                    inout ingress_intrinsic_metadata_for_tm_t ig_tm_md) {

    Counter<bit<64>, bit<16>>(MAX_SERVICES, CounterType_t.PACKETS_AND_BYTES) service_counter;
    DirectCounter<bit<64>>(CounterType_t.PACKETS_AND_BYTES) crt_counter;
    DirectCounter<bit<64>>(CounterType_t.PACKETS_AND_BYTES) target_counter;

    /* Flow hashes with explicit polynomials, so they equal bmv2's crc32 and crc16 (contract,
     * "Flow hashes"): CRCPolynomial(coeff, reversed, msb, extended, init, xor). */
    CRCPolynomial<bit<32>>(32w0x04C11DB7, true, false, false, 32w0xFFFFFFFF, 32w0xFFFFFFFF) crc32_ieee;
    Hash<bit<32>>(HashAlgorithm_t.CUSTOM, crc32_ieee) flow_crc32;
    CRCPolynomial<bit<16>>(16w0x8005, true, false, false, 16w0x0000, 16w0x0000) crc16_arc;
    Hash<bit<16>>(HashAlgorithm_t.CUSTOM, crc16_arc) flow_crc16;

    /* Round-robin position per service: one RegisterAction runs per packet. */
    Register<bit<32>, bit<16>>(MAX_SERVICES, 0) rr_state;
    RegisterAction<bit<32>, bit<16>, bit<32>>(rr_state) rr_next = {
        void apply(inout bit<32> value, out bit<32> rv) {
            rv = value;
            value = value + 1;
        }
    };
    RegisterAction<bit<32>, bit<16>, bit<32>>(rr_state) rr_peek = {
        void apply(inout bit<32> value, out bit<32> rv) {
            rv = value;
        }
    };

    /* syn_pending: (tag, target) of the last SYN/UDP flow per index; one RegisterAction per
     * packet, placed after dpt (the record needs dpt's target). */
    Register<syn_cell_t, bit<16>>(SYN_PENDING_SIZE, {16w0, 16w0}) syn_pending;
    RegisterAction<syn_cell_t, bit<16>, bit<16>>(syn_pending) syn_pending_lookup = {
        void apply(inout syn_cell_t cell, out bit<16> rv) {
            if (cell.tag == meta.pending_tag) {
                rv = cell.target;
            } else {
                rv = 16w0;
            }
        }
    };
    RegisterAction<syn_cell_t, bit<16>, bit<16>>(syn_pending) syn_pending_record = {
        void apply(inout syn_cell_t cell) {
            cell.tag = meta.pending_tag;
            cell.target = meta.target_id;
        }
    };

    action drop() {
        ig_dprsr_md.drop_ctl = 3w1;
    }

    action distribute(bit<16> service_id, bit<8> method) {
        meta.service_id = service_id;
        meta.method = method;
    }

    /* Shared by crt and dpt (as on v1model), so it cannot call crt_counter.count(): README,
     * "Direct counters". */
    action to_target(bit<16> target_id) {
        meta.target_id = target_id;
    }

    action forward_l2(mac_addr_t dmac, PortId_t port) {
        hdr.ethernet.dstAddr = dmac;
        ig_tm_md.ucast_egress_port = port;
        target_counter.count();
    }

    action encap_ipip(ipv4_addr_t outer_src, ipv4_addr_t outer_dst) {
        hdr.outer_ipv4.setValid();
        hdr.outer_ipv4.version = 4w4;
        hdr.outer_ipv4.ihl = 4w5;
        hdr.outer_ipv4.diffserv = hdr.ipv4.diffserv;
        hdr.outer_ipv4.totalLen = hdr.ipv4.totalLen + IPV4_BASE_BYTES;
        hdr.outer_ipv4.identification = 16w0;
        hdr.outer_ipv4.flags = 3w0b010;
        hdr.outer_ipv4.fragOffset = 13w0;
        hdr.outer_ipv4.ttl = IPIP_TTL;
        hdr.outer_ipv4.protocol = IP_PROTO_IPIP;
        hdr.outer_ipv4.hdrChecksum = 16w0;
        hdr.outer_ipv4.srcAddr = outer_src;
        hdr.outer_ipv4.dstAddr = outer_dst;
        meta.encap = 1w1;
        target_counter.count();
    }

    action set_nexthop(mac_addr_t dmac, mac_addr_t smac, PortId_t port) {
        hdr.ethernet.srcAddr = smac;
        hdr.ethernet.dstAddr = dmac;
        ig_tm_md.ucast_egress_port = port;
    }

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

    /* v1model: support_timeout = true. */
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
        idle_timeout = true;
        counters = crt_counter;
    }

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
        ig_tm_md.bypass_egress = 1w1;            /* egress does nothing: skip it */
        bool do_route = false;

        if (ig_prsr_md.parser_err != PARSER_ERROR_OK || meta.ipv4_bad == 1w1) {
            drop();
        } else if (!hdr.ipv4.isValid()) {
            drop();
        } else {
            meta.route_dst = hdr.ipv4.dstAddr;
            if (hdr.tcp.isValid()) {
                meta.l4_sport = hdr.tcp.srcPort;
                meta.l4_dport = hdr.tcp.dstPort;
            } else if (hdr.udp.isValid()) {
                meta.l4_sport = hdr.udp.srcPort;
                meta.l4_dport = hdr.udp.dstPort;
            }
            /* Both hashes unconditionally (a hash unit per packet is free; it keeps them off the
             * crt -> dpt dependency chain). */
            meta.flow_crc32 = flow_crc32.get({ hdr.ipv4.srcAddr, hdr.ipv4.dstAddr,
                                               hdr.ipv4.protocol, meta.l4_sport, meta.l4_dport });
            meta.pending_tag = flow_crc16.get({ hdr.ipv4.srcAddr, hdr.ipv4.dstAddr,
                                                hdr.ipv4.protocol, meta.l4_sport, meta.l4_dport });

            bool is_service = false;
            if (hdr.tcp.isValid() || hdr.udp.isValid()) {
                if (dvipa.apply().hit) {
                    is_service = true;
                }
            }

            if (is_service) {
                service_counter.count(meta.service_id);
                bool have_target = true;
                if (!crt.apply().hit) {
                    bool not_syn = false;
                    if (hdr.tcp.isValid()) {
                        if (hdr.tcp.SYN == 1w0 || hdr.tcp.ACK == 1w1) {
                            not_syn = true;
                        }
                    }
                    /* The slot for every unpinned packet. A non-SYN packet only peeks at the
                     * round-robin position (TNA difference, contract "TNA"). */
                    if (meta.method == METHOD_HASH) {
                        meta.slot = (bit<16>)meta.flow_crc32[7:0];
                    } else {
                        bit<32> rr_pos;
                        if (not_syn) {
                            rr_pos = rr_peek.execute(meta.service_id);
                        } else {
                            rr_pos = rr_next.execute(meta.service_id);
                        }
                        meta.slot = (bit<16>)rr_pos[7:0];
                    }
                    bool slot_hit = dpt.apply().hit;
                    bit<16> pending = 16w0;
                    if (not_syn) {
                        pending = syn_pending_lookup.execute(meta.flow_crc32[15:0]);
                    } else if (slot_hit) {
                        syn_pending_record.execute(meta.flow_crc32[15:0]);
                    }
                    bool chosen = false;
                    if (pending != 16w0) {
                        meta.target_id = pending;
                        chosen = true;
                    } else if (slot_hit) {
                        chosen = true;
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
                        ig_dprsr_md.digest_type = DIGEST_TYPE_LEARN;
                    } else {
                        have_target = false;
                        drop();
                    }
                }
                if (have_target) {
                    target.apply();
                    if (meta.encap == 1w1) {
                        meta.route_dst = hdr.outer_ipv4.dstAddr;
                        do_route = true;
                    }
                }
            } else {
                do_route = true;
            }
        }

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

/* ----------------------------------------------------------------------------------------------
 * Ingress deparser: digest, checksums (v1model: digest() in ingress, ComputeChecksumImpl)
 * -------------------------------------------------------------------------------------------- */
control IngressDeparser(packet_out pkt,
                        inout headers_t hdr,
                        in metadata_t meta,
                        in ingress_intrinsic_metadata_for_deparser_t ig_dprsr_md) {
    /* The form the Tofino compiler accepted in ../shared/p4c-out/tofino-sample/features.p4. The
     * P4Info digest is named after this instance; its type_spec names the struct learn_t. */
    Digest<learn_t>() learn_digest;
    Checksum() outer_ipv4_checksum;
    Checksum() ipv4_checksum;

    apply {
        if (ig_dprsr_md.digest_type == DIGEST_TYPE_LEARN) {
            learn_digest.pack(meta.learn);
        }
        if (hdr.outer_ipv4.isValid()) {
            hdr.outer_ipv4.hdrChecksum = outer_ipv4_checksum.update({
                hdr.outer_ipv4.version, hdr.outer_ipv4.ihl, hdr.outer_ipv4.diffserv,
                hdr.outer_ipv4.totalLen, hdr.outer_ipv4.identification, hdr.outer_ipv4.flags,
                hdr.outer_ipv4.fragOffset, hdr.outer_ipv4.ttl, hdr.outer_ipv4.protocol,
                hdr.outer_ipv4.srcAddr, hdr.outer_ipv4.dstAddr });
        }
        /* Option words of invalid stack elements contribute nothing (deparser checksum entries
         * are gated by header validity: README, "Unverified"). */
        if (hdr.ipv4.isValid()) {
            hdr.ipv4.hdrChecksum = ipv4_checksum.update({
                hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.totalLen,
                hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.fragOffset,
                hdr.ipv4.ttl, hdr.ipv4.protocol, hdr.ipv4.srcAddr, hdr.ipv4.dstAddr,
                hdr.ipv4_options[0].word, hdr.ipv4_options[1].word, hdr.ipv4_options[2].word,
                hdr.ipv4_options[3].word, hdr.ipv4_options[4].word, hdr.ipv4_options[5].word,
                hdr.ipv4_options[6].word, hdr.ipv4_options[7].word, hdr.ipv4_options[8].word,
                hdr.ipv4_options[9].word });
        }
        pkt.emit(hdr);
    }
}

/* ----------------------------------------------------------------------------------------------
 * Egress: bypassed (ig_tm_md.bypass_egress = 1); TNA still requires the three blocks.
 * -------------------------------------------------------------------------------------------- */
parser EgressParser(packet_in pkt,
                    out headers_t hdr,
                    out egress_metadata_t eg_md,
                    out egress_intrinsic_metadata_t eg_intr_md) {
    state start {
        pkt.extract(eg_intr_md);
        transition accept;
    }
}

control Egress(inout headers_t hdr,
               inout egress_metadata_t eg_md,
               in egress_intrinsic_metadata_t eg_intr_md,
               in egress_intrinsic_metadata_from_parser_t eg_prsr_md,
               inout egress_intrinsic_metadata_for_deparser_t eg_dprsr_md,
               inout egress_intrinsic_metadata_for_output_port_t eg_oport_md) {
    apply { }
}

control EgressDeparser(packet_out pkt,
                       inout headers_t hdr,
                       in egress_metadata_t eg_md,
                       in egress_intrinsic_metadata_for_deparser_t eg_dprsr_md) {
    apply {
        pkt.emit(hdr);
    }
}

Pipeline(IngressParser(),
         IngressImpl(),
         IngressDeparser(),
         EgressParser(),
         Egress(),
         EgressDeparser()) pipe;

Switch(pipe) main;

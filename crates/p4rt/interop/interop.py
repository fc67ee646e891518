#!/usr/bin/env python3
"""P4Runtime interop test: the Rust client (crates/p4rt) against a recording P4Runtime server
written on the official `p4runtime` + `grpcio` Python packages.

The server records every request the Rust client sends and answers with official-binding
messages: arbitration, a pipeline cookie, per-update Write errors (google.rpc.Status with
p4.v1.Error details in grpc-status-details-bin), streamed reads, a digest list, an idle-timeout
notification, a packet-in and a stream error; it drops the stream once on request to exercise
reconnection. After the client exits, both directions are checked field by field:
  * what the server decoded equals what the client meant (expected messages are rebuilt here by
    name from the official P4Info parse and compared as whole protobuf messages);
  * what the client printed (its decoding of the server's answers) equals what the server sent;
  * the client's request log parses with the official text format and equals the requests.

Usage: interop.py CLIENT_BINARY P4INFO_TXTPB
       interop.py --serve PORT P4INFO_TXTPB   (serve without recording, e.g. for bench_write)
The same scenario against a real dvipa-switch: switch_interop.py (which imports this module).
Prints one PASS/FAIL line per check and a final "N passed, N failed" line; exits 1 on failure.
"""
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from google.protobuf import any_pb2, descriptor_pb2, text_format
from google.rpc import code_pb2, status_pb2
from p4.config.v1 import p4info_pb2, p4types_pb2
from p4.v1 import p4data_pb2, p4runtime_pb2 as p4r, p4runtime_pb2_grpc

# The scenario both sides agree on (the Rust driver has the same constants).
DEVICE_ID = 3
ROLE = "dvipa"
ELECTION = (1, 5)  # (high, low)
COOKIE = 0xC0FFEE
DEVICE_CONFIG = b"dvipa-bmv2-json"
CLIENT_IP = "192.168.1.10"
VIP = "10.0.0.1"
DIGEST_LIST_ID = 42
DIGEST_RECORDS = [
    dict(src_addr="192.168.1.20", dst_addr=VIP, protocol=6, src_port=5555, dst_port=80,
         service_id=3, target_id=7, flags=0),
    dict(src_addr="192.168.1.21", dst_addr=VIP, protocol=17, src_port=0, dst_port=53,
         service_id=65535, target_id=0, flags=1),
]
IDLE_SPORT = 40001
IDLE_TIMESTAMP = 777
PACKET_IN = (b"\x01\x02hello", [(1, b"\x05")])
DUP_SPACE, DUP_CODE = "dvipa-interop", 17


def ip(a):
    return int.from_bytes(bytes(int(x) for x in a.split(".")), "big")


def enc(value, bitwidth):
    """Canonical P4Runtime bytestring (shortest, zero = one 0x00 byte), width-checked."""
    if isinstance(value, str):
        value = ip(value) if "." in value else int(value.replace(":", ""), 16)
    assert 0 <= value < (1 << bitwidth), (value, bitwidth)
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


class Info:
    """Name lookups on the official P4Info parse."""

    def __init__(self, path):
        with open(path) as f:
            self.msg = text_format.Parse(f.read(), p4info_pb2.P4Info())
        self.tables = {t.preamble.name: t for t in self.msg.tables}
        self.actions = {a.preamble.name: a for a in self.msg.actions}
        self.digests = {d.preamble.name: d for d in self.msg.digests}
        self.counters = {c.preamble.name: c for c in self.msg.counters}

    def table_entry(self, table, matches, action=None, params=(), priority=0, idle_ns=0):
        t = self.tables[table]
        e = p4r.TableEntry(table_id=t.preamble.id, priority=priority, idle_timeout_ns=idle_ns)
        fields = {f.name: f for f in t.match_fields}
        for name, kind, *vals in matches:  # in field-id order
            f = fields[name]
            m = e.match.add(field_id=f.id)
            if kind == "exact":
                m.exact.value = enc(vals[0], f.bitwidth)
            elif kind == "ternary":
                m.ternary.value = enc(vals[0], f.bitwidth)
                m.ternary.mask = enc(vals[1], f.bitwidth)
            elif kind == "lpm":
                m.lpm.value = enc(vals[0], f.bitwidth)
                m.lpm.prefix_len = vals[1]
        if action:
            a = self.actions[action]
            e.action.action.action_id = a.preamble.id
            pw = {p.name: p for p in a.params}
            for pname, v in params:
                e.action.action.params.add(param_id=pw[pname].id, value=enc(v, pw[pname].bitwidth))
        return e

    def crt(self, sport, target):
        return self.table_entry(
            "IngressImpl.crt",
            [("hdr.ipv4.srcAddr", "exact", CLIENT_IP), ("hdr.ipv4.dstAddr", "exact", VIP),
             ("hdr.ipv4.protocol", "exact", 6), ("meta.l4_sport", "exact", sport),
             ("meta.l4_dport", "exact", 80)],
            "IngressImpl.to_target", [("target_id", target)], idle_ns=500_000_000)

    def target(self, dmac, port):
        return self.table_entry(
            "IngressImpl.target", [("meta.target_id", "exact", 7)], "IngressImpl.forward_l2",
            [("dmac", dmac), ("port", port)])

    def dvipa(self):
        return self.table_entry(
            "IngressImpl.dvipa",
            [("hdr.ipv4.dstAddr", "exact", VIP), ("hdr.ipv4.protocol", "exact", 6),
             ("meta.l4_dport", "ternary", 80, 0xFFFF)],
            "IngressImpl.distribute", [("service_id", 3), ("method", 0)], priority=10)

    def route(self):
        return self.table_entry(
            "IngressImpl.ipv4_route", [("meta.route_dst", "lpm", "10.1.0.0", 16)],
            "IngressImpl.set_nexthop",
            [("dmac", "02:00:00:00:01:01"), ("smac", "02:00:00:00:01:02"), ("port", 2)])

    def digest_entry(self):
        """The DigestEntry batch 1 writes."""
        d = p4r.DigestEntry(digest_id=self.digests["learn_t"].preamble.id)
        d.config.max_timeout_ns = 1_000_000
        d.config.max_list_size = 10
        d.config.ack_timeout_ns = 1_000_000_000
        return d

    def digest_members(self, name):
        d = self.digests[name]
        st = self.msg.type_info.structs[d.type_spec.struct.name]
        return [(m.name, m.type_spec.bitstring.bit.bitwidth) for m in st.members]


def entry_key(e):
    return (e.table_id, tuple(m.SerializeToString() for m in e.match), e.priority)


class RecordingServer(p4runtime_pb2_grpc.P4RuntimeServicer):
    def __init__(self, info, record=True):
        self.info = info
        self.record = record
        self.lock = threading.Lock()
        self.unary = []  # (rpc, request) in arrival order
        self.stream = []  # StreamMessageRequest in arrival order
        self.write_results = []  # per Write: list of canonical codes answered
        self.pipeline = None
        self.entries = {}  # key -> TableEntry
        self.digest_cfg = {}
        self.streams_opened = 0

    def _rec(self, rpc, req):
        if not self.record:
            return
        c = type(req)()
        c.CopyFrom(req)
        with self.lock:
            self.unary.append((rpc, c))

    def Capabilities(self, request, context):
        self._rec("Capabilities", request)
        return p4r.CapabilitiesResponse(p4runtime_api_version="1.4.1")

    def GetForwardingPipelineConfig(self, request, context):
        self._rec("GetForwardingPipelineConfig", request)
        if self.pipeline is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no forwarding pipeline config set")
        r = p4r.GetForwardingPipelineConfigResponse()
        r.config.cookie.CopyFrom(self.pipeline.cookie)
        return r

    def SetForwardingPipelineConfig(self, request, context):
        self._rec("SetForwardingPipelineConfig", request)
        self.pipeline = request.config
        return p4r.SetForwardingPipelineConfigResponse()

    def Write(self, request, context):
        self._rec("Write", request)
        errors = []
        for u in request.updates:
            kind = u.entity.WhichOneof("entity")
            code, msg = code_pb2.OK, ""
            if kind == "digest_entry":
                self.digest_cfg[u.entity.digest_entry.digest_id] = u.entity.digest_entry
            elif kind == "table_entry":
                e = u.entity.table_entry
                k = entry_key(e)
                if u.type == p4r.Update.INSERT:
                    if k in self.entries:
                        code, msg = code_pb2.ALREADY_EXISTS, "entry already exists in table %d" % e.table_id
                    else:
                        self.entries[k] = e
                elif u.type == p4r.Update.MODIFY:
                    if k in self.entries:
                        self.entries[k] = e
                    else:
                        code, msg = code_pb2.NOT_FOUND, "no such entry to modify"
                elif u.type == p4r.Update.DELETE:
                    if k in self.entries:
                        del self.entries[k]
                    else:
                        code, msg = code_pb2.NOT_FOUND, "no such entry to delete"
            else:
                code, msg = code_pb2.UNIMPLEMENTED, "entity %s not supported" % kind
            err = p4r.Error(canonical_code=code, message=msg)
            if code == code_pb2.ALREADY_EXISTS:
                err.space, err.code = DUP_SPACE, DUP_CODE
            errors.append(err)
        with self.lock:
            self.write_results.append([e.canonical_code for e in errors])
        if any(e.canonical_code != code_pb2.OK for e in errors):
            st = status_pb2.Status(code=code_pb2.UNKNOWN, message="write failed")
            for e in errors:
                a = any_pb2.Any()
                a.Pack(e)
                st.details.append(a)
            context.set_trailing_metadata((("grpc-status-details-bin", st.SerializeToString()),))
            context.set_code(grpc.StatusCode.UNKNOWN)
            context.set_details("write failed")
        return p4r.WriteResponse()

    def Read(self, request, context):
        self._rec("Read", request)
        out = []
        for ent in request.entities:
            kind = ent.WhichOneof("entity")
            if kind == "table_entry":
                tid = ent.table_entry.table_id
                for e in self.entries.values():
                    if tid == 0 or e.table_id == tid:
                        out.append(p4r.Entity(table_entry=e))
            elif kind == "counter_entry":
                cid = ent.counter_entry.counter_id
                for idx, pk, by in ((3, 10, 1500), (4, 2, 128)):
                    c = p4r.CounterEntry(counter_id=cid)
                    c.index.index = idx
                    c.data.packet_count, c.data.byte_count = pk, by
                    out.append(p4r.Entity(counter_entry=c))
        # two entities per response, to exercise the streamed read
        for i in range(0, len(out), 2):
            yield p4r.ReadResponse(entities=out[i:i + 2])

    def _stream_extras(self):
        info = self.info
        learn = info.digests["learn_t"]
        dl = p4r.DigestList(digest_id=learn.preamble.id, list_id=DIGEST_LIST_ID, timestamp=12345)
        members = info.digest_members("learn_t")
        for rec in DIGEST_RECORDS:
            d = dl.data.add()
            for name, width in members:
                d.struct.members.add(bitstring=enc(rec[name], width))
        idle = p4r.IdleTimeoutNotification(timestamp=IDLE_TIMESTAMP)
        idle.table_entry.append(info.crt(IDLE_SPORT, 8))
        pin = p4r.PacketIn(payload=PACKET_IN[0])
        for mid, val in PACKET_IN[1]:
            pin.metadata.add(metadata_id=mid, value=val)
        err = p4r.StreamError(canonical_code=code_pb2.INVALID_ARGUMENT, message="bad ack")
        err.digest_list_ack.digest_list_ack.digest_id = learn.preamble.id
        err.digest_list_ack.digest_list_ack.list_id = DIGEST_LIST_ID - 1
        return [p4r.StreamMessageResponse(digest=dl),
                p4r.StreamMessageResponse(idle_timeout_notification=idle),
                p4r.StreamMessageResponse(packet=pin),
                p4r.StreamMessageResponse(error=err)]

    def StreamChannel(self, request_iterator, context):
        with self.lock:
            first = self.streams_opened == 0
            self.streams_opened += 1
        out = queue.Queue()

        def reader():
            try:
                for req in request_iterator:
                    c = p4r.StreamMessageRequest()
                    c.CopyFrom(req)
                    with self.lock:
                        self.stream.append(c)
                    which = req.WhichOneof("update")
                    if which == "arbitration":
                        a = p4r.MasterArbitrationUpdate()
                        a.CopyFrom(req.arbitration)
                        a.status.code = code_pb2.OK
                        out.put(p4r.StreamMessageResponse(arbitration=a))
                        if first:
                            for m in self._stream_extras():
                                out.put(m)
                    elif which == "packet" and req.packet.payload == b"drop-stream":
                        out.put(None)
                        return
            except grpc.RpcError:
                pass
            out.put(None)

        threading.Thread(target=reader, daemon=True).start()
        while True:
            m = out.get()
            if m is None:
                return
            yield m


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def eq(self, name, got, want):
        if got == want:
            self.passed += 1
            print("PASS %s" % name)
        else:
            self.failed += 1
            print("FAIL %s\n  got:  %r\n  want: %r" % (name, got, want))

    def match(self, name, got, pattern):
        """`got` is a string that `pattern` matches in full."""
        if isinstance(got, str) and re.fullmatch(pattern, got):
            self.passed += 1
            print("PASS %s" % name)
        else:
            self.failed += 1
            print("FAIL %s\n  got:  %r\n  want: /%s/" % (name, got, pattern))


def parse_log(path):
    """Request log -> [(rpc, text)]."""
    with open(path) as f:
        text = f.read()
    parts = re.split(r"^\[\d+\.\d+\] (\w+)\n", text, flags=re.M)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


LOG_TYPES = {
    "Capabilities": p4r.CapabilitiesRequest,
    "GetForwardingPipelineConfig": p4r.GetForwardingPipelineConfigRequest,
    "SetForwardingPipelineConfig": p4r.SetForwardingPipelineConfigRequest,
    "Write": p4r.WriteRequest,
    "Read": p4r.ReadRequest,
    "StreamChannel": p4r.StreamMessageRequest,
}


def serve_forever(port, p4info_path):
    srv = RecordingServer(Info(p4info_path), record=False)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    p4runtime_pb2_grpc.add_P4RuntimeServicer_to_server(srv, server)
    server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("serving on 127.0.0.1:%d" % port, flush=True)
    server.wait_for_termination()


def official_files():
    """FileDescriptorProtos of the official bindings, by file name."""
    out = {}
    for mod in (p4r, p4data_pb2, p4info_pb2, p4types_pb2, status_pb2, code_pb2):
        fd = descriptor_pb2.FileDescriptorProto()
        mod.DESCRIPTOR.CopyToProto(fd)
        out[fd.name] = fd
    return out


def schema_facts(fd):
    """Every wire-relevant fact of a file: package, dependencies, messages (fields with number,
    type, label, type name, oneof, proto3-optional, deprecated; nested types; enums), enums,
    services. Comments and options other than `deprecated` are not facts of the wire format."""
    facts = {"package": fd.package, "deps": sorted(fd.dependency), "syntax": fd.syntax or "proto2"}

    def enum(e, prefix):
        return {prefix + e.name: [(v.name, v.number) for v in e.value]}

    def msg(m, prefix):
        name = prefix + m.name
        d = {name: {
            "fields": sorted((f.name, f.number, f.type, f.label, f.type_name,
                              m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else "",
                              f.proto3_optional, f.options.deprecated) for f in m.field),
            "map_entry": m.options.map_entry,
            "reserved": sorted((r.start, r.end) for r in m.reserved_range),
        }}
        for n in m.nested_type:
            d.update(msg(n, name + "."))
        for e in m.enum_type:
            d.update(enum(e, name + "."))
        return d

    for m in fd.message_type:
        facts.update(msg(m, ""))
    for e in fd.enum_type:
        facts.update(enum(e, ""))
    for s in fd.service:
        facts["service " + s.name] = sorted((x.name, x.input_type, x.output_type, x.client_streaming,
                                             x.server_streaming) for x in s.method)
    return facts


def check_descriptors(c, client):
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        subprocess.run([client, "--descriptors", f.name], check=True, timeout=30)
        fds = descriptor_pb2.FileDescriptorSet.FromString(open(f.name, "rb").read())
    ours = {fd.name: fd for fd in fds.file}
    for name, official in sorted(official_files().items()):
        if name not in ours:
            c.eq("descriptor %s present" % name, False, True)
            continue
        a, b = schema_facts(ours[name]), schema_facts(official)
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        c.eq("descriptor %s: %d definitions identical to the official bindings" % (name, len(b)),
             [(k, a.get(k), b.get(k)) for k in diff], [])


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve_forever(int(sys.argv[2]), sys.argv[3])
        return
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    client, p4info_path = sys.argv[1], sys.argv[2]
    info = Info(p4info_path)
    srv = RecordingServer(info)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    p4runtime_pb2_grpc.add_P4RuntimeServicer_to_server(srv, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    logdir = tempfile.mkdtemp(prefix="p4rt-interop-")
    log_path = os.path.join(logdir, "switch-3.log")
    try:
        proc = subprocess.run([client, "127.0.0.1:%d" % port, p4info_path, log_path],
                              capture_output=True, text=True, timeout=60)
    finally:
        server.stop(grace=None)
    sys.stderr.write(proc.stderr)
    print("--- client output ---\n" + proc.stdout + "---------------------")
    out = {}
    for line in proc.stdout.splitlines():
        key, _, rest = line.partition(" ")
        if key in ("batch2", "digest_rec"):
            idx, _, rest = rest.partition(" ")
            key = "%s %s" % (key, idx)
        out[key] = rest

    c = Checks()
    check_descriptors(c, client)
    c.eq("client exit status", proc.returncode, 0)
    election = p4r.Uint128(high=ELECTION[0], low=ELECTION[1])

    # ---- what the server decoded (client -> server) ----
    arbs = [m.arbitration for m in srv.stream if m.WhichOneof("update") == "arbitration"]
    c.eq("first stream message is arbitration",
         srv.stream[0].WhichOneof("update") if srv.stream else None, "arbitration")
    c.eq("arbitration count (initial + after reconnect)", len(arbs), 2)
    for i, a in enumerate(arbs):
        c.eq("arbitration[%d] device_id" % i, a.device_id, DEVICE_ID)
        c.eq("arbitration[%d] role.name" % i, a.role.name, ROLE)
        c.eq("arbitration[%d] election_id" % i, a.election_id, election)
        c.eq("arbitration[%d] no status" % i, a.HasField("status"), False)

    by_rpc = {}
    for rpc, req in srv.unary:
        by_rpc.setdefault(rpc, []).append(req)
    c.eq("Capabilities calls", len(by_rpc.get("Capabilities", [])), 1)
    gets = by_rpc.get("GetForwardingPipelineConfig", [])
    c.eq("GetForwardingPipelineConfig calls", len(gets), 2)
    for i, g in enumerate(gets):
        c.eq("Get[%d] device_id" % i, g.device_id, DEVICE_ID)
        c.eq("Get[%d] response_type" % i, g.response_type,
             p4r.GetForwardingPipelineConfigRequest.COOKIE_ONLY)
    sets = by_rpc.get("SetForwardingPipelineConfig", [])
    c.eq("SetForwardingPipelineConfig calls (second push skipped by cookie)", len(sets), 1)
    if sets:
        s = sets[0]
        c.eq("Set device_id", s.device_id, DEVICE_ID)
        c.eq("Set role", s.role, ROLE)
        c.eq("Set election_id", s.election_id, election)
        c.eq("Set action", s.action, p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT)
        c.eq("Set cookie", s.config.cookie.cookie, COOKIE)
        c.eq("Set p4_device_config", s.config.p4_device_config, DEVICE_CONFIG)
        c.eq("Set p4info equals the official parse of the .txtpb", s.config.p4info, info.msg)

    writes = by_rpc.get("Write", [])
    c.eq("Write calls", len(writes), 5)
    for i, w in enumerate(writes):
        c.eq("Write[%d] device_id/role/election_id/atomicity" % i,
             (w.device_id, w.role, w.election_id, w.atomicity),
             (DEVICE_ID, ROLE, election, p4r.WriteRequest.CONTINUE_ON_ERROR))
    I, M, D = p4r.Update.INSERT, p4r.Update.MODIFY, p4r.Update.DELETE
    learn_id = info.digests["learn_t"].preamble.id
    expected_writes = [
        [(I, p4r.Entity(digest_entry=info.digest_entry())),
         (I, p4r.Entity(table_entry=info.crt(40000, 7))),
         (I, p4r.Entity(table_entry=info.crt(40001, 8))),
         (I, p4r.Entity(table_entry=info.crt(40002, 9))),
         (I, p4r.Entity(table_entry=info.target("02:00:00:00:00:07", 1))),
         (I, p4r.Entity(table_entry=info.dvipa())),
         (I, p4r.Entity(table_entry=info.route()))],
        [(I, p4r.Entity(table_entry=info.crt(40003, 7))),
         (I, p4r.Entity(table_entry=info.crt(40000, 7))),
         (M, p4r.Entity(table_entry=info.target("02:00:00:00:00:17", 3)))],
        [(I, p4r.Entity(table_entry=info.crt(40000, 7)))],
        [(D, p4r.Entity(table_entry=info.crt(50000, 1)))],
        [(D, p4r.Entity(table_entry=info.crt(40002, 9)))],
    ]
    for wi, (w, exp) in enumerate(zip(writes, expected_writes)):
        c.eq("Write[%d] update count" % wi, len(w.updates), len(exp))
        for ui, (u, (typ, ent)) in enumerate(zip(w.updates, exp)):
            c.eq("Write[%d] update[%d] type" % (wi, ui), u.type, typ)
            c.eq("Write[%d] update[%d] entity" % (wi, ui), u.entity, ent)
    c.eq("server answered per update", srv.write_results,
         [[0] * 7, [0, code_pb2.ALREADY_EXISTS, 0], [code_pb2.ALREADY_EXISTS],
          [code_pb2.NOT_FOUND], [0]])

    reads = by_rpc.get("Read", [])
    c.eq("Read calls", len(reads), 3)
    crt_id = info.tables["IngressImpl.crt"].preamble.id
    sc_id = info.counters["IngressImpl.service_counter"].preamble.id
    want_reads = [p4r.Entity(table_entry=p4r.TableEntry(table_id=crt_id)),
                  p4r.Entity(table_entry=p4r.TableEntry()),
                  p4r.Entity(counter_entry=p4r.CounterEntry(counter_id=sc_id))]
    for i, (r, want) in enumerate(zip(reads, want_reads)):
        c.eq("Read[%d] device_id/role" % i, (r.device_id, r.role), (DEVICE_ID, ROLE))
        c.eq("Read[%d] entities (wildcard)" % i, list(r.entities), [want])

    acks = [m.digest_ack for m in srv.stream if m.WhichOneof("update") == "digest_ack"]
    c.eq("DigestListAck received", [(a.digest_id, a.list_id) for a in acks],
         [(learn_id, DIGEST_LIST_ID)])
    pkts = [m.packet for m in srv.stream if m.WhichOneof("update") == "packet"]
    want_po = p4r.PacketOut(payload=b"drop-stream")
    want_po.metadata.add(metadata_id=1, value=b"\x01")
    c.eq("PacketOut received", pkts, [want_po])

    # ---- what the client decoded (server -> client) ----
    c.eq("client: mastership", out.get("mastership"), "Primary")
    c.eq("client: capabilities", out.get("capabilities"), "1.4.1")
    c.eq("client: first push", out.get("pipeline_first"), "Pushed")
    c.eq("client: second push skipped", out.get("pipeline_second"), "AlreadyInstalled")
    c.eq("client: batch1", out.get("batch1_ok"), "7")
    crt_tid = info.tables["IngressImpl.crt"].preamble.id
    c.eq("client: batch2 update 0", out.get("batch2 0"), "ok")
    c.eq("client: batch2 update 1 error decoded from p4.v1.Error", out.get("batch2 1"),
         "err code=AlreadyExists space=%s app_code=%d message=entry already exists in table %d"
         % (DUP_SPACE, DUP_CODE, crt_tid))
    c.eq("client: batch2 update 2", out.get("batch2 2"), "ok")
    c.eq("client: Write error", out.get("write_error"), "total=1 index=0 code=AlreadyExists")
    c.eq("client: non-strict delete of missing entry", out.get("delete_missing"), "ok")
    c.eq("client: delete existing", out.get("delete_existing"), "ok")
    c.eq("client: read crt (sport:target)", out.get("read_crt"), "40000:7,40001:8,40003:7")
    c.eq("client: read all tables", out.get("read_all_tables"), str(len(srv.entries)))
    c.eq("client: read counters", out.get("read_counters"), "3:10:1500,4:2:128")
    c.eq("client: digest list", out.get("digest"),
         "name=learn_t list_id=%d n=%d" % (DIGEST_LIST_ID, len(DIGEST_RECORDS)))
    members = info.digest_members("learn_t")
    for i, rec in enumerate(DIGEST_RECORDS):
        want = " ".join("%s=%d" % (n, ip(rec[n]) if isinstance(rec[n], str) else rec[n])
                        for n, _ in members)
        c.eq("client: digest record %d" % i, out.get("digest_rec %d" % i), want)
    c.eq("client: idle-timeout notification", out.get("idle"),
         "table=IngressImpl.crt src=%s sport=%d ts=%d" % (CLIENT_IP, IDLE_SPORT, IDLE_TIMESTAMP))
    c.eq("client: packet-in", out.get("packet_in"),
         "payload=%s meta=%s" % (PACKET_IN[0].hex(),
                                 ",".join("%d:%s" % (m, v.hex()) for m, v in PACKET_IN[1])))
    c.eq("client: stream error", out.get("stream_error"),
         "code=%d space= message=bad ack details=digest_list_ack:%d"
         % (code_pb2.INVALID_ARGUMENT, DIGEST_LIST_ID - 1))
    c.eq("client: reconnect and re-arbitration", out.get("reconnected"),
         "closed=true reconnects=1 mastership=Primary")
    c.eq("client: finished", out.get("done"), "")

    # ---- request log: official text-format parse equals what was received ----
    try:
        logged = parse_log(log_path)
    except OSError as e:
        logged = []
        print("request log unreadable: %s" % e)
    parsed_unary, parsed_stream = [], []
    for rpc, text in logged:
        msg = LOG_TYPES[rpc]()
        text_format.Parse(text, msg)
        (parsed_stream if rpc == "StreamChannel" else parsed_unary).append((rpc, msg))
    c.eq("request log: unary requests equal the received ones", parsed_unary, srv.unary)
    c.eq("request log: stream requests equal the received ones",
         [m for _, m in parsed_stream], srv.stream)

    print("%d passed, %d failed" % (c.passed, c.failed))
    sys.exit(1 if c.failed else 0)


if __name__ == "__main__":
    main()

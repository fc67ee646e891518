"""A small P4Runtime client for the packet tests, on the official `p4runtime` Python bindings.

It does what the tests need and nothing more: become primary (arbitration), push a pipeline, write
table entries by P4Info name, read counters, configure digests, and collect the stream messages the
switch sends (digest lists, idle-timeout notifications).  Every table, field, action, parameter,
counter and digest is resolved by name from the P4Info it is given; no numeric id is hard-coded.
"""
import queue
import threading
import time

import grpc
from google.protobuf import text_format
from p4.config.v1 import p4info_pb2
from p4.v1 import p4runtime_pb2, p4runtime_pb2_grpc


def encode(value, bitwidth):
    """A non-negative int as a P4Runtime canonical bytestring (no leading zero bytes, at least one
    byte), after checking that it fits in `bitwidth` bits."""
    value = int(value)
    if value < 0 or value >= (1 << bitwidth):
        raise ValueError("%d does not fit in %d bits" % (value, bitwidth))
    nbytes = max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(nbytes, "big")


def decode(data):
    return int.from_bytes(data, "big")


def ip(addr):
    """Dotted quad -> int."""
    a, b, c, d = (int(x) for x in addr.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def mac(addr):
    """aa:bb:cc:dd:ee:ff -> int."""
    return int(addr.replace(":", ""), 16)


class P4RuntimeError(Exception):
    """A failed RPC; `code` is the grpc.StatusCode of the RPC, `details` the server's message, and
    `errors` the per-update canonical codes (ints, google.rpc.Code) when the server sent them, and
    `update_errors` the same updates as (canonical_code, message, space) tuples."""

    def __init__(self, code, details, errors=None):
        errors = errors or []
        super().__init__("%s: %s %s" % (code, details, errors))
        self.code = code
        self.details = details
        self.update_errors = [e if isinstance(e, tuple) else (e, "", "") for e in errors]
        self.errors = [e[0] for e in self.update_errors]


class _Names(dict):
    """Objects by P4Info name; also by unique `.`-separated suffix, so the contract's
    `IngressImpl.crt` finds TNA's `pipe.IngressImpl.crt` (as the Rust client resolves)."""

    def __missing__(self, name):
        hits = [v for k, v in self.items() if k.endswith("." + name)]
        if len(hits) == 1:
            return hits[0]
        raise KeyError(name)


class _Digests(_Names):
    """Digests also by their struct type name (TNA names a digest after its instance)."""

    def __missing__(self, name):
        try:
            return _Names.__missing__(self, name)
        except KeyError:
            hits = [v for v in self.values() if v.type_spec.struct.name == name]
            if len(hits) == 1:
                return hits[0]
            raise


class P4Info:
    """Name lookups over a P4Info message."""

    def __init__(self, path):
        with open(path) as f:
            self.msg = text_format.Parse(f.read(), p4info_pb2.P4Info())
        self.tables = _Names((t.preamble.name, t) for t in self.msg.tables)
        self.actions = _Names((a.preamble.name, a) for a in self.msg.actions)
        self.counters = _Names((c.preamble.name, c) for c in self.msg.counters)
        self.direct_counters = _Names((c.preamble.name, c) for c in self.msg.direct_counters)
        self.registers = _Names((r.preamble.name, r) for r in self.msg.registers)
        self.digests = _Digests((d.preamble.name, d) for d in self.msg.digests)
        self.by_id = {}
        for group in (self.tables, self.actions, self.counters, self.direct_counters,
                      self.registers, self.digests):
            for obj in group.values():
                self.by_id[obj.preamble.id] = obj

    def table(self, name):
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError("no table %r in the P4Info" % name) from None

    def action(self, name):
        try:
            return self.actions[name]
        except KeyError:
            raise KeyError("no action %r in the P4Info" % name) from None

    def digest_members(self, name):
        struct = self.digests[name].type_spec.struct.name
        return [m.name for m in self.msg.type_info.structs[struct].members]


class Switch:
    """One P4Runtime connection (device 0 by default), primary with election id 1."""

    def __init__(self, addr, p4info_path, device_id=0, election_id=1):
        self.addr = addr
        self.device_id = device_id
        self.election_id = p4runtime_pb2.Uint128(high=0, low=election_id)
        self.p4info = P4Info(p4info_path)
        self.p4info_path = p4info_path
        self.channel = grpc.insecure_channel(addr)
        self.stub = p4runtime_pb2_grpc.P4RuntimeStub(self.channel)
        self._requests = queue.Queue()
        self.arbitration = queue.Queue()
        self.digests = queue.Queue()
        self.idle_timeouts = queue.Queue()
        self.others = queue.Queue()
        self._stream = None
        self._reader = None
        self.stream_error = None

    # -- connection --------------------------------------------------------------------------

    def wait_ready(self, timeout=20.0):
        """Wait until the gRPC server accepts connections."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def connect(self, timeout=10.0):
        """Open the StreamChannel and become primary. Returns the arbitration response."""

        def requests():
            while True:
                item = self._requests.get()
                if item is None:
                    return
                yield item

        self._stream = self.stub.StreamChannel(requests())
        self._reader = threading.Thread(target=self._read_stream, daemon=True)
        self._reader.start()
        req = p4runtime_pb2.StreamMessageRequest()
        req.arbitration.device_id = self.device_id
        req.arbitration.election_id.CopyFrom(self.election_id)
        self._requests.put(req)
        try:
            resp = self.arbitration.get(timeout=timeout)
        except queue.Empty:
            raise P4RuntimeError(None, "no arbitration response within %.0f s (%s)"
                                 % (timeout, self.stream_error)) from None
        if resp.status.code != 0:
            raise P4RuntimeError(resp.status.code, "not primary: " + resp.status.message)
        return resp

    def _read_stream(self):
        try:
            for msg in self._stream:
                kind = msg.WhichOneof("update")
                if kind == "arbitration":
                    self.arbitration.put(msg.arbitration)
                elif kind == "digest":
                    self.digests.put(msg.digest)
                elif kind == "idle_timeout_notification":
                    self.idle_timeouts.put(msg.idle_timeout_notification)
                else:
                    self.others.put(msg)
        except grpc.RpcError as e:  # closed by shutdown() or by the server
            self.stream_error = e

    def shutdown(self):
        self._requests.put(None)
        if self._stream is not None:
            self._stream.cancel()
        self.channel.close()

    def _call(self, rpc, request):
        try:
            return rpc(request, timeout=30)
        except grpc.RpcError as e:
            raise P4RuntimeError(e.code(), e.details(), _update_errors(e)) from None

    # -- pipeline ----------------------------------------------------------------------------

    def set_pipeline(self, device_config=b""):
        req = p4runtime_pb2.SetForwardingPipelineConfigRequest()
        req.device_id = self.device_id
        req.election_id.CopyFrom(self.election_id)
        req.action = p4runtime_pb2.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT
        req.config.p4info.CopyFrom(self.p4info.msg)
        req.config.p4_device_config = device_config
        self._call(self.stub.SetForwardingPipelineConfig, req)

    # -- writes ------------------------------------------------------------------------------

    def _write(self, updates):
        req = p4runtime_pb2.WriteRequest()
        req.device_id = self.device_id
        req.election_id.CopyFrom(self.election_id)
        req.updates.extend(updates)
        self._call(self.stub.Write, req)

    def table_entry(self, table, match=None, action=None, params=None, priority=0,
                    idle_timeout_ns=0, default=False):
        """Build a TableEntry by names.

        match: {field name: value} where value is an int for exact, (value, prefix_len) for lpm,
        (value, mask) for ternary.  A ternary field with mask 0 or an lpm field with prefix 0 is
        left out, as P4Runtime requires for don't-care fields.
        """
        t = self.p4info.table(table)
        fields = {f.name: f for f in t.match_fields}
        entry = p4runtime_pb2.TableEntry()
        entry.table_id = t.preamble.id
        for name, value in (match or {}).items():
            if name not in fields:
                raise KeyError("table %s has no match field %r" % (table, name))
            f = fields[name]
            kind = p4info_pb2.MatchField.MatchType.Name(f.match_type)
            if kind == "EXACT":
                m = entry.match.add(field_id=f.id)
                m.exact.value = encode(value, f.bitwidth)
            elif kind == "LPM":
                v, plen = value
                if plen == 0:
                    continue
                m = entry.match.add(field_id=f.id)
                m.lpm.value = encode(v, f.bitwidth)
                m.lpm.prefix_len = plen
            elif kind == "TERNARY":
                v, mask = value
                if mask == 0:
                    continue
                m = entry.match.add(field_id=f.id)
                m.ternary.value = encode(v & mask, f.bitwidth)
                m.ternary.mask = encode(mask, f.bitwidth)
            else:
                raise ValueError("match kind %s not supported by this helper" % kind)
        if action is not None:
            a = self.p4info.action(action)
            pmap = {p.name: p for p in a.params}
            entry.action.action.action_id = a.preamble.id
            given = dict(params or {})
            for p in a.params:
                if p.name not in given:
                    raise KeyError("action %s needs parameter %r" % (action, p.name))
                entry.action.action.params.add(param_id=p.id,
                                               value=encode(given.pop(p.name), p.bitwidth))
            if given:
                raise KeyError("action %s has no parameter(s) %s (has %s)"
                               % (action, sorted(given), sorted(pmap)))
        entry.priority = priority
        entry.idle_timeout_ns = idle_timeout_ns
        entry.is_default_action = default
        return entry

    def insert(self, table, match, action, params=None, priority=0, idle_timeout_ns=0):
        self.write_entries([self.table_entry(table, match, action, params, priority,
                                             idle_timeout_ns)])

    def modify(self, table, match, action, params=None, priority=0):
        self._write([_update(p4runtime_pb2.Update.MODIFY,
                             self.table_entry(table, match, action, params, priority))])

    def delete(self, table, match, priority=0):
        self._write([_update(p4runtime_pb2.Update.DELETE,
                             self.table_entry(table, match, priority=priority))])

    def set_default(self, table, action, params=None):
        self._write([_update(p4runtime_pb2.Update.MODIFY,
                             self.table_entry(table, None, action, params, default=True))])

    def write_entries(self, entries, update_type=p4runtime_pb2.Update.INSERT, batch=500):
        for i in range(0, len(entries), batch):
            self._write([_update(update_type, e) for e in entries[i:i + batch]])

    def enable_digest(self, name, max_timeout_ns=1_000_000, max_list_size=10,
                      ack_timeout_ns=1_000_000_000):
        d = self.p4info.digests[name]
        u = p4runtime_pb2.Update(type=p4runtime_pb2.Update.INSERT)
        u.entity.digest_entry.digest_id = d.preamble.id
        u.entity.digest_entry.config.max_timeout_ns = max_timeout_ns
        u.entity.digest_entry.config.max_list_size = max_list_size
        u.entity.digest_entry.config.ack_timeout_ns = ack_timeout_ns
        self._write([u])

    def ack_digest(self, digest_list):
        req = p4runtime_pb2.StreamMessageRequest()
        req.digest_ack.digest_id = digest_list.digest_id
        req.digest_ack.list_id = digest_list.list_id
        self._requests.put(req)

    # -- reads -------------------------------------------------------------------------------

    def _read(self, entities):
        req = p4runtime_pb2.ReadRequest(device_id=self.device_id)
        req.entities.extend(entities)
        out = []
        try:
            for resp in self.stub.Read(req, timeout=30):
                out.extend(resp.entities)
        except grpc.RpcError as e:
            raise P4RuntimeError(e.code(), e.details()) from None
        return out

    def read_table(self, table):
        ent = p4runtime_pb2.Entity()
        ent.table_entry.table_id = self.p4info.table(table).preamble.id
        return [e.table_entry for e in self._read([ent])]

    def read_counter(self, name, index):
        """(packets, bytes) of one cell of an indexed counter."""
        ent = p4runtime_pb2.Entity()
        ent.counter_entry.counter_id = self.p4info.counters[name].preamble.id
        ent.counter_entry.index.index = index
        got = self._read([ent])
        if len(got) != 1:
            raise AssertionError("read of %s[%d] returned %d entities" % (name, index, len(got)))
        data = got[0].counter_entry.data
        return data.packet_count, data.byte_count

    def read_direct_counter(self, table, match, priority=0):
        """(packets, bytes) of the direct counter of one table entry."""
        ent = p4runtime_pb2.Entity()
        ent.direct_counter_entry.table_entry.CopyFrom(
            self.table_entry(table, match, priority=priority))
        got = self._read([ent])
        if len(got) != 1:
            raise AssertionError("direct counter read on %s returned %d entities"
                                 % (table, len(got)))
        data = got[0].direct_counter_entry.data
        return data.packet_count, data.byte_count

    # -- stream messages ---------------------------------------------------------------------

    def decode_digest_list(self, digest_list, name="learn_t"):
        """The list's entries as dicts {member name: int}."""
        members = self.p4info.digest_members(name)
        out = []
        for data in digest_list.data:
            values = [decode(m.bitstring) for m in data.struct.members]
            if len(values) != len(members):
                raise AssertionError("digest entry has %d members, P4Info says %d"
                                     % (len(values), len(members)))
            out.append(dict(zip(members, values)))
        return out

    def collect_digests(self, count, timeout=3.0, name="learn_t"):
        """Digest entries (decoded) until `count` have arrived or `timeout` passes; acks every
        list.  Returns what arrived (the caller asserts on it)."""
        want_id = self.p4info.digests[name].preamble.id
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                dl = self.digests.get(timeout=left)
            except queue.Empty:
                break
            self.ack_digest(dl)
            if dl.digest_id != want_id:
                raise AssertionError("digest list with unknown digest_id %d" % dl.digest_id)
            got.extend(self.decode_digest_list(dl, name))
        return got

    def drain(self):
        """Forget stream messages received so far."""
        for q in (self.digests, self.idle_timeouts, self.others):
            while True:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if q is self.digests:
                    self.ack_digest(item)


def _update(kind, table_entry):
    u = p4runtime_pb2.Update(type=kind)
    u.entity.table_entry.CopyFrom(table_entry)
    return u


def _update_errors(rpc_error):
    """Per-update (canonical_code, message, space) from a Write error's details (p4.v1.Error in
    grpc-status-details), when the server sent them."""
    codes = []
    try:
        from google.rpc import status_pb2
        for key, value in rpc_error.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                st = status_pb2.Status.FromString(value)
                for detail in st.details:
                    err = p4runtime_pb2.Error()
                    if detail.Unpack(err):
                        codes.append((err.canonical_code, err.message, err.space))
    except Exception:  # details are optional; the RPC status code is what tests rely on
        pass
    return codes

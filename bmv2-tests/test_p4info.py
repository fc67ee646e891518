#!/usr/bin/env python3
"""The committed P4Info against the official protobuf bindings and the pipeline contract.

Run: .venv/bin/python -m unittest bmv2-tests/test_p4info.py   (from the repo root)

No switch is involved: this checks the file that the controller, the embedded switch and the packet
tests all resolve names from. It parses `p4src/p4c-out/bmv2/dvipa.p4info.txtpb` with the official
`p4.config.v1.p4info_pb2` (strict text format: an unknown field or enum value fails), and checks
every table, match field, action, parameter, extern and digest member named in
`docs/pipeline-contract.md` (parsed from its markdown tables, so a contract edit that the P4Info
does not follow fails here).
"""
import os
import re
import unittest

from google.protobuf import text_format
from p4.config.v1 import p4info_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P4INFO = os.environ.get("DVIPA_P4INFO", os.path.join(ROOT, "p4src/p4c-out/bmv2/dvipa.p4info.txtpb"))
CONTRACT = os.path.join(ROOT, "docs/pipeline-contract.md")

MATCH_TYPES = {
    "exact": p4info_pb2.MatchField.EXACT,
    "lpm": p4info_pb2.MatchField.LPM,
    "ternary": p4info_pb2.MatchField.TERNARY,
    "range": p4info_pb2.MatchField.RANGE,
    "optional": p4info_pb2.MatchField.OPTIONAL,
}
PREFIX = {  # p4c id prefix (top 8 bits) per object kind, from p4info.proto's P4Ids
    "tables": p4info_pb2.P4Ids.TABLE,
    "actions": p4info_pb2.P4Ids.ACTION,
    "counters": p4info_pb2.P4Ids.COUNTER,
    "direct_counters": p4info_pb2.P4Ids.DIRECT_COUNTER,
    "registers": p4info_pb2.P4Ids.REGISTER,
    "digests": p4info_pb2.P4Ids.DIGEST,
}


def p4c_id(prefix, name):
    """The id p4c assigns when there is no @id and no collision: Jenkins one-at-a-time hash of the
    fully qualified name, low 24 bits, under the kind's prefix byte."""
    h = 0
    for c in name.encode():
        h = (h + c) & 0xFFFFFFFF
        h = (h + (h << 10)) & 0xFFFFFFFF
        h ^= h >> 6
    h = (h + (h << 3)) & 0xFFFFFFFF
    h ^= h >> 11
    h = (h + (h << 15)) & 0xFFFFFFFF
    return (prefix << 24) | (h & 0xFFFFFF)


def contract_rows(heading_regex):
    """Rows (lists of cells) of the first markdown table after a heading matching the regex."""
    with open(CONTRACT) as f:
        text = f.read()
    m = re.search(r"^#+ .*" + heading_regex + r".*$", text, re.M)
    assert m, "contract has no heading matching %r" % heading_regex
    rows = []
    started = False
    for line in text[m.end():].splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(re.fullmatch(r"-+", c) for c in cells):
                continue
            rows.append(cells)
        elif started:
            break
    return rows[1:]  # drop the header row


def ticked(cell):
    return re.findall(r"`([^`]+)`", cell)


class P4InfoTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(P4INFO) as f:
            cls.p4info = text_format.Parse(f.read(), p4info_pb2.P4Info())
        cls.by_name = {}
        for kind in PREFIX:
            for obj in getattr(cls.p4info, kind):
                cls.by_name[(kind, obj.preamble.name)] = obj
        cls.action_by_id = {a.preamble.id: a for a in cls.p4info.actions}

    def get(self, kind, name):
        obj = self.by_name.get((kind, name))
        self.assertIsNotNone(obj, "%s %s missing from the P4Info" % (kind, name))
        return obj

    def test_arch_is_v1model(self):
        self.assertEqual(self.p4info.pkg_info.arch, "v1model")

    def test_ids_follow_p4c_scheme_and_are_unique(self):
        seen = set()
        for kind, prefix in PREFIX.items():
            for obj in getattr(self.p4info, kind):
                pre = obj.preamble
                self.assertEqual(pre.id >> 24, prefix, pre.name)
                self.assertEqual(pre.id, p4c_id(prefix, pre.name), pre.name)
                self.assertNotIn(pre.id, seen, pre.name)
                seen.add(pre.id)
                self.assertEqual(pre.alias, pre.name.split(".")[-1], pre.name)

    def test_tables_match_contract(self):
        rows = contract_rows(r"Tables")
        self.assertEqual(len(rows), 5)
        self.assertEqual(len(self.p4info.tables), len(rows))
        for name_cell, fields_cell, actions_cell, size_cell, extras in rows:
            (name,) = ticked(name_cell)
            table = self.get("tables", name)
            want = re.findall(r"`([^`]+)`:(\w+):(\d+)", fields_cell)
            got = [(mf.name, mf.match_type, mf.bitwidth) for mf in table.match_fields]
            self.assertEqual(got, [(n, MATCH_TYPES[k], int(b)) for n, k, b in want], name)
            self.assertEqual([mf.id for mf in table.match_fields], list(range(1, len(want) + 1)), name)
            self.assertEqual(table.size, int(size_cell), name)
            want_actions = set(ticked(actions_cell))
            got_actions = {self.action_by_id[r.id].preamble.name for r in table.action_refs}
            self.assertEqual(got_actions, want_actions, name)
            default = re.search(r"`([^`]+)`\s*\(default\)", actions_cell).group(1)
            if table.HasField("initial_default_action"):  # p4c versions before 1.2.4.x omit it
                self.assertEqual(
                    self.action_by_id[table.initial_default_action.action_id].preamble.name,
                    default, name)
            self.assertEqual(table.const_default_action_id, 0, name + ": default must stay settable")
            if "support_timeout" in extras:
                self.assertEqual(table.idle_timeout_behavior, p4info_pb2.Table.NOTIFY_CONTROL, name)
            else:
                self.assertEqual(table.idle_timeout_behavior, p4info_pb2.Table.NO_TIMEOUT, name)
            direct = re.search(r"direct counter `([^`]+)`", extras)
            if direct:
                dc = self.get("direct_counters", direct.group(1))
                self.assertEqual(list(table.direct_resource_ids), [dc.preamble.id], name)
                self.assertEqual(dc.direct_table_id, table.preamble.id, name)
                self.assertEqual(dc.spec.unit, p4info_pb2.CounterSpec.BOTH, name)
            else:
                self.assertEqual(list(table.direct_resource_ids), [], name)

    def test_actions_match_contract(self):
        rows = contract_rows(r"Actions")
        self.assertEqual(len(rows), len(self.p4info.actions))
        for name_cell, params_cell, _effect in rows:
            (name,) = ticked(name_cell)
            action = self.get("actions", name)
            want = [(n, int(b)) for n, b in re.findall(r"`([^`]+)`:(\d+)", params_cell)]
            got = [(p.name, p.bitwidth) for p in action.params]
            self.assertEqual(got, want, name)
            self.assertEqual([p.id for p in action.params], list(range(1, len(want) + 1)), name)

    def test_externs_match_contract(self):
        svc = self.get("counters", "IngressImpl.service_counter")
        self.assertEqual((svc.size, svc.spec.unit), (1024, p4info_pb2.CounterSpec.BOTH))
        rr = self.get("registers", "IngressImpl.rr_state")
        self.assertEqual(rr.size, 1024)
        self.assertEqual(rr.type_spec.bitstring.bit.bitwidth, 32)
        self.assertEqual(len(self.p4info.counters), 1)
        self.assertEqual(len(self.p4info.direct_counters), 2)
        pending = self.get("registers", "IngressImpl.syn_pending")
        self.assertEqual(pending.size, 65536)
        self.assertEqual(pending.type_spec.bitstring.bit.bitwidth, 32)
        self.assertEqual(len(self.p4info.registers), 2)

    def test_digest_learn_t_matches_contract(self):
        rows = contract_rows(r"Digest `learn_t`")
        want = [(ticked(member)[0], int(bits)) for member, bits, _meaning in rows]
        digest = self.get("digests", "learn_t")
        self.assertEqual(len(self.p4info.digests), 1)
        self.assertEqual(digest.type_spec.struct.name, "learn_t")
        struct = self.p4info.type_info.structs["learn_t"]
        got = [(m.name, m.type_spec.bitstring.bit.bitwidth) for m in struct.members]
        self.assertEqual(got, want)

    def test_noaction_is_default_only_where_listed(self):
        noaction = self.get("actions", "NoAction").preamble.id
        for table in self.p4info.tables:
            for ref in table.action_refs:
                if ref.id == noaction:
                    self.assertEqual(ref.scope, p4info_pb2.ActionRef.DEFAULT_ONLY, table.preamble.name)


if __name__ == "__main__":
    unittest.main()

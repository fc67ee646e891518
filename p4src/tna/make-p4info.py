#!/usr/bin/env python3
"""Writes p4src/tna/dvipa.p4info.txtpb, the hand-written P4Info of p4src/tna/dvipa.p4, from the
v1model P4Info (p4c output) by the naming rules observed on the Tofino compiler
(../shared/notes/tofino-facts.md): tables and externs get the `pipe.` prefix of the Pipeline
instance, actions keep their names, the digest is named after its Digest instance
(`pipe.IngressDeparser.learn_digest`) with struct type `learn_t`; ids are p4c's scheme (kind
prefix << 24 | low 24 bits of the Jenkins one-at-a-time hash of the full name, checked against the
sample P4Info). Externs are written as standard P4Info objects (counters, direct_counters,
registers, digests): the form P4Runtime servers address (README.md, "P4Info"). Re-run after
changing dvipa.p4 until the real compiler's P4Info replaces the output."""
import re, sys, pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SRC = ROOT / "p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
DST = ROOT / "p4src/tna/dvipa.p4info.txtpb"
PREFIX = {"tables": 0x02, "counters": 0x12, "direct_counters": 0x13, "registers": 0x16,
          "digests": 0x17}
SIZES = {"pipe.IngressImpl.crt": 262144}


def oaat(s):
    h = 0
    for c in s.encode():
        h = (h + c) & 0xffffffff
        h = (h + (h << 10)) & 0xffffffff
        h ^= h >> 6
    h = (h + (h << 3)) & 0xffffffff
    h ^= h >> 11
    h = (h + (h << 15)) & 0xffffffff
    return h


def pid(kind, name):
    return (PREFIX[kind] << 24) | (oaat(name) & 0xffffff)


text = SRC.read_text()
# Split into top-level blocks.
blocks = re.findall(r"^(\w+) \{\n.*?^\}\n", text, re.S | re.M)
bodies = re.findall(r"^\w+ \{\n.*?^\}\n", text, re.S | re.M)
old_to_new = {}
out = []
for kind, body in zip(blocks, bodies):
    if kind == "pkg_info":
        out.append('pkg_info {\n  arch: "tna"\n}\n')
        continue
    if kind in PREFIX:
        m = re.search(r'    id: (\d+)\n    name: "([^"]+)"', body)
        old_id, name = int(m.group(1)), m.group(2)
        if kind == "digests":
            new = "pipe.IngressDeparser.learn_digest"
            body = body.replace('alias: "learn_t"', 'alias: "learn_digest"')
        else:
            new = "pipe." + name
        nid = pid(kind, new)
        old_to_new[old_id] = nid
        body = body.replace(f"    id: {old_id}\n    name: \"{name}\"",
                            f"    id: {nid}\n    name: \"{new}\"")
        if new in SIZES:
            body = re.sub(r"^  size: \d+$", f"  size: {SIZES[new]}", body, flags=re.M)
        if new == "pipe.IngressImpl.syn_pending":
            body = re.sub(r"  type_spec \{\n.*?^  \}\n",
                          '  type_spec {\n    struct {\n      name: "syn_cell_t"\n    }\n  }\n',
                          body, flags=re.S | re.M)
    out.append(body)
result = "".join(out)
for o, n in old_to_new.items():
    result = re.sub(rf"\b{o}\b", str(n), result)
syn_cell = '''  structs {
    key: "syn_cell_t"
    value {
      members {
        name: "tag"
        type_spec {
          bitstring {
            bit {
              bitwidth: 16
            }
          }
        }
      }
      members {
        name: "target"
        type_spec {
          bitstring {
            bit {
              bitwidth: 16
            }
          }
        }
      }
    }
  }
'''
result = result.replace("type_info {\n", "type_info {\n" + syn_cell, 1)
header = ("# proto-file: p4/config/v1/p4info.proto\n# proto-message: p4.config.v1.P4Info\n"
          "# HAND-WRITTEN for p4src/tna/dvipa.p4 by p4src/tna/make-p4info.py (not compiler output;\n"
          "# see p4src/tna/README.md). Replace with the Tofino compiler's P4Info when available.\n\n")
DST.write_text(header + result)
print(f"wrote {DST} ({len(old_to_new)} renamed objects)")

"""Program one DVIPA -> one server path on a dvipa switch with a few P4Runtime writes.

A stand-in for the controller (smoke tests, manual experiments). Run with the project's venv
(official p4runtime bindings):

  .venv/bin/python topologies/p4rt_program.py --addr 127.0.0.1:9559 --device-id 1 \
      --dvipa 10.78.200.1 --port 8080 --server-mac 02:78:03:00:00:01 --server-port 2

It pushes the pipeline (P4Info + bmv2 JSON when present), then writes
  dvipa  : (DVIPA, TCP, PORT) -> distribute(service 1, hash)
  dpt    : (service 1, slot 0..255) -> to_target(1)
  target : 1 -> forward_l2(server MAC, switch port)
and, with --read-counter, prints the service counter (packets bytes) instead of programming.
Names are resolved from the P4Info, per docs/pipeline-contract.md.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "bmv2-tests", "lib"))

import p4rt  # noqa: E402

SERVICE_ID = 1
TARGET_ID = 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addr", required=True, help="P4Runtime address, e.g. 127.0.0.1:9559")
    ap.add_argument("--device-id", type=int, default=0)
    ap.add_argument("--p4info", default=os.path.join(ROOT, "p4src/p4c-out/bmv2/dvipa.p4info.txtpb"))
    ap.add_argument("--device-config", default=os.path.join(ROOT, "p4src/p4c-out/bmv2/dvipa.json"),
                    help="bmv2 JSON pushed as p4_device_config when the file exists")
    ap.add_argument("--dvipa")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--server-mac")
    ap.add_argument("--server-port", type=int, default=2, help="switch port toward the server")
    ap.add_argument("--read-counter", action="store_true",
                    help="only print the DVIPA service counter: PACKETS BYTES")
    ap.add_argument("--timeout", type=float, default=20.0)
    a = ap.parse_args()

    sw = p4rt.Switch(a.addr, a.p4info, device_id=a.device_id, election_id=int(time.time()) & 0xFFFF or 1)
    sw.wait_ready(timeout=a.timeout)
    try:
        if a.read_counter:
            pkts, byts = sw.read_counter("IngressImpl.service_counter", SERVICE_ID)
            print(pkts, byts)
            return 0
        sw.connect()
        cfg = b""
        if a.device_config and os.path.exists(a.device_config):
            with open(a.device_config, "rb") as f:
                cfg = f.read()
        sw.set_pipeline(cfg)
        if not (a.dvipa and a.server_mac):
            ap.error("--dvipa and --server-mac are required to program a path")
        entries = [sw.table_entry("IngressImpl.dvipa",
                                  {"hdr.ipv4.dstAddr": p4rt.ip(a.dvipa), "hdr.ipv4.protocol": 6,
                                   "meta.l4_dport": (a.port, 0xFFFF)},
                                  "IngressImpl.distribute",
                                  {"service_id": SERVICE_ID, "method": 0}, priority=10),
                   sw.table_entry("IngressImpl.target", {"meta.target_id": TARGET_ID},
                                  "IngressImpl.forward_l2",
                                  {"dmac": p4rt.mac(a.server_mac), "port": a.server_port})]
        entries += [sw.table_entry("IngressImpl.dpt",
                                   {"meta.service_id": SERVICE_ID, "meta.slot": slot},
                                   "IngressImpl.to_target", {"target_id": TARGET_ID})
                    for slot in range(256)]
        sw.write_entries(entries)
        print("programmed %s: %s:%d -> %s on port %d (%d entries)"
              % (a.addr, a.dvipa, a.port, a.server_mac, a.server_port, len(entries)))
        return 0
    finally:
        sw.shutdown()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""P4Runtime interop test, switch mode: the Rust client's scenario (`interop_client --switch`)
against a real `dvipa-switch` process, checked through what the switch does.

The switch runs in a network namespace made for the test, with two veth pairs as ports 1 and 3
(`-i 1@s1 -i 3@s3`; the test sends on h1 and listens on h3). Everything the recording server of
`interop.py` injects comes from the switch here: the digest is produced by real SYNs sent into
port 1 with scapy (twice: the duplicate is suppressed until the client acks; one more after the
ack is reported again), the idle-timeout notifications by the client's own `crt` entries, the
stream error by a PacketOut (the program has no CPU port). Three more controllers on the official
bindings check role arbitration around the client (role "dvipa", election id 2^64+5):
  * a backup of role "dvipa" (2^64+4): ALREADY_EXISTS with the primary's id; its Write and
    SetForwardingPipelineConfig are PERMISSION_DENIED; it is promoted (OK) when the client leaves
    and then reads and writes the switch state;
  * the default role's primary (election id 1, lower than the client's: roles are independent):
    it fills the DPT for the SYNs and receives the same DigestLists (every role's primary does);
  * a duplicate election id in role "dvipa" and a role config are refused with INVALID_ARGUMENT.
Finally the frames out of port 3 and the switch's tables and counters are compared with what the
client wrote and the SYNs that were sent.

Usage: switch_interop.py SWITCH_BINARY CLIENT_BINARY P4INFO_TXTPB
Needs root for the namespace (`ip netns`); without root it tries an unprivileged user+network
namespace (`unshare -rn`). Prints one PASS/FAIL line per check and "N passed, N failed".
"""
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2 as p4r, p4runtime_pb2_grpc

from interop import (COOKIE, CLIENT_IP, DEVICE_CONFIG, DEVICE_ID, ROLE, VIP, Checks, Info, enc,
                     ip)

ADDR = "127.0.0.1:9559"  # inside the test's own namespace
ELECTION = (1, 5)  # the client's
BACKUP_ELECTION = (1, 4)
DEFAULT_ROLE_ELECTION = (0, 1)
SYN_SRC, SYN_SPORT = "192.168.1.20", 5555
SYN_SMAC, SW_MAC = "02:00:00:00:00:20", "02:00:00:00:00:fe"
TARGET_DMAC = "02:00:00:00:00:17"  # target 7 after batch 2's MODIFY (port 3)
CRT_LEFT = (40000, 40001, 40003)  # after every write of the scenario (40004 is deleted last)
TIMEOUT = 60


def uint128(hl):
    return p4r.Uint128(high=hl[0], low=hl[1])


class Ctl:
    """A controller on the official bindings: a StreamChannel plus unary calls."""

    def __init__(self, role, election, config=None):
        self.chan = grpc.insecure_channel(ADDR)
        self.stub = p4runtime_pb2_grpc.P4RuntimeStub(self.chan)
        self.role = role
        self.election = uint128(election) if election else None
        self.reqs = queue.Queue()
        self.msgs = queue.Queue()
        self.seen = []
        self.ended = None
        a = p4r.StreamMessageRequest()
        a.arbitration.device_id = DEVICE_ID
        if role:
            a.arbitration.role.name = role
            if config is not None:
                a.arbitration.role.config.CopyFrom(config)
        if self.election:
            a.arbitration.election_id.CopyFrom(self.election)
        self.reqs.put(a)
        self.stream = self.stub.StreamChannel(iter(self.reqs.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for m in self.stream:
                self.msgs.put(m)
            self.msgs.put(("end", None))
        except grpc.RpcError as e:
            self.msgs.put(("end", e))

    def next(self, kind, timeout=5.0):
        """The next stream message of `kind` (others are kept in `seen`), or None."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.msgs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if isinstance(m, tuple):
                self.ended = m[1]
                return None
            self.seen.append(m)
            if m.WhichOneof("update") == kind:
                return m

    def drain(self, wait=0.2):
        """Every message received so far (reading until none came for `wait` s)."""
        self.next(None, wait)
        return self.seen

    def write(self, updates):
        req = p4r.WriteRequest(device_id=DEVICE_ID, role=self.role, updates=updates)
        if self.election:
            req.election_id.CopyFrom(self.election)
        try:
            self.stub.Write(req, timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    def set_pipeline(self, config):
        req = p4r.SetForwardingPipelineConfigRequest(
            device_id=DEVICE_ID, role=self.role,
            action=p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT, config=config)
        if self.election:
            req.election_id.CopyFrom(self.election)
        try:
            self.stub.SetForwardingPipelineConfig(req, timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    def read(self, *entities):
        req = p4r.ReadRequest(device_id=DEVICE_ID, role=self.role, entities=entities)
        return [e for r in self.stub.Read(req, timeout=10) for e in r.entities]

    def close(self):
        self.reqs.put(None)
        self.chan.close()


def arb_fields(m):
    if m is None:
        return None
    a = m.arbitration
    return (a.device_id, a.role.name if a.HasField("role") else None,
            (a.election_id.high, a.election_id.low) if a.HasField("election_id") else None,
            a.status.code)


def refused(role, election, config=None):
    """Arbitrates and returns (code, message) of the status the switch ends the stream with."""
    c = Ctl(role, election, config)
    m = c.next("arbitration")
    c.close()
    if m is not None or c.ended is None:
        return ("accepted", arb_fields(m))
    return (c.ended.code(), c.ended.details())


def syn_frame():
    from scapy.all import IP, TCP, Ether
    return bytes(Ether(src=SYN_SMAC, dst=SW_MAC) / IP(src=SYN_SRC, dst=VIP, ttl=64)
                 / TCP(sport=SYN_SPORT, dport=80, flags="S", seq=1000))


def die_with_parent():
    """preexec_fn: SIGTERM this child if the driver dies (so no switch outlives the test)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def sh(*args):
    subprocess.run(args, check=True)


def setup_ports():
    sh("ip", "link", "set", "lo", "up")
    try:  # no IPv6 router solicitations or DAD frames on the test links
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    for a, b in (("s1", "h1"), ("s3", "h3")):
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
    for i in ("s1", "h1", "s3", "h3"):
        sh("ip", "link", "set", i, "up")


def wait_port(proc, timeout=15):
    deadline = time.monotonic() + timeout
    host, port = ADDR.rsplit(":", 1)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def inside(switch_bin, client_bin, p4info_path):
    """The test proper, run inside the namespace."""
    info = Info(p4info_path)
    c = Checks()
    tmp = tempfile.mkdtemp(prefix="p4rt-switch-interop-")
    switch_log = os.path.join(tmp, "switch.log")
    setup_ports()
    from scapy.all import TCP, AsyncSniffer, sendp  # after the links exist (scapy scans them)
    sw = subprocess.Popen([switch_bin, "--device-id", str(DEVICE_ID), "-i", "1@s1", "-i", "3@s3",
                           "--log-level", "info", "--log-file", switch_log,
                           "--grpc-server-addr", ADDR], preexec_fn=die_with_parent)
    ctls = []
    try:
        if not wait_port(sw):
            c.eq("switch started and listening on %s" % ADDR, False, True)
            return c
        started = threading.Event()
        sniffer = AsyncSniffer(iface="h3", store=True, started_callback=started.set,
                               lfilter=lambda p: p.haslayer(TCP) and p[TCP].dport == 80)
        sniffer.start()
        started.wait(5)
        frame = syn_frame()
        sent = []

        def send_syn(n):
            for _ in range(n):
                sendp(frame, iface="h1", verbose=False)
                sent.append(frame)

        state = {}

        def on_primary():
            # the client is primary of role "dvipa": a backup of that role, the default role's
            # primary, and two refused arbitrations
            backup = Ctl(ROLE, BACKUP_ELECTION)
            ctls.append(backup)
            state["backup"] = backup
            state["backup_arb"] = arb_fields(backup.next("arbitration"))
            state["backup_write"] = backup.write(
                [p4r.Update(type=p4r.Update.INSERT,
                            entity=p4r.Entity(table_entry=info.crt(40009, 7)))])
            cfg = p4r.ForwardingPipelineConfig(p4info=info.msg, p4_device_config=b"x")
            state["backup_set"] = backup.set_pipeline(cfg)
            dflt = Ctl("", DEFAULT_ROLE_ELECTION)
            ctls.append(dflt)
            state["default"] = dflt
            state["default_arb"] = arb_fields(dflt.next("arbitration"))
            state["dup"] = refused(ROLE, ELECTION)
            any_cfg = any_pb2.Any()
            any_cfg.Pack(p4r.Uint128(high=0, low=1))  # any message: no role config scheme
            state["role_config"] = refused(ROLE, (0, 9), any_cfg)

        def on_syn_ready():
            dpt = [p4r.Update(type=p4r.Update.INSERT, entity=p4r.Entity(
                table_entry=info.table_entry(
                    "IngressImpl.dpt",
                    [("meta.service_id", "exact", 3), ("meta.slot", "exact", slot)],
                    "IngressImpl.to_target", [("target_id", 7)]))) for slot in range(256)]
            state["dpt_write"] = state["default"].write(dpt)
            send_syn(2)

        t_start = time.time_ns()
        log_path = os.path.join(tmp, "switch-3.log")
        proc = subprocess.Popen([client_bin, "--switch", ADDR, p4info_path, log_path],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=die_with_parent)
        killer = threading.Timer(TIMEOUT, proc.kill)
        killer.start()
        stderr = []
        threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
        out, lines = {}, []
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            key, _, rest = line.partition(" ")
            if key in ("batch2", "batch3", "digest_rec", "digest_after_ack_rec"):
                idx, _, rest = rest.partition(" ")
                key = "%s %s" % (key, idx)
            out.setdefault(key, []).append(rest)
            try:
                if key == "mastership":
                    on_primary()
                elif key == "syn_ready":
                    on_syn_ready()
                elif key == "acked":
                    send_syn(1)
            except Exception as e:  # keep reading the client; the checks below will fail
                print("driver error on %r: %r" % (line, e))
        proc.wait()
        killer.cancel()
        t_end = time.time_ns()
        sys.stderr.write("".join(stderr))
        print("--- client output ---\n" + "\n".join(lines) + "\n---------------------")

        def one(key):
            v = out.get(key)
            return v[0] if v and len(v) == 1 else v

        c.eq("client exit status", proc.returncode, 0)

        # ---- arbitration with roles ----
        backup, dflt = state.get("backup"), state.get("default")
        c.eq("client: mastership of role dvipa", one("mastership"), "Primary")
        c.eq("backup of role dvipa: ALREADY_EXISTS with the primary's election id",
             state.get("backup_arb"), (DEVICE_ID, ROLE, ELECTION, code_pb2.ALREADY_EXISTS))
        c.eq("backup of role dvipa: Write is PERMISSION_DENIED", state.get("backup_write"),
             grpc.StatusCode.PERMISSION_DENIED)
        c.eq("backup of role dvipa: SetForwardingPipelineConfig is PERMISSION_DENIED",
             state.get("backup_set"), grpc.StatusCode.PERMISSION_DENIED)
        c.eq("default role (lower election id): its own primary, role unset",
             state.get("default_arb"), (DEVICE_ID, None, DEFAULT_ROLE_ELECTION, code_pb2.OK))
        c.eq("duplicate election id in role dvipa: INVALID_ARGUMENT",
             (state.get("dup") or ("?",))[0], grpc.StatusCode.INVALID_ARGUMENT)
        rc = state.get("role_config") or ("?", "")
        c.eq("role config: INVALID_ARGUMENT saying role configs are not supported",
             (rc[0], "role configs are not supported" in str(rc[1])),
             (grpc.StatusCode.INVALID_ARGUMENT, True))
        promoted = arb_fields(backup.next("arbitration")) if backup else None
        c.eq("backup promoted to primary (OK) when the client left",
             promoted, (DEVICE_ID, ROLE, BACKUP_ELECTION, code_pb2.OK))

        # ---- what the client saw ----
        c.eq("client: capabilities", one("capabilities"), "1.4.1")
        c.eq("client: first push", one("pipeline_first"), "Pushed")
        c.eq("client: second push skipped (cookie read back)", one("pipeline_second"),
             "AlreadyInstalled")
        c.eq("client: batch1", one("batch1_ok"), "7")
        c.eq("client: batch2 update 0", one("batch2 0"), "ok")
        c.match("client: batch2 update 1 ALREADY_EXISTS (p4.v1.Error)", one("batch2 1"),
                r"err code=AlreadyExists space=dvipa-switch app_code=0 message=.*already exists")
        c.eq("client: batch2 update 2 (modify)", one("batch2 2"), "ok")
        c.eq("client: Write error", one("write_error"), "total=1 index=0 code=AlreadyExists")
        c.eq("client: non-strict delete of missing entry", one("delete_missing"), "ok")
        c.eq("client: delete existing", one("delete_existing"), "ok")
        c.eq("client: batch3 update 0", one("batch3 0"), "ok")
        c.match("client: batch3 update 1 INVALID_ARGUMENT for a malformed key",
                one("batch3 1"), r"err code=InvalidArgument space=dvipa-switch app_code=0 "
                r"message=.*0x1234.*bit<8>")
        c.match("client: batch3 update 2 NOT_FOUND for a MODIFY of a missing entry",
                one("batch3 2"), r"err code=NotFound space=dvipa-switch app_code=0 "
                r"message=.*not found")
        members = info.digest_members("learn_t")
        rec = dict(src_addr=ip(SYN_SRC), dst_addr=ip(VIP), protocol=6, src_port=SYN_SPORT,
                   dst_port=80, service_id=3, target_id=7, flags=0)
        want_rec = " ".join("%s=%d" % (n, rec[n]) for n, _ in members)
        c.eq("client: digest list from the SYN", one("digest"), "name=learn_t list_id=1 n=1")
        c.eq("client: digest record", one("digest_rec 0"), want_rec)
        c.eq("client: the duplicate SYN is suppressed while unacked",
             one("digest_before_ack"), "none")
        c.eq("client: after the ack the SYN is reported again", one("digest_after_ack"),
             "name=learn_t list_id=2 n=1")
        c.eq("client: digest record after ack", one("digest_after_ack_rec 0"), want_rec)
        c.eq("client: read crt (sport:target)", one("read_crt"),
             "40000:7,40001:8,40003:7,40004:7")
        c.eq("client: read all tables", one("read_all_tables"), str(4 + 3 + 256))
        n_syn, syn_len = len(sent), len(frame)
        c.eq("SYNs sent", n_syn, 3)
        c.eq("client: service_counter (index:packets:bytes)", one("read_counters"),
             "3:%d:%d" % (n_syn, n_syn * syn_len))
        c.eq("client: target_counter (target:packets:bytes)", one("read_target_counter"),
             "7:%d:%d" % (n_syn, n_syn * syn_len))
        c.eq("client: digest entry read back", one("read_digest_entry"),
             "max_timeout_ns=1000000 max_list_size=10 ack_timeout_ns=1000000000")
        idle = out.get("idle", [])
        got_idle = []
        for rest in idle:
            m = re.fullmatch(r"table=(\S+) src=(\S+) sport=(\d+) ts=(\d+)", rest)
            got_idle.append((m.group(1), m.group(2), int(m.group(3)),
                             t_start <= int(m.group(4)) <= t_end) if m else rest)
        c.eq("client: idle-timeout notifications of its crt entries (timestamp in the run)",
             got_idle, [("IngressImpl.crt", CLIENT_IP, s, True)
                        for s in (40000, 40001, 40003, 40004)])
        c.match("client: PacketOut answered with a StreamError carrying it", one("stream_error"),
                r"code=%d space=dvipa-switch message=.*CPU port.* details=packet_out:%s"
                % (code_pb2.UNIMPLEMENTED, b"no-cpu-port".hex()))
        c.eq("client: finished", one("done"), "")

        # ---- every role's primary receives the digests ----
        c.eq("default role's DPT write (a second role's primary writes too)",
             state.get("dpt_write"), grpc.StatusCode.OK)
        if dflt:
            lists = [m.digest for m in dflt.drain() if m.WhichOneof("update") == "digest"]
            learn = info.digests["learn_t"].preamble.id
            want_data = [enc(rec[n], w) for n, w in members]
            c.eq("default role's primary got the same DigestLists",
                 [(d.digest_id, d.list_id, [[m.bitstring for m in x.struct.members]
                                            for x in d.data]) for d in lists],
                 [(learn, i, [want_data]) for i in (1, 2)])

        # ---- the switch's state, read by the promoted backup over the official bindings ----
        if backup:
            code = backup.write([p4r.Update(type=p4r.Update.DELETE,
                                             entity=p4r.Entity(table_entry=info.crt(40004, 7)))])
            c.eq("promoted backup: Write accepted", code, grpc.StatusCode.OK)

            def table(name):
                tid = info.tables[name].preamble.id
                es = [e.table_entry for e in backup.read(
                    p4r.Entity(table_entry=p4r.TableEntry(table_id=tid)))]
                return sorted(es, key=lambda e: e.SerializeToString())

            def srt(es):
                return sorted(es, key=lambda e: e.SerializeToString())

            c.eq("Read crt equals the client's entries", table("IngressImpl.crt"),
                 srt([info.crt(40000, 7), info.crt(40001, 8), info.crt(40003, 7)]))
            c.eq("Read target equals the modified entry", table("IngressImpl.target"),
                 [info.target(TARGET_DMAC, 3)])
            c.eq("Read dvipa (ternary, priority)", table("IngressImpl.dvipa"), [info.dvipa()])
            c.eq("Read ipv4_route (lpm)", table("IngressImpl.ipv4_route"), [info.route()])
            c.eq("Read dpt: 256 slots", len(table("IngressImpl.dpt")), 256)
            de = backup.read(p4r.Entity(digest_entry=p4r.DigestEntry()))
            c.eq("Read DigestEntry", [e.digest_entry for e in de], [info.digest_entry()])
            sc = info.counters["IngressImpl.service_counter"].preamble.id
            ce = p4r.CounterEntry(counter_id=sc)
            ce.index.index = 3
            cells = backup.read(p4r.Entity(counter_entry=ce))
            c.eq("Read service_counter[3] (packets, bytes)",
                 [(e.counter_entry.data.packet_count, e.counter_entry.data.byte_count)
                  for e in cells], [(n_syn, n_syn * syn_len)])
            get = backup.stub.GetForwardingPipelineConfig(
                p4r.GetForwardingPipelineConfigRequest(device_id=DEVICE_ID), timeout=10)
            c.eq("GetForwardingPipelineConfig: cookie, P4Info, device config",
                 (get.config.cookie.cookie, get.config.p4info == info.msg,
                  get.config.p4_device_config), (COOKIE, True, DEVICE_CONFIG))

        # ---- the data plane ----
        sniffer.stop()
        outp = [bytes(p) for p in sniffer.results or []]
        c.eq("frames out of port 3: one per SYN", len(outp), n_syn)
        want_out = bytes.fromhex(TARGET_DMAC.replace(":", "")) + frame[6:]
        c.eq("forward_l2 rewrote only the destination MAC", outp, [want_out] * n_syn)
        if c.failed:
            print("switch log: %s, client request log: %s" % (switch_log, log_path))
        return c
    finally:
        for x in ctls:
            x.close()
        sw.send_signal(signal.SIGTERM)
        try:
            sw.wait(10)
        except subprocess.TimeoutExpired:
            sw.kill()
            sw.wait()
        if c.passed and not c.failed:  # keep the logs of a failed run
            shutil.rmtree(tmp, ignore_errors=True)


def run_in_netns(argv):
    """Runs this script with --inside in a fresh network namespace; returns its exit status."""
    me = [sys.executable, os.path.abspath(__file__), "--inside"] + argv
    if os.geteuid() != 0:
        probe = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "true"],
                               capture_output=True)
        if probe.returncode != 0:
            print("switch interop test needs root (or unprivileged user namespaces) for its "
                  "network namespace: %s" % probe.stderr.decode().strip())
            print("0 passed, 1 failed")
            return 1
        return subprocess.run(["unshare", "--user", "--map-root-user", "--net"] + me).returncode
    ns = "dvipa-interop-%d" % os.getpid()
    sh("ip", "netns", "add", ns)
    child = None

    def stop(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        child = subprocess.Popen(["ip", "netns", "exec", ns] + me)
        return child.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        # anything we started that is still in the namespace (e.g. after a crash)
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns])


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--inside":
        c = inside(*sys.argv[2:])
        print("%d passed, %d failed" % (c.passed, c.failed))
        sys.exit(1 if c.failed else 0)
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(run_in_netns(sys.argv[1:]))


if __name__ == "__main__":
    main()

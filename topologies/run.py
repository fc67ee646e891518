#!/usr/bin/python3
"""Run a dvipa Mininet topology (system /usr/bin/python3 with Debian's mininet package; root).

  topologies/run.py [--topo topologies/small.json] [--target embedded|bmv2] [--switch-bin PATH]
                    [--port-offset N] [--no-static-dvipas] [--controller] [--smoke] [--no-cli]

Without --smoke it starts the topology and opens the Mininet CLI, with the extra commands
  switch NAME kill|stop|start|restart|status    kill or restart a P4 switch process
  advertise DVIPA SWITCH / withdraw DVIPA SWITCH move the router's route for a DVIPA
  routes                                         the router's routes
  dvipa ARGS                                     operator command (with --controller), e.g.
                                                 dvipa netstat vipadyn
With --controller the real controller runs in the root namespace (config generated from the
file's "controller" section) with an agent on every stack. With --smoke it runs the smoke check
(see smoke.sh; with --controller: takeover and takeback under 30 streams) and exits 0 on success.
The network is always stopped on exit (also on errors and Ctrl-C).
"""
import argparse
import json
import os
import subprocess
import sys
import time

from mininet.log import info, setLogLevel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dvipa_mininet import ROOT, DvipaCLI, DvipaTopology, default_switch_bin  # noqa: E402

VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
PROGRAM = os.path.join(ROOT, "topologies", "p4rt_program.py")


def bin_path(name):
    env = os.environ.get("DVIPA_BIN_DIR")
    return os.path.join(env or os.path.join(ROOT, "target", "debug"), name)


def last_json(out, event):
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("event") == event:
                return v
    return None


class Smoke:
    def __init__(self, topo):
        self.topo = topo
        self.net = topo.net
        svc = topo.spec["dvipa"]["service"]
        self.vip = svc["dvipa"]
        self.port = svc["port"]
        self.sw_port = svc["server_switch_port"]
        self.server, self.server_mac = next(iter(svc["servers"].items()))
        self.switch = topo.spec["dvipa"]["advertise"][self.vip]
        self.client = next(n for n, h in topo.spec["hosts"].items()
                           if not h.get("router") and h.get("dvipas") is None)
        self.failures = []

    def check(self, ok, what):
        info("*** smoke: %s: %s\n" % ("ok  " if ok else "FAIL", what))
        if not ok:
            self.failures.append(what)
        return ok

    def conns(self, n, secs, timeout_ms=1500):
        c = self.net[self.client]
        out = c.cmd("%s --target %s:%d --conns %d --duration-secs %s --connect-timeout-ms %d "
                    "--quiet" % (bin_path("dvipa-conns"), self.vip, self.port, n, secs, timeout_ms))
        s = last_json(out, "summary")
        if s is None:
            info("*** smoke: dvipa-conns output:\n%s\n" % out)
        return s or {}

    def program(self):
        sw = self.net[self.switch]
        cmd = [VENV_PY, PROGRAM, "--addr", "127.0.0.1:%d" % sw.grpc_port,
               "--device-id", str(sw.device_id), "--dvipa", self.vip, "--port", str(self.port),
               "--server-mac", self.server_mac, "--server-port", str(self.sw_port)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        info("*** smoke: %s%s" % (r.stdout, r.stderr))
        return r.returncode == 0

    def counter(self):
        sw = self.net[self.switch]
        r = subprocess.run([VENV_PY, PROGRAM, "--addr", "127.0.0.1:%d" % sw.grpc_port,
                            "--device-id", str(sw.device_id), "--read-counter"],
                           capture_output=True, text=True, timeout=60)
        try:
            return int(r.stdout.split()[0])
        except (IndexError, ValueError):
            info("*** smoke: counter read failed: %s%s\n" % (r.stdout, r.stderr))
            return -1

    def run(self):
        srv = self.net[self.server]
        echo = srv.popen([bin_path("dvipa-echo"), "--listen", "%s:%d" % (self.vip, self.port),
                          "--name", self.server], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            self.check(echo.poll() is None, "dvipa-echo runs on %s (%s:%d)"
                       % (self.server, self.vip, self.port))
            route = self.topo.router().cmd("ip -4 route show %s/32" % self.vip).strip()
            self.check(self.topo.spec["dvipa"]["next_hops"][self.switch]["via"] in route,
                       "router sends %s via %s (%s)" % (self.vip, self.switch, route))
            s = self.conns(1, 1, timeout_ms=800)
            self.check(s.get("failed_connects") == 1,
                       "no connection before the switch is programmed (failed_connects=%s)"
                       % s.get("failed_connects"))
            if not self.check(self.program(), "P4Runtime programming of %s" % self.switch):
                return 1
            s = self.conns(3, 2)
            self.check(s.get("alive") == 3 and s.get("resets") == 0 and s.get("bytes_rx", 0) > 0
                       and s.get("servers", {}).get(self.server) == 3,
                       "TCP through the DVIPA via %s: alive=%s resets=%s servers=%s"
                       % (self.switch, s.get("alive"), s.get("resets"), s.get("servers")))
            pk = self.counter()
            self.check(pk > 0, "%s service counter counted %d packets" % (self.switch, pk))
            # the CLI's kill/restart: a killed switch black-holes the DVIPA; restarted and
            # reprogrammed, it forwards again
            info("*** smoke: %s\n" % self.topo.switch_op(self.switch, "kill"))
            s = self.conns(1, 1, timeout_ms=800)
            self.check(s.get("failed_connects") == 1, "no connection while %s is killed"
                       % self.switch)
            info("*** smoke: %s\n" % self.topo.switch_op(self.switch, "restart"))
            self.check(self.program(), "reprogramming the restarted %s" % self.switch)
            s = self.conns(2, 1)
            self.check(s.get("alive") == 2 and s.get("resets") == 0,
                       "TCP through the restarted %s: alive=%s" % (self.switch, s.get("alive")))
        finally:
            echo.terminate()
            try:
                echo.wait(timeout=5)
            except subprocess.TimeoutExpired:
                echo.kill()
        if self.failures:
            info("*** smoke: FAILED: %s\n" % "; ".join(self.failures))
            return 1
        info("*** smoke: PASSED\n")
        return 0


class ControllerSmoke:
    """With the real controller and agents: streams survive killing the primary switch
    (takeover) and restarting it (takeback)."""

    def __init__(self, topo, bin_dir):
        self.topo = topo
        self.net = topo.net
        self.bin_dir = bin_dir
        dv = topo.spec["dvipa"]
        svc = dv["service"]
        self.vip, self.port = svc["dvipa"], svc["port"]
        self.primary = dv["advertise"][self.vip]
        self.backup = next(s for s in dv["next_hops"] if s != self.primary)
        self.client = next(n for n, h in topo.spec["hosts"].items()
                           if not h.get("router") and h.get("dvipas") is None)
        self.failures = []

    def check(self, ok, what):
        info("*** smoke: %s: %s\n" % ("ok  " if ok else "FAIL", what))
        if not ok:
            self.failures.append(what)
        return ok

    def via(self):
        route = self.topo.router().cmd("ip -4 route show %s/32" % self.vip)
        for sw, nh in self.topo.spec["dvipa"]["next_hops"].items():
            if "via %s " % nh["via"] in route:
                return sw
        return None

    def wait_via(self, sw, timeout):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.via() == sw:
                return time.time() - t0
            time.sleep(0.05)
        return None

    def json_op(self, args):
        """An operator command's JSON table rows, or None when it fails."""
        out = self.topo.dvipa_op(self.bin_dir, ["-o", "json"] + args)
        for line in out.splitlines():
            if line.startswith("{"):
                try:
                    return json.loads(line)["rows"]
                except (ValueError, KeyError, TypeError):
                    return None
        return None

    def wait_ready(self, timeout):
        """Until every server is a ready target with slots in the controller's DPT and the
        advertised switch holds exactly the controller's entries (`dvipa diff` empty).
        Connections made before that land on the targets ready so far, and the slots move
        under them as the other agents report: a connection whose SYN took a slot that moves
        before its CRT entry is written (digest -> controller -> write) is reset."""
        servers = set(self.topo.spec["dvipa"]["service"]["servers"])
        t0 = time.time()
        while time.time() - t0 < timeout:
            rows = self.json_op(["netstat", "vdpt"]) or []
            ready = set(r.get("target") for r in rows
                        if r.get("dvipa") == self.vip and r.get("port") == str(self.port)
                        and r.get("rdy") == "Y"
                        and int(r.get("slots") or 0) > 0)
            if ready >= servers and self.json_op(["diff", "--switch", self.primary]) == []:
                return time.time() - t0
            time.sleep(0.1)
        return None

    def run(self):
        echoes = []
        for name in self.topo.spec["dvipa"]["service"]["servers"]:
            echoes.append(self.net[name].popen(
                [os.path.join(self.bin_dir, "dvipa-echo"), "--listen",
                 "%s:%d" % (self.vip, self.port), "--name", name],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        conns = None
        try:
            t = self.wait_via(self.primary, 40)
            if not self.check(t is not None, "the controller advertised %s via %s (%s s)"
                              % (self.vip, self.primary, None if t is None else round(t, 2))):
                info(self.topo.dvipa_op(self.bin_dir, ["netstat", "vipadyn"]))
                return 1
            t = self.wait_ready(30)
            if not self.check(t is not None, "every server ready in the DPT, %s programmed "
                              "(%s s)" % (self.primary, None if t is None else round(t, 2))):
                info(self.topo.dvipa_op(self.bin_dir, ["netstat", "vdpt"]))
                return 1
            conns = self.net[self.client].popen(
                [os.path.join(self.bin_dir, "dvipa-conns"), "--target",
                 "%s:%d" % (self.vip, self.port), "--conns", "30", "--duration-secs", "14",
                 "--probe-rate", "4", "--quiet", "--per-conn"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(4)
            info("*** smoke: %s\n" % self.topo.switch_op(self.primary, "kill"))
            t = self.wait_via(self.backup, 10)
            self.check(t is not None, "takeover: %s advertised via %s %s s after the kill"
                       % (self.vip, self.backup, None if t is None else round(t, 2)))
            time.sleep(2)
            info("*** smoke: %s\n" % self.topo.switch_op(self.primary, "start"))
            t = self.wait_via(self.primary, 20)
            self.check(t is not None, "takeback: %s advertised via %s again %s s after the restart"
                       % (self.vip, self.primary, None if t is None else round(t, 2)))
            out, _ = conns.communicate(timeout=60)
            sm = last_json(out, "summary") or {}
            # every server gets streams: with all three ready from the start each holds about
            # a third of the slots (none of 30 streams on one server: p = (2/3)^30 ~ 5e-6)
            servers = set(self.topo.spec["dvipa"]["service"]["servers"])
            ok = self.check(sm.get("alive") == 30 and sm.get("resets") == 0
                            and sm.get("failed_connects") == 0 and sm.get("errors") == 0
                            and set(sm.get("servers", {})) == servers,
                            "30 streams through takeover and takeback: alive=%s resets=%s failed=%s "
                            "errors=%s longest stall %s ms, servers %s, probes %s ok / %s failed"
                            % (sm.get("alive"), sm.get("resets"), sm.get("failed_connects"),
                               sm.get("errors"), sm.get("max_stall_ms"), sm.get("servers"),
                               sm.get("probes_ok"), sm.get("probes_failed")))
            if not ok:
                for c in sm.get("per_conn", []):
                    if c.get("state") != "done":
                        info("*** smoke: connection %s\n" % json.dumps(c, sort_keys=True))
                info("*** smoke: last error: %s\n" % sm.get("last_error"))
                info(self.topo.dvipa_op(self.bin_dir, ["netstat", "vdpt"]))
            info(self.topo.dvipa_op(self.bin_dir, ["netstat", "vipadyn"]))
        finally:
            if conns is not None and conns.poll() is None:
                conns.kill()
            for e in echoes:
                e.terminate()
            for e in echoes:
                try:
                    e.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    e.kill()
        if self.failures:
            info("*** smoke: FAILED: %s\n" % "; ".join(self.failures))
            return 1
        info("*** smoke: PASSED\n")
        return 0


def main():
    ap = argparse.ArgumentParser(description="Run a dvipa Mininet topology")
    ap.add_argument("--topo", default=os.path.join(ROOT, "topologies", "small.json"))
    ap.add_argument("--target", choices=("embedded", "bmv2"), default="embedded")
    ap.add_argument("--switch-bin", help="switch binary (default: target/debug/dvipa-switch or "
                    "$DVIPA_SWITCH for embedded, simple_switch_grpc for bmv2)")
    ap.add_argument("--port-offset", type=int, default=0,
                    help="added to every P4Runtime/Thrift port of the topology file")
    ap.add_argument("--log-dir", help="switch logs and hooks.json (default /tmp/dvipa-mininet-NAME)")
    ap.add_argument("--no-static-dvipas", action="store_true",
                    help="do not put the DVIPAs on the servers' lo (agents will)")
    ap.add_argument("--controller", action="store_true",
                    help="run the real controller (dvipa controller) and an agent on every stack "
                         "(implies --no-static-dvipas)")
    ap.add_argument("--bin-dir", default=os.environ.get("DVIPA_BIN_DIR",
                                                        os.path.join(ROOT, "target", "debug")),
                    help="where dvipa, dvipa-agent, dvipa-echo, dvipa-conns are")
    ap.add_argument("--smoke", action="store_true", help="run the smoke check and exit")
    ap.add_argument("--no-cli", action="store_true", help="start, print, stop (no CLI)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()

    if os.geteuid() != 0:
        print("run.py: must run as root", file=sys.stderr)
        return 2
    setLogLevel("debug" if a.verbose else "info")
    switch_bin = a.switch_bin or default_switch_bin(a.target)
    topo = DvipaTopology(a.topo, switch_bin, target=a.target, port_offset=a.port_offset,
                         log_dir=a.log_dir,
                         static_dvipas=not (a.no_static_dvipas or a.controller))
    topo.with_controller = a.controller
    rc = 0
    try:
        topo.start()
        if a.controller:
            topo.start_controller(a.bin_dir)
        info("*** router routes:\n%s" % topo.routes())
        if a.smoke:
            rc = ControllerSmoke(topo, a.bin_dir).run() if a.controller else Smoke(topo).run()
        elif not a.no_cli:
            DvipaCLI(topo.net, topo, bin_dir=a.bin_dir)
    except KeyboardInterrupt:
        rc = 130
    except Exception as e:  # report, then always clean up
        info("*** error: %s\n" % e)
        rc = 1
    finally:
        topo.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())

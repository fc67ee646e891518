"""Mininet building blocks for dvipa topologies (Debian's `mininet` package, system python3).

No Open vSwitch: the only switch classes are
  - P4RuntimeSwitch: launches `simple_switch_grpc` or `dvipa-switch` with the same arguments
        BIN --no-p4 --device-id N -i 1@<sw>-eth1 -i 2@<sw>-eth2 ... --thrift-port T
            -- --grpc-server-addr 127.0.0.1:PORT
    in the root namespace (its ports are the root-namespace veth ends, made inert for the root
    kernel: no IPv6, no IPv4 forwarding from them, no ARP replies), and can be killed and
    restarted from the CLI;
  - LanBridge: a plain Linux bridge (`ip link ... type bridge`), optionally with an address in
    the root namespace (the controller's leg toward the agents).
Hosts are ordinary Mininet hosts; a host marked "router" forwards IPv4 without reverse-path
filtering (direct server return: replies from a DVIPA arrive on the LAN leg).

The topology file is JSON in the shape of the p4lang tutorials' topology.json ("hosts" with
"ip", "mac", "commands"; "switches"; "links" as [endpoint, endpoint] with "NODE-pN" naming
port N), extended with what dvipa needs; see topologies/README.md.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

from mininet.cli import CLI
from mininet.log import error, info
from mininet.net import Mininet
from mininet.node import Host, Switch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sysctl_root(settings):
    for s in settings:
        subprocess.call(["sysctl", "-q", "-w", s], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)


def quiet_port(ifname):
    """Make a root-namespace switch port inert for the root kernel."""
    sysctl_root(["net.ipv6.conf.%s.disable_ipv6=1" % ifname,
                 "net.ipv4.conf.%s.forwarding=0" % ifname,
                 "net.ipv4.conf.%s.arp_ignore=8" % ifname])


def port_listening(port):
    """Is something listening on TCP `port` in the root namespace?"""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


class P4RuntimeSwitch(Switch):
    """A P4Runtime software switch process (bmv2 simple_switch_grpc or dvipa-switch)."""

    def __init__(self, name, sw_path="dvipa-switch", grpc_port=9559, thrift_port=None,
                 device_id=0, log_dir="/tmp", json_path=None, log_console=False,
                 extra_args=(), **kwargs):
        kwargs.setdefault("dpid", "%016x" % (device_id + 1))
        Switch.__init__(self, name, **kwargs)
        self.sw_path = sw_path
        self.grpc_port = grpc_port
        self.thrift_port = thrift_port
        self.device_id = device_id
        self.log_dir = log_dir
        self.json_path = json_path
        self.log_console = log_console
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = os.path.join(log_dir, "%s.log" % name)

    def port_list(self):
        return sorted((port, intf.name) for port, intf in self.intfs.items()
                      if port > 0 and intf.name != "lo")

    def argv(self):
        # a program at start (json_path), or none: the controller pushes P4Info + JSON
        v = [self.sw_path, self.json_path or "--no-p4", "--device-id", str(self.device_id)]
        for port, ifname in self.port_list():
            v += ["-i", "%d@%s" % (port, ifname)]
        if self.thrift_port is not None:
            v += ["--thrift-port", str(self.thrift_port)]
        if self.log_console:
            v += ["--log-console"]
        v += self.extra_args
        v += ["--", "--grpc-server-addr", "127.0.0.1:%d" % self.grpc_port]
        return v

    def start(self, controllers):
        for _, ifname in self.port_list():
            quiet_port(ifname)
        self.start_switch()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start_switch(self, timeout=20.0):
        if self.running():
            return
        if port_listening(self.grpc_port):
            raise RuntimeError("%s: 127.0.0.1:%d is already in use" % (self.name, self.grpc_port))
        os.makedirs(self.log_dir, exist_ok=True)
        log = open(self.log_path, "a")
        log.write("=== %s %s\n" % (time.strftime("%H:%M:%S"), " ".join(self.argv())))
        log.flush()
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.time() + timeout
        while not port_listening(self.grpc_port):
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited (%s) before listening; see %s"
                                   % (self.name, self.proc.returncode, self.log_path))
            if time.time() > deadline:
                raise RuntimeError("%s does not listen on %d; see %s"
                                   % (self.name, self.grpc_port, self.log_path))
            time.sleep(0.05)
        info("*** %s: pid %d, P4Runtime 127.0.0.1:%d, device %d\n"
             % (self.name, self.proc.pid, self.grpc_port, self.device_id))

    def kill_switch(self):
        """SIGKILL (a crash, as peers see it)."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop_switch(self, grace=3.0):
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill_switch()

    def stop(self, deleteIntfs=True):
        self.stop_switch()
        Switch.stop(self, deleteIntfs)


class LanBridge(Switch):
    """A Linux bridge in the root namespace joining its links (no STP, no IGMP snooping)."""

    def __init__(self, name, bridge_ip=None, **kwargs):
        kwargs.setdefault("dpid", "%016x" % (abs(hash(name)) & 0xFFFFFFFF))
        Switch.__init__(self, name, **kwargs)
        self.bridge_ip = bridge_ip

    def start(self, controllers):
        self.cmd("ip link del %s 2>/dev/null" % self.name)
        self.cmd("ip link add %s type bridge stp_state 0 mcast_snooping 0" % self.name)
        sysctl_root(["net.ipv6.conf.%s.disable_ipv6=1" % self.name,
                     "net.ipv4.conf.%s.forwarding=0" % self.name])
        for port, intf in sorted(self.intfs.items()):
            if port > 0 and intf.name != "lo":
                quiet_port(intf.name)
                self.cmd("ip link set %s master %s up" % (intf.name, self.name))
        if self.bridge_ip:
            self.cmd("ip addr add %s dev %s" % (self.bridge_ip, self.name))
        self.cmd("ip link set %s up" % self.name)

    def stop(self, deleteIntfs=True):
        self.cmd("ip link del %s 2>/dev/null" % self.name)
        Switch.stop(self, deleteIntfs)


def endpoint(spec):
    """"NODE-pN" -> (NODE, N); "NODE" -> (NODE, None)."""
    if "-p" in spec:
        node, _, port = spec.rpartition("-p")
        if port.isdigit():
            return node, int(port)
    return spec, None


class DvipaTopology:
    """A topology file loaded into a Mininet network."""

    def __init__(self, path, switch_bin, target="embedded", port_offset=0, log_dir=None,
                 static_dvipas=True):
        with open(path) as f:
            self.spec = json.load(f)
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.switch_bin = switch_bin
        self.target = target
        self.port_offset = port_offset
        self.static_dvipas = static_dvipas
        self.with_controller = False
        self.controller = None
        self.agents = []
        self.admin = None
        self.log_dir = log_dir or "/tmp/dvipa-mininet-%s" % self.name
        self.net = None

    # -- build ---------------------------------------------------------------------------------

    def build(self):
        net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False,
                      autoStaticArp=False)
        self.net = net
        for name, h in self.spec["hosts"].items():
            net.addHost(name, cls=Host, ip=h.get("ip"), mac=h.get("mac"))
        for name, s in self.spec["switches"].items():
            kind = s.get("kind", "p4")
            if kind == "bridge":
                net.addSwitch(name, cls=LanBridge, bridge_ip=s.get("ip"))
            elif kind == "p4":
                thrift = s.get("thrift_port")
                net.addSwitch(name, cls=P4RuntimeSwitch, sw_path=self.switch_bin,
                              grpc_port=s["grpc_port"] + self.port_offset,
                              thrift_port=None if thrift is None else thrift + self.port_offset,
                              device_id=s.get("device_id", 0), log_dir=self.log_dir)
            else:
                raise ValueError("switch %s: unknown kind %r" % (name, kind))
        for link in self.spec["links"]:
            (n1, p1), (n2, p2) = endpoint(link[0]), endpoint(link[1])
            net.addLink(n1, n2, port1=p1, port2=p2)
        return net

    def configure_hosts(self):
        for name, h in self.spec["hosts"].items():
            node = self.net[name]
            node.cmd("sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 "
                     "net.ipv6.conf.default.disable_ipv6=1")
            for ifname, cfg in h.get("intfs", {}).items():
                if "mac" in cfg:
                    node.cmd("ip link set %s down; ip link set %s address %s"
                             % (ifname, ifname, cfg["mac"]))
                if "ip" in cfg:
                    node.cmd("ip addr add %s dev %s" % (cfg["ip"], ifname))
                node.cmd("ip link set %s up" % ifname)
            if h.get("router"):
                node.cmd("sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 "
                         "net.ipv4.conf.default.rp_filter=0")
                for intf in node.intfList():
                    node.cmd("sysctl -q -w net.ipv4.conf.%s.rp_filter=0" % intf.name)
            if h.get("dvipas") is not None:
                node.cmd("sysctl -q -w net.ipv4.conf.all.arp_ignore=1 "
                         "net.ipv4.conf.all.arp_announce=2")
                if self.static_dvipas:
                    for d in h["dvipas"]:
                        node.cmd("ip addr add %s/32 dev lo" % d)
            for c in h.get("commands", []):
                out = node.cmd(c)
                if out.strip():
                    info("*** %s: %s: %s\n" % (name, c, out.strip()))
        dv = self.spec.get("dvipa", {})
        router = dv.get("router")
        if router:
            r = self.net[router]
            for sw, nh in dv.get("next_hops", {}).items():
                r.cmd("ip neigh replace %s lladdr %s dev %s nud permanent"
                      % (nh["via"], nh["mac"], nh["dev"]))
                # the switch reads this link with AF_PACKET: frames must carry real checksums
                out = r.cmd("/usr/bin/python3 %s %s off" % (os.path.join(HERE, "txcsum.py"),
                                                             nh["dev"]))
                if out.strip():
                    error("*** %s: tx checksum off on %s: %s\n" % (router, nh["dev"], out))
            if not self.with_controller:
                for vip, sw in dv.get("advertise", {}).items():
                    self.advertise(vip, sw)

    def start(self):
        os.makedirs(self.log_dir, exist_ok=True)
        self.build()
        self.net.start()
        self.configure_hosts()
        self.write_hooks()
        return self.net

    def stop(self):
        self.stop_controller()
        self.stop_bgp()
        if self.net is not None:
            self.net.stop()
            self.net = None

    # -- dvipa operations ----------------------------------------------------------------------

    def router(self):
        return self.net[self.spec["dvipa"]["router"]]

    def advertise_cmd(self, vip, sw):
        nh = self.spec["dvipa"]["next_hops"][sw]
        return "ip route replace %s/32 via %s dev %s" % (vip, nh["via"], nh["dev"])

    def withdraw_cmd(self, vip, sw):
        nh = self.spec["dvipa"]["next_hops"][sw]
        return "ip route del %s/32 via %s dev %s 2>/dev/null || true" % (vip, nh["via"], nh["dev"])

    def advertise(self, vip, sw):
        return self.router().cmd(self.advertise_cmd(vip, sw))

    def routes(self):
        return self.router().cmd("ip -4 route show")

    def write_hooks(self):
        """Write LOG_DIR/hooks.json: each P4 switch's P4Runtime address, device id and ports,
        and the advertise/withdraw commands for `dvipa controller --advertise-cmd/--withdraw-cmd`
        (they dispatch on $DVIPA_SWITCH, use $DVIPA_ADDR, and enter the router by pid)."""
        dv = self.spec.get("dvipa", {})
        if not dv.get("router"):
            return
        switches = {name: {"p4runtime": "127.0.0.1:%d" % self.net[name].grpc_port,
                           "device_id": self.net[name].device_id,
                           "ports": dict((str(p), i) for p, i in self.net[name].port_list())}
                    for name, s in self.spec["switches"].items() if s.get("kind", "p4") == "p4"}
        with open(os.path.join(self.log_dir, "hooks.json"), "w") as f:
            json.dump({"router_pid": self.router().pid,
                       "advertise_cmd": self.hook_cmd("advertise"),
                       "withdraw_cmd": self.hook_cmd("withdraw"),
                       "switches": switches}, f, indent=2)
        info("*** hooks and switch addresses: %s\n" % os.path.join(self.log_dir, "hooks.json"))

    def switch_op(self, name, op):
        """kill | stop | start | restart | status of P4 switch NAME; returns its status line."""
        sw = self.p4_switch(name)
        if op == "kill":
            sw.kill_switch()
        elif op == "stop":
            sw.stop_switch()
        elif op == "start":
            sw.start_switch()
        elif op == "restart":
            sw.kill_switch()
            sw.start_switch()
        elif op != "status":
            raise ValueError("unknown operation %s (kill|stop|start|restart|status)" % op)
        return "%s: %s (P4Runtime 127.0.0.1:%d, log %s)" % (
            name, "running pid %d" % sw.proc.pid if sw.running() else "not running",
            sw.grpc_port, sw.log_path)

    # -- the real controller and agents (run.py --controller) --------------------------------

    def controller_section(self):
        c = self.spec.get("controller")
        if not c:
            raise KeyError("the topology file has no \"controller\" section")
        return c

    def hook_cmd(self, action):
        """One advertise/withdraw command for every switch, dispatching on the controller's
        $DVIPA_SWITCH and $DVIPA_ADDR; it enters the router's namespace by pid."""
        pid = self.router().pid
        arms = []
        for sw, nh in self.spec["dvipa"]["next_hops"].items():
            if action == "advertise":
                cmd = "nsenter -t %d -n ip route replace \"$DVIPA_ADDR/32\" via %s dev %s" % (
                    pid, nh["via"], nh["dev"])
            else:
                cmd = ("nsenter -t %d -n ip route del \"$DVIPA_ADDR/32\" via %s dev %s "
                       "2>/dev/null || true" % (pid, nh["via"], nh["dev"]))
            arms.append("%s) %s ;;" % (sw, cmd))
        return "case \"$DVIPA_SWITCH\" in %s esac" % " ".join(arms)

    def bridge_ip(self):
        for s in self.spec["switches"].values():
            if s.get("kind") == "bridge" and s.get("ip"):
                return s["ip"].split("/")[0]
        raise KeyError("no bridge with an \"ip\" (the controller's leg toward the agents)")

    def stacks(self):
        """Hosts that carry DVIPAs: (name, underlay address, MAC)."""
        return [(n, h["ip"].split("/")[0], h["mac"]) for n, h in self.spec["hosts"].items()
                if h.get("dvipas") is not None]

    def controller_toml(self):
        c = self.controller_section()
        p4dir = os.path.join(ROOT, "p4src", "p4c-out", "bmv2")
        device_config = os.path.join(p4dir, "dvipa.json")
        if not os.path.exists(device_config):
            # the embedded switch has the pipeline built in and ignores the bytes
            device_config = os.path.join(self.log_dir, "dvipa.json")
            with open(device_config, "w") as f:
                f.write("{}\n")
        lines = ['# generated by topologies/run.py from %s' % os.path.basename(self.path),
                 'controller_id = "mininet-%s"' % self.name,
                 'p4info = "%s"' % os.path.join(p4dir, "dvipa.p4info.txtpb"),
                 'device_config = "%s"' % device_config,
                 'hot_standby = %s' % ("true" if c.get("hot_standby") else "false"),
                 # persisted DVIPA owners; start_controller clears them (a new topology)
                 'state_dir = "state"',
                 '', '[agent]', 'listen = "%s:%d"' % (self.bridge_ip(), c["agent_port"])]
        if c.get("timers"):
            lines += ['', '[timers]'] + ['%s = %d' % kv for kv in sorted(c["timers"].items())]
        p4 = [(n, s) for n, s in self.spec["switches"].items() if s.get("kind", "p4") == "p4"]
        for name, s in p4:
            src = os.path.join(HERE, c["profiles"][name])
            dst = os.path.join(self.log_dir, os.path.basename(src))
            with open(src) as f, open(dst, "w") as g:
                g.write(f.read())
            routes = ", ".join(
                '{ prefix = "%s", port = %d, dmac = "%s", smac = "%s" }'
                % (r["prefix"], r["port"], r["dmac"], r["smac"])
                for r in c.get("routes", {}).get(name, []))
            lines += ['', '[[switch]]', 'name = "%s"' % name,
                      'p4runtime = "127.0.0.1:%d"' % self.net[name].grpc_port,
                      'device_id = %d' % s.get("device_id", 0),
                      'profile = "%s"' % os.path.basename(dst),
                      'routes = [%s]' % routes]
        for name, ip, mac in self.stacks():
            ports = ", ".join('%s = %d' % (sw, c.get("stack_port", 2)) for sw, _ in p4)
            lines += ['', '[[stack]]', 'name = "%s"' % name, 'underlay = "%s"' % ip,
                      'mac = "%s"' % mac, 'ports = { %s }' % ports]
        if self.bgp_wanted():
            hops = ", ".join('%s = "%s"' % (sw, nh["via"])
                             for sw, nh in self.spec["dvipa"]["next_hops"].items())
            lines += ['', '[advertise]', 'mode = "bgp"', '', '[advertise.bgp]',
                      'gobgp = "127.0.0.1:%d"' % self.gobgp_api_port(), 'reconcile_ms = 500',
                      'next_hop = { %s }' % hops]
        path = os.path.join(self.log_dir, "dvipa.toml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    # -- BGP: BIRD 2 in the router, gobgpd in the root namespace (docs/bgp.md) ----------------

    def bgp_wanted(self):
        """DVIPA_ADVERTISE=bgp|hooks|auto (default auto: BGP when gobgpd and bird exist)."""
        mode = os.environ.get("DVIPA_ADVERTISE", "auto")
        have = all(shutil.which(b) or os.path.exists("/usr/sbin/" + b)
                   for b in ("gobgpd", "bird", "birdc"))
        if mode == "bgp" and not have:
            raise RuntimeError("DVIPA_ADVERTISE=bgp needs gobgpd and bird installed")
        return mode == "bgp" or (mode == "auto" and have)

    def gobgp_api_port(self):
        """A free loopback port for gobgpd's gRPC API, picked once."""
        if getattr(self, "_gobgp_port", None) is None:
            with socket.socket() as so:
                so.bind(("127.0.0.1", 0))
                self._gobgp_port = so.getsockname()[1]
        return self._gobgp_port

    def start_bgp(self):
        """BIRD in the router (AS 65001, ADD-PATH receive, routes into its kernel table) and a
        gobgpd (AS 65000, no listener, ADD-PATH send) peering from the LAN bridge's address."""
        r = self.router()
        speaker = self.bridge_ip()
        h = self.spec["hosts"][self.spec["dvipa"]["router"]]
        ips = [h.get("ip", "")] + [i.get("ip", "") for i in h.get("intfs", {}).values()]
        # the router's address on the bridge's /24 (the LAN the root namespace is on)
        router_ip = [a.split("/")[0] for a in ips
                     if a and a.split("/")[0].rsplit(".", 1)[0] == speaker.rsplit(".", 1)[0]][0]
        d = os.path.join(self.log_dir, "bgp")
        os.makedirs(d, exist_ok=True)
        self.bird_sock = os.path.join(d, "bird.ctl")
        with open(os.path.join(d, "bird.conf"), "w") as f:
            f.write("""router id %s;
log stderr all;
protocol device { scan time 10; }
protocol direct { ipv4; check link yes; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
protocol bgp dvipa {
  local %s as 65001;
  neighbor %s as 65000;
  passive on;
  hold time 3; keepalive time 1; connect retry time 1;
  ipv4 { import all; export none; gateway recursive; add paths rx; };
}
""" % (router_ip, router_ip, speaker))
        with open(os.path.join(d, "gobgpd.toml"), "w") as f:
            f.write("""[global.config]
  as = 65000
  router-id = "%s"
  port = -1
[[neighbors]]
  [neighbors.config]
    neighbor-address = "%s"
    peer-as = 65001
  [neighbors.transport.config]
    local-address = "%s"
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 3
    keepalive-interval = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.add-paths.config]
      send-max = 8
""" % (speaker, router_ip, speaker))
        blog = open(os.path.join(self.log_dir, "bird.log"), "a")
        self.bird = r.popen(["bird", "-f", "-c", os.path.join(d, "bird.conf"),
                             "-s", self.bird_sock], stdout=blog, stderr=subprocess.STDOUT)
        blog.close()
        glog = open(os.path.join(self.log_dir, "gobgpd.log"), "a")
        self.gobgpd = subprocess.Popen(
            ["gobgpd", "-f", os.path.join(d, "gobgpd.toml"), "-p", "-l", "info",
             "--api-hosts", "127.0.0.1:%d" % self.gobgp_api_port(), "--pprof-disable"],
            stdout=glog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        glog.close()
        for _ in range(300):
            out = subprocess.run(["birdc", "-s", self.bird_sock, "show", "protocols", "dvipa"],
                                 capture_output=True, text=True).stdout
            if "Established" in out:
                info("*** BGP: BIRD in %s established with gobgpd (%s)\n" % (r.name, speaker))
                return
            time.sleep(0.05)
        raise RuntimeError("BGP session gobgpd <-> BIRD not established within 15 s")

    def bird_routes(self):
        return subprocess.run(["birdc", "-s", self.bird_sock, "show", "route"],
                              capture_output=True, text=True).stdout

    def stop_bgp(self):
        for p in (getattr(self, "gobgpd", None), getattr(self, "bird", None)):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.gobgpd = self.bird = None

    def start_controller(self, bin_dir):
        """Start `dvipa controller` in the root namespace and an agent on every stack."""
        c = self.controller_section()
        if self.bgp_wanted() and getattr(self, "gobgpd", None) is None:
            self.start_bgp()
        cfg = self.controller_toml()
        # fresh switches: no DVIPA owner persisted by an earlier run of this topology
        shutil.rmtree(os.path.join(self.log_dir, "state"), ignore_errors=True)
        self.admin = "http://127.0.0.1:%d" % (c["admin_port"] + self.port_offset)
        argv = [os.path.join(bin_dir, "dvipa"), "controller", "--config", cfg,
                "--admin-listen", "127.0.0.1:%d" % (c["admin_port"] + self.port_offset),
                # plaintext TCP admin on loopback (explicit opt-in), no Unix socket
                "--admin-insecure-tcp", "--admin-socket", "",
                "--insecure", "--advertise-cmd", self.hook_cmd("advertise"),
                "--withdraw-cmd", self.hook_cmd("withdraw")]
        log = open(os.path.join(self.log_dir, "controller.log"), "a")
        self.controller = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True,
                                           cwd=self.log_dir)
        log.close()
        info("*** controller: pid %d, config %s, admin %s, log %s\n"
             % (self.controller.pid, cfg, self.admin, os.path.join(self.log_dir, "controller.log")))
        self.agents = []
        for name, ip, _mac in self.stacks():
            node = self.net[name]
            alog = open(os.path.join(self.log_dir, "%s-agent.log" % name), "a")
            p = node.popen([os.path.join(bin_dir, "dvipa-agent"), "--stack", name,
                            "--underlay", ip, "--controller",
                            "http://%s:%d" % (self.bridge_ip(), c["agent_port"]), "--insecure",
                            "--control-socket", os.path.join(self.log_dir, "%s-agent.sock" % name)],
                           stdout=alog, stderr=subprocess.STDOUT)
            alog.close()
            self.agents.append(p)
        info("*** agents on %s\n" % " ".join(n for n, _, _ in self.stacks()))

    def stop_controller(self):
        procs = list(getattr(self, "agents", [])) + [getattr(self, "controller", None)]
        for p in procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in procs:
            if p is not None:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.agents = []
        self.controller = None

    def dvipa_op(self, bin_dir, args):
        """Run an operator command (`dvipa --admin ... ARGS`) and return its output."""
        r = subprocess.run([os.path.join(bin_dir, "dvipa"), "--admin", self.admin] + args,
                           capture_output=True, text=True, timeout=30)
        return r.stdout + r.stderr

    def p4_switch(self, name):
        node = self.net.get(name) if name in self.net else None
        if not isinstance(node, P4RuntimeSwitch):
            raise KeyError("%s is not a P4 switch of this topology" % name)
        return node


class DvipaCLI(CLI):
    """Mininet CLI with dvipa commands: switch, advertise, withdraw, routes, dvipa."""

    def __init__(self, net, topo, bin_dir=None, **kwargs):
        self.topo = topo
        self.bin_dir = bin_dir or os.path.join(ROOT, "target", "debug")
        CLI.__init__(self, net, **kwargs)

    def do_switch(self, line):
        """switch NAME kill|stop|start|restart|status: kill (SIGKILL) or restart a P4 switch."""
        args = line.split()
        if len(args) != 2:
            error("usage: switch NAME kill|stop|start|restart|status\n")
            return
        try:
            info(self.topo.switch_op(args[0], args[1]) + "\n")
        except (KeyError, ValueError, RuntimeError) as e:
            error("%s\n" % e)

    def do_advertise(self, line):
        """advertise DVIPA SWITCH: make the router send DVIPA to SWITCH (the advertisement move)."""
        args = line.split()
        if len(args) != 2:
            error("usage: advertise DVIPA SWITCH\n")
            return
        out = self.topo.advertise(args[0], args[1])
        info(out)

    def do_withdraw(self, line):
        """withdraw DVIPA SWITCH: remove the router's DVIPA route while it points at SWITCH."""
        args = line.split()
        if len(args) != 2:
            error("usage: withdraw DVIPA SWITCH\n")
            return
        info(self.topo.router().cmd(self.topo.withdraw_cmd(args[0], args[1])))

    def do_dvipa(self, line):
        """dvipa ARGS: an operator command against the running controller, e.g.
        `dvipa netstat vipadyn`, `dvipa netstat vcrt` (run.py --controller)."""
        if not self.topo.admin:
            error("no controller (start run.py with --controller)\n")
            return
        info(self.topo.dvipa_op(self.bin_dir, line.split()))

    def do_routes(self, _line):
        """routes: the router's IPv4 routes."""
        info(self.topo.routes())


def default_switch_bin(target):
    if target == "bmv2":
        return "simple_switch_grpc"
    env = os.environ.get("DVIPA_SWITCH")
    if env:
        return env
    return os.path.join(ROOT, "target", "debug", "dvipa-switch")


def wait_tcp(host, port, timeout=10.0):
    """True when `host` (127.0.0.1) accepts TCP on `port` within `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False

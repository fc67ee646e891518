//! The namespace cluster: builder, description and teardown.
//!
//! ```text
//! client ns (C) --- router ns (R) --- up1 ---- <p>s1p1  (root ns: sw1 port 1)
//!                               \---- up2 ---- <p>s2p1  (root ns: sw2 port 1)
//! lan ns: bridge br0 joining <p>s1p2 (sw1 port 2), <p>s2p2 (sw2 port 2), R's lan0,
//!         srv1..srvN eth0, and <p>ctl (root ns: the controller's address for agents)
//! srvK ns: eth0 on the lan, DVIPA on lo, default route via R's lan0 (direct server return)
//! ```
//!
//! Address plan (see the crate README): client net 10.77.100.0/24 (R .1, C .2); uplink of switch
//! i 10.77.(100+i).0/24 (R .1, the switch's next-hop address .2, resolved by a permanent
//! neighbour entry to the switch's router MAC because switches do not answer ARP); the LAN
//! 10.77.L.0/24 with L in 1..=99 picked per run so that concurrent testbeds never share a subnet
//! in the root namespace (R .1, srvK .(10+K), the root-side ctl leg .254); DVIPAs 10.77.200.D.
//! Only the ctl leg has an address in the root namespace; switch ports have none.
//!
//! Over the project's ~800-line guide on purpose: building and tearing down the cluster are one
//! ordered list of namespaces, links and processes; the BGP part lives in `bgp`.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dvipa_core::config::{AgentCfg, Config, Encap, Mac, Prefix, RouteCfg, StackCfg, SwitchCfg};
use serde::Serialize;

use crate::netns::{self, NsChild, exec_in, ip, run, sh_in};

/// Where owner files of live testbeds are kept (`<prefix>` → pid), for `cleanup_stale`.
pub const STATE_DIR: &str = "/run/dvipa-testbed";

/// What to build.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// Name prefix of every namespace and root-namespace interface (2..=9 chars of [a-z0-9]);
    /// `None` = a fresh unique one (`dv` + 5 chars).
    pub prefix: Option<String>,
    /// Number of server namespaces (1..=200).
    pub servers: usize,
    /// Number of routing-switch port sets (1..=9).
    pub switches: usize,
    /// Number of DVIPAs (10.77.200.1, .2, ...); they are only described, not configured.
    pub dvipas: usize,
    /// Force the LAN subnet index L (10.77.L.0/24); `None` = pick a free one.
    pub lan_index: Option<u8>,
}

impl Default for TestbedConfig {
    fn default() -> Self {
        TestbedConfig {
            prefix: None,
            servers: 3,
            switches: 2,
            dvipas: 1,
            lan_index: None,
        }
    }
}

/// A host namespace with one interface.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// Logical name: `client`, `srv1`, ...
    pub name: String,
    /// Network namespace.
    pub ns: String,
    /// Its interface inside `ns`.
    pub ifname: String,
    /// Address on `ifname`.
    pub ip: Ipv4Addr,
    /// Prefix length of `ip`.
    pub prefix_len: u8,
    /// MAC of `ifname` (aa:bb:cc:dd:ee:ff).
    pub mac: String,
    /// Default gateway.
    pub gateway: Ipv4Addr,
}

/// The upstream router.
#[derive(Debug, Clone, Serialize)]
pub struct Router {
    /// Network namespace.
    pub ns: String,
    /// Leg toward the client: name, address, MAC.
    pub client_if: String,
    /// Address on `client_if`.
    pub client_ip: Ipv4Addr,
    /// MAC of `client_if`.
    pub client_mac: String,
    /// Leg on the LAN.
    pub lan_if: String,
    /// Address on `lan_if` (the servers' default gateway).
    pub lan_ip: Ipv4Addr,
    /// MAC of `lan_if`.
    pub lan_mac: String,
}

/// One routing switch's ports (root-namespace veth ends) and how R reaches it.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchPorts {
    /// 1-based index.
    pub index: usize,
    /// Logical name `sw1`, `sw2`, ...
    pub name: String,
    /// Port 1: uplink toward R (root-namespace interface name).
    pub uplink_if: String,
    /// Port 2: on the LAN bridge (root-namespace interface name).
    pub lan_if: String,
    /// `(port number, interface)` for the switch's `-i N@IF` arguments.
    pub ports: Vec<(u32, String)>,
    /// The switch's router MAC: R sends DVIPA traffic to it (R's permanent neighbour entry).
    /// It is not the veth's own MAC, so the root kernel ignores these frames.
    pub router_mac: String,
    /// The next-hop address R uses for this switch (never configured on any interface).
    pub next_hop: Ipv4Addr,
    /// R's interface toward this switch (inside R's namespace).
    pub router_if: String,
    /// R's address on `router_if`.
    pub router_ip: Ipv4Addr,
    /// R's MAC on `router_if` (dmac for a switch route back toward R).
    pub router_if_mac: String,
}

/// The root-namespace leg on the LAN (the address agents use to reach the controller).
#[derive(Debug, Clone, Serialize)]
pub struct CtlLeg {
    /// Root-namespace interface.
    pub ifname: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: String,
}

/// A built cluster. Dropping it tears everything down (processes in its namespaces included).
#[derive(Debug, Serialize)]
pub struct Testbed {
    /// Name prefix of all its namespaces and root interfaces.
    pub prefix: String,
    /// The client host.
    pub client: Host,
    /// The upstream router.
    pub router: Router,
    /// The LAN bridge namespace.
    pub lan_ns: String,
    /// LAN subnet (10.77.L.0).
    pub lan_net: Ipv4Addr,
    /// The servers, `servers[0]` = srv1.
    pub servers: Vec<Host>,
    /// The switches' port sets, `switches[0]` = sw1.
    pub switches: Vec<SwitchPorts>,
    /// Root-namespace leg on the LAN.
    pub ctl: CtlLeg,
    /// The DVIPAs (10.77.200.1, ...).
    pub dvipas: Vec<Ipv4Addr>,
    /// Directory for logs of processes started through this testbed.
    pub log_dir: PathBuf,
    #[serde(skip)]
    keep: bool,
    keep_logs: bool,
    #[serde(skip)]
    torn_down: bool,
}

fn mac(b: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

/// A fresh prefix: `dv` + 5 base-36 chars from the pid, the clock and a per-process sequence
/// number (mixed, so two testbeds started in the same instant by two threads of one test
/// binary differ), re-drawn while namespaces with it exist.
pub fn fresh_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // splitmix64 of the three
        let mut x = (std::process::id() as u64)
            ^ nanos.rotate_left(17)
            ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut s = String::from("dv");
        for _ in 0..5 {
            s.push(alphabet[(x % 36) as usize] as char);
            x /= 36;
        }
        let taken = ["c", "r", "lan"]
            .iter()
            .any(|n| std::path::Path::new(&format!("/run/netns/{s}-{n}")).exists())
            || std::path::Path::new(&format!("/tmp/dvipa-testbed-{s}")).exists();
        if !taken {
            return s;
        }
    }
}

fn valid_prefix(p: &str) -> bool {
    (2..=9).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Names of the namespaces a testbed with `prefix` may own.
fn is_our_ns(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    matches!(rest, "c" | "r" | "lan")
        || rest
            .strip_prefix("srv")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Names of the root-namespace interfaces a testbed with `prefix` may own.
fn is_our_link(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    if rest == "ctl" {
        return true;
    }
    // s<i>p<j>
    let Some(r) = rest.strip_prefix('s') else {
        return false;
    };
    let Some((i, j)) = r.split_once('p') else {
        return false;
    };
    !i.is_empty()
        && !j.is_empty()
        && i.bytes().all(|b| b.is_ascii_digit())
        && j.bytes().all(|b| b.is_ascii_digit())
}

fn list_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn list_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Everything that a testbed with `prefix` left behind: namespaces and root interfaces.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| is_our_ns(prefix, n))
        .map(|n| format!("netns {n}"))
        .collect();
    v.extend(
        list_links()
            .into_iter()
            .filter(|l| is_our_link(prefix, l))
            .map(|l| format!("link {l}")),
    );
    v
}

/// Remove everything a testbed with `prefix` created: SIGKILL the processes in its namespaces,
/// delete its root-namespace interfaces and its namespaces, and wait until they are gone.
/// Safe to call when nothing is left. Other testbeds (other prefixes) are not touched.
pub fn cleanup(prefix: &str) -> Result<()> {
    if !valid_prefix(prefix) {
        bail!("invalid testbed prefix {prefix:?}");
    }
    let namespaces: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| is_our_ns(prefix, n))
        .collect();
    // 1. processes living in our namespaces (started by tests: agents, servers, clients)
    for ns in &namespaces {
        if let Ok(out) = run(&["ip", "netns", "pids", ns]) {
            for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: kill(2) on a pid that lives in a namespace this testbed created.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    // 2. root-namespace veth ends (deleting one end removes its peer synchronously)
    for l in list_links().into_iter().filter(|l| is_our_link(prefix, l)) {
        let _ = ip(&["link", "del", &l]);
    }
    // 3. namespaces
    for ns in &namespaces {
        let _ = ip(&["netns", "del", ns]);
    }
    let _ = std::fs::remove_file(Path::new(STATE_DIR).join(prefix));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = leftovers(prefix);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("testbed {prefix}: could not remove {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Clean up every testbed whose owner process (recorded in [`STATE_DIR`]) is gone, e.g. after a
/// test run was killed. Returns the prefixes removed.
pub fn cleanup_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(STATE_DIR) else {
        return removed;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let prefix = e.file_name().to_string_lossy().into_owned();
        let pid: i32 = std::fs::read_to_string(e.path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let alive = pid > 0 && Path::new(&format!("/proc/{pid}")).exists();
        if !alive && valid_prefix(&prefix) && cleanup(&prefix).is_ok() {
            removed.push(prefix);
        }
    }
    removed
}

/// An exclusive lock on a file (held until drop), serialising LAN subnet choice across runs.
struct FileLock(#[allow(dead_code)] File);

impl FileLock {
    fn take(path: &Path) -> Result<FileLock> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        // SAFETY: flock on a valid fd; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(FileLock(f))
    }
}

/// LAN subnet indexes (10.77.L.0/24) already used by addresses in the root namespace.
fn used_lan_indexes() -> Result<Vec<u8>> {
    let out = ip(&["-o", "-4", "addr", "show"])?;
    let mut used = Vec::new();
    for tok in out.split_whitespace() {
        if let Some(rest) = tok.strip_prefix("10.77.")
            && let Some((l, _)) = rest.split_once('.')
            && let Ok(l) = l.parse::<u8>()
        {
            used.push(l);
        }
    }
    Ok(used)
}

fn sysctl_in(ns: &str, settings: &[&str]) -> Result<()> {
    let mut argv = vec!["sysctl", "-q", "-w"];
    argv.extend_from_slice(settings);
    exec_in(ns, &argv).map(|_| ())
}

fn sysctl_root(settings: &[String]) -> Result<()> {
    let mut argv = vec!["sysctl".to_string(), "-q".into(), "-w".into()];
    argv.extend(settings.iter().cloned());
    run(&argv).map(|_| ())
}

/// `ip -n NS ARGS...`
fn ipn(ns: &str, args: &[&str]) -> Result<String> {
    let mut argv = vec!["-n", ns];
    argv.extend_from_slice(args);
    ip(&argv)
}

impl Testbed {
    /// Build the cluster. Root only. On any error everything created so far is removed.
    pub fn build(cfg: &TestbedConfig) -> Result<Testbed> {
        if !netns::is_root() {
            bail!("building a testbed needs root (network namespaces, veth)");
        }
        if !(1..=200).contains(&cfg.servers) {
            bail!("servers must be 1..=200");
        }
        if !(1..=9).contains(&cfg.switches) {
            bail!("switches must be 1..=9");
        }
        if !(1..=250).contains(&cfg.dvipas) {
            bail!("dvipas must be 1..=250");
        }
        let prefix = cfg.prefix.clone().unwrap_or_else(fresh_prefix);
        if !valid_prefix(&prefix) {
            bail!("prefix must be 2..=9 chars of [a-z0-9], got {prefix:?}");
        }
        if !leftovers(&prefix).is_empty() {
            bail!(
                "testbed prefix {prefix} is in use: {:?}",
                leftovers(&prefix)
            );
        }
        std::fs::create_dir_all(STATE_DIR).ok();
        // testbeds left behind by killed runs (their owner process is gone)
        for p in cleanup_stale() {
            eprintln!("dvipa-testbed: removed stale testbed {p}");
        }
        let lock = FileLock::take(&Path::new(STATE_DIR).join(".lock"))?;
        let lan_index = match cfg.lan_index {
            Some(l) => l,
            None => {
                let used = used_lan_indexes()?;
                let start = (std::process::id() % 99) as u8;
                (0..99u8)
                    .map(|k| (start + k) % 99 + 1)
                    .find(|l| !used.contains(l))
                    .context("no free LAN subnet 10.77.1..99.0/24 in the root namespace")?
            }
        };
        let _ = std::fs::write(
            Path::new(STATE_DIR).join(&prefix),
            std::process::id().to_string(),
        );
        let tb = Testbed::describe(&prefix, cfg, lan_index);
        crate::signals::register_prefix(&prefix);
        match tb.create() {
            Ok(()) => {
                drop(lock);
                Ok(tb)
            }
            Err(e) => {
                drop(tb); // tears down
                Err(e)
            }
        }
    }

    /// The description of a testbed (names, addresses, MACs) without building anything, e.g.
    /// to generate configuration in tests that do not run as root. Dropping it removes nothing.
    pub fn describe_only(
        prefix: &str,
        servers: usize,
        switches: usize,
        dvipas: usize,
        lan_index: u8,
    ) -> Testbed {
        let mut tb = Testbed::describe(
            prefix,
            &TestbedConfig {
                prefix: Some(prefix.into()),
                servers,
                switches,
                dvipas,
                lan_index: Some(lan_index),
            },
            lan_index,
        );
        tb.torn_down = true;
        tb
    }

    fn describe(prefix: &str, cfg: &TestbedConfig, lan_index: u8) -> Testbed {
        let lan = |h: u8| Ipv4Addr::new(10, 77, lan_index, h);
        let router = Router {
            ns: format!("{prefix}-r"),
            client_if: "c0".into(),
            client_ip: Ipv4Addr::new(10, 77, 100, 1),
            client_mac: mac([2, 0x77, 0, 0, 0, 1]),
            lan_if: "lan0".into(),
            lan_ip: lan(1),
            lan_mac: mac([2, 0x77, 2, 0, 0, 1]),
        };
        let client = Host {
            name: "client".into(),
            ns: format!("{prefix}-c"),
            ifname: "eth0".into(),
            ip: Ipv4Addr::new(10, 77, 100, 2),
            prefix_len: 24,
            mac: mac([2, 0x77, 0, 0, 0, 2]),
            gateway: router.client_ip,
        };
        let servers = (1..=cfg.servers)
            .map(|k| Host {
                name: format!("srv{k}"),
                ns: format!("{prefix}-srv{k}"),
                ifname: "eth0".into(),
                ip: lan(10 + k as u8),
                prefix_len: 24,
                mac: mac([2, 0x77, 3, 0, (k >> 8) as u8, k as u8]),
                gateway: router.lan_ip,
            })
            .collect();
        let switches = (1..=cfg.switches)
            .map(|i| {
                let i8 = i as u8;
                let uplink_if = format!("{prefix}s{i}p1");
                let lan_if = format!("{prefix}s{i}p2");
                SwitchPorts {
                    index: i,
                    name: format!("sw{i}"),
                    ports: vec![(1, uplink_if.clone()), (2, lan_if.clone())],
                    uplink_if,
                    lan_if,
                    router_mac: mac([2, 0x77, 1, i8, 0, 0xfe]),
                    next_hop: Ipv4Addr::new(10, 77, 100 + i8, 2),
                    router_if: format!("up{i}"),
                    router_ip: Ipv4Addr::new(10, 77, 100 + i8, 1),
                    router_if_mac: mac([2, 0x77, 1, i8, 0, 1]),
                }
            })
            .collect();
        Testbed {
            prefix: prefix.to_string(),
            client,
            router,
            lan_ns: format!("{prefix}-lan"),
            lan_net: lan(0),
            servers,
            switches,
            ctl: CtlLeg {
                ifname: format!("{prefix}ctl"),
                ip: lan(254),
                mac: mac([2, 0x77, 2, 0, 0, 0xfe]),
            },
            dvipas: (1..=cfg.dvipas)
                .map(|d| Ipv4Addr::new(10, 77, 200, d as u8))
                .collect(),
            log_dir: std::env::temp_dir().join(format!("dvipa-testbed-{prefix}")),
            keep: false,
            keep_logs: false,
            torn_down: false,
        }
    }

    fn create(&self) -> Result<()> {
        let r = &self.router.ns;
        let lan = &self.lan_ns;
        let c = &self.client.ns;
        std::fs::create_dir_all(&self.log_dir).ok();

        let mut all_ns = vec![c.clone(), r.clone(), lan.clone()];
        all_ns.extend(self.servers.iter().map(|s| s.ns.clone()));
        for ns in &all_ns {
            ip(&["netns", "add", ns])?;
            sysctl_in(
                ns,
                &[
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                ],
            )?;
            ipn(ns, &["link", "set", "lo", "up"])?;
        }

        // client <-> router
        ipn(
            c,
            &[
                "link",
                "add",
                "eth0",
                "address",
                &self.client.mac,
                "type",
                "veth",
                "peer",
                "name",
                &self.router.client_if,
                "address",
                &self.router.client_mac,
                "netns",
                r,
            ],
        )?;
        ipn(
            c,
            &[
                "addr",
                "add",
                &format!("{}/24", self.client.ip),
                "dev",
                "eth0",
            ],
        )?;
        ipn(c, &["link", "set", "eth0", "up"])?;
        ipn(
            c,
            &[
                "route",
                "add",
                "default",
                "via",
                &self.client.gateway.to_string(),
            ],
        )?;
        ipn(
            r,
            &[
                "addr",
                "add",
                &format!("{}/24", self.router.client_ip),
                "dev",
                &self.router.client_if,
            ],
        )?;
        ipn(r, &["link", "set", &self.router.client_if, "up"])?;

        // the LAN bridge
        ipn(lan, &["link", "add", "br0", "type", "bridge"])?;
        ipn(
            lan,
            &[
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        ipn(lan, &["link", "set", "br0", "up"])?;
        let join = |ifname: &str| -> Result<()> {
            ipn(lan, &["link", "set", ifname, "master", "br0"])?;
            ipn(lan, &["link", "set", ifname, "up"])?;
            Ok(())
        };

        // router on the LAN
        ipn(
            r,
            &[
                "link",
                "add",
                &self.router.lan_if,
                "address",
                &self.router.lan_mac,
                "type",
                "veth",
                "peer",
                "name",
                "r",
                "netns",
                lan,
            ],
        )?;
        join("r")?;
        ipn(
            r,
            &[
                "addr",
                "add",
                &format!("{}/24", self.router.lan_ip),
                "dev",
                &self.router.lan_if,
            ],
        )?;
        ipn(r, &["link", "set", &self.router.lan_if, "up"])?;

        // switches: port 1 toward R, port 2 on the LAN; root ends without addresses
        for sw in &self.switches {
            ip(&[
                "link",
                "add",
                &sw.uplink_if,
                "type",
                "veth",
                "peer",
                "name",
                &sw.router_if,
                "address",
                &sw.router_if_mac,
                "netns",
                r,
            ])?;
            ipn(
                r,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", sw.router_ip),
                    "dev",
                    &sw.router_if,
                ],
            )?;
            ipn(r, &["link", "set", &sw.router_if, "up"])?;
            // the switch reads this link with AF_PACKET: frames must carry real checksums
            netns::set_tx_checksum(Some(r), &sw.router_if, false)?;
            ipn(
                r,
                &[
                    "neigh",
                    "replace",
                    &sw.next_hop.to_string(),
                    "lladdr",
                    &sw.router_mac,
                    "dev",
                    &sw.router_if,
                    "nud",
                    "permanent",
                ],
            )?;
            let lan_peer = format!("s{}p2", sw.index);
            ip(&[
                "link", "add", &sw.lan_if, "type", "veth", "peer", "name", &lan_peer, "netns", lan,
            ])?;
            join(&lan_peer)?;
            for ifname in [&sw.uplink_if, &sw.lan_if] {
                quiet_root_port(ifname)?;
                ip(&["link", "set", ifname, "up"])?;
            }
        }

        // controller leg
        ip(&[
            "link",
            "add",
            &self.ctl.ifname,
            "address",
            &self.ctl.mac,
            "type",
            "veth",
            "peer",
            "name",
            "ctl",
            "netns",
            lan,
        ])?;
        join("ctl")?;
        sysctl_root(&[
            format!("net.ipv6.conf.{}.disable_ipv6=1", self.ctl.ifname),
            format!("net.ipv4.conf.{}.forwarding=0", self.ctl.ifname),
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.ctl.ip),
            "dev",
            &self.ctl.ifname,
        ])?;
        ip(&["link", "set", &self.ctl.ifname, "up"])?;

        // servers
        for s in &self.servers {
            ipn(
                &s.ns,
                &[
                    "link", "add", "eth0", "address", &s.mac, "type", "veth", "peer", "name",
                    &s.name, "netns", lan,
                ],
            )?;
            join(&s.name)?;
            sysctl_in(
                &s.ns,
                &[
                    "net.ipv4.conf.all.arp_ignore=1",
                    "net.ipv4.conf.all.arp_announce=2",
                ],
            )?;
            ipn(
                &s.ns,
                &["addr", "add", &format!("{}/24", s.ip), "dev", "eth0"],
            )?;
            ipn(&s.ns, &["link", "set", "eth0", "up"])?;
            ipn(
                &s.ns,
                &["route", "add", "default", "via", &s.gateway.to_string()],
            )?;
        }

        // router: forwarding, no reverse-path filtering (DSR replies arrive on lan0 for a
        // source routed via a switch)
        let mut rp: Vec<String> = vec!["net.ipv4.ip_forward=1".into()];
        for ifname in [&self.router.client_if, &self.router.lan_if] {
            rp.push(format!("net.ipv4.conf.{ifname}.rp_filter=0"));
        }
        for sw in &self.switches {
            rp.push(format!("net.ipv4.conf.{}.rp_filter=0", sw.router_if));
        }
        let rp: Vec<&str> = rp.iter().map(|s| s.as_str()).collect();
        sysctl_in(r, &rp)?;
        Ok(())
    }

    /// Keep everything on drop (for `dvipa-testbed up --keep`); remove it later with
    /// [`cleanup`] (`cleanup_stale` leaves kept testbeds alone).
    pub fn keep(&mut self) {
        self.keep = true;
        crate::signals::unregister_prefix(&self.prefix);
        // no owner any more: `cleanup_stale` must not remove it
        let _ = std::fs::remove_file(Path::new(STATE_DIR).join(&self.prefix));
    }

    /// Keep `log_dir` on drop (the caller decides what to do with it). Without this, drop removes
    /// the logs unless the thread is panicking (a failing test) or `DVIPA_KEEP_LOGS` is set.
    pub fn keep_logs(&mut self) {
        self.keep_logs = true;
    }

    /// Tear everything down now (also done on drop).
    pub fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let r = cleanup(&self.prefix);
        crate::signals::unregister_prefix(&self.prefix);
        r
    }

    /// All namespaces, client first.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![
            self.client.ns.clone(),
            self.router.ns.clone(),
            self.lan_ns.clone(),
        ];
        v.extend(self.servers.iter().map(|s| s.ns.clone()));
        v
    }

    /// Server `k` (1-based).
    pub fn server(&self, k: usize) -> &Host {
        &self.servers[k - 1]
    }

    /// Switch `i` (1-based).
    pub fn switch(&self, i: usize) -> &SwitchPorts {
        &self.switches[i - 1]
    }

    /// The first DVIPA.
    pub fn dvipa(&self) -> Ipv4Addr {
        self.dvipas[0]
    }

    /// Put `dvipa` on server k's loopback (what the agent does).
    pub fn add_dvipa_on_server(&self, k: usize, dvipa: Ipv4Addr) -> Result<()> {
        ipn(
            &self.server(k).ns,
            &["addr", "replace", &format!("{dvipa}/32"), "dev", "lo"],
        )
        .map(|_| ())
    }

    /// Remove `dvipa` from server k's loopback.
    pub fn remove_dvipa_from_server(&self, k: usize, dvipa: Ipv4Addr) -> Result<()> {
        ipn(
            &self.server(k).ns,
            &["addr", "del", &format!("{dvipa}/32"), "dev", "lo"],
        )
        .map(|_| ())
    }

    /// Route `dvipa` in R straight to server k (a stand-in for a switch, for tests without one).
    pub fn route_dvipa_to_server(&self, dvipa: Ipv4Addr, k: usize) -> Result<()> {
        ipn(
            &self.router.ns,
            &[
                "route",
                "replace",
                &format!("{dvipa}/32"),
                "via",
                &self.server(k).ip.to_string(),
                "dev",
                &self.router.lan_if,
            ],
        )
        .map(|_| ())
    }

    /// The command (argv) that makes R route `dvipa` to switch `i` (the advertise hook).
    pub fn advertise_argv(&self, i: usize, dvipa: Ipv4Addr) -> Vec<String> {
        let sw = self.switch(i);
        [
            "ip",
            "-n",
            &self.router.ns,
            "route",
            "replace",
            &format!("{dvipa}/32"),
            "via",
            &sw.next_hop.to_string(),
            "dev",
            &sw.router_if,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The advertise hook as one shell command line.
    pub fn advertise_cmd(&self, i: usize, dvipa: Ipv4Addr) -> String {
        self.advertise_argv(i, dvipa).join(" ")
    }

    /// The withdraw hook for switch `i` as one shell command line: removes R's route for
    /// `dvipa` only while it still points at switch `i` (so a late withdraw from the old owner
    /// never removes the new owner's route); always exits 0.
    pub fn withdraw_cmd(&self, i: usize, dvipa: Ipv4Addr) -> String {
        let sw = self.switch(i);
        format!(
            "ip -n {} route del {dvipa}/32 via {} dev {} 2>/dev/null || true",
            self.router.ns, sw.next_hop, sw.router_if
        )
    }

    /// One advertise hook for `dvipa controller --advertise-cmd`: dispatches on the
    /// controller's `$DVIPA_SWITCH` (switch names `sw1`, `sw2`, ...) and routes `$DVIPA_ADDR`
    /// in R to that switch.
    pub fn advertise_hook(&self) -> String {
        self.hook(|sw| {
            format!(
                "ip -n {} route replace \"$DVIPA_ADDR/32\" via {} dev {}",
                self.router.ns, sw.next_hop, sw.router_if
            )
        })
    }

    /// One withdraw hook for `dvipa controller --withdraw-cmd` (see
    /// [`Testbed::advertise_hook`]): removes R's route for `$DVIPA_ADDR` only while it points at
    /// `$DVIPA_SWITCH`; always exits 0.
    pub fn withdraw_hook(&self) -> String {
        self.hook(|sw| {
            format!(
                "ip -n {} route del \"$DVIPA_ADDR/32\" via {} dev {} 2>/dev/null || true",
                self.router.ns, sw.next_hop, sw.router_if
            )
        })
    }

    fn hook(&self, arm: impl Fn(&SwitchPorts) -> String) -> String {
        let arms: Vec<String> = self
            .switches
            .iter()
            .map(|sw| format!("{}) {} ;;", sw.name, arm(sw)))
            .collect();
        format!("case \"$DVIPA_SWITCH\" in {} esac", arms.join(" "))
    }

    /// Make R route `dvipa` to switch `i` now (runs [`Testbed::advertise_argv`]).
    pub fn advertise(&self, i: usize, dvipa: Ipv4Addr) -> Result<()> {
        run(&self.advertise_argv(i, dvipa)).map(|_| ())
    }

    /// Run [`Testbed::withdraw_cmd`] now.
    pub fn withdraw(&self, i: usize, dvipa: Ipv4Addr) -> Result<()> {
        run(&["sh", "-c", &self.withdraw_cmd(i, dvipa)]).map(|_| ())
    }

    /// Where R currently routes `dvipa`: `Some(i)` for switch i, `Some(0)` for anything else
    /// (e.g. a direct server route), `None` when it has no /32 route.
    pub fn dvipa_route(&self, dvipa: Ipv4Addr) -> Result<Option<usize>> {
        let out = ipn(
            &self.router.ns,
            &["-4", "route", "show", &format!("{dvipa}/32")],
        )?;
        if out.trim().is_empty() {
            return Ok(None);
        }
        for sw in &self.switches {
            if out.contains(&format!("via {} ", sw.next_hop)) {
                return Ok(Some(sw.index));
            }
        }
        Ok(Some(0))
    }

    /// The switch's command line (same shape for `simple_switch_grpc` and `dvipa-switch`):
    /// `BIN --no-p4 --device-id D -i 1@<p>s<i>p1 -i 2@<p>s<i>p2 [--thrift-port T] --
    /// --grpc-server-addr 127.0.0.1:PORT`.
    pub fn switch_argv(
        &self,
        i: usize,
        binary: &str,
        device_id: u64,
        grpc_port: u16,
        thrift_port: Option<u16>,
    ) -> Vec<String> {
        let sw = self.switch(i);
        let mut v = vec![
            binary.to_string(),
            "--no-p4".into(),
            "--device-id".into(),
            device_id.to_string(),
        ];
        for (port, ifname) in &sw.ports {
            v.push("-i".into());
            v.push(format!("{port}@{ifname}"));
        }
        if let Some(t) = thrift_port {
            v.push("--thrift-port".into());
            v.push(t.to_string());
        }
        v.push("--".into());
        v.push("--grpc-server-addr".into());
        v.push(format!("127.0.0.1:{grpc_port}"));
        v
    }

    /// Start switch `i` in the root namespace (log in `log_dir/sw<i>.log`). Waits until its
    /// P4Runtime port listens (up to 20 s).
    pub fn spawn_switch(
        &self,
        i: usize,
        binary: &str,
        device_id: u64,
        grpc_port: u16,
        thrift_port: Option<u16>,
    ) -> Result<NsChild> {
        let argv = self.switch_argv(i, binary, device_id, grpc_port, thrift_port);
        self.spawn_switch_argv(i, &argv, grpc_port)
    }

    /// [`Testbed::spawn_switch`] with a given command line (e.g. [`Testbed::switch_argv`] plus
    /// options): starts it in the root namespace and waits until `grpc_port` listens.
    pub fn spawn_switch_argv(&self, i: usize, argv: &[String], grpc_port: u16) -> Result<NsChild> {
        let log = self.log_dir.join(format!("sw{i}.log"));
        let mut child = spawn_root_logged(argv, &log)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if netns::wait_tcp_listen_here(grpc_port, Duration::from_millis(200)).is_ok() {
                return Ok(child);
            }
            if let Some(st) = child.try_wait() {
                bail!(
                    "switch sw{i} exited ({st}) before listening; see {}",
                    log.display()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "switch sw{i} does not listen on {grpc_port}; see {}",
                    log.display()
                );
            }
        }
    }

    /// The `dvipa-agent` command line for server `k` talking plaintext to a controller on the
    /// ctl leg: `BIN --stack srvK --underlay <srvK ip> --controller http://<ctl ip>:PORT
    /// --insecure --control-socket <log_dir>/srvK-agent.sock` (a per-server control socket:
    /// the default path would be shared by every namespace).
    pub fn agent_argv(&self, k: usize, binary: &str, controller_port: u16) -> Vec<String> {
        let s = self.server(k);
        vec![
            binary.to_string(),
            "--stack".into(),
            s.name.clone(),
            "--underlay".into(),
            s.ip.to_string(),
            "--controller".into(),
            format!("http://{}:{controller_port}", self.ctl.ip),
            "--insecure".into(),
            "--control-socket".into(),
            self.log_dir
                .join(format!("{}-agent.sock", s.name))
                .to_string_lossy()
                .into_owned(),
        ]
    }

    /// Start the agent of server `k` (see [`Testbed::agent_argv`]) in its namespace, logging
    /// to `log_dir/srvK-agent.log`.
    pub fn spawn_agent(&self, k: usize, binary: &str, controller_port: u16) -> Result<NsChild> {
        let argv = self.agent_argv(k, binary, controller_port);
        netns::spawn_in_logged(
            &self.server(k).ns,
            &argv,
            &self
                .log_dir
                .join(format!("{}-agent.log", self.server(k).name)),
        )
    }

    /// Spawn `argv` in namespace `ns` with its output in `log_dir/<log_name>.log`.
    pub fn spawn_logged(&self, ns: &str, argv: &[&str], log_name: &str) -> Result<NsChild> {
        netns::spawn_in_logged(ns, argv, &self.log_dir.join(format!("{log_name}.log")))
    }

    /// `sh -c SCRIPT` in namespace `ns`.
    pub fn sh(&self, ns: &str, script: &str) -> Result<String> {
        sh_in(ns, script)
    }
}

/// What [`Testbed::controller_toml`] needs besides the topology.
#[derive(Debug, Clone)]
pub struct ControllerParams {
    /// P4Info path (as written into the TOML).
    pub p4info: String,
    /// Device config (bmv2 JSON) path.
    pub device_config: String,
    /// Port the controller listens on for agents (on the ctl leg's address).
    pub agent_port: u16,
    /// P4Runtime port of each switch (index 0 = sw1).
    pub grpc_ports: Vec<u16>,
    /// Profile file name of each switch (relative to the TOML's directory).
    pub profiles: Vec<String>,
    /// Keep backups continuously programmed.
    pub hot_standby: bool,
}

impl Testbed {
    /// A controller configuration (dvipa-core `Config` TOML) for this cluster: switches `sw1..`
    /// (device id = index) with a default route toward R out of port 1, stacks `srv1..` reached
    /// with L2 rewrite on port 2 of every switch, agents listening on the ctl leg.
    ///
    /// Written through [`Testbed::controller_config`] (dvipa-core's `Config`, serialized).
    pub fn controller_toml(&self, p: &ControllerParams) -> String {
        self.config_toml(&self.controller_config(p))
    }

    /// `cfg` as TOML (defaults left out), headed by a comment naming this testbed.
    pub fn config_toml(&self, cfg: &Config) -> String {
        let body = toml::to_string(cfg).expect("a dvipa-core Config always serializes to TOML");
        format!(
            "# generated by dvipa-testbed for testbed {}\n{body}",
            self.prefix
        )
    }

    /// The configuration [`Testbed::controller_toml`] writes, as dvipa-core's types.
    pub fn controller_config(&self, p: &ControllerParams) -> Config {
        let agent = AgentCfg {
            listen: std::net::SocketAddr::from((self.ctl.ip, p.agent_port)),
            insecure: false,
        };
        let mut cfg = Config::new(
            p.p4info.clone().into(),
            p.device_config.clone().into(),
            agent,
        );
        cfg.controller_id = format!("dvipa-{}", self.prefix);
        cfg.hot_standby = p.hot_standby;
        let mac = |s: &str| -> Mac { s.parse().expect("the testbed's MACs are well-formed") };
        for sw in &self.switches {
            let i = sw.index;
            let profile = p
                .profiles
                .get(i - 1)
                .cloned()
                .unwrap_or_else(|| format!("{}.profile", sw.name));
            let grpc = p.grpc_ports.get(i - 1).copied().unwrap_or(0);
            let mut s = SwitchCfg::new(
                sw.name.clone(),
                format!("127.0.0.1:{grpc}"),
                i as u64,
                profile.into(),
            );
            s.routes.push(RouteCfg {
                prefix: Prefix {
                    addr: Ipv4Addr::UNSPECIFIED,
                    len: 0,
                },
                port: 1,
                dmac: mac(&sw.router_if_mac),
                smac: mac(&sw.router_mac),
            });
            cfg.switches.push(s);
        }
        for srv in &self.servers {
            cfg.stacks.push(StackCfg {
                name: srv.name.clone(),
                underlay: srv.ip,
                encap: Encap::L2,
                mac: Some(mac(&srv.mac)),
                ports: self
                    .switches
                    .iter()
                    .map(|sw| (sw.name.clone(), 2))
                    .collect(),
            });
        }
        cfg
    }

    /// A z/OS-style VIPADYNAMIC profile for switch `i`: switch `owner` defines and distributes
    /// every DVIPA on `port` to all servers (DESTIP ALL); every other switch is its backup,
    /// ranked by index (sw2 highest).
    pub fn profile_text(&self, i: usize, owner: usize, port: u16) -> String {
        let mut s = format!(
            "; dvipa-testbed {}: {}\nVIPADYNAMIC\n",
            self.prefix,
            self.switch(i).name
        );
        for d in &self.dvipas {
            if i == owner {
                s.push_str(&format!(
                    "  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.255 {d}\n  VIPADISTRIBUTE {d} PORT {port} DESTIP ALL\n"
                ));
            } else {
                let rank = 200u8.saturating_sub(i as u8 * 10);
                s.push_str(&format!("  VIPABACKUP {rank} {d}\n"));
            }
        }
        s.push_str("ENDVIPADYNAMIC\n");
        s
    }
}

/// Make a root-namespace switch port inert for the root kernel: no IPv6, no IPv4 forwarding
/// from it, never answer ARP on it.
fn quiet_root_port(ifname: &str) -> Result<()> {
    sysctl_root(&[
        format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
        format!("net.ipv4.conf.{ifname}.forwarding=0"),
        format!("net.ipv4.conf.{ifname}.arp_ignore=8"),
        format!("net.ipv4.conf.{ifname}.rp_filter=0"),
    ])
}

/// Spawn `argv` in the current (root) namespace with stdout/stderr appended to `log`; stopped
/// (SIGTERM, then SIGKILL) when the handle drops.
pub fn spawn_root_logged(argv: &[String], log: &Path) -> Result<NsChild> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let f = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let f2 = f.try_clone()?;
    let child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(f)
        .stderr(f2)
        .spawn()
        .with_context(|| format!("cannot spawn {}", netns::show(argv)))?;
    crate::signals::register_child(child.id());
    Ok(NsChild::from_child(netns::show(argv), child))
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = self.teardown() {
            eprintln!("dvipa-testbed: teardown of {}: {e:#}", self.prefix);
        }
        // The logs are worth keeping only when something failed (a panicking test) or when asked.
        if !self.keep_logs {
            if std::thread::panicking() || std::env::var_os("DVIPA_KEEP_LOGS").is_some() {
                eprintln!("dvipa-testbed: logs kept in {}", self.log_dir.display());
            } else {
                let _ = std::fs::remove_dir_all(&self.log_dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_matched_by_exact_prefix() {
        assert!(is_our_ns("dvabc12", "dvabc12-c"));
        assert!(is_our_ns("dvabc12", "dvabc12-srv17"));
        assert!(!is_our_ns("dvabc12", "dvabc123-c"));
        assert!(!is_our_ns("dvabc12", "dvabc12-srv"));
        assert!(!is_our_ns("dvabc12", "dvabc12-other"));
        assert!(is_our_link("dvabc12", "dvabc12s1p2"));
        assert!(is_our_link("dvabc12", "dvabc12ctl"));
        assert!(!is_our_link("dvabc12", "dvabc12x"));
        assert!(!is_our_link("dvabc1", "dvabc12s1p2"));
    }

    #[test]
    fn fresh_prefixes_are_valid_and_names_fit_ifnamsiz() {
        let p = fresh_prefix();
        assert!(valid_prefix(&p), "{p}");
        let tb = Testbed::describe(&p, &TestbedConfig::default(), 7);
        for sw in &tb.switches {
            assert!(sw.uplink_if.len() <= 15 && sw.lan_if.len() <= 15);
        }
        assert!(tb.ctl.ifname.len() <= 15);
        assert_eq!(tb.server(2).ip, Ipv4Addr::new(10, 77, 7, 12));
        assert_eq!(tb.switch(2).next_hop, Ipv4Addr::new(10, 77, 102, 2));
        let argv = tb.switch_argv(1, "dvipa-switch", 1, 9559, Some(9090));
        assert_eq!(
            argv[1..].join(" "),
            format!(
                "--no-p4 --device-id 1 -i 1@{p}s1p1 -i 2@{p}s1p2 --thrift-port 9090 -- \
                 --grpc-server-addr 127.0.0.1:9559"
            )
        );
        // the testbed was only described; nothing to tear down
        let mut tb = tb;
        tb.torn_down = true;
    }
}

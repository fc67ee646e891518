//! A real BGP path for the testbed: BIRD 2 in the router namespace R and a GoBGP speaker
//! (`gobgpd`) for the controller to drive ([`Testbed::start_bgp`]).
//!
//! ```text
//! root ns: gobgpd (AS 65000, no listener: it connects out; gRPC API on 127.0.0.1:<free>)
//!          from the ctl leg 10.77.L.254  ──BGP──►  R: BIRD (10.77.L.1, AS 65001 eBGP / 65000 iBGP)
//! R: BIRD imports the DVIPA /32s (next hop = 10.77.(100+i).2, switch i's address on R's
//!    up_i leg) and exports them into R's kernel table, where they replace the hooks' routes.
//!    gobgpd sends every path (ADD-PATH), so BIRD holds the backups' paths too and skips one
//!    whose switch link is down (`check link`).
//! ```
//!
//! Timers for sub-second moves: keepalive 1 s, hold 3 s, connect retry 1 s on both sides; GoBGP
//! sends an UPDATE as soon as its best path changes and BIRD has no MRAI delay, so a route
//! change is one UPDATE away (milliseconds). The hold time only matters when a speaker dies.
//! Everything lives in a temporary directory under the testbed's log dir; dropping the
//! [`BgpRouter`] stops both daemons.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::{self, NsChild};
use crate::topo::{Testbed, spawn_root_logged};

/// gobgpd's AS.
pub const SPEAKER_AS: u32 = 65000;
/// BIRD's AS on an eBGP session.
pub const ROUTER_EBGP_AS: u32 = 65001;

/// True when `gobgpd` and `bird` (and `birdc`) are installed.
pub fn available() -> bool {
    ["gobgpd", "bird", "birdc"]
        .iter()
        .all(|b| which(b).is_some())
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// The running pair.
#[derive(Debug)]
pub struct BgpRouter {
    /// gobgpd's gRPC API (`host:port`) for `[advertise.bgp] gobgp`.
    pub api: SocketAddr,
    /// BIRD's control socket (for `birdc -s`).
    pub bird_socket: PathBuf,
    /// BIRD's AS.
    pub router_as: u32,
    /// Config and socket directory.
    pub dir: PathBuf,
    gobgpd: Option<NsChild>,
    bird: Option<NsChild>,
    gobgpd_argv: Vec<String>,
    log: PathBuf,
}

impl Testbed {
    /// Starts BIRD in R and gobgpd in the root namespace, peering over the LAN (eBGP, or iBGP
    /// with `ibgp`), and waits (≤ 15 s) until the session is established.
    pub fn start_bgp(&self, ibgp: bool) -> Result<BgpRouter> {
        if !available() {
            bail!("gobgpd and bird are not installed (scripts/install-test-deps.sh)");
        }
        let dir = self.log_dir.join("bgp");
        std::fs::create_dir_all(&dir)?;
        let router_as = if ibgp { SPEAKER_AS } else { ROUTER_EBGP_AS };
        let (speaker_ip, router_ip) = (self.ctl.ip, self.router.lan_ip);
        std::fs::write(
            dir.join("bird.conf"),
            bird_conf(router_ip, speaker_ip, router_as),
        )?;
        std::fs::write(
            dir.join("gobgpd.toml"),
            gobgpd_conf(speaker_ip, router_ip, router_as),
        )?;
        let bird_socket = dir.join("bird.ctl");
        let bird = self.spawn_logged(
            &self.router.ns,
            &[
                "bird",
                "-f",
                "-c",
                &dir.join("bird.conf").display().to_string(),
                "-s",
                &bird_socket.display().to_string(),
                "-P",
                &dir.join("bird.pid").display().to_string(),
            ],
            "bird",
        )?;
        let port = netns::free_local_port()?;
        let api: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
        let gobgpd_argv: Vec<String> = [
            "gobgpd",
            "-f",
            &dir.join("gobgpd.toml").display().to_string(),
            "-t",
            "toml",
            "-p",
            "-l",
            "info",
            "--api-hosts",
            &api.to_string(),
            "--pprof-disable",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self.log_dir.join("gobgpd.log");
        let gobgpd = spawn_root_logged(&gobgpd_argv, &log)?;
        let mut r = BgpRouter {
            api,
            bird_socket,
            router_as,
            dir,
            gobgpd: Some(gobgpd),
            bird: Some(bird),
            gobgpd_argv,
            log,
        };
        r.wait_established(Duration::from_secs(15))
            .context("BGP session gobgpd ↔ BIRD")?;
        Ok(r)
    }
}

impl BgpRouter {
    /// `birdc -s <socket> ARGS`.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["birdc", "-s"];
        let s = self.bird_socket.display().to_string();
        argv.push(&s);
        argv.extend_from_slice(args);
        netns::run(&argv)
    }

    /// BIRD's BGP table (`birdc show route protocol dvipa`).
    pub fn show_route(&self) -> String {
        self.birdc(&["show", "route", "protocol", "dvipa"])
            .unwrap_or_else(|e| format!("birdc: {e:#}"))
    }

    /// Whether BIRD's session with gobgpd is up.
    pub fn established(&self) -> bool {
        self.birdc(&["show", "protocols", "dvipa"])
            .is_ok_and(|o| o.contains("Established"))
    }

    /// Waits until the session is up.
    pub fn wait_established(&mut self, t: Duration) -> Result<()> {
        let until = Instant::now() + t;
        while Instant::now() < until {
            if self.established() {
                return Ok(());
            }
            for (n, c) in [("gobgpd", &mut self.gobgpd), ("bird", &mut self.bird)] {
                if let Some(st) = c.as_mut().and_then(|c| c.try_wait()) {
                    bail!("{n} exited ({st}); see {}", self.log.display());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "not established within {t:?}: {}",
            self.birdc(&["show", "protocols", "all", "dvipa"])
                .unwrap_or_default()
        )
    }

    /// Kills gobgpd (SIGKILL: its RIB is lost, BIRD drops the routes when the session closes).
    pub fn kill_gobgpd(&mut self) {
        if let Some(mut c) = self.gobgpd.take() {
            c.kill();
        }
    }

    /// Starts gobgpd again with the same configuration and API address (an empty RIB).
    pub fn restart_gobgpd(&mut self) -> Result<()> {
        self.kill_gobgpd();
        self.gobgpd = Some(spawn_root_logged(&self.gobgpd_argv, &self.log)?);
        Ok(())
    }
}

impl Drop for BgpRouter {
    fn drop(&mut self) {
        for c in [self.gobgpd.take(), self.bird.take()].into_iter().flatten() {
            let mut c = c;
            c.stop(Duration::from_secs(2));
        }
    }
}

/// BIRD 2 in R: the session with gobgpd, learned routes into the kernel.
pub fn bird_conf(router_ip: Ipv4Addr, speaker_ip: Ipv4Addr, router_as: u32) -> String {
    format!(
        r#"# generated by dvipa-testbed: R's BGP router (BIRD 2)
router id {router_ip};
log stderr all;
protocol device {{ scan time 10; }}
# connected networks: the IGP table the BGP next hops (the switches' addresses) resolve in;
# a link that goes down takes its network (and the paths via that switch) with it
protocol direct {{ ipv4; check link yes; }}
protocol kernel {{
  ipv4 {{ import none; export where source = RTS_BGP; }};
}}
protocol bgp dvipa {{
  local {router_ip} as {router_as};
  neighbor {speaker_ip} as {SPEAKER_AS};
  passive on;
  hold time 3;
  keepalive time 1;
  connect retry time 1;
  ipv4 {{
    import all;
    export none;
    gateway recursive;
    # every path gobgpd has (the backups' too): a dead primary's next hop is skipped at once
    add paths rx;
  }};
}}
"#
    )
}

/// gobgpd: one neighbor (BIRD), no listener (it connects out), fast timers.
pub fn gobgpd_conf(speaker_ip: Ipv4Addr, router_ip: Ipv4Addr, router_as: u32) -> String {
    format!(
        r#"# generated by dvipa-testbed: the DVIPA speaker (GoBGP)
[global.config]
  as = {SPEAKER_AS}
  router-id = "{speaker_ip}"
  port = -1

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{router_ip}"
    peer-as = {router_as}
  [neighbors.transport.config]
    local-address = "{speaker_ip}"
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 3
    keepalive-interval = 1
    minimum-advertisement-interval = 0
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.add-paths.config]
      send-max = 8
"#
    )
}

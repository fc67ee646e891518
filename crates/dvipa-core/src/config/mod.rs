//! The TOML configuration (what the profiles do not say) and the **effective VIPA list**
//! derived from it and the per-switch profiles.
//!
//! No file is read here: the caller passes the TOML text and, for each switch, the text of the
//! profile its `profile` field names ([`Cluster::build`]). Example (the design's figure 4 is in
//! `controller/examples/`):
//!
//! ```toml
//! controller_id = "dvipa-1"
//! p4info = "p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
//! device_config = "p4src/p4c-out/bmv2/dvipa.json"
//! hot_standby = false            # keep backups programmed (CRT mirrored) all the time
//! pin_on = "handshake"           # pin TCP connections once their handshake completed ("syn": at the SYN)
//! state_dir = "state"            # persisted DVIPA owners (relative to this file; "" = off)
//! agent = { listen = "0.0.0.0:7070" }    # insecure = true: plaintext agents (tests only)
//! metrics = { listen = "127.0.0.1:9464" }
//! tls = { ca = "ca.pem", cert = "ctl.pem", key = "ctl.key" }      # optional
//! timers = { heartbeat_ms = 1000, lease_ms = 3000, idle_timeout_ms = 300000, liveness_ms = 500 }
//! # Routing hooks (sh -c; DVIPA_ACTION, DVIPA_SWITCH, DVIPA_ADDR, DVIPA_PREFIX_LEN set).
//! advertise = { advertise_cmd = "/etc/dvipa/adv.sh", withdraw_cmd = "/etc/dvipa/wdr.sh" }
//!
//! [admin]                        # the operator API (`dvipa netstat …`)
//! socket = "/run/dvipa/admin.sock"   # default: Unix socket, mode 0600 (peer uid logged)
//! # group = "dvipa"              # ... or 0660 with this group
//! # listen = "127.0.0.1:7071"    # TCP: only with [admin.tls] or insecure_tcp = true
//! # insecure_tcp = true          # plaintext TCP on loopback (every local user is admin)
//! # allow_insecure_remote = true # plaintext on a non-loopback address (anyone who reaches it)
//! [admin.tls]                    # optional: mutual TLS, only the named certificates
//! ca = "admin-ca.pem"            # CA of the admin (client) certificates
//! cert = "ctl.pem"               # the controller's server certificate
//! key = "ctl.key"
//! allow = ["ops-alice", "ops-bob"]   # DNS names (SAN) of admin certificates
//!
//! [[switch]]
//! name = "MVS1"
//! p4runtime = "127.0.0.1:9559"
//! device_id = 1
//! election_id = 1
//! profile = "mvs1.profile"
//! tunnel_src = "192.168.100.1"   # outer source for IPIP stacks (optional)
//! routes = [{ prefix = "0.0.0.0/0", port = 1, dmac = "02:00:00:00:01:01", smac = "02:00:00:00:00:01" }]
//!
//! [[stack]]
//! name = "MVS2"
//! underlay = "10.0.0.2"          # its XCF address, as used in DESTIP
//! mac = "02:00:00:00:02:02"      # L2 direct server return ...
//! ports = { MVS1 = 2, MVS5 = 2 } # ... through this port of each switch
//! # encap = "ipip"               # or: IP-in-IP to `underlay`
//! ```
//!
//! Layout: `config/owners.rs` the owners file ([`OwnerState`]), `config/cluster.rs` the
//! effective VIPA list ([`Cluster`]); this file the value types, the TOML schema, overrides and
//! validation. Over the ~800-line guide on purpose: the schema and its validation are kept
//! together while several branches add configuration sections to them (issues 13, 16, 17, 18);
//! splitting them after those merges is the rest of issue 15.

use crate::profile::{self, DestIp, DistMethod, Loc, Profile, StandbyRole, VipaRange};
use crate::validate::{mac_problem, name_problem, p4runtime_problem, unicast_problem};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

mod cluster;
mod owners;

pub use cluster::{BackupSwitch, Candidate, Cluster, Distribution, EffectiveVipa};
pub use owners::{OWNERS_FILE, OwnerState, PersistedOwner};

/// A MAC address (`aa:bb:cc:dd:ee:ff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!(
                "`{s}` is not a MAC address (expected aa:bb:cc:dd:ee:ff)"
            ));
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            m[i] = u8::from_str_radix(p, 16)
                .ok()
                .filter(|_| p.len() == 2)
                .ok_or_else(|| format!("`{s}` is not a MAC address (bad byte `{p}`)"))?;
        }
        Ok(Mac(m))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 prefix (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// 0–32.
    pub len: u8,
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a prefix (expected a.b.c.d/len)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("`{s}`: `{a}` is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("`{s}`: prefix length must be 0–32"))?;
        if u32::from(addr) & !profile::prefix_mask(len) != 0 {
            return Err(format!("`{s}` has host bits set"));
        }
        Ok(Prefix { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// When a TCP connection reported by the switch's digest is pinned in the CRT (`pin_on`).
///
/// With `handshake` (the default) a SYN's digest only records the target the switch chose
/// (the switch itself keeps that choice in `syn_pending` for the handshake's later packets), and
/// the connection is pinned when its first non-SYN packet (the handshake's ACK) is reported
/// (`NOT_SYN` digest) with that same target. Spoofed SYNs never complete a handshake, so a SYN
/// flood cannot fill the CRT. With `syn` every SYN is pinned at once (the earlier behaviour: the
/// entry is written one round trip sooner, but a flood of SYNs fills the CRT). UDP has no
/// handshake and is pinned on its first packet either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinOn {
    /// At the first non-SYN packet after a recorded SYN (handshake completed).
    #[default]
    Handshake,
    /// At the SYN.
    Syn,
}

impl PinOn {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PinOn::Handshake => "handshake",
            PinOn::Syn => "syn",
        }
    }
}

/// The whole TOML file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identifies this controller (Welcome.controller_id).
    #[serde(default = "default_controller_id")]
    pub controller_id: String,
    /// P4Info file (text or binary protobuf).
    pub p4info: PathBuf,
    /// Target-specific device config (bmv2 JSON).
    pub device_config: PathBuf,
    /// Keep ranked backups continuously programmed (CRT mirrored), so a takeover is only the
    /// advertisement move.
    #[serde(default)]
    pub hot_standby: bool,
    /// Also distribute UDP to the DVIPA ports (TCP always).
    #[serde(default)]
    pub distribute_udp: bool,
    /// When a TCP connection the switch reports by digest is pinned in the CRT.
    #[serde(default)]
    pub pin_on: PinOn,
    /// Directory of the controller's persisted state: the current routing switch of each
    /// DVIPA ([`OwnerState`], file [`OWNERS_FILE`]), rewritten atomically on every ownership
    /// change and restored at start-up, so a restart keeps an operator's move. Relative to the
    /// TOML file's directory; default `state`; an empty string turns persistence off.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The agents' (server stacks') endpoint.
    pub agent: AgentCfg,
    /// The admin (operator) API.
    #[serde(default)]
    pub admin: AdminCfg,
    /// Advertise/withdraw hooks.
    #[serde(default)]
    pub advertise: AdvertiseCfg,
    /// TLS material; absent = plaintext (tests only).
    #[serde(default)]
    pub tls: Option<TlsCfg>,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: Option<MetricsCfg>,
    /// Timers.
    #[serde(default)]
    pub timers: Timers,
    /// `[liveness]`: the optional data-plane probe (`[liveness.dataplane]`).
    #[serde(default)]
    pub liveness: crate::dataplane_cfg::LivenessCfg,
    /// Routing switches.
    #[serde(rename = "switch", default)]
    pub switches: Vec<SwitchCfg>,
    /// Server stacks (targets).
    #[serde(rename = "stack", default)]
    pub stacks: Vec<StackCfg>,
    /// High availability on etcd (issue 17); absent = the controller runs alone.
    #[serde(default)]
    pub ha: Option<HaCfg>,
}

fn default_controller_id() -> String {
    "dvipa".into()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

/// A `SocketAddr` field whose parse error names the field (`field`: `x` is not …).
fn parse_addr<E: serde::de::Error>(field: &str, s: &str) -> Result<SocketAddr, E> {
    s.parse().map_err(|_| {
        E::custom(format!(
            "{field}: `{s}` is not a listen address (expected ip:port, e.g. 127.0.0.1:7071)"
        ))
    })
}

macro_rules! addr_field {
    ($f:ident, $name:literal) => {
        fn $f<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
            let s = String::deserialize(d)?;
            parse_addr($name, &s)
        }
    };
}
addr_field!(de_agent_listen, "agent.listen");
addr_field!(de_metrics_listen, "metrics.listen");

/// `[agent]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentCfg {
    /// Listen address of the ServerStack gRPC service.
    #[serde(deserialize_with = "de_agent_listen")]
    pub listen: SocketAddr,
    /// Run the agent endpoint without TLS (any client can claim any stack): tests only, and
    /// only without `[tls]`. The controller warns loudly at start-up and sets the
    /// `dvipa_agent_insecure` gauge. `dvipa controller --insecure[=BOOL]` overrides it.
    #[serde(default)]
    pub insecure: bool,
}

/// The admin API's default TCP listen address (TCP only with `[admin.tls]` or
/// `insecure_tcp = true`).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7071";

/// The admin API's default Unix socket (also the CLI's default `--admin`).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/dvipa/admin.sock";

fn de_admin_listen_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    parse_addr("admin.listen", &s).map(Some)
}

/// `[admin]`: the operator API (`dvipa netstat`, `table`, `diff`, `move` …).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminCfg {
    /// The Unix socket of the admin API (default [`DEFAULT_ADMIN_SOCKET`]; relative to the TOML
    /// file; `""` = none). Mode 0600, owned by the controller's user; the peer's uid is logged.
    #[serde(default = "default_admin_socket")]
    pub socket: PathBuf,
    /// A group (name or number) that may use the socket too: the socket gets this group and
    /// mode 0660.
    #[serde(default)]
    pub group: Option<String>,
    /// TCP listen address. TCP is served only with `[admin.tls]` or `insecure_tcp = true`
    /// (then on [`DEFAULT_ADMIN_LISTEN`] when this is not set); an address without either is
    /// refused. Anything but a loopback address needs `[admin.tls]` or
    /// `allow_insecure_remote = true`.
    #[serde(default, deserialize_with = "de_admin_listen_opt")]
    pub listen: Option<SocketAddr>,
    /// Mutual TLS: only clients with a certificate from `ca` whose name is in `allow`.
    #[serde(default)]
    pub tls: Option<AdminTlsCfg>,
    /// Serve the admin API over plaintext TCP on a loopback address: every local user can then
    /// change routing (tests, demos).
    #[serde(default)]
    pub insecure_tcp: bool,
    /// Allow a plaintext admin API on a non-loopback address (anyone who can reach it can move
    /// DVIPAs and take switches down); implies `insecure_tcp`.
    #[serde(default)]
    pub allow_insecure_remote: bool,
}

fn default_admin_socket() -> PathBuf {
    PathBuf::from(DEFAULT_ADMIN_SOCKET)
}

fn default_admin_listen() -> SocketAddr {
    DEFAULT_ADMIN_LISTEN.parse().expect("valid default")
}

impl AdminCfg {
    /// TCP may be served: `[admin.tls]`, `insecure_tcp` or `allow_insecure_remote`.
    pub fn tcp_allowed(&self) -> bool {
        self.tls.is_some() || self.insecure_tcp || self.allow_insecure_remote
    }

    /// The TCP address served, if any: `listen` (or [`DEFAULT_ADMIN_LISTEN`]) when
    /// [`AdminCfg::tcp_allowed`].
    pub fn tcp_listen(&self) -> Option<SocketAddr> {
        self.tcp_allowed()
            .then(|| self.listen.unwrap_or_else(default_admin_listen))
    }

    /// The Unix socket served, if any.
    pub fn socket_path(&self) -> Option<&Path> {
        (!self.socket.as_os_str().is_empty()).then_some(self.socket.as_path())
    }
}

impl Default for AdminCfg {
    fn default() -> Self {
        AdminCfg {
            socket: default_admin_socket(),
            group: None,
            listen: None,
            tls: None,
            insecure_tcp: false,
            allow_insecure_remote: false,
        }
    }
}

/// `[admin.tls]`: PEM paths (relative to the TOML file) and the admin allow-list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsCfg {
    /// CA that signs the admin (client) certificates.
    pub ca: PathBuf,
    /// The controller's server certificate for the admin API.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Names (DNS subject-alternative names) of the admin certificates allowed in; a verified
    /// certificate with no listed name is refused (`PERMISSION_DENIED`) and counted.
    pub allow: Vec<String>,
}

/// `[advertise]`: commands run (`sh -c`) when a switch must advertise or withdraw a DVIPA,
/// with `DVIPA_ACTION`, `DVIPA_SWITCH`, `DVIPA_ADDR`, `DVIPA_PREFIX_LEN` in the environment.
/// No command = nothing is run. `--advertise-cmd` / `--withdraw-cmd` override them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseCfg {
    /// Command for advertise.
    #[serde(default)]
    pub advertise_cmd: Option<String>,
    /// Command for withdraw.
    #[serde(default)]
    pub withdraw_cmd: Option<String>,
    /// `command` (the hooks above, default) or `bgp` (a GoBGP speaker, `[advertise.bgp]`).
    #[serde(default)]
    pub mode: AdvertiseMode,
    /// `[advertise.bgp]`: the GoBGP speaker driven when `mode = "bgp"`.
    #[serde(default)]
    pub bgp: Option<BgpCfg>,
}

/// How DVIPAs are advertised.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AdvertiseMode {
    /// Run `advertise_cmd` / `withdraw_cmd`.
    #[default]
    Command,
    /// Announce `DVIPA/len` through a GoBGP speaker over its gRPC API.
    Bgp,
}

/// `[advertise.bgp]`: the GoBGP speaker (`gobgpd`, configured with its own peers) the controller
/// drives over gRPC. Each DVIPA is announced with NEXT_HOP = `next_hop.<switch>` of the routing
/// switch; backups are pre-announced with a worse MED (see docs/bgp.md).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BgpCfg {
    /// gobgpd's gRPC API, `host:port` (gobgpd's default is 127.0.0.1:50051).
    #[serde(default = "default_gobgp")]
    pub gobgp: String,
    /// Switch name → its address toward the router (the NEXT_HOP announced for it).
    pub next_hop: BTreeMap<String, Ipv4Addr>,
    /// Pre-announce every VIPABACKUP switch with MED = `med_step` × its place in the backup
    /// list (1 = highest rank), so a withdrawal of the primary alone moves traffic.
    #[serde(default = "yes")]
    pub backups: bool,
    /// MED distance between the primary (MED 0) and each backup place.
    #[serde(default = "default_med_step")]
    pub med_step: u32,
    /// How often the controller compares gobgpd's RIB and peers with its intent (ms); a
    /// gobgpd that restarted gets every announcement again within this time.
    #[serde(default = "default_bgp_reconcile_ms")]
    pub reconcile_ms: u64,
}

fn default_gobgp() -> String {
    "127.0.0.1:50051".into()
}
fn yes() -> bool {
    true
}
fn default_med_step() -> u32 {
    100
}
fn default_bgp_reconcile_ms() -> u64 {
    1000
}

impl AdvertiseCfg {
    /// The `[advertise]` fields that do not fit the switches: (field, message).
    pub fn check(&self, switches: &[SwitchCfg]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let Some(b) = self
            .bgp
            .as_ref()
            .filter(|_| self.mode == AdvertiseMode::Bgp)
        else {
            if self.mode == AdvertiseMode::Bgp {
                v.push((
                    "advertise.bgp".into(),
                    "mode = \"bgp\" needs an [advertise.bgp] table (gobgp, next_hop)".into(),
                ));
            }
            return v;
        };
        for s in switches {
            if !b.next_hop.contains_key(&s.name) {
                v.push((
                    format!("advertise.bgp.next_hop.{}", s.name),
                    format!(
                        "switch {} has no next hop for its BGP announcements",
                        s.name
                    ),
                ));
            }
        }
        for n in b.next_hop.keys() {
            if !switches.iter().any(|s| &s.name == n) {
                v.push((
                    format!("advertise.bgp.next_hop.{n}"),
                    format!("{n} is not a [[switch]] name"),
                ));
            }
        }
        if b.gobgp.parse::<SocketAddr>().is_err() && !b.gobgp.contains(':') {
            v.push((
                "advertise.bgp.gobgp".into(),
                format!("{:?} is not host:port", b.gobgp),
            ));
        }
        if b.reconcile_ms == 0 {
            v.push(("advertise.bgp.reconcile_ms".into(), "must be > 0".into()));
        }
        v
    }
}

/// `[tls]`: PEM paths.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsCfg {
    /// CA that signs agent certificates.
    pub ca: PathBuf,
    /// Controller certificate.
    pub cert: PathBuf,
    /// Controller key.
    pub key: PathBuf,
}

/// `[ha]`: controller replicas elected through etcd (docs/ha.md).
///
/// ```toml
/// [ha]
/// etcd = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]
/// election = "/dvipa/prod/leader"   # the other keys live under "/dvipa/prod/"
/// lease_ms = 2000
/// replica = "ctl-a"                 # unique per replica
/// advertise_admin = "10.0.0.1:7444" # told to operators who reach a follower (optional)
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HaCfg {
    /// etcd client endpoints (`http://host:port`; TLS to etcd is not supported yet).
    pub etcd: Vec<String>,
    /// The election's key (etcd election name); its parent is the cluster prefix.
    pub election: String,
    /// The leadership lease (etcd lease TTL, rounded up to whole seconds by etcd); the leader
    /// stops writing on its own clock before it can expire.
    #[serde(default = "default_ha_lease_ms")]
    pub lease_ms: u64,
    /// This replica's name (the election's value: who the leader is).
    pub replica: String,
    /// The admin address operators should use on this replica when it is the leader.
    #[serde(default)]
    pub advertise_admin: Option<String>,
}

fn default_ha_lease_ms() -> u64 {
    2000
}

/// Bounds of `[ha]`.
pub const HA_LEASE_MS_MIN: u64 = 1000;
/// Bounds of `[ha]`.
pub const HA_LEASE_MS_MAX: u64 = 60_000;
/// Bounds of `[ha]`: endpoints, name lengths.
pub const HA_MAX_ENDPOINTS: usize = 16;
const HA_MAX_NAME: usize = 256;

impl HaCfg {
    /// The cluster prefix: the election key's parent, with a trailing `/`.
    pub fn prefix(&self) -> String {
        match self.election.trim_end_matches('/').rfind('/') {
            Some(i) => self.election[..=i].to_string(),
            None => String::from("/"),
        }
    }

    /// Field → problem, for `Config::validate`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if self.etcd.is_empty() {
            v.push(("etcd", "at least one etcd endpoint is required".to_string()));
        }
        if self.etcd.len() > HA_MAX_ENDPOINTS {
            v.push((
                "etcd",
                format!("{} endpoints: at most {HA_MAX_ENDPOINTS}", self.etcd.len()),
            ));
        }
        for ep in &self.etcd {
            if ep.starts_with("https://") {
                v.push((
                    "etcd",
                    format!("{ep:?}: TLS to etcd is not supported yet (docs/ha.md); use http://"),
                ));
                continue;
            }
            let rest = ep.strip_prefix("http://");
            if rest.is_none_or(|r| r.is_empty() || !r.contains(':')) {
                v.push(("etcd", format!("{ep:?}: expected http://host:port")));
            }
        }
        if !self.election.starts_with('/')
            || self.election.ends_with('/')
            || self.election.len() > HA_MAX_NAME
            || self.election.matches('/').count() < 2
        {
            v.push((
                "election",
                format!(
                    "{:?}: expected a key like /dvipa/<cluster>/leader (absolute, with a parent, \
                     no trailing /, at most {HA_MAX_NAME} bytes)",
                    self.election
                ),
            ));
        }
        if !(HA_LEASE_MS_MIN..=HA_LEASE_MS_MAX).contains(&self.lease_ms) {
            v.push((
                "lease_ms",
                format!(
                    "{}: must be {HA_LEASE_MS_MIN}..={HA_LEASE_MS_MAX}",
                    self.lease_ms
                ),
            ));
        }
        if self.replica.trim().is_empty()
            || self.replica.len() > HA_MAX_NAME
            || self.replica.chars().any(|c| c.is_control() || c == '\n')
        {
            v.push((
                "replica",
                format!(
                    "{:?}: must be a non-empty name of at most {HA_MAX_NAME} bytes",
                    self.replica
                ),
            ));
        }
        v
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsCfg {
    /// Prometheus listen address.
    #[serde(deserialize_with = "de_metrics_listen")]
    pub listen: SocketAddr,
}

/// `[timers]`, all in milliseconds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    /// How often agents must send something.
    pub heartbeat_ms: u64,
    /// After this long without a message a stack's targets go not-ready.
    pub lease_ms: u64,
    /// CRT idle timeout programmed on the switch.
    pub idle_timeout_ms: u64,
    /// Switch liveness detection time: a switch that does not answer the controller's probe
    /// for this long, or whose session ended and did not come back, is down.
    pub liveness_ms: u64,
    /// Every switch is re-read this often and differences repaired (`--resync-secs`
    /// overrides it).
    pub resync_ms: u64,
    /// The liveness probe (a P4Runtime `Capabilities` RPC) is sent this often; at most
    /// `liveness_ms` / 2 (default `liveness_ms` / 3).
    pub probe_ms: Option<u64>,
    /// HTTP/2 keep-alive ping interval of the P4Runtime connections; an unanswered ping
    /// closes the connection after `liveness_ms`. At most `liveness_ms` (default
    /// `liveness_ms` / 3). The embedded switch's server gets the same value
    /// (`dvipa-switch --grpc-keepalive-ms`).
    pub keepalive_ms: Option<u64>,
    /// `TCP_USER_TIMEOUT` of the P4Runtime sockets: unacknowledged data aborts the connection
    /// after this long. At least `liveness_ms` (default `liveness_ms`).
    pub tcp_user_timeout_ms: Option<u64>,
    /// Bound of one P4Runtime connection attempt (TCP connect, then the first arbitration
    /// answer). Default `liveness_ms`, at least 200 ms and at most 3 s.
    pub connect_timeout_ms: Option<u64>,
}

impl Timers {
    fn ms(v: u64) -> std::time::Duration {
        std::time::Duration::from_millis(v.max(1))
    }

    /// Switch liveness detection time.
    pub fn liveness(&self) -> std::time::Duration {
        Self::ms(self.liveness_ms)
    }

    /// Interval of the liveness probe.
    pub fn probe(&self) -> std::time::Duration {
        Self::ms(self.probe_ms.unwrap_or(self.liveness_ms / 3))
    }

    /// HTTP/2 keep-alive interval.
    pub fn keepalive(&self) -> std::time::Duration {
        Self::ms(self.keepalive_ms.unwrap_or(self.liveness_ms / 3))
    }

    /// `TCP_USER_TIMEOUT` of the P4Runtime sockets.
    pub fn tcp_user_timeout(&self) -> std::time::Duration {
        Self::ms(self.tcp_user_timeout_ms.unwrap_or(self.liveness_ms))
    }

    /// Bound of one P4Runtime connection attempt.
    pub fn connect_timeout(&self) -> std::time::Duration {
        Self::ms(
            self.connect_timeout_ms
                .unwrap_or(self.liveness_ms.clamp(200, 3000)),
        )
    }

    /// The `[timers]` fields that do not fit together: (field, message).
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        let l = self.liveness_ms;
        if l < 3 {
            v.push((
                "timers.liveness_ms",
                format!("must be at least 3 (ms; {l} leaves no room for a probe)"),
            ));
            return v;
        }
        if let Some(p) = self.probe_ms
            && (p == 0 || p.saturating_mul(2) > l)
        {
            v.push((
                "timers.probe_ms",
                format!(
                    "must be > 0 and at most liveness_ms / 2 ({p} > {}): two probes must fit in \
                     the detection time",
                    l / 2
                ),
            ));
        }
        if let Some(k) = self.keepalive_ms
            && (k == 0 || k > l)
        {
            v.push((
                "timers.keepalive_ms",
                format!("must be > 0 and at most liveness_ms ({k} > {l})"),
            ));
        }
        if let Some(t) = self.tcp_user_timeout_ms
            && t < l
        {
            v.push((
                "timers.tcp_user_timeout_ms",
                format!(
                    "must be at least liveness_ms ({t} < {l}): a shorter one would drop \
                     connections over losses the liveness check tolerates"
                ),
            ));
        }
        if let Some(c) = self.connect_timeout_ms
            && !(1..=60_000).contains(&c)
        {
            v.push((
                "timers.connect_timeout_ms",
                format!("must be 1..=60000 ({c})"),
            ));
        }
        v
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            heartbeat_ms: 1000,
            lease_ms: 3000,
            idle_timeout_ms: 300_000,
            liveness_ms: 500,
            resync_ms: 30_000,
            probe_ms: None,
            keepalive_ms: None,
            tcp_user_timeout_ms: None,
            connect_timeout_ms: None,
        }
    }
}

/// `[[switch]]`: one routing switch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SwitchCfg {
    /// Name (used in messages, VIPA lists, CLI).
    pub name: String,
    /// P4Runtime gRPC address.
    pub p4runtime: String,
    /// P4Runtime device id.
    pub device_id: u64,
    /// Election id (this controller's, for mastership).
    #[serde(default = "one")]
    pub election_id: u64,
    /// How many election ids, from `election_id` up, this controller may use for the switch:
    /// when the switch refuses `election_id` as "already used" because a dead session of this
    /// controller still holds it, the controller moves to the next id of the range (1 = never).
    #[serde(default = "default_election_id_range")]
    pub election_id_range: u64,
    /// The switch's profile file (relative to the TOML file's directory).
    pub profile: PathBuf,
    /// Outer source address for IPIP-encapsulated targets.
    #[serde(default)]
    pub tunnel_src: Option<Ipv4Addr>,
    /// The switch's own IPv4 routes (`ipv4_route` table).
    #[serde(default)]
    pub routes: Vec<RouteCfg>,
    /// P4Runtime over TLS to this switch (absent: plaintext).
    #[serde(default)]
    pub tls: Option<SwitchTlsCfg>,
    /// Issue 16: the switch's target, `bmv2` (default: the top-level `p4info` and
    /// `device_config`) or `tofino` (a Tofino P4Runtime server: Stratum or the SDE's).
    #[serde(default)]
    pub target: SwitchTarget,
    /// For `tofino`: the Tofino compiler's output directory (`bfrt.json`, `manifest.json`,
    /// `pipe/context.json`, `pipe/tofino.bin`, and the P4Info as `p4info.txtpb`), relative to
    /// the TOML file. The device config is packed from it at start-up (docs/tofino.md).
    #[serde(default)]
    pub pipeline_dir: Option<PathBuf>,
    /// For `tofino`: the device config format the server takes.
    #[serde(default)]
    pub device_config_format: DeviceConfigFormat,
    /// What the switch's P4Runtime server does; unset values follow the target.
    #[serde(default)]
    pub capabilities: CapabilitiesCfg,
}

/// `target` of a `[[switch]]`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SwitchTarget {
    /// bmv2 `simple_switch_grpc` or the embedded switch (v1model program).
    #[default]
    Bmv2,
    /// A Tofino switch (TNA program, `p4src/tna/`).
    Tofino,
}

/// `device_config_format` of a `[[switch]]` (Tofino only).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceConfigFormat {
    /// Stratum's `BfPipelineConfig` (stratum_bfrt, stratum_bf).
    #[default]
    Bfrt,
    /// PI's packed format (stratum_bf, the SDE's P4Runtime server).
    Pi,
}

/// `[switch.capabilities]`: how the P4Runtime server behaves where servers differ.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesCfg {
    /// The server re-sends an unacknowledged digest list (bmv2: yes; Stratum-bfrt acks digests
    /// itself and ignores DigestListAck and the digest config: no).
    #[serde(default)]
    pub digest_acks: Option<bool>,
    /// The server sends idle-timeout notifications for CRT entries (bmv2: yes; Tofino servers:
    /// not relied upon, the controller ages CRT entries by reading their direct counters).
    #[serde(default)]
    pub idle_notifications: Option<bool>,
}

/// Effective capabilities of a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// See [`CapabilitiesCfg::digest_acks`].
    pub digest_acks: bool,
    /// See [`CapabilitiesCfg::idle_notifications`].
    pub idle_notifications: bool,
}

impl SwitchCfg {
    /// The effective capabilities: the TOML's, else the target's defaults.
    pub fn capabilities(&self) -> Capabilities {
        let tofino = self.target == SwitchTarget::Tofino;
        Capabilities {
            digest_acks: self.capabilities.digest_acks.unwrap_or(!tofino),
            idle_notifications: self.capabilities.idle_notifications.unwrap_or(!tofino),
        }
    }
}

/// `tls` of a `[[switch]]`: P4Runtime over TLS, as simple_switch_grpc serves it with
/// `--grpc-server-ssl` (and, with `cert` and `key`, mutual TLS for
/// `--grpc-server-with-client-auth`). Paths are relative to the TOML file; the files are read
/// again for every new connection, so rotated files take effect on the next one.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SwitchTlsCfg {
    /// CA that signs the switch's server certificate.
    pub ca: PathBuf,
    /// The controller's client certificate (mutual TLS).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Name expected in the switch's certificate (default: the host of `p4runtime`).
    #[serde(default)]
    pub server_name: Option<String>,
}

fn one() -> u64 {
    1
}

fn default_election_id_range() -> u64 {
    16
}

/// One `ipv4_route` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteCfg {
    /// Destination prefix.
    pub prefix: Prefix,
    /// Egress port.
    pub port: u16,
    /// Next hop MAC.
    pub dmac: Mac,
    /// Switch's own MAC on that port.
    pub smac: Mac,
}

/// How packets reach a stack.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// Rewrite the destination MAC and send out of the stack's port (direct server return).
    #[default]
    L2,
    /// IP-in-IP to the stack's underlay address.
    Ipip,
}

/// `[[stack]]`: one server stack.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StackCfg {
    /// Name (Hello.stack).
    pub name: String,
    /// Underlay ("XCF") address: what DESTIP lists.
    pub underlay: Ipv4Addr,
    /// L2 or IPIP.
    #[serde(default)]
    pub encap: Encap,
    /// MAC of the stack (L2).
    #[serde(default)]
    pub mac: Option<Mac>,
    /// Switch name → port the stack is reached through (L2).
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
}

/// One configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax or type error.
    #[error("{file}:{line}:{col}: {msg}")]
    Toml {
        /// File.
        file: String,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        col: u32,
        /// What is wrong.
        msg: String,
    },
    /// A field with an invalid value (`file:line:col: field: msg`; the position is that of
    /// the value, or of the table that lacks it; none when the value is not in the file, e.g.
    /// it came from a command-line flag).
    #[error("{file}:{}{field}: {msg}", pos_prefix(.pos))]
    Field {
        /// File.
        file: String,
        /// 1-based line and column in the file.
        pos: Option<(u32, u32)>,
        /// Dotted path of the field, e.g. `stack[2].ports.MVS9`.
        field: String,
        /// What is wrong.
        msg: String,
    },
    /// A profile error (syntax or cross-check against the TOML / other profiles).
    #[error("{0}")]
    Profile(#[from] profile::ProfileError),
}

/// All errors found (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

use crate::validate::line_col;

fn pos_prefix(pos: &Option<(u32, u32)>) -> String {
    match pos {
        Some((l, c)) => format!("{l}:{c}: "),
        None => " ".into(),
    }
}

/// Command-line values of `dvipa controller` that override the TOML's (flag > TOML >
/// default). `None` = keep the TOML value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--admin-listen` → `admin.listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `--admin-socket` → `admin.socket`.
    pub admin_socket: Option<PathBuf>,
    /// `--admin-insecure-tcp[=BOOL]` → `admin.insecure_tcp`.
    pub admin_insecure_tcp: Option<bool>,
    /// `--insecure[=BOOL]` → `agent.insecure`.
    pub agent_insecure: Option<bool>,
    /// `--advertise-cmd` → `advertise.advertise_cmd`.
    pub advertise_cmd: Option<String>,
    /// `--withdraw-cmd` → `advertise.withdraw_cmd`.
    pub withdraw_cmd: Option<String>,
    /// `--resync-secs` → `timers.resync_ms`.
    pub resync_ms: Option<u64>,
}

impl Overrides {
    /// The dotted field name, with the flag when the value came from the command line.
    fn field(&self, field: &str) -> String {
        let flag = match field {
            "admin.listen" if self.admin_listen.is_some() => "--admin-listen",
            "admin.socket" if self.admin_socket.is_some() => "--admin-socket",
            "admin.insecure_tcp" if self.admin_insecure_tcp.is_some() => "--admin-insecure-tcp",
            "agent.insecure" if self.agent_insecure.is_some() => "--insecure",
            "advertise.advertise_cmd" if self.advertise_cmd.is_some() => "--advertise-cmd",
            "advertise.withdraw_cmd" if self.withdraw_cmd.is_some() => "--withdraw-cmd",
            "timers.resync_ms" if self.resync_ms.is_some() => "--resync-secs",
            _ => return field.to_string(),
        };
        format!("{field} ({flag})")
    }
}

/// The dotted key path toml reports for a value error (`in `a.b`` without the input).
fn toml_error_keys(e: &toml::de::Error) -> Option<String> {
    let mut e = e.clone();
    e.set_input(None);
    let text = e.to_string();
    let keys = text
        .lines()
        .last()?
        .strip_prefix("in `")?
        .strip_suffix('`')?;
    (!keys.is_empty()).then(|| keys.to_string())
}

impl Config {
    /// Parse and validate the TOML text (`file` is only used in messages).
    pub fn parse(file: &str, src: &str) -> Result<Config, ConfigErrors> {
        Self::parse_with(file, src, &Overrides::default())
    }

    /// Parse the TOML text, apply the command-line `overrides`, and validate the result (an
    /// error about an overridden value names the flag too).
    pub fn parse_with(file: &str, src: &str, ov: &Overrides) -> Result<Config, ConfigErrors> {
        let mut cfg: Config = toml::from_str(src).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(src, s.start)).unwrap_or((1, 1));
            let mut msg = e.message().to_string();
            // Name the field unless the message already does (our own value parsers).
            if let Some(keys) = toml_error_keys(&e)
                && !msg.starts_with(&format!("{keys}:"))
            {
                msg = format!("{keys}: {msg}");
            }
            ConfigErrors(vec![ConfigError::Toml {
                file: file.into(),
                line,
                col,
                msg,
            }])
        })?;
        cfg.apply(ov);
        let mut errs = cfg.validate(file, ov);
        for e in &mut errs {
            // A value from a command-line flag (`admin.listen (--admin-listen)`) has no place
            // in the file.
            if let ConfigError::Field { pos, field, .. } = e
                && pos.is_none()
                && !field.contains(' ')
            {
                *pos = crate::validate::field_pos(src, field);
            }
        }
        if errs.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, ov: &Overrides) {
        if let Some(a) = ov.admin_listen {
            self.admin.listen = Some(a);
        }
        if let Some(p) = &ov.admin_socket {
            self.admin.socket = p.clone();
        }
        if let Some(i) = ov.admin_insecure_tcp {
            self.admin.insecure_tcp = i;
        }
        if let Some(i) = ov.agent_insecure {
            self.agent.insecure = i;
        }
        if let Some(c) = &ov.advertise_cmd {
            self.advertise.advertise_cmd = Some(c.clone());
        }
        if let Some(c) = &ov.withdraw_cmd {
            self.advertise.withdraw_cmd = Some(c.clone());
        }
        if let Some(r) = ov.resync_ms {
            self.timers.resync_ms = r;
        }
    }

    /// The admin API is reachable from other hosts without authentication: a non-loopback
    /// `listen` address, no `[admin.tls]`, no `allow_insecure_remote`. The message says what
    /// to do; the field is `admin.listen`.
    pub fn admin_exposure(admin: &AdminCfg, listen: SocketAddr) -> Option<String> {
        (!listen.ip().is_loopback() && admin.tls.is_none() && !admin.allow_insecure_remote).then(
            || {
                format!(
                    "{listen} is not a loopback address: the admin API would accept anyone \
                     without authentication; configure [admin.tls] (mutual TLS with an allow \
                     list), or set admin.allow_insecure_remote = true to force plaintext"
                )
            },
        )
    }

    /// The effective settings (everything but switches, stacks and profiles) as
    /// `(dotted TOML field, value)`, for `dvipa check-config` and the start-up log.
    pub fn settings(&self) -> Vec<(String, String)> {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        let path = |p: &PathBuf| p.display().to_string();
        let mut v: Vec<(String, String)> = vec![
            ("controller_id".into(), self.controller_id.clone()),
            ("p4info".into(), path(&self.p4info)),
            ("device_config".into(), path(&self.device_config)),
            ("hot_standby".into(), self.hot_standby.to_string()),
            ("distribute_udp".into(), self.distribute_udp.to_string()),
            ("pin_on".into(), self.pin_on.as_str().into()),
            (
                "state_dir".into(),
                if self.state_dir.as_os_str().is_empty() {
                    "(off)".into()
                } else {
                    path(&self.state_dir)
                },
            ),
            ("agent.listen".into(), self.agent.listen.to_string()),
            ("agent.insecure".into(), self.agent.insecure.to_string()),
        ];
        match &self.tls {
            Some(t) => v.extend([
                ("tls.ca".into(), path(&t.ca)),
                ("tls.cert".into(), path(&t.cert)),
                ("tls.key".into(), path(&t.key)),
            ]),
            None => v.push(("tls".into(), "(none)".into())),
        }
        v.push((
            "admin.socket".into(),
            match self.admin.socket_path() {
                Some(p) => path(&p.to_owned()),
                None => "(off)".into(),
            },
        ));
        match &self.ha {
            Some(h) => v.extend([
                ("ha.etcd".into(), h.etcd.join(",")),
                ("ha.election".into(), h.election.clone()),
                ("ha.lease_ms".into(), h.lease_ms.to_string()),
                ("ha.replica".into(), h.replica.clone()),
            ]),
            None => v.push(("ha".into(), "(off: a single controller)".into())),
        }
        v.push(("admin.group".into(), opt(&self.admin.group)));
        v.push((
            "admin.listen".into(),
            match self.admin.tcp_listen() {
                Some(a) => a.to_string(),
                None => "(off)".into(),
            },
        ));
        v.push((
            "admin.insecure_tcp".into(),
            self.admin.insecure_tcp.to_string(),
        ));
        match &self.admin.tls {
            Some(t) => v.extend([
                ("admin.tls.ca".into(), path(&t.ca)),
                ("admin.tls.cert".into(), path(&t.cert)),
                ("admin.tls.key".into(), path(&t.key)),
                ("admin.tls.allow".into(), t.allow.join(",")),
            ]),
            None => v.push(("admin.tls".into(), "(none: plaintext)".into())),
        }
        v.extend([
            (
                "admin.allow_insecure_remote".into(),
                self.admin.allow_insecure_remote.to_string(),
            ),
            (
                "advertise.advertise_cmd".into(),
                opt(&self.advertise.advertise_cmd),
            ),
            (
                "advertise.withdraw_cmd".into(),
                opt(&self.advertise.withdraw_cmd),
            ),
            (
                "advertise.mode".into(),
                match self.advertise.mode {
                    AdvertiseMode::Command => "command".into(),
                    AdvertiseMode::Bgp => format!(
                        "bgp (gobgp {})",
                        self.advertise
                            .bgp
                            .as_ref()
                            .map_or("-", |b| b.gobgp.as_str())
                    ),
                },
            ),
            (
                "metrics.listen".into(),
                self.metrics
                    .as_ref()
                    .map(|m| m.listen.to_string())
                    .unwrap_or_else(|| "(off)".into()),
            ),
        ]);
        let t = &self.timers;
        v.extend([
            ("timers.heartbeat_ms".into(), t.heartbeat_ms.to_string()),
            ("timers.lease_ms".into(), t.lease_ms.to_string()),
            (
                "timers.idle_timeout_ms".into(),
                t.idle_timeout_ms.to_string(),
            ),
            ("timers.liveness_ms".into(), t.liveness_ms.to_string()),
            ("timers.resync_ms".into(), t.resync_ms.to_string()),
            ("timers.probe_ms".into(), t.probe().as_millis().to_string()),
            (
                "timers.keepalive_ms".into(),
                t.keepalive().as_millis().to_string(),
            ),
            (
                "timers.tcp_user_timeout_ms".into(),
                t.tcp_user_timeout().as_millis().to_string(),
            ),
            (
                "timers.connect_timeout_ms".into(),
                t.connect_timeout().as_millis().to_string(),
            ),
        ]);
        v
    }

    fn validate(&self, file: &str, ov: &Overrides) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut e = |field: String, msg: String| {
            errs.push(ConfigError::Field {
                file: file.into(),
                pos: None,
                field,
                msg,
            })
        };
        if self.agent.insecure && self.tls.is_some() {
            e(
                ov.field("agent.insecure"),
                "plaintext agents were asked for but the configuration has a [tls] section; \
                 remove one"
                    .into(),
            );
        }
        if let Some(h) = &self.ha {
            for (field, msg) in h.problems() {
                e(ov.field(&format!("ha.{field}")), msg);
            }
        }
        if let Some(a) = self.admin.listen
            && !self.admin.tcp_allowed()
            && a.ip().is_loopback()
        {
            e(
                ov.field("admin.listen"),
                format!(
                    "{a}: a TCP admin endpoint needs [admin.tls] (mutual TLS with an allow list) \
                     or admin.insecure_tcp = true (plaintext: every local user could change \
                     routing); without them the admin API is only on the Unix socket \
                     admin.socket"
                ),
            );
        }
        if let Some(a) = self.admin.tcp_listen().or(self.admin.listen)
            && let Some(msg) = Self::admin_exposure(&self.admin, a)
        {
            e(ov.field("admin.listen"), msg);
        }
        if self.admin.socket_path().is_none() && self.admin.tcp_listen().is_none() {
            e(
                ov.field("admin.socket"),
                "is empty and there is no TCP admin endpoint: nobody could use the admin API"
                    .into(),
            );
        }
        if self
            .admin
            .group
            .as_deref()
            .is_some_and(|g| g.trim().is_empty())
        {
            e(
                "admin.group".into(),
                "must not be empty (leave it out for mode 0600)".into(),
            );
        }
        if let Some(t) = &self.admin.tls {
            if t.allow.is_empty() {
                e(
                    "admin.tls.allow".into(),
                    "at least one admin certificate name is required (nobody could use the \
                     admin API)"
                        .into(),
                );
            }
            for (i, n) in t.allow.iter().enumerate() {
                if n.trim().is_empty() {
                    e(format!("admin.tls.allow[{i}]"), "must not be empty".into());
                }
            }
        }
        for (f, c) in [
            ("advertise.advertise_cmd", &self.advertise.advertise_cmd),
            ("advertise.withdraw_cmd", &self.advertise.withdraw_cmd),
        ] {
            if c.as_deref().is_some_and(|c| c.trim().is_empty()) {
                e(
                    ov.field(f),
                    "must not be empty (leave it out to run nothing)".into(),
                );
            }
        }
        if self.timers.resync_ms == 0 {
            e(ov.field("timers.resync_ms"), "must be > 0".into());
        }
        if self.switches.is_empty() {
            e(
                "switch".into(),
                "at least one [[switch]] is required".into(),
            );
        }
        let mut names = BTreeSet::new();
        let mut devs = BTreeSet::new();
        if let Some(m) = name_problem(&self.controller_id) {
            e("controller_id".into(), m);
        }
        for (i, s) in self.switches.iter().enumerate() {
            if let Some(m) = name_problem(&s.name) {
                e(format!("switch[{i}].name"), m);
            }
            if let Some(m) = p4runtime_problem(&s.p4runtime) {
                e(format!("switch[{i}].p4runtime"), m);
            }
            if let Some(a) = s.tunnel_src
                && let Some(m) = unicast_problem(a)
            {
                e(
                    format!("switch[{i}].tunnel_src"),
                    format!("{a} {m}; the outer source must be a unicast address"),
                );
            }
            if !names.insert(s.name.clone()) {
                e(
                    format!("switch[{i}].name"),
                    format!("duplicate switch name `{}`", s.name),
                );
            }
            if !devs.insert((s.p4runtime.clone(), s.device_id)) {
                e(
                    format!("switch[{i}].device_id"),
                    format!(
                        "{} device {} is used by two switches",
                        s.p4runtime, s.device_id
                    ),
                );
            }
            if s.election_id_range == 0 || s.election_id.checked_add(s.election_id_range).is_none()
            {
                e(
                    format!("switch[{i}].election_id_range"),
                    format!(
                        "must be ≥ 1 and election_id + election_id_range must fit 64 bits \
                         ({} + {})",
                        s.election_id, s.election_id_range
                    ),
                );
            }
            if s.election_id == 0 {
                e(format!("switch[{i}].election_id"), "must be ≥ 1".into());
            }
            match (s.target, &s.pipeline_dir) {
                (SwitchTarget::Tofino, None) => e(
                    format!("switch[{i}].pipeline_dir"),
                    "target = \"tofino\" needs the Tofino compiler's output directory".into(),
                ),
                (SwitchTarget::Bmv2, Some(_)) => e(
                    format!("switch[{i}].pipeline_dir"),
                    "only for target = \"tofino\" (bmv2 uses the top-level p4info and \
                     device_config)"
                        .into(),
                ),
                _ => {}
            }
            for (j, r) in s.routes.iter().enumerate() {
                if r.port >= 512 {
                    e(
                        format!("switch[{i}].routes[{j}].port"),
                        format!("{} does not fit 9 bits", r.port),
                    );
                }
                for (f, m) in [("dmac", r.dmac), ("smac", r.smac)] {
                    if let Some(p) = mac_problem(m.0) {
                        e(format!("switch[{i}].routes[{j}].{f}"), format!("{m} {p}"));
                    }
                }
            }
        }
        let mut snames = BTreeSet::new();
        let mut unders = BTreeMap::new();
        for (i, s) in self.stacks.iter().enumerate() {
            if let Some(m) = name_problem(&s.name) {
                e(format!("stack[{i}].name"), m);
            }
            if let Some(mac) = s.mac
                && let Some(p) = mac_problem(mac.0)
            {
                e(format!("stack[{i}].mac"), format!("{mac} {p}"));
            }
            if !snames.insert(s.name.clone()) {
                e(
                    format!("stack[{i}].name"),
                    format!("duplicate stack name `{}`", s.name),
                );
            }
            if let Some(prev) = unders.insert(s.underlay, s.name.clone()) {
                e(
                    format!("stack[{i}].underlay"),
                    format!(
                        "{} is already the underlay address of stack `{prev}`",
                        s.underlay
                    ),
                );
            }
            if let Some(m) = unicast_problem(s.underlay) {
                e(
                    format!("stack[{i}].underlay"),
                    format!("{} {m}; an underlay address must be unicast", s.underlay),
                );
            }
            match s.encap {
                Encap::L2 => {
                    if s.mac.is_none() {
                        e(
                            format!("stack[{i}].mac"),
                            "required with encap = \"l2\"".into(),
                        );
                    }
                    for sw in &self.switches {
                        if !s.ports.contains_key(&sw.name) {
                            e(
                                format!("stack[{i}].ports"),
                                format!(
                                    "no port for switch `{}` (every L2 stack needs one per switch)",
                                    sw.name
                                ),
                            );
                        }
                    }
                }
                Encap::Ipip => {
                    for (k, sw) in self.switches.iter().enumerate() {
                        if sw.tunnel_src.is_none() {
                            e(
                                format!("switch[{k}].tunnel_src"),
                                format!(
                                    "required because stack `{}` uses encap = \"ipip\"",
                                    s.name
                                ),
                            );
                        }
                    }
                }
            }
            for (sw, p) in &s.ports {
                if !names.contains(sw) {
                    e(
                        format!("stack[{i}].ports.{sw}"),
                        format!("no switch named `{sw}`"),
                    );
                }
                if *p >= 512 {
                    e(
                        format!("stack[{i}].ports.{sw}"),
                        format!("{p} does not fit 9 bits"),
                    );
                }
            }
        }
        let t = &self.timers;
        if t.heartbeat_ms == 0 || t.lease_ms <= t.heartbeat_ms {
            e(
                "timers.lease_ms".into(),
                format!(
                    "must be greater than heartbeat_ms ({} ≤ {})",
                    t.lease_ms, t.heartbeat_ms
                ),
            );
        }
        if t.liveness_ms == 0 || t.idle_timeout_ms == 0 {
            e(
                "timers".into(),
                "liveness_ms and idle_timeout_ms must be > 0".into(),
            );
        } else {
            for (f, m) in t.check() {
                e(f.into(), m);
            }
        }
        if let Some(d) = &self.liveness.dataplane {
            let names: Vec<&str> = self.switches.iter().map(|s| s.name.as_str()).collect();
            for (f, m) in d.check(&names, self.distribute_udp) {
                e(f, m);
            }
        }
        for (f, m) in self.advertise.check(&self.switches) {
            e(f, m);
        }
        errs
    }

    /// Stack by underlay address.
    pub fn stack_by_underlay(&self, a: Ipv4Addr) -> Option<&StackCfg> {
        self.stacks.iter().find(|s| s.underlay == a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
p4info = "p.txtpb"
device_config = "d.json"
agent = { listen = "127.0.0.1:7070" }

[[switch]]
name = "SW1"
p4runtime = "127.0.0.1:9559"
device_id = 1
profile = "sw1.profile"
"#;

    #[test]
    fn state_dir_defaults_to_state_and_can_be_set_or_turned_off() {
        let c = Config::parse("t.toml", MIN).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("state"));
        let c = Config::parse("t.toml", &format!("state_dir = \"/var/lib/dvipa\"\n{MIN}")).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/dvipa"));
        let c = Config::parse("t.toml", &format!("state_dir = \"\"\n{MIN}")).unwrap();
        assert_eq!(c.state_dir, PathBuf::new());
    }

    fn err(src: &str) -> String {
        Config::parse("t.toml", src).unwrap_err().to_string()
    }

    #[test]
    fn bgp_mode_parses_and_names_a_switch_without_next_hop() {
        let src = format!(
            "{MIN}\n[advertise]\nmode = \"bgp\"\n[advertise.bgp]\ngobgp = \"127.0.0.1:50051\"\n\
             next_hop = {{ SW1 = \"10.0.1.2\" }}\n"
        );
        let c = Config::parse("t.toml", &src).unwrap();
        assert_eq!(c.advertise.mode, AdvertiseMode::Bgp);
        let b = c.advertise.bgp.unwrap();
        assert_eq!(b.next_hop["SW1"], Ipv4Addr::new(10, 0, 1, 2));
        assert!(b.backups);
        assert_eq!((b.med_step, b.reconcile_ms), (100, 1000));
        let e = err(&src.replace("SW1 = ", "SW9 = "));
        assert!(
            e.contains("advertise.bgp.next_hop.SW1") && e.contains("no next hop"),
            "{e}"
        );
        assert!(e.contains("SW9 is not a [[switch]] name"), "{e}");
        let e = err(&format!("{MIN}\n[advertise]\nmode = \"bgp\"\n"));
        assert!(
            e.contains("advertise.bgp") && e.contains("needs an [advertise.bgp]"),
            "{e}"
        );
        let e = err(&format!("{MIN}\n[advertise]\nmode = \"ospf\"\n"));
        assert!(e.contains("ospf"), "{e}");
    }

    #[test]
    fn admin_advertise_and_insecure_fields_parse_with_defaults() {
        let c = Config::parse("t.toml", MIN).unwrap();
        assert_eq!(c.admin, AdminCfg::default());
        assert_eq!(c.admin.listen, None);
        assert_eq!(c.admin.tcp_listen(), None);
        assert_eq!(c.admin.socket_path(), Some(Path::new(DEFAULT_ADMIN_SOCKET)));
        assert_eq!(c.advertise, AdvertiseCfg::default());
        assert!(!c.agent.insecure);
        assert_eq!(c.timers.resync_ms, 30_000);
        let src = MIN.replace(
            "agent = { listen = \"127.0.0.1:7070\" }",
            r#"agent = { listen = "127.0.0.1:7070", insecure = true }
advertise = { advertise_cmd = "adv.sh", withdraw_cmd = "wdr.sh" }
timers = { resync_ms = 5000 }
admin = { listen = "0.0.0.0:7071", tls = { ca = "a.pem", cert = "c.pem", key = "k.pem", allow = ["ops"] } }"#,
        );
        let c = Config::parse("t.toml", &src).unwrap();
        assert!(c.agent.insecure);
        assert_eq!(c.advertise.advertise_cmd.as_deref(), Some("adv.sh"));
        assert_eq!(c.advertise.withdraw_cmd.as_deref(), Some("wdr.sh"));
        assert_eq!(c.timers.resync_ms, 5000);
        assert_eq!(c.admin.tcp_listen(), Some("0.0.0.0:7071".parse().unwrap()));
        assert_eq!(c.admin.tls.as_ref().unwrap().allow, vec!["ops".to_string()]);
        let set: BTreeMap<String, String> = c.settings().into_iter().collect();
        assert_eq!(set["admin.listen"], "0.0.0.0:7071");
        assert_eq!(set["admin.tls.allow"], "ops");
        assert_eq!(set["agent.insecure"], "true");
        assert_eq!(set["advertise.withdraw_cmd"], "wdr.sh");
        assert_eq!(set["timers.resync_ms"], "5000");
    }

    #[test]
    fn liveness_timers_default_from_liveness_ms_and_are_checked_against_it() {
        let c = Config::parse("t.toml", &format!("{MIN}\n[timers]\nliveness_ms = 300\n")).unwrap();
        let t = c.timers;
        assert_eq!(t.probe(), std::time::Duration::from_millis(100));
        assert_eq!(t.keepalive(), std::time::Duration::from_millis(100));
        assert_eq!(t.tcp_user_timeout(), std::time::Duration::from_millis(300));
        assert_eq!(t.connect_timeout(), std::time::Duration::from_millis(300));
        assert_eq!(c.switches[0].election_id_range, 16);
        let set: BTreeMap<String, String> = c.settings().into_iter().collect();
        assert_eq!(set["timers.probe_ms"], "100");
        let ok = "liveness_ms = 300\nprobe_ms = 150\nkeepalive_ms = 300\n\
                  tcp_user_timeout_ms = 1000\nconnect_timeout_ms = 500\n";
        let t = Config::parse("t.toml", &format!("{MIN}\n[timers]\n{ok}"))
            .unwrap()
            .timers;
        assert_eq!(t.probe(), std::time::Duration::from_millis(150));
        assert_eq!(t.connect_timeout(), std::time::Duration::from_millis(500));
        for (bad, field, why) in [
            (
                "probe_ms = 151",
                "timers.probe_ms",
                "at most liveness_ms / 2 (151 > 150)",
            ),
            ("probe_ms = 0", "timers.probe_ms", "must be > 0"),
            (
                "keepalive_ms = 301",
                "timers.keepalive_ms",
                "at most liveness_ms (301 > 300)",
            ),
            (
                "tcp_user_timeout_ms = 299",
                "timers.tcp_user_timeout_ms",
                "at least liveness_ms (299 < 300)",
            ),
            (
                "connect_timeout_ms = 0",
                "timers.connect_timeout_ms",
                "1..=60000",
            ),
        ] {
            let e = err(&format!("{MIN}\n[timers]\nliveness_ms = 300\n{bad}\n"));
            assert!(e.contains(field) && e.contains(why), "{bad}: {e}");
        }
        let e = err(&format!("{MIN}\n[timers]\nliveness_ms = 2\n"));
        assert!(e.contains("timers.liveness_ms: must be at least 3"), "{e}");
        let e = err(&MIN.replace("device_id = 1", "device_id = 1\nelection_id_range = 0"));
        assert!(
            e.contains("switch[0].election_id_range: must be ≥ 1"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_field_and_position() {
        let e = err(&format!("{MIN}\n[admin]\nlisten = \"localhost\"\n"));
        assert!(
            e.starts_with("t.toml:13:10: admin.listen: `localhost` is not a listen address"),
            "{e}"
        );
        let e = err(&MIN.replace("127.0.0.1:7070", "127.0.0.1"));
        assert!(
            e.starts_with("t.toml:4:") && e.contains("agent.listen: `127.0.0.1`"),
            "{e}"
        );
        let e = err(&format!(
            "{MIN}\n[admin]\nallow_insecure_remote = \"yes\"\n"
        ));
        assert!(
            e.starts_with("t.toml:13:25: admin.allow_insecure_remote: invalid type"),
            "{e}"
        );
        let e = err(&format!("{MIN}\n[advertise]\nadvertise = \"x\"\n"));
        assert!(
            e.starts_with("t.toml:13:1: ") && e.contains("unknown field `advertise`"),
            "{e}"
        );
        let e = err(&format!("{MIN}\n[advertise]\nwithdraw_cmd = \" \"\n"));
        assert_eq!(
            e,
            "t.toml:13:16: advertise.withdraw_cmd: must not be empty (leave it out to run nothing)"
        );
        let e = err(&format!(
            "{MIN}\n[admin.tls]\nca = \"a\"\ncert = \"c\"\nkey = \"k\"\nallow = []\n"
        ));
        assert!(
            e.starts_with("t.toml:16:9: admin.tls.allow: at least one"),
            "{e}"
        );
        let e = err(
            &format!("tls = {{ ca = \"a\", cert = \"c\", key = \"k\" }}\n{MIN}")
                .replace("7070\" }", "7070\", insecure = true }"),
        );
        assert!(
            e.starts_with("t.toml:5:") && e.contains(": agent.insecure: plaintext agents"),
            "{e}"
        );
    }

    #[test]
    fn non_loopback_admin_needs_tls_or_an_explicit_force() {
        let open = format!("{MIN}\n[admin]\nlisten = \"0.0.0.0:7071\"\n");
        let e = err(&open);
        assert!(
            e.starts_with("t.toml:13:10: admin.listen: 0.0.0.0:7071 is not a loopback address")
                && e.contains("[admin.tls]")
                && e.contains("allow_insecure_remote"),
            "{e}"
        );
        Config::parse("t.toml", &format!("{open}allow_insecure_remote = true\n")).unwrap();
        Config::parse(
            "t.toml",
            &format!("{open}insecure_tcp = true\n").replace("0.0.0.0", "[::1]"),
        )
        .unwrap();
        // A command-line override is checked the same way and named with its flag.
        let ov = Overrides {
            admin_listen: Some("192.0.2.1:7071".parse().unwrap()),
            ..Overrides::default()
        };
        let e = Config::parse_with("t.toml", MIN, &ov)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.toml: admin.listen (--admin-listen): 192.0.2.1:7071 is not"),
            "{e}"
        );
        // ... and overrides win over the TOML.
        let ov = Overrides {
            admin_listen: Some("127.0.0.1:9999".parse().unwrap()),
            admin_socket: Some(PathBuf::from("/tmp/a.sock")),
            admin_insecure_tcp: Some(true),
            agent_insecure: Some(false),
            advertise_cmd: Some("a2".into()),
            withdraw_cmd: None,
            resync_ms: Some(1000),
        };
        let src = format!("{MIN}\n[advertise]\nadvertise_cmd = \"a1\"\nwithdraw_cmd = \"w1\"\n")
            .replace("7070\" }", "7070\", insecure = true }");
        let c = Config::parse_with("t.toml", &src, &ov).unwrap();
        assert_eq!(c.admin.tcp_listen().unwrap().port(), 9999);
        assert_eq!(c.admin.socket_path(), Some(Path::new("/tmp/a.sock")));
        assert!(!c.agent.insecure);
        assert_eq!(c.advertise.advertise_cmd.as_deref(), Some("a2"));
        assert_eq!(c.advertise.withdraw_cmd.as_deref(), Some("w1"));
        assert_eq!(c.timers.resync_ms, 1000);
    }

    #[test]
    fn admin_tcp_needs_tls_or_the_insecure_opt_in() {
        let loopback = format!("{MIN}\n[admin]\nlisten = \"127.0.0.1:7071\"\n");
        let e = err(&loopback);
        assert!(
            e.starts_with(
                "t.toml:13:10: admin.listen: 127.0.0.1:7071: a TCP admin endpoint needs \
                 [admin.tls]"
            ) && e.contains("admin.insecure_tcp = true"),
            "{e}"
        );
        let ov = Overrides {
            admin_listen: Some("127.0.0.1:9000".parse().unwrap()),
            ..Overrides::default()
        };
        let e = Config::parse_with("t.toml", MIN, &ov)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.toml: admin.listen (--admin-listen): 127.0.0.1:9000: a TCP"),
            "{e}"
        );
        let ov = Overrides {
            admin_insecure_tcp: Some(true),
            ..ov
        };
        let c = Config::parse_with("t.toml", MIN, &ov).unwrap();
        assert_eq!(
            c.admin.tcp_listen(),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        // insecure_tcp alone: the default TCP address, next to the socket.
        let c = Config::parse("t.toml", &format!("{MIN}\n[admin]\ninsecure_tcp = true\n")).unwrap();
        assert_eq!(
            c.admin.tcp_listen(),
            Some(DEFAULT_ADMIN_LISTEN.parse().unwrap())
        );
        // No socket and no TCP: nobody could administer.
        let e = err(&format!("{MIN}\n[admin]\nsocket = \"\"\n"));
        assert!(e.starts_with("t.toml:13:10: admin.socket: is empty"), "{e}");
        let c = Config::parse(
            "t.toml",
            &format!("{MIN}\n[admin]\nsocket = \"a.sock\"\ngroup = \"dvipa\"\n"),
        )
        .unwrap();
        let set: BTreeMap<String, String> = c.settings().into_iter().collect();
        assert_eq!(set["admin.socket"], "a.sock");
        assert_eq!(set["admin.group"], "dvipa");
        assert_eq!(set["admin.listen"], "(off)");
    }

    #[test]
    fn owner_state_round_trips_and_reports_errors_with_a_position() {
        let v = vec![
            (Ipv4Addr::new(203, 0, 113, 10), "MVS1".to_string(), false),
            (
                Ipv4Addr::new(203, 0, 113, 20),
                "sw \"2\"\\x\t".to_string(),
                true,
            ),
        ];
        let s = OwnerState::from_ownership(&v);
        let text = s.to_toml();
        assert!(text.contains("[[dvipa]]\naddr = \"203.0.113.10\"\nowner = \"MVS1\""));
        assert_eq!(OwnerState::parse("owners.toml", &text).unwrap(), s);
        assert_eq!(
            OwnerState::parse("owners.toml", "").unwrap(),
            OwnerState::default()
        );
        let e = OwnerState::parse(
            "owners.toml",
            "[[dvipa]]\naddr = \"1.2.3\"\nowner = \"a\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("owners.toml:2:"), "{e}");
    }
}

//! The TOML schema: the [`Config`] file and its sections (serde structs and defaults), except
//! `[advertise]` (`advertise.rs`) and `[ha]` (`ha.rs`).

use super::*;

/// The whole TOML file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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
    #[serde(default, skip_serializing_if = "is_default")]
    pub hot_standby: bool,
    /// Also distribute UDP to the DVIPA ports (TCP always).
    #[serde(default, skip_serializing_if = "is_default")]
    pub distribute_udp: bool,
    /// When a TCP connection the switch reports by digest is pinned in the CRT.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pin_on: PinOn,
    /// Directory of the controller's persisted state: the current routing switch of each
    /// DVIPA ([`OwnerState`], file [`OWNERS_FILE`]), rewritten atomically on every ownership
    /// change and restored at start-up, so a restart keeps an operator's move. Relative to the
    /// TOML file's directory; default `state`; an empty string turns persistence off.
    #[serde(
        default = "default_state_dir",
        skip_serializing_if = "is_default_state_dir"
    )]
    pub state_dir: PathBuf,
    /// The agents' (server stacks') endpoint.
    pub agent: AgentCfg,
    /// The admin (operator) API.
    #[serde(default, skip_serializing_if = "is_default")]
    pub admin: AdminCfg,
    /// Advertise/withdraw hooks.
    #[serde(default, skip_serializing_if = "is_default")]
    pub advertise: AdvertiseCfg,
    /// TLS material; absent = plaintext (tests only).
    #[serde(default)]
    pub tls: Option<TlsCfg>,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: Option<MetricsCfg>,
    /// Timers.
    #[serde(default, skip_serializing_if = "is_default")]
    pub timers: Timers,
    /// `[liveness]`: the optional data-plane probe (`[liveness.dataplane]`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub liveness: crate::dataplane_cfg::LivenessCfg,
    /// Routing switches.
    #[serde(rename = "switch", default, skip_serializing_if = "is_default")]
    pub switches: Vec<SwitchCfg>,
    /// Server stacks (targets).
    #[serde(rename = "stack", default, skip_serializing_if = "is_default")]
    pub stacks: Vec<StackCfg>,
    /// High availability on etcd (issue 17); absent = the controller runs alone.
    #[serde(default)]
    pub ha: Option<HaCfg>,
}

impl Config {
    /// The configuration a file with only `p4info`, `device_config` and `agent` would give
    /// (every other field at its serde default), for code that writes a configuration through
    /// these types (the testbed) and sets the rest field by field.
    pub fn new(p4info: PathBuf, device_config: PathBuf, agent: AgentCfg) -> Config {
        Config {
            controller_id: default_controller_id(),
            p4info,
            device_config,
            hot_standby: false,
            distribute_udp: false,
            pin_on: PinOn::default(),
            state_dir: default_state_dir(),
            agent,
            admin: AdminCfg::default(),
            advertise: AdvertiseCfg::default(),
            tls: None,
            metrics: None,
            timers: Timers::default(),
            liveness: Default::default(),
            switches: Vec::new(),
            stacks: Vec::new(),
            ha: None,
        }
    }
}

fn default_controller_id() -> String {
    "dvipa".into()
}

fn is_default_state_dir(p: &PathBuf) -> bool {
    *p == default_state_dir()
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
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentCfg {
    /// Listen address of the ServerStack gRPC service.
    #[serde(deserialize_with = "de_agent_listen")]
    pub listen: SocketAddr,
    /// Run the agent endpoint without TLS (any client can claim any stack): tests only, and
    /// only without `[tls]`. The controller warns loudly at start-up and sets the
    /// `dvipa_agent_insecure` gauge. `dvipa controller --insecure[=BOOL]` overrides it.
    #[serde(default, skip_serializing_if = "is_default")]
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
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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
    #[serde(default, skip_serializing_if = "is_default")]
    pub insecure_tcp: bool,
    /// Allow a plaintext admin API on a non-loopback address (anyone who can reach it can move
    /// DVIPAs and take switches down); implies `insecure_tcp`.
    #[serde(default, skip_serializing_if = "is_default")]
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
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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

/// `[tls]`: PEM paths.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsCfg {
    /// CA that signs agent certificates.
    pub ca: PathBuf,
    /// Controller certificate.
    pub cert: PathBuf,
    /// Controller key.
    pub key: PathBuf,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsCfg {
    /// Prometheus listen address.
    #[serde(deserialize_with = "de_metrics_listen")]
    pub listen: SocketAddr,
}

/// `[timers]`, all in milliseconds.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
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
    pub(super) fn check(&self) -> Vec<(&'static str, String)> {
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
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SwitchCfg {
    /// Name (used in messages, VIPA lists, CLI).
    pub name: String,
    /// P4Runtime gRPC address.
    pub p4runtime: String,
    /// P4Runtime device id.
    pub device_id: u64,
    /// Election id (this controller's, for mastership).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub election_id: u64,
    /// How many election ids, from `election_id` up, this controller may use for the switch:
    /// when the switch refuses `election_id` as "already used" because a dead session of this
    /// controller still holds it, the controller moves to the next id of the range (1 = never).
    #[serde(
        default = "default_election_id_range",
        skip_serializing_if = "is_default_election_id_range"
    )]
    pub election_id_range: u64,
    /// The switch's profile file (relative to the TOML file's directory).
    pub profile: PathBuf,
    /// Outer source address for IPIP-encapsulated targets.
    #[serde(default)]
    pub tunnel_src: Option<Ipv4Addr>,
    /// The switch's own IPv4 routes (`ipv4_route` table).
    #[serde(default, skip_serializing_if = "is_default")]
    pub routes: Vec<RouteCfg>,
    /// P4Runtime over TLS to this switch (absent: plaintext).
    #[serde(default)]
    pub tls: Option<SwitchTlsCfg>,
    /// Issue 16: the switch's target, `bmv2` (default: the top-level `p4info` and
    /// `device_config`) or `tofino` (a Tofino P4Runtime server: Stratum or the SDE's).
    #[serde(default, skip_serializing_if = "is_default")]
    pub target: SwitchTarget,
    /// For `tofino`: the Tofino compiler's output directory (`bfrt.json`, `manifest.json`,
    /// `pipe/context.json`, `pipe/tofino.bin`, and the P4Info as `p4info.txtpb`), relative to
    /// the TOML file. The device config is packed from it at start-up (docs/tofino.md).
    #[serde(default)]
    pub pipeline_dir: Option<PathBuf>,
    /// For `tofino`: the device config format the server takes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub device_config_format: DeviceConfigFormat,
    /// What the switch's P4Runtime server does; unset values follow the target.
    #[serde(default, skip_serializing_if = "is_default")]
    pub capabilities: CapabilitiesCfg,
}

/// `target` of a `[[switch]]`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SwitchTarget {
    /// bmv2 `simple_switch_grpc` or the embedded switch (v1model program).
    #[default]
    Bmv2,
    /// A Tofino switch (TNA program, `p4src/tna/`).
    Tofino,
}

/// `device_config_format` of a `[[switch]]` (Tofino only).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceConfigFormat {
    /// Stratum's `BfPipelineConfig` (stratum_bfrt, stratum_bf).
    #[default]
    Bfrt,
    /// PI's packed format (stratum_bf, the SDE's P4Runtime server).
    Pi,
}

/// `[switch.capabilities]`: how the P4Runtime server behaves where servers differ.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
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
    /// A `[[switch]]` with only the required fields set (the rest at their serde defaults).
    pub fn new(name: String, p4runtime: String, device_id: u64, profile: PathBuf) -> SwitchCfg {
        SwitchCfg {
            name,
            p4runtime,
            device_id,
            election_id: one(),
            election_id_range: default_election_id_range(),
            profile,
            tunnel_src: None,
            routes: Vec::new(),
            tls: None,
            target: SwitchTarget::default(),
            pipeline_dir: None,
            device_config_format: DeviceConfigFormat::default(),
            capabilities: CapabilitiesCfg::default(),
        }
    }

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
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
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

fn is_one(v: &u64) -> bool {
    *v == one()
}

fn is_default_election_id_range(v: &u64) -> bool {
    *v == default_election_id_range()
}

fn default_election_id_range() -> u64 {
    16
}

/// One `ipv4_route` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// Rewrite the destination MAC and send out of the stack's port (direct server return).
    #[default]
    L2,
    /// IP-in-IP to the stack's underlay address.
    Ipip,
}

/// `[[stack]]`: one server stack.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StackCfg {
    /// Name (Hello.stack).
    pub name: String,
    /// Underlay ("XCF") address: what DESTIP lists.
    pub underlay: Ipv4Addr,
    /// L2 or IPIP.
    #[serde(default, skip_serializing_if = "is_default")]
    pub encap: Encap,
    /// MAC of the stack (L2).
    #[serde(default)]
    pub mac: Option<Mac>,
    /// Switch name → port the stack is reached through (L2).
    #[serde(default, skip_serializing_if = "is_default")]
    pub ports: BTreeMap<String, u16>,
}

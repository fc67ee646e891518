//! `[advertise]`: routing hooks and the `[advertise.bgp]` speaker.

use super::*;

/// `[advertise]`: commands run (`sh -c`) when a switch must advertise or withdraw a DVIPA,
/// with `DVIPA_ACTION`, `DVIPA_SWITCH`, `DVIPA_ADDR`, `DVIPA_PREFIX_LEN` in the environment.
/// No command = nothing is run. `--advertise-cmd` / `--withdraw-cmd` override them.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseCfg {
    /// Command for advertise.
    #[serde(default)]
    pub advertise_cmd: Option<String>,
    /// Command for withdraw.
    #[serde(default)]
    pub withdraw_cmd: Option<String>,
    /// `command` (the hooks above, default) or `bgp` (a GoBGP speaker, `[advertise.bgp]`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub mode: AdvertiseMode,
    /// `[advertise.bgp]`: the GoBGP speaker driven when `mode = "bgp"`.
    #[serde(default)]
    pub bgp: Option<BgpCfg>,
}

/// How DVIPAs are advertised.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
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

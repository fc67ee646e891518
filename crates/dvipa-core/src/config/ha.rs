//! `[ha]`: controller replicas elected through etcd.

use super::*;

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
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
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

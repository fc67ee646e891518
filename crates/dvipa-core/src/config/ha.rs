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
/// username = "dvipa"                # etcd user (optional; with password_file)
/// password_file = "etcd-password"   # its password, first line (relative to this file)
///
/// [ha.tls]                          # with https:// endpoints (paths relative to this file)
/// ca = "etcd-ca.pem"                # the CA etcd's server certificates chain to
/// cert = "ctl-a-etcd.pem"           # client certificate (optional; with key)
/// key = "ctl-a-etcd.key"
/// domain = "etcd.example"           # name expected in etcd's certificate (default: the host)
/// ```
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HaCfg {
    /// etcd client endpoints: all `http://host:port`, or all `https://host:port` with `[ha.tls]`.
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
    /// TLS to etcd (`https://` endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HaTlsCfg>,
    /// etcd user name (etcd's user/password authentication; with `password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the etcd user's password (its first line; the password is never in the
    /// TOML). Relative to the TOML file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// `[ha.tls]`: how a replica checks etcd's server certificate and which client certificate it
/// presents (paths relative to the TOML file's directory; read at every connection, so rotated
/// files are used by the next session).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HaTlsCfg {
    /// The CA (PEM) etcd's server certificates chain to.
    pub ca: PathBuf,
    /// Client certificate (PEM) for etcd's `--client-cert-auth`; with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); with `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The name expected in etcd's certificate (default: the endpoint's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
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
        let scheme = if self.tls.is_some() {
            "https://"
        } else {
            "http://"
        };
        for ep in &self.etcd {
            if self.tls.is_none() && ep.starts_with("https://") {
                v.push((
                    "etcd",
                    format!(
                        "{ep:?}: an https:// endpoint needs [ha.tls] (at least `ca`, the CA of \
                         etcd's server certificate)"
                    ),
                ));
                continue;
            }
            if self.tls.is_some() && ep.starts_with("http://") {
                v.push((
                    "etcd",
                    format!(
                        "{ep:?}: plaintext http:// while [ha.tls] is configured; use https:// \
                         (or remove [ha.tls])"
                    ),
                ));
                continue;
            }
            let rest = ep.strip_prefix(scheme);
            if rest.is_none_or(|r| r.is_empty() || !r.contains(':')) {
                v.push(("etcd", format!("{ep:?}: expected {scheme}host:port")));
            }
        }
        if let Some(t) = &self.tls {
            if t.ca.as_os_str().is_empty() {
                v.push((
                    "tls.ca",
                    "must name the CA file (PEM) of etcd's server certificates".into(),
                ));
            }
            match (&t.cert, &t.key) {
                (Some(_), None) => v.push((
                    "tls.cert",
                    "a client certificate needs its `key` (both or neither)".into(),
                )),
                (None, Some(_)) => v.push((
                    "tls.key",
                    "a client key needs its `cert` (both or neither)".into(),
                )),
                _ => {}
            }
            if let Some(d) = &t.domain
                && (d.trim().is_empty() || d.len() > HA_MAX_NAME || d.contains(char::is_whitespace))
            {
                v.push((
                    "tls.domain",
                    format!("{d:?}: expected a host name of at most {HA_MAX_NAME} bytes"),
                ));
            }
        }
        match (&self.username, &self.password_file) {
            (None, Some(_)) => v.push((
                "password_file",
                "a password needs its `username` (both or neither)".into(),
            )),
            (Some(_), None) => v.push((
                "username",
                "etcd authentication needs `password_file` (the password is never in the TOML)"
                    .into(),
            )),
            _ => {}
        }
        if let Some(u) = &self.username
            && (u.is_empty() || u.len() > HA_MAX_NAME || u.chars().any(char::is_control))
        {
            v.push((
                "username",
                format!("{u:?}: must be a non-empty name of at most {HA_MAX_NAME} bytes"),
            ));
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

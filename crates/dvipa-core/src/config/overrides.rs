//! Command-line [`Overrides`] of the TOML's values (flag > TOML > default).

use super::*;

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
    pub(super) fn field(&self, field: &str) -> String {
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

impl Config {
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
}

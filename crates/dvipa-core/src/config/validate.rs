//! Validation: [`ConfigError`] (`file:line:col: field: msg`) and the checks run after parsing.

use super::*;

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

fn pos_prefix(pos: &Option<(u32, u32)>) -> String {
    match pos {
        Some((l, c)) => format!("{l}:{c}: "),
        None => " ".into(),
    }
}

impl Config {
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

    pub(super) fn validate(&self, file: &str, ov: &Overrides) -> Vec<ConfigError> {
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
}

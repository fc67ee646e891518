//! Rendering: the effective settings for `dvipa check-config` and the start-up log.

use super::*;

impl Config {
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
            Some(h) => {
                v.extend([
                    ("ha.etcd".into(), h.etcd.join(",")),
                    ("ha.election".into(), h.election.clone()),
                    ("ha.lease_ms".into(), h.lease_ms.to_string()),
                    ("ha.replica".into(), h.replica.clone()),
                ]);
                match &h.tls {
                    Some(t) => v.extend([
                        ("ha.tls.ca".into(), path(&t.ca)),
                        (
                            "ha.tls.cert".into(),
                            t.cert
                                .as_ref()
                                .map_or("(none: no client certificate)".into(), path),
                        ),
                        ("ha.tls.key".into(), t.key.as_ref().map_or("-".into(), path)),
                        ("ha.tls.domain".into(), opt(&t.domain)),
                    ]),
                    None => v.push(("ha.tls".into(), "(none: plaintext to etcd)".into())),
                }
                match (&h.username, &h.password_file) {
                    (Some(u), Some(p)) => v.extend([
                        ("ha.username".into(), u.clone()),
                        ("ha.password_file".into(), path(p)),
                    ]),
                    _ => v.push((
                        "ha.username".into(),
                        "(none: no etcd authentication)".into(),
                    )),
                }
            }
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
}

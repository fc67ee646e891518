//! `[liveness.dataplane]`: the optional data-plane liveness probe (issue 13).
//!
//! A switch whose P4Runtime answers but which forwards nothing is marked down like a switch
//! that stopped answering: the controller sends small UDP probes to `dvipa:port` along one
//! path per switch (a local source address, `SO_MARK` or a device that policy routing sends
//! through that switch only); the switch distributes them like any UDP to the DVIPA; the
//! server's agent (`dvipa-agent --dataplane-echo PORT`) sends each one back to the prober.
//! No echo for `down_after_ms` through the switch that routes the DVIPA ⇒ `SwitchDown`.
//!
//! ```toml
//! distribute_udp = true            # the probes are UDP to the DVIPA
//! [liveness.dataplane]
//! dvipa = "203.0.113.20"           # a DVIPA distributed on `port`
//! port = 8080                      # UDP port the agents' echo answers on
//! probe_ms = 100                   # one probe per flow per path this often
//! down_after_ms = 300              # no echo this long through the routing switch ⇒ down
//! up_after = 3                     # answered probe rounds in a row before it is taken back
//! flows = 4                        # source ports per path (one CRT entry each)
//! [[liveness.dataplane.path]]
//! switch = "MVS1"
//! source = "192.0.2.241"           # probes to sw MVS1 leave from this address
//! # mark = 101                     # and/or with this SO_MARK (fwmark policy routing)
//! # device = "up1"                 # and/or bound to this device
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// `[liveness]`: liveness options beyond `[timers]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LivenessCfg {
    /// The data-plane probe; absent = off.
    #[serde(default)]
    pub dataplane: Option<DataplaneCfg>,
}

/// `[liveness.dataplane]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DataplaneCfg {
    /// The DVIPA the probes are sent to (must be a configured DVIPA distributed on `port`).
    pub dvipa: Ipv4Addr,
    /// UDP destination port of the probes (the agents' `--dataplane-echo` port).
    pub port: u16,
    /// Probe interval, ms (10..=10000).
    #[serde(default = "default_probe_ms")]
    pub probe_ms: u64,
    /// No echo for this long through the switch that routes the DVIPA ⇒ that switch is down
    /// (at least 2 × `probe_ms`, at most 60000).
    #[serde(default = "default_down_after_ms")]
    pub down_after_ms: u64,
    /// A switch marked down by the probe is up again after this many probe rounds in a row
    /// with an echo (1..=20).
    #[serde(default = "default_up_after")]
    pub up_after: u32,
    /// Probe flows (source ports) per path, 1..=16: the switch spreads them over the servers,
    /// so one lost server does not silence a path. Each is one CRT entry on the switch.
    #[serde(default = "default_flows")]
    pub flows: u8,
    /// One path per probed switch.
    #[serde(rename = "path", default)]
    pub paths: Vec<DataplanePath>,
}

/// `[[liveness.dataplane.path]]`: how probes reach the DVIPA through one switch.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DataplanePath {
    /// The switch (`[[switch]] name`).
    pub switch: String,
    /// Local source address of the probes (policy routing by source sends them via the
    /// switch; echoes come back to it).
    pub source: Ipv4Addr,
    /// `SO_MARK` of the probe sockets (fwmark policy routing), 0 = none.
    #[serde(default)]
    pub mark: u32,
    /// `SO_BINDTODEVICE` of the probe sockets.
    #[serde(default)]
    pub device: Option<String>,
}

fn default_probe_ms() -> u64 {
    100
}
fn default_down_after_ms() -> u64 {
    300
}
fn default_up_after() -> u32 {
    3
}
fn default_flows() -> u8 {
    4
}

/// Most paths (one per switch).
pub const MAX_PATHS: usize = 64;

impl DataplaneCfg {
    /// Probe interval.
    pub fn probe(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.probe_ms)
    }

    /// Detection time.
    pub fn down_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.down_after_ms)
    }

    /// The fields that are wrong: (dotted field, message). `switches`: the configured names;
    /// `distribute_udp`: the top-level option.
    pub fn check(&self, switches: &[&str], distribute_udp: bool) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let f = |s: &str| format!("liveness.dataplane.{s}");
        if !distribute_udp {
            v.push((
                f("dvipa"),
                "the data-plane probes are UDP to the DVIPA: set distribute_udp = true (top \
                 level) so the switches distribute them"
                    .into(),
            ));
        }
        if self.port == 0 {
            v.push((f("port"), "must be 1..=65535".into()));
        }
        if !(10..=10_000).contains(&self.probe_ms) {
            v.push((
                f("probe_ms"),
                format!("must be 10..=10000 ({})", self.probe_ms),
            ));
        }
        if self.down_after_ms < self.probe_ms.saturating_mul(2) || self.down_after_ms > 60_000 {
            v.push((
                f("down_after_ms"),
                format!(
                    "must be at least 2 × probe_ms and at most 60000 ({} with probe_ms {}): two \
                     probe rounds must fit in the detection time",
                    self.down_after_ms, self.probe_ms
                ),
            ));
        }
        if !(1..=20).contains(&self.up_after) {
            v.push((f("up_after"), format!("must be 1..=20 ({})", self.up_after)));
        }
        if !(1..=16).contains(&self.flows) {
            v.push((f("flows"), format!("must be 1..=16 ({})", self.flows)));
        }
        if self.paths.is_empty() {
            v.push((
                f("path"),
                "at least one [[liveness.dataplane.path]] is needed".into(),
            ));
        }
        if self.paths.len() > MAX_PATHS {
            v.push((
                f("path"),
                format!("at most {MAX_PATHS} paths ({})", self.paths.len()),
            ));
        }
        let mut seen_sw = BTreeSet::new();
        let mut seen_route = BTreeSet::new();
        for (i, p) in self.paths.iter().enumerate() {
            if !switches.contains(&p.switch.as_str()) {
                v.push((
                    f(&format!("path[{i}].switch")),
                    format!("`{}` is not a configured [[switch]]", p.switch),
                ));
            }
            if !seen_sw.insert(p.switch.clone()) {
                v.push((
                    f(&format!("path[{i}].switch")),
                    format!("`{}` has a path already (one per switch)", p.switch),
                ));
            }
            if p.source.is_unspecified() || p.source.is_multicast() || p.source.is_broadcast() {
                v.push((
                    f(&format!("path[{i}].source")),
                    format!("{} is not a unicast address", p.source),
                ));
            }
            if let Some(d) = &p.device
                && (d.is_empty()
                    || d.len() > 15
                    || d.contains('/')
                    || d.contains(char::is_whitespace))
            {
                v.push((
                    f(&format!("path[{i}].device")),
                    format!("`{d}` is not an interface name (1..=15 characters)"),
                ));
            }
            if !seen_route.insert((p.source, p.mark, p.device.clone())) {
                v.push((
                    f(&format!("path[{i}].source")),
                    "the same source, mark and device as an earlier path: the probes could not \
                     take different switches"
                        .into(),
                ));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(src: &str) -> DataplaneCfg {
        toml::from_str(src).unwrap()
    }

    #[test]
    fn a_sound_section_passes_and_each_bad_field_is_named() {
        let ok = cfg(r#"
            dvipa = "10.0.0.1"
            port = 8080
            [[path]]
            switch = "sw1"
            source = "10.1.0.241"
            [[path]]
            switch = "sw2"
            source = "10.1.0.242"
        "#);
        assert!(ok.check(&["sw1", "sw2"], true).is_empty());
        assert_eq!(
            (ok.probe_ms, ok.down_after_ms, ok.up_after, ok.flows),
            (100, 300, 3, 4)
        );
        let fields = |c: &DataplaneCfg, udp: bool| -> Vec<String> {
            c.check(&["sw1", "sw2"], udp)
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert_eq!(fields(&ok, false), ["liveness.dataplane.dvipa"]);
        let mut bad = ok.clone();
        bad.probe_ms = 200;
        assert_eq!(fields(&bad, true), ["liveness.dataplane.down_after_ms"]);
        bad = ok.clone();
        bad.flows = 0;
        bad.up_after = 0;
        bad.port = 0;
        assert_eq!(
            fields(&bad, true),
            [
                "liveness.dataplane.port",
                "liveness.dataplane.up_after",
                "liveness.dataplane.flows"
            ]
        );
        bad = ok.clone();
        bad.paths[1].switch = "sw9".into();
        bad.paths[1].source = bad.paths[0].source;
        assert_eq!(
            fields(&bad, true),
            [
                "liveness.dataplane.path[1].switch",
                "liveness.dataplane.path[1].source"
            ]
        );
        bad = ok.clone();
        bad.paths.clear();
        assert_eq!(fields(&bad, true), ["liveness.dataplane.path"]);
    }
}

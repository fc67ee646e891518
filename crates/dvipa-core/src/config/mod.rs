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
//! Layout, one job per file (this file: parsing and the re-exports, so every type is
//! `dvipa_core::config::X`):
//! - `values.rs`: value types ([`Mac`], [`Prefix`], [`PinOn`]);
//! - `schema.rs`: the TOML schema ([`Config`] and its sections, serde defaults), with the
//!   sections `advertise.rs` ([`AdvertiseCfg`], `[advertise.bgp]`) and `ha.rs` ([`HaCfg`]);
//! - `overrides.rs`: command-line [`Overrides`];
//! - `validate.rs`: [`ConfigError`] (`file:line:col: field: msg`) and the checks;
//! - `render.rs`: the effective settings ([`Config::settings`]);
//! - `owners.rs`: the owners file ([`OwnerState`]); `cluster.rs`: the effective VIPA list
//!   ([`Cluster`]).

use crate::profile::{self, DestIp, DistMethod, Loc, Profile, StandbyRole, VipaRange};
use crate::validate::{mac_problem, name_problem, p4runtime_problem, unicast_problem};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

mod advertise;
mod cluster;
mod ha;
mod overrides;
mod owners;
mod render;
mod schema;
mod validate;
mod values;

pub use advertise::{AdvertiseCfg, AdvertiseMode, BgpCfg};
pub use cluster::{BackupSwitch, Candidate, Cluster, Distribution, EffectiveVipa};
pub use ha::{HA_LEASE_MS_MAX, HA_LEASE_MS_MIN, HA_MAX_ENDPOINTS, HaCfg, HaTlsCfg};
pub use overrides::Overrides;
pub use owners::{OWNERS_FILE, OwnerState, PersistedOwner};
pub use schema::{
    AdminCfg, AdminTlsCfg, AgentCfg, Capabilities, CapabilitiesCfg, Config, DEFAULT_ADMIN_LISTEN,
    DEFAULT_ADMIN_SOCKET, DeviceConfigFormat, Encap, MetricsCfg, RouteCfg, StackCfg, SwitchCfg,
    SwitchTarget, SwitchTlsCfg, Timers, TlsCfg,
};
pub use validate::{ConfigError, ConfigErrors};
pub use values::{Mac, PinOn, Prefix};

use crate::validate::line_col;

/// `skip_serializing_if` for a field whose serde default is its type's `Default`: a written
/// configuration ([`Config`] is `Serialize`, e.g. the testbed's) leaves defaults out.
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
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
    fn a_serialized_config_parses_back_to_the_same_config_and_leaves_defaults_out() {
        let src = r#"
controller_id = "dvipa-7"
p4info = "p.txtpb"
device_config = "d.json"
hot_standby = true
pin_on = "syn"
state_dir = ""
agent = { listen = "10.0.0.9:7070", insecure = true }
metrics = { listen = "127.0.0.1:9464" }
timers = { heartbeat_ms = 500, lease_ms = 2000, idle_timeout_ms = 300000, liveness_ms = 250 }
advertise = { advertise_cmd = "adv.sh", withdraw_cmd = "wdr.sh" }

[admin]
socket = "/tmp/a.sock"
insecure_tcp = true
listen = "127.0.0.1:7999"

[[switch]]
name = "SW1"
p4runtime = "127.0.0.1:9559"
device_id = 1
election_id = 5
profile = "sw1.profile"
tunnel_src = "192.168.100.1"
target = "tofino"
pipeline_dir = "tofino-out"
routes = [{ prefix = "0.0.0.0/0", port = 1, dmac = "02:00:00:00:01:01", smac = "02:00:00:00:00:01" }]

[[switch]]
name = "SW2"
p4runtime = "127.0.0.1:9560"
device_id = 2
profile = "sw2.profile"
tunnel_src = "192.168.100.2"

[[stack]]
name = "S1"
underlay = "10.0.0.2"
mac = "02:00:00:00:02:02"
ports = { SW1 = 2, SW2 = 3 }

[[stack]]
name = "S2"
underlay = "10.0.0.3"
encap = "ipip"
"#;
        let cfg = Config::parse("a.toml", src).unwrap();
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(Config::parse("b.toml", &text).unwrap(), cfg, "{text}");
        // defaults are left out, set values are written
        for absent in [
            "election_id = 1",
            "encap = \"l2\"",
            "distribute_udp",
            "[liveness",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        for present in [
            "election_id = 5",
            "encap = \"ipip\"",
            "target = \"tofino\"",
            "pin_on = \"syn\"",
        ] {
            assert!(text.contains(present), "{present} not in\n{text}");
        }
        let min = Config::parse("m.toml", MIN).unwrap();
        // the constructors give the serde defaults
        let agent = AgentCfg {
            listen: "127.0.0.1:7070".parse().unwrap(),
            insecure: false,
        };
        let mut built = Config::new("p.txtpb".into(), "d.json".into(), agent);
        let sw = SwitchCfg::new(
            "SW1".into(),
            "127.0.0.1:9559".into(),
            1,
            "sw1.profile".into(),
        );
        built.switches.push(sw);
        assert_eq!(built, min);
        let text = toml::to_string(&min).unwrap();
        assert_eq!(Config::parse("m2.toml", &text).unwrap(), min, "{text}");
        for absent in [
            "[timers]",
            "[admin]",
            "[advertise]",
            "state_dir",
            "hot_standby",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }

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

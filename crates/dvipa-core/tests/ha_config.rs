//! `[ha]` (issue 17): parsed with its defaults, every bad field refused by name.

use dvipa_core::config::Config;

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

fn with_ha(ha: &str) -> Result<Config, String> {
    Config::parse("t.toml", &format!("{MIN}\n[ha]\n{ha}\n")).map_err(|e| e.to_string())
}

#[test]
fn ha_is_off_by_default_and_parses_with_a_2000_ms_lease() {
    assert_eq!(Config::parse("t.toml", MIN).unwrap().ha, None);
    let c = with_ha(
        r#"etcd = ["http://127.0.0.1:2379", "http://127.0.0.2:2379"]
election = "/dvipa/prod/leader"
replica = "ctl-a""#,
    )
    .unwrap();
    let set: std::collections::BTreeMap<String, String> = c.settings().into_iter().collect();
    assert_eq!(set["ha.replica"], "ctl-a");
    assert_eq!(set["ha.lease_ms"], "2000");
    let h = c.ha.unwrap();
    assert_eq!(h.lease_ms, 2000);
    assert_eq!(h.etcd.len(), 2);
    assert_eq!(h.replica, "ctl-a");
    assert_eq!(h.prefix(), "/dvipa/prod/");
}

#[test]
fn bad_ha_fields_are_refused_naming_the_field() {
    let cases = [
        (
            r#"etcd = []
election = "/dvipa/p/leader"
replica = "a""#,
            "ha.etcd",
        ),
        (
            r#"etcd = ["127.0.0.1:2379"]
election = "/dvipa/p/leader"
replica = "a""#,
            "ha.etcd",
        ),
        (
            r#"etcd = ["https://127.0.0.1:2379"]
election = "/dvipa/p/leader"
replica = "a""#,
            "TLS to etcd is not supported",
        ),
        (
            r#"etcd = ["http://127.0.0.1:2379"]
election = "leader"
replica = "a""#,
            "ha.election",
        ),
        (
            r#"etcd = ["http://127.0.0.1:2379"]
election = "/dvipa/p/leader"
lease_ms = 100
replica = "a""#,
            "ha.lease_ms",
        ),
        (
            r#"etcd = ["http://127.0.0.1:2379"]
election = "/dvipa/p/leader"
replica = " ""#,
            "ha.replica",
        ),
        (
            r#"etcd = ["http://127.0.0.1:2379"]
election = "/dvipa/p/leader"
replica = "a"
lease = 5"#,
            "lease",
        ),
    ];
    for (src, field) in cases {
        let e = with_ha(src).expect_err(src);
        assert!(e.contains(field), "{src}: {e}");
    }
}

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
            "t.toml:13:8: ha.etcd: \"https://127.0.0.1:2379\": an https:// endpoint needs [ha.tls]",
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

const TLS_OK: &str = r#"etcd = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
election = "/dvipa/p/leader"
replica = "a"
username = "dvipa"
password_file = "etcd-password"
[ha.tls]
ca = "etcd-ca.pem"
cert = "ctl.pem"
key = "ctl.key"
domain = "etcd.example""#;

#[test]
fn ha_tls_and_auth_parse_and_show_in_the_settings() {
    let c = with_ha(TLS_OK).unwrap();
    let set: std::collections::BTreeMap<String, String> = c.settings().into_iter().collect();
    assert_eq!(set["ha.tls.ca"], "etcd-ca.pem");
    assert_eq!(set["ha.tls.cert"], "ctl.pem");
    assert_eq!(set["ha.tls.domain"], "etcd.example");
    assert_eq!(set["ha.username"], "dvipa");
    assert_eq!(set["ha.password_file"], "etcd-password");
    let h = c.ha.unwrap();
    let t = h.tls.unwrap();
    assert_eq!(t.key.unwrap().to_str(), Some("ctl.key"));
    // Server verification only (no client certificate) is allowed.
    let c = with_ha(&TLS_OK.replace("cert = \"ctl.pem\"\nkey = \"ctl.key\"\n", "")).unwrap();
    assert_eq!(c.ha.unwrap().tls.unwrap().cert, None);
    let set: std::collections::BTreeMap<String, String> = with_ha(
        r#"etcd = ["http://127.0.0.1:2379"]
election = "/dvipa/p/leader"
replica = "a""#,
    )
    .unwrap()
    .settings()
    .into_iter()
    .collect();
    assert!(set["ha.tls"].contains("plaintext"), "{set:?}");
    assert!(set["ha.username"].contains("no etcd authentication"));
}

#[test]
fn bad_ha_tls_and_auth_fields_are_refused_naming_the_field_and_position() {
    let cases = [
        // http:// with [ha.tls]
        (
            TLS_OK.replace("https://10.0.0.2", "http://10.0.0.2"),
            "t.toml:13:8: ha.etcd: \"http://10.0.0.2:2379\": plaintext http:// while [ha.tls] is configured",
        ),
        (
            TLS_OK.replace("key = \"ctl.key\"\n", ""),
            "t.toml:20:8: ha.tls.cert: a client certificate needs its `key`",
        ),
        (
            TLS_OK.replace("cert = \"ctl.pem\"\n", ""),
            "t.toml:20:7: ha.tls.key: a client key needs its `cert`",
        ),
        (
            TLS_OK.replace("username = \"dvipa\"\n", ""),
            "t.toml:16:17: ha.password_file: a password needs its `username`",
        ),
        (
            TLS_OK.replace("password_file = \"etcd-password\"\n", ""),
            "t.toml:16:12: ha.username: etcd authentication needs `password_file`",
        ),
        (
            TLS_OK.replace("domain = \"etcd.example\"", "domain = \"a b\""),
            "t.toml:22:10: ha.tls.domain: \"a b\"",
        ),
        (
            TLS_OK.replace("ca = \"etcd-ca.pem\"\n", ""),
            "missing field `ca`",
        ),
        (
            format!("{TLS_OK}\npassword = \"hunter2\""),
            "unknown field `password`",
        ),
    ];
    for (src, want) in cases {
        let e = with_ha(&src).expect_err(&src);
        assert!(e.contains(want), "{src}\n--> {e}\nwant: {want}");
    }
}

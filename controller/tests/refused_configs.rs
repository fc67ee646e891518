//! Wrong configurations (issue 14, items 5 and 8) are refused both by `dvipa check-config`
//! (non-zero exit) and at start-up ([`dvipa::controller::load`], what `dvipa controller`
//! runs first), with `file:line:col` and the field in the message.

use std::path::{Path, PathBuf};

mod common;

use common::P4INFO;

const TOML: &str = r#"p4info = "P4INFO"
device_config = "device.json"
state_dir = ""
agent = { listen = "127.0.0.1:7070", insecure = true }

[[switch]]
name = "SW1"
p4runtime = "127.0.0.1:9559"
device_id = 1
profile = "sw1.profile"
tunnel_src = "192.0.2.1"
routes = [{ prefix = "0.0.0.0/0", port = 1, dmac = "02:00:00:00:fe:01", smac = "02:00:00:00:01:01" }]

[[switch]]
name = "SW2"
p4runtime = "127.0.0.1:9560"
device_id = 2
profile = "sw2.profile"

[[stack]]
name = "MVS1"
underlay = "10.0.0.1"
mac = "02:00:00:00:00:01"
ports = { SW1 = 2, SW2 = 2 }
"#;

const SW2: &str = "VIPADYNAMIC\n  VIPABACKUP 50 203.0.113.10\nENDVIPADYNAMIC\n";

fn profile(mask: &str, addr: &str, ports: &str) -> String {
    format!(
        "VIPADYNAMIC\n  VIPADEFINE MOVEABLE IMMEDIATE {mask} {addr}\n  \
         VIPADISTRIBUTE {addr} PORT {ports} DESTIP 10.0.0.1\nENDVIPADYNAMIC\n"
    )
}

/// Writes the configuration into `dir`: `toml` (with `P4INFO` replaced) and SW1's profile.
fn write(dir: &Path, toml: &str, sw1: &str) -> PathBuf {
    common::write_inputs(dir, &[("sw1.profile", sw1), ("sw2.profile", SW2)]);
    common::write_toml(dir, &toml.replace("P4INFO", P4INFO))
}

/// `check-config` fails and `load` fails, both with a message containing `want`.
async fn refused(toml: &str, sw1: &str, want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), toml, sw1);
    let (ok, out, err) = common::dvipa(&["check-config", "-c", cfg.to_str().unwrap()]).await;
    assert!(!ok, "check-config accepted it (want `{want}`):\n{out}");
    assert!(
        err.contains(want),
        "check-config: want `{want}`, got:\n{err}"
    );
    let e = dvipa::controller::load(&cfg)
        .err()
        .unwrap_or_else(|| panic!("start-up accepted it (want `{want}`)"))
        .to_string();
    assert!(e.contains(want), "start-up: want `{want}`, got:\n{e}");
    eprintln!("refused: {}", e.lines().next().unwrap_or_default());
}

fn good_profile() -> String {
    profile("255.255.255.0", "203.0.113.10", "60")
}

#[tokio::test]
async fn the_base_configuration_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), TOML, &good_profile());
    let (ok, out, err) = common::dvipa(&["check-config", "-c", cfg.to_str().unwrap()]).await;
    assert!(ok, "{out}\n{err}");
    dvipa::controller::load(&cfg).unwrap();
}

#[tokio::test]
async fn dvipas_that_are_not_unicast_host_addresses_are_refused_with_their_position() {
    for (addr, why) in [
        ("0.0.0.0", "is in 0.0.0.0/8"),
        ("127.0.0.1", "is a loopback address"),
        ("255.255.255.255", "is the limited broadcast address"),
        ("224.0.0.1", "is a multicast address"),
    ] {
        let want = format!("sw1.profile:2:47: VIPA {addr} {why}");
        refused(TOML, &profile("255.255.255.0", addr, "60"), &want).await;
    }
    refused(
        TOML,
        &profile("0.0.0.0", "203.0.113.10", "60"),
        "sw1.profile:2:33: address mask 0.0.0.0 covers every address",
    )
    .await;
    refused(
        TOML,
        &profile("255.255.255.0", "10.0.0.1", "60"),
        "sw1.profile:2:3: VIPA 10.0.0.1 is the underlay address of stack `MVS1`",
    )
    .await;
    refused(
        TOML,
        &profile("255.255.255.0", "192.0.2.1", "60"),
        "sw1.profile:2:3: VIPA 192.0.2.1 is the tunnel_src of switch `SW1`",
    )
    .await;
}

#[tokio::test]
async fn more_ports_than_the_dvipa_table_holds_are_refused() {
    let ports: Vec<String> = (1..=1100).map(|p| p.to_string()).collect();
    refused(
        TOML,
        &profile("255.255.255.0", "203.0.113.10", &ports.join(" ")),
        "sw1.profile:3:3: VIPADISTRIBUTE 203.0.113.10: the profiles distribute 1100 (DVIPA, \
         port, protocol) services, more than the 1024 entries of the `dvipa` table \
         (the pipeline's MAX_SERVICES)",
    )
    .await;
    // The size comes from the P4Info when it says less.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.p4info.txtpb");
    let text = std::fs::read_to_string(P4INFO).unwrap();
    let at = text.find("name: \"IngressImpl.dvipa\"").unwrap();
    let size_at = at + text[at..].find("size: 1024").unwrap();
    let text = format!(
        "{}size: 512{}",
        &text[..size_at],
        &text[size_at + "size: 1024".len()..]
    );
    std::fs::write(&small, text).unwrap();
    let ports: Vec<String> = (1..=600).map(|p| p.to_string()).collect();
    refused(
        &TOML.replace("P4INFO", small.to_str().unwrap()),
        &profile("255.255.255.0", "203.0.113.10", &ports.join(" ")),
        &format!(
            "services, more than the 512 entries of the `dvipa` table (size of \
             IngressImpl.dvipa in {})",
            small.display()
        ),
    )
    .await;
}

#[tokio::test]
async fn wrong_toml_values_name_file_line_column_and_field() {
    let p = good_profile();
    for (from, to, want) in [
        (
            "p4info = \"P4INFO\"",
            "p4info = \"/bin/ls\"",
            "dvipa.toml:1:10: p4info: /bin/ls: invalid P4Info text format: /bin/ls: not UTF-8",
        ),
        (
            "p4info = \"P4INFO\"",
            "p4info = \"dvipa.toml\"",
            "dvipa.toml:1:10: p4info: ",
        ),
        (
            "p4runtime = \"127.0.0.1:9559\"",
            "p4runtime = \"this is not an address\"",
            "dvipa.toml:8:13: switch[0].p4runtime: `this is not an address` is not a P4Runtime \
             address",
        ),
        (
            "tunnel_src = \"192.0.2.1\"",
            "tunnel_src = \"0.0.0.0\"",
            "dvipa.toml:11:14: switch[0].tunnel_src: 0.0.0.0 is in 0.0.0.0/8",
        ),
        (
            "underlay = \"10.0.0.1\"",
            "underlay = \"255.255.255.255\"",
            "dvipa.toml:22:12: stack[0].underlay: 255.255.255.255 is the limited broadcast \
             address",
        ),
        (
            "mac = \"02:00:00:00:00:01\"",
            "mac = \"ff:ff:ff:ff:ff:ff\"",
            "dvipa.toml:23:7: stack[0].mac: ff:ff:ff:ff:ff:ff is the broadcast MAC address",
        ),
        (
            "mac = \"02:00:00:00:00:01\"",
            "mac = \"00:00:00:00:00:00\"",
            "dvipa.toml:23:7: stack[0].mac: 00:00:00:00:00:00 is the all-zero MAC address",
        ),
        (
            "mac = \"02:00:00:00:00:01\"",
            "mac = \"01:00:5e:00:00:01\"",
            "dvipa.toml:23:7: stack[0].mac: 01:00:5e:00:00:01 is a multicast MAC address",
        ),
        (
            "dmac = \"02:00:00:00:fe:01\"",
            "dmac = \"ff:ff:ff:ff:ff:ff\"",
            "dvipa.toml:12:52: switch[0].routes[0].dmac: ff:ff:ff:ff:ff:ff is the broadcast",
        ),
        (
            "name = \"SW2\"",
            "name = \"SW\\nTWO\"",
            "dvipa.toml:15:8: switch[1].name: \"SW\\nTWO\" contains the control character '\\n'",
        ),
        (
            "name = \"MVS1\"",
            "name = \"MVS\\u0007\"",
            "dvipa.toml:21:8: stack[0].name: \"MVS\\u{7}\" contains the control character",
        ),
        (
            "p4runtime = \"127.0.0.1:9560\"\ndevice_id = 2",
            "p4runtime = \"127.0.0.1:9559\"\ndevice_id = 1",
            "dvipa.toml:17:13: switch[1].device_id: 127.0.0.1:9559 device 1 is used by two \
             switches",
        ),
    ] {
        assert!(TOML.contains(from), "{from}");
        refused(&TOML.replacen(from, to, 1), &p, want).await;
    }
}

#[tokio::test]
async fn non_utf8_oversized_and_special_files_are_refused_fast() {
    let p = good_profile();
    let dir = tempfile::tempdir().unwrap();
    // Non-UTF-8 TOML: the byte offset, line and column.
    let cfg = write(dir.path(), TOML, &p);
    let mut bytes = std::fs::read(&cfg).unwrap();
    let off = bytes.len();
    bytes.extend_from_slice(b"# caf\xe9\n");
    std::fs::write(&cfg, &bytes).unwrap();
    let want = format!(
        "dvipa.toml:25:6: not UTF-8: invalid byte 0xe9 at byte offset {}",
        off + 5
    );
    let (ok, _, err) = common::dvipa(&["check-config", "-c", cfg.to_str().unwrap()]).await;
    assert!(!ok && err.contains(&want), "{err}");
    let e = dvipa::controller::load(&cfg).unwrap_err().to_string();
    assert!(e.contains(&want), "{e}");
    // A non-UTF-8 profile likewise.
    let cfg = write(dir.path(), TOML, &p);
    std::fs::write(dir.path().join("sw1.profile"), b"VIPADYNAMIC\n ; \xff\n").unwrap();
    let e = dvipa::controller::load(&cfg).unwrap_err().to_string();
    assert!(
        e.ends_with("sw1.profile:2:4: not UTF-8: invalid byte 0xff at byte offset 15"),
        "{e}"
    );

    // `profile = "/dev/zero"`: refused at once, not read until memory runs out.
    let t = std::time::Instant::now();
    refused(
        &TOML.replace("\"sw1.profile\"", "\"/dev/zero\""),
        &p,
        "reading /dev/zero: not a regular file (character device)",
    )
    .await;
    refused(
        &TOML.replace("\"P4INFO\"", "\"/dev/zero\""),
        &p,
        "dvipa.toml:1:10: p4info: /dev/zero: cannot read P4Info file /dev/zero: not a regular \
         file (character device)",
    )
    .await;
    refused(
        &TOML.replace("\"sw1.profile\"", "\"/tmp\""),
        &p,
        "reading /tmp: not a regular file (directory)",
    )
    .await;
    refused(
        &TOML.replace("\"device.json\"", "\"/dev/zero\""),
        &p,
        "/dev/zero: not a regular file (character device)",
    )
    .await;
    eprintln!(
        "special files refused in {:?} (5 runs of check-config + start-up)",
        t.elapsed()
    );
    // Over the caps: a 1 MiB + 1 profile, a 16 MiB + 1 P4Info.
    let big = dir.path().join("big.profile");
    std::fs::write(&big, vec![b' '; (1 << 20) + 1]).unwrap();
    refused(
        &TOML.replace("\"sw1.profile\"", &format!("{:?}", big.to_str().unwrap())),
        &p,
        "1048577 bytes, over the limit of 1048576 bytes",
    )
    .await;
    let big = dir.path().join("big.p4info.txtpb");
    std::fs::write(&big, vec![b' '; (16 << 20) + 1]).unwrap();
    refused(
        &TOML.replace("P4INFO", big.to_str().unwrap()),
        &p,
        "16777217 bytes, over the limit of 16777216 bytes",
    )
    .await;
    // A TOML over its cap.
    let cfg = write(dir.path(), TOML, &p);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("# {}\n", "x".repeat(1 << 20)));
    std::fs::write(&cfg, text).unwrap();
    let e = dvipa::controller::load(&cfg).unwrap_err().to_string();
    assert!(e.contains("over the limit of 1048576 bytes"), "{e}");
}

#[tokio::test]
async fn data_plane_probe_settings_are_checked_with_their_position() {
    let p = good_profile();
    let section = "\n[liveness.dataplane]\ndvipa = \"203.0.113.10\"\nport = 60\n\n\
                   [[liveness.dataplane.path]]\nswitch = \"SW1\"\nsource = \"192.0.2.241\"\n";
    let udp = format!("distribute_udp = true\n{TOML}{section}");
    // sound: accepted by check-config
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), &udp, &p);
    let (ok, _, err) = common::dvipa(&["check-config", "-c", cfg.to_str().unwrap()]).await;
    assert!(ok, "the sound [liveness.dataplane] was refused: {err}");
    // the probes are UDP: without distribute_udp the switches would not distribute them
    refused(
        &format!("{TOML}{section}"),
        &p,
        "dvipa.toml:27:9: liveness.dataplane.dvipa: the data-plane probes are UDP",
    )
    .await;
    for (from, to, want) in [
        (
            "dvipa = \"203.0.113.10\"",
            "dvipa = \"203.0.113.99\"",
            "dvipa.toml:28:9: liveness.dataplane.dvipa: 203.0.113.99 is not a DVIPA of the \
             profiles (they define 203.0.113.10)",
        ),
        (
            "switch = \"SW1\"\nsource",
            "switch = \"SW9\"\nsource",
            "dvipa.toml:32:10: liveness.dataplane.path[0].switch: `SW9` is not a configured \
             [[switch]]",
        ),
        (
            "port = 60\n",
            "port = 60\nprobe_ms = 200\n",
            "liveness.dataplane.down_after_ms: must be at least 2 × probe_ms",
        ),
        (
            "port = 60\n",
            "port = 60\nflows = 17\n",
            "liveness.dataplane.flows: must be 1..=16 (17)",
        ),
    ] {
        assert!(udp.contains(from), "{from}");
        refused(&udp.replacen(from, to, 1), &p, want).await;
    }
}

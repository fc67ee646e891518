//! Input checks shared by the TOML configuration, the profiles and the controller shell:
//!
//! - [`field_pos`]: where a dotted field (`switch[1].device_id`) is in the TOML text, so a
//!   validation error names `file:line:col` like a syntax error does;
//! - [`unicast_problem`], [`mac_problem`], [`name_problem`], [`p4runtime_problem`]: what is
//!   wrong with a value, as a message, or `None`;
//! - [`read_capped`] (from `dvipa-file`) and [`utf8`]: the only way the controller reads a
//!   configuration file: a
//!   regular file no bigger than its cap (`profile = "/dev/zero"` fails at once), UTF-8 text
//!   (an invalid byte is named by offset, line and column).
//!
//! The caps ([`TOML_CAP`], [`PROFILE_CAP`]) are far above any real file (the figure-4 example
//! is under 2 KiB) and small enough that reading one never matters for memory.

use std::net::{Ipv4Addr, SocketAddr};

use toml::de::{DeTable, DeValue};

/// Largest TOML configuration read (1 MiB).
pub const TOML_CAP: u64 = 1 << 20;
/// Largest profile read (1 MiB).
pub const PROFILE_CAP: u64 = 1 << 20;

/// 1-based line and column (in characters) of byte `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (u32, u32) {
    let mut o = offset.min(src.len());
    while !src.is_char_boundary(o) {
        o -= 1;
    }
    let before = &src[..o];
    let line = before.matches('\n').count() as u32 + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() as u32 + 1;
    (line, col)
}

/// One step of a dotted field path.
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(field: &str) -> Vec<Seg<'_>> {
    let mut v = Vec::new();
    for part in field.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            v.push(Seg::Key(key));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let Some((n, r)) = r.split_once(']') else {
                break;
            };
            match n.parse() {
                Ok(i) => v.push(Seg::Index(i)),
                Err(_) => v.push(Seg::Key(n)),
            }
            rest = r;
        }
    }
    v
}

/// Where the dotted `field` (`switch[1].device_id`, `stack[0].ports.MVS9`, `timers.lease_ms`)
/// is in the TOML text `src`: its value, or, when the field itself is absent (a required or
/// defaulted value), the deepest table that is there. `None` when nothing of it is in the
/// text (e.g. a whole section left at its default) or the text does not parse.
pub fn field_pos(src: &str, field: &str) -> Option<(u32, u32)> {
    let root = DeTable::parse(src).ok()?;
    let mut best: Option<std::ops::Range<usize>> = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for seg in segments(field) {
        let next = match (seg, table, value) {
            (Seg::Key(k), Some(t), _) => t.get(k),
            (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(i),
            _ => None,
        };
        let Some(next) = next else { break };
        best = Some(next.span());
        value = Some(next.get_ref());
        table = match next.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    best.map(|s| line_col(src, s.start))
}

/// Why `a` cannot be a unicast host address (a DVIPA, an underlay, a tunnel source), or
/// `None` when it can.
pub fn unicast_problem(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_broadcast() {
        Some("is the limited broadcast address")
    } else if o[0] == 0 {
        Some("is in 0.0.0.0/8 (\"this network\", not a host address)")
    } else if a.is_loopback() {
        Some("is a loopback address (127.0.0.0/8)")
    } else if a.is_multicast() {
        Some("is a multicast address (224.0.0.0/4)")
    } else if o[0] >= 240 {
        Some("is in the reserved range 240.0.0.0/4")
    } else {
        None
    }
}

/// Why `m` cannot be the MAC address of a host or switch port (all zero, broadcast, or the
/// multicast bit set).
pub fn mac_problem(m: [u8; 6]) -> Option<&'static str> {
    if m == [0; 6] {
        Some("is the all-zero MAC address")
    } else if m == [0xff; 6] {
        Some("is the broadcast MAC address")
    } else if m[0] & 1 != 0 {
        Some("is a multicast MAC address (the low bit of the first byte is set)")
    } else {
        None
    }
}

/// Why `s` cannot be a name (switch, stack, controller id): empty, or with a control
/// character (a newline would split log lines and the CLI's tables).
pub fn name_problem(s: &str) -> Option<String> {
    if s.trim().is_empty() {
        return Some("must not be empty".into());
    }
    s.chars()
        .find(|c| c.is_control())
        .map(|c| format!("{s:?} contains the control character {c:?}"))
}

/// Why `s` is not a P4Runtime address (`host:port`, `ip:port`, optionally with `http://`
/// or `https://`).
pub fn p4runtime_problem(s: &str) -> Option<String> {
    let bad = || {
        Some(format!(
            "`{s}` is not a P4Runtime address (expected host:port, e.g. 127.0.0.1:9559)"
        ))
    };
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s);
    if rest.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return bad();
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => None,
        _ => bad(),
    }
}

pub use dvipa_file::{file_kind, read_capped};

/// The bytes as text, or a message naming the first invalid byte by offset, line and column
/// (`file:3:7: not UTF-8: invalid byte 0xff at byte offset 41`).
pub fn utf8(file: &str, bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| {
        let off = e.utf8_error().valid_up_to();
        let b = e.as_bytes();
        let good = std::str::from_utf8(&b[..off]).unwrap_or_default();
        let (line, col) = line_col(good, off);
        format!(
            "{file}:{line}:{col}: not UTF-8: invalid byte 0x{:02x} at byte offset {off}",
            b[off]
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_positions_follow_arrays_tables_and_fall_back_to_the_parent() {
        let src = "a = 1\n[[switch]]\nname = \"x\"\n\n[[switch]]\nname = \"y\"\ndevice_id = 7\n\
                   [timers]\nlease_ms = 5\n";
        assert_eq!(field_pos(src, "switch[1].device_id"), Some((7, 13)));
        assert_eq!(field_pos(src, "switch[0].name"), Some((3, 8)));
        // Absent field: its table.
        assert_eq!(field_pos(src, "timers.heartbeat_ms").map(|p| p.0), Some(8));
        assert_eq!(field_pos(src, "timers.lease_ms"), Some((9, 12)));
        assert_eq!(field_pos(src, "admin.listen"), None);
        assert_eq!(field_pos("x = [", "x"), None);
    }

    #[test]
    fn address_mac_name_and_p4runtime_checks() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
        ] {
            assert!(unicast_problem(a.parse().unwrap()).is_some(), "{a}");
        }
        assert_eq!(unicast_problem("203.0.113.10".parse().unwrap()), None);
        assert!(mac_problem([0xff; 6]).is_some());
        assert!(mac_problem([0; 6]).is_some());
        assert!(mac_problem([1, 0, 0x5e, 0, 0, 1]).is_some());
        assert_eq!(mac_problem([2, 0, 0, 0, 1, 1]), None);
        assert!(
            name_problem("a\nb")
                .unwrap()
                .contains("control character '\\n'")
        );
        assert!(name_problem(" ").is_some());
        assert_eq!(name_problem("MVS1"), None);
        for ok in ["127.0.0.1:9559", "sw1.example:9559", "http://[::1]:9559"] {
            assert_eq!(p4runtime_problem(ok), None, "{ok}");
        }
        for bad in [
            "this is not an address",
            "1.2.3.4",
            "h:0",
            ":9559",
            "a..b:1",
        ] {
            assert!(p4runtime_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn utf8_errors_name_the_byte_offset_line_and_column() {
        let e = utf8("t.toml", b"a = 1\nb = \"\xff\"\n".to_vec()).unwrap_err();
        assert_eq!(
            e,
            "t.toml:2:6: not UTF-8: invalid byte 0xff at byte offset 11"
        );
        assert_eq!(utf8("t", b"ok".to_vec()).unwrap(), "ok");
    }
}

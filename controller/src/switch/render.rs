//! Text of a table read from a switch, for `dvipa table dump` (values as addresses, MACs or
//! numbers by width).

use dvipa_proto::v1 as pb;
use p4rt::Schema;
use p4rt::proto::p4::v1 as p4;

/// One row per table entry of `got`: match, action(params), priority, idle timeout.
pub(super) fn rows(schema: &Schema, got: Vec<p4::Entity>) -> Result<Vec<pb::AdminRow>, String> {
    let mut rows = Vec::new();
    for e in got {
        let Some(p4::entity::Entity::TableEntry(te)) = e.entity else {
            continue;
        };
        let d = schema.decode_table_entry(&te).map_err(|e| e.to_string())?;
        let m: Vec<String> = d
            .matches
            .iter()
            .map(|(f, w, v)| format!("{f}={}", match_text(v, *w)))
            .collect();
        let a = d
            .action
            .as_ref()
            .map(|a| {
                let ps: Vec<String> = a
                    .params
                    .iter()
                    .map(|(p, w, v)| format!("{p}={}", value_str(v, *w)))
                    .collect();
                format!("{}({})", a.name, ps.join(", "))
            })
            .unwrap_or_default();
        rows.push(pb::AdminRow {
            cells: vec![
                if d.is_default_action {
                    "(default)".into()
                } else if m.is_empty() {
                    "*".into()
                } else {
                    m.join(" ")
                },
                a,
                d.priority.to_string(),
                d.idle_timeout_ns.to_string(),
            ],
        });
    }
    Ok(rows)
}

fn value_str(v: &[u8], w: u32) -> String {
    match w {
        32 => p4rt::codec::decode_ipv4(v, w)
            .map(|a| a.to_string())
            .unwrap_or_else(|_| p4rt::codec::hex(v)),
        48 => p4rt::codec::decode_mac(v, w)
            .map(|a| a.to_string())
            .unwrap_or_else(|_| p4rt::codec::hex(v)),
        _ => p4rt::codec::decode_u128(v, w)
            .map(|a| a.to_string())
            .unwrap_or_else(|_| p4rt::codec::hex(v)),
    }
}

fn match_text(v: &p4rt::MatchValue, w: u32) -> String {
    use p4rt::MatchValue as M;
    match v {
        M::Exact(x) | M::Optional(x) => value_str(x, w),
        M::Ternary { value, mask } => {
            format!("{}&&&{}", value_str(value, w), p4rt::codec::hex(mask))
        }
        M::Lpm { value, prefix_len } => format!("{}/{prefix_len}", value_str(value, w)),
        M::Range { low, high } => format!("{}..{}", value_str(low, w), value_str(high, w)),
    }
}

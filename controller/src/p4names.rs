//! Every P4 name the controller uses, in one place, checked against the P4Info at start-up.
//!
//! The names are the P4Info names of `docs/pipeline-contract.md`. [`check`] resolves each of
//! them (tables with their match fields and kinds, actions with their parameters, the digest
//! with its members, the counters) through [`p4rt::Schema`] and returns **all** missing or
//! mismatched names at once, so a wrong P4Info is refused before anything is written.

use p4rt::Schema;
use p4rt::proto::p4::config::v1 as cfg;

/// `IngressImpl.dvipa`.
pub const T_DVIPA: &str = "IngressImpl.dvipa";
/// `IngressImpl.crt`.
pub const T_CRT: &str = "IngressImpl.crt";
/// `IngressImpl.dpt`.
pub const T_DPT: &str = "IngressImpl.dpt";
/// `IngressImpl.target`.
pub const T_TARGET: &str = "IngressImpl.target";
/// `IngressImpl.ipv4_route`.
pub const T_ROUTE: &str = "IngressImpl.ipv4_route";
/// The five tables, in contract order.
pub const TABLES: [&str; 5] = [T_DVIPA, T_CRT, T_DPT, T_TARGET, T_ROUTE];

/// The contract name of a table read back from a switch: the P4Info name itself, or, when a
/// pipeline prefix precedes a contract name (TNA's `pipe.IngressImpl.crt`), that contract name.
/// Resolution towards the switch is [`p4rt::Schema`]'s (suffix); this is its inverse.
pub fn contract_table(full: &str) -> &str {
    TABLES
        .iter()
        .find(|t| {
            full.len() > t.len()
                && full.ends_with(*t)
                && full[..full.len() - t.len()].ends_with('.')
        })
        .copied()
        .unwrap_or(full)
}

/// Match fields.
pub const F_DST: &str = "hdr.ipv4.dstAddr";
/// Match field.
pub const F_SRC: &str = "hdr.ipv4.srcAddr";
/// Match field.
pub const F_PROTO: &str = "hdr.ipv4.protocol";
/// Match field.
pub const F_SPORT: &str = "meta.l4_sport";
/// Match field.
pub const F_DPORT: &str = "meta.l4_dport";
/// Match field.
pub const F_SERVICE: &str = "meta.service_id";
/// Match field.
pub const F_SLOT: &str = "meta.slot";
/// Match field.
pub const F_TARGET: &str = "meta.target_id";
/// Match field.
pub const F_ROUTE_DST: &str = "meta.route_dst";

/// Actions.
pub const A_DISTRIBUTE: &str = "IngressImpl.distribute";
/// Action.
pub const A_TO_TARGET: &str = "IngressImpl.to_target";
/// Action.
pub const A_FORWARD_L2: &str = "IngressImpl.forward_l2";
/// Action.
pub const A_ENCAP_IPIP: &str = "IngressImpl.encap_ipip";
/// Action.
pub const A_SET_NEXTHOP: &str = "IngressImpl.set_nexthop";
/// Action.
pub const A_DROP: &str = "IngressImpl.drop";
/// Action.
pub const A_NO_ACTION: &str = "NoAction";

/// Action parameters.
pub const P_SERVICE_ID: &str = "service_id";
/// Param.
pub const P_METHOD: &str = "method";
/// Param.
pub const P_TARGET_ID: &str = "target_id";
/// Param.
pub const P_DMAC: &str = "dmac";
/// Param.
pub const P_SMAC: &str = "smac";
/// Param.
pub const P_PORT: &str = "port";
/// Param.
pub const P_OUTER_SRC: &str = "outer_src";
/// Param.
pub const P_OUTER_DST: &str = "outer_dst";

/// The digest.
pub const D_LEARN: &str = "learn_t";
/// Digest members, in order.
pub const LEARN_MEMBERS: [(&str, u32); 8] = [
    ("src_addr", 32),
    ("dst_addr", 32),
    ("protocol", 8),
    ("src_port", 16),
    ("dst_port", 16),
    ("service_id", 16),
    ("target_id", 16),
    ("flags", 8),
];
/// `learn_t.flags` bit 0.
pub const FLAG_NOT_SYN: u128 = 1;

/// Counters.
pub const C_SERVICE: &str = "IngressImpl.service_counter";
/// Direct counter of `crt`.
pub const C_CRT: &str = "IngressImpl.crt_counter";
/// Direct counter of `target`.
pub const C_TARGET: &str = "IngressImpl.target_counter";

type M = cfg::match_field::MatchType;

/// (table, [(field, kind, bits)], [actions]).
type TableSpec = (
    &'static str,
    &'static [(&'static str, M, i32)],
    &'static [&'static str],
);
const TABLE_SPEC: [TableSpec; 5] = [
    (
        T_DVIPA,
        &[
            (F_DST, M::Exact, 32),
            (F_PROTO, M::Exact, 8),
            (F_DPORT, M::Ternary, 16),
        ],
        &[A_DISTRIBUTE, A_NO_ACTION],
    ),
    (
        T_CRT,
        &[
            (F_SRC, M::Exact, 32),
            (F_DST, M::Exact, 32),
            (F_PROTO, M::Exact, 8),
            (F_SPORT, M::Exact, 16),
            (F_DPORT, M::Exact, 16),
        ],
        &[A_TO_TARGET, A_NO_ACTION],
    ),
    (
        T_DPT,
        &[(F_SERVICE, M::Exact, 16), (F_SLOT, M::Exact, 16)],
        &[A_TO_TARGET, A_NO_ACTION],
    ),
    (
        T_TARGET,
        &[(F_TARGET, M::Exact, 16)],
        &[A_FORWARD_L2, A_ENCAP_IPIP, A_DROP],
    ),
    (
        T_ROUTE,
        &[(F_ROUTE_DST, M::Lpm, 32)],
        &[A_SET_NEXTHOP, A_DROP],
    ),
];

/// (action, [(param, bits)]).
const ACTION_SPEC: [(&str, &[(&str, i32)]); 7] = [
    (A_DISTRIBUTE, &[(P_SERVICE_ID, 16), (P_METHOD, 8)]),
    (A_TO_TARGET, &[(P_TARGET_ID, 16)]),
    (A_FORWARD_L2, &[(P_DMAC, 48), (P_PORT, 9)]),
    (A_ENCAP_IPIP, &[(P_OUTER_SRC, 32), (P_OUTER_DST, 32)]),
    (A_SET_NEXTHOP, &[(P_DMAC, 48), (P_SMAC, 48), (P_PORT, 9)]),
    (A_DROP, &[]),
    (A_NO_ACTION, &[]),
];

/// The P4Info does not provide what the controller needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the P4Info does not match the pipeline contract ({} problems):\n  - {}", .0.len(), .0.join("\n  - "))]
pub struct MissingNames(pub Vec<String>);

/// Checks every name of this module against `schema`; lists every problem.
pub fn check(schema: &Schema) -> Result<(), MissingNames> {
    let mut bad = Vec::new();
    for (t, fields, actions) in TABLE_SPEC {
        let table = match schema.table(t) {
            Ok(x) => x,
            Err(_) => {
                bad.push(format!("table `{t}`"));
                continue;
            }
        };
        for (f, kind, bits) in fields {
            match table.match_fields.iter().find(|x| x.name == *f) {
                None => bad.push(format!("match field `{f}` of table `{t}`")),
                Some(x) => {
                    if x.bitwidth != *bits {
                        bad.push(format!(
                            "match field `{f}` of `{t}` is {} bits, expected {bits}",
                            x.bitwidth
                        ));
                    }
                    let k = p4rt::schema::match_type(x);
                    if k != Some(*kind) {
                        bad.push(format!(
                            "match field `{f}` of `{t}` is {k:?}, expected {kind:?}"
                        ));
                    }
                }
            }
        }
        for a in actions {
            let id = schema
                .action(a)
                .ok()
                .map(|x| p4rt::schema::id_of(&x.preamble));
            if !id.is_some_and(|id| table.action_refs.iter().any(|r| r.id == id)) {
                bad.push(format!("action `{a}` of table `{t}`"));
            }
        }
    }
    for (a, params) in ACTION_SPEC {
        let Ok(action) = schema.action(a) else {
            bad.push(format!("action `{a}`"));
            continue;
        };
        for (p, bits) in params {
            match action.params.iter().find(|x| x.name == *p) {
                None => bad.push(format!("param `{p}` of action `{a}`")),
                Some(x) if x.bitwidth != *bits => bad.push(format!(
                    "param `{p}` of `{a}` is {} bits, expected {bits}",
                    x.bitwidth
                )),
                Some(_) => {}
            }
        }
    }
    match schema.digest_layout(D_LEARN) {
        Err(_) => bad.push(format!("digest `{D_LEARN}`")),
        Ok(l) => {
            for (m, bits) in LEARN_MEMBERS {
                match l.members.iter().find(|x| x.0 == m) {
                    None => bad.push(format!("member `{m}` of digest `{D_LEARN}`")),
                    Some(x) if x.1 != bits => bad.push(format!(
                        "member `{m}` of digest `{D_LEARN}` is {} bits, expected {bits}",
                        x.1
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    if schema.counter(C_SERVICE).is_err() {
        bad.push(format!("counter `{C_SERVICE}`"));
    }
    for c in [C_CRT, C_TARGET] {
        if schema.direct_counter(c).is_err() {
            bad.push(format!("direct counter `{c}`"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(MissingNames(bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn contract_schema() -> Schema {
        Schema::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
        ))
        .unwrap()
    }

    #[test]
    fn the_contract_p4info_has_every_name() {
        check(&contract_schema()).unwrap();
    }

    /// The hand-written TNA P4Info (`pipe.`-prefixed tables and externs, digest named after its
    /// `Digest` instance) resolves through the same names; so does the form p4c writes with
    /// `--p4runtime-force-std-externs` (prefix stripped).
    #[test]
    fn the_tna_p4info_resolves_every_name_by_suffix_and_digest_type() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../p4src/tna/dvipa.p4info.txtpb"
        );
        let tna = Schema::from_file(path).unwrap();
        check(&tna).unwrap();
        assert_eq!(
            p4rt::schema::name_of(&tna.table(T_CRT).unwrap().preamble),
            "pipe.IngressImpl.crt"
        );
        let d = tna.digest_layout(D_LEARN).unwrap();
        assert_eq!(d.name, "pipe.IngressDeparser.learn_digest");
        assert_eq!(tna.table(T_CRT).unwrap().size, 262144);
        assert_eq!(contract_table("pipe.IngressImpl.crt"), T_CRT);
        assert_eq!(contract_table(T_CRT), T_CRT);
        assert_eq!(contract_table("xIngressImpl.crt"), "xIngressImpl.crt");
        let mut stripped = tna.p4info().clone();
        for t in &mut stripped.tables {
            let p = t.preamble.as_mut().unwrap();
            p.name = p.name.trim_start_matches("pipe.").to_string();
        }
        check(&Schema::from_p4info(stripped).unwrap()).unwrap();
        // A digest of another struct type is not taken for learn_t.
        let mut other = tna.p4info().clone();
        for d in &mut other.digests {
            if let Some(cfg::p4_data_type_spec::TypeSpec::Struct(s)) =
                d.type_spec.as_mut().and_then(|t| t.type_spec.as_mut())
            {
                s.name = "other_t".into();
            }
        }
        let mut ti = other.type_info.clone().unwrap();
        let st = ti.structs.remove("learn_t").unwrap();
        ti.structs.insert("other_t".into(), st);
        other.type_info = Some(ti);
        let err = check(&Schema::from_p4info(other).unwrap()).unwrap_err();
        assert_eq!(err.0, vec!["digest `learn_t`".to_string()]);
    }

    #[test]
    fn a_p4info_without_crt_and_digest_lists_every_problem() {
        let mut info = contract_schema().p4info().clone();
        info.tables
            .retain(|t| p4rt::schema::name_of(&t.preamble) != T_CRT);
        info.digests.clear();
        for a in &mut info.actions {
            if p4rt::schema::name_of(&a.preamble) == A_FORWARD_L2 {
                a.params.retain(|p| p.name != P_PORT);
            }
        }
        let err = check(&Schema::from_p4info(info).unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("table `IngressImpl.crt`"), "{text}");
        assert!(text.contains("digest `learn_t`"), "{text}");
        assert!(
            text.contains("param `port` of action `IngressImpl.forward_l2`"),
            "{text}"
        );
        assert_eq!(err.0.len(), 3, "{text}");
    }
}

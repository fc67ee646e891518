//! One check of a P4Info against the whole contract, listing every mismatch.

use crate::{TABLES, actions, counters, learn};
use p4rt::Schema;

/// The P4Info does not match the contract: every problem found, one a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the P4Info does not match the pipeline contract ({} problems):\n  - {}", .0.len(), .0.join("\n  - "))]
pub struct Mismatches(pub Vec<String>);

/// Checks every table (match fields with kind and width, in number; actions; direct counter
/// attached), action (parameters with width, in number), the `learn_t` digest (members with
/// width, in order) and the service counter against `schema`; lists every problem. Names are
/// found exactly or by a unique `.`-suffix (see [`crate::resolve_name`]).
pub fn check(schema: &Schema) -> Result<(), Mismatches> {
    let mut bad = Vec::new();
    for spec in TABLES {
        let t = spec.name;
        let table = match schema.table(t) {
            Ok(x) => x,
            Err(_) => {
                bad.push(format!("table `{t}`"));
                continue;
            }
        };
        if table.match_fields.len() != spec.fields.len() {
            bad.push(format!(
                "table `{t}` has {} match fields, expected {}",
                table.match_fields.len(),
                spec.fields.len()
            ));
        }
        for (f, kind, bits) in spec.fields {
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
        for a in spec.actions {
            let id = schema
                .action(a)
                .ok()
                .map(|x| p4rt::schema::id_of(&x.preamble));
            if !id.is_some_and(|id| table.action_refs.iter().any(|r| r.id == id)) {
                bad.push(format!("action `{a}` of table `{t}`"));
            }
        }
        if let Some(dc) = spec.direct_counter {
            match schema.direct_counter(dc) {
                Err(_) => bad.push(format!("direct counter `{dc}`")),
                Ok(c) => {
                    if !table
                        .direct_resource_ids
                        .contains(&p4rt::schema::id_of(&c.preamble))
                    {
                        bad.push(format!("direct counter `{dc}` is not attached to `{t}`"));
                    }
                }
            }
        }
    }
    for (a, params) in actions::SPECS {
        let Ok(action) = schema.action(a) else {
            bad.push(format!("action `{a}`"));
            continue;
        };
        if action.params.len() != params.len() {
            bad.push(format!(
                "action `{a}` has {} params, expected {}",
                action.params.len(),
                params.len()
            ));
        }
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
    let d = learn::NAME;
    match schema.digest_layout(d) {
        Err(_) => bad.push(format!("digest `{d}`")),
        Ok(l) => {
            let before = bad.len();
            for (m, bits) in learn::MEMBERS {
                match l.members.iter().find(|x| x.0 == m) {
                    None => bad.push(format!("member `{m}` of digest `{d}`")),
                    Some(x) if x.1 != bits => bad.push(format!(
                        "member `{m}` of digest `{d}` is {} bits, expected {bits}",
                        x.1
                    )),
                    Some(_) => {}
                }
            }
            let got: Vec<&str> = l.members.iter().map(|x| x.0.as_str()).collect();
            let want: Vec<&str> = learn::MEMBERS.iter().map(|x| x.0).collect();
            if bad.len() == before && got != want {
                bad.push(format!(
                    "members of digest `{d}` are {got:?}, expected {want:?}"
                ));
            }
        }
    }
    if schema.counter(counters::SERVICE).is_err() {
        bad.push(format!("counter `{}`", counters::SERVICE));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Mismatches(bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{crt, dvipa};

    fn contract_schema() -> Schema {
        Schema::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
        ))
        .unwrap()
    }

    #[test]
    fn the_contract_p4info_matches() {
        check(&contract_schema()).unwrap();
    }

    #[test]
    fn every_mismatch_is_listed_at_once() {
        let mut info = contract_schema().p4info().clone();
        info.tables
            .retain(|t| p4rt::schema::name_of(&t.preamble) != crt::NAME);
        info.digests.clear();
        for a in &mut info.actions {
            if p4rt::schema::name_of(&a.preamble) == actions::FORWARD_L2 {
                a.params.retain(|p| p.name != actions::P_PORT);
            }
        }
        for t in &mut info.tables {
            if p4rt::schema::name_of(&t.preamble) == dvipa::NAME {
                t.match_fields.retain(|f| f.name != dvipa::F_DPORT);
            }
        }
        let err = check(&Schema::from_p4info(info).unwrap()).unwrap_err();
        let text = err.to_string();
        for want in [
            "table `IngressImpl.crt`",
            "digest `learn_t`",
            "action `IngressImpl.forward_l2` has 1 params, expected 2",
            "param `port` of action `IngressImpl.forward_l2`",
            "table `IngressImpl.dvipa` has 2 match fields, expected 3",
            "match field `meta.l4_dport` of table `IngressImpl.dvipa`",
        ] {
            assert!(text.contains(want), "{want} missing from: {text}");
        }
        assert_eq!(err.0.len(), 6, "{text}");
    }

    #[test]
    fn a_tna_style_prefixed_p4info_is_accepted() {
        let mut info = contract_schema().p4info().clone();
        for t in &mut info.tables {
            let p = t.preamble.as_mut().unwrap();
            p.name = format!("pipe.{}", p.name);
        }
        check(&Schema::from_p4info(info).unwrap()).unwrap();
    }
}

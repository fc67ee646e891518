//! The hand-written TNA P4Info (`p4src/tna/dvipa.p4info.txtpb`: `pipe.`-prefixed tables and
//! externs, actions unprefixed, the digest named after its `Digest` instance) passes the same
//! contract check as the v1model one, and so does the form p4c writes with
//! `--p4runtime-force-std-externs` (prefix stripped). Names read back from such a switch decode
//! to the contract's tables.

use dvipa_contract::{TABLE_NAMES, check, crt, learn, resolve_name};
use p4rt::Schema;
use p4rt::proto::p4::config::v1 as cfg;

fn tna() -> Schema {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../p4src/tna/dvipa.p4info.txtpb"
    );
    Schema::from_file(path).unwrap()
}

#[test]
fn the_tna_p4info_resolves_every_name_by_suffix_and_digest_type() {
    let tna = tna();
    check(&tna).unwrap();
    assert_eq!(
        p4rt::schema::name_of(&tna.table(crt::NAME).unwrap().preamble),
        "pipe.IngressImpl.crt"
    );
    let d = tna.digest_layout(learn::NAME).unwrap();
    assert_eq!(d.name, "pipe.IngressDeparser.learn_digest");
    assert_eq!(tna.table(crt::NAME).unwrap().size, 262144);
    assert_eq!(
        resolve_name("pipe.IngressImpl.crt", &TABLE_NAMES),
        Some(crt::NAME)
    );
    assert_eq!(resolve_name("xIngressImpl.crt", &TABLE_NAMES), None);

    let mut stripped = tna.p4info().clone();
    for t in &mut stripped.tables {
        let p = t.preamble.as_mut().unwrap();
        p.name = p.name.trim_start_matches("pipe.").to_string();
    }
    check(&Schema::from_p4info(stripped).unwrap()).unwrap();
}

#[test]
fn a_digest_of_another_struct_type_is_not_taken_for_learn_t() {
    let mut other = tna().p4info().clone();
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

//! The controller's side of the P4 contract: the typed entry ↔ P4Runtime encodings live in
//! [`dvipa_contract`] (re-exported here under the names the shell uses); this module adds how a
//! target answers a full table, the per-update outcome the core expects, and the text of keys
//! and values for the admin tables.

pub use dvipa_contract::{
    DecodeError as TranslateError, decode as from_decoded, decode_lenient as from_decoded_lenient,
    digest_item, foreign_value, table_entry, to_p4_update,
};
use dvipa_core::core::WriteOutcome;
use dvipa_core::entries::{Key, UpdateKind, Value};

/// How a target said that an INSERT found its table full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullAnswer {
    /// `RESOURCE_EXHAUSTED`, as the P4Runtime specification asks.
    ResourceExhausted,
    /// bmv2's PI server (`simple_switch_grpc`): `UNKNOWN`, message [`BMV2_ADD_FAILED`] in space
    /// [`BMV2_SPACE`].
    Bmv2,
}

/// The message bmv2's PI server gives an INSERT the target refused (a full table).
pub const BMV2_ADD_FAILED: &str = "Error when adding match entry to target";
/// The error space of bmv2's simple_switch PI server.
pub const BMV2_SPACE: &str = "ALL-sswitch-p4org";

/// Whether a failed update says that its table is full, and how.
///
/// bmv2 does not answer a full table with `RESOURCE_EXHAUSTED`: the PI server maps every failure
/// of the target's add-entry call to `UNKNOWN` "Error when adding match entry to target". PI
/// checks keys, actions, priorities and duplicates itself before calling the target, so on an
/// INSERT that answer in practice means a full table; the controller takes it as one (the
/// connection stays on the slot path and the insert is retried when deletes free room), and
/// counts it under its own name so an unexpected cause would show.
pub fn full_answer(kind: UpdateKind, e: &p4rt::UpdateError) -> Option<FullAnswer> {
    match e.code {
        tonic::Code::ResourceExhausted => Some(FullAnswer::ResourceExhausted),
        tonic::Code::Unknown
            if kind == UpdateKind::Insert
                && e.message == BMV2_ADD_FAILED
                && (e.space.is_empty() || e.space == BMV2_SPACE) =>
        {
            Some(FullAnswer::Bmv2)
        }
        _ => None,
    }
}

/// The outcome the core expects for one per-update answer to an update of `kind`.
pub fn outcome(kind: UpdateKind, r: &Result<(), p4rt::UpdateError>) -> WriteOutcome {
    match r {
        Ok(()) => WriteOutcome::Ok,
        Err(e) if full_answer(kind, e).is_some() => WriteOutcome::ResourceExhausted,
        Err(e) => match e.code {
            tonic::Code::AlreadyExists => WriteOutcome::AlreadyExists,
            tonic::Code::NotFound => WriteOutcome::NotFound,
            c => WriteOutcome::Other(format!("{c:?}: {}", e.message)),
        },
    }
}

/// Human text of a key (for `diff` and `table dump`).
pub fn key_text(k: &Key) -> String {
    match k {
        Key::Dvipa { addr, proto, port } => format!(
            "dst={addr} proto={proto} dport={}",
            port.map(|p| p.to_string()).unwrap_or_else(|| "*".into())
        ),
        Key::Dpt { service, slot } => format!("service={service} slot={slot}"),
        Key::Target { target } => format!("target={target}"),
        Key::Route { prefix } => format!("dst={prefix}"),
        Key::Crt(c) => c.to_string(),
    }
}

/// Human text of a value.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Distribute { service, method } => {
            format!("distribute(service_id={service}, method={method})")
        }
        Value::ToTarget { target } => format!("to_target(target_id={target})"),
        Value::ForwardL2 { dmac, port } => format!("forward_l2(dmac={dmac}, port={port})"),
        Value::EncapIpip {
            outer_src,
            outer_dst,
        } => format!("encap_ipip(outer_src={outer_src}, outer_dst={outer_dst})"),
        Value::SetNexthop { dmac, smac, port } => {
            format!("set_nexthop(dmac={dmac}, smac={smac}, port={port})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvipa_core::config::Mac;
    use dvipa_core::entries::{ConnKey, Update};
    use p4rt::Schema;
    use p4rt::proto::p4::v1 as p4;
    use std::net::Ipv4Addr;

    fn schema() -> Schema {
        Schema::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
        ))
        .unwrap()
    }

    #[test]
    fn every_kind_of_entry_round_trips_through_p4runtime() {
        let s = schema();
        let m = Mac([2, 0, 0, 0, 0, 9]);
        let rows = [
            (
                Key::Dvipa {
                    addr: Ipv4Addr::new(203, 0, 113, 10),
                    proto: 6,
                    port: Some(60),
                },
                Value::Distribute {
                    service: 3,
                    method: 1,
                },
            ),
            (
                Key::Dvipa {
                    addr: Ipv4Addr::new(203, 0, 113, 10),
                    proto: 17,
                    port: None,
                },
                Value::Distribute {
                    service: 4,
                    method: 0,
                },
            ),
            (
                Key::Dpt {
                    service: 3,
                    slot: 255,
                },
                Value::ToTarget { target: 2 },
            ),
            (
                Key::Target { target: 2 },
                Value::ForwardL2 { dmac: m, port: 511 },
            ),
            (
                Key::Target { target: 3 },
                Value::EncapIpip {
                    outer_src: Ipv4Addr::new(10, 0, 0, 101),
                    outer_dst: Ipv4Addr::new(10, 0, 0, 3),
                },
            ),
            (
                Key::Route {
                    prefix: "0.0.0.0/0".parse().unwrap(),
                },
                Value::SetNexthop {
                    dmac: m,
                    smac: Mac([2, 0, 0, 0, 1, 1]),
                    port: 1,
                },
            ),
            (
                Key::Route {
                    prefix: "10.0.0.0/24".parse().unwrap(),
                },
                Value::SetNexthop {
                    dmac: m,
                    smac: m,
                    port: 2,
                },
            ),
            (
                Key::Crt(ConnKey::new(
                    Ipv4Addr::new(198, 51, 100, 7),
                    40000,
                    Ipv4Addr::new(203, 0, 113, 10),
                    60,
                    6,
                )),
                Value::ToTarget { target: 5 },
            ),
        ];
        for (k, v) in rows {
            let e = table_entry(&s, &k, &v, 1_000_000).unwrap();
            let back = from_decoded(&s.decode_table_entry(&e).unwrap()).unwrap();
            assert_eq!(back, (k, v));
        }
    }

    #[test]
    fn delete_carries_no_action_and_outcomes_map_codes() {
        let s = schema();
        let u = Update {
            kind: UpdateKind::Delete,
            key: Key::Dpt {
                service: 1,
                slot: 7,
            },
            value: Value::ToTarget { target: 1 },
        };
        let p = to_p4_update(&s, &u, 0).unwrap();
        let Some(p4::entity::Entity::TableEntry(e)) = p.entity.unwrap().entity else {
            panic!("not a table entry")
        };
        assert!(e.action.is_none());
        let err = |code| {
            Err(p4rt::UpdateError {
                index: 0,
                code,
                message: "m".into(),
                space: String::new(),
                app_code: 0,
            })
        };
        let ins = UpdateKind::Insert;
        assert_eq!(
            outcome(ins, &err(tonic::Code::AlreadyExists)),
            WriteOutcome::AlreadyExists
        );
        assert_eq!(
            outcome(ins, &err(tonic::Code::ResourceExhausted)),
            WriteOutcome::ResourceExhausted
        );
        assert!(matches!(
            outcome(ins, &err(tonic::Code::Internal)),
            WriteOutcome::Other(_)
        ));
        // bmv2's answer to an INSERT into a full table (seen on simple_switch_grpc).
        let bmv2 = Err(p4rt::UpdateError {
            index: 0,
            code: tonic::Code::Unknown,
            message: BMV2_ADD_FAILED.into(),
            space: BMV2_SPACE.into(),
            app_code: 0,
        });
        assert_eq!(outcome(ins, &bmv2), WriteOutcome::ResourceExhausted);
        assert_eq!(
            full_answer(ins, bmv2.as_ref().unwrap_err()),
            Some(FullAnswer::Bmv2)
        );
        // Not on a MODIFY, and not any UNKNOWN.
        assert!(matches!(
            outcome(UpdateKind::Modify, &bmv2),
            WriteOutcome::Other(_)
        ));
        assert!(matches!(
            outcome(ins, &err(tonic::Code::Unknown)),
            WriteOutcome::Other(_)
        ));
    }
}

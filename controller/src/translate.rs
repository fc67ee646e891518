//! Typed switch entries of the core (`dvipa_core::entries`) ↔ P4Runtime entities, by the names
//! of [`crate::p4names`]; digests and idle-timeout notifications → core inputs.

use crate::p4names as n;
use dvipa_core::config::{Mac, Prefix};
use dvipa_core::core::{DigestItem, WriteOutcome};
use dvipa_core::entries::{ConnKey, Key, Update, UpdateKind, Value};
use p4rt::proto::p4::v1 as p4;
use p4rt::{DecodedEntry, MatchValue, Schema, SchemaError};
use std::net::Ipv4Addr;

/// An entity the controller cannot map to or from its typed entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The schema refused a name or value.
    #[error("P4 schema: {0}")]
    Schema(String),
    /// An entry of a contract table that does not fit the contract's shape.
    #[error("unexpected {table} entry: {detail}")]
    Shape {
        /// Table.
        table: String,
        /// What is wrong.
        detail: String,
    },
}

impl From<SchemaError> for TranslateError {
    fn from(e: SchemaError) -> Self {
        TranslateError::Schema(e.to_string())
    }
}

fn mac(m: Mac) -> p4rt::MacAddr {
    p4rt::MacAddr(m.0)
}

/// The table entry (match + action) of a typed key and value.
pub fn table_entry(
    schema: &Schema,
    key: &Key,
    value: &Value,
    crt_idle_timeout_ns: i64,
) -> Result<p4::TableEntry, TranslateError> {
    let mut b = schema.table_entry(key.table());
    b = match key {
        Key::Dvipa { addr, proto, port } => {
            let b = b.exact(n::F_DST, *addr).exact(n::F_PROTO, *proto);
            match port {
                Some(p) => b.ternary(n::F_DPORT, *p, 0xffffu16),
                None => b,
            }
            .priority(key.priority())
        }
        Key::Dpt { service, slot } => b.exact(n::F_SERVICE, *service).exact(n::F_SLOT, *slot),
        Key::Target { target } => b.exact(n::F_TARGET, *target),
        Key::Route { prefix } => b.lpm(n::F_ROUTE_DST, prefix.addr, u32::from(prefix.len)),
        Key::Crt(c) => {
            let b = b
                .exact(n::F_SRC, c.src)
                .exact(n::F_DST, c.dst)
                .exact(n::F_PROTO, c.proto)
                .exact(n::F_SPORT, c.sport)
                .exact(n::F_DPORT, c.dport);
            if crt_idle_timeout_ns > 0 {
                b.idle_timeout_ns(crt_idle_timeout_ns)
            } else {
                b
            }
        }
    };
    b = match value {
        Value::Distribute { service, method } => b
            .action(n::A_DISTRIBUTE)
            .param(n::P_SERVICE_ID, *service)
            .param(n::P_METHOD, *method),
        Value::ToTarget { target } => b.action(n::A_TO_TARGET).param(n::P_TARGET_ID, *target),
        Value::ForwardL2 { dmac, port } => b
            .action(n::A_FORWARD_L2)
            .param(n::P_DMAC, mac(*dmac))
            .param(n::P_PORT, *port),
        Value::EncapIpip {
            outer_src,
            outer_dst,
        } => b
            .action(n::A_ENCAP_IPIP)
            .param(n::P_OUTER_SRC, *outer_src)
            .param(n::P_OUTER_DST, *outer_dst),
        Value::SetNexthop { dmac, smac, port } => b
            .action(n::A_SET_NEXTHOP)
            .param(n::P_DMAC, mac(*dmac))
            .param(n::P_SMAC, mac(*smac))
            .param(n::P_PORT, *port),
    };
    Ok(b.build()?)
}

/// A core update as a P4Runtime update (deletes carry only the match).
pub fn to_p4_update(
    schema: &Schema,
    u: &Update,
    crt_idle_timeout_ns: i64,
) -> Result<p4::Update, TranslateError> {
    let mut e = table_entry(schema, &u.key, &u.value, crt_idle_timeout_ns)?;
    Ok(match u.kind {
        UpdateKind::Insert => p4rt::insert(e),
        UpdateKind::Modify => p4rt::modify(e),
        UpdateKind::Delete => {
            e.action = None;
            e.idle_timeout_ns = 0;
            p4rt::delete(e)
        }
    })
}

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

fn shape(e: &DecodedEntry, detail: impl Into<String>) -> TranslateError {
    TranslateError::Shape {
        table: e.table.clone(),
        detail: detail.into(),
    }
}

fn u16_of(v: u128, e: &DecodedEntry, what: &str) -> Result<u16, TranslateError> {
    u16::try_from(v).map_err(|_| shape(e, format!("{what} {v} does not fit 16 bits")))
}

fn mac_of(a: &p4rt::DecodedAction, p: &str) -> Result<Mac, SchemaError> {
    let v = a.param_u128(p)?;
    let b = (v as u64).to_be_bytes();
    Ok(Mac([b[2], b[3], b[4], b[5], b[6], b[7]]))
}

/// The value reported to the core for an entry whose key is understood but whose action is
/// not (e.g. `NoAction` written by someone else): it never equals a desired value, so the
/// reconciler overwrites or deletes the entry.
pub fn foreign_value(k: &Key) -> Value {
    match k {
        Key::Dvipa { .. } => Value::Distribute {
            service: u16::MAX,
            method: u8::MAX,
        },
        Key::Dpt { .. } | Key::Crt(_) => Value::ToTarget { target: 0 },
        Key::Target { .. } => Value::ForwardL2 {
            dmac: Mac([0; 6]),
            port: 511,
        },
        Key::Route { .. } => Value::SetNexthop {
            dmac: Mac([0; 6]),
            smac: Mac([0; 6]),
            port: 511,
        },
    }
}

/// Like [`from_decoded`], but an entry whose action is not understood is returned with
/// [`foreign_value`] and `true`.
pub fn from_decoded_lenient(e: &DecodedEntry) -> Result<(Key, Value, bool), TranslateError> {
    match from_decoded(e) {
        Ok((k, v)) => Ok((k, v, false)),
        Err(err) => {
            let mut probe = e.clone();
            probe.action = Some(p4rt::DecodedAction {
                name: n::A_TO_TARGET.into(),
                params: vec![(n::P_TARGET_ID.into(), 16, vec![0])],
            });
            match from_decoded(&probe) {
                Ok((k, _)) => Ok((k, foreign_value(&k), true)),
                Err(_) => Err(err),
            }
        }
    }
}

/// A decoded contract-table entry as a typed key and value.
pub fn from_decoded(e: &DecodedEntry) -> Result<(Key, Value), TranslateError> {
    let key = match n::contract_table(&e.table) {
        n::T_DVIPA => {
            let port = match e.matches.iter().find(|m| m.0 == n::F_DPORT) {
                None => None,
                Some((_, w, MatchValue::Ternary { value, mask })) => {
                    let m = p4rt::codec::decode_u128(mask, *w).unwrap_or(0);
                    if m != 0xffff {
                        return Err(shape(
                            e,
                            format!("port mask {m:#x} is neither 0 nor 0xffff"),
                        ));
                    }
                    let v = p4rt::codec::decode_u128(value, *w).unwrap_or(0);
                    Some(u16_of(v, e, "port")?)
                }
                Some(other) => return Err(shape(e, format!("port match {other:?}"))),
            };
            Key::Dvipa {
                addr: e.exact_ipv4(n::F_DST)?,
                proto: e.exact_u128(n::F_PROTO)? as u8,
                port,
            }
        }
        n::T_DPT => Key::Dpt {
            service: u16_of(e.exact_u128(n::F_SERVICE)?, e, "service")?,
            slot: u16_of(e.exact_u128(n::F_SLOT)?, e, "slot")?,
        },
        n::T_TARGET => Key::Target {
            target: u16_of(e.exact_u128(n::F_TARGET)?, e, "target")?,
        },
        n::T_ROUTE => {
            let prefix = match e.matches.iter().find(|m| m.0 == n::F_ROUTE_DST) {
                None => Prefix {
                    addr: Ipv4Addr::UNSPECIFIED,
                    len: 0,
                },
                Some((_, w, MatchValue::Lpm { value, prefix_len })) => Prefix {
                    addr: p4rt::codec::decode_ipv4(value, *w)
                        .map_err(|x| shape(e, x.to_string()))?,
                    len: *prefix_len as u8,
                },
                Some(other) => return Err(shape(e, format!("route match {other:?}"))),
            };
            Key::Route { prefix }
        }
        n::T_CRT => Key::Crt(ConnKey {
            src: e.exact_u128(n::F_SRC)? as u32,
            dst: e.exact_u128(n::F_DST)? as u32,
            proto: e.exact_u128(n::F_PROTO)? as u8,
            sport: u16_of(e.exact_u128(n::F_SPORT)?, e, "sport")?,
            dport: u16_of(e.exact_u128(n::F_DPORT)?, e, "dport")?,
        }),
        other => {
            return Err(TranslateError::Shape {
                table: other.into(),
                detail: "not a contract table".into(),
            });
        }
    };
    let a = e
        .action
        .as_ref()
        .ok_or_else(|| shape(e, "entry without an action"))?;
    let value = match a.name.as_str() {
        n::A_DISTRIBUTE => Value::Distribute {
            service: u16_of(a.param_u128(n::P_SERVICE_ID)?, e, "service_id")?,
            method: a.param_u128(n::P_METHOD)? as u8,
        },
        n::A_TO_TARGET => Value::ToTarget {
            target: u16_of(a.param_u128(n::P_TARGET_ID)?, e, "target_id")?,
        },
        n::A_FORWARD_L2 => Value::ForwardL2 {
            dmac: mac_of(a, n::P_DMAC)?,
            port: a.param_u128(n::P_PORT)? as u16,
        },
        n::A_ENCAP_IPIP => Value::EncapIpip {
            outer_src: Ipv4Addr::from(a.param_u128(n::P_OUTER_SRC)? as u32),
            outer_dst: Ipv4Addr::from(a.param_u128(n::P_OUTER_DST)? as u32),
        },
        n::A_SET_NEXTHOP => Value::SetNexthop {
            dmac: mac_of(a, n::P_DMAC)?,
            smac: mac_of(a, n::P_SMAC)?,
            port: a.param_u128(n::P_PORT)? as u16,
        },
        other => return Err(shape(e, format!("action {other}"))),
    };
    Ok((key, value))
}

/// One `learn_t` digest message as a core digest item.
pub fn digest_item(r: &p4rt::DigestRecord) -> Result<DigestItem, TranslateError> {
    let g = |m: &str| r.u128(m);
    Ok(DigestItem {
        conn: ConnKey {
            src: g("src_addr")? as u32,
            dst: g("dst_addr")? as u32,
            proto: g("protocol")? as u8,
            sport: g("src_port")? as u16,
            dport: g("dst_port")? as u16,
        },
        service: g("service_id")? as u16,
        target: g("target_id")? as u16,
        not_syn: g("flags")? & n::FLAG_NOT_SYN != 0,
    })
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

//! The contract's actions with their parameters (`IngressImpl.*` and `NoAction`).

/// `distribute(service_id, method)` (table `dvipa`).
pub const DISTRIBUTE: &str = "IngressImpl.distribute";
/// `to_target(target_id)` (tables `crt`, `dpt`).
pub const TO_TARGET: &str = "IngressImpl.to_target";
/// `forward_l2(dmac, port)` (table `target`).
pub const FORWARD_L2: &str = "IngressImpl.forward_l2";
/// `encap_ipip(outer_src, outer_dst)` (table `target`).
pub const ENCAP_IPIP: &str = "IngressImpl.encap_ipip";
/// `set_nexthop(dmac, smac, port)` (table `ipv4_route`).
pub const SET_NEXTHOP: &str = "IngressImpl.set_nexthop";
/// `drop()`.
pub const DROP: &str = "IngressImpl.drop";
/// `NoAction` (core library).
pub const NO_ACTION: &str = "NoAction";

/// Param of `distribute`.
pub const P_SERVICE_ID: &str = "service_id";
/// Param of `distribute`: 1 = round robin over the slots, 0 = slot by hash.
pub const P_METHOD: &str = "method";
/// Param of `to_target`.
pub const P_TARGET_ID: &str = "target_id";
/// Param of `forward_l2`, `set_nexthop`.
pub const P_DMAC: &str = "dmac";
/// Param of `set_nexthop`.
pub const P_SMAC: &str = "smac";
/// Param of `forward_l2`, `set_nexthop`.
pub const P_PORT: &str = "port";
/// Param of `encap_ipip`.
pub const P_OUTER_SRC: &str = "outer_src";
/// Param of `encap_ipip`.
pub const P_OUTER_DST: &str = "outer_dst";

/// An action and its parameters (name, bits), in P4Info order.
pub type ActionSpec = (&'static str, &'static [(&'static str, i32)]);

/// Every action of the contract.
pub const SPECS: [ActionSpec; 7] = [
    (DISTRIBUTE, &[(P_SERVICE_ID, 16), (P_METHOD, 8)]),
    (TO_TARGET, &[(P_TARGET_ID, 16)]),
    (FORWARD_L2, &[(P_DMAC, 48), (P_PORT, 9)]),
    (ENCAP_IPIP, &[(P_OUTER_SRC, 32), (P_OUTER_DST, 32)]),
    (SET_NEXTHOP, &[(P_DMAC, 48), (P_SMAC, 48), (P_PORT, 9)]),
    (DROP, &[]),
    (NO_ACTION, &[]),
];

/// The action names.
pub const NAMES: [&str; 7] = [
    DISTRIBUTE,
    TO_TARGET,
    FORWARD_L2,
    ENCAP_IPIP,
    SET_NEXTHOP,
    DROP,
    NO_ACTION,
];

#[cfg(feature = "entries")]
pub(crate) use enc::{decode_value, encode_value};

#[cfg(feature = "entries")]
mod enc {
    use super::*;
    use crate::entries::{DecodeError, shape, u16_of};
    use dvipa_core::config::Mac;
    use dvipa_core::entries::Value;
    use p4rt::{DecodedAction, DecodedEntry, SchemaError, TableEntryBuilder};
    use std::net::Ipv4Addr;

    fn mac(m: Mac) -> p4rt::MacAddr {
        p4rt::MacAddr(m.0)
    }

    fn mac_of(a: &DecodedAction, p: &str) -> Result<Mac, SchemaError> {
        let v = a.param_u128(p)?;
        let b = (v as u64).to_be_bytes();
        Ok(Mac([b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    pub(crate) fn encode_value<'s>(
        b: TableEntryBuilder<'s>,
        value: &Value,
    ) -> TableEntryBuilder<'s> {
        match value {
            Value::Distribute { service, method } => b
                .action(DISTRIBUTE)
                .param(P_SERVICE_ID, *service)
                .param(P_METHOD, *method),
            Value::ToTarget { target } => b.action(TO_TARGET).param(P_TARGET_ID, *target),
            Value::ForwardL2 { dmac, port } => b
                .action(FORWARD_L2)
                .param(P_DMAC, mac(*dmac))
                .param(P_PORT, *port),
            Value::EncapIpip {
                outer_src,
                outer_dst,
            } => b
                .action(ENCAP_IPIP)
                .param(P_OUTER_SRC, *outer_src)
                .param(P_OUTER_DST, *outer_dst),
            Value::SetNexthop { dmac, smac, port } => b
                .action(SET_NEXTHOP)
                .param(P_DMAC, mac(*dmac))
                .param(P_SMAC, mac(*smac))
                .param(P_PORT, *port),
        }
    }

    /// The value of a decoded entry's action (`NoAction`, `drop` or an unknown action is an
    /// error: the core has no value for it).
    pub(crate) fn decode_value(e: &DecodedEntry) -> Result<Value, DecodeError> {
        let a = e
            .action
            .as_ref()
            .ok_or_else(|| shape(e, "entry without an action"))?;
        Ok(
            match crate::resolve_name(&a.name, &NAMES).unwrap_or(a.name.as_str()) {
                DISTRIBUTE => Value::Distribute {
                    service: u16_of(a.param_u128(P_SERVICE_ID)?, e, "service_id")?,
                    method: a.param_u128(P_METHOD)? as u8,
                },
                TO_TARGET => Value::ToTarget {
                    target: u16_of(a.param_u128(P_TARGET_ID)?, e, "target_id")?,
                },
                FORWARD_L2 => Value::ForwardL2 {
                    dmac: mac_of(a, P_DMAC)?,
                    port: a.param_u128(P_PORT)? as u16,
                },
                ENCAP_IPIP => Value::EncapIpip {
                    outer_src: Ipv4Addr::from(a.param_u128(P_OUTER_SRC)? as u32),
                    outer_dst: Ipv4Addr::from(a.param_u128(P_OUTER_DST)? as u32),
                },
                SET_NEXTHOP => Value::SetNexthop {
                    dmac: mac_of(a, P_DMAC)?,
                    smac: mac_of(a, P_SMAC)?,
                    port: a.param_u128(P_PORT)? as u16,
                },
                other => return Err(shape(e, format!("action {other}"))),
            },
        )
    }
}

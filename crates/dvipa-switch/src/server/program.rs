//! The dvipa program as seen through a P4Info: every object of the contract resolved by name to
//! the ids this P4Info uses, and conversion between P4Runtime entities and the typed tables.

use dvipa_contract::{self as contract, TableSpec, actions};
use p4rt::Schema;
use p4rt::codec::{decode_u128, encode_u128};
use p4rt::proto::p4::config::v1 as cfg;
use p4rt::proto::p4::v1 as p4;
use p4rt::schema::{id_of, match_type};

use crate::tables::{
    CrtKey, DptKey, DvipaAction, DvipaKey, EntryMeta, RouteAction, RouteKey, SelectAction,
    TargetAction,
};

/// Errors of one entity (each maps to a gRPC / p4.v1.Error code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityError {
    /// Malformed request (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// Key not present (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// Key present (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// Table full (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    Exhausted(String),
    /// Unsupported feature (UNIMPLEMENTED).
    #[error("{0}")]
    Unimplemented(String),
}

impl EntityError {
    /// The google.rpc canonical code.
    pub fn code(&self) -> tonic::Code {
        match self {
            EntityError::Invalid(_) => tonic::Code::InvalidArgument,
            EntityError::NotFound(_) => tonic::Code::NotFound,
            EntityError::AlreadyExists(_) => tonic::Code::AlreadyExists,
            EntityError::Exhausted(_) => tonic::Code::ResourceExhausted,
            EntityError::Unimplemented(_) => tonic::Code::Unimplemented,
        }
    }
}

impl From<crate::tables::TableError> for EntityError {
    fn from(e: crate::tables::TableError) -> Self {
        use crate::tables::TableError as T;
        let m = e.to_string();
        match e {
            T::AlreadyExists { .. } => EntityError::AlreadyExists(m),
            T::NotFound { .. } => EntityError::NotFound(m),
            T::Full { .. } => EntityError::Exhausted(m),
            T::InvalidKey { .. } => EntityError::Invalid(m),
        }
    }
}

type R<T> = Result<T, EntityError>;

fn inval<T>(m: impl Into<String>) -> R<T> {
    Err(EntityError::Invalid(m.into()))
}

/// Which of the five tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// `IngressImpl.dvipa`.
    Dvipa,
    /// `IngressImpl.crt`.
    Crt,
    /// `IngressImpl.dpt`.
    Dpt,
    /// `IngressImpl.target`.
    Target,
    /// `IngressImpl.ipv4_route`.
    Route,
}

/// A resolved match field.
#[derive(Debug, Clone)]
pub struct Field {
    /// Id in this P4Info.
    pub id: u32,
    /// P4Info name (`hdr.ipv4.dstAddr`), for messages.
    pub name: &'static str,
    /// Bit width.
    pub bits: u32,
}

impl Field {
    /// `match field 3 (hdr.ipv4.dstAddr)`: by id, as the client sent it, and by name.
    fn describe(&self) -> String {
        format!("match field {} ({})", self.id, self.name)
    }
}

/// A resolved action with its params in contract order.
#[derive(Debug, Clone)]
pub struct ActionIds {
    /// Action id.
    pub id: u32,
    /// (param id, bit width) in contract order.
    pub params: Vec<(u32, u32)>,
}

/// A resolved table.
#[derive(Debug, Clone)]
pub struct TableIds {
    /// Table id.
    pub id: u32,
    /// Contract name.
    pub name: &'static str,
    /// Match fields in contract order.
    pub fields: Vec<Field>,
    /// Allowed actions: (action id, scope).
    pub actions: Vec<(u32, cfg::action_ref::Scope)>,
    /// Direct counter id (0 = none).
    pub direct_counter: u32,
}

/// A typed key of one of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// dvipa.
    Dvipa(DvipaKey),
    /// crt.
    Crt(CrtKey),
    /// dpt.
    Dpt(DptKey),
    /// target.
    Target(u16),
    /// ipv4_route.
    Route(RouteKey),
}

/// A typed action of one of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// dvipa.
    Dvipa(DvipaAction),
    /// crt / dpt.
    Select(SelectAction),
    /// target.
    Target(TargetAction),
    /// ipv4_route.
    Route(RouteAction),
}

/// The dvipa program resolved against a P4Info.
#[derive(Debug, Clone)]
pub struct Program {
    /// The schema.
    pub schema: Schema,
    /// dvipa, crt, dpt, target, ipv4_route.
    pub dvipa: TableIds,
    /// crt.
    pub crt: TableIds,
    /// dpt.
    pub dpt: TableIds,
    /// target.
    pub target: TableIds,
    /// ipv4_route.
    pub route: TableIds,
    /// `IngressImpl.distribute`.
    pub distribute: ActionIds,
    /// `IngressImpl.to_target`.
    pub to_target: ActionIds,
    /// `IngressImpl.forward_l2`.
    pub forward_l2: ActionIds,
    /// `IngressImpl.encap_ipip`.
    pub encap_ipip: ActionIds,
    /// `IngressImpl.set_nexthop`.
    pub set_nexthop: ActionIds,
    /// `IngressImpl.drop`.
    pub drop: u32,
    /// `NoAction`.
    pub no_action: u32,
    /// `IngressImpl.service_counter`.
    pub service_counter: u32,
    /// `IngressImpl.rr_state`.
    pub rr_state: u32,
    /// `IngressImpl.syn_pending`.
    pub syn_pending: u32,
    /// Digest `learn_t`.
    pub learn: u32,
}

const NOT_DVIPA: &str = "P4Info is not the dvipa program (docs/pipeline-contract.md)";

/// Most match fields of a contract table (decoded keys are collected in an array of this size).
const MAX_FIELDS: usize = 8;
/// Most parameters of a contract action.
const MAX_PARAMS: usize = 4;

/// The ids of a contract table (its shape was checked by [`dvipa_contract::check`]).
fn resolve_table(s: &Schema, spec: &TableSpec) -> Result<TableIds, String> {
    let (name, fields, direct_counter) = (spec.name, spec.fields, spec.direct_counter);
    let t = s
        .table(name)
        .map_err(|e| format!("{NOT_DVIPA}: table {name}: {e}"))?;
    assert!(
        fields.len() <= MAX_FIELDS,
        "contract table {name}: too many fields"
    );
    if t.match_fields.len() != fields.len() {
        return Err(format!(
            "{NOT_DVIPA}: table {name} has {} match fields, the contract has {}",
            t.match_fields.len(),
            fields.len()
        ));
    }
    let mut out = Vec::new();
    for (fname, kind, bits) in fields {
        let f = s
            .match_field(t, fname)
            .map_err(|e| format!("{NOT_DVIPA}: {e}"))?;
        if match_type(f) != Some(*kind) || f.bitwidth != *bits {
            return Err(format!(
                "{NOT_DVIPA}: table {name} field {fname} must be {kind:?} bit<{bits}>, P4Info has {:?} bit<{}>",
                match_type(f),
                f.bitwidth
            ));
        }
        out.push(Field {
            id: f.id,
            name: fname,
            bits: *bits as u32,
        });
    }
    let dc = match direct_counter {
        None => 0,
        Some(dn) => {
            let c = s
                .direct_counter(dn)
                .map_err(|e| format!("{NOT_DVIPA}: {e}"))?;
            let id = id_of(&c.preamble);
            if !t.direct_resource_ids.contains(&id) {
                return Err(format!("{NOT_DVIPA}: {dn} is not attached to table {name}"));
            }
            id
        }
    };
    Ok(TableIds {
        id: id_of(&t.preamble),
        name,
        fields: out,
        actions: t
            .action_refs
            .iter()
            .map(|a| {
                (
                    a.id,
                    cfg::action_ref::Scope::try_from(a.scope)
                        .unwrap_or(cfg::action_ref::Scope::TableAndDefault),
                )
            })
            .collect(),
        direct_counter: dc,
    })
}

/// The ids of a contract action.
fn resolve_action(s: &Schema, name: &str) -> Result<ActionIds, String> {
    let params = actions::SPECS
        .iter()
        .find(|a| a.0 == name)
        .map_or(&[][..], |a| a.1);
    let a = s
        .action(name)
        .map_err(|e| format!("{NOT_DVIPA}: action {name}: {e}"))?;
    assert!(
        params.len() <= MAX_PARAMS,
        "contract action {name}: too many params"
    );
    if a.params.len() != params.len() {
        return Err(format!(
            "{NOT_DVIPA}: action {name} has {} params, the contract has {}",
            a.params.len(),
            params.len()
        ));
    }
    let mut out = Vec::new();
    for (pn, bits) in params {
        let p = s
            .action_param(a, pn)
            .map_err(|e| format!("{NOT_DVIPA}: {e}"))?;
        if p.bitwidth != *bits {
            return Err(format!(
                "{NOT_DVIPA}: action {name} param {pn} must be bit<{bits}>, P4Info has bit<{}>",
                p.bitwidth
            ));
        }
        out.push((p.id, *bits as u32));
    }
    Ok(ActionIds {
        id: id_of(&a.preamble),
        params: out,
    })
}

impl Program {
    /// Resolves the contract against a P4Info; any missing or different object is an error naming it.
    pub fn resolve(info: cfg::P4Info) -> Result<Self, String> {
        let s = Schema::from_p4info(info).map_err(|e| format!("invalid P4Info: {e}"))?;
        // Every mismatch at once (the same check the controller runs at start-up).
        dvipa_contract::check(&s).map_err(|e| format!("{NOT_DVIPA}: {e}"))?;
        let dvipa = resolve_table(&s, &contract::dvipa::SPEC)?;
        let crt = resolve_table(&s, &contract::crt::SPEC)?;
        let dpt = resolve_table(&s, &contract::dpt::SPEC)?;
        let target = resolve_table(&s, &contract::target::SPEC)?;
        let route = resolve_table(&s, &contract::route::SPEC)?;
        let distribute = resolve_action(&s, actions::DISTRIBUTE)?;
        let to_target = resolve_action(&s, actions::TO_TARGET)?;
        let forward_l2 = resolve_action(&s, actions::FORWARD_L2)?;
        let encap_ipip = resolve_action(&s, actions::ENCAP_IPIP)?;
        let set_nexthop = resolve_action(&s, actions::SET_NEXTHOP)?;
        let drop = resolve_action(&s, actions::DROP)?.id;
        let no_action = resolve_action(&s, actions::NO_ACTION)?.id;
        let service_counter = id_of(
            &s.counter(contract::counters::SERVICE)
                .map_err(|e| format!("{NOT_DVIPA}: {e}"))?
                .preamble,
        );
        let rr_state = id_of(
            &s.register(contract::counters::RR_STATE)
                .map_err(|e| format!("{NOT_DVIPA}: {e}"))?
                .preamble,
        );
        let syn_pending = id_of(
            &s.register(contract::counters::SYN_PENDING)
                .map_err(|e| format!("{NOT_DVIPA}: {e}"))?
                .preamble,
        );
        let layout = s
            .digest_layout(contract::learn::NAME)
            .map_err(|e| format!("{NOT_DVIPA}: {e}"))?;
        let learn = layout.id;
        Ok(Program {
            schema: s,
            dvipa,
            crt,
            dpt,
            target,
            route,
            distribute,
            to_target,
            forward_l2,
            encap_ipip,
            set_nexthop,
            drop,
            no_action,
            service_counter,
            rr_state,
            syn_pending,
            learn,
        })
    }

    /// Table by id.
    pub fn table(&self, id: u32) -> Option<(TableKind, &TableIds)> {
        [
            (TableKind::Dvipa, &self.dvipa),
            (TableKind::Crt, &self.crt),
            (TableKind::Dpt, &self.dpt),
            (TableKind::Target, &self.target),
            (TableKind::Route, &self.route),
        ]
        .into_iter()
        .find(|(_, t)| t.id == id)
    }

    /// Ids of the tables in a fixed order.
    pub fn table_ids(&self) -> [u32; 5] {
        [
            self.dvipa.id,
            self.crt.id,
            self.dpt.id,
            self.target.id,
            self.route.id,
        ]
    }

    /// Table ids with a direct counter.
    pub fn table_of_direct_counter(&self, dc: u32) -> Option<u32> {
        [&self.crt, &self.target]
            .into_iter()
            .find(|t| t.direct_counter == dc)
            .map(|t| t.id)
    }

    /// Decodes the match of an entry (INVALID_ARGUMENT on anything malformed).
    pub fn decode_key(&self, kind: TableKind, t: &TableIds, e: &p4::TableEntry) -> R<Key> {
        use p4::field_match::FieldMatchType as M;
        // On the stack: this runs once per update of every Write (the program's tables have at
        // most 5 match fields, checked when the program is loaded).
        let mut vals: [Option<&M>; MAX_FIELDS] = [None; MAX_FIELDS];
        for fm in &e.r#match {
            let Some(i) = t.fields.iter().position(|f| f.id == fm.field_id) else {
                return inval(format!(
                    "{}: unknown match field id {}",
                    t.name, fm.field_id
                ));
            };
            if vals[i].is_some() {
                return inval(format!(
                    "{}: {} given twice",
                    t.name,
                    t.fields[i].describe()
                ));
            }
            match &fm.field_match_type {
                Some(m) => vals[i] = Some(m),
                None => {
                    return inval(format!(
                        "{}: {} has no value",
                        t.name,
                        t.fields[i].describe()
                    ));
                }
            }
        }
        let exact = |i: usize| -> R<u128> {
            match vals[i] {
                Some(M::Exact(x)) => decode_u128(&x.value, t.fields[i].bits).map_err(|err| {
                    EntityError::Invalid(format!("{}: {}: {err}", t.name, t.fields[i].describe()))
                }),
                Some(_) => inval(format!(
                    "{}: {} must be exact",
                    t.name,
                    t.fields[i].describe()
                )),
                None => inval(format!(
                    "{}: exact {} is missing",
                    t.name,
                    t.fields[i].describe()
                )),
            }
        };
        let ternary_or_lpm_prio = matches!(kind, TableKind::Dvipa);
        if ternary_or_lpm_prio {
            if e.priority <= 0 && !e.is_default_action {
                return inval(format!(
                    "{}: ternary table entries need a priority > 0",
                    t.name
                ));
            }
        } else if e.priority != 0 {
            return inval(format!(
                "{}: priority must be 0 for a table without ternary fields",
                t.name
            ));
        }
        Ok(match kind {
            TableKind::Dvipa => {
                let (dport, dport_mask) = match vals[2] {
                    None => (0, 0),
                    Some(M::Ternary(x)) => {
                        let v = decode_u128(&x.value, 16).map_err(|err| {
                            EntityError::Invalid(format!("{}: meta.l4_dport value: {err}", t.name))
                        })?;
                        let m = decode_u128(&x.mask, 16).map_err(|err| {
                            EntityError::Invalid(format!("{}: meta.l4_dport mask: {err}", t.name))
                        })?;
                        if m == 0 {
                            return inval(format!(
                                "{}: a ternary match with mask 0 must be omitted (don't care)",
                                t.name
                            ));
                        }
                        (v as u16, m as u16)
                    }
                    Some(_) => return inval(format!("{}: meta.l4_dport must be ternary", t.name)),
                };
                Key::Dvipa(DvipaKey {
                    dst: exact(0)? as u32,
                    proto: exact(1)? as u8,
                    dport,
                    dport_mask,
                    priority: e.priority,
                })
            }
            TableKind::Crt => Key::Crt(CrtKey {
                src: exact(0)? as u32,
                dst: exact(1)? as u32,
                proto: exact(2)? as u8,
                sport: exact(3)? as u16,
                dport: exact(4)? as u16,
            }),
            TableKind::Dpt => Key::Dpt(DptKey {
                service_id: exact(0)? as u16,
                slot: exact(1)? as u16,
            }),
            TableKind::Target => Key::Target(exact(0)? as u16),
            TableKind::Route => match vals[0] {
                None => Key::Route(RouteKey { prefix: 0, len: 0 }),
                Some(M::Lpm(x)) => {
                    if x.prefix_len <= 0 || x.prefix_len > 32 {
                        return inval(format!(
                            "{}: prefix_len {} out of 1..=32 (a /0 match must be omitted)",
                            t.name, x.prefix_len
                        ));
                    }
                    let v = decode_u128(&x.value, 32).map_err(|err| {
                        EntityError::Invalid(format!("{}: meta.route_dst: {err}", t.name))
                    })?;
                    Key::Route(RouteKey {
                        prefix: v as u32,
                        len: x.prefix_len as u8,
                    })
                }
                Some(_) => return inval(format!("{}: meta.route_dst must be lpm", t.name)),
            },
        })
    }

    fn params(&self, a: &ActionIds, act: &p4::Action, name: &str) -> R<[u128; MAX_PARAMS]> {
        if act.params.len() != a.params.len() {
            return inval(format!(
                "action {name}: {} params given, it takes {}",
                act.params.len(),
                a.params.len()
            ));
        }
        let mut out: [Option<u128>; MAX_PARAMS] = [None; MAX_PARAMS];
        for p in &act.params {
            let Some(i) = a.params.iter().position(|(id, _)| *id == p.param_id) else {
                return inval(format!("action {name}: unknown param id {}", p.param_id));
            };
            if out[i].is_some() {
                return inval(format!(
                    "action {name}: param id {} given twice",
                    p.param_id
                ));
            }
            out[i] = Some(decode_u128(&p.value, a.params[i].1).map_err(|e| {
                EntityError::Invalid(format!("action {name} param {}: {e}", p.param_id))
            })?);
        }
        Ok(out.map(|v| v.unwrap_or(0)))
    }

    /// Decodes the action of an entry (or default entry) of table `t`.
    pub fn decode_action(
        &self,
        kind: TableKind,
        t: &TableIds,
        ta: Option<&p4::TableAction>,
        default: bool,
    ) -> R<Act> {
        use cfg::action_ref::Scope;
        let act = match ta.and_then(|a| a.r#type.as_ref()) {
            Some(p4::table_action::Type::Action(a)) => a,
            Some(_) => {
                return Err(EntityError::Unimplemented(format!(
                    "{}: action profiles are not used by this program",
                    t.name
                )));
            }
            None => return inval(format!("{}: entry has no action", t.name)),
        };
        let Some((_, scope)) = t.actions.iter().find(|(id, _)| *id == act.action_id) else {
            return inval(format!(
                "{}: action id {} is not an action of this table",
                t.name, act.action_id
            ));
        };
        if !default && *scope == Scope::DefaultOnly {
            return inval(format!(
                "{}: action id {} is @defaultonly",
                t.name, act.action_id
            ));
        }
        if default && *scope == Scope::TableOnly {
            return inval(format!(
                "{}: action id {} is @tableonly",
                t.name, act.action_id
            ));
        }
        let id = act.action_id;
        let mac = |v: u128| -> [u8; 6] {
            let b = v.to_be_bytes();
            b[10..16].try_into().unwrap_or([0; 6])
        };
        Ok(match kind {
            TableKind::Dvipa => {
                if id == self.distribute.id {
                    let p = self.params(&self.distribute, act, "distribute")?;
                    Act::Dvipa(DvipaAction::Distribute {
                        service_id: p[0] as u16,
                        method: p[1] as u8,
                    })
                } else {
                    self.params(&ActionIds { id, params: vec![] }, act, "NoAction")?;
                    Act::Dvipa(DvipaAction::NoAction)
                }
            }
            TableKind::Crt | TableKind::Dpt => {
                if id == self.to_target.id {
                    let p = self.params(&self.to_target, act, "to_target")?;
                    Act::Select(SelectAction::ToTarget(p[0] as u16))
                } else {
                    self.params(&ActionIds { id, params: vec![] }, act, "NoAction")?;
                    Act::Select(SelectAction::NoAction)
                }
            }
            TableKind::Target => {
                if id == self.forward_l2.id {
                    let p = self.params(&self.forward_l2, act, "forward_l2")?;
                    Act::Target(TargetAction::ForwardL2 {
                        dmac: mac(p[0]),
                        port: p[1] as u16,
                    })
                } else if id == self.encap_ipip.id {
                    let p = self.params(&self.encap_ipip, act, "encap_ipip")?;
                    Act::Target(TargetAction::EncapIpip {
                        outer_src: p[0] as u32,
                        outer_dst: p[1] as u32,
                    })
                } else {
                    self.params(&ActionIds { id, params: vec![] }, act, "drop")?;
                    Act::Target(TargetAction::Drop)
                }
            }
            TableKind::Route => {
                if id == self.set_nexthop.id {
                    let p = self.params(&self.set_nexthop, act, "set_nexthop")?;
                    Act::Route(RouteAction::SetNexthop {
                        dmac: mac(p[0]),
                        smac: mac(p[1]),
                        port: p[2] as u16,
                    })
                } else {
                    self.params(&ActionIds { id, params: vec![] }, act, "drop")?;
                    Act::Route(RouteAction::Drop)
                }
            }
        })
    }

    fn enc(v: u128, bits: u32) -> Vec<u8> {
        encode_u128(v, bits).unwrap_or_else(|_| vec![0])
    }

    /// Encodes a key as match fields (and priority).
    pub fn encode_key(&self, t: &TableIds, key: &Key, e: &mut p4::TableEntry) {
        use p4::field_match::{Exact, FieldMatchType as M, Lpm, Ternary};
        let ex = |i: usize, v: u128| p4::FieldMatch {
            field_id: t.fields[i].id,
            field_match_type: Some(M::Exact(Exact {
                value: Self::enc(v, t.fields[i].bits),
            })),
        };
        e.table_id = t.id;
        e.r#match = match key {
            Key::Dvipa(k) => {
                e.priority = k.priority;
                let mut v = vec![ex(0, k.dst.into()), ex(1, k.proto.into())];
                if k.dport_mask != 0 {
                    v.push(p4::FieldMatch {
                        field_id: t.fields[2].id,
                        field_match_type: Some(M::Ternary(Ternary {
                            value: Self::enc(k.dport.into(), 16),
                            mask: Self::enc(k.dport_mask.into(), 16),
                        })),
                    });
                }
                v
            }
            Key::Crt(k) => vec![
                ex(0, k.src.into()),
                ex(1, k.dst.into()),
                ex(2, k.proto.into()),
                ex(3, k.sport.into()),
                ex(4, k.dport.into()),
            ],
            Key::Dpt(k) => vec![ex(0, k.service_id.into()), ex(1, k.slot.into())],
            Key::Target(k) => vec![ex(0, (*k).into())],
            Key::Route(k) => {
                if k.len == 0 {
                    vec![]
                } else {
                    vec![p4::FieldMatch {
                        field_id: t.fields[0].id,
                        field_match_type: Some(M::Lpm(Lpm {
                            value: Self::enc(k.prefix.into(), 32),
                            prefix_len: k.len.into(),
                        })),
                    }]
                }
            }
        };
    }

    /// Encodes an action.
    pub fn encode_action(&self, a: &Act) -> p4::TableAction {
        let mk = |ids: &ActionIds, vals: &[u128]| p4::Action {
            action_id: ids.id,
            params: ids
                .params
                .iter()
                .zip(vals)
                .map(|((pid, bits), v)| p4::action::Param {
                    param_id: *pid,
                    value: Self::enc(*v, *bits),
                })
                .collect(),
        };
        let bare = |id: u32| p4::Action {
            action_id: id,
            params: vec![],
        };
        let mac = |m: &[u8; 6]| {
            let mut b = [0u8; 16];
            b[10..].copy_from_slice(m);
            u128::from_be_bytes(b)
        };
        let action = match a {
            Act::Dvipa(DvipaAction::Distribute { service_id, method }) => {
                mk(&self.distribute, &[(*service_id).into(), (*method).into()])
            }
            Act::Dvipa(DvipaAction::NoAction) | Act::Select(SelectAction::NoAction) => {
                bare(self.no_action)
            }
            Act::Select(SelectAction::ToTarget(t)) => mk(&self.to_target, &[(*t).into()]),
            Act::Target(TargetAction::ForwardL2 { dmac, port }) => {
                mk(&self.forward_l2, &[mac(dmac), (*port).into()])
            }
            Act::Target(TargetAction::EncapIpip {
                outer_src,
                outer_dst,
            }) => mk(
                &self.encap_ipip,
                &[(*outer_src).into(), (*outer_dst).into()],
            ),
            Act::Target(TargetAction::Drop) | Act::Route(RouteAction::Drop) => bare(self.drop),
            Act::Route(RouteAction::SetNexthop { dmac, smac, port }) => {
                mk(&self.set_nexthop, &[mac(dmac), mac(smac), (*port).into()])
            }
        };
        p4::TableAction {
            r#type: Some(p4::table_action::Type::Action(action)),
        }
    }

    /// A full TableEntry for reads and notifications.
    #[allow(deprecated)] // controller_metadata is echoed back as stored, like PI does
    pub fn entry(&self, t: &TableIds, key: &Key, act: &Act, meta: &EntryMeta) -> p4::TableEntry {
        let mut e = p4::TableEntry {
            controller_metadata: meta.controller_metadata,
            metadata: meta.metadata.clone(),
            idle_timeout_ns: meta.idle_timeout_ns,
            ..Default::default()
        };
        self.encode_key(t, key, &mut e);
        e.action = Some(self.encode_action(act));
        e
    }

    /// Encodes a digest as `P4Data.struct`.
    pub fn encode_learn(l: &crate::Learn) -> p4::P4Data {
        let b = |v: u128, bits: u32| p4::P4Data {
            data: Some(p4::p4_data::Data::Bitstring(Self::enc(v, bits))),
        };
        p4::P4Data {
            data: Some(p4::p4_data::Data::Struct(p4::P4StructLike {
                members: vec![
                    b(l.src_addr.into(), 32),
                    b(l.dst_addr.into(), 32),
                    b(l.protocol.into(), 8),
                    b(l.src_port.into(), 16),
                    b(l.dst_port.into(), 16),
                    b(l.service_id.into(), 16),
                    b(l.target_id.into(), 16),
                    b(l.flags.into(), 8),
                ],
            })),
        }
    }
}

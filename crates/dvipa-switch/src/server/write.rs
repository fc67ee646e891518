//! Write: one P4Runtime update applied to the typed tables, with a `p4.v1.Error` per update.

use super::*;

impl SwitchServer {
    pub(super) fn write_update(&self, prog: &Program, u: &p4::Update) -> Result<(), EntityError> {
        use p4::entity::Entity as E;
        use p4::update::Type as U;
        let op = U::try_from(u.r#type).unwrap_or(U::Unspecified);
        if op == U::Unspecified {
            return Err(EntityError::Invalid("update type UNSPECIFIED".into()));
        }
        let Some(ent) = u.entity.as_ref().and_then(|e| e.entity.as_ref()) else {
            return Err(EntityError::Invalid("update without entity".into()));
        };
        let p = &self.inner.pipeline;
        match ent {
            E::TableEntry(te) => self.write_table(prog, op, te),
            E::DigestEntry(d) => {
                if d.digest_id != prog.learn {
                    return Err(EntityError::NotFound(format!(
                        "unknown digest id {}",
                        d.digest_id
                    )));
                }
                let mut st = self.inner.state.lock();
                let cfg = d.config.unwrap_or_default();
                let cfg = DigestConfig {
                    max_timeout_ns: cfg.max_timeout_ns,
                    max_list_size: cfg.max_list_size,
                    ack_timeout_ns: cfg.ack_timeout_ns,
                };
                if cfg.max_timeout_ns < 0 || cfg.max_list_size < 0 || cfg.ack_timeout_ns < 0 {
                    return Err(EntityError::Invalid(
                        "digest config values must not be negative".into(),
                    ));
                }
                match (op, st.digest.is_some()) {
                    (U::Insert, true) => {
                        return Err(EntityError::AlreadyExists(
                            "digest learn_t already configured".into(),
                        ));
                    }
                    (U::Modify, false) | (U::Delete, false) => {
                        return Err(EntityError::NotFound(
                            "digest learn_t is not configured".into(),
                        ));
                    }
                    (U::Delete, true) => st.digest = None,
                    _ => st.digest = Some(cfg),
                }
                Ok(())
            }
            E::CounterEntry(c) => {
                if op != U::Modify {
                    return Err(EntityError::Invalid(
                        "counter entries can only be modified".into(),
                    ));
                }
                if c.counter_id != prog.service_counter {
                    return Err(EntityError::NotFound(format!(
                        "unknown counter id {}",
                        c.counter_id
                    )));
                }
                let d = c.data.unwrap_or_default();
                match &c.index {
                    None => p
                        .service_counter
                        .iter()
                        .for_each(|x| x.set(d.packet_count as u64, d.byte_count as u64)),
                    Some(i) => cell(&p.service_counter, i.index)?
                        .set(d.packet_count as u64, d.byte_count as u64),
                }
                Ok(())
            }
            E::DirectCounterEntry(dc) => {
                if op != U::Modify {
                    return Err(EntityError::Invalid(
                        "direct counter entries can only be modified".into(),
                    ));
                }
                let te = dc.table_entry.as_ref().ok_or_else(|| {
                    EntityError::Invalid("direct counter entry without table entry".into())
                })?;
                let (kind, t) = prog.table(te.table_id).ok_or_else(|| {
                    EntityError::NotFound(format!("unknown table id {}", te.table_id))
                })?;
                if t.direct_counter == 0 {
                    return Err(EntityError::Invalid(format!(
                        "{} has no direct counter",
                        t.name
                    )));
                }
                let key = prog.decode_key(kind, t, te)?;
                let d = dc.data.unwrap_or_default();
                let tables = p.tables();
                let c = entry_counter(&tables, &key)
                    .ok_or_else(|| EntityError::NotFound(format!("{}: entry not found", t.name)))?;
                c.set(d.packet_count as u64, d.byte_count as u64);
                Ok(())
            }
            E::RegisterEntry(r) => {
                if op != U::Modify {
                    return Err(EntityError::Invalid(
                        "register entries can only be modified".into(),
                    ));
                }
                let (cells, name) = if r.register_id == prog.syn_pending {
                    (&p.syn_pending, "syn_pending")
                } else if r.register_id == prog.rr_state {
                    (&p.rr_state, "rr_state")
                } else {
                    return Err(EntityError::NotFound(format!(
                        "unknown register id {}",
                        r.register_id
                    )));
                };
                write_register(cells, name, r)
            }
            _ => Err(EntityError::Unimplemented(
                "entity type not supported by this program".into(),
            )),
        }
    }

    #[allow(deprecated)] // controller_metadata is echoed back as stored, like PI does
    pub(super) fn write_table(
        &self,
        prog: &Program,
        op: p4::update::Type,
        te: &p4::TableEntry,
    ) -> Result<(), EntityError> {
        use p4::update::Type as U;
        let (kind, t) = prog
            .table(te.table_id)
            .ok_or_else(|| EntityError::NotFound(format!("unknown table id {}", te.table_id)))?;
        if te.metadata.len() > MAX_ENTRY_METADATA {
            self.inner
                .stats
                .metadata_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(EntityError::Invalid(format!(
                "{}: metadata is {} bytes, over the switch's cap of {MAX_ENTRY_METADATA} bytes",
                t.name,
                te.metadata.len()
            )));
        }
        let p = &self.inner.pipeline;
        if te.is_default_action {
            if op != U::Modify {
                return Err(EntityError::Invalid(format!(
                    "{}: the default entry can only be modified",
                    t.name
                )));
            }
            if !te.r#match.is_empty() {
                return Err(EntityError::Invalid(format!(
                    "{}: the default entry has no match",
                    t.name
                )));
            }
            let act = match &te.action {
                None => None,
                Some(a) => Some(prog.decode_action(kind, t, Some(a), true)?),
            };
            let mut tables = p.tables_mut();
            set_default(&mut tables, kind, act);
            return Ok(());
        }
        if te.idle_timeout_ns < 0 {
            return Err(EntityError::Invalid("idle_timeout_ns is negative".into()));
        }
        if te.idle_timeout_ns != 0 && kind != TableKind::Crt {
            return Err(EntityError::Invalid(format!(
                "{} does not support idle timeout",
                t.name
            )));
        }
        let key = prog.decode_key(kind, t, te)?;
        let meta = EntryMeta {
            controller_metadata: te.controller_metadata,
            metadata: te.metadata.clone(),
            idle_timeout_ns: te.idle_timeout_ns,
        };
        let now = p.now_ns();
        match op {
            U::Insert | U::Modify => {
                let act = prog.decode_action(kind, t, te.action.as_ref(), false)?;
                let mut tables = p.tables_mut();
                let r = if op == U::Insert {
                    insert(&mut tables, key, act, meta, now)
                } else {
                    modify(&mut tables, key, act, meta, now)
                };
                r.map_err(EntityError::from)
            }
            U::Delete => {
                let mut tables = p.tables_mut();
                delete(&mut tables, key).map_err(EntityError::from)
            }
            U::Unspecified => Err(EntityError::Invalid("update type UNSPECIFIED".into())),
        }
    }
}

/// A register write: one cell (`index`) or, without an index, every cell, to a 32-bit value.
fn write_register(
    cells: &[std::sync::atomic::AtomicU32],
    name: &str,
    r: &p4::RegisterEntry,
) -> Result<(), EntityError> {
    let v = match r.data.as_ref().and_then(|d| d.data.as_ref()) {
        Some(p4::p4_data::Data::Bitstring(b)) => p4rt::codec::decode_u128(b, 32)
            .map_err(|e| EntityError::Invalid(format!("{name} value: {e}")))?
            as u32,
        _ => {
            return Err(EntityError::Invalid(format!(
                "{name} data must be a bitstring"
            )));
        }
    };
    match &r.index {
        None => cells.iter().for_each(|x| x.store(v, Ordering::Relaxed)),
        Some(i) => {
            let idx = usize::try_from(i.index)
                .ok()
                .filter(|i| *i < cells.len())
                .ok_or_else(|| {
                    EntityError::Invalid(format!("{name} index {} out of range", i.index))
                })?;
            cells[idx].store(v, Ordering::Relaxed);
        }
    }
    Ok(())
}

pub(super) fn insert(
    t: &mut Tables,
    key: Key,
    act: Act,
    meta: EntryMeta,
    now: u64,
) -> Result<(), TableError> {
    match (key, act) {
        (Key::Dvipa(k), Act::Dvipa(a)) => t.dvipa.insert(k, a, meta),
        (Key::Crt(k), Act::Select(a)) => t.crt.insert(k, a, meta, now),
        (Key::Dpt(k), Act::Select(a)) => t.dpt.insert(k, a, meta, now),
        (Key::Target(k), Act::Target(a)) => t.target.insert(k, a, meta, now),
        (Key::Route(k), Act::Route(a)) => t.route.insert(k, a, meta),
        _ => Err(TableError::InvalidKey {
            table: "?",
            reason: "action does not belong to the table".into(),
        }),
    }
}

pub(super) fn modify(
    t: &mut Tables,
    key: Key,
    act: Act,
    meta: EntryMeta,
    now: u64,
) -> Result<(), TableError> {
    match (key, act) {
        (Key::Dvipa(k), Act::Dvipa(a)) => t.dvipa.modify(&k, a, meta),
        (Key::Crt(k), Act::Select(a)) => t.crt.modify(&k, a, meta, now),
        (Key::Dpt(k), Act::Select(a)) => t.dpt.modify(&k, a, meta, now),
        (Key::Target(k), Act::Target(a)) => t.target.modify(&k, a, meta, now),
        (Key::Route(k), Act::Route(a)) => t.route.modify(&k, a, meta),
        _ => Err(TableError::InvalidKey {
            table: "?",
            reason: "action does not belong to the table".into(),
        }),
    }
}

pub(super) fn delete(t: &mut Tables, key: Key) -> Result<(), TableError> {
    match key {
        Key::Dvipa(k) => t.dvipa.delete(&k),
        Key::Crt(k) => t.crt.delete(&k).map(|_| ()),
        Key::Dpt(k) => t.dpt.delete(&k).map(|_| ()),
        Key::Target(k) => t.target.delete(&k).map(|_| ()),
        Key::Route(k) => t.route.delete(&k),
    }
}

pub(super) fn set_default(t: &mut Tables, kind: TableKind, act: Option<Act>) {
    match (kind, act) {
        (TableKind::Dvipa, Some(Act::Dvipa(a))) => t.dvipa.default_action = a,
        (TableKind::Dvipa, _) => t.dvipa.default_action = crate::tables::DvipaAction::NoAction,
        (TableKind::Crt, Some(Act::Select(a))) => t.crt.default_action = a,
        (TableKind::Crt, _) => t.crt.reset_default(),
        (TableKind::Dpt, Some(Act::Select(a))) => t.dpt.default_action = a,
        (TableKind::Dpt, _) => t.dpt.reset_default(),
        (TableKind::Target, Some(Act::Target(a))) => t.target.default_action = a,
        (TableKind::Target, _) => t.target.reset_default(),
        (TableKind::Route, Some(Act::Route(a))) => t.route.default_action = a,
        (TableKind::Route, _) => t.route.default_action = crate::tables::RouteAction::Drop,
    }
}

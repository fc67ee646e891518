//! Read: entities with wildcards (tables, counters, registers, digest config), and the split of
//! a large answer into bounded responses.

use super::*;

impl SwitchServer {
    pub(super) fn read_entity(
        &self,
        prog: &Program,
        ent: &p4::entity::Entity,
        out: &mut Vec<p4::Entity>,
    ) -> Result<(), Status> {
        use p4::entity::Entity as E;
        let p = &self.inner.pipeline;
        let wrap = |e: E| p4::Entity { entity: Some(e) };
        match ent {
            E::TableEntry(te) => {
                let ids: Vec<u32> = if te.table_id == 0 {
                    prog.table_ids().to_vec()
                } else {
                    vec![te.table_id]
                };
                let tables = p.tables();
                let now = p.now_ns();
                for id in ids {
                    let (kind, t) = prog
                        .table(id)
                        .ok_or_else(|| Status::not_found(format!("unknown table id {id}")))?;
                    if te.is_default_action {
                        let mut e = p4::TableEntry {
                            table_id: t.id,
                            is_default_action: true,
                            ..Default::default()
                        };
                        e.action = Some(prog.encode_action(&default_of(&tables, kind)));
                        out.push(wrap(E::TableEntry(e)));
                        continue;
                    }
                    let filter = if te.r#match.is_empty() {
                        None
                    } else {
                        Some(
                            prog.decode_key(kind, t, te)
                                .map_err(|e| Status::invalid_argument(e.to_string()))?,
                        )
                    };
                    for_each_entry(
                        &tables,
                        kind,
                        filter,
                        &mut |key, act, meta, counter, last_hit| {
                            let mut e = prog.entry(t, &key, &act, meta);
                            if te.counter_data.is_some() && t.direct_counter != 0 {
                                let (pk, by) = counter.get();
                                e.counter_data = Some(p4::CounterData {
                                    byte_count: by as i64,
                                    packet_count: pk as i64,
                                });
                            }
                            if te.time_since_last_hit.is_some() && kind == TableKind::Crt {
                                e.time_since_last_hit = Some(p4::table_entry::IdleTimeout {
                                    elapsed_ns: now.saturating_sub(last_hit) as i64,
                                });
                            }
                            out.push(wrap(E::TableEntry(e)));
                        },
                    );
                }
            }
            E::DirectCounterEntry(dc) => {
                let te = dc.table_entry.clone().unwrap_or_default();
                let ids: Vec<u32> = if te.table_id == 0 {
                    vec![prog.crt.id, prog.target.id]
                } else {
                    vec![te.table_id]
                };
                let tables = p.tables();
                for id in ids {
                    let (kind, t) = prog
                        .table(id)
                        .ok_or_else(|| Status::not_found(format!("unknown table id {id}")))?;
                    if t.direct_counter == 0 {
                        return Err(Status::invalid_argument(format!(
                            "{} has no direct counter",
                            t.name
                        )));
                    }
                    let filter = if te.r#match.is_empty() {
                        None
                    } else {
                        Some(
                            prog.decode_key(kind, t, &te)
                                .map_err(|e| Status::invalid_argument(e.to_string()))?,
                        )
                    };
                    for_each_entry(
                        &tables,
                        kind,
                        filter,
                        &mut |key, _act, _meta, counter, _| {
                            let mut e = p4::TableEntry::default();
                            prog.encode_key(t, &key, &mut e);
                            let (pk, by) = counter.get();
                            out.push(wrap(E::DirectCounterEntry(p4::DirectCounterEntry {
                                table_entry: Some(e),
                                data: Some(p4::CounterData {
                                    byte_count: by as i64,
                                    packet_count: pk as i64,
                                }),
                            })));
                        },
                    );
                }
            }
            E::CounterEntry(c) => {
                if c.counter_id != 0 && c.counter_id != prog.service_counter {
                    return Err(Status::not_found(format!(
                        "unknown counter id {}",
                        c.counter_id
                    )));
                }
                let one = |i: usize, x: &Counter| {
                    let (pk, by) = x.get();
                    wrap(E::CounterEntry(p4::CounterEntry {
                        counter_id: prog.service_counter,
                        index: Some(p4::Index { index: i as i64 }),
                        data: Some(p4::CounterData {
                            byte_count: by as i64,
                            packet_count: pk as i64,
                        }),
                    }))
                };
                match &c.index {
                    None => {
                        out.extend(p.service_counter.iter().enumerate().map(|(i, x)| one(i, x)))
                    }
                    Some(ix) => {
                        let x = cell(&p.service_counter, ix.index)
                            .map_err(|e| Status::invalid_argument(e.to_string()))?;
                        out.push(one(ix.index as usize, x));
                    }
                }
            }
            E::RegisterEntry(r) => {
                if r.register_id != 0
                    && r.register_id != prog.rr_state
                    && r.register_id != prog.syn_pending
                {
                    return Err(Status::not_found(format!(
                        "unknown register id {}",
                        r.register_id
                    )));
                }
                if r.register_id == 0 || r.register_id == prog.syn_pending {
                    let one = |i: usize| {
                        let v = p.syn_pending[i].load(Ordering::Relaxed);
                        wrap(E::RegisterEntry(p4::RegisterEntry {
                            register_id: prog.syn_pending,
                            index: Some(p4::Index { index: i as i64 }),
                            data: Some(p4::P4Data {
                                data: Some(p4::p4_data::Data::Bitstring(
                                    p4rt::codec::encode_u128(v.into(), 32)
                                        .unwrap_or_else(|_| vec![0]),
                                )),
                            }),
                        }))
                    };
                    match &r.index {
                        None => out.extend((0..p.syn_pending.len()).map(one)),
                        Some(ix) => {
                            let i = usize::try_from(ix.index)
                                .ok()
                                .filter(|i| *i < p.syn_pending.len())
                                .ok_or_else(|| {
                                    Status::invalid_argument(format!(
                                        "syn_pending index {} out of range",
                                        ix.index
                                    ))
                                })?;
                            out.push(one(i));
                        }
                    }
                    if r.register_id == prog.syn_pending {
                        return Ok(());
                    }
                }
                let one = |i: usize| {
                    let v = p.rr_state[i].load(Ordering::Relaxed);
                    wrap(E::RegisterEntry(p4::RegisterEntry {
                        register_id: prog.rr_state,
                        index: Some(p4::Index { index: i as i64 }),
                        data: Some(p4::P4Data {
                            data: Some(p4::p4_data::Data::Bitstring(
                                p4rt::codec::encode_u128(v.into(), 32).unwrap_or_else(|_| vec![0]),
                            )),
                        }),
                    }))
                };
                match &r.index {
                    None => out.extend((0..p.rr_state.len()).map(one)),
                    Some(ix) => {
                        let i = usize::try_from(ix.index)
                            .ok()
                            .filter(|i| *i < p.rr_state.len())
                            .ok_or_else(|| {
                                Status::invalid_argument(format!(
                                    "rr_state index {} out of range",
                                    ix.index
                                ))
                            })?;
                        out.push(one(i));
                    }
                }
            }
            E::DigestEntry(d) => {
                if d.digest_id != 0 && d.digest_id != prog.learn {
                    return Err(Status::not_found(format!(
                        "unknown digest id {}",
                        d.digest_id
                    )));
                }
                if let Some(c) = self.inner.state.lock().digest {
                    out.push(wrap(E::DigestEntry(p4::DigestEntry {
                        digest_id: prog.learn,
                        config: Some(p4::digest_entry::Config {
                            max_timeout_ns: c.max_timeout_ns,
                            max_list_size: c.max_list_size,
                            ack_timeout_ns: c.ack_timeout_ns,
                        }),
                    })));
                }
            }
            _ => {
                return Err(Status::unimplemented(
                    "entity type not supported by this program",
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn cell(c: &[Counter], index: i64) -> Result<&Counter, EntityError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| c.get(i))
        .ok_or_else(|| {
            EntityError::Invalid(format!("counter index {index} out of range 0..{}", c.len()))
        })
}

pub(super) fn entry_counter<'a>(t: &'a Tables, key: &Key) -> Option<&'a Counter> {
    match key {
        Key::Crt(k) => t.crt.get(k).map(|e| &e.counter),
        Key::Target(k) => t.target.get(k).map(|e| &e.counter),
        _ => None,
    }
}

pub(super) fn default_of(t: &Tables, kind: TableKind) -> Act {
    match kind {
        TableKind::Dvipa => Act::Dvipa(t.dvipa.default_action),
        TableKind::Crt => Act::Select(t.crt.default_action),
        TableKind::Dpt => Act::Select(t.dpt.default_action),
        TableKind::Target => Act::Target(t.target.default_action),
        TableKind::Route => Act::Route(t.route.default_action),
    }
}

pub(super) type Visit<'a> = dyn FnMut(Key, Act, &EntryMeta, &Counter, u64) + 'a;

pub(super) fn for_each_entry(t: &Tables, kind: TableKind, filter: Option<Key>, f: &mut Visit<'_>) {
    let ok = |k: &Key| filter.is_none_or(|x| x == *k);
    match kind {
        TableKind::Dvipa => {
            for (k, e) in t.dvipa.iter() {
                let key = Key::Dvipa(*k);
                if ok(&key) {
                    f(key, Act::Dvipa(e.action), &e.meta, &e.counter, 0);
                }
            }
        }
        TableKind::Crt => match filter {
            Some(Key::Crt(k)) => {
                if let Some(e) = t.crt.get(&k) {
                    f(
                        Key::Crt(k),
                        Act::Select(e.action),
                        &e.meta,
                        &e.counter,
                        e.last_hit_ns.load(Ordering::Relaxed),
                    );
                }
            }
            _ => {
                for (k, e) in t.crt.iter() {
                    f(
                        Key::Crt(*k),
                        Act::Select(e.action),
                        &e.meta,
                        &e.counter,
                        e.last_hit_ns.load(Ordering::Relaxed),
                    );
                }
            }
        },
        TableKind::Dpt => match filter {
            Some(Key::Dpt(k)) => {
                if let Some(e) = t.dpt.get(&k) {
                    f(Key::Dpt(k), Act::Select(e.action), &e.meta, &e.counter, 0);
                }
            }
            _ => {
                for (k, e) in t.dpt.iter() {
                    f(Key::Dpt(*k), Act::Select(e.action), &e.meta, &e.counter, 0);
                }
            }
        },
        TableKind::Target => {
            for (k, e) in t.target.iter() {
                let key = Key::Target(*k);
                if ok(&key) {
                    f(key, Act::Target(e.action), &e.meta, &e.counter, 0);
                }
            }
        }
        TableKind::Route => {
            for (k, e) in t.route.iter() {
                let key = Key::Route(k);
                if ok(&key) {
                    f(key, Act::Route(e.action), &e.meta, &e.counter, 0);
                }
            }
        }
    }
}

/// Splits a Read's entities into `ReadResponse`s of at most `limit` encoded bytes each (an
/// entity larger than `limit` goes alone); at least one response, empty when nothing matched.
pub(super) fn split_read(
    entities: Vec<p4::Entity>,
    limit: usize,
    max_entities: usize,
) -> Vec<p4::ReadResponse> {
    let mut parts = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for e in entities {
        // Field 1, length-delimited: tag byte + length varint + the entity.
        let len = e.encoded_len();
        let one = 1 + prost::length_delimiter_len(len) + len;
        if !cur.is_empty() && (size + one > limit || cur.len() >= max_entities) {
            parts.push(p4::ReadResponse {
                entities: std::mem::take(&mut cur),
            });
            size = 0;
        }
        size += one;
        cur.push(e);
    }
    if !cur.is_empty() || parts.is_empty() {
        parts.push(p4::ReadResponse { entities: cur });
    }
    parts
}

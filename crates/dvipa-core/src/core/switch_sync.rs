//! The per-switch write pipeline: what each switch holds, the desired view, the batches in
//! flight by phase (CRT upserts/deletes spread over a window), write results and digest acks.

use super::*;

#[derive(Debug)]
pub(super) struct SwitchState {
    pub(super) name: String,
    pub(super) live: SwitchLiveness,
    /// Has been up (connected) at least once since this core started.
    pub(super) seen_up: bool,
    pub(super) maintenance: bool,
    pub(super) read_once: bool,
    pub(super) held_at_start: BTreeSet<VipaIdx>,
    pub(super) installed: Tables,
    pub(super) installed_crt: HashMap<ConnKey, u16>,
    /// CRT keys not known to be in sync (not yet diffed, or diffed to a delete that waits for
    /// its phase). Keys in a batch in flight are not in it unless changed again meanwhile.
    pub(super) crt_dirty: HashSet<ConnKey>,
    /// Order in which dirty keys are diffed (may hold stale or repeated keys: skipped).
    pub(super) crt_queue: VecDeque<ConnKey>,
    /// Dirty keys diffed to a CRT delete (phase 6), waiting for phases 1–5 to be done.
    pub(super) crt_deferred: HashSet<ConnKey>,
    /// CRT keys of the batches in flight.
    pub(super) crt_in_flight: HashSet<ConnKey>,
    pub(super) structural_dirty: bool,
    /// Batches written and not answered yet, oldest first.
    pub(super) in_flight: VecDeque<Batch>,
    pub(super) overflow: HashMap<ConnKey, &'static str>,
    pub(super) failed: BTreeMap<Key, String>,
    /// Digest lists waiting for their CRT entries: (list id, connections, how many of them
    /// were seen settled so far).
    pub(super) pending_digests: Vec<(u64, Vec<ConnKey>, usize)>,
    /// Digest lists that arrived while the switch was syncing (replayed after its read).
    pub(super) syncing_digests: Vec<(u64, Vec<DigestItem>)>,
}

#[derive(Debug)]
pub(super) struct Batch {
    pub(super) id: u64,
    pub(super) phase: usize,
    pub(super) updates: Vec<Update>,
}

/// Phase of CRT inserts/modifies.
pub(super) const CRT_UPSERT: usize = 1;

/// Phase of CRT deletes.
pub(super) const CRT_DELETE: usize = 6;

/// Smallest batch a CRT backlog is split into across free window slots.
pub(super) const MIN_SPREAD_BATCH: usize = 100;

impl SwitchState {
    /// Queue `k` for a diff on this switch.
    pub(super) fn mark_dirty(&mut self, k: ConnKey) {
        if self.crt_dirty.insert(k) || self.crt_deferred.contains(&k) {
            self.crt_queue.push_back(k);
        }
    }

    /// Forget every write in flight (the switch went away or a new session starts).
    pub(super) fn forget_in_flight(&mut self) {
        self.in_flight.clear();
        self.crt_in_flight.clear();
    }

    /// Whether the queue still holds a key that may need an insert/modify (drops stale keys
    /// and keys in flight from its front: the latter are queued again when their batch ends).
    pub(super) fn crt_queue_pending(&mut self) -> bool {
        while let Some(k) = self.crt_queue.front() {
            if self.crt_dirty.contains(k) && !self.crt_in_flight.contains(k) {
                return true;
            }
            self.crt_queue.pop_front();
        }
        false
    }
}

/// The CRT entry `k` should have on a switch that programs `programmed` (None = no entry).
pub(super) fn desired_crt_of(
    crt: &HashMap<ConnKey, CrtEntry>,
    services: &[Service],
    overflow: &HashMap<ConnKey, &'static str>,
    programmed: &BTreeSet<VipaIdx>,
    k: &ConnKey,
) -> Option<Value> {
    let e = crt.get(k)?;
    if overflow.contains_key(k) {
        return None;
    }
    programmed
        .contains(&VipaIdx(services[e.service as usize].vipa))
        .then_some(Value::ToTarget { target: e.target })
}

impl Core {
    pub(super) fn programmed_vipas(&self, si: SwitchIdx) -> BTreeSet<VipaIdx> {
        let sw = &self.switches[si];
        let mut out = BTreeSet::new();
        for vi in self.vipas.ids() {
            let vs = &self.vipas[vi];
            let hot_backup = self.cluster.config.hot_standby
                && sw.live == SwitchLiveness::Up
                && self.chain(vi).contains(&si);
            if vs.owner == si || vs.retiring.contains(&si) || hot_backup {
                out.insert(vi);
            }
        }
        out
    }

    pub(super) fn desired_noncrt(&self, si: SwitchIdx) -> Tables {
        let cfg = &self.cluster.config;
        let swc = &cfg.switches[si.0];
        let mut t = Tables::new();
        for r in &swc.routes {
            t.insert(
                Key::Route { prefix: r.prefix },
                Value::SetNexthop {
                    dmac: r.dmac,
                    smac: r.smac,
                    port: r.port,
                },
            );
        }
        for (i, st) in cfg.stacks.iter().enumerate() {
            let v = match st.encap {
                Encap::L2 => match (st.mac, st.ports.get(&swc.name)) {
                    (Some(dmac), Some(port)) => Value::ForwardL2 { dmac, port: *port },
                    _ => continue,
                },
                Encap::Ipip => match swc.tunnel_src {
                    Some(outer_src) => Value::EncapIpip {
                        outer_src,
                        outer_dst: st.underlay,
                    },
                    None => continue,
                },
            };
            t.insert(
                Key::Target {
                    target: i as u16 + 1,
                },
                v,
            );
        }
        let programmed = self.programmed_vipas(si);
        for s in &self.services {
            if !s.active || !programmed.contains(&VipaIdx(s.vipa)) {
                continue;
            }
            t.insert(
                Key::Dvipa {
                    addr: s.dvipa,
                    proto: s.proto,
                    port: s.port,
                },
                Value::Distribute {
                    service: s.id,
                    method: method_code(s.method),
                },
            );
            for (slot, tg) in s.fill.iter().enumerate() {
                if let Some(tg) = tg {
                    t.insert(
                        Key::Dpt {
                            service: s.id,
                            slot: slot as u16,
                        },
                        Value::ToTarget { target: *tg },
                    );
                }
            }
        }
        t
    }

    pub(super) fn switch_idx(&mut self, name: &str) -> Option<SwitchIdx> {
        let r = self.sw_index.get(name).copied();
        if r.is_none() {
            self.count("unknown_switch");
        }
        r
    }

    pub(super) fn on_switch_up(&mut self, name: &str) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        let sw = &mut self.switches[si];
        sw.live = SwitchLiveness::Syncing;
        sw.seen_up = true;
        sw.forget_in_flight();
        // The read that follows marks every connection again (keys that waited for a batch
        // of the old session would otherwise stay dirty and never be queued).
        sw.crt_dirty.clear();
        sw.crt_queue.clear();
        sw.crt_deferred.clear();
        sw.pending_digests.clear();
        sw.syncing_digests.clear();
        self.actions.push_back(Action::ReadSwitch {
            switch: name.to_string(),
        });
    }

    pub(super) fn on_switch_down(&mut self, name: &str) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        if self.switches[si].live == SwitchLiveness::Down {
            return;
        }
        self.count("switch_down");
        self.mark_down(si);
    }

    /// `si` is lost (or never came up): forget what it holds, and elect new owners.
    pub(super) fn mark_down(&mut self, si: SwitchIdx) {
        let sw = &mut self.switches[si];
        sw.live = SwitchLiveness::Down;
        sw.forget_in_flight();
        sw.pending_digests.clear();
        sw.syncing_digests.clear();
        sw.installed.clear();
        sw.installed_crt.clear();
        sw.crt_dirty.clear();
        sw.crt_queue.clear();
        sw.crt_deferred.clear();
        sw.overflow.clear();
        sw.failed.clear();
        for vs in self.vipas.iter_mut() {
            vs.retiring.retain(|s| *s != si);
        }
        self.elect();
        // Hot-standby backups drop/gain DVIPAs with liveness.
        for sw in &mut self.switches {
            sw.structural_dirty = true;
        }
    }

    pub(super) fn on_switch_read(&mut self, name: &str, entries: Vec<(Key, Value)>) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        if self.switches[si].live == SwitchLiveness::Down {
            self.count("read_from_down_switch");
            return;
        }
        let mut installed = Tables::new();
        let mut installed_crt = HashMap::new();
        for (k, v) in entries {
            match (k, v) {
                (Key::Crt(c), Value::ToTarget { target }) => {
                    installed_crt.insert(c, target);
                }
                (k, v) => {
                    installed.insert(k, v);
                }
            }
        }
        // Adopt connections the core does not know (controller restart) for DVIPAs this
        // switch routes: forwarding continues undisturbed. Only from the first read of a switch
        // since this core started; afterwards the core's own CRT is authoritative (a returning
        // switch's stale entries are removed, not adopted).
        let first_read = !std::mem::replace(&mut self.switches[si].read_once, true);
        // Controller restart: DVIPAs this switch holds stay on it (as if retiring) until their
        // owner is programmed and advertised, and its connections are adopted.
        let restart = first_read && self.in_hold();
        let held: BTreeSet<VipaIdx> = if restart {
            self.vipas
                .ids()
                .filter(|vi| {
                    let a = self.cluster.vipas[vi.0].addr;
                    self.chain(*vi).contains(&si)
                        && installed
                            .keys()
                            .any(|k| matches!(k, Key::Dvipa { addr, .. } if *addr == a))
                })
                .collect()
        } else {
            BTreeSet::new()
        };
        for &vi in &held {
            if self.vipas[vi].owner != si && !self.vipas[vi].retiring.contains(&si) {
                self.vipas[vi].retiring.push(si);
            }
        }
        self.switches[si].held_at_start = held.clone();
        let owned: BTreeSet<VipaIdx> = self
            .vipas
            .ids()
            .filter(|&vi| first_read && (self.vipas[vi].owner == si || held.contains(&vi)))
            .collect();
        let mut adopt = Vec::new();
        if !self.in_hold() {
            self.idle_in_hold = HashSet::new();
        }
        for (c, t) in &installed_crt {
            if self.crt.contains_key(c) {
                continue;
            }
            if self.idle_in_hold.contains(c) {
                // Found idle on the routing switch after this restart: a copy elsewhere is stale.
                self.count("crt_not_adopted_idle");
                continue;
            }
            let Some(svc) = self.service_of(c.dvipa(), c.dport, c.proto) else {
                continue;
            };
            if owned.contains(&VipaIdx(self.services[svc as usize].vipa))
                && (*t as usize) >= 1
                && (*t as usize) <= self.stacks.len()
            {
                adopt.push((*c, *t, svc));
            }
        }
        for (c, t, svc) in adopt {
            self.pin(c, t, svc, Origin::SwitchRead, 0);
            self.count("crt_adopted_from_switch");
        }
        // Adopt the slot fill too (controller restart): it becomes the tie-breaker, and its
        // targets count as ready until their stacks attach or the start-up hold ends.
        for (k, v) in &installed {
            let (Key::Dpt { service, slot }, Some(t)) = (k, v.target()) else {
                continue;
            };
            let (svc, slot) = (*service as usize, *slot as usize);
            if svc >= self.services.len()
                || slot >= N_SLOTS
                || t == 0
                || t as usize > self.stacks.len()
                || !owned.contains(&VipaIdx(self.services[svc].vipa))
                || self.services[svc].hint.iter().any(|x| x.is_some())
                    && self.services[svc].hint[slot].is_some()
            {
                continue;
            }
            self.services[svc].hint[slot] = Some(t);
            if !self.stacks[TargetId(t)].attached_ever {
                let d = self.services[svc].dpt.entry(t).or_default();
                if !d.listening {
                    d.listening = true;
                    d.adopted = true;
                    self.count("dpt_adopted_from_switch");
                }
            }
        }
        self.refill_all();
        let sw = &mut self.switches[si];
        sw.live = SwitchLiveness::Up;
        sw.installed = installed;
        for k in installed_crt.keys() {
            sw.mark_dirty(*k);
        }
        sw.installed_crt = installed_crt;
        sw.structural_dirty = true;
        sw.failed.clear();
        sw.overflow.clear();
        let all: Vec<ConnKey> = self.crt.keys().copied().collect();
        let sw = &mut self.switches[si];
        for k in all {
            sw.mark_dirty(k);
        }
        if restart {
            self.infer_owners();
        }
        self.elect();
        for sw in &mut self.switches {
            sw.structural_dirty = true;
        }
        // Digest lists that came while the switch was syncing.
        let buffered = std::mem::take(&mut self.switches[si].syncing_digests);
        for (list_id, items) in buffered {
            self.on_digest(name, list_id, items);
        }
    }

    pub(super) fn on_write_result(&mut self, name: &str, batch: u64, results: Vec<WriteOutcome>) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        let sw = &mut self.switches[si];
        let Some(pos) = sw.in_flight.iter().position(|b| b.id == batch) else {
            self.count("write_result_unexpected");
            return;
        };
        let updates = sw
            .in_flight
            .remove(pos)
            .map(|b| b.updates)
            .unwrap_or_default();
        let mut counts: Vec<&'static str> = Vec::new();
        let mut freed = 0usize;
        for (i, u) in updates.iter().enumerate() {
            let r = results
                .get(i)
                .cloned()
                .unwrap_or_else(|| WriteOutcome::Other("no result".into()));
            let ok_apply = match (&r, u.kind) {
                (WriteOutcome::Ok, _) => true,
                (WriteOutcome::AlreadyExists, UpdateKind::Insert) => {
                    counts.push("write_already_exists");
                    true
                }
                (WriteOutcome::NotFound, UpdateKind::Delete) => true,
                (WriteOutcome::NotFound, UpdateKind::Modify) => {
                    // Gone behind our back: forget it so the next pass inserts it.
                    counts.push("write_not_found");
                    match u.key {
                        Key::Crt(c) => {
                            sw.installed_crt.remove(&c);
                        }
                        k => {
                            sw.installed.remove(&k);
                        }
                    }
                    false
                }
                (WriteOutcome::ResourceExhausted, _) => {
                    counts.push("write_resource_exhausted");
                    match u.key {
                        Key::Crt(c) => {
                            counts.push("crt_overflow");
                            sw.overflow.insert(c, "RESOURCE_EXHAUSTED");
                        }
                        k => {
                            sw.failed.insert(k, "RESOURCE_EXHAUSTED".into());
                        }
                    }
                    false
                }
                (r, _) => {
                    counts.push("write_error");
                    let msg = format!("{r:?}");
                    match (u.key, u.kind) {
                        (Key::Crt(c), UpdateKind::Delete) => {
                            // Do not retry forever; the next read of the switch finds it.
                            counts.push("crt_delete_failed");
                            sw.installed_crt.remove(&c);
                        }
                        (Key::Crt(c), _) => {
                            sw.overflow.insert(c, "write_error");
                        }
                        (k, _) => {
                            sw.failed.insert(k, msg);
                        }
                    }
                    false
                }
            };
            if let Key::Crt(c) = u.key {
                sw.crt_in_flight.remove(&c);
                if !ok_apply || sw.crt_dirty.contains(&c) {
                    // Failed (diff again: overflow, not found …) or changed while in flight.
                    sw.crt_dirty.remove(&c);
                    sw.mark_dirty(c);
                }
            }
            if ok_apply {
                match (u.key, u.kind) {
                    (Key::Crt(c), UpdateKind::Delete) => {
                        if sw.installed_crt.remove(&c).is_some() && r == WriteOutcome::Ok {
                            freed += 1;
                        }
                    }
                    (Key::Crt(c), _) => {
                        if let Value::ToTarget { target } = u.value {
                            sw.installed_crt.insert(c, target);
                        }
                    }
                    (k, UpdateKind::Delete) => {
                        sw.installed.remove(&k);
                    }
                    (k, _) => {
                        sw.installed.insert(k, u.value);
                    }
                }
            }
        }
        // CRT deletes made room: retry as many entries that found the table full.
        if freed > 0 && !sw.overflow.is_empty() {
            let retry: Vec<ConnKey> = sw
                .overflow
                .iter()
                .filter(|(_, why)| **why == "RESOURCE_EXHAUSTED")
                .map(|(k, _)| *k)
                .take(freed)
                .collect();
            for k in retry {
                sw.overflow.remove(&k);
                sw.mark_dirty(k);
                counts.push("crt_overflow_retried");
            }
        }
        for c in counts {
            self.count(c);
        }
        self.count("write_batches_done");
    }

    pub(super) fn flush_all(&mut self) {
        for si in self.switches.ids() {
            self.flush(si);
        }
        self.advertise_converged();
        self.push_vipa_lists();
    }

    pub(super) fn flush(&mut self, si: SwitchIdx) {
        if self.switches[si].live != SwitchLiveness::Up {
            return;
        }
        while self.send_next(si) {}
        self.ack_settled(si);
    }

    /// Non-CRT updates by phase (all empty when nothing structural changed).
    pub(super) fn structural_phases(&mut self, si: SwitchIdx) -> Vec<Vec<Update>> {
        let mut phases: Vec<Vec<Update>> = vec![Vec::new(); PHASES];
        if !self.switches[si].structural_dirty {
            return phases;
        }
        let desired = self.desired_noncrt(si);
        let sw = &self.switches[si];
        let p = entries::reconcile(&desired, &sw.installed);
        for (i, ups) in p.into_iter().enumerate() {
            phases[i].extend(ups.into_iter().filter(|u| !sw.failed.contains_key(&u.key)));
        }
        if phases.iter().all(|p| p.is_empty()) {
            self.switches[si].structural_dirty = false;
        }
        phases
    }

    /// Sends the next batch to switch `si` if the phase order and the window allow one.
    /// Returns true when it sent one (or queued work again and should be asked once more).
    pub(super) fn send_next(&mut self, si: SwitchIdx) -> bool {
        let window = self.opts.max_in_flight.max(1);
        let sw = &self.switches[si];
        if sw.in_flight.len() >= window {
            return false;
        }
        let flying = sw.in_flight.front().map(|b| b.phase);
        if flying.is_some_and(|p| p != CRT_UPSERT && p != CRT_DELETE) {
            // A structural batch is alone in flight.
            return false;
        }
        let mut st = self.structural_phases(si);
        let s_min = st.iter().position(|p| !p.is_empty());
        if s_min == Some(0) {
            // Targets and routes first (CRT entries may name a new target).
            if flying.is_none() {
                let p = std::mem::take(&mut st[0]);
                self.send(si, 0, p);
                return true;
            }
            return false;
        }
        match flying {
            None | Some(CRT_UPSERT) => {
                let b = self.take_crt_upserts(si);
                if !b.is_empty() {
                    self.send(si, CRT_UPSERT, b);
                    return true;
                }
                if flying.is_some() {
                    // Later phases wait until every CRT insert is confirmed.
                    return false;
                }
            }
            _ => {
                if self.switches[si].crt_queue_pending() {
                    // Inserts come after the deletes in flight are confirmed.
                    return false;
                }
            }
        }
        if let Some(p) = s_min.filter(|p| *p < CRT_DELETE) {
            if flying.is_none() {
                let b = std::mem::take(&mut st[p]);
                self.send(si, p, b);
                return true;
            }
            return false;
        }
        let (b, requeued) = self.take_crt_deletes(si);
        if !b.is_empty() {
            self.send(si, CRT_DELETE, b);
            return true;
        }
        if requeued {
            return true;
        }
        if let Some(p) = s_min.filter(|p| *p > CRT_DELETE)
            && flying.is_none()
        {
            let b = std::mem::take(&mut st[p]);
            self.send(si, p, b);
            return true;
        }
        false
    }

    /// Up to `max_batch` CRT inserts/modifies from the front of the dirty queue (keys that
    /// diff to a delete are set aside for phase 6, keys in sync are dropped). A backlog smaller
    /// than a full batch per free window slot is spread over the free slots (batches of at
    /// least [`MIN_SPREAD_BATCH`]), so it is written by concurrent Writes, not one long one.
    pub(super) fn take_crt_upserts(&mut self, si: SwitchIdx) -> Vec<Update> {
        let programmed = self.programmed_vipas(si);
        let free = self
            .opts
            .max_in_flight
            .max(1)
            .saturating_sub(self.switches[si].in_flight.len())
            .max(1);
        let spread = self.switches[si]
            .crt_queue
            .len()
            .div_ceil(free)
            .max(MIN_SPREAD_BATCH);
        let max = self.opts.max_batch.min(spread).max(1);
        let (crt, services) = (&self.crt, &self.services);
        let sw = &mut self.switches[si];
        let mut out = Vec::new();
        while out.len() < max {
            let Some(k) = sw.crt_queue.pop_front() else {
                break;
            };
            if !sw.crt_dirty.contains(&k) || sw.crt_in_flight.contains(&k) {
                // Stale, or queued again when its batch ends.
                continue;
            }
            let d = desired_crt_of(crt, services, &sw.overflow, &programmed, &k);
            let a = sw
                .installed_crt
                .get(&k)
                .map(|t| Value::ToTarget { target: *t });
            match entries::diff_one(Key::Crt(k), d.as_ref(), a.as_ref()) {
                None => {
                    sw.crt_dirty.remove(&k);
                    sw.crt_deferred.remove(&k);
                }
                Some(u) if u.kind == UpdateKind::Delete => {
                    sw.crt_deferred.insert(k);
                }
                Some(u) => {
                    sw.crt_deferred.remove(&k);
                    out.push(u);
                }
            }
        }
        if sw.crt_dirty.is_empty() && sw.crt_dirty.capacity() > 1024 {
            sw.crt_dirty.shrink_to(0);
            sw.crt_queue.shrink_to(0);
        }
        out
    }

    /// Up to `max_batch` CRT deletes set aside earlier, diffed again; keys that now need an
    /// insert go back to the queue (the second value says whether any did).
    pub(super) fn take_crt_deletes(&mut self, si: SwitchIdx) -> (Vec<Update>, bool) {
        let programmed = self.programmed_vipas(si);
        let max = self.opts.max_batch.max(1);
        let (crt, services) = (&self.crt, &self.services);
        let sw = &mut self.switches[si];
        let cand: Vec<ConnKey> = sw.crt_deferred.iter().take(max).copied().collect();
        let mut out = Vec::new();
        let mut requeued = false;
        for k in cand {
            sw.crt_deferred.remove(&k);
            if !sw.crt_dirty.contains(&k) || sw.crt_in_flight.contains(&k) {
                continue;
            }
            let d = desired_crt_of(crt, services, &sw.overflow, &programmed, &k);
            let a = sw
                .installed_crt
                .get(&k)
                .map(|t| Value::ToTarget { target: *t });
            match entries::diff_one(Key::Crt(k), d.as_ref(), a.as_ref()) {
                None => {
                    sw.crt_dirty.remove(&k);
                }
                Some(u) if u.kind == UpdateKind::Delete => out.push(u),
                Some(_) => {
                    sw.crt_queue.push_back(k);
                    requeued = true;
                }
            }
        }
        if sw.crt_deferred.is_empty() && sw.crt_deferred.capacity() > 1024 {
            sw.crt_deferred.shrink_to(0);
        }
        (out, requeued)
    }

    pub(super) fn send(&mut self, si: SwitchIdx, phase: usize, mut updates: Vec<Update>) {
        updates.sort_unstable_by_key(|u| u.key);
        let sw = &mut self.switches[si];
        for u in &updates {
            if let Key::Crt(c) = u.key {
                sw.crt_dirty.remove(&c);
                sw.crt_in_flight.insert(c);
            }
        }
        let id = self.next_batch;
        self.next_batch += 1;
        sw.in_flight.push_back(Batch {
            id,
            phase,
            updates: updates.clone(),
        });
        self.count("write_batches");
        let sw = &self.switches[si];
        self.actions.push_back(Action::Write {
            switch: sw.name.clone(),
            batch: id,
            updates,
        });
    }

    /// Acks the digest lists whose connections are all settled on switch `si`.
    pub(super) fn ack_settled(&mut self, si: SwitchIdx) {
        let SwitchState {
            name,
            pending_digests,
            crt_dirty,
            crt_in_flight,
            ..
        } = &mut self.switches[si];
        let actions = &mut self.actions;
        pending_digests.retain_mut(|(id, conns, seen)| {
            while let Some(c) = conns.get(*seen) {
                if crt_dirty.contains(c) || crt_in_flight.contains(c) {
                    return true;
                }
                *seen += 1;
            }
            actions.push_back(Action::AckDigest {
                switch: name.clone(),
                list_id: *id,
            });
            false
        });
    }
}

//! The CRT: pins and unpins, dirty marking, SYN digests and idle timeouts.

use super::*;

impl Core {
    pub(super) fn mark_conn_dirty(&mut self, k: ConnKey) {
        // Switches that are not up get everything marked when their tables are read.
        for sw in &mut self.switches {
            if sw.live == SwitchLiveness::Up {
                sw.mark_dirty(k);
            }
        }
    }

    pub(super) fn mark_vipa_conns_dirty(&mut self, vi: VipaIdx, si: SwitchIdx) {
        let keys: Vec<ConnKey> = self
            .crt
            .iter()
            .filter(|(_, e)| self.services[e.service as usize].vipa == vi.0)
            .map(|(k, _)| *k)
            .collect();
        let sw = &mut self.switches[si];
        for k in keys {
            sw.mark_dirty(k);
        }
        let stale: Vec<ConnKey> = sw.installed_crt.keys().copied().collect();
        for k in stale {
            sw.mark_dirty(k);
        }
        sw.structural_dirty = true;
    }

    pub(super) fn pin(&mut self, k: ConnKey, target: u16, service: u16, origin: Origin, flags: u8) {
        let e = CrtEntry {
            target,
            service,
            origin,
            flags,
            pinned_s: (self.now.0 / 1000) as u32,
        };
        if let Some(old) = self.crt.insert(k, e) {
            self.unaccount(&old);
        }
        let now = self.now;
        let d = self.services[service as usize]
            .dpt
            .entry(target)
            .or_insert_with(|| DptEntry {
                not_ready: Some((now, "no_srvstat")),
                ..DptEntry::default()
            });
        d.total_conns += 1;
        d.active_conns += 1;
        self.mark_conn_dirty(k);
    }

    pub(super) fn unaccount(&mut self, e: &CrtEntry) {
        if let Some(d) = self.services[e.service as usize].dpt.get_mut(&{ e.target }) {
            d.active_conns = d.active_conns.saturating_sub(1);
        }
    }

    pub(super) fn unpin(&mut self, k: &ConnKey) -> Option<CrtEntry> {
        let e = self.crt.remove(k)?;
        self.unaccount(&e);
        self.mark_conn_dirty(*k);
        for sw in &mut self.switches {
            sw.overflow.remove(k);
        }
        Some(e)
    }

    pub(super) fn on_digest(&mut self, name: &str, list_id: u64, items: Vec<DigestItem>) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        match self.switches[si].live {
            SwitchLiveness::Up => {}
            SwitchLiveness::Syncing => {
                // Pinned once the switch's tables are read (acked after their entries).
                self.switches[si].syncing_digests.push((list_id, items));
                self.count("digest_buffered_syncing");
                return;
            }
            _ => {
                self.count("digest_from_switch_not_up");
                return;
            }
        }
        let mut conns = Vec::new();
        for it in items {
            self.count("digest_items");
            let Some(svc) = self.service_of(it.conn.dvipa(), it.conn.dport, it.conn.proto) else {
                self.count("digest_unknown_service");
                continue;
            };
            if svc != it.service {
                self.count("digest_service_mismatch");
                continue;
            }
            if it.target == 0 || it.target as usize > self.stacks.len() {
                self.count("digest_unknown_target");
                continue;
            }
            if self.crt.contains_key(&it.conn) {
                // Already pinned (NEWCONN first, or a repeated digest): keep the pin; make sure
                // it is on this switch.
                self.count(if it.not_syn {
                    "digest_not_syn_known"
                } else {
                    "digest_duplicate"
                });
                self.switches[si].mark_dirty(it.conn);
                conns.push(it.conn);
                continue;
            }
            let handshake = self.cluster.config.pin_on == crate::config::PinOn::Handshake;
            if it.not_syn {
                // The handshake's ACK of a SYN reported with the same target: pin it.
                // Anything else is a mid-connection packet nobody reported: do not guess a
                // pin; the owning stack's NEWCONN (re-report) will pin it.
                match self.syn_seen.take(&it.conn, self.now.0) {
                    Some(s) if handshake && s.target == it.target && s.service == svc => {
                        self.pin(it.conn, it.target, svc, Origin::SynDigest, 0);
                        self.count("crt_pinned_handshake");
                        conns.push(it.conn);
                    }
                    Some(_) => self.count("digest_not_syn_target_changed"),
                    None => self.count("digest_not_syn_unpinned"),
                }
                continue;
            }
            if handshake && it.conn.proto == 6 {
                // A SYN: remembered (bounded) until its handshake completes; the switch keeps
                // the choice in syn_pending for the handshake's packets meanwhile.
                let (evicted, expired) = self.syn_seen.insert(
                    it.conn,
                    crate::syn_seen::SeenSyn {
                        target: it.target,
                        service: svc,
                        at: self.now.0,
                    },
                );
                self.count("digest_syn_recorded");
                if evicted > 0 {
                    self.count_n("syn_seen_evicted", evicted as u64);
                }
                if expired > 0 {
                    self.count_n("syn_seen_expired", expired as u64);
                }
                continue;
            }
            self.pin(it.conn, it.target, svc, Origin::SynDigest, 0);
            self.count("crt_pinned_syn");
            conns.push(it.conn);
        }
        self.switches[si].pending_digests.push((list_id, conns, 0));
    }

    /// Whether `service`'s packets reach switch `si`: the DVIPA is advertised from it (from its
    /// owner while not advertised yet). Copies elsewhere (hot-standby backups, a switch the
    /// DVIPA is retiring from, both held at a controller restart) see no packet by design.
    fn routes(&self, si: SwitchIdx, service: u16) -> bool {
        let v = &self.vipas[VipaIdx(self.services[service as usize].vipa)];
        v.advertised.unwrap_or(v.owner) == si
    }

    pub(super) fn on_idle(&mut self, name: &str, conns: Vec<ConnKey>) {
        let Some(si) = self.switch_idx(name) else {
            return;
        };
        if self.switches[si].live != SwitchLiveness::Up {
            self.count("idle_from_switch_not_up");
            return;
        }
        let hold = self.in_hold();
        if !hold {
            self.idle_in_hold = HashSet::new();
        }
        for c in conns {
            match self.crt.get(&c) {
                Some(e) if !self.routes(si, e.service) => {
                    // A copy on a switch the DVIPA's packets do not reach is idle by design:
                    // it says nothing about the connection.
                    self.count("idle_from_standby_ignored");
                }
                Some(e) if e.confirmed() && self.stacks[TargetId(e.target)].alive => {
                    self.count("idle_kept_alive");
                }
                Some(_) => {
                    self.unpin(&c);
                    self.count("idle_removed");
                    if hold {
                        self.idle_in_hold.insert(c);
                    }
                }
                None => {
                    self.switches[si].mark_dirty(c);
                    self.count("idle_unknown");
                }
            }
        }
    }
}

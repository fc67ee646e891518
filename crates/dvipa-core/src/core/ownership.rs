//! DVIPA ownership: election along each DVIPA's chain, moves, maintenance, advertisement
//! once converged, VIPARANGE activation and restoring owners after a restart.

use super::*;

#[derive(Debug)]
pub(super) struct VipaState {
    pub(super) owner: SwitchIdx,
    pub(super) retiring: Vec<SwitchIdx>,
    pub(super) advertised: Option<SwitchIdx>,
    pub(super) admin_pinned: bool,
    pub(super) restored: bool,
    pub(super) transitions: Vec<Transition>,
}

impl Core {
    /// Primary + backups by rank, as switch indexes.
    pub(super) fn chain(&self, vi: VipaIdx) -> Vec<SwitchIdx> {
        let v: &EffectiveVipa = &self.cluster.vipas[vi.0];
        std::iter::once(&v.owner)
            .chain(v.backups.iter().map(|b| &b.switch))
            .map(|n| self.sw_index[n])
            .collect()
    }

    /// Everything `si` must hold for DVIPA `vi` is written: no batch in flight, no
    /// dvipa/dpt/target/route work left, no CRT entry of that DVIPA waiting (entries of other
    /// DVIPAs do not hold the advertisement back).
    pub(super) fn converged(&self, si: SwitchIdx, vi: VipaIdx) -> bool {
        let sw = &self.switches[si];
        sw.live == SwitchLiveness::Up
            && sw.in_flight.is_empty()
            && !sw.structural_dirty
            && sw.crt_dirty.iter().all(|k| {
                self.crt
                    .get(k)
                    .is_none_or(|e| self.services[e.service as usize].vipa != vi.0)
            })
    }

    pub(super) fn advertise_converged(&mut self) {
        let mut again = false;
        for vi in self.vipas.ids() {
            let vs = &self.vipas[vi];
            if vs.advertised == Some(vs.owner) || !self.converged(vs.owner, vi) {
                continue;
            }
            if self.in_hold()
                && self.chain(vi).iter().any(|&s| {
                    let sw = &self.switches[s];
                    sw.live == SwitchLiveness::Syncing && !sw.read_once
                })
            {
                // Restart: a connected switch that may hold this DVIPA is not read yet.
                continue;
            }
            let v = &self.cluster.vipas[vi.0];
            let (dvipa, prefix_len) = (v.addr, v.prefix_len);
            let owner = vs.owner;
            let old = vs.advertised;
            self.actions.push_back(Action::Advertise {
                switch: self.switches[owner].name.clone(),
                dvipa,
                prefix_len,
            });
            self.count("advertise");
            if let Some(o) = old {
                self.actions.push_back(Action::Withdraw {
                    switch: self.switches[o].name.clone(),
                    dvipa,
                    prefix_len,
                });
                self.count("withdraw");
            }
            let retiring = std::mem::take(&mut self.vipas[vi].retiring);
            self.vipas[vi].advertised = Some(owner);
            let now = self.now;
            self.vipas[vi].transitions.push(Transition {
                at: now,
                what: format!("advertised on {}", self.switches[owner].name),
            });
            // The old routing switches now clean up the DVIPA's entries.
            for r in retiring {
                self.mark_vipa_conns_dirty(vi, r);
                again = true;
            }
        }
        if again {
            for si in self.switches.ids() {
                self.flush(si);
            }
        }
    }

    pub(super) fn eligible(&self, si: SwitchIdx) -> bool {
        let sw = &self.switches[si];
        sw.live == SwitchLiveness::Up && !sw.maintenance
    }

    /// Decide every DVIPA's routing switch: takeover when the owner is lost (or in
    /// maintenance), takeback when the primary is back (unless an operator moved it).
    pub(super) fn elect(&mut self) {
        for vi in self.vipas.ids() {
            let chain = self.chain(vi);
            let vs = &self.vipas[vi];
            let owner = vs.owner;
            let primary = chain[0];
            let owner_lost = matches!(self.switches[owner].live, SwitchLiveness::Down)
                || self.switches[owner].maintenance;
            if owner_lost {
                if let Some(&n) = chain.iter().find(|&&s| s != owner && self.eligible(s)) {
                    let why = if self.switches[owner].maintenance {
                        "maintenance"
                    } else if !self.switches[owner].seen_up {
                        "not up after the start-up hold"
                    } else {
                        "down"
                    };
                    self.change_owner(
                        vi,
                        n,
                        &format!("takeover ({} {why})", self.switches[owner].name),
                    );
                    if n == primary {
                        // Back on its primary: an operator's pin to the lost switch is over.
                        self.set_admin_pinned(vi, false);
                    }
                    self.count("takeover");
                }
            } else if !vs.admin_pinned && owner != primary && self.eligible(primary) {
                self.change_owner(vi, primary, "takeback (primary back)");
                self.count("takeback");
            }
        }
    }

    pub(super) fn change_owner(&mut self, vi: VipaIdx, to: SwitchIdx, why: &str) {
        let from = self.vipas[vi].owner;
        if from == to {
            return;
        }
        if self.switches[from].live == SwitchLiveness::Up
            && !self.vipas[vi].retiring.contains(&from)
        {
            self.vipas[vi].retiring.push(from);
        }
        self.vipas[vi].retiring.retain(|s| *s != to);
        self.vipas[vi].owner = to;
        self.owners_gen += 1;
        let now = self.now;
        let what = format!(
            "{why}: {} -> {}",
            self.switches[from].name, self.switches[to].name
        );
        self.vipas[vi]
            .transitions
            .push(Transition { at: now, what });
        self.activate_services(vi);
        self.mark_vipa_conns_dirty(vi, to);
        self.structural_change();
    }

    /// Activate a VIPA of a VIPARANGE as a (non-distributed, moveable) DVIPA routed by the
    /// switch whose profile has the range: all ports, every stack a candidate, new connections
    /// to the stack that bound last.
    pub(super) fn ensure_range_vipa(&mut self, a: Ipv4Addr) {
        if self.vipa_index(a).is_some() {
            return;
        }
        let Some((sw, range)) = self
            .cluster
            .ranges
            .iter()
            .find(|(_, r)| r.contains(a))
            .cloned()
        else {
            return;
        };
        let protos: Vec<Proto> = if self.cluster.config.distribute_udp {
            vec![TCP, UDP]
        } else {
            vec![TCP]
        };
        if self.services.len() + protos.len() > MAX_SERVICES {
            self.count("range_vipa_no_service_id");
            return;
        }
        let file = self
            .cluster
            .profiles
            .get(&sw)
            .map(|p| p.file.clone())
            .unwrap_or_default();
        let candidates: Vec<crate::config::Candidate> = self
            .stacks
            .iter()
            .map(|s| crate::config::Candidate {
                stack: s.name.clone(),
                weight: 1,
                role: None,
            })
            .collect();
        self.cluster.vipas.push(EffectiveVipa {
            addr: a,
            prefix_len: 32,
            owner: sw.clone(),
            backups: Vec::new(),
            dist: vec![crate::config::Distribution {
                file,
                loc: range.loc,
                ports: Vec::new(),
                method: DistMethod::HotStandby,
                all_stacks: true,
                candidates,
            }],
        });
        let vi = VipaIdx(self.cluster.vipas.len() - 1);
        let owner = self.sw_index[&sw];
        self.owners_gen += 1;
        self.vipas.push(VipaState {
            owner,
            retiring: Vec::new(),
            advertised: None,
            admin_pinned: false,
            restored: false,
            transitions: vec![Transition {
                at: self.now,
                what: format!(
                    "activated in VIPARANGE {}/{} of {sw}",
                    range.network, range.prefix_len
                ),
            }],
        });
        self.range_vipas.insert(vi);
        let all: BTreeSet<u16> = (1..=self.stacks.len() as u16).collect();
        for pr in protos {
            let id = self.services.len() as u16;
            self.svc_index.insert((u32::from(a), None, pr), id);
            self.services.push(Service {
                id,
                vipa: vi.0,
                dvipa: a,
                port: None,
                proto: pr,
                active: false,
                method: DistMethod::HotStandby,
                candidates: Vec::new(),
                any_candidates: all.clone(),
                dpt: BTreeMap::new(),
                fill: [None; N_SLOTS],
                hint: [None; N_SLOTS],
            });
        }
        self.activate_services(vi);
        self.count("range_vipa_activated");
        self.structural_change();
    }

    /// Controller restart without a restored owner: when a DVIPA's configured owner was read
    /// and holds none of it while another switch of its chain does, that switch is routing it
    /// (an operator move or a takeover before the restart): keep it there.
    pub(super) fn infer_owners(&mut self) {
        for vi in self.vipas.ids() {
            let o = self.vipas[vi].owner;
            if self.vipas[vi].restored
                || !self.switches[o].read_once
                || self.switches[o].held_at_start.contains(&vi)
            {
                continue;
            }
            let chain = self.chain(vi);
            let holder = chain.iter().copied().find(|&s| {
                self.switches[s].read_once && self.switches[s].held_at_start.contains(&vi)
            });
            if let Some(h) = holder {
                self.vipas[vi].restored = true;
                self.set_admin_pinned(vi, h != chain[0]);
                self.change_owner(vi, h, "found on the switch after a controller restart");
                self.count("owner_inferred_from_switch");
            }
        }
    }

    /// Ownership to persist across controller restarts: `(dvipa, routing switch, pinned by an
    /// operator move)`.
    pub fn ownership(&self) -> Vec<(Ipv4Addr, String, bool)> {
        self.vipas
            .iter()
            .enumerate()
            .map(|(vi, v)| {
                (
                    self.cluster.vipas[vi].addr,
                    self.switches[v.owner].name.clone(),
                    v.admin_pinned,
                )
            })
            .collect()
    }

    /// Restore persisted ownership (call before the first event of a restarted controller).
    /// Without it, a restart keeps a DVIPA where the switches' tables show it unambiguously.
    pub fn restore_owner(
        &mut self,
        dvipa: Ipv4Addr,
        switch: &str,
        admin_pinned: bool,
    ) -> Result<(), CoreError> {
        let err = |why: String| CoreError::Restore { dvipa, why };
        let vi = self
            .vipa_index(dvipa)
            .ok_or_else(|| err("not a configured DVIPA".into()))?;
        let si = *self
            .sw_index
            .get(switch)
            .ok_or_else(|| err(format!("no switch named `{switch}`")))?;
        if !self.chain(vi).contains(&si) {
            return Err(err(format!("`{switch}` neither defines nor backs it up")));
        }
        let v = &mut self.vipas[vi];
        v.restored = true;
        v.admin_pinned = admin_pinned;
        v.owner = si;
        self.owners_gen += 1;
        v.transitions.push(Transition {
            at: self.now,
            what: format!("restored owner {switch}"),
        });
        self.activate_services(vi);
        self.structural_change();
        Ok(())
    }

    /// Operator: move a DVIPA to a switch (non-disruptively: connections stay pinned, the
    /// old owner keeps forwarding until the new one is programmed). Refused when the switch is
    /// not up or in maintenance; moving to the current owner is a no-op that succeeds.
    pub fn admin_move(&mut self, now: Time, dvipa: Ipv4Addr, to: &str) -> Result<(), MoveError> {
        self.handle_timeout(now);
        let r = self.try_admin_move(dvipa, to);
        if let Err(e) = &r {
            self.count(e.counter());
        }
        self.flush_all();
        self.note_owners();
        r
    }

    pub(super) fn try_admin_move(&mut self, dvipa: Ipv4Addr, to: &str) -> Result<(), MoveError> {
        let vi = self
            .vipa_index(dvipa)
            .ok_or(MoveError::UnknownDvipa(dvipa))?;
        let si = *self
            .sw_index
            .get(to)
            .ok_or_else(|| MoveError::UnknownSwitch(to.to_string()))?;
        if !self.eligible(si) {
            return Err(MoveError::TargetNotUp(to.to_string()));
        }
        let primary = self.chain(vi)[0];
        self.set_admin_pinned(vi, si != primary);
        self.change_owner(vi, si, "admin move");
        self.count("admin_move");
        Ok(())
    }

    /// Sets a DVIPA's operator pin (marks the ownership changed when it does).
    pub(super) fn set_admin_pinned(&mut self, vi: VipaIdx, pinned: bool) {
        if self.vipas[vi].admin_pinned != pinned {
            self.vipas[vi].admin_pinned = pinned;
            self.owners_gen += 1;
        }
    }

    /// Queues [`Action::OwnersChanged`] when ownership changed since it was last queued.
    pub(super) fn note_owners(&mut self) {
        if self.owners_gen != self.owners_reported {
            self.owners_reported = self.owners_gen;
            self.actions.push_back(Action::OwnersChanged);
        }
    }
}
